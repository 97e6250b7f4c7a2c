//! Frontends over the volume layer: the FUSE filesystem exposing a volume as one file,
//! the region daemon that owns the pool while volumes are attached, its control socket,
//! the pool's owner and typed catalog (the same operations whether the daemon or a command
//! owns the pool), the source name its mounts carry (region and volume), and the loop/mkfs/mount helper
//! behind `cryptvol mount`.

pub mod catalog;
pub mod control;
pub mod daemon;
pub mod errno;
pub mod fsname;
pub mod mount;
pub mod owner;
pub mod volume_fs;
