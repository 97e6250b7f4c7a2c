//! The pool's storage on a simulated disk: data files are [`SimFile`]s, the metadata a
//! redb database over a backend on `meta.redb`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::disk::{Call, SimDisk, SimFile, end_of};
use crate::volume::storage::{
    BlockStore, JOURNAL_FILE, PoolStorage, SyncLatch, alt_file_name, data_file_name,
};

/// The simulated tag journal's size: a few commits fill it, so crash tests fold often.
pub const SIM_JOURNAL_CAPACITY: u64 = 64 << 10;
/// The file holding the metadata database.
pub(super) const META_FILE: &str = "meta.redb";

/// redb's view of the metadata file. Holds the file for one database: released by
/// `close` (which redb calls exactly once) or, failing that, on drop.
#[derive(Debug)]
pub(super) struct SimBackend {
    pub(super) file: SimFile,
    pub(super) held: AtomicBool,
}

impl SimBackend {
    fn release(&self) {
        if self.held.swap(false, Ordering::AcqRel) {
            self.file.disk.lock().held.remove(&self.file.name);
        }
    }
}

impl Drop for SimBackend {
    fn drop(&mut self) {
        self.release();
    }
}

impl redb::StorageBackend for SimBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    /// Unlike a `BlockStore`, redb's backend must fail a read past the end.
    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let end = end_of(offset, out.len() as u64)?;
        self.file.disk.io(&self.file.name, Call::Read, |f| {
            if end > f.live.len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read of [{offset}, {end}) past the end ({})", f.live.len),
                ));
            }
            f.live.read(out, offset);
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.file.write_at(data, offset)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.release();
        Ok(())
    }
}

/// A pool's storage on a [`SimDisk`].
#[derive(Clone, Debug)]
pub struct SimStorage {
    /// The pool directory, fake: only for messages and paths.
    pub dir: PathBuf,
    pub disk: SimDisk,
}

impl SimStorage {
    pub fn new(dir: impl Into<PathBuf>, disk: SimDisk) -> SimStorage {
        SimStorage {
            dir: dir.into(),
            disk,
        }
    }
}

impl PoolStorage for SimStorage {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        let name = data_file_name(chunk_shift);
        let path = self.dir.join(&name);
        Ok(Arc::new(self.disk.file_at(&name, path)?))
    }

    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        let name = alt_file_name(chunk_shift);
        let path = self.dir.join(&name);
        Ok(Arc::new(self.disk.file_at(&name, path)?))
    }

    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        let path = self.dir.join(JOURNAL_FILE);
        Ok(Arc::new(self.disk.file_at(JOURNAL_FILE, path)?))
    }

    fn has_journal(&self) -> bool {
        self.disk.file_names().iter().any(|n| n == JOURNAL_FILE)
    }

    /// Small, so that the simulated tests fill it and fold often.
    fn journal_capacity(&self) -> u64 {
        SIM_JOURNAL_CAPACITY
    }

    fn open_metadata(&self, latch: &SyncLatch) -> Result<redb::Database, redb::DatabaseError> {
        let file = self
            .disk
            .file_at(META_FILE, self.metadata_path())
            .map_err(|e| redb::DatabaseError::Storage(redb::StorageError::Io(e)))?;
        if !self.disk.lock().held.insert(META_FILE.to_string()) {
            return Err(redb::DatabaseError::DatabaseAlreadyOpen);
        }
        let backend = SimBackend {
            file,
            held: AtomicBool::new(true),
        };
        let path = self.metadata_path();
        redb::Builder::new().create_with_backend(latch.backend(backend, path))
    }

    fn metadata_path(&self) -> PathBuf {
        self.dir.join(META_FILE)
    }

    fn drop_cache(&self) {
        self.disk.drop_cache();
    }
}
