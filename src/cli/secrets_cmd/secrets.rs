//! A secret's life: create-secret, describe-secret, get-secret-value, put-secret-value,
//! update-secret, delete-secret, restore-secret.

use super::Operation;
use super::shorthand::{either, tags};
use super::values::{Request, Scrubbed, SecretValue};
use crate::cli::exit::CliError;

#[derive(Debug, clap::Args)]
pub struct SecretIdArgs {
    /// The secret's name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    pub secret_id: String,
}

impl SecretIdArgs {
    pub fn request(self) -> Request {
        Request::new().set("SecretId", self.secret_id)
    }
}

/// `describe-secret`.
pub struct Describe(pub SecretIdArgs);

impl Operation for Describe {
    const NAME: &'static str = "DescribeSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        self.0.request().done()
    }
}

/// `restore-secret`.
pub struct Restore(pub SecretIdArgs);

impl Operation for Restore {
    const NAME: &'static str = "RestoreSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        self.0.request().done()
    }
}

// The value flags, shared by create-secret, put-secret-value and update-secret. They
// accept values that start with '-', so that clap never quotes a value in a usage error.
#[derive(Debug, clap::Args)]
pub struct ValueArgs {
    /// The value as text, or file://PATH for a file's text
    #[arg(long, value_name = "TEXT", allow_hyphen_values = true)]
    secret_string: Option<String>,
    /// The value as bytes: fileb://PATH for a file's raw bytes, file://PATH for its text,
    /// anything else for the flag's own bytes
    #[arg(long, value_name = "fileb://PATH", allow_hyphen_values = true)]
    secret_binary: Option<String>,
}

impl ValueArgs {
    fn read(self) -> Result<SecretValue, CliError> {
        SecretValue::read(self.secret_string, self.secret_binary)
    }
}

#[derive(Debug, clap::Args)]
pub struct CreateSecretArgs {
    /// 1..512 characters of letters, digits and /_+=.@-
    #[arg(long)]
    name: String,
    /// The first version's id (32..64 characters) [default: a random UUID]; the same
    /// token and value again is a no-op
    #[arg(long, value_name = "TOKEN")]
    client_request_token: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// The KMS key that encrypts the values (id, ARN or alias) [default: alias/aws/secretsmanager]
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,
    #[command(flatten)]
    value: ValueArgs,
    /// Key=K,Value=V per tag (space-separated), or a JSON list of {"Key","Value"}
    #[arg(long, num_args = 1.., value_name = "Key=K,Value=V")]
    tags: Vec<String>,
}

impl Operation for CreateSecretArgs {
    const NAME: &'static str = "CreateSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        let tags = tags(&self.tags)?;
        let r = Request::new()
            .set("Name", self.name)
            .opt("ClientRequestToken", self.client_request_token)
            .opt("Description", self.description)
            .opt("KmsKeyId", self.kms_key_id);
        let r = if tags.is_empty() {
            r
        } else {
            r.set("Tags", tags)
        };
        self.value.read()?.into_request(r).done()
    }
}

#[derive(Debug, clap::Args)]
pub struct GetSecretValueArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// This version [default: the one labelled --version-stage]
    #[arg(long, value_name = "ID")]
    version_id: Option<String>,
    /// The version with this staging label [default: AWSCURRENT]
    #[arg(long, value_name = "LABEL")]
    version_stage: Option<String>,
}

impl Operation for GetSecretValueArgs {
    const NAME: &'static str = "GetSecretValue";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .set("SecretId", self.secret_id)
            .opt("VersionId", self.version_id)
            .opt("VersionStage", self.version_stage)
            .done()
    }
}

#[derive(Debug, clap::Args)]
pub struct PutSecretValueArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// The new version's id [default: a random UUID]; the same token and value again is
    /// a no-op, with another value ResourceExistsException
    #[arg(long, value_name = "TOKEN")]
    client_request_token: Option<String>,
    #[command(flatten)]
    value: ValueArgs,
    /// Staging labels of the new version (space-separated) [default: AWSCURRENT]
    #[arg(long, num_args = 1.., value_name = "LABEL")]
    version_stages: Vec<String>,
}

impl Operation for PutSecretValueArgs {
    const NAME: &'static str = "PutSecretValue";
    fn request(self) -> Result<Scrubbed, CliError> {
        let r = Request::new()
            .set("SecretId", self.secret_id)
            .opt("ClientRequestToken", self.client_request_token)
            .list("VersionStages", self.version_stages);
        self.value.read()?.into_request(r).done()
    }
}

#[derive(Debug, clap::Args)]
pub struct UpdateSecretArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// The new version's id, when a value is given [default: a random UUID]
    #[arg(long, value_name = "TOKEN")]
    client_request_token: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// Encrypt new versions under this key (id, ARN or alias); the labelled versions are
    /// sealed again under it
    #[arg(long, value_name = "KEY")]
    kms_key_id: Option<String>,
    #[command(flatten)]
    value: ValueArgs,
}

impl Operation for UpdateSecretArgs {
    const NAME: &'static str = "UpdateSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        let r = Request::new()
            .set("SecretId", self.secret_id)
            .opt("ClientRequestToken", self.client_request_token)
            .opt("Description", self.description)
            .opt("KmsKeyId", self.kms_key_id);
        self.value.read()?.into_request(r).done()
    }
}

#[derive(Debug, clap::Args)]
pub struct DeleteSecretArgs {
    /// The secret: its name or ARN
    #[arg(long, value_name = "NAME|ARN")]
    secret_id: String,
    /// Days (7..30) before the secret is deleted for good; restore-secret undoes it
    /// meanwhile [default: 30]
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
    recovery_window_in_days: Option<i64>,
    /// Delete at once, with no recovery: the name is free again at once
    #[arg(long, overrides_with = "no_force_delete_without_recovery")]
    force_delete_without_recovery: bool,
    #[arg(long, overrides_with = "force_delete_without_recovery")]
    no_force_delete_without_recovery: bool,
}

impl Operation for DeleteSecretArgs {
    const NAME: &'static str = "DeleteSecret";
    fn request(self) -> Result<Scrubbed, CliError> {
        Request::new()
            .set("SecretId", self.secret_id)
            .opt("RecoveryWindowInDays", self.recovery_window_in_days)
            .opt(
                "ForceDeleteWithoutRecovery",
                either(
                    self.force_delete_without_recovery,
                    self.no_force_delete_without_recovery,
                ),
            )
            .done()
    }
}
