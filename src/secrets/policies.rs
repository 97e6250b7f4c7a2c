//! A secret's resource policy: PutResourcePolicy, GetResourcePolicy,
//! DeleteResourcePolicy, ValidateResourcePolicy. The policy is parsed with the policy
//! language the KMS uses (`PolicyKind::Secret`: every statement names a Principal, only
//! `secretsmanager:` actions) and evaluated by `access.rs`.
//!
//! A policy that allows everyone (`"Principal": "*"` or `{"AWS": "*"}`) without a
//! Condition grants broad access: PutResourcePolicy refuses it with PublicPolicyException
//! unless `BlockPublicPolicy` is false, and ValidateResourcePolicy reports it.

use serde_json::{Value, json};

use super::access::parse_policy;
use super::errors::{self, validation};
use super::lifecycle::arn_name;
use super::request::Request;
use super::{Call, SecretsManager};
use crate::aws::AwsError;
use crate::policy::MAX_POLICY_BYTES;

/// Whether the policy text has an Allow statement open to everyone without a Condition.
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
            && s.get("Condition")
                .is_none_or(|c| c.as_object().is_none_or(|o| o.is_empty()))
            && (is_star(&s["Principal"]) || is_star(&s["Principal"]["AWS"]))
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
        let block_public = r.bool("BlockPublicPolicy")?.unwrap_or(true);
        parse_policy(text)?;
        if block_public && grants_broad_access(text) {
            return Err(AwsError::Secrets {
                code: "PublicPolicyException",
                message: "The resource policy grants broad access to the secret (a Principal of \"*\" without a Condition): name the principals, add a Condition, or set BlockPublicPolicy to false".into(),
            });
        }
        self.change(c, |body, now| {
            let arn = self.authorized_arn(c, body, id, "secretsmanager:PutResourcePolicy")?;
            let s = body.secrets.get_mut(&arn).expect("found above");
            if s.deletion.is_some() {
                return Err(errors::marked_for_deletion(&arn));
            }
            s.policy = Some(text.to_string());
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
            let arn = self.authorized_arn(c, body, id, "secretsmanager:DeleteResourcePolicy")?;
            let s = body.secrets.get_mut(&arn).expect("found above");
            if s.policy.take().is_some() {
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
            None => super::access::authorize(
                &self.kms,
                c.caller,
                "secretsmanager:ValidateResourcePolicy",
                "*",
                None,
            )?,
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
