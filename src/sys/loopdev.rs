//! Loop devices (losetup): binding a file to a block device with direct I/O and 4 KiB
//! sectors, so the kernel's page cache is not a second copy of the FUSE file's data, and
//! finding the devices bound to a file.

use std::path::Path;

use super::tool::{ToolError, run};

type Result<T> = std::result::Result<T, ToolError>;

/// Largest request the loop device passes to the FUSE file. The kernel's default (1280
/// KiB) hands a whole 1 MiB write to one FUSE request, encrypted and written by one daemon
/// thread while the others wait; at 256 KiB the loop device sends four requests at once,
/// which the daemon's threads encrypt and write in parallel. Measured through ext4 with
/// fio (1 MiB, O_DIRECT, psync): sequential writes 1.85-1.95 → 2.28-2.38 GB/s, reads
/// 2.47-2.55 → 3.46-3.91 GB/s; 128 and 512 KiB were no better (docs/benchmarks.md, "mount").
pub const LOOP_MAX_SECTORS_KB: u32 = 256;

/// Binds `file` to a free loop device with direct I/O and 4 KiB sectors.
pub fn loop_attach(file: &Path) -> Result<String> {
    let f = file.to_string_lossy();
    let dev = run(
        "losetup",
        &[
            "--find",
            "--show",
            "--direct-io=on",
            "--sector-size",
            "4096",
            &f,
        ],
    )?;
    tune_loop(&dev);
    Ok(dev)
}

/// Best effort: a loop device that keeps the default only runs slower.
fn tune_loop(dev: &str) {
    let Some(name) = Path::new(dev).file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let knob = format!("/sys/block/{name}/queue/max_sectors_kb");
    if let Err(e) = std::fs::write(&knob, LOOP_MAX_SECTORS_KB.to_string()) {
        tracing::warn!("cannot set {knob} to {LOOP_MAX_SECTORS_KB}: {e}");
    }
}

pub fn loop_detach(dev: &str) -> Result<()> {
    run("losetup", &["--detach", dev]).map(|_| ())
}

/// Loop devices currently backed by `file`.
pub fn loops_of(file: &Path) -> Vec<String> {
    let f = file.to_string_lossy();
    run(
        "losetup",
        &["--noheadings", "--output", "NAME", "--associated", &f],
    )
    .map(|s| {
        s.lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    })
    .unwrap_or_default()
}
