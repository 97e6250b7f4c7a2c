//! `cryptvol secretsmanager ...`: the AWS CLI's `aws secretsmanager` commands and flags,
//! against the region's Secrets Manager. Each command builds the operation's JSON request
//! with AWS's member names, sends it through [`SecretsManager::call`] and prints the JSON
//! answer with the `kms` commands' printer (`--output`, `--query`).
//!
//! This file has the command list and runs each command; the flags and requests are in
//! files by concern under `secrets_cmd/`: `secrets.rs` (create, read, change, delete,
//! restore), `versions.rs` (version ids and staging labels), `listing.rs` (list-secrets
//! and paging), `policies.rs` (resource policies and tags), `rotation.rs` (rotate-secret,
//! cancel-rotate-secret, rotate-due), `password.rs` (get-random-password); `values.rs`
//! reads secret values from flags and files into zeroizing buffers, `shorthand.rs` parses
//! the AWS CLI's shorthand syntax, `show.rs` prints answers.

use std::sync::Arc;

use clap::Subcommand;
use serde_json::Value;

use super::Config;
use super::exit::CliError;
use crate::iam::caller::Caller;
use crate::secrets::{SecretsManager, Via};

mod listing;
mod password;
mod policies;
mod rotation;
mod secrets;
mod shorthand;
mod show;
mod values;
mod versions;

use values::Scrubbed;

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create a secret with its first version (AWSCURRENT), encrypted under a KMS key
    CreateSecret(secrets::CreateSecretArgs),
    /// Show a secret's metadata: ARN, key, rotation, versions and their staging labels
    DescribeSecret(secrets::SecretIdArgs),
    /// Print a version's value (default: AWSCURRENT)
    GetSecretValue(secrets::GetSecretValueArgs),
    /// Store a new version; it becomes AWSCURRENT unless --version-stages says otherwise
    PutSecretValue(secrets::PutSecretValueArgs),
    /// Change a secret's description or key, or store a new AWSCURRENT value
    UpdateSecret(secrets::UpdateSecretArgs),
    /// Delete a secret after a recovery window (7..30 days, default 30), or at once
    DeleteSecret(secrets::DeleteSecretArgs),
    /// Cancel a secret's scheduled deletion
    RestoreSecret(secrets::SecretIdArgs),
    /// List the region's secrets (no values)
    ListSecrets(listing::ListSecretsArgs),
    /// List a secret's versions and their staging labels
    ListSecretVersionIds(versions::ListSecretVersionIdsArgs),
    /// Move a staging label (AWSCURRENT, AWSPENDING, your own) to another version
    UpdateSecretVersionStage(versions::UpdateSecretVersionStageArgs),
    /// Add or replace tags on a secret
    TagResource(policies::TagResourceArgs),
    /// Remove tags from a secret
    UntagResource(policies::UntagResourceArgs),
    /// Attach a resource policy to a secret
    PutResourcePolicy(policies::PutResourcePolicyArgs),
    /// Show a secret's resource policy
    GetResourcePolicy(secrets::SecretIdArgs),
    /// Remove a secret's resource policy
    DeleteResourcePolicy(secrets::SecretIdArgs),
    /// Check a resource policy without attaching it
    ValidateResourcePolicy(policies::ValidateResourcePolicyArgs),
    /// Set a secret's rotation (a local rotation command and a schedule) and rotate it now
    RotateSecret(rotation::RotateSecretArgs),
    /// Turn a secret's automatic rotation off
    CancelRotateSecret(secrets::SecretIdArgs),
    /// Run every rotation whose time has come (exit 28 if one fails)
    RotateDue,
    /// A random password from the system's CSPRNG
    GetRandomPassword(password::GetRandomPasswordArgs),
}

/// One command's request: AWS's operation name and its JSON request.
trait Operation {
    const NAME: &'static str;
    fn request(self) -> Result<Scrubbed, CliError>;
}

pub fn run(cfg: &Config, cmd: SecretsCommand) -> Result<(), CliError> {
    use SecretsCommand::*;
    let kms = cfg.kms()?;
    let caller = cfg.caller(&kms)?;
    let mut sm = SecretsManager::open(Arc::new(kms))?;
    if let Some(file) = &cfg.passphrase.file {
        // A rotation command's callbacks open this region with the same passphrase file.
        let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
        sm = sm.with_command_env("CRYPTVOL_PASSPHRASE_FILE", file);
    }
    let s = Session {
        cfg,
        sm: &sm,
        caller: &caller,
    };
    match cmd {
        CreateSecret(a) => s.one(a),
        DescribeSecret(a) => s.one(secrets::Describe(a)),
        GetSecretValue(a) => s.one(a),
        PutSecretValue(a) => s.one(a),
        UpdateSecret(a) => s.one(a),
        DeleteSecret(a) => s.one(a),
        RestoreSecret(a) => s.one(secrets::Restore(a)),
        ListSecrets(a) => listing::list_secrets(&s, a),
        ListSecretVersionIds(a) => versions::list_secret_version_ids(&s, a),
        UpdateSecretVersionStage(a) => s.one(a),
        TagResource(a) => s.one(a),
        UntagResource(a) => s.one(a),
        PutResourcePolicy(a) => s.one(a),
        GetResourcePolicy(a) => s.one(policies::GetPolicy(a)),
        DeleteResourcePolicy(a) => s.one(policies::DeletePolicy(a)),
        ValidateResourcePolicy(a) => s.one(a),
        RotateSecret(a) => s.one(a),
        CancelRotateSecret(a) => s.one(rotation::Cancel(a)),
        RotateDue => rotation::rotate_due(&s),
        GetRandomPassword(a) => s.one(a),
    }
}

/// What a command needs to make its calls.
struct Session<'a> {
    cfg: &'a Config,
    sm: &'a SecretsManager,
    caller: &'a Caller,
}

impl Session<'_> {
    /// Calls `operation` with `request`; the answer's strings are cleared when dropped.
    fn call(&self, operation: &str, request: &Value) -> Result<Scrubbed, CliError> {
        let answer = self.sm.call(self.caller, operation, request, Via::Cli)?;
        Ok(Scrubbed(answer))
    }

    /// Runs one operation and prints its answer.
    fn one<O: Operation>(&self, op: O) -> Result<(), CliError> {
        let request = op.request()?;
        let answer = self.call(O::NAME, &request.0)?;
        drop(request);
        show::print(self.cfg, answer, O::NAME)
    }
}
