//! The region daemon and what it serves: it owns the region's pool while volumes are
//! attached, serves each attached volume through FUSE as one file, and answers commands
//! on its control socket; a command that finds no daemon owns the pool itself, through
//! the same typed [`crate::snapshot::catalog::Catalog`].
//!
//! Files:
//! - `run`: the daemon's life (start, attach, detach, status, stop on the last detach or a
//!   signal); `socket`: its side of the control socket;
//! - `rpc`: the control protocol (typed requests, replies, progress lines); `client`: a
//!   command's side of it;
//! - `owner`: the pool's owner (one state machine per volume, leases, serialised
//!   operations), and `catalog` which opens the one that owns it (the trait both answer is
//!   `snapshot::catalog::Catalog`);
//! - `fetcher`: the chunk fetcher of lazily restored volumes, built from the region's
//!   config;
//! - `fuse_file`: the FUSE filesystem exposing a volume as one file; `fuse_ring`: the same
//!   requests over io_uring queues where the kernel offers them; `transport`: which of the
//!   two serves a mount (`--fuse-transport`); `errno`: volume errors
//!   as errno values; `fsname`: the source its mounts carry (region and volume);
//! - `mount`: the records of `cryptvol mount` (loop device, filesystem, mount point).

pub mod catalog;
pub mod client;
pub mod errno;
pub mod fetcher;
pub mod fsname;
pub mod fuse_file;
pub mod fuse_ring;
pub mod mount;
pub mod owner;
pub mod rpc;
pub mod run;
mod socket;
pub mod transport;
