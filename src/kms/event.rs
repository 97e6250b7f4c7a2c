//! One KMS call as CloudTrail records it. A [`Call`] is filled in while the operation
//! runs (its parameters, the keys it touched, what it returned) and becomes the event
//! that the audit trail stores, whatever the outcome: allowed, denied or failed.
//!
//! Only what is not secret goes in: key ids, encryption contexts, key specs, policies.
//! Never plaintext, data keys, ciphertext blobs or key material.

use serde_json::{Map, Value, json};

use super::context::EncryptionContext;
use crate::aws::error::AwsError;
use crate::aws::ids::{AccountId, Region};
use crate::iam::caller::Caller;

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
    /// The grant that allowed the call, when no policy did (`additionalEventData.grantId`).
    pub grant_id: Option<String>,
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
            request_id: fast_uuid(),
            grant_id: None,
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

    /// The CloudTrail event for this call with its outcome, as the compact JSON object
    /// the audit trail stores. Serialized straight from borrowed fields: this runs on
    /// every KMS call.
    pub fn encode(
        &self,
        caller: &Caller,
        region: &Region,
        account: &AccountId,
        outcome: Result<(), &AwsError>,
        now_nanos: i64,
    ) -> Vec<u8> {
        let error_message = outcome.err().map(|e| e.to_string());
        let resources: Vec<Resource> = self
            .resources
            .iter()
            .map(|arn| Resource {
                account_id: account.as_str(),
                kind: "AWS::KMS::Key",
                arn,
            })
            .collect();
        let e = EventRecord {
            event_version: EVENT_VERSION,
            user_identity: caller.user_identity(),
            event_time: event_time(now_nanos),
            event_source: EVENT_SOURCE,
            event_name: self.name,
            aws_region: region.as_str(),
            source_ip_address: caller.via_service.as_deref().unwrap_or(&caller.source),
            user_agent: &caller.user_agent,
            request_parameters: (!self.params.is_empty()).then_some(&self.params),
            response_elements: match outcome {
                Ok(()) => self.response.as_ref(),
                Err(_) => None,
            },
            request_id: &self.request_id,
            event_id: fast_uuid(),
            read_only: self.read_only,
            resources,
            event_type: "AwsApiCall",
            management_event: true,
            recipient_account_id: account.as_str(),
            event_category: "Management",
            // The caller's own address is still worth keeping when a service was in between.
            additional_event_data: (caller.via_service.is_some() || self.grant_id.is_some()).then(
                || CallerSource {
                    caller_source: caller.via_service.as_ref().map(|_| caller.source.as_str()),
                    grant_id: self.grant_id.as_deref(),
                },
            ),
            error_code: outcome.err().map(AwsError::aws_code),
            error_message: error_message.as_deref(),
        };
        let mut out = Vec::with_capacity(1024);
        serde_json::to_writer(&mut out, &e).expect("events serialize");
        out
    }

    /// The event as a JSON value (tests and tools; the KMS appends [`Call::encode`]).
    pub fn event(
        &self,
        caller: &Caller,
        region: &Region,
        account: &AccountId,
        outcome: Result<(), &AwsError>,
        now_nanos: i64,
    ) -> Value {
        serde_json::from_slice(&self.encode(caller, region, account, outcome, now_nanos))
            .expect("our own JSON parses")
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EventRecord<'a> {
    event_version: &'static str,
    user_identity: &'a Value,
    event_time: String,
    event_source: &'static str,
    event_name: &'static str,
    aws_region: &'a str,
    #[serde(rename = "sourceIPAddress")]
    source_ip_address: &'a str,
    user_agent: &'a str,
    request_parameters: Option<&'a Map<String, Value>>,
    response_elements: Option<&'a Value>,
    #[serde(rename = "requestID")]
    request_id: &'a str,
    #[serde(rename = "eventID")]
    event_id: String,
    read_only: bool,
    resources: Vec<Resource<'a>>,
    event_type: &'static str,
    management_event: bool,
    recipient_account_id: &'a str,
    event_category: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    additional_event_data: Option<CallerSource<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_message: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Resource<'a> {
    #[serde(rename = "accountId")]
    account_id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "ARN")]
    arn: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct CallerSource<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    caller_source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    grant_id: Option<&'a str>,
}

/// A random-looking, unique UUID (v4 layout) for request, event and secret version ids
/// without a getrandom call each: a random per-process base mixed with a counter. These
/// ids only need to be unique, not secret. The counter goes into bytes 9 to 15, which the
/// v4 layout leaves alone: in bytes 8 to 15 (as it was), the variant bits overwrote the
/// top two bits of the counter's low byte, so every 64th id repeated one (a secret's
/// new version then collided with an older one: "already exists with another value").
pub fn fast_uuid() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut b = *BASE.get_or_init(crate::crypto::random::array);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes();
    // 7 bytes: 2^56 ids before one repeats.
    for (x, y) in b[9..].iter_mut().zip(n) {
        *x ^= y;
    }
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
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
        "eventID": fast_uuid(),
        "readOnly": false,
        "resources": [{ "accountId": account.as_str(), "type": "AWS::KMS::Key", "ARN": key_arn }],
        "eventType": "AwsServiceEvent",
        "managementEvent": true,
        "recipientAccountId": account.as_str(),
        "eventCategory": "Management",
    })
}

/// CloudTrail's `eventTime`: UTC to the second, `2026-11-29T17:09:25Z`. Formatted once
/// per second per thread: every KMS call needs it.
pub fn event_time(now_nanos: i64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    let secs = now_nanos.div_euclid(1_000_000_000);
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != secs {
            *last = (
                secs,
                jiff::Timestamp::from_second(secs)
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default(),
            );
        }
        last.1.clone()
    })
}

#[cfg(test)]
mod fast_uuid_tests {
    /// Ids of one process never repeat (every 64th did), and keep the v4 layout.
    #[test]
    fn fast_uuids_are_distinct_v4_uuids() {
        let ids: Vec<String> = (0..70_000).map(|_| super::fast_uuid()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "an id repeated");
        for id in &ids[..300] {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }
}
