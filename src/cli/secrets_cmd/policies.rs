//! A secret's resource policy (put, get, delete, validate) and its tags.

use super::Operation;
use super::secrets::SecretIdArgs;
use super::shorthand::{either, tags};
use super::values::{Request, Scrubbed};
use crate::cli::args::text_value;
use crate::cli::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct TagResourceArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// Key=K,Value=V per tag (space-separated), or a JSON list of {"Key","Value"}
    #[arg(long, num_args = 1.., required = true, value_name = "Key=K,Value=V")]
    tags: Vec<String>,
}

impl Operation for TagResourceArgs {
    const NAME: &'static str = "TagResource";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .set("SecretId", self.secret_id)
            .set("Tags", tags(&self.tags)?)
            .done()
    }
}

#[derive(Debug, clap::Args)]
pub struct UntagResourceArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// Tag keys to remove (space-separated)
    #[arg(long, num_args = 1.., required = true, value_name = "KEY")]
    tag_keys: Vec<String>,
}

impl Operation for UntagResourceArgs {
    const NAME: &'static str = "UntagResource";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .set("SecretId", self.secret_id)
            .set("TagKeys", self.tag_keys)
            .done()
    }
}

#[derive(Debug, clap::Args)]
pub struct PutResourcePolicyArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// The policy: JSON, or file://PATH
    #[arg(long, value_name = "POLICY")]
    resource_policy: String,
    /// Refuse a policy that gives access to anyone outside the account [default: on]
    #[arg(long, overrides_with = "no_block_public_policy")]
    block_public_policy: bool,
    #[arg(long, overrides_with = "block_public_policy")]
    no_block_public_policy: bool,
}

impl Operation for PutResourcePolicyArgs {
    const NAME: &'static str = "PutResourcePolicy";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .set("SecretId", self.secret_id)
            .set(
                "ResourcePolicy",
                text_value("--resource-policy", &self.resource_policy)?,
            )
            .opt(
                "BlockPublicPolicy",
                either(self.block_public_policy, self.no_block_public_policy),
            )
            .done()
    }
}

/// `get-resource-policy`.
pub struct GetPolicy(pub SecretIdArgs);

impl Operation for GetPolicy {
    const NAME: &'static str = "GetResourcePolicy";
    fn request(self) -> Result<Scrubbed, CliError> {
        self.0.request().done()
    }
}

/// `delete-resource-policy`.
pub struct DeletePolicy(pub SecretIdArgs);

impl Operation for DeletePolicy {
    const NAME: &'static str = "DeleteResourcePolicy";
    fn request(self) -> Result<Scrubbed, CliError> {
        self.0.request().done()
    }
}

#[derive(Debug, clap::Args)]
pub struct ValidateResourcePolicyArgs {
    /// The secret the policy is for (to check it against)
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: Option<String>,
    /// The policy: JSON, or file://PATH
    #[arg(long, value_name = "POLICY")]
    resource_policy: String,
}

impl Operation for ValidateResourcePolicyArgs {
    const NAME: &'static str = "ValidateResourcePolicy";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .opt("SecretId", self.secret_id)
            .set(
                "ResourcePolicy",
                text_value("--resource-policy", &self.resource_policy)?,
            )
            .done()
    }
}
