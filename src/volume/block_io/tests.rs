//! Block I/O against a model and on real pools: random I/O, crashes, copy-on-write of
//! shared chunks, slot reuse, no plaintext in the pool file, out-of-range requests.

use super::*;
use crate::datadir::RegionDir;
use crate::volume::header::VolumeHeader;
use crate::volume::test_support::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open(r: &RegionDir, h: &VolumeHeader) -> (Arc<Pool>, OpenVolume) {
    let pool = Arc::new(Pool::open(r).unwrap());
    if pool.get_volume(&h.id).unwrap().is_none() {
        pool.create_volume(h).unwrap();
    }
    let v = OpenVolume::open(pool.clone(), h, xts()).unwrap();
    (pool, v)
}

/// Random aligned and unaligned writes, reads and discards against an in-memory model.
#[test]
fn random_io_matches_a_model() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    // 48 chunks of 64 KiB: random I/O crosses block and chunk borders often.
    let size = 3 << 20;
    let h = header_with_shift(size, 16);
    let (_pool, v) = open(&r, &h);
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for step in 0..3000 {
        let off = rng.below(size);
        let len = (rng.below(3 * 4096) + 1).min(size - off);
        match rng.below(10) {
            0..=4 => {
                let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                v.write(off, &data).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            5 => {
                v.discard(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            _ => {
                let mut buf = vec![0xAAu8; len as usize];
                v.read(off, &mut buf).unwrap();
                assert_eq!(
                    buf,
                    &model[off as usize..(off + len) as usize],
                    "step {step}"
                );
            }
        }
    }
    let mut all = vec![0u8; size as usize];
    v.read(0, &mut all).unwrap();
    assert_eq!(all, model);
}

#[test]
fn committed_state_survives_a_crash_and_uncommitted_metadata_does_not_leak() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = header_with_shift(8 << 20, 20);
    let a = vec![0x11u8; 1 << 20];
    let slot = {
        let (pool, v) = open(&r, &h);
        v.write(0, &a).unwrap();
        v.flush().unwrap();
        let slot = pool.load_map(h.id.as_str()).unwrap()[0].1;
        // Written but never committed: a new chunk, and an overwrite in place of an
        // already written block of chunk 0 (a whole block, and part of another).
        v.write(2 << 20, &[0x22u8; 8192]).unwrap();
        v.write(4096, &[0x33u8; 4096]).unwrap();
        v.write(3 * 4096 + 100, &[0x44u8; 10]).unwrap();
        assert_eq!(v.entry(0).unwrap().slot, slot, "not written in place");
        slot
        // Dropped without flush: the "crash".
    };
    let (pool, v) = open(&r, &h);
    let mut buf = vec![0u8; 1 << 20];
    v.read(0, &mut buf).unwrap();
    // The overwrite in place needs no metadata: it went to the chunk's own slot, which
    // the committed map still names, so it reads back (the page cache kept it; after a
    // power cut an unsynced block may read old or new). Every other byte of the chunk
    // is the fsynced data: the read-modify-write of the partial block kept its edges.
    let mut want = a.clone();
    want[4096..8192].fill(0x33);
    want[3 * 4096 + 100..3 * 4096 + 110].fill(0x44);
    assert!(
        buf == want,
        "chunk 0 after the crash is not the fsynced data plus the overwrite"
    );
    let mut b = vec![1u8; 8192];
    v.read(2 << 20, &mut b).unwrap();
    assert!(
        b.iter().all(|&x| x == 0),
        "the uncommitted chunk is not mapped"
    );
    let map = pool.load_map(h.id.as_str()).unwrap();
    assert_eq!(map.len(), 1);
    assert_eq!(map[0].1, slot, "chunk 0 moved");
}

#[test]
fn shared_chunks_are_copied_before_a_write() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = header_with_shift(4 << 20, 20);
    let (pool, v) = open(&r, &h);
    let old = vec![0x33u8; 1 << 20];
    v.write(0, &old).unwrap();
    v.flush().unwrap();
    let before = pool.load_map(h.id.as_str()).unwrap();
    pool.create_snapshot(
        &h,
        &"snap-00000000000000001".to_string().try_into().unwrap(),
        b"record",
    )
    .unwrap();
    v.mark_all_shared();
    v.write(4096, &[0x44u8; 100]).unwrap();
    v.flush().unwrap();
    let after = pool.load_map(h.id.as_str()).unwrap();
    assert_ne!(before[0].1, after[0].1, "the write went to a new slot");
    // The old slot still holds the old ciphertext, and still decrypts to the old data.
    let df = pool.data_file(20).unwrap();
    let mut raw = vec![0u8; 4096];
    df.read_at(&mut raw, df.slot_offset(before[0].1) + 4096)
        .unwrap();
    let mut plain = raw.clone();
    // This header's lineage is another volume's: it writes in its own tweak domain.
    let domain = crate::volume::integrity::domain_of(&h);
    assert_ne!(domain, 0);
    xts().decrypt_units_at(crate::volume::integrity::tweak(domain, 1), &mut plain);
    assert_eq!(plain, vec![0x33u8; 4096]);
    assert_eq!(pool.refcount(20, before[0].1).unwrap(), 1, "the snapshot's");
    assert_eq!(pool.refcount(20, after[0].1).unwrap(), 1);
    let mut got = vec![0u8; 8192];
    v.read(0, &mut got).unwrap();
    assert_eq!(&got[..4096], &old[..4096]);
    assert_eq!(&got[4096..4196], &[0x44u8; 100][..]);
    assert_eq!(&got[4196..], &old[4196..8192]);
}

#[test]
fn freed_slots_are_reused_only_after_commit_and_read_as_zeros() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = header_with_shift(4 << 20, 20);
    let (pool, v) = open(&r, &h);
    v.write(0, &[7u8; 4096]).unwrap();
    v.flush().unwrap();
    let first = pool.load_map(h.id.as_str()).unwrap()[0].1;
    v.discard(0, 1 << 20).unwrap();
    // Not committed yet: a new chunk must not get the slot that was just freed.
    v.write(1 << 20, &[8u8; 4096]).unwrap();
    let second = v.entry(1).unwrap().slot;
    assert_ne!(first, second);
    v.flush().unwrap();
    // Now it is free for reuse, and reads as zeros where not written.
    v.write(2 << 20, &[9u8; 10]).unwrap();
    assert_eq!(v.entry(2).unwrap().slot, first);
    let mut rest = vec![1u8; 4096];
    v.read((2 << 20) + 4096, &mut rest).unwrap();
    assert!(rest.iter().all(|&x| x == 0));
}

#[test]
fn plaintext_never_reaches_the_pool_file() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = header_with_shift(2 << 20, 20);
    let (pool, v) = open(&r, &h);
    let marker = b"CRYPTVOL-PLAINTEXT-MARKER-0123456789";
    let data: Vec<u8> = marker.iter().cycle().take(1 << 20).copied().collect();
    v.write(0, &data).unwrap();
    v.flush().unwrap();
    let raw = std::fs::read(pool.data_file(20).unwrap().path()).unwrap();
    assert!(!raw.windows(marker.len()).any(|w| w == marker));
    assert!(!is_zero(&raw[..4096]));
}

#[test]
fn out_of_range_is_an_error_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = header_with_shift(1 << 20, 20);
    let (_pool, v) = open(&r, &h);
    assert!(matches!(
        v.write((1 << 20) - 1, &[0, 0]),
        Err(VolumeError::OutOfRange { .. })
    ));
    assert!(matches!(
        v.read(u64::MAX - 1, &mut [0; 4]),
        Err(VolumeError::OutOfRange { .. })
    ));
}

/// `write_consuming` (the ring's write: whole blocks encrypted in the caller's buffer) gives
/// the same volume as `write`, on a plain and on an authenticated volume, for aligned and
/// unaligned pieces across chunk borders, with commits between (so that authenticated
/// blocks move between their halves); every tag checks afterwards.
#[test]
fn a_consuming_write_leaves_what_a_copying_write_leaves() {
    for authenticated in [false, true] {
        let d = tempfile::tempdir().unwrap();
        let r = region(&d);
        let size = 2 << 20;
        let (h1, h2) = if authenticated {
            (auth_header(size), auth_header(size))
        } else {
            (header_with_shift(size, 16), header_with_shift(size, 16))
        };
        let pool = Arc::new(Pool::open(&r).unwrap());
        pool.create_volume(&h1).unwrap();
        pool.create_volume(&h2).unwrap();
        let (copying, consuming) = if authenticated {
            (
                open_auth(&pool, &h1).unwrap(),
                open_auth(&pool, &h2).unwrap(),
            )
        } else {
            (
                OpenVolume::open(pool.clone(), &h1, xts()).unwrap(),
                OpenVolume::open(pool.clone(), &h2, xts()).unwrap(),
            )
        };
        let mut model = vec![0u8; size as usize];
        let mut rng = Rng(0xC0FFEE ^ authenticated as u64);
        for step in 0..600 {
            let aligned = rng.below(3) > 0;
            let (off, len) = if aligned {
                let b = rng.below(size / 4096);
                (b * 4096, (rng.below(40) + 1).min(size / 4096 - b) * 4096)
            } else {
                let off = rng.below(size);
                (off, (rng.below(3 * 4096) + 1).min(size - off))
            };
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            copying.write(off, &data).unwrap();
            let mut scratch = data.clone();
            consuming.write_consuming(off, &mut scratch).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
            if step % 50 == 0 {
                pool.commit().unwrap();
            }
        }
        for v in [&copying, &consuming] {
            let mut all = vec![0u8; size as usize];
            v.read(0, &mut all).unwrap();
            assert!(
                all == model,
                "authenticated {authenticated}: contents differ"
            );
            if authenticated {
                assert!(v.verify().unwrap().bad_blocks.is_empty());
            }
        }
    }
}
