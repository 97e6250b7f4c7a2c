//! The KMS layer's errors. Each variant says which object failed and how to fix it, in
//! one line; `aws_code` gives the AWS KMS exception name that the CLI shows and the KMS
//! server (later) returns. Corruption is kept apart from I/O, and denial from not-found.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsError {
    #[error("{what} does not exist (list them with `cryptvol kms list-keys` / `list-aliases`)")]
    NotFound { what: String },

    #[error(
        "key {key_arn} was deleted on {deleted_on}: its key material is destroyed and nothing encrypted under it can be decrypted again"
    )]
    KeyDeleted { key_arn: String, deleted_on: String },

    #[error(
        "key {key_arn} is disabled: enable it with `cryptvol kms enable-key --key-id {key_arn}`"
    )]
    Disabled { key_arn: String },

    #[error("key {key_arn} is {state}, so {operation} is not allowed{hint}")]
    InvalidState {
        key_arn: String,
        state: String,
        operation: String,
        hint: String,
    },

    #[error("the ciphertext blob {reason}")]
    InvalidCiphertext { reason: String },

    #[error(
        "the ciphertext blob was made in region {blob_region} but this command works in region {here}: run it with --region {blob_region}"
    )]
    BlobFromOtherRegion { blob_region: String, here: String },

    #[error(
        "{what} is in region {named} but this command works in region {here}: run it with --region {named}"
    )]
    WrongRegion {
        what: String,
        named: String,
        here: String,
    },

    #[error(
        "the ciphertext blob was encrypted under key {actual}, not under the given key {expected}"
    )]
    IncorrectKey { expected: String, actual: String },

    #[error("{what} already exists{hint}")]
    AlreadyExists { what: String, hint: String },

    #[error("'{arn}' is not a valid ARN: {why}")]
    InvalidArn { arn: String, why: String },

    #[error("'{name}' is not a valid alias name: {why}")]
    InvalidAliasName { name: String, why: String },

    #[error("invalid {field}: {message}")]
    Validation { field: String, message: String },

    #[error("{message}")]
    Unsupported { message: String },

    #[error(
        "the passphrase does not open region {region}: check the file given with --passphrase-file"
    )]
    WrongPassphrase { region: String },

    #[error(
        "the root key file {path} does not open region {region}: restore the region's original root.key"
    )]
    WrongRootKey { region: String, path: PathBuf },

    /// The region's root key is sealed in a PKCS#11 token that cannot be used now.
    #[error("region {region}: its root key is sealed in a PKCS#11 token: {error}{hint}")]
    RootKeyToken {
        region: String,
        error: crate::hsm::HsmError,
        /// Where the fix is, when the token's own message does not say (the PIN file).
        hint: String,
    },

    /// The `pin-source` file of a region's root-key token cannot be read.
    #[error(
        "region {region}: cannot read the PIN file {path} (the pin-source of its root-key token): {source}: create it (mode 0600) holding the token's user PIN"
    )]
    PinSource {
        region: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// This process opened the region before its root key was rotated and cannot open the
    /// new one by itself (a passphrase it was not given).
    #[error("the root key of region {region} was rotated since this process opened it: restart it")]
    RootKeyRotated { region: String },

    #[error("cannot read the passphrase file {path}: {source}: check --passphrase-file")]
    PassphraseFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "region {region} is sealed with a passphrase: pass --passphrase-file FILE (or run on a terminal to be asked)"
    )]
    PassphraseRequired { region: String },

    #[error(
        "region {region} is not initialised in {data_dir}: run `cryptvol init --region {region}`"
    )]
    RegionNotInitialized { region: String, data_dir: PathBuf },

    #[error("{action} {path}: {source}{hint}")]
    Io {
        action: &'static str,
        path: PathBuf,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is damaged ({what}): restore it from a backup")]
    Corrupt { path: PathBuf, what: String },

    /// A file written by a newer cryptvol (a format version this one does not know).
    #[error("{}", crate::format_version::newer_message(what, *found, *newest))]
    NewerFormat {
        what: String,
        found: u64,
        newest: u64,
    },

    /// AWS's message shape: "User: ARN is not authorized to perform: ACTION on resource: ...".
    #[error("{message}")]
    AccessDenied { message: String },

    #[error("the policy is invalid at {field}: {message} (the current policy is unchanged)")]
    MalformedPolicy { field: String, message: String },

    #[error("{what} does not exist{hint}")]
    NoSuchEntity { what: String, hint: String },

    #[error("{what} already exists")]
    EntityAlreadyExists { what: String },

    #[error("cannot delete {what}: {why}")]
    DeleteConflict { what: String, why: String },

    #[error("{what}")]
    LimitExceeded { what: String },

    /// A remote KMS answered with an error.
    #[error("{code} from the KMS at {endpoint}: {message}")]
    Remote {
        endpoint: String,
        code: String,
        message: String,
    },

    #[error(
        "the KMS at {endpoint} did not answer ({message}): check that it runs and that --kms-endpoint is right"
    )]
    EndpointUnreachable { endpoint: String, message: String },

    /// The AWS credential chain found no usable credentials (`aws::credentials`).
    #[error("{message}")]
    Credentials {
        problem: crate::aws::credentials::CredentialProblem,
        message: String,
    },

    /// An https endpoint whose certificate does not chain to a trusted root.
    #[error(
        "the certificate of the KMS at {endpoint} is not trusted ({message}): pass the CA that signed it with --kms-ca-bundle FILE (or AWS_CA_BUNDLE)"
    )]
    EndpointUntrusted { endpoint: String, message: String },

    /// A ciphertext blob that no cryptvol KMS made (AWS KMS's, say) where only this data
    /// dir's KMS was asked: its key lives in a remote KMS that nothing named.
    #[error(
        "the data key of {what} is not a cryptvol KMS ciphertext: this key lives in a remote KMS: pass --kms-endpoint URL"
    )]
    ForeignCiphertext { what: String },

    /// The audit trail could not record the call, so the call was not made.
    #[error("the audit log {path} could not record this call, so it was not made: {message}")]
    AuditFailed { path: PathBuf, message: String },

    /// A grant token that this KMS did not issue, or that is malformed.
    #[error("{message}")]
    InvalidGrantToken { message: String },

    /// A grant id that is not one (64 hexadecimal digits).
    #[error("{message}")]
    InvalidGrantId { message: String },
    /// A call with `DryRun` set passed every check; nothing was done.
    #[error("The request would have succeeded, but the DryRun option is set.")]
    DryRun,

    /// A tag refused as AWS refuses it (duplicate keys, the `aws:` prefix, too many).
    #[error("{message}")]
    Tag { message: String },

    /// A `Marker` that is not a `NextMarker` this KMS gave for that listing.
    #[error("{message}")]
    InvalidMarker { message: String },

    /// What AWS refuses without looking further, such as the reserved `alias/aws/` names.
    #[error("{message}")]
    NotAuthorized { message: String },

    /// A `CustomKeyStoreId` or `CustomKeyStoreName` that names no store of the region.
    #[error(
        "custom key store {id} does not exist (list them with `cryptvol kms describe-custom-key-stores`)"
    )]
    CustomKeyStoreNotFound { id: String },

    /// A custom key store operation AWS refuses with one of its custom key store
    /// exceptions (`code`): wrong connection state, name or token in use, keys left.
    #[error("{message}")]
    CustomKeyStore { code: &'static str, message: String },

    /// A key's custom key store is connected but its token cannot be reached now (module,
    /// token or PIN): AWS's KMSInvalidStateException, with the token's error.
    #[error(
        "key {key_arn} is in custom key store {store}, whose token cannot be reached: {problem} (then disconnect and connect the store: `cryptvol kms disconnect-custom-key-store` / `connect-custom-key-store --custom-key-store-id {store}`)"
    )]
    KeyStoreUnavailable {
        key_arn: String,
        store: String,
        problem: String,
    },

    /// A connected custom key store whose token cannot be reached (AWS: FAILED).
    #[error(
        "custom key store {store} is FAILED ({code}): {problem} (fix it, then `cryptvol kms disconnect-custom-key-store` and `connect-custom-key-store --custom-key-store-id {store}`)"
    )]
    KeyStoreFailed {
        store: String,
        code: &'static str,
        problem: String,
    },

    /// A member that breaks the API model's constraints, with AWS's own message
    /// ("1 validation error detected: ...").
    #[error("{message}")]
    InvalidInput { message: String },

    /// A `KeyId` that is none of key id, key ARN, alias name or alias ARN.
    #[error("Invalid keyId '{key_id}'")]
    InvalidKeyId { key_id: String },

    /// A Secrets Manager operation refused with one of its exceptions (`code`, one of
    /// [`SECRETS_CODES`]): ResourceNotFoundException, InvalidRequestException, ...
    #[error("{message}")]
    Secrets { code: &'static str, message: String },

    /// A secret's rotation command failed at one of its four steps: AWSCURRENT is where
    /// it was. AWS reports a failed rotation function as InvalidRequestException.
    #[error(
        "rotation of secret {secret_arn} failed at {step}: {message} (AWSCURRENT is unchanged; fix the rotation command, then `cryptvol secretsmanager rotate-secret --secret-id {secret_arn}{retry}`)"
    )]
    RotationFailed {
        secret_arn: String,
        step: &'static str,
        message: String,
        /// What the retry adds (` --client-request-token T`: an unfinished rotation is
        /// retried with its token), or nothing.
        retry: String,
    },
}

/// The exceptions of AWS Secrets Manager that cryptvol returns (`AwsError::Secrets`).
pub const SECRETS_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "ResourceExistsException",
    "InvalidRequestException",
    "InvalidParameterException",
    "InvalidNextTokenException",
    "LimitExceededException",
    "MalformedPolicyDocumentException",
    "PublicPolicyException",
    "PreconditionNotMetException",
    "EncryptionFailure",
    "DecryptionFailure",
    "InternalServiceError",
];

impl AwsError {
    /// The AWS KMS exception name for this error (`__type` on the wire).
    pub fn aws_code(&self) -> &'static str {
        use AwsError::*;
        match self {
            NotFound { .. } | KeyDeleted { .. } => "NotFoundException",
            Disabled { .. } => "DisabledException",
            InvalidState { .. } => "KMSInvalidStateException",
            InvalidCiphertext { .. } | BlobFromOtherRegion { .. } => "InvalidCiphertextException",
            WrongRegion { .. } => "NotFoundException",
            IncorrectKey { .. } => "IncorrectKeyException",
            AlreadyExists { .. } => "AlreadyExistsException",
            InvalidArn { .. } => "InvalidArnException",
            InvalidAliasName { .. } => "InvalidAliasNameException",
            Validation { .. } => "ValidationException",
            Unsupported { .. } => "UnsupportedOperationException",
            WrongPassphrase { .. }
            | WrongRootKey { .. }
            | RootKeyToken { .. }
            | PinSource { .. }
            | RootKeyRotated { .. }
            | PassphraseRequired { .. }
            | PassphraseFile { .. }
            | RegionNotInitialized { .. }
            | Io { .. }
            | Corrupt { .. }
            | NewerFormat { .. }
            | AuditFailed { .. } => "KMSInternalException",
            AccessDenied { .. } => "AccessDeniedException",
            MalformedPolicy { .. } => "MalformedPolicyDocumentException",
            NoSuchEntity { .. } => "NoSuchEntity",
            EntityAlreadyExists { .. } => "EntityAlreadyExists",
            DeleteConflict { .. } => "DeleteConflict",
            LimitExceeded { .. } => "LimitExceededException",
            Remote { code, .. } => known_code(code),
            EndpointUnreachable { .. } | EndpointUntrusted { .. } | Credentials { .. } => {
                "KMSInternalException"
            }
            ForeignCiphertext { .. } => "InvalidCiphertextException",
            InvalidGrantToken { .. } => "InvalidGrantTokenException",
            InvalidGrantId { .. } => "InvalidGrantIdException",
            DryRun => "DryRunOperationException",
            Tag { .. } => "TagException",
            InvalidMarker { .. } => "InvalidMarkerException",
            NotAuthorized { .. } => "NotAuthorizedException",
            CustomKeyStoreNotFound { .. } => "CustomKeyStoreNotFoundException",
            CustomKeyStore { code, .. } => code,
            KeyStoreUnavailable { .. } => "KMSInvalidStateException",
            KeyStoreFailed { .. } => "CustomKeyStoreInvalidStateException",
            InvalidInput { .. } => "ValidationException",
            InvalidKeyId { .. } => "NotFoundException",
            Secrets { code, .. } => code,
            RotationFailed { .. } => "InvalidRequestException",
        }
    }

    /// An I/O error on `path`, with a hint chosen from the error's kind (permissions, full
    /// disk) so the user sees the fix.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => {
                " (check the owner and mode of the data directory, or run as its owner)"
            }
            std::io::ErrorKind::StorageFull => " (free some space on that filesystem)",
            std::io::ErrorKind::ReadOnlyFilesystem => " (the filesystem is read-only)",
            _ => "",
        };
        AwsError::Io {
            action,
            path: path.into(),
            hint,
            source,
        }
    }

    pub fn from_policy(e: crate::policy::PolicyError) -> Self {
        AwsError::MalformedPolicy {
            field: e.path,
            message: e.message,
        }
    }

    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        AwsError::Validation {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// A remote error code as one of the names cryptvol knows (for exit codes and the
/// server's answers); anything else is an internal error.
fn known_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "AccessDeniedException",
        "AlreadyExistsException",
        "DisabledException",
        "IncorrectKeyException",
        "InvalidArnException",
        "InvalidAliasNameException",
        "InvalidCiphertextException",
        "InvalidGrantIdException",
        "InvalidGrantTokenException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "KMSInvalidStateException",
        "LimitExceededException",
        "MalformedPolicyDocumentException",
        "MissingAuthenticationTokenException",
        "NotFoundException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "UnsupportedOperationException",
        "ValidationException",
        "DryRunOperationException",
        "TagException",
        "InvalidMarkerException",
        "NotAuthorizedException",
        "CustomKeyStoreNotFoundException",
        "CustomKeyStoreInvalidStateException",
        "CustomKeyStoreNameInUseException",
        "CustomKeyStoreHasCMKsException",
        "CloudHsmClusterInUseException",
        "CloudHsmClusterNotFoundException",
        "CloudHsmClusterNotRelatedException",
        "CloudHsmClusterInvalidConfigurationException",
    ];
    CODES
        .iter()
        .chain(SECRETS_CODES)
        .find(|c| **c == code)
        .copied()
        .unwrap_or("KMSInternalException")
}

/// What a remote client is told of an internal error; the detail stays in the server's log.
pub const INTERNAL_REMOTE_MESSAGE: &str =
    "The request failed because of an internal error of the KMS. Try again later.";

impl AwsError {
    /// The message for a remote client (the KMS server's error body), in AWS's shape:
    /// what failed, naming the key by ARN, without this machine's paths, CLI commands or
    /// flags; an internal error (I/O, corruption, the audit trail, the region's root key)
    /// is one generic sentence, and its detail is for the server's log only.
    pub fn remote_message(&self) -> String {
        use AwsError::*;
        if self.aws_code() == "KMSInternalException" && !matches!(self, Remote { .. }) {
            return INTERNAL_REMOTE_MESSAGE.to_string();
        }
        let text = match self {
            NotFound { what } | NoSuchEntity { what, .. } => format!("{what} does not exist"),
            Disabled { key_arn } => format!("{key_arn} is disabled."),
            InvalidState {
                key_arn,
                state,
                operation,
                ..
            } => format!("{key_arn} is {state}, so {operation} is not allowed."),
            BlobFromOtherRegion { blob_region, here } => format!(
                "the ciphertext blob was made in region {blob_region}, not in region {here} \
                 (the region of the request's credential scope)"
            ),
            WrongRegion { what, named, here } => {
                format!("{what} is in region {named}, not in region {here}")
            }
            AlreadyExists { what, .. } => format!("{what} already exists"),
            Remote { message, .. } => message.clone(),
            ForeignCiphertext { .. } => {
                "the ciphertext blob is not a cryptvol KMS ciphertext".into()
            }
            other => other.to_string(),
        };
        scrub_remote(&text)
    }
}

/// Cuts local advice out of a message meant for a remote client: the clause that holds
/// a `command` (from the last ": ", " (", "; " or ", " before its first backtick), and
/// any word that is an absolute path.
fn scrub_remote(text: &str) -> String {
    let mut out = match text.find('`') {
        Some(tick) => {
            let head = &text[..tick];
            let cut = [": ", " (", "; ", ", "]
                .iter()
                .filter_map(|sep| head.rfind(sep))
                .max();
            match cut {
                Some(cut) if cut > 0 => text[..cut].to_string(),
                _ => text.replace('`', "'"),
            }
        }
        None => text.to_string(),
    };
    if out.contains('/') {
        out = out
            .split(' ')
            .map(|word| {
                let bare = word.trim_start_matches(['(', '\'', '"']);
                if bare.starts_with('/') {
                    "<path>"
                } else {
                    word
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    out
}

pub type Result<T, E = AwsError> = std::result::Result<T, E>;

#[cfg(test)]
mod remote_message_tests {
    use super::*;

    #[test]
    fn remote_messages_carry_no_local_advice_or_paths() {
        let arn = "arn:aws:kms:local-1:111122223333:key/0b7c3f3e-1111-4222-8333-444455556666";
        let cases = [
            AwsError::NotFound {
                what: "key 0b7c in region local-1".into(),
            },
            AwsError::Disabled {
                key_arn: arn.into(),
            },
            AwsError::InvalidState {
                key_arn: arn.into(),
                state: "pending deletion until 2026-12-01".into(),
                operation: "Encrypt".into(),
                hint: format!(": cancel with `cryptvol kms cancel-key-deletion --key-id {arn}`"),
            },
            AwsError::io(
                "cannot write",
                "/var/lib/cryptvol/regions/local-1/keystore.cvks",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ),
            AwsError::RegionNotInitialized {
                region: "x-1".into(),
                data_dir: "/srv/data".into(),
            },
            AwsError::Unsupported {
                message: format!(
                    "key {arn} is an AWS managed key: it cannot be disabled (use a customer managed key from `cryptvol kms create-key` for control)"
                ),
            },
            AwsError::BlobFromOtherRegion {
                blob_region: "eu-2".into(),
                here: "local-1".into(),
            },
        ];
        for e in &cases {
            let m = e.remote_message();
            assert!(!m.is_empty(), "{e:?}");
            assert!(!m.contains('`'), "{m}");
            assert!(!m.contains("cryptvol "), "{m}");
            assert!(!m.contains("--"), "{m}");
            assert!(!m.contains(" /"), "{m}");
        }
        assert_eq!(cases[1].remote_message(), format!("{arn} is disabled."));
        assert_eq!(cases[3].remote_message(), INTERNAL_REMOTE_MESSAGE);
        assert_eq!(
            cases[5].remote_message(),
            format!("key {arn} is an AWS managed key: it cannot be disabled")
        );
    }
}
