//! Frontends over the volume layer: the FUSE filesystem exposing a volume as one file,
//! the region daemon that owns the pool while volumes are attached, its control socket,
//! the source name its mounts carry (region and volume), and the loop/mkfs/mount helper
//! behind `cryptvol mount`.

pub mod access;
pub mod control;
pub mod daemon;
pub mod errno;
pub mod fsname;
pub mod mount;
pub mod volume_fs;
