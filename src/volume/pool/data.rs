//! One chunk size's data file as the pool uses it: a [`BlockStore`] plus the "written
//! since the last sync" flag that lets a commit skip an fdatasync when nothing changed.
//!
//! The flag is raised *after* a write or punch returns, never before: a commit that
//! clears it and syncs between the two would otherwise see "clean", skip the sync, and
//! acknowledge an fsync whose data is not on disk (the defect `fsync_that_does_not_sync`).
//! Raised after, the worst case is a spare sync: a commit that clears the flag while a
//! write is in flight syncs or not, and the write's own fsync (which comes after the write
//! returned) finds the flag raised and syncs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::SlotNo;
use crate::volume::storage::BlockStore;

#[derive(Debug)]
pub struct DataFile {
    store: Arc<dyn BlockStore>,
    pub chunk_shift: u8,
    /// Written or punched since the last successful sync.
    dirty: AtomicBool,
    /// Bytes written since the last sync began (approximate: only a commit's choice to
    /// write back ahead of its take reads it).
    unsynced: AtomicU64,
    /// Ranges written or punched since the journal last covered this file.
    written: Mutex<Written>,
    /// Held shared by every write and punch, exclusively by [`DataFile::read_whole`]: a
    /// range an entry carries is read back with no write half done in it (an entry must
    /// not make a block durable torn between two writes).
    io: RwLock<()>,
}

/// Most bytes of written ranges a file keeps track of: beyond it an fsync syncs the file
/// (its entry would cost more to write than the sync it saves).
pub(super) const WRITTEN_BYTES_MAX: u64 = 1 << 20;
/// Most ranges a file keeps track of.
const WRITTEN_RANGES_MAX: usize = 1024;

/// The ranges written (`hole` false) or punched since the journal last covered a file, in
/// the order they happened; `overflow` when there were more than it keeps, or a cover
/// failed (the next cover must then sync the file).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) ranges: Vec<Range>,
    pub(super) bytes: u64,
    pub(super) overflow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) off: u64,
    pub(super) len: u64,
    pub(super) hole: bool,
}

impl Written {
    fn note(&mut self, off: u64, len: u64, hole: bool) {
        if self.overflow || len == 0 {
            return;
        }
        if let Some(last) = self.ranges.last_mut()
            && last.hole == hole
            && last.off + last.len == off
        {
            last.len += len;
        } else {
            self.ranges.push(Range { off, len, hole });
        }
        if !hole {
            self.bytes += len;
        }
        if self.bytes > WRITTEN_BYTES_MAX || self.ranges.len() > WRITTEN_RANGES_MAX {
            *self = Written {
                overflow: true,
                ..Written::default()
            };
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty() && !self.overflow
    }
}

impl DataFile {
    pub(super) fn new(store: Arc<dyn BlockStore>, chunk_shift: u8) -> DataFile {
        DataFile {
            store,
            chunk_shift,
            dirty: AtomicBool::new(false),
            unsynced: AtomicU64::new(0),
            written: Mutex::default(),
            io: RwLock::new(()),
        }
    }

    pub fn path(&self) -> &std::path::Path {
        self.store.path()
    }

    pub fn slot_offset(&self, slot: SlotNo) -> u64 {
        slot.0 << self.chunk_shift
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.store
            .read_at(buf, off)
            .map_err(|e| VolumeError::io("cannot read", self.path(), e))
    }

    pub fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let _io = self.io.read().unwrap_or_else(|p| p.into_inner());
        let r = self.store.write_at(buf, off);
        // Even a failed write may have changed part of the range.
        self.dirty.store(true, Ordering::Release);
        self.unsynced.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.note_written(off, buf.len() as u64, false);
        r.map_err(|e| VolumeError::io("cannot write", self.path(), e))
    }

    /// A bulk write of page-aligned `buf` (from an `AlignedBuf`) that bypasses the page
    /// cache where it can (see `BlockStore::write_direct`).
    pub fn write_direct(&self, buf: &[u8], off: u64) -> Result<()> {
        let _io = self.io.read().unwrap_or_else(|p| p.into_inner());
        let r = self.store.write_direct(buf, off);
        self.dirty.store(true, Ordering::Release);
        self.unsynced.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.note_written(off, buf.len() as u64, false);
        r.map_err(|e| VolumeError::io("cannot write", self.path(), e))
    }

    /// Reads with no write or punch of this file in flight (see `io`).
    pub(super) fn read_whole(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let _io = self.io.write().unwrap_or_else(|p| p.into_inner());
        self.read_at(buf, off)
    }

    /// A small read: from the page cache if it holds all of it (no read-ahead advice then:
    /// an `fadvise` per cached 4 KiB read cost random reads through `mount` 13 %);
    /// otherwise asks for `around` (offset, length) to be read ahead, then reads.
    pub fn read_around(&self, buf: &mut [u8], off: u64, around: (u64, u64)) -> Result<()> {
        if self.store.read_cached(buf, off) {
            return Ok(());
        }
        self.prefetch(around.0, around.1);
        self.read_at(buf, off)
    }

    /// Whether the page cache holds all of `buf`'s range: then it is read (see
    /// [`DataFile::read_around`]).
    pub fn read_cached(&self, buf: &mut [u8], off: u64) -> bool {
        self.store.read_cached(buf, off)
    }

    /// Asks the kernel to start reading a range into the page cache (no wait).
    pub fn prefetch(&self, off: u64, len: u64) {
        self.store.prefetch(off, len);
    }

    /// Turns a byte range into a hole: it then reads as zeros (which we treat as unwritten
    /// blocks) and its disk space is returned to the filesystem.
    pub fn punch(&self, off: u64, len: u64) -> Result<()> {
        let _io = self.io.read().unwrap_or_else(|p| p.into_inner());
        let r = self.store.punch(off, len);
        self.dirty.store(true, Ordering::Release);
        self.note_written(off, len, true);
        r.map_err(|e| VolumeError::io("cannot punch a hole in", self.path(), e))
    }

    pub fn punch_slot(&self, slot: SlotNo) -> Result<()> {
        self.punch(self.slot_offset(slot), 1 << self.chunk_shift)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> Result<u64> {
        self.store
            .len()
            .map_err(|e| VolumeError::io("cannot stat", self.path(), e))
    }

    /// fdatasync if anything was written since the last sync.
    pub(super) fn sync_if_dirty(&self) -> Result<()> {
        self.unsynced.store(0, Ordering::Relaxed);
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // Raised again if the sync fails, or panics (a commit's panic is caught by the FUSE
        // ring's dispatcher and the daemon serves on): the next commit must sync.
        let synced =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.store.sync_data()));
        match synced {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.dirty.store(true, Ordering::Release);
                Err(VolumeError::io("cannot sync", self.path(), e))
            }
            Err(panic) => {
                self.dirty.store(true, Ordering::Release);
                std::panic::resume_unwind(panic)
            }
        }
    }

    fn note_written(&self, off: u64, len: u64, hole: bool) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .note(off, len, hole);
    }

    /// Takes the ranges written since the last take: the caller's cover (a journal entry
    /// holding them, or a sync of this file) now answers for them.
    pub(super) fn take_written(&self) -> Written {
        std::mem::take(&mut *self.written.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A cover of ranges taken failed: the next one must sync this file.
    pub(super) fn lose_written(&self) {
        let mut w = self.written.lock().unwrap_or_else(|p| p.into_inner());
        *w = Written {
            overflow: true,
            ..Written::default()
        };
    }

    /// Bytes written since the last sync began.
    pub(super) fn unsynced_bytes(&self) -> u64 {
        self.unsynced.load(Ordering::Relaxed)
    }

    /// Test hook for the flag's ordering (see the module doc).
    #[cfg(test)]
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }
}
