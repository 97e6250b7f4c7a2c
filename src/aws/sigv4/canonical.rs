//! The canonical request and the string to sign: what the signature is computed over.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};

use super::ALGORITHM;
use super::signing::hex_sha256;

pub(super) fn canonical_request(
    method: &str,
    uri: &str,
    query: &str,
    headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!("{method}\n{uri}\n{query}\n{headers}\n{signed_headers}\n{payload_hash}")
}

pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    )
}

/// Each `/`-separated segment decoded, then encoded once with the unreserved set; `/` for
/// an empty path.
pub(super) fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| uri_encode(&percent_decode(segment)))
        .collect::<Vec<_>>()
        .join("/")
}

/// `name=value` pairs, percent-decoded (`+` stays a `+`), in the order given.
pub(super) fn parse_query(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
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
pub(super) fn canonical_query(pairs: &[(Vec<u8>, Vec<u8>)], skip: Option<&[u8]>) -> String {
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
pub(super) fn canonical_headers(headers: &[(String, String)], names: &[String]) -> String {
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
pub(super) fn header_value(headers: &[(String, String)], name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split_ascii_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// What SigV4 percent-encodes: every byte but the unreserved `A-Za-z0-9-_.~` (bytes past
/// ASCII always are), as `%XY` in uppercase hex.
const SIGV4_ENCODED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

pub(super) fn uri_encode(bytes: &[u8]) -> String {
    percent_encode(bytes, SIGV4_ENCODED).to_string()
}

/// `%XY` becomes its byte; a `%` not followed by two hex digits stays itself.
fn percent_decode(text: &str) -> Vec<u8> {
    percent_decode_str(text).collect()
}
