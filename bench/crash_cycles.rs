//! `crash_cycles`: the kill -9 crash harness as a program. `bench/crash-cycles` builds it
//! (release) and runs it in a temp dir it tears down; `tests/crash_cycles.rs` runs the same
//! harness (bench/crash_cycles/harness.rs) with 20 cycles.
//!
//!   crash_cycles --cryptvol BIN --data-dir D --work W [--out JSON] [--seed S]
//!                [--volumes N] [--volume-mib M] [--blocks B] [--evidence DIR] [CYCLES]
//!
//! Prints the report (and writes it as JSON to --out); exits 1 if anything was lost,
//! damaged or left behind, 2 on a usage error.

#[path = "crash_cycles/harness.rs"]
mod harness;

use std::path::PathBuf;

fn usage(msg: &str) -> ! {
    eprintln!(
        "crash_cycles: {msg}\nusage: crash_cycles --cryptvol BIN --data-dir D --work W [--out JSON] [--seed S] [--volumes N] [--volume-mib M] [--blocks B] [--evidence DIR] [CYCLES]"
    );
    std::process::exit(2)
}

fn num(s: Option<String>, what: &str) -> u64 {
    let s = s.unwrap_or_else(|| usage(&format!("{what} needs a value")));
    let t = s.trim();
    let v = match t.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    };
    v.unwrap_or_else(|| usage(&format!("{what}: not a number: {s}")))
}

fn main() {
    let mut cryptvol = None;
    let mut data = None;
    let mut work = None;
    let mut out = None;
    let mut evidence = None;
    let mut cfg_seed = None;
    let mut cycles = None;
    let (mut volumes, mut volume_mib, mut blocks) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--cryptvol" => cryptvol = args.next().map(PathBuf::from),
            "--data-dir" => data = args.next().map(PathBuf::from),
            "--work" => work = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            "--evidence" => evidence = args.next().map(PathBuf::from),
            "--seed" => cfg_seed = Some(num(args.next(), "--seed")),
            "--volumes" => volumes = Some(num(args.next(), "--volumes")),
            "--volume-mib" => volume_mib = Some(num(args.next(), "--volume-mib")),
            "--blocks" => blocks = Some(num(args.next(), "--blocks")),
            // `cargo bench` passes this to every harness=false target.
            "--bench" => {}
            s if !s.starts_with('-') && cycles.is_none() => cycles = Some(num(Some(a), "CYCLES")),
            s => usage(&format!("unknown argument {s}")),
        }
    }
    let need =
        |v: Option<PathBuf>, f: &str| v.unwrap_or_else(|| usage(&format!("{f} is required")));
    let mut cfg = harness::Config::new(
        need(cryptvol, "--cryptvol"),
        need(data, "--data-dir"),
        need(work, "--work"),
    );
    if let Some(c) = cycles {
        cfg.cycles = c as u32;
    }
    if let Some(s) = cfg_seed {
        cfg.seed = s;
    }
    if let Some(v) = volumes {
        cfg.volumes = v as usize;
    }
    if let Some(v) = volume_mib {
        cfg.volume_mib = v;
    }
    if let Some(v) = blocks {
        cfg.blocks = v as usize;
    }
    cfg.evidence_dir = evidence;
    eprintln!(
        "[crash-cycles] {} cycles, seed {:#x} (replay with --seed {:#x}), {} volumes of {} MiB, {} blocks each",
        cfg.cycles, cfg.seed, cfg.seed, cfg.volumes, cfg.volume_mib, cfg.blocks
    );
    let report = harness::run(&cfg);
    println!("crash-cycles report\n{}", report.summary());
    if let Some(p) = out {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let text = serde_json::to_string_pretty(&report.to_json(&cfg)).expect("report serializes");
        if let Err(e) = std::fs::write(&p, text + "\n") {
            eprintln!("crash_cycles: cannot write {}: {e}", p.display());
            std::process::exit(1);
        }
        println!("report written to {}", p.display());
    }
    std::process::exit(if report.ok() { 0 } else { 1 });
}
