//! The volume layer's errors: one line each naming the object and the fix. Storage faults
//! are kept apart from corruption, and "no space" from other I/O, because the FUSE layer
//! maps them to different errno values (ENOSPC, EIO) and the CLI to different exit codes.

use std::path::PathBuf;

use crate::aws::AwsError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    #[error("{} does not exist in region {region} (see `cryptvol volume list` / `snapshot list`)", if name.starts_with("snapshot ") { name.clone() } else { format!("volume {name}") })]
    NotFound { name: String, region: String },

    #[error("a volume named {name} already exists ({id}): choose another --name")]
    NameTaken { name: String, id: String },

    #[error("volume {id} is attached at {at}: {hint}")]
    Attached {
        id: String,
        at: String,
        hint: String,
    },

    #[error("{what} is in use by {by}: {hint}")]
    InUse {
        what: String,
        by: String,
        hint: String,
    },

    #[error("{what} was cancelled (its caller went away); run the same command again to resume")]
    Cancelled { what: String },

    #[error("nothing is attached at {at}")]
    NotAttached { at: String },

    #[error(
        "{at} is in use (an open file, a loop device or a mount on it): close that first; for `cryptvol mount` use `cryptvol unmount`"
    )]
    MountBusy { at: String },

    #[error("invalid {what}: {message}")]
    InvalidArgument { what: String, message: String },

    /// Something this machine cannot do (a kernel feature that is missing).
    #[error("{what} is not available: {why}; {hint}")]
    Unsupported {
        what: String,
        why: String,
        hint: String,
    },

    #[error("the customer key does not open volume {id}: give the key file it was created with")]
    WrongCustomerKey { id: String },

    /// The KMS answered Decrypt with a data key that does not match the header's key check.
    #[error(
        "the KMS {kms} returned a data key that is not the key of {what} (KMS key {key_arn}): nothing was read or written; check --kms-endpoint and that this KMS is the one that holds the volume's key"
    )]
    WrongDataKey {
        /// `volume vol-…`, or the snapshot a copy makes.
        what: String,
        key_arn: String,
        kms: String,
    },

    #[error("volume {id} uses a customer-provided key: pass --customer-key-file FILE")]
    CustomerKeyRequired { id: String },

    #[error("bytes {offset}..{} are past the end of the volume ({size} bytes)", offset + len)]
    OutOfRange { offset: u64, len: u64, size: u64 },

    #[error(
        "no space left on the filesystem holding {path}: free some space; the volume stays usable"
    )]
    NoSpace { path: PathBuf },

    #[error("{what} is detached, but its last writes may not be on the disk: {source}")]
    DetachedUnflushed {
        what: String,
        source: Box<VolumeError>,
    },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} is damaged: {detail}")]
    Corrupt { what: String, detail: String },

    /// A record or pool written by a newer cryptvol (a format version this one does not know).
    #[error("{}", crate::format_version::newer_message(what, *found, *newest))]
    NewerFormat {
        what: String,
        found: u64,
        newest: u64,
    },

    #[error(
        "the pool {path} is in use by another cryptvol process (a region daemon with attached volumes?): detach them, or stop that process"
    )]
    PoolBusy { path: PathBuf },

    #[error("{tool} failed: {message}")]
    Tool { tool: String, message: String },

    #[error("the pool metadata database failed: {0}")]
    Metadata(String),

    #[error(transparent)]
    Kms(#[from] AwsError),

    /// A chunk of a lazily restored volume could not be fetched, or was not what its row
    /// says (`detail` names the fix).
    #[error(
        "chunk {chunk} of {owner} could not be read from the object store (object {object}): {detail}"
    )]
    RemoteChunk {
        owner: String,
        chunk: u64,
        object: String,
        kind: ErrorKind,
        detail: String,
    },

    #[error(
        "volume {volume} has chunks in the object store but region {region} has no snapshot store configured (cryptvol region set-snapshot-store ...)"
    )]
    NoSnapshotStore { volume: String, region: String },

    /// A rekeying copy of a snapshot some of whose chunks are still in the object store.
    #[error(
        "snapshot {snapshot} has {chunks} chunks still in the object store (restored lazily): hydrate first: restore it to a volume, run `cryptvol volume hydrate` on that volume, snapshot it and copy the new snapshot"
    )]
    NotHydrated { snapshot: String, chunks: u64 },

    /// A block of an authenticated volume whose ciphertext fails its MAC: read as EIO.
    #[error(
        "volume {volume}: block {block} fails its integrity check ({detail}); the pool was changed outside cryptvol: restore the volume from a snapshot, or run `cryptvol volume verify {volume}` for every bad block"
    )]
    BadBlock {
        volume: String,
        block: u64,
        detail: &'static str,
    },

    /// The metadata of an authenticated volume does not match its root.
    #[error(
        "volume {volume} fails its integrity check: {detail}; its pool was changed outside cryptvol: restore it from a snapshot"
    )]
    Tampered { volume: String, detail: String },

    /// A block of an authenticated snapshot being copied out of a snapshot store fails its
    /// tag: the copy stops before it writes anything of it.
    #[error(
        "snapshot {snapshot} in {store}: block {block} of chunk {chunk} fails its integrity check, so it was not copied; the archived snapshot was changed in the store: archive {snapshot} again from its region, or copy another snapshot"
    )]
    BadSourceBlock {
        snapshot: String,
        store: String,
        chunk: u64,
        block: u64,
    },

    /// An authenticated volume's pool is older than its anchor.
    #[error(
        "volume {volume} was rolled back: its pool metadata is at generation {pool_generation}, its anchor at {anchor_generation} ({detail}); if you restored the pool from a backup on purpose, attach with --accept-rollback"
    )]
    RolledBack {
        volume: String,
        pool_generation: u64,
        anchor_generation: u64,
        detail: &'static str,
    },

    /// An error the region daemon reported, with its class kept for the exit code.
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
}

/// The class of a failure: what the CLI's exit code depends on. It crosses the daemon's
/// control socket, so it is serialisable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    NameTaken,
    Attached,
    NotAttached,
    Invalid,
    WrongKey,
    /// A KMS returned a data key that fails the volume's key check.
    WrongDataKey,
    /// A block or the metadata of an authenticated volume fails its check.
    Integrity,
    /// An authenticated volume's pool is older than its anchor.
    RolledBack,
    NoSpace,
    Io,
    Corrupt,
    NewerFormat,
    Busy,
    Kms,
    Tool,
    /// Something this machine cannot do.
    Unsupported,
    Other,
}

impl VolumeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            VolumeError::NotFound { .. } => ErrorKind::NotFound,
            VolumeError::NameTaken { .. } => ErrorKind::NameTaken,
            VolumeError::Attached { .. }
            | VolumeError::MountBusy { .. }
            | VolumeError::InUse { .. } => ErrorKind::Attached,
            VolumeError::NotAttached { .. } => ErrorKind::NotAttached,
            VolumeError::InvalidArgument { .. } | VolumeError::OutOfRange { .. } => {
                ErrorKind::Invalid
            }
            VolumeError::WrongCustomerKey { .. } | VolumeError::CustomerKeyRequired { .. } => {
                ErrorKind::WrongKey
            }
            VolumeError::WrongDataKey { .. } => ErrorKind::WrongDataKey,
            VolumeError::BadBlock { .. }
            | VolumeError::BadSourceBlock { .. }
            | VolumeError::Tampered { .. } => ErrorKind::Integrity,
            VolumeError::RolledBack { .. } => ErrorKind::RolledBack,
            VolumeError::NoSpace { .. } => ErrorKind::NoSpace,
            VolumeError::Io { .. } => ErrorKind::Io,
            VolumeError::DetachedUnflushed { source, .. } => source.kind(),
            VolumeError::Corrupt { .. } | VolumeError::Metadata(_) => ErrorKind::Corrupt,
            VolumeError::NewerFormat { .. } => ErrorKind::NewerFormat,
            VolumeError::PoolBusy { .. } | VolumeError::Cancelled { .. } => ErrorKind::Busy,
            VolumeError::Kms(_) => ErrorKind::Kms,
            VolumeError::Tool { .. } => ErrorKind::Tool,
            VolumeError::Unsupported { .. } => ErrorKind::Unsupported,
            VolumeError::Remote { kind, .. } | VolumeError::RemoteChunk { kind, .. } => *kind,
            VolumeError::NoSnapshotStore { .. } | VolumeError::NotHydrated { .. } => {
                ErrorKind::Invalid
            }
        }
    }

    /// An I/O error on `path`; ENOSPC becomes [`VolumeError::NoSpace`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == std::io::ErrorKind::StorageFull
        {
            return VolumeError::NoSpace { path };
        }
        VolumeError::Io {
            action,
            path,
            source,
        }
    }

    pub fn invalid(what: &str, message: impl Into<String>) -> Self {
        VolumeError::InvalidArgument {
            what: what.to_string(),
            message: message.into(),
        }
    }

    /// The errno the FUSE layer answers with.
    pub fn errno(&self) -> i32 {
        match self {
            VolumeError::NoSpace { .. } => libc::ENOSPC,
            VolumeError::InvalidArgument { .. } => libc::EINVAL,
            VolumeError::OutOfRange { .. } => libc::EFBIG,
            VolumeError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for VolumeError {
            fn from(e: $t) -> Self {
                VolumeError::Metadata(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError
);

impl From<redb::StorageError> for VolumeError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            // A full disk under the metadata is "no space", not damage.
            redb::StorageError::Io(io) => VolumeError::io("metadata write", "pool/meta.redb", io),
            // redb's memory of an earlier I/O failure (a full disk): the pool reopens it.
            redb::StorageError::PreviousIo => VolumeError::Io {
                action: "metadata write",
                path: "pool/meta.redb".into(),
                source: std::io::Error::other("an earlier write failed; retrying after reopen"),
            },
            other => VolumeError::Metadata(other.to_string()),
        }
    }
}

impl From<redb::CommitError> for VolumeError {
    fn from(e: redb::CommitError) -> Self {
        match e {
            redb::CommitError::Storage(s) => s.into(),
            other => VolumeError::Metadata(other.to_string()),
        }
    }
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

impl From<crate::sys::tool::ToolError> for VolumeError {
    fn from(e: crate::sys::tool::ToolError) -> Self {
        VolumeError::Tool {
            tool: e.tool,
            message: e.message,
        }
    }
}
