//! Attacks on authenticated volumes at the block layer: races between writers, commits,
//! snapshots and `verify`; crashes between a commit and its anchor; hostile slot records,
//! root rows and anchor files; discards; clones written in the same blocks as their source.
//! Every pool is a real region pool (redb and data files on disk, anchors in the region).

use std::sync::atomic::AtomicBool;

use super::*;
use crate::datadir::RegionDir;
use crate::volume::header::VolumeHeader;
use crate::volume::ids::SnapshotId;
use crate::volume::integrity::{MAC_LEN, RECORD_HEAD};
use crate::volume::tables::{ROOTS, SLOT_AUTH};
use crate::volume::test_support::*;
use redb::ReadableTable;

fn new_pool(r: &RegionDir) -> Arc<Pool> {
    Arc::new(Pool::open(r).unwrap())
}

/// A 4 KiB block that says which block it is and which write put it there.
fn block_of(block: u64, seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(BS);
    while b.len() < BS {
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
    }
    b
}

/// The write number a block holds: 0 for zeros; panics on a torn or foreign block.
fn seq_of(block: u64, b: &[u8]) -> u64 {
    if b.iter().all(|&x| x == 0) {
        return 0;
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().unwrap());
    assert_eq!(b, block_of(block, seq).as_slice(), "block {block} is torn");
    seq
}

fn assert_clean(v: &OpenVolume, what: &str) {
    let rep = v.verify().unwrap();
    assert!(
        rep.root_ok && rep.bad_blocks.is_empty(),
        "{what}: verify found {rep:?}"
    );
}

/// Takes a snapshot the way the daemon's owner does: writers held out, commit, share.
fn snapshot(pool: &Pool, h: &VolumeHeader, v: &OpenVolume) -> SnapshotId {
    let id = SnapshotId::random();
    let _quiet = v.quiesce();
    pool.create_snapshot(h, &id, b"snapshot record").unwrap();
    v.mark_all_shared();
    id
}

/// A volume restored from `snap` of `src` (same data key, its own id and domain).
fn restore(pool: &Pool, src: &VolumeHeader, snap: &SnapshotId) -> VolumeHeader {
    let mut h = auth_header(src.size);
    h.lineage = src.lineage.clone();
    pool.restore_volume(snap, &h).unwrap();
    h
}

/// `volume verify` of an attached volume while another thread writes and fsyncs it: the
/// volume is never rolled back and no block is bad, so every verify must say so.
#[test]
fn verify_while_written_and_fsynced_reports_no_problem() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = new_pool(&r);
    let h = auth_header(64 << 20);
    pool.create_volume(&h).unwrap();
    let v = Arc::new(open_auth(&pool, &h).unwrap());
    // Many mapped chunks: verify's read of the map takes a while.
    for c in 0..512u64 {
        v.write(c * (1 << SHIFT), &block_of(c * 16, 1)).unwrap();
    }
    v.flush().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (v, stop) = (v.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 2;
            while !stop.load(Ordering::Acquire) {
                let block = (seq * 7919) % (512 * 16);
                v.write(block * 4096, &block_of(block, seq)).unwrap();
                v.flush().unwrap();
                seq += 1;
            }
        })
    };
    let mut problems = vec![];
    for i in 0..60 {
        let rep = v.verify().unwrap();
        if !rep.root_ok || !rep.bad_blocks.is_empty() {
            problems.push(format!("verify {i}: {rep:?}"));
        }
    }
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    assert!(
        problems.is_empty(),
        "verify of a volume being written reported problems that are not there:\n{}",
        problems.join("\n")
    );
}

/// Snapshots taken while threads write: every snapshot restored as a volume, and the
/// source, verify clean and read only whole blocks; reopening each (a new attach)
/// passes the root and anchor checks.
#[test]
fn snapshots_taken_during_writes_restore_and_verify_clean() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = new_pool(&r);
    let size = 8u64 << 20;
    let h = auth_header(size);
    pool.create_volume(&h).unwrap();
    let v = Arc::new(open_auth(&pool, &h).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let (v, stop) = (v.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 1 + t;
                let blocks = size / 4096;
                while !stop.load(Ordering::Acquire) {
                    let block = (seq.wrapping_mul(2654435761)) % blocks;
                    // Whole blocks, partial blocks and two-block writes across chunks.
                    match seq % 4 {
                        0 => v.write(block * 4096, &block_of(block, seq)).unwrap(),
                        1 if block + 1 < blocks => {
                            let mut two = block_of(block, seq);
                            two.extend(block_of(block + 1, seq));
                            v.write(block * 4096, &two).unwrap()
                        }
                        2 => v.flush().unwrap(),
                        _ => v.write(block * 4096, &block_of(block, seq)).unwrap(),
                    }
                    seq += 3;
                }
            })
        })
        .collect();
    let mut snaps = vec![];
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(30));
        snaps.push(snapshot(&pool, &h, &v));
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().unwrap();
    }
    assert_clean(&v, "the source");
    let mut buf = vec![0u8; size as usize];
    v.read(0, &mut buf).unwrap();
    for (i, b) in buf.chunks(BS).enumerate() {
        seq_of(i as u64, b);
    }
    v.flush().unwrap();
    for s in &snaps {
        let rh = restore(&pool, &h, s);
        let rv = open_auth(&pool, &rh).unwrap();
        assert_clean(&rv, "a restored snapshot");
        rv.read(0, &mut buf).unwrap();
        for (i, b) in buf.chunks(BS).enumerate() {
            seq_of(i as u64, b);
        }
        // The clone's first writes re-encrypt shared chunks into its own domain.
        rv.write(4096 * 3, &block_of(3, 999)).unwrap();
        rv.flush().unwrap();
        assert_clean(&rv, "a restored snapshot after a write");
    }
    drop(v);
    // Reattach: root and anchor checks pass.
    let v = open_auth(&pool, &h).unwrap();
    assert_clean(&v, "the source reopened");
}

/// A clone and its source both write the same block: each reads its own data, both verify
/// clean, both reopen; and their ciphertexts differ although the key and block are the same.
#[test]
fn a_clone_and_its_source_written_in_the_same_block_stay_distinct_and_clean() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = new_pool(&r);
    let h = auth_header(4 << 20);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    v.write(0, &vec![0x11u8; 1 << SHIFT]).unwrap();
    v.flush().unwrap();
    let snap = snapshot(&pool, &h, &v);
    let h1 = restore(&pool, &h, &snap);
    let h2 = restore(&pool, &h, &snap);
    let c1 = open_auth(&pool, &h1).unwrap();
    let c2 = open_auth(&pool, &h2).unwrap();
    // The same plaintext in the same block of all three: ciphertexts must still differ.
    let same = vec![0x77u8; BS];
    for x in [&v, &c1, &c2] {
        x.write(5 * 4096, &same).unwrap();
        x.flush().unwrap();
    }
    v.write(6 * 4096, &[0xAA; BS]).unwrap();
    c1.write(6 * 4096, &[0xBB; BS]).unwrap();
    c2.write(7 * 4096, &[0xCC; BS]).unwrap();
    for x in [&v, &c1, &c2] {
        x.flush().unwrap();
    }
    let read = |x: &OpenVolume, b: u64| {
        let mut buf = vec![0u8; BS];
        x.read(b * 4096, &mut buf).unwrap();
        buf
    };
    assert_eq!(read(&v, 6), vec![0xAA; BS]);
    assert_eq!(read(&c1, 6), vec![0xBB; BS]);
    assert_eq!(read(&c2, 6), vec![0x11; BS]);
    assert_eq!(read(&c2, 7), vec![0xCC; BS]);
    assert_eq!(read(&v, 7), vec![0x11; BS]);
    assert_eq!(read(&c1, 0), vec![0x11; BS]);
    let data = pool.data_file(SHIFT).unwrap();
    let ct = |hh: &VolumeHeader| {
        let slot = pool.load_map(hh.id.as_str()).unwrap()[0].1;
        let mut b = vec![0u8; BS];
        data.read_at(&mut b, data.slot_offset(slot) + 5 * 4096)
            .unwrap();
        b
    };
    let (a, b, c) = (ct(&h), ct(&h1), ct(&h2));
    assert!(
        a != b && b != c && a != c,
        "two volumes encrypt the same block under the same key and tweak"
    );
    for (x, what) in [(&v, "source"), (&c1, "clone 1"), (&c2, "clone 2")] {
        assert_clean(x, what);
    }
    drop((v, c1, c2));
    for hh in [&h, &h1, &h2] {
        let x = open_auth(&pool, hh).unwrap();
        assert_clean(&x, "reopened");
    }
}

/// Discards on an authenticated volume (partial blocks, whole blocks in place and in a
/// committed slot, whole chunks): the range reads as zeros at once and after a reopen,
/// the rest is intact, and verify is clean.
#[test]
fn discards_read_as_zeros_and_verify_clean() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = new_pool(&r);
    let cs = 1u64 << SHIFT;
    let size = 8 * cs;
    let h = auth_header(size);
    pool.create_volume(&h).unwrap();
    let mut model = vec![0u8; size as usize];
    let v = open_auth(&pool, &h).unwrap();
    let fill: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
    v.write(0, &fill).unwrap();
    model.copy_from_slice(&fill);
    // In place (same epoch): blocks 2..5 of chunk 0 and a sub-block edge.
    for (off, len) in [(2 * 4096 + 100, 3 * 4096), (cs + 10, 20)] {
        v.discard(off, len).unwrap();
        model[off as usize..(off + len) as usize].fill(0);
    }
    v.flush().unwrap();
    // Into committed slots (copied first), across a chunk border, and a whole chunk.
    for (off, len) in [
        (cs - 3 * 4096, 5 * 4096 + 7),
        (3 * cs, cs),
        (5 * cs + 4096, 4096),
    ] {
        v.discard(off, len).unwrap();
        model[off as usize..(off + len) as usize].fill(0);
    }
    let mut buf = vec![0u8; size as usize];
    v.read(0, &mut buf).unwrap();
    assert!(buf == model, "discarded ranges do not read as zeros");
    assert_clean(&v, "after discards");
    v.flush().unwrap();
    drop(v);
    let v = open_auth(&pool, &h).unwrap();
    v.read(0, &mut buf).unwrap();
    assert!(
        buf == model,
        "after reopening, discarded ranges do not read as zeros"
    );
    assert_clean(&v, "reopened after discards");
}

/// A crash between a commit and its anchor write leaves the anchor one commit behind:
/// attach must accept it (the pool is newer), and the next commit anchors again.
#[test]
fn a_crash_between_a_commit_and_its_anchor_write_still_attaches() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let anchor = r.anchors_dir().join(h.id.as_str());
    {
        let pool = new_pool(&r);
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        v.write(0, &block_of(0, 1)).unwrap();
        v.flush().unwrap();
        let before = std::fs::read(&anchor).unwrap();
        v.write(4096, &block_of(1, 2)).unwrap();
        v.flush().unwrap();
        assert_ne!(
            std::fs::read(&anchor).unwrap(),
            before,
            "the commit anchors"
        );
        // The "crash": the anchor write of the last commit never happened.
        std::fs::write(&anchor, &before).unwrap();
        drop(v);
    }
    let pool = new_pool(&r);
    let v = open_auth(&pool, &h).expect("an anchor one commit behind is accepted");
    assert_clean(&v, "after the crash");
    let mut b = vec![0u8; 2 * BS];
    v.read(0, &mut b).unwrap();
    assert_eq!(seq_of(0, &b[..BS]), 1);
    assert_eq!(seq_of(1, &b[BS..]), 2);
}

/// A crash during writes (pool dropped without a commit): every flushed write is there,
/// unflushed ones are whole or absent, attach passes, and verify is clean.
#[test]
fn a_crash_during_writes_reattaches_clean_with_every_flushed_write() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let blocks = (4u64 << 20) / 4096;
    let mut flushed = vec![0u64; blocks as usize];
    {
        let pool = new_pool(&r);
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        let mut pending = vec![];
        for seq in 1..2000u64 {
            let block = (seq * 37) % blocks;
            v.write(block * 4096, &block_of(block, seq)).unwrap();
            pending.push((block, seq));
            if seq % 50 == 0 {
                v.flush().unwrap();
                for (b, s) in pending.drain(..) {
                    flushed[b as usize] = s;
                }
            }
        }
        // Crash: dropped without a flush; nothing commits what came after the last one.
        drop(v);
    }
    let pool = new_pool(&r);
    let v = open_auth(&pool, &h).expect("attach after a crash");
    assert_clean(&v, "after the crash");
    let mut buf = vec![0u8; 4 << 20];
    v.read(0, &mut buf).unwrap();
    for (i, b) in buf.chunks(BS).enumerate() {
        let s = seq_of(i as u64, b);
        assert!(
            s >= flushed[i],
            "block {i}: flushed write {} lost (reads {s})",
            flushed[i]
        );
    }
}

/// Opens the pool's metadata directly (the pool must be closed) to play the attacker.
fn with_db(r: &RegionDir, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(r.pool_dir().join("meta.redb")).unwrap();
    let w = db.begin_write().unwrap();
    f(&w);
    w.commit().unwrap();
}

/// A volume with data in two chunks, committed and closed; returns its header.
fn written_volume(r: &RegionDir) -> VolumeHeader {
    let pool = new_pool(r);
    let h = auth_header(4 << 20);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    v.write(0, &block_of(0, 1)).unwrap();
    v.write(1 << SHIFT, &block_of(16, 2)).unwrap();
    v.flush().unwrap();
    h
}

fn first_record_key(w: &redb::WriteTransaction) -> (u8, u64) {
    let t = w.open_table(SLOT_AUTH).unwrap();
    let (k, _) = t.iter().unwrap().next().unwrap().unwrap();
    k.value()
}

/// Hostile slot records and root rows: attach fails with one error that names the volume
/// and says it was changed (the integrity error), never a panic.
#[test]
fn hostile_records_and_root_rows_are_refused_as_tampering() {
    type Edit = fn(&redb::WriteTransaction, &str);
    let cases: [(&str, Edit); 5] = [
        ("a slot record one tag short", |w, _| {
            let k = first_record_key(w);
            let mut t = w.open_table(SLOT_AUTH).unwrap();
            let v = t.get(k).unwrap().unwrap().value().to_vec();
            t.insert(k, &v[..v.len() - 8 - MAC_LEN]).unwrap();
        }),
        ("a slot record of 3 bytes", |w, _| {
            let k = first_record_key(w);
            w.open_table(SLOT_AUTH)
                .unwrap()
                .insert(k, &[1u8, 0, 0][..])
                .unwrap();
        }),
        ("a slot record of version 2", |w, _| {
            let k = first_record_key(w);
            let mut t = w.open_table(SLOT_AUTH).unwrap();
            let mut v = t.get(k).unwrap().unwrap().value().to_vec();
            v[0] = 2;
            t.insert(k, v.as_slice()).unwrap();
        }),
        ("a slot record with reserved bytes set", |w, _| {
            let k = first_record_key(w);
            let mut t = w.open_table(SLOT_AUTH).unwrap();
            let mut v = t.get(k).unwrap().unwrap().value().to_vec();
            v[RECORD_HEAD - 9] = 0xff;
            t.insert(k, v.as_slice()).unwrap();
        }),
        ("a root row of 71 bytes", |w, id| {
            let mut t = w.open_table(ROOTS).unwrap();
            let v = t.get(id).unwrap().unwrap().value().to_vec();
            t.insert(id, &v[..71]).unwrap();
        }),
    ];
    let mut wrong = vec![];
    for (what, edit) in cases {
        let d = tempfile::tempdir().unwrap();
        let r = region(&d);
        let h = written_volume(&r);
        with_db(&r, |w| edit(w, h.id.as_str()));
        let pool = new_pool(&r);
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_auth(&pool, &h)));
        match got {
            Err(_) => wrong.push(format!("{what}: attach panicked")),
            Ok(Ok(_)) => wrong.push(format!("{what}: attach accepted it")),
            Ok(Err(e)) => {
                let msg = e.to_string();
                if !matches!(e, VolumeError::Tampered { .. }) || !msg.contains(h.id.as_str()) {
                    wrong.push(format!("{what}: {e:?} ({msg})"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "metadata changed outside cryptvol is not reported as tampering of the volume:\n{}",
        wrong.join("\n")
    );
}

/// Hostile anchor files: truncated, empty, garbage, another volume's: refused (Tampered,
/// naming the volume), never a panic; with the anchor gone the volume attaches (trust on
/// first use, as documented).
#[test]
fn hostile_anchor_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = written_volume(&r);
    let other = {
        let pool = new_pool(&r);
        let o = auth_header(4 << 20);
        pool.create_volume(&o).unwrap();
        let v = open_auth(&pool, &o).unwrap();
        v.write(0, &block_of(0, 9)).unwrap();
        v.flush().unwrap();
        o
    };
    let anchor = r.anchors_dir().join(h.id.as_str());
    let good = std::fs::read(&anchor).unwrap();
    let theirs = std::fs::read(r.anchors_dir().join(other.id.as_str())).unwrap();
    for (what, bytes) in [
        ("truncated to 20 bytes", good[..20].to_vec()),
        ("truncated by one byte", good[..good.len() - 1].to_vec()),
        ("empty", vec![]),
        ("its magic only", good[..8].to_vec()),
        ("another volume's", theirs),
    ] {
        std::fs::write(&anchor, &bytes).unwrap();
        let pool = new_pool(&r);
        match open_auth(&pool, &h) {
            Err(VolumeError::Tampered { volume, .. }) => assert_eq!(volume, h.id.as_str()),
            other => panic!("anchor {what}: {other:?}"),
        }
    }
    std::fs::remove_file(&anchor).unwrap();
    let pool = new_pool(&r);
    open_auth(&pool, &h).expect("no anchor: first attach anchors");
    assert!(anchor.exists());
}

/// Deleting an authenticated volume removes its anchor; its restored clone keeps its own.
#[test]
fn delete_removes_the_anchor() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = written_volume(&r);
    let pool = new_pool(&r);
    let v = open_auth(&pool, &h).unwrap();
    let snap = snapshot(&pool, &h, &v);
    drop(v);
    let c = restore(&pool, &h, &snap);
    drop(open_auth(&pool, &c).unwrap());
    let a = r.anchors_dir().join(h.id.as_str());
    let ca = r.anchors_dir().join(c.id.as_str());
    assert!(a.exists() && ca.exists());
    pool.delete_volume(&h).unwrap();
    assert!(!a.exists(), "the deleted volume's anchor stays");
    assert!(ca.exists(), "the clone's anchor went with its source");
    let cv = open_auth(&pool, &c).unwrap();
    assert_clean(&cv, "the clone after its source was deleted");
}

/// Growing an attached authenticated volume: the new space reads as zeros, writes there
/// verify clean, and the volume reopens at its new size.
#[test]
fn resize_while_attached_keeps_integrity() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = new_pool(&r);
    let mut h = auth_header(1 << 20);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    v.write((1 << 20) - 4096, &block_of(255, 1)).unwrap();
    v.flush().unwrap();
    h.size = 3 << 20;
    pool.update_volume(&h).unwrap();
    v.set_size(h.size);
    let mut b = vec![1u8; 1 << 20];
    v.read(1 << 20, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    // A write that crosses the old end.
    let mut two = block_of(255, 2);
    two.extend(block_of(256, 2));
    v.write((1 << 20) - 4096, &two).unwrap();
    v.write((3 << 20) - 4096, &block_of(767, 3)).unwrap();
    v.flush().unwrap();
    assert_clean(&v, "after growing");
    drop(v);
    let v = open_auth(&pool, &h).unwrap();
    assert_clean(&v, "reopened after growing");
    let mut b = vec![0u8; BS];
    v.read((3 << 20) - 4096, &mut b).unwrap();
    assert_eq!(seq_of(767, &b), 3);
}

/// `volume verify` of a detached volume opens it for the check only (as the daemon's owner
/// does, reporting a rollback instead of refusing): it never changes the anchor, also when
/// the anchor lags the pool by the commit a crash cut off.
#[test]
fn verify_of_a_detached_volume_never_changes_the_anchor() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(4 << 20);
    let anchor = r.anchors_dir().join(h.id.as_str());
    let lagging = {
        let pool = new_pool(&r);
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        v.write(0, &block_of(0, 1)).unwrap();
        v.flush().unwrap();
        let before = std::fs::read(&anchor).unwrap();
        v.write(4096, &block_of(1, 2)).unwrap();
        v.flush().unwrap();
        std::fs::write(&anchor, &before).unwrap();
        before
    };
    let pool = new_pool(&r);
    let v =
        OpenVolume::open_authenticated(pool.clone(), &h, xts(), integrity_keys(), Rollback::Report)
            .unwrap();
    assert_clean(&v, "verify");
    drop(v);
    assert!(
        std::fs::read(&anchor).unwrap() == lagging,
        "verify of a detached volume rewrote its anchor"
    );
}

/// Reads and `verify` check and decrypt a long request a few blocks at a time (`FUSED`),
/// and writes encrypt and tag it the same way: with bad blocks and a hole placed to cut
/// groups short and good stretches longer than a group, every good block reads back
/// exactly, the hole reads as zeros, each bad block is reported and nothing else is.
#[test]
fn long_requests_with_bad_blocks_and_a_hole_read_every_good_block_exactly() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = new_pool(&r);
    let mut h = header_with_shift(4 << 20, 20);
    h.lineage = h.id.to_string();
    h.integrity = true;
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    let n = 40u64;
    let data: Vec<u8> = (0..n).flat_map(|b| block_of(b, 1)).collect();
    v.write(0, &data).unwrap();
    v.discard(17 * BLOCK_SIZE, BLOCK_SIZE).unwrap();
    v.flush().unwrap();
    let slot = v.entry(0).unwrap().slot;
    for b in [6usize, 23] {
        let half = v.record(slot).unwrap().lock().unwrap().half(b);
        let f = pool.file(20, half).unwrap();
        let at = f.slot_offset(slot) + (b * BS) as u64 + 100;
        let mut byte = [0u8; 1];
        f.read_at(&mut byte, at).unwrap();
        f.write_at(&[byte[0] ^ 0x10], at).unwrap();
    }
    let want = |b: u64| {
        if b == 17 {
            vec![0u8; BS]
        } else {
            block_of(b, 1)
        }
    };
    let rep = v.verify().unwrap();
    assert_eq!(rep.bad_blocks, vec![6, 23], "{rep:?}");
    let mut all = vec![0u8; n as usize * BS];
    assert!(
        matches!(
            v.read(0, &mut all),
            Err(VolumeError::BadBlock { block: 6, .. })
        ),
        "a read across block 6"
    );
    for (s, e) in [(0u64, 6u64), (7, 23), (24, n)] {
        let mut got = vec![0u8; ((e - s) as usize) * BS];
        v.read(s * BLOCK_SIZE, &mut got).unwrap();
        for b in s..e {
            let i = (b - s) as usize;
            assert_eq!(
                got[i * BS..(i + 1) * BS],
                want(b),
                "block {b} read in [{s}, {e})"
            );
        }
    }
}
