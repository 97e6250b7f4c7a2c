//! AWS Secrets Manager's JSON 1.1 protocol on the KMS server's port: `X-Amz-Target:
//! secretsmanager.<Operation>`, signed for the service `secretsmanager` (as boto3 and the
//! AWS CLI sign it), answered by the region's [`SecretsManager`] (`crate::secrets`), which
//! authorizes and audits every call itself. What is left here is the protocol: the
//! credential scope, the quotas, the error envelope (an internal error is AWS's
//! `InternalServiceError`, 500, with a message that tells nothing of this machine) and
//! one refusal of our own: the non-AWS member `RotationCommand` (a program for this
//! machine to run) is refused whatever the operation, before the call, though the core
//! refuses it too for [`Via::Server`]. Nor does it go out: DescribeSecret and ListSecrets
//! show the CLI a secret's command, a path on this machine, which remote clients are
//! never told (their clients would drop the unknown member anyway).
//!
//! Request and response bodies carry secret values; they live in the same zeroizing
//! memory as KMS's (`body`), and the parsed request's strings are wiped after the call.

use std::sync::Arc;

use serde_json::Value;

use super::dispatch::Failure;
use super::http::{Answer, Received, State};
use crate::aws::AwsError;
use crate::aws::sigv4::{MAX_CLOCK_SKEW_SECS, Rules};
use crate::iam::Caller;
use crate::secrets::{SecretsManager, Via};

/// The `X-Amz-Target` prefix of Secrets Manager's operations.
pub const TARGET_PREFIX: &str = "secretsmanager.";

/// Secrets Manager requests are signed for `secretsmanager`, otherwise as KMS's.
pub const RULES: Rules<'static> = Rules {
    service: Some("secretsmanager"),
    max_presigned_age_secs: MAX_CLOCK_SKEW_SECS,
};

/// The member of RotateSecret that only the local CLI may give.
const LOCAL_ONLY_MEMBER: &str = "RotationCommand";

/// AWS Secrets Manager's code (and status) for a failure of the service itself.
const INTERNAL_CODE: &str = "InternalServiceError";

/// Whether `op` is one of Secrets Manager's operations that this server answers.
pub fn is_operation(op: &str) -> bool {
    crate::secrets::is_operation(op)
}

/// The quota class of `op` (`ratelimit`): each operation its own, apart from KMS's
/// operations of the same name (both services have a TagResource).
pub fn rate_class(op: &str) -> String {
    format!("{TARGET_PREFIX}{op}")
}

/// Runs `op` on `region`'s Secrets Manager for `caller`.
pub fn call(
    state: &State,
    region: &str,
    caller: &Caller,
    op: &str,
    request: &Value,
    request_id: &str,
) -> Result<Value, Failure> {
    if request.get(LOCAL_ONLY_MEMBER).is_some() {
        return Err(Failure::Input {
            code: "InvalidParameterException",
            message: format!(
                "{LOCAL_ONLY_MEMBER} is not a member of AWS Secrets Manager's {op}: a rotation \
                 command can be set only on the machine that serves this endpoint, with its CLI"
            ),
        });
    }
    let secrets: Arc<SecretsManager> = state.secrets(region)?;
    let mut answer = secrets.call(caller, op, request, Via::Server { request_id })?;
    without_local_members(&mut answer);
    Ok(answer)
}

/// Removes the local-only member from a response: from a secret's description and from
/// each entry of a list.
fn without_local_members(answer: &mut Value) {
    if let Some(o) = answer.as_object_mut() {
        o.remove(LOCAL_ONLY_MEMBER);
    }
    if let Some(list) = answer.get_mut("SecretList").and_then(Value::as_array_mut) {
        for entry in list.iter_mut().filter_map(Value::as_object_mut) {
            entry.remove(LOCAL_ONLY_MEMBER);
        }
    }
}

/// The answer to a failed Secrets Manager call: its exception with status 400, or for an
/// internal failure `InternalServiceError` with status 500 and the generic message (the
/// detail goes to stderr under the request id).
pub fn error_answer(r: &Received, op: &str, e: &AwsError) -> Answer {
    let code = e.aws_code();
    if code == "KMSInternalException" || code == INTERNAL_CODE {
        eprintln!(
            "kms serve: request {} (secretsmanager.{op}) from {}: {e}",
            r.request_id,
            r.peer.ip()
        );
        return Answer::error(
            500,
            INTERNAL_CODE,
            crate::aws::error::INTERNAL_REMOTE_MESSAGE,
        );
    }
    Answer::error(400, code, &e.remote_message())
}
