//! The authenticated paths of an open volume (`volume create --integrity`): reading checks
//! every block's tag, writing tags every block, and a write never lands where a commit has
//! seen a block: it goes into the block's other half (see `integrity::SlotRecord`), or, when
//! a commit naming the block is still in flight, into a copy of the chunk (see
//! `integrity::Moves`). A chunk copied from another tweak domain (a clone's first write to
//! a chunk it shares with its source) is re-encrypted into the writer's domain, block by
//! checked block.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{BS, COPY_BUF, OpenVolume, with_buf};
use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::{BLOCK_SIZE, SlotNo};
use crate::volume::integrity::{
    BlockTag, IntegrityKeys, MacAlg, Placement, SlotRecord, runs, tweak,
};
use crate::volume::pool::DataFile;

/// Per-block working state of one read or write, reused by each thread: the block path
/// allocates nothing, and holds no record lock while it hashes or does I/O.
#[derive(Default)]
struct Scratch {
    /// The tags a read checks (copied out of the record) or a write makes.
    tags: Vec<BlockTag>,
    /// The half each block is read from or written to (empty: all in half 0).
    halves: Vec<u8>,
    /// Per block of a write: it moves to its other half.
    moved: Vec<bool>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// The authentication state of an open volume.
pub(super) struct Auth {
    pub(super) keys: Arc<IntegrityKeys>,
    /// The domain this volume writes in.
    pub(super) domain: u64,
    /// Records of slots it read or wrote: the committed ones are loaded on first use (and
    /// may be dropped again: they never change), the fresh ones live here and in the
    /// pool's pending commit until it takes them.
    records: Mutex<HashMap<SlotNo, Arc<Mutex<SlotRecord>>>>,
    /// Blocks found bad since open.
    pub(super) bad: AtomicU64,
    /// The pool's registration of this open (`Pool::close_integrity`).
    pub(super) token: u64,
    /// The pool's alternate file (the second halves), opened on first use.
    alt: OnceLock<Arc<DataFile>>,
}

impl Auth {
    pub(super) fn new(
        keys: Arc<IntegrityKeys>,
        domain: u64,
        records: HashMap<SlotNo, SlotRecord>,
        token: u64,
    ) -> Auth {
        // Up to the cache's size, the records read at open are kept (the first reads need
        // no metadata lookup); a larger volume's are loaded as its chunks are used.
        let records = if records.len() <= RECORD_CACHE {
            records
                .into_iter()
                .map(|(s, r)| (s, Arc::new(Mutex::new(r))))
                .collect()
        } else {
            HashMap::new()
        };
        Auth {
            keys,
            domain,
            records: Mutex::new(records),
            bad: AtomicU64::new(0),
            token,
            alt: OnceLock::new(),
        }
    }
}

/// Blocks encrypted then tagged (or checked then decrypted) together: 16 KiB, half of the
/// L1 data cache of the CPUs we measure on.
const FUSED: usize = 4;

/// Records an open volume keeps in memory before it drops committed ones: 4096 records of
/// a 1 MiB chunk are 24 MiB, the tags of 4 GiB of data.
/// (Unit tests use a small cache, so that they drop records.)
const RECORD_CACHE: usize = if cfg!(test) { 64 } else { 4096 };

/// What a verification found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    pub blocks_checked: u64,
    pub bad_blocks: Vec<u64>,
    /// The map and tags match the root, and the root its anchor's generation or newer.
    pub root_ok: bool,
    pub root_problem: Option<String>,
}

impl OpenVolume {
    pub(super) fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    fn blocks_per_chunk(&self) -> usize {
        (self.chunk_size() / BLOCK_SIZE) as usize
    }

    /// The record of a slot this volume maps.
    pub(super) fn record(&self, slot: SlotNo) -> Result<Arc<Mutex<SlotRecord>>> {
        let a = self.auth().expect("authenticated volume");
        if let Some(r) = lock(&a.records).get(&slot) {
            return Ok(r.clone());
        }
        let rec = self
            .pool
            .load_slot_record(self.shift, slot)?
            .ok_or_else(|| VolumeError::Tampered {
                volume: self.id.to_string(),
                detail: format!("slot {} it maps has no integrity record", slot.0),
            })?;
        let rec = Arc::new(Mutex::new(rec));
        let mut cache = lock(&a.records);
        if cache.len() >= RECORD_CACHE {
            // Only durable records go: nothing else holds them (one written since the last
            // commit is also in the pool's pending commit), and no placement of theirs
            // waits for a commit, so they read back the same from the metadata.
            let durable = self.pool.durable_epoch();
            cache.retain(|_, r| Arc::strong_count(r) > 1 || lock(r).moves.pending(durable));
        }
        cache.insert(slot, rec.clone());
        Ok(rec)
    }

    /// A fresh record for a slot just reserved: all its blocks are placed in this epoch
    /// (no commit has seen the slot).
    pub(super) fn new_record(&self, slot: SlotNo, mut rec: SlotRecord) -> Arc<Mutex<SlotRecord>> {
        let a = self.auth().expect("authenticated volume");
        let n = rec.tags.len();
        rec.moves.mark(self.pool.epoch(), 0, n, n);
        let rec = Arc::new(Mutex::new(rec));
        lock(&a.records).insert(slot, rec.clone());
        self.pool.record_dirty(self.shift, slot, &rec);
        rec
    }

    fn bad_block(&self, block: u64, detail: &'static str) -> VolumeError {
        if let Some(a) = self.auth() {
            a.bad.fetch_add(1, Ordering::Relaxed);
        }
        self.pool.count_bad_block(self.id.as_str());
        tracing::error!(
            volume = %self.id,
            block,
            "block fails its integrity check ({detail}): read as an I/O error"
        );
        VolumeError::BadBlock {
            volume: self.id.to_string(),
            block,
            detail,
        }
    }

    /// Reads and checks whole blocks of `slot` at `in_chunk` into `buf`, then decrypts
    /// them; holes read as zeros. The first bad block fails the read (EIO).
    pub(super) fn read_blocks_auth(
        &self,
        chunk: u64,
        slot: SlotNo,
        in_chunk: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let bad = self.check_blocks(chunk, slot, in_chunk, buf, true)?;
        match bad.first() {
            Some(&(block, detail)) => Err(self.bad_block(block, detail)),
            None => Ok(()),
        }
    }

    /// Reads, checks and decrypts; returns the bad blocks (all of them, or the first when
    /// `stop_at_first`). Bad blocks and holes are zeros in `buf`. The tags are copied into
    /// a per-thread buffer (no allocation, no lock held while hashing), and the good blocks
    /// are decrypted in runs, as the plain path does.
    fn check_blocks(
        &self,
        chunk: u64,
        slot: SlotNo,
        in_chunk: u64,
        buf: &mut [u8],
        stop_at_first: bool,
    ) -> Result<Vec<(u64, &'static str)>> {
        let first = (in_chunk / BLOCK_SIZE) as usize;
        let n = buf.len() / BS;
        let rec = self.record(slot)?;
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            sc.tags.clear();
            sc.halves.clear();
            let (alg, domain, window) = {
                let r = lock(&rec);
                sc.tags.extend_from_slice(&r.tags[first..first + n]);
                if !r.all_in_first_half() {
                    sc.halves
                        .extend((first..first + n).map(|i| r.half(i) as u8));
                }
                let window = self
                    .prefetch_window(in_chunk, buf.len())
                    .map(|(b, len)| r.halves_in(b, len));
                (r.mac, r.domain, window)
            };
            // Empty: every block of this read lies in the first half.
            if !sc.halves.contains(&1) {
                sc.halves.clear();
            }
            if sc.tags.iter().all(BlockTag::is_hole) {
                buf.fill(0);
                return Ok(vec![]);
            }
            // A small read's read-ahead, in each file that holds a written block of the
            // window around it: its neighbours are read next as often as on a plain
            // volume, whichever half they lie in. (Asking only the file this read reads
            // from left the other half's neighbours to miss one by one: random reads
            // through ext4 ran 20 µs slower once overwrites had spread the blocks.)
            //
            // Unless the page cache holds what this read wants: then it is read from there
            // and no advice is given (an fadvise per cached 4 KiB read cost random reads
            // through `mount` 13 %). Tried for a small read from one half only.
            let one_half = match sc.halves.first() {
                None => Some(0),
                Some(&h) if sc.halves.iter().all(|&x| x == h) => Some(h as usize),
                Some(_) => None,
            };
            let cached = match (window, one_half) {
                (Some(_), Some(h)) => {
                    let f = self.half_file(h)?;
                    f.read_cached(buf, f.slot_offset(slot) + in_chunk)
                }
                _ => false,
            };
            if let Some((in_first, in_second)) = window.filter(|_| !cached) {
                if in_first {
                    self.prefetch_around(&self.data, slot, in_chunk, buf.len());
                }
                // Advice only: a second-halves file that cannot be opened fails the reads
                // that need it (below), not one that only has a neighbour there.
                if in_second && let Ok(alt) = self.half_file(1) {
                    self.prefetch_around(alt, slot, in_chunk, buf.len());
                }
            }
            if cached {
                // Read above.
            } else if sc.halves.is_empty() {
                self.data
                    .read_at(buf, self.data.slot_offset(slot) + in_chunk)?;
            } else {
                let halves = &sc.halves;
                let by_half = runs(n, |i| halves[i] as usize);
                self.read_runs(
                    slot,
                    by_half.map(|(s, e, h)| (first + s, first + e, h)),
                    buf,
                )?;
            }
            let first_block = (chunk * self.chunk_size() + in_chunk) / BLOCK_SIZE;
            Ok(self.check_part(alg, domain, first_block, &sc.tags, buf, stop_at_first))
        })
    }

    /// Checks and decrypts `buf` (blocks from `first_block` on) against `tags`: the good
    /// blocks are decrypted in runs; bad ones and holes are zeros.
    fn check_part(
        &self,
        alg: MacAlg,
        domain: u64,
        first_block: u64,
        tags: &[BlockTag],
        buf: &mut [u8],
        stop_at_first: bool,
    ) -> Vec<(u64, &'static str)> {
        let a = self.auth().expect("authenticated volume");
        let n = tags.len();
        let mut bad = vec![];
        let mut run: Option<usize> = None;
        for i in 0..=n {
            let good = i < n && {
                let b = &mut buf[i * BS..(i + 1) * BS];
                let block = first_block + i as u64;
                if tags[i].is_hole() {
                    b.fill(0);
                    false
                } else if a.keys.verify(alg, domain, block, &tags[i], b) {
                    true
                } else {
                    b.fill(0);
                    bad.push((block, "its MAC does not match its ciphertext"));
                    if stop_at_first {
                        return bad;
                    }
                    false
                }
            };
            // A run ends at a bad block or a hole, or at FUSED blocks: those were just
            // read by the MAC and are still in the L1 cache for the decryption.
            if let Some(s) = run
                && (!good || i - s == FUSED)
            {
                self.xts.decrypt_units_at(
                    tweak(domain, first_block + s as u64),
                    &mut buf[s * BS..i * BS],
                );
                run = None;
            }
            if good && run.is_none() {
                run = Some(i);
            }
        }
        bad
    }

    /// The file holding half `half` of every slot (see `integrity::SlotRecord`).
    fn half_file(&self, half: usize) -> Result<&DataFile> {
        if half == 0 {
            return Ok(&self.data);
        }
        let a = self.auth().expect("authenticated volume");
        if a.alt.get().is_none() {
            let f = self.pool.file(self.shift, 1)?;
            let _ = a.alt.set(f);
        }
        Ok(a.alt.get().expect("set above"))
    }

    /// Reads runs `(start, end, half)` of blocks of `slot` (block indexes in the chunk,
    /// in order, from the first block `buf` holds) into `buf`, each from its half.
    fn read_runs(
        &self,
        slot: SlotNo,
        runs: impl Iterator<Item = (usize, usize, usize)>,
        buf: &mut [u8],
    ) -> Result<()> {
        let mut runs = runs.peekable();
        let Some(&(first, _, _)) = runs.peek() else {
            return Ok(());
        };
        for (s, e, half) in runs {
            let f = self.half_file(half)?;
            f.read_at(
                &mut buf[(s - first) * BS..(e - first) * BS],
                f.slot_offset(slot) + (s * BS) as u64,
            )?;
        }
        Ok(())
    }

    /// Writes (`punch` false) or punches runs of `buf`'s blocks, each into the half
    /// `halves` names for it; `first` is the first block's index in the chunk.
    fn put_runs(
        &self,
        slot: SlotNo,
        first: usize,
        halves: &[u8],
        buf: Option<&[u8]>,
    ) -> Result<()> {
        for (s, e, half) in runs(halves.len(), |i| halves[i] as usize) {
            let f = self.half_file(half)?;
            let at = f.slot_offset(slot) + ((first + s) * BS) as u64;
            match buf {
                Some(b) => f.write_at(&b[s * BS..e * BS], at)?,
                None => f.punch(at, ((e - s) * BS) as u64)?,
            }
        }
        Ok(())
    }

    /// Whether a write of `[b0, b1)` (bytes in the chunk) can go into `slot` itself:
    /// the slot is in this volume's domain (one in another, a chunk fetched from an archive
    /// say, is copied into it), and no block of it waits for a commit that has been taken
    /// but is not durable.
    ///
    /// A block waiting for a commit in flight waits for that commit's end
    /// (`Pool::wait_for_commit_in_flight`) and is looked at again: once the commit is
    /// durable it has a free half, and the chunk is copied only if the commit failed.
    pub(super) fn placeable(&self, slot: SlotNo, b0: u64, b1: u64) -> Result<bool> {
        let rec = self.record(slot)?;
        if lock(&rec).domain != self.auth().expect("authenticated volume").domain {
            return Ok(false);
        }
        let free = || {
            let (epoch, durable) = (self.pool.epoch(), self.pool.durable_epoch());
            let r = lock(&rec);
            ((b0 / BLOCK_SIZE) as usize..b1.div_ceil(BLOCK_SIZE) as usize)
                .all(|i| r.moves.placement(i, epoch, durable) != Placement::Copy)
        };
        Ok(free() || (self.pool.wait_for_commit_in_flight() && free()))
    }

    /// Where each of blocks `first..first + n` of a record goes: its half into
    /// `sc.halves`, whether it moves into `sc.moved`. `placeable` said yes under the same
    /// stripe lock and gate, and the epoch cannot change meanwhile (a newer durable epoch
    /// only frees more), so no block needs a copy.
    fn placements(
        &self,
        slot: SlotNo,
        r: &SlotRecord,
        first: usize,
        n: usize,
        sc: &mut Scratch,
    ) -> Result<()> {
        let (epoch, durable) = (self.pool.epoch(), self.pool.durable_epoch());
        sc.halves.clear();
        sc.moved.clear();
        for i in first..first + n {
            let (half, moved) = match r.moves.placement(i, epoch, durable) {
                Placement::InPlace => (r.half(i), false),
                Placement::Flip => (1 - r.half(i), true),
                Placement::Copy => {
                    return Err(VolumeError::Corrupt {
                        what: format!("volume {}", self.id),
                        detail: format!(
                            "block {i} of slot {} was about to be overwritten where a commit in flight names it",
                            slot.0
                        ),
                    });
                }
            };
            sc.halves.push(half as u8);
            sc.moved.push(moved);
        }
        Ok(())
    }

    /// Encrypts whole blocks in this volume's domain, writes each into the half of `slot`
    /// no durable commit names for it (`integrity::Moves`), and only then records their
    /// tags and halves. If the write fails, each block keeps the tag and half that match
    /// what the slot now holds (the old ones if the write did not reach it: a moved
    /// block's old half was not touched), so a failed write never leaves a block that
    /// fails its own check.
    pub(super) fn write_sealed(
        &self,
        chunk: u64,
        slot: SlotNo,
        in_chunk: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let a = self.auth().expect("authenticated volume");
        let rec = self.record(slot)?;
        let first = (in_chunk / BLOCK_SIZE) as usize;
        let n = buf.len() / BS;
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            let alg = {
                let r = lock(&rec);
                self.placements(slot, &r, first, n, sc)?;
                r.mac
            };
            let first_block = (chunk * self.chunk_size() + in_chunk) / BLOCK_SIZE;
            let gen0 = self.pool.next_generations(n as u64);
            // Encrypted and tagged before the write (a tag is recorded only once its block
            // is written, below), a few blocks at a time: the MAC reads each block while
            // the encryption has just left it in the L1 cache.
            sc.tags.clear();
            for (gi, group) in buf.chunks_mut(FUSED * BS).enumerate() {
                let g0 = gi * FUSED;
                self.xts
                    .encrypt_units_at(tweak(a.domain, first_block + g0 as u64), group);
                for (j, b) in group.chunks_exact(BS).enumerate() {
                    let (i, g) = (g0 + j, gen0 + (g0 + j) as u64);
                    sc.tags.push(BlockTag {
                        generation: g,
                        mac: a
                            .keys
                            .block_mac(alg, a.domain, first_block + i as u64, g, b),
                    });
                }
            }
            let written = self.put_runs(slot, first, &sc.halves, Some(buf));
            // The stripe's write lock keeps every reader of this chunk out meanwhile.
            let epoch = self.pool.epoch();
            let mut any_moved = false;
            let mut r = lock(&rec);
            let blocks = r.tags.len();
            r.moves.prune(self.pool.durable_epoch());
            for (i, b) in buf.chunks_exact_mut(BS).enumerate() {
                let (t, half) = (sc.tags[i], sc.halves[i] as usize);
                // After a failed write what reached the slot is unknown: each block keeps
                // the tag (and half) it matches.
                let landed = written.is_ok()
                    || self.half_file(half).is_ok_and(|f| {
                        f.read_at(b, f.slot_offset(slot) + ((first + i) * BS) as u64)
                            .is_ok()
                            && a.keys.verify(alg, a.domain, first_block + i as u64, &t, b)
                    });
                if landed {
                    r.tags[first + i] = t;
                    r.set_half(first + i, half);
                    r.moves.mark(epoch, first + i, first + i + 1, blocks);
                    any_moved |= sc.moved[i];
                }
            }
            drop(r);
            if any_moved {
                self.pool
                    .record_moved(self.id.as_str(), chunk, self.shift, slot, &rec);
            }
            written
        })
    }

    /// Makes blocks `[b0, b1)` (bytes in the chunk) of a slot this volume owns holes (a
    /// discard): each block's new place is punched (its other half if it moves, so the
    /// committed one stays intact until the commit), and its tag becomes a hole.
    pub(super) fn hole_blocks(&self, chunk: u64, slot: SlotNo, b0: u64, b1: u64) -> Result<()> {
        let rec = self.record(slot)?;
        let (first, n) = (
            (b0 / BLOCK_SIZE) as usize,
            ((b1 - b0) / BLOCK_SIZE) as usize,
        );
        SCRATCH.with(|sc| {
            let sc = &mut *sc.borrow_mut();
            self.placements(slot, &lock(&rec), first, n, sc)?;
            self.put_runs(slot, first, &sc.halves, None)?;
            let epoch = self.pool.epoch();
            let mut r = lock(&rec);
            let blocks = r.tags.len();
            for (i, half) in sc.halves.iter().enumerate() {
                r.tags[first + i] = BlockTag::HOLE;
                r.set_half(first + i, *half as usize);
            }
            r.moves.prune(self.pool.durable_epoch());
            r.moves.mark(epoch, first, first + n, blocks);
            drop(r);
            if sc.moved.iter().any(|m| *m) {
                self.pool
                    .record_moved(self.id.as_str(), chunk, self.shift, slot, &rec);
            }
            Ok(())
        })
    }

    /// The record of a slot just reserved for a first write: all holes, in our domain.
    pub(super) fn fresh_record(&self, slot: SlotNo) {
        let domain = self.auth().expect("authenticated volume").domain;
        self.new_record(slot, SlotRecord::holes(domain, self.blocks_per_chunk()));
    }

    /// Copy-on-write of an authenticated chunk: every block of `from` outside
    /// `[skip0, skip1)` is checked and copied into `to` with its tag, re-encrypted into
    /// this volume's domain (with a new tag) if `from` is in another.
    pub(super) fn copy_slot_auth(
        &self,
        chunk: u64,
        from: SlotNo,
        to: SlotNo,
        skip0: u64,
        skip1: u64,
    ) -> Result<()> {
        let a = self.auth().expect("authenticated volume");
        let src = {
            let r = self.record(from)?;
            let r = lock(&r);
            r.clone()
        };
        let mut dst = SlotRecord::holes(a.domain, self.blocks_per_chunk());
        // Within a domain the tags move unchanged, so the copy keeps the source's MAC;
        // into another domain every block gets a new tag, with the current MAC.
        if src.domain == a.domain {
            dst.mac = src.mac;
        }
        let cs = self.chunk_size();
        for (s, e) in [(0, skip0), (skip1, cs)] {
            let mut pos = s;
            while pos < e {
                let n = (e - pos).min(256 << 10);
                let first = (pos / BLOCK_SIZE) as usize;
                let tags = &src.tags[first..first + (n / BLOCK_SIZE) as usize];
                if tags.iter().all(BlockTag::is_hole) {
                    pos += n;
                    continue;
                }
                with_buf(&COPY_BUF, n as usize, |b| -> Result<()> {
                    self.read_runs(from, src.half_runs(first, tags.len()), b)?;
                    let first_block = (chunk * cs + pos) / BLOCK_SIZE;
                    for (i, tag) in tags.iter().enumerate() {
                        let blk = &mut b[i * BS..(i + 1) * BS];
                        let block = first_block + i as u64;
                        if tag.is_hole() {
                            blk.fill(0);
                            continue;
                        }
                        // In the same domain the block moves with its tag, unchecked: a bad
                        // one stays bad (and is found when read). Into another domain it is
                        // decrypted, so it is checked first.
                        if src.domain == a.domain {
                            dst.tags[first + i] = *tag;
                            continue;
                        }
                        if !a.keys.verify(src.mac, src.domain, block, tag, blk) {
                            return Err(
                                self.bad_block(block, "its MAC does not match its ciphertext")
                            );
                        }
                        dst.tags[first + i] = {
                            self.xts.decrypt_units_at(tweak(src.domain, block), blk);
                            self.xts.encrypt_units_at(tweak(a.domain, block), blk);
                            let generation = self.pool.next_generation();
                            BlockTag {
                                generation,
                                mac: a.keys.block_mac(dst.mac, a.domain, block, generation, blk),
                            }
                        };
                    }
                    self.data.write_at(b, self.data.slot_offset(to) + pos)
                })?;
                pos += n;
            }
        }
        self.new_record(to, dst);
        Ok(())
    }

    /// Checks every block this volume maps and its root; reads nothing else.
    pub fn verify(&self) -> Result<VerifyReport> {
        let Some(a) = self.auth() else {
            return Err(VolumeError::invalid(
                "volume",
                format!(
                    "{} was created without --integrity: it has no block tags to verify",
                    self.id
                ),
            ));
        };
        let mut report = VerifyReport {
            root_ok: true,
            ..VerifyReport::default()
        };
        match self.pool.check_root(self.id.as_str(), self.shift, &a.keys) {
            Ok(None) => {}
            Ok(Some(p)) => {
                report.root_ok = false;
                report.root_problem = Some(p);
            }
            Err(e @ VolumeError::Tampered { .. }) => {
                report.root_ok = false;
                report.root_problem = Some(e.to_string());
            }
            Err(e) => return Err(e),
        }
        let chunks: Vec<(u64, SlotNo)> = {
            let m = self.map.read().unwrap_or_else(|p| p.into_inner());
            let mut v: Vec<_> = m.iter().map(|(c, e)| (*c, e.slot)).collect();
            v.sort();
            v
        };
        let cs = self.chunk_size() as usize;
        let mut buf = vec![0u8; cs];
        for (chunk, _) in chunks {
            let _g = self.stripe(chunk).read().unwrap_or_else(|p| p.into_inner());
            let Some(e) = self.entry(chunk) else { continue };
            let bad = self.check_blocks(chunk, e.slot, 0, &mut buf, false)?;
            report.blocks_checked += (cs / BS) as u64;
            for (block, detail) in bad {
                let _ = self.bad_block(block, detail);
                report.bad_blocks.push(block);
            }
        }
        Ok(report)
    }

    /// Blocks found bad since this volume was opened.
    pub fn bad_blocks_seen(&self) -> u64 {
        self.auth().map_or(0, |a| a.bad.load(Ordering::Relaxed))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
