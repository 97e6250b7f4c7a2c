//! The real pool storage: sparse data files and a redb database in the pool directory.
//! redb's own file backend locks the database file, which is what makes one process the
//! owner of a pool at a time.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::latch::OpenSyncFailed;
use super::{BlockStore, JOURNAL_FILE, PoolStorage, SyncLatch, alt_file_name, data_file_name};
use crate::sys::fsio;

/// The pool's metadata database, in the pool directory.
pub const METADATA_FILE: &str = "meta.redb";

#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
}

/// Bytes of the metadata database's page cache.
const METADATA_CACHE: usize = 16 << 20;

impl FileStorage {
    pub fn new(dir: PathBuf) -> FileStorage {
        FileStorage { dir }
    }

    /// Opens a data file, creating it empty. A file just created has its directory entry
    /// synced before it is used: its data is made durable by `sync_data` alone later, and a
    /// crash must not lose the file that synced data lives in.
    fn open_data(&self, name: String) -> io::Result<Arc<dyn BlockStore>> {
        let path = self.dir.join(name);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(fsio::PRIVATE_FILE)
            .open(&path)?;
        if !existed {
            // A failed sync here is a failed sync of the pool (the latch trips on it).
            let dir = File::open(&self.dir)?;
            fsio::sync_dir_file(&self.dir, &dir).map_err(OpenSyncFailed::wrap)?;
        }
        Ok(Arc::new(DataFile {
            path,
            file,
            direct: OnceLock::new(),
            nowait: std::sync::atomic::AtomicBool::new(true),
        }))
    }
}

impl PoolStorage for FileStorage {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.open_data(data_file_name(chunk_shift))
    }

    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        self.open_data(alt_file_name(chunk_shift))
    }

    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        self.open_data(JOURNAL_FILE.to_string())
    }

    fn has_journal(&self) -> bool {
        self.dir.join(JOURNAL_FILE).exists()
    }

    /// redb's creation of a new file is not crash-atomic: it grows and syncs the file
    /// before writing the header that makes it a database, and a crash in between leaves
    /// a file it refuses for good ("magic number mismatch"). So a new database is made
    /// under a private name, complete and synced, and linked into place only then (a link
    /// fails if another process created the pool meanwhile; its database is then used).
    fn open_metadata(&self, latch: &SyncLatch) -> Result<redb::Database, redb::DatabaseError> {
        let path = self.metadata_path();
        if !path.exists() {
            let tmp = self
                .dir
                .join(format!(".meta.redb.{}.new", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let made = (|| -> io::Result<()> {
                drop(redb::Database::create(&tmp).map_err(io::Error::other)?);
                let made = File::open(&tmp)?;
                latch.sync(&tmp, || made.sync_all())?;
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    Err(e) => Err(e),
                }
            })();
            let _ = std::fs::remove_file(&tmp);
            made.map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        }
        // Once per open of the pool, the directory's entries are made durable: the link
        // just made, and any file a process created (this database, a data file) and then
        // failed to sync the entry of, or was killed before it could (files that exist
        // are not synced again when opened).
        let synced = File::open(&self.dir)
            .and_then(|dir| latch.sync(&self.dir, || fsio::sync_dir_file(&self.dir, &dir)));
        synced.map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        // redb caches up to 1 GiB of pages by default; the pool's metadata (maps, slot
        // records) is read on open and written at commits, so a small cache holds what
        // is hot, and the daemon's memory stays bounded however much a volume writes.
        // redb's own file backend (its file locks make one process the owner), syncing
        // through the pool's latch.
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let backend = latch.backend(redb::backends::FileBackend::new(file)?, path);
        redb::Builder::new()
            .set_cache_size(METADATA_CACHE)
            .create_with_backend(backend)
    }

    fn metadata_path(&self) -> PathBuf {
        self.dir.join(METADATA_FILE)
    }

    /// Every file of the pool directory the pool reads: data, alternate, journal, metadata.
    fn drop_cache(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ours = name == METADATA_FILE
                || name == JOURNAL_FILE
                || (name.starts_with("data-")
                    && (name.ends_with(".pool") || name.ends_with(".alt")));
            if ours && let Ok(f) = File::open(e.path()) {
                crate::sys::file::drop_clean_pages(&f);
            }
        }
    }
}

/// `pread` until `buf` is full; past the end of file reads zeros (a sparse tail).
pub fn read_full_at(file: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, off) {
            Ok(0) => {
                buf.fill(0);
                return Ok(());
            }
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One chunk size's data file.
#[derive(Debug)]
struct DataFile {
    path: PathBuf,
    file: File,
    /// A second descriptor with O_DIRECT for bulk copies (`None`: the filesystem refuses
    /// O_DIRECT, e.g. tmpfs; buffered writes are used instead).
    direct: OnceLock<Option<File>>,
    /// False once the filesystem refused `RWF_NOWAIT` (tmpfs does): reads then skip the
    /// attempt instead of paying a failing call each.
    nowait: std::sync::atomic::AtomicBool,
}

impl BlockStore for DataFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        read_full_at(&self.file, buf, off)
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }

    /// O_DIRECT: no page-cache copy and no writeback later, which is what a bulk copy
    /// wants (buffered writers contend on the inode lock). Falls back to a buffered write
    /// where O_DIRECT is not supported.
    fn write_direct(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let direct = self.direct.get_or_init(|| {
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
                .ok()
        });
        match direct {
            Some(f) => match f.write_all_at(buf, off) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.write_at(buf, off),
                r => r,
            },
            None => self.write_at(buf, off),
        }
    }

    fn punch(&self, off: u64, len: u64) -> io::Result<()> {
        crate::sys::file::punch_hole(&self.file, off, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.file.metadata().map(|m| m.len())
    }

    fn prefetch(&self, off: u64, len: u64) {
        crate::sys::file::will_need(&self.file, off, len);
    }

    fn read_cached(&self, buf: &mut [u8], off: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.nowait.load(Relaxed) {
            return false;
        }
        match crate::sys::file::read_cached(&self.file, buf, off) {
            Ok(read) => read,
            Err(e) => {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    self.nowait.store(false, Relaxed);
                }
                false
            }
        }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a filesystem that cannot read without waiting (tmpfs), the first attempt fails
    /// and the file stops trying (each small read would pay a failing call); on a disk it
    /// keeps reading from the page cache.
    #[test]
    fn a_file_where_nowait_reads_are_refused_stops_trying_them() {
        use std::sync::atomic::Ordering::Relaxed;
        for (base, refused) in [("/dev/shm", true), ("/var/tmp", false)] {
            let d = tempfile::tempdir_in(base).unwrap();
            let path = d.path().join("data");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            let f = DataFile {
                path,
                file,
                direct: OnceLock::new(),
                nowait: std::sync::atomic::AtomicBool::new(true),
            };
            f.write_at(&[7u8; 8192], 0).unwrap();
            let mut buf = [0u8; 4096];
            assert_eq!(f.read_cached(&mut buf, 0), !refused, "{base}: first read");
            assert_eq!(f.nowait.load(Relaxed), !refused, "{base}: still trying");
            if !refused {
                assert_eq!(buf, [7u8; 4096]);
            }
            f.read_at(&mut buf, 4096).unwrap();
            assert_eq!(buf, [7u8; 4096], "{base}: the usual read");
        }
    }

    /// The pool directory's entries are made durable at every open of its metadata, not
    /// only when the database is created: a process that created a data file and was
    /// killed before syncing its entry leaves the next owner to do it. A data file is
    /// synced into the directory when created, and not again when opened.
    #[test]
    fn the_pool_directory_is_synced_at_every_open_and_for_each_new_file() {
        use crate::sys::fsio::synced_dirs;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        let storage = FileStorage::new(dir.clone());
        let just_dir = vec![dir];
        let latch = SyncLatch::default();
        synced_dirs::take();
        drop(storage.open_metadata(&latch).unwrap());
        assert_eq!(synced_dirs::take(), just_dir, "created: synced once");
        drop(storage.open_metadata(&latch).unwrap());
        assert_eq!(synced_dirs::take(), just_dir, "opened again: synced again");
        drop(storage.data(12).unwrap());
        let synced = synced_dirs::take_with_names();
        assert_eq!(synced.len(), 1, "a new data file's entry: {synced:?}");
        assert_eq!(synced[0].0, just_dir[0]);
        assert!(
            synced[0].1.contains(&data_file_name(12)),
            "the sync came after the file was made: {synced:?}"
        );
        drop(storage.data(12).unwrap());
        assert!(synced_dirs::take().is_empty(), "an existing data file");
    }
}
