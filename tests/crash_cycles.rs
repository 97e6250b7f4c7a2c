//! kill -9 crash cycles: the harness of `bench/crash-cycles` (bench/crash_cycles/harness.rs,
//! the same code), run here for 20 cycles on the debug build (`CRYPTVOL_CRASH_CYCLES`
//! changes the count, `CRYPTVOL_TEST_SEED` replays a run's choices).
//!
//! Each cycle writes stamped blocks with O_DIRECT and fsyncs at random points on two
//! attached volumes, runs snapshot operations (create, delete, restore, rekey restore, copy
//! in the region and to a second one; some kill -9'd mid-way), kill -9s the region daemon,
//! and then checks: `pool check` clean on the crashed pools and again online; every
//! volume re-attaches (the dead mount is cleared); every fsynced block reads back as that
//! generation or a later one written (no loss, no garbage); what each interrupted operation
//! left (re-running copies and rekey restores, as documented) reads back as its source.
//! The report goes to stderr and to `target/bench/crash-cycles-ci.json`; when something
//! fails, the daemon and writer logs are copied to `target/bench/crash-cycles-ci-evidence/`.
//!
//! Needs FUSE; without it the test skips, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes
//! it fail.

mod common;
#[path = "../bench/crash_cycles/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::mount::*;
use harness::{Seen, decode, judge, stamp};

fn env_u64(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

#[test]
fn stamps_decode_and_damage_is_seen() {
    let mut b = vec![0u8; harness::BLOCK as usize];
    assert_eq!(decode(&b, 7, 3), Seen::Zero);
    stamp(&mut b, 7, 3, 42);
    assert_eq!(decode(&b, 7, 3), Seen::Gen(42));
    assert!(
        matches!(decode(&b, 7, 4), Seen::Garbage(_)),
        "another block's stamp"
    );
    assert!(
        matches!(decode(&b, 8, 3), Seen::Garbage(_)),
        "another volume's stamp"
    );
    let mut torn = b.clone();
    torn[2048..].fill(0);
    assert!(matches!(decode(&torn, 7, 3), Seen::Garbage(_)), "torn");
    b[100] ^= 1;
    assert!(
        matches!(decode(&b, 7, 3), Seen::Garbage(_)),
        "one bit flipped"
    );
}

#[test]
fn a_block_must_hold_its_fsynced_generation_or_a_later_issued_one() {
    let issued: BTreeSet<u64> = [3, 5, 9].into_iter().collect();
    let any = u64::MAX;
    assert_eq!(judge(&Seen::Gen(5), 5, any, Some(&issued)), None);
    assert_eq!(
        judge(&Seen::Gen(9), 5, any, Some(&issued)),
        None,
        "later, issued"
    );
    assert_eq!(judge(&Seen::Zero, 0, any, None), None, "never fsynced");
    assert_eq!(
        judge(&Seen::Gen(3), 0, any, Some(&issued)),
        None,
        "not fsynced"
    );
    assert!(
        judge(&Seen::Gen(3), 5, any, Some(&issued)).unwrap().0,
        "older: lost"
    );
    assert!(
        judge(&Seen::Zero, 5, any, Some(&issued)).unwrap().0,
        "zeros: lost"
    );
    let g = Seen::Garbage("x".into());
    assert!(judge(&g, 5, any, Some(&issued)).unwrap().0, "garbage: lost");
    assert!(
        judge(&g, 0, any, Some(&issued)).is_some(),
        "garbage is wrong anyway"
    );
    assert!(
        judge(&Seen::Gen(7), 0, any, Some(&issued)).is_some(),
        "never issued"
    );
    // A snapshot holds nothing written after it completed.
    assert!(!judge(&Seen::Gen(9), 5, 8, Some(&issued)).unwrap().0);
}

#[test]
fn kill_9_cycles_lose_no_fsynced_write_and_leave_every_pool_clean() {
    needs!(Fuse);
    let v = VolEnv::uninit();
    let seed = env_u64("CRYPTVOL_TEST_SEED").unwrap_or(0xc4a5_0000_0000_0020);
    eprintln!("seed: {seed:#x} (replay with CRYPTVOL_TEST_SEED={seed:#x})");
    let mut cfg = harness::Config::new(
        PathBuf::from(env!("CARGO_BIN_EXE_cryptvol")),
        v.data.clone(),
        v.scratch().join("work"),
    );
    cfg.cycles = env_u64("CRYPTVOL_CRASH_CYCLES").unwrap_or(20) as u32;
    cfg.seed = seed;
    // The debug build re-encrypts at a few tens of MB/s: smaller volumes, and the
    // products of completed operations read back every other cycle (interrupted ones
    // always), keep 20 cycles within about 3 minutes on 2 cores.
    cfg.volume_mib = 32;
    cfg.verify_completed_every = 2;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("bench");
    cfg.evidence_dir = Some(out.join("crash-cycles-ci-evidence"));
    let report = harness::run(&cfg);
    let summary = report.summary();
    eprintln!("crash-cycles report\n{summary}");
    let _ = std::fs::create_dir_all(&out);
    let json = serde_json::to_string_pretty(&report.to_json(&cfg)).expect("report serializes");
    let _ = std::fs::write(out.join("crash-cycles-ci.json"), json + "\n");
    assert!(
        report.ok(),
        "crash cycles found problems (seed {seed:#x}; report in {}):\n{summary}",
        out.join("crash-cycles-ci.json").display()
    );
    assert!(daemons_of(&v.data).is_empty(), "a daemon is left");
    assert!(mounts_under(v.scratch()).is_empty(), "mounts are left");
    assert!(loops_under(v.scratch()).is_empty(), "loop devices are left");
}
