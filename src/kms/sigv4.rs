//! TEMPORARY stub with the agreed API; replaced by the sigv4 branch.
#![allow(unused)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}
pub struct Credentials<'a> { pub access_key_id: &'a str, pub secret_access_key: &'a str, pub session_token: Option<&'a str> }
pub fn sign(parts: &RequestParts, creds: &Credentials, region: &str, service: &str, now: std::time::SystemTime) -> Vec<(String, String)> { vec![] }
pub struct Verified { pub access_key_id: String, pub region: String, pub service: String, pub signed_at: i64 }
pub fn verify(parts: &RequestParts, now: i64, secret_for: &mut dyn FnMut(&str) -> Option<zeroize::Zeroizing<String>>) -> Result<Verified, AuthError> { todo!() }
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AuthError { pub code: &'static str, pub message: String, pub status: u16 }
