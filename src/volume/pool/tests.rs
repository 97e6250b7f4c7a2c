//! Regression tests for the storage core's defects, each named after what broke. They
//! use a storage wrapper whose hooks stop a thread inside a write or a punch, so a race
//! window can be entered on purpose instead of hoped for.

use crate::volume::test_support::*;
use std::collections::{HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};

use redb::{ReadableDatabase, ReadableTable};

use super::*;
use crate::volume::OpenVolume;
use crate::volume::ids::{SlotNo, SnapshotId};
use crate::volume::storage::BlockStore;

type Hook = Arc<dyn Fn(&'static str, u64) + Send + Sync>;

/// The real files, with a hook called before every write ("write") and punch ("punch").
#[derive(Clone)]
pub(crate) struct Hooked {
    inner: Arc<dyn PoolStorage>,
    hook: Arc<Mutex<Option<Hook>>>,
    /// Whether reads may be served from the page cache (`BlockStore::read_cached`, which
    /// skips read-ahead advice); off by default, so that reads always ask for it.
    cached: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

#[derive(Debug)]
struct HookedFile {
    inner: Arc<dyn BlockStore>,
    owner: Hooked,
    /// The second-halves file (its read-ahead is reported as "prefetch-alt").
    alt: bool,
}

impl Hooked {
    fn call(&self, what: &'static str, off: u64) {
        let h = self.hook.lock().unwrap().clone();
        if let Some(h) = h {
            h(what, off);
        }
    }
    pub(crate) fn set(&self, h: Option<Hook>) {
        *self.hook.lock().unwrap() = h;
    }
    /// Lets reads be served from the page cache (see `cached`).
    pub(crate) fn serve_cached(&self, on: bool) {
        self.cached.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl PoolStorage for Hooked {
    fn dir(&self) -> &Path {
        self.inner.dir()
    }
    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        Ok(Arc::new(HookedFile {
            inner: self.inner.data(chunk_shift)?,
            owner: self.clone(),
            alt: false,
        }))
    }
    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        Ok(Arc::new(HookedFile {
            inner: self.inner.alt(chunk_shift)?,
            owner: self.clone(),
            alt: true,
        }))
    }
    /// The journal is not hooked (the hooks watch the data files).
    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        self.inner.journal()
    }
    fn has_journal(&self) -> bool {
        self.inner.has_journal()
    }
    fn journal_capacity(&self) -> u64 {
        self.inner.journal_capacity()
    }
    fn open_metadata(
        &self,
        latch: &crate::volume::storage::SyncLatch,
    ) -> Result<redb::Database, redb::DatabaseError> {
        self.inner.open_metadata(latch)
    }

    fn drop_cache(&self) {
        self.inner.drop_cache()
    }
    fn metadata_path(&self) -> PathBuf {
        self.inner.metadata_path()
    }
}

impl BlockStore for HookedFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.owner.call("write", off);
        self.inner.write_at(buf, off)
    }
    fn punch(&self, off: u64, len: u64) -> io::Result<()> {
        self.owner.call("punch", off);
        self.inner.punch(off, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.owner.call("sync", 0);
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn prefetch(&self, off: u64, len: u64) {
        self.owner
            .call(if self.alt { "prefetch-alt" } else { "prefetch" }, off);
        self.inner.prefetch(off, len)
    }
    fn read_cached(&self, buf: &mut [u8], off: u64) -> bool {
        self.owner.cached.load(std::sync::atomic::Ordering::SeqCst)
            && self.inner.read_cached(buf, off)
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

pub(crate) fn hooked(dir: &Path) -> Hooked {
    Hooked {
        inner: Arc::new(FileStorage::new(dir.to_path_buf())),
        hook: Arc::new(Mutex::new(None)),
        cached: Arc::default(),
    }
}

/// Every slot below the high-water mark is referenced or free, never both; every count
/// equals the map rows pointing at it. (The full checker is `volume::check`.)
pub(crate) fn assert_consistent(pool: &Pool, shift: u8) {
    let r = pool.db().unwrap().begin_read().unwrap();
    let mut rows: HashMap<u64, u32> = HashMap::new();
    for item in r.open_table(MAPS).unwrap().iter().unwrap() {
        let (_, v) = item.unwrap();
        *rows.entry(v.value()).or_default() += 1;
    }
    let mut refs: HashMap<u64, u32> = HashMap::new();
    for item in r.open_table(REFS).unwrap().iter().unwrap() {
        let (k, v) = item.unwrap();
        assert_eq!(k.value().0, shift);
        refs.insert(k.value().1, v.value());
    }
    let free: HashSet<u64> = r
        .open_table(FREE)
        .unwrap()
        .iter()
        .unwrap()
        .map(|i| i.unwrap().0.value().1)
        .collect();
    let hwm = r
        .open_table(META)
        .unwrap()
        .get(crate::volume::tables::hwm_key(shift).as_str())
        .unwrap()
        .map(|v| v.value())
        .unwrap_or(0);
    assert_eq!(rows, refs, "reference counts equal the map rows");
    for s in 0..hwm {
        let used = refs.contains_key(&s);
        let is_free = free.contains(&s);
        assert!(
            used != is_free,
            "slot {s}: referenced {used}, free {is_free}"
        );
    }
    assert!(free.iter().all(|s| *s < hwm) && refs.keys().all(|s| *s < hwm));
}

/// A commit that frees slots punches each one before the allocator may hand it out. The
/// allocator used to be loaded lazily, on first use, from the committed `free` table:
/// loaded inside that window it handed out a slot about to be punched (acknowledged data
/// turned to zeros), and the release after the punch handed the same slot out again.
#[test]
fn allocator_window() {
    let d = tempfile::tempdir().unwrap();
    let storage = hooked(d.path());
    let h = header(64 << SHIFT);
    {
        let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
        pool.create_volume(&h).unwrap();
        let v = OpenVolume::open(pool.clone(), &h, xts()).unwrap();
        for c in 0..16u64 {
            v.write(c << SHIFT, &[1u8; 4096]).unwrap();
        }
        v.flush().unwrap();
    }
    // A fresh owner (as after a restart): nothing allocated yet in this process.
    let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
    let freed: HashSet<u64> = pool
        .load_map(h.id.as_str())
        .unwrap()
        .iter()
        .map(|(_, s)| s.0)
        .collect();
    // Stop the deleting thread inside its first punch of a freed slot, and reserve
    // slots from another thread while it waits there.
    let in_window = Arc::new(Barrier::new(2));
    let leave_window = Arc::new(Barrier::new(2));
    {
        let (a, b) = (in_window.clone(), leave_window.clone());
        let once = std::sync::atomic::AtomicBool::new(false);
        storage.set(Some(Arc::new(move |what, _off| {
            if what == "punch" && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                a.wait();
                b.wait();
            }
        })));
    }
    let deleter = {
        let (pool, h) = (pool.clone(), h.clone());
        std::thread::spawn(move || pool.delete_volume(&h).unwrap())
    };
    in_window.wait();
    storage.set(None);
    let during: Vec<u64> = (0..8).map(|_| pool.reserve(SHIFT).unwrap().0.0).collect();
    leave_window.wait();
    deleter.join().unwrap();
    let after: Vec<u64> = (0..24).map(|_| pool.reserve(SHIFT).unwrap().0.0).collect();
    for s in &during {
        assert!(
            !freed.contains(s),
            "slot {s} was handed out while its release was still punching it"
        );
    }
    let mut all = during.clone();
    all.extend(&after);
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a slot was handed out twice: {all:?}"
    );
}

/// The dirty flag of a data file is raised after the write, so a commit that runs while a
/// write is in flight cannot leave it lowered once the write returns (the write's own
/// fsync would then skip the sync and acknowledge data that is not on disk).
#[test]
fn fsync_that_does_not_sync() {
    let d = tempfile::tempdir().unwrap();
    let storage = hooked(d.path());
    let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
    let df = pool.data_file(SHIFT).unwrap();
    let in_write = Arc::new(Barrier::new(2));
    let finish_write = Arc::new(Barrier::new(2));
    {
        let (a, b) = (in_write.clone(), finish_write.clone());
        storage.set(Some(Arc::new(move |what, _| {
            if what == "write" {
                a.wait();
                b.wait();
            }
        })));
    }
    let writer = {
        let df = df.clone();
        std::thread::spawn(move || df.write_at(&[5u8; 4096], 0).unwrap())
    };
    in_write.wait();
    // Another volume's fsync commits while the write is in flight.
    pool.commit().unwrap();
    finish_write.wait();
    writer.join().unwrap();
    storage.set(None);
    assert!(
        df.is_dirty(),
        "a write that returned after a commit must leave the file marked for the next sync"
    );
}

/// A reservation is not a reference: a commit between reserving a slot and mapping it
/// (another volume's fsync, the periodic commit) and then a crash used to leave the slot
/// with a count and no map, never reclaimed. Likewise a copy-on-write remap is one change.
#[test]
fn leaked_slots() {
    let d = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileStorage::new(d.path().to_path_buf()));
    let h = header(64 << SHIFT);
    {
        let pool = Arc::new(Pool::open_storage(storage.clone()).unwrap());
        pool.create_volume(&h).unwrap();
        let v = OpenVolume::open(pool.clone(), &h, xts()).unwrap();
        v.write(0, &[1u8; 8192]).unwrap();
        v.flush().unwrap();
        pool.create_snapshot(
            &h,
            &SnapshotId::parse("snap-00000000000000001").unwrap(),
            b"r",
        )
        .unwrap();
        v.mark_all_shared();
        // A writer in the middle of a first write and of a copy-on-write...
        let _first = pool.reserve(SHIFT).unwrap();
        let _cow = pool.reserve(SHIFT).unwrap();
        // ...while someone else commits; then the machine stops.
        pool.commit().unwrap();
    }
    let pool = Pool::open_storage(storage).unwrap();
    assert_consistent(&pool, SHIFT);
}

/// Many writers and discards, with commits from another thread at every moment, then a
/// crash: the committed metadata is always consistent.
#[test]
fn concurrent_commits_never_split_a_change() {
    let d = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileStorage::new(d.path().to_path_buf()));
    let h = header(32 << SHIFT);
    for round in 0..3u64 {
        let pool = Arc::new(Pool::open_storage(storage.clone()).unwrap());
        if pool.get_volume(&h.id).unwrap().is_none() {
            pool.create_volume(&h).unwrap();
        }
        let v = Arc::new(OpenVolume::open(pool.clone(), &h, xts()).unwrap());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let committer = {
            let (pool, stop) = (pool.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Acquire) {
                    pool.commit().unwrap();
                }
            })
        };
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                let v = v.clone();
                let pool = pool.clone();
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + round * 7);
                    for i in 0..300u64 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let chunk = x % 32;
                        match x % 7 {
                            0 => v.discard(chunk << SHIFT, 1 << SHIFT).unwrap(),
                            1 if t == 0 && i % 50 == 0 => {
                                let id =
                                    SnapshotId::parse(&format!("snap-{:017x}", round * 1000 + i))
                                        .unwrap();
                                let _q = v.quiesce();
                                pool.create_snapshot(&h, &id, b"r").unwrap();
                                v.mark_all_shared();
                            }
                            _ => v
                                .write((chunk << SHIFT) + (x % 8) * 4096, &[t as u8 + 1; 4096])
                                .unwrap(),
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Release);
        committer.join().unwrap();
        // Crash: the last changes are never committed.
        drop(v);
        drop(pool);
        let pool = Pool::open_storage(storage.clone()).unwrap();
        assert_consistent(&pool, SHIFT);
    }
}

#[test]
fn slot_no_is_what_reserve_returns() {
    // Keeps the test helpers' types honest: a reservation is a slot number.
    let d = tempfile::tempdir().unwrap();
    let pool = Pool::open_storage(Arc::new(FileStorage::new(d.path().to_path_buf()))).unwrap();
    let r = pool.reserve(SHIFT).unwrap();
    assert_eq!(r.0, SlotNo(0));
    pool.unreserve(SHIFT, r);
    assert_eq!(pool.reserve(SHIFT).unwrap().0, SlotNo(0));
}
