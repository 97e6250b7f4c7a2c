//! File system calls the pool makes beyond read and write: punching holes (freed slots
//! give their space back), read-ahead advice, and reads that never wait for the disk; and
//! the audit append's look at its file that asks for no timestamps.

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

/// Size, permission bits and link count of an open file, from one `statx` that asks for
/// nothing else. Not asking for the change and modification times matters to a file that
/// is appended to after every look: with fine-grained ("multigrain", Linux 6.13+)
/// timestamps, a query of those times makes the next write give the file a new ctime and
/// mtime, which dirties the inode (an ext4 journal update) on every append, where
/// otherwise at most one write per clock tick does.
pub fn size_mode_links(file: &File) -> io::Result<(u64, u32, u64)> {
    use rustix::fs::{AtFlags, StatxFlags, statx};
    let want = StatxFlags::SIZE | StatxFlags::MODE | StatxFlags::NLINK;
    match statx(file, "", AtFlags::EMPTY_PATH, want) {
        Ok(s) if StatxFlags::from_bits_retain(s.stx_mask).contains(want) => Ok((
            s.stx_size,
            u32::from(s.stx_mode) & 0o7777,
            u64::from(s.stx_nlink),
        )),
        // No statx (old kernels, some sandboxes), or a field not given: a plain fstat.
        _ => {
            use std::os::unix::fs::MetadataExt;
            let m = file.metadata()?;
            Ok((m.size(), m.mode() & 0o7777, m.nlink()))
        }
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

/// Best effort: drops the file's clean pages from the page cache (dirty ones stay, and
/// their writeback starts).
pub fn drop_clean_pages(file: &File) {
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
}

/// Best effort: tells the kernel the whole file will be read in order (doubles read-ahead).
pub fn sequential(file: &File) {
    let _ = posix_fadvise(file, 0, 0, PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL);
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// The narrow look sees what a full `fstat` sees.
    #[test]
    fn size_mode_links_match_metadata() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let f = File::open(&path).unwrap();
        let m = f.metadata().unwrap();
        assert_eq!(size_mode_links(&f).unwrap(), (5, 0o640, m.nlink()));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(size_mode_links(&f).unwrap(), (5, 0o640, 0));
    }

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
