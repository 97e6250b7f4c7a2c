//! Finding the key a request names — by id, key ARN, alias or alias ARN, in this region
//! and account only — creating an AWS managed key on a service's first use of its alias,
//! and the key-state checks every operation makes (managed keys refused, Enabled required).

use std::collections::BTreeMap;

use super::{
    DEFAULT_ROTATION_PERIOD_DAYS, EmbeddedKms, MANAGED_ALIASES, checks, grants,
    internal_lock_poisoned,
};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::context::EncryptionContext;
use crate::kms::event::Call;
use crate::kms::ids::{AliasName, KeyId, KeyRef};
use crate::kms::keystore::Keystore;
use crate::kms::model::*;
use crate::sys::clock::format_time;
impl EmbeddedKms {
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

    pub(super) fn resolve(&self, ks: &Keystore, r: &KeyRef) -> Result<KeyId> {
        self.check_arn_scope(r)?;
        match r {
            KeyRef::Id(id) | KeyRef::KeyArn { id, .. } => self.existing(ks, id).map(|_| *id),
            KeyRef::Alias(alias) | KeyRef::AliasArn { alias, .. } => self.aliased_key(ks, alias),
        }
    }

    /// The key record `r` names, found once: callers use it, not a second lookup by id.
    pub(super) fn resolve_key<'k>(&self, ks: &'k Keystore, r: &KeyRef) -> Result<&'k KeyRecord> {
        self.check_arn_scope(r)?;
        match r {
            KeyRef::Id(id) | KeyRef::KeyArn { id, .. } => self.existing(ks, id),
            KeyRef::Alias(alias) | KeyRef::AliasArn { alias, .. } => {
                self.existing(ks, &self.aliased_key(ks, alias)?)
            }
        }
    }

    /// The id of the key `alias` points at.
    fn aliased_key(&self, ks: &Keystore, alias: &AliasName) -> Result<KeyId> {
        ks.body
            .aliases
            .get(alias)
            .map(|a| a.target)
            .ok_or_else(|| AwsError::NotFound {
                what: format!("alias {alias} in region {}", self.dir.region),
            })
    }

    /// Resolves `r`, notes the key in the call, and authorizes `action` on it.
    pub(super) fn resolve_authorized<'k>(
        &self,
        ks: &'k Keystore,
        r: &KeyRef,
        caller: &Caller,
        call: &mut Call,
        action: &str,
        ctx: Option<&EncryptionContext>,
    ) -> Result<&'k KeyRecord> {
        let k = self.resolve_key(ks, r)?;
        call.resource(&self.arn(&k.id));
        self.authorize_key(ks, caller, call, action, k, grants::GrantUse::of(ctx), &[])?;
        Ok(k)
    }

    /// As [`Self::resolve_authorized`], for a change. Authorization reads the whole
    /// keystore (policies, grants), so the record is borrowed for the change after it.
    pub(super) fn resolve_authorized_mut<'k>(
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
        self.existing_mut(ks, &id)
    }

    pub(super) fn existing<'k>(&self, ks: &'k Keystore, id: &KeyId) -> Result<&'k KeyRecord> {
        ks.body
            .keys
            .get(id)
            .ok_or_else(|| self.missing(&ks.body.deleted_keys, id))
    }

    /// As [`Self::existing`], for a change.
    pub(super) fn existing_mut<'k>(
        &self,
        ks: &'k mut Keystore,
        id: &KeyId,
    ) -> Result<&'k mut KeyRecord> {
        let body = &mut ks.body;
        body.keys
            .get_mut(id)
            .ok_or_else(|| self.missing(&body.deleted_keys, id))
    }

    /// The error for a key id that names no live key: deleted (and when), or never made.
    fn missing(&self, deleted_keys: &BTreeMap<KeyId, DeletedKey>, id: &KeyId) -> AwsError {
        if let Some(d) = deleted_keys.get(id) {
            return AwsError::KeyDeleted {
                key_arn: self.arn(id),
                deleted_on: format_time(d.deleted),
            };
        }
        AwsError::NotFound {
            what: format!("key {id} in region {}", self.dir.region),
        }
    }

    /// Creates the managed key behind `r` if `r` names one (`alias/aws/ebs`) that does not
    /// exist yet, as AWS does on a service's first use.
    pub(super) fn ensure_managed(&self, r: &KeyRef) -> Result<()> {
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
            let v = ks.new_version(&self.root()?, &id, 1, now, VersionOrigin::Initial);
            ks.body.keys.insert(
                id,
                KeyRecord {
                    id,
                    description: super::managed_key_description(alias.as_str()).into(),
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
                    // EBS's key uses the built-in managed policy; another service's key
                    // keeps its own (usable only through that service).
                    policy: (alias.as_str() == super::SECRETS_MANAGED_ALIAS).then(|| {
                        crate::policy::secrets_managed_key_policy(
                            self.account.as_str(),
                            self.dir.region.as_str(),
                        )
                    }),
                    policy_principals: Default::default(),
                    versions: vec![v],
                    custom_key_store_id: None,
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
                super::managed_key_description(alias.as_str()),
                &self.dir.region,
                &self.account,
                self.clock.now_nanos(),
            ))
        })
    }

    /// Refuses a change to an AWS managed key.
    pub(super) fn refuse_managed(&self, k: &KeyRecord, what: &str) -> Result<()> {
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

    pub(super) fn pending_state_error(&self, k: &KeyRecord, operation: &str) -> AwsError {
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
    pub(super) fn require_enabled(&self, k: &KeyRecord, operation: &str) -> Result<()> {
        match k.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(AwsError::Disabled {
                key_arn: self.arn(&k.id),
            }),
            KeyState::PendingDeletion => Err(self.pending_state_error(k, operation)),
        }
    }

    /// Resolves a key reference without a call (for local tools such as `audit lookup`).
    pub fn resolve_key_arn(&self, r: &KeyRef) -> Result<String> {
        self.read(|ks, _| self.resolve(ks, r).map(|id| self.arn(&id)))
    }
}
