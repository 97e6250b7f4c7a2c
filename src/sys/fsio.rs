//! Durable file operations shared by every layer that keeps state on disk: atomic replace
//! (temp file, fsync, rename, fsync directory), exclusive creation, private directories,
//! and cross-process locks. Plain std I/O; nothing here knows what the bytes mean.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of files that hold keys or sealed keys.
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of directories under the data dir.
pub const PRIVATE_DIR: u32 = 0o700;

/// Creates `path` and its parents with mode 0700 (existing directories keep their mode),
/// durably: the entry of each directory created is synced in its parent.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    // The directories this call creates, deepest first: each one's entry is made durable
    // in its parent (a crash must not lose a directory that files synced later live in).
    let mut created = vec![];
    let mut p = path;
    while !p.exists() {
        created.push(p);
        match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => p = q,
            _ => break,
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR)
        .create(path)?;
    for dir in created.into_iter().rev() {
        // A parent this user may not read (write and search only) cannot be opened to
        // sync; the failure of a sync that ran is an error.
        if let Ok(parent) = File::open(parent_of(dir)) {
            sync_dir_file(parent_of(dir), &parent)?;
        }
    }
    Ok(())
}

/// Makes a directory entry change (create, rename, unlink) in `dir` durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    sync_dir_file(dir, &File::open(dir)?)
}

/// `fsync_dir` of a directory already open as `file` (at `path`). Every directory sync of
/// the crate goes through here, so that tests can see which entries were made durable:
/// a crash that loses an unsynced entry cannot be staged on this kernel (no device mapper
/// to drop writes), so the syncs themselves are what the tests check (`synced_dirs`).
pub fn sync_dir_file(path: &Path, file: &File) -> io::Result<()> {
    file.sync_all()?;
    #[cfg(test)]
    synced_dirs::record(path);
    #[cfg(not(test))]
    let _ = path;
    Ok(())
}

/// The directories this thread synced (unit tests only).
#[cfg(test)]
pub mod synced_dirs {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static SYNCED: RefCell<Vec<(PathBuf, Vec<String>)>> = const { RefCell::new(Vec::new()) };
    }

    /// A sync of `path` that succeeded, with the names its directory held then (what the
    /// sync made durable).
    pub(super) fn record(path: &Path) {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        SYNCED.with(|s| s.borrow_mut().push((path.to_path_buf(), names)));
    }

    /// The directories synced on this thread since the last call, in order.
    pub fn take() -> Vec<PathBuf> {
        take_with_names().into_iter().map(|(p, _)| p).collect()
    }

    /// As [`take`], each with the names in the directory when it was synced.
    pub fn take_with_names() -> Vec<(PathBuf, Vec<String>)> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tag: [u8; 6] = crate::crypto::random::array();
    let tag = hex::encode(tag);
    parent_of(path).join(format!(".{name}.tmp-{}-{tag}", std::process::id()))
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content,
/// never a mix: write a temp file in the same directory, fsync it, rename it over `path`,
/// fsync the directory. The temp file is removed on any error.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fsync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path` with `bytes`, failing with `AlreadyExists` if it is there; durable like
/// [`write_atomic`], and never visible half-written.
pub fn create_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // hard_link fails if `path` exists, which rename would not.
        fs::hard_link(&tmp, path)?;
        fs::remove_file(&tmp)?;
        fsync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// An exclusive advisory lock (flock) held until drop; serialises writers across processes.
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// The lock file at `path`, created 0600 if missing.
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE_FILE)
            .open(path)
    }

    /// Blocks until the lock on `path` (created 0600 if missing) is ours.
    pub fn exclusive(path: &Path) -> io::Result<FileLock> {
        let file = Self::open(path)?;
        file.lock()?;
        Ok(FileLock { _file: file })
    }

    /// The lock on `path` if nobody holds it, else None (does not wait).
    pub fn try_exclusive(path: &Path) -> io::Result<Option<FileLock>> {
        Self::adopt(Self::open(path)?)
    }

    /// The lock through `file`, an open lock file, if nobody else holds it. A flock
    /// belongs to the open file description: a process given a description already
    /// locked (by the process that started it) takes the lock through it at once.
    pub fn adopt(file: File) -> io::Result<Option<FileLock>> {
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// The locked file, to hand the lock to a child process (as its stdin): the lock is
    /// held as long as any process keeps the description open.
    pub fn into_file(self) -> File {
        self._file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_directory_created_is_synced_in_its_parent() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("a/b/c");
        synced_dirs::take();
        create_private_dir(&deep).unwrap();
        let name = |n: &str| vec![n.to_string()];
        assert_eq!(
            synced_dirs::take_with_names(),
            [
                (t.path().to_path_buf(), name("a")),
                (t.path().join("a"), name("b")),
                (t.path().join("a/b"), name("c"))
            ],
            "the entry of a, b and c each made durable in its parent (after it was made), \
             outermost first"
        );
        create_private_dir(&deep).unwrap();
        assert!(
            synced_dirs::take().is_empty(),
            "nothing created, nothing to sync"
        );
        create_private_dir(&deep.join("d")).unwrap();
        assert_eq!(synced_dirs::take(), [deep]);
    }

    #[test]
    fn a_held_lock_is_not_taken_again_until_it_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("job.lock");
        let held = FileLock::try_exclusive(&p).unwrap().expect("a free lock");
        assert!(FileLock::try_exclusive(&p).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_exclusive(&p).unwrap().is_some());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", PRIVATE_FILE).unwrap();
        write_atomic(&p, b"two", PRIVATE_FILE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_atomic_refuses_existing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        create_atomic(&p, b"a", PRIVATE_FILE).unwrap();
        let e = create_atomic(&p, b"b", PRIVATE_FILE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"a");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_into_missing_dir_fails_cleanly() {
        let d = tempfile::tempdir().unwrap();
        let r = write_atomic(&d.path().join("no/such"), b"x", PRIVATE_FILE);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
            "{r:?}"
        );
    }
}

/// Identifies one version of a file on disk (inode, mtime to the nanosecond, size), to
/// notice that another process replaced or changed it since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    mtime_ns: i128,
    size: u64,
}

impl FileStamp {
    /// The stamp of `path` now; None if it cannot be read (e.g. it does not exist).
    pub fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            ino: m.ino(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            size: m.size(),
        })
    }
}
