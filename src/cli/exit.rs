//! The exit-code table (docs/cli.md keeps the same table) and the CLI's error type.
//! Every failure maps here, in one place; nothing else picks exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::aws::AwsError;
use crate::volume::VolumeError;
use crate::volume::error::ErrorKind;

/// Exit codes, stable across releases: scripts may match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    Ok = 0,
    Internal = 1,
    Usage = 2,
    NotFound = 3,
    InvalidState = 4,
    InvalidCiphertext = 5,
    InvalidValue = 6,
    WrongSecret = 7,
    Region = 8,
    AlreadyExists = 9,
    Unsupported = 10,
    Io = 11,
    Corrupt = 12,
    /// A file or record written by a newer cryptvol: upgrade.
    NewerFormat = 13,
    KeyDeleted = 14,
    NoSpace = 15,
    Busy = 16,
    SystemTool = 17,
    AccessDenied = 18,
    /// `audit verify` found an altered, removed or reordered event.
    AuditTampered = 19,
    /// The remote KMS endpoint (`--kms-endpoint`) did not answer, or its certificate is
    /// not trusted.
    KmsUnreachable = 20,
    /// `pool check` found problems (or `--repair` left some).
    PoolDamaged = 21,
    /// `--dry-run`: the call would have succeeded; nothing was done.
    DryRun = 22,
    /// The snapshot store (S3) did not answer, refused the request, or lacks the object.
    SnapshotStore = 23,
    /// The KMS returned a data key that fails the volume header's key check.
    WrongDataKey = 24,
    /// A block or the metadata of an authenticated volume fails its check (`volume verify`
    /// found bad blocks, or attach found the metadata changed).
    Integrity = 25,
    /// An authenticated volume's pool is older than its anchor: `--accept-rollback`.
    RolledBack = 26,
    /// A custom key store's token cannot be reached: module, token or PIN.
    KeyStore = 27,
    /// A secret's rotation command failed at one of its steps (AWSCURRENT unchanged).
    RotationFailed = 28,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failure of one CLI command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Kms(#[from] AwsError),
    #[error(transparent)]
    Volume(VolumeError),
    /// An input file named on the command line is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    InputFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write {path}: {source}")]
    OutputFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The audit trail could not be read.
    #[error("{0}")]
    Audit(String),
    /// `audit verify` found tampering.
    #[error("the audit trail fails verification: {0}")]
    AuditTampered(String),
    /// `pool check` found problems; the report is printed, this is its summary.
    #[error("{0}")]
    PoolDamaged(String),
    /// `secretsmanager rotate-due`: a rotation failed; the reports are printed, this is
    /// the summary.
    #[error("{0}")]
    RotationsFailed(String),
    /// Another process holds what the command needs.
    #[error("{0}")]
    Busy(String),
    /// Archiving to, restoring from or deleting in the snapshot store failed.
    #[error(transparent)]
    Archive(crate::snapshot::archive::ArchiveError),
    /// `--destination-region` names a region this data dir does not have.
    #[error(
        "region {region} is not on this machine ({data_dir}): to copy into another machine's region, name its store and KMS with --destination-snapshot-store s3://BUCKET/PREFIX --destination-kms-endpoint URL; for a region here, run `cryptvol init --region {region}`"
    )]
    RegionElsewhere { region: String, data_dir: PathBuf },
    /// A flag's value is malformed.
    #[error("invalid {flag}: {message}")]
    BadArgument { flag: &'static str, message: String },
}

impl CliError {
    pub fn bad(flag: &'static str, message: impl Into<String>) -> Self {
        CliError::BadArgument {
            flag,
            message: message.into(),
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            CliError::Kms(e) => kms_exit(e),
            CliError::Volume(VolumeError::Kms(e)) => kms_exit(e),
            CliError::Volume(e) => volume_exit(e.kind()),
            CliError::InputFile { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => Exit::NotFound,
                _ => Exit::Io,
            },
            CliError::OutputFile { .. } => Exit::Io,
            CliError::BadArgument { .. } => Exit::InvalidValue,
            CliError::RegionElsewhere { .. } => Exit::Region,
            CliError::Audit(_) => Exit::Io,
            CliError::AuditTampered(_) => Exit::AuditTampered,
            CliError::PoolDamaged(_) => Exit::PoolDamaged,
            CliError::RotationsFailed(_) => Exit::RotationFailed,
            CliError::Busy(_) => Exit::Busy,
            CliError::Archive(e) => archive_exit(e),
        }
    }

    /// The AWS exception name, shown before the message as the AWS CLI does.
    pub fn code_name(&self) -> Option<&'static str> {
        match self {
            CliError::Kms(e) | CliError::Volume(VolumeError::Kms(e)) => {
                Some(e.aws_code()).filter(|c| *c != "KMSInternalException")
            }
            _ => None,
        }
    }
}

impl From<VolumeError> for CliError {
    fn from(e: VolumeError) -> Self {
        // KMS failures keep their own exit codes and AWS names.
        match e {
            VolumeError::Kms(k) => CliError::Kms(k),
            other => CliError::Volume(other),
        }
    }
}

impl From<crate::snapshot::archive::ArchiveError> for CliError {
    fn from(e: crate::snapshot::archive::ArchiveError) -> Self {
        use crate::snapshot::archive::ArchiveError as A;
        // Key and pool failures keep their own exit codes.
        match e {
            A::Volume(v) => v.into(),
            A::Kms(k) => CliError::Kms(k),
            other => CliError::Archive(other),
        }
    }
}

impl From<crate::snapshot::store::StoreError> for CliError {
    fn from(e: crate::snapshot::store::StoreError) -> Self {
        CliError::Archive(e.into())
    }
}

fn archive_exit(e: &crate::snapshot::archive::ArchiveError) -> Exit {
    use crate::snapshot::archive::ArchiveError as A;
    use crate::snapshot::store::StoreError as S;
    match e {
        A::Store(S::Config { .. }) => Exit::InvalidValue,
        A::Store(S::Request { .. }) => Exit::SnapshotStore,
        A::Volume(v) => volume_exit(v.kind()),
        A::Kms(k) => kms_exit(k),
        A::NoStore { .. } => Exit::InvalidState,
        A::NotInStore { .. } => Exit::NotFound,
        A::Busy { .. } | A::CopyBusy { .. } => Exit::Busy,
        A::Changed { .. } => Exit::Corrupt,
        A::Interrupted(_) => Exit::Internal,
        A::NeedsCustomerKey { .. } => Exit::InvalidValue,
    }
}

fn volume_exit(k: ErrorKind) -> Exit {
    match k {
        ErrorKind::NotFound | ErrorKind::NotAttached => Exit::NotFound,
        ErrorKind::NameTaken => Exit::AlreadyExists,
        ErrorKind::Attached => Exit::InvalidState,
        ErrorKind::Invalid => Exit::InvalidValue,
        ErrorKind::WrongKey => Exit::WrongSecret,
        ErrorKind::WrongDataKey => Exit::WrongDataKey,
        ErrorKind::Integrity => Exit::Integrity,
        ErrorKind::RolledBack => Exit::RolledBack,
        ErrorKind::NoSpace => Exit::NoSpace,
        ErrorKind::Io => Exit::Io,
        ErrorKind::Corrupt => Exit::Corrupt,
        ErrorKind::NewerFormat => Exit::NewerFormat,
        ErrorKind::Busy => Exit::Busy,
        ErrorKind::Tool => Exit::SystemTool,
        ErrorKind::Unsupported => Exit::Unsupported,
        ErrorKind::Kms | ErrorKind::Other => Exit::Internal,
    }
}

fn kms_exit(e: &AwsError) -> Exit {
    use AwsError::*;
    match e {
        NotFound { .. } => Exit::NotFound,
        KeyDeleted { .. } => Exit::KeyDeleted,
        Disabled { .. } | InvalidState { .. } => Exit::InvalidState,
        InvalidCiphertext { .. } | IncorrectKey { .. } => Exit::InvalidCiphertext,
        BlobFromOtherRegion { .. } | WrongRegion { .. } | RegionNotInitialized { .. } => {
            Exit::Region
        }
        AlreadyExists { .. } => Exit::AlreadyExists,
        InvalidArn { .. } | InvalidAliasName { .. } | Validation { .. } => Exit::InvalidValue,
        Unsupported { .. } => Exit::Unsupported,
        WrongPassphrase { .. } | WrongRootKey { .. } | PassphraseRequired { .. } => {
            Exit::WrongSecret
        }
        PassphraseFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Exit::NotFound
        }
        Io { .. } | PassphraseFile { .. } => Exit::Io,
        RootKeyToken { error, .. } => match error {
            crate::hsm::HsmError::PinIncorrect { .. }
            | crate::hsm::HsmError::PinLocked { .. }
            | crate::hsm::HsmError::UserNotInitialized { .. } => Exit::WrongSecret,
            crate::hsm::HsmError::BadUri(..) => Exit::InvalidValue,
            _ => Exit::KeyStore,
        },
        PinSource { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Exit::NotFound,
        PinSource { .. } => Exit::Io,
        RootKeyRotated { .. } => Exit::InvalidState,
        Corrupt { .. } => Exit::Corrupt,
        NewerFormat { .. } => Exit::NewerFormat,
        AccessDenied { .. } => Exit::AccessDenied,
        MalformedPolicy { .. } => Exit::InvalidValue,
        NoSuchEntity { .. } => Exit::NotFound,
        EntityAlreadyExists { .. } => Exit::AlreadyExists,
        DeleteConflict { .. } | LimitExceeded { .. } => Exit::InvalidState,
        AuditFailed { .. } => Exit::Io,
        EndpointUnreachable { .. } => Exit::KmsUnreachable,
        EndpointUntrusted { .. } => Exit::KmsUnreachable,
        ForeignCiphertext { .. } => Exit::NotFound,
        Credentials { problem, .. } => {
            use crate::aws::credentials::CredentialProblem as P;
            match problem {
                P::NotFound | P::Expired => Exit::WrongSecret,
                P::NoSuchProfile => Exit::NotFound,
                P::Malformed => Exit::InvalidValue,
                P::Process => Exit::SystemTool,
                P::Unsupported => Exit::Unsupported,
            }
        }
        InvalidGrantToken { .. } | InvalidGrantId { .. } => Exit::InvalidValue,
        DryRun => Exit::DryRun,
        Tag { .. } | InvalidMarker { .. } | InvalidInput { .. } => Exit::InvalidValue,
        NotAuthorized { .. } => Exit::AccessDenied,
        CustomKeyStoreNotFound { .. } | InvalidKeyId { .. } => Exit::NotFound,
        KeyStoreUnavailable { .. } | KeyStoreFailed { .. } => Exit::KeyStore,
        CustomKeyStore { code, .. } => custom_key_store_exit(code),
        Secrets { code, .. } => secrets_exit(code),
        RotationFailed { .. } => Exit::RotationFailed,
        Remote { .. } => match e.aws_code() {
            "AccessDeniedException" => Exit::AccessDenied,
            "NotFoundException" => Exit::NotFound,
            "DisabledException" | "KMSInvalidStateException" | "LimitExceededException" => {
                Exit::InvalidState
            }
            "InvalidCiphertextException" | "IncorrectKeyException" => Exit::InvalidCiphertext,
            "ValidationException"
            | "InvalidArnException"
            | "InvalidAliasNameException"
            | "MalformedPolicyDocumentException"
            | "InvalidGrantTokenException"
            | "InvalidGrantIdException" => Exit::InvalidValue,
            "UnrecognizedClientException"
            | "ExpiredTokenException"
            | "InvalidSignatureException"
            | "IncompleteSignatureException"
            | "MissingAuthenticationTokenException" => Exit::WrongSecret,
            "AlreadyExistsException" => Exit::AlreadyExists,
            "UnsupportedOperationException" => Exit::Unsupported,
            "DryRunOperationException" => Exit::DryRun,
            "TagException" | "InvalidMarkerException" => Exit::InvalidValue,
            "NotAuthorizedException" => Exit::AccessDenied,
            "CustomKeyStoreNotFoundException" => Exit::NotFound,
            code if code.starts_with("CustomKeyStore") || code.starts_with("CloudHsm") => {
                custom_key_store_exit(code)
            }
            code if crate::aws::error::SECRETS_CODES.contains(&code) => secrets_exit(code),
            _ => Exit::Internal,
        },
    }
}

/// Exit codes of the custom key store exceptions.
fn custom_key_store_exit(code: &str) -> Exit {
    match code {
        "CustomKeyStoreNameInUseException" | "CloudHsmClusterInUseException" => Exit::AlreadyExists,
        "CustomKeyStoreNotFoundException" | "CloudHsmClusterNotFoundException" => Exit::NotFound,
        "CloudHsmClusterNotRelatedException" | "CloudHsmClusterInvalidConfigurationException" => {
            Exit::InvalidValue
        }
        _ => Exit::InvalidState,
    }
}

impl From<crate::sys::tool::ToolError> for CliError {
    fn from(e: crate::sys::tool::ToolError) -> Self {
        VolumeError::from(e).into()
    }
}

/// Exit codes of Secrets Manager's exceptions.
fn secrets_exit(code: &str) -> Exit {
    match code {
        "ResourceNotFoundException" => Exit::NotFound,
        "ResourceExistsException" => Exit::AlreadyExists,
        "InvalidRequestException" | "LimitExceededException" | "PreconditionNotMetException" => {
            Exit::InvalidState
        }
        "InvalidParameterException"
        | "InvalidNextTokenException"
        | "MalformedPolicyDocumentException"
        | "PublicPolicyException" => Exit::InvalidValue,
        "EncryptionFailure" | "DecryptionFailure" => Exit::InvalidCiphertext,
        _ => Exit::Internal,
    }
}
