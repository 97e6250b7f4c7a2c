//! Attacks on the tag journal (`journal.rs`): its error paths and the metadata readers
//! that run beside journaled fsyncs.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::volume::storage::BlockStore;
use crate::volume::test_support::*;

/// A block that says which write put it there.
fn block(seq: u8) -> Vec<u8> {
    vec![seq; 4096]
}

/// The real files, but the journal lies on a nearly full filesystem: a write that would
/// take it past `room` bytes fails with ENOSPC (the data files and the metadata database
/// have room: an overwrite needs no new space).
#[derive(Debug, Clone)]
struct JournalOutOfRoom {
    inner: Arc<dyn PoolStorage>,
    room: u64,
    /// Bytes the journal file holds on the disk (what its writes allocated).
    allocated: Arc<AtomicU64>,
}

#[derive(Debug)]
struct OutOfRoomFile {
    inner: Arc<dyn BlockStore>,
    room: u64,
    allocated: Arc<AtomicU64>,
}

impl PoolStorage for JournalOutOfRoom {
    fn dir(&self) -> &Path {
        self.inner.dir()
    }
    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.inner.data(chunk_shift)
    }
    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.inner.alt(chunk_shift)
    }
    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        Ok(Arc::new(OutOfRoomFile {
            inner: self.inner.journal()?,
            room: self.room,
            allocated: self.allocated.clone(),
        }))
    }
    fn has_journal(&self) -> bool {
        self.inner.has_journal()
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

impl BlockStore for OutOfRoomFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let end = off + buf.len() as u64;
        if end > self.room {
            // What fits is written (and takes the space), then the disk is full.
            if off < self.room {
                let n = (self.room - off) as usize;
                self.inner.write_at(&buf[..n], off)?;
                self.allocated.fetch_max(self.room, Ordering::SeqCst);
            }
            return Err(io::Error::from_raw_os_error(28));
        }
        self.allocated.fetch_max(end, Ordering::SeqCst);
        self.inner.write_at(buf, off)
    }
    fn punch(&self, off: u64, len: u64) -> io::Result<()> {
        // Space from `off` on is given back (the only punch a journal sees is of its tail).
        if off + len >= self.allocated.load(Ordering::SeqCst) {
            self.allocated.fetch_min(off, Ordering::SeqCst);
        }
        self.inner.punch(off, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// Defect: the journal's first lay-out (zeros up to its 32 MiB) failing with ENOSPC made
/// the fsync fail, and, the journal staying "usable", every later fsync of an overwrite
/// tried the lay-out again and failed again, while a fold (a metadata transaction, which
/// needs no new data space for an overwrite) would have made it durable: on a nearly
/// full filesystem an authenticated volume's fsyncs kept returning ENOSPC, and the zeros
/// the lay-out wrote before failing kept the little room left.
#[test]
fn journal_layout_out_of_space_folds_instead_of_failing_every_fsync() {
    let d = tempfile::tempdir().unwrap();
    let allocated = Arc::new(AtomicU64::new(0));
    let storage = JournalOutOfRoom {
        inner: Arc::new(FileStorage::new(d.path().to_path_buf())),
        room: 256 << 10,
        allocated: allocated.clone(),
    };
    let h = auth_header(16 << SHIFT);
    {
        let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        v.write(0, &block(1)).unwrap();
        v.write(4096, &block(1)).unwrap();
        v.flush().unwrap();
        // Overwrites of blocks a commit has seen: their fsync is a journaled commit.
        for seq in 2..6u8 {
            v.write(0, &block(seq)).unwrap();
            v.fsync().unwrap_or_else(|e| {
                panic!("fsync {seq}: {e} (the journal could not be laid out: fold instead)")
            });
        }
        v.write(4096, &block(9)).unwrap();
        v.fsync().unwrap();
        assert!(
            allocated.load(Ordering::SeqCst) == 0,
            "a lay-out that failed keeps {} bytes of a full filesystem",
            allocated.load(Ordering::SeqCst)
        );
    }
    // Acknowledged: after a restart the volume reads the last fsynced blocks.
    let pool = Arc::new(Pool::open_storage(Arc::new(storage)).unwrap());
    let v = open_auth(&pool, &h).unwrap();
    let mut b = vec![0u8; 8192];
    v.read(0, &mut b).unwrap();
    assert_eq!(&b[..4096], block(5).as_slice());
    assert_eq!(&b[4096..], block(9).as_slice());
}

/// Defect: `volume verify` of an attached volume (`Pool::check_root`) folds the journal
/// with a commit, then takes the commit lock to read the root and the anchor; an fsync
/// that lands in between appends the volume's new root to the journal and moves its
/// anchor on, and verify, reading the root from the metadata database only, pairs the
/// older root with the newer anchor: it reports "rolled back" on a volume that is not.
/// (The window is entered on purpose: the fsync runs there, and is waited for a while.)
#[test]
fn verify_during_a_journaled_fsync_reports_no_rollback() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let h = auth_header(16 << SHIFT);
    pool.create_volume(&h).unwrap();
    let v = Arc::new(open_auth(&pool, &h).unwrap());
    v.write(0, &block(1)).unwrap();
    v.flush().unwrap();
    let once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (v, once) = (v.clone(), once.clone());
        *lock(&pool.test_window) = Some(Arc::new(move || {
            if once.swap(true, Ordering::SeqCst) {
                return;
            }
            // Another thread overwrites a block and fsyncs (a journaled commit).
            let (tx, rx) = std::sync::mpsc::channel();
            let v = v.clone();
            std::thread::spawn(move || {
                v.write(0, &block(2)).unwrap();
                tx.send(v.fsync()).unwrap();
            });
            if let Ok(r) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
                r.unwrap();
            }
        }));
    }
    let rep = v.verify().unwrap();
    *lock(&pool.test_window) = None;
    assert!(once.load(Ordering::SeqCst), "the window was entered");
    assert!(
        rep.root_ok && rep.root_problem.is_none() && rep.bad_blocks.is_empty(),
        "verify during an fsync reported a problem that is not there: {rep:?}"
    );
    // The fsync is durable either way; verify again once it is surely done.
    v.fsync().unwrap();
    let rep = v.verify().unwrap();
    assert!(rep.root_ok, "{rep:?}");
}

/// A pool on the simulated disk whose journal holds fsynced overwrites not folded yet
/// (the machine stopped after them): block 0 of an authenticated volume was written with
/// 1, then overwritten and fsynced with 2, 3 and 4, each a journaled commit.
fn journaled_then_crashed() -> (
    crate::volume::storage::SimDisk,
    crate::volume::header::VolumeHeader,
) {
    use crate::volume::storage::{CrashMode, SimDisk, SimStorage};
    let disk = SimDisk::new();
    let h = auth_header(16 << SHIFT);
    let pool =
        Arc::new(Pool::open_storage(Arc::new(SimStorage::new("/pool", disk.clone()))).unwrap());
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    v.write(0, &block(1)).unwrap();
    v.write(4096, &block(1)).unwrap();
    v.flush().unwrap();
    for seq in 2..=4u8 {
        v.write(0, &block(seq)).unwrap();
        v.fsync().unwrap();
    }
    assert!(
        !lock(&pool.state).journaled.is_empty(),
        "the fsyncs went to the journal"
    );
    (disk.after_crash(CrashMode::DropVolatile, 0), h)
}

/// The replay at open crashed at each of its syncs (its own transaction), then the pool
/// opened again: every fsynced write reads back, and nothing else changed.
#[test]
fn a_replay_crashed_at_any_sync_and_run_again_keeps_every_fsynced_write() {
    use crate::volume::storage::{CrashMode, SimStorage};
    let (base, h) = journaled_then_crashed();
    let probe = base.after_crash(CrashMode::DropVolatile, 0);
    drop(Pool::open_storage(Arc::new(SimStorage::new("/pool", probe.clone()))).unwrap());
    let syncs = probe.sync_count();
    assert!(syncs > 0, "the replay syncs");
    for k in 1..=syncs {
        let d = base.after_crash(CrashMode::DropVolatile, 0);
        d.arm_crash_at_sync(k);
        let _ = Pool::open_storage(Arc::new(SimStorage::new("/pool", d.clone())));
        d.crash_now();
        for (i, mode) in CrashMode::ALL.into_iter().enumerate() {
            let after = d.after_crash(mode, k * 7 + i as u64);
            let pool = Arc::new(
                Pool::open_storage(Arc::new(SimStorage::new("/pool", after)))
                    .unwrap_or_else(|e| panic!("crash at replay sync {k}, {mode:?}: open: {e}")),
            );
            let v = open_auth(&pool, &h)
                .unwrap_or_else(|e| panic!("crash at replay sync {k}, {mode:?}: attach: {e}"));
            let mut b = vec![0u8; 8192];
            v.read(0, &mut b)
                .unwrap_or_else(|e| panic!("crash at replay sync {k}, {mode:?}: read: {e}"));
            assert_eq!(
                &b[..4096],
                block(4).as_slice(),
                "crash at replay sync {k}, {mode:?}"
            );
            assert_eq!(
                &b[4096..],
                block(1).as_slice(),
                "crash at replay sync {k}, {mode:?}"
            );
        }
    }
}

/// A tag journal from another pool (a pool directory put together from two, a
/// `tags.journal` copied along with a volume's files): every pool numbers its entries
/// from 1, and nothing in an entry names its pool, so this pool's replay takes the other
/// pool's entry 1 for its own and writes its records over the records of this pool's
/// slots of the same numbers, for good (the fold at open stores them in meta.redb).
/// Found: the volume, untouched, no longer attaches (`Tampered`), and its records are
/// lost. Expected: an entry of another pool is not applied.
#[test]
fn a_journal_from_another_pool_is_not_applied() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |d: &tempfile::TempDir| {
        Arc::new(Pool::open_storage(Arc::new(FileStorage::new(d.path().to_path_buf()))).unwrap())
    };
    let ha = auth_header(16 << SHIFT);
    {
        let pool = open(&a);
        pool.create_volume(&ha).unwrap();
        let v = open_auth(&pool, &ha).unwrap();
        v.write(0, &block(1)).unwrap();
        v.flush().unwrap();
    }
    {
        // Another pool, its own volume, one journaled fsync (not folded: it stops).
        let pool = open(&b);
        let hb = auth_header(16 << SHIFT);
        pool.create_volume(&hb).unwrap();
        let v = open_auth(&pool, &hb).unwrap();
        v.write(0, &block(7)).unwrap();
        v.flush().unwrap();
        v.write(0, &block(8)).unwrap();
        v.fsync().unwrap();
    }
    std::fs::copy(
        b.path().join(crate::volume::storage::JOURNAL_FILE),
        a.path().join(crate::volume::storage::JOURNAL_FILE),
    )
    .unwrap();
    let pool = open(&a);
    let v = open_auth(&pool, &ha)
        .unwrap_or_else(|e| panic!("a volume no one wrote since it was committed: {e}"));
    let mut buf = vec![0u8; 4096];
    v.read(0, &mut buf).unwrap();
    assert_eq!(buf, block(1));
}

/// Snapshot and pending records are volume headers here.
struct HeaderOwners;
impl crate::volume::check::OwnerRecords for HeaderOwners {
    fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)> {
        let h = crate::volume::header::VolumeHeader::decode(record)?;
        Ok((h.chunk_shift, h.size))
    }
    fn pending(&self, record: &[u8]) -> Result<(u8, u64)> {
        self.snapshot(record)
    }
}

/// A hostile entry with a valid checksum and the next number: a record of the wrong
/// length for a slot an authenticated volume maps, a record for a free slot, a root of
/// no volume. The pool opens, the authenticated volume refuses to attach (Tampered), the
/// plain volume reads its data, and `pool check` names the damaged record.
#[test]
fn a_hostile_entry_is_refused_at_attach_and_reported_by_check() {
    let d = tempfile::tempdir().unwrap();
    let storage: Arc<dyn PoolStorage> = Arc::new(FileStorage::new(d.path().to_path_buf()));
    let ha = auth_header(16 << SHIFT);
    let hp = header(16 << SHIFT);
    let (auth_slot, plain_slot) = {
        let pool = Arc::new(Pool::open_storage(storage.clone()).unwrap());
        pool.create_volume(&ha).unwrap();
        pool.create_volume(&hp).unwrap();
        let v = open_auth(&pool, &ha).unwrap();
        v.write(0, &block(1)).unwrap();
        v.flush().unwrap();
        // One journaled fsync: the pool has a journal (and its number).
        v.write(0, &block(2)).unwrap();
        v.fsync().unwrap();
        let p = crate::volume::OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
        p.write(0, &block(3)).unwrap();
        p.flush().unwrap();
        (
            pool.load_map(ha.id.as_str()).unwrap()[0].1,
            pool.load_map(hp.id.as_str()).unwrap()[0].1,
        )
    };
    assert_ne!(auth_slot, plain_slot);
    let mut e = journal::Entry {
        seq: 0,
        generation: Some(5),
        records: vec![
            ((SHIFT, auth_slot.0), vec![1, 2, 3]),
            ((SHIFT, 999), vec![0; 64]),
        ],
        roots: vec![("vol-00000000000000bad".into(), vec![0; 48])],
        data_synced: true,
        blocks: vec![],
    };
    // Written as this pool's (a hostile writer can read its journal number).
    let (folded, pool_no) = {
        let pool = Pool::open_storage(storage.clone()).unwrap();
        let r = pool.db().unwrap().begin_read().unwrap();
        let meta = r.open_table(META).unwrap();
        let get = |k| meta.get(k).unwrap().map(|v| v.value()).unwrap_or(0);
        (get(journal::JOURNAL_FOLDED), get(journal::JOURNAL_POOL))
    };
    let mut j = journal::Journal::new(storage.journal().unwrap(), 32 << 20, folded, pool_no);
    assert_eq!(j.append(&mut e).unwrap(), Some(folded + 1));
    let pool = Arc::new(Pool::open_storage(storage).unwrap());
    match open_auth(&pool, &ha) {
        Err(crate::volume::error::VolumeError::Tampered { .. }) => {}
        Err(e) => panic!("attach refused, but not as tampering: {e}"),
        Ok(_) => panic!("a volume whose record was replaced attached"),
    }
    let p = crate::volume::OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
    let mut b = vec![0u8; 4096];
    p.read(0, &mut b).unwrap();
    assert_eq!(b, block(3));
    let rep = pool.check(&HeaderOwners).unwrap();
    assert!(!rep.clean, "check reports the damaged record: {rep:?}");
}

/// Two authenticated volumes of one pool overwritten and fsynced from two threads each
/// (journaled commits at once), folds from another thread, then the machine stops: every
/// block reads back whole and no older than its last fsync that returned, and both
/// volumes attach and verify clean.
#[test]
fn concurrent_journaled_fsyncs_and_folds_survive_a_crash() {
    use crate::volume::storage::{CrashMode, SimDisk, SimStorage};
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    const BLOCKS: u64 = 32;
    let stamp = |t: u64, b: u64, seq: u64| {
        let mut v = Vec::with_capacity(4096);
        while v.len() < 4096 {
            v.extend_from_slice(&t.to_le_bytes());
            v.extend_from_slice(&b.to_le_bytes());
            v.extend_from_slice(&seq.to_le_bytes());
            v.extend_from_slice(&[0xa5; 8]);
        }
        v
    };
    let disk = SimDisk::new();
    let pool =
        Arc::new(Pool::open_storage(Arc::new(SimStorage::new("/pool", disk.clone()))).unwrap());
    let hs: Vec<_> = (0..2).map(|_| auth_header(4 << SHIFT)).collect();
    let mut vols = vec![];
    for h in &hs {
        pool.create_volume(h).unwrap();
        let v = Arc::new(open_auth(&pool, h).unwrap());
        for b in 0..2 * BLOCKS {
            v.write(b * 4096, &stamp(9, b, 0)).unwrap();
        }
        v.flush().unwrap();
        vols.push(v);
    }
    // (volume, block) → the seq of its last write whose fsync returned.
    let acked: Arc<Mutex<HashMap<(usize, u64), u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = vec![];
    for (vi, v) in vols.iter().enumerate() {
        for t in 0..2u64 {
            let (v, acked, stop) = (v.clone(), acked.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut seq = 1u64;
                while !stop.load(Ordering::Acquire) && seq < 400 {
                    // Each thread its own blocks: t's are t*BLOCKS..(t+1)*BLOCKS.
                    let b = t * BLOCKS + (seq * 7) % BLOCKS;
                    v.write(b * 4096, &stamp(t, b, seq)).unwrap();
                    if seq.is_multiple_of(3) {
                        v.fsync().unwrap();
                        // Everything this thread wrote before is durable now.
                        let mut a = acked.lock().unwrap();
                        for s in (1..=seq).rev().take(BLOCKS as usize) {
                            let bb = t * BLOCKS + (s * 7) % BLOCKS;
                            let e = a.entry((vi, bb)).or_insert(0);
                            *e = (*e).max(s);
                        }
                    }
                    seq += 1;
                }
            }));
        }
    }
    {
        let (pool, stop) = (pool.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                pool.commit().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        }));
    }
    for t in threads.drain(..4) {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        disk.file_names()
            .iter()
            .any(|n| n == crate::volume::storage::JOURNAL_FILE),
        "the fsyncs used the journal"
    );
    for mode in [CrashMode::DropVolatile, CrashMode::KeepRandomSubset] {
        let after = disk.after_crash(mode, 3);
        let pool = Arc::new(Pool::open_storage(Arc::new(SimStorage::new("/pool", after))).unwrap());
        for (vi, h) in hs.iter().enumerate() {
            let v = open_auth(&pool, h).unwrap_or_else(|e| panic!("{mode:?} attach {vi}: {e}"));
            for b in 0..2 * BLOCKS {
                let mut buf = vec![0u8; 4096];
                v.read(b * 4096, &mut buf)
                    .unwrap_or_else(|e| panic!("{mode:?} vol {vi} block {b}: {e}"));
                let seq = u64::from_le_bytes(buf[16..24].try_into().unwrap());
                let t = u64::from_le_bytes(buf[..8].try_into().unwrap());
                let want = if seq == 0 {
                    stamp(9, b, 0)
                } else {
                    stamp(t, b, seq)
                };
                assert_eq!(buf, want, "{mode:?} vol {vi} block {b} is torn or foreign");
                let min = acked.get(&(vi, b)).copied().unwrap_or(0);
                assert!(
                    seq >= min,
                    "{mode:?} vol {vi} block {b}: reads write {seq}, fsync acknowledged {min}"
                );
            }
            let rep = v.verify().unwrap();
            assert!(
                rep.root_ok && rep.bad_blocks.is_empty(),
                "{mode:?}: {rep:?}"
            );
        }
    }
}
