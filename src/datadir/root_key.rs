//! A region's config (`region.json`: its public facts) and its root key: kept in a 0600
//! file, or derived from a passphrase with Argon2id; either way checked against the
//! config's check value before anything is opened with it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::aws::error::{AwsError, Result};
use crate::aws::ids::{AccountId, Region};
use crate::crypto::kdf::{self, Argon2Cost};
use crate::crypto::{Key256, SecretBytes};
use crate::sys::clock::UnixTime;

use super::RegionDir;

pub const CONFIG_FORMAT_V1: u32 = 1;

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

pub(crate) fn check_value(root: &Key256) -> Vec<u8> {
    kdf::derive(kdf::CTX_ROOT_KEY_CHECK, root, b"").expose()[..16].to_vec()
}

impl RegionDir {
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
