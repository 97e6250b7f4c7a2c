//! Attacks on writes that wait for a commit in flight (`Pool::wait_for_commit_in_flight`)
//! and on small reads served from the page cache (`DataFile::read_around`,
//! `read_blocks_auth`): many writers waiting at once on a commit that fails or succeeds,
//! a snapshot's quiesce racing waiting writers, and writers, readers and commits
//! streaming together on a real filesystem and on tmpfs (no `RWF_NOWAIT` guarantees).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::datadir::RegionDir;
use crate::volume::pool::tests::{Hooked, hooked};
use crate::volume::test_support::*;

fn block(fill: u8) -> Vec<u8> {
    vec![fill; BS]
}

fn read_block(v: &OpenVolume, b: u64) -> Vec<u8> {
    let mut out = vec![0u8; BS];
    v.read(b * BLOCK_SIZE, &mut out).unwrap();
    out
}

fn hooked_volume(r: &RegionDir, h: &VolumeHeader) -> (Hooked, Arc<OpenVolume>) {
    let storage = hooked(&r.pool_dir());
    std::fs::create_dir_all(r.pool_dir()).unwrap();
    let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
    pool.create_volume(h).unwrap();
    (storage, Arc::new(open_auth(&pool, h).unwrap()))
}

fn on_first_sync(storage: &Hooked, f: impl Fn() + Send + Sync + 'static) {
    let once = AtomicBool::new(false);
    storage.set(Some(Arc::new(move |what, _| {
        if what == "sync" && !once.swap(true, Ordering::SeqCst) {
            f();
        }
    })));
}

type Handles = Arc<Mutex<Vec<std::thread::JoinHandle<()>>>>;

/// Chunks 0..n: block 0 committed with 1, then rewritten with 2 (moved to its other half
/// in the epoch the next commit takes). Returns each chunk's slot.
fn moved_blocks(v: &OpenVolume, n: u64) -> Vec<SlotNo> {
    let cs = v.chunk_size();
    for c in 0..n {
        v.write(c * cs, &block(1)).unwrap();
    }
    v.flush().unwrap();
    for c in 0..n {
        v.write(c * cs, &block(2)).unwrap();
    }
    (0..n).map(|c| v.entry(c).unwrap().slot).collect()
}

/// Inside the commit (after its take): `n` writers, one per chunk, each writing `fill` to
/// its chunk's block 0; returns once all of them wait for the commit, then runs `end`.
fn writers_during_commit(
    storage: &Hooked,
    v: &Arc<OpenVolume>,
    n: u64,
    fill: u8,
    end: impl Fn() + Send + Sync + 'static,
) -> Handles {
    let handles: Handles = Arc::new(Mutex::new(vec![]));
    let (hs, v0) = (handles.clone(), v.clone());
    on_first_sync(storage, move || {
        let before = v0.pool.commit_waits();
        let cs = v0.chunk_size();
        for c in 0..n {
            let v = v0.clone();
            hs.lock().unwrap().push(std::thread::spawn(move || {
                v.write(c * cs, &block(fill)).unwrap()
            }));
        }
        for _ in 0..10_000 {
            if v0.pool.commit_waits() >= before + n {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(
            v0.pool.commit_waits(),
            before + n,
            "every writer waits for the commit in flight"
        );
        end();
    });
    handles
}

fn join(h: &Handles) {
    for t in std::mem::take(&mut *h.lock().unwrap()) {
        t.join().unwrap();
    }
}

/// Eight writers wait on one commit, which panics after its take: every one of them wakes
/// (the guard ends the commit even on panic) and copies its chunk; the next commit makes
/// all of it durable, and the pool reopens with every block as last written, verified.
#[test]
fn many_writers_waiting_on_a_commit_that_panics_all_wake_and_copy() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let n = 8;
    {
        let (storage, v) = hooked_volume(&r, &h);
        let slots = moved_blocks(&v, n);
        let writers = writers_during_commit(&storage, &v, n, 3, || {
            panic!("simulated crash inside the commit");
        });
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.flush()));
        assert!(died.is_err(), "the hook ran inside the commit");
        storage.set(None);
        join(&writers);
        // Counted here too: the hook's own check panics inside a commit that panics anyway.
        assert_eq!(
            v.pool.commit_waits(),
            n,
            "every writer waited for the commit"
        );
        for c in 0..n {
            assert_ne!(
                v.entry(c).unwrap().slot,
                slots[c as usize],
                "chunk {c} copied"
            );
            assert_eq!(read_block(&v, c * v.chunk_size() / BLOCK_SIZE), block(3));
        }
        v.flush().unwrap();
    }
    reopened_reads_block_3_in_each_chunk(&r, &h, n);
}

/// Eight writers wait on a commit that succeeds, while a snapshot's quiesce (every stripe,
/// then a commit) queues behind them: the commit ends, the writers move their blocks in
/// place, the quiesce gets its stripes and commits; nothing hangs and all is durable.
#[test]
fn a_quiesce_and_commit_queued_behind_waiting_writers_completes() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let n = 8;
    {
        let (storage, v) = hooked_volume(&r, &h);
        let slots = moved_blocks(&v, n);
        let quiet: Handles = Arc::new(Mutex::new(vec![]));
        let (q, vq) = (quiet.clone(), v.clone());
        let writers = writers_during_commit(&storage, &v, n, 3, move || {
            let v = vq.clone();
            q.lock().unwrap().push(std::thread::spawn(move || {
                let _q = v.quiesce();
                v.flush().unwrap();
            }));
            // Let the quiesce reach a stripe a writer holds.
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        v.flush().unwrap();
        storage.set(None);
        join(&writers);
        join(&quiet);
        for c in 0..n {
            assert_eq!(
                v.entry(c).unwrap().slot,
                slots[c as usize],
                "chunk {c}: no copy"
            );
            assert_eq!(read_block(&v, c * v.chunk_size() / BLOCK_SIZE), block(3));
        }
        v.flush().unwrap();
    }
    reopened_reads_block_3_in_each_chunk(&r, &h, n);
}

/// The pool of `r` opened again: the first block of each of the first `n` chunks of `h`
/// reads `3`, and `verify` is clean.
fn reopened_reads_block_3_in_each_chunk(r: &RegionDir, h: &VolumeHeader, n: u64) {
    let pool = Arc::new(Pool::open(r).unwrap());
    let v = open_auth(&pool, h).unwrap();
    for c in 0..n {
        assert_eq!(read_block(&v, c * v.chunk_size() / BLOCK_SIZE), block(3));
    }
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

/// The contents a writer thread puts in block `b` at its `seq`-th write.
fn content(b: u64, seq: u64) -> Vec<u8> {
    let mut out = vec![0u8; BS];
    for (i, w) in out.chunks_mut(8).enumerate() {
        w.copy_from_slice(&(b << 40 ^ seq << 16 ^ i as u64).to_le_bytes());
    }
    out
}

/// Writers (each owning its blocks), small and large reads of those blocks, and commits
/// (alternately full commits and fsyncs through the journal) all at once, for a while:
/// every read returns the last write (no stale page-cache read, no MAC failure), and the
/// pool, reopened, verifies clean with every block as last written.
fn stream(data_dir: &std::path::Path) {
    let d = tempfile::tempdir_in(data_dir).unwrap();
    let r = region(&d);
    let h = auth_header(2 << 20);
    let threads = 4u64;
    let per = 24u64; // blocks per thread, spread over chunks
    let stride = 5u64; // block b of thread t: t + threads * stride * i (chunks interleave)
    let last: Arc<Vec<AtomicU64>> = Arc::new((0..512).map(|_| AtomicU64::new(0)).collect());
    {
        let pool = Arc::new(Pool::open(&r).unwrap());
        pool.create_volume(&h).unwrap();
        let v = Arc::new(open_auth(&pool, &h).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let committer = {
            let (v, stop) = (v.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if i.is_multiple_of(2) {
                        v.flush()
                    } else {
                        v.fsync()
                    }
                    .unwrap();
                    i += 1;
                }
                i
            })
        };
        let mut ts = vec![];
        for t in 0..threads {
            let (v, last) = (v.clone(), last.clone());
            ts.push(std::thread::spawn(move || {
                let mine: Vec<u64> = (0..per).map(|i| t + threads * stride * i).collect();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                let mut rnd = move || {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed
                };
                for seq in 1..=1500u64 {
                    let b = mine[(rnd() % per) as usize];
                    match rnd() % 3 {
                        0 => {
                            v.write(b * BLOCK_SIZE, &content(b, seq)).unwrap();
                            last[b as usize].store(seq, Ordering::SeqCst);
                        }
                        1 => {
                            let s = last[b as usize].load(Ordering::SeqCst);
                            let want = if s == 0 { block(0) } else { content(b, s) };
                            assert_eq!(read_block(&v, b), want, "block {b}");
                        }
                        _ => {
                            // A sub-block read (partial, through a bounce buffer).
                            let s = last[b as usize].load(Ordering::SeqCst);
                            let want = if s == 0 { block(0) } else { content(b, s) };
                            let mut out = vec![0u8; 100];
                            v.read(b * BLOCK_SIZE + 1000, &mut out).unwrap();
                            assert_eq!(out, want[1000..1100], "block {b}, partial");
                        }
                    }
                }
            }));
        }
        for t in ts {
            t.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        let commits = committer.join().unwrap();
        assert!(commits > 0);
        assert_eq!(v.bad_blocks_seen(), 0);
        v.flush().unwrap();
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = open_auth(&pool, &h).unwrap();
    for (b, s) in last.iter().enumerate() {
        let s = s.load(Ordering::SeqCst);
        let want = if s == 0 {
            block(0)
        } else {
            content(b as u64, s)
        };
        assert_eq!(read_block(&v, b as u64), want, "block {b} after reopen");
    }
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

#[test]
fn writes_reads_and_commits_streaming_together_read_what_was_written() {
    stream(&std::env::temp_dir());
}

/// The same on tmpfs (`/dev/shm` as the data dir), whose `RWF_NOWAIT` support differs.
#[test]
fn writes_reads_and_commits_streaming_together_on_tmpfs_read_what_was_written() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        return;
    }
    stream(shm);
}

type SyncHook = Box<dyn FnOnce() -> bool + Send>;

/// The real files; the first data-file sync after `arm` runs the hook inside the
/// commit, and fails with EIO if it says so.
#[derive(Clone)]
struct FailSync {
    inner: Arc<dyn crate::volume::storage::PoolStorage>,
    hook: Arc<Mutex<Option<SyncHook>>>,
}

impl std::fmt::Debug for FailSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FailSync")
    }
}

#[derive(Debug)]
struct FailSyncFile {
    inner: Arc<dyn crate::volume::storage::BlockStore>,
    owner: FailSync,
}

impl crate::volume::storage::PoolStorage for FailSync {
    fn dir(&self) -> &std::path::Path {
        self.inner.dir()
    }
    fn data(&self, s: u8) -> std::io::Result<Arc<dyn crate::volume::storage::BlockStore>> {
        Ok(Arc::new(FailSyncFile {
            inner: self.inner.data(s)?,
            owner: self.clone(),
        }))
    }
    fn alt(&self, s: u8) -> std::io::Result<Arc<dyn crate::volume::storage::BlockStore>> {
        Ok(Arc::new(FailSyncFile {
            inner: self.inner.alt(s)?,
            owner: self.clone(),
        }))
    }
    fn journal(&self) -> std::io::Result<Arc<dyn crate::volume::storage::BlockStore>> {
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
    ) -> std::result::Result<redb::Database, redb::DatabaseError> {
        self.inner.open_metadata(latch)
    }

    fn drop_cache(&self) {
        self.inner.drop_cache()
    }
    fn metadata_path(&self) -> std::path::PathBuf {
        self.inner.metadata_path()
    }
}

impl crate::volume::storage::BlockStore for FailSyncFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, off)
    }
    fn punch(&self, off: u64, len: u64) -> std::io::Result<()> {
        self.inner.punch(off, len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let h = self.owner.hook.lock().unwrap().take();
        if let Some(h) = h
            && h()
        {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        self.inner.sync_data()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_cached(&self, buf: &mut [u8], off: u64) -> bool {
        self.inner.read_cached(buf, off)
    }
    fn path(&self) -> &std::path::Path {
        self.inner.path()
    }
}

/// Eight writers wait on a commit whose data sync fails with EIO after its take (the
/// pool then reopens its database, still inside the commit): all of them wake and copy
/// their chunks, the flush reports the error, the next one is refused (no sync is
/// trusted after a failed one: `storage::latch`), and the pool opened again verifies
/// clean, takes the writes again and reads every block as last written.
#[test]
fn many_writers_waiting_on_a_commit_whose_sync_fails_all_wake_and_copy() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let n = 8u64;
    std::fs::create_dir_all(r.pool_dir()).unwrap();
    let storage = FailSync {
        inner: Arc::new(crate::volume::storage::FileStorage::new(r.pool_dir())),
        hook: Arc::new(Mutex::new(None)),
    };
    {
        let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
        pool.create_volume(&h).unwrap();
        let v = Arc::new(open_auth(&pool, &h).unwrap());
        let slots = moved_blocks(&v, n);
        let handles: Handles = Arc::new(Mutex::new(vec![]));
        let (hs, v0) = (handles.clone(), v.clone());
        *storage.hook.lock().unwrap() = Some(Box::new(move || {
            let before = v0.pool.commit_waits();
            let cs = v0.chunk_size();
            for c in 0..n {
                let v = v0.clone();
                hs.lock().unwrap().push(std::thread::spawn(move || {
                    v.write(c * cs, &block(3)).unwrap()
                }));
            }
            for _ in 0..10_000 {
                if v0.pool.commit_waits() >= before + n {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(v0.pool.commit_waits(), before + n, "all wait");
            true
        }));
        assert!(v.flush().is_err(), "the commit's sync failed");
        join(&handles);
        for c in 0..n {
            assert_ne!(
                v.entry(c).unwrap().slot,
                slots[c as usize],
                "chunk {c} copied"
            );
            assert_eq!(read_block(&v, c * v.chunk_size() / BLOCK_SIZE), block(3));
        }
        let e = v
            .flush()
            .expect_err("a flush after a failed sync")
            .to_string();
        assert!(e.contains("an earlier sync of"), "{e}");
        assert_eq!(v.bad_blocks_seen(), 0);
    }
    {
        let pool = Arc::new(Pool::open(&r).unwrap());
        let v = open_auth(&pool, &h).unwrap();
        let rep = v.verify().unwrap();
        assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
        for c in 0..n {
            v.write(c * v.chunk_size(), &block(3)).unwrap();
        }
        v.flush().unwrap();
    }
    reopened_reads_block_3_in_each_chunk(&r, &h, n);
}

/// Small reads whose range the page cache holds only in part (every other page of the
/// data files dropped, on disk and on tmpfs): a short `RWF_NOWAIT` read must fall back to
/// a whole read, on a plain and on an authenticated volume, and in either half.
#[test]
fn small_reads_of_ranges_the_page_cache_holds_in_part_read_right() {
    for base in [std::env::temp_dir(), std::path::PathBuf::from("/dev/shm")] {
        if !base.is_dir() {
            continue;
        }
        for auth in [false, true] {
            let d = tempfile::tempdir_in(&base).unwrap();
            let r = region(&d);
            let pool = Arc::new(Pool::open(&r).unwrap());
            let h = if auth {
                auth_header(1 << 20)
            } else {
                header(1 << 20)
            };
            pool.create_volume(&h).unwrap();
            let v = if auth {
                open_auth(&pool, &h).unwrap()
            } else {
                OpenVolume::open(pool.clone(), &h, xts()).unwrap()
            };
            let blocks = 64u64;
            for b in 0..blocks {
                v.write(b * BLOCK_SIZE, &content(b, 1)).unwrap();
            }
            v.flush().unwrap();
            // Half of them again: on an authenticated volume they move to the second half.
            for b in (0..blocks).step_by(2) {
                v.write(b * BLOCK_SIZE, &content(b, 2)).unwrap();
            }
            v.flush().unwrap();
            let want = |b: u64| content(b, if b.is_multiple_of(2) { 2 } else { 1 });
            for round in 0..4 {
                // Drop every other page of every data file (clean after the commit).
                for e in std::fs::read_dir(r.pool_dir()).unwrap() {
                    let p = e.unwrap().path();
                    if !p.to_string_lossy().ends_with(".pool") {
                        continue;
                    }
                    let f = std::fs::File::open(&p).unwrap();
                    let len = f.metadata().unwrap().len();
                    let mut off = (round % 2) * 4096;
                    while off < len {
                        nix::fcntl::posix_fadvise(
                            &f,
                            off as i64,
                            4096,
                            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
                        )
                        .unwrap();
                        off += 8192;
                    }
                }
                for b in 0..blocks - 1 {
                    let mut two = vec![0u8; 2 * BS];
                    v.read(b * BLOCK_SIZE, &mut two).unwrap();
                    assert_eq!(two[..BS], want(b), "round {round}, block {b} (auth {auth})");
                    assert_eq!(
                        two[BS..],
                        want(b + 1),
                        "round {round}, block {} (auth {auth})",
                        b + 1
                    );
                    let mut part = vec![0u8; 3000];
                    v.read(b * BLOCK_SIZE + 2500, &mut part).unwrap();
                    let mut joined = want(b);
                    joined.extend(want(b + 1));
                    assert_eq!(
                        part,
                        joined[2500..5500],
                        "round {round}, partial at block {b}"
                    );
                }
            }
            if auth {
                let rep = v.verify().unwrap();
                assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
                assert_eq!(v.bad_blocks_seen(), 0);
            }
        }
    }
}

/// While eight writers wait on a commit that succeeds, object operations that commit queue
/// behind it: a verify (its `check_root` commits under the commit lock, then reads every
/// block under its chunk's lock), a snapshot (quiesce, commit) and that snapshot's delete
/// (commit, then frees). All of them finish, the writers move their blocks in place, and
/// the pool reopens verified, with the snapshot gone.
#[test]
fn verify_snapshot_and_delete_queued_behind_waiting_writers_complete() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let n = 8;
    {
        let (storage, v) = hooked_volume(&r, &h);
        let slots = moved_blocks(&v, n);
        let ops: Handles = Arc::new(Mutex::new(vec![]));
        let (q, vq, hq) = (ops.clone(), v.clone(), h.clone());
        let writers = writers_during_commit(&storage, &v, n, 3, move || {
            let v = vq.clone();
            q.lock().unwrap().push(std::thread::spawn(move || {
                let rep = v.verify().unwrap();
                assert!(rep.root_ok, "{rep:?}");
            }));
            let (v, h) = (vq.clone(), hq.clone());
            q.lock().unwrap().push(std::thread::spawn(move || {
                let id = crate::volume::ids::SnapshotId::random();
                {
                    let _q = v.quiesce();
                    v.pool.create_snapshot(&h, &id, b"r").unwrap();
                    v.mark_all_shared();
                }
                v.pool.delete_snapshot(&id, h.chunk_shift).unwrap();
            }));
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        v.flush().unwrap();
        storage.set(None);
        join(&writers);
        join(&ops);
        for c in 0..n {
            assert_eq!(read_block(&v, c * v.chunk_size() / BLOCK_SIZE), block(3));
        }
        // The writers ran before the snapshot could quiesce: in place, no copy.
        let moved_in_place = (0..n)
            .filter(|&c| v.entry(c).unwrap().slot == slots[c as usize])
            .count();
        assert_eq!(moved_in_place, n as usize);
        v.flush().unwrap();
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    assert!(pool.list_snapshots().unwrap().is_empty());
    let v = open_auth(&pool, &h).unwrap();
    for c in 0..n {
        assert_eq!(read_block(&v, c * v.chunk_size() / BLOCK_SIZE), block(3));
    }
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}
