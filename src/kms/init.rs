//! Creating a region: the data dir's account id, the region's root key and config, and
//! its empty keystore, made in a hidden directory and renamed into place.

use std::path::Path;

use crate::aws::error::{AwsError, Result};
use crate::aws::ids::Region;
use crate::crypto::SecretBytes;
use crate::sys::clock::UnixTime;
use crate::sys::fsio;

use super::keystore::Keystore;
use super::model::KeystoreBody;
use crate::datadir::root_key::{CONFIG_FORMAT_V1, NewRoot, check_value, make_root};
use crate::datadir::{RegionConfig, RegionDir, RootKeySource, account_id};

/// What `init` found or made.
#[derive(Debug)]
pub struct InitOutcome {
    pub created: bool,
    pub config: RegionConfig,
    pub dir: RegionDir,
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
    let kind = match passphrase {
        Some(p) => NewRoot::Passphrase(p),
        None => NewRoot::File,
    };
    init_with(data_dir, region, kind, now)
}

/// [`init`] with any kind of root key (`--root-key pkcs11:...`). On an existing region the
/// kind is not compared: the region opens with the root it has.
pub fn init_with(
    data_dir: &Path,
    region: &Region,
    kind: NewRoot,
    now: UnixTime,
) -> Result<InitOutcome> {
    if let NewRoot::Pkcs11(uri) = &kind {
        // A URI with a PIN in it is refused even when the region exists already.
        crate::datadir::root_pkcs11::parse_root_uri(region, uri)?;
    }
    let dir = RegionDir::new(data_dir, region);
    let regions = crate::datadir::DataDir::new(data_dir).regions_dir();
    fsio::create_private_dir(&regions).map_err(|e| AwsError::io("cannot create", &regions, e))?;
    if dir.is_initialized() {
        crate::kms::root_rotation::recover(&dir)?;
        let config = dir.config()?;
        let mut pass = match kind {
            NewRoot::Passphrase(p) => Some(p),
            _ => None,
        };
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
    // The root first: a token that fails leaves no account.json behind.
    let made = make_root(region, kind)?;
    let account = account_id(data_dir)?;
    let (root, source) = (made.root, made.source);
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
        let lock = dir.init_lock();
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
            let staged = RegionDir {
                path: tmp.clone(),
                ..dir.clone()
            };
            // region.json last: that file is what makes a region exist.
            for (from, to) in [
                (staged.root_key_path(), dir.root_key_path()),
                (staged.keystore_path(), dir.keystore_path()),
                (staged.config_path(), dir.config_path()),
            ] {
                if from.exists() {
                    std::fs::rename(&from, to)?;
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
