//! The manifest of an archived snapshot: which chunk object holds each written chunk,
//! sealed so that the object store learns nothing from it and can change nothing in it.
//! Byte layout in docs/formats.md, "Snapshot manifest".
//!
//! The header is readable without a key (so `snapshot list --snapshot-store` works
//! without a KMS call) but checksummed; the chunk list is AES-256-GCM under a key derived
//! from the snapshot's data key, with the whole header (snapshot id, parent, lineage,
//! volume header) as associated data: editing, swapping or truncating either part fails
//! the tag at restore.

use crate::aws::Region;
use crate::crypto::aead::{self, NONCE_LEN, TAG_LEN};
use crate::crypto::{Key256, SecretBytes, kdf};
use crate::volume::ids::SnapshotId;
use crate::volume::integrity::{self, SlotRecord};
use crate::volume::record;
use crate::volume::{VolumeError, VolumeHeader};

pub const MAGIC: [u8; 8] = *b"CVSNAPMF";
/// Chunk entries without domain or record (still read: every chunk in domain 0).
pub const FORMAT_V1: u16 = 1;
/// Chunk entries with the chunk's tweak domain and, for an authenticated snapshot, its
/// slot record.
pub const FORMAT_V2: u16 = 2;
/// Fixed fields after magic and version: created_ns, chunk count.
const FIXED_LEN: usize = 16;
/// One chunk entry of a format 1 sealed body.
pub const ENTRY_LEN: usize = 56;
/// One chunk entry of a format 2 body before its record: the format 1 entry and the domain.
pub const ENTRY_V2_LEN: usize = 64;
const WHAT: &str = "snapshot manifest";

/// One written chunk of the snapshot and the object that holds its ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    /// The chunk's index in the volume (its blocks' tweaks follow from it).
    pub chunk: u64,
    /// blake3 of the object's bytes: the chunk's XTS ciphertext.
    pub blake3: [u8; 32],
    /// The object's generation: a fresh random number each time these bytes are uploaded
    /// anew, so that a deleter removing an old copy never removes a new one.
    pub generation: u64,
    /// Bytes in the object (the chunk size).
    pub len: u32,
    /// The tweak domain the chunk's blocks are encrypted in (tweak `domain << 64 | block`).
    pub domain: u64,
    /// An authenticated snapshot's slot record of the chunk (`integrity::SlotRecord`,
    /// encoded with every block in the slot's first half: the object holds the chunk
    /// assembled); None for a plain snapshot.
    pub record: Option<Vec<u8>>,
}

impl ChunkEntry {
    /// The object's key, relative to the store's prefix.
    pub fn object_key(&self, lineage: &str) -> String {
        object_key(lineage, &self.blake3, self.generation)
    }
}

pub fn object_key(lineage: &str, blake3: &[u8; 32], generation: u64) -> String {
    format!("chunks/{lineage}/{}-{generation:016x}", hex::encode(blake3))
}

/// The key of a snapshot's manifest object.
pub fn manifest_key(snapshot: &str) -> String {
    format!("snapshots/{snapshot}.manifest")
}

/// What anyone with the store may read of a snapshot (checksummed, authenticated at
/// restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHeader {
    pub snapshot_id: SnapshotId,
    /// The previous archived snapshot of the same volume, if any.
    pub parent: Option<SnapshotId>,
    /// The region that archived it.
    pub region: Region,
    pub description: String,
    pub created_ns: i64,
    /// The source volume's header at the snapshot: size, chunk size, lineage, and the key
    /// (key ARN and wrapped data key, or the customer key's verifier).
    pub volume: VolumeHeader,
    pub chunk_count: u64,
}

impl ManifestHeader {
    fn encode(&self, format: u16) -> Vec<u8> {
        let mut out = record::begin(&MAGIC, format);
        out.extend_from_slice(&self.created_ns.to_le_bytes());
        out.extend_from_slice(&self.chunk_count.to_le_bytes());
        record::push_field(&mut out, self.snapshot_id.as_str().as_bytes());
        let parent = self.parent.as_ref().map(|p| p.as_str()).unwrap_or("");
        record::push_field(&mut out, parent.as_bytes());
        record::push_field(&mut out, self.region.as_str().as_bytes());
        record::push_field(&mut out, self.description.as_bytes());
        record::push_field(&mut out, &self.volume.encode());
        record::seal(out)
    }

    /// The header and the format it was written in.
    fn decode(bytes: &[u8]) -> Result<(ManifestHeader, u16), VolumeError> {
        // Format 1 and 2 headers are alike: the version says how the chunk list reads.
        let format = match bytes.get(8..10) {
            Some(v) if u16::from_le_bytes([v[0], v[1]]) == FORMAT_V1 => FORMAT_V1,
            _ => FORMAT_V2,
        };
        let mut r = record::Reader::open(bytes, &MAGIC, format, FIXED_LEN, WHAT)?;
        let fixed = r.fixed(FIXED_LEN)?;
        let created_ns = i64::from_le_bytes(fixed[..8].try_into().expect("8"));
        let chunk_count = u64::from_le_bytes(fixed[8..].try_into().expect("8"));
        let snapshot_id =
            SnapshotId::parse(&r.text()?).ok_or_else(|| r.corrupt("bad snapshot id"))?;
        let parent = match r.text()?.as_str() {
            "" => None,
            p => Some(SnapshotId::parse(p).ok_or_else(|| r.corrupt("bad parent id"))?),
        };
        let region = Region::parse(&r.text()?).map_err(|_| r.corrupt("bad region"))?;
        let description = r.text()?;
        let volume = VolumeHeader::decode(r.field()?)?;
        r.finish()?;
        Ok((
            ManifestHeader {
                snapshot_id,
                parent,
                region,
                description,
                created_ns,
                volume,
                chunk_count,
            },
            format,
        ))
    }

    /// Bytes of one chunk entry of a `format` chunk list of this snapshot.
    fn entry_len(&self, format: u16) -> usize {
        match format {
            FORMAT_V1 => ENTRY_LEN,
            _ => ENTRY_V2_LEN + self.record_len(),
        }
    }

    /// Bytes of each entry's record: an authenticated snapshot's (a format 1 record of
    /// the chunk's blocks), else none.
    fn record_len(&self) -> usize {
        if self.volume.integrity {
            let blocks = 1usize << (self.volume.chunk_shift - 12);
            integrity::RECORD_HEAD + blocks * integrity::TAG_LEN
        } else {
            0
        }
    }
}

/// The key the chunk list is sealed under: derived from the snapshot's data key (the
/// volume's), so only who may decrypt the data key may read or forge the list.
fn manifest_key_from(data_key: &SecretBytes) -> Key256 {
    let mut k = [0u8; 32];
    kdf::derive_into(kdf::CTX_SNAPSHOT_MANIFEST, &[data_key.expose()], &mut k);
    let key = Key256::from_bytes(k);
    zeroize::Zeroize::zeroize(&mut k);
    key
}

/// `u32 header length ‖ header ‖ nonce ‖ AES-256-GCM(entries) ‖ tag`, format 2. Every
/// entry of an authenticated snapshot must carry its record (and only then one).
pub fn seal(header: &ManifestHeader, entries: &[ChunkEntry], data_key: &SecretBytes) -> Vec<u8> {
    seal_format(header, entries, data_key, FORMAT_V2)
}

/// [`seal`] in format 1 (no domains, no records), as cryptvol wrote manifests before
/// format 2: kept so that tests can make the archives older versions left in stores.
/// Every entry must be a plain snapshot's, in domain 0.
pub fn seal_v1(header: &ManifestHeader, entries: &[ChunkEntry], data_key: &SecretBytes) -> Vec<u8> {
    assert!(
        !header.volume.integrity && entries.iter().all(|e| e.domain == 0),
        "format 1 holds no domains or records"
    );
    seal_format(header, entries, data_key, FORMAT_V1)
}

fn seal_format(
    header: &ManifestHeader,
    entries: &[ChunkEntry],
    data_key: &SecretBytes,
    format: u16,
) -> Vec<u8> {
    debug_assert_eq!(header.chunk_count, entries.len() as u64);
    let head = header.encode(format);
    let mut body = Vec::with_capacity(entries.len() * header.entry_len(format));
    for e in entries {
        body.extend_from_slice(&e.chunk.to_le_bytes());
        body.extend_from_slice(&e.len.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&e.blake3);
        body.extend_from_slice(&e.generation.to_le_bytes());
        if format == FORMAT_V2 {
            body.extend_from_slice(&e.domain.to_le_bytes());
            let rec = e.record.as_deref().unwrap_or(&[]);
            assert_eq!(
                rec.len(),
                header.record_len(),
                "a record exactly for each chunk of an authenticated snapshot"
            );
            body.extend_from_slice(rec);
        }
    }
    let nonce: [u8; NONCE_LEN] = crate::crypto::random::array();
    let tag = aead::seal_in_place(&manifest_key_from(data_key), &nonce, &head, &mut body);
    let mut out = Vec::with_capacity(4 + head.len() + NONCE_LEN + body.len() + TAG_LEN);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    out
}

fn corrupt(detail: &str) -> VolumeError {
    VolumeError::Corrupt {
        what: WHAT.into(),
        detail: detail.into(),
    }
}

/// Splits a manifest object into its header bytes and sealed part.
fn split(bytes: &[u8]) -> Result<(&[u8], &[u8]), VolumeError> {
    let len = bytes
        .get(..4)
        .map(|l| u32::from_le_bytes(l.try_into().expect("4")) as usize)
        .ok_or_else(|| corrupt("truncated"))?;
    let head = bytes.get(4..4 + len).ok_or_else(|| corrupt("truncated"))?;
    Ok((head, &bytes[4 + len..]))
}

/// The header alone: checksummed, not yet authenticated (no key needed).
pub fn read_header(bytes: &[u8]) -> Result<ManifestHeader, VolumeError> {
    Ok(ManifestHeader::decode(split(bytes)?.0)?.0)
}

/// The header and the chunk list, authenticated under the data key; `expected` is the
/// snapshot id the object was fetched as (a manifest moved to another name fails).
pub fn open(
    bytes: &[u8],
    expected: &str,
    data_key: &SecretBytes,
) -> Result<(ManifestHeader, Vec<ChunkEntry>), VolumeError> {
    let (head, sealed) = split(bytes)?;
    let (header, format) = ManifestHeader::decode(head)?;
    if format == FORMAT_V1 && header.volume.integrity {
        return Err(corrupt(
            "a format 1 manifest cannot describe an authenticated volume (it has no block tags)",
        ));
    }
    let entry_len = header.entry_len(format);
    if header.snapshot_id.as_str() != expected {
        return Err(corrupt(&format!(
            "it describes {} but is stored as {expected}",
            header.snapshot_id
        )));
    }
    let body_len = (header.chunk_count as usize)
        .checked_mul(entry_len)
        .ok_or_else(|| corrupt("chunk count out of range"))?;
    if sealed.len() != NONCE_LEN + body_len + TAG_LEN {
        return Err(corrupt("the chunk list is truncated or extended"));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(body_len);
    let mut body = ct.to_vec();
    aead::open_in_place(
        &manifest_key_from(data_key),
        nonce.try_into().expect("12"),
        head,
        &mut body,
        tag.try_into().expect("16"),
    )
    .map_err(|_| corrupt("the chunk list does not authenticate under the snapshot's key"))?;
    let blocks = 1usize << (header.volume.chunk_shift - 12);
    let mut entries = Vec::with_capacity(header.chunk_count as usize);
    for e in body.chunks_exact(entry_len) {
        let chunk = u64::from_le_bytes(e[..8].try_into().expect("8"));
        let (domain, record) = if format == FORMAT_V1 {
            (0, None)
        } else {
            let domain = u64::from_le_bytes(e[56..64].try_into().expect("8"));
            let record = (header.record_len() > 0).then(|| e[ENTRY_V2_LEN..].to_vec());
            // Sealed with the list, so only its writer could have made it: still, a
            // record that does not decode, or names another domain, is refused here
            // rather than met at the first read.
            if let Some(r) = &record {
                let rec = SlotRecord::decode(r, blocks).map_err(|_| {
                    corrupt(&format!("the record of chunk {chunk} does not decode"))
                })?;
                if rec.domain != domain || !rec.all_in_first_half() {
                    return Err(corrupt(&format!(
                        "the record of chunk {chunk} does not match its entry"
                    )));
                }
            }
            (domain, record)
        };
        entries.push(ChunkEntry {
            chunk,
            len: u32::from_le_bytes(e[8..12].try_into().expect("4")),
            blake3: e[16..48].try_into().expect("32"),
            generation: u64::from_le_bytes(e[48..56].try_into().expect("8")),
            domain,
            record,
        });
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::test_support;

    fn sample() -> (ManifestHeader, Vec<ChunkEntry>, SecretBytes) {
        let volume = test_support::header(1 << 24);
        let entries = vec![
            ChunkEntry {
                chunk: 0,
                blake3: [1; 32],
                generation: 7,
                len: 1 << 20,
                domain: 0,
                record: None,
            },
            ChunkEntry {
                chunk: 5,
                blake3: [2; 32],
                generation: 9,
                len: 1 << 20,
                domain: 0x77,
                record: None,
            },
        ];
        let header = ManifestHeader {
            snapshot_id: SnapshotId::random(),
            parent: Some(SnapshotId::random()),
            region: Region::parse("local-1").unwrap(),
            description: "nightly".into(),
            created_ns: 1_764_000_000_123,
            volume,
            chunk_count: 2,
        };
        (header, entries, SecretBytes::random(64))
    }

    #[test]
    fn a_manifest_round_trips_and_its_header_reads_without_a_key() {
        let (h, e, k) = sample();
        let bytes = seal(&h, &e, &k);
        assert_eq!(read_header(&bytes).unwrap(), h);
        let (h2, e2) = open(&bytes, h.snapshot_id.as_str(), &k).unwrap();
        assert_eq!((h2, e2), (h.clone(), e));
        // The chunk list is not in the clear.
        assert!(!bytes.windows(32).any(|w| w == [1u8; 32]));
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), FORMAT_V2);
    }

    #[test]
    fn a_format_1_manifest_still_opens_with_every_chunk_in_domain_0() {
        let (h, mut e, k) = sample();
        e[1].domain = 0;
        let bytes = seal_v1(&h, &e, &k);
        assert_eq!(u16::from_le_bytes([bytes[12], bytes[13]]), FORMAT_V1);
        assert_eq!(
            split(&bytes).unwrap().1.len(),
            NONCE_LEN + 2 * ENTRY_LEN + TAG_LEN
        );
        assert_eq!(read_header(&bytes).unwrap(), h);
        let (h2, e2) = open(&bytes, h.snapshot_id.as_str(), &k).unwrap();
        assert_eq!((h2, e2), (h, e));
    }

    #[test]
    fn an_authenticated_snapshots_entries_carry_their_records() {
        let (mut h, mut e, k) = sample();
        h.volume.integrity = true;
        let blocks = 1usize << (h.volume.chunk_shift - 12);
        for (i, x) in e.iter_mut().enumerate() {
            let mut r = SlotRecord::holes(x.domain, blocks);
            r.tags[i] = integrity::BlockTag {
                generation: 3 + i as u64,
                mac: [9; integrity::MAC_LEN],
            };
            x.record = Some(r.encode());
        }
        let bytes = seal(&h, &e, &k);
        let (h2, e2) = open(&bytes, h.snapshot_id.as_str(), &k).unwrap();
        assert_eq!((h2, e2), (h.clone(), e.clone()));
        // A record naming another domain than its entry is refused even when sealed.
        let mut bad = e.clone();
        bad[1].domain = 5;
        let sealed = seal(&h, &bad, &k);
        assert!(open(&sealed, h.snapshot_id.as_str(), &k).is_err());
        // Format 1 cannot describe an authenticated snapshot.
        let mut plain = e.clone();
        for x in &mut plain {
            x.record = None;
            x.domain = 0;
        }
        h.volume.integrity = false;
        let v1 = seal_v1(&h, &plain, &k);
        let (head, sealed) = split(&v1).unwrap();
        let (mut hh, _) = ManifestHeader::decode(head).unwrap();
        hh.volume.integrity = true;
        let head2 = hh.encode(FORMAT_V1);
        let mut forged = (head2.len() as u32).to_le_bytes().to_vec();
        forged.extend_from_slice(&head2);
        forged.extend_from_slice(sealed);
        assert!(open(&forged, h.snapshot_id.as_str(), &k).is_err());
    }

    #[test]
    fn every_edit_swap_or_truncation_is_detected() {
        let (h, e, k) = sample();
        let bytes = seal(&h, &e, &k);
        let id = h.snapshot_id.as_str();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(open(&b, id, &k).is_err(), "flip of byte {i} went unnoticed");
        }
        for cut in [1, 16, 56, bytes.len() - 4] {
            assert!(open(&bytes[..bytes.len() - cut], id, &k).is_err());
        }
        // Another snapshot's manifest under this one's name.
        let (other, oe, _) = sample();
        let swapped = seal(&other, &oe, &k);
        assert!(open(&swapped, id, &k).is_err());
        // The right bytes under the wrong key.
        assert!(open(&bytes, id, &SecretBytes::random(64)).is_err());
        // A different parent with the same chunk list (header re-sealed by hand).
        let mut h2 = h.clone();
        h2.parent = None;
        let head2 = h2.encode(FORMAT_V2);
        let (head, sealed) = split(&bytes).unwrap();
        assert_ne!(head, &head2[..]);
        let mut spliced = (head2.len() as u32).to_le_bytes().to_vec();
        spliced.extend_from_slice(&head2);
        spliced.extend_from_slice(sealed);
        assert!(open(&spliced, id, &k).is_err());
    }
}
