//! Requests the KMS server refused before any KMS operation ran: a signature that did not
//! verify, a request over its rate, a body that is not the operation's input. CloudTrail
//! records such calls with their `errorCode`; so does this trail, so that probing with
//! stolen or guessed access key ids, and callers that were throttled, leave a trace.
//!
//! The caller may be unknown (the signature did not verify): the event's `userIdentity`
//! is then `{"type": "Unknown", "accessKeyId": <the id the request claimed>}`. Every
//! client-supplied string is cut to a bounded length. The server decides how many of
//! these it records (a flood of bad requests must not become a flood of appends).

use serde_json::{Map, Value, json};

use super::EmbeddedKms;
use crate::aws::error::Result;
use crate::iam::caller::Caller;
use crate::kms::event::{self, EVENT_SOURCE, EVENT_VERSION};

/// Longest client-supplied text (user agent, operation name, message) kept in an event.
const MAX_FIELD_CHARS: usize = 256;

/// One refused request, as the server saw it.
#[derive(Debug, Clone, Copy)]
pub struct Refusal<'a> {
    /// The operation of `X-Amz-Target` (`TrentService.<Operation>`), if the request had one.
    pub operation: Option<&'a str>,
    /// The AWS error code the client got (`__type`).
    pub error_code: &'a str,
    /// The message the client got.
    pub error_message: &'a str,
    /// The authenticated caller, when the signature verified (throttled or invalid input).
    pub caller: Option<&'a Caller>,
    /// Otherwise: the access key id the request claimed in its credential, if any.
    pub claimed_access_key_id: Option<&'a str>,
    pub source_ip: &'a str,
    pub user_agent: &'a str,
    /// Refusals the server left out of the trail since the last one it recorded.
    pub suppressed: u64,
    /// The response's request id (`x-amzn-requestid`).
    pub request_id: &'a str,
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_FIELD_CHARS).collect()
}

/// An operation name as the event's `eventName`: AWS's names are letters and digits.
fn event_name(operation: Option<&str>) -> String {
    match operation {
        Some(op) if !op.is_empty() && op.bytes().all(|b| b.is_ascii_alphanumeric()) => cut(op),
        _ => "Unknown".to_string(),
    }
}

impl EmbeddedKms {
    /// Records a refused request in this region's audit trail (the call was not made).
    /// Fails only if the trail cannot be written.
    pub fn record_refused(&self, r: &Refusal) -> Result<()> {
        let user_identity = match (r.caller, r.claimed_access_key_id) {
            (Some(c), _) => c.user_identity().clone(),
            (None, Some(id)) => json!({ "type": "Unknown", "accessKeyId": cut(id) }),
            (None, None) => json!({ "type": "Unknown" }),
        };
        let mut e = json!({
            "eventVersion": EVENT_VERSION,
            "userIdentity": user_identity,
            "eventTime": event::event_time(self.clock.now_nanos()),
            "eventSource": EVENT_SOURCE,
            "eventName": event_name(r.operation),
            "awsRegion": self.dir.region.as_str(),
            "sourceIPAddress": cut(r.source_ip),
            "userAgent": cut(r.user_agent),
            "requestParameters": Value::Null,
            "responseElements": Value::Null,
            "requestID": cut(r.request_id),
            "eventID": event::fast_uuid(),
            "readOnly": false,
            "resources": [],
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.account.as_str(),
            "eventCategory": "Management",
            "errorCode": cut(r.error_code),
            "errorMessage": cut(r.error_message),
        });
        if r.suppressed > 0 {
            let mut extra = Map::new();
            extra.insert("refusalsNotRecorded".into(), r.suppressed.into());
            e["additionalEventData"] = Value::Object(extra);
        }
        self.append(&e)
    }
}

/// Whether an error was already recorded by the KMS operation that returned it: every
/// operation records its own outcome, so the server records only what failed before one
/// ran. Counted per thread: the server runs each request's operation on one thread.
pub fn recorded_on_this_thread() -> u64 {
    RECORDED.with(std::cell::Cell::get)
}

thread_local! {
    static RECORDED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Called by `EmbeddedKms::record` for each call it records.
pub(super) fn note_recorded() {
    RECORDED.with(|n| n.set(n.get().wrapping_add(1)));
}
