//! Lazy restore: volumes whose chunks live in an object store (here a directory behind
//! `DirFetcher`), fetched on first read. Reads, one fetch per chunk, damaged objects,
//! writes and discards into remote chunks, snapshots and restores, hydrate, and crashes at
//! every sync point of a fetch and of a hydrate on the simulated disk.

use std::sync::Arc;

use super::*;
use crate::volume::check::OwnerRecords;
use crate::volume::header::VolumeHeader;
use crate::volume::ids::SnapshotId;
use crate::volume::remote::test_fetcher::DirFetcher;
use crate::volume::remote::{ChunkFetcher, RemoteChunk};
use crate::volume::storage::sim::{CrashMode, SimDisk, SimStorage};
use crate::volume::test_support::*;

const CHUNK: u64 = 1 << SHIFT;
const BLOCKS: u64 = CHUNK / BLOCK_SIZE;
const DIR: &str = "/sim/pool";

/// Snapshot records are volume headers here (the volume layer's tests do not use the
/// snapshot layer).
struct HeaderOwners;
impl OwnerRecords for HeaderOwners {
    fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)> {
        let h = VolumeHeader::decode(record)?;
        Ok((h.chunk_shift, h.size))
    }
    fn pending(&self, record: &[u8]) -> Result<(u8, u64)> {
        self.snapshot(record)
    }
}

/// The plaintext of chunk `c` (never all zeros in a block, except block 3 of even
/// chunks: a hole in the archived chunk).
fn plain(c: u64) -> Vec<u8> {
    let mut p: Vec<u8> = (0..CHUNK)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(c as u8) | 1)
        .collect();
    if c.is_multiple_of(2) {
        p[3 * BS..4 * BS].fill(0);
    }
    p
}

/// Chunk `c`'s ciphertext as the pool holds it: same key, tweaks = block numbers; holes
/// are zeros.
fn cipher(c: u64) -> Vec<u8> {
    let mut b = plain(c);
    for (i, blk) in b.chunks_mut(BS).enumerate() {
        if blk.iter().any(|&x| x != 0) {
            xts().encrypt_units(c * BLOCKS + i as u64, blk);
        }
    }
    b
}

/// A store with chunks `remote` of a volume of `chunks` chunks; the others unwritten.
struct Lazy {
    _d: tempfile::TempDir,
    fetcher: Arc<DirFetcher>,
    h: VolumeHeader,
    rows: Vec<(u64, RemoteChunk)>,
}

fn lazy(chunks: u64, remote: impl Iterator<Item = u64>) -> Lazy {
    let d = tempfile::tempdir().unwrap();
    let fetcher = Arc::new(DirFetcher::new(d.path().to_path_buf()));
    let rows = remote
        .map(|c| (c, fetcher.put(&format!("chunk-{c}"), &cipher(c))))
        .collect();
    Lazy {
        _d: d,
        fetcher,
        h: header(chunks * CHUNK),
        rows,
    }
}

/// What the volume reads: remote chunks their plaintext, the others zeros.
fn expected(l: &Lazy) -> Vec<u8> {
    let mut want = vec![0u8; l.h.size as usize];
    for (c, _) in &l.rows {
        let o = (*c * CHUNK) as usize;
        want[o..o + CHUNK as usize].copy_from_slice(&plain(*c));
    }
    want
}

fn sim_pool(disk: &SimDisk, fetcher: &Arc<DirFetcher>) -> Arc<Pool> {
    let pool = Pool::open_storage(Arc::new(SimStorage::new(DIR, disk.clone()))).unwrap();
    pool.set_fetcher(Some(fetcher.clone() as Arc<dyn ChunkFetcher>));
    Arc::new(pool)
}

/// A pool on a fresh simulated disk with the lazy volume restored in it.
fn restored(l: &Lazy) -> (SimDisk, Arc<Pool>) {
    let disk = SimDisk::new();
    let pool = sim_pool(&disk, &l.fetcher);
    pool.restore_remote_volume(&l.h, &l.rows).unwrap();
    (disk, pool)
}

fn read_all(v: &OpenVolume) -> Vec<u8> {
    let mut buf = vec![0u8; v.size() as usize];
    v.read(0, &mut buf).unwrap();
    buf
}

fn assert_clean(pool: &Pool) {
    pool.commit().unwrap();
    let report = pool.check(&HeaderOwners).unwrap();
    assert!(report.clean, "{report:?}");
}

#[test]
fn a_lazy_read_returns_the_plaintext_and_fetches_each_chunk_once() {
    let l = lazy(8, [0, 1, 2, 4, 5, 7].into_iter());
    let (_disk, pool) = restored(&l);
    assert_eq!(pool.remote_bytes(l.h.id.as_str()).unwrap(), 6 * CHUNK);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    // Unaligned reads across chunk borders first, then everything twice.
    let mut b = vec![0u8; 5000];
    v.read(CHUNK - 100, &mut b).unwrap();
    assert_eq!(
        b,
        expected(&l)[(CHUNK - 100) as usize..(CHUNK + 4900) as usize]
    );
    assert_eq!(read_all(&v), expected(&l));
    assert_eq!(read_all(&v), expected(&l));
    for (c, rc) in &l.rows {
        assert_eq!(l.fetcher.calls(&rc.object), 1, "chunk {c}");
    }
    assert_eq!(v.remote_bytes(), 0);
    v.flush().unwrap();
    assert_eq!(pool.remote_bytes(l.h.id.as_str()).unwrap(), 0);
    assert_eq!(pool.load_map(l.h.id.as_str()).unwrap().len(), 6);
    assert_clean(&pool);
    // Reopened: local now, no more fetches.
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    assert_eq!(read_all(&v), expected(&l));
    assert_eq!(l.fetcher.total_calls(), 6);
}

#[test]
fn concurrent_readers_of_a_remote_chunk_fetch_it_once() {
    let mut l = lazy(2, [0, 1].into_iter());
    Arc::get_mut(&mut l.fetcher).unwrap().delay = std::time::Duration::from_millis(100);
    let (_disk, pool) = restored(&l);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    let want = expected(&l);
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (v, want) = (&v, &want);
            s.spawn(move || {
                let off = CHUNK + (t % BLOCKS) * BLOCK_SIZE;
                let mut b = vec![0u8; BS];
                v.read(off, &mut b).unwrap();
                assert_eq!(b, want[off as usize..off as usize + BS]);
            });
        }
    });
    assert_eq!(l.fetcher.calls("chunk-1"), 1);
    assert_eq!(l.fetcher.calls("chunk-0"), 0);
    assert_clean(&pool);
}

#[test]
fn a_damaged_short_or_missing_object_is_an_error_never_data() {
    let l = lazy(4, [0, 1, 2, 3].into_iter());
    let (_disk, pool) = restored(&l);
    // Chunk 0: one byte changed; chunk 1: short; chunk 2: gone.
    let mut bad = cipher(0);
    bad[100] ^= 1;
    std::fs::write(l.fetcher.dir.join("chunk-0"), &bad).unwrap();
    std::fs::write(l.fetcher.dir.join("chunk-1"), &cipher(1)[..1000]).unwrap();
    std::fs::remove_file(l.fetcher.dir.join("chunk-2")).unwrap();
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    for c in 0..3u64 {
        let mut b = vec![0xEEu8; BS];
        let e = v.read(c * CHUNK, &mut b).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.errno(), libc::EIO, "{msg}");
        assert!(
            msg.contains(&format!("chunk {c} of {}", l.h.id))
                && msg.contains(&format!("chunk-{c}")),
            "{msg}"
        );
        if c < 2 {
            assert!(msg.contains("damaged or was changed"), "{msg}");
        }
        assert!(b.iter().all(|&x| x == 0xEE), "chunk {c}: data returned");
        // A write into it fails the same way and changes nothing.
        assert!(v.write(c * CHUNK + 10, b"x").is_err());
    }
    // The good chunk still reads; the bad ones stay remote, nothing leaked.
    let mut b = vec![0u8; CHUNK as usize];
    v.read(3 * CHUNK, &mut b).unwrap();
    assert_eq!(b, plain(3));
    v.flush().unwrap();
    assert_eq!(pool.remote_bytes(l.h.id.as_str()).unwrap(), 3 * CHUNK);
    assert_clean(&pool);
}

#[test]
fn without_a_fetcher_a_remote_chunk_says_how_to_configure_the_store() {
    let l = lazy(2, [1].into_iter());
    let (_disk, pool) = restored(&l);
    pool.set_fetcher(None);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    let mut b = vec![0u8; BS];
    v.read(0, &mut b).unwrap();
    let e = v.read(CHUNK, &mut b).unwrap_err();
    assert_eq!(e.errno(), libc::EIO);
    assert_eq!(
        e.to_string(),
        format!(
            "volume {} has chunks in the object store but region test-1 has no snapshot store configured (cryptvol region set-snapshot-store ...)",
            l.h.id
        )
    );
}

#[test]
fn writes_into_remote_chunks_keep_the_rest_and_whole_chunk_writes_and_discards_fetch_nothing() {
    let l = lazy(6, 0..6);
    let (_disk, pool) = restored(&l);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    let mut want = expected(&l);
    // Partial writes (unaligned, inside a block and across two) fetch the chunk first.
    for (off, len) in [(10u64, 5usize), (CHUNK + BLOCK_SIZE - 7, 20)] {
        let data = vec![0x5Au8; len];
        v.write(off, &data).unwrap();
        want[off as usize..off as usize + len].copy_from_slice(&data);
    }
    // A whole-chunk write and a whole-chunk discard: no fetch.
    let full = vec![0xA5u8; CHUNK as usize];
    v.write(2 * CHUNK, &full).unwrap();
    want[2 * CHUNK as usize..3 * CHUNK as usize].copy_from_slice(&full);
    v.discard(3 * CHUNK, CHUNK).unwrap();
    want[3 * CHUNK as usize..4 * CHUNK as usize].fill(0);
    // A partial discard fetches.
    v.discard(4 * CHUNK + 100, 3 * BLOCK_SIZE).unwrap();
    want[(4 * CHUNK + 100) as usize..(4 * CHUNK + 100 + 3 * BLOCK_SIZE) as usize].fill(0);
    assert_eq!(l.fetcher.calls("chunk-2") + l.fetcher.calls("chunk-3"), 0);
    assert_eq!(l.fetcher.calls("chunk-0"), 1);
    assert_eq!(l.fetcher.calls("chunk-4"), 1);
    v.flush().unwrap();
    assert_eq!(
        pool.remote_bytes(l.h.id.as_str()).unwrap(),
        CHUNK,
        "chunk 5 only"
    );
    assert_clean(&pool);
    assert_eq!(read_all(&v), want);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    assert_eq!(read_all(&v), want);
}

#[test]
fn snapshots_and_restores_of_a_partly_remote_volume_share_the_remote_rows() {
    let l = lazy(6, 0..6);
    let (_disk, pool) = restored(&l);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    let mut want = expected(&l);
    let mut b = vec![0u8; BS];
    v.read(0, &mut b).unwrap();
    v.write(CHUNK + 5, b"written").unwrap();
    want[(CHUNK + 5) as usize..(CHUNK + 12) as usize].copy_from_slice(b"written");
    let _quiet = v.quiesce();
    let snap = SnapshotId::random();
    pool.create_snapshot(&l.h, &snap, &l.h.encode()).unwrap();
    drop(_quiet);
    v.mark_all_shared();
    assert_eq!(pool.load_remote(snap.as_str()).unwrap().len(), 4);
    let calls = l.fetcher.total_calls();
    // The volume goes on: its later reads and writes do not change the snapshot.
    v.write(2 * CHUNK, b"after").unwrap();
    let mut r = header(l.h.size);
    r.id = crate::volume::VolumeId::random();
    pool.restore_volume(&snap, &r).unwrap();
    assert_eq!(pool.load_remote(r.id.as_str()).unwrap().len(), 4);
    drop(v);
    pool.commit().unwrap();
    pool.delete_volume(&l.h).unwrap();
    assert!(pool.load_remote(l.h.id.as_str()).unwrap().is_empty());
    let rv = OpenVolume::open(pool.clone(), &r, xts()).unwrap();
    assert_eq!(read_all(&rv), want);
    assert_eq!(
        l.fetcher.total_calls(),
        calls + 1 + 4,
        "the write after fetched chunk 2 into the volume; the restore its 4 remote chunks"
    );
    drop(rv);
    pool.commit().unwrap();
    pool.delete_snapshot(&snap, SHIFT).unwrap();
    assert!(pool.load_remote(snap.as_str()).unwrap().is_empty());
    assert_clean(&pool);
}

#[test]
fn hydrate_attached_or_detached_leaves_no_remote_bytes() {
    let l = lazy(20, 0..20);
    let (_disk, pool) = restored(&l);
    // Detached: in batches, each committed.
    let mut first = true;
    loop {
        let (n, more) = pool.hydrate_detached(&l.h, 8, &|_| true).unwrap();
        if first {
            assert_eq!(n, 8 * CHUNK);
            assert_eq!(pool.remote_bytes(l.h.id.as_str()).unwrap(), 12 * CHUNK);
            first = false;
            // The rest through the open volume, alongside a reader.
            let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
            let mut b = vec![0u8; BS];
            v.read(19 * CHUNK, &mut b).unwrap();
            let mut total = 0;
            loop {
                let (n, more) = v.hydrate(5, &|_| true).unwrap();
                total += n;
                if !more {
                    break;
                }
            }
            assert_eq!(total, 11 * CHUNK);
            assert_eq!(v.remote_bytes(), 0);
            assert_eq!(read_all(&v), expected(&l));
            continue;
        }
        assert_eq!((n, more), (0, false));
        break;
    }
    assert_eq!(pool.remote_bytes(l.h.id.as_str()).unwrap(), 0);
    assert_eq!(l.fetcher.total_calls(), 20);
    assert_clean(&pool);
}

/// Crashes at every sync point of `run` (a lazy read, a hydrate), in every crash mode:
/// afterwards every chunk reads its data, local or remote, and `pool check` is clean.
fn crash_everywhere(name: &str, run: impl Fn(&Arc<Pool>, &Lazy)) {
    let l = lazy(6, [0, 1, 2, 4, 5].into_iter());
    let (template, pool) = restored(&l);
    drop(pool);
    let fresh = || template.after_crash(CrashMode::KeepVolatile, 0);
    // How many syncs the run makes.
    let probe = fresh();
    let s0 = probe.sync_count();
    run(&sim_pool(&probe, &l.fetcher), &l);
    let syncs = probe.sync_count() - s0;
    assert!(syncs > 0, "{name}: nothing synced");
    for n in 1..=syncs {
        for mode in CrashMode::ALL {
            let disk = fresh();
            let pool = sim_pool(&disk, &l.fetcher);
            disk.arm_crash_at_sync(disk.sync_count() + n);
            run(&pool, &l);
            drop(pool);
            let after = disk.after_crash(mode, n);
            let pool = sim_pool(&after, &l.fetcher);
            let remote = pool.load_remote(l.h.id.as_str()).unwrap();
            let local = pool.load_map(l.h.id.as_str()).unwrap();
            assert_eq!(remote.len() + local.len(), 5, "{name} sync {n} {mode:?}");
            assert!(
                remote
                    .iter()
                    .all(|(c, _)| local.iter().all(|(m, _)| m != c))
            );
            assert_clean(&pool);
            let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
            assert_eq!(read_all(&v), expected(&l), "{name} sync {n} {mode:?}");
            drop(v);
            assert_clean(&pool);
        }
    }
}

#[test]
fn a_crash_during_a_lazy_fetch_leaves_each_chunk_remote_or_local() {
    crash_everywhere("lazy read", |pool, l| {
        // Errors once the machine is dead are expected: the crash is the point.
        if let Ok(v) = OpenVolume::open(pool.clone(), &l.h, xts()) {
            let mut b = vec![0u8; 3 * CHUNK as usize];
            let _ = v.read(0, &mut b);
            let _ = v.flush();
            let _ = v.read(3 * CHUNK, &mut b);
            let _ = v.flush();
        }
    });
}

#[test]
fn a_crash_during_a_hydrate_leaves_each_chunk_remote_or_local() {
    crash_everywhere("hydrate", |pool, l| {
        while let Ok((_, true)) = pool.hydrate_detached(&l.h, 2, &|_| true) {}
    });
}

/// A plain volume's remote row that carries a slot record (a row an authenticated volume's
/// restore would have) is refused before anything is fetched, whether a read of the
/// attached volume or a hydrate of the detached one fetches it.
#[test]
fn a_plain_volumes_row_with_a_record_is_refused_by_both_fetch_paths() {
    let l = lazy(2, 0..2);
    let (_disk, pool) = restored(&l);
    // Restore refuses such rows; someone who can write the pool puts them there.
    let record = crate::volume::integrity::SlotRecord::holes(0, (CHUNK / BLOCK_SIZE) as usize);
    pool.rewrite_metadata(|w| {
        let mut t = w.open_table(crate::volume::tables::REMOTE)?;
        for (c, rc) in &l.rows {
            let mut rc = rc.clone();
            rc.record = Some(record.encode());
            t.insert((l.h.id.as_str(), *c), rc.encode().as_slice())?;
        }
        Ok(())
    })
    .unwrap();
    let err = pool.hydrate_detached(&l.h, 8, &|_| true).unwrap_err();
    assert!(
        matches!(&err, VolumeError::Tampered { detail, .. } if detail.contains("has a slot record")),
        "{err}"
    );
    assert_eq!(pool.remote_bytes(l.h.id.as_str()).unwrap(), 2 * CHUNK);
    let v = OpenVolume::open(pool.clone(), &l.h, xts()).unwrap();
    let mut b = vec![0u8; BS];
    let err = v.read(0, &mut b).unwrap_err();
    assert!(matches!(err, VolumeError::Tampered { .. }), "{err}");
    assert_eq!(v.remote_bytes(), 2 * CHUNK, "nothing fetched");
}
