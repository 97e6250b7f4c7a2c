//! The signature's tests, by concern: `vectors.rs` (AWS's published examples and test
//! suite), `kms.rs` (KMS-shaped requests as the server sees them), `malformed.rs` (bad and
//! odd input, canonicalization), `fuzz.rs` (property tests). The helpers they share are here.

mod fuzz;
mod kms;
mod malformed;
mod vectors;

use super::canonical::*;
use super::signing::*;
use super::time::*;
use super::*;
use proptest::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

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
    let signature = hex::encode(
        &hmac_sha256(
            &key[..],
            string_to_sign(&date, &scope, &canonical).as_bytes(),
        )[..],
    );
    query.push_str(&format!("&X-Amz-Signature={signature}"));
    query
}

fn presigned_headers() -> Vec<(String, String)> {
    headers(&[("Host", "127.0.0.1:4599")])
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
