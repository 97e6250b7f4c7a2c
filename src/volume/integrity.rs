//! Authenticated volumes (`volume create --integrity`): what a block's MAC covers, the
//! record of MACs each slot keeps, a volume's tweak domain, and the root over a volume's
//! records that rollback detection anchors.
//!
//! - Every 4 KiB block written to an authenticated volume gets a tag: a write generation
//!   (never 0) and a 16-byte MAC over (ciphertext, tweak domain, block number, generation):
//!   POLYVAL-AES (a POLYVAL hash encrypted with AES-256, as AES-GCM-SIV's tag; the records of
//!   this version) or keyed BLAKE3 (records made before it). The record says which. A
//!   slot's tags, with its domain, are one record in the pool metadata (`slot_auth`),
//!   committed in the same transaction as the map row that points at it. A
//!   tag of generation 0 is a hole: the block reads as zeros whatever bytes the slot holds,
//!   so a hole is recorded, never inferred from zero ciphertext.
//! - Tweak domain: the XTS tweak of a block is `domain << 64 | block number`. The volume a
//!   data key was made for (its lineage) writes in domain 0; a volume restored from a
//!   snapshot writes in a domain derived from its own id. Both share the data key, but never
//!   a (key, tweak) pair: a clone's first write to a chunk re-encrypts what it keeps of it
//!   into its own domain (`block_io`). The domain of each slot is in its record.
//! - Root: a keyed hash of every (chunk, record) of a volume, XORed together (a keyed XOR
//!   MAC over the set, updated in O(1) per changed chunk), with a generation bumped at every
//!   commit that changes the volume and a tag over both. The pool stores it (`roots`); the
//!   anchor (`volume::anchor`, outside the pool) keeps the latest one.

use zeroize::Zeroizing;

use super::error::{Result, VolumeError};
use super::header::VolumeHeader;
use crate::crypto::SecretBytes;
use crate::crypto::kdf::{
    self, CTX_ANCHOR_SEAL, CTX_BLOCK_MAC, CTX_BLOCK_MAC_POLYVAL, CTX_INTEGRITY_ROOT,
    CTX_TWEAK_DOMAIN,
};
use crate::crypto::polyval::Polyval;

/// Bytes of a block MAC.
pub const MAC_LEN: usize = 16;
/// Bytes of one block's tag in a record: generation (8) and MAC.
pub const TAG_LEN: usize = 8 + MAC_LEN;
/// Bytes of a record before its halves map (version 2) or its tags (version 1): version,
/// MAC algorithm, 6 reserved, domain.
pub const RECORD_HEAD: usize = 16;
/// A record whose blocks all lie in the slot's first half.
pub const RECORD_VERSION: u8 = 1;
/// A record with a halves map: some blocks lie in the slot's second half.
pub const RECORD_VERSION_HALVES: u8 = 2;

/// One block's tag; generation 0 is a hole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockTag {
    pub generation: u64,
    pub mac: [u8; MAC_LEN],
}

impl BlockTag {
    pub const HOLE: BlockTag = BlockTag {
        generation: 0,
        mac: [0; MAC_LEN],
    };

    pub fn is_hole(&self) -> bool {
        self.generation == 0
    }
}

/// Which MAC a record's tags are (byte 1 of the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacAlg {
    /// Keyed BLAKE3 of (ciphertext ‖ domain ‖ block ‖ generation), first 16 bytes: records
    /// made before POLYVAL-AES.
    Blake3 = 0,
    /// AES-256(POLYVAL(ciphertext ‖ domain ‖ block ‖ generation ‖ bit length)): about
    /// twice as fast (carry-less multiplication), and what every new record uses.
    PolyvalAes = 1,
}

/// The tags of one slot, the tweak domain its blocks were encrypted in, and which half of
/// the slot holds each block.
///
/// Halves: every slot of an authenticated volume has two places for each block, in the
/// pool's data file (half 0) and in its alternate file (half 1, sparse: only used once a
/// block is overwritten). A write into a slot a commit has seen goes into the half the
/// committed record does *not* name, and the next commit flips the block's bit; so the
/// committed block and its tag stay intact until a commit names the new ones, and a crash
/// in between finds each block where its committed record says, without the chunk having
/// been copied.
#[derive(Debug, Clone)]
pub struct SlotRecord {
    /// The MAC of every tag of this record.
    pub mac: MacAlg,
    pub domain: u64,
    pub tags: Vec<BlockTag>,
    /// Bit `i` set: block `i` lies in half 1.
    pub alt: Vec<u64>,
    /// In memory only: which blocks were placed by the writes of which commit epochs not
    /// yet known durable (see [`Moves`]).
    pub moves: Moves,
}

impl PartialEq for SlotRecord {
    fn eq(&self, o: &SlotRecord) -> bool {
        self.mac == o.mac && self.domain == o.domain && self.tags == o.tags && self.alt == o.alt
    }
}
impl Eq for SlotRecord {}

impl SlotRecord {
    /// A slot of holes, for a chunk of `blocks` blocks, tagged with the current MAC.
    pub fn holes(domain: u64, blocks: usize) -> SlotRecord {
        SlotRecord {
            mac: MacAlg::PolyvalAes,
            domain,
            tags: vec![BlockTag::HOLE; blocks],
            alt: vec![0; blocks.div_ceil(64)],
            moves: Moves::default(),
        }
    }

    /// The half (0 or 1) block `i` lies in.
    pub fn half(&self, i: usize) -> usize {
        ((self.alt[i / 64] >> (i % 64)) & 1) as usize
    }

    pub fn set_half(&mut self, i: usize, half: usize) {
        let bit = 1u64 << (i % 64);
        if half == 1 {
            self.alt[i / 64] |= bit;
        } else {
            self.alt[i / 64] &= !bit;
        }
    }

    /// True if every block lies in half 0.
    pub fn all_in_first_half(&self) -> bool {
        self.alt.iter().all(|w| *w == 0)
    }

    /// Runs `(start, end, half)` of blocks `first..first + n` lying in one half, in order.
    pub fn half_runs(&self, first: usize, n: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        runs(n, move |i| self.half(first + i)).map(move |(s, e, h)| (first + s, first + e, h))
    }

    /// Whether blocks `first..first + n` hold a written block (not a hole) in the first
    /// half, and one in the second.
    pub fn halves_in(&self, first: usize, n: usize) -> (bool, bool) {
        let mut seen = (false, false);
        for i in first..first + n {
            if !self.tags[i].is_hole() {
                match self.half(i) {
                    0 => seen.0 = true,
                    _ => seen.1 = true,
                }
            }
        }
        seen
    }

    /// Reads over `buf` (the slot's chunk, read from its first half) the blocks this record
    /// places in the second half, from `alt` (the pool's alternate file) at `at` (the
    /// slot's offset): for readers of a pool's files outside an open volume (copies,
    /// archives).
    pub fn read_second_halves(
        &self,
        alt: &std::fs::File,
        at: u64,
        buf: &mut [u8],
    ) -> std::io::Result<()> {
        const BS: usize = super::ids::BLOCK_SIZE as usize;
        for (s, e, half) in self.half_runs(0, self.tags.len()) {
            if half == 1 {
                super::storage::file::read_full_at(
                    alt,
                    &mut buf[s * BS..e * BS],
                    at + (s * BS) as u64,
                )?;
            }
        }
        Ok(())
    }

    /// docs/formats.md, "Slot record": version 1 (all blocks in half 0) or 2, the MAC
    /// algorithm, 6 zero bytes, domain (u64 LE); version 2 then the halves map (one bit per
    /// block, LE words); then per block its generation (u64 LE) and MAC (16 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let halves = !self.all_in_first_half();
        let map_len = if halves {
            self.tags.len().div_ceil(8)
        } else {
            0
        };
        let mut out = Vec::with_capacity(RECORD_HEAD + map_len + self.tags.len() * TAG_LEN);
        out.push(if halves {
            RECORD_VERSION_HALVES
        } else {
            RECORD_VERSION
        });
        out.push(self.mac as u8);
        out.extend_from_slice(&[0; 6]);
        out.extend_from_slice(&self.domain.to_le_bytes());
        if halves {
            let mut map = Vec::with_capacity(self.alt.len() * 8);
            for w in &self.alt {
                map.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&map[..map_len]);
        }
        for t in &self.tags {
            out.extend_from_slice(&t.generation.to_le_bytes());
            out.extend_from_slice(&t.mac);
        }
        out
    }

    pub fn decode(bytes: &[u8], blocks: usize) -> Result<SlotRecord> {
        let corrupt = |detail: String| VolumeError::Corrupt {
            what: "a slot record of the pool".into(),
            detail: format!("{detail}: run `cryptvol volume verify`"),
        };
        let map_len = match bytes.first() {
            Some(&RECORD_VERSION) => 0,
            Some(&RECORD_VERSION_HALVES) => blocks.div_ceil(8),
            Some(v) => return Err(corrupt(format!("version {v}"))),
            None => return Err(corrupt("an empty record".into())),
        };
        let want = RECORD_HEAD + map_len + blocks * TAG_LEN;
        if bytes.len() != want {
            return Err(corrupt(format!(
                "{} bytes where a chunk of {blocks} blocks has {want}",
                bytes.len()
            )));
        }
        let mac = match bytes[1] {
            0 => MacAlg::Blake3,
            1 => MacAlg::PolyvalAes,
            m => return Err(corrupt(format!("MAC algorithm {m}"))),
        };
        if bytes[2..8] != [0; 6] {
            return Err(corrupt("reserved bytes are not zero".into()));
        }
        let domain = u64::from_le_bytes(bytes[8..16].try_into().expect("8"));
        let mut rec = SlotRecord::holes(domain, blocks);
        rec.mac = mac;
        for (i, b) in bytes[RECORD_HEAD..RECORD_HEAD + map_len].iter().enumerate() {
            rec.alt[i / 8] |= u64::from(*b) << ((i % 8) * 8);
        }
        if map_len > 0 && rec.all_in_first_half() {
            return Err(corrupt("a halves map with no block in half 1".into()));
        }
        for (t, b) in rec
            .tags
            .iter_mut()
            .zip(bytes[RECORD_HEAD + map_len..].chunks_exact(TAG_LEN))
        {
            *t = BlockTag {
                generation: u64::from_le_bytes(b[..8].try_into().expect("8")),
                mac: b[8..].try_into().expect("16"),
            };
        }
        Ok(rec)
    }
}

/// Runs `(start, end, value)` of `0..n` over which `value_of` does not change, in order (the
/// blocks of one read, write or punch that lie in one half of a slot).
pub fn runs(
    n: usize,
    value_of: impl Fn(usize) -> usize,
) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut s = 0;
    std::iter::from_fn(move || {
        if s >= n {
            return None;
        }
        let v = value_of(s);
        let mut e = s + 1;
        while e < n && value_of(e) == v {
            e += 1;
        }
        let run = (s, e, v);
        s = e;
        Some(run)
    })
}

/// Where a write may put each block of a slot whose record it holds: the in-memory part of
/// the halves rule. For each commit epoch not yet known durable, the blocks placed by that
/// epoch's writes (a fresh slot's record marks all of its blocks in the epoch it was made).
///
/// A block placed in the current epoch is rewritten where it is (no commit has named that
/// place). A block placed in no epoch newer than the last durable commit goes to its other
/// half. A block placed in an epoch whose commit has been taken but is not durable yet (in
/// flight, failed or in doubt) has no free half: the committed state may name either one,
/// so the write must copy the chunk into a fresh slot instead.
#[derive(Debug, Clone, Default)]
pub struct Moves {
    epochs: Vec<(u64, Vec<u64>)>,
}

/// Where a write may put one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Where it is: placed in this epoch already.
    InPlace,
    /// Into its other half.
    Flip,
    /// Nowhere in this slot: copy the chunk.
    Copy,
}

impl Moves {
    /// Forgets the epochs a durable commit covers.
    pub fn prune(&mut self, durable: u64) {
        self.epochs.retain(|(e, _)| *e > durable);
    }

    /// True while some placement is not known durable (the record must stay in memory:
    /// the pool's copy of it may not say where the blocks are).
    pub fn pending(&self, durable: u64) -> bool {
        self.epochs.iter().any(|(e, _)| *e > durable)
    }

    pub fn placement(&self, i: usize, epoch: u64, durable: u64) -> Placement {
        let bit = |w: &Vec<u64>| (w[i / 64] >> (i % 64)) & 1 == 1;
        if self.epochs.iter().any(|(e, w)| *e == epoch && bit(w)) {
            Placement::InPlace
        } else if self
            .epochs
            .iter()
            .any(|(e, w)| *e > durable && *e != epoch && bit(w))
        {
            Placement::Copy
        } else {
            Placement::Flip
        }
    }

    /// Marks blocks `[b0, b1)` placed in `epoch`.
    pub fn mark(&mut self, epoch: u64, b0: usize, b1: usize, blocks: usize) {
        let pos = match self.epochs.iter().position(|(e, _)| *e == epoch) {
            Some(p) => p,
            None => {
                self.epochs.push((epoch, vec![0; blocks.div_ceil(64)]));
                self.epochs.len() - 1
            }
        };
        let w = &mut self.epochs[pos].1;
        for i in b0..b1 {
            w[i / 64] |= 1 << (i % 64);
        }
    }
}

/// The tweak domain a volume writes in: 0 for the volume its data key was made for, a value
/// derived from its id for a volume restored from a snapshot (never 0).
pub fn domain_of(h: &VolumeHeader) -> u64 {
    if h.id.as_str() == h.lineage {
        return 0;
    }
    let mut d = [0u8; 8];
    kdf::derive_into(CTX_TWEAK_DOMAIN, &[h.id.as_str().as_bytes()], &mut d);
    u64::from_le_bytes(d).max(1)
}

/// The XTS tweak of a block in a domain.
pub fn tweak(domain: u64, block: u64) -> u128 {
    (u128::from(domain) << 64) | u128::from(block)
}

/// An authenticated volume's keys, derived from its data key; zeroized on drop.
pub struct IntegrityKeys {
    mac: Zeroizing<[u8; 32]>,
    /// POLYVAL-AES: the hash, keyed, and the AES-256 key schedule; both zeroized on drop.
    polyval: Polyval,
    mac_aes: aes::Aes256,
    root: Zeroizing<[u8; 32]>,
    anchor: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for IntegrityKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKeys(..)")
    }
}

impl IntegrityKeys {
    pub fn from_data_key(data_key: &SecretBytes) -> IntegrityKeys {
        let k = |ctx: &str| {
            let mut out = Zeroizing::new([0u8; 32]);
            kdf::derive_into(ctx, &[data_key.expose()], &mut out[..]);
            out
        };
        let mut pa = Zeroizing::new([0u8; 48]);
        kdf::derive_into(CTX_BLOCK_MAC_POLYVAL, &[data_key.expose()], &mut pa[..]);
        let hash_key: &[u8; 16] = pa[..16].try_into().expect("16 bytes");
        let aes_key: &[u8; 32] = pa[16..].try_into().expect("32 bytes");
        use aes::cipher::KeyInit;
        IntegrityKeys {
            polyval: Polyval::new(hash_key),
            mac_aes: aes::Aes256::new(&aes::cipher::Array(*aes_key)),
            mac: k(CTX_BLOCK_MAC),
            root: k(CTX_INTEGRITY_ROOT),
            anchor: k(CTX_ANCHOR_SEAL),
        }
    }

    /// The MAC of one block's ciphertext (docs/formats.md, "Block MAC").
    pub fn block_mac(
        &self,
        alg: MacAlg,
        domain: u64,
        block: u64,
        generation: u64,
        ct: &[u8],
    ) -> [u8; MAC_LEN] {
        match alg {
            MacAlg::PolyvalAes => self.polyval_aes(domain, block, generation, ct),
            MacAlg::Blake3 => self.blake3_mac(domain, block, generation, ct),
        }
    }

    /// AES-256(K, POLYVAL(H, ct ‖ domain ‖ block ‖ generation ‖ 8·len(ct))), all u64 LE:
    /// POLYVAL is an almost-universal hash over whole 16-byte blocks (the ciphertext is 4
    /// KiB, the rest two blocks, so no padding is ever needed), and AES turns its result
    /// into a tag only the key holder can make (a universal hash then a PRF, as
    /// AES-GCM-SIV's tag). No nonce: the same input always gives the same tag.
    fn polyval_aes(&self, domain: u64, block: u64, generation: u64, ct: &[u8]) -> [u8; MAC_LEN] {
        use aes::cipher::BlockCipherEncrypt;
        let mut tail = [0u8; 32];
        tail[..8].copy_from_slice(&domain.to_le_bytes());
        tail[8..16].copy_from_slice(&block.to_le_bytes());
        tail[16..24].copy_from_slice(&generation.to_le_bytes());
        tail[24..].copy_from_slice(&(ct.len() as u64 * 8).to_le_bytes());
        let mut s = aes::Block::from(self.polyval.hash(&[ct, &tail]));
        self.mac_aes.encrypt_block(&mut s);
        s.into()
    }

    /// Keyed BLAKE3 of (ct ‖ domain ‖ block ‖ generation), first 16 bytes. The ciphertext
    /// goes first: BLAKE3 then hashes its 4 KiB in parallel chunks.
    fn blake3_mac(&self, domain: u64, block: u64, generation: u64, ct: &[u8]) -> [u8; MAC_LEN] {
        let mut h = blake3::Hasher::new_keyed(&self.mac);
        h.update(ct);
        h.update(&domain.to_le_bytes());
        h.update(&block.to_le_bytes());
        h.update(&generation.to_le_bytes());
        let mut out = [0u8; MAC_LEN];
        h.finalize_xof().fill(&mut out);
        out
    }

    /// True if `tag` is the tag of `ct` at `block` (in constant time).
    pub fn verify(&self, alg: MacAlg, domain: u64, block: u64, tag: &BlockTag, ct: &[u8]) -> bool {
        let mac = self.block_mac(alg, domain, block, tag.generation, ct);
        ct_eq(&mac, &tag.mac)
    }

    /// A chunk's leaf in its volume's root.
    pub fn leaf(&self, chunk: u64, record: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.root);
        h.update(b"leaf");
        h.update(&chunk.to_le_bytes());
        h.update(record);
        *h.finalize().as_bytes()
    }

    /// The tag that makes a (generation, accumulator) pair a root only this key could make.
    pub fn root_tag(&self, generation: u64, acc: &[u8; 32]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.root);
        h.update(b"root");
        h.update(&generation.to_le_bytes());
        h.update(acc);
        *h.finalize().as_bytes()
    }

    pub fn anchor_key(&self) -> crate::crypto::Key256 {
        crate::crypto::Key256::from_bytes(*self.anchor)
    }
}

/// A volume's root as the pool stores it (`roots`): generation, accumulator, tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Root {
    pub generation: u64,
    pub acc: [u8; 32],
}

impl Root {
    pub fn xor_leaf(&mut self, leaf: &[u8; 32]) {
        for (a, b) in self.acc.iter_mut().zip(leaf) {
            *a ^= b;
        }
    }

    /// 72 bytes: generation (u64 LE), accumulator, tag.
    pub fn encode(&self, keys: &IntegrityKeys) -> Vec<u8> {
        let mut out = Vec::with_capacity(72);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.acc);
        out.extend_from_slice(&keys.root_tag(self.generation, &self.acc));
        out
    }

    /// Reads a stored root and checks its tag.
    pub fn decode(bytes: &[u8], keys: &IntegrityKeys, owner: &str) -> Result<Root> {
        if bytes.len() != 72 {
            return Err(VolumeError::Tampered {
                volume: owner.to_string(),
                detail: format!(
                    "its root in the pool metadata is {} bytes, not 72",
                    bytes.len()
                ),
            });
        }
        let root = Root {
            generation: u64::from_le_bytes(bytes[..8].try_into().expect("8")),
            acc: bytes[8..40].try_into().expect("32"),
        };
        let tag = keys.root_tag(root.generation, &root.acc);
        if !ct_eq(&tag, &bytes[40..72]) {
            return Err(VolumeError::Tampered {
                volume: owner.to_string(),
                detail: "its root in the pool metadata does not carry its key's tag".into(),
            });
        }
        Ok(root)
    }
}

/// Equality of two MACs in time that does not depend on where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::volume::pool::{Pool, Rollback};
    use crate::volume::test_support::{header, region, xts};
    use crate::volume::{BLOCK_SIZE, OpenVolume};

    fn keys() -> Arc<IntegrityKeys> {
        Arc::new(IntegrityKeys::from_data_key(&SecretBytes::new(vec![9; 64])))
    }

    fn open(pool: &Arc<Pool>, h: &VolumeHeader) -> crate::volume::error::Result<OpenVolume> {
        OpenVolume::open_authenticated(pool.clone(), h, xts(), keys(), Rollback::Refuse)
    }

    /// A volume closed late (its last reference dropped after it was opened again, as a
    /// FUSE thread finishing after a re-attach) must not stop the newer open's root from
    /// being kept: before the open's token, it did, the newer open's commits left the root
    /// behind its map, and the next attach called the volume tampered.
    #[test]
    fn a_late_close_does_not_unregister_a_newer_open() {
        let d = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::open(&region(&d)).unwrap());
        let mut h = header(4 << 20);
        h.lineage = h.id.to_string();
        h.integrity = true;
        pool.create_volume(&h).unwrap();
        let old = open(&pool, &h).unwrap();
        old.write(0, &[1; 4096]).unwrap();
        old.flush().unwrap();
        let new = open(&pool, &h).unwrap();
        drop(old);
        new.write(BLOCK_SIZE * 300, &[2; 4096]).unwrap();
        new.flush().unwrap();
        drop(new);
        let again = open(&pool, &h).expect("the root kept up with every commit");
        let mut b = [0u8; 4096];
        again.read(BLOCK_SIZE * 300, &mut b).unwrap();
        assert_eq!(b, [2; 4096]);
        assert_eq!(again.verify().unwrap().bad_blocks, Vec::<u64>::new());
    }

    /// More chunks than the record cache holds: committed records are dropped and loaded
    /// again, fresh ones never (they are the only copy until their commit).
    #[test]
    fn records_beyond_the_cache_are_dropped_and_reloaded_without_false_alarms() {
        let d = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::open(&region(&d)).unwrap());
        let mut h = header(16 << 20);
        h.lineage = h.id.to_string();
        h.integrity = true;
        pool.create_volume(&h).unwrap();
        let v = open(&pool, &h).unwrap();
        let chunks = 200u64;
        let per_chunk = (1u64 << h.chunk_shift) / BLOCK_SIZE;
        for round in 0..2u8 {
            for c in 0..chunks {
                v.write(c * per_chunk * BLOCK_SIZE, &[c as u8 ^ round; 4096])
                    .unwrap();
                if c % 50 == 0 {
                    v.flush().unwrap();
                }
            }
            for c in 0..chunks {
                let mut b = [0u8; 4096];
                v.read(c * per_chunk * BLOCK_SIZE, &mut b).unwrap();
                assert_eq!(b, [c as u8 ^ round; 4096], "chunk {c}, round {round}");
            }
        }
        v.flush().unwrap();
        assert_eq!(v.verify().unwrap().bad_blocks, Vec::<u64>::new());
        drop(v);
        let v = open(&pool, &h).unwrap();
        let mut b = [0u8; 4096];
        v.read(7 * per_chunk * BLOCK_SIZE, &mut b).unwrap();
        assert_eq!(b, [7 ^ 1; 4096]);
    }

    #[test]
    fn a_record_reads_back_and_refuses_a_wrong_length_version_or_reserved_byte() {
        let mut r = SlotRecord::holes(7, 16);
        r.tags[3] = BlockTag {
            generation: 5,
            mac: [4; MAC_LEN],
        };
        let b = r.encode();
        assert_eq!(b.len(), RECORD_HEAD + 16 * TAG_LEN);
        assert_eq!(SlotRecord::decode(&b, 16).unwrap(), r);
        assert!(SlotRecord::decode(&b, 32).is_err());
        let mut x = b.clone();
        x[0] = 2;
        assert!(SlotRecord::decode(&x, 16).is_err());
        let mut x = b;
        x[3] = 1;
        assert!(SlotRecord::decode(&x, 16).is_err());
    }

    /// Each MAC changes with every input it covers, old (BLAKE3) records still verify,
    /// and a record keeps its algorithm through encode and decode.
    #[test]
    fn both_macs_bind_ciphertext_domain_block_and_generation() {
        let k = keys();
        let ct = vec![0x42u8; 4096];
        for alg in [MacAlg::PolyvalAes, MacAlg::Blake3] {
            let tag = BlockTag {
                generation: 9,
                mac: k.block_mac(alg, 3, 17, 9, &ct),
            };
            assert!(k.verify(alg, 3, 17, &tag, &ct), "{alg:?}");
            let mut x = ct.clone();
            x[4095] ^= 1;
            assert!(!k.verify(alg, 3, 17, &tag, &x), "{alg:?}: ciphertext");
            assert!(!k.verify(alg, 4, 17, &tag, &ct), "{alg:?}: domain");
            assert!(!k.verify(alg, 3, 18, &tag, &ct), "{alg:?}: block");
            let other_gen = BlockTag {
                generation: 10,
                ..tag
            };
            assert!(
                !k.verify(alg, 3, 17, &other_gen, &ct),
                "{alg:?}: generation"
            );
            let other = if alg == MacAlg::Blake3 {
                MacAlg::PolyvalAes
            } else {
                MacAlg::Blake3
            };
            assert!(!k.verify(other, 3, 17, &tag, &ct), "{alg:?}: the other MAC");
            let mut r = SlotRecord::holes(3, 16);
            r.mac = alg;
            let back = SlotRecord::decode(&r.encode(), 16).unwrap();
            assert_eq!(back.mac, alg);
        }
        let mut b = SlotRecord::holes(0, 16).encode();
        b[1] = 2;
        assert!(SlotRecord::decode(&b, 16).is_err(), "an unknown MAC");
    }

    #[test]
    fn the_lineages_volume_writes_in_domain_0_and_a_clone_in_its_own() {
        let mut h = header(1 << 20);
        h.lineage = h.id.to_string();
        assert_eq!(domain_of(&h), 0);
        let mut c = header(1 << 20);
        c.lineage = h.id.to_string();
        let dc = domain_of(&c);
        assert_ne!(dc, 0);
        assert_ne!(
            dc,
            domain_of(&header(1 << 20)),
            "another clone, another domain"
        );
        assert_eq!(tweak(dc, 5), (u128::from(dc) << 64) | 5);
    }
}
