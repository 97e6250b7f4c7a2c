//! Where a request carries its signature: the `Authorization` header or the presigned
//! query's `X-Amz-*` parameters; the credential scope and the signed header names.

use super::canonical::parse_query;
use super::{
    ALGORITHM, AuthError, MAX_PRESIGNED_EXPIRES_SECS, MISSING_AUTHENTICATION_TOKEN, RequestParts,
    SCOPE_TERMINATOR, incomplete, shorten,
};

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

/// Where the signature and its parameters came from.
pub(super) enum Mode {
    Header,
    /// Presigned: the parameters are `X-Amz-*` query parameters.
    Query {
        amz_date: String,
        expires: i64,
    },
}

impl Mode {
    /// The query parameter left out of the canonical query string.
    pub(super) fn signature_param(&self) -> Option<&'static [u8]> {
        match self {
            Mode::Header => None,
            Mode::Query { .. } => Some(b"X-Amz-Signature"),
        }
    }
}

pub(super) struct Authentication {
    pub(super) mode: Mode,
    pub(super) credential: String,
    pub(super) signed_headers: String,
    pub(super) signature: String,
}

pub(super) fn find_authentication(
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
pub(super) struct Scope<'a> {
    pub(super) access_key_id: &'a str,
    pub(super) date: &'a str,
    pub(super) region: &'a str,
    pub(super) service: &'a str,
}

pub(super) fn parse_scope(credential: &str) -> Result<Scope<'_>, AuthError> {
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

pub(super) fn parse_signed_headers(signed_headers: &str) -> Result<Vec<String>, AuthError> {
    let names: Vec<String> = signed_headers.split(';').map(str::to_owned).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(incomplete(format!(
            "SignedHeaders must be header names joined with ';', got '{}'.",
            shorten(signed_headers)
        )));
    }
    Ok(names)
}
