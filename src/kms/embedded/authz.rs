//! Authorization of one KMS call: the request's condition keys, the key's effective
//! policy (cached parsed), and the decision turned into AWS's AccessDeniedException.
//!
//! Order as in AWS: a key is resolved first (NotFound), then the caller is authorized
//! (AccessDenied), and only then is the key's state checked (Disabled…), so a caller
//! without permission learns nothing about a key's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::EmbeddedKms;
use super::grants::{self, GrantUse};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::context::EncryptionContext;
use crate::kms::event::Call;
use crate::kms::ids::KeyId;
use crate::kms::keystore::Keystore;
use crate::kms::model::{KeyManager, KeyRecord};
use crate::policy::{self, ConditionValues, Decision, Policy, PolicyKind};

/// Whether `k`'s policy named the caller's ARN when it meant another identity (deleted,
/// then created again under the same name).
fn named_someone_else(k: &KeyRecord, caller: &Caller) -> bool {
    if k.policy_principals.is_empty() {
        return false;
    }
    let id = &caller.identity;
    match (k.policy_principals.get(&id.principal_arn()), id.unique_id()) {
        (Some(meant), Some(is)) => meant != is,
        _ => false,
    }
}

/// The condition keys a request carries (docs/security.md lists them).
pub fn condition_values(
    caller: &Caller,
    ctx: Option<&EncryptionContext>,
    now: i64,
) -> ConditionValues {
    let id = &caller.identity;
    let mut c = ConditionValues::new();
    c.set("kms:CallerAccount", id.account.as_str());
    c.set("aws:PrincipalAccount", id.account.as_str());
    c.set("aws:PrincipalArn", id.principal_arn());
    c.set("aws:PrincipalType", id.principal_type());
    if let crate::iam::Principal::User { name, .. } = &id.principal {
        c.set("aws:username", name.as_str());
    }
    if let Some(via) = &caller.via_service {
        c.set("kms:ViaService", via.as_str());
    }
    if let Some(ip) = &caller.source_ip {
        c.set("aws:SourceIp", ip.as_str());
    }
    if let Some(tls) = caller.secure_transport {
        c.set("aws:SecureTransport", tls.to_string());
    }
    c.set("aws:EpochTime", now.to_string());
    c.set("aws:CurrentTime", crate::sys::clock::format_time(now));
    if let Some(ctx) = ctx {
        let mut keys = Vec::new();
        for (k, v) in ctx.iter() {
            c.set(&format!("kms:EncryptionContext:{k}"), v);
            keys.push(k.to_string());
        }
        c.set_multi("kms:EncryptionContextKeys", keys);
    }
    c
}

impl EmbeddedKms {
    /// The key's policy, parsed: its own, or the default for its kind of key.
    pub(super) fn key_policy(&self, k: &KeyRecord) -> Result<Arc<Policy>> {
        let Some(text) = &k.policy else {
            return Ok(match k.manager {
                KeyManager::Customer => self.policies.default.clone(),
                KeyManager::Aws => self.policies.managed.clone(),
            });
        };
        if let Ok(cache) = self.policies.by_key.read()
            && let Some((cached_text, p)) = cache.get(&k.id)
            && cached_text == text
        {
            return Ok(p.clone());
        }
        let parsed =
            Arc::new(
                Policy::parse(text, PolicyKind::Key).map_err(|e| AwsError::Corrupt {
                    path: self.dir.keystore_path(),
                    what: format!(
                        "the stored policy of key {} does not parse: {e}",
                        self.arn(&k.id)
                    ),
                })?,
            );
        if let Ok(mut cache) = self.policies.by_key.write() {
            cache.insert(k.id, (text.clone(), parsed.clone()));
        }
        Ok(parsed)
    }

    /// Authorizes `action` on key `k` (None: an account-level action such as CreateKey).
    pub(super) fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        k: Option<&KeyRecord>,
        ctx: Option<&EncryptionContext>,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        let policy = k.map(|k| self.key_policy(k)).transpose()?;
        let resource = k.map(|k| self.arn(&k.id));
        let stale = k.is_some_and(|k| named_someone_else(k, caller));
        self.decide_as(
            caller,
            stale,
            action,
            policy.as_deref(),
            resource.as_deref(),
            ctx,
            extra,
        )
    }

    /// The decision for a given policy (also used to test a new policy before it is put).
    pub(super) fn decide(
        &self,
        caller: &Caller,
        action: &str,
        policy: Option<&Policy>,
        resource: Option<&str>,
        ctx: Option<&EncryptionContext>,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        self.decide_as(caller, false, action, policy, resource, ctx, extra)
    }

    /// `stale`: the policy names the caller's ARN but meant an earlier identity of that
    /// name, so the caller's ARN must not match it (account delegation still applies).
    #[allow(clippy::too_many_arguments)]
    fn decide_as(
        &self,
        caller: &Caller,
        stale: bool,
        action: &str,
        policy: Option<&Policy>,
        resource: Option<&str>,
        ctx: Option<&EncryptionContext>,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        let d = self.decision(caller, stale, action, policy, resource, ctx, extra);
        self.denied(caller, d, action, resource)
    }

    /// The policies' decision (key policy and identity policies), before grants.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decision(
        &self,
        caller: &Caller,
        stale: bool,
        action: &str,
        policy: Option<&Policy>,
        resource: Option<&str>,
        ctx: Option<&EncryptionContext>,
        extra: &[(&str, &str)],
    ) -> Decision {
        // Gathering condition keys costs a dozen allocations; skip it on the hot path when
        // no policy involved has a Condition (the default key policy has none).
        let needed = policy.is_some_and(Policy::has_conditions)
            || caller.identity.policies.iter().any(Policy::has_conditions);
        let mut conditions = if needed {
            condition_values(caller, ctx, self.clock.now())
        } else {
            ConditionValues::new()
        };
        if needed {
            // A key given more than once is multi-valued (kms:GrantOperations).
            let mut grouped: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (k, v) in extra {
                grouped.entry(*k).or_default().push(v.to_string());
            }
            for (k, vs) in grouped {
                conditions.set_multi(k, vs);
            }
        }
        let mut who = caller.identity.policy_caller();
        if stale {
            who.arn = format!("{}#{}", who.arn, caller.identity.unique_id().unwrap_or(""));
        }
        policy::evaluate(
            policy,
            &caller.identity.policies,
            &policy::AccessRequest {
                caller: &who,
                action,
                resource: resource.unwrap_or("*"),
                conditions: &conditions,
            },
        )
    }

    /// `Ok` for an allow, else AWS's AccessDeniedException for the decision.
    fn denied(
        &self,
        caller: &Caller,
        d: Decision,
        action: &str,
        resource: Option<&str>,
    ) -> Result<()> {
        let resource = resource.unwrap_or("*");
        match d {
            Decision::Allow => Ok(()),
            d => Err(AwsError::AccessDenied {
                message: d
                    .denial_message(&caller.identity.arn(), action, resource)
                    .unwrap_or_else(|| format!("not authorized to perform {action}")),
            }),
        }
    }

    /// Authorizes `action` on key `k`, where a grant may allow it as well as the policies
    /// (AWS: key policy and IAM policies OR a grant; an explicit Deny in a policy still
    /// wins). The request's grant tokens are checked first. When a grant is what allowed
    /// the call, its id goes in the call's event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn authorize_key(
        &self,
        ks: &Keystore,
        caller: &Caller,
        call: &mut Call,
        action: &str,
        k: &KeyRecord,
        usage: GrantUse<'_>,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        let operation = action.trim_start_matches("kms:");
        let grantable = grants::GRANTABLE.contains(&operation);
        if grantable {
            self.check_grant_tokens(&caller.grant_tokens)?;
        }
        let policy = self.key_policy(k)?;
        let resource = self.arn(&k.id);
        let stale = named_someone_else(k, caller);
        let ctx = match usage {
            GrantUse::Context(c) => Some(c),
            _ => None,
        };
        let d = self.decision(
            caller,
            stale,
            action,
            Some(&policy),
            Some(&resource),
            ctx,
            extra,
        );
        let explicit = matches!(
            d,
            Decision::DenyExplicitInKeyPolicy | Decision::DenyExplicitInIdentityPolicy
        );
        if !d.is_allowed() && !explicit && grantable {
            let live = ks.body.grants.get(&k.id).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(g) = live
                .iter()
                .find(|g| grants::allows(g, caller, operation, &usage))
            {
                call.grant_id = Some(g.id.clone());
                return Ok(());
            }
        }
        self.denied(caller, d, action, Some(&resource))
    }

    /// Whether an explicit Deny in the key policy or the caller's identity policies
    /// refuses `action` on `k` (RetireGrant, which the grant itself authorizes).
    pub(super) fn explicitly_denied(
        &self,
        caller: &Caller,
        action: &str,
        k: &KeyRecord,
        extra: &[(&str, &str)],
    ) -> Result<()> {
        let policy = self.key_policy(k)?;
        let resource = self.arn(&k.id);
        let d = self.decision(
            caller,
            named_someone_else(k, caller),
            action,
            Some(&policy),
            Some(&resource),
            None,
            extra,
        );
        match d {
            Decision::DenyExplicitInKeyPolicy | Decision::DenyExplicitInIdentityPolicy => {
                self.denied(caller, d, action, Some(&resource))
            }
            _ => Ok(()),
        }
    }

    /// AWS's lockout safety check: the caller must still be able to change the policy
    /// after `new` takes effect.
    pub(super) fn check_lockout(&self, caller: &Caller, new: &Policy, key: &KeyId) -> Result<()> {
        let arn = self.arn(key);
        self.decide(caller, "kms:PutKeyPolicy", Some(new), Some(&arn), None, &[])
            .map_err(|_| AwsError::MalformedPolicy {
                field: "Policy".into(),
                message: "the new key policy will not allow you to update the key policy in the future; give yourself kms:PutKeyPolicy in it, or pass --bypass-policy-lockout-safety-check".into(),
            })
    }

    /// Parses a key policy a caller gives and checks that every user or role it names
    /// exists, as AWS does. Returns it with the unique ids of those users and roles.
    pub(super) fn parse_key_policy(
        &self,
        text: &str,
    ) -> Result<(Policy, BTreeMap<String, String>)> {
        let p = Policy::parse(text, PolicyKind::Key).map_err(AwsError::from_policy)?;
        let ids = self.policy_principal_ids(&p)?;
        Ok((p, ids))
    }

    /// The unique id of every IAM principal a resource-based policy names (so a principal
    /// deleted and created again under the same name is not admitted by it), after
    /// checking each exists, as AWS refuses a policy naming a principal that does not.
    pub fn policy_principal_ids(&self, p: &Policy) -> Result<BTreeMap<String, String>> {
        let body = self.identities.load()?;
        let ids = p
            .principal_arns()
            .into_iter()
            .filter_map(|arn| Some((arn.clone(), self.identities.unique_id_of(&body, &arn)?)))
            .collect();
        for (i, arn) in p.principal_arns().iter().enumerate() {
            if !self.identities.principal_exists(&body, arn) {
                return Err(AwsError::MalformedPolicy {
                    field: format!("Principal ({arn})"),
                    message: format!(
                        "principal #{} does not exist: create it with `cryptvol iam create-user` / `create-role`, or fix the ARN",
                        i + 1
                    ),
                });
            }
        }
        Ok(ids)
    }
}
