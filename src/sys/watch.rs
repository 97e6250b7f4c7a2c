//! Noticing that another process wrote a file we keep a reading of (the keystore, the
//! server's iam.json), with one `fstat` of a descriptor kept open on the file we read
//! instead of a `stat` of its path (a path walk) per call.
//!
//! Every writer replaces these files by renaming a new file over it (`fsio::write_atomic`,
//! a root-key rotation's install), which unlinks the inode we hold open: its link count
//! drops to 0 and its ctime changes. An edit in place changes its size, mtime and ctime;
//! a deletion its link count. So the descriptor's (inode, link count, size, mtime, ctime)
//! differ from what we saw when we read the file whenever a path `stat` would have shown
//! a change. One case rests on the ctime alone: another hard link made to the keystore
//! after our last check, then the keystore replaced (the link count goes 1 → 2 → 1).
//! Kernels with fine-grained ("multigrain", Linux 6.13+) timestamps give the second change
//! a new ctime, since we queried the first; on a filesystem with coarse timestamps, both
//! within one clock tick of our last check go unnoticed until the next write.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    nlink: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            nlink: m.nlink(),
            size: m.size(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        }
    }
}

/// The keystore file as it was when we read it: open, with its stamp.
#[derive(Debug)]
pub struct Watched {
    file: File,
    stamp: Stamp,
}

impl Watched {
    /// Opens `path` and notes its stamp. Call it *before* reading the file, so that a
    /// write between the two is seen as a change at the next check (a reload too many,
    /// never a change missed). `None` if it cannot be opened (every check then says
    /// changed, and the reload reports why).
    pub fn open(path: &Path) -> Option<Watched> {
        let file = File::open(path).ok()?;
        let stamp = Stamp::of(&file.metadata().ok()?);
        Some(Watched { file, stamp })
    }

    /// The file is still the one we read, unchanged.
    pub fn unchanged(&self) -> bool {
        self.file
            .metadata()
            .is_ok_and(|m| Stamp::of(&m) == self.stamp)
    }
}
