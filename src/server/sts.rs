//! AWS STS beside KMS on the same server: the Query protocol (`POST /` with a
//! form-encoded body `Action=...&Version=2011-06-15&...`, SigV4 scoped to `sts`) and its
//! XML responses and errors, for `GetCallerIdentity`, `GetSessionToken` and `AssumeRole`,
//! so that `aws sts ... --endpoint-url` and boto3's sts client work against `kms serve`.
//!
//! A request is STS's when it has no `X-Amz-Target` (every KMS request has one) and is
//! form-encoded or names an `Action` in its query. The credentials issued are
//! `iam::sessions`'; the caller may itself be signing with temporary credentials (a role
//! session may assume another role, as AWS's role chaining). Every call is in the audit
//! trail: answered ones as CloudTrail records STS (`kms::embedded::sts_event`, before the
//! answer is sent), refused ones as the KMS refusals are. The secrets of an answer live in
//! zeroizing memory and never reach the trail.

use percent_encoding::percent_decode;
use zeroize::Zeroizing;

use super::body::ZeroizingWriter;
use super::http::{Answer, Received, State};
use super::refusals::Refused;
use crate::aws::AwsError;
use crate::aws::sigv4::{self, Rules};
use crate::iam::Caller;
use crate::iam::sessions::{self, Issued};
use crate::kms::embedded::sts_event::StsCall;
use crate::sys::clock::Clock;
use serde_json::{Value, json};

pub const XML: &str = "text/xml";
const VERSION: &str = "2011-06-15";
const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const ACTIONS: &[&str] = &["AssumeRole", "GetCallerIdentity", "GetSessionToken"];
/// The parameters each action takes; anything else (a session policy, tags, MFA) is
/// refused rather than ignored, since ignoring a session policy would grant more.
const PARAMS: &[&str] = &[
    "Action",
    "Version",
    "RoleArn",
    "RoleSessionName",
    "DurationSeconds",
];

/// Whether a request is for STS rather than KMS.
pub fn is_sts(r: &Received) -> bool {
    r.header("x-amz-target").is_none()
        && (r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
            || r.query.split('&').any(|p| p.starts_with("Action=")))
}

/// An STS error: AWS's XML envelope (`ErrorResponse/Error/{Type,Code,Message}`).
fn error(status: u16, code: &str, message: &str, request_id: &str) -> Answer {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    let body = format!(
        "<ErrorResponse xmlns=\"{NS}\"><Error><Type>{kind}</Type><Code>{}</Code>\
         <Message>{}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
        esc(code),
        esc(&message.replace('`', "'")),
        esc(request_id)
    );
    Answer {
        status,
        body: Zeroizing::new(body.into_bytes()),
        content_type: XML,
    }
}

/// An STS answer: `<{Action}Response><{Action}Result>result</...>` in zeroizing memory.
fn ok(action: &str, result: &[u8], request_id: &str) -> Answer {
    let mut w = ZeroizingWriter::with_capacity(1024);
    w.extend(format!("<{action}Response xmlns=\"{NS}\"><{action}Result>").as_bytes());
    w.extend(result);
    w.extend(
        format!(
            "</{action}Result><ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
            esc(request_id)
        )
        .as_bytes(),
    );
    Answer {
        status: 200,
        body: w.0,
        content_type: XML,
    }
}

/// The text of the first `<name>` element of an XML answer (for the audit record).
pub fn xml_field(body: &[u8], name: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    text.split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&close))
        .map(|(v, _)| unesc(v))
        .unwrap_or_default()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unesc(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// A signature refusal in STS's words (KMS's codes come from `sigv4`).
fn auth_error(code: &str, message: &str, request_id: &str) -> Answer {
    let (status, code) = match code {
        sigv4::UNRECOGNIZED_CLIENT => (403, "InvalidClientTokenId"),
        sigv4::EXPIRED_TOKEN => (400, "ExpiredToken"),
        sigv4::INVALID_SIGNATURE => (403, "SignatureDoesNotMatch"),
        sigv4::INCOMPLETE_SIGNATURE => (400, "IncompleteSignature"),
        sigv4::MISSING_AUTHENTICATION_TOKEN => (403, "MissingAuthenticationToken"),
        other => (400, other),
    };
    error(status, code, message, request_id)
}

/// An IAM or STS failure as STS answers it. A role that does not exist is refused as one
/// the caller may not assume, as AWS does (existence is not told to strangers).
fn failure(e: &AwsError, caller: &Caller, role_arn: &str, request_id: &str) -> Answer {
    match e {
        AwsError::Validation { .. } | AwsError::InvalidArn { .. } => {
            error(400, "ValidationError", &e.remote_message(), request_id)
        }
        AwsError::AccessDenied { message } => error(403, "AccessDenied", message, request_id),
        AwsError::NoSuchEntity { .. } => error(
            403,
            "AccessDenied",
            &format!(
                "User: {} is not authorized to perform: sts:AssumeRole on resource: {role_arn}",
                caller.identity.arn()
            ),
            request_id,
        ),
        other => {
            eprintln!("kms serve: request {request_id} (sts): {other}");
            error(
                500,
                "InternalFailure",
                crate::aws::error::INTERNAL_REMOTE_MESSAGE,
                request_id,
            )
        }
    }
}

/// The form's parameters: the body's and the query's, percent- and `+`-decoded.
fn params(r: &Received, body: &[u8]) -> Vec<(String, Zeroizing<String>)> {
    let decode = |s: &[u8]| {
        let plus: Vec<u8> = s
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_decode(&plus).decode_utf8_lossy().into_owned()
    };
    r.query
        .as_bytes()
        .split(|&b| b == b'&')
        .chain(body.split(|&b| b == b'&'))
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |&b| b == b'=');
            let name = decode(it.next().unwrap_or(b""));
            (name, Zeroizing::new(decode(it.next().unwrap_or(b""))))
        })
        .collect()
}

/// Handles one STS request (blocking, like KMS's).
pub fn handle(state: &State, r: &Received) -> Answer {
    let rid = r.request_id.as_str();
    let refused = |operation: Option<&str>, caller: Option<&Caller>, answer: Answer| {
        let refusal = Refused {
            received: r,
            operation,
            caller,
            region: None,
            counted: false,
            event_source: None,
        };
        state.refusals.record(state, &refusal, answer)
    };
    let body = match &r.body {
        Ok(b) => &b.bytes,
        Err(e) => {
            let a = super::listener::body_error_answer(*e, state.max_body, Default::default());
            return refused(None, None, error(a.status, &a.code(), &a.message(), rid));
        }
    };
    if r.method != "POST" || r.path != "/" {
        let answer = error(
            400,
            "InvalidAction",
            "the STS Query protocol is POST / with a form-encoded body",
            rid,
        );
        return refused(None, None, answer);
    }
    let now = Clock::from_env().now();
    let authed = match state
        .identities
        .authenticate(&r.parts(body), now, &Rules::STS)
    {
        Ok(a) => a,
        Err(Ok(e)) => return refused(None, None, auth_error(e.code, &e.message, rid)),
        Err(Err(e)) => return failure(&e, &dummy_caller(state), "", rid),
    };
    let caller = Caller::new(
        (*authed.identity).clone(),
        Some(authed.verified.access_key_id.clone()),
        r.peer.ip().to_string(),
        Some(r.peer.ip().to_string()),
        r.header("user-agent").unwrap_or("").to_string(),
        Some(r.tls),
    );
    let params = params(r, body);
    let get = |name: &str| {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let action = get("Action").unwrap_or("");
    let op = ACTIONS.iter().find(|a| **a == action).copied();
    let counted = |answer: Answer| {
        let refusal = Refused {
            received: r,
            operation: op,
            caller: Some(&caller),
            region: None,
            counted: true,
            event_source: None,
        };
        state.refusals.record(state, &refusal, answer)
    };
    let Some(op) = op else {
        let message = format!(
            "Could not find operation {} for version {VERSION}",
            action.escape_debug()
        );
        return refused(
            None,
            Some(&caller),
            error(400, "InvalidAction", &message, rid),
        );
    };
    let region = authed.verified.region.as_str();
    if !state.rates.allow(&authed.rate_key, region, op) {
        let answer = error(400, "Throttling", super::ratelimit::RATE_EXCEEDED, rid);
        return refused(Some(op), Some(&caller), answer);
    }
    if get("Version") != Some(VERSION) {
        let message = format!("STS's Version is {VERSION}");
        return counted(error(400, "InvalidParameterValue", &message, rid));
    }
    if let Some((n, _)) = params.iter().find(|(n, _)| !PARAMS.contains(&n.as_str())) {
        let message = format!(
            "the parameter {} is not supported by this STS",
            n.escape_debug()
        );
        return counted(error(400, "ValidationError", &message, rid));
    }
    let duration = match get("DurationSeconds").map(str::parse::<i64>) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            let message = "DurationSeconds must be a whole number of seconds";
            return counted(error(400, "ValidationError", message, rid));
        }
    };
    let store = state.identities.store();
    let key =
        Some(authed.verified.access_key_id.as_str()).filter(|_| caller.identity.session.is_none());
    let role_arn = get("RoleArn").unwrap_or("");
    let issued = match op {
        "GetCallerIdentity" => {
            let (user_id, account, arn) = sessions::caller_identity(&caller.identity);
            if let Err(a) = audit(
                state,
                &caller,
                op,
                region,
                Value::Null,
                Value::Null,
                None,
                rid,
            ) {
                return a;
            }
            let xml = format!(
                "<UserId>{}</UserId><Account>{}</Account><Arn>{}</Arn>",
                esc(&user_id),
                esc(&account),
                esc(&arn)
            );
            return ok(op, xml.as_bytes(), rid);
        }
        "GetSessionToken" => store.get_session_token(&caller.identity, key, duration, now),
        _ => {
            let (Some(arn), Some(name)) = (get("RoleArn"), get("RoleSessionName")) else {
                let missing = if get("RoleArn").is_none() {
                    "roleArn"
                } else {
                    "roleSessionName"
                };
                let message = format!(
                    "1 validation error detected: Value null at '{missing}' failed to satisfy constraint: Member must not be null"
                );
                return counted(error(400, "ValidationError", &message, rid));
            };
            store.assume_role(&caller.identity, key, arn, name, duration, now)
        }
    };
    let i = match issued {
        Ok(i) => i,
        Err(e) => return counted(failure(&e, &caller, role_arn, rid)),
    };
    let mut params = json!({ "durationSeconds": duration });
    let mut response = json!({ "credentials": {
        "accessKeyId": i.access_key_id,
        "expiration": crate::sys::clock::format_time(i.expiration),
    }});
    if let Some((id, arn)) = &i.assumed_role_user {
        params["roleArn"] = role_arn.into();
        params["roleSessionName"] = get("RoleSessionName").unwrap_or("").into();
        response["assumedRoleUser"] = json!({ "assumedRoleId": id, "arn": arn });
    }
    let role = i.assumed_role_user.is_some().then_some(role_arn);
    match audit(state, &caller, op, region, params, response, role, rid) {
        Ok(()) => ok(op, &credentials_xml(&i), rid),
        Err(a) => a,
    }
}

/// Records an STS call in the trail of the region the signature named, or else of the
/// server's home region; `Err` is the answer when it cannot be recorded (then the
/// credentials are not handed out).
#[allow(clippy::too_many_arguments)]
fn audit(
    state: &State,
    caller: &Caller,
    operation: &str,
    region: &str,
    request_parameters: Value,
    response_elements: Value,
    role_arn: Option<&str>,
    request_id: &str,
) -> Result<(), Answer> {
    let kms = state
        .kms(region)
        .or_else(|_| state.kms(state.refusals.home_region()));
    let call = StsCall {
        operation,
        caller,
        request_parameters,
        response_elements,
        role_arn,
        request_id,
    };
    match kms.and_then(|k| k.record_sts(&call)) {
        Ok(()) => Ok(()),
        Err(e) => Err(failure(&e, caller, "", request_id)),
    }
}

/// `Credentials` (and `AssumedRoleUser`) as STS's XML, in zeroizing memory.
fn credentials_xml(i: &Issued) -> Zeroizing<Vec<u8>> {
    let mut w = ZeroizingWriter::with_capacity(1024);
    if let Some((id, arn)) = &i.assumed_role_user {
        w.extend(
            format!(
                "<AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser>",
                esc(id),
                esc(arn)
            )
            .as_bytes(),
        );
    }
    let expiration = crate::sys::clock::format_time(i.expiration);
    w.extend(b"<Credentials><AccessKeyId>");
    w.extend(i.access_key_id.as_bytes());
    w.extend(b"</AccessKeyId><SecretAccessKey>");
    // Base64: nothing to escape.
    w.extend(i.secret_access_key.as_bytes());
    w.extend(b"</SecretAccessKey><SessionToken>");
    w.extend(i.session_token.as_bytes());
    w.extend(b"</SessionToken><Expiration>");
    w.extend(expiration.as_bytes());
    w.extend(b"</Expiration></Credentials>");
    w.0
}

/// A caller for an error that happened before anyone was identified.
fn dummy_caller(state: &State) -> Caller {
    Caller::local(crate::iam::Identity::root(
        state.identities.store().account.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_fields_round_trip_through_escaping() {
        let a = error(403, "AccessDenied", "a <b> & \"c\"", "rid");
        assert_eq!(a.content_type, XML);
        assert_eq!(xml_field(&a.body, "Code"), "AccessDenied");
        assert_eq!(xml_field(&a.body, "Message"), "a <b> & \"c\"");
        assert_eq!(xml_field(&a.body, "Nothing"), "");
    }
}
