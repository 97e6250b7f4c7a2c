//! The client side of the control socket: a command's connection to its region's
//! daemon. It implements [`Catalog`], so a command does the same thing whether the
//! daemon or the command itself owns the pool.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::crypto::SecretBytes;
use crate::datadir::RegionDir;
use crate::snapshot::catalog::{Catalog, Progress};
use crate::snapshot::reencrypt::{CopyJob, CopyStats};
use crate::snapshot::{PendingCopy, SnapshotRecord};
use crate::volume::VerifyReport;
use crate::volume::check::{CheckReport, RepairReport};
use crate::volume::error::{ErrorKind, Result};
use crate::volume::ids::SlotNo;
use crate::volume::remote::RemoteChunk;
use crate::volume::{VolumeError, VolumeHeader, VolumeId};

use super::rpc::*;

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
            if !resp.ends_with('\n') {
                // Every frame ends with a newline. Nothing at all: the daemon closed the
                // connection (it is stopping). A line cut off by the end of the stream: a
                // reply the daemon did not finish writing (it was killed while answering),
                // not a damaged or foreign one.
                let message = if resp.is_empty() {
                    "the region daemon closed the connection (it is stopping): retry".into()
                } else {
                    format!(
                        "the region daemon at {} stopped while answering (its reply was cut off \
                         after {} bytes): check with `cryptvol status`, then retry",
                        self.path.display(),
                        resp.len()
                    )
                };
                return Err(VolumeError::Remote {
                    kind: ErrorKind::Busy,
                    message,
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

    fn restore_remote_volume(
        &self,
        h: &VolumeHeader,
        chunks: Vec<(u64, RemoteChunk)>,
        root: Option<Vec<u8>>,
    ) -> Result<()> {
        self.call(Request::RestoreRemoteVolume {
            header: h.clone(),
            chunks: remote_to_wire(chunks),
            root: root.as_deref().map(crate::aws::b64::encode),
        })
    }

    fn remote_bytes(&self, id: &VolumeId) -> Result<u64> {
        self.call(Request::RemoteBytes { volume: id.clone() })
    }

    fn load_remote(&self, owner: &str) -> Result<Vec<(u64, RemoteChunk)>> {
        remote_from_wire(self.call(Request::LoadRemote {
            owner: owner.to_string(),
        })?)
    }

    fn hydrate_volume(&self, id: &VolumeId, progress: Progress) -> Result<u64> {
        self.call_with_progress(Request::HydrateVolume { volume: id.clone() }, progress)
    }

    fn verify_volume(&self, id: &VolumeId, data_key: &SecretBytes) -> Result<VerifyReport> {
        self.call(Request::VerifyVolume {
            volume: id.clone(),
            data_key: WireSecret(crate::aws::b64::encode(data_key.expose())),
        })
    }

    fn load_domains(&self, owner: &str, shift: u8) -> Result<Vec<(u64, u64)>> {
        self.call(Request::LoadDomains {
            owner: owner.to_string(),
            shift,
        })
    }

    fn load_records(&self, owner: &str, shift: u8) -> Result<Vec<(u64, Vec<u8>)>> {
        let rows: Vec<(u64, String)> = self.call(Request::LoadRecords {
            owner: owner.to_string(),
            shift,
        })?;
        rows.into_iter()
            .map(|(c, r)| {
                crate::aws::b64::decode(&r)
                    .map(|b| (c, b))
                    .map_err(|_| VolumeError::invalid("slot record", "not base64"))
            })
            .collect()
    }

    fn integrity_errors(&self, id: &VolumeId) -> Result<u64> {
        self.call(Request::IntegrityErrors { volume: id.clone() })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A daemon that reads one request, writes `reply` and is gone.
    fn daemon_answering(reply: &'static [u8]) -> (tempfile::TempDir, Client) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("daemon.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(&s).read_line(&mut request).unwrap();
            s.write_all(reply).unwrap();
        });
        (d, Client { path })
    }

    /// Defect (a kill -9 crash cycle): a daemon killed while writing a long reply left the
    /// client a line cut off mid-JSON, which it reported as a damaged reply from "a daemon
    /// of another cryptvol version" (exit 12) instead of a daemon that stopped (exit 16).
    #[test]
    fn a_reply_cut_off_by_the_daemons_death_is_a_stopped_daemon_not_a_damaged_one() {
        let (_d, client) = daemon_answering(br#"{"Done":{"Ok":[{"id":"snap-0123"#);
        match client.call::<serde_json::Value>(Request::Ping) {
            Err(VolumeError::Remote {
                kind: ErrorKind::Busy,
                message,
            }) => assert!(message.contains("stopped while answering"), "{message}"),
            other => panic!("expected a stopped daemon, got {other:?}"),
        }
    }

    #[test]
    fn a_daemon_that_closes_without_a_word_is_stopping() {
        let (_d, client) = daemon_answering(b"");
        match client.call::<serde_json::Value>(Request::Ping) {
            Err(VolumeError::Remote {
                kind: ErrorKind::Busy,
                message,
            }) => assert!(message.contains("it is stopping"), "{message}"),
            other => panic!("expected a stopping daemon, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_reply_that_is_not_ours_is_still_damaged() {
        let (_d, client) = daemon_answering(b"{\"Done\":{\"Ok\":[\n");
        match client.call::<serde_json::Value>(Request::Ping) {
            Err(VolumeError::Corrupt { what, .. }) => assert!(what.contains("reply"), "{what}"),
            other => panic!("expected a damaged reply, got {other:?}"),
        }
    }
}
