//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`): [`sign`] for our clients of AWS-compatible
//! services, [`verify`] for the KMS server that the AWS CLI, boto3 and our own client call
//! with the JSON 1.1 protocol.
//!
//! It follows the published algorithm
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>):
//!
//! ```text
//! canonical request = METHOD \n canonical URI \n canonical query \n canonical headers \n
//!                     signed headers \n payload hash
//! string to sign    = "AWS4-HMAC-SHA256" \n YYYYMMDDTHHMMSSZ \n
//!                     date/region/service/aws4_request \n hex(sha256(canonical request))
//! signing key       = HMAC("AWS4" + secret, date) → region → service → "aws4_request"
//! signature         = hex(HMAC(signing key, string to sign))
//! ```
//!
//! Path segments are URI-encoded once (S3 style; KMS always posts to `/`), query names and
//! values with AWS's unreserved set `A-Za-z0-9-_.~`. Both the `Authorization` header and
//! query-string (presigned) authentication are verified; a service's [`Rules`] add the
//! service its credential scope must name and how long a presigned request may live.
//!
//! This module owns only the signature: it knows nothing of keys, policies or HTTP types.
//! The server turns an [`AuthError`] into the JSON error body; secrets come in through a
//! callback and never appear in an error message or a `Debug` output.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm there is for SigV4 with HMAC.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request's date may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// The longest a presigned request may be valid (`X-Amz-Expires`), as AWS allows: a week.
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 7 * 24 * 3600;
/// The last element of every credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";
/// `YYYYMMDDTHHMMSSZ`, the ISO 8601 basic format of `x-amz-date`.
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// Error codes, as AWS names them in the `__type` of a JSON 1.1 error.
pub const MISSING_AUTHENTICATION_TOKEN: &str = "MissingAuthenticationTokenException";
pub const INCOMPLETE_SIGNATURE: &str = "IncompleteSignatureException";
pub const INVALID_SIGNATURE: &str = "InvalidSignatureException";
pub const UNRECOGNIZED_CLIENT: &str = "UnrecognizedClientException";

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";
const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
const NO_DATE: &str =
    "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.";

/// What the verifier needs of an HTTP request (the server builds it from hyper/axum parts).
///
/// Under HTTP/2 the authority is not a `host` header: the server adds
/// `("host", authority)` before verifying, as AWS does.
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// Raw path as received, e.g. `/`.
    pub path: &'a str,
    /// Raw query string without `?`, may be empty.
    pub query: &'a str,
    /// `(name as received, value)`; names compare case-insensitively; a repeated name is
    /// allowed, its values are joined with `,` in the order given.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if n.eq_ignore_ascii_case("x-amz-security-token") {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("RequestParts")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// An access key as the signer holds it.
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

impl fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.map(|_| "<redacted>"))
            .finish()
    }
}

/// Choices of [`sign_with`] that [`sign`] leaves at their defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SignOptions {
    /// Add (and sign) `x-amz-content-sha256` with the body's hash, as S3 requires.
    pub content_sha256_header: bool,
}

/// Who signed a request that verified, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub region: String,
    /// The service of the credential scope; not checked here (the server decides).
    pub service: String,
    /// The request's date (`x-amz-date`), unix seconds.
    pub signed_at: i64,
}

/// Why a request failed authentication, in AWS's terms: `code` is the JSON 1.1 error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
#[non_exhaustive]
pub struct AuthError {
    pub code: &'static str,
    pub message: String,
    pub status: u16,
}

impl AuthError {
    fn new(code: &'static str, message: impl Into<String>) -> AuthError {
        AuthError {
            code,
            message: message.into(),
            status: 400,
        }
    }
}

fn incomplete(message: impl Into<String>) -> AuthError {
    AuthError::new(INCOMPLETE_SIGNATURE, message)
}

fn invalid(message: impl Into<String>) -> AuthError {
    AuthError::new(INVALID_SIGNATURE, message)
}

/// Signs a request: returns the headers to add: `x-amz-date`, `authorization`,
/// `x-amz-security-token` if the credentials have a session token.
///
/// `parts.headers` are the request's headers before signing: they must include `host`
/// (and, for KMS, `content-type` and `x-amz-target`); all of them are signed, except any
/// `authorization`, `x-amz-date` or `x-amz-security-token` among them, which the returned
/// headers replace. If they include `x-amz-content-sha256`, its value is the payload hash.
pub fn sign(
    parts: &RequestParts,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) -> Vec<(String, String)> {
    sign_with(parts, creds, region, service, now, SignOptions::default())
}

/// [`sign`] with options: with `content_sha256_header` it also returns
/// `("x-amz-content-sha256", hex(sha256(body)))`, signed.
pub fn sign_with(
    parts: &RequestParts,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
    options: SignOptions,
) -> Vec<(String, String)> {
    let amz_date = format_amz_date(unix_seconds(now));
    let mut added: Vec<(String, String)> = vec![("x-amz-date".to_owned(), amz_date.clone())];
    if options.content_sha256_header {
        added.push(("x-amz-content-sha256".to_owned(), hex_sha256(parts.body)));
    }
    if let Some(token) = creds.session_token {
        added.push(("x-amz-security-token".to_owned(), token.to_owned()));
    }

    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .filter(|(n, _)| n != "authorization" && !added.iter().any(|(a, _)| a == n))
        .collect();
    headers.extend(added.iter().cloned());
    let mut names: Vec<String> = headers.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    let signed_headers = names.join(";");

    let payload_hash =
        header_value(&headers, "x-amz-content-sha256").unwrap_or_else(|| hex_sha256(parts.body));
    let canonical = canonical_request(
        parts.method,
        &canonical_uri(parts.path),
        &canonical_query(&parse_query(parts.query), None),
        &canonical_headers(&headers, &names),
        &signed_headers,
        &payload_hash,
    );
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/{SCOPE_TERMINATOR}");
    let key = signing_key(creds.secret_access_key, date, region, service);
    let signature = hex(&hmac_sha256(
        &key[..],
        string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
    )[..]);

    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    );
    let mut out = vec![("authorization".to_owned(), authorization)];
    out.extend(added);
    out
}

/// Presigns a request (query-string authentication): returns the query string to send,
/// the request's own query followed by the `X-Amz-*` parameters, valid for `expires`
/// seconds from `now`. Every header of `parts` is signed; the payload hash is the body's.
pub fn presign(
    parts: &RequestParts,
    creds: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
    expires: i64,
) -> String {
    let amz_date = format_amz_date(unix_seconds(now));
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/{SCOPE_TERMINATOR}");
    let mut names: Vec<String> = parts
        .headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let signed_headers = names.join(";");
    let mut query = parts.query.to_owned();
    for (name, value) in [
        ("X-Amz-Algorithm", ALGORITHM.to_owned()),
        (
            "X-Amz-Credential",
            format!("{}/{scope}", creds.access_key_id),
        ),
        ("X-Amz-Date", amz_date.clone()),
        ("X-Amz-Expires", expires.to_string()),
        ("X-Amz-SignedHeaders", signed_headers.clone()),
    ] {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("{name}={}", uri_encode(value.as_bytes())));
    }
    let canonical = canonical_request(
        parts.method,
        &canonical_uri(parts.path),
        &canonical_query(&parse_query(&query), None),
        &canonical_headers(parts.headers, &names),
        &signed_headers,
        &hex_sha256(parts.body),
    );
    let key = signing_key(creds.secret_access_key, date, region, service);
    let signature = hex(&hmac_sha256(
        &key[..],
        string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
    )[..]);
    format!("{query}&X-Amz-Signature={signature}")
}

/// Verifies a signed request. `secret_for(access_key_id)` returns the key's secret (`None`:
/// unknown key); `now` is unix seconds. The request's date may be up to
/// [`MAX_CLOCK_SKEW_SECS`] away from `now`, either way.
///
/// Besides the signature itself: `host` and the date header must be signed, and so must
/// `x-amz-target` when present (it chooses the operation); an `x-amz-content-sha256` header
/// must be the body's hash; session tokens are refused (the server issues none).
pub fn verify(
    parts: &RequestParts,
    now: i64,
    secret_for: &mut dyn FnMut(&str) -> Option<Zeroizing<String>>,
) -> Result<Verified, AuthError> {
    verify_with(parts, now, &Rules::default(), secret_for)
}

/// What a service demands of a signature beyond the algorithm itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules<'a> {
    /// The service the credential scope must name (`kms` for the KMS server); `None`
    /// accepts any (the published test vectors use `service`).
    pub service: Option<&'a str>,
    /// The longest a presigned request lives after its `X-Amz-Date`, whatever its
    /// `X-Amz-Expires` says; a presigned request must also be no older than this.
    pub max_presigned_age_secs: i64,
}

impl Default for Rules<'_> {
    fn default() -> Self {
        Rules {
            service: None,
            max_presigned_age_secs: MAX_PRESIGNED_EXPIRES_SECS,
        }
    }
}

impl Rules<'_> {
    /// The KMS server's: scoped to `kms`, and a presigned URL lives no longer than the
    /// 5 minutes a signed header does (and no longer than its `X-Amz-Expires`).
    pub const KMS: Rules<'static> = Rules {
        service: Some("kms"),
        max_presigned_age_secs: MAX_CLOCK_SKEW_SECS,
    };
}

/// [`verify`] under a service's [`Rules`].
pub fn verify_with(
    parts: &RequestParts,
    now: i64,
    rules: &Rules,
    secret_for: &mut dyn FnMut(&str) -> Option<Zeroizing<String>>,
) -> Result<Verified, AuthError> {
    let query = parse_query(parts.query);
    let auth = find_authentication(parts, &query)?;
    let scope = parse_scope(&auth.credential)?;
    if let Some(service) = rules.service
        && scope.service != service
    {
        return Err(invalid(format!(
            "Credential should be scoped to correct service: '{service}'. "
        )));
    }
    let signed_names = parse_signed_headers(&auth.signed_headers)?;
    let is_signed = |name: &str| signed_names.iter().any(|n| n.eq_ignore_ascii_case(name));

    if !is_signed("host") || header_value(parts.headers, "host").is_none_or(|h| h.is_empty()) {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    let amz_date = match &auth.mode {
        Mode::Query { amz_date, .. } => amz_date.clone(),
        Mode::Header => header_date(parts.headers, &is_signed)?,
    };
    let signed_at = parse_amz_date(&amz_date).ok_or_else(|| {
        incomplete(format!(
            "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z', got '{}'.",
            shorten(&amz_date)
        ))
    })?;
    if header_value(parts.headers, "x-amz-target").is_some() && !is_signed("x-amz-target") {
        return Err(incomplete(
            "Header 'x-amz-target' must be signed: it is missing from SignedHeaders.",
        ));
    }
    if scope.date != &amz_date[..8] {
        return Err(invalid(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{amz_date}'.",
            scope.date,
            &amz_date[..8]
        )));
    }
    check_time(
        &amz_date,
        signed_at,
        now,
        &auth.mode,
        rules.max_presigned_age_secs,
    )?;

    let token_in_query = query.iter().any(|(n, _)| n == b"X-Amz-Security-Token");
    if token_in_query || header_value(parts.headers, "x-amz-security-token").is_some() {
        return Err(AuthError::new(UNRECOGNIZED_CLIENT, INVALID_TOKEN));
    }
    let Some(secret) = secret_for(scope.access_key_id) else {
        return Err(AuthError::new(UNRECOGNIZED_CLIENT, INVALID_TOKEN));
    };

    let body_hash = hex_sha256(parts.body);
    let declared_hash = header_value(parts.headers, "x-amz-content-sha256");
    let canonical = canonical_request(
        parts.method,
        &canonical_uri(parts.path),
        &canonical_query(&query, auth.mode.signature_param()),
        &canonical_headers(parts.headers, &signed_names),
        &auth.signed_headers,
        declared_hash.as_deref().unwrap_or(&body_hash),
    );
    let scope_text = format!(
        "{}/{}/{}/{SCOPE_TERMINATOR}",
        scope.date, scope.region, scope.service
    );
    let key = signing_key(&secret, scope.date, scope.region, scope.service);
    let mut mac = new_hmac(&key[..]);
    mac.update(string_to_sign(&amz_date, &scope_text, &canonical).as_bytes());
    let given = unhex(&auth.signature).ok_or_else(|| invalid(SIGNATURE_MISMATCH))?;
    // verify_slice compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| invalid(SIGNATURE_MISMATCH))?;

    // A signed x-amz-content-sha256 stands for the body only if it is the body's hash: this
    // also refuses UNSIGNED-PAYLOAD, since a KMS request's body is its parameters.
    if declared_hash.is_some_and(|declared| declared != body_hash) {
        return Err(invalid(
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        ));
    }
    Ok(Verified {
        access_key_id: scope.access_key_id.to_owned(),
        region: scope.region.to_owned(),
        service: scope.service.to_owned(),
        signed_at,
    })
}

/// The access key id and region a request claims in its credential scope, read without
/// verifying anything: what the audit record of a refused request names. Each is cut to
/// [`MAX_CLAIMED_CHARS`] characters; `None` where the request does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    pub access_key_id: Option<String>,
    pub region: Option<String>,
}

/// AWS's longest access key id.
pub const MAX_CLAIMED_CHARS: usize = 128;

pub fn claimed(parts: &RequestParts) -> Claimed {
    let from_header = parts
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| {
            let start = v.find("Credential=")? + "Credential=".len();
            let rest = &v[start..];
            let end = rest
                .find(|c: char| c == ',' || c.is_ascii_whitespace())
                .unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        });
    let credential = from_header.or_else(|| {
        parse_query(parts.query)
            .into_iter()
            .find(|(n, _)| n == b"X-Amz-Credential")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
    });
    let Some(credential) = credential else {
        return Claimed::default();
    };
    let mut fields = credential.split('/');
    let cut = |s: Option<&str>| {
        s.filter(|s| !s.is_empty())
            .map(|s| s.chars().take(MAX_CLAIMED_CHARS).collect::<String>())
    };
    let access_key_id = cut(fields.next());
    let region = cut(fields.nth(1));
    Claimed {
        access_key_id,
        region,
    }
}

/// The request's date from `x-amz-date`, else `Date`, which must be signed; in the basic
/// format, which is what the string to sign carries whatever the header's format.
fn header_date(
    headers: &[(String, String)],
    is_signed: &dyn Fn(&str) -> bool,
) -> Result<String, AuthError> {
    let (name, value) = match header_value(headers, "x-amz-date") {
        Some(value) => ("x-amz-date", value),
        None => match header_value(headers, "date") {
            Some(value) => ("date", value),
            None => return Err(incomplete(NO_DATE)),
        },
    };
    if !is_signed(name) {
        return Err(incomplete(format!(
            "Header '{name}' must be signed: it is missing from SignedHeaders."
        )));
    }
    if name == "x-amz-date" {
        return Ok(value);
    }
    parse_http_date(&value).map(format_amz_date).ok_or_else(|| {
        incomplete(format!(
            "Date header must be an HTTP date or YYYYMMDD'T'HHMMSS'Z', got '{}'.",
            shorten(&value)
        ))
    })
}

/// Where the signature and its parameters came from.
enum Mode {
    Header,
    /// Presigned: the parameters are `X-Amz-*` query parameters.
    Query {
        amz_date: String,
        expires: i64,
    },
}

impl Mode {
    /// The query parameter left out of the canonical query string.
    fn signature_param(&self) -> Option<&'static [u8]> {
        match self {
            Mode::Header => None,
            Mode::Query { .. } => Some(b"X-Amz-Signature"),
        }
    }
}

struct Authentication {
    mode: Mode,
    credential: String,
    signed_headers: String,
    signature: String,
}

fn find_authentication(
    parts: &RequestParts,
    query: &[(Vec<u8>, Vec<u8>)],
) -> Result<Authentication, AuthError> {
    let mut authorization = parts
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    let header = authorization.next();
    if authorization.next().is_some() {
        return Err(incomplete("Only one Authorization header may be given."));
    }
    let presigned = query.iter().any(|(n, _)| n == b"X-Amz-Algorithm");
    match (header, presigned) {
        (None, false) => Err(AuthError::new(
            MISSING_AUTHENTICATION_TOKEN,
            "Request is missing Authentication Token",
        )),
        (Some(_), true) => Err(incomplete(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the \
             Authorization header should be specified.",
        )),
        (Some((_, value)), false) => parse_authorization(value),
        (None, true) => parse_presigned(query),
    }
}

/// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`
fn parse_authorization(value: &str) -> Result<Authentication, AuthError> {
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported Authorization algorithm '{}': only {ALGORITHM} is accepted.",
            shorten(algorithm)
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(incomplete(format!(
                "Authorization header parameter '{}' is not of the form Name=value.",
                shorten(item)
            )));
        };
        let slot = match name {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed_headers,
            "Signature" => &mut signature,
            _ => {
                return Err(incomplete(format!(
                    "Authorization header has an unknown parameter '{}'.",
                    shorten(name)
                )));
            }
        };
        if slot.replace(value.to_owned()).is_some() {
            return Err(incomplete(format!(
                "Authorization header has the '{name}' parameter twice."
            )));
        }
    }
    let missing: Vec<String> = [
        ("Credential", credential.is_none()),
        ("Signature", signature.is_none()),
        ("SignedHeaders", signed_headers.is_none()),
    ]
    .iter()
    .filter(|(_, absent)| *absent)
    .map(|(name, _)| format!("Authorization header requires '{name}' parameter."))
    .collect();
    match (credential, signed_headers, signature) {
        (Some(credential), Some(signed_headers), Some(signature)) => Ok(Authentication {
            mode: Mode::Header,
            credential,
            signed_headers,
            signature,
        }),
        _ => Err(incomplete(missing.join(" "))),
    }
}

/// `?X-Amz-Algorithm=…&X-Amz-Credential=…&X-Amz-Date=…&X-Amz-Expires=…`
/// `&X-Amz-SignedHeaders=…&X-Amz-Signature=…` (any order, among the request's own).
fn parse_presigned(query: &[(Vec<u8>, Vec<u8>)]) -> Result<Authentication, AuthError> {
    let param = |name: &str| -> Result<String, AuthError> {
        let mut values = query.iter().filter(|(n, _)| n == name.as_bytes());
        let value = values.next().ok_or_else(|| {
            incomplete(format!(
                "Query-string authentication requires the '{name}' parameter."
            ))
        })?;
        if values.next().is_some() {
            return Err(incomplete(format!(
                "Query-string authentication allows one '{name}' parameter."
            )));
        }
        String::from_utf8(value.1.clone())
            .map_err(|_| incomplete(format!("Query parameter '{name}' is not UTF-8.")))
    };
    let algorithm = param("X-Amz-Algorithm")?;
    if algorithm != ALGORITHM {
        return Err(incomplete(format!(
            "Unsupported X-Amz-Algorithm '{}': only {ALGORITHM} is accepted.",
            shorten(&algorithm)
        )));
    }
    let expires_text = param("X-Amz-Expires")?;
    let expires = expires_text
        .parse::<i64>()
        .ok()
        .filter(|e| (1..=MAX_PRESIGNED_EXPIRES_SECS).contains(e))
        .ok_or_else(|| {
            incomplete(format!(
                "X-Amz-Expires must be a number of seconds from 1 to \
                 {MAX_PRESIGNED_EXPIRES_SECS}, got '{}'.",
                shorten(&expires_text)
            ))
        })?;
    Ok(Authentication {
        credential: param("X-Amz-Credential")?,
        signed_headers: param("X-Amz-SignedHeaders")?,
        signature: param("X-Amz-Signature")?,
        mode: Mode::Query {
            amz_date: param("X-Amz-Date")?,
            expires,
        },
    })
}

/// `AKID/YYYYMMDD/region/service/aws4_request`
struct Scope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

fn parse_scope(credential: &str) -> Result<Scope<'_>, AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(incomplete(format!(
            "Credential must have the form <access key id>/<YYYYMMDD>/<region>/<service>/\
             {SCOPE_TERMINATOR}, got '{}'.",
            shorten(credential)
        )));
    };
    if access_key_id.is_empty() {
        return Err(incomplete("Credential must begin with an access key id."));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(incomplete(format!(
            "Credential should be scoped to a valid date (YYYYMMDD), not '{}'.",
            shorten(date)
        )));
    }
    if region.is_empty() {
        return Err(incomplete("Credential should be scoped to a valid region."));
    }
    if service.is_empty() {
        return Err(incomplete(
            "Credential should be scoped to a valid service.",
        ));
    }
    if terminator != SCOPE_TERMINATOR {
        return Err(incomplete(format!(
            "Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', not '{}'.",
            shorten(terminator)
        )));
    }
    Ok(Scope {
        access_key_id,
        date,
        region,
        service,
    })
}

fn parse_signed_headers(signed_headers: &str) -> Result<Vec<String>, AuthError> {
    let names: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(incomplete(format!(
            "SignedHeaders must be header names joined with ';', got '{}'.",
            shorten(signed_headers)
        )));
    }
    Ok(names)
}

/// The clock check: 5 minutes either way for a signed header; for a presigned request, not
/// in the future by more than that and not past `X-Amz-Expires`.
fn check_time(
    amz_date: &str,
    signed_at: i64,
    now: i64,
    mode: &Mode,
    max_presigned_age: i64,
) -> Result<(), AuthError> {
    let future_limit = now.saturating_add(MAX_CLOCK_SKEW_SECS);
    if signed_at > future_limit {
        return Err(invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format_amz_date(future_limit),
            format_amz_date(now)
        )));
    }
    match mode {
        Mode::Header => {
            let past_limit = now.saturating_sub(MAX_CLOCK_SKEW_SECS);
            if signed_at < past_limit {
                return Err(invalid(format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                    format_amz_date(past_limit),
                    format_amz_date(now)
                )));
            }
        }
        Mode::Query { expires, .. } => {
            if now > signed_at.saturating_add(*expires) {
                return Err(invalid(format!(
                    "Request has expired: signed at {amz_date} for {expires} seconds, now {}.",
                    format_amz_date(now)
                )));
            }
            let past_limit = now.saturating_sub(max_presigned_age);
            if signed_at < past_limit {
                return Err(invalid(format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - {} s): a \
                     presigned request lives at most {max_presigned_age} seconds here.",
                    format_amz_date(past_limit),
                    format_amz_date(now),
                    max_presigned_age
                )));
            }
        }
    }
    Ok(())
}

fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!("{method}\n{uri}\n{query}\n{headers}\n{signed_headers}\n{payload_hash}")
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

/// Each `/`-separated segment decoded, then encoded once with the unreserved set; `/` for
/// an empty path.
fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| uri_encode(&percent_decode(segment)))
        .collect::<Vec<_>>()
        .join("/")
}

/// `name=value` pairs, percent-decoded (`+` stays a `+`), in the order given.
fn parse_query(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

/// Encoded pairs sorted by name then value, joined with `&`; `skip` is left out (the
/// signature of a presigned request).
fn canonical_query(pairs: &[(Vec<u8>, Vec<u8>)], skip: Option<&[u8]>) -> String {
    let mut encoded: Vec<(String, String)> = pairs
        .iter()
        .filter(|(name, _)| Some(name.as_slice()) != skip)
        .map(|(name, value)| (uri_encode(name), uri_encode(value)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `name:value\n` for each of `names` (lowercased), in the order given.
fn canonical_headers(headers: &[(String, String)], names: &[String]) -> String {
    names
        .iter()
        .map(|name| {
            let value = header_value(headers, name).unwrap_or_default();
            format!("{}:{value}\n", name.to_ascii_lowercase())
        })
        .collect()
}

/// The values of every header called `name` (any case), each trimmed with inner runs of
/// whitespace made one space, joined with `,`; `None` if there is none.
fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn uri_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `%XY` becomes its byte; a `%` not followed by two hex digits stays itself.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&hi), Some(&lo)) => hex_digit(hi).zip(hex_digit(lo)),
            _ => None,
        };
        match escaped {
            Some((hi, lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase hex only, as AWS writes signatures.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let lower = |b: u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) || !bytes.iter().all(|&b| lower(b)) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
        .collect()
}

fn hex_sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data)[..])
}

fn new_hmac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = new_hmac(key);
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Zeroizing<[u8; 32]> {
    // Sized up front so that no reallocation leaves a copy of the secret behind.
    let mut k_secret = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac_sha256(&k_secret, date.as_bytes());
    let k_region = hmac_sha256(&k_date[..], region.as_bytes());
    let k_service = hmac_sha256(&k_region[..], service.as_bytes());
    hmac_sha256(&k_service[..], SCOPE_TERMINATOR.as_bytes())
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `YYYYMMDDTHHMMSSZ`; times outside years 1970–9999 are clamped to them.
fn format_amz_date(unix: i64) -> String {
    let max = jiff::Timestamp::MAX.as_second();
    jiff::Timestamp::from_second(unix.clamp(0, max))
        .map(|t| t.strftime(AMZ_DATE_FORMAT).to_string())
        .unwrap_or_else(|_| "99991231T235959Z".to_owned())
}

/// `YYYYMMDDTHHMMSSZ` to unix seconds; `None` unless exactly that shape and a real time.
fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        b.get(range)?.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let small = |v: i64| i8::try_from(v).ok();
    let datetime = jiff::civil::DateTime::new(
        i16::try_from(digits(0..4)?).ok()?,
        small(digits(4..6)?)?,
        small(digits(6..8)?)?,
        small(digits(9..11)?)?,
        small(digits(11..13)?)?,
        small(digits(13..15)?)?,
        0,
    )
    .ok()?;
    let zoned = datetime.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_second())
}

/// A `Date` header: the basic format, or an HTTP date (`Sun, 30 Aug 2015 12:36:00 GMT`).
fn parse_http_date(text: &str) -> Option<i64> {
    parse_amz_date(text).or_else(|| {
        jiff::fmt::rfc2822::parse(text)
            .ok()
            .map(|z| z.timestamp().as_second())
    })
}

/// Client-supplied text quoted in an error message, cut to a readable length.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX_CHARS).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// The example credentials of the AWS documentation and of aws-sig-v4-test-suite.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 20150830T123600Z, the date of every published example.
    const EXAMPLE_TIME: i64 = 1_440_938_160;
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn request<'a>(
        method: &'a str,
        path: &'a str,
        query: &'a str,
        headers: &'a [(String, String)],
        body: &'a [u8],
    ) -> RequestParts<'a> {
        RequestParts {
            method,
            path,
            query,
            headers,
            body,
        }
    }

    fn example_secret(id: &str) -> Option<Zeroizing<String>> {
        (id == AKID).then(|| Zeroizing::new(SECRET.to_owned()))
    }

    fn example_creds() -> Credentials<'static> {
        Credentials {
            access_key_id: AKID,
            secret_access_key: SECRET,
            session_token: None,
        }
    }

    fn at(unix: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap())
    }

    fn authorization(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders={signed_headers}, Signature={signature}"
        )
    }

    #[test]
    fn amz_dates_round_trip() {
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(EXAMPLE_TIME));
        assert_eq!(format_amz_date(EXAMPLE_TIME), "20150830T123600Z");
        assert_eq!(parse_amz_date("20240229T000000Z"), Some(1_709_164_800));
        for bad in [
            "",
            "20150830T123600",
            "20150830 123600Z",
            "20150230T123600Z",
            "20151330T123600Z",
            "20150830T243600Z",
            "2015083OT123600Z",
            "+0150830T123600Z",
            "20150830T12360ሴ",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        assert_eq!(
            parse_http_date("Sun, 30 Aug 2015 12:36:00 GMT"),
            Some(EXAMPLE_TIME)
        );
        assert_eq!(format_amz_date(-5), "19700101T000000Z");
    }

    /// "Examples of the complete Signature Version 4 signing process" (IAM ListUsers).
    #[test]
    fn aws_documentation_iam_list_users() {
        let hs = headers(&[
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let query = "Action=ListUsers&Version=2010-05-08";
        let names: Vec<String> = ["content-type", "host", "x-amz-date"]
            .map(String::from)
            .into();
        let canonical = canonical_request(
            "GET",
            &canonical_uri("/"),
            &canonical_query(&parse_query(query), None),
            &canonical_headers(&hs, &names),
            "content-type;host;x-amz-date",
            &hex_sha256(b""),
        );
        assert_eq!(
            canonical,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\n\
             host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex_sha256(canonical.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let expected = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/\
            aws4_request, SignedHeaders=content-type;host;x-amz-date, \
            Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";

        // sign: the given x-amz-date is replaced by ours, which is the same.
        let added = sign(
            &request("GET", "/", query, &hs, b""),
            &example_creds(),
            "us-east-1",
            "iam",
            at(EXAMPLE_TIME),
        );
        assert_eq!(
            added,
            headers(&[
                ("authorization", expected),
                ("x-amz-date", "20150830T123600Z")
            ])
        );

        // verify: the same request with the header.
        let mut signed = hs.clone();
        signed.push(("Authorization".to_owned(), expected.to_owned()));
        let verified = verify(
            &request("GET", "/", query, &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap();
        assert_eq!(
            verified,
            Verified {
                access_key_id: AKID.to_owned(),
                region: "us-east-1".to_owned(),
                service: "iam".to_owned(),
                signed_at: EXAMPLE_TIME,
            }
        );
    }

    /// Cases of aws-sig-v4-test-suite (service "service", region us-east-1, 20150830T123600Z):
    /// each verifies as published, and `sign` gives the published header from the request
    /// before signing.
    #[test]
    fn aws_sig_v4_test_suite_header_vectors() {
        struct Case {
            name: &'static str,
            method: &'static str,
            path: &'static str,
            query: &'static str,
            extra: &'static [(&'static str, &'static str)],
            signed_headers: &'static str,
            signature: &'static str,
        }
        let cases = [
            Case {
                name: "get-vanilla",
                method: "GET",
                path: "/",
                query: "",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            },
            Case {
                name: "post-vanilla",
                method: "POST",
                path: "/",
                query: "",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
            },
            Case {
                name: "get-vanilla-query-order-key-case",
                method: "GET",
                path: "/",
                query: "Param2=value2&Param1=value1",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
            },
            Case {
                name: "get-vanilla-query-unreserved",
                method: "GET",
                path: "/",
                query: "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz=\
                        -._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197",
            },
            Case {
                name: "get-vanilla-utf8-query",
                method: "GET",
                path: "/",
                query: "ሴ=bar",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
            },
            Case {
                name: "get-utf8",
                method: "GET",
                path: "/ሴ",
                query: "",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85",
            },
            Case {
                name: "get-space (unnormalized)",
                method: "GET",
                path: "/example space/",
                query: "",
                extra: &[],
                signed_headers: "host;x-amz-date",
                signature: "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
            },
            Case {
                name: "get-header-key-duplicate",
                method: "GET",
                path: "/",
                query: "",
                extra: &[
                    ("My-Header1", "value2"),
                    ("My-Header1", "value2"),
                    ("My-Header1", "value1"),
                ],
                signed_headers: "host;my-header1;x-amz-date",
                signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
            },
            Case {
                name: "get-header-value-trim",
                method: "GET",
                path: "/",
                query: "",
                extra: &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")],
                signed_headers: "host;my-header1;my-header2;x-amz-date",
                signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
            },
        ];
        for case in cases {
            let mut unsigned = headers(&[("Host", "example.amazonaws.com")]);
            unsigned.extend(headers(case.extra));
            let expected = authorization(case.signed_headers, case.signature);

            let added = sign(
                &request(case.method, case.path, case.query, &unsigned, b""),
                &example_creds(),
                "us-east-1",
                "service",
                at(EXAMPLE_TIME),
            );
            assert_eq!(
                added[0],
                ("authorization".to_owned(), expected.clone()),
                "{}",
                case.name
            );

            let mut signed = unsigned.clone();
            signed.push(("X-Amz-Date".to_owned(), "20150830T123600Z".to_owned()));
            signed.push(("Authorization".to_owned(), expected));
            let verified = verify(
                &request(case.method, case.path, case.query, &signed, b""),
                EXAMPLE_TIME,
                &mut example_secret,
            );
            assert_eq!(
                verified.map(|v| v.service),
                Ok("service".to_owned()),
                "{}",
                case.name
            );
        }
    }

    /// get-vanilla-with-session-token: `sign` adds and signs the token; the server, which
    /// issues no tokens, refuses it.
    #[test]
    fn aws_sig_v4_test_suite_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let unsigned = headers(&[("Host", "example.amazonaws.com")]);
        let creds = Credentials {
            session_token: Some(token),
            ..example_creds()
        };
        let added = sign(
            &request("GET", "/", "", &unsigned, b""),
            &creds,
            "us-east-1",
            "service",
            at(EXAMPLE_TIME),
        );
        let expected = authorization(
            "host;x-amz-date;x-amz-security-token",
            "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8",
        );
        assert_eq!(
            added,
            headers(&[
                ("authorization", &expected),
                ("x-amz-date", "20150830T123600Z"),
                ("x-amz-security-token", token),
            ])
        );
        let mut signed = unsigned.clone();
        signed.extend(added);
        let err = verify(
            &request("GET", "/", "", &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err();
        assert_eq!(err.code, UNRECOGNIZED_CLIENT);
        assert_eq!(err.message, INVALID_TOKEN);
    }

    /// post-x-www-form-urlencoded, signed with x-amz-content-sha256 (aws-c-auth's variant).
    #[test]
    fn aws_sig_v4_test_suite_signed_body_header() {
        let body = b"Param1=value1";
        let unsigned = headers(&[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Host", "example.amazonaws.com"),
            ("Content-Length", "13"),
        ]);
        let added = sign_with(
            &request("POST", "/", "", &unsigned, body),
            &example_creds(),
            "us-east-1",
            "service",
            at(EXAMPLE_TIME),
            SignOptions {
                content_sha256_header: true,
            },
        );
        let expected = authorization(
            "content-length;content-type;host;x-amz-content-sha256;x-amz-date",
            "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b",
        );
        assert_eq!(
            added,
            headers(&[
                ("authorization", &expected),
                ("x-amz-date", "20150830T123600Z"),
                (
                    "x-amz-content-sha256",
                    "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
                ),
            ])
        );
        let mut signed = unsigned.clone();
        signed.extend(added);
        let ok = verify(
            &request("POST", "/", "", &signed, body),
            EXAMPLE_TIME,
            &mut example_secret,
        );
        assert!(ok.is_ok(), "{ok:?}");
        // The header is signed, so the signature holds for another body: the hash check
        // is what refuses it.
        let err = verify(
            &request("POST", "/", "", &signed, b"Param1=value2"),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert!(err.message.contains("x-amz-content-sha256"), "{err}");
    }

    /// get-vanilla-query-order-key-case, presigned (query-signed-request).
    #[test]
    fn aws_sig_v4_test_suite_presigned() {
        let query = "Param2=value2&Param1=value1&X-Amz-Algorithm=AWS4-HMAC-SHA256\
            &X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request\
            &X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600\
            &X-Amz-Signature=86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5";
        let hs = headers(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let parts = request("GET", "/", query, &hs, b"");
        let verified = verify(&parts, EXAMPLE_TIME + 3599, &mut example_secret).unwrap();
        assert_eq!(verified.signed_at, EXAMPLE_TIME);
        // Presigned requests live for X-Amz-Expires, not for the 5 minutes of skew.
        let err = verify(&parts, EXAMPLE_TIME + 3601, &mut example_secret).unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert!(err.message.starts_with("Request has expired"), "{err}");
        let tampered = query.replace("value1", "value3");
        let err = verify(
            &request("GET", "/", &tampered, &hs, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err();
        assert_eq!(err.message, SIGNATURE_MISMATCH);
        // Both mechanisms at once is refused.
        let mut both = hs.clone();
        both.push((
            "Authorization".to_owned(),
            authorization("host;x-amz-date", &"0".repeat(64)),
        ));
        let err = verify(
            &request("GET", "/", query, &both, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err();
        assert_eq!(err.code, INCOMPLETE_SIGNATURE);
    }

    /// A `Date` header (HTTP date) in place of `x-amz-date`: the string to sign has the
    /// date in the basic format.
    #[test]
    fn date_header_stands_for_x_amz_date() {
        let hs = headers(&[
            ("Date", "Sun, 30 Aug 2015 12:36:00 GMT"),
            ("Host", "example.amazonaws.com"),
        ]);
        let canonical = canonical_request(
            "GET",
            "/",
            "",
            "date:Sun, 30 Aug 2015 12:36:00 GMT\nhost:example.amazonaws.com\n",
            "date;host",
            EMPTY_SHA256,
        );
        let key = signing_key(SECRET, "20150830", "us-east-1", "service");
        let to_sign = string_to_sign(
            "20150830T123600Z",
            "20150830/us-east-1/service/aws4_request",
            &canonical,
        );
        let signature = hex(&hmac_sha256(&key[..], to_sign.as_bytes())[..]);
        let mut signed = hs.clone();
        signed.push((
            "Authorization".to_owned(),
            authorization("date;host", &signature),
        ));
        let verified = verify(
            &request("GET", "/", "", &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap();
        assert_eq!(verified.signed_at, EXAMPLE_TIME);
    }

    // ---- KMS-shaped requests ------------------------------------------------------------

    const KMS_KEY_ID: &str = "AKIACRYPTVOLTEST0001";
    const KMS_SECRET: &str = "cryptvol/Test+Secret/0123456789abcdefABCDEF";
    const KMS_BODY: &[u8] = br#"{"CiphertextBlob":"AQIDBAUGBwgJ","KeyId":"alias/vol"}"#;

    fn kms_time() -> i64 {
        parse_amz_date("20261129T120000Z").unwrap()
    }

    fn kms_secret(id: &str) -> Option<Zeroizing<String>> {
        (id == KMS_KEY_ID).then(|| Zeroizing::new(KMS_SECRET.to_owned()))
    }

    /// A Decrypt request signed by `sign` at 20261129T120000Z: its headers after signing.
    fn kms_signed_headers() -> Vec<(String, String)> {
        signed_headers_for("kms")
    }

    /// The same Decrypt request with the credential scoped to `service`.
    fn signed_headers_for(service: &str) -> Vec<(String, String)> {
        let mut hs = headers(&[
            ("Host", "127.0.0.1:4599"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "TrentService.Decrypt"),
        ]);
        let creds = Credentials {
            access_key_id: KMS_KEY_ID,
            secret_access_key: KMS_SECRET,
            session_token: None,
        };
        let added = sign(
            &request("POST", "/", "", &hs, KMS_BODY),
            &creds,
            "eu-west-1",
            service,
            at(kms_time()),
        );
        hs.extend(added);
        hs
    }

    fn verify_kms(
        hs: &[(String, String)],
        path: &str,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, AuthError> {
        verify(&request("POST", path, "", hs, body), now, &mut kms_secret)
    }

    fn set_header(hs: &mut [(String, String)], name: &str, value: &str) {
        for (n, v) in hs.iter_mut() {
            if n.eq_ignore_ascii_case(name) {
                *v = value.to_owned();
            }
        }
    }

    fn authorization_of(hs: &[(String, String)]) -> String {
        header_value(hs, "authorization").unwrap()
    }

    #[test]
    fn kms_request_signed_by_sign_verifies() {
        let hs = kms_signed_headers();
        assert_eq!(
            hs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            [
                "Host",
                "Content-Type",
                "X-Amz-Target",
                "authorization",
                "x-amz-date"
            ]
        );
        assert!(authorization_of(&hs).starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIACRYPTVOLTEST0001/20261129/eu-west-1/kms/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature="
        ));
        assert_eq!(header_value(&hs, "x-amz-date").unwrap(), "20261129T120000Z");
        let verified = verify_kms(&hs, "/", KMS_BODY, kms_time()).unwrap();
        assert_eq!(
            verified,
            Verified {
                access_key_id: KMS_KEY_ID.to_owned(),
                region: "eu-west-1".to_owned(),
                service: "kms".to_owned(),
                signed_at: kms_time(),
            }
        );
        // Four minutes of skew either way pass, and so do exactly five.
        for skew in [-300, -240, 240, 300] {
            assert!(
                verify_kms(&hs, "/", KMS_BODY, kms_time() + skew).is_ok(),
                "{skew}"
            );
        }
    }

    #[test]
    fn kms_request_tampering_is_refused() {
        let hs = kms_signed_headers();
        let mismatch = |r: Result<Verified, AuthError>| {
            let err = r.unwrap_err();
            assert_eq!(err.code, INVALID_SIGNATURE);
            assert_eq!(err.message, SIGNATURE_MISMATCH);
            assert_eq!(err.status, 400);
        };
        // Wrong secret.
        mismatch(verify(
            &request("POST", "/", "", &hs, KMS_BODY),
            kms_time(),
            &mut |_: &str| Some(Zeroizing::new("not-the-secret".to_owned())),
        ));
        // Body.
        mismatch(verify_kms(
            &hs,
            "/",
            br#"{"CiphertextBlob":"AQIDBAUGBwgK","KeyId":"alias/vol"}"#,
            kms_time(),
        ));
        // Operation.
        let mut other_target = hs.clone();
        set_header(&mut other_target, "x-amz-target", "TrentService.Encrypt");
        mismatch(verify_kms(&other_target, "/", KMS_BODY, kms_time()));
        // Path, method, query.
        mismatch(verify_kms(&hs, "/other", KMS_BODY, kms_time()));
        mismatch(verify(
            &request("PUT", "/", "", &hs, KMS_BODY),
            kms_time(),
            &mut kms_secret,
        ));
        mismatch(verify(
            &request("POST", "/", "a=b", &hs, KMS_BODY),
            kms_time(),
            &mut kms_secret,
        ));
        // A signed header's value, and the signature itself.
        let mut other_host = hs.clone();
        set_header(&mut other_host, "host", "127.0.0.1:4600");
        mismatch(verify_kms(&other_host, "/", KMS_BODY, kms_time()));
        let auth = authorization_of(&hs);
        let mut flipped = hs.clone();
        let last = if auth.ends_with('0') { "1" } else { "0" };
        set_header(
            &mut flipped,
            "authorization",
            &format!("{}{last}", &auth[..auth.len() - 1]),
        );
        mismatch(verify_kms(&flipped, "/", KMS_BODY, kms_time()));
        // Uppercase hex is not how AWS writes signatures.
        let mut upper = hs.clone();
        let sig_at = auth.find("Signature=").unwrap() + "Signature=".len();
        set_header(
            &mut upper,
            "authorization",
            &format!("{}{}", &auth[..sig_at], auth[sig_at..].to_ascii_uppercase()),
        );
        mismatch(verify_kms(&upper, "/", KMS_BODY, kms_time()));
        // content-type dropped from SignedHeaders (its value still sent).
        let mut dropped = hs.clone();
        set_header(
            &mut dropped,
            "authorization",
            &auth.replace("SignedHeaders=content-type;", "SignedHeaders="),
        );
        mismatch(verify_kms(&dropped, "/", KMS_BODY, kms_time()));
    }

    #[test]
    fn kms_request_clock_skew_is_refused() {
        let hs = kms_signed_headers();
        let err = verify_kms(&hs, "/", KMS_BODY, kms_time() + 360).unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert_eq!(
            err.message,
            "Signature expired: 20261129T120000Z is now earlier than 20261129T120100Z \
             (20261129T120600Z - 5 min.)"
        );
        let err = verify_kms(&hs, "/", KMS_BODY, kms_time() - 360).unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert_eq!(
            err.message,
            "Signature not yet current: 20261129T120000Z is still later than 20261129T115900Z \
             (20261129T115400Z + 5 min.)"
        );
        // Clocks at the ends of i64 must not overflow.
        assert!(verify_kms(&hs, "/", KMS_BODY, i64::MAX).is_err());
        assert!(verify_kms(&hs, "/", KMS_BODY, i64::MIN).is_err());
    }

    #[test]
    fn kms_request_unknown_key_and_session_token_are_unrecognized() {
        let hs = kms_signed_headers();
        let err = verify(
            &request("POST", "/", "", &hs, KMS_BODY),
            kms_time(),
            &mut |_: &str| None,
        )
        .unwrap_err();
        assert_eq!(
            err,
            AuthError::new(
                UNRECOGNIZED_CLIENT,
                "The security token included in the request is invalid."
            )
        );
        let mut with_token = hs.clone();
        with_token.push((
            "X-Amz-Security-Token".to_owned(),
            "FwoGZXIvYXdzE".to_owned(),
        ));
        let err = verify_kms(&with_token, "/", KMS_BODY, kms_time()).unwrap_err();
        assert_eq!(err.code, UNRECOGNIZED_CLIENT);
    }

    #[test]
    fn kms_request_required_signed_headers() {
        let hs = kms_signed_headers();
        let auth = authorization_of(&hs);
        let without = |from: &str, to: &str| {
            let mut changed = hs.clone();
            set_header(&mut changed, "authorization", &auth.replace(from, to));
            verify_kms(&changed, "/", KMS_BODY, kms_time()).unwrap_err()
        };
        let err = without(";host;", ";");
        assert_eq!(err.code, INCOMPLETE_SIGNATURE);
        assert_eq!(
            err.message,
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization."
        );
        let err = without(";x-amz-date;", ";");
        assert_eq!(err.code, INCOMPLETE_SIGNATURE);
        assert!(err.message.contains("'x-amz-date' must be signed"), "{err}");
        let err = without(";x-amz-target,", ",");
        assert_eq!(err.code, INCOMPLETE_SIGNATURE);
        assert!(
            err.message.contains("'x-amz-target' must be signed"),
            "{err}"
        );

        // No date header at all.
        let no_date: Vec<_> = hs
            .iter()
            .filter(|(n, _)| n != "x-amz-date")
            .cloned()
            .collect();
        let err = verify_kms(&no_date, "/", KMS_BODY, kms_time()).unwrap_err();
        assert_eq!(err, incomplete(NO_DATE));
    }

    #[test]
    fn kms_rules_refuse_a_scope_for_another_service() {
        let hs = kms_signed_headers();
        let under_kms = |hs: &[(String, String)]| {
            verify_with(
                &request("POST", "/", "", hs, KMS_BODY),
                kms_time(),
                &Rules::KMS,
                &mut kms_secret,
            )
        };
        assert_eq!(under_kms(&hs).unwrap().service, "kms");
        // The same request signed for S3: a valid signature, for the wrong service.
        let for_s3 = signed_headers_for("s3");
        assert_eq!(
            verify_kms(&for_s3, "/", KMS_BODY, kms_time())
                .unwrap()
                .service,
            "s3"
        );
        let err = under_kms(&for_s3).unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert_eq!(err.status, 400);
        assert_eq!(
            err.message,
            "Credential should be scoped to correct service: 'kms'. "
        );
    }

    /// A presigned KMS request (only `host` signed) as of `signed_at`, for `expires` s.
    fn presigned_query(service: &str, signed_at: i64, expires: i64) -> String {
        let date = format_amz_date(signed_at);
        let scope = format!("{}/eu-west-1/{service}/aws4_request", &date[..8]);
        let mut query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={date}\
             &X-Amz-Expires={expires}&X-Amz-SignedHeaders=host",
            uri_encode(format!("{KMS_KEY_ID}/{scope}").as_bytes())
        );
        let canonical = canonical_request(
            "POST",
            "/",
            &canonical_query(&parse_query(&query), None),
            &canonical_headers(&presigned_headers(), &["host".to_owned()]),
            "host",
            &hex_sha256(KMS_BODY),
        );
        let key = signing_key(KMS_SECRET, &date[..8], "eu-west-1", service);
        let signature = hex(&hmac_sha256(
            &key[..],
            string_to_sign(&date, &scope, &canonical).as_bytes(),
        )[..]);
        query.push_str(&format!("&X-Amz-Signature={signature}"));
        query
    }

    fn presigned_headers() -> Vec<(String, String)> {
        headers(&[("Host", "127.0.0.1:4599")])
    }

    #[test]
    fn kms_rules_bound_presigned_requests_to_five_minutes() {
        let hs = presigned_headers();
        let check = |query: &str, now: i64, rules: &Rules| {
            verify_with(
                &request("POST", "/", query, &hs, KMS_BODY),
                now,
                rules,
                &mut kms_secret,
            )
        };
        let t = kms_time();
        let hour = presigned_query("kms", t, 3600);
        // Inside the window: accepted under both rules.
        assert_eq!(check(&hour, t + 299, &Rules::KMS).unwrap().signed_at, t);
        assert!(check(&hour, t + 3599, &Rules::default()).is_ok());
        // An hour's X-Amz-Expires does not stretch the KMS server's 5 minutes.
        let err = check(&hour, t + 301, &Rules::KMS).unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert!(err.message.starts_with("Signature expired"), "{err}");
        // X-Amz-Expires shorter than 5 minutes bounds it further.
        let minute = presigned_query("kms", t, 60);
        assert!(check(&minute, t + 60, &Rules::KMS).is_ok());
        let err = check(&minute, t + 61, &Rules::KMS).unwrap_err();
        assert_eq!(err.code, INVALID_SIGNATURE);
        assert!(err.message.starts_with("Request has expired"), "{err}");
        // Not yet valid, as with a header.
        let err = check(&minute, t - 301, &Rules::KMS).unwrap_err();
        assert!(
            err.message.starts_with("Signature not yet current"),
            "{err}"
        );
        // Presigned for another service.
        let s3 = presigned_query("s3", t, 60);
        assert!(check(&s3, t, &Rules::default()).is_ok());
        let err = check(&s3, t, &Rules::KMS).unwrap_err();
        assert!(err.message.contains("correct service: 'kms'"), "{err}");
    }

    #[test]
    fn presign_then_verify() {
        let hs = headers(&[
            ("Host", "127.0.0.1:4599"),
            ("X-Amz-Target", "TrentService.Decrypt"),
        ]);
        let creds = Credentials {
            access_key_id: KMS_KEY_ID,
            secret_access_key: KMS_SECRET,
            session_token: None,
        };
        let parts = request("POST", "/", "", &hs, KMS_BODY);
        let query = presign(&parts, &creds, "eu-west-1", "kms", at(kms_time()), 120);
        let signed = request("POST", "/", &query, &hs, KMS_BODY);
        let v = verify_with(&signed, kms_time() + 60, &Rules::KMS, &mut kms_secret).unwrap();
        assert_eq!(v.access_key_id, KMS_KEY_ID);
        let err = verify_with(&signed, kms_time() + 121, &Rules::KMS, &mut kms_secret).unwrap_err();
        assert!(err.message.starts_with("Request has expired"), "{err}");
        let tampered = request("POST", "/", &query, &hs, b"{}");
        assert_eq!(
            verify_with(&tampered, kms_time(), &Rules::KMS, &mut kms_secret)
                .unwrap_err()
                .message,
            SIGNATURE_MISMATCH
        );
    }

    #[test]
    fn a_signed_host_must_be_sent() {
        let hs: Vec<_> = kms_signed_headers()
            .into_iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
            .collect();
        let err = verify_kms(&hs, "/", KMS_BODY, kms_time()).unwrap_err();
        assert_eq!(err.code, INCOMPLETE_SIGNATURE);
        assert!(err.message.contains("'Host'"), "{err}");
    }

    #[test]
    fn claimed_credentials_are_read_without_verifying() {
        let hs = kms_signed_headers();
        let c = claimed(&request("POST", "/", "", &hs, KMS_BODY));
        assert_eq!(c.access_key_id.as_deref(), Some(KMS_KEY_ID));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        let q = presigned_query("kms", kms_time(), 60);
        let c = claimed(&request("POST", "/", &q, &presigned_headers(), b""));
        assert_eq!(c.access_key_id.as_deref(), Some(KMS_KEY_ID));
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        let none = headers(&[("Authorization", "Bearer abc")]);
        assert_eq!(
            claimed(&request("POST", "/", "", &none, b"")),
            Claimed::default()
        );
        let long = headers(&[(
            "Authorization",
            &format!("AWS4-HMAC-SHA256 Credential={}", "A".repeat(5000)),
        )]);
        let c = claimed(&request("POST", "/", "", &long, b""));
        assert_eq!(c.access_key_id.unwrap().len(), MAX_CLAIMED_CHARS);
        assert_eq!(c.region, None);
    }

    #[test]
    fn missing_and_malformed_authorization() {
        let base = headers(&[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
        ]);
        let check = |value: Option<&str>| {
            let mut hs = base.clone();
            if let Some(v) = value {
                hs.push(("authorization".to_owned(), v.to_owned()));
            }
            verify(
                &request("GET", "/", "", &hs, b""),
                EXAMPLE_TIME,
                &mut example_secret,
            )
            .unwrap_err()
        };
        assert_eq!(
            check(None),
            AuthError::new(
                MISSING_AUTHENTICATION_TOKEN,
                "Request is missing Authentication Token"
            )
        );
        assert_eq!(check(None).status, 400);

        let err = check(Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date",
        ));
        assert_eq!(
            err,
            incomplete("Authorization header requires 'Signature' parameter.")
        );
        let err = check(Some("AWS4-HMAC-SHA256"));
        assert_eq!(
            err.message,
            "Authorization header requires 'Credential' parameter. Authorization header \
             requires 'Signature' parameter. Authorization header requires 'SignedHeaders' \
             parameter."
        );
        for (value, needle) in [
            (
                "AWS AKIDEXAMPLE:c2lnbmF0dXJl",
                "Unsupported Authorization algorithm 'AWS'",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                "Credential must have the form",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015-08-30/us-east-1/service/x/y, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                "Credential must have the form",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_req, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                "valid terminator: 'aws4_request', not 'aws4_req'",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/2015083x/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                "valid date",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830//service/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                "valid region",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;;x-amz-date, Signature=00",
                "SignedHeaders must be",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=00",
                "'Credential' parameter twice",
            ),
        ] {
            let err = check(Some(value));
            assert_eq!(err.code, INCOMPLETE_SIGNATURE, "{value}");
            assert!(err.message.contains(needle), "{value}: {err}");
        }

        // The scope's date must be the request's.
        let err = check(Some(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150831/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
        ));
        assert_eq!(
            err,
            invalid(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '20150831' != '20150830', from '20150830T123600Z'."
            )
        );
    }

    #[test]
    fn header_canonicalization() {
        let hs = headers(&[
            ("My-Header", "  a   b \t c  "),
            ("HOST", "example.amazonaws.com"),
            ("my-header", "second"),
            ("X-Empty", ""),
        ]);
        let names: Vec<String> = ["host", "my-header", "x-empty"].map(String::from).into();
        assert_eq!(
            canonical_headers(&hs, &names),
            "host:example.amazonaws.com\nmy-header:a b c,second\nx-empty:\n"
        );
        // Signed with one spacing and case, verified with another (as a proxy may re-fold).
        let added = sign(
            &request("GET", "/", "", &hs, b""),
            &example_creds(),
            "us-east-1",
            "service",
            at(EXAMPLE_TIME),
        );
        assert!(
            added[0]
                .1
                .contains("SignedHeaders=host;my-header;x-amz-date;x-empty,"),
            "{:?}",
            added[0]
        );
        let mut respaced = headers(&[
            ("host", "example.amazonaws.com"),
            ("MY-HEADER", "a b c"),
            ("My-Header", "   second"),
            ("x-empty", "  "),
        ]);
        respaced.extend(added.clone());
        let ok = verify(
            &request("GET", "/", "", &respaced, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        );
        assert!(ok.is_ok(), "{ok:?}");
        // The order of repeated values is signed.
        let mut reordered = headers(&[
            ("host", "example.amazonaws.com"),
            ("my-header", "second"),
            ("my-header", "a b c"),
            ("x-empty", ""),
        ]);
        reordered.extend(added);
        let err = verify(
            &request("GET", "/", "", &reordered, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err();
        assert_eq!(err.message, SIGNATURE_MISMATCH);
    }

    #[test]
    fn query_canonicalization() {
        assert_eq!(
            canonical_query(
                &parse_query("b=2&a=x%20y&a=%21&c=a+b&d&&e=%2F%3d&f=/:&A=upper&%7E=~"),
                None
            ),
            "A=upper&a=%21&a=x%20y&b=2&c=a%2Bb&d=&e=%2F%3D&f=%2F%3A&~=~"
        );
        assert_eq!(canonical_query(&parse_query(""), None), "");
        // A stray '%' is a literal percent sign.
        assert_eq!(
            canonical_query(&parse_query("p=100%&q=%zz"), None),
            "p=100%25&q=%25zz"
        );

        // Signed and verified with reserved characters and spaces.
        let query = "Marker=a%20b%2Fc&Action=List&Filter=x%3Dy%26z&Action=Describe";
        let hs = headers(&[("host", "example.amazonaws.com")]);
        let mut signed = hs.clone();
        signed.extend(sign(
            &request("GET", "/", query, &hs, b""),
            &example_creds(),
            "us-east-1",
            "service",
            at(EXAMPLE_TIME),
        ));
        let ok = verify(
            &request("GET", "/", query, &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        );
        assert!(ok.is_ok(), "{ok:?}");
        // The same parameters in another order are the same request.
        let reordered = "Action=Describe&Filter=x%3dy%26z&Marker=a%20b%2fc&Action=List";
        let ok = verify(
            &request("GET", "/", reordered, &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        );
        assert!(ok.is_ok(), "{ok:?}");
        let err = verify(
            &request("GET", "/", "Marker=a%20b%2Fc&Action=List", &signed, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
        .unwrap_err();
        assert_eq!(err.message, SIGNATURE_MISMATCH);
    }

    #[test]
    fn uri_canonicalization() {
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a b/%7e/x%2Fy/"), "/a%20b/~/x%2Fy/");
        assert_eq!(canonical_uri("/ሴ"), "/%E1%88%B4");
        assert_eq!(canonical_uri("/%E1%88%B4"), "/%E1%88%B4");
        assert_eq!(canonical_uri("/a:b*c"), "/a%3Ab%2Ac");
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let creds = Credentials {
            access_key_id: KMS_KEY_ID,
            secret_access_key: KMS_SECRET,
            session_token: Some("token-value"),
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains(KMS_KEY_ID), "{shown}");
        assert!(
            !shown.contains(KMS_SECRET) && !shown.contains("token-value"),
            "{shown}"
        );
        let hs = headers(&[("x-amz-security-token", "token-value"), ("host", "h")]);
        let shown = format!("{:?}", request("POST", "/", "", &hs, b"body"));
        assert!(!shown.contains("token-value"), "{shown}");

        let hs = kms_signed_headers();
        for now in [kms_time() + 1000, kms_time()] {
            for body in [KMS_BODY, b"{}"] {
                let err = verify(&request("POST", "/", "", &hs, body), now, &mut |_: &str| {
                    Some(Zeroizing::new("wrong/secret".to_owned()))
                })
                .unwrap_err();
                let text = format!("{err} {err:?}");
                assert!(
                    !text.contains("wrong/secret") && !text.contains(KMS_SECRET),
                    "{text}"
                );
            }
        }
    }

    fn example_valid_authorization() -> (Vec<(String, String)>, String) {
        let hs = headers(&[("host", "example.amazonaws.com")]);
        let added = sign(
            &request("GET", "/", "", &hs, b""),
            &example_creds(),
            "us-east-1",
            "service",
            at(EXAMPLE_TIME),
        );
        let auth = added[0].1.clone();
        (
            headers(&[
                ("host", "example.amazonaws.com"),
                ("x-amz-date", "20150830T123600Z"),
            ]),
            auth,
        )
    }

    fn verify_example_with(auth: &str) -> Result<Verified, AuthError> {
        let (mut hs, _) = example_valid_authorization();
        hs.push(("Authorization".to_owned(), auth.to_owned()));
        verify(
            &request("GET", "/", "", &hs, b""),
            EXAMPLE_TIME,
            &mut example_secret,
        )
    }

    #[test]
    fn fuzz_baseline_is_valid() {
        let (_, auth) = example_valid_authorization();
        assert!(verify_example_with(&auth).is_ok());
    }

    proptest! {
        #[test]
        fn fuzz_random_authorization_is_refused(auth in ".{0,300}") {
            prop_assert!(verify_example_with(&auth).is_err());
        }

        #[test]
        fn fuzz_shaped_authorization_is_refused(
            auth in concat!(
                "AWS4-HMAC-SHA256( |,|Credential=|SignedHeaders=|Signature=|/|;|[a-z0-9]{1,9}",
                "|aws4_request|20150830|host|x-amz-date|=){0,30}",
            )
        ) {
            prop_assert!(verify_example_with(&auth).is_err());
        }

        #[test]
        fn fuzz_truncated_authorization_is_refused(cut in 0usize..1000) {
            let (_, auth) = example_valid_authorization();
            let cut = cut % auth.len();
            prop_assert!(verify_example_with(&auth[..cut]).is_err());
        }

        #[test]
        fn fuzz_garbled_authorization_is_refused(at in 0usize..1000, c in "[0-9A-Za-z]") {
            let (_, auth) = example_valid_authorization();
            let at = at % auth.len();
            prop_assume!(auth[at..=at] != c);
            let garbled = format!("{}{c}{}", &auth[..at], &auth[at + 1..]);
            prop_assert!(verify_example_with(&garbled).is_err(), "{}", garbled);
        }

        #[test]
        fn fuzz_arbitrary_requests_do_not_panic(
            method in ".{0,8}",
            path in ".{0,40}",
            query in "([a-zA-Z%=&+ ]|X-Amz-[A-Za-z]{0,12}|ሴ|%[0-9a-fA-F]{0,2}){0,20}",
            hs in prop::collection::vec(("[A-Za-z-]{0,14}", ".{0,40}"), 0..6),
            body in prop::collection::vec(any::<u8>(), 0..64),
            now in any::<i64>(),
        ) {
            let mut hs = hs;
            let (_, auth) = example_valid_authorization();
            hs.push(("authorization".to_owned(), auth));
            let parts = request(&method, &path, &query, &hs, &body);
            let _ = verify(&parts, now, &mut example_secret);
            let _ = sign(&parts, &example_creds(), "r", "s", SystemTime::now());
        }

        #[test]
        fn fuzz_dates_do_not_panic(date in ".{0,24}", now in any::<i64>()) {
            let (mut hs, auth) = example_valid_authorization();
            set_header(&mut hs, "x-amz-date", &date);
            hs.push(("Authorization".to_owned(), auth));
            let r = verify(&request("GET", "/", "", &hs, b""), now, &mut example_secret);
            prop_assert!(r.is_err() || date.trim() == "20150830T123600Z");
        }

        #[test]
        fn fuzz_sign_then_verify(
            method in "(GET|POST|PUT)",
            path in "/[a-zA-Z0-9 %/ሴ._~-]{0,20}",
            query in "([a-zA-Z0-9]{1,5}=[a-zA-Z0-9 %]{0,5}&){0,4}",
            value in "[ a-zA-Z0-9]{0,20}",
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let hs = headers(&[("Host", "example.amazonaws.com"), ("X-Custom", &value)]);
            let mut signed = hs.clone();
            signed.extend(sign(
                &request(&method, &path, &query, &hs, &body),
                &example_creds(),
                "us-east-1",
                "kms",
                at(EXAMPLE_TIME),
            ));
            let parts = request(&method, &path, &query, &signed, &body);
            let r = verify(&parts, EXAMPLE_TIME, &mut example_secret);
            prop_assert!(r.is_ok(), "{:?}", r);
        }
    }
}
