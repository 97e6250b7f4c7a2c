//! File system calls the pool makes beyond read and write: punching holes (freed slots
//! give their space back) and read-ahead advice.

use std::fs::File;
use std::io;

use nix::fcntl::{FallocateFlags, PosixFadviseAdvice, fallocate, posix_fadvise};

/// Deallocates `len` bytes at `off`, keeping the file's size: they read as zeros.
pub fn punch_hole(file: &File, off: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
        off as i64,
        len as i64,
    )
    .map_err(io::Error::from)
}

/// Best effort: tells the kernel `len` bytes at `off` will be read soon.
pub fn will_need(file: &File, off: u64, len: u64) {
    let _ = posix_fadvise(
        file,
        off as i64,
        len as i64,
        PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

/// Best effort: tells the kernel the whole file will be read in order (doubles read-ahead).
pub fn sequential(file: &File) {
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
}
