//! Kernel filesystems on a block device: probing (blkid), making (mkfs.ext4, mkfs.xfs),
//! mounting and unmounting them (mount, umount), and freezing one around a snapshot
//! (fsfreeze, which is FIFREEZE/FITHAW).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tool::{ToolError, run};

type Result<T> = std::result::Result<T, ToolError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// Every filesystem `cryptvol mount` can make, by name.
    pub const ALL: [FsType; 2] = [FsType::Ext4, FsType::Xfs];

    pub fn from_name(name: &str) -> Option<FsType> {
        FsType::ALL.into_iter().find(|f| f.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
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

/// Freezes the filesystem mounted on `dir` (FIFREEZE through fsfreeze(8)): writes block and
/// everything written so far is on the device until [`thaw`].
pub fn freeze(dir: &Path) -> Result<()> {
    run("fsfreeze", &["--freeze", &dir.to_string_lossy()]).map(|_| ())
}

pub fn thaw(dir: &Path) -> Result<()> {
    run("fsfreeze", &["--unfreeze", &dir.to_string_lossy()]).map(|_| ())
}
