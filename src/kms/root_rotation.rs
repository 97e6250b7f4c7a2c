//! `cryptvol region rotate-root-key`: a fresh root key for a region, crash-safe.
//!
//! What is sealed by the root is re-sealed under the new one: the keystore file and every
//! CMK version's material inside it (the material itself is unchanged, so every blob and
//! volume keeps opening). What is *derived* from the root (grant tokens, paging markers,
//! legacy material ids, the audit chain's first key) is derived from the region's first
//! root key, which the keystore keeps sealed under the current root after a rotation
//! (`Keystore::reseal`), so issued tokens stay valid. The audit chain gets a random
//! successor key, sealed in the keystore: the events after the rotation are under it, so
//! whoever kept the old root cannot extend the chain, and the events before still verify.
//!
//! Protocol, under the keystore lock (as every keystore writer holds it):
//! 1. stage the new `root.key` (key-file roots), `keystore.cvks` and `region.json` in
//!    `<region>/.root-rotation/` and fsync them;
//! 2. commit: write `.root-rotation/COMMITTED`, a copy of the new region.json, and fsync
//!    the directory. Before this point the region is the old one (a rerun removes the stage);
//!    after it, the new one: whoever opens the region first finishes step 3 ([`recover`]);
//! 3. install: overwrite and replace the old `root.key` (or remove it), rename the keystore,
//!    then region.json into place, fsync, remove the stage;
//! 4. log the rotation's end under the audit chain's new key (killed before that, the next
//!    event any process logs with the new keystore is the first under it).
//!
//! Every step of 3 is idempotent (a rename whose source is gone was done), so a crash at
//! any point leaves a region that opens with the old root (before 2) or the new one.

use std::path::{Path, PathBuf};

use crate::audit::ChainKeys;
use crate::aws::error::{AwsError, Result};
use crate::crypto::SecretBytes;
use crate::datadir::root_key::{NewRoot, check_value, make_root};
use crate::datadir::root_pkcs11::ObjectOutcome;
use crate::datadir::{RegionConfig, RegionDir, RootKeySource};
use crate::kms::keystore::Keystore;
use crate::sys::fsio::{self, FileLock};

const STAGE_DIR: &str = ".root-rotation";
const COMMITTED: &str = "COMMITTED";
/// Debug builds stop the process (abort, as a kill -9) at the named step: crash tests.
pub const CRASH_ENV: &str = "CRYPTVOL_TEST_ROOT_ROTATION_CRASH_AT";

/// The points a crash test can stop at, in order.
pub const STEPS: &[&str] = &[
    "staged",
    "committed",
    "root-key-installed",
    "keystore-installed",
    "config-installed",
];

fn crash_point(step: &str) -> Result<()> {
    if cfg!(debug_assertions) && std::env::var(CRASH_ENV).is_ok_and(|s| s == step) {
        eprintln!("{CRASH_ENV}: stopping at {step}");
        std::process::abort();
    }
    #[cfg(test)]
    if STOP_AT.with(|s| s.get()) == Some(step) {
        // A crash that unit tests survive: nothing after this point runs.
        return Err(AwsError::Unsupported {
            message: format!("test: stopped at {step}"),
        });
    }
    Ok(())
}

#[cfg(test)]
thread_local! {
    /// Unit tests: the step at which [`rotate`] stops as if the process died there.
    pub static STOP_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

fn stage_dir(dir: &RegionDir) -> PathBuf {
    dir.path.join(STAGE_DIR)
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> AwsError + 'a {
    move |e| AwsError::io(action, path, e)
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    pub old_source: String,
    pub new_source: String,
    /// What became of the old root material, in a sentence.
    pub old_root: String,
    pub keys_resealed: usize,
}

/// Whether a rotation committed since `read` was read from region.json (its install may
/// be in progress): a failure to open the region with `read` is then no proof of a wrong
/// key, and the caller opens it again.
pub fn moved_on(dir: &RegionDir, read: &RegionConfig) -> bool {
    stage_dir(dir).join(COMMITTED).exists()
        || dir
            .config()
            .is_ok_and(|now| now.root_key_check != read.root_key_check)
}

/// Finishes a rotation that committed but did not install (a crash), taking the lock.
/// Cheap when there is none: one stat.
pub fn recover(dir: &RegionDir) -> Result<()> {
    if !stage_dir(dir).join(COMMITTED).exists() {
        return Ok(());
    }
    let lock = dir.lock_path();
    let _l = FileLock::exclusive(&lock).map_err(io("cannot lock", &lock))?;
    recover_locked(dir)
}

/// [`recover`] for a caller that holds the keystore lock: finishes a committed rotation,
/// or drops the stage of one that never committed.
pub fn recover_locked(dir: &RegionDir) -> Result<()> {
    let stage = stage_dir(dir);
    let marker = stage.join(COMMITTED);
    match std::fs::read(&marker) {
        Ok(bytes) => {
            let cfg: RegionConfig =
                serde_json::from_slice(&bytes).map_err(|e| AwsError::Corrupt {
                    path: marker.clone(),
                    what: format!("not a region config: {e}"),
                })?;
            install(dir, &cfg)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if stage.exists() {
                std::fs::remove_dir_all(&stage).map_err(io("cannot remove", &stage))?;
            }
            Ok(())
        }
        Err(e) => Err(AwsError::io("cannot read", &marker, e)),
    }
}

/// Overwrites a key file with zeros (durably) and removes it, so the old root is not left
/// in the file's blocks by a rename over it.
fn shred(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut f = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AwsError::io("cannot overwrite", path, e)),
    };
    let len = f.metadata().map_err(io("cannot stat", path))?.len() as usize;
    f.write_all(&vec![0u8; len])
        .and_then(|()| f.sync_all())
        .map_err(io("cannot overwrite", path))?;
    std::fs::remove_file(path).map_err(io("cannot remove", path))
}

fn rename_if_staged(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        // Done before a crash.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AwsError::io("cannot install", to, e)),
    }
}

/// Step 3: idempotent, so a crash anywhere in it is finished by the next [`recover`].
fn install(dir: &RegionDir, new: &RegionConfig) -> Result<()> {
    let stage = stage_dir(dir);
    let staged_root = stage.join("root.key");
    if new.root_key == RootKeySource::File {
        if staged_root.exists() {
            shred(&dir.root_key_path())?;
            rename_if_staged(&staged_root, &dir.root_key_path())?;
        }
    } else {
        // Any root.key left is the old root's: the new one is not a file.
        shred(&dir.root_key_path())?;
    }
    crash_point("root-key-installed")?;
    rename_if_staged(&stage.join("keystore.cvks"), &dir.keystore_path())?;
    crash_point("keystore-installed")?;
    rename_if_staged(&stage.join("region.json"), &dir.config_path())?;
    fsio::fsync_dir(&dir.path).map_err(io("cannot sync", &dir.path))?;
    crash_point("config-installed")?;
    std::fs::remove_dir_all(&stage).map_err(io("cannot remove", &stage))?;
    fsio::fsync_dir(&dir.path).map_err(io("cannot sync", &dir.path))
}

/// The new root's kind when none is asked: the same as now (the same passphrase with a
/// new salt, the same token object sealing a new random root).
fn same_kind(cfg: &RegionConfig, passphrase: Option<SecretBytes>) -> Result<NewRoot> {
    Ok(match &cfg.root_key {
        RootKeySource::File => NewRoot::File,
        RootKeySource::Passphrase { .. } => {
            NewRoot::Passphrase(passphrase.ok_or_else(|| AwsError::PassphraseRequired {
                region: cfg.region.to_string(),
            })?)
        }
        RootKeySource::Pkcs11 { uri, .. } => NewRoot::Pkcs11(uri.clone()),
    })
}

/// Rotates the root key of `dir` to a new one of kind `kind` (None: the same kind).
/// `passphrase` opens the current root if it is a passphrase.
pub fn rotate(
    dir: &RegionDir,
    passphrase: &mut dyn FnMut() -> Result<SecretBytes>,
    kind: Option<NewRoot>,
    now_nanos: i64,
) -> Result<Rotated> {
    let lock = dir.lock_path();
    let _l = FileLock::exclusive(&lock).map_err(io("cannot lock", &lock))?;
    recover_locked(dir)?;
    let cfg = dir.config()?;
    // The passphrase is kept for a same-kind rotation, so it is asked only once.
    let mut given: Option<SecretBytes> = None;
    let old = dir.open_root_key(&cfg, &mut || {
        let p = passphrase()?;
        given = Some(p.clone());
        Ok(p)
    })?;
    let mut ks = Keystore::load(&dir.keystore_path(), &old, &dir.region)?;
    let kind = match kind {
        Some(k) => k,
        None => same_kind(&cfg, given)?,
    };
    let made = make_root(&dir.region, kind)?;
    let new_cfg = RegionConfig {
        root_key: made.source.clone(),
        root_key_check: check_value(&made.root),
        ..cfg.clone()
    };
    let epoch = ks.audit_chain_keys(&old).latest_epoch() + 1;
    let details = serde_json::json!({
        "newRootKeySource": new_cfg.root_key.describe(dir),
        "auditChainKeyEpoch": epoch,
    });
    record(dir, &ks, ks.audit_chain_keys(&old), details, now_nanos)?;

    // 1. Stage.
    let stage = stage_dir(dir);
    fsio::create_private_dir(&stage).map_err(io("cannot create", &stage))?;
    if new_cfg.root_key == RootKeySource::File {
        let p = stage.join("root.key");
        fsio::write_atomic(&p, made.root.expose(), fsio::PRIVATE_FILE)
            .map_err(io("cannot write", &p))?;
    }
    ks.reseal(&old, &made.root);
    ks.save(&stage.join("keystore.cvks"), &made.root)?;
    let cfg_bytes = serde_json::to_vec_pretty(&new_cfg).expect("serialises");
    let p = stage.join("region.json");
    fsio::write_atomic(&p, &cfg_bytes, 0o644).map_err(io("cannot write", &p))?;
    fsio::fsync_dir(&stage).map_err(io("cannot sync", &stage))?;
    crash_point("staged")?;
    // 2. Commit.
    let p = stage.join(COMMITTED);
    fsio::write_atomic(&p, &cfg_bytes, 0o644).map_err(io("cannot write", &p))?;
    crash_point("committed")?;
    // 3. Install.
    install(dir, &new_cfg)?;
    // 4. The first event under the new chain key. The rotation stands whatever happens here.
    let details = serde_json::json!({ "completed": true, "auditChainKeyEpoch": epoch });
    if let Err(e) = record(
        dir,
        &ks,
        ks.audit_chain_keys(&made.root),
        details,
        now_nanos,
    ) {
        tracing::warn!("the root key was rotated, but its end was not logged: {e}");
    }
    Ok(Rotated {
        old_source: cfg.root_key.describe(dir),
        new_source: new_cfg.root_key.describe(dir),
        old_root: old_root_fate(&cfg.root_key, &new_cfg.root_key, made.object),
        keys_resealed: ks.body.keys.len(),
    })
}

/// Records a `RotateRootKey` service event: before anything changes, as every keystore
/// change is (under the chain keys the region has), and after the install (under the keys
/// with the new successor, which makes it the first event under it).
fn record(
    dir: &RegionDir,
    ks: &Keystore,
    keys: ChainKeys,
    details: serde_json::Value,
    now_nanos: i64,
) -> Result<()> {
    let log = crate::audit::AuditLog::new(dir.audit_dir(), keys);
    let arn = format!("arn:aws:kms:{}:{}:root-key", dir.region, ks.body.account_id);
    let mut e = crate::kms::event::service_event(
        "RotateRootKey",
        &arn,
        &dir.region,
        &ks.body.account_id,
        now_nanos,
    );
    e["serviceEventDetails"] = details;
    log.append(&e, now_nanos / 1_000_000_000)
        .and_then(|_| log.sync())
        .map(|_| ())
        .map_err(|err| AwsError::AuditFailed {
            path: dir.audit_dir(),
            message: err.to_string(),
        })
}

fn old_root_fate(
    old: &RootKeySource,
    new: &RootKeySource,
    object: Option<ObjectOutcome>,
) -> String {
    let made = match object {
        Some(ObjectOutcome::Created) => " (the token object was created)",
        _ => "",
    };
    match old {
        RootKeySource::File => {
            format!("the old root.key was overwritten with zeros and replaced{made}")
        }
        RootKeySource::Passphrase { .. } => {
            format!(
                "the old salt is gone from region.json: the old passphrase no longer opens the region{made}"
            )
        }
        RootKeySource::Pkcs11 { uri, .. } => match new {
            RootKeySource::Pkcs11 { uri: new_uri, .. } if new_uri == uri => format!(
                "the old sealed root is gone from region.json; the token object of {uri} was kept: it seals the new root"
            ),
            _ => format!(
                "the old sealed root is gone from region.json; the token object of {uri} was left in the token (other regions may use it): destroy it with the token's tools if nothing else does{made}"
            ),
        },
    }
}
