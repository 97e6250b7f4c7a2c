//! One KMS call as CloudTrail records it. A [`Call`] is filled in while the operation
//! runs (its parameters, the keys it touched, what it returned) and becomes the event
//! that the audit trail stores, whatever the outcome: allowed, denied or failed.
//!
//! Only what is not secret goes in: key ids, encryption contexts, key specs, policies.
//! Never plaintext, data keys, ciphertext blobs or key material.

use serde_json::{Map, Value, json};

use super::caller::Caller;
use super::context::EncryptionContext;
use super::error::KmsError;
use super::ids::{AccountId, Region};

pub const EVENT_VERSION: &str = "1.08";
pub const EVENT_SOURCE: &str = "kms.amazonaws.com";

#[derive(Debug)]
pub struct Call {
    pub name: &'static str,
    pub read_only: bool,
    params: Map<String, Value>,
    resources: Vec<String>,
    response: Option<Value>,
    request_id: String,
    /// Set once the call's event is in the audit trail.
    pub recorded: bool,
}

impl Call {
    pub fn new(name: &'static str, read_only: bool) -> Call {
        Call {
            name,
            read_only,
            params: Map::new(),
            resources: Vec::new(),
            response: None,
            request_id: uuid::Uuid::new_v4().to_string(),
            recorded: false,
        }
    }

    pub fn param(mut self, key: &str, value: impl Into<Value>) -> Call {
        self.params.insert(key.to_string(), value.into());
        self
    }

    /// Adds `keyId` as the caller named it, if it did.
    pub fn key_param(self, key: Option<&impl std::fmt::Display>) -> Call {
        match key {
            Some(k) => self.param("keyId", k.to_string()),
            None => self,
        }
    }

    pub fn context(self, field: &str, ctx: &EncryptionContext) -> Call {
        if ctx.is_empty() {
            return self;
        }
        let m: Map<String, Value> = ctx
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect();
        self.param(field, Value::Object(m))
    }

    /// Records a key the call resolved to (once).
    pub fn resource(&mut self, key_arn: &str) {
        if !self.resources.iter().any(|r| r == key_arn) {
            self.resources.push(key_arn.to_string());
        }
    }

    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    pub fn respond(&mut self, response: Value) {
        self.response = Some(response);
    }

    /// The CloudTrail event for this call with its outcome.
    pub fn event(
        &self,
        caller: &Caller,
        region: &Region,
        account: &AccountId,
        outcome: Result<(), &KmsError>,
        now_nanos: i64,
    ) -> Value {
        let mut identity = caller
            .identity
            .user_identity(caller.access_key_id.as_deref());
        if let Some(via) = &caller.via_service {
            identity["invokedBy"] = Value::String(via.clone());
        }
        let mut e = json!({
            "eventVersion": EVENT_VERSION,
            "userIdentity": identity,
            "eventTime": event_time(now_nanos),
            "eventSource": EVENT_SOURCE,
            "eventName": self.name,
            "awsRegion": region.as_str(),
            "sourceIPAddress": caller.via_service.as_deref().unwrap_or(&caller.source),
            "userAgent": caller.user_agent,
            "requestParameters": if self.params.is_empty() { Value::Null } else { Value::Object(self.params.clone()) },
            "responseElements": match outcome { Ok(()) => self.response.clone().unwrap_or(Value::Null), Err(_) => Value::Null },
            "requestID": self.request_id,
            "eventID": uuid::Uuid::new_v4().to_string(),
            "readOnly": self.read_only,
            "resources": self.resources.iter().map(|arn| json!({
                "accountId": account.as_str(), "type": "AWS::KMS::Key", "ARN": arn,
            })).collect::<Vec<_>>(),
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": account.as_str(),
            "eventCategory": "Management",
        });
        if caller.via_service.is_some() {
            // The caller's own address is still worth keeping when a service was in between.
            e["additionalEventData"] = json!({ "callerSource": caller.source });
        }
        if let Err(err) = outcome {
            e["errorCode"] = Value::String(err.aws_code().to_string());
            e["errorMessage"] = Value::String(err.to_string());
        }
        e
    }
}

/// An event KMS makes on its own (automatic rotation, the end of a deletion window).
pub fn service_event(
    name: &str,
    key_arn: &str,
    region: &Region,
    account: &AccountId,
    now_nanos: i64,
) -> Value {
    json!({
        "eventVersion": EVENT_VERSION,
        "userIdentity": { "accountId": account.as_str(), "invokedBy": EVENT_SOURCE },
        "eventTime": event_time(now_nanos),
        "eventSource": EVENT_SOURCE,
        "eventName": name,
        "awsRegion": region.as_str(),
        "sourceIPAddress": EVENT_SOURCE,
        "userAgent": EVENT_SOURCE,
        "requestParameters": Value::Null,
        "responseElements": Value::Null,
        "eventID": uuid::Uuid::new_v4().to_string(),
        "readOnly": false,
        "resources": [{ "accountId": account.as_str(), "type": "AWS::KMS::Key", "ARN": key_arn }],
        "eventType": "AwsServiceEvent",
        "managementEvent": true,
        "recipientAccountId": account.as_str(),
        "eventCategory": "Management",
    })
}

/// CloudTrail's `eventTime`: UTC to the second, `2026-11-29T17:09:25Z`.
pub fn event_time(now_nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(now_nanos as i128)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}
