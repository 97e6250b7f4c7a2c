//! Writes that wait for a commit in flight, on a real `attach` of an `--integrity` volume:
//! sequential 1 MiB writes streaming while another thread fsyncs in a loop (each fsync a
//! commit whose moved blocks the writer then meets), small O_DIRECT reads of a region
//! written once, and snapshots taken meanwhile; then detach (or kill -9 of the daemon),
//! and the volume must read back and verify clean.
//!
//! Needs FUSE; without it the tests skip, unless `CRYPTVOL_REQUIRE_MOUNT=1`.

mod common;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::mount::*;
use common::str_field;

const MIB: u64 = 1 << 20;
/// Rewritten region [0, STREAM); [STREAM, STREAM + STABLE) is written once, then read.
const STREAM: u64 = 24 * MIB;
const STABLE: u64 = 8 * MIB;

fn pattern(pass: u64, off: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    for (i, w) in out.chunks_mut(8).enumerate() {
        w.copy_from_slice(&((pass << 56) ^ (off + 8 * i as u64)).to_le_bytes());
    }
    out
}

fn verify_clean(v: &VolEnv, vol: &str, what: &str) {
    let r = v.json(&["volume", "verify", vol, "--output", "json"]);
    assert_eq!(r["BadBlocks"], serde_json::json!([]), "{what}: {r:#}");
    assert_eq!(r["RootOk"], true, "{what}: {r:#}");
    let d = v.describe_vol(vol);
    assert_eq!(d["IntegrityErrors"], 0, "{what}: {d:#}");
}

/// Streams `passes` passes over [0, STREAM) with a fsync loop, O_DIRECT reads of the
/// stable region and `snaps` snapshots meanwhile.
fn stream(v: &VolEnv, vol: &str, file: &std::path::Path, passes: u64, snaps: usize) {
    let f = Arc::new(open_rw(file));
    let stop = Arc::new(AtomicBool::new(false));
    let syncer = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                f.sync_all().expect("fsync");
                n += 1;
            }
            n
        })
    };
    let reader = {
        let (file, stop) = (file.to_path_buf(), stop.clone());
        std::thread::spawn(move || {
            let d = open_direct(&file);
            let mut b = AlignedBuf::new(4096);
            let mut rng = Rng::new(7);
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let off = STREAM + rng.below(STABLE / 4096) * 4096;
                d.read_exact_at(b.as_mut_slice(), off).expect("small read");
                assert_bytes("stable region", off, b.as_slice(), &pattern(0, off, 4096));
                n += 1;
            }
            n
        })
    };
    let writer = {
        let f = f.clone();
        std::thread::spawn(move || {
            for pass in 1..=passes {
                let mut off = 0;
                while off < STREAM {
                    f.write_all_at(&pattern(pass, off, MIB as usize), off)
                        .expect("write");
                    off += MIB;
                }
            }
        })
    };
    // Snapshots while the writes stream (each quiesces the volume, then commits).
    for _ in 0..snaps {
        let s = v.json(&["snapshot", "create", vol]);
        assert!(str_field(&s, "SnapshotId").starts_with("snap-"), "{s:#}");
    }
    writer.join().unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(syncer.join().unwrap() > 0);
    assert!(reader.join().unwrap() > 0);
    f.sync_all().unwrap();
}

fn check_all(file: &std::path::Path, pass: u64) {
    let f = open_direct(file);
    let mut b = AlignedBuf::new(MIB as usize);
    let mut off = 0;
    while off < STREAM + STABLE {
        f.read_exact_at(b.as_mut_slice(), off).expect("read back");
        let p = if off < STREAM { pass } else { 0 };
        assert_bytes(
            "read back",
            off,
            b.as_slice(),
            &pattern(p, off, MIB as usize),
        );
        off += MIB;
    }
}

fn setup(v: &VolEnv, name: &str) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let vol = v.create(&["--size", "64M", "--integrity", "--name", name]);
    let dir = v.dir(name);
    let file = v.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    let mut off = STREAM;
    while off < STREAM + STABLE {
        f.write_all_at(&pattern(0, off, MIB as usize), off).unwrap();
        off += MIB;
    }
    f.sync_all().unwrap();
    (vol, dir, file)
}

/// Streaming writes with fsyncs and snapshots, then detach: everything reads back as last
/// written after a re-attach, and the volume verifies clean.
#[test]
fn streaming_writes_with_fsyncs_and_snapshots_then_detach_read_back_and_verify() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (vol, dir, file) = setup(&v, "wait-detach");
    stream(&v, &vol, &file, 3, 3);
    check_all(&file, 3);
    v.detach(&dir);
    verify_clean(&v, &vol, "after detach");
    let file = v.attach(&vol, &dir, &[]);
    check_all(&file, 3);
    v.detach(&dir);
}

/// The daemon killed (-9) right after a stream with fsyncs: the re-attached volume reads
/// what the last fsync covered and verifies clean.
#[test]
fn a_daemon_killed_after_streaming_writes_with_fsyncs_reattaches_clean() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (vol, dir, file) = setup(&v, "wait-kill");
    stream(&v, &vol, &file, 2, 0);
    let pid = v.daemon_pid().expect("a daemon");
    // SAFETY: signalling a pid this test's data dir's daemon runs as.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(wait_until(std::time::Duration::from_secs(10), || {
        !process_alive(pid)
    }));
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&dir)
        .status();
    verify_clean(&v, &vol, "after kill -9");
    let dir2 = v.dir("wait-kill-2");
    let file = v.attach(&vol, &dir2, &[]);
    check_all(&file, 2);
    v.detach(&dir2);
}

/// The daemon killed (-9, then SIGTERM on a second daemon) while writes stream and fsyncs
/// commit in a loop, so writers may be waiting for a commit in flight: the re-attached
/// volume verifies clean, the region written once is intact, and every block of the
/// streamed region holds one of the passes written (or, never fsynced, zeros).
#[test]
fn a_daemon_killed_or_terminated_while_writers_wait_reattaches_clean() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (vol, dir, file) = setup(&v, "wait-kill-live");
    let mut dir = dir;
    let mut file = file;
    for (round, sig) in [(1u64, libc::SIGKILL), (2, libc::SIGTERM)] {
        let f = Arc::new(open_rw(&file));
        let stop = Arc::new(AtomicBool::new(false));
        let syncer = {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(
                move || {
                    while !stop.load(Ordering::SeqCst) && f.sync_all().is_ok() {}
                },
            )
        };
        let writer = {
            let (f, stop) = (f.clone(), stop.clone());
            std::thread::spawn(move || {
                // The source buffer is page-aligned, so the kernel splits each 1 MiB write
                // into FUSE requests at block boundaries. From a buffer at an odd address it
                // splits where the buffer's pages end (1 MiB - 448 bytes, then 448 bytes):
                // a daemon that dies between the two leaves that block half-written, as any
                // write(2) cut short may (docs/security.md, "Torn writes").
                let mut buf = AlignedBuf::new(MIB as usize);
                let mut written = 0u64;
                'outer: for pass in 1.. {
                    let mut off = 0;
                    while off < STREAM {
                        buf.as_mut_slice()
                            .copy_from_slice(&pattern(pass, off, MIB as usize));
                        if stop.load(Ordering::SeqCst)
                            || f.write_all_at(buf.as_slice(), off).is_err()
                        {
                            break 'outer;
                        }
                        written += MIB;
                        off += MIB;
                    }
                }
                written
            })
        };
        // Let a few commits go by with the writer streaming.
        std::thread::sleep(std::time::Duration::from_millis(700));
        let pid = v.daemon_pid().expect("a daemon");
        // SAFETY: a signal to this test's own daemon.
        unsafe { libc::kill(pid, sig) };
        assert!(
            wait_until(std::time::Duration::from_secs(20), || !process_alive(pid)),
            "round {round}: the daemon ({sig}) did not exit: {}",
            v.daemon_log()
        );
        stop.store(true, Ordering::SeqCst);
        assert!(writer.join().unwrap() > 0);
        syncer.join().unwrap();
        drop(f);
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&dir)
            .status();
        verify_clean(&v, &vol, &format!("round {round} after signal {sig}"));
        dir = v.dir(&format!("wait-kill-live-{round}"));
        file = v.attach(&vol, &dir, &[]);
        let rf = open_direct(&file);
        let mut b = AlignedBuf::new(MIB as usize);
        let mut off = 0;
        while off < STREAM + STABLE {
            rf.read_exact_at(b.as_mut_slice(), off).expect("read back");
            for (i, blk) in b.as_slice().chunks(4096).enumerate() {
                let o = off + 4096 * i as u64;
                if o >= STREAM {
                    assert_bytes("stable region", o, blk, &pattern(0, o, 4096));
                } else if blk.iter().any(|&x| x != 0) {
                    let pass = u64::from_le_bytes(blk[..8].try_into().unwrap()) >> 56;
                    assert_bytes("a streamed block", o, blk, &pattern(pass, o, 4096));
                }
            }
            off += MIB;
        }
    }
    v.detach(&dir);
    verify_clean(&v, &vol, "at the end");
}
