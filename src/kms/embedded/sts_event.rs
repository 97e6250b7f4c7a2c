//! STS calls the server answered (AssumeRole, GetSessionToken, GetCallerIdentity), in the
//! region's trail as CloudTrail records them: `eventSource: sts.amazonaws.com`, the caller,
//! the request's parameters and, for credentials, only their access key id and expiration
//! (never the secret or the session token). Recorded before the answer is sent: a call
//! that cannot be recorded is not answered.

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
        let e = json!({
            "eventVersion": EVENT_VERSION,
            "userIdentity": c.caller.user_identity(),
            "eventTime": event::event_time(self.clock.now_nanos()),
            "eventSource": "sts.amazonaws.com",
            "eventName": c.operation,
            "awsRegion": self.dir.region.as_str(),
            "sourceIPAddress": c.caller.source,
            "userAgent": c.caller.user_agent,
            "requestParameters": c.request_parameters,
            "responseElements": c.response_elements,
            "requestID": c.request_id,
            "eventID": event::fast_uuid(),
            "readOnly": true,
            "resources": resources,
            "eventType": "AwsApiCall",
            "managementEvent": true,
            "recipientAccountId": self.account.as_str(),
            "eventCategory": "Management",
        });
        self.append(&e)
    }
}
