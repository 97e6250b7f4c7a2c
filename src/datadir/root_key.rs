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
    /// A random key sealed by an AES key object in a PKCS#11 token (`root_pkcs11`).
    Pkcs11 {
        /// The RFC 7512 URI given to init (never with a pin-value).
        uri: String,
        /// nonce ‖ ciphertext ‖ tag of the root key, made inside the token.
        #[serde(with = "crate::aws::b64")]
        sealed_root: Vec<u8>,
    },
}

impl RootKeySource {
    /// How the root is kept, in a few words for the CLI's output.
    pub fn describe(&self, dir: &RegionDir) -> String {
        match self {
            RootKeySource::File => format!("key file {}", dir.root_key_path().display()),
            RootKeySource::Passphrase { .. } => "passphrase (Argon2id)".to_string(),
            RootKeySource::Pkcs11 { uri, .. } => format!("PKCS#11 token ({uri})"),
        }
    }
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
            RootKeySource::Pkcs11 { uri, sealed_root } => {
                let key = super::root_pkcs11::unseal_root(
                    &self.region,
                    uri,
                    sealed_root,
                    &self.config_path(),
                )?;
                if check_value(&key) != cfg.root_key_check {
                    return Err(AwsError::Corrupt {
                        path: self.config_path(),
                        what: "the root the token unsealed fails root_key_check".into(),
                    });
                }
                key
            }
        };
        Ok(root)
    }
}

/// The kind of root key to make (`init`, `region rotate-root-key`).
pub enum NewRoot {
    /// Random, kept in `root.key`.
    File,
    /// Argon2id of this passphrase with a fresh salt.
    Passphrase(SecretBytes),
    /// Random, sealed by the object a `pkcs11:` URI names (created if missing).
    Pkcs11(String),
}

/// A new root key and how it is kept; `object` says whether a token object was made.
pub struct MadeRoot {
    pub root: Key256,
    pub source: RootKeySource,
    pub object: Option<super::root_pkcs11::ObjectOutcome>,
}

/// Makes a root key of the kind asked for region `region`. A key file is not written here:
/// the caller places it.
pub fn make_root(region: &crate::aws::ids::Region, kind: NewRoot) -> Result<MadeRoot> {
    Ok(match kind {
        NewRoot::File => MadeRoot {
            root: Key256::generate(),
            source: RootKeySource::File,
            object: None,
        },
        NewRoot::Passphrase(p) => {
            if p.is_empty() {
                return Err(AwsError::validation(
                    "passphrase",
                    "the passphrase file is empty",
                ));
            }
            let salt: [u8; 16] = crate::crypto::random::array();
            let cost = Argon2Cost::DEFAULT;
            let root = kdf::passphrase_key(&p, &salt, cost)
                .map_err(|e| AwsError::validation("Argon2id parameters", e.to_string()))?;
            MadeRoot {
                root,
                source: RootKeySource::Passphrase {
                    salt: salt.to_vec(),
                    cost,
                },
                object: None,
            }
        }
        NewRoot::Pkcs11(text) => {
            let uri = super::root_pkcs11::parse_root_uri(region, &text)?;
            let (root, sealed_root, outcome) = super::root_pkcs11::seal_new_root(region, &uri)?;
            MadeRoot {
                root,
                source: RootKeySource::Pkcs11 {
                    uri: uri.text,
                    sealed_root,
                },
                object: Some(outcome),
            }
        }
    })
}

/// A secret file's content less one trailing newline (`\n` or `\r\n`, as gocryptfs
/// `-passfile`), so `echo secret > f` and editors' final newlines both work: the rule for
/// passphrase, PIN and key-store-password files alike.
pub fn without_line_end(bytes: &[u8]) -> &[u8] {
    match bytes.strip_suffix(b"\n") {
        Some(rest) => rest.strip_suffix(b"\r").unwrap_or(rest),
        None => bytes,
    }
}

/// A passphrase from a file ([`without_line_end`]). Shared by the CLI and `kms serve`, so a
/// region opens the same way in both.
pub fn read_passphrase_file(path: &Path) -> Result<SecretBytes> {
    let mut bytes =
        SecretBytes::new(
            std::fs::read(path).map_err(|source| AwsError::PassphraseFile {
                path: path.to_path_buf(),
                source,
            })?,
        );
    let len = without_line_end(bytes.expose()).len();
    let v = bytes.expose_mut();
    v.truncate(len);
    if v.is_empty() {
        return Err(AwsError::validation(
            "--passphrase-file",
            format!("{} holds an empty passphrase", path.display()),
        ));
    }
    Ok(bytes)
}
