//! One request, from bytes to bytes: method and size limits, SigV4, the region from the
//! credential scope, the operation from `X-Amz-Target`, the request quotas, and AWS's
//! error envelope (`{"__type": "...", "message": "..."}` with AWS's status codes). Never
//! panics on input: every malformed request gets an AWS-shaped error, and every refusal
//! is recorded in the audit trail (`refusals`). Messages to clients never carry this
//! machine's paths or CLI advice (`AwsError::remote_message`); an internal error's detail
//! goes to stderr with the request id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::body::{BodyBudget, BodyError, RequestBody, ZeroizingWriter, zeroize_strings};
use super::dispatch;
use super::identities::IdentityCache;
use super::ratelimit::{RATE_EXCEEDED, RateLimiter};
use super::refusals::{Refusals, Refused};
use super::rotations::Rotations;
use super::secrets;
use crate::aws::sigv4::{RequestParts, Rules};
use crate::aws::{AwsError, Region};
use crate::crypto::SecretBytes;
use crate::datadir;
use crate::iam::Caller;
use crate::iam::IdentityStore;
use crate::kms::EmbeddedKms;
use crate::kms::embedded::recorded_on_this_thread;
use crate::secrets::SecretsManager;
use crate::sys::clock::Clock;

pub const JSON_11: &str = "application/x-amz-json-1.1";
const TARGET_PREFIX: &str = "TrentService.";

/// What the server's limits are (from `kms serve`'s flags).
pub struct Limits {
    pub max_body: usize,
    pub body_timeout: Duration,
    pub crypto_rate: u32,
    pub management_rate: u32,
    pub refused_audit_rate: u32,
}

/// What every request handler shares.
pub struct State {
    data_dir: PathBuf,
    passphrase_file: Option<PathBuf>,
    pub max_body: usize,
    body_timeout: Duration,
    pub body_budget: BodyBudget,
    pub(super) identities: IdentityCache,
    regions: RwLock<HashMap<String, Arc<EmbeddedKms>>>,
    /// Each region's Secrets Manager, on its KMS, opened with it and kept.
    secrets: RwLock<HashMap<String, Arc<SecretsManager>>>,
    /// The due rotations of each opened region.
    pub(super) rotations: Rotations,
    pub(super) rates: RateLimiter,
    pub(super) refusals: Refusals,
}

/// An HTTP answer: status, body (JSON, or XML for STS; in zeroizing memory).
pub struct Answer {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
    pub content_type: &'static str,
}

impl Answer {
    pub fn error(status: u16, code: &str, message: &str) -> Answer {
        // Backticks are how our own messages quote commands; AWS's never carry any.
        let message = message.replace('`', "'");
        Answer {
            status,
            body: Zeroizing::new(
                serde_json::to_vec(&json!({ "__type": code, "message": message }))
                    .expect("serializes"),
            ),
            content_type: JSON_11,
        }
    }

    /// The response, serialized into zeroizing memory; then its strings are wiped.
    pub(super) fn ok(mut v: Value) -> Answer {
        let mut w = ZeroizingWriter::with_capacity(512);
        serde_json::to_writer(&mut w, &v).expect("serializes");
        zeroize_strings(&mut v);
        Answer {
            status: 200,
            body: w.0,
            content_type: JSON_11,
        }
    }

    pub fn code(&self) -> String {
        if self.content_type != JSON_11 {
            return super::sts::xml_field(&self.body, "Code");
        }
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["__type"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn message(&self) -> String {
        if self.content_type != JSON_11 {
            return super::sts::xml_field(&self.body, "Message");
        }
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A lock a panicking request left poisoned.
fn poisoned<T>(_: T) -> AwsError {
    AwsError::Unsupported {
        message: "an earlier request panicked; restart the server".into(),
    }
}

/// The service an `X-Amz-Target` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Kms,
    SecretsManager,
}

/// The HTTP status AWS KMS uses for an exception.
fn status_of(code: &str) -> u16 {
    match code {
        "KMSInternalException" => 500,
        _ => 400,
    }
}

/// A request as the connection received it.
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Result<RequestBody, BodyError>,
    pub peer: SocketAddr,
    pub tls: bool,
    pub request_id: String,
}

impl Received {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn parts<'a>(&'a self, body: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            headers: &self.headers,
            body,
        }
    }
}

impl State {
    pub fn new(
        data_dir: &Path,
        passphrase_file: Option<&Path>,
        home_region: &Region,
        limits: &Limits,
    ) -> Result<State, AwsError> {
        let account = datadir::read_account_id(data_dir)?;
        Ok(State {
            data_dir: data_dir.to_path_buf(),
            passphrase_file: passphrase_file.map(Path::to_path_buf),
            max_body: limits.max_body,
            body_timeout: limits.body_timeout,
            // Room for many KMS-sized bodies, and always for one at the limit.
            body_budget: BodyBudget::new(limits.max_body.max(64 << 20)),
            identities: IdentityCache::new(IdentityStore::new(data_dir, account)),
            regions: RwLock::new(HashMap::new()),
            secrets: RwLock::new(HashMap::new()),
            rotations: Rotations::new(),
            rates: RateLimiter::new(limits.crypto_rate, limits.management_rate),
            refusals: Refusals::new(limits.refused_audit_rate, home_region.to_string()),
        })
    }

    /// The region's KMS, opened on first use and kept.
    pub(super) fn kms(&self, name: &str) -> Result<Arc<EmbeddedKms>, AwsError> {
        // Every request looks its region up: a shared lock, exclusive only to open one.
        if let Some(k) = self.regions.read().map_err(poisoned)?.get(name) {
            return Ok(k.clone());
        }
        let mut regions = self.regions.write().map_err(poisoned)?;
        if let Some(k) = regions.get(name) {
            return Ok(k.clone());
        }
        let region = Region::parse(name)?;
        let file = self.passphrase_file.clone();
        let mut passphrase = || -> Result<SecretBytes, AwsError> {
            let path = file.clone().ok_or_else(|| AwsError::PassphraseRequired {
                region: name.to_string(),
            })?;
            datadir::read_passphrase_file(&path)
        };
        let kms = Arc::new(EmbeddedKms::open_region(
            &self.data_dir,
            &region,
            &mut passphrase,
            Clock::from_env(),
        )?);
        regions.insert(name.to_string(), kms.clone());
        drop(regions);
        // Every opened region runs its due secret rotations.
        if let Err(e) = self.open_secrets(name, kms.clone()) {
            eprintln!("kms serve: region {name}: no Secrets Manager, no due rotations: {e}");
        }
        Ok(kms)
    }

    /// The region's Secrets Manager (on the region's KMS), opened with it and kept.
    pub(super) fn secrets(&self, name: &str) -> Result<Arc<SecretsManager>, AwsError> {
        if let Some(s) = self.secrets.read().map_err(poisoned)?.get(name) {
            return Ok(s.clone());
        }
        let kms = self.kms(name)?;
        self.open_secrets(name, kms)
    }

    /// Opens the Secrets Manager of `name` on its `kms` (once) and starts its rotations.
    fn open_secrets(
        &self,
        name: &str,
        kms: Arc<EmbeddedKms>,
    ) -> Result<Arc<SecretsManager>, AwsError> {
        let mut secrets = self.secrets.write().map_err(poisoned)?;
        if let Some(s) = secrets.get(name) {
            return Ok(s.clone());
        }
        let mut sm = SecretsManager::open(kms)?;
        if let Some(file) = &self.passphrase_file {
            // Due rotations' callbacks open the region with the server's passphrase file.
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            sm = sm.with_command_env("CRYPTVOL_PASSPHRASE_FILE", file);
        }
        let s = Arc::new(sm);
        secrets.insert(name.to_string(), s.clone());
        self.rotations.start(name, s.clone());
        Ok(s)
    }

    /// The answer to a KMS error: AWS's code, the message for remote clients; an internal
    /// error's detail goes to stderr under the request id.
    pub(super) fn kms_error(&self, r: &Received, op: Option<&str>, e: &AwsError) -> Answer {
        let code = e.aws_code();
        if code == "KMSInternalException" {
            eprintln!(
                "kms serve: request {} ({}) from {}: {e}",
                r.request_id,
                op.unwrap_or("no operation"),
                r.peer.ip()
            );
        }
        Answer::error(status_of(code), code, &e.remote_message())
    }

    /// Whether `r` may be handled on the async worker that received it rather than on the
    /// blocking pool: a KMS cryptographic operation (no keystore write, no fsync), signed
    /// for a region this server has open (opening one reads files and may run Argon2),
    /// on a key that is not in a custom key store (whose token may be a network away).
    /// Everything else, and anything this cannot tell, goes to the blocking pool.
    pub fn runs_inline(&self, r: &Received) -> bool {
        const INLINE: &[&str] = &[
            "Decrypt",
            "Encrypt",
            "GenerateDataKey",
            "GenerateDataKeyWithoutPlaintext",
            "ReEncrypt",
        ];
        let Some(op) = r
            .header("x-amz-target")
            .and_then(|t| t.strip_prefix(TARGET_PREFIX))
            .filter(|op| INLINE.contains(op))
        else {
            return false;
        };
        // `Credential=<key id>/<date>/<region>/kms/aws4_request` (SigV4 checks it later).
        let Some(region) = r
            .header("authorization")
            .and_then(|a| a.split_once("Credential="))
            .and_then(|(_, c)| c.split('/').nth(2))
        else {
            return false;
        };
        let Some(kms) = self
            .regions
            .read()
            .ok()
            .and_then(|m| m.get(region).cloned())
        else {
            return false;
        };
        let Ok(body) = &r.body else {
            return false;
        };
        // The body is parsed only if the region has custom key stores (the key decides).
        kms.stays_in_process(op, |names_embedded_key| {
            serde_json::from_slice::<Value>(&body.bytes).is_ok_and(|mut v| {
                let inline = names_embedded_key(&v);
                zeroize_strings(&mut v);
                inline
            })
        })
    }

    /// Handles one request whose body has been read (blocking: run off the reactor, unless
    /// [`State::runs_inline`]).
    pub fn handle(&self, r: Received) -> Answer {
        if super::sts::is_sts(&r) {
            return super::sts::handle(self, &r);
        }
        let target = r.header("x-amz-target");
        let (service, op) = match target.and_then(|t| t.strip_prefix(secrets::TARGET_PREFIX)) {
            Some(op) => (Service::SecretsManager, Some(op)),
            None => (
                Service::Kms,
                target.and_then(|t| t.strip_prefix(TARGET_PREFIX)),
            ),
        };
        // Each service's requests are signed for it (credential scope): `kms` or
        // `secretsmanager`, never the other.
        let rules = match service {
            Service::Kms => &Rules::KMS,
            Service::SecretsManager => &secrets::RULES,
        };
        let event_source = match service {
            Service::Kms => None,
            Service::SecretsManager => Some(crate::secrets::EVENT_SOURCE),
        };
        let refused = |caller: Option<&Caller>, region: Option<&str>, answer: Answer| {
            self.refusals.record(
                self,
                &Refused {
                    received: &r,
                    operation: op,
                    caller,
                    region,
                    counted: false,
                    event_source,
                },
                answer,
            )
        };
        let body = match &r.body {
            Ok(b) => &b.bytes,
            Err(e) => {
                return refused(
                    None,
                    None,
                    super::listener::body_error_answer(*e, self.max_body, self.body_timeout),
                );
            }
        };
        if r.method != "POST" || r.path != "/" {
            return refused(
                None,
                None,
                Answer::error(
                    404,
                    "UnknownOperationException",
                    "the AWS KMS protocol is POST / with an X-Amz-Target header",
                ),
            );
        }
        let parts = r.parts(body);
        let now = Clock::from_env().now();
        let (verified, identity, rate_key) = match self.identities.authenticate(&parts, now, rules)
        {
            Ok(a) => (a.verified, a.identity, a.rate_key),
            Err(Ok(e)) => {
                return refused(None, None, Answer::error(e.status, e.code, &e.message));
            }
            Err(Err(e)) => return self.kms_error(&r, op, &e),
        };
        let caller = Caller::new(
            identity,
            Some(verified.access_key_id.clone()),
            r.peer.ip().to_string(),
            Some(r.peer.ip().to_string()),
            r.header("user-agent").unwrap_or("").to_string(),
            Some(r.tls),
        );
        let region = Some(verified.region.as_str());
        let Some(op) = op else {
            return refused(
                Some(&caller),
                region,
                Answer::error(
                    400,
                    "UnknownOperationException",
                    "missing or foreign X-Amz-Target: expected TrentService.<Operation> or \
                     secretsmanager.<Operation>",
                ),
            );
        };
        let (known, of) = match service {
            Service::Kms => (dispatch::is_operation(op), "this KMS"),
            Service::SecretsManager => (secrets::is_operation(op), "this Secrets Manager"),
        };
        if !known {
            return refused(
                Some(&caller),
                region,
                Answer::error(
                    400,
                    "UnknownOperationException",
                    &format!("{op} is not an operation of {of}"),
                ),
            );
        }
        let kms = match self.kms(&verified.region) {
            Ok(k) => k,
            Err(AwsError::RegionNotInitialized { region, .. }) => {
                return refused(
                    Some(&caller),
                    None,
                    Answer::error(
                        400,
                        "UnrecognizedClientException",
                        &format!("region {region} is not served by this KMS"),
                    ),
                );
            }
            Err(e) => return self.kms_error(&r, Some(op), &e),
        };
        // From here on the request counts against its access key's quota, and so every
        // refusal is recorded (the quota bounds them).
        let counted = |answer: Answer| {
            self.refusals.record(
                self,
                &Refused {
                    received: &r,
                    operation: Some(op),
                    caller: Some(&caller),
                    region,
                    counted: true,
                    event_source,
                },
                answer,
            )
        };
        let rate_class = match service {
            Service::Kms => op.to_string(),
            Service::SecretsManager => secrets::rate_class(op),
        };
        if !self.rates.allow(&rate_key, &verified.region, &rate_class) {
            // A throttled request is not counted: its record shares the refusal budget.
            return refused(
                Some(&caller),
                region,
                Answer::error(400, "ThrottlingException", RATE_EXCEEDED),
            );
        }
        let mut request: Value = if body.is_empty() {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v @ Value::Object(_)) => v,
                Ok(mut other) => {
                    zeroize_strings(&mut other);
                    return counted(Answer::error(
                        400,
                        "SerializationException",
                        "the body must be a JSON object",
                    ));
                }
                Err(e) => {
                    return counted(Answer::error(
                        400,
                        "SerializationException",
                        &format!("the body is not valid JSON: {e}"),
                    ));
                }
            }
        };
        let recorded_before = recorded_on_this_thread();
        let result = match service {
            Service::Kms => dispatch::call(&kms, &caller, op, &request),
            Service::SecretsManager => {
                secrets::call(self, &verified.region, &caller, op, &request, &r.request_id)
            }
        };
        zeroize_strings(&mut request);
        match result {
            Ok(v) => Answer::ok(v),
            // Secrets Manager records every call it answers, failed or not.
            Err(dispatch::Failure::Kms(e)) if service == Service::SecretsManager => {
                secrets::error_answer(&r, op, &e)
            }
            Err(dispatch::Failure::Kms(e)) => {
                let answer = self.kms_error(&r, Some(op), &e);
                if recorded_on_this_thread() == recorded_before {
                    // Refused before the operation ran (a malformed key id, context...).
                    counted(answer)
                } else {
                    answer
                }
            }
            Err(dispatch::Failure::Input { code, message }) => {
                counted(Answer::error(400, code, &message))
            }
        }
    }
}
