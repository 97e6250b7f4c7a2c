//! Key derivation and the signature: [`sign`] and [`presign`] for clients, [`verify`] for
//! the server.

use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::canonical::{
    canonical_headers, canonical_query, canonical_request, canonical_uri, header_value,
    parse_query, string_to_sign, uri_encode,
};
use super::parse::{Mode, find_authentication, parse_scope, parse_signed_headers};
use super::time::{check_time, format_amz_date, header_date, parse_amz_date, unix_seconds};
use super::{
    ALGORITHM, AuthError, Credentials, INVALID_TOKEN, MAX_CLOCK_SKEW_SECS,
    MAX_PRESIGNED_EXPIRES_SECS, RequestParts, SCOPE_TERMINATOR, SIGNATURE_MISMATCH, SignOptions,
    UNRECOGNIZED_CLIENT, Verified, incomplete, invalid, shorten,
};

type HmacSha256 = Hmac<Sha256>;

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
    let signature = hex::encode(
        &hmac_sha256(
            &key[..],
            string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
        )[..],
    );

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
    let signature = hex::encode(
        &hmac_sha256(
            &key[..],
            string_to_sign(&amz_date, &scope, &canonical).as_bytes(),
        )[..],
    );
    format!("{query}&X-Amz-Signature={signature}")
}

/// Verifies a signed request. `secret_for(access_key_id)` returns the key's secret (`None`:
/// unknown key); `now` is unix seconds. The request's date may be up to
/// [`MAX_CLOCK_SKEW_SECS`] away from `now`, either way.
///
/// Besides the signature itself: `host` and the date header must be signed, and so must
/// `x-amz-target` when present (it chooses the operation); an `x-amz-content-sha256` header
/// must be the body's hash; session tokens are refused ([`verify_session`] takes them).
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

    /// The STS endpoint of the same server: scoped to `sts`, otherwise as KMS.
    pub const STS: Rules<'static> = Rules {
        service: Some("sts"),
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
    verify_session(parts, now, rules, &mut |id, token| match token {
        Some(_) => Err(AuthError::new(UNRECOGNIZED_CLIENT, INVALID_TOKEN)),
        None => secret_for(id).ok_or_else(|| AuthError::new(UNRECOGNIZED_CLIENT, INVALID_TOKEN)),
    })
}

/// The secret of an access key id and its session token, or why there is none.
pub type SessionSecretFor<'a> =
    dyn FnMut(&str, Option<&str>) -> Result<Zeroizing<String>, AuthError> + 'a;

/// [`verify_with`] for a server that issues temporary credentials: `secret_for` gets the
/// access key id and the request's session token (`X-Amz-Security-Token`, header or
/// query), and answers the secret or its own refusal (an expired token, say). It is
/// called only once the request is otherwise well formed and within its time window.
pub fn verify_session(
    parts: &RequestParts,
    now: i64,
    rules: &Rules,
    secret_for: &mut SessionSecretFor,
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

    let token_in_query = query
        .iter()
        .find(|(n, _)| n == b"X-Amz-Security-Token")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let token = Zeroizing::new(
        token_in_query.or_else(|| header_value(parts.headers, "x-amz-security-token")),
    );
    let secret = secret_for(scope.access_key_id, token.as_deref())?;

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

/// Lowercase hex only, as AWS writes signatures.
fn unhex(text: &str) -> Option<Vec<u8>> {
    // hex::decode also takes uppercase digits, which AWS never writes.
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()
}

pub(super) fn hex_sha256(data: &[u8]) -> String {
    hex::encode(&Sha256::digest(data)[..])
}

fn new_hmac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length")
}

pub(super) fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = new_hmac(key);
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// The signing key of (secret, date, region, service), from this thread's cache of the
/// last few: the key changes once a day per secret, region and service, and deriving it
/// is four HMACs (as AWS SDKs do, the signer and the verifier keep it). The cache holds
/// copies of secrets it was given and the keys derived from them, in zeroizing memory
/// (wiped when an entry is replaced and when the thread ends); an entry is found only by
/// the secret itself, so a secret the caller no longer accepts (a deleted access key) is
/// never looked up again.
pub(super) fn signing_key(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; 32]> {
    use std::cell::RefCell;
    /// Entries per thread: a server's worker sees few access keys at once, a client one.
    const ENTRIES: usize = 8;
    struct Entry {
        secret: Zeroizing<String>,
        date: String,
        region: String,
        service: String,
        key: Zeroizing<[u8; 32]>,
    }
    thread_local! {
        static CACHE: RefCell<(Vec<Entry>, usize)> = const { RefCell::new((Vec::new(), 0)) };
    }
    let found = CACHE.with(|c| {
        let c = c.borrow();
        c.0.iter()
            .find(|e| {
                e.date == date
                    && e.region == region
                    && e.service == service
                    && subtle_eq(e.secret.as_bytes(), secret.as_bytes())
            })
            .map(|e| e.key.clone())
    });
    if let Some(key) = found {
        return key;
    }
    let key = derive_signing_key(secret, date, region, service);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let mut copy = Zeroizing::new(String::with_capacity(secret.len()));
        copy.push_str(secret);
        let entry = Entry {
            secret: copy,
            date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            key: key.clone(),
        };
        let (entries, next) = &mut *c;
        if entries.len() < ENTRIES {
            entries.push(entry);
        } else {
            entries[*next] = entry;
            *next = (*next + 1) % ENTRIES;
        }
    });
    key
}

/// Whether two byte strings are equal, in time that depends on their lengths only.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signing key, derived: HMAC("AWS4" + secret, date) → region → service →
/// "aws4_request".
fn derive_signing_key(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<[u8; 32]> {
    // Sized up front so that no reallocation leaves a copy of the secret behind.
    let mut k_secret = Zeroizing::new(Vec::with_capacity(4 + secret.len()));
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac_sha256(&k_secret, date.as_bytes());
    let k_region = hmac_sha256(&k_date[..], region.as_bytes());
    let k_service = hmac_sha256(&k_region[..], service.as_bytes());
    hmac_sha256(&k_service[..], SCOPE_TERMINATOR.as_bytes())
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    /// The cache answers what the derivation gives, for more secrets and scopes than it
    /// holds, asked in turns (entries replaced and found again), and never one secret's
    /// key for another's or one scope's for another's.
    #[test]
    fn cached_keys_are_the_derived_ones() {
        let secrets = ["s1", "s2", "s3", "a longer secret", "s1 "];
        let scopes = [
            ("20150830", "us-east-1", "service"),
            ("20150831", "us-east-1", "service"),
            ("20150830", "eu-west-1", "kms"),
        ];
        for round in 0..3 {
            for s in secrets {
                for (d, r, v) in scopes {
                    assert_eq!(
                        signing_key(s, d, r, v),
                        derive_signing_key(s, d, r, v),
                        "round {round}: {s:?} {d} {r} {v}"
                    );
                }
            }
        }
        assert!(subtle_eq(b"abc", b"abc"));
        assert!(!subtle_eq(b"abc", b"abd"));
        assert!(!subtle_eq(b"abc", b"abcd"));
    }
}
