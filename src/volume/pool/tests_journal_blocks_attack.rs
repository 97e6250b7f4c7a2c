//! Attacks on journal entries that carry blocks (`journal.rs`, `commit_to_journal` in
//! `alloc.rs`, `data.rs`): racing writers, fsyncs, folds and verifies crashed mid-way; a
//! replay crashed at each of its syncs and run again; the presync between two entries;
//! a fault at each I/O call of an fsync whose entry carries blocks; hostile journal heads.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::*;
use crate::volume::OpenVolume;
use crate::volume::header::VolumeHeader;
use crate::volume::storage::{BlockStore, CrashMode, FaultKind, SimDisk, SimStorage};
use crate::volume::test_support::*;

const BS: usize = 4096;
/// Chunks per volume.
const CHUNKS: u64 = 16;

fn block(v: u8) -> Vec<u8> {
    vec![v; BS]
}

fn open_on(storage: Arc<dyn PoolStorage>) -> io::Result<Arc<Pool>> {
    Pool::open_storage(storage)
        .map(Arc::new)
        .map_err(|e| io::Error::other(e.to_string()))
}

fn open(disk: &SimDisk) -> Arc<Pool> {
    open_on(Arc::new(SimStorage::new("/pool", disk.clone()))).unwrap()
}

/// A pool with an authenticated and a plain volume, every chunk of both mapped and
/// committed (all bytes `1`): their overwrites are journalable.
fn mapped(storage: Arc<dyn PoolStorage>) -> (Arc<Pool>, VolumeHeader, VolumeHeader) {
    let pool = open_on(storage).unwrap();
    let ha = auth_header(CHUNKS << SHIFT);
    let hp = header(CHUNKS << SHIFT);
    pool.create_volume(&ha).unwrap();
    pool.create_volume(&hp).unwrap();
    let vs = [
        open_auth(&pool, &ha).unwrap(),
        OpenVolume::open(pool.clone(), &hp, xts()).unwrap(),
    ];
    for v in &vs {
        v.write(0, &vec![1u8; (CHUNKS << SHIFT) as usize]).unwrap();
    }
    pool.commit().unwrap();
    drop(vs);
    (pool, ha, hp)
}

fn read(v: &OpenVolume, b: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BS];
    v.read(b * BS as u64, &mut buf).unwrap();
    buf
}

/// The value of a block whose bytes are all one value.
fn uniform(b: &[u8]) -> Option<u8> {
    b.iter().all(|x| *x == b[0]).then_some(b[0])
}

/// Every crash mode (a few seeds each) on a copy of `disk` as it is now.
fn after_every_crash(disk: &SimDisk, check: impl Fn(&SimDisk, &str)) {
    for (i, mode) in CrashMode::ALL.into_iter().enumerate() {
        for seed in 0..3u64 {
            let d = disk.after_crash(mode, seed * 7919 + i as u64);
            check(&d, &format!("{mode:?} seed {seed}"));
        }
    }
}

/// Blocks of volume `vol` that writer `t` owns (spread over the chunks).
fn owned(t: u64) -> Vec<u64> {
    (0..4).map(|k| k * 64 + t * 5 + 3).collect()
}

/// Per block: the last value written (attempted) and the last one an fsync acknowledged.
#[derive(Default)]
struct Ledger {
    written: Mutex<HashMap<u64, u8>>,
    acked: Mutex<HashMap<u64, u8>>,
}

/// Two writers per volume (plain and authenticated) on disjoint blocks, each fsyncing
/// after every write or two, while other threads fold (`Pool::commit`), fsync and verify
/// the authenticated volume; the machine crashes at the `k`-th sync. In every crash mode
/// an authenticated block reads (no EIO) as its last acknowledged value or a later one
/// written, `verify` is clean, and a plain block whose last write was acknowledged reads
/// as it (never as an older copy an entry carried).
#[test]
fn racing_writers_fsyncs_folds_and_verifies_then_a_crash() {
    let mut blocks_seen = false;
    for k in [4u64, 9, 17, 30, 55, 90, u64::MAX] {
        let disk = SimDisk::new();
        let (pool, ha, hp) = mapped(Arc::new(SimStorage::new("/pool", disk.clone())));
        let a = Arc::new(open_auth(&pool, &ha).unwrap());
        let p = Arc::new(OpenVolume::open(pool.clone(), &hp, xts()).unwrap());
        let ledgers: Vec<Arc<Ledger>> = (0..2).map(|_| Arc::default()).collect();
        for l in &ledgers {
            for t in 0..2 {
                for b in owned(t) {
                    l.written.lock().unwrap().insert(b, 1);
                    l.acked.lock().unwrap().insert(b, 1);
                }
            }
        }
        if k != u64::MAX {
            disk.arm_crash_at_sync(disk.sync_count() + k);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let verify_bad = Arc::new(AtomicU64::new(0));
        let outstanding = Arc::new(AtomicBool::new(false));
        std::thread::scope(|s| {
            let mut writers = vec![];
            for (vi, v) in [a.clone(), p.clone()].into_iter().enumerate() {
                for t in 0..2u64 {
                    let v = v.clone();
                    let l = ledgers[vi].clone();
                    let disk = disk.clone();
                    writers.push(s.spawn(move || {
                        let blocks = owned(t);
                        for i in 2..40u8 {
                            let mut mine = vec![blocks[i as usize % 4]];
                            if i % 3 == 0 {
                                mine.push(blocks[(i as usize + 1) % 4]);
                            }
                            for b in &mine {
                                l.written.lock().unwrap().insert(*b, i);
                                if let Err(e) = v.write(*b * BS as u64, &block(i)) {
                                    assert!(disk.is_crashed(), "write before a crash: {e}");
                                    return;
                                }
                            }
                            match v.fsync() {
                                Ok(()) => {
                                    let mut ack = l.acked.lock().unwrap();
                                    for b in &mine {
                                        ack.insert(*b, i);
                                    }
                                }
                                Err(e) => {
                                    assert!(disk.is_crashed(), "fsync before a crash: {e}");
                                    return;
                                }
                            }
                        }
                    }));
                }
            }
            let (pool2, a2, stop2, disk2, bad2, out2) = (
                pool.clone(),
                a.clone(),
                stop.clone(),
                disk.clone(),
                verify_bad.clone(),
                outstanding.clone(),
            );
            s.spawn(move || {
                let mut n = 0u64;
                while !stop2.load(Ordering::Acquire) && !disk2.is_crashed() {
                    n += 1;
                    if lock(&pool2.journal).blocks_outstanding {
                        out2.store(true, Ordering::Relaxed);
                    }
                    let _ = if n.is_multiple_of(3) {
                        pool2.sync()
                    } else {
                        pool2.commit()
                    };
                    if n.is_multiple_of(4)
                        && let Ok(rep) = a2.verify()
                        && !disk2.is_crashed()
                        && !(rep.root_ok && rep.bad_blocks.is_empty())
                    {
                        bad2.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::yield_now();
                }
            });
            for w in writers {
                w.join().unwrap();
            }
            stop.store(true, Ordering::Release);
        });
        assert_eq!(
            verify_bad.load(Ordering::Relaxed),
            0,
            "crash at sync {k}: verify found bad blocks while running"
        );
        blocks_seen |= outstanding.load(Ordering::Relaxed);
        drop((a, p));
        let written: Vec<HashMap<u64, u8>> = ledgers
            .iter()
            .map(|l| l.written.lock().unwrap().clone())
            .collect();
        let acked: Vec<HashMap<u64, u8>> = ledgers
            .iter()
            .map(|l| l.acked.lock().unwrap().clone())
            .collect();
        after_every_crash(&disk, |d, how| {
            let how = format!("crash at sync {k}, {how}");
            let pool = open(d);
            let a = open_auth(&pool, &ha).unwrap_or_else(|e| panic!("{how}: {e}"));
            let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
            for (vi, v) in [&a, &p].into_iter().enumerate() {
                for (b, ack) in &acked[vi] {
                    let w = written[vi][b];
                    let mut buf = vec![0u8; BS];
                    let r = v.read(b * BS as u64, &mut buf);
                    if vi == 0 {
                        r.unwrap_or_else(|e| panic!("{how}: auth block {b}: {e}"));
                        let got = uniform(&buf)
                            .unwrap_or_else(|| panic!("{how}: auth block {b} is mixed"));
                        assert!(
                            (*ack..=w).contains(&got),
                            "{how}: auth block {b} reads {got}, acknowledged {ack}, last written {w}"
                        );
                    } else {
                        r.unwrap();
                        let got = uniform(&buf);
                        if w == *ack {
                            assert_eq!(got, Some(*ack), "{how}: plain block {b}");
                        } else if let Some(got) = got {
                            assert!(
                                got >= *ack,
                                "{how}: plain block {b} reads {got}, acknowledged {ack}"
                            );
                        }
                    }
                }
            }
            let rep = a.verify().unwrap();
            assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{how}: {rep:?}");
        });
    }
    assert!(
        blocks_seen,
        "no entry carried blocks while the threads raced"
    );
}

/// Fsyncs whose entries carry blocks of both volumes, with folds when the journal (64 KiB
/// here) fills; then a crash, and the replay at the next open crashed at each of its own
/// syncs, then run again after a crash of every mode: every acknowledged block reads back
/// and verifies.
#[test]
fn a_replay_crashed_at_each_of_its_syncs_then_run_again() {
    let disk = SimDisk::new();
    let (pool, ha, hp) = mapped(Arc::new(SimStorage::new("/pool", disk.clone())));
    let a = open_auth(&pool, &ha).unwrap();
    let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
    let mut want: HashMap<u64, u8> = HashMap::new();
    let mut outstanding_seen = false;
    for i in 2..22u8 {
        let b = (i as u64 * 37) % (CHUNKS * 16);
        let c = (i as u64 * 11 + 5) % (CHUNKS * 16);
        a.write(b * BS as u64, &block(i)).unwrap();
        p.write(b * BS as u64, &block(i)).unwrap();
        // A block of each written twice between two fsyncs, and a punch now and then.
        a.write(c * BS as u64, &block(i)).unwrap();
        a.write(c * BS as u64, &block(i + 100)).unwrap();
        want.insert(b, i);
        want.insert(c, i + 100);
        if i % 2 == 0 {
            a.fsync().unwrap();
        } else {
            p.fsync().unwrap();
        }
        outstanding_seen |= lock(&pool.journal).blocks_outstanding;
    }
    assert!(outstanding_seen, "no entry carried blocks");
    assert!(
        lock(&pool.journal).folded > 0,
        "the journal filled and was folded at least once"
    );
    drop((a, p));
    let check = |d: &SimDisk, how: &str| {
        let pool = open(d);
        let a = open_auth(&pool, &ha).unwrap_or_else(|e| panic!("{how}: {e}"));
        let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
        for (b, v) in &want {
            assert_eq!(read(&a, *b), block(*v), "{how}: auth block {b}");
        }
        for i in 2..22u8 {
            let b = (i as u64 * 37) % (CHUNKS * 16);
            let latest = (2..22u8)
                .filter(|j| (*j as u64 * 37) % (CHUNKS * 16) == b)
                .max()
                .unwrap();
            assert_eq!(read(&p, b), block(latest), "{how}: plain block {b}");
        }
        let rep = a.verify().unwrap();
        assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{how}: {rep:?}");
    };
    for mode in CrashMode::ALL {
        for seed in 0..2u64 {
            let crashed = disk.after_crash(mode, seed);
            // The syncs a whole replay makes (on a copy).
            let copy = crashed.after_crash(CrashMode::KeepVolatile, 0);
            drop(open(&copy));
            let syncs = copy.sync_count();
            for k in 1..=syncs {
                let d = crashed.after_crash(CrashMode::KeepVolatile, 0);
                d.arm_crash_at_sync(k);
                let r = open_on(Arc::new(SimStorage::new("/pool", d.clone())));
                drop(r);
                after_every_crash(&d, |d2, how| {
                    check(
                        d2,
                        &format!("{mode:?}/{seed}, replay crashed at sync {k}, {how}"),
                    )
                });
            }
        }
    }
}

/// The sim storage with a larger journal: entries with more blocks than 64 KiB fit, and
/// several entries pass between two folds.
#[derive(Debug, Clone)]
struct BigJournal(SimStorage, u64);

impl PoolStorage for BigJournal {
    fn dir(&self) -> &Path {
        self.0.dir()
    }
    fn data(&self, s: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.0.data(s)
    }
    fn alt(&self, s: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.0.alt(s)
    }
    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        self.0.journal()
    }
    fn has_journal(&self) -> bool {
        self.0.has_journal()
    }
    fn journal_capacity(&self) -> u64 {
        self.1
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
    fn metadata_path(&self) -> PathBuf {
        self.0.metadata_path()
    }
}

fn big(disk: &SimDisk) -> Arc<dyn PoolStorage> {
    Arc::new(BigJournal(SimStorage::new("/pool", disk.clone()), 8 << 20))
}

/// A plain block X carried as v1 by an entry, then X = v2 written, then a commit that
/// syncs the data ahead of its take (`PRESYNC_BYTES`, 64 KiB in tests: blocks entries do
/// not sync data, so unsynced bytes pile up): its entry must still carry X = v2 (the
/// presync is no cover), or a replay writes v1 over the acknowledged v2.
#[test]
fn a_presync_between_two_entries_is_no_cover() {
    let disk = SimDisk::new();
    let (pool, ha, hp) = mapped(big(&disk));
    let a = open_auth(&pool, &ha).unwrap();
    let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
    let x = 3 * BS as u64;
    p.write(x, &block(11)).unwrap();
    a.write(0, &block(11)).unwrap();
    a.fsync().unwrap();
    assert!(
        lock(&pool.journal).blocks_outstanding,
        "X = v1 rides in an entry"
    );
    p.write(x, &block(12)).unwrap();
    // Past the presync threshold, well under what an entry carries.
    for b in 0..24u64 {
        p.write((64 + b) * BS as u64, &block(13)).unwrap();
    }
    a.write(BS as u64, &block(12)).unwrap();
    let before = disk.sync_count();
    a.fsync().unwrap();
    assert!(
        disk.sync_count() - before > 1,
        "the presync ran (the data files and the journal were synced)"
    );
    assert!(
        lock(&pool.journal).blocks_outstanding,
        "the second entry carries blocks"
    );
    drop((a, p));
    after_every_crash(&disk, |d, how| {
        let pool = open_on(big(d)).unwrap();
        let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
        assert_eq!(read(&p, 3), block(12), "{how}: the acknowledged v2");
        for b in 0..24u64 {
            assert_eq!(read(&p, 64 + b), block(13), "{how}");
        }
        let a = open_auth(&pool, &ha).unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(read(&a, 0), block(11), "{how}");
        assert_eq!(read(&a, 1), block(12), "{how}");
    });
}

/// One EIO or ENOSPC at each I/O call of an fsync whose entry carries blocks (the
/// read-back of the ranges, the append, its sync), then more writes and an fsync, then a
/// crash of every mode. The second fsync succeeds, unless the fault failed a sync: then it
/// is refused (`storage::latch`). Everything it acknowledged reads back, and nothing older
/// an entry carried lies over it; refused, every block reads a value written to it since
/// the first fsync, and after a restart the pool takes fsyncs again.
#[test]
fn a_fault_at_each_io_of_an_fsync_with_blocks_then_more_fsyncs_and_a_crash() {
    let mut refusals = 0;
    for kind in [FaultKind::Eio, FaultKind::NoSpace] {
        for n in 1.. {
            let disk = SimDisk::new();
            let (pool, ha, hp) = mapped(Arc::new(SimStorage::new("/pool", disk.clone())));
            let a = open_auth(&pool, &ha).unwrap();
            let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
            // An entry with blocks is outstanding.
            p.write(0, &block(2)).unwrap();
            a.write(0, &block(2)).unwrap();
            a.fsync().unwrap();
            p.write(0, &block(3)).unwrap();
            p.write(5 * BS as u64, &block(3)).unwrap();
            a.write(0, &block(3)).unwrap();
            a.write(BS as u64, &block(3)).unwrap();
            let base = disk.op_count();
            disk.fail_at(base + n, kind);
            let first = a.fsync();
            if disk.op_count() < base + n {
                // The fault lies past this fsync's calls: every call was tried.
                assert!(first.is_ok());
                assert!(n > 3, "{kind:?}: the fsync made {} calls", n - 1);
                break;
            }
            disk.clear_faults();
            p.write(0, &block(4)).unwrap();
            p.write(7 * BS as u64, &block(4)).unwrap();
            a.write(2 * BS as u64, &block(4)).unwrap();
            let refused = match a.fsync() {
                Ok(()) => false,
                Err(e)
                    if e.to_string()
                        .contains(crate::volume::storage::latch::REFUSED) =>
                {
                    true
                }
                Err(e) => panic!("{kind:?} at call {n}: the next fsync: {e}"),
            };
            refusals += refused as usize;
            drop((a, p));
            drop(pool);
            after_every_crash(&disk, |d, how| {
                let how = format!("{kind:?} at call {n} ({first:?}), {how}");
                let pool = open(d);
                let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
                let a = open_auth(&pool, &ha).unwrap_or_else(|e| panic!("{how}: {e}"));
                let rep = a.verify().unwrap();
                assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{how}: {rep:?}");
                let (pb, ab) = if refused {
                    (
                        [(0, &[2, 3, 4][..]), (5, &[1, 3]), (7, &[1, 4])],
                        [(0, &[2, 3][..]), (1, &[1, 3]), (2, &[1, 4])],
                    )
                } else {
                    (
                        [(0, &[4][..]), (5, &[3]), (7, &[4])],
                        [(0, &[3][..]), (1, &[3]), (2, &[4])],
                    )
                };
                // Refused, an overwrite not acknowledged may be torn at 512-byte sectors
                // by the crash (each sector old or new).
                for (v, blocks) in [(&p, pb), (&a, ab)] {
                    for (b, allowed) in blocks {
                        let got = read(v, b);
                        let unit = if refused { 512 } else { BS };
                        let ok = got
                            .chunks(unit)
                            .all(|s| uniform(s).is_some_and(|g| allowed.contains(&g)));
                        assert!(
                            ok,
                            "{how}: block {b} reads {:?}.., allowed {allowed:?}",
                            &got[..8]
                        );
                    }
                }
            });
            if refused {
                let disk = disk.restarted();
                let pool = open(&disk);
                let a = open_auth(&pool, &ha).unwrap();
                a.write(3 * BS as u64, &block(5)).unwrap();
                a.fsync().unwrap();
                drop((a, pool));
                after_every_crash(&disk, |d, how| {
                    let a = open_auth(&open(d), &ha).unwrap();
                    assert_eq!(
                        read(&a, 3),
                        block(5),
                        "{kind:?} at call {n}, restarted, {how}"
                    );
                });
            }
        }
    }
    assert!(refusals > 0, "no fault failed a sync");
}

/// A journal file far larger than any journal (damage, or someone else's file) whose first
/// head has the right magic and number and a payload length of 4 GiB: replay must not
/// allocate and read that much to find the checksum does not hold. No entry is ever
/// longer than the journal's capacity.
#[test]
fn a_head_with_an_absurd_length_allocates_nothing_absurd() {
    #[derive(Debug)]
    struct Huge {
        head: Vec<u8>,
        max_read: AtomicU64,
    }
    impl BlockStore for Huge {
        fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
            self.max_read.fetch_max(buf.len() as u64, Ordering::Relaxed);
            if buf.len() > 64 << 20 {
                // Not touched (it would be gigabytes): the read is what the test counts.
                return Err(io::Error::other("a read of gigabytes"));
            }
            buf.fill(0);
            if off == 0 {
                let n = buf.len().min(self.head.len());
                buf[..n].copy_from_slice(&self.head[..n]);
            }
            Ok(())
        }
        fn write_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            Err(io::Error::other("read only"))
        }
        fn punch(&self, _: u64, _: u64) -> io::Result<()> {
            Err(io::Error::other("read only"))
        }
        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }
        fn len(&self) -> io::Result<u64> {
            Ok(8 << 30)
        }
        fn path(&self) -> &Path {
            Path::new("/pool/tags.journal")
        }
    }
    let mut head = vec![0u8; 56];
    head[..8].copy_from_slice(b"CVTAGJ02");
    head[8..16].copy_from_slice(&1u64.to_le_bytes());
    head[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let store = Huge {
        head,
        max_read: AtomicU64::new(0),
    };
    let r = super::journal::replay(&store, 0, 77);
    let max = store.max_read.load(Ordering::Relaxed);
    assert!(
        max <= crate::volume::storage::JOURNAL_CAPACITY,
        "replay read {max} bytes at once ({r:?})"
    );
    assert!(r.unwrap().is_empty(), "no entry there");
}
