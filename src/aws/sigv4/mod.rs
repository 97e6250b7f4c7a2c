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
//!
//! The files, one concern each:
//!
//! - `parse.rs`: the `Authorization` header and the presigned query's `X-Amz-*` parameters,
//!   the credential scope, and the claimed key id and region of a request that may not verify.
//! - `canonical.rs`: the canonical request (URI, query, headers) and the string to sign, with
//!   SigV4's URI encoding.
//! - `time.rs`: the request's date (`x-amz-date`, `Date`, `X-Amz-Date`) and the clock window.
//! - `signing.rs`: key derivation and signature; [`sign`], [`presign`] and [`verify`].
//! - `tests/`: the published test vectors, KMS-shaped requests, malformed input and fuzzing.

mod canonical;
mod parse;
mod signing;
mod time;

#[cfg(test)]
mod tests;

use std::fmt;

pub use parse::{Claimed, MAX_CLAIMED_CHARS, claimed};
pub use signing::{Rules, presign, sign, sign_with, verify, verify_session, verify_with};

/// The only algorithm there is for SigV4 with HMAC.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far the request's date may be from the server's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// The longest a presigned request may be valid (`X-Amz-Expires`), as AWS allows: a week.
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 7 * 24 * 3600;
/// The last element of every credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";

/// Error codes, as AWS names them in the `__type` of a JSON 1.1 error.
pub const MISSING_AUTHENTICATION_TOKEN: &str = "MissingAuthenticationTokenException";
pub const INCOMPLETE_SIGNATURE: &str = "IncompleteSignatureException";
pub const INVALID_SIGNATURE: &str = "InvalidSignatureException";
pub const UNRECOGNIZED_CLIENT: &str = "UnrecognizedClientException";
pub const EXPIRED_TOKEN: &str = "ExpiredTokenException";

const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";
pub const INVALID_TOKEN: &str = "The security token included in the request is invalid.";
pub const EXPIRED_TOKEN_MESSAGE: &str = "The security token included in the request is expired";
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
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> AuthError {
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

/// Client-supplied text quoted in an error message, cut to a readable length.
fn shorten(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(MAX_CHARS).collect::<String>())
    }
}
