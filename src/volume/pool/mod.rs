//! The region's thin pool (dm-thin is the model): chunk-sized slots in one data file per
//! chunk size, a map from (volume, chunk) to slot, reference counts so volumes and
//! snapshots can share slots, and the metadata transactions that make it crash-safe.
//!
//! Durability contract (docs/architecture.md): block writes go straight to the data file, and map and
//! refcount changes collect in memory until [`Pool::commit`] (fsync of a volume, or any
//! admin operation). A commit first makes the data durable (fdatasync), then the metadata
//! (one redb transaction). A slot freed by a commit becomes allocatable only after that
//! commit, so no durable map can point at a slot that is being reused. Unwritten blocks are
//! holes (all-zero ciphertext) and read as zeros.
//!
//! One process owns a pool at a time (redb's lock enforces it): the CLI for offline
//! commands, or the region daemon while volumes are attached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{Database, ReadableDatabase};

use super::error::{Result, VolumeError};
use super::storage::{FileStorage, LatchedStorage, PoolStorage, alt_file_name, data_file_name};
use super::tables::{
    FREE, LEASES, MAPS, META, META_FORMAT, PENDING, POOL_FORMAT_V1, REFS, SNAPSHOTS, VOLUMES,
};
use crate::datadir::RegionDir;
use crate::sys::fsio;

mod alloc;
mod auth;
mod data;
mod domains;
mod journal;
mod objects;
mod remote;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_group_commit;
#[cfg(test)]
mod tests_journal_attack;
#[cfg(test)]
mod tests_journal_blocks;
#[cfg(test)]
mod tests_journal_blocks_attack;
#[cfg(test)]
mod tests_sync_latch;
#[cfg(test)]
pub(crate) use tests::assert_consistent as assert_consistent_for_tests;

use alloc::PoolState;
pub use alloc::{MappedSlot, Reserved};
pub use auth::Rollback;
pub use data::DataFile;
pub use remote::HYDRATE_BATCH;

pub struct Pool {
    pub dir: PathBuf,
    /// Every sync of the pool's files goes through one latch: after a failed one, no
    /// later sync is acknowledged (`storage::latch`).
    storage: Arc<LatchedStorage>,
    db_path: PathBuf,
    /// `None` after a failed reopen; the next use tries again.
    db: RwLock<Option<Arc<Database>>>,
    /// By (chunk shift, half): half 1 is the alternate file.
    files: RwLock<HashMap<(u8, u8), Arc<DataFile>>>,
    state: Mutex<PoolState>,
    /// Serializes metadata transactions, so that a commit of block-level changes and an
    /// object operation (snapshot, delete) never interleave.
    commit_lock: Mutex<()>,
    /// The tag journal (`journal.rs`): used under the commit lock.
    journal: Mutex<journal::JournalState>,
    /// Fetches chunks that live in the object store (lazy restore); `None`: the region
    /// has no snapshot store, and reading such a chunk is an error.
    fetcher: RwLock<Option<Arc<dyn crate::volume::remote::ChunkFetcher>>>,
    /// Writes of authenticated volumes hold it shared, a commit's take exclusively
    /// (`auth.rs`).
    gate: RwLock<()>,
    /// The current epoch: bumped by every commit's take.
    epoch: AtomicU64,
    /// The newest epoch a successful commit closed: its writes, and all before, are durable.
    durable_epoch: AtomicU64,
    /// Whether a commit is between its take and its end, and how many have ended; writes
    /// that would copy a chunk only because of that commit wait for its end instead
    /// (`auth.rs`, [`Pool::wait_for_commit_in_flight`]).
    in_flight: Mutex<auth::InFlight>,
    in_flight_ended: std::sync::Condvar,
    /// The last write generation handed out.
    next_gen: AtomicU64,
    /// Where authenticated volumes' anchors live (`<region>/anchors`): outside the pool.
    /// `None` for a pool on other storage (the simulated disk): no anchors.
    anchors: Option<PathBuf>,
    /// Tests: called where a metadata reader's window lies (`tests_journal_attack.rs`).
    #[cfg(test)]
    pub(super) test_window: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// Tests: runs the hook set in `test_window`, if any.
    #[cfg(test)]
    pub(super) fn in_test_window(&self) {
        let h = lock(&self.test_window).clone();
        if let Some(h) = h {
            h();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a pool lock is a bug; the data behind it is still consistent
    // with the last commit, so carry on rather than wedge every later request.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The data file of one chunk size in a pool directory.
pub fn data_path(pool_dir: &Path, chunk_shift: u8) -> PathBuf {
    pool_dir.join(data_file_name(chunk_shift))
}

impl Pool {
    /// Opens (creating if needed) the pool of a region. Fails with
    /// [`VolumeError::PoolBusy`] if another process owns it.
    pub fn open(region: &RegionDir) -> Result<Pool> {
        let dir = region.pool_dir();
        fsio::create_private_dir(&dir).map_err(|e| VolumeError::io("cannot create", &dir, e))?;
        let mut pool = Pool::open_storage(Arc::new(FileStorage::new(dir)))?;
        pool.anchors = Some(region.anchors_dir());
        fix_mode(&pool.db_path)?;
        Ok(pool)
    }

    /// Opens (creating if needed) a pool on any storage (the simulated disk in tests).
    pub fn open_storage(storage: Arc<dyn PoolStorage>) -> Result<Pool> {
        let storage = Arc::new(LatchedStorage::new(storage));
        let db_path = storage.metadata_path();
        let db = open_db(&storage)?;
        init_tables(&db, &db_path)?;
        let pool = Pool {
            dir: storage.dir().to_path_buf(),
            storage,
            db_path,
            db: RwLock::new(Some(Arc::new(db))),
            files: RwLock::new(HashMap::new()),
            state: Mutex::new(PoolState::default()),
            commit_lock: Mutex::new(()),
            journal: Mutex::new(journal::JournalState::default()),
            fetcher: RwLock::new(None),
            gate: RwLock::new(()),
            epoch: AtomicU64::new(1),
            durable_epoch: AtomicU64::new(0),
            in_flight: Mutex::default(),
            in_flight_ended: std::sync::Condvar::new(),
            next_gen: AtomicU64::new(0),
            anchors: None,
            #[cfg(test)]
            test_window: Mutex::new(None),
        };
        pool.replay_journal()?;
        pool.load_allocators()?;
        pool.load_generation()?;
        Ok(pool)
    }

    pub(crate) fn db(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.db.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Ok(db.clone());
        }
        self.reopen()?;
        self.db
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| VolumeError::Metadata("the pool database could not be reopened".into()))
    }

    /// After an I/O error (a full disk) redb refuses every later transaction until the
    /// database is reopened; reopening recovers the last committed state.
    ///
    /// Not after a failed sync (`storage::latch`): redb's open syncs the file (it marks it
    /// in use), which the latch refuses, so dropping the open database first left none,
    /// and every metadata read (listing volumes, an authenticated volume's slot records)
    /// failed until the owner restarted. The open one stays, for reads.
    fn reopen(&self) -> Result<()> {
        self.refuse_after_failed_sync("cannot reopen")?;
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Release the file lock before opening again.
        *g = None;
        let db = open_db(&self.storage)?;
        *g = Some(Arc::new(db));
        tracing::info!("reopened {}", self.db_path.display());
        Ok(())
    }

    /// A write transaction. redb latches any I/O error (of a read too) and then refuses
    /// every later transaction with `PreviousIo` until the database is reopened; without
    /// this, one failed snapshot, restore or delete made every later metadata change fail,
    /// and a pool with no pending writes (whose commit never starts a transaction) never
    /// recovered. So reopen once and retry. Call with the commit lock held, as every
    /// writer does: no other write transaction is alive.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        // After a failed sync its commit would be refused anyway; refused before it starts,
        // it never meets the refused sync, which redb would latch as an I/O error of its
        // own, failing the reads of the database too.
        self.refuse_after_failed_sync("cannot write")?;
        // In its own statement: the database handle must be dropped before the reopen.
        let first = self.db()?.begin_write();
        match first {
            Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo)) => {
                self.reopen()?;
                Ok(self.db()?.begin_write()?)
            }
            r => Ok(r?),
        }
    }

    /// Whether a sync of the pool failed: no later one is made (`storage::latch`).
    pub fn syncs_refused(&self) -> bool {
        self.storage.latch().tripped().is_some()
    }

    /// The latch's refusal once a sync of the pool failed (`storage::latch`).
    fn refuse_after_failed_sync(&self, action: &'static str) -> Result<()> {
        self.storage
            .latch()
            .check()
            .map_err(|e| VolumeError::io(action, &self.db_path, e))
    }

    /// The data file of one chunk size, opened on first use.
    pub fn data_file(&self, chunk_shift: u8) -> Result<Arc<DataFile>> {
        self.file(chunk_shift, 0)
    }

    /// The data file holding half `half` (0 or 1) of each slot of one chunk size: the data
    /// file itself, or its alternate file (see `volume::integrity`), opened on first use.
    pub fn file(&self, chunk_shift: u8, half: usize) -> Result<Arc<DataFile>> {
        let key = (chunk_shift, half as u8);
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(f.clone());
        }
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(&key) {
            return Ok(f.clone());
        }
        let (store, name) = if half == 0 {
            (self.storage.data(chunk_shift), data_file_name(chunk_shift))
        } else {
            (self.storage.alt(chunk_shift), alt_file_name(chunk_shift))
        };
        let store = store.map_err(|e| VolumeError::io("cannot open", self.dir.join(name), e))?;
        let df = Arc::new(DataFile::new(store, chunk_shift));
        files.insert(key, df.clone());
        Ok(df)
    }

    /// The alternate file of one chunk size if it exists (or is open): only pools with
    /// authenticated volumes that overwrote a block have one.
    pub(super) fn alt_file_if_any(&self, chunk_shift: u8) -> Option<Arc<DataFile>> {
        let open = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(chunk_shift, 1))
            .cloned();
        open.or_else(|| {
            self.dir
                .join(alt_file_name(chunk_shift))
                .exists()
                .then(|| self.file(chunk_shift, 1).ok())
                .flatten()
        })
    }

    /// Runs `f` in one write transaction with every other metadata change held off,
    /// after committing what is pending, then reloads the allocators from the result
    /// (the checker's repair: only with no writer, hence no reservation, outstanding).
    pub(crate) fn rewrite_metadata<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T>,
    ) -> Result<T> {
        self.commit()?;
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        let out = f(&w)?;
        w.commit()?;
        lock(&self.state).alloc.clear();
        self.load_allocators()?;
        Ok(out)
    }

    /// Punches one slot so it reads as zeros (the checker's repair uses it).
    pub(crate) fn punch_slot(&self, chunk_shift: u8, slot: super::ids::SlotNo) -> Result<()> {
        self.data_file(chunk_shift)?.punch_slot(slot)
    }
}

fn open_db(storage: &LatchedStorage) -> Result<Database> {
    let path = storage.metadata_path();
    match storage.open_metadata(storage.latch()) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(VolumeError::PoolBusy { path }),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
            Err(VolumeError::io("cannot open", &path, e))
        }
        Err(e) => Err(e.into()),
    }
}

/// A table of a read transaction, or `None` where the pool was made before it existed
/// (tables are created on first write).
pub(super) fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &redb::ReadTransaction,
    t: redb::TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match r.open_table(t) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Creates the tables and format marker of a new pool; checks the format of an old one.
/// Only a new pool is written to, so read-only commands leave the file as it was.
fn init_tables(db: &Database, path: &Path) -> Result<()> {
    let format = {
        let r = db.begin_read()?;
        match r.open_table(META) {
            Ok(t) => t.get(META_FORMAT)?.map(|v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    match format {
        Some(POOL_FORMAT_V1) => Ok(()),
        Some(other) if other > POOL_FORMAT_V1 => Err(VolumeError::NewerFormat {
            what: format!("the pool {}", path.display()),
            found: other,
            newest: POOL_FORMAT_V1,
        }),
        Some(other) => Err(VolumeError::Corrupt {
            what: format!("pool {}", path.display()),
            detail: format!("format {other} is not one cryptvol ever wrote"),
        }),
        None => {
            let w = db.begin_write()?;
            {
                w.open_table(META)?.insert(META_FORMAT, POOL_FORMAT_V1)?;
                w.open_table(VOLUMES)?;
                w.open_table(MAPS)?;
                w.open_table(REFS)?;
                w.open_table(FREE)?;
                w.open_table(SNAPSHOTS)?;
                w.open_table(PENDING)?;
                w.open_table(LEASES)?;
            }
            w.commit()?;
            Ok(())
        }
    }
}

fn fix_mode(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(fsio::PRIVATE_FILE))
        .map_err(|e| VolumeError::io("cannot set mode of", path, e))
}
