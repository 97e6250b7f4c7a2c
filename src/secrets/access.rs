//! Who may call what on a secret: the caller's identity policies and the secret's resource
//! policy, either of which may allow (an explicit Deny in either refuses; the account root
//! is always allowed), as AWS decides for a secret within its account. The condition keys
//! are the KMS ones of the caller (`aws:...`) and Secrets Manager's own.

use super::model::SecretRecord;
use crate::aws::AwsError;
use crate::iam::caller::Caller;
use crate::kms::embedded::{EmbeddedKms, condition_values};
use crate::policy::{self, AccessRequest, Decision, Policy, PolicyKind};

/// Parses a resource policy, as PutResourcePolicy checks it.
pub fn parse_policy(text: &str) -> Result<Policy, AwsError> {
    Policy::parse(text, PolicyKind::Secret).map_err(|e| AwsError::Secrets {
        code: "MalformedPolicyDocumentException",
        message: format!("the resource policy is not valid: {e}"),
    })
}

/// Authorizes `action` (`secretsmanager:...`) on `resource` (a secret's ARN, or `*`).
pub fn authorize(
    kms: &EmbeddedKms,
    caller: &Caller,
    action: &str,
    resource: &str,
    secret: Option<&SecretRecord>,
) -> Result<(), AwsError> {
    let policy = match secret.and_then(|s| s.policy.as_deref()) {
        Some(text) => Some(parse_policy(text).map_err(|e| AwsError::Corrupt {
            path: kms.region_dir().secrets_dir(),
            what: format!("the stored policy of secret {resource} does not parse: {e}"),
        })?),
        None => None,
    };
    let mut conditions = condition_values(caller, None, kms.clock().now());
    if let Some(s) = secret {
        conditions.set("secretsmanager:Name", s.name.as_str());
        conditions.set("secretsmanager:SecretId", s.arn.as_str());
        for t in &s.tags {
            conditions.set(
                &format!("secretsmanager:ResourceTag/{}", t.key),
                t.value.as_str(),
            );
            conditions.set(&format!("aws:ResourceTag/{}", t.key), t.value.as_str());
        }
    }
    let who = caller.identity.policy_caller();
    let d = policy::evaluate_resource_based(
        policy.as_ref(),
        &caller.identity.policies,
        &AccessRequest {
            caller: &who,
            action,
            resource,
            conditions: &conditions,
        },
    );
    match d {
        Decision::Allow => Ok(()),
        d => Err(AwsError::AccessDenied {
            message: d
                .denial_message(&caller.identity.arn(), action, resource)
                .unwrap_or_else(|| format!("not authorized to perform {action}")),
        }),
    }
}
