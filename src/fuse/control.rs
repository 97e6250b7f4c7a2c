//! The region daemon's control protocol: one JSON request and one JSON response per
//! connection on `<region>/run/daemon.sock` (mode 0600 in a 0700 directory). The CLI uses
//! it to attach and detach volumes and, while the daemon owns the pool, for every volume
//! command. Documented in docs/formats.md, "Control socket".

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kms::region::RegionDir;
use crate::volume::error::ErrorKind;
use crate::volume::{VolumeError, VolumeId};

pub fn run_dir(region: &RegionDir) -> PathBuf {
    region.path.join("run")
}

pub fn socket_path(region: &RegionDir) -> PathBuf {
    run_dir(region).join("daemon.sock")
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Status,
    /// `data_key` is the volume's 64-byte data key, base64; the daemon derives the XTS key.
    Attach {
        volume: VolumeId,
        dir: PathBuf,
        data_key: String,
    },
    Detach {
        dir: PathBuf,
    },
    Flush {
        volume: VolumeId,
    },
    ListVolumes,
    GetVolume {
        volume: VolumeId,
    },
    AllocatedBytes {
        volume: VolumeId,
    },
    /// Headers travel as base64 of their binary form (docs/formats.md).
    CreateVolume {
        header: String,
    },
    UpdateVolume {
        header: String,
    },
    DeleteVolume {
        volume: VolumeId,
    },
    /// `record`: base64 of the snapshot record (docs/formats.md).
    CreateSnapshot {
        volume: VolumeId,
        record: String,
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
        header: String,
    },
    /// The committed map of a volume or snapshot: `[[chunk, slot], ...]`.
    LoadMap {
        owner: String,
    },
    /// Copies in progress: `[[owner, base64 record], ...]`.
    ListPending,
    AbandonPending {
        owner: String,
        chunk_shift: u8,
    },
    /// Run a re-encrypting copy into this daemon's pool (it owns it).
    RunCopy {
        job: crate::snapshot::reencrypt::CopyJob,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Err { kind: ErrorKind, message: String },
}

impl Response {
    pub fn from_result<T: Serialize>(r: Result<T, VolumeError>) -> Response {
        match r {
            Ok(v) => Response::Ok(serde_json::to_value(v).expect("serialises")),
            Err(e) => Response::Err {
                kind: e.kind(),
                message: e.to_string(),
            },
        }
    }
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
            path: socket_path(region),
        };
        match c.call(&Request::Ping) {
            Ok(_) => Some(c),
            Err(_) => None,
        }
    }

    pub fn call(&self, req: &Request) -> Result<serde_json::Value, VolumeError> {
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
        s.set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(io)?;
        let mut line = serde_json::to_vec(req).expect("serialises");
        line.push(b'\n');
        s.write_all(&line).map_err(io)?;
        zeroize::Zeroize::zeroize(&mut line);
        let mut resp = String::new();
        BufReader::new(&s).read_line(&mut resp).map_err(io)?;
        if resp.is_empty() {
            return Err(VolumeError::Remote {
                kind: ErrorKind::Busy,
                message: "the region daemon closed the connection (it is stopping): retry".into(),
            });
        }
        match serde_json::from_str::<Response>(&resp) {
            Ok(Response::Ok(v)) => Ok(v),
            Ok(Response::Err { kind, message }) => Err(VolumeError::Remote { kind, message }),
            Err(e) => Err(VolumeError::Corrupt {
                what: "daemon response".into(),
                detail: e.to_string(),
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
