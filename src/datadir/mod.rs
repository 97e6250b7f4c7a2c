//! The data directory: where every file of cryptvol lives, and the one place their paths
//! are built. The layers above ask [`DataDir`] and [`RegionDir`] for a path instead of
//! joining names themselves, so the layout below is the whole truth (byte-level formats
//! of each file are in docs/formats.md).
//!
//! ```text
//! <data dir>/account.json                   the account id shared by all regions
//! <data dir>/iam.json, iam.key, iam.lock    identities, the key sealing access keys
//! <data dir>/regions/<region>/
//!     region.json                           region config (no secrets)
//!     root.key                              32-byte root key, 0600 (key-file regions)
//!     keystore.cvks, keystore.lock          the sealed keystore (KMS keys, aliases, grants)
//!     audit/                                the hash-chained audit trail
//!     usage.json, usage.lock                metering
//!     pool/                                 the thin pool: meta.redb and data files
//!     run/                                  the region daemon's socket, mounts, attach dirs
//!     logs/                                 the region daemon's log
//! ```
//!
//! Files: `region` has a region's paths, `root_key` its config (`region.json`) and how its
//! root key is opened, `root_pkcs11` a root key sealed by a key in a PKCS#11 token.

mod region;
pub(crate) mod root_key;
pub mod root_pkcs11;

pub use region::RegionDir;
pub use root_key::{MadeRoot, NewRoot, RegionConfig, RootKeySource, read_passphrase_file};

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aws::error::{AwsError, Result};
use crate::aws::ids::{AccountId, Region};
use crate::sys::fsio;

pub const DATA_DIR_ENV: &str = "CRYPTVOL_DATA_DIR";
pub const REGION_ENV: &str = "CRYPTVOL_REGION";
pub const DEFAULT_REGION: &str = "local-1";

/// Paths of the data dir's own files (those of one region are [`RegionDir`]'s).
#[derive(Debug, Clone)]
pub struct DataDir {
    pub path: PathBuf,
}

impl DataDir {
    pub fn new(path: &Path) -> Self {
        DataDir {
            path: path.to_path_buf(),
        }
    }
    pub fn account_file(&self) -> PathBuf {
        self.path.join("account.json")
    }
    /// The parent of every region's directory.
    pub fn regions_dir(&self) -> PathBuf {
        self.path.join("regions")
    }
    pub fn region(&self, region: &Region) -> RegionDir {
        RegionDir::new(&self.path, region)
    }
    /// Identities (global, as IAM is in AWS).
    pub fn iam_file(&self) -> PathBuf {
        self.path.join("iam.json")
    }
    /// The key that seals access key secrets (32 random bytes, 0600).
    pub fn iam_key_file(&self) -> PathBuf {
        self.path.join("iam.key")
    }
    pub fn iam_lock_file(&self) -> PathBuf {
        self.path.join("iam.lock")
    }
}

/// The data dir: `$CRYPTVOL_DATA_DIR`, else `/var/lib/cryptvol` for root, else
/// `$XDG_DATA_HOME/cryptvol` (or `~/.local/share/cryptvol`).
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os(DATA_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if nix_is_root() {
        return PathBuf::from("/var/lib/cryptvol");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(x).join("cryptvol");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ".".into());
    home.join(".local/share/cryptvol")
}

fn nix_is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's effective uid; no libc call needed.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    account_id: AccountId,
}

/// The data dir's account id, which `init` made.
pub fn read_account_id(data_dir: &Path) -> Result<AccountId> {
    let p = DataDir::new(data_dir).account_file();
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice::<AccountFile>(&b)
            .map(|f| f.account_id)
            .map_err(|e| AwsError::Corrupt {
                path: p.clone(),
                what: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AwsError::RegionNotInitialized {
            region: DEFAULT_REGION.to_string(),
            data_dir: data_dir.to_path_buf(),
        }),
        Err(e) => Err(AwsError::io("cannot read", &p, e)),
    }
}

/// Reads or creates the data dir's account id.
pub(crate) fn account_id(data_dir: &Path) -> Result<AccountId> {
    let p = DataDir::new(data_dir).account_file();
    match std::fs::read(&p) {
        Ok(b) => {
            let f: AccountFile = serde_json::from_slice(&b).map_err(|e| AwsError::Corrupt {
                path: p.clone(),
                what: e.to_string(),
            })?;
            Ok(f.account_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let f = AccountFile {
                account_id: AccountId::random(),
            };
            let bytes = serde_json::to_vec_pretty(&f).expect("serialises");
            match fsio::create_atomic(&p, &bytes, 0o644) {
                Ok(()) => Ok(f.account_id),
                // Another init won the race: use its id.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => account_id(data_dir),
                Err(e) => Err(AwsError::io("cannot create", &p, e)),
            }
        }
        Err(e) => Err(AwsError::io("cannot read", &p, e)),
    }
}
