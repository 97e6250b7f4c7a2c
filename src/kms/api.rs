//! Request results with AWS KMS field names. The CLI prints them (`--output json` shows
//! what `aws kms` shows) and the KMS server will send them as they are. Times are Unix
//! seconds, as on the AWS wire; the CLI renders them as RFC 3339 like the AWS CLI.

use serde::Serialize;

use super::model::UnixTime;
use crate::crypto::SecretBytes;

pub const SYMMETRIC_DEFAULT: &str = "SYMMETRIC_DEFAULT";

fn b64_secret<S: serde::Serializer>(v: &SecretBytes, s: S) -> Result<S::Ok, S::Error> {
    // The base64 text is as secret as the bytes: wiped once the serializer has copied it.
    let text = zeroize::Zeroizing::new(crate::aws::b64::encode(v.expose()));
    s.serialize_str(&text)
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: UnixTime,
    pub enabled: bool,
    pub description: String,
    pub key_usage: &'static str,
    pub key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<UnixTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    pub origin: &'static str,
    pub key_manager: &'static str,
    pub customer_master_key_spec: &'static str,
    pub key_spec: &'static str,
    pub encryption_algorithms: Vec<&'static str>,
    pub multi_region: bool,
    /// The current version's `KeyMaterialId` (64 hex digits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_key_material_id: Option<String>,
    /// For a key in a custom key store: the store's id and its token as a `pkcs11:` URI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_hsm_cluster_id: Option<String>,
}

/// One custom key store as DescribeCustomKeyStores lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomKeyStoresListEntry {
    pub custom_key_store_id: String,
    pub custom_key_store_name: String,
    /// The store's token as a `pkcs11:` URI (module and token).
    pub cloud_hsm_cluster_id: String,
    pub custom_key_store_type: &'static str,
    /// CONNECTED, DISCONNECTED or FAILED.
    pub connection_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_error_code: Option<&'static str>,
    pub creation_date: UnixTime,
    /// Why the store is FAILED, for the CLI's message; not part of AWS's answer.
    #[serde(skip)]
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyResponse {
    pub key_metadata: KeyMetadata,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    pub keys: Vec<KeyListEntry>,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    pub key_id: String,
    pub deletion_date: UnixTime,
    pub key_state: &'static str,
    pub pending_window_in_days: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdResponse {
    pub key_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EncryptResponse {
    #[serde(with = "crate::aws::b64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
    pub encryption_algorithm: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DecryptResponse {
    pub key_id: String,
    #[serde(serialize_with = "b64_secret")]
    pub plaintext: SecretBytes,
    pub encryption_algorithm: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReEncryptResponse {
    #[serde(with = "crate::aws::b64")]
    pub ciphertext_blob: Vec<u8>,
    pub source_key_id: String,
    pub key_id: String,
    pub source_encryption_algorithm: &'static str,
    pub destination_encryption_algorithm: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyResponse {
    #[serde(with = "crate::aws::b64")]
    pub ciphertext_blob: Vec<u8>,
    #[serde(serialize_with = "b64_secret")]
    pub plaintext: SecretBytes,
    pub key_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateDataKeyWithoutPlaintextResponse {
    #[serde(with = "crate::aws::b64")]
    pub ciphertext_blob: Vec<u8>,
    pub key_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyRotationStatusResponse {
    pub key_id: String,
    pub key_rotation_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<UnixTime>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEntry {
    pub key_id: String,
    pub rotation_date: UnixTime,
    pub rotation_type: &'static str,
    /// The `KeyMaterialId` of the version this rotation made.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_material_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    pub rotations: Vec<RotationEntry>,
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasEntry {
    pub alias_name: String,
    pub alias_arn: String,
    pub target_key_id: String,
    pub creation_date: UnixTime,
    pub last_updated_date: UnixTime,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasEntry>,
    pub truncated: bool,
}

/// Field names whose values are Unix times; the CLI renders these as RFC 3339.
pub const TIME_FIELDS: &[&str] = &[
    "CreationDate",
    "DeletionDate",
    "RotationDate",
    "NextRotationDate",
    "LastUpdatedDate",
    "CreateTime",
    "StartTime",
];
