//! Regression tests for check-then-act races between catalog operations on one volume
//! (`check_then_act_in_the_daemon`) and for copies whose source moved under them
//! (`copy_from_a_moving_source`). Each enters the race window on purpose: the attach or
//! detach under test stops inside it (a barrier in its serve/stop step) while the other
//! operation is started from another thread.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::*;
use crate::aws::Region;
use crate::crypto::xts::Xts;
use crate::snapshot::SnapshotRecord;
use crate::volume::header::KeySource;
use crate::volume::storage::FileStorage;

const SHIFT: u8 = 16;

fn xts() -> Xts {
    let mut k = [0u8; 64];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8 ^ 0x5a;
    }
    Xts::new(&k).unwrap()
}

/// The keys an attach takes, for a volume without integrity (only `xts` is used).
fn keys() -> VolumeKeys {
    VolumeKeys {
        xts: xts(),
        integrity: Arc::new(crate::volume::integrity::IntegrityKeys::from_data_key(
            &SecretBytes::new(vec![7; 64]),
        )),
    }
}

fn setup() -> (tempfile::TempDir, Arc<PoolOwner>, VolumeHeader) {
    let d = tempfile::tempdir().unwrap();
    let pool =
        Arc::new(Pool::open_storage(Arc::new(FileStorage::new(d.path().to_path_buf()))).unwrap());
    let owner = Arc::new(PoolOwner::new(pool, Region::parse("test-1").unwrap()));
    let h = VolumeHeader {
        id: VolumeId::random(),
        lineage: "vol-00000000000000000".into(),
        region: Region::parse("test-1").unwrap(),
        name: String::new(),
        size: 16 << SHIFT,
        chunk_shift: SHIFT,
        created: 0,
        key: KeySource::Customer {
            salt: [0; 16],
            verifier: [0; 32],
        },
        integrity: false,
    };
    owner.create_volume(&h).unwrap();
    (d, owner, h)
}

/// Decrypted content of `len` bytes at 0 of a snapshot, read through a fresh volume
/// restored from it (the restore shares the snapshot's slots).
fn snapshot_bytes(owner: &PoolOwner, h: &VolumeHeader, snap: &str, len: usize) -> Vec<u8> {
    let r = VolumeHeader {
        id: VolumeId::random(),
        ..h.clone()
    };
    owner.restore_volume(snap, &r).unwrap();
    let v = OpenVolume::open(owner.pool.clone(), &r, xts()).unwrap();
    let mut buf = vec![0u8; len];
    v.read(0, &mut buf).unwrap();
    buf
}

/// A snapshot requested while an attach is between opening the volume's map and being
/// registered used to see "not attached", skip the quiesce and the shared marks, and let
/// the attached volume write in place into slots the snapshot shares: the snapshot
/// changed after it was taken.
#[test]
fn check_then_act_in_the_daemon_snapshot_during_attach() {
    let (_d, owner, h) = setup();
    {
        let v = OpenVolume::open(owner.pool.clone(), &h, xts()).unwrap();
        v.write(0, &[b'X'; 4096]).unwrap();
        v.flush().unwrap();
    }
    let in_attach = Arc::new(Barrier::new(2));
    let attacher = {
        let (owner, h, b) = (owner.clone(), h.clone(), in_attach.clone());
        std::thread::spawn(move || {
            owner
                .attach(&h.id, &[], keys(), Rollback::Refuse, |vol| {
                    b.wait();
                    // Give the snapshot every chance to run inside the window.
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(vol)
                })
                .unwrap()
        })
    };
    in_attach.wait();
    let rec = SnapshotRecord::new(&h, "during attach", 1).unwrap();
    owner.create_snapshot(&h.id, &rec).unwrap();
    let vol = attacher.join().unwrap();
    // The attached volume overwrites the block after the snapshot.
    vol.write(0, &[b'Y'; 4096]).unwrap();
    vol.flush().unwrap();
    assert_eq!(
        snapshot_bytes(&owner, &h, rec.id.as_str(), 4096),
        vec![b'X'; 4096],
        "the snapshot must keep what it captured"
    );
    let mut now = vec![0u8; 4096];
    vol.read(0, &mut now).unwrap();
    assert_eq!(now, vec![b'Y'; 4096]);
}

/// A re-attach while a detach was between dropping the volume from the daemon's table
/// and flushing it opened a second map without the first one's unflushed writes.
#[test]
fn check_then_act_in_the_daemon_attach_during_detach() {
    let (_d, owner, h) = setup();
    let vol = owner
        .attach(&h.id, &[], keys(), Rollback::Refuse, Ok)
        .unwrap();
    vol.write(0, &[b'A'; 4096]).unwrap();
    vol.flush().unwrap();
    // Acknowledged but not yet fsynced: the detach's flush makes it durable.
    vol.write(0, &[b'B'; 4096]).unwrap();
    drop(vol);
    let in_detach = Arc::new(Barrier::new(2));
    let detacher = {
        let (owner, h, b) = (owner.clone(), h.clone(), in_detach.clone());
        std::thread::spawn(move || {
            owner
                .detach(&h.id, &[], || {
                    b.wait();
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(())
                })
                .unwrap()
        })
    };
    in_detach.wait();
    let again = owner
        .attach(&h.id, &[], keys(), Rollback::Refuse, Ok)
        .unwrap();
    detacher.join().unwrap();
    let mut got = vec![0u8; 4096];
    again.read(0, &mut got).unwrap();
    assert_eq!(
        got,
        vec![b'B'; 4096],
        "the re-attach sees every acknowledged write"
    );
}

/// A delete requested while an attach was opening the volume found it "not attached" and
/// freed its slots under the new attachment. Now exactly one of the two wins.
#[test]
fn check_then_act_in_the_daemon_delete_during_attach() {
    let (_d, owner, h) = setup();
    let in_attach = Arc::new(Barrier::new(2));
    let attacher = {
        let (owner, h, b) = (owner.clone(), h.clone(), in_attach.clone());
        std::thread::spawn(move || {
            owner.attach(&h.id, &[], keys(), Rollback::Refuse, |vol| {
                b.wait();
                std::thread::sleep(Duration::from_millis(200));
                Ok(vol)
            })
        })
    };
    in_attach.wait();
    let deleted = owner.delete_volume(&h.id);
    let attached = attacher.join().unwrap();
    assert!(attached.is_ok(), "the attach started first and finished");
    assert!(
        matches!(deleted, Err(VolumeError::Attached { .. })),
        "the delete must see the attachment: {deleted:?}"
    );
    assert!(owner.pool.get_volume(&h.id).unwrap().is_some());
}

/// A copy used to read its source's slots from a map captured once, while the source
/// snapshot could be deleted and its slots punched or reused. A lease now keeps it.
#[test]
fn copy_from_a_moving_source_leased_snapshot_cannot_be_deleted() {
    let (_d, owner, h) = setup();
    let rec = SnapshotRecord::new(&h, "", 1).unwrap();
    owner.create_snapshot(&h.id, &rec).unwrap();
    let holder = "test-2/snap-00000000000000abc";
    owner.take_lease(rec.id.as_str(), holder).unwrap();
    let err = owner.delete_snapshot(rec.id.as_str()).unwrap_err();
    assert!(
        matches!(&err, VolumeError::InUse { by, .. } if by.contains(holder)),
        "{err:?}"
    );
    assert!(owner.get_snapshot(rec.id.as_str()).unwrap().is_some());
    owner.release_lease(rec.id.as_str(), holder).unwrap();
    owner.delete_snapshot(rec.id.as_str()).unwrap();
    // A lease on a snapshot that is gone is refused (nothing to protect).
    assert!(matches!(
        owner.take_lease(rec.id.as_str(), holder),
        Err(VolumeError::NotFound { .. })
    ));
}

/// Two runs of one copy at once: the second is refused while the first runs; an abandon
/// cancels a running copy and waits for it instead of racing it.
#[test]
fn copy_from_a_moving_source_one_job_per_copy() {
    let (_d, owner, h) = setup();
    {
        let v = OpenVolume::open(owner.pool.clone(), &h, xts()).unwrap();
        for c in 0..8u64 {
            v.write(c << SHIFT, &[c as u8 + 1; 4096]).unwrap();
        }
        v.flush().unwrap();
    }
    let rec = SnapshotRecord::new(&h, "", 1).unwrap();
    owner.create_snapshot(&h.id, &rec).unwrap();
    // Starts a slow run of the copy into `dest` (recorded first, as `Catalog::begin_copy`
    // does); returns once it is under way.
    let start = |dest: &VolumeHeader| {
        let job = restore_job(&owner, &rec, dest);
        let p = PendingCopy::decode(&crate::aws::b64::decode(&job.pending).unwrap()).unwrap();
        owner.begin_copy(&job.owner, &p).unwrap();
        let started = Arc::new(Barrier::new(2));
        let run = {
            let (owner, started) = (owner.clone(), started.clone());
            std::thread::spawn(move || {
                let once = std::sync::Once::new();
                owner.run_copy(job, &|_| {
                    once.call_once(|| {
                        started.wait();
                    });
                    std::thread::sleep(Duration::from_millis(50));
                    true
                })
            })
        };
        started.wait();
        run
    };
    // A re-run (its command was killed, or it is run twice) takes over: the running one
    // is cancelled, the new one finishes the copy, once.
    let dest = VolumeHeader {
        id: VolumeId::random(),
        ..h.clone()
    };
    let first = start(&dest);
    let second = owner.run_copy(restore_job(&owner, &rec, &dest), &|_| true);
    assert!(second.is_ok(), "{second:?}");
    let first = first.join().unwrap();
    assert!(
        matches!(first, Err(VolumeError::Cancelled { .. })),
        "the run taken over stops: {first:?}"
    );
    assert!(owner.pool.get_volume(&dest.id).unwrap().is_some());
    // An abandon cancels a running copy and waits for it: it never finishes as a volume.
    let dest2 = VolumeHeader {
        id: VolumeId::random(),
        ..h.clone()
    };
    let run = start(&dest2);
    owner.abandon_pending(dest2.id.as_str()).unwrap();
    let run = run.join().unwrap();
    assert!(
        matches!(run, Err(VolumeError::Cancelled { .. })),
        "the abandoned copy stops, it does not finish as a volume: {run:?}"
    );
    assert!(owner.pool.get_volume(&dest2.id).unwrap().is_none());
    assert!(owner.pending().unwrap().is_empty());
    crate::volume::pool::assert_consistent_for_tests(&owner.pool, SHIFT);
}

// ---- attack: findings of the hostile review, each fixed -------------------------------

/// A copy job into `dest` (a rekey restore, like `copy_from_a_moving_source_one_job_per_copy`).
fn restore_job(owner: &PoolOwner, rec: &SnapshotRecord, dest: &VolumeHeader) -> CopyJob {
    let key = crate::aws::b64::encode(&[9u8; 64]);
    CopyJob {
        owner: dest.id.to_string(),
        pending: crate::aws::b64::encode(
            &PendingCopy::Restore {
                source_snapshot: rec.id.to_string(),
                header: crate::aws::b64::encode(&dest.encode()),
            }
            .encode(),
        ),
        source_data_path: owner
            .pool
            .data_file(rec.volume.chunk_shift)
            .unwrap()
            .path()
            .to_path_buf(),
        source_map: owner
            .load_map(rec.id.as_str())
            .unwrap()
            .into_iter()
            .map(|(c, s)| (c, s.0))
            .collect(),
        chunk_shift: rec.volume.chunk_shift,
        source_key: key.clone(),
        dest_key: key,
        max_bandwidth: None,
        source_records: None,
        source_domains: vec![],
        finish_snapshot: None,
        finish_volume: Some(crate::aws::b64::encode(&dest.encode())),
    }
}

fn written_snapshot(owner: &PoolOwner, h: &VolumeHeader, chunks: u64) -> SnapshotRecord {
    let v = OpenVolume::open(owner.pool.clone(), h, xts()).unwrap();
    for c in 0..chunks {
        v.write(c << SHIFT, &[c as u8 + 1; 4096]).unwrap();
    }
    v.flush().unwrap();
    let rec = SnapshotRecord::new(h, "", 1).unwrap();
    owner.create_snapshot(&h.id, &rec).unwrap();
    rec
}

/// `snapshot::transfer::run_copy` releases the source's lease in a step of its own
/// after the copy finished (and takes it in a step of its own before `begin_pending`).
/// A command killed between `finish_pending` and `release_lease` (or between
/// `take_lease` and `begin_pending`) leaves a lease whose holder is no copy in progress:
/// the source snapshot can never be deleted again. The refusal's hint (`snapshot delete
/// <copy id>`) deletes the finished copy instead, `pool check` calls the lease valid and
/// `--repair` keeps it (it drops only leases on snapshots that do not exist).
#[test]
fn attack_lease_left_by_a_copy_killed_after_finish_blocks_the_source_for_good() {
    let (_d, owner, h) = setup();
    let src = written_snapshot(&owner, &h, 3);
    let dest = VolumeHeader {
        id: VolumeId::random(),
        ..h.clone()
    };
    let holder = format!("test-1/{}", dest.id);
    let job = restore_job(&owner, &src, &dest);
    owner
        .begin_copy(
            &job.owner,
            &PendingCopy::decode(&crate::aws::b64::decode(&job.pending).unwrap()).unwrap(),
        )
        .unwrap();
    owner.take_lease(src.id.as_str(), &holder).unwrap();
    owner.run_copy(job, &|_| true).unwrap();
    // The command is killed here: `release_lease` never runs.
    assert!(owner.pool.get_volume(&dest.id).unwrap().is_some());
    assert!(
        owner.pending().unwrap().is_empty(),
        "no copy is in progress"
    );
    // What the user is told to do, then the repair tool.
    let _ = owner.repair_pool();
    let r = owner.delete_snapshot(src.id.as_str());
    assert!(
        r.is_ok(),
        "a lease whose holder is no copy in progress must not block the source forever: {r:?}"
    );
}

/// The owner stores the snapshot record the client built before it took the
/// volume's lock. `snapshot create` racing `volume resize` (grow, then a write past the
/// old end) stores a record with the old size over a map with chunks past that end:
/// `pool check` reports the pool damaged (map rows past the owner's end, not repairable)
/// and a restore of the snapshot cannot reach that data.
#[test]
fn attack_snapshot_racing_resize_stores_a_stale_record() {
    let (_d, owner, h) = setup();
    // `snapshot create`: the CLI reads the header and builds the record ...
    let rec = SnapshotRecord::new(&h, "racing a resize", 1).unwrap();
    // ... meanwhile `volume resize` grows the volume and the attached volume writes there.
    let grown = owner.resize_volume(&h.id, 32 << SHIFT).unwrap();
    {
        let v = OpenVolume::open(owner.pool.clone(), &grown, xts()).unwrap();
        v.write(20 << SHIFT, &[b'Z'; 4096]).unwrap();
        v.flush().unwrap();
    }
    owner.create_snapshot(&h.id, &rec).unwrap();
    let report = owner.check_pool().unwrap();
    assert!(
        report.is_clean(),
        "a snapshot taken after a resize must describe the volume it captured: {report}"
    );
    let stored = owner.get_snapshot(rec.id.as_str()).unwrap().unwrap();
    assert_eq!(stored.volume.size, 32 << SHIFT);
}

/// `abandon_pending` trusts the caller's chunk size (a control-socket field):
/// with the wrong one it drops references of the slots with the same numbers in another
/// chunk size, so another volume's slot is freed and punched (its data is gone) while
/// the copy's own slots leak. (A restore's header and a snapshot record's embedded
/// header are trusted the same way; see the report.)
#[test]
fn attack_abandon_pending_with_a_wrong_chunk_shift_frees_another_volumes_slot() {
    let (_d, owner, h) = setup();
    // Volume B: 1 MiB chunks, one chunk written (slot 0 of chunk size 2^20).
    let b = VolumeHeader {
        id: VolumeId::random(),
        chunk_shift: 20,
        size: 4 << 20,
        ..h.clone()
    };
    owner.create_volume(&b).unwrap();
    {
        let v = OpenVolume::open(owner.pool.clone(), &b, xts()).unwrap();
        v.write(0, &[b'B'; 4096]).unwrap();
        v.flush().unwrap();
    }
    // A copy in progress into a volume of 64 KiB chunks (slot 0 of chunk size 2^16).
    let dest = VolumeHeader {
        id: VolumeId::random(),
        ..h.clone()
    };
    let pending = PendingCopy::Restore {
        source_snapshot: "snap-00000000000000001".into(),
        header: crate::aws::b64::encode(&dest.encode()),
    };
    owner
        .pool
        .begin_pending(dest.id.as_str(), &pending.encode())
        .unwrap();
    let r = owner.pool.reserve(SHIFT).unwrap();
    owner
        .pool
        .remap(SHIFT, dest.id.as_str(), 0, Some(r), None, 0);
    owner.pool.commit().unwrap();
    // A control-socket client names the wrong chunk size.
    // The chunk size now comes from the copy's record, not from the caller.
    let _ = owner.abandon_pending(dest.id.as_str());
    let v = OpenVolume::open(owner.pool.clone(), &b, xts()).unwrap();
    let mut got = vec![0u8; 4096];
    v.read(0, &mut got).unwrap();
    assert_eq!(got, vec![b'B'; 4096], "volume B lost its data");
    let report = owner.check_pool().unwrap();
    assert!(report.is_clean(), "{report}");
}

/// `run_job` re-creates the `pending` row whenever it is missing, so a copy
/// cancelled between a resume's `pending()` lookup and its `run_copy` (`snapshot delete
/// <copy id>` while `snapshot copy` resumes it) starts again from nothing and finishes:
/// the user was told "CopyCancelled", and the cancel released the source's lease that
/// the resume had just taken, so the whole copy ran with no lease on its source (which
/// could be deleted, its slots punched and reused, under the copy).
#[test]
fn attack_copy_cancelled_while_a_resume_starts_is_resurrected_without_a_lease() {
    let (_d, owner, h) = setup();
    let src = written_snapshot(&owner, &h, 4);
    let dest = VolumeHeader {
        id: VolumeId::random(),
        ..h.clone()
    };
    let holder = format!("test-1/{}", dest.id);
    // An earlier run was interrupted: the copy is in progress.
    let job = restore_job(&owner, &src, &dest);
    owner
        .pool
        .begin_pending(
            dest.id.as_str(),
            &crate::aws::b64::decode(&job.pending).unwrap(),
        )
        .unwrap();
    // The resume finds it and takes the lease ...
    owner.take_lease(src.id.as_str(), &holder).unwrap();
    // ... the cancel (`snapshot delete <copy id>`) runs ...
    owner.abandon_pending(dest.id.as_str()).unwrap();
    owner.release_lease(src.id.as_str(), &holder).unwrap();
    // ... and the resume's job reaches the pool owner.
    let r = owner.run_copy(job, &|_| true);
    assert!(
        matches!(r, Err(VolumeError::Cancelled { .. })),
        "a resume of a cancelled copy must not start it over: {r:?}"
    );
    assert!(owner.pool.get_volume(&dest.id).unwrap().is_none());
}

/// `PoolOwner::repair_pool` checks "nothing attached, no copy
/// running" once and then repairs holding nothing that keeps an attach (or a copy) out.
/// A volume in the "attaching" state (its serve step, before it is in `open`) is not
/// seen at all. A write in flight there holds a reserved slot that the repair, which
/// rebuilds the free set from the committed maps and reloads the allocators, hands out
/// again: two chunks of two volumes end up in one slot.
#[test]
fn attack_repair_during_an_attach_hands_a_reserved_slot_out_twice() {
    use crate::volume::OpenVolume;
    use crate::volume::pool::tests::hooked;
    use crate::volume::test_support::{SHIFT, header};
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = tempfile::tempdir().unwrap();
    let st = hooked(d.path());
    let pool = Arc::new(Pool::open_storage(Arc::new(st.clone())).unwrap());
    let owner = Arc::new(PoolOwner::new(
        pool.clone(),
        Region::parse("test-1").unwrap(),
    ));
    let a = header(16 << SHIFT);
    let b = header(16 << SHIFT);
    owner.create_volume(&a).unwrap();
    owner.create_volume(&b).unwrap();
    let in_write = Arc::new(Barrier::new(2));
    let resume = Arc::new(Barrier::new(2));
    let armed = Arc::new(AtomicBool::new(true));
    {
        let (i, r, armed) = (in_write.clone(), resume.clone(), armed.clone());
        st.set(Some(Arc::new(move |what, _off| {
            if what == "write" && armed.swap(false, Ordering::AcqRel) {
                i.wait();
                r.wait();
            }
        })));
    }
    // The attach of A: its first write (the kernel may send one as soon as the mount
    // exists) has a slot reserved and is writing it.
    let attacher = {
        let (owner, a) = (owner.clone(), a.clone());
        std::thread::spawn(move || {
            owner.attach(&a.id, &[], keys(), Rollback::Refuse, |vol| {
                vol.write(0, &[b'A'; 4096])?;
                Ok(vol)
            })
        })
    };
    in_write.wait();
    let repaired = owner.repair_pool();
    // Volume B writes its first chunk.
    let vb = OpenVolume::open(pool.clone(), &b, xts()).unwrap();
    vb.write(0, &[b'B'; 4096]).unwrap();
    resume.wait();
    let va = attacher.join().unwrap().unwrap();
    va.flush().unwrap();
    vb.flush().unwrap();
    let sa = pool.load_map(a.id.as_str()).unwrap();
    let sb = pool.load_map(b.id.as_str()).unwrap();
    assert_ne!(
        sa[0].1, sb[0].1,
        "two volumes share one slot after a repair during an attach (repair said {repaired:?})"
    );
    let mut got = vec![0u8; 4096];
    vb.read(0, &mut got).unwrap();
    assert_eq!(got, vec![b'B'; 4096]);
}

/// Lazy restore through the catalog: a volume restored with remote chunks is hydrated by
/// `hydrate_volume` whether it is detached or attached (through its open volume, next
/// to a reader), and `remote_bytes` follows.
#[test]
fn hydrate_volume_detached_and_attached() {
    use crate::volume::remote::test_fetcher::DirFetcher;
    use crate::volume::remote::{ChunkFetcher, RemoteChunk};
    let (d, plain_owner, _) = setup();
    let store = tempfile::tempdir().unwrap();
    let fetcher = Arc::new(DirFetcher::new(store.path().to_path_buf()));
    let owner = PoolOwner::with_fetcher(
        plain_owner.pool.clone(),
        Region::parse("test-1").unwrap(),
        Some(fetcher.clone() as Arc<dyn ChunkFetcher>),
    );
    drop(plain_owner);
    let chunk = 1usize << SHIFT;
    let rows: Vec<(u64, RemoteChunk)> = (0..12u64)
        .map(|c| {
            let mut b: Vec<u8> = (0..chunk).map(|i| (i as u8) ^ (c as u8) | 1).collect();
            for (i, blk) in b.chunks_mut(4096).enumerate() {
                xts().encrypt_units(c * (chunk as u64 / 4096) + i as u64, blk);
            }
            (c, fetcher.put(&format!("o{c}"), &b))
        })
        .collect();
    let want = |c: u64| -> Vec<u8> { (0..chunk).map(|i| (i as u8) ^ (c as u8) | 1).collect() };
    let mk = || VolumeHeader {
        id: VolumeId::random(),
        size: 12 << SHIFT,
        ..owner.pool.list_volumes().unwrap()[0].clone()
    };
    // Detached.
    let a = mk();
    owner.restore_remote_volume(&a, rows.clone(), None).unwrap();
    assert!(matches!(
        owner.restore_remote_volume(&a, rows.clone(), None),
        Err(VolumeError::InvalidArgument { .. })
    ));
    assert_eq!(owner.remote_bytes(&a.id).unwrap(), 12 << SHIFT);
    let seen = std::sync::atomic::AtomicU64::new(0);
    let n = owner
        .hydrate_volume(&a.id, &|b| {
            seen.fetch_add(b, std::sync::atomic::Ordering::Relaxed);
            true
        })
        .unwrap();
    assert_eq!(n, 12 << SHIFT);
    assert_eq!(seen.into_inner(), 12 << SHIFT);
    assert_eq!(owner.remote_bytes(&a.id).unwrap(), 0);
    // Attached.
    let b = mk();
    owner.restore_remote_volume(&b, rows.clone(), None).unwrap();
    let v = owner
        .attach(&b.id, &[], keys(), Rollback::Refuse, Ok)
        .unwrap();
    let mut got = vec![0u8; chunk];
    v.read(5 << SHIFT, &mut got).unwrap();
    assert_eq!(got, want(5));
    assert_eq!(owner.remote_bytes(&b.id).unwrap(), 11 << SHIFT);
    assert_eq!(owner.hydrate_volume(&b.id, &|_| true).unwrap(), 11 << SHIFT);
    assert_eq!(owner.remote_bytes(&b.id).unwrap(), 0);
    for c in 0..12u64 {
        v.read(c << SHIFT, &mut got).unwrap();
        assert_eq!(got, want(c), "chunk {c}");
    }
    owner.detach(&b.id, &[], || Ok(())).unwrap();
    assert_eq!(fetcher.total_calls(), 24);
    let report = owner.check_pool().unwrap();
    assert!(report.clean, "{report}");
    drop(d);
}
