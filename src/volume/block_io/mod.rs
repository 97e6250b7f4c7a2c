//! Block I/O on an open volume: byte-range reads, writes and discards turned into
//! encrypted 4 KiB blocks in pool slots. Reads decrypt, writes encrypt (read-modify-write
//! for partial blocks), first writes allocate, writes to shared slots copy the chunk's
//! ciphertext first (same key, same tweaks), discards unmap or punch.
//!
//! Concurrency: no global lock around I/O. Each chunk is guarded by one of `STRIPES`
//! reader-writer locks (reads share, writes and discards exclude); the map's own lock is
//! held only for lookups and updates. Buffers are per thread and reused, so the hot path
//! does not allocate.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::error::{Result, VolumeError};
use super::header::VolumeHeader;
use super::ids::{BLOCK_SIZE, SlotNo, VolumeId};
use super::integrity::{IntegrityKeys, tweak};
use super::pool::Rollback;
use super::pool::{DataFile, Pool, Reserved};
use super::remote::RemoteChunk;
use crate::crypto::xts::Xts;

const BS: usize = BLOCK_SIZE as usize;
const STRIPES: usize = 64;
/// Readahead window for small reads (see `read_blocks`).
const PREFETCH: u64 = 128 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    slot: SlotNo,
    /// Another map (a snapshot, a restored volume) may point at this slot: copy it before
    /// writing. May be stale in the safe direction only (true when no longer shared).
    shared: bool,
    /// The tweak domain the slot's blocks are encrypted in (`pool::domains`; an
    /// authenticated volume reads it from the slot's record instead).
    domain: u64,
}

/// Where a write to a chunk goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The chunk's own slot, shared with no one: written in place (in its domain).
    InPlace(Entry),
    /// A fresh reservation (first write, or copy-on-write of the shared slot `old`),
    /// written in the volume's domain; it replaces `old` in the map once written.
    Fresh { new: Reserved, old: Option<Entry> },
}

/// The data of a write: borrowed (copied into a buffer of the volume's before it is
/// encrypted), or given up by its caller (`write_consuming`: encrypted where it is).
enum Piece<'a> {
    Copied(&'a [u8]),
    InPlace(&'a mut [u8]),
}

impl Piece<'_> {
    fn len(&self) -> usize {
        self.bytes().len()
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Copied(b) => b,
            Piece::InPlace(b) => b,
        }
    }
}

impl Target {
    fn slot(self) -> SlotNo {
        match self {
            Target::InPlace(e) => e.slot,
            Target::Fresh { new, .. } => new.0,
        }
    }

    /// Where the chunk's current content is (for partial blocks), if anywhere.
    fn source(self) -> Option<Entry> {
        match self {
            Target::InPlace(e) => Some(e),
            Target::Fresh { old, .. } => old,
        }
    }
}

thread_local! {
    static IO_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static COPY_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_buf<R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> R,
) -> R {
    cell.with(|b| {
        let mut b = b.borrow_mut();
        if b.len() < len {
            b.resize(len, 0);
        }
        f(&mut b[..len])
    })
}

/// True if every byte is zero: the ciphertext of a block that was never written.
pub fn is_zero(b: &[u8]) -> bool {
    // 16 bytes at a time: the compiler turns this into wide compares.
    let (mid, post) = b.split_at(b.len() / 16 * 16);
    mid.chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().expect("16 bytes")) == 0)
        && post.iter().all(|&x| x == 0)
}

/// Bytes a disk writes atomically: a crash can tear a block write at these boundaries.
const SECTOR: usize = 512;

/// True if a 4 KiB ciphertext block holds data: no 512-byte sector of it is all zeros.
/// An unwritten block is a hole (all zeros). A first write into a hole that a crash tore
/// leaves some sectors of ciphertext and some of zeros; decrypted, the zero sectors would
/// read as bytes the volume never held, so such a block reads as the hole it was (the
/// write was not acknowledged by an fsync, or it would be whole). A real ciphertext
/// sector is all zeros with probability 2^-4096.
pub fn is_written(block: &[u8]) -> bool {
    block.chunks(SECTOR).all(|s| !is_zero(s))
}

pub struct OpenVolume {
    pub id: VolumeId,
    size: AtomicU64,
    shift: u8,
    pool: Arc<Pool>,
    data: Arc<DataFile>,
    xts: Xts,
    map: RwLock<HashMap<u64, Entry>>,
    /// Chunks still in the object store (lazy restore; `remote.rs`). A chunk is in `map`
    /// or here, never both; both locks are taken together, `map` first.
    remote: RwLock<HashMap<u64, RemoteChunk>>,
    /// Chunks being fetched: one fetch per chunk, whoever asks (see `remote.rs`).
    fetching: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
    region: String,
    stripes: Vec<RwLock<()>>,
    /// Block tags of an authenticated volume (`auth.rs`).
    auth: Option<auth::Auth>,
    /// The tweak domain this volume writes fresh slots in (`integrity::domain_of`).
    domain: u64,
}

impl std::fmt::Debug for OpenVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenVolume")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl OpenVolume {
    /// Loads the volume's map; `xts` comes from its data key (see `volume::keys`). An
    /// authenticated volume needs [`OpenVolume::open_authenticated`].
    pub fn open(pool: Arc<Pool>, header: &VolumeHeader, xts: Xts) -> Result<OpenVolume> {
        if header.integrity {
            return Err(VolumeError::invalid(
                "volume",
                format!(
                    "{} is authenticated: it opens with its integrity keys",
                    header.id
                ),
            ));
        }
        OpenVolume::open_with(pool, header, xts, None)
    }

    /// Opens an authenticated volume: checks its map and tags against its root, and the
    /// root against its anchor (if the pool keeps anchors: a region's pool does).
    pub fn open_authenticated(
        pool: Arc<Pool>,
        header: &VolumeHeader,
        xts: Xts,
        keys: Arc<IntegrityKeys>,
        rollback: Rollback,
    ) -> Result<OpenVolume> {
        let (records, token) = pool.open_integrity(
            header.id.as_str(),
            header.chunk_shift,
            keys.clone(),
            rollback,
        )?;
        let domain = crate::volume::integrity::domain_of(header);
        let auth = auth::Auth::new(keys, domain, records, token);
        let v = OpenVolume::open_with(pool.clone(), header, xts, Some(auth));
        if v.is_err() {
            // Not opened after all: stop keeping its root (an opened volume's Drop does).
            pool.close_integrity(header.id.as_str(), token);
        }
        v
    }

    fn open_with(
        pool: Arc<Pool>,
        header: &VolumeHeader,
        xts: Xts,
        auth: Option<auth::Auth>,
    ) -> Result<OpenVolume> {
        let shift = header.chunk_shift;
        let mut map = HashMap::new();
        for m in pool.load_map_with_refcounts(header.id.as_str(), shift)? {
            map.insert(
                m.chunk,
                Entry {
                    slot: m.slot,
                    shared: m.refs > 1,
                    domain: m.domain,
                },
            );
        }
        let remote = pool.load_remote(header.id.as_str())?.into_iter().collect();
        Ok(OpenVolume {
            id: header.id.clone(),
            size: AtomicU64::new(header.size),
            shift,
            data: pool.data_file(shift)?,
            pool,
            xts,
            map: RwLock::new(map),
            remote: RwLock::new(remote),
            fetching: Mutex::new(HashMap::new()),
            region: header.region.to_string(),
            stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
            auth,
            domain: crate::volume::integrity::domain_of(header),
        })
    }

    /// Whether every block is authenticated (`volume create --integrity`).
    pub fn is_authenticated(&self) -> bool {
        self.auth.is_some()
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Grows the volume (resize while attached).
    pub fn set_size(&self, size: u64) {
        self.size.store(size, Ordering::Release);
    }

    pub fn chunk_size(&self) -> u64 {
        1 << self.shift
    }

    /// Bytes of pool space this volume's map points at.
    pub fn allocated_bytes(&self) -> u64 {
        self.map.read().unwrap_or_else(|p| p.into_inner()).len() as u64 * self.chunk_size()
    }

    /// Holds every chunk's lock: while the guards live no read, write or discard is in
    /// flight, so a snapshot sees exactly the writes acknowledged before it.
    pub fn quiesce(&self) -> Vec<std::sync::RwLockWriteGuard<'_, ()>> {
        self.stripes
            .iter()
            .map(|s| s.write().unwrap_or_else(|p| p.into_inner()))
            .collect()
    }

    /// Marks every chunk shared (after a snapshot took references to them).
    pub fn mark_all_shared(&self) {
        for e in self
            .map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            e.shared = true;
        }
    }

    fn entry(&self, chunk: u64) -> Option<Entry> {
        self.map
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk)
            .copied()
    }

    /// Points `chunk` at `new` (a filled reservation) or at nothing, in memory and in the
    /// pool's pending metadata, as one change. Call with the chunk's stripe held for
    /// writing.
    fn set_entry(&self, chunk: u64, new: Option<(Reserved, u64)>, old: Option<SlotNo>) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        match new {
            Some((r, domain)) => m.insert(
                chunk,
                Entry {
                    slot: r.0,
                    shared: false,
                    domain,
                },
            ),
            None => m.remove(&chunk),
        };
        // A chunk that was remote (a whole-chunk write or discard of it, or its fetch)
        // stops being remote in the same change.
        let was_remote = self
            .remote
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chunk)
            .is_some();
        drop(m);
        // An authenticated slot's domain is in its record: no `slot_domain` row.
        let domain = match (new, &self.auth) {
            (Some((_, d)), None) => d,
            _ => 0,
        };
        let new = new.map(|n| n.0);
        if was_remote {
            self.pool
                .remap_remote(self.shift, self.id.as_str(), chunk, new, domain);
        } else {
            self.pool
                .remap(self.shift, self.id.as_str(), chunk, new, old, domain);
        }
    }

    fn stripe(&self, chunk: u64) -> &RwLock<()> {
        &self.stripes[(chunk % STRIPES as u64) as usize]
    }

    fn check_range(&self, off: u64, len: u64) -> Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(VolumeError::OutOfRange {
                offset: off,
                len,
                size: self.size(),
            }),
        }
    }

    /// Splits [off, off+len) at chunk boundaries: (chunk, offset in chunk, length).
    fn pieces(&self, off: u64, len: u64) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        let cs = self.chunk_size();
        let end = off + len;
        let mut pos = off;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let chunk = pos / cs;
            let in_chunk = pos % cs;
            let n = (cs - in_chunk).min(end - pos);
            pos += n;
            Some((chunk, in_chunk, n))
        })
    }

    /// Reads and decrypts whole blocks of `slot` at `in_chunk` (block-aligned) into `buf`
    /// (a multiple of 4 KiB); never-written blocks read as zeros.
    fn read_blocks(&self, chunk: u64, e: Entry, in_chunk: u64, buf: &mut [u8]) -> Result<()> {
        let slot = e.slot;
        if self.auth.is_some() {
            return self.read_blocks_auth(chunk, slot, in_chunk, buf);
        }
        let at = self.data.slot_offset(slot) + in_chunk;
        match self.around(&self.data, slot, in_chunk, buf.len()) {
            Some(around) => self.data.read_around(buf, at, around)?,
            None => self.data.read_at(buf, at)?,
        }
        let first_block = (chunk * self.chunk_size() + in_chunk) / BLOCK_SIZE;
        let mut run_start: Option<usize> = None;
        let nblocks = buf.len() / BS;
        for i in 0..=nblocks {
            let written = i < nblocks && is_written(&buf[i * BS..(i + 1) * BS]);
            if i < nblocks && !written {
                // A torn first write into a hole reads as the hole (a plain hole is
                // zeros already: no second pass over it).
                let b = &mut buf[i * BS..(i + 1) * BS];
                if !is_zero(b) {
                    b.fill(0);
                }
            }
            match (written, run_start) {
                (true, None) => run_start = Some(i),
                (false, Some(s)) => {
                    self.xts.decrypt_units_at(
                        tweak(e.domain, first_block + s as u64),
                        &mut buf[s * BS..i * BS],
                    );
                    run_start = None;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Small random reads: brings the surrounding 128 KiB of the slot in `file` into the
    /// page cache too, in the background, so neighbouring blocks hit memory next time.
    fn prefetch_around(&self, file: &DataFile, slot: SlotNo, in_chunk: u64, len: usize) {
        if let Some((off, len)) = self.around(file, slot, in_chunk, len) {
            file.prefetch(off, len);
        }
    }

    /// The bytes of `file` (offset, length) a small read of `len` bytes at `in_chunk` of
    /// `slot` asks to be read ahead; none for a large read.
    fn around(
        &self,
        file: &DataFile,
        slot: SlotNo,
        in_chunk: u64,
        len: usize,
    ) -> Option<(u64, u64)> {
        self.prefetch_window(in_chunk, len).map(|(first, blocks)| {
            (
                file.slot_offset(slot) + (first * BS) as u64,
                (blocks * BS) as u64,
            )
        })
    }

    /// The blocks (first, count) of the chunk that a read of `len` bytes at `in_chunk`
    /// brings in by read-ahead: the 128 KiB around it, for a small read; none otherwise.
    fn prefetch_window(&self, in_chunk: u64, len: usize) -> Option<(usize, usize)> {
        ((len as u64) < PREFETCH).then(|| {
            let start = (in_chunk / PREFETCH) * PREFETCH;
            let len = PREFETCH.min(self.chunk_size() - start);
            ((start / BLOCK_SIZE) as usize, (len / BLOCK_SIZE) as usize)
        })
    }

    /// Reads `buf.len()` bytes at `off`.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(off, buf.len() as u64)?;
        let mut done = 0usize;
        for (chunk, in_chunk, n) in self.pieces(off, buf.len() as u64) {
            let out = &mut buf[done..done + n as usize];
            done += n as usize;
            let _g = self.stripe(chunk).read().unwrap_or_else(|p| p.into_inner());
            let Some(e) = self.resolve(chunk)? else {
                out.fill(0);
                continue;
            };
            let a0 = in_chunk / BLOCK_SIZE * BLOCK_SIZE;
            let a1 = (in_chunk + n).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
            if a0 == in_chunk && a1 == in_chunk + n {
                self.read_blocks(chunk, e, a0, out)?;
            } else {
                with_buf(&IO_BUF, (a1 - a0) as usize, |tmp| -> Result<()> {
                    self.read_blocks(chunk, e, a0, tmp)?;
                    let s = (in_chunk - a0) as usize;
                    out.copy_from_slice(&tmp[s..s + n as usize]);
                    Ok(())
                })?;
            }
        }
        Ok(())
    }

    /// Writes `data` at `off`.
    pub fn write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.check_range(off, data.len() as u64)?;
        let mut done = 0usize;
        for (chunk, in_chunk, n) in self.pieces(off, data.len() as u64) {
            let piece = &data[done..done + n as usize];
            done += n as usize;
            self.write_piece(chunk, in_chunk, Piece::Copied(piece))?;
        }
        Ok(())
    }

    /// Writes `data` at `off` as [`Self::write`] does, but may encrypt whole blocks in
    /// `data` itself instead of copying them into a buffer of its own first: on return
    /// `data` holds ciphertext, or anything. For a caller whose buffer is done with once
    /// written (a FUSE ring entry's payload); the copy was a sixth of the daemon's time on
    /// sequential writes.
    pub fn write_consuming(&self, off: u64, data: &mut [u8]) -> Result<()> {
        self.check_range(off, data.len() as u64)?;
        let mut done = 0usize;
        for (chunk, in_chunk, n) in self.pieces(off, data.len() as u64) {
            let piece = &mut data[done..done + n as usize];
            done += n as usize;
            self.write_piece(chunk, in_chunk, Piece::InPlace(piece))?;
        }
        Ok(())
    }

    /// Gives a chunk a slot of its own that it may write: allocates on first write, copies
    /// a shared slot's ciphertext except `[skip0, skip1)` (about to be overwritten).
    /// Call with the chunk's stripe held for writing.
    fn own_slot(&self, chunk: u64, skip0: u64, skip1: u64) -> Result<Target> {
        // A remote chunk is fetched first, unless all of it is about to be overwritten
        // (its `remote` row then goes when the fresh slot is mapped, in `set_entry`).
        let current = if skip0 == 0 && skip1 == self.chunk_size() {
            self.entry(chunk)
        } else {
            self.resolve(chunk)?
        };
        // An authenticated volume writes into its own slot unless a block of the range
        // waits for a commit in flight that fails (`auth::placeable`): it then copies the
        // chunk.
        // A plain volume writes in place only into a slot of its own domain (one of
        // another domain, fetched from an archive or filled by an older cryptvol, is
        // copied into it first).
        let in_place = match &current {
            Some(e) if !e.shared => match self.auth {
                Some(_) => self.placeable(e.slot, skip0, skip1)?,
                None => e.domain == self.domain,
            },
            _ => false,
        };
        match current {
            Some(e) if in_place => Ok(Target::InPlace(e)),
            None => {
                let new = self.pool.reserve(self.shift)?;
                if self.auth.is_some() {
                    self.fresh_record(new.0);
                }
                Ok(Target::Fresh { new, old: None })
            }
            Some(e) => {
                let new = self.pool.reserve(self.shift)?;
                let copied = if self.auth.is_some() {
                    self.copy_slot_auth(chunk, e.slot, new.0, skip0, skip1)
                } else {
                    self.copy_slot(chunk, e, new.0, skip0, skip1)
                };
                if let Err(err) = copied {
                    self.pool.unreserve(self.shift, new);
                    return Err(err);
                }
                Ok(Target::Fresh { new, old: Some(e) })
            }
        }
    }

    /// Copies a plain slot's ciphertext except `[skip0, skip1)`; a slot in another domain
    /// is re-encrypted into this volume's, block by written block.
    fn copy_slot(&self, chunk: u64, from: Entry, to: SlotNo, skip0: u64, skip1: u64) -> Result<()> {
        let cs = self.chunk_size();
        let reencrypt = from.domain != self.domain;
        for (s, e) in [(0, skip0), (skip1, cs)] {
            if e <= s {
                continue;
            }
            // 256 KiB at a time keeps the per-thread buffer small.
            let mut pos = s;
            while pos < e {
                let n = (e - pos).min(256 << 10);
                with_buf(&COPY_BUF, n as usize, |b| -> Result<()> {
                    self.data
                        .read_at(b, self.data.slot_offset(from.slot) + pos)?;
                    if reencrypt {
                        let first_block = (chunk * cs + pos) / BLOCK_SIZE;
                        for (i, blk) in b.chunks_exact_mut(BS).enumerate() {
                            if is_written(blk) {
                                let block = first_block + i as u64;
                                self.xts.decrypt_units_at(tweak(from.domain, block), blk);
                                self.xts.encrypt_units_at(tweak(self.domain, block), blk);
                            } else {
                                // A hole, or a torn first write that reads as one.
                                blk.fill(0);
                            }
                        }
                    }
                    if !is_zero(b) {
                        self.data.write_at(b, self.data.slot_offset(to) + pos)?;
                    }
                    Ok(())
                })?;
                pos += n;
            }
        }
        Ok(())
    }

    /// After writing into the target: a fresh slot replaces the old mapping.
    fn commit_target(&self, chunk: u64, t: Target) {
        if let Target::Fresh { new, old } = t {
            self.set_entry(chunk, Some((new, self.domain)), old.map(|e| e.slot));
        }
    }

    /// A write into the target failed: a fresh slot goes back unused.
    fn abandon_target(&self, t: Target) {
        if let Target::Fresh { new, .. } = t {
            self.pool.unreserve(self.shift, new);
        }
    }

    /// Writes `piece` at `in_chunk` of `chunk`: whole blocks of an `InPlace` piece are
    /// encrypted (and sealed) where they are; anything else goes through a buffer of whole
    /// blocks, its partial first and last blocks completed from what is there now.
    fn write_piece(&self, chunk: u64, in_chunk: u64, piece: Piece) -> Result<()> {
        let n = piece.len() as u64;
        let a0 = in_chunk / BLOCK_SIZE * BLOCK_SIZE;
        let a1 = (in_chunk + n).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let _g = self
            .stripe(chunk)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        // After the stripe (a snapshot takes every stripe, then commits).
        let _gate = self.auth.as_ref().map(|_| self.pool.write_gate());
        let target = self.own_slot(chunk, a0, a1)?;
        let res = match piece {
            Piece::InPlace(buf) if a0 == in_chunk && a1 == in_chunk + n => {
                self.seal_and_store(chunk, a0, &target, buf)
            }
            piece => with_buf(&IO_BUF, (a1 - a0) as usize, |buf| -> Result<()> {
                // Partial first or last block: start from what is there now (in the slot
                // we write to, or in the shared slot we copy from).
                let src = target.source();
                let head = in_chunk - a0;
                let tail = a1 - (in_chunk + n);
                if head > 0 {
                    match src {
                        Some(s) => self.read_blocks(chunk, s, a0, &mut buf[..BS])?,
                        None => buf[..BS].fill(0),
                    }
                }
                if tail > 0 && (a1 - a0 > BLOCK_SIZE || head == 0) {
                    let l = buf.len();
                    match src {
                        Some(s) => {
                            self.read_blocks(chunk, s, a1 - BLOCK_SIZE, &mut buf[l - BS..])?
                        }
                        None => buf[l - BS..].fill(0),
                    }
                }
                buf[head as usize..(head + n) as usize].copy_from_slice(piece.bytes());
                self.seal_and_store(chunk, a0, &target, buf)
            }),
        };
        match res {
            Ok(()) => {
                self.commit_target(chunk, target);
                Ok(())
            }
            Err(e) => {
                self.abandon_target(target);
                Err(e)
            }
        }
    }

    /// Encrypts (and, on an authenticated volume, tags) the whole blocks in `buf` that
    /// start at `a0` of `chunk`, and writes them where `target` says.
    fn seal_and_store(&self, chunk: u64, a0: u64, target: &Target, buf: &mut [u8]) -> Result<()> {
        let slot = target.slot();
        match self.auth {
            Some(_) => self.write_sealed(chunk, slot, a0, buf),
            None => {
                let first_block = (chunk * self.chunk_size() + a0) / BLOCK_SIZE;
                let domain = match target {
                    Target::InPlace(e) => e.domain,
                    Target::Fresh { .. } => self.domain,
                };
                self.xts.encrypt_units_at(tweak(domain, first_block), buf);
                self.data.write_at(buf, self.data.slot_offset(slot) + a0)
            }
        }
    }

    /// Makes [off, off+len) read as zeros and frees what it can: whole chunks are unmapped,
    /// whole blocks punched, partial blocks overwritten with zeros.
    pub fn discard(&self, off: u64, len: u64) -> Result<()> {
        self.check_range(off, len)?;
        let cs = self.chunk_size();
        for (chunk, in_chunk, n) in self.pieces(off, len) {
            if self.entry(chunk).is_none() && !self.is_remote(chunk) {
                continue;
            }
            if n == cs {
                let _g = self
                    .stripe(chunk)
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                // A remote chunk just stops being remote: it reads as zeros, no fetch.
                match self.entry(chunk) {
                    Some(e) => self.set_entry(chunk, None, Some(e.slot)),
                    None if self.is_remote(chunk) => self.set_entry(chunk, None, None),
                    None => {}
                }
                continue;
            }
            let b0 = in_chunk.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
            let b1 = (in_chunk + n) / BLOCK_SIZE * BLOCK_SIZE;
            // Sub-block edges: write zeros through the normal path.
            let zero_edge = |s: u64, e: u64| -> Result<()> {
                if e > s {
                    let zeros = vec![0u8; (e - s) as usize];
                    self.write_piece(chunk, s, Piece::Copied(&zeros))?;
                }
                Ok(())
            };
            if b1 <= b0 {
                zero_edge(in_chunk, in_chunk + n)?;
                continue;
            }
            zero_edge(in_chunk, b0)?;
            zero_edge(b1, in_chunk + n)?;
            let _g = self
                .stripe(chunk)
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let _gate = self.auth.as_ref().map(|_| self.pool.write_gate());
            let target = self.own_slot(chunk, b0, b1)?;
            let punched = match self.auth {
                Some(_) => self.hole_blocks(chunk, target.slot(), b0, b1),
                None => self
                    .data
                    .punch(self.data.slot_offset(target.slot()) + b0, b1 - b0),
            };
            match punched {
                Ok(()) => self.commit_target(chunk, target),
                Err(e) => {
                    self.abandon_target(target);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Everything written so far becomes durable, in the pool's metadata database (a
    /// detach, `cryptvol sync`).
    pub fn flush(&self) -> Result<()> {
        self.pool.commit()
    }

    /// fsync of the volume file: everything written so far becomes durable; an
    /// authenticated volume's overwrites may go to the pool's tag journal (`Pool::sync`).
    pub fn fsync(&self) -> Result<()> {
        self.pool.sync()
    }
}

impl Drop for OpenVolume {
    fn drop(&mut self) {
        if let Some(a) = &self.auth {
            self.pool.close_integrity(self.id.as_str(), a.token);
        }
    }
}

mod auth;
mod remote;
pub use auth::VerifyReport;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_attack_b;
#[cfg(test)]
mod tests_auth;
#[cfg(test)]
mod tests_domains;
#[cfg(test)]
mod tests_halves;
#[cfg(test)]
mod tests_remote;
#[cfg(test)]
mod tests_wait_attack;
