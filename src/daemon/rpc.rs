//! The region daemon's control protocol, on `<region>/run/daemon.sock` (mode 0600 in a
//! 0700 directory): one request per connection, as one JSON line `{"v": VERSION,
//! "request": {...}}`, answered by zero or more progress lines and one final line.
//! Requests and replies are typed on both sides: a reply that does not parse as the type
//! its request expects is an error, never a default. Documented in docs/formats.md,
//! "Control socket".
//!
//! The client side is in `client.rs`, the daemon's side in `socket.rs`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::snapshot::reencrypt::CopyJob;
use crate::snapshot::{PendingCopy, SnapshotRecord};
use crate::volume::error::{ErrorKind, Result};
use crate::volume::remote::RemoteChunk;
use crate::volume::{VolumeError, VolumeHeader, VolumeId};

/// The protocol version. A daemon refuses a request of another version with a message
/// that says how to get going again (after an upgrade, an old daemon may still run).
pub const VERSION: u32 = 4;

/// What goes on the wire: the version and the request.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub request: Request,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// → u32 (the daemon's pid)
    Ping,
    /// → DaemonStatus
    Status,
    /// → (). `data_key` is the volume's 64-byte data key, base64; the daemon derives the
    /// XTS key and zeroizes both.
    Attach {
        volume: VolumeId,
        dir: PathBuf,
        data_key: WireSecret,
        /// Attach an authenticated volume whose pool is older than its anchor.
        #[serde(default)]
        accept_rollback: bool,
        /// Which FUSE transport serves it (`--fuse-transport`).
        #[serde(default)]
        transport: super::transport::FuseTransport,
    },
    /// → DetachReply
    Detach {
        dir: PathBuf,
    },
    /// → ()
    Flush {
        volume: VolumeId,
    },
    ListVolumes,
    GetVolume {
        volume: VolumeId,
    },
    CreateVolume {
        header: VolumeHeader,
    },
    ResizeVolume {
        volume: VolumeId,
        size: u64,
    },
    DeleteVolume {
        volume: VolumeId,
    },
    AllocatedBytes {
        volume: VolumeId,
    },
    CreateSnapshot {
        volume: VolumeId,
        record: SnapshotRecord,
    },
    ListSnapshots,
    GetSnapshot {
        snapshot: String,
    },
    DeleteSnapshot {
        snapshot: String,
    },
    RestoreVolume {
        snapshot: String,
        header: VolumeHeader,
    },
    LoadMap {
        owner: String,
    },
    TakeLease {
        snapshot: String,
        holder: String,
    },
    ReleaseLease {
        snapshot: String,
        holder: String,
    },
    ListLeases {
        snapshot: String,
    },
    ListPending,
    /// → (). The copy's record, before its source is leased.
    BeginCopy {
        owner: String,
        pending: PendingCopy,
    },
    /// → (). The chunk size comes from the copy's own record.
    AbandonPending {
        owner: String,
    },
    /// → (). A volume whose chunks live in the object store (lazy restore).
    RestoreRemoteVolume {
        header: VolumeHeader,
        chunks: Vec<WireRemoteChunk>,
        /// An authenticated volume's first root (base64 of the 72-byte `roots` row).
        #[serde(default)]
        root: Option<String>,
    },
    /// → u64
    RemoteBytes {
        volume: VolumeId,
    },
    /// → Vec<WireRemoteChunk>
    LoadRemote {
        owner: String,
    },
    /// → u64 (bytes fetched), after `Frame::Progress` lines. Stops when this connection
    /// closes (what was fetched stays).
    /// → VerifyReport
    VerifyVolume {
        volume: VolumeId,
        data_key: WireSecret,
    },
    /// → Vec<(chunk, tweak domain)> of the chunks not in domain 0
    LoadDomains {
        owner: String,
        shift: u8,
    },
    /// → Vec<(chunk, base64 slot record)>
    LoadRecords {
        owner: String,
        shift: u8,
    },
    /// → u64
    IntegrityErrors {
        volume: VolumeId,
    },
    HydrateVolume {
        volume: VolumeId,
    },
    CheckPool,
    RepairPool,
    /// → CopyStats, after `Frame::Progress` lines. The job is cancelled when this
    /// connection closes.
    RunCopy {
        job: CopyJob,
    },
}

/// A remote chunk on the wire, compactly: (chunk index, object key, blake3 in hex, length,
/// tweak domain, slot record in base64 or null).
pub type WireRemoteChunk = (u64, String, String, u32, u64, Option<String>);

pub fn remote_to_wire(rows: Vec<(u64, RemoteChunk)>) -> Vec<WireRemoteChunk> {
    rows.into_iter()
        .map(|(c, rc)| {
            let hex = blake3::Hash::from(rc.blake3).to_hex().to_string();
            let record = rc.record.as_deref().map(crate::aws::b64::encode);
            (c, rc.object, hex, rc.len, rc.domain, record)
        })
        .collect()
}

pub fn remote_from_wire(rows: Vec<WireRemoteChunk>) -> Result<Vec<(u64, RemoteChunk)>> {
    rows.into_iter()
        .map(|(c, object, hex, len, domain, record)| {
            let hash = blake3::Hash::from_hex(&hex).map_err(|_| {
                VolumeError::invalid("remote chunk", format!("blake3 of {object} is not hex"))
            })?;
            let record = record
                .map(|r| crate::aws::b64::decode(&r))
                .transpose()
                .map_err(|_| {
                    VolumeError::invalid(
                        "remote chunk",
                        format!("record of {object} is not base64"),
                    )
                })?;
            Ok((
                c,
                RemoteChunk {
                    object,
                    blake3: *hash.as_bytes(),
                    len,
                    domain,
                    record,
                },
            ))
        })
        .collect()
}

/// A secret on the wire (a data key, base64): zeroized when dropped, never printed.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct WireSecret(pub String);

impl Drop for WireSecret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for WireSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// One line of a reply: progress of a long request, or its result.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame<T> {
    Progress(u64),
    Done(std::result::Result<T, WireError>),
}

/// A failure as it crosses the socket: its class (for the exit code) and its line.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<VolumeError> for WireError {
    fn from(e: VolumeError) -> WireError {
        WireError {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// The final line of a reply.
pub fn done_line<T: Serialize>(r: Result<T>) -> Vec<u8> {
    let mut out =
        serde_json::to_vec(&Frame::Done(r.map_err(WireError::from))).expect("replies serialize");
    out.push(b'\n');
    out
}

/// What `status` reports about one attached volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedInfo {
    pub volume_id: VolumeId,
    pub dir: PathBuf,
    pub size: u64,
    pub allocated_bytes: u64,
    /// How the kernel's requests reach the daemon: "io_uring" once the ring has answered
    /// one, else "/dev/fuse" (absent from a daemon older than the ring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuse_transport: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonStatus {
    pub pid: u32,
    pub attached: Vec<AttachedInfo>,
}

/// The answer to a detach: the last detach stops the daemon, and says so with its pid
/// so the client can wait for the pool to be free before its next command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DetachReply {
    pub daemon_stopping: Option<u32>,
}
