//! A Secrets Manager on the region's KMS, with AWS Secrets Manager's names so that the AWS
//! CLI and boto3 work unchanged (`kms serve` answers `X-Amz-Target: secretsmanager.<Op>`).
//!
//! One seam serves both the CLI and the server: [`SecretsManager::call`] takes an
//! operation's JSON request with AWS's member names and returns its JSON response
//! (binary values base64, times epoch seconds), or an [`AwsError`] whose `aws_code` is the
//! Secrets Manager exception.
//!
//! Every call is authorized (`access.rs`: identity policies and the secret's resource
//! policy) and recorded in the region's audit trail with `eventSource
//! secretsmanager.amazonaws.com` and AWS's event names, whatever its outcome; a change is
//! recorded before the store is written, and a call the trail cannot record fails. No
//! value, and no password GetRandomPassword made, is ever in an event or an error.
//!
//! Files:
//! - `model.rs`: what the store keeps; `store.rs`: the sealed store file and its lock.
//! - `envelope.rs`: a value sealed under a KMS data key per version.
//! - `access.rs`: authorization; `errors.rs`: the exceptions; `request.rs`: members.
//! - `lifecycle.rs`: Create/Describe/Update/Delete/RestoreSecret, Tag/UntagResource.
//! - `versions.rs`: Get/PutSecretValue, ListSecretVersionIds, UpdateSecretVersionStage.
//! - `listing.rs`: ListSecrets (filters, paging).
//! - `policies.rs`: Put/Get/Delete/ValidateResourcePolicy.
//! - `password.rs`: GetRandomPassword.
//! - `rotation.rs`: RotateSecret, CancelRotateSecret, the four steps;
//!   `rotation_command.rs` running the command for one step; `due.rs` the rotations
//!   whose time has come; `schedule.rs` RotationRules and when the next one is due
//!   (days, `rate()`, `cron()`).

mod access;
mod due;
mod envelope;
mod errors;
mod lifecycle;
mod listing;
mod model;
mod password;
mod policies;
mod request;
mod rotation;
mod rotation_command;
mod schedule;
mod store;
mod versions;

use std::cell::Cell;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::aws::AwsError;
use crate::crypto::{Key256, kdf};
use crate::iam::caller::Caller;
use crate::kms::embedded::EmbeddedKms;
use crate::kms::embedded::sts_event::ServiceCall;
use model::{SecretRecord, StoreBody};
use request::Request;
use store::Store;

pub use due::spawn_due_rotations;
pub use rotation::STEPS as ROTATION_STEPS;

/// Every operation [`SecretsManager::call`] answers, as AWS names them.
pub const OPERATIONS: &[&str] = &[
    "CancelRotateSecret",
    "CreateSecret",
    "DeleteResourcePolicy",
    "DeleteSecret",
    "DescribeSecret",
    "GetRandomPassword",
    "GetResourcePolicy",
    "GetSecretValue",
    "ListSecretVersionIds",
    "ListSecrets",
    "PutResourcePolicy",
    "PutSecretValue",
    "RestoreSecret",
    "RotateSecret",
    "TagResource",
    "UntagResource",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "ValidateResourcePolicy",
];

/// Operations that change nothing (CloudTrail's `readOnly`).
const READ_ONLY: &[&str] = &[
    "DescribeSecret",
    "GetRandomPassword",
    "GetResourcePolicy",
    "GetSecretValue",
    "ListSecretVersionIds",
    "ListSecrets",
    "ValidateResourcePolicy",
];

/// CloudTrail's `eventSource` of Secrets Manager.
pub const EVENT_SOURCE: &str = "secretsmanager.amazonaws.com";

pub fn is_operation(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

/// Where a call came from. Only the local CLI may name a rotation command (the
/// non-AWS member `RotationCommand` of RotateSecret): a network client must not make this
/// machine run a program of its choice.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    Cli,
    Server { request_id: &'a str },
}

/// The outcome of one rotation run by [`SecretsManager::rotate_due`].
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationReport {
    #[serde(rename = "ARN")]
    pub arn: String,
    pub name: String,
    pub version_id: String,
    /// None when it succeeded; else the step that failed and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The step that failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<&'static str>,
}

/// The Secrets Manager of one region.
pub struct SecretsManager {
    kms: Arc<EmbeddedKms>,
    store: Store,
    store_key: Key256,
    /// Variables given to rotation commands besides their own (the passphrase file of a
    /// passphrase region, so their callbacks can open it).
    command_env: Vec<(String, std::ffi::OsString)>,
}

/// One call in progress: who, what, and whether its event is already in the trail.
struct Call<'a> {
    caller: &'a Caller,
    operation: &'a str,
    via: Via<'a>,
    request_id: String,
    request_parameters: Value,
    /// The request's condition keys (`access::request_conditions`).
    conditions: access::Conditions,
    recorded: Cell<bool>,
}

impl SecretsManager {
    pub fn open(kms: Arc<EmbeddedKms>) -> Result<SecretsManager, AwsError> {
        let store_key = kms.service_store_key(kdf::CTX_SECRETS_STORE_SEAL);
        let store = Store::new(
            kms.region_dir().secrets_dir(),
            store_key.clone(),
            kms.region().as_str(),
        );
        Ok(SecretsManager {
            kms,
            store,
            store_key,
            command_env: Vec::new(),
        })
    }

    /// Gives rotation commands `key=value` in their environment.
    pub fn with_command_env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Self {
        self.command_env.push((key.to_string(), value.into()));
        self
    }

    fn now(&self) -> i64 {
        self.kms.clock().now()
    }

    /// Runs `operation` with its JSON `request` as `caller`: authorized, audited in the
    /// region's trail (never a secret value), and answered in AWS's JSON.
    pub fn call(
        &self,
        caller: &Caller,
        operation: &str,
        request: &Value,
        via: Via<'_>,
    ) -> Result<Value, AwsError> {
        let Some(operation) = OPERATIONS.iter().find(|o| **o == operation).copied() else {
            return Err(errors::invalid_request(format!(
                "{operation} is not an operation of Secrets Manager"
            )));
        };
        let parsed = Request::new(request);
        let mut conditions = parsed
            .as_ref()
            .map(access::request_conditions)
            .unwrap_or_default();
        if let Ok(r) = &parsed
            && operation == "PutResourcePolicy"
            && !r.has("BlockPublicPolicy")
        {
            // Without BlockPublicPolicy, public policies are blocked: its key is true.
            conditions.push((
                "secretsmanager:BlockPublicPolicy".into(),
                vec!["true".into()],
            ));
        }
        let call = Call {
            caller,
            operation,
            via,
            request_id: match via {
                Via::Server { request_id } => request_id.to_string(),
                Via::Cli => crate::kms::event::fast_uuid(),
            },
            request_parameters: request_parameters(request),
            conditions,
            recorded: Cell::new(false),
        };
        let result = parsed.and_then(|r| self.dispatch(&call, &r));
        if !call.recorded.get() {
            let recorded = self.record(&call, result.as_ref());
            if let (Ok(_), Err(e)) = (&result, recorded) {
                return Err(e);
            }
        }
        result
    }

    fn dispatch(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        match c.operation {
            "CreateSecret" => self.create_secret(c, r),
            "DescribeSecret" => self.describe_secret(c, r),
            "UpdateSecret" => self.update_secret(c, r),
            "DeleteSecret" => self.delete_secret(c, r),
            "RestoreSecret" => self.restore_secret(c, r),
            "TagResource" => self.tag_resource(c, r),
            "UntagResource" => self.untag_resource(c, r),
            "GetSecretValue" => self.get_secret_value(c, r),
            "PutSecretValue" => self.put_secret_value(c, r),
            "ListSecretVersionIds" => self.list_secret_version_ids(c, r),
            "UpdateSecretVersionStage" => self.update_secret_version_stage(c, r),
            "ListSecrets" => self.list_secrets(c, r),
            "PutResourcePolicy" => self.put_resource_policy(c, r),
            "GetResourcePolicy" => self.get_resource_policy(c, r),
            "DeleteResourcePolicy" => self.delete_resource_policy(c, r),
            "ValidateResourcePolicy" => self.validate_resource_policy(c, r),
            "GetRandomPassword" => self.get_random_password(c, r),
            "RotateSecret" => self.rotate_secret(c, r),
            "CancelRotateSecret" => self.cancel_rotate_secret(c, r),
            other => Err(errors::invalid_request(format!(
                "{other} is not an operation of Secrets Manager"
            ))),
        }
    }

    /// The call's event: parameters without any value, the response's names only.
    fn record(&self, c: &Call, result: Result<&Value, &AwsError>) -> Result<(), AwsError> {
        let arn = match result {
            Ok(v) => v["ARN"].as_str().map(str::to_string),
            Err(_) => None,
        };
        let resources = arn
            .iter()
            .map(|a| json!({"accountId": self.kms.account().as_str(), "type": "AWS::SecretsManager::Secret", "ARN": a}))
            .collect();
        let read_only = READ_ONLY.contains(&c.operation);
        let response_elements = match result {
            Ok(v) if !read_only => response_elements(v),
            _ => Value::Null,
        };
        self.kms.record_service_call(&ServiceCall {
            event_source: EVENT_SOURCE,
            operation: c.operation,
            caller: c.caller,
            request_parameters: c.request_parameters.clone(),
            response_elements,
            resources,
            read_only,
            error: result.err().map(|e| (e.aws_code(), e.remote_message())),
            request_id: &c.request_id,
        })
    }

    /// Applies `change` to the store: its response is recorded in the trail before the
    /// store is written (a change the trail cannot record is not made).
    fn change(
        &self,
        c: &Call,
        change: impl FnOnce(&mut StoreBody, i64) -> Result<Value, AwsError>,
    ) -> Result<Value, AwsError> {
        let now = self.now();
        self.store.mutate(now, |body| {
            let v = change(body, now)?;
            self.record(c, Ok(&v))?;
            c.recorded.set(true);
            Ok(v)
        })
    }

    /// The store as it is now, for a read.
    fn load(&self) -> Result<StoreBody, AwsError> {
        self.store.load(self.now())
    }

    /// The ARN a request's `SecretId` means for authorization when no secret has it.
    fn arn_for_unknown(&self, id: &str) -> String {
        if id.starts_with("arn:") {
            id.to_string()
        } else {
            format!(
                "arn:aws:secretsmanager:{}:{}:secret:{id}",
                self.kms.region(),
                self.kms.account()
            )
        }
    }

    /// Finds the secret `id` names and authorizes `action` on it; a secret the caller may
    /// not see is refused as denied before its existence is told.
    fn authorized<'b>(
        &self,
        c: &Call,
        body: &'b StoreBody,
        id: &str,
        action: &str,
    ) -> Result<&'b SecretRecord, AwsError> {
        let found = find(
            body,
            id,
            self.kms.region().as_str(),
            self.kms.account().as_str(),
        );
        let resource = found
            .map(|s| s.arn.clone())
            .unwrap_or_else(|| self.arn_for_unknown(id));
        let target = access::Target {
            resource: &resource,
            shown: &self.arn_for_unknown(id),
            secret: found,
        };
        access::authorize(&self.kms, c.caller, action, &target, &c.conditions)?;
        found.ok_or_else(|| errors::not_found(id))
    }

    /// As [`Self::authorized`], for a change to the secret in `body`.
    fn authorized_mut<'b>(
        &self,
        c: &Call,
        body: &'b mut StoreBody,
        id: &str,
        action: &str,
    ) -> Result<&'b mut SecretRecord, AwsError> {
        let arn = self.authorized_arn(c, body, id, action)?;
        body.secrets
            .get_mut(&arn)
            .ok_or_else(|| errors::not_found(id))
    }

    /// As [`Self::authorized_mut`], refusing a secret scheduled for deletion.
    fn live_mut<'b>(
        &self,
        c: &Call,
        body: &'b mut StoreBody,
        id: &str,
        action: &str,
    ) -> Result<&'b mut SecretRecord, AwsError> {
        let s = self.authorized_mut(c, body, id, action)?;
        if s.deletion.is_some() {
            return Err(errors::marked_for_deletion(&s.arn));
        }
        Ok(s)
    }

    /// Authorizes an action on no secret in particular (`*`): ListSecrets and the like.
    fn authorized_account(&self, c: &Call, action: &str) -> Result<(), AwsError> {
        let target = access::Target {
            resource: "*",
            shown: "*",
            secret: None,
        };
        access::authorize(&self.kms, c.caller, action, &target, &c.conditions)
    }

    /// As [`Self::authorized`], for a change: the record's ARN (the key to `body.secrets`).
    fn authorized_arn(
        &self,
        c: &Call,
        body: &StoreBody,
        id: &str,
        action: &str,
    ) -> Result<String, AwsError> {
        self.authorized(c, body, id, action).map(|s| s.arn.clone())
    }

    /// Runs every rotation whose time has come (the region daemon, the server, and
    /// `secretsmanager rotate-due` call it), as `caller`.
    pub fn rotate_due(
        &self,
        caller: &Caller,
        via: Via<'_>,
    ) -> Result<Vec<RotationReport>, AwsError> {
        self.run_due_rotations(caller, via)
    }
}

/// The secret `id` names: its ARN, its name, or its ARN without the random suffix.
fn find<'b>(
    body: &'b StoreBody,
    id: &str,
    region: &str,
    account: &str,
) -> Option<&'b SecretRecord> {
    if let Some(s) = body.secrets.get(id) {
        return Some(s);
    }
    let prefix = format!("arn:aws:secretsmanager:{region}:{account}:secret:");
    let name = id.strip_prefix(&prefix).unwrap_or(id);
    body.secrets.values().find(|s| s.name == name)
}

/// CloudTrail's `requestParameters`: the request's members in camelCase, without the
/// value members.
fn request_parameters(request: &Value) -> Value {
    let Some(members) = request.as_object() else {
        return Value::Null;
    };
    let out: serde_json::Map<String, Value> = members
        .iter()
        .filter(|(k, _)| k.as_str() != "SecretString" && k.as_str() != "SecretBinary")
        .map(|(k, v)| (camel(k), bounded(v, 8)))
        .collect();
    Value::Object(out)
}

/// `v` with what lies deeper than `depth` levels replaced by a note: no request member
/// (Secrets Manager's nest three deep at most) can make an event too deep to read back.
fn bounded(v: &Value, depth: usize) -> Value {
    match v {
        Value::Array(_) | Value::Object(_) if depth == 0 => {
            Value::from("(nested too deep; left out)")
        }
        Value::Array(a) => a.iter().map(|x| bounded(x, depth - 1)).collect(),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), bounded(x, depth - 1)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// CloudTrail's `responseElements` of a change: what names the secret and version.
fn response_elements(v: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for k in ["ARN", "Name", "VersionId", "DeletionDate"] {
        if let Some(x) = v.get(k) {
            out.insert(camel(k), x.clone());
        }
    }
    Value::Object(out)
}

fn camel(k: &str) -> String {
    if k == "ARN" {
        return "arn".into();
    }
    let mut c = k.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
