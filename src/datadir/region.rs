//! One region's directory and the path of each of its files.

use std::path::{Path, PathBuf};

use crate::aws::ids::Region;

/// Paths of one region's files.
#[derive(Debug, Clone)]
pub struct RegionDir {
    pub data_dir: PathBuf,
    pub region: Region,
    pub path: PathBuf,
}

impl RegionDir {
    pub fn new(data_dir: &Path, region: &Region) -> Self {
        RegionDir {
            data_dir: data_dir.to_path_buf(),
            region: region.clone(),
            path: data_dir.join("regions").join(region.as_str()),
        }
    }
    pub fn config_path(&self) -> PathBuf {
        self.path.join("region.json")
    }
    pub fn root_key_path(&self) -> PathBuf {
        self.path.join("root.key")
    }
    pub fn keystore_path(&self) -> PathBuf {
        self.path.join("keystore.cvks")
    }
    pub fn lock_path(&self) -> PathBuf {
        self.path.join("keystore.lock")
    }

    pub fn is_initialized(&self) -> bool {
        self.config_path().exists()
    }
    /// The hash-chained audit trail's directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.path.join("audit")
    }
    /// Metering: `usage.json` and its lock.
    pub fn usage_file(&self) -> PathBuf {
        self.path.join("usage.json")
    }
    pub fn usage_lock(&self) -> PathBuf {
        self.path.join("usage.lock")
    }
    /// The thin pool: `meta.redb` and the data files.
    /// Secrets Manager's sealed store and its lock (`crate::secrets`).
    pub fn secrets_dir(&self) -> PathBuf {
        self.path.join("secrets")
    }

    pub fn pool_dir(&self) -> PathBuf {
        self.path.join("pool")
    }
    /// Anchors of authenticated volumes (`volume::anchor`): outside the pool on purpose.
    pub fn anchors_dir(&self) -> PathBuf {
        self.path.join("anchors")
    }
    /// The region daemon's run directory: socket, mount records, attach dirs.
    pub fn run_dir(&self) -> PathBuf {
        self.path.join("run")
    }
    pub fn daemon_socket(&self) -> PathBuf {
        self.run_dir().join("daemon.sock")
    }
    /// Records of `cryptvol mount`s, one file per mount point.
    pub fn mounts_dir(&self) -> PathBuf {
        self.run_dir().join("mounts")
    }
    /// Where `cryptvol mount` attaches `volume` before binding a loop device to it.
    pub fn attach_dir(&self, volume: &str) -> PathBuf {
        self.run_dir().join("attach").join(volume)
    }
    /// The region daemon's log.
    pub fn logs_dir(&self) -> PathBuf {
        self.path.join("logs")
    }
    /// Per custom key store, the PIN its token refused (`<id>.pin-refused`), so that no
    /// process tries that PIN again (an HSM locks its user after a few wrong ones).
    pub fn pin_refusals_dir(&self) -> PathBuf {
        self.path.join("custom-key-stores")
    }
    /// The region's snapshot store (`s3://...` and its endpoint), if it has one.
    pub fn snapshot_store_file(&self) -> PathBuf {
        self.path.join("snapshot-store.json")
    }
    /// Archive jobs: one status file and one lock per snapshot being (or once) archived.
    pub fn archive_dir(&self) -> PathBuf {
        self.path.join("archive")
    }
    /// Serialises `init`s that build a region inside an existing empty directory.
    pub fn init_lock(&self) -> PathBuf {
        self.path.join(".init.lock")
    }
}
