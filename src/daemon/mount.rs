//! `cryptvol mount`: a kernel filesystem on top of an attached volume. The volume file is
//! bound to a loop device (direct I/O, 4096-byte sectors, see `sys::loopdev`), formatted on
//! first use, and mounted. Each step is recorded so `unmount` can undo all of them, in
//! reverse, even after a partial failure. Uses util-linux and e2fsprogs/xfsprogs, as a
//! user would; their stderr becomes our error message.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::datadir::RegionDir;
use crate::sys::filesystem::FsType;
use crate::sys::fsio;
use crate::volume::VolumeError;
use crate::volume::error::Result;

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
