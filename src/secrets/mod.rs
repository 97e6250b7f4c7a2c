//! A Secrets Manager on the region's KMS, with AWS Secrets Manager's names so that the AWS
//! CLI and boto3 work unchanged (`kms serve` answers `X-Amz-Target: secretsmanager.<Op>`).
//!
//! One seam serves both the CLI and the server: [`SecretsManager::call`] takes an
//! operation's JSON request with AWS's member names and returns its JSON response
//! (binary values base64, times epoch seconds), or an [`AwsError`] whose `aws_code` is the
//! Secrets Manager exception.

use std::sync::Arc;

use serde_json::Value;

use crate::aws::AwsError;
use crate::iam::caller::Caller;
use crate::kms::embedded::EmbeddedKms;

/// Every operation [`SecretsManager::call`] answers, as AWS names them.
pub const OPERATIONS: &[&str] = &[
    "CancelRotateSecret",
    "CreateSecret",
    "DeleteResourcePolicy",
    "DeleteSecret",
    "DescribeSecret",
    "GetRandomPassword",
    "GetResourcePolicy",
    "GetSecretValue",
    "ListSecretVersionIds",
    "ListSecrets",
    "PutResourcePolicy",
    "PutSecretValue",
    "RestoreSecret",
    "RotateSecret",
    "TagResource",
    "UntagResource",
    "UpdateSecret",
    "UpdateSecretVersionStage",
    "ValidateResourcePolicy",
];

pub fn is_operation(op: &str) -> bool {
    OPERATIONS.contains(&op)
}

/// Where a call came from. Only the local CLI may name a rotation command (the
/// non-AWS member `RotationCommand` of RotateSecret): a network client must not make this
/// machine run a program of its choice.
#[derive(Debug, Clone, Copy)]
pub enum Via<'a> {
    Cli,
    Server { request_id: &'a str },
}

/// The outcome of one rotation run by [`SecretsManager::rotate_due`].
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationReport {
    #[serde(rename = "ARN")]
    pub arn: String,
    pub name: String,
    pub version_id: String,
    /// None when it succeeded; else the step that failed and why.
    pub error: Option<String>,
}

/// The Secrets Manager of one region.
pub struct SecretsManager {
    kms: Arc<EmbeddedKms>,
}

impl SecretsManager {
    pub fn open(kms: Arc<EmbeddedKms>) -> Result<SecretsManager, AwsError> {
        Ok(SecretsManager { kms })
    }

    /// Runs `operation` with its JSON `request` as `caller`: authorized, audited in the
    /// region's trail (never a secret value), and answered in AWS's JSON.
    pub fn call(
        &self,
        caller: &Caller,
        operation: &str,
        request: &Value,
        via: Via<'_>,
    ) -> Result<Value, AwsError> {
        let _ = (caller, request, via, &self.kms);
        Err(AwsError::Secrets {
            code: "InvalidRequestException",
            message: format!("{operation} is not implemented yet"),
        })
    }

    /// Runs every rotation whose time has come (the region daemon, the server, and
    /// `secretsmanager rotate-due` call it), as `caller`.
    pub fn rotate_due(
        &self,
        caller: &Caller,
        via: Via<'_>,
    ) -> Result<Vec<RotationReport>, AwsError> {
        let _ = (caller, via);
        Ok(Vec::new())
    }
}
