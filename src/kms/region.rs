//! The data directory and its regions: where each region's files live, `init`, and
//! opening a region's root key from its key file or passphrase.
//!
//! Layout (docs/formats.md, "Data directory"):
//! ```text
//! <data dir>/account.json                 account id shared by all regions
//! <data dir>/regions/<region>/region.json region config (no secrets)
//! <data dir>/regions/<region>/root.key    32-byte root key, 0600 (key-file regions)
//! <data dir>/regions/<region>/keystore.cvks
//! <data dir>/regions/<region>/keystore.lock
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::keystore::Keystore;
use super::model::{KeystoreBody, UnixTime};
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::{AccountId, Region};
use crate::crypto::kdf::{self, Argon2Cost};
use crate::crypto::{Key256, SecretBytes};
use crate::sys::fsio;

pub const DATA_DIR_ENV: &str = "CRYPTVOL_DATA_DIR";
pub const REGION_ENV: &str = "CRYPTVOL_REGION";
pub const DEFAULT_REGION: &str = "local-1";
pub const CONFIG_FORMAT_V1: u32 = 1;

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

/// How a region's root key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum RootKeySource {
    /// `root.key` beside region.json.
    File,
    /// Argon2id of a passphrase.
    Passphrase {
        #[serde(with = "crate::aws::b64")]
        salt: Vec<u8>,
        cost: Argon2Cost,
    },
}

/// `region.json`: a region's public facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub format: u32,
    pub region: Region,
    pub account_id: AccountId,
    pub created: UnixTime,
    pub root_key: RootKeySource,
    /// `blake3::derive_key(CTX_ROOT_KEY_CHECK, root)[..16]`: tells a wrong passphrase from a
    /// damaged keystore without revealing anything usable about the key.
    #[serde(with = "crate::aws::b64")]
    pub root_key_check: Vec<u8>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    account_id: AccountId,
}

fn check_value(root: &Key256) -> Vec<u8> {
    kdf::derive(kdf::CTX_ROOT_KEY_CHECK, root, b"").expose()[..16].to_vec()
}

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

    /// Reads region.json, or says the region needs `init`.
    pub fn config(&self) -> Result<RegionConfig> {
        let p = self.config_path();
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AwsError::RegionNotInitialized {
                    region: self.region.to_string(),
                    data_dir: self.data_dir.clone(),
                });
            }
            Err(e) => return Err(AwsError::io("cannot read", &p, e)),
        };
        if let Some(v) = crate::format_version::json_version(&bytes, "format")
            && v > u64::from(CONFIG_FORMAT_V1)
        {
            return Err(AwsError::NewerFormat {
                what: format!("the region config {}", p.display()),
                found: v,
                newest: CONFIG_FORMAT_V1.into(),
            });
        }
        let cfg: RegionConfig = serde_json::from_slice(&bytes).map_err(|e| AwsError::Corrupt {
            path: p.clone(),
            what: format!("not a valid region config: {e}"),
        })?;
        if cfg.format != CONFIG_FORMAT_V1 {
            return Err(AwsError::Corrupt {
                path: p,
                what: format!(
                    "config format {} is not one cryptvol ever wrote",
                    cfg.format
                ),
            });
        }
        if cfg.region != self.region {
            return Err(AwsError::Corrupt {
                path: p,
                what: format!("it describes region {}, not {}", cfg.region, self.region),
            });
        }
        Ok(cfg)
    }

    /// Opens the root key. `passphrase` is asked only if the region uses one.
    pub fn open_root_key(
        &self,
        cfg: &RegionConfig,
        passphrase: &mut dyn FnMut() -> Result<SecretBytes>,
    ) -> Result<Key256> {
        let root = match &cfg.root_key {
            RootKeySource::File => {
                let p = self.root_key_path();
                let bytes = SecretBytes::new(
                    std::fs::read(&p).map_err(|e| AwsError::io("cannot read root key", &p, e))?,
                );
                let key = Key256::from_slice(bytes.expose()).ok_or_else(|| AwsError::Corrupt {
                    path: p.clone(),
                    what: format!("a root key is 32 bytes, this file has {}", bytes.len()),
                })?;
                if check_value(&key) != cfg.root_key_check {
                    return Err(AwsError::WrongRootKey {
                        region: self.region.to_string(),
                        path: p,
                    });
                }
                key
            }
            RootKeySource::Passphrase { salt, cost } => {
                let pass = passphrase()?;
                let key =
                    kdf::passphrase_key(&pass, salt, *cost).map_err(|e| AwsError::Corrupt {
                        path: self.config_path(),
                        what: e.to_string(),
                    })?;
                if check_value(&key) != cfg.root_key_check {
                    return Err(AwsError::WrongPassphrase {
                        region: self.region.to_string(),
                    });
                }
                key
            }
        };
        Ok(root)
    }
}

/// What `init` found or made.
#[derive(Debug)]
pub struct InitOutcome {
    pub created: bool,
    pub config: RegionConfig,
    pub dir: RegionDir,
}

/// A passphrase from a file: the whole file less one trailing newline (`\n` or `\r\n`,
/// as gocryptfs `-passfile`), so `echo secret > f` and editors' final newlines both work.
/// Shared by the CLI and `kms serve`, so a region opens the same way in both.
pub fn read_passphrase_file(path: &Path) -> Result<SecretBytes> {
    let mut bytes =
        SecretBytes::new(
            std::fs::read(path).map_err(|source| AwsError::PassphraseFile {
                path: path.to_path_buf(),
                source,
            })?,
        );
    let v = bytes.expose_mut();
    if v.last() == Some(&b'\n') {
        v.pop();
        if v.last() == Some(&b'\r') {
            v.pop();
        }
    }
    if v.is_empty() {
        return Err(AwsError::validation(
            "--passphrase-file",
            format!("{} holds an empty passphrase", path.display()),
        ));
    }
    Ok(bytes)
}

/// The data dir's account id, which `init` made.
pub fn read_account_id(data_dir: &Path) -> Result<AccountId> {
    let p = data_dir.join("account.json");
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
fn account_id(data_dir: &Path) -> Result<AccountId> {
    let p = data_dir.join("account.json");
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

/// Creates the data dir and region if missing; on an existing region only checks that the
/// root key opens it (so a wrong passphrase is reported) and changes nothing.
///
/// A new region is assembled in a hidden temp directory and renamed into place, so a crash
/// or a concurrent `init` never leaves a half-made region.
pub fn init(
    data_dir: &Path,
    region: &Region,
    passphrase: Option<SecretBytes>,
    now: UnixTime,
) -> Result<InitOutcome> {
    let dir = RegionDir::new(data_dir, region);
    let regions = data_dir.join("regions");
    fsio::create_private_dir(&regions).map_err(|e| AwsError::io("cannot create", &regions, e))?;
    if dir.is_initialized() {
        let config = dir.config()?;
        let mut pass = passphrase;
        let mut ask = || {
            pass.take().ok_or_else(|| AwsError::PassphraseRequired {
                region: region.to_string(),
            })
        };
        let root = dir.open_root_key(&config, &mut ask)?;
        Keystore::load(&dir.keystore_path(), &root, region)?;
        return Ok(InitOutcome {
            created: false,
            config,
            dir,
        });
    }
    let account = account_id(data_dir)?;
    let (root, source) = match passphrase {
        Some(p) => {
            if p.is_empty() {
                return Err(AwsError::validation(
                    "passphrase",
                    "the passphrase file is empty",
                ));
            }
            let salt: [u8; 16] = crate::crypto::random::array();
            let cost = Argon2Cost::DEFAULT;
            let key = kdf::passphrase_key(&p, &salt, cost)
                .map_err(|e| AwsError::validation("Argon2id parameters", e.to_string()))?;
            (
                key,
                RootKeySource::Passphrase {
                    salt: salt.to_vec(),
                    cost,
                },
            )
        }
        None => (Key256::generate(), RootKeySource::File),
    };
    let config = RegionConfig {
        format: CONFIG_FORMAT_V1,
        region: region.clone(),
        account_id: account.clone(),
        created: now,
        root_key: source,
        root_key_check: check_value(&root),
    };

    let tmp_name = format!(".{}.init-{}", region, std::process::id());
    // Normally the region is staged beside its final place and renamed into it. If its
    // directory already exists (an empty mount point prepared for it), stage inside it
    // and move the files in, region.json last: that file is what makes a region exist.
    let in_place = dir.path.is_dir();
    // In place, concurrent inits take turns (the rename below is atomic on its own), and
    // whoever comes second finds the region made.
    let _turn = if in_place {
        let lock = dir.path.join(".init.lock");
        let l =
            fsio::FileLock::exclusive(&lock).map_err(|e| AwsError::io("cannot lock", &lock, e))?;
        if dir.is_initialized() {
            return Ok(InitOutcome {
                created: false,
                config: dir.config()?,
                dir,
            });
        }
        Some(l)
    } else {
        None
    };
    let tmp = if in_place {
        dir.path.join(tmp_name)
    } else {
        regions.join(tmp_name)
    };
    let build = || -> Result<()> {
        fsio::create_private_dir(&tmp).map_err(|e| AwsError::io("cannot create", &tmp, e))?;
        let staged = RegionDir {
            data_dir: data_dir.to_path_buf(),
            region: region.clone(),
            path: tmp.clone(),
        };
        if config.root_key == RootKeySource::File {
            let p = staged.root_key_path();
            fsio::create_atomic(&p, root.expose(), fsio::PRIVATE_FILE)
                .map_err(|e| AwsError::io("cannot write", &p, e))?;
        }
        let mut ks = Keystore::new(KeystoreBody::empty(region.clone(), account.clone()));
        ks.save(&staged.keystore_path(), &root)?;
        let cfg_bytes = serde_json::to_vec_pretty(&config).expect("serialises");
        let p = staged.config_path();
        fsio::write_atomic(&p, &cfg_bytes, 0o644)
            .map_err(|e| AwsError::io("cannot write", &p, e))?;
        Ok(())
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if in_place {
        let moved = (|| -> std::io::Result<()> {
            for name in ["root.key", "keystore.cvks", "region.json"] {
                let from = tmp.join(name);
                if from.exists() {
                    std::fs::rename(&from, dir.path.join(name))?;
                }
            }
            std::fs::remove_dir(&tmp)?;
            fsio::fsync_dir(&dir.path)
        })();
        let _ = std::fs::remove_dir_all(&tmp);
        moved.map_err(|e| AwsError::io("cannot create", &dir.path, e))?;
        return Ok(InitOutcome {
            created: true,
            config,
            dir,
        });
    }
    match std::fs::rename(&tmp, &dir.path) {
        Ok(()) => {
            fsio::fsync_dir(&regions).map_err(|e| AwsError::io("cannot sync", &regions, e))?;
            Ok(InitOutcome {
                created: true,
                config,
                dir,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            if dir.is_initialized() {
                // A concurrent init made it first; it is as good as ours.
                let config = dir.config()?;
                Ok(InitOutcome {
                    created: false,
                    config,
                    dir,
                })
            } else {
                Err(AwsError::io("cannot create", &dir.path, e))
            }
        }
    }
}
