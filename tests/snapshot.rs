//! Snapshots: `snapshot create/list/describe/delete` and restore with
//! `volume create --from-snapshot`, on real FUSE attachments and kernel mounts.
//!
//! Proves: a restored volume shows the data of the snapshot, and writes to it (or to the
//! source) reach neither the snapshot nor the other volume; a snapshot taken under a
//! running writer holds every record fsynced before it and no torn one; a snapshot of a
//! mounted ext4 (frozen around the capture) is fsck-clean and holds what was written; a
//! second snapshot stores only the changed chunks; deleting snapshots and volumes frees
//! exactly the chunks nothing else uses; errors are one line with the documented exit
//! code and change nothing; snapshot create and restore are metadata-only (the pool does
//! not grow on a volume with 2 GiB mapped; bench/snapshots.sh times them); everything works with the region daemon running and offline.
//!
//! Tests that attach need FUSE (the ext4 one also root, loop devices, mkfs.ext4,
//! fsck.ext4 and fsfreeze); without them they skip, unless `CRYPTVOL_REQUIRE_MOUNT=1`
//! (CI), which makes them fail. Each test's `VolEnv` guard undoes whatever it attached.

mod common;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::dir_state::POOL_META;
use common::mount::*;
use common::{DirState, now, str_field, unix_time};
use serde_json::Value;

// ---- helpers ------------------------------------------------------------------------------

/// `snapshot create VOL --description D`; checks the id and state; returns the output.
#[track_caller]
fn snapshot(v: &VolEnv, vol: &str, description: &str) -> Value {
    let s = v.json(&["snapshot", "create", vol, "--description", description]);
    let id = str_field(&s, "SnapshotId");
    assert!(
        id.starts_with("snap-") && id.len() == 22,
        "not a snapshot id: {s:#}"
    );
    assert_eq!(s["State"], "completed", "{s:#}");
    assert_eq!(s["Description"], description, "{s:#}");
    s
}

#[track_caller]
fn snap_id(s: &Value) -> String {
    str_field(s, "SnapshotId")
}

#[track_caller]
fn describe_snap(v: &VolEnv, snap: &str) -> Value {
    v.json(&["snapshot", "describe", snap])
}

/// `snapshot list [--volume VOL]`.
#[track_caller]
fn list_snaps(v: &VolEnv, volume: Option<&str>) -> Vec<Value> {
    let mut a = vec!["snapshot", "list"];
    if let Some(vol) = volume {
        a.extend(["--volume", vol]);
    }
    let out = v.json(&a);
    out["Snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("no Snapshots array: {out:#}"))
        .clone()
}

#[track_caller]
fn list_ids(v: &VolEnv, volume: Option<&str>) -> Vec<String> {
    list_snaps(v, volume).iter().map(snap_id).collect()
}

/// `volume create --from-snapshot SNAP EXTRA...`; returns the new volume id.
#[track_caller]
fn restore(v: &VolEnv, snap: &str, extra: &[&str]) -> String {
    let mut a = vec!["--from-snapshot", snap];
    a.extend_from_slice(extra);
    v.create(&a)
}

#[track_caller]
fn num(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no number {field} in {v:#}"))
}

#[track_caller]
fn write_synced(f: &File, off: u64, data: &[u8]) {
    pwrite(f, off, data);
    f.sync_all().expect("fsync");
}

/// Asserts that `want.len()` bytes at `off` of `f` are `want`.
#[track_caller]
fn check(f: &File, what: &str, off: u64, want: &[u8]) {
    assert_bytes(what, off, &pread(f, off, want.len()), want);
}

#[track_caller]
fn check_zeros(f: &File, what: &str, off: u64, len: u64) {
    assert_zeros(what, off, &pread(f, off, len as usize));
}

/// Pool space on disk (the 1 MiB-chunk data file's allocated blocks).
fn pool_bytes(v: &VolEnv) -> u64 {
    disk_bytes(&v.pool_data_file())
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / MIB as f64)
}

/// Blocks until the wall clock is in a new second. Snapshot times have one-second
/// resolution; tests that are not about ordering within a second use this so that
/// "previous snapshot" is unambiguous (see `snapshots_taken_within_one_second_...`).
fn next_second() {
    let s = now();
    while now() == s {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// fallocate(PUNCH_HOLE | KEEP_SIZE) on an attached volume file.
#[track_caller]
fn punch(f: &File, off: u64, len: u64) {
    use nix::fcntl::{FallocateFlags, fallocate};
    fallocate(
        f,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
    .unwrap_or_else(|e| panic!("punch {off}+{len}: {e}"));
}

// ---- 1. restore shows the snapshot; copy-on-write isolates all three ---------------------

#[test]
fn restore_reads_the_snapshot_and_writes_stay_in_their_own_volume() {
    needs!(Fuse);
    let v = VolEnv::new();
    let src = v.create(&["--size", "64M", "--name", "src"]);
    let mut rng = Rng::from_env(0x5a17_0000_0000_0001);
    // 6 MiB + 777 bytes from an unaligned offset: partial blocks and chunks at both ends,
    // chunks 1..=7 touched.
    let off = MIB + 4095;
    let len = 6 * MIB as usize + 777;
    let (a, b) = (rng.bytes(len), rng.bytes(len));
    let far = 40 * MIB; // never written before the snapshot

    let d_src = v.dir("src");
    let p_src = v.attach(&src, &d_src, &[]);
    let f_src = open_rw(&p_src);
    write_synced(&f_src, off, &a);
    let s = snapshot(&v, &src, "A");
    let snap = snap_id(&s);
    assert_eq!(s["VolumeId"], src.as_str(), "{s:#}");
    assert_eq!(num(&s, "DataBytes"), 7 * MIB, "chunks 1..=7: {s:#}");
    write_synced(&f_src, off, &b);
    check(&f_src, "source after overwriting A with B", off, &b);

    // The restore shows A, and zeros where nothing was written.
    let r1 = restore(&v, &snap, &["--name", "r1"]);
    assert_ne!(r1, src);
    let d1 = v.dir("r1");
    let p1 = v.attach(&r1, &d1, &[]);
    let f1 = open_rw(&p1);
    assert_eq!(std::fs::metadata(&p1).unwrap().len(), 64 * MIB);
    check(&f1, "restored volume (must hold A)", off, &a);
    check_zeros(&f1, "restored volume before A", 0, off);
    check_zeros(&f1, "restored volume after A", off + len as u64, MIB);
    check_zeros(&f1, "restored volume, never written", far, MIB);
    check(&f_src, "source after the restore", off, &b);

    // C into the restored volume: unaligned across a chunk border, a whole chunk, a new
    // chunk the snapshot never had, and a punched hole (discard of shared chunks).
    let mut model = a.clone();
    let put = |f: &File, at: u64, data: &[u8], model: &mut Vec<u8>| {
        pwrite(f, at, data);
        let s = (at - off) as usize;
        model[s..s + data.len()].copy_from_slice(data);
    };
    put(&f1, off + 1000, &rng.bytes(MIB as usize + 3333), &mut model);
    put(&f1, 4 * MIB, &rng.bytes(MIB as usize), &mut model);
    let c_far = rng.bytes(5000);
    pwrite(&f1, far + 17, &c_far);
    punch(&f1, 6 * MIB - 100, MIB + 300);
    let s0 = (6 * MIB - 100 - off) as usize;
    model[s0..s0 + (MIB + 300) as usize].fill(0);
    f1.sync_all().expect("fsync");
    check(&f1, "restored volume after writing C", off, &model);
    check(&f1, "restored volume, new chunk", far + 17, &c_far);

    // Neither the source nor the snapshot changed.
    check(
        &f_src,
        "source after writes to the restored volume",
        off,
        &b,
    );
    check_zeros(
        &f_src,
        "source where only the restored volume wrote",
        far,
        MIB,
    );
    let r2 = restore(&v, &snap, &["--name", "r2"]);
    let d2 = v.dir("r2");
    let p2 = v.attach(&r2, &d2, &[]);
    let f2 = open_rw(&p2);
    check(
        &f2,
        "second restore of the snapshot (must still be A)",
        off,
        &a,
    );
    check_zeros(&f2, "second restore where r1 wrote", far, MIB);

    // And a write to the source after all this leaves both restores alone.
    let d = rng.bytes(3 * MIB as usize);
    write_synced(&f_src, 2 * MIB, &d);
    check(&f2, "second restore after a source write", off, &a);
    check(&f1, "first restore after a source write", off, &model);
    let snap_desc = describe_snap(&v, &snap);
    assert_eq!(num(&snap_desc, "DataBytes"), 7 * MIB, "{snap_desc:#}");

    // Everything is durable: detach all, attach again, same contents.
    drop((f_src, f1, f2));
    for d in [&d_src, &d1, &d2] {
        v.detach(d);
    }
    let mut b_now = b.clone();
    let s2 = (2 * MIB - off) as usize;
    b_now[s2..s2 + d.len()].copy_from_slice(&d);
    let f_src = open_rw(&v.attach(&src, &d_src, &[]));
    let f1 = open_rw(&v.attach(&r1, &d1, &[]));
    let f2 = open_rw(&v.attach(&r2, &d2, &[]));
    check(&f_src, "source after detach and attach", off, &b_now);
    check(&f1, "first restore after detach and attach", off, &model);
    check(
        &f1,
        "first restore's new chunk after attach",
        far + 17,
        &c_far,
    );
    check(&f2, "second restore after detach and attach", off, &a);
    drop((f_src, f1, f2));
    for d in [&d_src, &d1, &d2] {
        v.detach(d);
    }
}

// ---- 2. crash consistency under a running writer --------------------------------------

const REC: usize = 4096;
const REC_MAGIC: &[u8; 8] = b"CVSNREC1";

/// Record `i` of a run: magic, number, seed, pseudo-random payload, blake3 of the rest.
fn record(seed: u64, i: u64) -> Vec<u8> {
    let mut r = vec![0u8; REC];
    r[..8].copy_from_slice(REC_MAGIC);
    r[8..16].copy_from_slice(&i.to_le_bytes());
    r[16..24].copy_from_slice(&seed.to_le_bytes());
    Rng::new(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).fill(&mut r[24..REC - 32]);
    let h = blake3::hash(&r[..REC - 32]);
    r[REC - 32..].copy_from_slice(h.as_bytes());
    r
}

#[derive(Debug, PartialEq)]
enum Rec {
    Valid,
    Zero,
    Bad(String),
}

fn classify(buf: &[u8], seed: u64, i: u64) -> Rec {
    if buf.iter().all(|&b| b == 0) {
        return Rec::Zero;
    }
    if blake3::hash(&buf[..REC - 32]).as_bytes() != &buf[REC - 32..] {
        let zeros = buf
            .chunks(512)
            .filter(|c| c.iter().all(|&b| b == 0))
            .count();
        return Rec::Bad(format!(
            "torn or garbage (checksum mismatch, {zeros} of 8 sectors zero)"
        ));
    }
    if buf != record(seed, i).as_slice() {
        let n = u64::from_le_bytes(buf[8..16].try_into().unwrap());
        return Rec::Bad(format!("a valid record, but number {n} (not {i})"));
    }
    Rec::Valid
}

/// Reads records `0..n` of `f` and returns how many lead valid; asserts that everything
/// after them (up to `n`) is zeros: the content is a prefix of the writer's sequence.
#[track_caller]
fn valid_prefix(f: &File, what: &str, seed: u64, n: u64) -> u64 {
    let mut prefix = None;
    let per = (MIB as usize) / REC;
    let mut i = 0u64;
    while i < n {
        let k = (n - i).min(per as u64) as usize;
        let buf = pread(f, i * REC as u64, k * REC);
        for (j, r) in buf.chunks(REC).enumerate() {
            let idx = i + j as u64;
            match (classify(r, seed, idx), prefix) {
                (Rec::Valid, None) => {}
                (Rec::Valid, Some(p)) => panic!(
                    "{what}: record {idx} is present after missing record {p}: the snapshot is not a prefix of the acknowledged writes"
                ),
                (Rec::Zero, None) => prefix = Some(idx),
                (Rec::Zero, Some(_)) => {}
                (Rec::Bad(why), _) => panic!("{what}: record {idx} is {why}"),
            }
        }
        i += k as u64;
    }
    prefix.unwrap_or(n)
}

struct Progress {
    written: AtomicU64,
    synced: AtomicU64,
    stop: AtomicBool,
}

#[test]
fn snapshot_under_a_running_writer_holds_every_fsynced_record_and_none_torn() {
    needs!(Fuse);
    const SYNC_EVERY: u64 = 16;
    const SNAPSHOTS: usize = 3;
    let v = VolEnv::new();
    let vol = v.create(&["--size", "128M", "--name", "log"]);
    let max = 128 * MIB / REC as u64;
    let dir = v.dir("log");
    let path = v.attach(&vol, &dir, &[]);
    let seed = Rng::from_env(0x5a17_0000_0000_0002).next_u64();

    let p = Arc::new(Progress {
        written: AtomicU64::new(0),
        synced: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let writer = {
        let p = p.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            let f = open_rw(&path);
            let mut i = 0u64;
            while !p.stop.load(Ordering::SeqCst) && i < max {
                pwrite(&f, i * REC as u64, &record(seed, i));
                i += 1;
                p.written.store(i, Ordering::SeqCst);
                if i.is_multiple_of(SYNC_EVERY) {
                    f.sync_all().expect("fsync");
                    p.synced.store(i, Ordering::SeqCst);
                }
            }
            f.sync_all().expect("fsync");
            p.synced.store(i, Ordering::SeqCst);
            i
        })
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        assert!(
            wait_until(Duration::from_secs(30), cond),
            "the writer did not get {what} in 30 s: written {}, synced {}",
            p.written.load(Ordering::SeqCst),
            p.synced.load(Ordering::SeqCst)
        );
    };

    // Several snapshots while the writer runs; for each: what had been fsynced when the
    // command started, and what had been written when it returned.
    let mut snaps = vec![];
    let mut last = 0;
    for k in 0..SNAPSHOTS {
        wait_for("far enough", &|| {
            p.synced.load(Ordering::SeqCst) >= last + 8 * SYNC_EVERY
        });
        let synced_before = p.synced.load(Ordering::SeqCst);
        let written_before = p.written.load(Ordering::SeqCst);
        let s = snapshot(&v, &vol, &format!("under load {k}"));
        let written_after = p.written.load(Ordering::SeqCst);
        snaps.push((snap_id(&s), synced_before, written_before, written_after));
        last = written_after;
    }
    // The writer keeps going after the last one (copy-on-write under load), then stops.
    wait_for("past the last snapshot", &|| {
        p.written.load(Ordering::SeqCst) >= last + 4 * SYNC_EVERY
    });
    p.stop.store(true, Ordering::SeqCst);
    let total = writer.join().expect("the writer thread failed");
    assert!(total < max, "the volume filled up: the test proves less");

    // The source holds every record.
    let f = open_rw(&path);
    assert_eq!(
        valid_prefix(&f, "source volume", seed, (total + 64).min(max)),
        total,
        "the source volume lost records"
    );
    drop(f);

    for (k, (snap, synced_before, written_before, written_after)) in snaps.iter().enumerate() {
        let r = restore(&v, snap, &[]);
        let d = v.dir(&format!("r{k}"));
        let f = open_rw(&v.attach(&r, &d, &[]));
        let what = format!("restore of snapshot {k} ({snap})");
        let n = valid_prefix(&f, &what, seed, total);
        eprintln!(
            "snapshot {k}: {synced_before} records fsynced and {written_before} written before it, {n} in it, {written_after} written when it returned"
        );
        assert!(
            n >= *synced_before,
            "{what}: holds {n} records, but {synced_before} were fsynced before `snapshot create` started"
        );
        // The daemon quiesces I/O and commits before capturing: what was acknowledged
        // (pwrite returned, even without fsync) before the command started is in it.
        assert!(
            n >= *written_before,
            "{what}: holds {n} records, but {written_before} writes had been acknowledged before `snapshot create` started"
        );
        assert!(
            n <= *written_after,
            "{what}: holds {n} records, but only {written_after} had been written when `snapshot create` returned"
        );
        drop(f);
        v.detach(&d);
    }
    v.detach(&dir);
}

// ---- 3. mounted ext4: frozen, fsck-clean, files there ---------------------------------

const LOG_REC: usize = 1000;

/// File `i` written by the ext4 writer: 4 KiB .. 128 KiB plus an odd tail.
fn file_data(i: u64) -> Vec<u8> {
    let len = 4096 * (1 + i % 32) as usize + (i % 7) as usize * 100;
    Rng::new(0xf11e_0000 ^ i).bytes(len)
}

/// Record `i` of the append-only log: number, payload, 8 bytes of blake3.
fn log_record(i: u64) -> Vec<u8> {
    let mut r = Rng::new(0x1096_0000 ^ i).bytes(LOG_REC);
    r[..8].copy_from_slice(&i.to_le_bytes());
    let h = blake3::hash(&r[..LOG_REC - 8]);
    r[LOG_REC - 8..].copy_from_slice(&h.as_bytes()[..8]);
    r
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .unwrap_or_else(|e| panic!("fsync {dir:?}: {e}"));
}

struct FsProgress {
    /// Files f00000.. whose write() returned.
    written: AtomicU64,
    /// Of those, the prefix that is fsynced (file and directory).
    synced: AtomicU64,
    /// Log records whose write() returned (never fsynced).
    appended: AtomicU64,
    stop: AtomicBool,
}

/// Checks the files of a filesystem the writer wrote: the first `complete` files are
/// there with their content; any later one is empty or complete; the log holds at least
/// `min_log` records and nothing torn.
#[track_caller]
fn check_fs(root: &Path, what: &str, complete: u64, min_log: u64) {
    for i in 0..complete {
        let p = root.join(format!("f{i:05}.bin"));
        let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{what}: {p:?}: {e}"));
        assert_bytes(&format!("{what}: {p:?}"), 0, &got, &file_data(i));
    }
    let mut i = complete;
    loop {
        let p = root.join(format!("f{i:05}.bin"));
        let Ok(got) = std::fs::read(&p) else { break };
        assert!(
            got.is_empty() || got == file_data(i),
            "{what}: {p:?} is neither empty nor complete ({} bytes of {}): a write torn by the snapshot",
            got.len(),
            file_data(i).len()
        );
        i += 1;
    }
    let log = std::fs::read(root.join("log.bin")).unwrap_or_default();
    assert!(
        log.len().is_multiple_of(LOG_REC),
        "{what}: log.bin holds {} bytes, not whole {LOG_REC}-byte records",
        log.len()
    );
    for (j, r) in log.chunks(LOG_REC).enumerate() {
        assert!(
            r == log_record(j as u64).as_slice(),
            "{what}: log record {j} is damaged"
        );
    }
    assert!(
        (log.len() / LOG_REC) as u64 >= min_log,
        "{what}: log.bin holds {} records, but {min_log} had been appended before the snapshot (freezing must flush them)",
        log.len() / LOG_REC
    );
}

#[test]
fn snapshot_of_a_mounted_ext4_is_frozen_fsck_clean_and_holds_the_files() {
    needs!(
        Fuse,
        Root,
        Loop,
        Tool("blkid"),
        Tool("mkfs.ext4"),
        Tool("fsck.ext4"),
        Tool("fsfreeze")
    );
    let v = VolEnv::new();
    let vol = v.create(&["--size", "512M", "--name", "home"]);
    let dir = v.dir("home");
    v.mount(&vol, &dir, "ext4");

    let p = Arc::new(FsProgress {
        written: AtomicU64::new(0),
        synced: AtomicU64::new(0),
        appended: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let writer = {
        let p = p.clone();
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("log.bin"))
                .expect("open log.bin");
            let mut i = 0u64;
            let mut j = 0u64;
            while !p.stop.load(Ordering::SeqCst) && i < 5000 {
                let path = dir.join(format!("f{i:05}.bin"));
                let mut f = File::create(&path).expect("create");
                f.write_all(&file_data(i)).expect("write");
                p.written.store(i + 1, Ordering::SeqCst);
                // Every other file is fsynced, with the directory: the synced prefix.
                if i % 2 == 1 {
                    f.sync_all().expect("fsync");
                    sync_dir(&dir);
                    p.synced.store(i + 1, Ordering::SeqCst);
                }
                for _ in 0..3 {
                    log.write_all(&log_record(j)).expect("append");
                    j += 1;
                    p.appended.store(j, Ordering::SeqCst);
                }
                i += 1;
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || p.synced.load(Ordering::SeqCst)
            >= 20),
        "the writer did not get going"
    );
    let (synced, written, appended) = (
        p.synced.load(Ordering::SeqCst),
        p.written.load(Ordering::SeqCst),
        p.appended.load(Ordering::SeqCst),
    );
    let t = Instant::now();
    let snap = snap_id(&snapshot(&v, "home", "mounted ext4"));
    eprintln!(
        "snapshot of the mounted ext4 took {:?} ({synced} files fsynced, {written} written, {appended} log records before it)",
        t.elapsed()
    );
    // The writer goes on (the filesystem was thawed), then stops.
    assert!(
        wait_until(Duration::from_secs(30), || p.written.load(Ordering::SeqCst)
            >= written + 6),
        "the writer made no progress after the snapshot: was the filesystem thawed?"
    );
    p.stop.store(true, Ordering::SeqCst);
    writer.join().expect("the writer thread failed");
    let (written_end, appended_end) = (
        p.written.load(Ordering::SeqCst),
        p.appended.load(Ordering::SeqCst),
    );
    check_fs(&dir, "the source filesystem", written_end, appended_end);

    // The restored volume, attached raw: fsck finds nothing to fix (no journal replay).
    let r = restore(&v, &snap, &["--name", "home-copy"]);
    let raw = v.dir("raw");
    let file = v.attach(&r, &raw, &[]);
    let (ok, out) = sh("fsck.ext4", &["-n", "-f", &file.to_string_lossy()]);
    assert!(
        ok,
        "fsck.ext4 -n -f on the restored volume found problems:\n{out}"
    );
    v.detach(&raw);

    // Mounted elsewhere (the source still mounted): the files are there.
    let dir2 = v.dir("home-copy");
    let rec = v.mount(&r, &dir2, "ext4");
    assert_eq!(rec["VolumeId"], r.as_str(), "{rec:#}");
    check_fs(&dir2, "the restored filesystem (synced files)", synced, 0);
    check_fs(&dir2, "the restored filesystem", written, appended);
    v.unmount(&dir2);
    v.unmount(&dir);
    // Mounted and unmounted, the restored filesystem is still clean.
    let file = v.attach(&r, &raw, &[]);
    let (ok, out) = sh("fsck.ext4", &["-n", "-f", &file.to_string_lossy()]);
    assert!(
        ok,
        "fsck.ext4 -n -f on the restored volume after mount and unmount:\n{out}"
    );
    v.detach(&raw);
}

// ---- 4. incremental -----------------------------------------------------------------------

#[test]
fn a_second_snapshot_stores_only_the_changed_chunks() {
    needs!(Fuse, Tool("fio"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "256M", "--name", "inc"]);
    let dir = v.dir("inc");
    let path = v.attach(&vol, &dir, &[]);
    let file = format!("--filename={}", path.display());
    fio(
        v.scratch(),
        &[
            "--name=fill",
            &file,
            "--size=128M",
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--end_fsync=1",
        ],
        128 * MIB,
    );
    assert_eq!(v.allocated(&vol), 128 * MIB);
    let pool0 = pool_bytes(&v);
    assert!(
        pool0 >= 128 * MIB,
        "the pool holds {} after writing 128 MiB",
        mib(pool0)
    );

    let s1 = snapshot(&v, &vol, "full");
    assert_eq!(num(&s1, "DataBytes"), 128 * MIB, "{s1:#}");
    assert_eq!(num(&s1, "UniqueBytes"), 128 * MIB, "{s1:#}");
    assert_eq!(num(&s1, "SharedWithPreviousBytes"), 0, "{s1:#}");
    let pool1 = pool_bytes(&v);
    assert!(
        pool1 <= pool0 + MIB,
        "snapshot create is metadata only, but the pool grew from {} to {}",
        mib(pool0),
        mib(pool1)
    );

    // Change 4 MiB (about 1.5 % of the volume), unaligned: chunks 10..=14.
    let f = open_rw(&path);
    let off = 10 * MIB + 512 * KIB;
    let old = pread(&f, off, 4 * MIB as usize);
    let new = Rng::from_env(0x5a17_0000_0000_0004).bytes(4 * MIB as usize);
    write_synced(&f, off, &new);
    let pool2 = pool_bytes(&v);
    let grew = pool2.saturating_sub(pool1);
    eprintln!(
        "pool on disk: {} after 128 MiB, {} after snapshot 1, {} after changing 4 MiB (+{})",
        mib(pool0),
        mib(pool1),
        mib(pool2),
        mib(grew)
    );
    assert!(
        (4 * MIB..=6 * MIB).contains(&grew),
        "changing 4 MiB after a snapshot grew the pool by {} (copy-on-write of 5 chunks expected)",
        mib(grew)
    );

    next_second();
    let s2 = snapshot(&v, &vol, "incremental");
    let pool3 = pool_bytes(&v);
    assert_eq!(num(&s2, "DataBytes"), 128 * MIB, "{s2:#}");
    let unique = num(&s2, "UniqueBytes");
    let shared = num(&s2, "SharedWithPreviousBytes");
    assert!(
        (4 * MIB..=6 * MIB).contains(&unique),
        "snapshot 2 after changing 4 MiB: UniqueBytes {} (want the changed chunks, <= 6 MiB): {s2:#}",
        mib(unique)
    );
    assert!(
        shared >= 122 * MIB,
        "snapshot 2: SharedWithPreviousBytes {} (want about 124 MiB): {s2:#}",
        mib(shared)
    );
    assert_eq!(shared + unique, 128 * MIB, "{s2:#}");
    assert!(
        pool3 <= pool2 + MIB,
        "snapshot 2 is metadata only, but the pool grew from {} to {}",
        mib(pool2),
        mib(pool3)
    );
    assert!(
        pool3 - pool1 <= 6 * MIB,
        "two snapshots of a 128 MiB volume with 4 MiB changed cost {} more than the first",
        mib(pool3 - pool1)
    );
    // describe agrees with what create printed, and the first one is unchanged.
    let d2 = describe_snap(&v, &snap_id(&s2));
    assert_eq!(num(&d2, "UniqueBytes"), unique, "{d2:#}");
    assert_eq!(num(&d2, "SharedWithPreviousBytes"), shared, "{d2:#}");
    let d1 = describe_snap(&v, &snap_id(&s1));
    assert_eq!(num(&d1, "UniqueBytes"), 128 * MIB, "{d1:#}");

    // Each snapshot holds its own version of the changed range.
    for (s, want, what) in [(&s1, &old, "snapshot 1"), (&s2, &new, "snapshot 2")] {
        let r = restore(&v, &snap_id(s), &[]);
        let d = v.dir(&snap_id(s));
        let g = open_rw(&v.attach(&r, &d, &[]));
        check(&g, &format!("restore of {what}"), off, want);
        drop(g);
        v.detach(&d);
    }
    drop(f);
    v.detach(&dir);
}

// ---- 5. delete frees only what nothing else uses ---------------------------------------

/// The pool's disk use is the same, give or take the host filesystem's extent blocks (a
/// freed chunk would be 1 MiB).
#[track_caller]
fn assert_pool_unchanged(before: u64, after: u64, what: &str) {
    assert!(
        before.abs_diff(after) <= 64 * KIB,
        "{what} changed the pool's disk use: {} -> {}",
        mib(before),
        mib(after)
    );
}

#[test]
fn deleting_snapshots_and_volumes_frees_exactly_the_unshared_chunks() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "del"]);
    let dir = v.dir("del");
    let path = v.attach(&vol, &dir, &[]);
    let mut rng = Rng::from_env(0x5a17_0000_0000_0005);
    let mut data = rng.bytes(32 * MIB as usize);
    let f = open_rw(&path);
    write_synced(&f, 0, &data);

    // A snapshot whose chunks the volume still uses, deleted while attached.
    let base = pool_bytes(&v);
    let s1 = snap_id(&snapshot(&v, &vol, "s1"));
    v.json(&["snapshot", "delete", &s1]);
    assert!(!list_ids(&v, None).contains(&s1), "s1 is still listed");
    drop(f);
    v.detach(&dir);
    assert_pool_unchanged(
        base,
        pool_bytes(&v),
        "deleting a snapshot whose chunks the volume uses (then detach)",
    );

    // A snapshot, then 8 whole chunks overwritten (copied on write), then the snapshot
    // deleted offline: the 8 old chunks, which only it held, are freed.
    let f = open_rw(&v.attach(&vol, &dir, &[]));
    check(&f, "volume after deleting s1", 0, &data);
    let s2 = snap_id(&snapshot(&v, &vol, "s2"));
    let fresh = rng.bytes(8 * MIB as usize);
    write_synced(&f, 8 * MIB, &fresh);
    data[8 * MIB as usize..16 * MIB as usize].copy_from_slice(&fresh);
    drop(f);
    v.detach(&dir);
    assert!(v.wait_no_daemon(Duration::from_secs(10)));
    let with_s2 = pool_bytes(&v);
    assert!(
        with_s2 >= base + 8 * MIB,
        "the overwrite was not copied: pool {} (was {})",
        mib(with_s2),
        mib(base)
    );
    v.json(&["snapshot", "delete", &s2]);
    let after_s2 = pool_bytes(&v);
    let freed = with_s2.saturating_sub(after_s2);
    // The host filesystem's extent blocks count too: a few KiB either way.
    assert!(
        (8 * MIB - 64 * KIB..=8 * MIB + 256 * KIB).contains(&freed),
        "deleting s2 freed {} (want the 8 chunks only it held): pool {} -> {}",
        mib(freed),
        mib(with_s2),
        mib(after_s2)
    );
    assert_eq!(v.allocated(&vol), 32 * MIB);

    // A snapshot, then the volume deleted: the snapshot keeps its chunks and restores.
    let s3 = snap_id(&snapshot(&v, &vol, "s3"));
    let before_del = pool_bytes(&v);
    v.json(&["volume", "delete", &vol, "--yes"]);
    assert_pool_unchanged(
        before_del,
        pool_bytes(&v),
        "deleting a volume whose chunks a snapshot holds",
    );
    let d3 = describe_snap(&v, &s3);
    assert_eq!(d3["VolumeId"], vol.as_str(), "{d3:#}");
    assert_eq!(num(&d3, "DataBytes"), 32 * MIB, "{d3:#}");
    let r = restore(&v, &s3, &["--name", "del"]);
    let f = open_rw(&v.attach(&r, &dir, &[]));
    check(&f, "restore of a deleted volume's snapshot", 0, &data);
    drop(f);
    v.detach(&dir);
    v.json(&["volume", "delete", &r, "--yes"]);
    assert_pool_unchanged(
        before_del,
        pool_bytes(&v),
        "deleting a restored volume whose chunks the snapshot holds",
    );

    // The last reference goes: the space returns.
    v.json(&["snapshot", "delete", &s3]);
    let end = pool_bytes(&v);
    assert!(
        end <= MIB,
        "with no volume and no snapshot left the pool still holds {} on disk (was {})",
        mib(end),
        mib(before_del)
    );
    assert_eq!(list_snaps(&v, None), Vec::<Value>::new());
    v.assert_pool_clean("local-1");
}

// ---- 6. errors ----------------------------------------------------------------------------

const UNKNOWN_VOL: &str = "vol-0123456789abcdef0";
const UNKNOWN_SNAP: &str = "snap-0123456789abcdef0";

/// The files under the data dir but the pool's redb file (every open commits its header);
/// see [`DirState::files_only`].
fn files(v: &VolEnv) -> DirState {
    DirState::of(&v.data, &[POOL_META]).files_only()
}

/// Runs `args`, which must fail with `code` and one `cryptvol: ` line; checks that the
/// volumes, the snapshots, the pool's disk use and the other files are as before, and
/// that no daemon was started. Returns the line.
#[track_caller]
fn refused(v: &VolEnv, args: &[&str], code: i32) -> String {
    let vols = v.json(&["volume", "list"]);
    let snaps = list_snaps(v, None);
    let (before, pool) = (files(v), pool_bytes(v));
    let had_daemon = !daemons_of(&v.data).is_empty();
    let line = v.run(args).fails(code);
    let cmd = args.join(" ");
    assert_eq!(
        v.json(&["volume", "list"]),
        vols,
        "`{cmd}` failed but changed the volumes"
    );
    assert_eq!(
        list_snaps(v, None),
        snaps,
        "`{cmd}` failed but changed the snapshots"
    );
    files(v).assert_unchanged_since(&before, &format!("`{cmd}`"));
    assert_eq!(pool_bytes(v), pool, "`{cmd}` failed but changed the pool");
    if !had_daemon {
        assert!(
            v.wait_no_daemon(Duration::from_secs(5)),
            "`{cmd}` failed but left a daemon running"
        );
    }
    line
}

/// Every refusal of the snapshot commands against a region holding volume `src` (64 MiB) with snapshot
/// `snap`, and `gone`, a deleted snapshot.
fn all_refusals(v: &VolEnv, snap: &str, gone: &str) {
    // Unknown volume.
    for vol in [UNKNOWN_VOL, "nope"] {
        let l = refused(v, &["snapshot", "create", vol], 3);
        assert!(l.contains(vol), "{l}");
        refused(v, &["snapshot", "list", "--volume", vol], 3);
    }
    // Unknown (or deleted) snapshot: describe, delete, restore.
    for s in [UNKNOWN_SNAP, gone, "src"] {
        for args in [
            vec!["snapshot", "describe", s],
            vec!["snapshot", "delete", s],
            vec!["volume", "create", "--from-snapshot", s],
            vec!["volume", "create", "--from-snapshot", s, "--name", "fresh"],
        ] {
            let l = refused(v, &args, 3);
            assert!(l.contains(s), "the error does not name {s}: {l}");
        }
    }
    // Restore smaller than the snapshot.
    for size in ["32M", "1M", "67104768"] {
        let l = refused(
            v,
            &["volume", "create", "--from-snapshot", snap, "--size", size],
            6,
        );
        assert!(l.contains("size"), "{l}");
    }
    // A name that is taken (the source's), by a restore.
    let l = refused(
        v,
        &["volume", "create", "--from-snapshot", snap, "--name", "src"],
        9,
    );
    assert!(l.contains("src"), "{l}");
    // A description over 255 characters.
    let long = "d".repeat(256);
    refused(v, &["snapshot", "create", "src", "--description", &long], 6);
}

#[test]
fn snapshot_errors_offline_are_one_line_with_their_exit_code_and_change_nothing() {
    let v = VolEnv::new();
    let src = v.create(&["--size", "64M", "--name", "src"]);
    let snap = snap_id(&snapshot(&v, &src, "keep"));
    let gone = snap_id(&snapshot(&v, "src", "gone"));
    v.json(&["snapshot", "delete", &gone]);
    all_refusals(&v, &snap, &gone);
    // What was refused is still possible where valid.
    let r = restore(&v, &snap, &["--size", "64M", "--name", "copy"]);
    assert_eq!(num(&v.describe_vol(&r), "SizeBytes"), 64 * MIB);
}

#[test]
fn snapshot_errors_through_the_daemon_are_one_line_with_their_exit_code_and_change_nothing() {
    needs!(Fuse);
    let v = VolEnv::new();
    let src = v.create(&["--size", "64M", "--name", "src"]);
    let dir = v.dir("src");
    let f = open_rw(&v.attach(&src, &dir, &[]));
    write_synced(&f, 0, &[7u8; 8192]);
    let snap = snap_id(&snapshot(&v, &src, "keep"));
    let gone = snap_id(&snapshot(&v, "src", "gone"));
    v.json(&["snapshot", "delete", &gone]);
    assert!(!daemons_of(&v.data).is_empty());
    all_refusals(&v, &snap, &gone);
    // The attached volume is unharmed.
    check(
        &f,
        "the attached volume after the refusals",
        0,
        &[7u8; 8192],
    );
    drop(f);
    v.detach(&dir);
}

// ---- 7. a large volume ------------------------------------------------------------------

/// Snapshot and restore of a 10 GiB volume with 2 GiB of chunks mapped copy no data: the
/// pool takes no more space, and the restore reads back the same bytes. How long they
/// take is measured by bench/snapshots.sh, not asserted here.
#[test]
fn snapshot_and_restore_of_a_10g_volume_with_2g_mapped_copy_no_data() {
    needs!(Fuse, Tool("fio"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "10G", "--name", "big"]);
    let dir = v.dir("big");
    let path = v.attach(&vol, &dir, &[]);
    // 512 MiB written in full by fio (2 GiB takes too long through a debug build), and
    // one 4 KiB block in each of the next 1536 chunks: 2 GiB of chunks mapped, the same
    // map (and snapshot work) as 2 GiB written.
    let file = format!("--filename={}", path.display());
    fio(
        v.scratch(),
        &[
            "--name=fill",
            &file,
            "--size=512M",
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--end_fsync=1",
        ],
        512 * MIB,
    );
    let f = open_rw(&path);
    let block = Rng::from_env(0x5a17_0000_0000_0007).bytes(BLOCK as usize);
    for c in 512..2048u64 {
        pwrite(&f, c * MIB + (c % 256) * BLOCK, &block);
    }
    f.sync_all().expect("fsync");
    assert_eq!(v.allocated(&vol), 2 * GIB);
    let pool = pool_bytes(&v);

    let s = snapshot(&v, &vol, "big");
    assert_eq!(num(&s, "DataBytes"), 2 * GIB, "{s:#}");
    let r = restore(&v, &snap_id(&s), &["--name", "big-copy"]);
    assert_eq!(
        pool_bytes(&v),
        pool,
        "snapshot create or restore copied data: not metadata-only"
    );
    // Spot checks: the restored volume holds the same bytes.
    let d2 = v.dir("big-copy");
    let g = open_rw(&v.attach(&r, &d2, &[]));
    for off in [0, 100 * MIB + 12345, 511 * MIB, 1000 * MIB, 2 * GIB - MIB] {
        let want = pread(&f, off, MIB as usize);
        check(&g, "restore of the large volume", off, &want);
    }
    drop((f, g));
    v.detach(&d2);
    v.detach(&dir);

    // Offline, the same volume snapshots the same way.
    assert!(v.wait_no_daemon(Duration::from_secs(10)));
    let s = snapshot(&v, &vol, "offline");
    assert_eq!(num(&s, "DataBytes"), 2 * GIB, "{s:#}");
    assert_eq!(pool_bytes(&v), pool, "the offline snapshot copied data");
}

// ---- 8. with the daemon and offline ------------------------------------------------------

/// The fields `describe` shows for a snapshot of `vol`.
#[track_caller]
fn check_described(v: &VolEnv, s: &Value, vol: &str, name: &str, size: u64, t0: i64) {
    assert_eq!(s["VolumeId"], vol, "{s:#}");
    assert_eq!(s["VolumeName"], name, "{s:#}");
    assert_eq!(num(s, "VolumeSize"), size, "{s:#}");
    assert_eq!(s["Encrypted"], true, "{s:#}");
    assert_eq!(s["State"], "completed", "{s:#}");
    let key = v.describe_vol(vol)["KmsKeyId"].clone();
    assert!(
        key.as_str()
            .is_some_and(|k| k.starts_with("arn:aws:kms:local-1:")),
        "{key}"
    );
    assert_eq!(s["KmsKeyId"], key, "{s:#}");
    let t = unix_time(&s["StartTime"]);
    assert!(
        (t0 - 1..=now() + 1).contains(&t),
        "StartTime {t} is not between {t0} and now: {s:#}"
    );
}

#[test]
fn snapshots_work_with_the_daemon_running_and_offline() {
    needs!(Fuse);
    let v = VolEnv::new();
    let t0 = now();
    let vol = v.create(&["--size", "32M", "--name", "db"]);
    let dir = v.dir("db");
    let path = v.attach(&vol, &dir, &[]);
    let mut rng = Rng::from_env(0x5a17_0000_0000_0008);
    let x = rng.bytes(3 * MIB as usize + 100);
    let f = open_rw(&path);
    // Acknowledged but not fsynced: the snapshot commits pending writes first, so it holds
    // everything written before it (Pool::create_snapshot).
    pwrite(&f, 5 * MIB + 7, &x);

    // Daemon running (the volume attached): create, list, describe, restore.
    let sa = snapshot(&v, "db", "online");
    let a = snap_id(&sa);
    check_described(&v, &sa, &vol, "db", 32 * MIB, t0);
    assert_eq!(num(&sa, "DataBytes"), 4 * MIB, "{sa:#}");
    assert_eq!(list_ids(&v, None), vec![a.clone()]);
    assert_eq!(list_ids(&v, Some("db")), vec![a.clone()]);
    assert_eq!(list_ids(&v, Some(&vol)), vec![a.clone()]);
    let da = describe_snap(&v, &a);
    assert_eq!(da, sa, "describe differs from what create printed");
    // Restore, larger than the snapshot, through the daemon.
    let ra = restore(&v, &a, &["--name", "db-online", "--size", "48M"]);
    let ra_desc = v.describe_vol(&ra);
    assert_eq!(num(&ra_desc, "SizeBytes"), 48 * MIB, "{ra_desc:#}");
    assert_eq!(ra_desc["KmsKeyId"], sa["KmsKeyId"], "{ra_desc:#}");
    assert_eq!(num(&ra_desc, "AllocatedBytes"), 4 * MIB, "{ra_desc:#}");
    let d_ra = v.dir("db-online");
    let p_ra = v.attach(&ra, &d_ra, &[]);
    assert_eq!(std::fs::metadata(&p_ra).unwrap().len(), 48 * MIB);
    let g = open_rw(&p_ra);
    check(&g, "restore made through the daemon", 5 * MIB + 7, &x);
    check_zeros(&g, "restore beyond the snapshot's size", 32 * MIB, 16 * MIB);
    // The larger restored volume is writable to its end.
    write_synced(&g, 48 * MIB - 4096, &[9u8; 4096]);
    drop((f, g));
    v.detach(&d_ra);
    v.detach(&dir);
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the daemon still runs with nothing attached"
    );

    // Offline: the same commands open the pool themselves and start no daemon.
    next_second();
    let sb = snapshot(&v, "db", "offline");
    let b = snap_id(&sb);
    assert!(
        daemons_of(&v.data).is_empty(),
        "an offline snapshot started a daemon"
    );
    check_described(&v, &sb, &vol, "db", 32 * MIB, t0);
    assert_eq!(num(&sb, "DataBytes"), 4 * MIB, "{sb:#}");
    assert_eq!(num(&sb, "SharedWithPreviousBytes"), 4 * MIB, "{sb:#}");
    assert_eq!(num(&sb, "UniqueBytes"), 0, "{sb:#}");
    assert_eq!(list_ids(&v, None), vec![a.clone(), b.clone()]);
    assert_eq!(list_ids(&v, Some("db")), vec![a.clone(), b.clone()]);
    // The restored volume's own snapshots are not the source's.
    assert_eq!(list_ids(&v, Some("db-online")), Vec::<String>::new());
    assert_eq!(describe_snap(&v, &b), sb);
    let rb = restore(&v, &b, &["--name", "db-offline"]);
    assert!(
        daemons_of(&v.data).is_empty(),
        "an offline restore started a daemon"
    );
    let rb_desc = v.describe_vol(&rb);
    assert_eq!(num(&rb_desc, "SizeBytes"), 32 * MIB, "{rb_desc:#}");
    assert_eq!(rb_desc["State"], "available", "{rb_desc:#}");
    // A snapshot of the restored volume (offline), and its restore.
    let sc = snapshot(&v, "db-online", "of a restore");
    assert_eq!(num(&sc, "DataBytes"), 5 * MIB, "{sc:#}");
    let rc = restore(&v, &snap_id(&sc), &[]);

    let d_rb = v.dir("db-offline");
    let g = open_rw(&v.attach(&rb, &d_rb, &[]));
    check(&g, "restore made offline", 5 * MIB + 7, &x);
    let d_rc = v.dir("rc");
    let h = open_rw(&v.attach(&rc, &d_rc, &[]));
    assert_eq!(
        std::fs::metadata(d_rc.join("volume")).unwrap().len(),
        48 * MIB
    );
    check(&h, "restore of a restore's snapshot", 5 * MIB + 7, &x);
    check(
        &h,
        "restore of a restore's snapshot, end",
        48 * MIB - 4096,
        &[9u8; 4096],
    );
    drop((g, h));
    v.detach(&d_rb);
    v.detach(&d_rc);

    // Delete offline too.
    assert!(v.wait_no_daemon(Duration::from_secs(10)));
    v.json(&["snapshot", "delete", &a]);
    assert_eq!(list_ids(&v, Some("db")), vec![b.clone()]);
    let sb2 = describe_snap(&v, &b);
    assert_eq!(
        num(&sb2, "UniqueBytes"),
        4 * MIB,
        "with the earlier snapshot deleted, all of b's chunks are its own: {sb2:#}"
    );
}

// ---- 9. order within one second ---------------------------------------------------------

#[test]
fn snapshots_taken_within_one_second_are_listed_in_order_and_compared_with_the_right_one() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "16M", "--name", "quick"]);
    let dir = v.dir("quick");
    let f = open_rw(&v.attach(&vol, &dir, &[]));
    write_synced(&f, 0, &Rng::new(9).bytes(2 * MIB as usize));
    // Eight snapshots in quick succession (a few tens of ms each), nothing changed
    // between them: each shares everything with the one before.
    next_second();
    let mut made = vec![];
    for k in 0..8 {
        made.push(snap_id(&snapshot(&v, &vol, &format!("quick {k}"))));
    }
    let listed = list_ids(&v, Some(&vol));
    assert_eq!(
        listed, made,
        "snapshot list is not oldest first (creation order) for snapshots taken within the same second"
    );
    for (k, id) in made.iter().enumerate() {
        let d = describe_snap(&v, id);
        let (shared, unique) = (num(&d, "SharedWithPreviousBytes"), num(&d, "UniqueBytes"));
        let want = if k == 0 { (0, 2 * MIB) } else { (2 * MIB, 0) };
        assert_eq!(
            (shared, unique),
            want,
            "snapshot {k} of 8 taken in quick succession, nothing changed between: (SharedWithPreviousBytes, UniqueBytes) compared with the wrong previous snapshot: {d:#}"
        );
    }
    drop(f);
    v.detach(&dir);
}

/// The issue's own words: a snapshot taken during a running fio write job on a mounted
/// ext4; fio's verify of the live data passes, and the restored snapshot is fsck-clean.
#[test]
fn snapshot_during_a_running_fio_job_then_fio_verify_and_fsck_pass() {
    needs!(
        Fuse,
        Root,
        Loop,
        Tool("fio"),
        Tool("mkfs.ext4"),
        Tool("fsck.ext4"),
        Tool("fsfreeze")
    );
    let v = VolEnv::new();
    let vol = v.create(&["--size", "256M"]);
    let mnt = v.dir("mnt");
    v.mount(&vol, &mnt, "ext4");
    let file = mnt.join("fio.dat").to_string_lossy().to_string();
    let mut job = std::process::Command::new("fio")
        .current_dir(v.dir("fio-cwd"))
        .args([
            "--name=live",
            &format!("--filename={file}"),
            "--size=48M",
            "--rw=randwrite",
            "--bs=4k",
            "--ioengine=libaio",
            "--iodepth=8",
            "--direct=1",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--loops=2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start fio");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        job.try_wait().unwrap().is_none(),
        "fio ended before the snapshot"
    );
    let snap = str_field(&v.json(&["snapshot", "create", &vol]), "SnapshotId");
    let out = job.wait_with_output().expect("fio ran");
    assert!(
        out.status.success(),
        "fio's verify of the live volume failed after a snapshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v.unmount(&mnt);

    let restored = str_field(
        &v.json(&["volume", "create", "--from-snapshot", &snap]),
        "VolumeId",
    );
    let raw = v.attach(&restored, &v.dir("raw"), &[]);
    let (ok, msg) = sh("fsck.ext4", &["-n", "-f", &raw.to_string_lossy()]);
    assert!(ok, "the snapshot taken under fio is not fsck-clean: {msg}");
    v.detach(&v.dir("raw"));
}
