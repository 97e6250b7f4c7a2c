//! Fail-stop after a failed sync ("fsyncgate"): once any sync of a pool's files fails, no
//! later sync of that pool is attempted or acknowledged by this process.
//!
//! Why: when Linux fails to write back a dirty page, `fsync`/`fdatasync` reports the error
//! once and the page is marked clean (ext4, xfs and btrfs do this). A retried sync then
//! finds nothing dirty and returns Ok, although the data never reached the disk, and reads
//! still return it from the page cache. A pool that retried its commit after a failed data
//! sync would acknowledge a later fsync whose commit refers to blocks that are not on the
//! disk: after a crash those blocks read old or foreign data, and the metadata database
//! (whose own commits are syncs) could be left referring to pages that never landed.
//! PostgreSQL answered the same discovery (2018) by crashing on any fsync failure and
//! recovering from its WAL; redb latches any I/O error per open database. The pool's
//! answer is a latch shared by every file of the pool, metadata included:
//!
//! - the first failed sync trips it and returns its own error;
//! - every later sync of any file of the pool fails at once with an error naming the
//!   first failure and the way out (restart the owner: detach the region's volumes);
//! - when the pool is closed, the clean pages of its files are dropped from the page cache
//!   ([`PoolStorage::drop_cache`]): the pages whose writeback failed are among them, and
//!   the next owner must read what the disk holds, not what only the cache does. (An
//!   owner killed before it closes the pool cannot do this; docs/security.md says what to
//!   do then.)
//!
//! Until then writes and reads go on, and reads see what this process wrote (its maps
//! and the page cache agree); only durability is refused.

use std::fmt;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{BlockStore, PoolStorage};

/// Tripped by the first failed sync of a pool's files; clones share it.
#[derive(Clone, Default)]
pub struct SyncLatch(Arc<LatchState>);

#[derive(Default)]
struct LatchState {
    /// The first failure: the file and the error, for the messages of later refusals.
    first: OnceLock<String>,
}

impl fmt::Debug for SyncLatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncLatch")
            .field("tripped", &self.0.first.get())
            .finish()
    }
}

impl SyncLatch {
    /// What the first failed sync was, if one failed.
    pub fn tripped(&self) -> Option<&str> {
        self.0.first.get().map(String::as_str)
    }

    /// Runs `sync` unless the latch tripped before; trips it if `sync` fails. Either
    /// error says what holds from now on (ENOSPC included: a sync that ran out of room
    /// lost its writeback as surely as one that met EIO).
    pub fn sync(&self, path: &Path, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        self.check()?;
        sync().map_err(|e| self.failed(path, e))
    }

    /// Trips the latch for the failed sync `e` of `path`; the error to return for it.
    pub fn failed(&self, path: &Path, e: io::Error) -> io::Error {
        self.trip(path, &e);
        io::Error::other(format!("{e}; {}", advice()))
    }

    /// Ok until the latch tripped; then the error every later sync gets. For work that
    /// could only end in a sync (a metadata transaction, redb's reopen), refused before
    /// it starts.
    pub fn check(&self) -> io::Result<()> {
        match self.tripped() {
            Some(first) => Err(io::Error::other(format!(
                "an earlier {first}; {}",
                advice()
            ))),
            None => Ok(()),
        }
    }

    fn trip(&self, path: &Path, e: &io::Error) {
        if self
            .0
            .first
            .set(format!("sync of {} failed ({e})", path.display()))
            .is_ok()
        {
            tracing::error!(
                "sync of {} failed ({e}): no later sync of this pool will be acknowledged",
                path.display()
            );
        }
    }

    /// `store`, its syncs going through this latch.
    pub fn store(&self, store: Arc<dyn BlockStore>) -> Arc<dyn BlockStore> {
        Arc::new(LatchedStore {
            inner: store,
            latch: self.clone(),
        })
    }

    /// redb's `backend`, its syncs going through this latch.
    pub fn backend<B: redb::StorageBackend>(&self, backend: B, path: PathBuf) -> LatchedBackend<B> {
        LatchedBackend {
            inner: backend,
            path,
            latch: self.clone(),
        }
    }
}

/// The error of a sync made while opening one of the pool's files (the directory entry
/// of a data file just created), which [`LatchedStorage`] treats as a failed sync of the
/// pool: the file's entry may not be on the disk, and on Linux a retried directory sync
/// could return Ok without writing it (the same fsyncgate as a file's pages).
#[derive(Debug)]
pub struct OpenSyncFailed(pub io::Error);

impl fmt::Display for OpenSyncFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for OpenSyncFailed {}

impl OpenSyncFailed {
    /// `e`, marked as a failed sync for the latch.
    pub fn wrap(e: io::Error) -> io::Error {
        io::Error::new(e.kind(), OpenSyncFailed(e))
    }
}

/// Words of the message of every sync error from the first failure on (tests look for
/// them).
pub const REFUSED: &str = "acknowledges no more syncs of the pool";

/// What a sync error says from the first failure on.
fn advice() -> String {
    format!(
        "writes since the last successful sync may not be on the disk, so this process \
         {REFUSED}: check the disk, then detach every volume of the region (its daemon \
         exits) and attach again"
    )
}

/// A pool's storage whose every file syncs through one [`SyncLatch`].
#[derive(Debug)]
pub struct LatchedStorage {
    inner: Arc<dyn PoolStorage>,
    latch: SyncLatch,
}

impl LatchedStorage {
    pub fn new(inner: Arc<dyn PoolStorage>) -> LatchedStorage {
        LatchedStorage {
            inner,
            latch: SyncLatch::default(),
        }
    }

    pub fn latch(&self) -> &SyncLatch {
        &self.latch
    }

    /// A file of the pool, opened by `open`, syncing through the latch. A failed sync
    /// while opening it (a new file's directory entry) trips the latch. (Not refused
    /// after a trip: reads of a file not yet open must go on.)
    fn open(
        &self,
        open: impl FnOnce() -> io::Result<Arc<dyn BlockStore>>,
    ) -> io::Result<Arc<dyn BlockStore>> {
        match open() {
            Ok(store) => Ok(self.latch.store(store)),
            Err(e) if e.get_ref().is_some_and(|r| r.is::<OpenSyncFailed>()) => {
                Err(self.latch.failed(self.inner.dir(), e))
            }
            Err(e) => Err(e),
        }
    }
}

impl Drop for LatchedStorage {
    /// The pool is closed (its database and files are held through this storage).
    fn drop(&mut self) {
        if self.latch.tripped().is_some() {
            self.inner.drop_cache();
        }
    }
}

impl PoolStorage for LatchedStorage {
    fn dir(&self) -> &Path {
        self.inner.dir()
    }

    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.open(|| self.inner.data(chunk_shift))
    }

    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.open(|| self.inner.alt(chunk_shift))
    }

    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        self.open(|| self.inner.journal())
    }

    fn has_journal(&self) -> bool {
        self.inner.has_journal()
    }

    fn journal_capacity(&self) -> u64 {
        self.inner.journal_capacity()
    }

    fn open_metadata(&self, _latch: &SyncLatch) -> Result<redb::Database, redb::DatabaseError> {
        self.inner.open_metadata(&self.latch)
    }

    fn metadata_path(&self) -> PathBuf {
        self.inner.metadata_path()
    }

    fn drop_cache(&self) {
        self.inner.drop_cache()
    }
}

#[derive(Debug)]
struct LatchedStore {
    inner: Arc<dyn BlockStore>,
    latch: SyncLatch,
}

impl BlockStore for LatchedStore {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.inner.write_at(buf, off)
    }
    fn write_direct(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.inner.write_direct(buf, off)
    }
    fn punch(&self, off: u64, len: u64) -> io::Result<()> {
        self.inner.punch(off, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.latch
            .sync(self.inner.path(), || self.inner.sync_data())
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn prefetch(&self, off: u64, len: u64) {
        self.inner.prefetch(off, len)
    }
    fn read_cached(&self, buf: &mut [u8], off: u64) -> bool {
        self.inner.read_cached(buf, off)
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// redb's backend of the metadata file, its syncs through the pool's latch (redb latches
/// its own I/O errors too, but the pool reopens the database after one, which alone would
/// trust the page cache again).
#[derive(Debug)]
pub struct LatchedBackend<B> {
    inner: B,
    path: PathBuf,
    latch: SyncLatch,
}

type BackendResult<T> = Result<T, redb::BackendError>;

impl<B: redb::StorageBackend> redb::StorageBackend for LatchedBackend<B> {
    fn len(&self) -> Result<u64, io::Error> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> Result<(), io::Error> {
        self.latch.sync(&self.path, || self.inner.sync_data())
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.inner.write(offset, data)
    }
    fn close(&self) -> Result<(), io::Error> {
        self.inner.close()
    }
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> BackendResult<bool> {
        self.inner.try_lock_range(start, end)
    }
    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> BackendResult<bool> {
        self.inner.try_lock_shared_range(start, end)
    }
    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> BackendResult<()> {
        self.inner.lock_range(start, end)
    }
    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> BackendResult<()> {
        self.inner.lock_shared_range(start, end)
    }
    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> BackendResult<()> {
        self.inner.unlock_range(start, end)
    }
    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> BackendResult<bool> {
        self.inner.query_lock_range(start, end)
    }
}
