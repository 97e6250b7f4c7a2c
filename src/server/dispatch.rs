//! One AWS KMS operation: its JSON request (AWS's member names) → one `EmbeddedKms` call →
//! its JSON response. The response types are the CLI's (`kms::api`), which already use
//! AWS's names, base64 blobs and epoch-second times, as the JSON 1.1 protocol wants.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::kms::{
    Caller, CreateKeyRequest, DataKeySpec, EmbeddedKms, EncryptionContext, KeyRef, KmsError, b64,
};

/// Every operation the server answers (the CLI's `kms` commands).
pub const OPERATIONS: &[&str] = &[
    "CancelKeyDeletion",
    "CreateAlias",
    "CreateKey",
    "Decrypt",
    "DeleteAlias",
    "DescribeKey",
    "DisableKey",
    "DisableKeyRotation",
    "EnableKey",
    "EnableKeyRotation",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GetKeyPolicy",
    "GetKeyRotationStatus",
    "ListAliases",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
    "PutKeyPolicy",
    "ReEncrypt",
    "RotateKeyOnDemand",
    "ScheduleKeyDeletion",
    "TagResource",
    "UntagResource",
    "UpdateAlias",
];

pub fn is_operation(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

pub enum Failure {
    Kms(KmsError),
    /// The request's members are missing or of the wrong type.
    Input {
        code: &'static str,
        message: String,
    },
}

impl From<KmsError> for Failure {
    fn from(e: KmsError) -> Failure {
        Failure::Kms(e)
    }
}

fn input(message: impl Into<String>) -> Failure {
    Failure::Input {
        code: "ValidationException",
        message: message.into(),
    }
}

fn parse<T: DeserializeOwned>(op: &str, body: &Value) -> Result<T, Failure> {
    serde_json::from_value(body.clone()).map_err(|e| Failure::Input {
        code: "SerializationException",
        message: format!("{op}: {e}"),
    })
}

fn key(r: &str) -> Result<KeyRef, Failure> {
    Ok(KeyRef::parse(r)?)
}

fn blob(field: &str, v: &str) -> Result<Vec<u8>, Failure> {
    b64::decode(v).map_err(|_| input(format!("{field} is not base64")))
}

fn context(ctx: Option<BTreeMap<String, String>>) -> Result<EncryptionContext, Failure> {
    Ok(EncryptionContext::from_pairs(ctx.unwrap_or_default())?)
}

fn spec(key_spec: Option<&str>, bytes: Option<usize>) -> Result<DataKeySpec, Failure> {
    match (key_spec, bytes) {
        (Some("AES_256"), None) => Ok(DataKeySpec::Aes256),
        (Some("AES_128"), None) => Ok(DataKeySpec::Aes128),
        (None, Some(n)) => Ok(DataKeySpec::Bytes(n)),
        (Some(other), None) => Err(input(format!(
            "KeySpec '{other}' is not one of AES_256, AES_128"
        ))),
        _ => Err(input("give exactly one of KeySpec or NumberOfBytes")),
    }
}

fn to_json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("responses serialize")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyOnly {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    tag_key: String,
    tag_value: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CreateKey {
    #[serde(default)]
    description: String,
    #[serde(default)]
    key_usage: Option<String>,
    #[serde(default)]
    key_spec: Option<String>,
    #[serde(default)]
    customer_master_key_spec: Option<String>,
    #[serde(default)]
    origin: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    bypass_policy_lockout_safety_check: bool,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    multi_region: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Encrypt {
    key_id: String,
    /// The plaintext's base64, wiped when dropped.
    plaintext: zeroize::Zeroizing<String>,
    encryption_context: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Decrypt {
    ciphertext_blob: String,
    encryption_context: Option<BTreeMap<String, String>>,
    key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncrypt {
    ciphertext_blob: String,
    source_encryption_context: Option<BTreeMap<String, String>>,
    source_key_id: Option<String>,
    destination_key_id: String,
    destination_encryption_context: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKey {
    key_id: String,
    key_spec: Option<String>,
    number_of_bytes: Option<usize>,
    encryption_context: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Schedule {
    key_id: String,
    pending_window_in_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Rotation {
    key_id: String,
    rotation_period_in_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Alias {
    alias_name: String,
    target_key_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ListAliases {
    key_id: Option<String>,
    #[serde(flatten)]
    page: Page,
}

/// AWS's paging of list operations: `Limit` (1..1000, default 100) and the `Marker` of
/// the previous page's `NextMarker`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Page {
    limit: Option<usize>,
    marker: Option<String>,
}

/// Cuts one page out of a full listing. A marker is the index of the next item, which is
/// stable because listings are sorted (keys by id, aliases by name).
fn page(mut all: Value, field: &str, p: &Page) -> Result<Value, Failure> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(input(format!("Limit {limit} is outside 1..1000")));
    }
    let start = match &p.marker {
        None => 0,
        Some(m) => m
            .parse::<usize>()
            .map_err(|_| input(format!("Marker '{m}' is not one this KMS gave")))?,
    };
    let items = all[field].as_array().cloned().unwrap_or_default();
    if start > items.len() {
        return Err(input("Marker is past the end of the listing"));
    }
    let end = (start + limit).min(items.len());
    all[field] = Value::Array(items[start..end].to_vec());
    all["Truncated"] = Value::Bool(end < items.len());
    if end < items.len() {
        all["NextMarker"] = Value::String(end.to_string());
    }
    Ok(all)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Policy {
    key_id: String,
    policy_name: Option<String>,
    policy: Option<String>,
    #[serde(default)]
    bypass_policy_lockout_safety_check: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResource {
    key_id: String,
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagResource {
    key_id: String,
    tag_keys: Vec<String>,
}

/// Refuses CreateKey options cryptvol does not offer, as AWS refuses unknown values.
fn check_create(r: &CreateKey) -> Result<(), Failure> {
    let only = |field: &str, v: &Option<String>, ok: &str| match v {
        Some(x) if x != ok => Err(Failure::Kms(KmsError::Unsupported {
            message: format!("{field} {x} is not offered: cryptvol keys are {ok}"),
        })),
        _ => Ok(()),
    };
    only("KeyUsage", &r.key_usage, "ENCRYPT_DECRYPT")?;
    only("KeySpec", &r.key_spec, "SYMMETRIC_DEFAULT")?;
    only(
        "CustomerMasterKeySpec",
        &r.customer_master_key_spec,
        "SYMMETRIC_DEFAULT",
    )?;
    only("Origin", &r.origin, "AWS_KMS")?;
    if r.multi_region {
        return Err(Failure::Kms(KmsError::Unsupported {
            message: "multi-Region keys are not offered: copy snapshots between regions instead"
                .into(),
        }));
    }
    Ok(())
}

/// Runs `op` for `caller`.
pub fn call(kms: &EmbeddedKms, caller: &Caller, op: &str, body: &Value) -> Result<Value, Failure> {
    let c = caller;
    let empty = || json!({});
    Ok(match op {
        "CreateKey" => {
            let r: CreateKey = parse(op, body)?;
            check_create(&r)?;
            let meta = kms.create_key(
                c,
                &CreateKeyRequest {
                    description: r.description,
                    tags: r
                        .tags
                        .into_iter()
                        .map(|t| (t.tag_key, t.tag_value))
                        .collect(),
                    policy: r.policy,
                    bypass_lockout_check: r.bypass_policy_lockout_safety_check,
                },
            )?;
            json!({ "KeyMetadata": meta })
        }
        "DescribeKey" => {
            let r: KeyOnly = parse(op, body)?;
            json!({ "KeyMetadata": kms.describe_key(c, &key(&r.key_id)?)? })
        }
        "ListKeys" => {
            let r: Page = parse(op, body)?;
            page(to_json(kms.list_keys(c)?), "Keys", &r)?
        }
        "EnableKey" => {
            let r: KeyOnly = parse(op, body)?;
            kms.enable_key(c, &key(&r.key_id)?)?;
            empty()
        }
        "DisableKey" => {
            let r: KeyOnly = parse(op, body)?;
            kms.disable_key(c, &key(&r.key_id)?)?;
            empty()
        }
        "ScheduleKeyDeletion" => {
            let r: Schedule = parse(op, body)?;
            to_json(kms.schedule_key_deletion(c, &key(&r.key_id)?, r.pending_window_in_days)?)
        }
        "CancelKeyDeletion" => {
            let r: KeyOnly = parse(op, body)?;
            to_json(kms.cancel_key_deletion(c, &key(&r.key_id)?)?)
        }
        "Encrypt" => {
            let r: Encrypt = parse(op, body)?;
            let plaintext = SecretInput::new(blob("Plaintext", &r.plaintext)?);
            to_json(kms.encrypt(
                c,
                &key(&r.key_id)?,
                plaintext.expose(),
                &context(r.encryption_context)?,
            )?)
        }
        "Decrypt" => {
            let r: Decrypt = parse(op, body)?;
            let expected = r.key_id.as_deref().map(key).transpose()?;
            to_json(kms.decrypt(
                c,
                &blob("CiphertextBlob", &r.ciphertext_blob)?,
                &context(r.encryption_context)?,
                expected.as_ref(),
            )?)
        }
        "ReEncrypt" => {
            let r: ReEncrypt = parse(op, body)?;
            let source = r.source_key_id.as_deref().map(key).transpose()?;
            to_json(kms.re_encrypt(
                c,
                &blob("CiphertextBlob", &r.ciphertext_blob)?,
                &context(r.source_encryption_context)?,
                source.as_ref(),
                &key(&r.destination_key_id)?,
                &context(r.destination_encryption_context)?,
            )?)
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let r: DataKey = parse(op, body)?;
            let s = spec(r.key_spec.as_deref(), r.number_of_bytes)?;
            let k = key(&r.key_id)?;
            let ctx = context(r.encryption_context)?;
            if op == "GenerateDataKey" {
                to_json(kms.generate_data_key(c, &k, s, &ctx)?)
            } else {
                to_json(kms.generate_data_key_without_plaintext(c, &k, s, &ctx)?)
            }
        }
        "EnableKeyRotation" => {
            let r: Rotation = parse(op, body)?;
            kms.enable_key_rotation(c, &key(&r.key_id)?, r.rotation_period_in_days)?;
            empty()
        }
        "DisableKeyRotation" => {
            let r: KeyOnly = parse(op, body)?;
            kms.disable_key_rotation(c, &key(&r.key_id)?)?;
            empty()
        }
        "GetKeyRotationStatus" => {
            let r: KeyOnly = parse(op, body)?;
            to_json(kms.get_key_rotation_status(c, &key(&r.key_id)?)?)
        }
        "RotateKeyOnDemand" => {
            let r: KeyOnly = parse(op, body)?;
            to_json(kms.rotate_key_on_demand(c, &key(&r.key_id)?)?)
        }
        "ListKeyRotations" => {
            let r: KeyOnly = parse(op, body)?;
            to_json(kms.list_key_rotations(c, &key(&r.key_id)?)?)
        }
        "CreateAlias" | "UpdateAlias" => {
            let r: Alias = parse(op, body)?;
            let target = r
                .target_key_id
                .ok_or_else(|| input(format!("{op} needs TargetKeyId")))?;
            let target = key(&target)?;
            if op == "CreateAlias" {
                kms.create_alias(c, &r.alias_name, &target)?;
            } else {
                kms.update_alias(c, &r.alias_name, &target)?;
            }
            empty()
        }
        "DeleteAlias" => {
            let r: Alias = parse(op, body)?;
            kms.delete_alias(c, &r.alias_name)?;
            empty()
        }
        "ListAliases" => {
            let r: ListAliases = parse(op, body)?;
            let k = r.key_id.as_deref().map(key).transpose()?;
            page(
                to_json(kms.list_aliases(c, k.as_ref())?),
                "Aliases",
                &r.page,
            )?
        }
        "GetKeyPolicy" => {
            let r: Policy = parse(op, body)?;
            kms.get_key_policy(
                c,
                &key(&r.key_id)?,
                r.policy_name.as_deref().unwrap_or("default"),
            )?
        }
        "ListKeyPolicies" => {
            let r: KeyOnly = parse(op, body)?;
            kms.list_key_policies(c, &key(&r.key_id)?)?
        }
        "PutKeyPolicy" => {
            let r: Policy = parse(op, body)?;
            let text = r.policy.ok_or_else(|| input("PutKeyPolicy needs Policy"))?;
            kms.put_key_policy(
                c,
                &key(&r.key_id)?,
                r.policy_name.as_deref().unwrap_or("default"),
                &text,
                r.bypass_policy_lockout_safety_check,
            )?;
            empty()
        }
        "TagResource" => {
            let r: TagResource = parse(op, body)?;
            let tags: Vec<(String, String)> = r
                .tags
                .into_iter()
                .map(|t| (t.tag_key, t.tag_value))
                .collect();
            kms.tag_resource(c, &key(&r.key_id)?, &tags)?;
            empty()
        }
        "UntagResource" => {
            let r: UntagResource = parse(op, body)?;
            kms.untag_resource(c, &key(&r.key_id)?, &r.tag_keys)?;
            empty()
        }
        "ListResourceTags" => {
            let r: KeyOnly = parse(op, body)?;
            kms.list_resource_tags(c, &key(&r.key_id)?)?
        }
        other => {
            return Err(Failure::Input {
                code: "UnknownOperationException",
                message: format!("{other} is not an operation of this KMS"),
            });
        }
    })
}

/// A decoded plaintext from a request, zeroized when dropped.
struct SecretInput(crate::crypto::SecretBytes);

impl SecretInput {
    fn new(bytes: Vec<u8>) -> SecretInput {
        SecretInput(crate::crypto::SecretBytes::new(bytes))
    }

    fn expose(&self) -> &[u8] {
        self.0.expose()
    }
}
