//! Loop devices (losetup): binding a file to a block device with direct I/O and 4 KiB
//! sectors, so the kernel's page cache is not a second copy of the FUSE file's data, and
//! finding the devices bound to a file.

use std::path::Path;
use std::time::{Duration, Instant};

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
    if let Err(e) = wait_for_size(&dev, file) {
        let _ = loop_detach(&dev);
        return Err(e);
    }
    tune_loop(&dev);
    Ok(dev)
}

/// How long a fresh loop device may take to report its backing file's size.
const SIZE_WAIT: Duration = Duration::from_secs(5);

/// Waits until `dev` reports the size of `file` (`/sys/block/NAME/size`, in 512-byte
/// sectors). Under parallel load `mkfs.xfs` run at once on a fresh device was seen to read
/// a size of 0 ("can't get size of data subvolume"); mkfs now starts only on a device that
/// reports its whole file. A file of size 0 (or a device that never catches up) is an error
/// naming both, never a filesystem made on a device of the wrong size.
fn wait_for_size(dev: &str, file: &Path) -> Result<()> {
    let fail = |message: String| ToolError {
        tool: format!("losetup {}", file.display()),
        message,
    };
    let want = std::fs::metadata(file)
        .map_err(|e| fail(format!("cannot read the size of {}: {e}", file.display())))?
        .len()
        / 512;
    if want == 0 {
        return Err(fail(format!(
            "{} is empty: a loop device needs a file of at least one 4 KiB block",
            file.display()
        )));
    }
    let name = Path::new(dev)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let knob = format!("/sys/block/{name}/size");
    let started = Instant::now();
    loop {
        let got = std::fs::read_to_string(&knob)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if got == want {
            return Ok(());
        }
        if started.elapsed() > SIZE_WAIT {
            return Err(fail(format!(
                "{dev} reports {got} sectors after {}s, its file has {want}; detach stale loop devices (losetup -D) and retry",
                SIZE_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// True if loop device `dev` (`/dev/loopN`) is bound to `file` right now (its sysfs
/// `backing_file`). A device named in a record from an earlier run may since have been
/// released and bound by someone else: check before detaching it by name.
pub fn backs(dev: &str, file: &Path) -> bool {
    let Some(name) = Path::new(dev).file_name() else {
        return false;
    };
    let sys = Path::new("/sys/block").join(name).join("loop/backing_file");
    match (std::fs::read_to_string(sys), std::fs::canonicalize(file)) {
        (Ok(b), Ok(f)) => Path::new(b.trim()) == f,
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Before the wait, an empty file gave a device of size 0 and the failure surfaced
    /// later as mkfs's "can't get size of data subvolume"; now attach itself refuses.
    #[test]
    fn an_empty_file_is_refused_before_mkfs_sees_a_device_of_size_zero() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty");
        std::fs::write(&file, b"").unwrap();
        let err = wait_for_size("/dev/loop-none", &file).unwrap_err();
        assert!(err.message.contains("is empty"), "{err}");
    }

    /// A device whose size never matches its file times out with both sizes named.
    #[test]
    fn a_device_that_never_reports_the_file_size_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![0u8; 8192]).unwrap();
        let err = wait_for_size("/dev/no-such-loop", &file).unwrap_err();
        assert!(err.message.contains("reports 0 sectors"), "{err}");
        assert!(err.message.contains("has 16"), "{err}");
    }
}
