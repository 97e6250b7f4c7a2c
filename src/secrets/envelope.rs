//! Envelope encryption of a secret's value, as AWS Secrets Manager does it: for each
//! version a fresh 256-bit data key from the secret's KMS key (GenerateDataKey), with the
//! encryption context `{SecretARN, SecretVersionId}`, so that KMS key policies and grants
//! govern who may read the value and the KMS trail records every read; the value is sealed
//! with AES-256-GCM under that data key and the data key is dropped (zeroized).
//!
//! KMS is called as the caller, through the service (`kms:ViaService =
//! secretsmanager.<region>.amazonaws.com`), which is what lets the managed key
//! `alias/aws/secretsmanager` be used by anyone in the account but only through here.

use super::errors;
use super::model::SealedValue;
use crate::aws::AwsError;
use crate::crypto::{Key256, SecretBytes, aead, kdf};
use crate::iam::caller::Caller;
use crate::kms::embedded::SECRETS_MANAGED_ALIAS;
use crate::kms::{DataKeySpec, EmbeddedKms, EncryptionContext, KeyRef};

/// The value of one version: text or bytes.
pub struct Plain {
    pub bytes: SecretBytes,
    pub binary: bool,
}

/// The service name KMS sees (`kms:ViaService`).
pub fn service(kms: &EmbeddedKms) -> String {
    format!("secretsmanager.{}.amazonaws.com", kms.region())
}

fn context(arn: &str, version_id: &str) -> Result<EncryptionContext, AwsError> {
    EncryptionContext::from_pairs([("SecretARN", arn), ("SecretVersionId", version_id)])
}

/// What the value's seal binds besides the data key: the version it belongs to and its
/// kind, so a sealed value moved to another version or secret does not open.
fn aad(arn: &str, version_id: &str, binary: bool) -> Vec<u8> {
    let mut a = b"cryptvol secret value v1\0".to_vec();
    a.extend_from_slice(arn.as_bytes());
    a.push(0);
    a.extend_from_slice(version_id.as_bytes());
    a.push(0);
    a.push(binary as u8);
    a
}

/// A keyed digest of a value: equal values of one store have equal digests, and without
/// the store's key the digest tells nothing.
pub fn digest(store_key: &Key256, value: &Plain) -> String {
    let key = kdf::derive(kdf::CTX_SECRET_VALUE_DIGEST, store_key, &[]);
    let mut h = blake3::Hasher::new_keyed(key.expose());
    h.update(&[value.binary as u8]);
    h.update(value.bytes.expose());
    h.finalize().to_hex().to_string()
}

/// Seals `value` as version `version_id` of secret `arn` under `key` (None: the managed key).
pub fn seal(
    kms: &EmbeddedKms,
    caller: &Caller,
    key: Option<&str>,
    arn: &str,
    version_id: &str,
    value: &Plain,
    store_key: &Key256,
) -> Result<SealedValue, AwsError> {
    let key_ref = KeyRef::parse(key.unwrap_or(SECRETS_MANAGED_ALIAS))
        .map_err(|e| errors::invalid_parameter(format!("KmsKeyId: {e}")))?;
    let via = caller.via(service(kms));
    let dk = kms
        .generate_data_key(
            &via,
            &key_ref,
            DataKeySpec::Aes256,
            &context(arn, version_id)?,
        )
        .map_err(|e| kms_failure(e, "EncryptionFailure", key.unwrap_or(SECRETS_MANAGED_ALIAS)))?;
    let data_key =
        Key256::from_slice(dk.plaintext.expose()).ok_or_else(|| AwsError::Unsupported {
            message: "KMS returned a data key that is not 32 bytes".into(),
        })?;
    let ciphertext = aead::seal_secret(
        &data_key,
        &aad(arn, version_id, value.binary),
        value.bytes.expose(),
    );
    Ok(SealedValue {
        kms_key_arn: dk.key_id,
        encrypted_data_key: dk.ciphertext_blob,
        ciphertext,
        binary: value.binary,
        digest: digest(store_key, value),
    })
}

/// Opens version `version_id` of secret `arn`: KMS unwraps its data key (audited there).
pub fn open(
    kms: &EmbeddedKms,
    caller: &Caller,
    arn: &str,
    version_id: &str,
    sealed: &SealedValue,
) -> Result<Plain, AwsError> {
    let via = caller.via(service(kms));
    let dk = kms
        .decrypt(
            &via,
            &sealed.encrypted_data_key,
            &context(arn, version_id)?,
            None,
        )
        .map_err(|e| kms_failure(e, "DecryptionFailure", &sealed.kms_key_arn))?;
    let data_key = Key256::from_slice(dk.plaintext.expose())
        .ok_or_else(|| errors_decryption(arn, "its data key is not 32 bytes"))?;
    let bytes = aead::open_secret(
        &data_key,
        &aad(arn, version_id, sealed.binary),
        &sealed.ciphertext,
    )
    .map_err(|_| errors_decryption(arn, "its sealed value does not authenticate (altered)"))?;
    Ok(Plain {
        bytes,
        binary: sealed.binary,
    })
}

fn errors_decryption(arn: &str, why: &str) -> AwsError {
    AwsError::Secrets {
        code: "DecryptionFailure",
        message: format!("Secrets Manager can't decrypt the value of secret {arn}: {why}"),
    }
}

/// A KMS error as Secrets Manager reports it: denial stays AccessDeniedException, a key
/// that cannot be used (disabled, pending deletion, missing, wrong ciphertext) becomes
/// `code` (EncryptionFailure or DecryptionFailure) naming the key; internal errors stay.
fn kms_failure(e: AwsError, code: &'static str, key: &str) -> AwsError {
    match e.aws_code() {
        "AccessDeniedException" => AwsError::AccessDenied {
            message: format!("Access to KMS is not allowed: {}", e.remote_message()),
        },
        "KMSInternalException" => e,
        _ => AwsError::Secrets {
            code,
            message: format!(
                "Secrets Manager can't use the KMS key {key}: {} ({})",
                e.remote_message(),
                e.aws_code()
            ),
        },
    }
}
