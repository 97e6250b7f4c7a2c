//! Every system call wrapper and external tool in one place: the layers above ask this
//! module what the kernel says instead of each reading /proc or running a tool its own
//! way.
//!
//! For now it holds only [`mountinfo`], the one parser of `/proc/self/mountinfo`.

pub mod mountinfo;
