//! The simulated disk's own contract: what reads see, what each crash mode keeps, torn
//! sectors, injected faults, and the pool storage over it.

use super::*;
#[test]
fn reads_past_the_end_punches_and_growth_read_zeros() {
    let disk = SimDisk::new();
    let f = disk.file("f").unwrap();
    assert_eq!(f.len().unwrap(), 0);
    assert_eq!(read(&f, 100, 50), vec![0; 50]);
    f.write_at(&pattern(1, 10_000), 1000).unwrap();
    assert_eq!(f.len().unwrap(), 11_000);
    assert_eq!(read(&f, 0, 1000), vec![0; 1000]);
    assert_eq!(read(&f, 1000, 10_000), pattern(1, 10_000));
    // Straddles the end: the tail reads as zeros.
    let tail = read(&f, 10_000, 3000);
    assert_eq!(&tail[..1000], &pattern(1, 10_000)[9000..]);
    assert_eq!(&tail[1000..], vec![0; 2000]);

    f.punch(2000, 5000).unwrap();
    assert_eq!(f.len().unwrap(), 11_000, "a punch keeps the size");
    assert_eq!(read(&f, 2000, 5000), vec![0; 5000]);
    assert_eq!(read(&f, 1000, 1000), pattern(1, 10_000)[..1000]);
    assert_eq!(read(&f, 7000, 4000), pattern(1, 10_000)[6000..]);

    f.set_len(3000).unwrap();
    f.set_len(20_000).unwrap();
    assert_eq!(f.len().unwrap(), 20_000);
    assert_eq!(read(&f, 1000, 1000), pattern(1, 10_000)[..1000]);
    assert_eq!(
        read(&f, 2000, 18_000),
        vec![0; 18_000],
        "growth reads zeros"
    );
}

#[test]
fn redb_backend_refuses_reads_past_the_end() {
    let disk = SimDisk::new();
    let backend = SimBackend {
        file: disk.file("meta").unwrap(),
        held: AtomicBool::new(false),
    };
    use redb::StorageBackend;
    backend.set_len(4096).unwrap();
    let mut buf = [0xEE; 100];
    backend.read(4000, &mut buf[..96]).unwrap();
    assert_eq!(buf[..96], [0; 96]);
    let err = backend.read(4000, &mut buf).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn synced_data_survives_every_crash_mode() {
    for mode in CrashMode::ALL {
        for seed in 0..8 {
            let disk = SimDisk::new();
            let f = disk.file("f").unwrap();
            f.write_at(&pattern(3, 9000), 100).unwrap();
            f.punch(4096, 4096).unwrap();
            f.sync_data().unwrap();
            let expect = read(&f, 0, 9100);
            // Unsynced changes elsewhere, and one on the same file that a crash may undo.
            f.write_at(&pattern(4, 3000), 20_000).unwrap();
            disk.file("g").unwrap().write_at(&[1; 10], 0).unwrap();
            disk.crash_now();
            let after = disk.after_crash(mode, seed);
            let f = after.file("f").unwrap();
            assert_eq!(read(&f, 0, 9100), expect, "{mode:?} seed {seed}");
            assert!(f.len().unwrap() >= 9100);
        }
    }
}

#[test]
fn unsynced_data_is_lost_or_kept_by_mode() {
    let disk = SimDisk::new();
    let f = disk.file("f").unwrap();
    f.write_at(&[1; 5000], 0).unwrap();
    f.sync_data().unwrap();
    f.write_at(&[2; 100], 200).unwrap();
    f.punch(4096, 904).unwrap();
    f.set_len(8192).unwrap();
    let h = disk.file("h").unwrap();
    h.write_at(&[3; 10], 0).unwrap();
    let live = read(&f, 0, 8192);
    disk.crash_now();
    assert!(is_os_error(f.read_at(&mut [0; 1], 0), libc::EIO));

    let dropped = disk.after_crash(CrashMode::DropVolatile, 0);
    let f2 = dropped.file("f").unwrap();
    assert_eq!(f2.len().unwrap(), 5000);
    assert_eq!(read(&f2, 0, 5000), vec![1; 5000]);
    let h2 = dropped.file("h").unwrap();
    assert_eq!(
        h2.len().unwrap(),
        0,
        "a file never synced exists but is empty"
    );

    let kept = disk.after_crash(CrashMode::KeepVolatile, 0);
    let f3 = kept.file("f").unwrap();
    assert_eq!(f3.len().unwrap(), 8192);
    assert_eq!(read(&f3, 0, 8192), live);
    assert_eq!(read(&kept.file("h").unwrap(), 0, 10), vec![3; 10]);

    // The random modes produce both outcomes for some seeds.
    let outcomes: BTreeSet<u64> = (0..32)
        .map(|seed| {
            let d = disk.after_crash(CrashMode::KeepRandomSubset, seed);
            d.file("h").unwrap().len().unwrap()
        })
        .collect();
    assert_eq!(outcomes, BTreeSet::from([0, 10]));
}

#[test]
fn torn_writes_keep_old_or_new_per_sector() {
    let old = pattern(10, 20_000);
    let new = pattern(99, 9000);
    let off = 300; // not sector-aligned: the first and last pieces are partial sectors
    let mut seen_mixed = false;
    for seed in 0..64 {
        let disk = SimDisk::new();
        let f = disk.file("f").unwrap();
        f.write_at(&old, 0).unwrap();
        f.sync_data().unwrap();
        f.write_at(&new, off).unwrap();
        disk.crash_now();
        let after = disk.after_crash(CrashMode::TornWrites, seed);
        let got = read(&after.file("f").unwrap(), 0, old.len());
        let mut expect_new = old.clone();
        expect_new[off as usize..off as usize + new.len()].copy_from_slice(&new);
        let (mut olds, mut news) = (0, 0);
        for sector in 0..old.len().div_ceil(SECTOR as usize) {
            let r = sector * SECTOR as usize..((sector + 1) * SECTOR as usize).min(old.len());
            let is_old = got[r.clone()] == old[r.clone()];
            let is_new = got[r.clone()] == expect_new[r.clone()];
            assert!(is_old || is_new, "seed {seed}: sector {sector} is neither");
            if !is_new {
                olds += 1;
            } else if !is_old {
                news += 1;
            }
        }
        seen_mixed |= olds > 0 && news > 0;
    }
    assert!(seen_mixed, "no seed tore the write");
}

#[test]
fn torn_write_past_the_end_extends_with_zeros() {
    for seed in 0..16 {
        let disk = SimDisk::new();
        let f = disk.file("f").unwrap();
        f.write_at(&[7; 2000], 0).unwrap();
        disk.crash_now();
        let after = disk.after_crash(CrashMode::TornWrites, seed);
        let f = after.file("f").unwrap();
        let len = f.len().unwrap();
        assert!(len == 0 || len == 2000);
        for chunk in read(&f, 0, len as usize).chunks(SECTOR as usize) {
            assert!(chunk.iter().all(|&b| b == 7) || chunk.iter().all(|&b| b == 0));
        }
    }
}

#[test]
fn fail_at_fails_exactly_that_call_and_applies_nothing() {
    for kind in [FaultKind::Eio, FaultKind::NoSpace] {
        let code = match kind {
            FaultKind::Eio => libc::EIO,
            FaultKind::NoSpace => libc::ENOSPC,
        };
        let disk = SimDisk::new();
        disk.set_failed_sync(FailedSync::WritesNothing);
        let f = disk.file("f").unwrap();
        f.write_at(&[1; 100], 0).unwrap();
        assert_eq!(disk.op_count(), 1);
        disk.fail_at(3, kind);
        f.write_at(&[2; 100], 0).unwrap(); // op 2
        assert!(is_os_error(f.write_at(&[3; 200], 50), code)); // op 3
        assert_eq!(disk.op_count(), 3);
        assert_eq!(
            f.len().unwrap(),
            100,
            "the failed write did not extend the file"
        );
        assert_eq!(read(&f, 0, 100), vec![2; 100]); // op 4
        // Once only.
        f.write_at(&[4; 10], 0).unwrap();
        // A failed punch, set_len and sync apply nothing either.
        let next = disk.op_count() + 1;
        disk.fail_at(next, kind);
        disk.fail_at(next + 1, kind);
        disk.fail_at(next + 2, kind);
        assert!(is_os_error(f.punch(0, 100), code));
        assert!(is_os_error(f.set_len(0), code));
        assert!(is_os_error(f.sync_data(), code));
        assert_eq!(disk.sync_count(), 0);
        assert_eq!(f.durable_len(), 0, "the failed sync made nothing durable");
        assert_eq!(read(&f, 0, 12), [vec![4; 10], vec![2; 2]].concat());
        // Linux: the failed sync's writes are no longer pending, so this one says Ok
        // without them (see `a_sync_after_a_failed_one_does_not_write_what_it_lost`).
        f.sync_data().unwrap();
        assert_eq!(f.durable_len(), 0);

        let next = disk.op_count() + 1;
        disk.fail_from(next + 1, kind);
        f.write_at(&[5; 1], 0).unwrap();
        for _ in 0..3 {
            assert!(is_os_error(f.read_at(&mut [0; 1], 0), code));
            assert!(is_os_error(f.sync_data(), code));
        }
        disk.clear_faults();
        assert_eq!(read(&f, 0, 2), vec![5, 4]);
    }
}

/// Linux after a failed `fdatasync` ("fsyncgate"): the writes it did not make durable
/// stay readable but are no longer dirty, so a later sync returns Ok without writing them;
/// writes made after the failure are synced as usual; dropping the page cache, or a crash
/// in any mode, shows the disk without the lost writes.
#[test]
fn a_sync_after_a_failed_one_does_not_write_what_it_lost() {
    let disk = SimDisk::new();
    disk.set_failed_sync(FailedSync::WritesNothing);
    let f = disk.file("f").unwrap();
    f.write_at(&[1; 8192], 0).unwrap();
    f.sync_data().unwrap();
    f.write_at(&[2; 4096], 0).unwrap();
    disk.fail_at(disk.op_count() + 1, FaultKind::Eio);
    assert!(is_os_error(f.sync_data(), libc::EIO));
    assert_eq!(read(&f, 0, 4096), vec![2; 4096], "the cache still holds it");
    f.write_at(&[3; 4096], 4096).unwrap();
    f.sync_data().unwrap();
    for mode in CrashMode::ALL {
        let after = disk.after_crash(mode, 5).file("f").unwrap();
        assert_eq!(
            read(&after, 0, 4096),
            vec![1; 4096],
            "{mode:?}: the lost write"
        );
        assert_eq!(
            read(&after, 4096, 4096),
            vec![3; 4096],
            "{mode:?}: the later one"
        );
    }
    assert_eq!(read(&f, 0, 4096), vec![2; 4096]);
    disk.drop_cache();
    assert_eq!(read(&f, 0, 4096), vec![1; 4096], "read from the disk");
    assert_eq!(read(&f, 4096, 4096), vec![3; 4096]);
    // A pending write survives the cache drop (a dirty page is not dropped).
    f.write_at(&[4; 10], 0).unwrap();
    disk.drop_cache();
    assert_eq!(read(&f, 0, 11), [vec![4; 10], vec![1]].concat());
    // A restart keeps the cache, pending writes included.
    let again = disk.restarted().file("f").unwrap();
    assert_eq!(read(&again, 0, 11), [vec![4; 10], vec![1]].concat());
}

/// By default a failed sync wrote some of what it covered: each write whole or not at
/// all, the same in every crash mode, and a later sync writes none of the others.
#[test]
fn a_failed_sync_writes_some_of_what_it_covered() {
    let disk = SimDisk::new();
    let f = disk.file("f").unwrap();
    for i in 0..64u64 {
        f.write_at(&[i as u8 + 1; 4096], i * 4096).unwrap();
    }
    disk.fail_sync(1, FaultKind::Eio);
    assert!(is_os_error(f.sync_data(), libc::EIO));
    f.sync_data().unwrap();
    let landed = |d: &SimDisk| -> Vec<bool> {
        let g = d.file("f").unwrap();
        (0..64u64)
            .map(|i| {
                let got = read(&g, i * 4096, 4096);
                assert!(
                    got == [i as u8 + 1; 4096] || got == [0; 4096],
                    "write {i} torn"
                );
                got[0] != 0
            })
            .collect()
    };
    let first = landed(&disk.after_crash(CrashMode::DropVolatile, 1));
    assert!(
        first.iter().any(|l| *l) && !first.iter().all(|l| *l),
        "{first:?}"
    );
    for mode in CrashMode::ALL {
        assert_eq!(landed(&disk.after_crash(mode, 9)), first, "{mode:?}");
    }
}

#[test]
fn crash_at_sync_freezes_before_that_sync() {
    let disk = SimDisk::new();
    disk.arm_crash_at_sync(2);
    let f = disk.file("f").unwrap();
    let g = disk.file("g").unwrap();
    f.write_at(&[1; 10], 0).unwrap();
    f.sync_data().unwrap();
    g.write_at(&[2; 10], 0).unwrap();
    assert!(is_os_error(g.sync_data(), libc::EIO));
    assert!(disk.is_crashed());
    assert_eq!(disk.sync_count(), 2);
    assert!(is_os_error(f.write_at(&[3; 10], 0), libc::EIO));
    assert!(is_os_error(f.sync_data(), libc::EIO));
    assert!(is_os_error(f.len().map(drop), libc::EIO));
    assert!(is_os_error(disk.file("new").map(drop), libc::EIO));
    assert_eq!(
        disk.sync_count(),
        2,
        "calls on a dead machine are not counted"
    );
    let after = disk.after_crash(CrashMode::DropVolatile, 0);
    assert_eq!(read(&after.file("f").unwrap(), 0, 10), vec![1; 10]);
    assert_eq!(after.file("g").unwrap().len().unwrap(), 0);
    assert!(!after.is_crashed());
    after.file("g").unwrap().sync_data().unwrap();
    assert_eq!(after.sync_count(), 1);
}

#[test]
fn storage_data_files_and_direct_writes() {
    let storage = SimStorage::new(DIR, SimDisk::new());
    let d = storage.data(12).unwrap();
    assert_eq!(d.path(), Path::new(DIR).join(data_file_name(12)));
    d.write_direct(&[9; 8192], 4096).unwrap();
    assert!(matches!(
        d.write_direct(&[9; 100], 4096),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput
    ));
    let again = storage.data(12).unwrap();
    let mut buf = [0; 4];
    again.read_at(&mut buf, 4096).unwrap();
    assert_eq!(buf, [9; 4]);
    assert_eq!(
        storage.disk.file_names(),
        vec![data_file_name(12)],
        "no metadata file before open_metadata"
    );
}

#[test]
fn second_metadata_open_is_refused_until_the_first_is_dropped() {
    let storage = SimStorage::new(DIR, SimDisk::new());
    let db = storage.open_metadata(&SyncLatch::default()).unwrap();
    let other = SimStorage::new(DIR, storage.disk.clone());
    assert!(matches!(
        other.open_metadata(&SyncLatch::default()),
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
    ));
    drop(db);
    let db = other.open_metadata(&SyncLatch::default()).unwrap();
    drop(db);
    // A database on a crashed machine still releases on drop; the disk after the crash
    // has nothing open.
    let db = storage.open_metadata(&SyncLatch::default()).unwrap();
    storage.disk.crash_now();
    let after = SimStorage::new(DIR, storage.disk.after_crash(CrashMode::KeepVolatile, 0));
    drop(after.open_metadata(&SyncLatch::default()).unwrap());
    drop(db);
    assert!(storage.disk.lock().held.is_empty());
}
