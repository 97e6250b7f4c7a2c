//! The halves rule of authenticated volumes (`integrity::SlotRecord`, `integrity::Moves`):
//! an overwrite after a commit goes into the block's other half of the same slot, not into
//! a copy of the chunk; a crash before the next commit finds the committed block intact;
//! and a write to a block whose commit is still in flight waits for it (either half may be
//! the one the metadata ends up naming), then moves the block, or copies the chunk if the
//! commit failed.

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

fn half_of(v: &OpenVolume, slot: SlotNo, i: usize) -> usize {
    let r = v.record(slot).unwrap();
    let r = r.lock().unwrap();
    r.half(i)
}

/// A new pool of region `r`, its data files hooked, holding volume `h` (authenticated),
/// attached. The pool lives as long as the volume.
fn hooked_volume(r: &RegionDir, h: &VolumeHeader) -> (Hooked, Arc<OpenVolume>) {
    let storage = hooked(&r.pool_dir());
    std::fs::create_dir_all(r.pool_dir()).unwrap();
    let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
    pool.create_volume(h).unwrap();
    (storage, Arc::new(open_auth(&pool, h).unwrap()))
}

/// Runs `f` inside the first data-file sync from now on (a commit's), once.
fn on_first_sync(storage: &Hooked, f: impl Fn() + Send + Sync + 'static) {
    let once = std::sync::atomic::AtomicBool::new(false);
    storage.set(Some(Arc::new(move |what, _| {
        if what == "sync" && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            f();
        }
    })));
}

/// Before the halves, every first write to a chunk after a commit copied the whole chunk
/// into a fresh slot (a database's fsync every few writes made the pool write 254 times
/// what it was given). Now the slot stays and only the block moves.
#[test]
fn an_overwrite_after_a_commit_moves_the_block_to_its_other_half_in_the_same_slot() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let h = auth_header(4 << 20);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    v.write(5 * BLOCK_SIZE, &block(1)).unwrap();
    v.write(6 * BLOCK_SIZE, &block(1)).unwrap();
    v.flush().unwrap();
    let slot = v.entry(0).unwrap().slot;
    for (round, fill) in [(1usize, 2u8), (2, 3), (3, 4)] {
        v.write(5 * BLOCK_SIZE, &block(fill)).unwrap();
        assert_eq!(v.entry(0).unwrap().slot, slot, "round {round}: no copy");
        assert_eq!(
            half_of(&v, slot, 5),
            round % 2,
            "round {round}: block 5 moved"
        );
        assert_eq!(half_of(&v, slot, 6), 0, "block 6 stays");
        // Rewritten in the same epoch: where it is now.
        v.write(5 * BLOCK_SIZE, &block(fill + 100)).unwrap();
        assert_eq!(
            half_of(&v, slot, 5),
            round % 2,
            "round {round}: rewritten in place"
        );
        assert_eq!(read_block(&v, 5), block(fill + 100));
        v.flush().unwrap();
    }
    // The alternate file holds the second halves.
    let alt = pool.file(SHIFT, 1).unwrap();
    let mut raw = vec![0u8; BS];
    alt.read_at(&mut raw, alt.slot_offset(slot) + 5 * BLOCK_SIZE)
        .unwrap();
    assert!(raw.iter().any(|&b| b != 0), "block 5 was written in half 1");
    drop(v);
    // Reopened from the metadata alone: the record says where each block is.
    let v = open_auth(&pool, &h).unwrap();
    assert_eq!(read_block(&v, 5), block(104));
    assert_eq!(read_block(&v, 6), block(1));
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

/// An overwrite that no commit followed (the process died): the committed block, in the
/// half the committed record names, is intact and reads as before.
#[test]
fn a_crash_after_an_overwrite_reads_the_committed_block() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    {
        let pool = Arc::new(Pool::open(&r).unwrap());
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        v.write(0, &block(1)).unwrap();
        v.flush().unwrap();
        v.write(0, &block(2)).unwrap();
        v.flush().unwrap();
        // Block 0 is in half 1 now; this overwrite goes to half 0, and is never committed.
        v.write(0, &block(3)).unwrap();
        v.write(BLOCK_SIZE, &block(3)).unwrap();
        drop(v);
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = open_auth(&pool, &h).expect("attach after the crash");
    assert_eq!(read_block(&v, 0), block(2), "the last committed write");
    assert_eq!(
        read_block(&v, 1),
        block(0),
        "an uncommitted first write is a hole"
    );
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

/// Runs, inside the first data-file sync from now on (a commit's, after its take), a
/// write of `fill` to block 0 from another thread, and checks that the write waits for the
/// commit: it cannot place the block while the commit that moved it is in flight. Then
/// `end` runs (still inside the commit). Returns the writer thread.
fn write_during_commit(
    storage: &Hooked,
    v: &Arc<OpenVolume>,
    fill: u8,
    end: impl Fn() + Send + Sync + 'static,
) -> Arc<Mutex<Option<std::thread::JoinHandle<()>>>> {
    let writer = Arc::new(Mutex::new(None));
    let (w, v0) = (writer.clone(), v.clone());
    on_first_sync(storage, move || {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, v) = (done.clone(), v0.clone());
        *w.lock().unwrap() = Some(std::thread::spawn(move || {
            v.write(0, &block(fill)).unwrap();
            d.store(true, std::sync::atomic::Ordering::SeqCst);
        }));
        // The writer reaches the wait (a write that did not wait would never count one).
        for _ in 0..10_000 {
            if v0.pool.commit_waits() > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            v0.pool.commit_waits() > 0,
            "the write waits for the commit in flight"
        );
        assert!(
            !done.load(std::sync::atomic::Ordering::SeqCst),
            "the write waits for the commit in flight"
        );
        end();
    });
    writer
}

/// A write that arrives while the commit that moved its block is in flight (taken, data
/// being synced, metadata not written): the committed metadata may end up naming either
/// half, so the write can go into neither. It waits for the commit; here the commit dies
/// before its metadata lands, so the write then goes into a copy of the chunk, and the
/// pool reads the block as the commit before it left it.
#[test]
fn a_write_during_a_commit_that_fails_waits_then_copies_the_chunk() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    {
        let (storage, v) = hooked_volume(&r, &h);
        v.write(0, &block(1)).unwrap();
        v.flush().unwrap();
        let slot = v.entry(0).unwrap().slot;
        // Moves block 0 to half 1, in the epoch the next commit takes.
        v.write(0, &block(2)).unwrap();
        assert_eq!(half_of(&v, slot, 0), 1);
        let writer = write_during_commit(&storage, &v, 3, || {
            // The commit dies here: nothing after this point reaches the metadata.
            panic!("simulated crash inside the commit");
        });
        let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.flush()));
        assert!(died.is_err(), "the hook ran inside the commit");
        storage.set(None);
        let t = writer.lock().unwrap().take().expect("the writer started");
        t.join().unwrap();
        assert_ne!(v.entry(0).unwrap().slot, slot, "the write went into a copy");
        assert_eq!(read_block(&v, 0), block(3));
        drop(v);
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = open_auth(&pool, &h).expect("attach after the crash");
    assert_eq!(read_block(&v, 0), block(1), "the last durable write");
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

/// The same write while a commit that succeeds is in flight: it waits, and once the commit
/// is durable the block has a free half again, so the write moves it there instead of
/// copying the chunk. Before, every chunk a sequential writer reached in that window was
/// copied into a fresh slot (some 130 per commit at 2.5 GB/s), each one later freed and
/// punched.
#[test]
fn a_write_during_a_commit_that_succeeds_waits_then_moves_the_block_in_its_slot() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    {
        let (storage, v) = hooked_volume(&r, &h);
        v.write(0, &block(1)).unwrap();
        v.flush().unwrap();
        let slot = v.entry(0).unwrap().slot;
        v.write(0, &block(2)).unwrap();
        assert_eq!(half_of(&v, slot, 0), 1);
        let writer = write_during_commit(&storage, &v, 3, || {});
        v.flush().unwrap();
        storage.set(None);
        let t = writer.lock().unwrap().take().expect("the writer started");
        t.join().unwrap();
        assert_eq!(v.entry(0).unwrap().slot, slot, "no copy");
        assert_eq!(half_of(&v, slot, 0), 0, "moved back to half 0");
        assert_eq!(read_block(&v, 0), block(3));
        v.flush().unwrap();
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = open_auth(&pool, &h).unwrap();
    assert_eq!(read_block(&v, 0), block(3));
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

/// A commit with a large backlog of writes syncs it before its take, so that writes during
/// that (long) sync still go where they would have gone, not into copies of their chunks.
/// Before, the commit took first and then synced everything: every chunk written during
/// the sync of seconds of sequential writes was copied into a fresh slot, and the pool
/// file grew by the copies (by half the volume's size in a 5-second fio run).
#[test]
fn a_commit_syncs_a_large_backlog_before_its_take_so_writes_meanwhile_are_not_copied() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(16 << 20);
    let backlog = vec![0x41u8; 12 << 20];
    {
        let (storage, v) = hooked_volume(&r, &h);
        v.write(0, &backlog).unwrap();
        v.flush().unwrap();
        let slot = v.entry(0).unwrap().slot;
        // Every block moves to its other half: a backlog above the commit's threshold.
        v.write(0, &backlog).unwrap();
        let in_hook = v.clone();
        on_first_sync(&storage, move || {
            // The commit's first sync: before its take, block 0 placed in this epoch.
            in_hook.write(0, &block(3)).unwrap();
            assert_eq!(
                in_hook.entry(0).unwrap().slot,
                slot,
                "a write during the sync of the backlog went into a copy of its chunk"
            );
        });
        v.flush().unwrap();
        storage.set(None);
        assert_eq!(read_block(&v, 0), block(3));
    }
    // Taken after the write in the hook: the commit made it durable.
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = open_auth(&pool, &h).unwrap();
    assert_eq!(read_block(&v, 0), block(3));
    assert_eq!(read_block(&v, 1), block(0x41));
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
}

/// Bytes the file at `path` takes on disk (its allocated blocks; holes take none).
fn allocated(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// A slot freed (its chunk discarded whole) gives back the space of its second half too,
/// not only of the data file's.
#[test]
fn a_freed_slot_returns_the_space_of_its_second_half() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let h = auth_header(4 << 20);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    let chunk = vec![0x31u8; 1 << SHIFT];
    v.write(0, &chunk).unwrap();
    v.flush().unwrap();
    // Every block rewritten after the commit: all of them move to the second half.
    v.write(0, &vec![0x32u8; 1 << SHIFT]).unwrap();
    v.flush().unwrap();
    let alt = r
        .pool_dir()
        .join(crate::volume::storage::alt_file_name(SHIFT));
    assert!(
        allocated(&alt) >= 1 << SHIFT,
        "the second half holds the chunk: {} bytes",
        allocated(&alt)
    );
    v.discard(0, 1 << SHIFT).unwrap();
    v.flush().unwrap();
    assert_eq!(allocated(&alt), 0, "freed with its slot");
}

/// A small read of an authenticated volume asks for read-ahead, as a plain volume's does,
/// in each file that holds a written block of the 128 KiB around it: the data file for
/// blocks in their first half, the second-halves file for moved ones, and nothing for a
/// window of holes. (First the authenticated path asked for none, and random reads through
/// ext4 ran at half a plain volume's speed; then only in the file the read itself read,
/// and once overwrites had spread a window's blocks over both halves, each neighbour in
/// the other half missed the page cache on its own.)
#[test]
fn small_authenticated_reads_ask_for_read_ahead_in_each_file_holding_their_neighbours() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let (storage, v) = hooked_volume(&r, &h);
    // Window 0 (blocks 0..32): block 0 in the first half, block 1 moved to the second.
    // Window 1 (blocks 32..64): block 40 in the first half only.
    for b in [0, 1, 40] {
        v.write(b * BLOCK_SIZE, &block(1)).unwrap();
    }
    v.flush().unwrap();
    v.write(BLOCK_SIZE, &block(2)).unwrap();
    let slot = v.entry(0).unwrap().slot;
    assert_eq!((half_of(&v, slot, 0), half_of(&v, slot, 1)), (0, 1));
    let seen = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let log = seen.clone();
    storage.set(Some(Arc::new(move |what, _| {
        if what.starts_with("prefetch") {
            log.lock().unwrap().push(what);
        }
    })));
    let take = |b: u64| {
        let got = read_block(&v, b);
        (got, std::mem::take(&mut *seen.lock().unwrap()))
    };
    let both = vec!["prefetch", "prefetch-alt"];
    assert_eq!(
        take(0),
        (block(1), both.clone()),
        "a first-half block with a moved neighbour"
    );
    assert_eq!(
        take(1),
        (block(2), both.clone()),
        "a moved block with a first-half neighbour"
    );
    assert_eq!(
        take(40),
        (block(1), vec!["prefetch"]),
        "a window whose blocks all lie in the first half"
    );
    assert_eq!(take(2), (vec![0u8; BS], vec![]), "a hole of a mapped chunk");
    storage.set(None);
}

/// Drops `path`'s clean pages from the page cache (its dirty ones are synced first).
fn evict(path: &std::path::Path) {
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // DONTNEED drains only the calling CPU's batch of pages not yet on the LRU; a page
    // another CPU just touched is skipped (seen once in CI: "first half, dropped" found the
    // block cached). So the advice is given from every CPU in turn.
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let me = Pid::from_raw(0);
    let allowed = sched_getaffinity(me).unwrap();
    let dontneed = || {
        nix::fcntl::posix_fadvise(
            &f,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        )
        .unwrap()
    };
    // A read-ahead the previous read started may still be in flight: its pages are locked
    // (DONTNEED skips them) and land after the advice. So the advice is repeated until
    // nothing of the file is resident.
    for _ in 0..200 {
        for cpu in (0..CpuSet::count()).filter(|c| allowed.is_set(*c).unwrap_or(false)) {
            let mut one = CpuSet::new();
            one.set(cpu).unwrap();
            if sched_setaffinity(me, &one).is_ok() {
                dontneed();
            }
        }
        sched_setaffinity(me, &allowed).unwrap();
        dontneed();
        if resident_bytes(path) == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!(
        "{path:?} keeps {} bytes in the page cache after DONTNEED",
        resident_bytes(path)
    );
}

/// Bytes of `path` in the page cache, as `fincore` (mincore(2) over a mapping: it reads
/// nothing and starts no read-ahead) reports them.
fn resident_bytes(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--raw", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (Debian: util-linux-extra)");
    assert!(out.status.success(), "fincore {path:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("fincore {path:?}: {e}: {out:?}"))
}

/// A small read that the page cache holds is read from there without any read-ahead
/// advice (an fadvise per cached 4 KiB read cost random reads through `mount` 13 %), in
/// either half; once the files' pages are dropped, the same reads ask for read-ahead again,
/// and every read returns the data.
#[test]
fn a_small_read_the_page_cache_holds_asks_for_no_read_ahead() {
    // On a disk (a tmpfs keeps its pages whatever the advice).
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let (storage, v) = hooked_volume(&r, &h);
    storage.serve_cached(true);
    for b in [0, 1] {
        v.write(b * BLOCK_SIZE, &block(1)).unwrap();
    }
    v.flush().unwrap();
    v.write(BLOCK_SIZE, &block(2)).unwrap();
    let slot = v.entry(0).unwrap().slot;
    assert_eq!((half_of(&v, slot, 0), half_of(&v, slot, 1)), (0, 1));
    let seen = Arc::new(Mutex::new(Vec::<&'static str>::new()));
    let log = seen.clone();
    storage.set(Some(Arc::new(move |what, _| {
        if what.starts_with("prefetch") {
            log.lock().unwrap().push(what);
        }
    })));
    let take = |b: u64| {
        let got = read_block(&v, b);
        (got, std::mem::take(&mut *seen.lock().unwrap()))
    };
    // Just written: in the page cache.
    assert_eq!(take(0), (block(1), vec![]), "first half, cached");
    assert_eq!(take(1), (block(2), vec![]), "second half, cached");
    v.flush().unwrap();
    let evict_both = || {
        evict(
            &r.pool_dir()
                .join(crate::volume::storage::data_file_name(SHIFT)),
        );
        evict(
            &r.pool_dir()
                .join(crate::volume::storage::alt_file_name(SHIFT)),
        );
    };
    // (Each read's read-ahead may bring in the next one's block: dropped again before it.)
    let both = vec!["prefetch", "prefetch-alt"];
    evict_both();
    assert_eq!(take(0), (block(1), both.clone()), "first half, dropped");
    evict_both();
    assert_eq!(take(1), (block(2), both), "second half, dropped");
    storage.set(None);
}

/// Pool storage whose second-halves file cannot be opened (EMFILE, say): the reads that
/// need it fail, and only those.
#[derive(Debug)]
struct AltUnopenable(Arc<dyn crate::volume::storage::PoolStorage>);

impl crate::volume::storage::PoolStorage for AltUnopenable {
    fn dir(&self) -> &std::path::Path {
        self.0.dir()
    }
    fn data(
        &self,
        chunk_shift: u8,
    ) -> std::io::Result<Arc<dyn crate::volume::storage::BlockStore>> {
        self.0.data(chunk_shift)
    }
    fn alt(&self, _: u8) -> std::io::Result<Arc<dyn crate::volume::storage::BlockStore>> {
        Err(std::io::Error::from_raw_os_error(24))
    }
    fn journal(&self) -> std::io::Result<Arc<dyn crate::volume::storage::BlockStore>> {
        self.0.journal()
    }
    fn has_journal(&self) -> bool {
        self.0.has_journal()
    }
    fn open_metadata(
        &self,
        latch: &crate::volume::storage::SyncLatch,
    ) -> Result<redb::Database, redb::DatabaseError> {
        self.0.open_metadata(latch)
    }

    fn drop_cache(&self) {
        self.0.drop_cache()
    }
    fn metadata_path(&self) -> std::path::PathBuf {
        self.0.metadata_path()
    }
}

/// Read-ahead is advice: a small read of a block in the first half succeeds even when the
/// second-halves file, which only a neighbour in its read-ahead window lies in, cannot be
/// opened. (Asking for read-ahead in each file of the window opened that file first, and
/// its failure failed the read.)
#[test]
fn read_ahead_in_the_other_half_never_fails_a_read_that_does_not_need_it() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    {
        let pool = Arc::new(Pool::open(&r).unwrap());
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        v.write(0, &block(1)).unwrap();
        v.write(BLOCK_SIZE, &block(1)).unwrap();
        v.flush().unwrap();
        v.write(BLOCK_SIZE, &block(2)).unwrap();
        v.flush().unwrap();
        let slot = v.entry(0).unwrap().slot;
        assert_eq!(half_of(&v, slot, 1), 1, "block 1 moved");
    }
    let storage = crate::volume::storage::FileStorage::new(r.pool_dir());
    let pool = Arc::new(Pool::open_storage(Arc::new(AltUnopenable(Arc::new(storage)))).unwrap());
    let v = open_auth(&pool, &h).unwrap();
    let mut out = vec![0u8; BS];
    v.read(0, &mut out)
        .expect("a first-half block, read without its neighbour's file");
    assert_eq!(out, block(1));
    assert!(
        v.read(BLOCK_SIZE, &mut out).is_err(),
        "the moved block needs it"
    );
}
