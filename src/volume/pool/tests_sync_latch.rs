//! Fail-stop after a failed sync (`storage::latch`). On Linux a sync that fails loses the
//! writeback of what it covered and a retried sync returns Ok without it; the simulated
//! disk does the same. An fsync acknowledged after a failed sync would claim data that a
//! crash then shows was never written.

use std::sync::Arc;

use super::*;
use crate::volume::OpenVolume;
use crate::volume::storage::latch::REFUSED;
use crate::volume::storage::{CrashMode, FailedSync, FaultKind, SimDisk, SimStorage};
use crate::volume::test_support::*;

const BS: usize = 4096;

fn open(disk: &SimDisk) -> Arc<Pool> {
    Arc::new(Pool::open_storage(Arc::new(SimStorage::new("/pool", disk.clone()))).unwrap())
}

fn open_volume(pool: &Arc<Pool>, h: &crate::volume::VolumeHeader, auth: bool) -> OpenVolume {
    if auth {
        open_auth(pool, h).unwrap()
    } else {
        OpenVolume::open(pool.clone(), h, xts()).unwrap()
    }
}

/// A pool on `disk` with one plain volume whose first block was written and synced.
fn a_volume_written_and_synced(disk: &SimDisk) -> (Arc<Pool>, OpenVolume) {
    let pool = open(disk);
    let h = header(16 << SHIFT);
    pool.create_volume(&h).unwrap();
    let v = open_volume(&pool, &h, false);
    v.write(0, &[1; BS]).unwrap();
    v.fsync().unwrap();
    (pool, v)
}

fn read(v: &OpenVolume, off: u64) -> Vec<u8> {
    let mut buf = vec![0u8; BS];
    v.read(off, &mut buf).unwrap();
    buf
}

/// Each sync of an fsync fails in turn (the data file's, the tag journal's on an
/// authenticated volume, the metadata database's), with an overwrite and a new chunk
/// pending; then the fsync is tried again. It must be refused: before the latch it said
/// Ok, and a crash then lost the blocks it had acknowledged.
#[test]
fn an_fsync_after_a_failed_sync_is_refused_not_acknowledged_without_its_data() {
    for auth in [false, true] {
        for k in 1.. {
            let disk = SimDisk::new();
            // The worst case: the failed sync wrote none of what it covered.
            disk.set_failed_sync(FailedSync::WritesNothing);
            let pool = open(&disk);
            let h = if auth {
                auth_header(16 << SHIFT)
            } else {
                header(16 << SHIFT)
            };
            pool.create_volume(&h).unwrap();
            let v = open_volume(&pool, &h, auth);
            v.write(0, &[1; BS]).unwrap();
            v.fsync().unwrap();
            v.write(0, &[2; BS]).unwrap();
            v.write(3 << SHIFT, &[2; BS]).unwrap();
            disk.fail_sync(disk.sync_count() + k, FaultKind::Eio);
            if v.fsync().is_ok() {
                // Past this fsync's syncs: each of them failed once.
                assert!(k > 1, "auth {auth}: the fsync syncs nothing");
                break;
            }
            disk.clear_faults();
            let how = format!("auth {auth}, sync {k} failed");
            let second = v.fsync();
            drop(v);
            drop(pool);
            if let Err(e) = &second {
                assert!(e.to_string().contains(REFUSED), "{how}: {e}");
                continue;
            }
            // Acknowledged: it must hold after a crash (this is what failed before).
            for (i, mode) in CrashMode::ALL.into_iter().enumerate() {
                let d = disk.after_crash(mode, k * 8 + i as u64);
                let pool = open(&d);
                let v = open_volume(&pool, &h, auth);
                assert_eq!(read(&v, 0), [2; BS], "{how}, {mode:?}: the overwrite");
                assert_eq!(
                    read(&v, 3 << SHIFT),
                    [2; BS],
                    "{how}, {mode:?}: the new chunk"
                );
            }
            panic!("{how}: the retried fsync was acknowledged (and its data survived)");
        }
    }
}

/// After a failed sync only durability is refused (`storage::latch`): reads go on, the
/// metadata's included (an authenticated volume reads its slot records from it, and
/// listing or opening volumes does). The fsync whose data sync failed made the pool
/// reopen its database, and a reopen syncs the metadata file (redb marks it in use),
/// which the latch refuses: the database was then gone for good and every metadata
/// read failed.
#[test]
fn metadata_reads_go_on_after_a_failed_sync() {
    let disk = SimDisk::new();
    let (pool, v) = a_volume_written_and_synced(&disk);
    v.write(0, &[2; BS]).unwrap();
    // The next sync is the data file's.
    disk.fail_sync(disk.sync_count() + 1, FaultKind::Eio);
    let e = v.fsync().unwrap_err();
    assert!(e.to_string().contains(REFUSED), "{e}");
    disk.clear_faults();
    assert_eq!(read(&v, 0), [2; BS], "the volume reads what it wrote");
    let listed = pool.list_volumes();
    assert!(
        matches!(&listed, Ok(l) if l.len() == 1),
        "the metadata reads after a failed sync: {listed:?}"
    );
    let e = v.fsync().unwrap_err();
    assert!(e.to_string().contains(REFUSED), "{e}");
}

/// A new data file's directory entry is made durable by a directory sync when the pool
/// creates the file (the data synced into it later is found through that entry). That
/// sync failing is a failed sync of the pool like any other: before, the pool went on
/// and the next fsync (of any volume) was acknowledged, though on Linux a retried
/// directory sync can return Ok without writing the entry, and a crash could then lose
/// the file with every block synced into it.
#[test]
fn a_failed_sync_of_a_new_data_files_entry_is_a_failed_sync_of_the_pool() {
    let disk = SimDisk::new();
    let (pool, v) = a_volume_written_and_synced(&disk);

    // A volume of another chunk size: its blocks go to a data file not created yet.
    let other = header_with_shift(16 << 20, 20);
    let name = crate::volume::storage::data_file_name(20);
    disk.fail_create(&name, FaultKind::Eio);
    pool.create_volume(&other).unwrap();
    let e = OpenVolume::open(pool.clone(), &other, xts()).unwrap_err();
    assert!(e.to_string().contains(&name), "{e}");
    assert!(e.to_string().contains(REFUSED), "{e}");
    // Opened again, the file is there (its entry maybe not on the disk).
    let w = OpenVolume::open(pool.clone(), &other, xts()).unwrap();

    // Nothing is acknowledged from now on, whichever volume asks; reads go on.
    v.write(0, &[2; BS]).unwrap();
    let e = v.fsync().unwrap_err();
    assert!(e.to_string().contains(REFUSED), "{e}");
    assert_eq!(read(&v, 0), [2; BS]);
    let e = w.write(0, &[3; BS]).and_then(|()| w.fsync()).unwrap_err();
    assert!(e.to_string().contains(REFUSED), "{e}");
}
