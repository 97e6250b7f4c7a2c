//! Calls of other services the region answers, in the region's trail as CloudTrail
//! records them: STS (AssumeRole, GetSessionToken, GetCallerIdentity, from the server) and
//! Secrets Manager (`crate::secrets`). `eventSource` names the service; the caller, the
//! request's parameters and the response's elements are as the service gives them (never
//! a secret: the services leave values, secrets and session tokens out). Recorded before
//! the answer is sent: a call that cannot be recorded is not answered.

use serde_json::{Value, json};

use super::EmbeddedKms;
use crate::aws::error::Result;
use crate::iam::caller::Caller;
use crate::kms::event::{self, EVENT_VERSION};

/// One STS call, as the server answered it.
pub struct StsCall<'a> {
    pub operation: &'a str,
    pub caller: &'a Caller,
    pub request_parameters: Value,
    pub response_elements: Value,
    /// The role assumed, if any (CloudTrail's `resources`).
    pub role_arn: Option<&'a str>,
    pub request_id: &'a str,
}

/// One call of another service (Secrets Manager), as it answered it.
pub struct ServiceCall<'a> {
    /// CloudTrail's `eventSource`, e.g. `secretsmanager.amazonaws.com`.
    pub event_source: &'a str,
    pub operation: &'a str,
    pub caller: &'a Caller,
    pub request_parameters: Value,
    pub response_elements: Value,
    /// CloudTrail's `resources`: `{accountId, type, ARN}` objects.
    pub resources: Vec<Value>,
    pub read_only: bool,
    /// The error's code and message when the call failed.
    pub error: Option<(&'a str, String)>,
    pub request_id: &'a str,
}

impl EmbeddedKms {
    /// Records an STS call in this region's trail.
    pub fn record_sts(&self, c: &StsCall) -> Result<()> {
        let resources: Vec<Value> = c
            .role_arn
            .map(|arn| {
                json!({"accountId": self.account.as_str(), "type": "AWS::IAM::Role", "ARN": arn})
            })
            .into_iter()
            .collect();
        self.record_service_call(&ServiceCall {
            event_source: "sts.amazonaws.com",
            operation: c.operation,
            caller: c.caller,
            request_parameters: c.request_parameters.clone(),
            response_elements: c.response_elements.clone(),
            resources,
            read_only: true,
            error: None,
            request_id: c.request_id,
        })
    }

    /// Records another service's call in this region's trail.
    pub fn record_service_call(&self, c: &ServiceCall) -> Result<()> {
        let mut e = json!({
            "eventVersion": EVENT_VERSION,
            "userIdentity": c.caller.user_identity(),
            "eventTime": event::event_time(self.clock.now_nanos()),
            "eventSource": c.event_source,
            "eventName": c.operation,
            "awsRegion": self.dir.region.as_str(),
            "sourceIPAddress": c.caller.source,
            "userAgent": c.caller.user_agent,
            "requestParameters": c.request_parameters,
            "responseElements": c.response_elements,
            "requestID": c.request_id,
            "eventID": event::fast_uuid(),
            "readOnly": c.read_only,
            "resources": c.resources,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.account.as_str(),
            "eventCategory": "Management",
        });
        if let Some((code, message)) = &c.error {
            e["errorCode"] = Value::from(*code);
            e["errorMessage"] = Value::from(message.as_str());
        }
        self.append(&e)
    }

    /// The region's directory (its paths).
    pub fn region_dir(&self) -> &crate::datadir::RegionDir {
        &self.dir
    }

    /// The clock this KMS keeps time by (skewed in tests).
    pub fn clock(&self) -> crate::sys::clock::Clock {
        self.clock
    }

    /// A key for another service's own sealed store in this region (`context` names the
    /// store): derived from the region's derivation key, so it is fixed for the region's
    /// life, as the audit chain's first key and grant tokens are.
    pub fn service_store_key(&self, context: &str) -> crate::crypto::Key256 {
        crate::crypto::kdf::derive(
            context,
            &self.derivation,
            self.dir.region.as_str().as_bytes(),
        )
    }
}
