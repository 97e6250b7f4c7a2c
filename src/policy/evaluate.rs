//! The authorization decision, as AWS KMS makes it: explicit denies first (key policy,
//! then identity policies), then the key policy must allow the caller, either directly or
//! by delegating to the caller's account, in which case an identity policy must allow too.
//!
//! This file owns only the decision; parsing and validation live in [`super::document`].

use super::document::{Effect, Policy, Scope, Statement};
use super::principal::Grant;
use super::request::AccessRequest;
use super::wildcard::{Case, glob_match};

/// The outcome of [`evaluate`]; every denial says which policy failed to allow or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    DenyExplicitInKeyPolicy,
    DenyExplicitInIdentityPolicy,
    /// No statement in the key policy allows the caller (directly or via the account).
    NoKeyPolicyAllow,
    /// The key policy delegates to the account (IAM) but no identity policy of the caller
    /// allows.
    NoIdentityPolicyAllow,
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }

    /// AWS's AccessDeniedException message for this denial; `None` for [`Decision::Allow`].
    pub fn denial_message(self, caller_arn: &str, action: &str, resource: &str) -> Option<String> {
        let reason = match self {
            Decision::Allow => return None,
            Decision::DenyExplicitInKeyPolicy => {
                "with an explicit deny in a resource-based policy".to_string()
            }
            Decision::DenyExplicitInIdentityPolicy => {
                "with an explicit deny in an identity-based policy".to_string()
            }
            Decision::NoKeyPolicyAllow => {
                format!("because no resource-based policy allows the {action} action")
            }
            Decision::NoIdentityPolicyAllow => {
                format!("because no identity-based policy allows the {action} action")
            }
        };
        Some(format!(
            "User: {caller_arn} is not authorized to perform: {action} on resource: {resource} {reason}"
        ))
    }
}

/// Decides `req`. `key_policy` is `None` for an account-level action with no key, which
/// identity policies alone decide (the account root is always allowed those).
pub fn evaluate(
    key_policy: Option<&Policy>,
    identity_policies: &[Policy],
    req: &AccessRequest,
) -> Decision {
    if let Some(deny) = explicit_deny(key_policy, identity_policies, req) {
        return deny;
    }
    let identity_allows = || {
        identity_policies
            .iter()
            .any(|p| strongest_grant(p, Effect::Allow, req).is_some())
    };
    match key_policy {
        Some(policy) => match strongest_grant(policy, Effect::Allow, req) {
            Some(Grant::Direct) => Decision::Allow,
            // Delegation to the account: the root is the account, others need IAM.
            Some(Grant::Account) if req.caller.is_root || identity_allows() => Decision::Allow,
            Some(Grant::Account) => Decision::NoIdentityPolicyAllow,
            None => Decision::NoKeyPolicyAllow,
        },
        None if req.caller.is_root || identity_allows() => Decision::Allow,
        None => Decision::NoIdentityPolicyAllow,
    }
}

/// Decides `req` on a resource whose policy is an alternative to identity policies, as
/// AWS does for a secret (and S3, SQS...) within one account: an explicit Deny in either
/// refuses; otherwise an Allow in either admits, the account root always; a resource
/// policy statement naming the account (`arn:aws:iam::ACCOUNT:root`) delegates to the
/// identity policies as in a key policy.
pub fn evaluate_resource_based(
    resource_policy: Option<&Policy>,
    identity_policies: &[Policy],
    req: &AccessRequest,
) -> Decision {
    if let Some(deny) = explicit_deny(resource_policy, identity_policies, req) {
        return deny;
    }
    let resource_allows = resource_policy
        .and_then(|p| strongest_grant(p, Effect::Allow, req))
        .is_some_and(|g| g == Grant::Direct);
    let identity_allows = identity_policies
        .iter()
        .any(|p| strongest_grant(p, Effect::Allow, req).is_some());
    if req.caller.is_root || resource_allows || identity_allows {
        Decision::Allow
    } else {
        Decision::NoIdentityPolicyAllow
    }
}

/// An explicit Deny in the resource's policy or an identity policy, which always wins.
fn explicit_deny(
    resource_policy: Option<&Policy>,
    identity_policies: &[Policy],
    req: &AccessRequest,
) -> Option<Decision> {
    if resource_policy.is_some_and(|p| strongest_grant(p, Effect::Deny, req).is_some()) {
        return Some(Decision::DenyExplicitInKeyPolicy);
    }
    identity_policies
        .iter()
        .any(|p| strongest_grant(p, Effect::Deny, req).is_some())
        .then_some(Decision::DenyExplicitInIdentityPolicy)
}

/// The strongest way any statement of `effect` in `policy` applies to `req`.
fn strongest_grant(policy: &Policy, effect: Effect, req: &AccessRequest) -> Option<Grant> {
    policy
        .statements
        .iter()
        .filter(|s| s.effect == effect)
        .filter_map(|s| s.applies_to(req))
        .max()
}

impl Statement {
    /// Whether principal, action, resource and condition all match; if so, how the
    /// principal let the caller in (identity policies have no principal: they apply to
    /// their holder directly).
    fn applies_to(&self, req: &AccessRequest) -> Option<Grant> {
        let grant = match &self.principal {
            None => Grant::Direct,
            Some(Scope::Listed(entries)) => entries
                .iter()
                .filter_map(|e| e.grant_for(req.caller))
                .max()?,
            // NotPrincipal: everyone not listed is covered outright; an account entry
            // exempts only the account principal, never the account's users and roles.
            Some(Scope::AllExcept(entries)) => {
                if entries.iter().any(|e| e.exempts(req.caller)) {
                    return None;
                }
                Grant::Direct
            }
        };
        let action_ok = in_scope(&self.action, |p| {
            glob_match(p, req.action, Case::Insensitive)
        });
        let resource_ok = in_scope(&self.resource, |p| {
            glob_match(p, req.resource, Case::Sensitive)
        });
        let condition_ok = self.condition.iter().all(|t| t.holds(req.conditions));
        (action_ok && resource_ok && condition_ok).then_some(grant)
    }
}

fn in_scope(scope: &Scope<String>, matches: impl Fn(&str) -> bool) -> bool {
    match scope {
        Scope::Listed(patterns) => patterns.iter().any(|p| matches(p)),
        Scope::AllExcept(patterns) => !patterns.iter().any(|p| matches(p)),
    }
}
