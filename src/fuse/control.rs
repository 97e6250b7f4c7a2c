//! The region daemon's control protocol, on `<region>/run/daemon.sock` (mode 0600 in a
//! 0700 directory): one request per connection, as one JSON line `{"v": VERSION,
//! "request": {...}}`, answered by zero or more progress lines and one final line.
//! Requests and replies are typed on both sides: a reply that does not parse as the type
//! its request expects is an error, never a default. Documented in docs/formats.md,
//! "Control socket".
//!
//! The client side implements [`Catalog`], so a command does the same thing whether the
//! daemon or the command itself owns the pool.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::catalog::Catalog;
use super::owner::Progress;
use crate::datadir::RegionDir;
use crate::snapshot::reencrypt::{CopyJob, CopyStats};
use crate::snapshot::{PendingCopy, SnapshotRecord};
use crate::volume::check::{CheckReport, RepairReport};
use crate::volume::error::{ErrorKind, Result};
use crate::volume::ids::SlotNo;
use crate::volume::{VolumeError, VolumeHeader, VolumeId};

/// The protocol version. A daemon refuses a request of another version with a message
/// that says how to get going again (after an upgrade, an old daemon may still run).
pub const VERSION: u32 = 2;

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
    CheckPool,
    RepairPool,
    /// → CopyStats, after `Frame::Progress` lines. The job is cancelled when this
    /// connection closes.
    RunCopy {
        job: CopyJob,
    },
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

/// A connection to a running daemon.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    /// The daemon of `region` if one answers; `None` if none runs (a stale socket is not
    /// an error).
    pub fn connect(region: &RegionDir) -> Option<Client> {
        let c = Client {
            path: region.daemon_socket(),
        };
        c.call::<u32>(Request::Ping).ok().map(|_| c)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One request; its reply as `T`.
    pub fn call<T: DeserializeOwned>(&self, req: Request) -> Result<T> {
        self.call_with_progress(req, &|_| true)
    }

    /// One request; progress lines go to `progress` until the final line.
    pub fn call_with_progress<T: DeserializeOwned>(
        &self,
        req: Request,
        progress: Progress,
    ) -> Result<T> {
        let io = |e: std::io::Error| VolumeError::io("cannot talk to the daemon at", &self.path, e);
        let mut s = UnixStream::connect(&self.path).map_err(|e| match e.kind() {
            // The daemon stopped between our ping and this call: the caller may retry
            // (and start a new one).
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                VolumeError::Remote {
                    kind: ErrorKind::Busy,
                    message: format!(
                        "the region daemon at {} stopped: retry",
                        self.path.display()
                    ),
                }
            }
            _ => io(e),
        })?;
        // Attach may mount and mkfs may be slow; never hang forever on a wedged daemon.
        // A copy sends progress lines, each of which restarts this clock.
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(io)?;
        let mut line = serde_json::to_vec(&Envelope {
            v: VERSION,
            request: req,
        })
        .expect("requests serialize");
        line.push(b'\n');
        let sent = s.write_all(&line);
        zeroize::Zeroize::zeroize(&mut line);
        sent.map_err(io)?;
        let mut reader = BufReader::new(&s);
        loop {
            let mut resp = String::new();
            reader.read_line(&mut resp).map_err(io)?;
            if resp.is_empty() {
                return Err(VolumeError::Remote {
                    kind: ErrorKind::Busy,
                    message: "the region daemon closed the connection (it is stopping): retry"
                        .into(),
                });
            }
            match serde_json::from_str::<Frame<T>>(&resp) {
                Ok(Frame::Progress(n)) => {
                    // Nothing to cancel from this side: dropping the connection does it.
                    let _ = progress(n);
                }
                Ok(Frame::Done(Ok(v))) => return Ok(v),
                Ok(Frame::Done(Err(WireError { kind, message }))) => {
                    return Err(VolumeError::Remote { kind, message });
                }
                Err(e) => {
                    return Err(VolumeError::Corrupt {
                        what: format!("the region daemon's reply on {}", self.path.display()),
                        detail: format!(
                            "{e} (a daemon of another cryptvol version? detach everything and retry)"
                        ),
                    });
                }
            }
        }
    }

    pub fn status(&self) -> Result<DaemonStatus> {
        self.call(Request::Status)
    }
}

impl Catalog for Client {
    fn is_daemon(&self) -> bool {
        true
    }

    fn list_volumes(&self) -> Result<Vec<VolumeHeader>> {
        self.call(Request::ListVolumes)
    }

    fn get_volume(&self, id: &VolumeId) -> Result<Option<VolumeHeader>> {
        self.call(Request::GetVolume { volume: id.clone() })
    }

    fn create_volume(&self, h: &VolumeHeader) -> Result<()> {
        self.call(Request::CreateVolume { header: h.clone() })
    }

    fn resize_volume(&self, id: &VolumeId, size: u64) -> Result<VolumeHeader> {
        self.call(Request::ResizeVolume {
            volume: id.clone(),
            size,
        })
    }

    fn delete_volume(&self, id: &VolumeId) -> Result<()> {
        self.call(Request::DeleteVolume { volume: id.clone() })
    }

    fn attached_at(&self, id: &VolumeId) -> Result<Option<PathBuf>> {
        Ok(self
            .status()?
            .attached
            .into_iter()
            .find(|a| &a.volume_id == id)
            .map(|a| a.dir))
    }

    fn allocated_bytes(&self, id: &VolumeId) -> Result<u64> {
        self.call(Request::AllocatedBytes { volume: id.clone() })
    }

    fn create_snapshot(&self, volume: &VolumeId, rec: &SnapshotRecord) -> Result<()> {
        self.call(Request::CreateSnapshot {
            volume: volume.clone(),
            record: rec.clone(),
        })
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        self.call(Request::ListSnapshots)
    }

    fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        self.call(Request::GetSnapshot {
            snapshot: id.to_string(),
        })
    }

    fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.call(Request::DeleteSnapshot {
            snapshot: id.to_string(),
        })
    }

    fn restore_volume(&self, snapshot: &str, h: &VolumeHeader) -> Result<()> {
        self.call(Request::RestoreVolume {
            snapshot: snapshot.to_string(),
            header: h.clone(),
        })
    }

    fn load_map(&self, owner: &str) -> Result<Vec<(u64, SlotNo)>> {
        let rows: Vec<(u64, u64)> = self.call(Request::LoadMap {
            owner: owner.to_string(),
        })?;
        Ok(rows.into_iter().map(|(c, s)| (c, SlotNo(s))).collect())
    }

    fn take_lease(&self, snapshot: &str, holder: &str) -> Result<()> {
        self.call(Request::TakeLease {
            snapshot: snapshot.to_string(),
            holder: holder.to_string(),
        })
    }

    fn release_lease(&self, snapshot: &str, holder: &str) -> Result<()> {
        self.call(Request::ReleaseLease {
            snapshot: snapshot.to_string(),
            holder: holder.to_string(),
        })
    }

    fn leases(&self, snapshot: &str) -> Result<Vec<String>> {
        self.call(Request::ListLeases {
            snapshot: snapshot.to_string(),
        })
    }

    fn pending(&self) -> Result<Vec<(String, PendingCopy)>> {
        self.call(Request::ListPending)
    }

    fn begin_copy(&self, owner: &str, pending: &PendingCopy) -> Result<()> {
        self.call(Request::BeginCopy {
            owner: owner.to_string(),
            pending: pending.clone(),
        })
    }

    fn abandon_pending(&self, owner: &str) -> Result<()> {
        self.call(Request::AbandonPending {
            owner: owner.to_string(),
        })
    }

    fn check_pool(&self) -> Result<CheckReport> {
        self.call(Request::CheckPool)
    }

    fn repair_pool(&self) -> Result<RepairReport> {
        self.call(Request::RepairPool)
    }

    fn run_copy(&self, job: CopyJob, progress: Progress) -> Result<CopyStats> {
        self.call_with_progress(Request::RunCopy { job }, progress)
    }
}
