//! A secret's resource policy: PutResourcePolicy, GetResourcePolicy,
//! DeleteResourcePolicy, ValidateResourcePolicy. The policy is parsed with the policy
//! language the KMS uses (`PolicyKind::Secret`: every statement names a Principal, only
//! `secretsmanager:` actions) and evaluated by `access.rs`.
//!
//! A policy that allows everyone (`"Principal": "*"` or `{"AWS": "*"}`) unless a
//! Condition pins it to named principals, or everyone but some (`NotPrincipal`), grants
//! broad access: PutResourcePolicy refuses it with PublicPolicyException
//! when `BlockPublicPolicy` is true (false by default, as AWS), and ValidateResourcePolicy reports it.

use serde_json::{Value, json};

use super::access::parse_policy;
use super::errors::validation;
use super::lifecycle::arn_name;
use super::request::Request;
use super::{Call, SecretsManager};
use crate::aws::AwsError;
use crate::policy::MAX_POLICY_BYTES;

/// Condition keys that pin a statement to named principals when compared for equality
/// with values free of wildcards: such a statement does not grant broad access.
const PINNING_KEYS: &[&str] = &[
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:userid",
    "aws:username",
];

/// Whether a statement's Condition pins it to named principals.
fn pinned(condition: Option<&Value>) -> bool {
    let Some(Value::Object(ops)) = condition else {
        return false;
    };
    ops.iter().any(|(op, keys)| {
        let equality = matches!(
            op.as_str(),
            "StringEquals" | "ArnEquals" | "StringEqualsIgnoreCase"
        );
        equality
            && keys.as_object().is_some_and(|keys| {
                keys.iter().any(|(k, v)| {
                    let values: Vec<&Value> = match v {
                        Value::Array(a) => a.iter().collect(),
                        one => vec![one],
                    };
                    PINNING_KEYS.contains(&k.to_ascii_lowercase().as_str())
                        && !values.is_empty()
                        && values
                            .iter()
                            .all(|x| x.as_str().is_some_and(|x| !x.contains(['*', '?'])))
                })
            })
    })
}

/// Whether the policy grants broad access: an Allow for everyone (`*`) not pinned by a
/// Condition to named principals, or an Allow for everyone but some (`NotPrincipal`).
fn grants_broad_access(text: &str) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let statements = match &doc["Statement"] {
        Value::Array(a) => a.clone(),
        s @ Value::Object(_) => vec![s.clone()],
        _ => Vec::new(),
    };
    let is_star = |v: &Value| match v {
        Value::String(s) => s == "*",
        Value::Array(a) => a.iter().any(|x| x == "*"),
        _ => false,
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && (s.get("NotPrincipal").is_some()
                || ((is_star(&s["Principal"]) || is_star(&s["Principal"]["AWS"]))
                    && !pinned(s.get("Condition"))))
    })
}

fn policy_text<'a>(r: &Request<'a>) -> Result<&'a str, AwsError> {
    let text = r.required_str("ResourcePolicy")?;
    if text.is_empty() || text.len() > MAX_POLICY_BYTES {
        return Err(validation(
            "ResourcePolicy",
            format!("must be 1 to {MAX_POLICY_BYTES} bytes"),
        ));
    }
    Ok(text)
}

impl SecretsManager {
    pub(super) fn put_resource_policy(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let text = policy_text(r)?;
        // AWS: "By default, public policies aren't blocked."
        let block_public = r.bool("BlockPublicPolicy")?.unwrap_or(false);
        let parsed = parse_policy(text)?;
        let principals = self
            .kms
            .policy_principal_ids(&parsed)
            .map_err(|e| AwsError::Secrets {
                code: "MalformedPolicyDocumentException",
                message: format!("the resource policy is not valid: {e}"),
            })?;
        if block_public && grants_broad_access(text) {
            return Err(AwsError::Secrets {
                code: "PublicPolicyException",
                message: "The resource policy grants broad access to the secret (a Principal of \"*\" without a Condition): name the principals, add a Condition, or set BlockPublicPolicy to false".into(),
            });
        }
        self.change(c, |body, now| {
            let s = self.live_mut(c, body, id, "secretsmanager:PutResourcePolicy")?;
            s.policy = Some(text.to_string());
            s.policy_principals = principals;
            s.last_changed = now;
            Ok(arn_name(s))
        })
    }

    pub(super) fn get_resource_policy(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        let body = self.load()?;
        let s = self.authorized(c, &body, id, "secretsmanager:GetResourcePolicy")?;
        let mut out = arn_name(s);
        if let Some(p) = &s.policy {
            out["ResourcePolicy"] = p.clone().into();
        }
        Ok(out)
    }

    pub(super) fn delete_resource_policy(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let id = r.required_str("SecretId")?;
        self.change(c, |body, now| {
            let s = self.authorized_mut(c, body, id, "secretsmanager:DeleteResourcePolicy")?;
            if s.policy.take().is_some() {
                s.policy_principals.clear();
                s.last_changed = now;
            }
            Ok(arn_name(s))
        })
    }

    pub(super) fn validate_resource_policy(
        &self,
        c: &Call,
        r: &Request,
    ) -> Result<Value, AwsError> {
        let text = policy_text(r)?;
        match r.str("SecretId")? {
            Some(id) => {
                let body = self.load()?;
                self.authorized(c, &body, id, "secretsmanager:ValidateResourcePolicy")?;
            }
            None => self.authorized_account(c, "secretsmanager:ValidateResourcePolicy")?,
        }
        let mut problems = Vec::new();
        if let Err(e) = parse_policy(text) {
            problems.push(json!({"CheckName": "SYNTAX", "ErrorMessage": e.to_string()}));
        }
        if grants_broad_access(text) {
            problems.push(json!({
                "CheckName": "PUBLIC_POLICY",
                "ErrorMessage": "the policy grants broad access: an Allow with a Principal of \"*\" and no Condition",
            }));
        }
        Ok(json!({
            "PolicyValidationPassed": problems.is_empty(),
            "ValidationErrors": problems,
        }))
    }
}
