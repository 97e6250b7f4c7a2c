//! Attacks on authenticated volumes (`volume create --integrity`) through the CLI and the
//! daemon: commands racing writers (verify, snapshot create, snapshot copy --kms-key),
//! kill -9 of the daemon during writes, hostile anchor files and metadata rows, discards
//! through the FUSE file.
//!
//! Every test needs FUSE; without it they skip, unless `CRYPTVOL_REQUIRE_MOUNT=1`.

mod common;

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::mount::*;
use common::{assert_one_error_line, str_field};

const SIZE: &str = "256M";
const BLOCKS: u64 = 256 * MIB / BLOCK;

/// A 4 KiB block that says which block it is and which write put it there.
fn block_of(block: u64, seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(BLOCK as usize);
    while b.len() < BLOCK as usize {
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
    }
    b
}

/// The write number a block holds (0: zeros); an error for anything else.
fn seq_of(block: u64, b: &[u8]) -> Result<u64, String> {
    if b.iter().all(|&x| x == 0) {
        return Ok(0);
    }
    let seq = u64::from_le_bytes(b[8..16].try_into().unwrap());
    if b == block_of(block, seq).as_slice() {
        Ok(seq)
    } else {
        Err(format!(
            "block {block} holds neither zeros nor a whole write"
        ))
    }
}

/// A thread writing blocks of `file` and fsyncing every 8 writes until `stop`; returns,
/// per block, the last write an fsync returned after (0: none).
fn writer(
    file: &Path,
    stop: Arc<AtomicBool>,
    seed: u64,
    writes: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Vec<u64>> {
    let f = open_rw(file);
    std::thread::spawn(move || {
        let mut synced = vec![0u64; BLOCKS as usize];
        let mut pending = vec![];
        let mut seq = seed;
        // Blocks spread over the first 64 MiB: many chunks, revisited often.
        while !stop.load(Ordering::Acquire) {
            let block = seq.wrapping_mul(2654435761) % (64 * MIB / BLOCK);
            if std::os::unix::fs::FileExt::write_all_at(&f, &block_of(block, seq), block * BLOCK)
                .is_err()
            {
                break; // the daemon was killed
            }
            pending.push((block, seq));
            writes.fetch_add(1, Ordering::Relaxed);
            if pending.len() == 8 {
                if f.sync_all().is_err() {
                    break;
                }
                for (b, s) in pending.drain(..) {
                    synced[b as usize] = s;
                }
            }
            seq += 1000;
        }
        synced
    })
}

/// Waits until the writer has done at least `n` more writes.
fn let_write(writes: &AtomicU64, n: u64) {
    let start = writes.load(Ordering::Relaxed);
    assert!(
        wait_until(Duration::from_secs(60), || writes.load(Ordering::Relaxed)
            >= start + n),
        "the writer made no progress"
    );
}

#[track_caller]
fn verify_ok(v: &VolEnv, vol: &str, what: &str) {
    let out = v.run(&["volume", "verify", vol]);
    assert_eq!(
        out.code, 0,
        "{what}: `volume verify {vol}` exit {}: {}\n{}",
        out.code, out.stderr, out.stdout
    );
}

/// `volume verify` while the volume is attached and being written and fsynced: there is
/// nothing wrong with it, so every run exits 0.
#[test]
fn verify_while_attached_and_written_finds_nothing() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", SIZE, "--integrity"]);
    let dir = v.dir("m");
    let file = v.attach(&vol, &dir, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    // Every chunk mapped: verify's read of the map and tags takes a while.
    let f = open_rw(&file);
    for c in 0..BLOCKS / (MIB / BLOCK) {
        pwrite(&f, c * MIB, &block_of(c * MIB / BLOCK, 1));
    }
    f.sync_all().unwrap();
    drop(f);
    let w = writer(&file, stop.clone(), 1, writes.clone());
    let_write(&writes, 200);
    let mut failures = vec![];
    for i in 0..30 {
        let out = v.run(&["volume", "verify", &vol]);
        if out.code != 0 {
            failures.push(format!("run {i}: exit {}: {}", out.code, out.stderr.trim()));
        }
    }
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    v.detach(&dir);
    verify_ok(&v, &vol, "after detach");
    assert!(
        failures.is_empty(),
        "verify of a healthy volume being written failed:\n{}",
        failures.join("\n")
    );
}

/// Snapshots taken and copied (`snapshot copy --kms-key`) while the volume is written:
/// every snapshot restores (shared, and re-encrypted under another key) to a volume that
/// attaches, verifies clean and holds only whole writes; the source verifies clean.
#[test]
fn snapshots_and_copies_during_writes_restore_and_verify_clean() {
    needs!(Fuse);
    let v = VolEnv::new();
    let key = v.create_key();
    let vol = v.create(&["--size", SIZE, "--integrity"]);
    let dir = v.dir("m");
    let file = v.attach(&vol, &dir, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let w = writer(&file, stop.clone(), 7, writes.clone());
    let mut snaps = vec![];
    let mut copies = vec![];
    for _ in 0..3 {
        let_write(&writes, 100);
        let s = v.json(&["snapshot", "create", &vol]);
        snaps.push(str_field(&s, "SnapshotId"));
    }
    // Copies of a snapshot of the volume being written, while it still is.
    for s in &snaps[..2] {
        let c = v.json(&["snapshot", "copy", s, "--kms-key", &key]);
        copies.push(str_field(&c, "SnapshotId"));
        let_write(&writes, 50);
    }
    stop.store(true, Ordering::Release);
    w.join().unwrap();
    verify_ok(&v, &vol, "the source, attached, after the writes");
    let mut failures = vec![];
    for s in snaps.iter().chain(&copies) {
        let r = v.create(&["--from-snapshot", s]);
        let out = v.run(&["volume", "verify", &r]);
        if out.code != 0 {
            failures.push(format!(
                "{r} from {s}: verify exit {}: {}",
                out.code, out.stderr
            ));
            continue;
        }
        let d = v.dir(&format!("r-{r}"));
        let out = v.attach_run(&r, &d, &[]);
        if out.code != 0 {
            failures.push(format!(
                "{r} from {s}: attach exit {}: {}",
                out.code, out.stderr
            ));
            continue;
        }
        let f = open_rw(&canon(&d).join("volume"));
        let data = pread(&f, 0, (64 * MIB) as usize);
        for (i, b) in data.chunks(BLOCK as usize).enumerate() {
            if let Err(e) = seq_of(i as u64, b) {
                failures.push(format!("{r} from {s}: {e}"));
                break;
            }
        }
        drop(f);
        v.detach(&d);
    }
    v.detach(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    v.assert_pool_clean("local-1");
}

/// kill -9 of the daemon while an authenticated volume is written, three times: each
/// time it attaches again (no rollback or tampering alarm), `volume verify` exits 0, every
/// fsynced write is there and every block holds a whole write or zeros.
#[test]
fn kill_9_during_writes_reattaches_and_verifies_clean() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", SIZE, "--integrity"]);
    let dir = v.dir("m");
    let mut synced = vec![0u64; BLOCKS as usize];
    let mut failures = vec![];
    for round in 0..3u64 {
        let out = v.attach_run(&vol, &dir, &[]);
        if out.code != 0 {
            // The dead mount of the last round: a user detaches it and tries again.
            let d = dir.to_string_lossy();
            let _ = v.run(&["detach", &d]);
            let out = v.attach_run(&vol, &dir, &[]);
            assert_eq!(
                out.code, 0,
                "round {round}: attach after kill -9: {}; {failures:?}",
                out.stderr
            );
        }
        let file = canon(&dir).join("volume");
        let f = open_rw(&file);
        for (i, b) in pread(&f, 0, (64 * MIB) as usize)
            .chunks(BLOCK as usize)
            .enumerate()
        {
            match seq_of(i as u64, b) {
                Ok(s) if s < synced[i] => failures.push(format!(
                    "round {round}: block {i} lost fsynced write {} (reads {s})",
                    synced[i]
                )),
                Ok(_) => {}
                Err(e) => failures.push(format!("round {round}: {e}")),
            }
        }
        drop(f);
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let w = writer(&file, stop.clone(), round + 1, writes.clone());
        let_write(&writes, 300);
        let pid = v.daemon_pid().expect("a daemon serves the volume");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9 the daemon");
        assert!(wait_until(Duration::from_secs(10), || !process_alive(pid)));
        stop.store(true, Ordering::Release);
        for (i, s) in w.join().unwrap().into_iter().enumerate() {
            synced[i] = synced[i].max(s);
        }
        let d = dir.to_string_lossy();
        let _ = v.run(&["detach", &d]);
        let out = v.run(&["volume", "verify", &vol]);
        if out.code != 0 {
            failures.push(format!(
                "round {round}: verify after kill -9 exit {}: {}",
                out.code,
                out.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// fallocate punch-hole and zero-range on the attached file of an authenticated volume:
/// the ranges read as zeros, before and after a detach, and verify is clean.
#[test]
fn discards_through_the_fuse_file_read_zeros_and_verify_clean() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--integrity"]);
    let dir = v.dir("m");
    let file = v.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 253) as u8 + 1).collect();
    pwrite(&f, 0, &data);
    f.sync_all().unwrap();
    let mut model = data.clone();
    use nix::fcntl::{FallocateFlags, fallocate};
    let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
    let ranges = [
        (punch, 3 * BLOCK + 100, 5 * BLOCK),
        (punch, MIB, 2 * MIB),
        (
            FallocateFlags::FALLOC_FL_ZERO_RANGE,
            5 * MIB - 10,
            3 * BLOCK,
        ),
        (punch, 7 * MIB + BLOCK, BLOCK),
    ];
    for (flags, off, len) in ranges {
        fallocate(&f, flags, off as i64, len as i64)
            .unwrap_or_else(|e| panic!("fallocate {flags:?} {off}+{len}: {e}"));
        model[off as usize..(off + len) as usize].fill(0);
    }
    assert_bytes("after discards", 0, &pread(&f, 0, model.len()), &model);
    f.sync_all().unwrap();
    verify_ok(&v, &vol, "attached, after discards");
    drop(f);
    v.detach(&dir);
    verify_ok(&v, &vol, "detached, after discards");
    let file = v.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    assert_bytes("after reattach", 0, &pread(&f, 0, model.len()), &model);
    drop(f);
    v.detach(&dir);
}

/// A written authenticated volume, detached.
fn written_volume(v: &VolEnv) -> String {
    let vol = v.create(&["--size", "64M", "--integrity"]);
    let dir = v.dir(&format!("w-{vol}"));
    let file = v.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    pwrite(&f, 0, &vec![0x5a; 3 * MIB as usize]);
    f.sync_all().unwrap();
    drop(f);
    v.detach(&dir);
    vol
}

/// Attach of `vol` must fail with `code` on one error line naming the volume, and leave
/// nothing mounted.
#[track_caller]
fn refused(v: &VolEnv, vol: &str, code: i32, what: &str) -> Option<String> {
    let dir = v.dir(&format!("x-{}", what.replace(' ', "-")));
    let out = v.attach_run(vol, &dir, &[]);
    let problem = if out.code != code {
        Some(format!(
            "{what}: attach exit {} (want {code}): {}",
            out.code,
            out.stderr.trim()
        ))
    } else if !out.stderr.contains(vol) || out.stderr.contains("panicked") {
        Some(format!(
            "{what}: the error does not name {vol}: {}",
            out.stderr
        ))
    } else {
        assert_one_error_line("attach", &out.stderr);
        None
    };
    if is_mount_point(&dir) {
        let d = dir.to_string_lossy();
        let _ = v.run(&["detach", &d]);
    }
    problem
}

/// Hostile anchor files: truncated, empty, another volume's: attach exits 25 naming the
/// volume (tampering), never a panic, nothing mounted.
#[test]
fn hostile_anchor_files_are_refused_at_attach() {
    needs!(Fuse);
    let v = VolEnv::new();
    let a = written_volume(&v);
    let b = written_volume(&v);
    let anchors = v.region().join("anchors");
    let good = std::fs::read(anchors.join(&a)).expect("an anchor after attach");
    let theirs = std::fs::read(anchors.join(&b)).unwrap();
    let mut problems = vec![];
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", vec![]),
        ("another volume's", theirs),
    ] {
        std::fs::write(anchors.join(&a), &bytes).unwrap();
        problems.extend(refused(&v, &a, 25, what));
    }
    std::fs::write(anchors.join(&a), &good).unwrap();
    verify_ok(&v, &a, "the anchor put back");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Edits meta.redb directly (nothing attached, no daemon running).
fn edit_meta(v: &VolEnv, f: impl FnOnce(&redb::WriteTransaction)) {
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the daemon still runs"
    );
    // Retried for a moment: a daemon that has just exited may still hold the file.
    let db = common::pool_peek::open_meta(v);
    let w = db.begin_write().unwrap();
    f(&w);
    w.commit().unwrap();
}

const SLOT_AUTH: redb::TableDefinition<(u8, u64), &[u8]> = redb::TableDefinition::new("slot_auth");
const ROOTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("roots");

/// Hostile metadata rows: a slot record of the wrong length or version, a root row of
/// the wrong length. Each is a change made outside cryptvol: attach and verify exit 25
/// (integrity) with one line naming the volume; never a panic.
#[test]
fn hostile_slot_records_and_root_rows_are_refused_at_attach_and_verify() {
    needs!(Fuse);
    use redb::ReadableTable;
    type Edit = fn(&redb::WriteTransaction, &str);
    let cases: [(&str, Edit); 3] = [
        ("record too short", |w, _| {
            let mut t = w.open_table(SLOT_AUTH).unwrap();
            let (k, val) = {
                let (k, val) = t.iter().unwrap().next().unwrap().unwrap();
                (k.value(), val.value().to_vec())
            };
            t.insert(k, &val[..val.len() - 24]).unwrap();
        }),
        ("record version 9", |w, _| {
            let mut t = w.open_table(SLOT_AUTH).unwrap();
            let (k, mut val) = {
                let (k, val) = t.iter().unwrap().next().unwrap().unwrap();
                (k.value(), val.value().to_vec())
            };
            val[0] = 9;
            t.insert(k, val.as_slice()).unwrap();
        }),
        ("root row too short", |w, vol| {
            let mut t = w.open_table(ROOTS).unwrap();
            let val = t.get(vol).unwrap().unwrap().value().to_vec();
            t.insert(vol, &val[..40]).unwrap();
        }),
    ];
    let mut problems = vec![];
    for (what, edit) in cases {
        let v = VolEnv::new();
        let vol = written_volume(&v);
        edit_meta(&v, |w| edit(w, &vol));
        problems.extend(refused(&v, &vol, 25, what));
        let out = v.run(&["volume", "verify", &vol]);
        if out.code != 25 || out.stderr.contains("panicked") {
            problems.push(format!(
                "{what}: verify exit {} (want 25): {}",
                out.code,
                out.stderr.trim()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Deleting an authenticated volume removes its anchor; a second volume restored from the
/// same snapshot has its own anchor and stays clean after the first is deleted.
#[test]
fn delete_removes_the_anchor_and_spares_a_sibling_restore() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = written_volume(&v);
    let snap = str_field(&v.json(&["snapshot", "create", &vol]), "SnapshotId");
    let r1 = v.create(&["--from-snapshot", &snap]);
    let r2 = v.create(&["--from-snapshot", &snap]);
    for r in [&r1, &r2] {
        let d = v.dir(&format!("a-{r}"));
        let f = open_rw(&v.attach(r, &d, &[]));
        pwrite(&f, 4096, &vec![r.as_bytes()[20]; 4096]);
        f.sync_all().unwrap();
        drop(f);
        v.detach(&d);
    }
    let anchors = v.region().join("anchors");
    for x in [&vol, &r1, &r2] {
        assert!(anchors.join(x).exists(), "{x} has no anchor");
    }
    v.ok(&["volume", "delete", &r1, "--yes"]);
    assert!(
        !anchors.join(&r1).exists(),
        "the deleted volume's anchor stays"
    );
    assert!(anchors.join(&r2).exists());
    verify_ok(&v, &r2, "the sibling restore");
    verify_ok(&v, &vol, "the source");
    v.ok(&["volume", "delete", &vol, "--yes"]);
    assert!(
        !anchors.join(&vol).exists(),
        "the deleted volume's anchor stays"
    );
    verify_ok(&v, &r2, "the restore after its source was deleted");
    let _ = File::open(anchors.join(&r2)).unwrap();
}
