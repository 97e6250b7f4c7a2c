//! A [`KeyBackend`] that talks the AWS KMS protocol (JSON 1.1 over HTTP(S), SigV4) to a
//! KMS endpoint: a `cryptvol kms serve` on another machine, or AWS KMS itself. This is how
//! a volume's CMK can live elsewhere: the volume layer calls it exactly as the embedded
//! KMS, once per create and once per attach.
//!
//! Why not aws-sdk-kms: it brings an async runtime and some two hundred crates to the CLI
//! for four calls. Why not the aws-sigv4 crate: it brings the Smithy runtime for a
//! 60-line algorithm that the server needs anyway (src/aws/sigv4/, tested against AWS's
//! published vectors, and against botocore through the compatibility suite). The HTTP
//! client is ureq (blocking, rustls): the volume layer is synchronous.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::api::{
    DecryptResponse, GenerateDataKeyResponse, KeyMetadata, ReEncryptResponse, SYMMETRIC_DEFAULT,
};
use super::backend::{DataKeySpec, KeyBackend};
use super::context::EncryptionContext;
use super::ids::KeyRef;
use crate::aws::b64;
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::Region;
use crate::aws::sigv4;
use crate::crypto::SecretBytes;

pub const ENDPOINT_ENV: &str = "CRYPTVOL_KMS_ENDPOINT";
const TIMEOUT: Duration = Duration::from_secs(15);

/// An access key to sign with.
pub struct RemoteCredentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for RemoteCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl RemoteCredentials {
    /// As the AWS CLI finds them: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`), else the `AWS_PROFILE` (or `default`) section of
    /// `AWS_SHARED_CREDENTIALS_FILE` (or `~/.aws/credentials`).
    pub fn from_environment() -> Result<RemoteCredentials> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Ok(RemoteCredentials {
                access_key_id: id,
                secret_access_key: Zeroizing::new(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Zeroizing::new),
            });
        }
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let path = var("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
        let missing = || AwsError::RemoteCredentials {
            message: format!(
                "no credentials for the KMS endpoint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add a [{profile}] section to ~/.aws/credentials (make a key with `cryptvol iam create-access-key` on the server)"
            ),
        };
        let text = path
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(Zeroizing::new)
            .ok_or_else(missing)?;
        let section = ini_section(&text, &profile);
        match (
            section.get("aws_access_key_id"),
            section.get("aws_secret_access_key"),
        ) {
            (Some(id), Some(secret)) => Ok(RemoteCredentials {
                access_key_id: id.clone(),
                secret_access_key: Zeroizing::new(secret.clone()),
                session_token: section
                    .get("aws_session_token")
                    .map(|t| Zeroizing::new(t.clone())),
            }),
            _ => Err(missing()),
        }
    }
}

/// `key = value` pairs of one `[section]` of an INI file.
fn ini_section(text: &str, section: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

pub struct RemoteKms {
    endpoint: String,
    host: String,
    region: Region,
    creds: RemoteCredentials,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RemoteKms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKms")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl RemoteKms {
    pub fn new(endpoint: &str, region: Region, creds: RemoteCredentials) -> Result<RemoteKms> {
        let bad =
            |why: &str| AwsError::validation("--kms-endpoint", format!("'{endpoint}': {why}"));
        let (scheme, rest) = endpoint
            .split_once("://")
            .ok_or_else(|| bad("use http://HOST:PORT or https://HOST"))?;
        if scheme != "http" && scheme != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let host = rest.split('/').next().unwrap_or("").to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(RemoteKms {
            endpoint: format!("{scheme}://{host}/"),
            host,
            region,
            creds,
            agent,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One request: sign, send, and turn AWS's error envelope into a `AwsError`.
    fn call(&self, op: &str, body: &Value) -> Result<Value> {
        let payload = Zeroizing::new(serde_json::to_vec(body).expect("requests serialize"));
        let headers = vec![
            ("host".to_string(), self.host.clone()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            ("x-amz-target".to_string(), format!("TrentService.{op}")),
        ];
        let parts = sigv4::RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: &payload,
        };
        let creds = sigv4::Credentials {
            access_key_id: &self.creds.access_key_id,
            secret_access_key: &self.creds.secret_access_key,
            session_token: self.creds.session_token.as_ref().map(|t| t.as_str()),
        };
        let signed = sigv4::sign(
            &parts,
            &creds,
            self.region.as_str(),
            "kms",
            std::time::SystemTime::now(),
        );
        let mut req = self.agent.post(&self.endpoint);
        for (k, v) in headers.iter().skip(1).chain(signed.iter()) {
            req = req.header(k.as_str(), v.as_str());
        }
        let unreachable = |e: String| AwsError::EndpointUnreachable {
            endpoint: self.endpoint.clone(),
            message: e,
        };
        let mut resp = req
            .send(&payload[..])
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = Zeroizing::new(
            resp.body_mut()
                .read_to_vec()
                .map_err(|e| unreachable(e.to_string()))?,
        );
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            unreachable(format!(
                "answered HTTP {status} with a body that is not JSON ({e})"
            ))
        })?;
        if status == 200 {
            return Ok(v);
        }
        let code = v["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t))
            .unwrap_or("KMSInternalException")
            .to_string();
        let message = v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or("")
            .to_string();
        Err(AwsError::Remote {
            endpoint: self.endpoint.clone(),
            code,
            message,
        })
    }
}

fn context_json(ctx: &EncryptionContext) -> Value {
    Value::Object(
        ctx.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

fn field<'v>(v: &'v Value, name: &str, endpoint: &str) -> Result<&'v str> {
    v[name]
        .as_str()
        .ok_or_else(|| AwsError::EndpointUnreachable {
            endpoint: endpoint.to_string(),
            message: format!("the answer has no {name}"),
        })
}

fn blob_field(v: &Value, name: &str, endpoint: &str) -> Result<Vec<u8>> {
    b64::decode(field(v, name, endpoint)?).map_err(|_| AwsError::EndpointUnreachable {
        endpoint: endpoint.to_string(),
        message: format!("{name} in the answer is not base64"),
    })
}

/// AWS's strings for the few enumerations the volume layer reads back.
fn known(s: &str, options: &[&'static str]) -> &'static str {
    options
        .iter()
        .find(|o| **o == s)
        .copied()
        .unwrap_or("UNKNOWN")
}

impl KeyBackend for RemoteKms {
    fn generate_data_key(
        &self,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        let mut body =
            json!({ "KeyId": key.to_string(), "EncryptionContext": context_json(context) });
        match spec.aws_name() {
            Some(name) => body["KeySpec"] = name.into(),
            None => body["NumberOfBytes"] = spec.len().into(),
        }
        let mut v = self.call("GenerateDataKey", &body)?;
        let plaintext = SecretBytes::new(blob_field(&v, "Plaintext", &self.endpoint)?);
        if let Some(Value::String(s)) = v.get_mut("Plaintext") {
            zeroize::Zeroize::zeroize(s);
        }
        Ok(GenerateDataKeyResponse {
            ciphertext_blob: blob_field(&v, "CiphertextBlob", &self.endpoint)?,
            plaintext,
            key_id: field(&v, "KeyId", &self.endpoint)?.to_string(),
        })
    }

    fn decrypt(&self, blob: &[u8], context: &EncryptionContext) -> Result<DecryptResponse> {
        let body = json!({ "CiphertextBlob": b64::encode(blob), "EncryptionContext": context_json(context) });
        let mut v = self.call("Decrypt", &body)?;
        let plaintext = SecretBytes::new(blob_field(&v, "Plaintext", &self.endpoint)?);
        if let Some(Value::String(s)) = v.get_mut("Plaintext") {
            zeroize::Zeroize::zeroize(s);
        }
        Ok(DecryptResponse {
            key_id: field(&v, "KeyId", &self.endpoint)?.to_string(),
            plaintext,
            encryption_algorithm: SYMMETRIC_DEFAULT,
        })
    }

    fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination: &KeyRef,
        destination_context: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        let body = json!({
            "CiphertextBlob": b64::encode(blob),
            "SourceEncryptionContext": context_json(source_context),
            "DestinationKeyId": destination.to_string(),
            "DestinationEncryptionContext": context_json(destination_context),
        });
        let v = self.call("ReEncrypt", &body)?;
        Ok(ReEncryptResponse {
            ciphertext_blob: blob_field(&v, "CiphertextBlob", &self.endpoint)?,
            source_key_id: field(&v, "SourceKeyId", &self.endpoint)?.to_string(),
            key_id: field(&v, "KeyId", &self.endpoint)?.to_string(),
            source_encryption_algorithm: SYMMETRIC_DEFAULT,
            destination_encryption_algorithm: SYMMETRIC_DEFAULT,
        })
    }

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata> {
        let v = self.call("DescribeKey", &json!({ "KeyId": key.to_string() }))?;
        let m = &v["KeyMetadata"];
        let s = |name: &str| m[name].as_str().unwrap_or("").to_string();
        Ok(KeyMetadata {
            aws_account_id: s("AWSAccountId"),
            key_id: s("KeyId"),
            arn: s("Arn"),
            creation_date: m["CreationDate"].as_f64().unwrap_or(0.0) as i64,
            enabled: m["Enabled"].as_bool().unwrap_or(false),
            description: s("Description"),
            key_usage: "ENCRYPT_DECRYPT",
            key_state: known(&s("KeyState"), &["Enabled", "Disabled", "PendingDeletion"]),
            deletion_date: m["DeletionDate"].as_f64().map(|d| d as i64),
            pending_deletion_window_in_days: m["PendingDeletionWindowInDays"]
                .as_u64()
                .map(|d| d as u32),
            origin: "AWS_KMS",
            key_manager: known(&s("KeyManager"), &["CUSTOMER", "AWS"]),
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: vec![SYMMETRIC_DEFAULT],
            multi_region: m["MultiRegion"].as_bool().unwrap_or(false),
            current_key_material_id: m["CurrentKeyMaterialId"].as_str().map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_sections_and_endpoints() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n[other]\naws_access_key_id=C\n";
        let d = ini_section(text, "default");
        assert_eq!(d["aws_access_key_id"], "A");
        assert_eq!(d["aws_secret_access_key"], "B");
        assert_eq!(ini_section(text, "other").len(), 1);
        let creds = || RemoteCredentials {
            access_key_id: "A".into(),
            secret_access_key: Zeroizing::new("B".into()),
            session_token: None,
        };
        let r = Region::parse("local-1").unwrap();
        let k = RemoteKms::new("http://127.0.0.1:9400", r.clone(), creds()).unwrap();
        assert_eq!(k.host, "127.0.0.1:9400");
        assert_eq!(k.endpoint(), "http://127.0.0.1:9400/");
        for (bad, why) in [
            ("ftp://x", "the scheme must be http or https"),
            ("127.0.0.1:9400", "use http://HOST:PORT or https://HOST"),
        ] {
            assert!(matches!(
                RemoteKms::new(bad, r.clone(), creds()),
                Err(AwsError::Validation { field, message })
                    if field == "--kms-endpoint" && message.contains(why)
            ));
        }
    }
}
