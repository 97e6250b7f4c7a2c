//! The storage seam of the pool: every byte the pool reads or writes, data and metadata,
//! goes through [`PoolStorage`]. Two implementations: [`FileStorage`] (the real files of a
//! pool directory) and [`sim::SimStorage`] (an in-memory disk for tests that keeps
//! un-synced writes in a volatile layer and can crash, tear writes and fail on demand).
//! redb's `StorageBackend` is the model, and the metadata side *is* a redb backend.
//!
//! Contract of a [`BlockStore`] (what the pool relies on, what the simulator enforces):
//! - `write_at`/`write_direct`/`punch` are volatile until a later `sync_data` returns Ok;
//!   after a crash any subset of the volatile changes may be lost or kept, and a write may
//!   be torn at 512-byte sector boundaries.
//! - `read_at` past the end of the store reads zeros (stores are sparse).
//! - a punched range reads as zeros.
//! - errors are reported, never hidden: an Err from `sync_data` means nothing written
//!   since the last successful sync may be assumed durable, and (as on Linux, see
//!   [`latch`]) a later successful sync does not make it so: the pool stops syncing.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod file;
pub mod latch;
pub mod sim;

pub use file::FileStorage;
pub use latch::{LatchedStorage, SyncLatch};
pub use sim::{CrashMode, FailedSync, FaultKind, SimDisk, SimStorage};

/// One data file of the pool (one per chunk size).
#[allow(clippy::len_without_is_empty)]
pub trait BlockStore: Send + Sync + Debug {
    /// Reads `buf.len()` bytes at `off`; zeros past the end.
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
    /// Writes all of `buf` at `off` (volatile until `sync_data`).
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()>;
    /// A bulk write of page-aligned `buf` at a page-aligned offset that should bypass the
    /// page cache where the platform allows (O_DIRECT). Same durability as `write_at`.
    fn write_direct(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.write_at(buf, off)
    }
    /// Makes `[off, off+len)` a hole: it reads as zeros and its space is returned.
    fn punch(&self, off: u64, len: u64) -> io::Result<()>;
    /// Makes every earlier write and punch durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// A hint that `[off, off+len)` will be read soon. No effect on correctness.
    fn prefetch(&self, _off: u64, _len: u64) {}
    /// Reads all of `buf` at `off` if that costs no wait for the device (the page cache
    /// holds it); false: the caller reads with `read_at` (and may prefetch first). What a
    /// false leaves in `buf` is unspecified. Stores without a cache always say false.
    fn read_cached(&self, _buf: &mut [u8], _off: u64) -> bool {
        false
    }
    /// Where this store lives (for messages).
    fn path(&self) -> &Path;
}

/// Where a pool keeps its data files and its metadata database.
pub trait PoolStorage: Send + Sync + Debug {
    /// The pool directory (for messages and for files outside the seam, e.g. locks).
    fn dir(&self) -> &Path;
    /// The data file of one chunk size, created empty on first use.
    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>>;
    /// The alternate data file of one chunk size: the second half of each slot of an
    /// authenticated volume (see `volume::integrity`), created empty on first use.
    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>>;
    /// The tag journal of authenticated volumes (`volume::pool::journal`), created empty on
    /// first use.
    fn journal(&self) -> io::Result<Arc<dyn BlockStore>>;
    /// Whether the tag journal exists (a pool that never journaled has none, and opening
    /// it read-only must not create one).
    fn has_journal(&self) -> bool;
    /// The tag journal's size: a commit that does not fit in what is left of it is folded
    /// into the metadata instead. At most [`JOURNAL_CAPACITY`]: replay reads no further
    /// (a larger value is clamped to it).
    fn journal_capacity(&self) -> u64 {
        JOURNAL_CAPACITY
    }
    /// Opens (creating if needed) the metadata database, its syncs through `latch`
    /// ([`SyncLatch::backend`]). Fails with `DatabaseAlreadyOpen` when another owner
    /// holds it.
    fn open_metadata(&self, latch: &SyncLatch) -> Result<redb::Database, redb::DatabaseError>;
    /// Where the metadata lives (for messages).
    fn metadata_path(&self) -> PathBuf;
    /// Drops the clean cached pages of the pool's files, so that the next reads come from
    /// the disk (see [`latch`]: after a failed sync, pages whose writeback failed are clean
    /// and hold what the disk does not). Best effort.
    fn drop_cache(&self);
}

/// The tag journal's file name in a pool directory.
pub const JOURNAL_FILE: &str = "tags.journal";

/// The tag journal's size on real files: 32 MiB holds some 160 commits of 32 records of
/// 1 MiB chunks (6 KiB each) between two folds.
pub const JOURNAL_CAPACITY: u64 = 32 << 20;

/// The data file name of one chunk size in a pool directory.
pub fn data_file_name(chunk_shift: u8) -> String {
    format!("data-{}k.pool", (1u64 << chunk_shift) >> 10)
}

/// The alternate data file name of one chunk size (the second halves of slots).
pub fn alt_file_name(chunk_shift: u8) -> String {
    format!("data-{}k.alt", (1u64 << chunk_shift) >> 10)
}
