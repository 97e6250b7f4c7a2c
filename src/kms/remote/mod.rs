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

use std::path::Path;
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
use crate::aws::credentials::Credentials;
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::Region;
use crate::aws::sigv4;
use crate::crypto::SecretBytes;

pub mod tls;

pub const ENDPOINT_ENV: &str = "CRYPTVOL_KMS_ENDPOINT";
const TIMEOUT: Duration = Duration::from_secs(15);

pub struct RemoteKms {
    endpoint: String,
    host: String,
    /// The region to sign for when the request names no key by ARN.
    region: Region,
    /// The region of the key that made the blobs Decrypt and ReEncrypt are given (the
    /// volume header's key ARN), when known.
    blob_region: Option<Region>,
    creds: Credentials,
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
    /// A client of `endpoint`, signing with `creds` for `region` unless a request names a
    /// key by ARN; with `ca_bundle`, https endpoints are trusted only if their certificate
    /// chains to one of that PEM file's certificates (as the AWS CLI's `--ca-bundle`),
    /// else to the bundled Mozilla roots.
    pub fn new(
        endpoint: &str,
        region: Region,
        creds: Credentials,
        ca_bundle: Option<&Path>,
    ) -> Result<RemoteKms> {
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
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false);
        // The bundle is for an https:// endpoint only (docs/cli.md): an http:// one has no
        // TLS, and reading and parsing a system bundle (AWS_CA_BUNDLE is often set to one)
        // cost tens of milliseconds at every command.
        if let Some(path) = ca_bundle.filter(|_| scheme == "https") {
            config = config.tls_config(tls::with_ca_bundle(path)?);
        }
        Ok(RemoteKms {
            endpoint: format!("{scheme}://{host}/"),
            host,
            region,
            blob_region: None,
            creds,
            agent: config.build().into(),
        })
    }

    /// Decrypt and ReEncrypt sign for the region of `key_arn` (the key the volume header
    /// records), when it is an ARN.
    pub fn with_blob_key(mut self, key_arn: &str) -> RemoteKms {
        self.blob_region = arn_region(key_arn);
        self
    }

    /// The region a request about `key` is signed for: the ARN's, else the default.
    fn region_for<'a>(&'a self, key: Option<&'a KeyRef>) -> &'a Region {
        key.and_then(KeyRef::region).unwrap_or(&self.region)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// One request: sign, send, and turn AWS's error envelope into a `AwsError`.
    fn call(&self, op: &str, body: &Value, region: &Region) -> Result<Value> {
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
        // The signer adds x-amz-security-token when the credentials have a session token.
        let signed = sigv4::sign(
            &parts,
            &self.creds.sigv4(),
            region.as_str(),
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
            .map_err(|e| tls::transport_error(&self.endpoint, e))?;
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

/// The region of `arn:PARTITION:kms:REGION:ACCOUNT:...`, if it is one.
fn arn_region(arn: &str) -> Option<Region> {
    let mut parts = arn.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("kms"), Some(region)) => Region::parse(region).ok(),
        _ => None,
    }
}

impl KeyBackend for RemoteKms {
    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }

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
        let mut v = self.call("GenerateDataKey", &body, self.region_for(Some(key)))?;
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
        let region = self.blob_region.as_ref().unwrap_or(&self.region);
        let mut v = self.call("Decrypt", &body, region)?;
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
        let region = match &self.blob_region {
            Some(r) => r,
            None => self.region_for(Some(destination)),
        };
        let v = self.call("ReEncrypt", &body, region)?;
        Ok(ReEncryptResponse {
            ciphertext_blob: blob_field(&v, "CiphertextBlob", &self.endpoint)?,
            source_key_id: field(&v, "SourceKeyId", &self.endpoint)?.to_string(),
            key_id: field(&v, "KeyId", &self.endpoint)?.to_string(),
            source_encryption_algorithm: SYMMETRIC_DEFAULT,
            destination_encryption_algorithm: SYMMETRIC_DEFAULT,
        })
    }

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata> {
        let v = self.call(
            "DescribeKey",
            &json!({ "KeyId": key.to_string() }),
            self.region_for(Some(key)),
        )?;
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
            origin: match s("Origin").as_str() {
                "" => "AWS_KMS",
                o => known(
                    o,
                    &["AWS_KMS", "AWS_CLOUDHSM", "EXTERNAL", "EXTERNAL_KEY_STORE"],
                ),
            },
            key_manager: known(&s("KeyManager"), &["CUSTOMER", "AWS"]),
            customer_master_key_spec: SYMMETRIC_DEFAULT,
            key_spec: SYMMETRIC_DEFAULT,
            encryption_algorithms: vec![SYMMETRIC_DEFAULT],
            multi_region: m["MultiRegion"].as_bool().unwrap_or(false),
            current_key_material_id: m["CurrentKeyMaterialId"].as_str().map(String::from),
            custom_key_store_id: m["CustomKeyStoreId"].as_str().map(String::from),
            cloud_hsm_cluster_id: m["CloudHsmClusterId"].as_str().map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            access_key_id: "A".into(),
            secret_access_key: Zeroizing::new("B".into()),
            session_token: None,
            expiration: None,
        }
    }

    #[test]
    fn endpoints() {
        let r = Region::parse("local-1").unwrap();
        let k = RemoteKms::new("http://127.0.0.1:9400", r.clone(), creds(), None).unwrap();
        assert_eq!(k.host, "127.0.0.1:9400");
        assert_eq!(k.endpoint(), "http://127.0.0.1:9400/");
        assert_eq!(KeyBackend::endpoint(&k), Some("http://127.0.0.1:9400/"));
        for (bad, why) in [
            ("ftp://x", "the scheme must be http or https"),
            ("127.0.0.1:9400", "use http://HOST:PORT or https://HOST"),
        ] {
            assert!(matches!(
                RemoteKms::new(bad, r.clone(), creds(), None),
                Err(AwsError::Validation { field, message })
                    if field == "--kms-endpoint" && message.contains(why)
            ));
        }
    }

    /// A key named by ARN is signed for the ARN's region; Decrypt for the region of the
    /// header's key ARN; anything else for the default.
    #[test]
    fn signing_regions() {
        let r = Region::parse("local-1").unwrap();
        let k = RemoteKms::new("http://h", r.clone(), creds(), None).unwrap();
        let arn = "arn:aws:kms:eu-west-3:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
        let by_arn = KeyRef::parse(arn).unwrap();
        assert_eq!(k.region_for(Some(&by_arn)).as_str(), "eu-west-3");
        let by_id = KeyRef::parse("1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        assert_eq!(k.region_for(Some(&by_id)).as_str(), "local-1");
        assert!(k.blob_region.is_none());
        let k = k.with_blob_key(arn);
        assert_eq!(
            k.blob_region.as_ref().map(Region::as_str),
            Some("eu-west-3")
        );
        assert_eq!(
            arn_region("arn:aws-cn:kms:cn-north-1:1:key/x")
                .unwrap()
                .as_str(),
            "cn-north-1"
        );
        assert!(arn_region("1234abcd-12ab-34cd-56ef-1234567890ab").is_none());
        assert!(arn_region("arn:aws:s3:::bucket").is_none());
    }
}
