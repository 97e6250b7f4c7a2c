//! Who may call what on a secret: the caller's identity policies and the secret's resource
//! policy, either of which may allow (an explicit Deny in either refuses; the account root
//! is always allowed), as AWS decides for a secret within its account.
//!
//! Condition keys: the caller's (`aws:...`, as the KMS sets them), the secret's
//! (`secretsmanager:Name`, `secretsmanager:ResourceTag/K`, `aws:ResourceTag/K`) and the
//! request's ([`request_conditions`]: `secretsmanager:SecretId` as given,
//! `VersionStage`, `VersionId`, `BlockPublicPolicy`, `KmsKeyId`, `Description`, the name a
//! CreateSecret asks for, `aws:RequestTag/K` and `aws:TagKeys`).
//!
//! A resource policy names IAM principals by ARN; the unique id each had when the policy
//! was put is kept, so a user deleted and created again under the same name is not
//! admitted by it (as AWS, and as the KMS's key policies).

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::SecretRecord;
use super::request::Request;
use crate::aws::AwsError;
use crate::iam::caller::Caller;
use crate::kms::embedded::{EmbeddedKms, condition_values};
use crate::policy::{self, AccessRequest, Decision, Policy, PolicyKind};

/// Condition keys a request carries, one list of values per key.
pub type Conditions = Vec<(String, Vec<String>)>;

/// Parses a resource policy, as PutResourcePolicy checks it.
pub fn parse_policy(text: &str) -> Result<Policy, AwsError> {
    Policy::parse(text, PolicyKind::Secret).map_err(|e| AwsError::Secrets {
        code: "MalformedPolicyDocumentException",
        message: format!("the resource policy is not valid: {e}"),
    })
}

/// The condition keys of a request's members.
pub fn request_conditions(r: &Request) -> Conditions {
    let mut out: Conditions = Vec::new();
    let mut text = |key: &str, member: &str| {
        if let Ok(Some(v)) = r.str(member) {
            out.push((key.to_string(), vec![v.to_string()]));
        }
    };
    text("secretsmanager:SecretId", "SecretId");
    text("secretsmanager:VersionStage", "VersionStage");
    text("secretsmanager:VersionId", "VersionId");
    text("secretsmanager:KmsKeyId", "KmsKeyId");
    text("secretsmanager:Description", "Description");
    text("secretsmanager:Name", "Name");
    text("secretsmanager:ResourcePolicy", "ResourcePolicy");
    for (key, member) in [
        ("secretsmanager:BlockPublicPolicy", "BlockPublicPolicy"),
        (
            "secretsmanager:ForceDeleteWithoutRecovery",
            "ForceDeleteWithoutRecovery",
        ),
        ("secretsmanager:RotateImmediately", "RotateImmediately"),
    ] {
        if let Ok(Some(b)) = r.bool(member) {
            out.push((key.to_string(), vec![b.to_string()]));
        }
    }
    if let Some(Value::Array(tags)) = r.get("Tags") {
        let mut keys = Vec::new();
        for t in tags {
            if let Some(k) = t["Key"].as_str() {
                keys.push(k.to_string());
                if let Some(v) = t["Value"].as_str() {
                    out.push((format!("aws:RequestTag/{k}"), vec![v.to_string()]));
                }
            }
        }
        out.push(("aws:TagKeys".into(), keys));
    }
    if let Ok(Some(keys)) = r.strings("TagKeys") {
        out.push((
            "aws:TagKeys".into(),
            keys.into_iter().map(str::to_string).collect(),
        ));
    }
    out
}

/// What a call is authorized on.
pub struct Target<'a> {
    /// The ARN the policies see (the secret's, or the one it would have), or `*`.
    pub resource: &'a str,
    /// How a denial names it: as the request did, so a refusal tells nothing of the secret.
    pub shown: &'a str,
    pub secret: Option<&'a SecretRecord>,
}

/// Authorizes `action` (`secretsmanager:...`) on `target` for `caller`.
pub fn authorize(
    kms: &EmbeddedKms,
    caller: &Caller,
    action: &str,
    target: &Target,
    request: &Conditions,
) -> Result<(), AwsError> {
    let policy = match target.secret.and_then(|s| s.policy.as_deref()) {
        Some(text) => Some(parse_policy(text).map_err(|e| AwsError::Corrupt {
            path: kms.region_dir().secrets_dir(),
            what: format!(
                "the stored policy of secret {} does not parse: {e}",
                target.resource
            ),
        })?),
        None => None,
    };
    let mut conditions = condition_values(caller, None, kms.clock().now());
    let mut grouped: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(s) = target.secret {
        grouped.insert("secretsmanager:Name".into(), vec![s.name.clone()]);
        for t in &s.tags {
            grouped.insert(
                format!("secretsmanager:ResourceTag/{}", t.key),
                vec![t.value.clone()],
            );
            grouped.insert(format!("aws:ResourceTag/{}", t.key), vec![t.value.clone()]);
        }
    }
    for (k, v) in request {
        if k == "secretsmanager:Name" && target.secret.is_some() {
            continue; // the secret's own name, not a new one asked for
        }
        grouped
            .entry(k.clone())
            .or_default()
            .extend(v.iter().cloned());
    }
    for (k, v) in grouped {
        conditions.set_multi(&k, v);
    }
    let mut who = caller.identity.policy_caller();
    if let Some(s) = target.secret
        && named_someone_else(s, caller)
    {
        who.arn = format!("{}#{}", who.arn, caller.identity.unique_id().unwrap_or(""));
    }
    let d = policy::evaluate_resource_based(
        policy.as_ref(),
        &caller.identity.policies,
        &AccessRequest {
            caller: &who,
            action,
            resource: target.resource,
            conditions: &conditions,
        },
    );
    match d {
        Decision::Allow => Ok(()),
        d => Err(AwsError::AccessDenied {
            message: d
                .denial_message(&caller.identity.arn(), action, target.shown)
                .unwrap_or_else(|| format!("not authorized to perform {action}")),
        }),
    }
}

/// Whether the secret's policy named the caller's ARN when it meant another identity of
/// that name (deleted, then created again).
fn named_someone_else(s: &SecretRecord, caller: &Caller) -> bool {
    let id = &caller.identity;
    match (s.policy_principals.get(&id.principal_arn()), id.unique_id()) {
        (Some(meant), Some(is)) => meant != is,
        _ => false,
    }
}
