//! Secrets Manager's exceptions, with AWS's wording where AWS has one and the secret named.

use crate::aws::AwsError;

fn secrets(code: &'static str, message: String) -> AwsError {
    AwsError::Secrets { code, message }
}

pub fn not_found(secret_id: &str) -> AwsError {
    secrets(
        "ResourceNotFoundException",
        format!("Secrets Manager can't find the specified secret: {secret_id}"),
    )
}

pub fn no_version(secret: &str, what: &str) -> AwsError {
    secrets(
        "ResourceNotFoundException",
        format!(
            "Secrets Manager can't find the specified secret value for {what} of secret {secret}"
        ),
    )
}

pub fn invalid_request(message: impl Into<String>) -> AwsError {
    secrets("InvalidRequestException", message.into())
}

pub fn invalid_parameter(message: impl Into<String>) -> AwsError {
    secrets("InvalidParameterException", message.into())
}

pub fn exists(message: impl Into<String>) -> AwsError {
    secrets("ResourceExistsException", message.into())
}

pub fn limit(message: impl Into<String>) -> AwsError {
    secrets("LimitExceededException", message.into())
}

pub fn marked_for_deletion(arn: &str) -> AwsError {
    invalid_request(format!(
        "You can't perform this operation on the secret {arn} because it was marked for deletion (restore it first: RestoreSecret)"
    ))
}

/// A malformed request member, as AWS's model validation says it.
pub fn validation(member: &str, message: impl std::fmt::Display) -> AwsError {
    invalid_parameter(format!("Invalid parameter {member}: {message}"))
}
