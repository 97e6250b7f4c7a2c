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

mod authz;
mod checks;
mod dry_run;
mod grants;
mod ops;
mod paging;
mod policies;
mod refused;
mod tags;
mod usage;
mod volume_service;

pub use grants::{
    CreateGrantRequest, CreateGrantResponse, GrantConstraintsInput, GrantListEntry,
    ListGrantsRequest, ListGrantsResponse, MAX_GRANTS_PER_KEY, RetireGrantRequest,
};
pub use ops::GenerateRandomRequest;
pub use paging::{Page, Paging};
pub use refused::{Refusal, recorded_on_this_thread};
pub use tags::MAX_TAGS;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::api::*;
use super::backend::{DataKeySpec, KeyBackend};
use super::blob;
use super::context::EncryptionContext;
use super::event::{self, Call};
use super::ids::{AliasName, KeyId, KeyRef, alias_arn, key_arn};
use super::keystore::Keystore;
use super::metering::{self, Meter};
use super::model::*;
use crate::audit::AuditLog;
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::{AccountId, Region};
use crate::crypto::{Key256, SecretBytes, kdf};
use crate::datadir::RegionDir;
use crate::iam::IdentityStore;
use crate::iam::caller::Caller;
use crate::policy::{self, Policy, PolicyKind};
use crate::sys::clock::{Clock, format_time};
use crate::sys::fsio::{FileLock, FileStamp};

/// Aliases of AWS managed keys that cryptvol creates on first use.
pub const MANAGED_ALIASES: &[&str] = &["alias/aws/ebs"];

/// AWS's limits, which we keep so that scripts written for AWS behave the same here.
pub const MAX_PLAINTEXT: usize = 4096;
pub const PENDING_WINDOW_DAYS: std::ops::RangeInclusive<u32> = 7..=30;
pub const DEFAULT_PENDING_WINDOW_DAYS: u32 = 30;
pub const ROTATION_PERIOD_DAYS: std::ops::RangeInclusive<u32> = 90..=2560;
pub const DEFAULT_ROTATION_PERIOD_DAYS: u32 = 365;

struct Loaded {
    ks: Keystore,
    stamp: Option<FileStamp>,
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
    root: Key256,
    clock: Clock,
    state: RwLock<Loaded>,
    policies: PolicyCache,
    identities: IdentityStore,
    audit: AuditLog,
    meter: Meter,
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
        let stamp = FileStamp::of(&path);
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
        let audit_key = kdf::derive(kdf::CTX_AUDIT_CHAIN, &root, dir.region.as_str().as_bytes());
        let kms = EmbeddedKms {
            identities: IdentityStore::new(&dir.data_dir, account.clone()),
            audit: AuditLog::new(dir.path.join("audit"), audit_key),
            meter: Meter::new(dir.path.clone()),
            policies,
            account,
            dir,
            root,
            clock,
            state: RwLock::new(Loaded {
                next_due: ks.body.next_due(),
                ks,
                stamp,
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
        let cfg = dir.config()?;
        let root = dir.open_root_key(&cfg, passphrase)?;
        Self::open(dir, root, clock)
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

    /// Reloads the keystore if another process replaced the file since we read it.
    fn refresh_if_changed(&self) -> Result<()> {
        let path = self.dir.keystore_path();
        let now_stamp = FileStamp::of(&path);
        let stale = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            st.stamp != now_stamp
        };
        if stale {
            let ks = Keystore::load(&path, &self.root, &self.dir.region)?;
            let mut st = self.state.write().map_err(|_| internal_lock_poisoned())?;
            *st = Loaded {
                next_due: ks.body.next_due(),
                ks,
                stamp: now_stamp,
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
        let path = self.dir.keystore_path();
        let mut ks = Keystore::load(&path, &self.root, &self.dir.region)?;
        let now = self.clock.now();
        let housekept = housekeep(&mut ks, &self.root, now);
        let out = f(&mut ks, now, call);
        for (name, id) in &housekept {
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
            ks.save(&path, &self.root)?;
        }
        let mut st = self.state.write().map_err(|_| internal_lock_poisoned())?;
        *st = Loaded {
            next_due: ks.body.next_due(),
            stamp: FileStamp::of(&path),
            ks,
        };
        out
    }

    // ---- audit and metering ---------------------------------------------------------

    fn append(&self, e: &serde_json::Value) -> Result<()> {
        self.audit
            .append(e, self.clock.now())
            .map(|_| ())
            .map_err(|err| AwsError::AuditFailed {
                path: self.dir.path.join("audit"),
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
        let e = call.encode(
            caller,
            &self.dir.region,
            &self.account,
            outcome,
            self.clock.now_nanos(),
        );
        call.recorded = true;
        refused::note_recorded();
        self.audit
            .append_encoded(e, self.clock.now())
            .map(|_| ())
            .map_err(|err| AwsError::AuditFailed {
                path: self.dir.path.join("audit"),
                message: err.to_string(),
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
            self.meter
                .record(&metering::month_of(self.clock.now()), key, call.name);
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

    // ---- key resolution -------------------------------------------------------------

    /// Checks that an ARN names this region and account.
    fn check_arn_scope(&self, r: &KeyRef) -> Result<()> {
        if let Some(region) = r.region()
            && region != &self.dir.region
        {
            return Err(AwsError::WrongRegion {
                what: format!("key {r}"),
                named: region.to_string(),
                here: self.dir.region.to_string(),
            });
        }
        if let Some(account) = r.account()
            && account != &self.account
        {
            return Err(AwsError::NotFound {
                what: format!(
                    "key {r} (account {account} is not this data dir's account {})",
                    self.account
                ),
            });
        }
        Ok(())
    }

    fn resolve(&self, ks: &Keystore, r: &KeyRef) -> Result<KeyId> {
        self.check_arn_scope(r)?;
        match r {
            KeyRef::Id(id) | KeyRef::KeyArn { id, .. } => self.existing(ks, id).map(|_| *id),
            KeyRef::Alias(alias) | KeyRef::AliasArn { alias, .. } => ks
                .body
                .aliases
                .get(alias)
                .map(|a| a.target)
                .ok_or_else(|| AwsError::NotFound {
                    what: format!("alias {alias} in region {}", self.dir.region),
                }),
        }
    }

    /// Resolves `r`, notes the key in the call, and authorizes `action` on it.
    fn resolve_authorized<'k>(
        &self,
        ks: &'k Keystore,
        r: &KeyRef,
        caller: &Caller,
        call: &mut Call,
        action: &str,
        ctx: Option<&EncryptionContext>,
    ) -> Result<&'k KeyRecord> {
        let id = self.resolve(ks, r)?;
        call.resource(&self.arn(&id));
        let k = &ks.body.keys[&id];
        self.authorize_key(ks, caller, call, action, k, grants::GrantUse::of(ctx), &[])?;
        Ok(k)
    }

    /// As [`Self::resolve_authorized`], for a change.
    fn resolve_authorized_mut<'k>(
        &self,
        ks: &'k mut Keystore,
        r: &KeyRef,
        caller: &Caller,
        call: &mut Call,
        action: &str,
    ) -> Result<&'k mut KeyRecord> {
        let id = self
            .resolve_authorized(ks, r, caller, call, action, None)?
            .id;
        Ok(ks.body.keys.get_mut(&id).expect("resolved ids exist"))
    }

    fn existing<'k>(&self, ks: &'k Keystore, id: &KeyId) -> Result<&'k KeyRecord> {
        if let Some(k) = ks.body.keys.get(id) {
            return Ok(k);
        }
        if let Some(d) = ks.body.deleted_keys.get(id) {
            return Err(AwsError::KeyDeleted {
                key_arn: self.arn(id),
                deleted_on: format_time(d.deleted),
            });
        }
        Err(AwsError::NotFound {
            what: format!("key {id} in region {}", self.dir.region),
        })
    }

    /// Creates the managed key behind `r` if `r` names one (`alias/aws/ebs`) that does not
    /// exist yet, as AWS does on a service's first use.
    fn ensure_managed(&self, r: &KeyRef) -> Result<()> {
        let alias = match r {
            KeyRef::Alias(a) | KeyRef::AliasArn { alias: a, .. } => a,
            _ => return Ok(()),
        };
        if !MANAGED_ALIASES.contains(&alias.as_str()) {
            return Ok(());
        }
        self.check_arn_scope(r)?;
        self.refresh_if_changed()?;
        let present = {
            let st = self.state.read().map_err(|_| internal_lock_poisoned())?;
            st.ks.body.aliases.contains_key(alias)
        };
        if present {
            return Ok(());
        }
        self.mutate(None, &mut Call::new("CreateKey", false), |ks, now, _| {
            if ks.body.aliases.contains_key(alias) {
                return Ok(());
            }
            let id = KeyId::random();
            let v = ks.new_version(&self.root, &id, 1, now, VersionOrigin::Initial);
            ks.body.keys.insert(
                id,
                KeyRecord {
                    id,
                    description:
                        "Default key that protects my EBS volumes when no other key is defined"
                            .into(),
                    created: now,
                    state: KeyState::Enabled,
                    manager: KeyManager::Aws,
                    deletion_date: None,
                    pending_window_days: None,
                    tags: Default::default(),
                    rotation: Rotation {
                        enabled: true,
                        period_days: DEFAULT_ROTATION_PERIOD_DAYS,
                        next_rotation: Some(now + DEFAULT_ROTATION_PERIOD_DAYS as i64 * DAY),
                    },
                    policy: None,
                    policy_principals: Default::default(),
                    versions: vec![v],
                },
            );
            ks.body.aliases.insert(
                alias.clone(),
                AliasRecord {
                    target: id,
                    created: now,
                    updated: now,
                },
            );
            // Recorded before the keystore is written, as every change is.
            self.append(&checks::managed_key_event(
                &self.arn(&id),
                &self.dir.region,
                &self.account,
                self.clock.now_nanos(),
            ))
        })
    }

    /// Refuses a change to an AWS managed key.
    fn refuse_managed(&self, k: &KeyRecord, what: &str) -> Result<()> {
        if k.is_managed() {
            return Err(AwsError::Unsupported {
                message: format!(
                    "key {} is an AWS managed key: it cannot be {what} (use a customer managed key from `cryptvol kms create-key` for control)",
                    self.arn(&k.id)
                ),
            });
        }
        Ok(())
    }

    fn pending_state_error(&self, k: &KeyRecord, operation: &str) -> AwsError {
        let arn = self.arn(&k.id);
        AwsError::InvalidState {
            state: format!(
                "pending deletion until {}",
                k.deletion_date.map(format_time).unwrap_or_default()
            ),
            operation: operation.to_string(),
            hint: format!(": cancel with `cryptvol kms cancel-key-deletion --key-id {arn}`"),
            key_arn: arn,
        }
    }

    /// The key must be Enabled for cryptographic use and for most changes.
    fn require_enabled(&self, k: &KeyRecord, operation: &str) -> Result<()> {
        match k.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(AwsError::Disabled {
                key_arn: self.arn(&k.id),
            }),
            KeyState::PendingDeletion => Err(self.pending_state_error(k, operation)),
        }
    }

    fn metadata(&self, k: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            aws_account_id: self.account.to_string(),
            key_id: k.id.to_string(),
            arn: self.arn(&k.id),
            creation_date: k.created,
            enabled: k.state == KeyState::Enabled,
            description: k.description.clone(),
            key_usage: "ENCRYPT_DECRYPT",
            key_state: k.state.as_str(),
            deletion_date: k.deletion_date,
            pending_deletion_window_in_days: k.pending_window_days,
            origin: "AWS_KMS",
            key_manager: match k.manager {
                KeyManager::Customer => "CUSTOMER",
                KeyManager::Aws => "AWS",
            },
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: vec![SYMMETRIC_DEFAULT],
            multi_region: false,
            current_key_material_id: Some(k.current_version().material_id().to_string()),
        }
    }

    // ---- key lifecycle ----------------------------------------------------------------

    /// CreateKey. `policy`: the key policy text (None: the default policy); `bypass`
    /// skips the lockout safety check, as `--bypass-policy-lockout-safety-check`.
    pub fn create_key(&self, caller: &Caller, req: &CreateKeyRequest) -> Result<KeyMetadata> {
        let mut call = Call::new("CreateKey", false)
            .param("description", req.description.as_str())
            .param("keyUsage", "ENCRYPT_DECRYPT")
            .param("keySpec", SYMMETRIC_DEFAULT)
            .param("bypassPolicyLockoutSafetyCheck", req.bypass_lockout_check);
        if let Some(p) = &req.policy {
            call = call.param("policy", p.as_str());
        }
        if !req.tags.is_empty() {
            call = call.param(
                "tags",
                req.tags
                    .iter()
                    .map(|(k, v)| serde_json::json!({"tagKey": k, "tagValue": v}))
                    .collect::<Vec<_>>(),
            );
        }
        let out = self.create_key_inner(caller, req, &mut call);
        self.finish(caller, call, out)
    }

    fn create_key_inner(
        &self,
        caller: &Caller,
        req: &CreateKeyRequest,
        call: &mut Call,
    ) -> Result<KeyMetadata> {
        let bypass = req.bypass_lockout_check.to_string();
        self.authorize(
            caller,
            "kms:CreateKey",
            None,
            None,
            &[("kms:BypassPolicyLockoutSafetyCheck", &bypass)],
        )?;
        let description = &req.description;
        checks::check_description(description)?;
        checks::check_tags(&req.tags)?;
        let tag_map: std::collections::BTreeMap<_, _> = req.tags.iter().cloned().collect();
        let id = KeyId::random();
        let mut principals = std::collections::BTreeMap::new();
        if let Some(text) = &req.policy {
            let (p, ids) = self.parse_key_policy(text)?;
            if !req.bypass_lockout_check {
                self.check_lockout(caller, &p, &id)?;
            }
            principals = ids;
        }
        self.mutate(Some(caller), call, |ks, now, call| {
            call.resource(&self.arn(&id));
            let v = ks.new_version(&self.root, &id, 1, now, VersionOrigin::Initial);
            let rec = KeyRecord {
                id,
                description: description.to_string(),
                created: now,
                state: KeyState::Enabled,
                manager: KeyManager::Customer,
                deletion_date: None,
                pending_window_days: None,
                tags: tag_map,
                rotation: Rotation {
                    enabled: false,
                    period_days: DEFAULT_ROTATION_PERIOD_DAYS,
                    next_rotation: None,
                },
                policy: req.policy.clone(),
                policy_principals: principals,
                versions: vec![v],
            };
            let meta = self.metadata(&rec);
            call.respond(serde_json::json!({ "keyMetadata": {
                "keyId": meta.key_id, "arn": meta.arn, "keyState": meta.key_state,
                "keyManager": meta.key_manager, "description": meta.description,
            }}));
            ks.body.keys.insert(id, rec);
            Ok(meta)
        })
    }

    pub fn describe_key(&self, caller: &Caller, r: &KeyRef) -> Result<KeyMetadata> {
        let mut call = Call::new("DescribeKey", true).param("keyId", r.to_string());
        let out = self.ensure_managed(r).and_then(|()| {
            self.read(|ks, _| {
                let k =
                    self.resolve_authorized(ks, r, caller, &mut call, "kms:DescribeKey", None)?;
                Ok(self.metadata(k))
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_keys(&self, caller: &Caller) -> Result<ListKeysResponse> {
        let call = Call::new("ListKeys", true);
        let out = self
            .authorize(caller, "kms:ListKeys", None, None, &[])
            .and_then(|()| {
                self.read(|ks, _| {
                    Ok(ListKeysResponse {
                        keys: ks
                            .body
                            .keys
                            .keys()
                            .map(|id| KeyListEntry {
                                key_id: id.to_string(),
                                key_arn: self.arn(id),
                            })
                            .collect(),
                        truncated: false,
                    })
                })
            });
        self.finish(caller, call, out)
    }

    /// A change to one key: resolve, authorize `action`, then `f` under the region lock.
    fn change_key<T>(
        &self,
        caller: &Caller,
        mut call: Call,
        r: &KeyRef,
        action: &str,
        f: impl FnOnce(&mut KeyRecord, UnixTime, &mut Call) -> Result<T>,
    ) -> Result<T> {
        let out = self.mutate(Some(caller), &mut call, |ks, now, call| {
            let k = self.resolve_authorized_mut(ks, r, caller, call, action)?;
            f(k, now, call)
        });
        self.finish(caller, call, out)
    }

    pub fn enable_key(&self, caller: &Caller, r: &KeyRef) -> Result<()> {
        let call = Call::new("EnableKey", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:EnableKey", |k, _, _| {
            self.refuse_managed(k, "enabled or disabled")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "EnableKey"));
            }
            k.state = KeyState::Enabled;
            Ok(())
        })
    }

    pub fn disable_key(&self, caller: &Caller, r: &KeyRef) -> Result<()> {
        let call = Call::new("DisableKey", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:DisableKey", |k, _, _| {
            self.refuse_managed(k, "disabled")?;
            if k.state == KeyState::PendingDeletion {
                return Err(self.pending_state_error(k, "DisableKey"));
            }
            k.state = KeyState::Disabled;
            Ok(())
        })
    }

    pub fn schedule_key_deletion(
        &self,
        caller: &Caller,
        r: &KeyRef,
        pending_window_days: Option<u32>,
    ) -> Result<ScheduleKeyDeletionResponse> {
        let days = pending_window_days.unwrap_or(DEFAULT_PENDING_WINDOW_DAYS);
        let call = Call::new("ScheduleKeyDeletion", false)
            .param("keyId", r.to_string())
            .param("pendingWindowInDays", days);
        self.change_key(
            caller,
            call,
            r,
            "kms:ScheduleKeyDeletion",
            |k, now, call| {
                if !PENDING_WINDOW_DAYS.contains(&days) {
                    return Err(AwsError::validation(
                        "PendingWindowInDays",
                        format!("{days} is outside 7..30"),
                    ));
                }
                self.refuse_managed(k, "deleted")?;
                if k.state == KeyState::PendingDeletion {
                    return Err(self.pending_state_error(k, "ScheduleKeyDeletion"));
                }
                let when = now + days as i64 * DAY;
                k.state = KeyState::PendingDeletion;
                k.deletion_date = Some(when);
                k.pending_window_days = Some(days);
                call.respond(serde_json::json!({
                    "keyId": self.arn(&k.id), "deletionDate": format_time(when),
                    "keyState": "PendingDeletion", "pendingWindowInDays": days,
                }));
                Ok(ScheduleKeyDeletionResponse {
                    key_id: self.arn(&k.id),
                    deletion_date: when,
                    key_state: KeyState::PendingDeletion.as_str(),
                    pending_window_in_days: days,
                })
            },
        )
    }

    /// Cancels a scheduled deletion; the key comes back Disabled, as in AWS.
    pub fn cancel_key_deletion(&self, caller: &Caller, r: &KeyRef) -> Result<KeyIdResponse> {
        let call = Call::new("CancelKeyDeletion", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:CancelKeyDeletion", |k, _, _| {
            if k.state != KeyState::PendingDeletion {
                return Err(AwsError::InvalidState {
                    key_arn: self.arn(&k.id),
                    state: k.state.as_str().to_string(),
                    operation: "CancelKeyDeletion".into(),
                    hint: " (only a key pending deletion can have its deletion cancelled)".into(),
                });
            }
            k.state = KeyState::Disabled;
            k.deletion_date = None;
            k.pending_window_days = None;
            Ok(KeyIdResponse {
                key_id: self.arn(&k.id),
            })
        })
    }

    // ---- cryptographic operations -------------------------------------------------------

    fn seal_under(
        &self,
        ks: &Keystore,
        k: &KeyRecord,
        ctx: &EncryptionContext,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let v = k.current_version();
        let material = ks
            .material(&k.id, v.number)
            .expect("loaded keystores hold every version");
        blob::seal(&self.dir.region, &k.id, v.number, material, ctx, plaintext)
    }

    pub fn encrypt(
        &self,
        caller: &Caller,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EncryptResponse> {
        let mut call = Self::encrypt_call(r, ctx);
        let out = self.encrypt_inner(caller, &mut call, r, plaintext, ctx);
        self.finish(caller, call, out)
    }

    /// The audit record of an Encrypt call (also its dry run's).
    pub(super) fn encrypt_call(r: &KeyRef, ctx: &EncryptionContext) -> Call {
        Call::new("Encrypt", true)
            .param("keyId", r.to_string())
            .context("encryptionContext", ctx)
            .param("encryptionAlgorithm", SYMMETRIC_DEFAULT)
    }

    /// The audit record of a Decrypt call (also its dry run's).
    pub(super) fn decrypt_call(key: Option<&KeyRef>, ctx: &EncryptionContext) -> Call {
        Call::new("Decrypt", true)
            .key_param(key)
            .context("encryptionContext", ctx)
            .param("encryptionAlgorithm", SYMMETRIC_DEFAULT)
    }

    /// The audit record of a ReEncrypt call (also its dry run's).
    pub(super) fn re_encrypt_call(
        source_key: Option<&KeyRef>,
        source_ctx: &EncryptionContext,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Call {
        let call = Call::new("ReEncrypt", true)
            .param("destinationKeyId", destination.to_string())
            .context("sourceEncryptionContext", source_ctx)
            .context("destinationEncryptionContext", destination_ctx)
            .param("sourceEncryptionAlgorithm", SYMMETRIC_DEFAULT)
            .param("destinationEncryptionAlgorithm", SYMMETRIC_DEFAULT);
        match source_key {
            Some(s) => call.param("sourceKeyId", s.to_string()),
            None => call,
        }
    }

    fn encrypt_inner(
        &self,
        caller: &Caller,
        call: &mut Call,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EncryptResponse> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(AwsError::validation(
                "Plaintext",
                format!(
                    "{} bytes: Encrypt takes 1 to {MAX_PLAINTEXT} bytes; encrypt larger data locally under a data key from generate-data-key",
                    plaintext.len()
                ),
            ));
        }
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let k = self.resolve_authorized(ks, r, caller, call, "kms:Encrypt", Some(ctx))?;
            self.require_enabled(k, "Encrypt")?;
            Ok(EncryptResponse {
                ciphertext_blob: self.seal_under(ks, k, ctx, plaintext),
                key_id: self.arn(&k.id),
                encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    /// Opens a blob for `action`; `expected` (the caller's `--key-id`) must be the key the
    /// blob names.
    #[allow(clippy::too_many_arguments)]
    fn open_blob(
        &self,
        ks: &Keystore,
        caller: &Caller,
        call: &mut Call,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        expected: Option<&KeyRef>,
        action: &str,
    ) -> Result<(KeyId, SecretBytes)> {
        let operation = action.trim_start_matches("kms:");
        let parsed = blob::parse(blob_bytes).map_err(|e| AwsError::InvalidCiphertext {
            reason: e.to_string(),
        })?;
        let h = &parsed.header;
        if h.region != self.dir.region {
            return Err(AwsError::BlobFromOtherRegion {
                blob_region: h.region.to_string(),
                here: self.dir.region.to_string(),
            });
        }
        let k = self.existing(ks, &h.key_id)?;
        call.resource(&self.arn(&k.id));
        self.authorize_key(
            ks,
            caller,
            call,
            action,
            k,
            grants::GrantUse::Context(ctx),
            &[],
        )?;
        if let Some(exp) = expected {
            let want = self.resolve(ks, exp)?;
            if want != h.key_id {
                return Err(AwsError::IncorrectKey {
                    expected: self.arn(&want),
                    actual: self.arn(&h.key_id),
                });
            }
        }
        self.require_enabled(k, operation)?;
        let material =
            ks.material(&k.id, h.key_version)
                .ok_or_else(|| AwsError::InvalidCiphertext {
                    reason: format!(
                        "names version {} of key {}, which that key does not have",
                        h.key_version,
                        self.arn(&k.id)
                    ),
                })?;
        let plain = parsed.open(material, ctx).map_err(|_| AwsError::InvalidCiphertext {
            reason: format!(
                "does not authenticate under key {}: it was altered, or the encryption context differs from the one it was encrypted with",
                self.arn(&k.id)
            ),
        })?;
        Ok((k.id, plain))
    }

    pub fn decrypt(
        &self,
        caller: &Caller,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        key: Option<&KeyRef>,
    ) -> Result<DecryptResponse> {
        let mut call = Self::decrypt_call(key, ctx);
        let out = self.read(|ks, _| {
            let (id, plaintext) =
                self.open_blob(ks, caller, &mut call, blob_bytes, ctx, key, "kms:Decrypt")?;
            Ok(DecryptResponse {
                key_id: self.arn(&id),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        });
        self.finish(caller, call, out)
    }

    pub fn re_encrypt(
        &self,
        caller: &Caller,
        blob_bytes: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        let mut call = Self::re_encrypt_call(source_key, source_ctx, destination, destination_ctx);
        let out = self.re_encrypt_inner(
            caller,
            &mut call,
            blob_bytes,
            source_ctx,
            source_key,
            destination,
            destination_ctx,
        );
        self.finish(caller, call, out)
    }

    #[allow(clippy::too_many_arguments)]
    fn re_encrypt_inner(
        &self,
        caller: &Caller,
        call: &mut Call,
        blob_bytes: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        // Check the source before creating a managed destination key, so a bad blob
        // changes nothing.
        self.read(|ks, _| {
            self.open_blob(
                ks,
                caller,
                call,
                blob_bytes,
                source_ctx,
                source_key,
                "kms:ReEncryptFrom",
            )
            .map(|_| ())
        })?;
        self.ensure_managed(destination)?;
        self.read(|ks, _| {
            let (src, plain) = self.open_blob(
                ks,
                caller,
                call,
                blob_bytes,
                source_ctx,
                source_key,
                "kms:ReEncryptFrom",
            )?;
            let k = self.resolve_authorized(
                ks,
                destination,
                caller,
                call,
                "kms:ReEncryptTo",
                Some(destination_ctx),
            )?;
            self.require_enabled(k, "ReEncrypt")?;
            Ok(ReEncryptResponse {
                ciphertext_blob: self.seal_under(ks, k, destination_ctx, plain.expose()),
                source_key_id: self.arn(&src),
                key_id: self.arn(&k.id),
                source_encryption_algorithm: SYMMETRIC_DEFAULT,
                destination_encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    fn data_key(
        &self,
        caller: &Caller,
        call: &mut Call,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<(KeyId, SecretBytes, Vec<u8>)> {
        let n = spec.len();
        if n == 0 || n > DataKeySpec::MAX_BYTES {
            return Err(AwsError::validation(
                "NumberOfBytes",
                format!("{n} is outside 1..{}", DataKeySpec::MAX_BYTES),
            ));
        }
        let action = format!("kms:{}", call.name);
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let k = self.resolve_authorized(ks, r, caller, call, &action, Some(ctx))?;
            self.require_enabled(k, call.name)?;
            let plaintext = SecretBytes::random(n);
            let blob = self.seal_under(ks, k, ctx, plaintext.expose());
            Ok((k.id, plaintext, blob))
        })
    }

    fn data_key_call(
        name: &'static str,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Call {
        let call = Call::new(name, true)
            .param("keyId", r.to_string())
            .context("encryptionContext", ctx);
        match spec.aws_name() {
            Some(name) => call.param("keySpec", name),
            None => call.param("numberOfBytes", spec.len()),
        }
    }

    pub fn generate_data_key(
        &self,
        caller: &Caller,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        let mut call = Self::data_key_call("GenerateDataKey", r, spec, ctx);
        let out = self.data_key(caller, &mut call, r, spec, ctx).map(
            |(id, plaintext, ciphertext_blob)| GenerateDataKeyResponse {
                ciphertext_blob,
                plaintext,
                key_id: self.arn(&id),
            },
        );
        self.finish(caller, call, out)
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        let mut call = Self::data_key_call("GenerateDataKeyWithoutPlaintext", r, spec, ctx);
        let out = self.data_key(caller, &mut call, r, spec, ctx).map(
            |(id, _plaintext, ciphertext_blob)| GenerateDataKeyWithoutPlaintextResponse {
                ciphertext_blob,
                key_id: self.arn(&id),
            },
        );
        self.finish(caller, call, out)
    }

    // ---- rotation ---------------------------------------------------------------------

    pub fn enable_key_rotation(
        &self,
        caller: &Caller,
        r: &KeyRef,
        period_days: Option<u32>,
    ) -> Result<()> {
        let mut call = Call::new("EnableKeyRotation", false).param("keyId", r.to_string());
        if let Some(p) = period_days {
            call = call.param("rotationPeriodInDays", p);
        }
        self.change_key(caller, call, r, "kms:EnableKeyRotation", |k, now, _| {
            if let Some(p) = period_days
                && !ROTATION_PERIOD_DAYS.contains(&p)
            {
                return Err(AwsError::validation(
                    "RotationPeriodInDays",
                    format!("{p} is outside 90..2560"),
                ));
            }
            self.refuse_managed(k, "given a rotation setting (it is always rotated yearly)")?;
            self.require_enabled(k, "EnableKeyRotation")?;
            let period = period_days.unwrap_or(k.rotation.period_days);
            if !k.rotation.enabled {
                k.rotation.next_rotation = Some(now + period as i64 * DAY);
            } else if period != k.rotation.period_days {
                // As AWS: the next rotation is one new period after the last one.
                k.rotation.next_rotation = Some(k.current_version().created + period as i64 * DAY);
            }
            k.rotation.enabled = true;
            k.rotation.period_days = period;
            Ok(())
        })
    }

    pub fn disable_key_rotation(&self, caller: &Caller, r: &KeyRef) -> Result<()> {
        let call = Call::new("DisableKeyRotation", false).param("keyId", r.to_string());
        self.change_key(caller, call, r, "kms:DisableKeyRotation", |k, _, _| {
            self.refuse_managed(k, "given a rotation setting (it is always rotated yearly)")?;
            self.require_enabled(k, "DisableKeyRotation")?;
            k.rotation.enabled = false;
            k.rotation.next_rotation = None;
            Ok(())
        })
    }

    pub fn get_key_rotation_status(
        &self,
        caller: &Caller,
        r: &KeyRef,
    ) -> Result<KeyRotationStatusResponse> {
        let mut call = Call::new("GetKeyRotationStatus", true).param("keyId", r.to_string());
        let out = self.ensure_managed(r).and_then(|()| {
            self.read(|ks, _| {
                let k = self.resolve_authorized(
                    ks,
                    r,
                    caller,
                    &mut call,
                    "kms:GetKeyRotationStatus",
                    None,
                )?;
                let on = k.rotation.enabled;
                Ok(KeyRotationStatusResponse {
                    key_id: self.arn(&k.id),
                    key_rotation_enabled: on,
                    rotation_period_in_days: on.then_some(k.rotation.period_days),
                    next_rotation_date: if on { k.rotation.next_rotation } else { None },
                })
            })
        });
        self.finish(caller, call, out)
    }

    /// Adds a new key version now; the automatic schedule is unchanged, as in AWS.
    pub fn rotate_key_on_demand(&self, caller: &Caller, r: &KeyRef) -> Result<KeyIdResponse> {
        let mut call = Call::new("RotateKeyOnDemand", false).param("keyId", r.to_string());
        let out = self.mutate(Some(caller), &mut call, |ks, now, call| {
            let k = self.resolve_authorized(ks, r, caller, call, "kms:RotateKeyOnDemand", None)?;
            self.refuse_managed(k, "rotated on demand (it is rotated yearly)")?;
            self.require_enabled(k, "RotateKeyOnDemand")?;
            checks::check_on_demand_limit(k, &self.arn(&k.id))?;
            let id = k.id;
            let number = k.current_version().number + 1;
            let v = ks.new_version(&self.root, &id, number, now, VersionOrigin::OnDemand);
            ks.body
                .keys
                .get_mut(&id)
                .expect("resolved")
                .versions
                .push(v);
            Ok(KeyIdResponse {
                key_id: self.arn(&id),
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_key_rotations(
        &self,
        caller: &Caller,
        r: &KeyRef,
    ) -> Result<ListKeyRotationsResponse> {
        let mut call = Call::new("ListKeyRotations", true).param("keyId", r.to_string());
        let out = self.read(|ks, _| {
            let k =
                self.resolve_authorized(ks, r, caller, &mut call, "kms:ListKeyRotations", None)?;
            let rotations = k
                .versions
                .iter()
                .filter(|v| v.origin != VersionOrigin::Initial)
                .map(|v| RotationEntry {
                    key_id: k.id.to_string(),
                    rotation_date: v.created,
                    rotation_type: match v.origin {
                        VersionOrigin::OnDemand => "ON_DEMAND",
                        _ => "AUTOMATIC",
                    },
                    key_material_id: v.material_id().to_string(),
                })
                .collect();
            Ok(ListKeyRotationsResponse {
                rotations,
                truncated: false,
            })
        });
        self.finish(caller, call, out)
    }

    // ---- aliases ----------------------------------------------------------------------

    fn user_alias(name: &str, operation: &str) -> Result<AliasName> {
        checks::user_alias(name, operation)
    }

    /// An alias target: a key id or key ARN of a customer key that is not pending
    /// deletion, on which the caller may perform `action`.
    fn alias_target(
        &self,
        ks: &Keystore,
        caller: &Caller,
        call: &mut Call,
        target: &KeyRef,
        action: &str,
    ) -> Result<KeyId> {
        if matches!(target, KeyRef::Alias(_) | KeyRef::AliasArn { .. }) {
            return Err(AwsError::validation(
                "TargetKeyId",
                format!("'{target}' is an alias; an alias must point at a key id or key ARN"),
            ));
        }
        let k = self.resolve_authorized(ks, target, caller, call, action, None)?;
        self.refuse_managed(k, "the target of a customer alias")?;
        if k.state == KeyState::PendingDeletion {
            return Err(self.pending_state_error(k, "CreateAlias/UpdateAlias"));
        }
        Ok(k.id)
    }

    pub fn create_alias(&self, caller: &Caller, name: &str, target: &KeyRef) -> Result<()> {
        let mut call = Call::new("CreateAlias", false)
            .param("aliasName", name)
            .param("targetKeyId", target.to_string());
        let out = Self::user_alias(name, "create").and_then(|alias| {
            self.mutate(Some(caller), &mut call, |ks, now, call| {
                let id = self.alias_target(ks, caller, call, target, "kms:CreateAlias")?;
                if ks.body.aliases.contains_key(&alias) {
                    return Err(AwsError::AlreadyExists {
                        what: format!("alias {alias}"),
                        hint: ": point it elsewhere with `cryptvol kms update-alias`".into(),
                    });
                }
                ks.body.aliases.insert(
                    alias,
                    AliasRecord {
                        target: id,
                        created: now,
                        updated: now,
                    },
                );
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }

    pub fn update_alias(&self, caller: &Caller, name: &str, target: &KeyRef) -> Result<()> {
        let mut call = Call::new("UpdateAlias", false)
            .param("aliasName", name)
            .param("targetKeyId", target.to_string());
        let out = Self::user_alias(name, "update").and_then(|alias| {
            self.mutate(Some(caller), &mut call, |ks, now, call| {
                let old = ks
                    .body
                    .aliases
                    .get(&alias)
                    .map(|a| a.target)
                    .ok_or_else(|| AwsError::NotFound {
                        what: format!("alias {alias} in region {}", self.dir.region),
                    })?;
                // As AWS: permission on both the key it leaves and the key it joins.
                self.resolve_authorized(
                    ks,
                    &KeyRef::Id(old),
                    caller,
                    call,
                    "kms:UpdateAlias",
                    None,
                )?;
                let id = self.alias_target(ks, caller, call, target, "kms:UpdateAlias")?;
                let a = ks.body.aliases.get_mut(&alias).expect("looked up above");
                a.target = id;
                a.updated = now;
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }

    pub fn delete_alias(&self, caller: &Caller, name: &str) -> Result<()> {
        let mut call = Call::new("DeleteAlias", false).param("aliasName", name);
        let out = Self::user_alias(name, "delete").and_then(|alias| {
            self.mutate(Some(caller), &mut call, |ks, _, call| {
                let target = ks
                    .body
                    .aliases
                    .get(&alias)
                    .map(|a| a.target)
                    .ok_or_else(|| AwsError::NotFound {
                        what: format!("alias {alias} in region {}", self.dir.region),
                    })?;
                self.resolve_authorized(
                    ks,
                    &KeyRef::Id(target),
                    caller,
                    call,
                    "kms:DeleteAlias",
                    None,
                )?;
                ks.body.aliases.remove(&alias);
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_aliases(
        &self,
        caller: &Caller,
        key: Option<&KeyRef>,
    ) -> Result<ListAliasesResponse> {
        let call = Call::new("ListAliases", true).key_param(key);
        let out = self
            .authorize(caller, "kms:ListAliases", None, None, &[])
            .and_then(|()| {
                self.read(|ks, _| {
                    let only = key.map(|r| self.resolve(ks, r)).transpose()?;
                    let aliases = ks
                        .body
                        .aliases
                        .iter()
                        .filter(|(_, a)| only.is_none_or(|id| a.target == id))
                        .map(|(name, a)| AliasEntry {
                            alias_name: name.to_string(),
                            alias_arn: alias_arn(&self.dir.region, &self.account, name),
                            target_key_id: a.target.to_string(),
                            creation_date: a.created,
                            last_updated_date: a.updated,
                        })
                        .collect();
                    Ok(ListAliasesResponse {
                        aliases,
                        truncated: false,
                    })
                })
            });
        self.finish(caller, call, out)
    }

    /// Resolves a key reference without a call (for local tools such as `audit lookup`).
    pub fn resolve_key_arn(&self, r: &KeyRef) -> Result<String> {
        self.read(|ks, _| self.resolve(ks, r).map(|id| self.arn(&id)))
    }

    /// Keys and aliases without any secret, for `cryptvol inspect keystore`.
    pub fn keystore_summary(&self) -> Result<serde_json::Value> {
        self.read(|ks, _| {
            let mut body = serde_json::to_value(&ks.body).expect("serialises");
            // Sealed material is not secret, but it is noise to a reader: show its length.
            if let Some(keys) = body.get_mut("keys").and_then(|k| k.as_object_mut()) {
                for key in keys.values_mut() {
                    if let Some(vs) = key.get_mut("versions").and_then(|v| v.as_array_mut()) {
                        for v in vs {
                            v["sealed"] = serde_json::json!("<60 bytes sealed>");
                        }
                    }
                }
            }
            Ok(serde_json::json!({
                "generation": ks.generation,
                "body": body,
            }))
        })
    }
}

/// CreateKey's inputs.
#[derive(Debug, Clone, Default)]
pub struct CreateKeyRequest {
    pub description: String,
    pub tags: Vec<(String, String)>,
    pub policy: Option<String>,
    pub bypass_lockout_check: bool,
}

/// Applies due deletions and rotations; returns the service events they make
/// (`DeleteKey`, `RotateKey`, as CloudTrail names them).
fn housekeep(ks: &mut Keystore, root: &Key256, now: UnixTime) -> Vec<(&'static str, KeyId)> {
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
        ks.body.deleted_keys.insert(
            id,
            DeletedKey {
                deleted: k.deletion_date.unwrap_or(now),
                created: Some(k.created),
            },
        );
        events.push(("DeleteKey", id));
    }
    let due_rotations: Vec<KeyId> = ks
        .body
        .keys
        .values()
        .filter(|k| {
            k.state == KeyState::Enabled
                && k.rotation.enabled
                && k.rotation.next_rotation.is_some_and(|t| t <= now)
        })
        .map(|k| k.id)
        .collect();
    for id in due_rotations {
        let number = ks.body.keys[&id].current_version().number + 1;
        let v = ks.new_version(root, &id, number, now, VersionOrigin::Automatic);
        let k = ks.body.keys.get_mut(&id).expect("listed above");
        k.versions.push(v);
        k.rotation.next_rotation = Some(now + k.rotation.period_days as i64 * DAY);
        events.push(("RotateKey", id));
    }
    events
}

/// The KMS as a [`KeyBackend`] for one caller: the volume and snapshot layers' view,
/// with every call made through the volume service (`kms:ViaService`). `K` is the KMS
/// owned (a CLI command) or borrowed (a server serving many callers).
pub struct Session<K> {
    kms: K,
    caller: Caller,
}

impl<K: std::borrow::Borrow<EmbeddedKms>> Session<K> {
    /// `caller` acting through the volume service of the KMS's region.
    pub fn for_volumes(kms: K, caller: &Caller) -> Session<K> {
        Session {
            caller: caller.via_volumes(kms.borrow().region()),
            kms,
        }
    }

    pub fn kms(&self) -> &EmbeddedKms {
        self.kms.borrow()
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl<K: std::borrow::Borrow<EmbeddedKms> + Send + Sync> KeyBackend for Session<K> {
    fn generate_data_key(
        &self,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        self.kms()
            .generate_data_key(&self.caller, key, spec, context)
    }

    fn decrypt(&self, blob: &[u8], context: &EncryptionContext) -> Result<DecryptResponse> {
        self.kms().decrypt(&self.caller, blob, context, None)
    }

    fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination: &KeyRef,
        destination_context: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        self.kms().re_encrypt(
            &self.caller,
            blob,
            source_context,
            None,
            destination,
            destination_context,
        )
    }

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata> {
        self.kms().describe_key(&self.caller, key)
    }

    fn decrypt_for_volume(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<DecryptResponse> {
        self.decrypt_volume_key(blob, context, volume)
    }

    fn grant_volume_service(
        &self,
        key: &str,
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<Option<String>> {
        self.make_volume_grant(key, context, volume)
    }

    fn retire_volume_service_grant(&self, key: &str, volume: &str) -> Result<()> {
        self.retire_volume_grant(key, volume)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod ops_tests;
