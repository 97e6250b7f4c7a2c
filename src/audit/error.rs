//! The audit log's errors: I/O kept apart from damage found in the files, each one line that
//! names the file and what to do. Tampering found by `verify` is not an error but a
//! [`Problem`](super::Problem) in its report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(
        "cannot {action} {path}: {source}: check that the audit directory is writable and the disk has space"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the audit log file {path} is damaged: {message}")]
    Corrupt { path: PathBuf, message: String },

    #[error("an audit event must be a JSON object (a CloudTrail record), not another JSON value")]
    NotAnObject,

    #[error(
        "the audit log in {dir} continues under chain key {epoch}, which this process does not have: the region's root key was rotated; reopen the region (restart this command or server)"
    )]
    ChainKeyUnknown { dir: PathBuf, epoch: u32 },

    #[error(
        "the time {now} (unix seconds) is outside the years 0000..9999 that log file names can hold: check the clock"
    )]
    TimeOutOfRange { now: i64 },
}

impl AuditError {
    /// A copy for each of the callers of a group commit that failed together (an I/O
    /// error's copy keeps its kind and message).
    pub(super) fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Io {
                action,
                path,
                source,
            } => AuditError::Io {
                action,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            AuditError::Corrupt { path, message } => AuditError::Corrupt {
                path: path.clone(),
                message: message.clone(),
            },
            AuditError::NotAnObject => AuditError::NotAnObject,
            AuditError::ChainKeyUnknown { dir, epoch } => AuditError::ChainKeyUnknown {
                dir: dir.clone(),
                epoch: *epoch,
            },
            AuditError::TimeOutOfRange { now } => AuditError::TimeOutOfRange { now: *now },
        }
    }
}

pub type Result<T> = std::result::Result<T, AuditError>;

/// `map_err` helper: `.map_err(io("open", &path))`.
pub(super) fn io<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> AuditError + 'a {
    move |source| AuditError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}
