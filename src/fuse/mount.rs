//! `cryptvol mount`: a kernel filesystem on top of an attached volume. The volume file is
//! bound to a loop device (direct I/O, 4096-byte sectors: PERFORMANCE.md), formatted on
//! first use, and mounted. Each step is recorded so `unmount` can undo all of them, in
//! reverse, even after a partial failure. Uses util-linux and e2fsprogs/xfsprogs, as a
//! user would; their stderr becomes our error message.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::datadir::RegionDir;
use crate::sys::fsio;
use crate::volume::VolumeError;
use crate::volume::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

/// What `mount` did, kept in `<region>/run/mounts/<volume>.json` until `unmount`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountRecord {
    pub volume_id: String,
    pub dir: PathBuf,
    pub attach_dir: PathBuf,
    pub loop_device: Option<String>,
    pub fs: FsType,
}

fn record_path(region: &RegionDir, volume: &str) -> PathBuf {
    region.mounts_dir().join(format!("{volume}.json"))
}

pub fn save_record(region: &RegionDir, r: &MountRecord) -> Result<()> {
    let dir = region.mounts_dir();
    fsio::create_private_dir(&dir).map_err(|e| VolumeError::io("cannot create", &dir, e))?;
    let p = record_path(region, &r.volume_id);
    fsio::write_atomic(
        &p,
        &serde_json::to_vec_pretty(r).expect("serialises"),
        fsio::PRIVATE_FILE,
    )
    .map_err(|e| VolumeError::io("cannot write", &p, e))
}

pub fn remove_record(region: &RegionDir, volume: &str) {
    let _ = std::fs::remove_file(record_path(region, volume));
}

pub fn records(region: &RegionDir) -> Vec<MountRecord> {
    let Ok(rd) = std::fs::read_dir(region.mounts_dir()) else {
        return vec![];
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect()
}

/// Runs a system tool; its stderr is the error.
fn run(tool: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|e| VolumeError::Tool {
            tool: tool.to_string(),
            message: format!("cannot run it ({e}); install util-linux / e2fsprogs / xfsprogs"),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ");
        return Err(VolumeError::Tool {
            tool: format!("{tool} {}", args.join(" ")),
            message: if err.is_empty() {
                format!("exited with {}", out.status)
            } else {
                err
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Largest request the loop device passes to the FUSE file. The kernel's default (1280
/// KiB) hands a whole 1 MiB write to one FUSE request, encrypted and written by one daemon
/// thread while the others wait; at 256 KiB the loop device sends four requests at once,
/// which the daemon's threads encrypt and write in parallel. Measured through ext4 with
/// fio (1 MiB, O_DIRECT, psync): sequential writes 1.85-1.95 → 2.28-2.38 GB/s, reads
/// 2.47-2.55 → 3.46-3.91 GB/s; 128 and 512 KiB were no better (docs/benchmarks.md).
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

/// The filesystem type on `dev`, if any (blkid probes the device itself).
pub fn fs_type(dev: &str) -> Option<String> {
    run("blkid", &["-p", "-o", "value", "-s", "TYPE", dev])
        .ok()
        .filter(|t| !t.is_empty())
}

pub fn mkfs(dev: &str, fs: FsType) -> Result<()> {
    match fs {
        FsType::Ext4 => run("mkfs.ext4", &["-q", "-F", dev]).map(|_| ()),
        FsType::Xfs => run("mkfs.xfs", &["-q", "-f", dev]).map(|_| ()),
    }
}

pub fn mount_fs(dev: &str, dir: &Path, fs: FsType) -> Result<()> {
    let d = dir.to_string_lossy();
    run("mount", &["-t", fs.as_str(), dev, &d]).map(|_| ())
}

/// Whether `dir` (as given: pass a canonical path) is a mount point.
pub fn is_mount_point(dir: &Path) -> bool {
    crate::sys::mountinfo::is_mount_point(dir)
}

pub fn umount(dir: &Path) -> Result<()> {
    let d = dir.to_string_lossy();
    run("umount", &[&d]).map(|_| ())
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
