//! The region's thin pool (dm-thin is the model): chunk-sized slots in one data file per
//! chunk size, a map from (volume, chunk) to slot, reference counts so volumes and
//! snapshots can share slots, and the metadata transactions that make it crash-safe.
//!
//! Durability contract (DESIGN.md): block writes go straight to the data file, and map and
//! refcount changes collect in memory until [`Pool::commit`] (fsync of a volume, or any
//! admin operation). A commit first makes the data durable (fdatasync), then the metadata
//! (one redb transaction). A slot freed by a commit becomes allocatable only after that
//! commit, so no durable map can point at a slot that is being reused. Unwritten blocks are
//! holes (all-zero ciphertext) and read as zeros.
//!
//! One process owns a pool at a time (redb's lock enforces it): the CLI for offline
//! commands, or the region daemon while volumes are attached.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::error::{Result, VolumeError};
use super::header::VolumeHeader;
use super::ids::{SlotNo, VolumeId};
use crate::fsio;
use crate::kms::region::RegionDir;

use super::tables::{
    FREE, MAPS, META, META_FORMAT, PENDING, POOL_FORMAT_V1, REFS, SNAPSHOTS, VOLUMES, hwm_key,
};

/// One chunk size's data file.
#[derive(Debug)]
pub struct DataFile {
    pub path: PathBuf,
    pub file: File,
    pub chunk_shift: u8,
    /// Written since the last commit's fdatasync.
    dirty: AtomicBool,
    /// A second descriptor with O_DIRECT for bulk copies (`None`: the filesystem refuses
    /// O_DIRECT, e.g. tmpfs; buffered writes are used instead).
    direct: std::sync::OnceLock<Option<File>>,
}

impl DataFile {
    pub fn slot_offset(&self, slot: SlotNo) -> u64 {
        slot.0 << self.chunk_shift
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        read_full_at(&self.file, buf, off)
            .map_err(|e| VolumeError::io("cannot read", &self.path, e))
    }

    pub fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.dirty.store(true, Ordering::Release);
        self.file
            .write_all_at(buf, off)
            .map_err(|e| VolumeError::io("cannot write", &self.path, e))
    }

    /// Asks the kernel to start reading a range into the page cache (no wait).
    pub fn prefetch(&self, off: u64, len: u64) {
        let _ = nix::fcntl::posix_fadvise(
            &self.file,
            off as i64,
            len as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }

    /// Writes page-aligned `buf` (from an `AlignedBuf`) at a page-aligned offset with
    /// O_DIRECT: no page-cache copy and no writeback later, which is what a bulk copy
    /// wants (PERFORMANCE.md: buffered writers contend on the inode lock). Falls back to
    /// a buffered write where O_DIRECT is not supported.
    pub fn write_direct(&self, buf: &[u8], off: u64) -> Result<()> {
        let direct = self.direct.get_or_init(|| {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
                .ok()
        });
        self.dirty.store(true, Ordering::Release);
        match direct {
            Some(f) => match f.write_all_at(buf, off) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.write_at(buf, off),
                r => r.map_err(|e| VolumeError::io("cannot write", &self.path, e)),
            },
            None => self.write_at(buf, off),
        }
    }

    /// Turns a byte range into a hole: it then reads as zeros (which we treat as unwritten
    /// blocks) and its disk space is returned to the filesystem.
    pub fn punch(&self, off: u64, len: u64) -> Result<()> {
        self.dirty.store(true, Ordering::Release);
        punch_hole(&self.file, off, len)
            .map_err(|e| VolumeError::io("cannot punch a hole in", &self.path, e))
    }
}

/// `pread` until `buf` is full; past the end of file reads zeros (a sparse tail).
pub fn read_full_at(file: &File, mut buf: &mut [u8], mut off: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, off) {
            Ok(0) => {
                buf.fill(0);
                return Ok(());
            }
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn punch_hole(file: &File, off: u64, len: u64) -> std::io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
    .map_err(std::io::Error::from)
}

/// Allocation state of one chunk size.
#[derive(Debug, Default)]
struct Allocator {
    /// Slots that are free in the last committed metadata (safe to reuse now).
    free: BTreeSet<u64>,
    /// First slot never handed out.
    hwm: u64,
}

/// Metadata changes since the last commit.
#[derive(Debug, Default)]
struct Dirty {
    /// (owner: a volume, or a snapshot being copied, chunk) → slot.
    maps: HashMap<(String, u64), Option<u64>>,
    refs: HashMap<(u8, u64), i64>,
    taken: Vec<(u8, u64)>,
    hwm: HashMap<u8, u64>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.maps.is_empty() && self.refs.is_empty() && self.taken.is_empty() && self.hwm.is_empty()
    }

    /// Puts back what a failed commit took, under anything recorded since (which is newer).
    fn merge_older(&mut self, older: Dirty) {
        for (k, v) in older.maps {
            self.maps.entry(k).or_insert(v);
        }
        for (k, d) in older.refs {
            *self.refs.entry(k).or_insert(0) += d;
        }
        let mut taken = older.taken;
        taken.append(&mut self.taken);
        self.taken = taken;
        for (k, v) in older.hwm {
            let e = self.hwm.entry(k).or_insert(v);
            *e = (*e).max(v);
        }
    }
}

#[derive(Debug, Default)]
struct PoolState {
    alloc: HashMap<u8, Allocator>,
    dirty: Dirty,
}

pub struct Pool {
    pub dir: PathBuf,
    db_path: PathBuf,
    /// `None` after a failed reopen; the next use tries again.
    db: RwLock<Option<Arc<Database>>>,
    files: RwLock<HashMap<u8, Arc<DataFile>>>,
    state: Mutex<PoolState>,
    commit_lock: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a pool lock is a bug; the data behind it is still consistent
    // with the last commit, so carry on rather than wedge every later request.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The data file of one chunk size in a pool directory.
pub fn data_path(pool_dir: &Path, chunk_shift: u8) -> PathBuf {
    pool_dir.join(format!("data-{}k.pool", (1u64 << chunk_shift) >> 10))
}

/// Where a region's pool lives.
pub fn pool_dir(region: &RegionDir) -> PathBuf {
    region.path.join("pool")
}

impl Pool {
    /// Opens (creating if needed) the pool of a region. Fails with
    /// [`VolumeError::PoolBusy`]-style metadata errors if another process owns it.
    pub fn open(region: &RegionDir) -> Result<Pool> {
        let dir = pool_dir(region);
        fsio::create_private_dir(&dir).map_err(|e| VolumeError::io("cannot create", &dir, e))?;
        let path = dir.join("meta.redb");
        let db = open_db(&path)?;
        fix_mode(&path)?;
        init_tables(&db, &path)?;
        Ok(Pool {
            dir,
            db_path: path,
            db: RwLock::new(Some(Arc::new(db))),
            files: RwLock::new(HashMap::new()),
            state: Mutex::new(PoolState::default()),
            commit_lock: Mutex::new(()),
        })
    }

    fn db(&self) -> Result<Arc<Database>> {
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
    fn reopen(&self) -> Result<()> {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        // Release the file lock before opening again.
        *g = None;
        let db = open_db(&self.db_path)?;
        *g = Some(Arc::new(db));
        tracing::info!("reopened {}", self.db_path.display());
        Ok(())
    }

    /// The data file of one chunk size, opened on first use.
    pub fn data_file(&self, chunk_shift: u8) -> Result<Arc<DataFile>> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&chunk_shift)
        {
            return Ok(f.clone());
        }
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(&chunk_shift) {
            return Ok(f.clone());
        }
        let path = self
            .dir
            .join(format!("data-{}k.pool", (1u64 << chunk_shift) >> 10));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(fsio::PRIVATE_FILE)
            .open(&path)
            .map_err(|e| VolumeError::io("cannot open", &path, e))?;
        let df = Arc::new(DataFile {
            path,
            file,
            chunk_shift,
            dirty: AtomicBool::new(false),
            direct: std::sync::OnceLock::new(),
        });
        files.insert(chunk_shift, df.clone());
        Ok(df)
    }

    fn allocator<'s>(&self, st: &'s mut PoolState, shift: u8) -> Result<&'s mut Allocator> {
        use std::collections::hash_map::Entry;
        match st.alloc.entry(shift) {
            Entry::Occupied(o) => Ok(o.into_mut()),
            Entry::Vacant(v) => {
                let r = self.db()?.begin_read()?;
                let free_t = r.open_table(FREE)?;
                let mut free = BTreeSet::new();
                for item in free_t.range((shift, 0)..=(shift, u64::MAX))? {
                    free.insert(item?.0.value().1);
                }
                let hwm = r
                    .open_table(META)?
                    .get(hwm_key(shift).as_str())?
                    .map(|g| g.value())
                    .unwrap_or(0);
                // Slots at or past the high-water mark were never committed; after a
                // crash they may hold stale ciphertext. Make them holes once, here, so
                // handing them out needs no per-slot punch.
                let df = self.data_file(shift)?;
                let len = df.file.metadata().map(|m| m.len()).unwrap_or(0);
                let start = hwm << shift;
                if len > start {
                    df.punch(start, len - start)?;
                }
                Ok(v.insert(Allocator { free, hwm }))
            }
        }
    }

    /// Hands out a slot whose content is all zeros (a hole) and records its first
    /// reference; the caller maps it with [`Pool::record_map`].
    pub fn allocate(&self, shift: u8) -> Result<SlotNo> {
        let reused;
        let slot = {
            let mut st = lock(&self.state);
            let a = self.allocator(&mut st, shift)?;
            let (slot, from_free) = match a.free.pop_first() {
                Some(s) => (s, true),
                None => {
                    a.hwm += 1;
                    (a.hwm - 1, false)
                }
            };
            let hwm = a.hwm;
            reused = from_free;
            if from_free {
                st.dirty.taken.push((shift, slot));
            } else {
                st.dirty.hwm.insert(shift, hwm);
            }
            *st.dirty.refs.entry((shift, slot)).or_insert(0) += 1;
            slot
        };
        // A reused slot may hold old ciphertext if a crash came between the commit that
        // freed it and the hole punch after it; make sure it reads as zeros. (Fresh slots
        // past the high-water mark were punched when the allocator was loaded.)
        if reused {
            let df = self.data_file(shift)?;
            df.punch(df.slot_offset(SlotNo(slot)), 1 << shift)?;
        }
        Ok(SlotNo(slot))
    }

    /// Records that `(volume, chunk)` now maps to `slot` (or to nothing).
    pub fn record_map(&self, owner: &str, chunk: u64, slot: Option<SlotNo>) {
        lock(&self.state)
            .dirty
            .maps
            .insert((owner.to_string(), chunk), slot.map(|s| s.0));
    }

    /// Records a change of a slot's reference count (applied at commit).
    pub fn record_ref(&self, shift: u8, slot: SlotNo, delta: i64) {
        *lock(&self.state)
            .dirty
            .refs
            .entry((shift, slot.0))
            .or_insert(0) += delta;
    }

    /// The committed map of `owner` with each slot's reference count, in one read
    /// transaction (opening a volume needs both).
    pub fn load_map_with_refcounts(
        &self,
        owner: &str,
        shift: u8,
    ) -> Result<Vec<(u64, SlotNo, u32)>> {
        let r = self.db()?.begin_read()?;
        let maps = r.open_table(MAPS)?;
        let refs = r.open_table(REFS)?;
        let mut out = vec![];
        for item in maps.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            let slot = v.value();
            let count = refs.get((shift, slot))?.map(|c| c.value()).unwrap_or(0);
            out.push((k.value().1, SlotNo(slot), count));
        }
        Ok(out)
    }

    /// The committed reference count of a slot.
    pub fn refcount(&self, shift: u8, slot: SlotNo) -> Result<u32> {
        let r = self.db()?.begin_read()?;
        Ok(r.open_table(REFS)?
            .get((shift, slot.0))?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Makes everything written and recorded so far durable. See the module doc.
    pub fn commit(&self) -> Result<()> {
        let _one_at_a_time = lock(&self.commit_lock);
        let dirty = std::mem::take(&mut lock(&self.state).dirty);
        match self.commit_dirty(&dirty) {
            Ok(freed) => {
                self.release_freed(freed);
                Ok(())
            }
            Err(e) => {
                lock(&self.state).dirty.merge_older(dirty);
                if matches!(
                    e,
                    VolumeError::NoSpace { .. } | VolumeError::Io { .. } | VolumeError::Metadata(_)
                ) && let Err(re) = self.reopen()
                {
                    tracing::warn!("reopening {}: {re}", self.db_path.display());
                }
                Err(e)
            }
        }
    }

    fn sync_data(&self) -> Result<()> {
        let files: Vec<Arc<DataFile>> = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for f in files {
            if f.dirty.swap(false, Ordering::AcqRel)
                && let Err(e) = f.file.sync_data()
            {
                f.dirty.store(true, Ordering::Release);
                return Err(VolumeError::io("cannot sync", &f.path, e));
            }
        }
        Ok(())
    }

    /// Data first, then metadata; returns the slots this commit freed.
    fn commit_dirty(&self, d: &Dirty) -> Result<Vec<(u8, u64)>> {
        self.sync_data()?;
        if d.is_empty() {
            return Ok(vec![]);
        }
        let w = self.db()?.begin_write()?;
        let mut freed = vec![];
        {
            let mut maps = w.open_table(MAPS)?;
            for ((owner, chunk), slot) in &d.maps {
                match slot {
                    Some(s) => maps.insert((owner.as_str(), *chunk), *s)?,
                    None => maps.remove((owner.as_str(), *chunk))?,
                };
            }
            let mut free = w.open_table(FREE)?;
            for k in &d.taken {
                free.remove(*k)?;
            }
            let mut refs = w.open_table(REFS)?;
            for (k, delta) in &d.refs {
                let old = refs.get(*k)?.map(|v| v.value() as i64).unwrap_or(0);
                let new = old + delta;
                if new < 0 {
                    return Err(VolumeError::Corrupt {
                        what: "pool reference counts".into(),
                        detail: format!(
                            "slot {} of chunk size 2^{} would drop below zero",
                            k.1, k.0
                        ),
                    });
                }
                if new == 0 {
                    refs.remove(*k)?;
                    free.insert(*k, ())?;
                    freed.push(*k);
                } else {
                    refs.insert(*k, new as u32)?;
                }
            }
            let mut meta = w.open_table(META)?;
            for (shift, hwm) in &d.hwm {
                let cur = meta
                    .get(hwm_key(*shift).as_str())?
                    .map(|v| v.value())
                    .unwrap_or(0);
                meta.insert(hwm_key(*shift).as_str(), cur.max(*hwm))?;
            }
        }
        w.commit()?;
        Ok(freed)
    }

    /// Slots freed by a durable commit: return their space, then let them be reused.
    fn release_freed(&self, freed: Vec<(u8, u64)>) {
        for (shift, slot) in &freed {
            if let Ok(df) = self.data_file(*shift) {
                // Best effort: allocation punches again before reuse.
                let _ = df.punch(df.slot_offset(SlotNo(*slot)), 1 << shift);
            }
        }
        let mut st = lock(&self.state);
        for (shift, slot) in freed {
            if let Some(a) = st.alloc.get_mut(&shift) {
                a.free.insert(slot);
            }
        }
    }

    // ---- volumes ----------------------------------------------------------------------

    pub fn list_volumes(&self) -> Result<Vec<VolumeHeader>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(VOLUMES)?;
        let mut out = vec![];
        for item in t.iter()? {
            let (_, v) = item?;
            out.push(VolumeHeader::decode(v.value())?);
        }
        Ok(out)
    }

    pub fn get_volume(&self, id: &VolumeId) -> Result<Option<VolumeHeader>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(VOLUMES)?;
        t.get(id.as_str())?
            .map(|v| VolumeHeader::decode(v.value()))
            .transpose()
    }

    /// Stores a new volume's header durably; fails if its id or name is taken.
    pub fn create_volume(&self, h: &VolumeHeader) -> Result<()> {
        self.add_volume(h, None)
    }

    /// Stores a new volume, empty or (`share_from`) with every slot of that map shared,
    /// in one transaction.
    fn add_volume(&self, h: &VolumeHeader, share_from: Option<&str>) -> Result<()> {
        let _c = lock(&self.commit_lock);
        if !h.name.is_empty()
            && let Some(other) = self.list_volumes()?.into_iter().find(|o| o.name == h.name)
        {
            return Err(VolumeError::NameTaken {
                name: h.name.clone(),
                id: other.id.to_string(),
            });
        }
        let w = self.db()?.begin_write()?;
        {
            let mut t = w.open_table(VOLUMES)?;
            if t.get(h.id.as_str())?.is_some() {
                return Err(VolumeError::invalid(
                    "volume id",
                    format!("{} exists", h.id),
                ));
            }
            t.insert(h.id.as_str(), h.encode().as_slice())?;
        }
        if let Some(from) = share_from {
            clone_map(&w, from, h.id.as_str(), h.chunk_shift)?;
        }
        w.commit()?;
        Ok(())
    }

    /// Replaces a volume's header (resize, rename) durably.
    pub fn update_volume(&self, h: &VolumeHeader) -> Result<()> {
        let _c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        w.open_table(VOLUMES)?
            .insert(h.id.as_str(), h.encode().as_slice())?;
        w.commit()?;
        Ok(())
    }

    /// The committed map of a volume or snapshot: chunk → slot.
    pub fn load_map(&self, owner: &str) -> Result<Vec<(u64, SlotNo)>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(MAPS)?;
        let mut out = vec![];
        for item in t.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            out.push((k.value().1, SlotNo(v.value())));
        }
        Ok(out)
    }

    /// Deletes a volume and drops its references; slots nothing else uses are freed.
    pub fn delete_volume(&self, h: &VolumeHeader) -> Result<()> {
        self.commit()?;
        let c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        let freed = drop_map(&w, h.id.as_str(), h.chunk_shift)?;
        w.open_table(VOLUMES)?.remove(h.id.as_str())?;
        w.commit()?;
        drop(c);
        self.release_freed(freed);
        Ok(())
    }

    /// Takes a snapshot: `record` is stored under `snap_id`, and the snapshot's map is the
    /// volume's committed map, sharing every slot (one more reference each). Pending
    /// writes are committed first, so the snapshot holds everything acknowledged before
    /// it. The caller keeps writers out for the duration (see `OpenVolume::quiesce`).
    pub fn create_snapshot(&self, vol: &VolumeHeader, snap_id: &str, record: &[u8]) -> Result<()> {
        self.commit()?;
        let _c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        {
            let mut snaps = w.open_table(SNAPSHOTS)?;
            if snaps.get(snap_id)?.is_some() {
                return Err(VolumeError::invalid(
                    "snapshot id",
                    format!("{snap_id} exists"),
                ));
            }
            snaps.insert(snap_id, record)?;
        }
        clone_map(&w, vol.id.as_str(), snap_id, vol.chunk_shift)?;
        w.commit()?;
        Ok(())
    }

    /// Deletes a snapshot; slots no volume or other snapshot uses are freed.
    pub fn delete_snapshot(&self, snap_id: &str, chunk_shift: u8) -> Result<()> {
        self.commit()?;
        let c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        let freed = drop_map(&w, snap_id, chunk_shift)?;
        w.open_table(SNAPSHOTS)?.remove(snap_id)?;
        w.commit()?;
        drop(c);
        self.release_freed(freed);
        Ok(())
    }

    /// A new volume sharing every slot of a snapshot (copy-on-write restore).
    pub fn restore_volume(&self, snap_id: &str, h: &VolumeHeader) -> Result<()> {
        self.add_volume(h, Some(snap_id))
    }

    /// Records a copy in progress under `owner` (durably, before any chunk is copied).
    pub fn begin_pending(&self, owner: &str, record: &[u8]) -> Result<()> {
        let _c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        w.open_table(PENDING)?.insert(owner, record)?;
        w.commit()?;
        Ok(())
    }

    /// Copies in progress: (owner, record).
    pub fn pending(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self.db()?.begin_read()?;
        let t = match r.open_table(PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![];
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Makes a finished copy visible, in one transaction with its last chunks: as a
    /// snapshot (`volume` = None) or as a volume.
    pub fn finish_pending(
        &self,
        owner: &str,
        snapshot: Option<&[u8]>,
        volume: Option<&VolumeHeader>,
    ) -> Result<()> {
        self.commit()?;
        let _c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        w.open_table(PENDING)?.remove(owner)?;
        if let Some(rec) = snapshot {
            w.open_table(SNAPSHOTS)?.insert(owner, rec)?;
        }
        if let Some(h) = volume {
            w.open_table(VOLUMES)?
                .insert(h.id.as_str(), h.encode().as_slice())?;
        }
        w.commit()?;
        Ok(())
    }

    /// Abandons a copy in progress: its chunks are freed, nothing of it remains.
    pub fn abandon_pending(&self, owner: &str, chunk_shift: u8) -> Result<()> {
        self.commit()?;
        let c = lock(&self.commit_lock);
        let w = self.db()?.begin_write()?;
        let freed = drop_map(&w, owner, chunk_shift)?;
        w.open_table(PENDING)?.remove(owner)?;
        w.commit()?;
        drop(c);
        self.release_freed(freed);
        Ok(())
    }

    pub fn list_snapshots(&self) -> Result<Vec<Vec<u8>>> {
        let r = self.db()?.begin_read()?;
        let t = match r.open_table(SNAPSHOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![];
        for item in t.iter()? {
            out.push(item?.1.value().to_vec());
        }
        Ok(out)
    }

    pub fn get_snapshot(&self, snap_id: &str) -> Result<Option<Vec<u8>>> {
        let r = self.db()?.begin_read()?;
        let t = match r.open_table(SNAPSHOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(snap_id)?.map(|v| v.value().to_vec()))
    }

    /// Bytes of pool data referenced by a volume's committed map.
    pub fn allocated_bytes(&self, h: &VolumeHeader) -> Result<u64> {
        Ok(self.load_map(h.id.as_str())?.len() as u64 * h.chunk_size())
    }
}

/// Gives `to` the same map as `from`, one more reference per slot.
fn clone_map(w: &WriteTransaction, from: &str, to: &str, shift: u8) -> Result<()> {
    let mut maps = w.open_table(MAPS)?;
    let mut refs = w.open_table(REFS)?;
    let rows: Vec<(u64, u64)> = maps
        .range((from, 0)..=(from, u64::MAX))?
        .map(|item| item.map(|(k, v)| (k.value().1, v.value())))
        .collect::<std::result::Result<_, _>>()?;
    for (chunk, slot) in rows {
        maps.insert((to, chunk), slot)?;
        let old = refs.get((shift, slot))?.map(|v| v.value()).unwrap_or(0);
        refs.insert((shift, slot), old + 1)?;
    }
    Ok(())
}

/// Removes `owner`'s map, one reference less per slot; returns the slots freed.
fn drop_map(w: &WriteTransaction, owner: &str, shift: u8) -> Result<Vec<(u8, u64)>> {
    let mut maps = w.open_table(MAPS)?;
    let mut refs = w.open_table(REFS)?;
    let mut free = w.open_table(FREE)?;
    let rows: Vec<(u64, u64)> = maps
        .range((owner, 0)..=(owner, u64::MAX))?
        .map(|item| item.map(|(k, v)| (k.value().1, v.value())))
        .collect::<std::result::Result<_, _>>()?;
    let mut freed = vec![];
    for (chunk, slot) in rows {
        maps.remove((owner, chunk))?;
        let k = (shift, slot);
        let old = refs.get(k)?.map(|v| v.value()).unwrap_or(0);
        if old <= 1 {
            refs.remove(k)?;
            free.insert(k, ())?;
            freed.push(k);
        } else {
            refs.insert(k, old - 1)?;
        }
    }
    Ok(freed)
}

fn open_db(path: &Path) -> Result<Database> {
    match Database::create(path) {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(VolumeError::PoolBusy {
            path: path.to_path_buf(),
        }),
        Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))) => {
            Err(VolumeError::io("cannot open", path, e))
        }
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
        Some(other) => Err(VolumeError::Corrupt {
            what: format!("pool {}", path.display()),
            detail: format!("format {other} is unknown: upgrade cryptvol"),
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

// ---- for `volume::check` (pool check / repair) ------------------------------------------

impl Pool {
    /// The metadata database, for the checker (`volume::check`), which reads and repairs
    /// the tables directly.
    pub(crate) fn database(&self) -> Result<Arc<Database>> {
        self.db()
    }

    /// Turns one slot into a hole (reads as zeros), as a freed slot is.
    pub(crate) fn punch_slot(&self, shift: u8, slot: u64) -> Result<()> {
        let df = self.data_file(shift)?;
        df.punch(df.slot_offset(SlotNo(slot)), 1 << shift)
    }
}
