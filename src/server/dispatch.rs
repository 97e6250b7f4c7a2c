//! One AWS KMS operation: its JSON request (AWS's member names) → one `EmbeddedKms` call →
//! its JSON response. The response types are the CLI's (`kms::api`), which already use
//! AWS's names, base64 blobs and epoch-second times, as the JSON 1.1 protocol wants.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::aws::AwsError;
use crate::aws::b64;
use crate::iam::Caller;
use crate::kms::embedded::{GenerateRandomRequest, Paging};
use crate::kms::{CreateKeyRequest, DataKeySpec, EmbeddedKms, EncryptionContext, KeyRef};

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
    "CreateGrant",
    "ListGrants",
    "ListRetirableGrants",
    "RetireGrant",
    "RevokeGrant",
    "GenerateRandom",
    "UpdateKeyDescription",
];

pub fn is_operation(op: &str) -> bool {
    OPERATIONS.contains(&op) || super::custom_key_stores::OPERATIONS.contains(&op)
}

pub enum Failure {
    Kms(AwsError),
    /// The request's members are missing or of the wrong type.
    Input {
        code: &'static str,
        message: String,
    },
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Failure {
        Failure::Kms(e)
    }
}

pub(super) fn input(message: impl Into<String>) -> Failure {
    Failure::Input {
        code: "ValidationException",
        message: message.into(),
    }
}

pub(super) fn parse<T: DeserializeOwned>(op: &str, body: &Value) -> Result<T, Failure> {
    serde_json::from_value(body.clone()).map_err(|e| Failure::Input {
        code: "SerializationException",
        message: format!("{op}: {e}"),
    })
}

pub(super) fn key(r: &str) -> Result<KeyRef, Failure> {
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
        (Some(name), None) => DataKeySpec::from_aws_name(name).ok_or_else(|| {
            input(format!(
                "KeySpec '{name}' is not one of {}",
                DataKeySpec::AWS_NAMES.join(", ")
            ))
        }),
        (None, Some(n)) => Ok(DataKeySpec::Bytes(n)),
        _ => Err(input("give exactly one of KeySpec or NumberOfBytes")),
    }
}

pub(super) fn to_json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("responses serialize")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyOnly {
    key_id: String,
    /// `GrantTokens` (on DescribeKey only, among the operations that share this shape).
    #[serde(default)]
    grant_tokens: Vec<String>,
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
    custom_key_store_id: Option<String>,
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
    #[serde(default)]
    grant_tokens: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Decrypt {
    ciphertext_blob: String,
    encryption_context: Option<BTreeMap<String, String>>,
    key_id: Option<String>,
    #[serde(default)]
    grant_tokens: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncrypt {
    ciphertext_blob: String,
    source_encryption_context: Option<BTreeMap<String, String>>,
    source_key_id: Option<String>,
    destination_key_id: String,
    destination_encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default)]
    grant_tokens: Vec<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKey {
    key_id: String,
    key_spec: Option<String>,
    number_of_bytes: Option<usize>,
    encryption_context: Option<BTreeMap<String, String>>,
    #[serde(default)]
    grant_tokens: Vec<String>,
    #[serde(default)]
    dry_run: bool,
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

/// AWS's paging of list operations: `Limit` and the `Marker` of the previous page's
/// `NextMarker` (the KMS checks both).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Page {
    limit: Option<i64>,
    marker: Option<String>,
}

impl Page {
    fn paging(&self) -> Paging {
        Paging {
            limit: self.limit,
            marker: self.marker.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyPage {
    key_id: String,
    include_key_material: Option<String>,
    #[serde(flatten)]
    page: Page,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandom {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateKeyDescription {
    key_id: String,
    description: String,
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
        Some(x) if x != ok => Err(Failure::Kms(AwsError::Unsupported {
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
    if r.multi_region {
        return Err(Failure::Kms(AwsError::Unsupported {
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
                    origin: r.origin,
                    custom_key_store_id: r.custom_key_store_id,
                },
            )?;
            json!({ "KeyMetadata": meta })
        }
        "DescribeKey" => {
            let r: KeyOnly = parse(op, body)?;
            let c = &c.with_grant_tokens(r.grant_tokens);
            json!({ "KeyMetadata": kms.describe_key(c, &key(&r.key_id)?)? })
        }
        "ListKeys" => {
            let r: Page = parse(op, body)?;
            kms.list_keys_page(c, &r.paging())?
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
            let c = &c.with_grant_tokens(r.grant_tokens);
            let plaintext = SecretInput::new(blob("Plaintext", &r.plaintext)?);
            let (k, ctx) = (key(&r.key_id)?, context(r.encryption_context)?);
            if r.dry_run {
                return Err(kms.encrypt_dry_run(c, &k, plaintext.expose(), &ctx).into());
            }
            to_json(kms.encrypt(c, &k, plaintext.expose(), &ctx)?)
        }
        "Decrypt" => {
            let r: Decrypt = parse(op, body)?;
            let c = &c.with_grant_tokens(r.grant_tokens);
            let expected = r.key_id.as_deref().map(key).transpose()?;
            let b = blob("CiphertextBlob", &r.ciphertext_blob)?;
            let ctx = context(r.encryption_context)?;
            if r.dry_run {
                return Err(kms.decrypt_dry_run(c, &b, &ctx, expected.as_ref()).into());
            }
            to_json(kms.decrypt(c, &b, &ctx, expected.as_ref())?)
        }
        "ReEncrypt" => {
            let r: ReEncrypt = parse(op, body)?;
            let c = &c.with_grant_tokens(r.grant_tokens);
            let source = r.source_key_id.as_deref().map(key).transpose()?;
            let b = blob("CiphertextBlob", &r.ciphertext_blob)?;
            let (src_ctx, dst) = (
                context(r.source_encryption_context)?,
                key(&r.destination_key_id)?,
            );
            let dst_ctx = context(r.destination_encryption_context)?;
            if r.dry_run {
                return Err(kms
                    .re_encrypt_dry_run(c, &b, &src_ctx, source.as_ref(), &dst, &dst_ctx)
                    .into());
            }
            to_json(kms.re_encrypt(c, &b, &src_ctx, source.as_ref(), &dst, &dst_ctx)?)
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let r: DataKey = parse(op, body)?;
            let c = &c.with_grant_tokens(r.grant_tokens);
            let s = spec(r.key_spec.as_deref(), r.number_of_bytes)?;
            let k = key(&r.key_id)?;
            let ctx = context(r.encryption_context)?;
            if r.dry_run {
                return Err(kms
                    .generate_data_key_dry_run(c, &k, s, &ctx, op == "GenerateDataKey")
                    .into());
            }
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
            let r: KeyPage = parse(op, body)?;
            let all = match r.include_key_material.as_deref() {
                None | Some("ROTATIONS_ONLY") => false,
                Some("ALL_KEY_MATERIAL") => true,
                Some(other) => {
                    return Err(Failure::Kms(AwsError::InvalidInput {
                        message: format!(
                            "1 validation error detected: Value '{other}' at 'includeKeyMaterial' failed to satisfy constraint: Member must satisfy enum value set: [ALL_KEY_MATERIAL, ROTATIONS_ONLY]"
                        ),
                    }));
                }
            };
            kms.list_key_rotations_page(c, &key(&r.key_id)?, all, &r.page.paging())?
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
            kms.list_aliases_page(c, k.as_ref(), &r.page.paging())?
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
            let r: KeyPage = parse(op, body)?;
            kms.list_resource_tags_page(c, &key(&r.key_id)?, &r.page.paging())?
        }
        "GenerateRandom" => {
            let r: GenerateRandom = parse(op, body)?;
            let plaintext = kms.generate_random(
                c,
                &GenerateRandomRequest {
                    number_of_bytes: r.number_of_bytes,
                    custom_key_store_id: r.custom_key_store_id,
                    recipient: r.recipient.is_some_and(|v| !v.is_null()),
                },
            )?;
            json!({ "Plaintext": b64::encode(plaintext.expose()) })
        }
        "UpdateKeyDescription" => {
            let r: UpdateKeyDescription = parse(op, body)?;
            kms.update_key_description(c, &key(&r.key_id)?, &r.description)?;
            empty()
        }
        "CreateGrant" | "ListGrants" | "ListRetirableGrants" | "RetireGrant" | "RevokeGrant" => {
            super::grants::call(kms, c, op, body)?
        }
        op if super::custom_key_stores::OPERATIONS.contains(&op) => {
            super::custom_key_stores::call(kms, c, op, body)?
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
