//! Every system call wrapper and external tool in one place (as gocryptfs's syscallcompat):
//! the layers above ask this module what the kernel says instead of each reading /proc or
//! running a tool its own way.
//!
//! - [`clock`]: the time, skewable in debug builds for tests;
//! - [`fsio`]: durable file writes (write, fsync, rename, fsync the directory) and locks;
//! - [`mountinfo`]: the one parser of `/proc/self/mountinfo`;
//! - [`tool`]: running an external tool, its stderr as the error;
//! - [`loopdev`], [`filesystem`], [`unmount`]: losetup; blkid, mkfs, mount, umount,
//!   fsfreeze; unmounting FUSE (umount2 or fusermount3);
//! - [`file`]: punching holes and read-ahead advice;
//! - [`process`]: the CPUs (possible, online), pinning a thread, the open-file limit;
//! - [`allocator`]: the process's heap (mimalloc for small blocks, glibc's for large).

pub mod allocator;
pub mod clock;
pub mod file;
pub mod filesystem;
pub mod fsio;
pub mod loopdev;
pub mod mountinfo;
pub mod process;
pub mod tool;
pub mod unmount;
pub mod watch;
