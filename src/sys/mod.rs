//! Every system call wrapper and external tool in one place (as gocryptfs's syscallcompat):
//! the layers above ask this module what the kernel says instead of each reading /proc or
//! running a tool its own way.
//!
//! - [`clock`]: the time, skewable in debug builds for tests;
//! - [`fsio`]: durable file writes (write, fsync, rename, fsync the directory) and locks;
//! - [`mountinfo`]: the one parser of `/proc/self/mountinfo`.

pub mod clock;
pub mod fsio;
pub mod mountinfo;
