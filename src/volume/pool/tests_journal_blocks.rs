//! Journal entries that carry the blocks written since the journal last covered the data
//! files (`journal.rs`, `commit_to_journal` in `alloc.rs`): what an fsync syncs, and what
//! a crash keeps.

use std::sync::Arc;

use super::*;
use crate::volume::OpenVolume;
use crate::volume::header::VolumeHeader;
use crate::volume::storage::{CrashMode, SimDisk, SimStorage};
use crate::volume::test_support::*;

const BS: usize = 4096;

fn block(seq: u8) -> Vec<u8> {
    vec![seq; BS]
}

fn open(disk: &SimDisk) -> Arc<Pool> {
    Arc::new(Pool::open_storage(Arc::new(SimStorage::new("/pool", disk.clone()))).unwrap())
}

/// A pool with an authenticated volume and a plain one, each with blocks 0..4 written
/// (`1`) and committed.
fn two_volumes(disk: &SimDisk) -> (Arc<Pool>, VolumeHeader, VolumeHeader) {
    let pool = open(disk);
    let ha = auth_header(32 << SHIFT);
    let hp = header(32 << SHIFT);
    pool.create_volume(&ha).unwrap();
    pool.create_volume(&hp).unwrap();
    // Open until the commit: it keeps the root of the open authenticated volumes.
    let open = [
        open_auth(&pool, &ha).unwrap(),
        OpenVolume::open(pool.clone(), &hp, xts()).unwrap(),
    ];
    for v in &open {
        v.write(0, &[1u8; 4 * BS]).unwrap();
    }
    pool.commit().unwrap();
    drop(open);
    (pool, ha, hp)
}

fn read(v: &OpenVolume, block_no: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS];
    v.read(block_no * BS as u64, &mut b).unwrap();
    b
}

/// Every crash mode on a copy of `disk` as it is now: `check` gets the reopened pool.
fn after_every_crash(disk: &SimDisk, check: impl Fn(&Arc<Pool>, &str)) {
    for (i, mode) in CrashMode::ALL.into_iter().enumerate() {
        for seed in 0..4 {
            let pool = open(&disk.after_crash(mode, seed * 11 + i as u64));
            check(&pool, &format!("{mode:?} seed {seed}"));
        }
    }
}

/// The cost the journal was made for: an fsync of an authenticated volume that overwrote
/// a few blocks synced the data file, the second-halves file and then the journal (three
/// device flushes where a plain volume pays one). Now it syncs the journal only, and the
/// blocks ride in the entry; a crash that loses everything unsynced keeps them.
#[test]
fn a_small_fsync_of_an_authenticated_volume_syncs_the_journal_only() {
    let disk = SimDisk::new();
    let (pool, ha, _) = two_volumes(&disk);
    let v = open_auth(&pool, &ha).unwrap();
    // Into the other halves (first writes after the commit), then in place.
    v.write(0, &block(2)).unwrap();
    v.write(2 * BS as u64, &block(2)).unwrap();
    v.fsync().unwrap();
    v.write(0, &block(3)).unwrap();
    v.write(BS as u64, &block(3)).unwrap();
    let before = disk.sync_count();
    v.fsync().unwrap();
    assert_eq!(disk.sync_count() - before, 1, "one sync: the journal's");
    drop(v);
    after_every_crash(&disk, |pool, how| {
        let v = open_auth(pool, &ha).unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(read(&v, 0), block(3), "{how}");
        assert_eq!(read(&v, 1), block(3), "{how}");
        assert_eq!(read(&v, 2), block(2), "{how}");
        assert_eq!(read(&v, 3), block(1), "{how}");
        let rep = v.verify().unwrap();
        assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{how}: {rep:?}");
    });
}

/// An entry carries every range written since the last cover, a plain volume's too. A
/// plain volume's next fsync would need only a data sync, but a replay would then write
/// the entry's older copy of its block over the newer one that sync made durable: while
/// an entry with blocks is outstanding, that fsync goes through the journal too.
#[test]
fn a_replay_never_writes_an_older_block_over_a_plain_fsync() {
    let disk = SimDisk::new();
    let (pool, ha, hp) = two_volumes(&disk);
    let a = open_auth(&pool, &ha).unwrap();
    let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
    p.write(0, &block(2)).unwrap();
    a.write(0, &block(2)).unwrap();
    // The entry carries both volumes' blocks (the plain one's `2`).
    a.fsync().unwrap();
    p.write(0, &block(3)).unwrap();
    p.fsync().unwrap();
    drop((a, p));
    after_every_crash(&disk, |pool, how| {
        let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
        assert_eq!(read(&p, 0), block(3), "{how}: the acknowledged write");
        let a = open_auth(pool, &ha).unwrap();
        assert_eq!(read(&a, 0), block(2), "{how}");
    });
}

/// Fsyncs with more written than an entry carries sync the data files and say so in their
/// entry; the entries with blocks before such a one are not replayed (their blocks are on
/// disk, and newer writes may lie over them).
#[test]
fn a_large_fsync_syncs_the_data_and_ends_the_replay_of_earlier_blocks() {
    let disk = SimDisk::new();
    let (pool, ha, hp) = two_volumes(&disk);
    let a = open_auth(&pool, &ha).unwrap();
    let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
    // Every chunk of the plain volume mapped and committed: its overwrites below are
    // journalable (no map changes).
    let big = vec![7u8; 32 << SHIFT];
    p.write(0, &big).unwrap();
    pool.commit().unwrap();
    p.write(0, &block(2)).unwrap();
    a.write(0, &block(2)).unwrap();
    a.fsync().unwrap();
    assert!(
        lock(&pool.journal).blocks_outstanding,
        "the first entry carries blocks"
    );
    // Past what a file keeps track of: the next fsync syncs the data files.
    let past = super::data::WRITTEN_BYTES_MAX as usize + BS;
    p.write(BS as u64, &big[..past]).unwrap();
    p.write(0, &block(3)).unwrap();
    a.write(BS as u64, &block(3)).unwrap();
    a.fsync().unwrap();
    assert!(
        !lock(&pool.journal).blocks_outstanding,
        "the second entry followed a data sync"
    );
    drop((a, p));
    after_every_crash(&disk, |pool, how| {
        let p = OpenVolume::open(pool.clone(), &hp, xts()).unwrap();
        assert_eq!(read(&p, 0), block(3), "{how}");
        let a = open_auth(pool, &ha).unwrap();
        assert_eq!(read(&a, 0), block(2), "{how}");
        assert_eq!(read(&a, 1), block(3), "{how}");
    });
}

/// A punch (a discard of an authenticated volume's blocks) since the last cover rides in
/// the entry as a hole and reads as zeros after a crash.
#[test]
fn a_discard_rides_in_the_entry_as_a_hole() {
    let disk = SimDisk::new();
    let (pool, ha, _) = two_volumes(&disk);
    let a = open_auth(&pool, &ha).unwrap();
    a.write(0, &block(2)).unwrap();
    a.fsync().unwrap();
    a.discard(0, 2 * BS as u64).unwrap();
    a.write(2 * BS as u64, &block(4)).unwrap();
    a.fsync().unwrap();
    drop(a);
    after_every_crash(&disk, |pool, how| {
        let a = open_auth(pool, &ha).unwrap_or_else(|e| panic!("{how}: {e}"));
        assert_eq!(read(&a, 0), vec![0u8; BS], "{how}");
        assert_eq!(read(&a, 1), vec![0u8; BS], "{how}");
        assert_eq!(read(&a, 2), block(4), "{how}");
        let rep = a.verify().unwrap();
        assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{how}: {rep:?}");
    });
}
