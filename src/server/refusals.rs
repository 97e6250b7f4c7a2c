//! Every refused request goes in the audit trail (`EmbeddedKms::record_refused`), with its
//! error code, the operation it named, the access key it claimed (or the caller, when
//! its signature verified) and the client's address, in the trail of the region its
//! credential named, or else of the server's home region (`--region`).
//!
//! Bounded, so that bad requests cannot make the trail a denial-of-service amplifier:
//! refusals of requests that counted against an access key's quota (invalid input after
//! a verified signature) are all recorded, since the quota already bounds them; all
//! others (bad or missing signatures, unknown operations or regions, bodies over the
//! limit or too slow, throttled requests) share one token bucket of
//! `--refused-audit-rate` records per second, server-wide. A refusal over that rate is
//! still answered but only counted, and the next record carries the count
//! (`additionalEventData.refusalsNotRecorded`). The bucket is checked before anything
//! costly: an unknown region is not even looked for on disk without a token.
//!
//! A refusal of another service's request (Secrets Manager's) whose caller is known is
//! recorded in that service's name, as its answered calls are (`eventSource`
//! secretsmanager.amazonaws.com); one whose signature did not verify is recorded as KMS's
//! refusals are, since who sent it, and so for which service, is not known. The count of
//! records left out is carried by the next KMS-style record.

use std::sync::atomic::{AtomicU64, Ordering};

use super::http::{Answer, Received, State};
use super::ratelimit::Bucket;
use crate::aws::sigv4::{self, RequestParts};
use crate::iam::Caller;
use crate::kms::embedded::Refusal;
use crate::kms::embedded::sts_event::ServiceCall;

pub struct Refusals {
    bucket: Bucket,
    clock: std::time::Instant,
    not_recorded: AtomicU64,
    home_region: String,
}

/// One refusal, as the handler knows it.
pub struct Refused<'a> {
    pub received: &'a Received,
    pub operation: Option<&'a str>,
    /// The verified caller, if the signature verified.
    pub caller: Option<&'a Caller>,
    /// The verified region, if any; else the one the credential claims is tried.
    pub region: Option<&'a str>,
    /// Whether the request counted against its access key's quota.
    pub counted: bool,
    /// The `eventSource` of a service other than KMS the request was for.
    pub event_source: Option<&'a str>,
}

/// The operation a request named, as an event's `eventName`: AWS's names are letters and
/// digits (a client's other text is not recorded), cut to a bounded length.
fn event_name(operation: Option<&str>) -> String {
    match operation {
        Some(op) if !op.is_empty() && op.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            op.chars().take(256).collect()
        }
        _ => "Unknown".to_string(),
    }
}

impl Refusals {
    pub fn new(rate_per_sec: u32, home_region: String) -> Refusals {
        Refusals {
            bucket: Bucket::new(rate_per_sec),
            clock: std::time::Instant::now(),
            not_recorded: AtomicU64::new(0),
            home_region,
        }
    }

    /// The region whose trail records what names no usable region.
    pub fn home_region(&self) -> &str {
        &self.home_region
    }

    /// Records `r` (if the budget allows) and returns `answer` unchanged.
    pub fn record(&self, state: &State, r: &Refused, answer: Answer) -> Answer {
        let now = u64::try_from(self.clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if !r.counted && !self.bucket.take(now) {
            self.not_recorded.fetch_add(1, Ordering::Relaxed);
            return answer;
        }
        let rx = r.received;
        let parts = RequestParts {
            method: &rx.method,
            path: &rx.path,
            query: &rx.query,
            headers: &rx.headers,
            body: &[],
        };
        let claimed = if r.caller.is_none() {
            sigv4::claimed(&parts)
        } else {
            sigv4::Claimed::default()
        };
        let wanted = r.region.or(claimed.region.as_deref());
        let kms = wanted
            .and_then(|name| state.kms(name).ok())
            .or_else(|| state.kms(&self.home_region).ok());
        let Some(kms) = kms else {
            self.not_recorded.fetch_add(1, Ordering::Relaxed);
            return answer;
        };
        let code = answer.code();
        let message = answer.message();
        if let (Some(event_source), Some(caller)) = (r.event_source, r.caller) {
            let call = ServiceCall {
                event_source,
                operation: &event_name(r.operation),
                caller,
                request_parameters: serde_json::Value::Null,
                response_elements: serde_json::Value::Null,
                resources: Vec::new(),
                read_only: false,
                error: Some((&code, message)),
                request_id: &rx.request_id,
            };
            if let Err(e) = kms.record_service_call(&call) {
                self.not_recorded.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "kms serve: request {}: the refusal could not be recorded: {e}",
                    rx.request_id
                );
            }
            return answer;
        }
        let source_ip = rx.peer.ip().to_string();
        let suppressed = self.not_recorded.swap(0, Ordering::Relaxed);
        let refusal = Refusal {
            operation: r.operation,
            error_code: &code,
            error_message: &message,
            caller: r.caller,
            claimed_access_key_id: claimed.access_key_id.as_deref(),
            source_ip: &source_ip,
            user_agent: rx
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
                .map_or("", |(_, v)| v.as_str()),
            suppressed,
            request_id: &rx.request_id,
        };
        if let Err(e) = kms.record_refused(&refusal) {
            self.not_recorded
                .fetch_add(suppressed + 1, Ordering::Relaxed);
            eprintln!(
                "kms serve: request {}: the refusal could not be recorded: {e}",
                rx.request_id
            );
        }
        answer
    }
}
