//! `cryptvol kms` key lifecycle and rotation commands: create-key, describe-key,
//! list-keys, enable-key, disable-key, schedule-key-deletion, cancel-key-deletion,
//! update-key-description, and the key rotation commands.

use crate::cli::Config;
use crate::cli::args::{key_ref, tag, text_value};
use crate::cli::exit::CliError;
use crate::cli::kms_ops::PageArgs;
use crate::iam::caller::Caller;
use crate::kms::CreateKeyRequest;
use crate::kms::embedded::EmbeddedKms;
use crate::policy;

#[derive(Debug, clap::Args)]
pub struct CreateKeyArgs {
    #[arg(long, default_value = "")]
    description: String,
    /// Tag as KEY=VALUE; repeat for more
    #[arg(long = "tag", alias = "tags", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Key policy: file://PATH or JSON [default: the account root may do everything]
    #[arg(long, conflicts_with_all = ["admin", "user"])]
    policy: Option<String>,
    /// Least privilege: a principal ARN that may manage but not use the key (repeatable)
    #[arg(long, value_name = "ARN")]
    admin: Vec<String>,
    /// Least privilege: a principal ARN that may use but not manage the key (repeatable)
    #[arg(long, value_name = "ARN")]
    user: Vec<String>,
    /// Accept a policy that would stop you from changing the policy again
    #[arg(long)]
    bypass_policy_lockout_safety_check: bool,
    /// AWS_KMS (default), or AWS_CLOUDHSM with --custom-key-store-id
    #[arg(long, value_name = "ORIGIN")]
    origin: Option<String>,
    /// Make the key inside this custom key store's token (with --origin AWS_CLOUDHSM)
    #[arg(long, value_name = "CKS-ID")]
    custom_key_store_id: Option<String>,
}

pub fn create_key(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: CreateKeyArgs,
) -> Result<(), CliError> {
    let CreateKeyArgs {
        description,
        tags,
        policy,
        admin,
        user,
        bypass_policy_lockout_safety_check,
        origin,
        custom_key_store_id,
    } = a;
    let tags = tags.iter().map(|t| tag(t)).collect::<Result<Vec<_>, _>>()?;
    let policy =
        match policy {
            Some(p) => Some(text_value("--policy", &p)?),
            None if !admin.is_empty() || !user.is_empty() => Some(
                policy::least_privilege_key_policy(kms.account().as_str(), &admin, &user),
            ),
            None => None,
        };
    let meta = kms.create_key(
        c,
        &CreateKeyRequest {
            description,
            tags,
            policy,
            bypass_lockout_check: bypass_policy_lockout_safety_check,
            origin,
            custom_key_store_id,
        },
    )?;
    cfg.print(&serde_json::json!({ "KeyMetadata": meta }), "CreateKey")
}

#[derive(Debug, clap::Args)]
pub struct DescribeKeyArgs {
    /// Key id, key ARN, alias name or alias ARN
    #[arg(long)]
    key_id: String,
    /// Grant tokens of grants that allow this call
    #[arg(long, num_args = 1..)]
    grant_tokens: Vec<String>,
}

pub fn describe_key(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: DescribeKeyArgs,
) -> Result<(), CliError> {
    let DescribeKeyArgs {
        key_id,
        grant_tokens,
    } = a;
    let c = &c.with_grant_tokens(grant_tokens);
    let meta = kms.describe_key(c, &key_ref(&key_id)?)?;
    cfg.print(&serde_json::json!({ "KeyMetadata": meta }), "DescribeKey")
}

#[derive(Debug, clap::Args)]
pub struct ListKeysArgs {
    #[command(flatten)]
    page: PageArgs,
}

pub fn list_keys(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ListKeysArgs,
) -> Result<(), CliError> {
    let ListKeysArgs { page } = a;
    let v = page.run("Keys", |p| kms.list_keys_page(c, p))?;
    cfg.print(&v, "ListKeys")
}

#[derive(Debug, clap::Args)]
pub struct ScheduleKeyDeletionArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long)]
    pending_window_days: Option<u32>,
}

pub fn schedule_key_deletion(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ScheduleKeyDeletionArgs,
) -> Result<(), CliError> {
    let ScheduleKeyDeletionArgs {
        key_id,
        pending_window_days,
    } = a;
    let r = kms.schedule_key_deletion(c, &key_ref(&key_id)?, pending_window_days)?;
    cfg.print(&r, "ScheduleKeyDeletion")
}

#[derive(Debug, clap::Args)]
pub struct UpdateKeyDescriptionArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long)]
    description: String,
}

pub fn update_key_description(
    kms: &EmbeddedKms,
    c: &Caller,
    a: UpdateKeyDescriptionArgs,
) -> Result<(), CliError> {
    let UpdateKeyDescriptionArgs {
        key_id,
        description,
    } = a;
    Ok(kms.update_key_description(c, &key_ref(&key_id)?, &description)?)
}

#[derive(Debug, clap::Args)]
pub struct EnableKeyRotationArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long)]
    rotation_period_in_days: Option<u32>,
}

pub fn enable_key_rotation(
    kms: &EmbeddedKms,
    c: &Caller,
    a: EnableKeyRotationArgs,
) -> Result<(), CliError> {
    let EnableKeyRotationArgs {
        key_id,
        rotation_period_in_days,
    } = a;
    Ok(kms.enable_key_rotation(c, &key_ref(&key_id)?, rotation_period_in_days)?)
}

#[derive(Debug, clap::Args)]
pub struct ListKeyRotationsArgs {
    #[arg(long)]
    key_id: String,
    /// ALL_KEY_MATERIAL also lists the material the key was created with
    #[arg(long, value_parser = ["ALL_KEY_MATERIAL", "ROTATIONS_ONLY"])]
    include_key_material: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

pub fn list_key_rotations(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ListKeyRotationsArgs,
) -> Result<(), CliError> {
    let ListKeyRotationsArgs {
        key_id,
        include_key_material,
        page,
    } = a;
    let r = key_ref(&key_id)?;
    let all = include_key_material.as_deref() == Some("ALL_KEY_MATERIAL");
    let v = page.run("Rotations", |p| kms.list_key_rotations_page(c, &r, all, p))?;
    cfg.print(&v, "ListKeyRotations")
}
