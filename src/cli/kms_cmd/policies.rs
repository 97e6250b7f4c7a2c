//! `cryptvol kms` key policy and tag commands: get-key-policy, put-key-policy,
//! list-key-policies, tag-resource, untag-resource, list-resource-tags.

use crate::cli::Config;
use crate::cli::args::{key_ref, tag, text_value};
use crate::cli::exit::CliError;
use crate::cli::kms_ops::PageArgs;
use crate::iam::caller::Caller;
use crate::kms::embedded::EmbeddedKms;

#[derive(Debug, clap::Args)]
pub struct GetKeyPolicyArgs {
    #[arg(long)]
    key_id: String,
    /// Always "default"
    #[arg(long, default_value = "default")]
    policy_name: String,
}

pub fn get_key_policy(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: GetKeyPolicyArgs,
) -> Result<(), CliError> {
    let GetKeyPolicyArgs {
        key_id,
        policy_name,
    } = a;
    let r = kms.get_key_policy(c, &key_ref(&key_id)?, &policy_name)?;
    cfg.print(&r, "GetKeyPolicy")
}

#[derive(Debug, clap::Args)]
pub struct PutKeyPolicyArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long, default_value = "default")]
    policy_name: String,
    /// file://PATH or JSON
    #[arg(long)]
    policy: String,
    #[arg(long)]
    bypass_policy_lockout_safety_check: bool,
}

pub fn put_key_policy(kms: &EmbeddedKms, c: &Caller, a: PutKeyPolicyArgs) -> Result<(), CliError> {
    let PutKeyPolicyArgs {
        key_id,
        policy_name,
        policy,
        bypass_policy_lockout_safety_check,
    } = a;
    let text = text_value("--policy", &policy)?;
    Ok(kms.put_key_policy(
        c,
        &key_ref(&key_id)?,
        &policy_name,
        &text,
        bypass_policy_lockout_safety_check,
    )?)
}

#[derive(Debug, clap::Args)]
pub struct TagResourceArgs {
    #[arg(long)]
    key_id: String,
    /// KEY=VALUE (or TagKey=K,TagValue=V); repeat for more
    #[arg(
        long = "tag",
        alias = "tags",
        value_name = "KEY=VALUE",
        required = true
    )]
    tags: Vec<String>,
}

pub fn tag_resource(kms: &EmbeddedKms, c: &Caller, a: TagResourceArgs) -> Result<(), CliError> {
    let TagResourceArgs { key_id, tags } = a;
    let tags = tags.iter().map(|t| tag(t)).collect::<Result<Vec<_>, _>>()?;
    Ok(kms.tag_resource(c, &key_ref(&key_id)?, &tags)?)
}

#[derive(Debug, clap::Args)]
pub struct UntagResourceArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long = "tag-key", alias = "tag-keys", required = true)]
    tag_keys: Vec<String>,
}

pub fn untag_resource(kms: &EmbeddedKms, c: &Caller, a: UntagResourceArgs) -> Result<(), CliError> {
    let UntagResourceArgs { key_id, tag_keys } = a;
    Ok(kms.untag_resource(c, &key_ref(&key_id)?, &tag_keys)?)
}

#[derive(Debug, clap::Args)]
pub struct ListResourceTagsArgs {
    #[arg(long)]
    key_id: String,
    #[command(flatten)]
    page: PageArgs,
}

pub fn list_resource_tags(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ListResourceTagsArgs,
) -> Result<(), CliError> {
    let ListResourceTagsArgs { key_id, page } = a;
    let r = key_ref(&key_id)?;
    let v = page.run("Tags", |p| kms.list_resource_tags_page(c, &r, p))?;
    cfg.print(&v, "ListResourceTags")
}
