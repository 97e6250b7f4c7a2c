//! `cryptvol attach`: a volume served as the FUSE file DIR/volume, driven from Rust and fio.
//!
//! What it checks: random aligned and unaligned I/O matches an in-memory model, unwritten
//! areas read zeros, data persists across detach and attach, one attachment per volume,
//! plaintext never reaches the pool, fsynced data survives kill -9 of the daemon, punch-hole
//! frees chunks, customer keys are checked before anything is mounted, a full disk gives
//! ENOSPC and recovers, and fio's crc32c verification passes.
//!
//! Every test needs FUSE; without it they skip, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI),
//! which makes them fail. Each test's `VolEnv` guard detaches whatever the test attached.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mount::*;
use common::str_field;
use serde_json::Value;

/// The single entry `status` lists for `vol`, checked against `dir` and `size`.
#[track_caller]
fn status_entry(v: &VolEnv, vol: &str, dir: &Path, size: u64) -> Value {
    let st = v.status();
    let vols = st["Volumes"].as_array().expect("Volumes");
    let e = vols
        .iter()
        .find(|e| e["VolumeId"] == vol)
        .unwrap_or_else(|| panic!("status does not list {vol}: {st:#}"))
        .clone();
    assert_eq!(e["AttachedAt"], dir.to_string_lossy().as_ref(), "{st:#}");
    assert_eq!(e["Size"], size, "{st:#}");
    let pid = st["DaemonPid"].as_i64().expect("DaemonPid while attached") as i32;
    assert!(
        process_alive(pid),
        "status names daemon {pid}, which is not running"
    );
    e
}

/// After the last detach the daemon exits and `status` is empty.
#[track_caller]
fn assert_nothing_attached(v: &VolEnv) {
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the region daemon still runs 10 s after the last detach: {:?}",
        daemons_of(&v.data)
    );
    let st = v.status();
    assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
    assert!(st["DaemonPid"].is_null(), "{st:#}");
}

// ---- 1. random I/O against a model ----------------------------------------------------

/// The bytes the test believes are in two windows of the volume, and the chunks written.
struct Model {
    regions: Vec<(u64, Vec<u8>)>,
    chunks: BTreeSet<u64>,
}

impl Model {
    fn write(&mut self, r: usize, off: u64, data: &[u8]) {
        let (base, bytes) = &mut self.regions[r];
        bytes[off as usize..off as usize + data.len()].copy_from_slice(data);
        let a = *base + off;
        for c in a / CHUNK..=(a + data.len() as u64 - 1) / CHUNK {
            self.chunks.insert(c);
        }
    }

    #[track_caller]
    fn check(&self, f: &File, what: &str) {
        for (base, bytes) in &self.regions {
            for (i, piece) in bytes.chunks(MIB as usize).enumerate() {
                let off = base + i as u64 * MIB;
                assert_bytes(what, off, &pread(f, off, piece.len()), piece);
            }
        }
    }
}

/// An op's (offset in region, length, aligned to 4 KiB) with a mix of sizes: tiny, odd
/// lengths crossing 4 KiB blocks, aligned runs, and runs crossing 1 MiB chunk boundaries.
fn pick(rng: &mut Rng, region_len: u64) -> (u64, usize, bool) {
    let k = rng.below(100);
    let (off, len, aligned) = if k < 30 {
        let len = rng.range(1, 64);
        (rng.below(region_len - len + 1), len, false)
    } else if k < 65 {
        let len = rng.range(100, 16 * KIB + 500);
        (rng.below(region_len - len + 1), len, false)
    } else if k < 85 {
        let len = rng.range(1, 48) * BLOCK;
        (rng.below((region_len - len) / BLOCK + 1) * BLOCK, len, true)
    } else {
        // Across a chunk boundary, starting anywhere (odd offsets included).
        let len = rng.range(2, 1200 * KIB);
        let boundary = rng.range(1, region_len / CHUNK - 1) * CHUNK;
        let before = rng.range(1, len - 1).min(boundary);
        let off = (boundary - before).min(region_len - len);
        (off, len, false)
    };
    (off, len as usize, aligned)
}

#[test]
fn random_aligned_and_unaligned_io_matches_a_model_and_persists() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "1G", "--name", "model"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        GIB,
        "size of {path:?}"
    );
    status_entry(&v, &vol, &dir, GIB);

    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0001);
    // The first 6 MiB and the last 3 MiB of the volume.
    let mut m = Model {
        regions: vec![(0, vec![0; 6 << 20]), (GIB - 3 * MIB, vec![0; 3 << 20])],
        chunks: BTreeSet::new(),
    };
    let f = open_rw(&path);
    let fd = open_direct(&path);
    const OPS: usize = 3000;
    for op in 0..OPS {
        let r = usize::from(rng.below(10) >= 8);
        let (base, len_r) = (m.regions[r].0, m.regions[r].1.len() as u64);
        let (off, len, aligned) = pick(&mut rng, len_r);
        let abs = base + off;
        let direct = aligned && rng.below(2) == 0;
        if rng.below(100) < 55 {
            let data = rng.bytes(len);
            if direct {
                let mut b = AlignedBuf::new(len);
                b.as_mut_slice().copy_from_slice(&data);
                pwrite(&fd, abs, b.as_slice());
            } else {
                pwrite(&f, abs, &data);
            }
            m.write(r, off, &data);
        } else {
            let want = &m.regions[r].1[off as usize..off as usize + len];
            let what = format!("op {op}: read {len} bytes at {abs} (direct: {direct})");
            if direct {
                let mut b = AlignedBuf::new(len);
                fd.read_exact_at(b.as_mut_slice(), abs)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_bytes(&what, abs, b.as_slice(), want);
            } else {
                assert_bytes(&what, abs, &pread(&f, abs, len), want);
            }
        }
        if op % 1000 == 999 {
            m.check(&f, &format!("full check after op {op}"));
        }
        if op % 700 == 350 {
            f.sync_all().expect("fsync");
        }
    }
    m.check(&f, "after all ops");

    // Never-written areas read zeros: between the windows, and in the middle.
    for off in [6 * MIB, 7 * MIB + 123, 512 * MIB, GIB - 4 * MIB] {
        assert_zeros("an unwritten area", off, &pread(&f, off, MIB as usize));
    }
    // The end of the file is the end of the volume.
    let mut tail = [0u8; 100];
    assert_eq!(
        f.read_at(&mut tail, GIB - 10).unwrap(),
        10,
        "read across the end"
    );
    assert_eq!(f.read_at(&mut tail, GIB).unwrap(), 0, "read at the end");
    for (off, len) in [(GIB, 10), (GIB - 5, 10)] {
        let e = f
            .write_at(&[7u8; 10], off)
            .expect_err("a write past the end of the volume must fail");
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EFBIG),
            "write of {len} at {off}: {e}"
        );
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), GIB);
    m.check(&f, "after the refused writes at the end");

    // Thin: exactly the chunks written take pool space.
    let want_alloc = m.chunks.len() as u64 * CHUNK;
    assert_eq!(
        v.allocated(&vol),
        want_alloc,
        "chunks written: {:?}",
        m.chunks
    );
    assert_eq!(
        status_entry(&v, &vol, &dir, GIB)["AllocatedBytes"],
        want_alloc
    );

    f.sync_all().expect("fsync");
    drop((f, fd));
    v.detach(&dir);
    assert_nothing_attached(&v);
    assert_eq!(v.allocated(&vol), want_alloc, "allocation after detach");

    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    m.check(&f, "after detach and attach");
    for off in [6 * MIB, 512 * MIB] {
        assert_zeros(
            "an unwritten area after attach",
            off,
            &pread(&f, off, MIB as usize),
        );
    }
    drop(f);
    v.detach(&dir);
    assert_nothing_attached(&v);
}

// ---- one attachment per volume; status ---------------------------------------------------

/// The region daemon runs with two malloc arenas (`MALLOC_ARENA_MAX`, docs/cli.md) unless
/// its caller set the variable: glibc otherwise gave each FUSE thread that ran a commit an
/// arena of its own, kept as large as that commit, and the daemon's memory grew with them.
/// The volume tests run over the FUSE transport the runner chose: CI runs this file (and
/// the other volume suites) a second time with `CRYPTVOL_FUSE_TRANSPORT=classic`; this
/// checks that those runs really went through `/dev/fuse`, and the default ones through
/// the ring where the kernel has it.
#[test]
fn attaches_serve_over_the_transport_the_runner_chose() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "t"]);
    let dir = v.dir("t");
    let path = v.attach(&vol, &dir, &[]);
    // The ring reports itself once a request went through it.
    let f = open_rw(&path);
    f.write_all_at(b"which transport", 4096).unwrap();
    f.sync_all().unwrap();
    let ring_here = Path::new(FUSE_RING_KNOB).exists() && is_root();
    let chosen = std::env::var("CRYPTVOL_FUSE_TRANSPORT").unwrap_or_default();
    let want = match chosen.as_str() {
        "classic" => "/dev/fuse",
        "uring" => "io_uring",
        _ if ring_here => "io_uring",
        _ => "/dev/fuse",
    };
    assert_eq!(
        transport(&v, &dir),
        want,
        "CRYPTVOL_FUSE_TRANSPORT={chosen:?}, ring available: {ring_here}"
    );
    drop(f);
    v.detach(&dir);
}

/// `CRYPTVOL_FUSE_TRANSPORT=` (set but empty, as a script that clears it leaves it) means
/// the default, as an unset variable does; it was refused as a usage error (exit 2).
#[test]
fn an_empty_transport_variable_means_the_default() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "e"]);
    let dir = v.dir("e");
    let out = v.attach_run_env(&vol, &dir, &[], &[("CRYPTVOL_FUSE_TRANSPORT", "")]);
    assert_eq!(out.code, 0, "an empty CRYPTVOL_FUSE_TRANSPORT: {out:?}");
    let f = open_rw(&canon(&dir).join("volume"));
    f.write_all_at(b"default transport", 0).unwrap();
    f.sync_all().unwrap();
    let ring_here = Path::new(FUSE_RING_KNOB).exists() && is_root();
    let want = if ring_here { "io_uring" } else { "/dev/fuse" };
    assert_eq!(transport(&v, &dir), want, "ring available: {ring_here}");
    drop(f);
    v.detach(&dir);
}

/// A mount unmounted from outside (`umount -l DIR`) is still detached by `cryptvol
/// detach`: before, the daemon's unmount failed (EINVAL) and the volume stayed attached
/// until the daemon died. With a file still open under it, the lazily unmounted connection
/// lives on; detach ends it, so that the holder's I/O fails instead of reaching a volume
/// that is no longer attached (and may be attached again elsewhere).
#[test]
fn a_mount_unmounted_from_outside_still_detaches() {
    needs!(Fuse, Root);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "u"]);
    let (d1, d2) = (v.dir("u1"), v.dir("u2"));
    let file = v.attach(&vol, &d1, &[]);
    pwrite(&open_rw(&file), 8192, b"before the outside unmount");
    let lazy = |d: &Path| {
        let st = std::process::Command::new("umount")
            .arg("-l")
            .arg(d)
            .status()
            .unwrap();
        assert!(st.success(), "umount -l {d:?}");
    };
    // Nothing open under it.
    lazy(&d1);
    v.run(&["detach", d1.to_str().unwrap()]).ok();
    assert_eq!(
        v.status()["Volumes"],
        serde_json::json!([]),
        "still attached"
    );

    // A file still open under it.
    let file = v.attach(&vol, &d2, &[]);
    let held = open_rw(&file);
    assert_eq!(pread(&held, 8192, 26), b"before the outside unmount");
    lazy(&d2);
    v.run(&["detach", d2.to_str().unwrap()]).ok();
    assert_eq!(
        v.status()["Volumes"],
        serde_json::json!([]),
        "still attached"
    );
    let mut buf = [0u8; 16];
    let e = held
        .read_at(&mut buf, 0)
        .expect_err("I/O through a connection detach ended");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "{e}");
    drop(held);

    // The volume attaches again, with what was written.
    let file = v.attach(&vol, &d1, &[]);
    assert_eq!(
        pread(&open_rw(&file), 8192, 26),
        b"before the outside unmount"
    );
    v.detach(&d1);
    assert_nothing_attached(&v);
}

#[test]
fn the_daemon_runs_with_two_malloc_arenas_unless_its_caller_chose() {
    needs!(Fuse);
    let v = VolEnv::new();
    let a = v.create(&["--size", "64M", "--name", "a"]);
    let d = v.dir("d");
    v.attach(&a, &d, &[]);
    let pid = v.daemon_pid().expect("a daemon while attached");
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("the daemon's environment");
    let want = format!(
        "MALLOC_ARENA_MAX={}",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into())
    );
    let arenas: Vec<String> = env
        .split(|b| *b == 0)
        .filter(|kv| kv.starts_with(b"MALLOC_ARENA_MAX="))
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect();
    assert_eq!(arenas, vec![want], "daemon {pid}");
    v.detach(&d);
    assert_nothing_attached(&v);
}

#[test]
fn a_volume_attaches_once_and_status_lists_it() {
    needs!(Fuse);
    let v = VolEnv::new();
    let a = v.create(&["--size", "256M", "--name", "a"]);
    let b = v.create(&["--size", "128M", "--name", "b"]);
    let (d1, d2) = (v.dir("d1"), v.dir("d2"));
    let st = v.status();
    assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
    assert!(st["DaemonPid"].is_null(), "{st:#}");

    // By name; the result names the id.
    let file = v.attach("a", &d1, &[]);
    status_entry(&v, &a, &d1, 256 * MIB);
    let d = v.describe_vol(&a);
    assert_eq!(d["State"], "in-use", "{d:#}");
    assert_eq!(d["AttachedAt"], d1.to_string_lossy().as_ref(), "{d:#}");
    let f = open_rw(&file);
    pwrite(&f, 4097, b"still served");

    // The same volume elsewhere, or again at the same place: refused (exit 4).
    for (what, target) in [("another dir", &d2), ("the same dir", &d1)] {
        let line = v.attach_run(&a, target, &[]).fails(4);
        assert!(line.contains(&a), "{what}: {line}");
        assert!(line.contains("attached"), "{what}: {line}");
    }
    assert!(
        !is_mount_point(&d2),
        "a refused attach left a mount at {d2:?}"
    );
    assert!(!d2.join("volume").exists());
    // Another volume on a dir already in use: refused too, and the first one keeps working.
    let line = v.attach_run(&b, &d1, &[]).fails(4);
    assert!(line.contains(&d1.to_string_lossy().to_string()), "{line}");
    assert_eq!(
        pread(&f, 4097, 12),
        b"still served",
        "the first attachment broke"
    );
    let st = v.status();
    assert_eq!(st["Volumes"].as_array().unwrap().len(), 1, "{st:#}");

    // Both volumes at once, in one daemon.
    v.attach(&b, &d2, &[]);
    let st = v.status();
    assert_eq!(st["Volumes"].as_array().unwrap().len(), 2, "{st:#}");
    status_entry(&v, &b, &d2, 128 * MIB);
    let pid = st["DaemonPid"].as_i64().unwrap();

    // docs/cli.md: detach is refused while the file is in use (exit 4), and nothing changes.
    let line = v.run(&["detach", &d1.to_string_lossy()]).fails(4);
    assert!(line.contains("in use"), "{line}");
    assert!(is_mount_point(&d1), "a refused detach unmounted {d1:?}");
    assert_eq!(
        pread(&f, 4097, 12),
        b"still served",
        "a refused detach broke the file"
    );
    status_entry(&v, &a, &d1, 256 * MIB);

    drop(f);
    v.detach(&d1);
    let st = v.status();
    assert_eq!(st["DaemonPid"].as_i64(), Some(pid), "{st:#}");
    assert_eq!(st["Volumes"].as_array().unwrap().len(), 1, "{st:#}");
    assert_eq!(v.describe_vol(&a)["State"], "available");
    // Detaching what is not attached: not found (exit 3).
    v.run(&["detach", &d1.to_string_lossy()]).fails(3);
    v.detach(&d2);
    assert_nothing_attached(&v);
}

// ---- 2. plaintext never reaches the disk --------------------------------------------------

#[test]
fn plaintext_never_reaches_the_disk() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "1G"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0002);
    let marker = format!("CRYPTVOL-PLAINTEXT-MARKER-{:016x}", rng.next_u64());
    let tag = marker[marker.len() - 16..].to_string();
    // 64-byte units: every 4 KiB block of the aligned copy is the same plaintext.
    let mut unit = marker.clone().into_bytes();
    unit.resize(64, b'.');
    let aligned: Vec<u8> = unit.iter().copied().cycle().take(MIB as usize).collect();
    // And an unaligned copy of the bare marker stream (read-modify-write path).
    let stream: Vec<u8> = marker
        .bytes()
        .cycle()
        .take(300 * KIB as usize + 77)
        .collect();
    let f = open_rw(&path);
    pwrite(&f, 5 * MIB, &aligned);
    pwrite(&f, 9 * MIB + 1234, &stream);
    f.sync_all().expect("fsync");
    assert_bytes(
        "aligned copy",
        5 * MIB,
        &pread(&f, 5 * MIB, aligned.len()),
        &aligned,
    );
    assert_bytes(
        "unaligned copy",
        9 * MIB + 1234,
        &pread(&f, 9 * MIB + 1234, stream.len()),
        &stream,
    );
    drop(f);
    v.detach(&dir);

    let files = files_under(&v.data);
    assert!(
        files.iter().any(|p| p.starts_with(v.pool_dir())),
        "no pool files under {:?}: {files:?}",
        v.data
    );
    for p in &files {
        for needle in [marker.as_bytes(), tag.as_bytes(), b"PLAINTEXT-MARKER"] {
            assert!(
                !file_contains(p, needle),
                "plaintext {:?} found in {p:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }

    // The ciphertext is there (not holes), and XTS makes every block and every 16-byte
    // unit of it different although the plaintext repeats every 64 bytes.
    let data_file = v.pool_dir().join("data-1024k.pool");
    let meta = std::fs::metadata(&data_file).expect("pool data file");
    assert!(
        meta.blocks() * 512 >= MIB + 300 * KIB,
        "the pool data file holds {} bytes on disk, less than was written",
        meta.blocks() * 512
    );
    let bytes = std::fs::read(&data_file).unwrap();
    let blocks: Vec<&[u8]> = bytes
        .chunks(BLOCK as usize)
        .filter(|b| b.iter().any(|x| *x != 0))
        .collect();
    let want_blocks = (MIB + 300 * KIB) / BLOCK;
    assert!(
        blocks.len() as u64 >= want_blocks,
        "{} non-zero 4 KiB blocks in the pool, {want_blocks} written",
        blocks.len()
    );
    let distinct: HashSet<&[u8]> = blocks.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        blocks.len(),
        "identical ciphertext blocks in the pool"
    );
    let units: Vec<&[u8]> = blocks.iter().flat_map(|b| b.chunks(16)).collect();
    let distinct: HashSet<&[u8]> = units.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        units.len(),
        "repeated 16-byte ciphertext units: the tweak is not applied per unit"
    );

    // And it decrypts: attach again and read the marker back.
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    assert_bytes(
        "after attach",
        5 * MIB,
        &pread(&f, 5 * MIB, aligned.len()),
        &aligned,
    );
    drop(f);
    v.detach(&dir);
}

// ---- 3. kill -9 of the daemon -----------------------------------------------------------

#[test]
fn fsynced_data_survives_kill_9_of_the_daemon() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "1G"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0003);
    let f = open_rw(&path);
    // A: unaligned, across two chunk boundaries; A2: one block far away. Then fsync.
    let (a_off, a) = (MIB + 333, rng.bytes(2 * MIB as usize + 777));
    let (a2_off, a2) = (30 * MIB, rng.bytes(BLOCK as usize));
    pwrite(&f, a_off, &a);
    pwrite(&f, a2_off, &a2);
    f.sync_all().expect("fsync");
    // B: written, never fsynced.
    let (b_off, b) = (40 * MIB, rng.bytes(3 * MIB as usize));
    pwrite(&f, b_off, &b);

    let pid = v.daemon_pid().expect("a daemon serves the attached volume");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the daemon");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "daemon {pid} survived SIGKILL"
    );
    drop(f);

    // What a user does next: attach again. Record what fails on the way, and go on by
    // the next thing a user would try, so the durability check runs regardless.
    let mut failures = vec![];
    let out = v.attach_run(&vol, &dir, &[]);
    if out.code != 0 {
        failures.push(format!(
            "`attach` over the dead mount failed with exit {}: {}",
            out.code,
            out.stderr.trim()
        ));
        let d = dir.to_string_lossy();
        let out = v.run(&["detach", &d]);
        if out.code != 0 {
            failures.push(format!(
                "`detach DIR` of the dead mount failed with exit {}: {}",
                out.code,
                out.stderr.trim()
            ));
            let _ = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH);
        }
        let out = v.attach_run(&vol, &dir, &[]);
        assert_eq!(
            out.code, 0,
            "attach after clearing the dead mount: {}; earlier: {failures:?}",
            out.stderr
        );
    }
    assert!(is_mount_point(&dir));
    let f = open_rw(&canon(&dir).join("volume"));
    assert_bytes("A (fsynced)", a_off, &pread(&f, a_off, a.len()), &a);
    assert_bytes("A2 (fsynced)", a2_off, &pread(&f, a2_off, a2.len()), &a2);
    // B: each block is either what was written or zeros; never garbage, never an error.
    let got = pread(&f, b_off, b.len());
    for (i, (g, w)) in got
        .chunks(BLOCK as usize)
        .zip(b.chunks(BLOCK as usize))
        .enumerate()
    {
        assert!(
            g == w || g.iter().all(|x| *x == 0),
            "B block {i} (offset {}) is neither the data written nor zeros",
            b_off + i as u64 * BLOCK
        );
    }
    // Everything never written is zeros.
    for (off, len) in [
        (0, a_off),
        (a_off + a.len() as u64, a2_off - (a_off + a.len() as u64)),
        (a2_off + BLOCK, b_off - a2_off - BLOCK),
        (b_off + b.len() as u64, 5 * MIB),
        (900 * MIB, MIB),
    ] {
        assert_zeros("never written", off, &pread(&f, off, len as usize));
    }
    let alloc = v.allocated(&vol);
    assert!(
        (4 * MIB..=7 * MIB).contains(&alloc),
        "AllocatedBytes {alloc} after the crash: A and A2 take 4 chunks, B up to 3 more"
    );
    drop(f);
    v.detach(&dir);
    assert_nothing_attached(&v);
    assert!(
        failures.is_empty(),
        "data survived, but recovering from kill -9 needs manual work: {failures:#?}"
    );
    // What was written but never fsynced left nothing behind in the pool's bookkeeping.
    v.assert_pool_clean("local-1");
}

// ---- 4. fallocate punch-hole ---------------------------------------------------------------

fn punch(f: &File, off: u64, len: u64, zero_range: bool) {
    use nix::fcntl::{FallocateFlags, fallocate};
    let flags = if zero_range {
        FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE
    } else {
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE
    };
    fallocate(f, flags, off as i64, len as i64)
        .unwrap_or_else(|e| panic!("fallocate {flags:?} {off}+{len}: {e}"));
}

#[test]
fn punch_hole_reads_zeros_and_frees_whole_chunks() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "1G"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0004);
    // Chunks 8..=13 full of data.
    let base = 8 * MIB;
    let mut model = rng.bytes(6 * MIB as usize);
    let f = open_rw(&path);
    pwrite(&f, base, &model);
    f.sync_all().expect("fsync");
    assert_eq!(v.allocated(&vol), 6 * MIB);
    let data_file = v.pool_dir().join("data-1024k.pool");
    let disk_before = std::fs::metadata(&data_file).unwrap().blocks() * 512;
    assert!(disk_before >= 6 * MIB, "pool holds {disk_before} bytes");

    let mut hole = |off: u64, len: u64, zero_range: bool| {
        punch(&f, off, len, zero_range);
        let s = (off - base) as usize;
        model[s..s + len as usize].fill(0);
    };
    // Two whole chunks (9, 10): unmapped.
    hole(9 * MIB, 2 * MIB, false);
    // Unaligned, inside chunk 12: zeros, nothing freed.
    hole(12 * MIB + 1000, 10_000, false);
    // The second half of chunk 8: blocks punched, the chunk stays.
    hole(8 * MIB + 512 * KIB, 512 * KIB, false);
    // Zero-range of two blocks in chunk 11.
    hole(11 * MIB + BLOCK, 2 * BLOCK, true);
    // The tail of chunk 12 and all of chunk 13.
    hole(12 * MIB + 512 * KIB, MIB + 512 * KIB, false);
    // Never written: a no-op.
    punch(&f, 500 * MIB, 10 * MIB, false);

    let check = |f: &File, what: &str| {
        assert_bytes(what, base, &pread(f, base, model.len()), &model);
        assert_zeros(what, 500 * MIB, &pread(f, 500 * MIB, MIB as usize));
    };
    check(&f, "after punching");
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        GIB,
        "punch changed the size"
    );
    // Chunks 8, 11 and 12 remain.
    assert_eq!(
        v.allocated(&vol),
        3 * MIB,
        "AllocatedBytes after punching 3 whole chunks"
    );
    f.sync_all().expect("fsync");
    let disk_after = std::fs::metadata(&data_file).unwrap().blocks() * 512;
    assert!(
        disk_after + 3 * MIB <= disk_before,
        "the pool file still holds {disk_after} bytes on disk (was {disk_before}): freed chunks were not returned"
    );
    drop(f);
    v.detach(&dir);
    assert_eq!(v.allocated(&vol), 3 * MIB, "AllocatedBytes after detach");

    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    check(&f, "after detach and attach");
    // A punched chunk is writable again.
    let d = rng.bytes(5000);
    pwrite(&f, 10 * MIB - 17, &d);
    assert_bytes(
        "rewrite",
        10 * MIB - 17,
        &pread(&f, 10 * MIB - 17, d.len()),
        &d,
    );
    drop(f);
    v.detach(&dir);
}

// ---- 5. customer-provided keys --------------------------------------------------------------

fn urandom(n: usize) -> Vec<u8> {
    let mut b = vec![0; n];
    File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .expect("read /dev/urandom");
    b
}

/// A refused attach left nothing: no file, no mount, nothing in `status`.
#[track_caller]
fn assert_not_attached(v: &VolEnv, dir: &Path) {
    assert!(!is_mount_point(dir), "{dir:?} was mounted");
    assert!(!dir.join("volume").exists(), "{dir:?}/volume exists");
    let st = v.status();
    assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
}

#[test]
fn customer_key_is_needed_and_checked_before_anything_is_mounted() {
    needs!(Fuse, Loop);
    let v = VolEnv::new();
    let key = urandom(32);
    let wrong = urandom(32);
    v.add_secret(&key);
    v.add_secret(&wrong);
    let key_file = v.file(&key);
    let kf = key_file.to_string_lossy().to_string();

    // Keys of the wrong length are refused at create (exit 6), and nothing is created.
    for n in [16, 31, 33, 48] {
        let short = v.file(&urandom(n));
        let line = v
            .run(&[
                "volume",
                "create",
                "--size",
                "64M",
                "--customer-key-file",
                &short.to_string_lossy(),
            ])
            .fails(6);
        assert!(line.contains("32 or 64"), "{n}-byte key: {line}");
    }
    assert_eq!(
        v.json(&["volume", "list"])["Volumes"],
        serde_json::json!([])
    );

    let vol = v.create(&["--size", "256M", "--customer-key-file", &kf]);
    let d = v.describe_vol(&vol);
    assert_eq!(d["KeySource"], "customer-provided", "{d:#}");
    assert!(d.get("KmsKeyId").is_none(), "{d:#}");
    // A 64-byte key works too.
    let key64 = v.file(&urandom(64));
    v.create(&[
        "--size",
        "64M",
        "--customer-key-file",
        &key64.to_string_lossy(),
    ]);

    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &["--customer-key-file", &kf]);
    let data = urandom(3 * MIB as usize + 5);
    let f = open_rw(&path);
    pwrite(&f, MIB - 5, &data);
    f.sync_all().expect("fsync");
    drop(f);
    v.detach(&dir);
    assert_nothing_attached(&v);

    // Wrong key, no key: exit 7, nothing mounted, no daemon asked.
    let wrong_file = v.file(&wrong);
    let wf = wrong_file.to_string_lossy().to_string();
    let line = v
        .attach_run(&vol, &dir, &["--customer-key-file", &wf])
        .fails(7);
    assert!(line.contains(&vol), "{line}");
    assert_not_attached(&v, &dir);
    let line = v.attach_run(&vol, &dir, &[]).fails(7);
    assert!(line.contains("--customer-key-file"), "{line}");
    assert_not_attached(&v, &dir);
    let wrong64 = v.file(&urandom(64));
    v.attach_run(
        &vol,
        &dir,
        &["--customer-key-file", &wrong64.to_string_lossy()],
    )
    .fails(7);
    assert_not_attached(&v, &dir);
    assert!(
        daemons_of(&v.data).is_empty(),
        "a refused attach started a daemon"
    );
    // `mount` checks the key the same way.
    let mdir = v.dir("fs");
    v.mount_run(&vol, &mdir, "ext4", &["--customer-key-file", &wf])
        .fails(7);
    assert!(!is_mount_point(&mdir));
    assert!(loops_under(v.scratch()).is_empty());

    // The right key: the data is back.
    let path = v.attach(&vol, &dir, &["--customer-key-file", &kf]);
    let f = open_rw(&path);
    assert_bytes(
        "after re-attach",
        MIB - 5,
        &pread(&f, MIB - 5, data.len()),
        &data,
    );
    drop(f);
    v.detach(&dir);
    // The key is nowhere in the data dir.
    for p in files_under(&v.data) {
        assert!(
            !file_contains(&p, &key),
            "the customer key is stored in {p:?}"
        );
    }
}

// ---- 6. a full disk ------------------------------------------------------------------------

#[test]
fn full_disk_gives_enospc_and_recovers() {
    needs!(Fuse, Root);
    let mut v = VolEnv::uninit();
    let small = v.dir("small");
    v.mount_tmpfs(&small, "64M");
    v.set_data_dir(small.join("data"));
    v.ok(&["init"]);
    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0006);
    let filler = small.join("filler");
    std::fs::write(&filler, rng.bytes(16 * MIB as usize)).expect("filler file");

    let vol = v.create(&["--size", "1G"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    let early = rng.bytes(4 * MIB as usize);
    pwrite(&f, 0, &early);
    f.sync_all().expect("fsync before the disk is full");

    // Fill the tmpfs through the volume.
    let mut written: Vec<(u64, Vec<u8>)> = vec![];
    let mut off = 8 * MIB;
    let (failed_off, err) = loop {
        assert!(
            off < 8 * MIB + 80 * MIB,
            "80 MiB written to a volume on a 64 MiB tmpfs without an error"
        );
        let d = rng.bytes(MIB as usize);
        match f.write_all_at(&d, off) {
            Ok(()) => written.push((off, d)),
            Err(e) => break (off, e),
        }
        off += MIB;
    };
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOSPC),
        "a write on a full disk failed with {err} instead of ENOSPC"
    );
    assert!(!written.is_empty(), "not even one write fitted");
    // fsync on the full disk may fail too, but only with ENOSPC.
    if let Err(e) = f.sync_all() {
        assert_eq!(
            e.raw_os_error(),
            Some(libc::ENOSPC),
            "fsync on a full disk: {e}"
        );
    }
    // Reads still work.
    assert_bytes(
        "early data, disk full",
        0,
        &pread(&f, 0, early.len()),
        &early,
    );
    for (o, d) in &written {
        assert_bytes("a write that succeeded", *o, &pread(&f, *o, d.len()), d);
    }

    // Free space; the volume works again.
    std::fs::remove_file(&filler).expect("remove the filler");
    let retry = rng.bytes(MIB as usize);
    f.write_all_at(&retry, failed_off)
        .expect("the write that failed, once space is free");
    written.push((failed_off, retry));
    let more = rng.bytes(3 * MIB as usize + 11);
    f.write_all_at(&more, 700 * MIB + 11)
        .expect("a write to new chunks, once space is free");
    written.push((700 * MIB + 11, more));
    f.sync_all().expect("fsync once space is free");
    let check = |f: &File, what: &str| {
        assert_bytes(what, 0, &pread(f, 0, early.len()), &early);
        for (o, d) in &written {
            assert_bytes(what, *o, &pread(f, *o, d.len()), d);
        }
    };
    check(&f, "after recovery");
    drop(f);
    v.detach(&dir);
    let path = v.attach(&vol, &dir, &[]);
    check(&open_rw(&path), "after recovery, detach and attach");
    v.detach(&dir);
}

/// A data sync that fails at writeback (not at write: the pool lives on ext4 over a loop
/// device whose backing file, on a small tmpfs, runs out of room), then a retry once there
/// is room again. Linux marks the pages whose writeback failed clean, so the retried
/// `fdatasync` returns 0 without writing them; the daemon must not acknowledge that fsync,
/// nor any later one, until its pool is opened again: the guest's fsync keeps failing
/// (before, the second fsync succeeded while its data was not on the disk). After a detach
/// and an attach everything acknowledged before the failure reads back, and fsync works.
#[test]
fn fsync_after_a_failed_writeback_is_refused_until_attached_again() {
    needs!(Fuse, Root, Loop, Tool("mkfs.ext4"));
    let mut v = VolEnv::uninit();
    let small = v.dir("small");
    v.mount_tmpfs(&small, "48M");
    let img = small.join("disk.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(512 * MIB))
        .expect("backing file");
    let img_s = img.to_string_lossy().to_string();
    // Journal and inode tables written now, so that only file data needs new room later.
    sh_ok(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            &img_s,
        ],
    );
    let dev = sh_ok("losetup", &["-f", "--show", &img_s])
        .trim()
        .to_string();
    let ext4 = v.dir("ext4");
    sh_ok("mount", &[&dev, &ext4.to_string_lossy()]);
    v.set_data_dir(ext4.join("data"));
    v.ok(&["init"]);
    let vol = v.create(&["--size", "1G"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0016);
    let early = rng.bytes(2 * MIB as usize);
    pwrite(&f, 0, &early);
    f.sync_all().expect("fsync while there is room");

    // Leave the tmpfs 4 MiB, then write far more than that: the writes land in the page
    // cache of ext4 (which has room); their writeback fails.
    let avail = nix::sys::statvfs::statvfs(&small).expect("statvfs");
    let free = avail.blocks_available() * avail.fragment_size();
    let filler = small.join("filler");
    sh_ok(
        "fallocate",
        &[
            "-l",
            &(free - 4 * MIB).to_string(),
            &filler.to_string_lossy(),
        ],
    );
    pwrite(&f, 64 * MIB, &rng.bytes(32 * MIB as usize));
    let first = f.sync_all().expect_err("fsync whose writeback cannot land");
    assert!(
        matches!(first.raw_os_error(), Some(libc::EIO | libc::ENOSPC)),
        "the failed fsync: {first}"
    );

    // Room again: a retried fdatasync would now say 0. The daemon refuses.
    std::fs::remove_file(&filler).expect("remove the filler");
    for attempt in 0..2 {
        let e = f
            .sync_all()
            .expect_err("an fsync after a failed writeback was acknowledged");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "attempt {attempt}: {e}");
    }
    pwrite(&f, 200 * MIB, &rng.bytes(MIB as usize));
    assert!(f.sync_all().is_err(), "a new write's fsync is refused too");
    let log = v.daemon_log();
    assert!(
        log.contains("no later sync of this pool will be acknowledged"),
        "the daemon log names the failure: {log}"
    );

    // Detach: it detaches, and says the last writes may be lost (exit 11, I/O); the
    // daemon exits. Attach: what was acknowledged is there, and fsync works.
    drop(f);
    let err = v.run(&["detach", &dir.to_string_lossy()]).fails(11);
    assert!(
        err.contains("is detached, but its last writes may not be on the disk")
            && err.contains("attach again"),
        "{err}"
    );
    assert!(!is_mount_point(&dir), "detached");
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the daemon exits"
    );
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    assert_bytes(
        "acknowledged before the failure",
        0,
        &pread(&f, 0, early.len()),
        &early,
    );
    let later = rng.bytes(MIB as usize);
    pwrite(&f, 300 * MIB, &later);
    f.sync_all().expect("fsync after attaching again");
    drop(f);
    v.detach(&dir);
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    assert_bytes(
        "written after attaching again",
        300 * MIB,
        &pread(&f, 300 * MIB, later.len()),
        &later,
    );
    drop(f);
    v.detach(&dir);
    // The guard unmounts the ext4 and frees the loop device (the daemon may still be on
    // its way out, holding its log there).
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the daemon exits"
    );
}

// ---- 7. fio ----------------------------------------------------------------------------------

#[test]
fn fio_crc32c_verify_random_4k_on_the_raw_file() {
    needs!(Fuse, Tool("fio"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "1G"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let file = format!("--filename={}", path.display());
    let job = [
        "--name=rand",
        &file,
        "--offset=64M",
        "--size=128M",
        "--rw=randwrite",
        "--bs=4k",
        "--direct=1",
        "--ioengine=libaio",
        "--iodepth=16",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--randseed=1234",
    ];
    let mut args = job.to_vec();
    args.push("--do_verify=1");
    let j = fio(v.scratch(), &args, 128 * MIB);
    assert!(
        j["read"]["io_bytes"].as_u64() >= Some(128 * MIB),
        "fio did not verify: {j:#}"
    );
    v.detach(&dir);

    // The same blocks verify again after detach and attach.
    let path2 = v.attach(&vol, &dir, &[]);
    assert_eq!(path2, path);
    let mut args = job.to_vec();
    args.push("--verify_only=1");
    let j = fio(v.scratch(), &args, 0);
    assert!(
        j["read"]["io_bytes"].as_u64() >= Some(128 * MIB),
        "fio did not verify: {j:#}"
    );
    v.detach(&dir);
}

#[test]
fn fio_crc32c_verify_sequential_1m_on_the_raw_file() {
    needs!(Fuse, Tool("fio"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "512M"]);
    let dir = v.dir("m");
    let path: PathBuf = v.attach(&vol, &dir, &[]);
    let file = format!("--filename={}", path.display());
    // Starts at an odd 4 KiB offset so every 1 MiB request spans two chunks.
    let j = fio(
        v.scratch(),
        &[
            "--name=seq",
            &file,
            "--offset=4100k",
            "--size=192M",
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=4",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
        ],
        192 * MIB,
    );
    assert!(
        j["read"]["io_bytes"].as_u64() >= Some(192 * MIB),
        "fio did not verify: {j:#}"
    );
    assert_eq!(
        v.allocated(&vol),
        193 * MIB,
        "192 MiB from 4100 KiB touch 193 chunks"
    );
    v.detach(&dir);
}

// ---- envelope encryption: block I/O never calls the KMS ---------------------------------------

/// Once attached, a volume's blocks are encrypted locally: disabling its CMK does not stop
/// the attached volume (no KMS call per block), but refuses the next attach (the one
/// Decrypt per attach), with the AWS error name; re-enabling makes it attachable again.
#[test]
fn an_attached_volume_needs_no_kms_and_a_disabled_key_refuses_the_next_attach() {
    needs!(Fuse);
    let v = VolEnv::new();
    let key = str_field(
        &v.json(&["kms", "create-key", "--description", "volume key"])["KeyMetadata"],
        "KeyId",
    );
    let vol = v.create(&["--size", "64M", "--kms-key", &key]);
    assert_eq!(
        str_field(&v.describe_vol(&vol), "KmsKeyId")
            .rsplit('/')
            .next(),
        Some(key.as_str())
    );
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    let data = urandom(3 * 4096 + 5);
    f.write_all_at(&data, 12_345).unwrap();
    f.sync_all().unwrap();

    v.ok(&["kms", "disable-key", "--key-id", &key]);
    // Still readable and writable: no KMS call on the block path.
    assert_bytes(
        "after disabling the key",
        12_345,
        &pread(&f, 12_345, data.len()),
        &data,
    );
    let more = urandom(70_000);
    f.write_all_at(&more, 5 << 20).unwrap();
    f.sync_all().unwrap();
    assert_bytes(
        "written after disabling",
        5 << 20,
        &pread(&f, 5 << 20, more.len()),
        &more,
    );
    drop(f);
    v.detach(&dir);

    let out = v.attach_run(&vol, &dir, &[]);
    assert_eq!(out.code, 4, "attach with a disabled key: {}", out.stderr);
    assert!(out.stderr.contains("DisabledException"), "{}", out.stderr);
    assert_not_attached(&v, &dir);

    v.ok(&["kms", "enable-key", "--key-id", &key]);
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    assert_bytes(
        "after re-enabling",
        12_345,
        &pread(&f, 12_345, data.len()),
        &data,
    );
    assert_bytes(
        "after re-enabling",
        5 << 20,
        &pread(&f, 5 << 20, more.len()),
        &more,
    );
    drop(f);
    v.detach(&dir);
}

/// SIGTERM to the daemon flushes and unmounts: data written without fsync is kept, and no
/// mount is left behind.
#[test]
fn sigterm_flushes_and_unmounts_cleanly() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "32M"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let data = urandom(2 * 1024 * 1024 + 333);
    {
        let f = open_rw(&path);
        f.write_all_at(&data, 4099).unwrap();
        // No fsync: the daemon's shutdown must commit it.
    }
    let pid = v.daemon_pid().expect("a daemon serves the attachment");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the daemon exits on SIGTERM"
    );
    assert!(!is_mount_point(&dir), "no mount left at {}", dir.display());
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    assert_bytes("after SIGTERM", 4099, &pread(&f, 4099, data.len()), &data);
    drop(f);
    v.detach(&dir);
}

// ---- mount points with spaces, tabs, newlines, backslashes -------------------------------

/// Kills the data dir's daemon with SIGKILL: every volume it served is left a dead mount.
#[track_caller]
fn kill_9_the_daemon(v: &VolEnv, region: &str) {
    let out = v.ok(&[
        "--region",
        region,
        "status",
        "--query",
        "DaemonPid",
        "--output",
        "text",
    ]);
    let pid: i32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no daemon in {region}: {out:?}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the daemon");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "daemon {pid} survived SIGKILL"
    );
}

/// The kernel writes ' ', '\t', '\n' and '\\' in /proc/self/mountinfo as octal escapes;
/// the mount of such a directory must still be found: by `status`, by `detach`, and by
/// `detach` and `attach` of the dead mount a killed daemon leaves.
#[test]
fn mount_paths_with_spaces_are_found_by_attach_detach_and_status() {
    needs!(Fuse);
    let v = VolEnv::new();
    let names = [
        "with space",
        "with\ttab",
        "with\nnewline",
        "back\\slash \\040",
    ];
    let vols: Vec<String> = names.iter().map(|_| v.create(&["--size", "32M"])).collect();
    let dirs: Vec<PathBuf> = names.iter().map(|n| v.dir(n)).collect();
    for (i, (vol, dir)) in vols.iter().zip(&dirs).enumerate() {
        let path = v.attach(vol, dir, &[]);
        status_entry(&v, vol, dir, 32 * MIB);
        let f = open_rw(&path);
        pwrite(&f, 4096 * i as u64 + 5, format!("marker {i}").as_bytes());
        f.sync_all().expect("fsync");
    }
    let st = v.status();
    assert_eq!(
        st["Volumes"].as_array().unwrap().len(),
        names.len(),
        "{st:#}"
    );
    for dir in &dirs {
        v.detach(dir);
    }
    assert_nothing_attached(&v);

    // Again, then leave them all dead: `detach` clears the first two, `attach` the others.
    for (vol, dir) in vols.iter().zip(&dirs) {
        v.attach(vol, dir, &[]);
    }
    kill_9_the_daemon(&v, common::DEFAULT_REGION);
    for dir in &dirs[..2] {
        assert!(is_mount_point(dir), "no dead mount at {dir:?}");
        v.detach(dir);
    }
    for (i, (vol, dir)) in vols.iter().zip(&dirs).enumerate() {
        let path = v.attach(vol, dir, &[]);
        status_entry(&v, vol, dir, 32 * MIB);
        let want = format!("marker {i}");
        let got = pread(&open_rw(&path), 4096 * i as u64 + 5, want.len());
        assert_eq!(got, want.as_bytes(), "{dir:?}");
    }
    for dir in &dirs {
        v.detach(dir);
    }
    assert_nothing_attached(&v);
}

// ---- detach across regions -------------------------------------------------------------

const OTHER_REGION: &str = "eu-2";

/// A second region with one volume; returns its id.
#[track_caller]
fn volume_in_other_region(v: &VolEnv) -> String {
    v.ok(&["--region", OTHER_REGION, "init"]);
    str_field(
        &v.json(&[
            "--region",
            OTHER_REGION,
            "volume",
            "create",
            "--size",
            "32M",
        ]),
        "VolumeId",
    )
}

/// `status --region R` lists nothing and names no daemon, once R's daemon is gone.
#[track_caller]
fn assert_region_idle(v: &VolEnv, region: &str) {
    assert!(
        wait_until(Duration::from_secs(10), || {
            v.json(&["--region", region, "status"])["DaemonPid"].is_null()
        }),
        "the daemon of {region} still runs 10 s after its last detach"
    );
    let st = v.json(&["--region", region, "status"]);
    assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
}

#[track_caller]
fn state(v: &VolEnv, region: &str, vol: &str) -> String {
    str_field(
        &v.json(&["--region", region, "volume", "describe", vol]),
        "State",
    )
}

/// A volume attached with `--region R`, detached without it: the mount names R, so the
/// detach goes to R's daemon, which lets go of the volume (it used to stay "in-use" while
/// the CLI lazily unmounted the live mount).
#[test]
fn detach_across_regions_finds_the_daemon_named_by_the_mount() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = volume_in_other_region(&v);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &["--region", OTHER_REGION]);
    let f = open_rw(&path);
    pwrite(&f, 12345, b"written in eu-2");
    drop(f);

    v.detach(&dir);
    assert_region_idle(&v, OTHER_REGION);
    assert_eq!(state(&v, OTHER_REGION, &vol), "available");
    assert!(v.wait_no_daemon(Duration::from_secs(10)), "a daemon runs");

    // Attach again (the data was flushed by that detach), detach again, delete.
    let path = v.attach(&vol, &dir, &["--region", OTHER_REGION]);
    assert_eq!(pread(&open_rw(&path), 12345, 15), b"written in eu-2");
    // The mount names its region.
    let m = mount_at(&dir).expect("mounted");
    assert_eq!(
        m.source_str(),
        Some(format!("cryptvol:{OTHER_REGION}/{vol}").as_str()),
        "{m:?}"
    );
    v.detach(&dir);
    assert_region_idle(&v, OTHER_REGION);
    v.ok(&["--region", OTHER_REGION, "volume", "delete", &vol, "--yes"]);
    let list = v.json(&["--region", OTHER_REGION, "volume", "list"]);
    assert_eq!(list["Volumes"], serde_json::json!([]), "{list:#}");
}

/// With a daemon in each region, `detach DIR --region B` of a DIR attached in region A
/// detaches A's volume and leaves B's alone.
#[test]
fn detach_across_regions_with_the_wrong_region_detaches_the_right_volume() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol_b = volume_in_other_region(&v);
    let vol_a = v.create(&["--size", "32M"]);
    let (da, db) = (v.dir("in a"), v.dir("in b"));
    v.attach(&vol_a, &da, &[]);
    let file_b = v.attach(&vol_b, &db, &["--region", OTHER_REGION]);
    let fb = open_rw(&file_b);
    pwrite(&fb, 0, b"b keeps working");

    let d = da.to_string_lossy();
    v.run(&["--region", OTHER_REGION, "detach", &d]).ok();
    assert!(!is_mount_point(&da), "{da:?} is still mounted");
    assert_region_idle(&v, common::DEFAULT_REGION);
    assert_eq!(state(&v, common::DEFAULT_REGION, &vol_a), "available");
    // B's volume: untouched, still served.
    assert!(is_mount_point(&db));
    assert_eq!(pread(&fb, 0, 15), b"b keeps working");
    let st = v.json(&["--region", OTHER_REGION, "status"]);
    let listed = st["Volumes"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{st:#}");
    assert_eq!(listed[0]["VolumeId"], vol_b.as_str(), "{st:#}");
    drop(fb);

    // And the other way round: B's dir with the default region.
    v.detach(&db);
    assert_region_idle(&v, OTHER_REGION);
    assert_eq!(state(&v, OTHER_REGION, &vol_b), "available");
    assert!(v.wait_no_daemon(Duration::from_secs(10)), "a daemon runs");
    // Both attach again where they were.
    v.attach(&vol_a, &da, &[]);
    v.attach(&vol_b, &db, &["--region", OTHER_REGION]);
    v.detach(&da);
    v.detach(&db);
    assert!(v.wait_no_daemon(Duration::from_secs(10)), "a daemon runs");
}

/// A FUSE mount at `dir` whose server is gone, with mount source `source`: what a killed
/// daemon of any version leaves (the /dev/fuse descriptor is closed before any request).
#[track_caller]
fn dead_fuse_mount(dir: &Path, source: &str) {
    use std::os::fd::AsRawFd;
    let fuse = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .expect("open /dev/fuse");
    let opts = format!(
        "fd={},rootmode=40000,user_id=0,group_id=0",
        fuse.as_raw_fd()
    );
    nix::mount::mount(
        Some(source),
        dir,
        Some("fuse"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(opts.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount a FUSE filesystem at {dir:?}: {e}"));
    drop(fuse);
    let m = mount_at(dir).expect("the dead mount");
    assert_eq!(m.source_str(), Some(source), "{m:?}");
}

/// Dead mounts, named the old way (`cryptvol:<volume>`, no region: every region's daemon
/// is asked) or the new way, are cleared by `detach` once no daemon serves them, with
/// daemons running in both regions and with none; the live attachments stay.
#[test]
fn detach_across_regions_clears_dead_mounts_only_when_no_daemon_serves_them() {
    needs!(Fuse, Root);
    let v = VolEnv::new();
    let vol_b = volume_in_other_region(&v);
    let vol_a = v.create(&["--size", "32M"]);
    // Daemons in both regions, each serving something else.
    let (da, db) = (v.dir("busy a"), v.dir("busy b"));
    v.attach(&vol_a, &da, &[]);
    v.attach(&vol_b, &db, &["--region", OTHER_REGION]);

    let old = v.dir("old style");
    let new = v.dir("new style");
    dead_fuse_mount(&old, "cryptvol:vol-00000000000000000");
    dead_fuse_mount(
        &new,
        &format!("cryptvol:{OTHER_REGION}/vol-00000000000000000"),
    );
    for dir in [&old, &new] {
        v.detach(dir);
    }
    // The live attachments were not disturbed.
    for (region, vol, dir) in [
        (common::DEFAULT_REGION, &vol_a, &da),
        (OTHER_REGION, &vol_b, &db),
    ] {
        assert!(is_mount_point(dir), "{dir:?}");
        assert_eq!(state(&v, region, vol), "in-use");
        assert!(dir.join("volume").exists());
    }
    // Without any daemon too.
    v.detach(&da);
    v.detach(&db);
    assert!(v.wait_no_daemon(Duration::from_secs(10)), "a daemon runs");
    dead_fuse_mount(&old, "cryptvol:vol-00000000000000000");
    v.detach(&old);
    // Not a mount at all: nothing attached (exit 3), from any region.
    for region in [common::DEFAULT_REGION, OTHER_REGION] {
        let d = old.to_string_lossy();
        let line = v.run(&["--region", region, "detach", &d]).fails(3);
        assert!(line.contains(d.as_ref()), "{line}");
    }
}

/// Attaching over a directory where another region's daemon serves a volume used to make
/// this region's daemon lazily unmount that live mount (taking it for a dead one), after
/// which the other daemon kept its volume "in-use" for ever. Now it is refused.
#[test]
fn attach_over_a_live_mount_of_another_region_is_refused() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol_b = volume_in_other_region(&v);
    let vol_a = v.create(&["--size", "32M"]);
    let dir = v.dir("shared");
    let file_b = v.attach(&vol_b, &dir, &["--region", OTHER_REGION]);
    pwrite(&open_rw(&file_b), 0, b"still served");
    let out = v.attach_run(&vol_a, &dir, &[]);
    let line = out.fails(4);
    assert!(
        line.contains(&vol_b) && line.contains(OTHER_REGION),
        "{line}"
    );
    // The other region's mount is untouched and still served.
    assert_eq!(pread(&open_rw(&file_b), 0, 12), b"still served");
    assert_eq!(state(&v, OTHER_REGION, &vol_b), "in-use");
    v.detach(&dir);
    assert_region_idle(&v, OTHER_REGION);
}
