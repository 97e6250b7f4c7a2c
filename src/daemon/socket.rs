//! The daemon's side of the control socket: one request per connection, read, run
//! against the pool's owner, answered with progress lines and a final line (protocol in
//! `rpc.rs`).

use super::rpc::{self, DetachReply, Request, done_line};
use super::run::*;
use crate::crypto::SecretBytes;
use crate::snapshot::catalog::Catalog;
use crate::volume::VolumeError;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Daemon {
    pub(super) fn serve_conn(&self, s: UnixStream) {
        {
            let mut life = self.life();
            life.last_request = Instant::now();
            if self.stopping.load(Ordering::Acquire) {
                drop(life);
                let _ = (&s).write_all(&done_line::<()>(Err(stopping_error())));
                return;
            }
            life.in_flight += 1;
        }
        self.serve_request(&s);
        let mut life = self.life();
        life.in_flight -= 1;
        life.last_request = Instant::now();
    }

    pub(super) fn serve_request(&self, s: &UnixStream) {
        // A client that stops reading (a copy's progress) is taken for gone after a while.
        let _ = s.set_write_timeout(Some(Duration::from_secs(60)));
        // A client that stalls mid-request gives up its thread after a while; a request
        // line is bounded (the largest, a copy job's source map, is about 20 bytes per
        // chunk: 64 MiB is a 3 TiB volume of 1 MiB chunks).
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let mut line = String::new();
        match BufReader::new(s.take(MAX_REQUEST)).read_line(&mut line) {
            Ok(_) if line.ends_with('\n') => {}
            Ok(_) => {
                zeroize::Zeroize::zeroize(&mut line);
                let err = VolumeError::invalid(
                    "control request",
                    format!("incomplete, or longer than {MAX_REQUEST} bytes"),
                );
                let _ = (&*s).write_all(&done_line::<()>(Err(err)));
                return;
            }
            Err(_) => {
                zeroize::Zeroize::zeroize(&mut line);
                return;
            }
        }
        // The version first: a newer client's request may not parse as ours at all.
        #[derive(serde::Deserialize)]
        struct Version {
            v: u32,
        }
        let version = serde_json::from_str::<Version>(&line).map(|x| x.v);
        let parsed = match version {
            Ok(rpc::VERSION) | Err(_) => {
                serde_json::from_str::<rpc::Envelope>(&line).map(|e| (e.v, Some(e.request)))
            }
            Ok(v) => Ok((v, None)),
        };
        zeroize::Zeroize::zeroize(&mut line);
        let req = match parsed {
            Ok((_, Some(req))) => req,
            Ok((v, None)) => {
                let err = VolumeError::Remote {
                    kind: crate::volume::error::ErrorKind::Busy,
                    message: format!(
                        "the region daemon (pid {}) speaks control protocol {}, this cryptvol speaks {}: detach every volume of the region (or stop that daemon) and retry",
                        std::process::id(),
                        rpc::VERSION,
                        v
                    ),
                };
                let _ = (&*s).write_all(&done_line::<()>(Err(err)));
                return;
            }
            Err(e) => {
                let err = VolumeError::invalid("control request", format!("malformed: {e}"));
                let _ = (&*s).write_all(&done_line::<()>(Err(err)));
                return;
            }
        };
        // Progress of a long request, throttled; a failed write means the client is gone,
        // and the job stops.
        let last_progress = Mutex::new((Instant::now(), 0u64));
        let progress = |n: u64| -> bool {
            let mut lp = last_progress.lock().unwrap_or_else(|p| p.into_inner());
            lp.1 += n;
            if lp.0.elapsed() < Duration::from_millis(100) {
                return true;
            }
            let mut out =
                serde_json::to_vec(&rpc::Frame::<()>::Progress(lp.1)).expect("progress serializes");
            out.push(b'\n');
            lp.1 = 0;
            lp.0 = Instant::now();
            (&*s).write_all(&out).is_ok()
        };
        let (out, last) = match req {
            Request::Detach { dir } => {
                let r = self.detach(&dir);
                // Only this request in flight: nothing else can attach meanwhile.
                let last = r.is_ok() && self.stop_if_unused(1);
                let reply = r.map(|()| DetachReply {
                    daemon_stopping: last.then(std::process::id),
                });
                (done_line(reply), last)
            }
            other => (self.handle(other, &progress), false),
        };
        let _ = (&*s).write_all(&out);
        // The last detach stops the daemon, only once the client has its answer.
        if last {
            self.begin_stop("last volume detached");
        }
    }

    pub(super) fn handle(&self, req: Request, progress: &(dyn Fn(u64) -> bool + Sync)) -> Vec<u8> {
        let o = &self.owner;
        match req {
            Request::Ping => done_line(Ok(std::process::id())),
            Request::Status => done_line(Ok(self.status())),
            Request::Attach {
                volume,
                dir,
                data_key,
                accept_rollback,
                transport,
            } => {
                let key = crate::aws::b64::decode(&data_key.0)
                    .map(SecretBytes::new)
                    .map_err(|_| VolumeError::invalid("data key", "not base64"));
                drop(data_key);
                let rollback = if accept_rollback {
                    crate::volume::pool::Rollback::Accept
                } else {
                    crate::volume::pool::Rollback::Refuse
                };
                done_line(key.and_then(|k| self.attach(&volume, &dir, k, rollback, transport)))
            }
            // Answered by `serve_conn`, which may stop the daemon after it.
            Request::Detach { dir } => done_line(self.detach(&dir).map(|()| DetachReply {
                daemon_stopping: None,
            })),
            Request::Flush { volume } => done_line(match o.open_volume(&volume) {
                Some(v) => v.flush(),
                None => o.commit(),
            }),
            Request::ListVolumes => done_line(o.list_volumes()),
            Request::GetVolume { volume } => done_line(o.get_volume(&volume)),
            Request::CreateVolume { header } => done_line(o.create_volume(&header)),
            Request::ResizeVolume { volume, size } => done_line(o.resize_volume(&volume, size)),
            Request::DeleteVolume { volume } => done_line(o.delete_volume(&volume)),
            Request::AllocatedBytes { volume } => done_line(o.allocated_bytes(&volume)),
            Request::CreateSnapshot { volume, record } => {
                done_line(o.create_snapshot(&volume, &record))
            }
            Request::ListSnapshots => done_line(o.list_snapshots()),
            Request::GetSnapshot { snapshot } => done_line(o.get_snapshot(&snapshot)),
            Request::DeleteSnapshot { snapshot } => done_line(o.delete_snapshot(&snapshot)),
            Request::RestoreVolume { snapshot, header } => {
                done_line(o.restore_volume(&snapshot, &header))
            }
            Request::LoadMap { owner } => done_line(
                o.load_map(&owner)
                    .map(|m| m.into_iter().map(|(c, s)| (c, s.0)).collect::<Vec<_>>()),
            ),
            Request::TakeLease { snapshot, holder } => done_line(o.take_lease(&snapshot, &holder)),
            Request::ReleaseLease { snapshot, holder } => {
                done_line(o.release_lease(&snapshot, &holder))
            }
            Request::ListLeases { snapshot } => done_line(o.leases(&snapshot)),
            Request::ListPending => done_line(o.pending()),
            Request::BeginCopy { owner, pending } => done_line(o.begin_copy(&owner, &pending)),
            Request::AbandonPending { owner } => done_line(o.abandon_pending(&owner)),
            Request::RestoreRemoteVolume {
                header,
                chunks,
                root,
            } => done_line(rpc::remote_from_wire(chunks).and_then(|c| {
                let root = root
                    .map(|r| crate::aws::b64::decode(&r))
                    .transpose()
                    .map_err(|_| VolumeError::invalid("root", "not base64"))?;
                o.restore_remote_volume(&header, c, root)
            })),
            Request::RemoteBytes { volume } => done_line(o.remote_bytes(&volume)),
            Request::LoadRemote { owner } => {
                done_line(o.load_remote(&owner).map(rpc::remote_to_wire))
            }
            Request::HydrateVolume { volume } => {
                let r = o.hydrate_volume(&volume, progress);
                if let Err(e) = &r {
                    tracing::error!("hydrate of {volume}: {e}");
                }
                done_line(r)
            }
            Request::VerifyVolume { volume, data_key } => {
                let key = crate::aws::b64::decode(&data_key.0)
                    .map(SecretBytes::new)
                    .map_err(|_| VolumeError::invalid("data key", "not base64"));
                drop(data_key);
                done_line(key.and_then(|k| o.verify_volume(&volume, &k)))
            }
            Request::LoadDomains { owner, shift } => done_line(o.load_domains(&owner, shift)),
            Request::LoadRecords { owner, shift } => {
                done_line(o.load_records(&owner, shift).map(|rows| {
                    rows.into_iter()
                        .map(|(c, r)| (c, crate::aws::b64::encode(&r)))
                        .collect::<Vec<_>>()
                }))
            }
            Request::IntegrityErrors { volume } => done_line(o.integrity_errors(&volume)),
            Request::CheckPool => done_line(o.check_pool()),
            Request::RepairPool => done_line(o.repair_pool()),
            Request::RunCopy { job } => done_line(o.run_copy(job, progress)),
        }
    }
}
