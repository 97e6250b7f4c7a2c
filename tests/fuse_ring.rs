//! FUSE over io_uring (`daemon/fuse_ring`): where the kernel has it, the daemon turns it on
//! and the kernel's requests reach the volume through ring entries instead of `/dev/fuse`.
//! These tests check, through real mounts, that the ring serves (`status` says so, and the
//! queue threads exist), that what goes through it is what comes back (raw file and ext4 on
//! a loop device, over a reattach and a remount), that detaching ends its queues, and that
//! `--fuse-transport` (or `CRYPTVOL_FUSE_TRANSPORT`) chooses the transport per attach.
//!
//! Needs root, FUSE and a kernel with FUSE over io_uring (6.14+); without them the tests
//! skip, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes them fail.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mount::*;

/// Writes a seeded pattern of big, small and unaligned pieces (O_DIRECT and buffered).
fn write_pattern(file: &Path, seed: u64) -> Vec<(u64, Vec<u8>)> {
    let mut rng = Rng::new(seed);
    let mut pieces = Vec::new();
    let direct = open_direct(file);
    for (off, len) in [(0, MIB), (3 * MIB, 4 * KIB), (5 * MIB + 8 * KIB, 256 * KIB)] {
        let mut buf = AlignedBuf::new(len as usize);
        rng.fill(buf.as_mut_slice());
        pwrite(&direct, off, buf.as_slice());
        pieces.push((off, buf.as_slice().to_vec()));
    }
    let buffered = open_rw(file);
    let odd = rng.bytes(5000);
    pwrite(&buffered, 7 * MIB + 123, &odd);
    pieces.push((7 * MIB + 123, odd));
    buffered.sync_all().expect("fsync through the ring");
    pieces
}

fn check_pattern(file: &Path, pieces: &[(u64, Vec<u8>)]) {
    let f = open_rw(file);
    for (off, want) in pieces {
        assert_bytes("through the ring", *off, &pread(&f, *off, want.len()), want);
    }
    assert_zeros("never written", 2 * MIB, &pread(&f, 2 * MIB, 64 * 1024));
}

/// What `after` holds beyond `before` (a multiset difference of descriptor targets).
fn added_targets(before: &[String], after: &[String]) -> Vec<String> {
    let mut left = before.to_vec();
    after
        .iter()
        .filter(|t| match left.iter().position(|b| b == *t) {
            Some(i) => {
                left.swap_remove(i);
                false
            }
            None => true,
        })
        .cloned()
        .collect()
}

#[test]
fn attach_serves_over_io_uring_and_detach_ends_its_queues() {
    needs!(Fuse, Root, FuseRing);
    let v = ring_env();
    let a = v.create(&["--size", "64M", "--name", "a"]);
    let b = v.create(&["--size", "64M", "--name", "b", "--integrity"]);
    let (da, db) = (v.dir("a"), v.dir("b"));
    let fa = v.attach(&a, &da, &[]);
    let pid = v.daemon_pid().expect("a daemon while attached");
    let fds = || std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let fd_targets = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|t| t.display().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let fuser_threads = || {
        thread_names(pid)
            .iter()
            .filter(|c| c.starts_with("fuser"))
            .count()
    };
    let (fds0, fuser0, ring0) = (fds(), fuser_threads(), ring_threads(pid));
    let targets0 = fd_targets();
    let fb = v.attach(&b, &db, &[]);
    // A mount's ring costs one descriptor per queue thread (its io_uring) and two more
    // (one `/dev/fuse` duplicate and one wake-up eventfd), not three per thread. fuser
    // clones its workers' `/dev/fuse` descriptors before all of them have started, so the
    // count is judged once the threads are up (it never holds at three per ring thread).
    let within_budget = || {
        let ring_added = ring_threads(pid) - ring0;
        ring_added > 0 && fds() - fds0 <= (fuser_threads() - fuser0) + ring_added + 3
    };
    wait_until(Duration::from_secs(10), within_budget);
    let ring_added = ring_threads(pid) - ring0;
    let fd_added = fds() - fds0;
    assert!(
        within_budget(),
        "attaching b added {fd_added} descriptors for {ring_added} ring threads and {} fuser threads: {:?}",
        fuser_threads() - fuser0,
        added_targets(&targets0, &fd_targets())
    );
    let pa = write_pattern(&fa, 1);
    let pb = write_pattern(&fb, 2);
    check_pattern(&fa, &pa);
    check_pattern(&fb, &pb);
    assert_eq!(transport(&v, &da), "io_uring");
    assert_eq!(transport(&v, &db), "io_uring");
    assert_eq!(
        std::fs::read_to_string(FUSE_RING_KNOB).unwrap().trim(),
        "Y",
        "the daemon turned the kernel's switch on"
    );

    let both = ring_threads(pid);
    assert!(
        both >= 2 && both.is_multiple_of(2),
        "{both} ring threads for two volumes"
    );
    v.detach(&db);
    assert!(
        wait_until(Duration::from_secs(10), || ring_threads(pid) == both / 2),
        "detaching b left {} ring threads (had {both})",
        ring_threads(pid)
    );
    check_pattern(&fa, &pa);

    // What went through the ring was committed: it is there after a reattach.
    v.detach(&da);
    let fb = v.attach(&b, &db, &[]);
    check_pattern(&fb, &pb);
    v.detach(&db);
    let r = v.json(&["volume", "verify", &b, "--output", "json"]);
    assert_eq!(r["BadBlocks"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["RootOk"], true, "{r:#}");
}

#[test]
fn ext4_on_a_loop_device_over_the_ring_keeps_its_files_across_a_remount() {
    needs!(Fuse, Root, Loop, FuseRing, Tool("mkfs.ext4"));
    let v = ring_env();
    let vol = v.create(&["--size", "256M", "--name", "m", "--integrity"]);
    let dir = v.dir("m");
    v.mount(&vol, &dir, "ext4");
    let mut rng = Rng::new(7);
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("f{i}"), rng.bytes(1000 + 37_000 * i)))
        .collect();
    for (name, data) in &files {
        std::fs::write(dir.join(name), data).unwrap();
    }
    sh_ok("sync", &[]);
    let st = v.status();
    let entry = &st["Volumes"][0];
    assert_eq!(entry["FuseTransport"], "io_uring", "{st:#}");
    v.unmount(&dir);
    v.mount(&vol, &dir, "ext4");
    for (name, data) in &files {
        let got = std::fs::read(dir.join(name)).unwrap();
        assert!(got == *data, "{name} differs after a remount");
    }
    v.unmount(&dir);
}

#[test]
fn with_the_ring_turned_off_requests_stay_on_dev_fuse() {
    needs!(Fuse);
    let v = ring_env();
    let a = v.create(&["--size", "64M", "--name", "a"]);
    let d = v.dir("a");
    v.attach_run(&a, &d, &["--fuse-transport", "classic"]).ok();
    let file = canon(&d).join("volume");
    let p = write_pattern(&file, 3);
    check_pattern(&file, &p);
    assert_eq!(transport(&v, &d), "/dev/fuse");
    let pid = v.daemon_pid().expect("a daemon while attached");
    assert_eq!(ring_threads(pid), 0, "no ring queues when turned off");
    v.detach(&d);
}

/// `--fuse-transport` chooses per attach and per mount, over one daemon: `classic` stays on
/// `/dev/fuse` (no queue threads), `uring` and `auto` serve through the ring here; the
/// flag wins over `CRYPTVOL_FUSE_TRANSPORT`, and an unknown value is a usage error.
#[test]
fn the_transport_asked_for_is_the_one_that_serves() {
    needs!(Fuse, Root, Loop, FuseRing, Tool("mkfs.ext4"));
    let v = VolEnv::new();
    v.set_env("CRYPTVOL_FUSE_TRANSPORT", "classic");
    let vols: Vec<String> = ["c", "u", "a", "m"]
        .iter()
        .map(|n| v.create(&["--size", "64M", "--name", n]))
        .collect();
    // Through the environment alone: /dev/fuse, and no ring threads in the daemon.
    let dc = v.dir("c");
    let fc = v.attach(&vols[0], &dc, &[]);
    let pc = write_pattern(&fc, 11);
    assert_eq!(transport(&v, &dc), "/dev/fuse");
    let pid = v.daemon_pid().expect("a daemon while attached");
    assert_eq!(ring_threads(pid), 0, "a classic mount has no ring queues");
    // The flag wins over the environment, on the same daemon.
    for (vol, name, flag) in [(&vols[1], "u", "uring"), (&vols[2], "a", "auto")] {
        let d = v.dir(name);
        let f = v.attach(vol, &d, &["--fuse-transport", flag]);
        let p = write_pattern(&f, 12);
        check_pattern(&f, &p);
        assert_eq!(transport(&v, &d), "io_uring", "--fuse-transport {flag}");
    }
    assert!(ring_threads(pid) > 0, "uring and auto mounts have queues");
    check_pattern(&fc, &pc);
    // `mount` takes it too: ext4 on the loop device, served through /dev/fuse.
    let dm = v.dir("m");
    v.mount_run(&vols[3], &dm, "ext4", &["--fuse-transport", "classic"])
        .ok();
    std::fs::write(dm.join("f"), b"classic").unwrap();
    let st = v.status();
    let entry = st["Volumes"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["VolumeId"].as_str() == Some(&vols[3])))
        .unwrap_or_else(|| panic!("no status entry for the mounted volume: {st:#}"));
    assert_eq!(entry["FuseTransport"], "/dev/fuse", "{st:#}");
    v.unmount(&dm);
    let bad = v.run(&[
        "attach",
        &vols[3],
        dm.to_str().unwrap(),
        "--fuse-transport",
        "rings",
    ]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("--fuse-transport"), "{}", bad.stderr);
    for d in ["c", "u", "a"] {
        v.detach(&v.dir(d));
    }
}
