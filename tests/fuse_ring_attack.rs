//! Attacks on FUSE over io_uring (`daemon/fuse_ring`) through real mounts: every request
//! answered alike over the ring and over `/dev/fuse`; detach racing with writers in
//! several threads; attach/detach cycles with I/O (no queue threads or buffers left
//! behind); kill -9 and SIGTERM of the daemon while the ring serves I/O.
//!
//! Needs root, FUSE and a kernel with FUSE over io_uring (6.14+); without them the tests
//! skip, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes them fail.

mod common;

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::mount::*;

/// A field of /proc/PID/status in kB (VmRSS).
fn status_kb(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// An outcome as text: the value, or the errno's number.
fn res<T: std::fmt::Debug>(r: std::io::Result<T>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("errno {:?}", e.raw_os_error()),
    }
}

fn errno_of(rc: libc::c_long) -> std::io::Result<libc::c_long> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> std::io::Result<libc::c_long> {
    // SAFETY: fallocate(2) on an open descriptor; no memory is passed.
    errno_of(unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) }.into())
}

fn open_with(path: &Path, flags: i32) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(flags & libc::O_ACCMODE != libc::O_RDONLY)
        .custom_flags(flags & !libc::O_ACCMODE)
        .open(path)
}

/// Every kind of request the mount answers, and its outcome as text, on the volume file
/// of a fresh 64 MiB volume attached at `dir`.
fn probe(dir: &Path) -> Vec<(&'static str, String)> {
    let file = dir.join("volume");
    let size = 64 * MIB;
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    out.push(("readdir", format!("{names:?}")));
    out.push((
        "stat file",
        res(std::fs::metadata(&file).map(|m| (m.mode(), m.len(), m.nlink(), m.blksize()))),
    ));
    out.push((
        "stat dir",
        res(std::fs::metadata(dir).map(|m| (m.mode(), m.nlink()))),
    ));
    out.push((
        "statvfs",
        res(nix::sys::statvfs::statvfs(dir)
            .map(|s| {
                (
                    s.blocks(),
                    s.blocks_free(),
                    s.block_size(),
                    s.name_max(),
                    s.files(),
                )
            })
            .map_err(std::io::Error::from)),
    ));
    out.push(("lookup missing", res(std::fs::metadata(dir.join("nope")))));
    out.push((
        "open dir rdonly",
        res(open_with(dir, libc::O_RDONLY).map(drop)),
    ));
    out.push(("open dir rdwr", res(open_with(dir, libc::O_RDWR).map(drop))));
    out.push((
        "open file as dir",
        res(open_with(&file, libc::O_RDONLY | libc::O_DIRECTORY).map(drop)),
    ));
    out.push((
        "create",
        res(open_with(&dir.join("new"), libc::O_RDWR | libc::O_CREAT).map(drop)),
    ));
    out.push(("mkdir", res(std::fs::create_dir(dir.join("sub")))));
    out.push(("unlink", res(std::fs::remove_file(&file))));
    let c = |s: &Path| std::ffi::CString::new(s.as_os_str().as_encoded_bytes()).unwrap();
    let (cf, name) = (c(&file), c"user.x");
    let mut buf = [0u8; 64];
    // SAFETY: NUL-terminated path and name; `buf` outlives the calls.
    out.push((
        "getxattr",
        res(errno_of(unsafe {
            libc::getxattr(cf.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 64)
        } as libc::c_long)),
    ));
    out.push((
        "setxattr",
        // SAFETY: as above.
        res(errno_of(
            unsafe { libc::setxattr(cf.as_ptr(), name.as_ptr(), buf.as_ptr().cast(), 1, 0) }.into(),
        )),
    ));
    out.push((
        "listxattr",
        // SAFETY: as above.
        res(errno_of(
            unsafe { libc::listxattr(cf.as_ptr(), buf.as_mut_ptr().cast(), 64) } as libc::c_long,
        )),
    ));
    let rw = open_rw(&file);
    out.push(("truncate to 0", res(rw.set_len(0))));
    out.push(("truncate to its size", res(rw.set_len(size))));
    out.push(("truncate larger", res(rw.set_len(size + MIB))));
    out.push((
        "open O_TRUNC",
        res(open_with(&file, libc::O_WRONLY | libc::O_TRUNC).map(drop)),
    ));
    // Buffered and unaligned.
    out.push(("write unaligned", res(rw.write_at(&[7u8; 5000], 12_345))));
    let mut got = vec![0u8; 5002];
    out.push(("read unaligned", res(rw.read_at(&mut got, 12_344))));
    out.push((
        "read unaligned bytes",
        format!("{:?}", (got[0], got[1], got[5000], got[5001])),
    ));
    let mut b = vec![0u8; 8192];
    out.push(("read at EOF", res(rw.read_at(&mut b, size))));
    out.push(("read across EOF", res(rw.read_at(&mut b, size - 100))));
    out.push(("read past EOF", res(rw.read_at(&mut b, size + 8192))));
    out.push(("write at EOF", res(rw.write_at(&[1u8; 10], size))));
    out.push(("write past EOF", res(rw.write_at(&[1u8; 10], size + 8192))));
    out.push(("size after", res(std::fs::metadata(&file).map(|m| m.len()))));
    // fallocate: punch, zero range, growth, and modes it does not have.
    let (keep, punch, zero) = (0x01, 0x02, 0x10);
    out.push(("punch", res(fallocate(&rw, punch | keep, 12_288, 4096))));
    out.push(("zero range", res(fallocate(&rw, zero, 20_480, 4096))));
    let mut z = vec![0u8; 5002];
    out.push(("read after discards", res(rw.read_at(&mut z, 12_344))));
    out.push((
        "discarded bytes",
        format!("{:?}", (z[0], z[1], z[4100], z[5000], z[5001])),
    ));
    out.push(("allocate in size", res(fallocate(&rw, 0, 0, MIB))));
    out.push(("allocate growing", res(fallocate(&rw, 0, size, MIB))));
    out.push(("allocate keep-size", res(fallocate(&rw, keep, size, MIB))));
    out.push(("collapse range", res(fallocate(&rw, 0x08, 0, 4096))));
    out.push((
        "punch past EOF",
        res(fallocate(&rw, punch | keep, size, 4096)),
    ));
    out.push(("fsync", res(rw.sync_all())));
    out.push(("fdatasync", res(rw.sync_data())));
    drop(rw);
    for (what, flag) in [
        ("O_SYNC write", libc::O_SYNC),
        ("O_DSYNC write", libc::O_DSYNC),
    ] {
        let f = open_with(&file, libc::O_RDWR | flag).expect("open with sync flag");
        out.push((what, res(f.write_at(&[9u8; 4096], MIB))));
    }
    // O_DIRECT: 1 MiB (one request), 3 MiB (split), and a read across the end.
    let d = open_direct(&file);
    for (what, len) in [("O_DIRECT 1 MiB", MIB), ("O_DIRECT 3 MiB", 3 * MIB)] {
        let mut w = AlignedBuf::new(len as usize);
        Rng::new(len).fill(w.as_mut_slice());
        let mut r = AlignedBuf::new(len as usize);
        let wrote = res(d.write_at(w.as_slice(), 4 * MIB));
        let read = res(d.read_at(r.as_mut_slice(), 4 * MIB));
        out.push((
            what,
            format!("{wrote} {read} same {}", w.as_slice() == r.as_slice()),
        ));
    }
    let mut r = AlignedBuf::new(MIB as usize);
    out.push((
        "O_DIRECT read across EOF",
        res(d.read_at(r.as_mut_slice(), size - 8192)),
    ));
    out
}

/// Every request answers the same over the ring as over `/dev/fuse` (values and errno).
#[test]
fn every_request_answers_alike_over_the_ring_and_over_dev_fuse() {
    needs!(Fuse, Root, FuseRing);
    let run = |ring: bool| {
        let v = ring_env();
        let vol = v.create(&["--size", "64M", "--name", "p"]);
        let d = v.dir("p");
        let chosen = if ring { "uring" } else { "classic" };
        v.attach_run(&vol, &d, &["--fuse-transport", chosen]).ok();
        let got = probe(&canon(&d));
        let t = transport(&v, &d);
        v.detach(&d);
        (got, t)
    };
    let (ring, t) = run(true);
    assert_eq!(t, "io_uring", "the probe went through the ring");
    let (dev, t) = run(false);
    assert_eq!(t, "/dev/fuse");
    let diff: Vec<String> = ring
        .iter()
        .zip(&dev)
        .filter(|(a, b)| a != b)
        .map(|((w, a), (_, b))| format!("{w}: ring {a}, /dev/fuse {b}"))
        .collect();
    assert!(diff.is_empty(), "{}", diff.join("\n"));
    // And the answers are the ones the file promises.
    let get = |w: &str| ring.iter().find(|(k, _)| *k == w).unwrap().1.clone();
    assert_eq!(
        get("truncate to 0"),
        format!("errno {:?}", Some(libc::EPERM))
    );
    assert_eq!(get("read at EOF"), "ok 0");
    assert_eq!(get("read across EOF"), "ok 100");
    assert_eq!(get("O_DIRECT 1 MiB"), "ok 1048576 ok 1048576 same true");
    assert_eq!(get("O_DIRECT 3 MiB"), "ok 3145728 ok 3145728 same true");
    assert_eq!(get("read unaligned bytes"), "(0, 7, 7, 0)");
    assert_eq!(get("discarded bytes"), "(0, 0, 7, 7, 0)");
}

/// Writers that open, write a sequence number, fsync and close in a loop, pausing between
/// rounds so that a detach can find the file closed.
fn writer(file: PathBuf, slot: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(slot);
        let mut last = 0;
        let mut seq = 1u64;
        while !stop.load(Ordering::Acquire) {
            let r = (|| -> std::io::Result<()> {
                let f = OpenOptions::new().read(true).write(true).open(&file)?;
                let mut b = vec![0u8; 4096];
                b[..8].copy_from_slice(&seq.to_le_bytes());
                b[8..16].copy_from_slice(&slot.to_le_bytes());
                f.write_all_at(&b, slot * 4096)?;
                f.sync_all()
            })();
            if r.is_ok() {
                last = seq;
                seq += 1;
            }
            std::thread::sleep(Duration::from_micros(rng.below(5000)));
        }
        last
    })
}

/// A detach races with writers in several threads (each opening, writing, fsyncing and
/// closing the file): it succeeds once the file is closed, the writers then fail cleanly,
/// every fsynced write is there after a reattach, and the detached volume's queue threads
/// are gone while the daemon serves another volume.
#[test]
fn detach_racing_with_writers_keeps_fsynced_writes_and_ends_its_queues() {
    needs!(Fuse, Root, FuseRing);
    let v = ring_env();
    let keep = v.create(&["--size", "64M", "--name", "keep"]);
    let vol = v.create(&["--size", "64M", "--name", "w"]);
    let (dk, dw) = (v.dir("keep"), v.dir("w"));
    let fk = v.attach(&keep, &dk, &[]);
    drop(pread(&open_rw(&fk), 0, 4096)); // the ring serves it
    let pid = v.daemon_pid().expect("a daemon");
    let alone = ring_threads(pid);
    assert!(alone > 0, "ring threads for one volume");
    for round in 0..3u64 {
        let fw = v.attach(&vol, &dw, &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|i| writer(fw.clone(), round * 8 + i, stop.clone()))
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let d = dw.to_string_lossy();
        let mut busy = 0;
        loop {
            let out = v.run(&["detach", &d]);
            if out.code == 0 {
                break;
            }
            busy += 1;
            assert!(
                busy < 10_000,
                "detach never found the file closed: {}",
                out.stderr
            );
        }
        stop.store(true, Ordering::Release);
        let last: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        assert!(
            !is_mount_point(&dw),
            "round {round}: still mounted after detach"
        );
        assert!(
            wait_until(Duration::from_secs(10), || ring_threads(pid) == alone),
            "round {round}: {} ring threads after the detach, {alone} before the attach",
            ring_threads(pid)
        );
        let fw = v.attach(&vol, &dw, &[]);
        let f = open_rw(&fw);
        for (i, want) in last.iter().enumerate() {
            let slot = round * 8 + i as u64;
            let b = pread(&f, slot * 4096, 16);
            let seq = u64::from_le_bytes(b[..8].try_into().unwrap());
            assert_eq!(
                seq, *want,
                "round {round}: writer {i} fsynced write {want}, reads {seq}"
            );
        }
        drop(f);
        v.detach(&dw);
    }
    v.detach(&dk);
}

/// Attach/detach cycles with I/O through the ring, while another volume keeps the daemon
/// up: the daemon ends with the FUSE threads it had, and its resident memory does not
/// grow by the ring's buffers (each queue thread registers 2 x 1 MiB: a plain detach that
/// left them to the kernel would keep up to 16 MiB per cycle on two CPUs).
#[test]
fn attach_detach_cycles_with_io_leave_no_ring_threads_or_buffers() {
    needs!(Fuse, Root, FuseRing);
    let v = ring_env();
    let keep = v.create(&["--size", "64M", "--name", "keep"]);
    let vol = v.create(&["--size", "64M", "--name", "c"]);
    let (dk, dc) = (v.dir("keep"), v.dir("c"));
    v.attach(&keep, &dk, &[]);
    let pid = v.daemon_pid().expect("a daemon");
    let cycle = |i: u64| {
        let f = v.attach(&vol, &dc, &[]);
        let d = open_direct(&f);
        let mut w = AlignedBuf::new(MIB as usize);
        Rng::new(i).fill(w.as_mut_slice());
        for k in 0..8 {
            d.write_at(w.as_slice(), k * MIB).unwrap();
        }
        let mut r = AlignedBuf::new(MIB as usize);
        d.read_at(r.as_mut_slice(), 7 * MIB).unwrap();
        assert!(r.as_slice() == w.as_slice(), "cycle {i}: read back");
        d.sync_all().unwrap();
        drop(d);
        v.detach(&dc);
    };
    for i in 0..3 {
        cycle(i);
    }
    let serving = || {
        let mut t: Vec<String> = thread_names(pid)
            .into_iter()
            .filter(|c| c.starts_with("fuse"))
            .collect();
        t.sort();
        t
    };
    let threads = serving();
    let rss = status_kb(pid, "VmRSS");
    let cycles = 20;
    for i in 3..3 + cycles {
        cycle(i);
    }
    assert_eq!(serving(), threads, "FUSE threads after {cycles} cycles");
    let grown = status_kb(pid, "VmRSS").saturating_sub(rss) / 1024;
    // Leaking every queue's entries grew it 230-340 MiB here (what the kernel wrote into
    // them stays resident); without a leak, 0-55 MiB (freed buffers are reused by the next
    // cycle's queues).
    assert!(
        grown < cycles * 6,
        "the daemon's resident memory grew {grown} MiB over {cycles} cycles"
    );
    v.detach(&dk);
}

/// Writes O_DIRECT blocks in a loop until told to stop or the mount fails.
fn background_writes(file: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let d = open_direct(file);
    let n = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        let mut w = AlignedBuf::new(256 * KIB as usize);
        Rng::new(9).fill(w.as_mut_slice());
        let mut i = 0u64;
        while !stop.load(Ordering::Acquire) {
            if d.write_at(w.as_slice(), 32 * MIB + (i % 64) * 256 * KIB)
                .is_err()
            {
                break;
            }
            i += 1;
            n.store(i, Ordering::Release);
        }
        i
    })
}

/// kill -9 of the daemon while the ring serves writes: the writer fails (no hang), the
/// volume attaches again and is served over the ring, and what was fsynced is there.
/// Then SIGTERM while the ring serves writes: the daemon flushes and exits, and a write
/// it acknowledged (not fsynced) is there after a reattach.
/// Sends `sig` to the daemon while a thread writes to `file` over the ring, waits for the
/// daemon to exit, then stops the writer; returns the bytes it wrote.
fn signal_daemon_during_writes(v: &VolEnv, file: &Path, sig: nix::sys::signal::Signal) -> u64 {
    let pid = v.daemon_pid().expect("a daemon");
    let stop = Arc::new(AtomicBool::new(false));
    let w = background_writes(file, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || !process_alive(pid)),
        "the daemon did not exit on {sig}; threads: {:?}",
        thread_names(pid)
    );
    stop.store(true, Ordering::Release);
    w.join().unwrap()
}

#[test]
fn kill_9_and_sigterm_during_ring_io_keep_what_was_promised() {
    needs!(Fuse, Root, FuseRing);
    let v = ring_env();
    let vol = v.create(&["--size", "64M", "--name", "k"]);
    let dir = v.dir("k");
    let file = v.attach(&vol, &dir, &[]);
    let synced = Rng::new(1).bytes(MIB as usize);
    let f = open_rw(&file);
    pwrite(&f, 3 * MIB, &synced);
    f.sync_all().unwrap();
    drop(f);
    // The writer's next request fails on the dead connection: it returns.
    let wrote = signal_daemon_during_writes(&v, &file, nix::sys::signal::Signal::SIGKILL);
    assert!(wrote > 0, "the writer wrote before the kill");
    let file = v.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    assert_bytes(
        "fsynced before kill -9",
        3 * MIB,
        &pread(&f, 3 * MIB, MIB as usize),
        &synced,
    );
    assert_eq!(transport(&v, &dir), "io_uring");

    // SIGTERM: an acknowledged write is flushed by the shutdown.
    let acked = Rng::new(2).bytes(MIB as usize);
    pwrite(&f, 5 * MIB, &acked);
    drop(f);
    signal_daemon_during_writes(&v, &file, nix::sys::signal::Signal::SIGTERM);
    let file = v.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    assert_bytes(
        "acknowledged before SIGTERM",
        5 * MIB,
        &pread(&f, 5 * MIB, MIB as usize),
        &acked,
    );
    assert_bytes(
        "fsynced before kill -9",
        3 * MIB,
        &pread(&f, 3 * MIB, MIB as usize),
        &synced,
    );
    drop(f);
    v.detach(&dir);
}

/// Reads the first block of `file` in a thread; None if it has not answered in 10 s (an
/// unserved mount hangs: the thread is then left behind, blocked).
fn read_answers(file: &Path) -> Option<std::io::Result<usize>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let file = file.to_path_buf();
    std::thread::spawn(move || {
        let r = File::open(&file).and_then(|f| f.read_at(&mut [0u8; 4096], 0));
        let _ = tx.send(r);
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

/// Under the usual soft descriptor limit (1024, what a login shell passes on), a daemon
/// serving 30 volumes serves every one of them. Each mount holds a descriptor per FUSE
/// thread (16, `clone_fd`) and, over the ring, 3 per queue thread (its `/dev/fuse`
/// duplicate, eventfd and io_uring: 24 on two CPUs): about 40 a volume, so the 26th
/// volume's threads could not start and every access to it hung.
#[test]
fn thirty_volumes_under_a_1024_descriptor_limit_are_all_served() {
    needs!(Fuse, Root, FuseRing);
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    // This test's process only (nextest runs each test in its own): the CLI and the
    // daemon it starts inherit the limit.
    setrlimit(Resource::RLIMIT_NOFILE, 1024.min(hard), hard).unwrap();
    let v = ring_env();
    let mut files = Vec::new();
    for i in 0..30 {
        let name = format!("v{i}");
        let vol = v.create(&["--size", "16M", "--name", &name]);
        // Not `attach`, whose check that the file exists would hang on an unserved mount.
        let dir = v.dir(&name);
        v.attach_run(&vol, &dir, &[]).ok();
        files.push(dir.join("volume"));
    }
    let unserved: Vec<String> = files
        .iter()
        .filter_map(|f| match read_answers(f) {
            Some(Ok(4096)) => None,
            Some(r) => Some(format!("{f:?}: {r:?}")),
            None => Some(format!("{f:?}: no answer")),
        })
        .collect();
    let pid = v.daemon_pid().expect("a daemon");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    assert!(
        unserved.is_empty(),
        "{} of 30 volumes unserved (daemon holds {fds} descriptors): {unserved:#?}",
        unserved.len()
    );
    for i in 0..30 {
        v.detach(&v.dir(&format!("v{i}")));
    }
}
