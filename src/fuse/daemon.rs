//! The region daemon: owns the region's pool while volumes are attached, serves each
//! attached volume as a FUSE mount, and answers the control socket. It starts on the
//! first `attach` and exits when the last volume is detached, or on SIGTERM/SIGINT,
//! after flushing and unmounting everything.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use nix::mount::MntFlags;
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

use super::control::{self, AttachedInfo, DaemonStatus, Request, Response};
use super::volume_fs::VolumeFs;
use crate::crypto::SecretBytes;
use crate::fsio;
use crate::kms::region::RegionDir;
use crate::volume::error::Result;
use crate::volume::{OpenVolume, Pool, VolumeError, VolumeHeader, VolumeId, keys};

/// Worker threads per FUSE mount. Reads block in pread on the pool file, so the number
/// of threads bounds the reads in flight: through loop+ext4, random 4 KiB reads at queue
/// depth 16 went from 57 MB/s (2 threads) and 189 (4) to 279 (16); writes are within
/// noise. `CRYPTVOL_FUSE_THREADS` overrides it for tuning.
const FUSE_THREADS: usize = 16;
/// How often dirty metadata is committed without an fsync (bounds work lost in a crash).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// A daemon with nothing attached exits after this long without a request.
const IDLE_EXIT: Duration = Duration::from_secs(3);

struct Attachment {
    dir: PathBuf,
    vol: Arc<OpenVolume>,
    session: Option<BackgroundSession>,
}

enum Event {
    Stop(&'static str),
}

pub struct Daemon {
    region: RegionDir,
    pool: Arc<Pool>,
    attached: Mutex<HashMap<VolumeId, Attachment>>,
    stopping: AtomicBool,
    events: mpsc::Sender<Event>,
    last_request: Mutex<Instant>,
}

/// An attach to perform before serving (`attach --foreground`).
pub struct InitialAttach {
    pub volume: VolumeId,
    pub dir: PathBuf,
    pub data_key: SecretBytes,
}

fn canonical(dir: &Path) -> Result<PathBuf> {
    let c = dir
        .canonicalize()
        .map_err(|e| VolumeError::io("cannot use mount point", dir, e))?;
    if !c.is_dir() {
        return Err(VolumeError::invalid(
            "mount point",
            format!("{} is not a directory", c.display()),
        ));
    }
    Ok(c)
}

/// True if `dir` is a mount point of ours (a live or dead cryptvol FUSE mount).
pub fn is_cryptvol_mount(dir: &Path) -> bool {
    super::fsname::owner_at(dir).is_some()
}

/// Unmounts a FUSE mount point: directly as root, through fusermount3 otherwise. A busy
/// mount is an error unless `lazy` (then it disappears now and dies when unused).
pub fn unmount(dir: &Path, lazy: bool) -> Result<()> {
    let flags = if lazy {
        MntFlags::MNT_DETACH
    } else {
        MntFlags::empty()
    };
    match nix::mount::umount2(dir, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            let mut cmd = std::process::Command::new("fusermount3");
            cmd.arg("-u").arg("-q");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd
                .arg(dir)
                .output()
                .map_err(|e| VolumeError::io("cannot run fusermount3 for", dir, e))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(VolumeError::Tool {
                    tool: format!("fusermount3 -u {}", dir.display()),
                    message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                })
            }
        }
        Err(nix::errno::Errno::EBUSY) => Err(VolumeError::MountBusy {
            at: dir.display().to_string(),
        }),
        Err(e) => Err(VolumeError::io("cannot unmount", dir, e.into())),
    }
}

impl Daemon {
    fn attach(&self, volume: &VolumeId, dir: &Path, data_key: SecretBytes) -> Result<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(VolumeError::Remote {
                kind: crate::volume::error::ErrorKind::Busy,
                message: "the region daemon is stopping: retry".into(),
            });
        }
        let mut attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((v, _)) = attached.iter().find(|(_, a)| a.dir == dir) {
            return Err(VolumeError::Attached {
                id: v.to_string(),
                at: dir.display().to_string(),
                hint: "choose another directory".into(),
            });
        }
        // A cryptvol mount here that is not one of ours is left by a daemon that was
        // killed: its kernel side is dead; clear it.
        if is_cryptvol_mount(dir) {
            let _ = unmount(dir, true);
        }
        let dir = canonical(dir)?;
        if let Some(a) = attached.get(volume) {
            return Err(VolumeError::Attached {
                id: volume.to_string(),
                at: a.dir.display().to_string(),
                hint: "detach it first (`cryptvol detach DIR`)".into(),
            });
        }
        if let Some((v, _)) = attached.iter().find(|(_, a)| a.dir == dir) {
            return Err(VolumeError::Attached {
                id: v.to_string(),
                at: dir.display().to_string(),
                hint: "choose another directory".into(),
            });
        }
        let header = self.existing_volume(volume)?;
        let xts = keys::xts_from_data_key(&data_key)?;
        drop(data_key);
        let vol = Arc::new(OpenVolume::open(self.pool.clone(), &header, xts)?);
        let config = {
            let mut c = Config::default();
            c.mount_options = vec![
                MountOption::FSName(super::fsname::format(&self.region.region, volume)),
                MountOption::Subtype("cryptvol".into()),
                MountOption::NoExec,
                MountOption::NoSuid,
                MountOption::NoDev,
            ];
            c.acl = SessionACL::Owner;
            c.n_threads = Some(
                std::env::var("CRYPTVOL_FUSE_THREADS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(FUSE_THREADS),
            );
            c.clone_fd = true;
            c
        };
        let session = fuser::spawn_mount(VolumeFs::new(vol.clone()), &dir, &config)
            .map_err(|e| VolumeError::io("cannot mount FUSE at", &dir, e))?;
        info!("attached {volume} at {}", dir.display());
        attached.insert(
            volume.clone(),
            Attachment {
                dir,
                vol,
                session: Some(session),
            },
        );
        Ok(())
    }

    /// Unmounts and stops serving `a`. `force`: unmount lazily even while busy (shutdown).
    /// If the mount is busy (without `force`), `a.session` is left in place: still served.
    fn detach_volume(&self, volume: &VolumeId, a: &mut Attachment, force: bool) -> Result<()> {
        match unmount(&a.dir, force) {
            Ok(()) => {}
            Err(e) if !force => return Err(e),
            Err(e) => warn!("unmounting {}: {e}", a.dir.display()),
        }
        // The kernel has answered every request before the unmount completes; once the
        // worker threads are gone nothing can write, and the flush covers everything.
        if let Some(s) = a.session.take()
            && !force
            && let Err(e) = s.join()
        {
            warn!("FUSE session of {volume}: {e}");
        }
        let flushed = a.vol.flush();
        info!("detached {volume} from {}", a.dir.display());
        flushed
    }

    fn detach(&self, dir: &Path) -> Result<()> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let found = {
            let mut attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
            let key = attached
                .iter()
                .find(|(_, a)| a.dir == dir)
                .map(|(v, _)| v.clone());
            key.and_then(|k| attached.remove(&k).map(|a| (k, a)))
        };
        let Some((volume, a)) = found else {
            return Err(VolumeError::NotAttached {
                at: dir.display().to_string(),
            });
        };
        let mut a = a;
        let r = self.detach_volume(&volume, &mut a, false);
        if a.session.is_some() {
            // Still mounted (busy): keep serving it.
            self.attached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(volume.clone(), a);
        }
        r
    }

    fn status(&self) -> DaemonStatus {
        let attached = self.attached.lock().unwrap_or_else(|p| p.into_inner());
        DaemonStatus {
            pid: std::process::id(),
            attached: attached
                .iter()
                .map(|(v, a)| AttachedInfo {
                    volume_id: v.clone(),
                    dir: a.dir.clone(),
                    size: a.vol.size(),
                    allocated_bytes: a.vol.allocated_bytes(),
                })
                .collect(),
        }
    }

    fn open_volume(&self, v: &VolumeId) -> Option<Arc<OpenVolume>> {
        self.attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(v)
            .map(|a| a.vol.clone())
    }

    fn existing_volume(&self, volume: &VolumeId) -> Result<VolumeHeader> {
        self.pool
            .get_volume(volume)?
            .ok_or_else(|| VolumeError::NotFound {
                name: volume.to_string(),
                region: self.region.region.to_string(),
            })
    }

    fn decode_b64(b64: &str) -> Result<Vec<u8>> {
        crate::kms::b64::decode(b64).map_err(|e| VolumeError::invalid("request", e.to_string()))
    }

    fn decode_header(b64: &str) -> Result<VolumeHeader> {
        let bytes = crate::kms::b64::decode(b64)
            .map_err(|e| VolumeError::invalid("header", e.to_string()))?;
        VolumeHeader::decode(&bytes)
    }

    fn handle(&self, req: Request) -> Response {
        match req {
            Request::Ping => Response::from_result(Ok(std::process::id())),
            Request::Status => Response::from_result(Ok(self.status())),
            Request::Attach {
                volume,
                dir,
                data_key,
            } => {
                let key = base64::engine::general_purpose::STANDARD
                    .decode(&data_key)
                    .map(SecretBytes::new)
                    .map_err(|_| VolumeError::invalid("data key", "not base64"));
                drop(zeroize::Zeroizing::new(data_key));
                Response::from_result(key.and_then(|k| self.attach(&volume, &dir, k)))
            }
            Request::Detach { dir } => Response::from_result(self.detach(&dir)),
            Request::Flush { volume } => Response::from_result(match self.open_volume(&volume) {
                Some(v) => v.flush(),
                None => self.pool.commit(),
            }),
            Request::ListVolumes => Response::from_result(self.pool.list_volumes().map(|hs| {
                hs.iter()
                    .map(|h| crate::kms::b64::encode(&h.encode()))
                    .collect::<Vec<_>>()
            })),
            Request::GetVolume { volume } => Response::from_result(
                self.pool
                    .get_volume(&volume)
                    .map(|h| h.map(|h| crate::kms::b64::encode(&h.encode()))),
            ),
            Request::AllocatedBytes { volume } => {
                Response::from_result(match self.open_volume(&volume) {
                    Some(v) => Ok(v.allocated_bytes()),
                    None => self
                        .pool
                        .get_volume(&volume)
                        .and_then(|h| h.map(|h| self.pool.allocated_bytes(&h)).transpose())
                        .map(|b| b.unwrap_or(0)),
                })
            }
            Request::CreateVolume { header } => Response::from_result(
                Self::decode_header(&header).and_then(|h| self.pool.create_volume(&h)),
            ),
            Request::UpdateVolume { header } => {
                Response::from_result(Self::decode_header(&header).and_then(|h| {
                    if let Some(v) = self.open_volume(&h.id) {
                        v.set_size(h.size);
                    }
                    self.pool.update_volume(&h)
                }))
            }
            Request::CreateSnapshot { volume, record } => Response::from_result((|| {
                let bytes = Self::decode_b64(&record)?;
                let rec = crate::snapshot::SnapshotRecord::decode(&bytes)?;
                let h = self.existing_volume(&volume)?;
                match self.open_volume(&volume) {
                    Some(v) => {
                        // No I/O in flight: the snapshot is exactly what was acknowledged.
                        let _quiet = v.quiesce();
                        self.pool.create_snapshot(&h, rec.id.as_str(), &bytes)?;
                        v.mark_all_shared();
                        Ok(())
                    }
                    None => self.pool.create_snapshot(&h, rec.id.as_str(), &bytes),
                }
            })()),
            Request::ListSnapshots => Response::from_result(self.pool.list_snapshots().map(|v| {
                v.iter()
                    .map(|b| crate::kms::b64::encode(b))
                    .collect::<Vec<_>>()
            })),
            Request::GetSnapshot { snapshot } => Response::from_result(
                self.pool
                    .get_snapshot(&snapshot)
                    .map(|o| o.map(|b| crate::kms::b64::encode(&b))),
            ),
            Request::DeleteSnapshot { snapshot } => Response::from_result((|| {
                let rec =
                    self.pool
                        .get_snapshot(&snapshot)?
                        .ok_or_else(|| VolumeError::NotFound {
                            name: snapshot.clone(),
                            region: self.region.region.to_string(),
                        })?;
                let rec = crate::snapshot::SnapshotRecord::decode(&rec)?;
                self.pool.delete_snapshot(&snapshot, rec.volume.chunk_shift)
            })()),
            Request::RestoreVolume { snapshot, header } => Response::from_result(
                Self::decode_header(&header).and_then(|h| self.pool.restore_volume(&snapshot, &h)),
            ),
            Request::LoadMap { owner } => Response::from_result(
                self.pool
                    .load_map(&owner)
                    .map(|m| m.into_iter().map(|(c, s)| (c, s.0)).collect::<Vec<_>>()),
            ),
            Request::ListPending => Response::from_result(self.pool.pending().map(|v| {
                v.into_iter()
                    .map(|(o, b)| (o, crate::kms::b64::encode(&b)))
                    .collect::<Vec<_>>()
            })),
            Request::AbandonPending { owner, chunk_shift } => {
                Response::from_result(self.pool.abandon_pending(&owner, chunk_shift))
            }
            Request::RunCopy { job } => Response::from_result(crate::snapshot::reencrypt::run_job(
                &self.pool,
                &job,
                &|_| {},
            )),
            Request::DeleteVolume { volume } => Response::from_result((|| {
                if let Some(v) = self.open_volume(&volume) {
                    let at = self
                        .status()
                        .attached
                        .into_iter()
                        .find(|a| a.volume_id == v.id)
                        .map(|a| a.dir.display().to_string())
                        .unwrap_or_default();
                    return Err(VolumeError::Attached {
                        id: volume.to_string(),
                        at,
                        hint: "detach it before deleting".into(),
                    });
                }
                let h = self.existing_volume(&volume)?;
                self.pool.delete_volume(&h)
            })()),
        }
    }

    /// Stops taking requests (every later one, even a ping, is answered "busy", so clients
    /// open the pool themselves once this process is gone) and tells `run` to shut down.
    fn begin_stop(&self, why: &'static str) {
        {
            let _requests = self.last_request.lock().unwrap_or_else(|p| p.into_inner());
            self.stopping.store(true, Ordering::Release);
        }
        let _ = std::fs::remove_file(control::socket_path(&self.region));
        let _ = self.events.send(Event::Stop(why));
    }

    fn serve_conn(&self, s: UnixStream) {
        let stopping = {
            let mut last = self.last_request.lock().unwrap_or_else(|p| p.into_inner());
            *last = Instant::now();
            self.stopping.load(Ordering::Acquire)
        };
        if stopping {
            let resp = Response::Err {
                kind: crate::volume::error::ErrorKind::Busy,
                message: "the region daemon is stopping: retry".into(),
            };
            let mut out = serde_json::to_vec(&resp).expect("serialises");
            out.push(b'\n');
            let _ = (&s).write_all(&out);
            return;
        }
        let mut line = String::new();
        if BufReader::new(&s).read_line(&mut line).is_err() {
            return;
        }
        let mut was_detach = false;
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                was_detach = matches!(req, Request::Detach { .. });
                self.handle(req)
            }
            Err(e) => Response::Err {
                kind: crate::volume::error::ErrorKind::Invalid,
                message: format!("malformed request: {e}"),
            },
        };
        drop(zeroize::Zeroizing::new(line));
        // The last detach stops the daemon. The answer says so, with our pid, so that the
        // client can wait for the pool to be free before its next command.
        let last = was_detach
            && matches!(resp, Response::Ok(_))
            && self
                .attached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
        let resp = if last {
            Response::Ok(serde_json::json!({ "DaemonStopping": std::process::id() }))
        } else {
            resp
        };
        let mut out = serde_json::to_vec(&resp).expect("serialises");
        out.push(b'\n');
        let _ = (&s).write_all(&out);
        // Only once the client has its answer.
        if last {
            self.begin_stop("last volume detached");
        }
    }

    fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let all: Vec<(VolumeId, Attachment)> = self
            .attached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        for (v, mut a) in all {
            if let Err(e) = self.detach_volume(&v, &mut a, true) {
                error!("flushing {v}: {e}");
            }
        }
        if let Err(e) = self.pool.commit() {
            error!("final commit: {e}");
        }
    }
}

/// Runs the daemon of `region` until the last volume is detached or a signal arrives.
pub fn run(region: RegionDir, initial: Option<InitialAttach>) -> Result<()> {
    // Block the stop signals in every thread; one thread waits for them.
    let mut stop_signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop_signals.add(s);
    }
    stop_signals
        .thread_block()
        .map_err(|e| VolumeError::io("cannot block signals", "daemon", e.into()))?;

    let run = control::run_dir(&region);
    fsio::create_private_dir(&run).map_err(|e| VolumeError::io("cannot create", &run, e))?;
    // A daemon that is still shutting down may hold the pool for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let pool = loop {
        match Pool::open(&region) {
            Err(VolumeError::PoolBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break Arc::new(other?),
        }
    };
    let sock = control::socket_path(&region);
    if control::Client::connect(&region).is_some() {
        return Err(VolumeError::PoolBusy { path: sock });
    }
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| VolumeError::io("cannot listen on", &sock, e))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(fsio::PRIVATE_FILE))
        .map_err(|e| VolumeError::io("cannot set mode of", &sock, e))?;

    let (tx, rx) = mpsc::channel();
    let daemon = Arc::new(Daemon {
        region,
        pool,
        attached: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        events: tx.clone(),
        last_request: Mutex::new(Instant::now()),
    });
    if let Some(i) = initial {
        daemon.attach(&i.volume, &i.dir, i.data_key)?;
    }
    {
        let d = daemon.clone();
        std::thread::spawn(move || {
            if let Ok(sig) = stop_signals.wait() {
                info!("received {sig:?}");
            }
            d.begin_stop("signal");
        });
    }
    {
        let d = daemon.clone();
        std::thread::spawn(move || {
            let mut last_commit = Instant::now();
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if d.stopping.load(Ordering::Acquire) {
                    return;
                }
                if last_commit.elapsed() >= COMMIT_INTERVAL {
                    last_commit = Instant::now();
                    if let Err(e) = d.pool.commit() {
                        warn!("periodic commit: {e}");
                    }
                }
                // Started for an attach that failed, or left with nothing to serve.
                let idle = d
                    .attached
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
                    && d.last_request
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .elapsed()
                        > IDLE_EXIT;
                if idle {
                    d.begin_stop("idle: nothing attached");
                    return;
                }
            }
        });
    }
    {
        let d = daemon.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        let d = d.clone();
                        std::thread::spawn(move || d.serve_conn(s));
                    }
                    Err(e) => warn!("accept: {e}"),
                }
            }
        });
    }
    info!(
        "daemon {} serving region {}",
        std::process::id(),
        daemon.region.region
    );
    let Event::Stop(why) = rx.recv().unwrap_or(Event::Stop("channel closed"));
    info!("stopping: {why}");
    // `begin_stop` removed the socket already: a new daemon may own that path by now.
    daemon.shutdown();
    Ok(())
}
