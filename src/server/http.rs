//! One request, from bytes to bytes: method and size limits, SigV4, the region from the
//! credential scope, the operation from `X-Amz-Target`, and AWS's error envelope
//! (`{"__type": "...", "message": "..."}` with AWS's status codes). Never panics on input:
//! every malformed request gets an AWS-shaped error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::dispatch;
use super::identities::IdentityCache;
use crate::crypto::SecretBytes;
use crate::kms::identity::IdentityStore;
use crate::kms::sigv4::{self, RequestParts};
use crate::kms::{Caller, Clock, EmbeddedKms, KmsError, Region, region};

pub const JSON_11: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "TrentService.";

/// What every request handler shares.
pub struct State {
    data_dir: PathBuf,
    passphrase_file: Option<PathBuf>,
    pub max_body: usize,
    identities: IdentityCache,
    regions: Mutex<HashMap<String, Arc<EmbeddedKms>>>,
}

/// An HTTP answer: status, body (always JSON).
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn error(status: u16, code: &str, message: &str) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&json!({ "__type": code, "message": message }))
                .expect("serializes"),
        }
    }

    fn ok(v: &Value) -> Answer {
        Answer {
            status: 200,
            body: serde_json::to_vec(v).expect("serializes"),
        }
    }
}

/// The HTTP status AWS KMS uses for an exception.
fn status_of(code: &str) -> u16 {
    match code {
        "KMSInternalException" => 500,
        _ => 400,
    }
}

fn kms_error(e: &KmsError) -> Answer {
    let code = e.aws_code();
    Answer::error(status_of(code), code, &e.to_string())
}

impl State {
    pub fn new(
        data_dir: &Path,
        passphrase_file: Option<&Path>,
        max_body: usize,
    ) -> Result<State, KmsError> {
        let account = region::read_account_id(data_dir)?;
        Ok(State {
            data_dir: data_dir.to_path_buf(),
            passphrase_file: passphrase_file.map(Path::to_path_buf),
            max_body,
            identities: IdentityCache::new(IdentityStore::new(data_dir, account)),
            regions: Mutex::new(HashMap::new()),
        })
    }

    /// The region's KMS, opened on first use and kept.
    fn kms(&self, name: &str) -> Result<Arc<EmbeddedKms>, KmsError> {
        let mut regions = self.regions.lock().map_err(|_| KmsError::Unsupported {
            message: "an earlier request panicked; restart the server".into(),
        })?;
        if let Some(k) = regions.get(name) {
            return Ok(k.clone());
        }
        let region = Region::parse(name)?;
        let file = self.passphrase_file.clone();
        let mut passphrase = || -> Result<SecretBytes, KmsError> {
            let path = file.clone().ok_or_else(|| KmsError::PassphraseRequired {
                region: name.to_string(),
            })?;
            region::read_passphrase_file(&path)
        };
        let kms = Arc::new(EmbeddedKms::open_region(
            &self.data_dir,
            &region,
            &mut passphrase,
            Clock::from_env(),
        )?);
        regions.insert(name.to_string(), kms.clone());
        Ok(kms)
    }

    /// Handles one request whose body has been read (blocking: run off the reactor).
    pub fn handle(&self, parts: &RequestParts, peer: SocketAddr, tls: bool) -> Answer {
        if parts.method != "POST" || parts.path != "/" {
            return Answer::error(
                404,
                "UnknownOperationException",
                "the AWS KMS protocol is POST / with an X-Amz-Target header",
            );
        }
        let keys = match self.identities.keys() {
            Ok(k) => k,
            Err(e) => return kms_error(&e),
        };
        let now = Clock::from_env().now();
        let verified = match sigv4::verify(parts, now, &mut |id| {
            keys.get(id).map(|(_, secret)| secret.clone())
        }) {
            Ok(v) => v,
            Err(e) => return Answer::error(e.status, e.code, &e.message),
        };
        let Some((identity, _)) = keys.get(&verified.access_key_id) else {
            return Answer::error(
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        };
        let header = |name: &str| {
            parts
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let Some(op) = header("x-amz-target").and_then(|t| t.strip_prefix(TARGET_PREFIX)) else {
            return Answer::error(
                400,
                "UnknownOperationException",
                "missing or foreign X-Amz-Target: expected TrentService.<Operation>",
            );
        };
        let body: Value = if parts.body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(parts.body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    return Answer::error(
                        400,
                        "SerializationException",
                        "the body must be a JSON object",
                    );
                }
                Err(e) => {
                    return Answer::error(
                        400,
                        "SerializationException",
                        &format!("the body is not valid JSON: {e}"),
                    );
                }
            }
        };
        if !dispatch::is_operation(op) {
            return Answer::error(
                400,
                "UnknownOperationException",
                &format!("{op} is not an operation of this KMS"),
            );
        }
        let kms = match self.kms(&verified.region) {
            Ok(k) => k,
            Err(e @ KmsError::RegionNotInitialized { .. }) => {
                return Answer::error(400, "UnrecognizedClientException", &e.to_string());
            }
            Err(e) => return kms_error(&e),
        };
        let caller = Caller::new(
            (**identity).clone(),
            Some(verified.access_key_id.clone()),
            peer.ip().to_string(),
            Some(peer.ip().to_string()),
            header("user-agent").unwrap_or("").to_string(),
            Some(tls),
        );
        match dispatch::call(&kms, &caller, op, &body) {
            Ok(v) => Answer::ok(&v),
            Err(dispatch::Failure::Kms(e)) => kms_error(&e),
            Err(dispatch::Failure::Input { code, message }) => Answer::error(400, code, &message),
        }
    }
}
