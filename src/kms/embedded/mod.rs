//! The embedded KMS: every KMS operation of one region, served from its keystore file.
//!
//! Reads use an in-memory copy of the keystore, reloaded when the file changes under us
//! (another process wrote it). Every change is a read-modify-write under the region's
//! file lock: reload from disk, apply due housekeeping, apply the change, write atomically.
//! An operation that fails changes nothing on disk.
//!
//! Housekeeping — automatic rotations and deletions whose time has come — runs whenever
//! the keystore is opened or used after its next due time, so no daemon is needed.
//!
//! Every operation takes the [`Caller`] making it, is authorized against the key's policy
//! and the caller's identity policies (`authz`), and is recorded in the region's audit
//! trail whatever its outcome, before any result leaves: a call the trail cannot record
//! fails. A change is recorded before the keystore is written. Calls that passed
//! authorization are metered.
//!
//! This file holds the [`EmbeddedKms`] type, opening a region, and the keystore
//! transaction plumbing (`read`, `mutate`, housekeeping, audit and metering of each call).
//! The operations are `impl EmbeddedKms` blocks in one file per concern.
//!
//! Files:
//! - `resolve.rs`: finding the key a request names (id, ARN, alias), creating AWS managed
//!   keys on first use, the key-state checks every operation makes.
//! - `authz.rs`: authorizing a call against key policy, identity policies and grants.
//! - `keys.rs`: CreateKey, DescribeKey, ListKeys, Enable/DisableKey, Schedule/CancelKeyDeletion.
//! - `crypto_ops.rs`: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(WithoutPlaintext).
//! - `dry_run.rs`: the `DryRun` variants of the cryptographic operations.
//! - `rotation.rs`: Enable/DisableKeyRotation, GetKeyRotationStatus, RotateKeyOnDemand,
//!   ListKeyRotations.
//! - `aliases.rs`: Create/Update/DeleteAlias, ListAliases.
//! - `policies.rs`: Get/PutKeyPolicy, ListKeyPolicies.
//! - `tags.rs`: TagResource, UntagResource, ListResourceTags.
//! - `grants.rs`: CreateGrant, ListGrants, ListRetirableGrants; `grant_tokens.rs` the grant
//!   tokens, `grant_retire.rs` RetireGrant and RevokeGrant, `grant_rules.rs` their checks
//!   and when a grant applies.
//! - `ops.rs`: GenerateRandom, UpdateKeyDescription.
//! - `paging.rs`: the paged listings (`Limit`/`Marker`).
//! - `checks.rs`: input checks with AWS's answers.
//! - `refused.rs`: auditing requests the server refused before any operation ran.
//! - `usage.rs`: `kms usage`, the month's metered requests and their price.
//! - `volume_service.rs`: the volume service's grant on a volume's key, and attaching through it.
//! - `session.rs`: [`Session`], the KMS as a `KeyBackend` for the volume layer.
//! - `custom_key_stores.rs`: Create/Describe/Update/Delete/Connect/DisconnectCustomKeyStore;
//!   `hsm_keys.rs` the work on keys whose material is in a store's PKCS#11 token.

mod aliases;
mod authz;
mod checks;
mod crypto_ops;
mod custom_key_stores;
mod dry_run;
mod grants;
mod hsm_keys;
mod keys;
mod ops;
mod paging;
mod policies;
mod refused;
mod resolve;
mod rotation;
mod session;
pub mod sts_event;
mod tags;
mod usage;
mod volume_service;

pub use authz::condition_values;
pub use custom_key_stores::{CreateCustomKeyStoreRequest, UpdateCustomKeyStoreRequest};
pub use grants::{
    CreateGrantRequest, CreateGrantResponse, GrantConstraintsInput, GrantListEntry,
    ListGrantsRequest, ListGrantsResponse, MAX_GRANTS_PER_KEY, RetireGrantRequest,
};
pub use keys::CreateKeyRequest;
pub use ops::GenerateRandomRequest;
pub use paging::{Page, Paging};
pub use refused::{Refusal, recorded_on_this_thread};
pub use session::Session;
pub use tags::MAX_TAGS;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::blob;
use super::event::{self, Call};
use super::ids::{KeyId, KeyRef, key_arn};
use super::keystore::Keystore;
use super::metering::{self, Meter};
use super::model::*;
use crate::audit::{AuditError, AuditLog};
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::{AccountId, Region};
use crate::crypto::{Key256, SecretBytes};
use crate::datadir::RegionDir;
use crate::iam::IdentityStore;
use crate::iam::caller::Caller;
use crate::policy::{self, Policy, PolicyKind};
use crate::sys::clock::Clock;
use crate::sys::fsio::FileLock;
use crate::sys::watch;

/// Aliases of AWS managed keys that cryptvol creates on first use.
pub const MANAGED_ALIASES: &[&str] = &["alias/aws/ebs", SECRETS_MANAGED_ALIAS];

/// The managed key of Secrets Manager: the default key of a secret.
pub const SECRETS_MANAGED_ALIAS: &str = "alias/aws/secretsmanager";

/// AWS's description of the managed key behind `alias`.
fn managed_key_description(alias: &str) -> &'static str {
    if alias == SECRETS_MANAGED_ALIAS {
        "Default key that protects my Secrets Manager data when no other key is defined"
    } else {
        "Default key that protects my EBS volumes when no other key is defined"
    }
}

/// AWS's limits, which we keep so that scripts written for AWS behave the same here.
pub const MAX_PLAINTEXT: usize = 4096;
pub const PENDING_WINDOW_DAYS: std::ops::RangeInclusive<u32> = 7..=30;
pub const DEFAULT_PENDING_WINDOW_DAYS: u32 = 30;
pub const ROTATION_PERIOD_DAYS: std::ops::RangeInclusive<u32> = 90..=2560;
pub const DEFAULT_ROTATION_PERIOD_DAYS: u32 = 365;

struct Loaded {
    ks: Keystore,
    /// The file `ks` was read from, to notice another process's write (`watch.rs`).
    file: Option<watch::Watched>,
    next_due: Option<UnixTime>,
}

/// Parsed key policies: the two defaults, and each key's own, cached by its text.
struct PolicyCache {
    default: Arc<Policy>,
    managed: Arc<Policy>,
    by_key: RwLock<HashMap<KeyId, (String, Arc<Policy>)>>,
}

pub struct EmbeddedKms {
    dir: RegionDir,
    account: AccountId,
    /// The region's root key; replaced when another process rotated it (`load_keystore`).
    root: RwLock<Key256>,
    /// What the audit chain, grant tokens and paging markers are derived from: the region's
    /// first root key, unchanged by root-key rotations (`Keystore::derivation_key`).
    derivation: Key256,
    clock: Clock,
    state: RwLock<Loaded>,
    policies: PolicyCache,
    identities: IdentityStore,
    audit: AuditLog,
    meter: Meter,
    /// This process's connections to the region's custom key stores.
    tokens: hsm_keys::TokenCache,
    /// Token objects generated by the `mutate` in progress, destroyed if its write fails.
    fresh_objects: hsm_keys::FreshObjects,
}

impl std::fmt::Debug for EmbeddedKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKms")
            .field("region", &self.dir.region)
            .finish_non_exhaustive()
    }
}

fn internal_lock_poisoned() -> AwsError {
    AwsError::Unsupported {
        message: "an earlier operation in this process panicked; restart it".into(),
    }
}

impl EmbeddedKms {
    /// Opens a region given its root key, applying any due rotation or deletion.
    pub fn open(dir: RegionDir, root: Key256, clock: Clock) -> Result<Self> {
        let path = dir.keystore_path();
        let file = watch::Watched::open(&path);
        let ks = Keystore::load(&path, &root, &dir.region)?;
        let account = ks.body.account_id.clone();
        let parse_default = |text: String| {
            Policy::parse(&text, PolicyKind::Key)
                .map(Arc::new)
                .map_err(|e| AwsError::Unsupported {
                    message: format!("built-in key policy does not parse: {e}"),
                })
        };
        let policies = PolicyCache {
            default: parse_default(policy::default_key_policy(account.as_str()))?,
            managed: parse_default(policy::managed_key_policy(
                account.as_str(),
                dir.region.as_str(),
            ))?,
            by_key: RwLock::new(HashMap::new()),
        };
        let derivation = ks.derivation_key(&root);
        let kms = EmbeddedKms {
            identities: IdentityStore::new(&dir.data_dir, account.clone()),
            audit: AuditLog::new(dir.audit_dir(), ks.audit_chain_keys(&root)),
            meter: Meter::new(&dir),
            tokens: Default::default(),
            fresh_objects: Default::default(),
            policies,
            account,
            dir,
            root: RwLock::new(root),
            derivation,
            clock,
            state: RwLock::new(Loaded {
                next_due: ks.body.next_due(),
                ks,
                file,
            }),
        };
        kms.housekeep_if_due()?;
        Ok(kms)
    }

    /// Opens `region` in `data_dir`; `passphrase` is called only for passphrase regions.
    pub fn open_region(
        data_dir: &std::path::Path,
        region: &Region,
        passphrase: &mut dyn FnMut() -> Result<SecretBytes>,
        clock: Clock,
    ) -> Result<Self> {
        let dir = RegionDir::new(data_dir, region);
        // Asked once, even if a rotation running meanwhile makes us open the region again.
        let mut given: Option<SecretBytes> = None;
        let mut ask = || -> Result<SecretBytes> {
            if let Some(p) = &given {
                return Ok(p.clone());
            }
            let p = passphrase()?;
            given = Some(p.clone());
            Ok(p)
        };
        let mut tries = 0;
        loop {
            // A rotation that a crash interrupted after its commit point is finished first.
            super::root_rotation::recover(&dir)?;
            let cfg = dir.config()?;
            let opened = dir
                .open_root_key(&cfg, &mut ask)
                .and_then(|root| Self::open(dir.clone(), root, clock));
            match opened {
                // A rotation installed its files between our reads of region.json,
                // root.key and the keystore (they are renamed one by one): read them again
                // (recover waits for an install in progress).
                Err(_) if tries < 8 && super::root_rotation::moved_on(&dir, &cfg) => tries += 1,
                opened => return opened,
            }
        }
    }

    /// The region's root key as this process knows it.
    fn root(&self) -> Result<Key256> {
        Ok(self
            .root
            .read()
            .map_err(|_| internal_lock_poisoned())?
            .clone())
    }

    /// Loads the keystore; if it no longer opens because another process rotated the root
    /// key since this one opened the region, opens the new root (a key file or a token;
    /// a passphrase this process was not given makes it [`AwsError::RootKeyRotated`]) and
    /// loads again. A keystore that fails for any other reason is reported as it is.
    /// `locked`: the caller holds the keystore lock (and has run `recover_locked`).
    fn load_keystore(&self, locked: bool) -> Result<Keystore> {
        let path = self.dir.keystore_path();
        let root = self.root()?;
        let err = match Keystore::load(&path, &root, &self.dir.region) {
            Ok(ks) => {
                self.audit.set_keys(ks.audit_chain_keys(&root));
                return Ok(ks);
            }
            Err(e) => e,
        };
        if !locked {
            super::root_rotation::recover(&self.dir)?;
        }
        let cfg = self.dir.config()?;
        if cfg.root_key_check == crate::datadir::root_key::check_value(&root) {
            return Err(err);
        }
        let region = self.dir.region.to_string();
        let new_root = self.dir.open_root_key(&cfg, &mut || {
            Err(AwsError::RootKeyRotated {
                region: region.clone(),
            })
        })?;
        let ks = Keystore::load(&path, &new_root, &self.dir.region)?;
        // The rotation gave the audit chain a successor key: log under it from now on.
        self.audit.set_keys(ks.audit_chain_keys(&new_root));
        *self.root.write().map_err(|_| internal_lock_poisoned())? = new_root;
        Ok(ks)
    }

    /// Whether a cryptographic request (`op`, its JSON `body`) is sure to stay in this
    /// process: the key it names (its `KeyId`, or the key its `CiphertextBlob` names) is
    /// in the keystore as last read and not in a custom key store, whose operations call
    /// a PKCS#11 token. `false` when it cannot tell (the call then decides for itself).
    /// `body` gets the check to run on the parsed JSON and is called only when the region
    /// has custom key stores (the request's key decides): it parses, checks and wipes.
    pub fn stays_in_process(
        &self,
        op: &str,
        body: impl FnOnce(&dyn Fn(&serde_json::Value) -> bool) -> bool,
    ) -> bool {
        let Ok(st) = self.state.read() else {
            return false;
        };
        let ks = &st.ks;
        if ks.body.custom_key_stores.is_empty() {
            return true;
        }
        body(&|body| self.names_embedded_key(ks, op, body))
    }

    /// Whether the crypto request `op` (its JSON `body`) names only keys outside any
    /// custom key store.
    fn names_embedded_key(&self, ks: &Keystore, op: &str, body: &serde_json::Value) -> bool {
        let embedded = |id: &KeyId| {
            ks.body
                .keys
                .get(id)
                .is_some_and(|k| k.custom_key_store_id.is_none())
        };
        let named = |field: &str| {
            body.get(field)
                .and_then(|v| v.as_str())
                .and_then(|s| KeyRef::parse(s).ok())
                .and_then(|r| self.resolve(ks, &r).ok())
                .is_some_and(|id| embedded(&id))
        };
        let blob = || {
            body.get("CiphertextBlob")
                .and_then(|v| v.as_str())
                .and_then(|s| crate::aws::b64::decode(s).ok())
                .is_some_and(|b| blob::parse(&b).is_ok_and(|p| embedded(&p.header.key_id)))
        };
        match op {
            "Decrypt" => blob() && (body.get("KeyId").is_none() || named("KeyId")),
            "ReEncrypt" => blob() && named("DestinationKeyId"),
            "Encrypt" | "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => named("KeyId"),
            _ => false,
        }
    }

    pub fn region(&self) -> &Region {
        &self.dir.region
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }

    pub fn arn(&self, id: &KeyId) -> String {
        key_arn(&self.dir.region, &self.account, id)
    }

    fn housekeep_if_due(&self) -> Result<()> {
        let due = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            st.next_due.is_some_and(|t| t <= self.clock.now())
        };
        if due {
            self.mutate(
                None,
                &mut Call::new("Housekeeping", false),
                |_, _, _| Ok(()),
            )?;
        }
        Ok(())
    }

    /// Reloads the keystore if another process replaced the file since we read it: one
    /// `fstat` of the file we read (`watch.rs`), not a `stat` of its path.
    fn refresh_if_changed(&self) -> Result<()> {
        let stale = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            !st.file.as_ref().is_some_and(watch::Watched::unchanged)
        };
        if stale {
            // Opened before it is read: a write in between is seen at the next call.
            let file = watch::Watched::open(&self.dir.keystore_path());
            let ks = self.load_keystore(false)?;
            let mut st = self.state.write().map_err(|_| internal_lock_poisoned())?;
            *st = Loaded {
                next_due: ks.body.next_due(),
                ks,
                file,
            };
        }
        Ok(())
    }

    fn read<T>(&self, f: impl FnOnce(&Keystore, UnixTime) -> Result<T>) -> Result<T> {
        self.refresh_if_changed()?;
        self.housekeep_if_due()?;
        let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
        f(&st.ks, self.clock.now())
    }

    /// Read-modify-write under the region lock. `f` sees the latest keystore on disk with
    /// housekeeping applied. The call (when `caller` is given) and any housekeeping are
    /// recorded in the audit trail before the keystore is written; if recording fails,
    /// nothing is written. If `f` fails, only the housekeeping (if any) is written.
    fn mutate<T>(
        &self,
        caller: Option<&Caller>,
        call: &mut Call,
        f: impl FnOnce(&mut Keystore, UnixTime, &mut Call) -> Result<T>,
    ) -> Result<T> {
        let lock_path = self.dir.lock_path();
        let _lock = FileLock::exclusive(&lock_path)
            .map_err(|e| AwsError::io("cannot lock", &lock_path, e))?;
        // A rotation that committed and then crashed is installed before anything is read:
        // a write under the old root now would be lost when it is.
        super::root_rotation::recover_locked(&self.dir)?;
        let path = self.dir.keystore_path();
        let mut ks = self.load_keystore(true)?;
        let root = self.root()?;
        let now = self.clock.now();
        let housekept = housekeep(&mut ks, &root, now, &|store, objects| {
            self.destroy_token_objects(store, objects)
        });
        self.keep_fresh_objects();
        let out = f(&mut ks, now, call);
        let written = self.record_and_save(caller, call, &out, &housekept, &mut ks, &root);
        if out.is_err() || written.is_err() {
            // Objects made in a token for a keystore that was not written would be
            // orphans that no key names (docs/security.md).
            let on_disk = Keystore::load(&path, &root, &self.dir.region).ok();
            self.discard_fresh_objects(on_disk.as_ref());
        } else {
            self.keep_fresh_objects();
        }
        written?;
        let mut st = self.state.write().map_err(|_| internal_lock_poisoned())?;
        *st = Loaded {
            next_due: ks.body.next_due(),
            // Under the region lock: the file is the one just read or written.
            file: watch::Watched::open(&path),
            ks,
        };
        out
    }

    /// `mutate`'s tail: the housekeeping's events and the call's, then the keystore.
    fn record_and_save<T>(
        &self,
        caller: Option<&Caller>,
        call: &mut Call,
        out: &Result<T>,
        housekept: &[(&'static str, KeyId)],
        ks: &mut Keystore,
        root: &Key256,
    ) -> Result<()> {
        for (name, id) in housekept {
            let e = event::service_event(
                name,
                &self.arn(id),
                &self.dir.region,
                &self.account,
                self.clock.now_nanos(),
            );
            self.append(&e)?;
        }
        if let Some(c) = caller {
            self.record(c, call, out.as_ref().map(|_| ()))?;
        }
        if out.is_ok() || !housekept.is_empty() {
            #[cfg(test)]
            if custom_key_store_attack_tests::fail_this_save() {
                return Err(AwsError::io(
                    "cannot write",
                    self.dir.keystore_path(),
                    std::io::Error::other("injected by a test"),
                ));
            }
            ks.save(&self.dir.keystore_path(), root)?;
        }
        Ok(())
    }

    // ---- audit and metering ---------------------------------------------------------

    fn append(&self, e: &serde_json::Value) -> Result<()> {
        self.audited(|| self.audit.append(e, self.clock.now()))
    }

    /// Runs one append; when the log went on under a chain key this process does not have
    /// (another process rotated the root key), reloads the keystore, which brings the key,
    /// and tries once more.
    fn audited(
        &self,
        mut append: impl FnMut() -> std::result::Result<u64, AuditError>,
    ) -> Result<()> {
        let out = match append() {
            Err(AuditError::ChainKeyUnknown { .. }) => {
                self.load_keystore(false)?;
                append()
            }
            out => out,
        };
        out.map(|_| ()).map_err(|err| AwsError::AuditFailed {
            path: self.dir.audit_dir(),
            message: err.to_string(),
        })
    }

    /// Appends the call's event with its outcome.
    fn record(
        &self,
        caller: &Caller,
        call: &mut Call,
        outcome: Result<(), &AwsError>,
    ) -> Result<()> {
        call.recorded = true;
        refused::note_recorded();
        let call = &*call;
        self.audited(|| {
            let e = call.encode(
                caller,
                &self.dir.region,
                &self.account,
                outcome,
                self.clock.now_nanos(),
            );
            self.audit.append_encoded(e, self.clock.now())
        })
    }

    /// Ends a call: records it if that has not happened yet (a failure to record replaces
    /// the result), then meters it unless it was denied.
    fn finish<T>(&self, caller: &Caller, mut call: Call, out: Result<T>) -> Result<T> {
        if !call.recorded {
            self.record(caller, &mut call, out.as_ref().map(|_| ()))?;
        }
        if !matches!(out, Err(AwsError::AccessDenied { .. })) {
            let key = call
                .resources()
                .first()
                .map(String::as_str)
                .unwrap_or(metering::NO_KEY);
            self.meter.record_at(self.clock.now(), key, call.name);
        }
        out
    }

    /// Seals the active audit log file (`cryptvol audit seal`).
    pub fn audit_log(&self) -> &AuditLog {
        &self.audit
    }

    /// Writes pending usage counts now (they are also written every second and on drop).
    pub fn flush_metering(&self) -> Result<()> {
        self.meter.flush()
    }
}

/// Applies due deletions and rotations; returns the service events they make
/// (`DeleteKey`, `RotateKey`, as CloudTrail names them).
///
/// A deleted key of a custom key store has its token objects destroyed here, before the
/// keystore without it is written: a crash in between leaves a key past its deletion date
/// whose objects are gone, which the next housekeeping deletes again.
fn housekeep(
    ks: &mut Keystore,
    root: &Key256,
    now: UnixTime,
    destroy_objects: &dyn Fn(&mut CustomKeyStoreRecord, Vec<String>),
) -> Vec<(&'static str, KeyId)> {
    let mut events = Vec::new();
    let due_deletions: Vec<KeyId> = ks
        .body
        .keys
        .values()
        .filter(|k| {
            k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= now)
        })
        .map(|k| k.id)
        .collect();
    for id in due_deletions {
        let k = ks.body.keys.remove(&id).expect("listed above");
        ks.body.aliases.retain(|_, a| a.target != id);
        ks.body.grants.remove(&id);
        ks.destroy_material(&id);
        if let Some(store) = k
            .custom_key_store_id
            .as_ref()
            .and_then(|s| ks.body.custom_key_stores.get_mut(s))
        {
            let objects = k.versions.iter().filter_map(|v| v.token_object.clone());
            destroy_objects(store, objects.collect());
        }
        ks.body.deleted_keys.insert(
            id,
            DeletedKey {
                deleted: k.deletion_date.unwrap_or(now),
                created: Some(k.created),
            },
        );
        events.push(("DeleteKey", id));
    }
    let due_rotations: Vec<(KeyId, u32)> = ks
        .body
        .keys
        .values()
        .filter(|k| {
            k.state == KeyState::Enabled
                && k.rotation.enabled
                && k.rotation.next_rotation.is_some_and(|t| t <= now)
        })
        .map(|k| (k.id, k.current_version().number + 1))
        .collect();
    for (id, number) in due_rotations {
        let v = ks.new_version(root, &id, number, now, VersionOrigin::Automatic);
        let k = ks.body.keys.get_mut(&id).expect("listed above");
        k.versions.push(v);
        k.rotation.next_rotation = Some(now + k.rotation.period_days as i64 * DAY);
        events.push(("RotateKey", id));
    }
    events
}

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod ops_tests;

#[cfg(test)]
mod custom_key_store_tests;

#[cfg(test)]
mod root_rotation_tests;

#[cfg(test)]
mod custom_key_store_attack_tests;

#[cfg(test)]
mod root_rotation_attack_tests;
