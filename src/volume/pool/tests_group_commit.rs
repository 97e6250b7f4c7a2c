//! Group commit: fsyncs that queued behind a commit in flight are answered by the one
//! commit after it, even while other writes keep the data files dirty.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};

use super::tests::hooked;
use super::*;
use crate::volume::OpenVolume;
use crate::volume::test_support::*;

/// A pool on hooked storage (`tests::hooked`) with one plain volume open.
fn hooked_volume() -> (
    tempfile::TempDir,
    super::tests::Hooked,
    crate::volume::VolumeHeader,
    Arc<Pool>,
    Arc<OpenVolume>,
) {
    let d = tempfile::tempdir().unwrap();
    let storage = hooked(d.path());
    let h = header(64 << SHIFT);
    let pool = Arc::new(Pool::open_storage(Arc::new(storage.clone())).unwrap());
    pool.create_volume(&h).unwrap();
    let v = Arc::new(OpenVolume::open(pool.clone(), &h, xts()).unwrap());
    (d, storage, h, pool, v)
}

/// The volume of `h` in the pool on `storage`, opened again (as after a restart).
fn reopened(storage: super::tests::Hooked, h: &crate::volume::VolumeHeader) -> OpenVolume {
    let pool = Arc::new(Pool::open_storage(Arc::new(storage)).unwrap());
    OpenVolume::open(pool, h, xts()).unwrap()
}

/// The first block of chunk `c` of `v` is all `want`.
fn assert_chunk(v: &OpenVolume, c: u64, want: u8, what: &str) {
    let mut got = vec![0u8; 4096];
    v.read(c << SHIFT, &mut got).unwrap();
    assert!(got.iter().all(|b| *b == want), "chunk {c}: {what}");
}

/// Commit X is stopped inside its data sync; three callers write and ask for an fsync
/// meanwhile (they started in the epoch after X's take). The first of them to get the
/// commit lock commits Y, and during Y's sync another write lands, so the files are dirty
/// again when the other two get the lock: they must not sync again, since Y's take came
/// after all their writes. Before group commit each found the files dirty and synced: 3
/// syncs of the data file instead of 2. Every write is there after a reopen.
#[test]
fn fsyncs_waiting_behind_a_commit_are_answered_by_the_next_one() {
    let (_d, storage, h, pool, v) = hooked_volume();
    for c in 0..8u64 {
        v.write(c << SHIFT, &[9u8; 4096]).unwrap();
    }
    v.flush().unwrap();

    let syncs = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let late_writer = v.clone();
    {
        let syncs = syncs.clone();
        storage.set(Some(Arc::new(move |what, _| {
            if what != "sync" {
                return;
            }
            match syncs.fetch_add(1, Ordering::SeqCst) {
                // X: wait until the three callers have written and are waiting.
                0 => {
                    entered_tx.send(()).unwrap();
                    release_rx.lock().unwrap().recv().unwrap();
                }
                // Y: another writer dirties the data file again.
                1 => late_writer.write(7 << SHIFT, &[7u8; 4096]).unwrap(),
                _ => {}
            }
        })));
    }
    v.write(0, &[1u8; 4096]).unwrap();
    let x = {
        let p = pool.clone();
        std::thread::spawn(move || p.sync())
    };
    entered_rx.recv().unwrap();
    // X has taken: these writes and fsyncs all come after its take.
    let started = pool.epoch();
    let waiters: Vec<_> = (1..4u64)
        .map(|c| {
            v.write(c << SHIFT, &[c as u8; 4096]).unwrap();
            let p = pool.clone();
            std::thread::spawn(move || p.sync_since(started))
        })
        .collect();
    release_tx.send(()).unwrap();
    x.join().unwrap().unwrap();
    for w in waiters {
        w.join().unwrap().unwrap();
    }
    assert_eq!(
        syncs.load(Ordering::SeqCst),
        2,
        "X and one commit for the three waiting fsyncs"
    );
    storage.set(None);
    pool.sync().unwrap();
    drop(v);
    drop(pool);
    let v = reopened(storage, &h);
    for (c, want) in [(0u64, 1u8), (1, 1), (2, 2), (3, 3), (7, 7)] {
        assert_chunk(&v, c, want, "after a reopen");
    }
}

/// A commit that failed answers nobody: an fsync waiting behind it commits itself.
#[test]
fn an_fsync_waiting_behind_a_failed_commit_still_syncs() {
    let (_d, storage, _h, pool, v) = hooked_volume();
    v.write(0, &[1u8; 4096]).unwrap();
    v.flush().unwrap();
    let syncs = Arc::new(AtomicUsize::new(0));
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    {
        let syncs = syncs.clone();
        storage.set(Some(Arc::new(move |what, _| {
            if what == "sync" && syncs.fetch_add(1, Ordering::SeqCst) == 0 {
                entered_tx.send(()).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
                // X's sync fails (the hook cannot fail it directly: it panics instead,
                // which the commit's caller sees as a failed commit).
                panic!("simulated failure of X's data sync");
            }
        })));
    }
    v.write(0, &[2u8; 4096]).unwrap();
    let x = {
        let p = pool.clone();
        std::thread::spawn(move || p.sync())
    };
    entered_rx.recv().unwrap();
    let started = pool.epoch();
    v.write(1 << SHIFT, &[3u8; 4096]).unwrap();
    let w = {
        let p = pool.clone();
        std::thread::spawn(move || p.sync_since(started))
    };
    release_tx.send(()).unwrap();
    assert!(x.join().is_err(), "X failed");
    w.join().unwrap().unwrap();
    assert_eq!(syncs.load(Ordering::SeqCst), 2, "the waiter synced itself");
}

/// A commit that panics in its data sync (the stand-in for a failed commit in the test
/// above; the FUSE ring's dispatcher catches the panic and the daemon serves on) must put
/// back what it took, as a failed commit does. It dropped the changes it had taken: the
/// new mapping of chunk 5 was in no later commit, so a later fsync succeeded and the chunk
/// read zeros after a reopen (and the data file's "written since sync" flag, cleared
/// before the panicking sync, let the later commit skip the data sync too).
#[test]
fn a_commit_that_panics_in_its_data_sync_loses_none_of_what_it_took() {
    let (_d, storage, h, pool, v) = hooked_volume();
    v.write(0, &[1u8; 4096]).unwrap();
    v.flush().unwrap();
    // A fresh mapping, pending.
    v.write(5 << SHIFT, &[5u8; 4096]).unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    {
        let fired = fired.clone();
        storage.set(Some(Arc::new(move |what, _| {
            if what == "sync" && fired.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("simulated failure of the data sync");
            }
        })));
    }
    let x = {
        let p = pool.clone();
        std::thread::spawn(move || p.sync())
    };
    assert!(x.join().is_err(), "the commit failed");
    assert!(
        pool.data_file(SHIFT).unwrap().is_dirty(),
        "the data file is still unsynced"
    );
    storage.set(None);
    // Another caller's fsync, later: it must commit chunk 5's mapping too.
    pool.sync().unwrap();
    drop(v);
    drop(pool);
    let v = reopened(storage, &h);
    assert_chunk(&v, 5, 5, "lost");
}
