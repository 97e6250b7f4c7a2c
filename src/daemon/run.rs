//! The region daemon: owns the region's pool while volumes are attached, serves each
//! attached volume as a FUSE mount, and answers the control socket. It starts on the
//! first `attach` and exits when the last volume is detached, or on SIGTERM/SIGINT,
//! after flushing and unmounting everything.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::unmount::UnmountError;
use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

use super::fuse_file::VolumeFs;
use super::fuse_ring::Rings;
use super::owner::PoolOwner;
use super::rpc::{AttachedInfo, DaemonStatus};
use super::transport::FuseTransport;
use crate::crypto::SecretBytes;
use crate::datadir::RegionDir;
use crate::sys::fsio;
use crate::volume::error::Result;
use crate::volume::pool::Rollback;
use crate::volume::{Pool, VolumeError, VolumeId, keys};

/// Worker threads per FUSE mount. Reads block in pread on the pool file, so the number
/// of threads bounds the reads in flight: through loop+ext4, random 4 KiB reads at queue
/// depth 16 went from 57 MB/s (2 threads) and 189 (4) to 279 (16); writes are within
/// noise. `CRYPTVOL_FUSE_THREADS` overrides it for tuning.
pub(super) const FUSE_THREADS: usize = 16;
/// Worker threads per FUSE mount of an authenticated volume. Each thread keeps buffers as
/// large as the largest request it served (fuser's receive buffer, our 1 MiB I/O buffer,
/// the reply), and an authenticated request is slower, so more threads are busy at once
/// and touch theirs: with 16 the daemon's peak RSS over the fio suite was 124 MiB, with 8
/// it is 77 MiB (plain volumes: about 60 MiB with 16). Its reads are CPU-bound (MAC and
/// XTS) on 2 cores: random 4 KiB reads at queue depth 16 and with 4 jobs measured the same
/// with 8 and 16 threads, within run-to-run noise (docs/benchmarks.md).
pub(super) const FUSE_THREADS_AUTHENTICATED: usize = 8;

/// How often dirty metadata is committed without an fsync (bounds work lost in a crash).
pub(super) const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// The longest request line the daemon reads.
pub(super) const MAX_REQUEST: u64 = 64 << 20;
/// A daemon with nothing attached exits after this long without a request.
pub(super) const IDLE_EXIT: Duration = Duration::from_secs(3);

/// How an attached volume is served: where, and the FUSE session serving it. Changed only
/// under the volume's lock in the pool owner.
pub(super) struct Attachment {
    pub(super) dir: PathBuf,
    pub(super) session: Option<BackgroundSession>,
    /// The io_uring queues serving it, if the kernel offers them (`fuse_ring`).
    pub(super) rings: Option<Rings>,
    /// `major:minor` of the mount (mountinfo): tells whether it is still ours at `dir`.
    pub(super) dev: Option<String>,
}

impl Attachment {
    /// True if our mount is no longer at `dir` (unmounted, or lazily, from outside).
    fn unmounted_elsewhere(&self) -> bool {
        crate::sys::mountinfo::find(&self.dir).is_none_or(|m| Some(&m.dev) != self.dev.as_ref())
    }

    /// Ends a FUSE connection that outlives an outside unmount of `dir`: with nothing
    /// open under it, the kernel ends it at once; with files still open, it is aborted
    /// (their I/O then fails), for no request may reach the volume once it is detached.
    fn end_orphaned_connection(&self) -> Result<()> {
        let Some(s) = &self.session else {
            return Ok(());
        };
        // Whether the session's thread ended within `limit`.
        let ended_within = |limit: Duration| {
            let started = Instant::now();
            while !s.guard.is_finished() && started.elapsed() < limit {
                std::thread::sleep(Duration::from_millis(10));
            }
            s.guard.is_finished()
        };
        if ended_within(Duration::from_secs(1)) {
            return Ok(());
        }
        let aborted = match &self.dev {
            Some(dev) => crate::sys::unmount::abort_connection(dev),
            None => Err(std::io::Error::other("its device is unknown")),
        };
        if aborted.is_ok() && ended_within(Duration::from_secs(5)) {
            return Ok(());
        }
        Err(VolumeError::Unsupported {
            what: format!("detaching {}", self.dir.display()),
            why: format!(
                "it was unmounted outside cryptvol and files under it are still open (cannot end its FUSE connection: {})",
                aborted
                    .err()
                    .map_or_else(|| "it did not end".into(), |e| e.to_string())
            ),
            hint: "close what still uses files under it, then detach again".into(),
        })
    }
}

pub(super) enum Event {
    Stop(&'static str),
}

pub struct Daemon {
    pub(super) region: RegionDir,
    pub(super) owner: PoolOwner,
    pub(super) sessions: Mutex<HashMap<VolumeId, Attachment>>,
    pub(super) stopping: AtomicBool,
    pub(super) events: mpsc::Sender<Event>,
    /// When the last request came, and how many are being answered. The decisions to
    /// stop (last detach, idle) are taken under this lock and only with nothing else in
    /// flight, so no request is accepted and then lost to a stop.
    pub(super) life: Mutex<Life>,
}

#[derive(Debug)]
pub(super) struct Life {
    pub(super) last_request: Instant,
    pub(super) in_flight: usize,
}

/// An attach to perform before serving (`attach --foreground`).
pub struct InitialAttach {
    pub volume: VolumeId,
    pub dir: PathBuf,
    pub data_key: SecretBytes,
    pub rollback: Rollback,
    pub transport: FuseTransport,
}

pub(super) fn canonical(dir: &Path) -> Result<PathBuf> {
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

/// Unmounts a FUSE mount point (see `sys::unmount`), naming `dir` in the error.
pub fn unmount(dir: &Path, lazy: bool) -> Result<()> {
    crate::sys::unmount::unmount(dir, lazy).map_err(|e| match e {
        UnmountError::Busy => VolumeError::MountBusy {
            at: dir.display().to_string(),
        },
        UnmountError::Tool(t) => t.into(),
        UnmountError::Io(e) => VolumeError::io("cannot unmount", dir, e),
    })
}

/// The lock id of a mount directory: two attaches to one directory are serialized too.
pub(super) fn dir_lock(dir: &Path) -> String {
    let d = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    format!("dir:{}", d.display())
}

pub(super) fn stopping_error() -> VolumeError {
    VolumeError::Remote {
        kind: crate::volume::error::ErrorKind::Busy,
        message: "the region daemon is stopping: retry".into(),
    }
}

impl Daemon {
    pub(super) fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<VolumeId, Attachment>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn attach(
        &self,
        volume: &VolumeId,
        dir: &Path,
        data_key: SecretBytes,
        rollback: Rollback,
        transport: FuseTransport,
    ) -> Result<()> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(stopping_error());
        }
        let keys = keys::VolumeKeys::from_data_key(&data_key)?;
        drop(data_key);
        let lock_id = dir_lock(dir);
        let r = self
            .owner
            .attach(volume, &[&lock_id], keys, rollback, |vol| {
                // Under the volume's and the directory's locks from here on.
                let mine = |d: &Path| {
                    self.sessions()
                        .iter()
                        .find(|(_, a)| a.dir == d)
                        .map(|(v, _)| v.clone())
                };
                if let Some(v) = mine(dir) {
                    return Err(VolumeError::Attached {
                        id: v.to_string(),
                        at: dir.display().to_string(),
                        hint: "choose another directory".into(),
                    });
                }
                // A cryptvol mount here that is not one of ours: one of our region's is left by
                // a daemon of ours that was killed (its kernel side is dead): clear it. One of
                // another region's daemon is live unless the kernel says it is not connected.
                if is_cryptvol_mount(dir) {
                    let other = super::fsname::owner_at(dir).and_then(|o| match o.region {
                        Some(r) if r == self.region.region => None,
                        _ => Some(o),
                    });
                    let dead = std::fs::metadata(dir)
                        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
                    match other {
                        Some(o) if !dead => {
                            return Err(VolumeError::Attached {
                                id: o.volume.clone(),
                                at: format!(
                                    "{}{}",
                                    dir.display(),
                                    o.region
                                        .map(|r| format!(" (region {r})"))
                                        .unwrap_or_default()
                                ),
                                hint: "choose another directory, or detach it first".into(),
                            });
                        }
                        _ => {
                            let _ = unmount(dir, true);
                        }
                    }
                }
                let dir = canonical(dir)?;
                if let Some(v) = mine(&dir) {
                    return Err(VolumeError::Attached {
                        id: v.to_string(),
                        at: dir.display().to_string(),
                        hint: "choose another directory".into(),
                    });
                }
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
                            .unwrap_or(if vol.is_authenticated() {
                                FUSE_THREADS_AUTHENTICATED
                            } else {
                                FUSE_THREADS
                            }),
                    );
                    c.clone_fd = true;
                    c
                };
                let fs = VolumeFs::new(vol);
                let wants_ring = transport.wants_ring()?;
                fs.ring.store(wants_ring, Ordering::SeqCst);
                let ring_fs = Arc::new(fs.clone());
                let mounted = fuser::Session::new(fs, &dir, &config)
                    .map_err(|e| VolumeError::io("cannot mount FUSE at", &dir, e))?;
                // The queues start (each with its ring and buffers) before fuser answers
                // INIT: a connection that accepted the ring serves nothing until every
                // queue has registered, so INIT asks for it only if they all started.
                let rings = match (wants_ring, transport) {
                    (false, _) => None,
                    // Dropping the session unmounts what it mounted: nothing is left.
                    (true, FuseTransport::Uring) => Some(
                        Rings::start(mounted.as_fd(), ring_fs)
                            .map_err(|e| FuseTransport::no_ring(e.to_string()))?,
                    ),
                    (true, _) => Rings::start(mounted.as_fd(), ring_fs.clone())
                        .inspect_err(|e| {
                            ring_fs.ring.store(false, Ordering::SeqCst);
                            warn!("FUSE over io_uring for {volume}: {e}; serving through /dev/fuse")
                        })
                        .ok(),
                };
                let session = mounted
                    .spawn()
                    .map_err(|e| VolumeError::io("cannot serve FUSE at", &dir, e))?;
                info!("attached {volume} at {}", dir.display());
                let dev = crate::sys::mountinfo::find(&dir).map(|m| m.dev);
                self.sessions().insert(
                    volume.clone(),
                    Attachment {
                        dir,
                        session: Some(session),
                        rings,
                        dev,
                    },
                );
                Ok(())
            });
        match r {
            // Say where it is attached.
            Err(VolumeError::Attached { id, at, hint }) if at.is_empty() => {
                let at = self
                    .sessions()
                    .get(volume)
                    .map(|a| a.dir.display().to_string())
                    .unwrap_or_default();
                Err(VolumeError::Attached { id, at, hint })
            }
            other => other,
        }
    }

    /// Stops serving `volume` at `dir` (under its lock, in `PoolOwner::detach`). `force`:
    /// unmount lazily even while busy (shutdown). A busy mount without `force` is an
    /// error and the volume stays attached and served.
    pub(super) fn stop_serving(&self, volume: &VolumeId, dir: &Path, force: bool) -> Result<()> {
        let Some(mut a) = self.sessions().remove(volume) else {
            return Err(VolumeError::NotAttached {
                at: dir.display().to_string(),
            });
        };
        if a.dir != dir {
            let at = a.dir.display().to_string();
            self.sessions().insert(volume.clone(), a);
            return Err(VolumeError::NotAttached { at });
        }
        match unmount(&a.dir, force) {
            Ok(()) => {}
            // Unmounted from outside (`umount -l DIR`): the connection may live on while
            // files under it are open; it must end before the volume is let go.
            Err(e) if a.unmounted_elsewhere() => {
                warn!(
                    "{} was unmounted outside cryptvol ({e}): ending its FUSE connection",
                    a.dir.display()
                );
                if let Err(e) = a.end_orphaned_connection()
                    && !force
                {
                    self.sessions().insert(volume.clone(), a);
                    return Err(e);
                }
            }
            Err(e) if !force => {
                self.sessions().insert(volume.clone(), a);
                return Err(e);
            }
            Err(e) => warn!("unmounting {}: {e}", a.dir.display()),
        }
        // The kernel has answered every request before the unmount completes; once the
        // worker threads are gone nothing can write, and the owner's flush covers all.
        if let Some(s) = a.session.take()
            && !force
            && let Err(e) = s.join()
        {
            warn!("FUSE session of {volume}: {e}");
        }
        if let Some(r) = a.rings.take() {
            r.stop(!force);
        }
        info!("detached {volume} from {}", a.dir.display());
        Ok(())
    }

    pub(super) fn detach(&self, dir: &Path) -> Result<()> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let found = self
            .sessions()
            .iter()
            .find(|(_, a)| a.dir == dir)
            .map(|(v, _)| v.clone());
        let Some(volume) = found else {
            return Err(VolumeError::NotAttached {
                at: dir.display().to_string(),
            });
        };
        let lock_id = dir_lock(&dir);
        self.owner.detach(&volume, &[&lock_id], || {
            self.stop_serving(&volume, &dir, false)
        })
    }

    pub(super) fn status(&self) -> DaemonStatus {
        let sessions = self.sessions();
        DaemonStatus {
            pid: std::process::id(),
            attached: sessions
                .iter()
                .filter_map(|(v, a)| {
                    let vol = self.owner.open_volume(v)?;
                    Some(AttachedInfo {
                        volume_id: v.clone(),
                        dir: a.dir.clone(),
                        size: vol.size(),
                        allocated_bytes: vol.allocated_bytes(),
                        fuse_transport: Some(
                            if a.rings.as_ref().is_some_and(Rings::serving) {
                                "io_uring"
                            } else {
                                "/dev/fuse"
                            }
                            .into(),
                        ),
                    })
                })
                .collect(),
        }
    }

    /// Answers one request: the reply's final line. `progress` sends a progress line and
    /// says whether the client still listens.
    /// Stops taking requests (every later one, even a ping, is answered "busy", so clients
    /// open the pool themselves once this process is gone) and tells `run` to shut down.
    pub(super) fn begin_stop(&self, why: &'static str) {
        {
            let _life = self.life();
            self.stopping.store(true, Ordering::Release);
        }
        let _ = std::fs::remove_file(self.region.daemon_socket());
        let _ = self.events.send(Event::Stop(why));
    }

    pub(super) fn life(&self) -> std::sync::MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// If nothing is attached and `in_flight` requests are all that run, decides to stop:
    /// from then on every request is refused. Returns whether it did.
    pub(super) fn stop_if_unused(&self, in_flight: usize) -> bool {
        let life = self.life();
        let unused = life.in_flight == in_flight
            && self.sessions().is_empty()
            && self.owner.attached().is_empty();
        if unused {
            self.stopping.store(true, Ordering::Release);
        }
        unused
    }

    pub(super) fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        let all: Vec<(VolumeId, PathBuf)> = self
            .sessions()
            .iter()
            .map(|(v, a)| (v.clone(), a.dir.clone()))
            .collect();
        for (v, dir) in all {
            if let Err(e) = self
                .owner
                .detach(&v, &[], || self.stop_serving(&v, &dir, true))
            {
                error!("flushing {v}: {e}");
            }
        }
        if let Err(e) = self.owner.commit() {
            error!("final commit: {e}");
        }
    }
}

/// Raises the soft limit on open descriptors to the hard one. Each attached volume holds one
/// per FUSE thread (`clone_fd`) and, over the ring, one per queue thread (its io_uring) and
/// two more (a `/dev/fuse` duplicate and the wake-up eventfd): about 26 on two CPUs. Under
/// the soft limit a login shell passes on (1024), with three per queue thread as first
/// written, the 26th volume's threads could not start, and every access to it hung (tests/fuse_ring_attack.rs, `thirty_volumes_under_a_1024_descriptor_limit_...`).
fn raise_open_file_limit() {
    match crate::sys::process::raise_open_files(u64::MAX) {
        Ok((soft, hard)) if soft < hard => {
            warn!("the open-file limit stays at {soft} (hard {hard})")
        }
        Ok(_) => {}
        Err(e) => warn!("cannot raise the open-file limit: {e}"),
    }
}

/// How often the daemon runs the region's due secret rotations.
const ROTATION_CHECK: Duration = Duration::from_secs(60);

/// Runs the region's due secret rotations while the daemon is up. The daemon opens the
/// region's KMS itself: a region whose root key needs a passphrase cannot be opened here,
/// and its rotations are left to `kms serve` or `secretsmanager rotate-due`.
fn start_due_rotations(daemon: &Arc<Daemon>) {
    let mut no_passphrase = || -> std::result::Result<SecretBytes, crate::aws::AwsError> {
        Err(crate::aws::AwsError::PassphraseRequired {
            region: daemon.region.region.to_string(),
        })
    };
    let kms = crate::kms::EmbeddedKms::open_region(
        &daemon.region.data_dir,
        &daemon.region.region,
        &mut no_passphrase,
        crate::sys::clock::Clock::from_env(),
    );
    match kms.and_then(|k| crate::secrets::SecretsManager::open(Arc::new(k))) {
        Ok(sm) => {
            let d = daemon.clone();
            crate::secrets::spawn_due_rotations(Arc::new(sm), ROTATION_CHECK, move || {
                !d.stopping.load(Ordering::Acquire)
            });
        }
        Err(e) => info!("due secret rotations are not run by this daemon: {e}"),
    }
}

/// Runs the daemon of `region` until the last volume is detached or a signal arrives.
pub fn run(region: RegionDir, initial: Option<InitialAttach>) -> Result<()> {
    raise_open_file_limit();
    // Block the stop signals in every thread; one thread waits for them.
    let mut stop_signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop_signals.add(s);
    }
    stop_signals
        .thread_block()
        .map_err(|e| VolumeError::io("cannot block signals", "daemon", e.into()))?;

    let run = region.run_dir();
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
    let sock = region.daemon_socket();
    if super::client::Client::connect(&region).is_some() {
        return Err(VolumeError::PoolBusy { path: sock });
    }
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| VolumeError::io("cannot listen on", &sock, e))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(fsio::PRIVATE_FILE))
        .map_err(|e| VolumeError::io("cannot set mode of", &sock, e))?;

    let (tx, rx) = mpsc::channel();
    // The store's client is built beside the first requests (an attach, its mount), not
    // before them: the first read of a remote chunk usually finds it ready.
    let fetcher = super::fetcher::for_region_lazy(&region)?;
    if let Some(f) = fetcher.clone() {
        std::thread::spawn(move || super::fetcher::warm(&f));
    }
    let owner = PoolOwner::with_fetcher(
        pool,
        region.region.clone(),
        fetcher.map(|f| f as Arc<dyn crate::volume::remote::ChunkFetcher>),
    );
    let daemon = Arc::new(Daemon {
        region,
        owner,
        sessions: Mutex::new(HashMap::new()),
        stopping: AtomicBool::new(false),
        events: tx.clone(),
        life: Mutex::new(Life {
            last_request: Instant::now(),
            in_flight: 0,
        }),
    });
    if let Some(i) = initial {
        daemon.attach(&i.volume, &i.dir, i.data_key, i.rollback, i.transport)?;
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
            // The same failure every 5 s (a pool that refuses syncs after a failed one
            // does until the daemon exits) is logged once.
            let mut last_error = None;
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if d.stopping.load(Ordering::Acquire) {
                    return;
                }
                if last_commit.elapsed() >= COMMIT_INTERVAL {
                    last_commit = Instant::now();
                    let error = d.owner.commit().err().map(|e| e.to_string());
                    if error.is_some() && error != last_error {
                        warn!("periodic commit: {}", error.as_deref().unwrap_or_default());
                    }
                    last_error = error;
                }
                // Started for an attach that failed, or left with nothing to serve.
                let quiet = d.life().last_request.elapsed() > IDLE_EXIT;
                if quiet && d.stop_if_unused(0) {
                    d.begin_stop("idle: nothing attached");
                    return;
                }
            }
        });
    }
    start_due_rotations(&daemon);
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
    // Requests being answered finish first (a copy is cancelled: it resumes later).
    daemon.owner.cancel_jobs();
    let deadline = Instant::now() + Duration::from_secs(30);
    while daemon.life().in_flight > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.shutdown();
    Ok(())
}
