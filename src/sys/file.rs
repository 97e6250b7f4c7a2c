//! File system calls the pool makes beyond read and write: punching holes (freed slots
//! give their space back), read-ahead advice, and reads that never wait for the disk.

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

/// Reads all of `buf` at `off` if the page cache holds it, without waiting for any I/O
/// (`preadv2` with `RWF_NOWAIT`). `Ok(false)`: it does not, or only part of it, or the file
/// ends first; an error: the call failed (`EOPNOTSUPP`: the filesystem cannot read without
/// waiting, as tmpfs here). Either way the caller reads the usual way; what it leaves in
/// `buf` is unspecified.
pub fn read_cached(file: &File, buf: &mut [u8], off: u64) -> io::Result<bool> {
    let want = buf.len();
    match rustix::io::preadv2(
        file,
        &mut [io::IoSliceMut::new(buf)],
        off,
        rustix::io::ReadWriteFlags::NOWAIT,
    ) {
        Ok(n) => Ok(n == want),
        Err(e) if e == rustix::io::Errno::AGAIN => Ok(false),
        Err(e) => Err(e.into()),
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// Bytes just written are in the page cache: read whole, and right. Past the end of
    /// the file (short) and after the pages are dropped (they would need the disk): false.
    #[test]
    fn read_cached_reads_what_the_page_cache_holds_and_nothing_else() {
        // On a disk: a tmpfs cannot read without waiting (EOPNOTSUPP).
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = d.path().join("f");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        f.write_all_at(&data, 0).unwrap();
        let mut buf = vec![0u8; 4096];
        assert!(read_cached(&f, &mut buf, 4096).unwrap());
        assert_eq!(buf, data[4096..]);
        assert!(
            !read_cached(&f, &mut buf, 6144).unwrap(),
            "ends past the file"
        );
        f.sync_all().unwrap();
        posix_fadvise(&f, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
        // Dropped pages may come back at once on some filesystems (tmpfs keeps them):
        // there the read is from memory and must be right.
        let mut again = vec![0u8; 4096];
        if read_cached(&f, &mut again, 0).unwrap() {
            assert_eq!(again, data[..4096]);
        }
    }
}
