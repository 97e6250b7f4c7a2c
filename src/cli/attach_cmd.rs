//! `attach`, `detach`, `mount`, `unmount`, `status`, and the hidden `daemon` command.
//!
//! The CLI unwraps the volume's data key (one KMS Decrypt, or the customer key check) and
//! hands it to the region daemon over its 0600 control socket; the daemon never talks to
//! the KMS. `attach` starts the daemon when none runs (logs in `<region>/logs/`).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Config;
use super::exit::CliError;
use super::volume_cmd::{customer_key, daemon_status};
use crate::aws::Region;
use crate::aws::b64;
use crate::crypto::SecretBytes;
use crate::daemon::catalog;
use crate::daemon::client::Client;
use crate::daemon::fsname;
use crate::daemon::fuse_file::FILE_NAME;
use crate::daemon::mount::{self, MountRecord};
use crate::daemon::rpc::{DetachReply, Request, WireSecret};
use crate::daemon::run::{self as daemon, InitialAttach};
use crate::daemon::transport::{FuseTransport, TransportParser};
use crate::kms::KeyBackend;
use crate::sys::filesystem::FsType;
use crate::sys::fsio;
use crate::volume::error::ErrorKind;
use crate::volume::lifecycle;
use crate::volume::{VolumeError, VolumeHeader};
use clap::builder::TypedValueParser;

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Volume id or name
    volume: String,
    /// An existing directory; the volume appears as DIR/volume
    dir: PathBuf,
    /// Serve in this process instead of the background daemon (Ctrl-C detaches)
    #[arg(long)]
    foreground: bool,
    /// The volume's customer-provided key
    #[arg(long, value_name = "FILE")]
    customer_key_file: Option<PathBuf>,
    /// Attach an authenticated volume whose pool is older than its anchor (a pool restored
    /// from a backup on purpose); the anchor then moves to the pool's state
    #[arg(long)]
    accept_rollback: bool,
    /// How the kernel's FUSE requests reach the daemon: io_uring queues where the kernel
    /// has them (auto), io_uring or fail (uring), or /dev/fuse (classic)
    #[arg(long, env = "CRYPTVOL_FUSE_TRANSPORT", value_parser = TransportParser, default_value = "auto")]
    fuse_transport: FuseTransport,
}

#[derive(Debug, clap::Args)]
pub struct MountArgs {
    /// Volume id or name
    volume: String,
    /// An existing directory to mount the filesystem on
    dir: PathBuf,
    /// Filesystem made on first use
    #[arg(
        long,
        default_value = "ext4",
        value_parser = clap::builder::PossibleValuesParser::new(FsType::ALL.map(FsType::as_str))
            .try_map(|s| FsType::from_name(&s).ok_or("not a filesystem cryptvol makes")),
    )]
    fs: FsType,
    #[arg(long, value_name = "FILE")]
    customer_key_file: Option<PathBuf>,
    /// Attach an authenticated volume whose pool is older than its anchor (a pool restored
    /// from a backup on purpose); the anchor then moves to the pool's state
    #[arg(long)]
    accept_rollback: bool,
    /// How the kernel's FUSE requests reach the daemon: io_uring queues where the kernel
    /// has them (auto), io_uring or fail (uring), or /dev/fuse (classic)
    #[arg(long, env = "CRYPTVOL_FUSE_TRANSPORT", value_parser = TransportParser, default_value = "auto")]
    fuse_transport: FuseTransport,
}

fn log_dir(cfg: &Config) -> PathBuf {
    cfg.region_dir().logs_dir()
}

/// The volume and its data key, unwrapped once (envelope encryption: one KMS call).
pub(super) fn unwrap_key(
    cfg: &Config,
    volume: &str,
    ck_file: Option<&Path>,
) -> Result<(VolumeHeader, SecretBytes), CliError> {
    let region = cfg.region_dir();
    region.config()?;
    let h = catalog::open(&region)?.find(volume, cfg.region.as_str())?;
    let ck = ck_file.map(customer_key).transpose()?;
    let kms = match h.key {
        crate::volume::KeySource::Kms { .. } => Some(cfg.volume_kms_for(&h)?),
        crate::volume::KeySource::Customer { .. } => None,
    };
    let dk = lifecycle::attach_data_key(&h, kms.as_ref().map(|k| k as &dyn KeyBackend), ck.as_ref())
        .map_err(|e| match e {
            // The key is not here: it may live in a remote KMS.
            VolumeError::Kms(crate::aws::AwsError::NotFound { what })
                if cfg.kms_endpoint.is_none()
                    && matches!(&h.key, crate::volume::KeySource::Kms { endpoint: None, .. }) =>
            {
                VolumeError::Kms(crate::aws::AwsError::NotFound {
                    what: format!(
                        "{what}; if volume {}'s key ({}) lives in a remote KMS, pass --kms-endpoint URL",
                        h.id,
                        match &h.key {
                            crate::volume::KeySource::Kms { key_arn, .. } => key_arn.as_str(),
                            _ => "?",
                        }
                    ),
                })
            }
            other => other,
        })?;
    Ok((h, dk))
}

/// Starts the region daemon in the background and waits until it answers.
fn spawn_daemon(cfg: &Config) -> Result<Client, CliError> {
    let region = cfg.region_dir();
    let logs = log_dir(cfg);
    fsio::create_private_dir(&logs).map_err(|e| VolumeError::io("cannot create", &logs, e))?;
    let log_path = logs.join("daemon.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(fsio::PRIVATE_FILE)
        .open(&log_path)
        .map_err(|e| VolumeError::io("cannot open", &log_path, e))?;
    let exe = std::env::current_exe()
        .map_err(|e| VolumeError::io("cannot find", "the cryptvol binary", e))?;
    let mut cmd = Command::new(exe);
    // glibc gives each thread that allocates its own arena (up to 8 per core) and keeps
    // what is freed there: the daemon's FUSE threads take turns committing (a commit's
    // records and a fold's transaction are megabytes), so each arena grew to the largest
    // commit it ran, and the daemon's RSS with them (94 MiB after the bench's jobs on an
    // authenticated mount, 66 MiB with two arenas, same speed). The user's setting wins.
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        cmd.env("MALLOC_ARENA_MAX", "2");
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(&cfg.data_dir)
        .arg("--region")
        .arg(cfg.region.as_str())
        .arg("daemon")
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| VolumeError::io("cannot open", &log_path, e))?,
        )
        .stderr(log)
        // Its own process group: a Ctrl-C meant for this command does not stop it.
        .process_group(0)
        .spawn()
        .map_err(|e| VolumeError::io("cannot start the daemon from", "cryptvol", e))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(c) = Client::connect(&region) {
            return Ok(c);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            return Err(VolumeError::Remote {
                kind: ErrorKind::Busy,
                message: format!(
                    "the region daemon exited ({status}): {last} (log: {})",
                    log_path.display()
                ),
            }
            .into());
        }
        if Instant::now() > deadline {
            return Err(VolumeError::Remote {
                kind: ErrorKind::Busy,
                message: format!(
                    "the region daemon did not start in 15 s (log: {})",
                    log_path.display()
                ),
            }
            .into());
        }
        // A connect to a socket that is not there yet costs microseconds; the daemon is
        // up in tens of milliseconds, and every step of this wait adds to the attach.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Attaches through the daemon, starting it if needed; retries while one is stopping.
fn attach_via_daemon(
    cfg: &Config,
    h: &VolumeHeader,
    dir: &Path,
    dk: &SecretBytes,
    accept_rollback: bool,
    transport: FuseTransport,
) -> Result<(), CliError> {
    let region = cfg.region_dir();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let client = match Client::connect(&region) {
            Some(c) => c,
            None => spawn_daemon(cfg)?,
        };
        let req = Request::Attach {
            volume: h.id.clone(),
            dir: dir.to_path_buf(),
            data_key: WireSecret(b64::encode(dk.expose())),
            accept_rollback,
            transport,
        };
        // The key in the request is zeroized when the call drops it (`WireSecret`).
        let res = client.call::<()>(req);
        match res {
            Err(VolumeError::Remote {
                kind: ErrorKind::Busy,
                ..
            }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other.map(|_| ()).map_err(Into::into),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AttachResult {
    volume_id: String,
    file: String,
}

/// An existing directory, or a clear error before anything is started.
fn mount_point(dir: &Path) -> Result<PathBuf, CliError> {
    let canon = dir
        .canonicalize()
        .map_err(|e| VolumeError::io("cannot use mount point", dir, e))?;
    if !canon.is_dir() {
        return Err(VolumeError::invalid(
            "mount point",
            format!("{} is not a directory", dir.display()),
        )
        .into());
    }
    Ok(canon)
}

pub fn attach(cfg: &Config, a: AttachArgs) -> Result<(), CliError> {
    // A dead mount left by a killed daemon fails canonicalize (ENOTCONN): let the daemon
    // clear it; anything else must be an existing directory.
    // The daemon has another working directory: give it an absolute path.
    let dir = std::path::absolute(&a.dir)
        .map_err(|e| VolumeError::io("cannot use mount point", &a.dir, e))?;
    if daemon::is_cryptvol_mount(&dir) {
        // A live mount of any region's daemon is not ours to clear (only a dead one,
        // left by a killed daemon, is).
        if let Some(at) = served_by_a_daemon(cfg, &dir) {
            return Err(at.into());
        }
    } else {
        mount_point(&dir)?;
    }
    let (h, dk) = unwrap_key(cfg, &a.volume, a.customer_key_file.as_deref())?;
    if a.foreground {
        if Client::connect(&cfg.region_dir()).is_some() {
            return Err(CliError::bad(
                "--foreground",
                "a region daemon already serves this region; attach without --foreground",
            ));
        }
        init_logging();
        daemon::run(
            cfg.region_dir(),
            Some(InitialAttach {
                volume: h.id.clone(),
                dir: dir.clone(),
                data_key: dk,
                rollback: if a.accept_rollback {
                    crate::volume::pool::Rollback::Accept
                } else {
                    crate::volume::pool::Rollback::Refuse
                },
                transport: a.fuse_transport,
            }),
        )?;
        return Ok(());
    }
    attach_via_daemon(cfg, &h, &dir, &dk, a.accept_rollback, a.fuse_transport)?;
    let dir = dir.canonicalize().unwrap_or(dir);
    cfg.print(
        &AttachResult {
            volume_id: h.id.to_string(),
            file: dir.join(FILE_NAME).display().to_string(),
        },
        "Attach",
    )
}

/// The regions of the data dir (the directories under `<data dir>/regions/` named as
/// regions), this command's region first, whether initialised or not.
fn regions_of(cfg: &Config) -> Vec<Region> {
    let mut all: Vec<Region> =
        std::fs::read_dir(crate::datadir::DataDir::new(&cfg.data_dir).regions_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| Region::parse(e.file_name().to_str()?).ok())
            .filter(|r| *r != cfg.region)
            .collect();
    all.sort();
    all.insert(0, cfg.region.clone());
    all
}

/// The "already attached" error if some region's daemon serves a volume at `dir`.
fn served_by_a_daemon(cfg: &Config, dir: &Path) -> Option<VolumeError> {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    regions_of(cfg).into_iter().find_map(|r| {
        let c = Client::connect(&cfg.for_region(&r).region_dir())?;
        let a = c
            .status()
            .ok()?
            .attached
            .into_iter()
            .find(|a| a.dir == canon)?;
        Some(VolumeError::Attached {
            id: a.volume_id.to_string(),
            at: format!("{} (region {r})", canon.display()),
            hint: "choose another directory, or detach it first".into(),
        })
    })
}

/// Detaches DIR through the daemon that serves it, whatever `--region` says: the mount's
/// source names its region (`cryptvol:<region>/<volume>`); one made by an earlier version
/// names only the volume, and then the daemon of every region is asked. Only when none
/// serves DIR is a cryptvol mount there taken for one left by a killed daemon, and cleared.
pub fn detach(cfg: &Config, dir: &Path) -> Result<(), CliError> {
    // The daemon has another working directory: give it an absolute path. A dead mount
    // does not canonicalize (ENOTCONN).
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let canon = abs.canonicalize().unwrap_or(abs);
    let owner = fsname::owner_at(&canon);
    let regions = match &owner {
        Some(fsname::Owner {
            region: Some(r), ..
        }) => vec![r.clone()],
        Some(_) => regions_of(cfg),
        None => vec![cfg.region.clone()],
    };
    for r in regions {
        let Some(c) = Client::connect(&cfg.for_region(&r).region_dir()) else {
            continue;
        };
        let answer: DetachReply = match c.call(Request::Detach { dir: canon.clone() }) {
            Ok(a) => a,
            // Not this daemon's.
            Err(VolumeError::Remote {
                kind: ErrorKind::NotAttached,
                ..
            }) => continue,
            Err(e) => return Err(e.into()),
        };
        // The last detach stops the daemon: wait until it has gone (and let go of the
        // pool), so that the next command of a script opens the pool itself instead of
        // meeting a daemon on its way out.
        if let Some(pid) = answer.daemon_stopping {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while process_running(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        return Ok(());
    }
    // No daemon serves DIR: a mount left by a killed one can still be cleared.
    if owner.is_some() {
        daemon::unmount(&canon, true)?;
        return Ok(());
    }
    Err(VolumeError::NotAttached {
        at: dir.display().to_string(),
    }
    .into())
}

/// Whether `pid` runs (a zombie waiting to be reaped by its new parent has finished).
fn process_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

pub fn mount(cfg: &Config, m: MountArgs) -> Result<(), CliError> {
    let region = cfg.region_dir();
    let (h, dk) = unwrap_key(cfg, &m.volume, m.customer_key_file.as_deref())?;
    let dir = mount_point(&m.dir)?;
    if crate::sys::mountinfo::is_mount_point(&dir) {
        return Err(VolumeError::invalid(
            "mount point",
            format!("{} is already a mount point", dir.display()),
        )
        .into());
    }
    // One mount per volume. A record whose mount is gone was left by a crash: finish
    // undoing it before starting again.
    if let Some(old) = mount::records(&region)
        .into_iter()
        .find(|r| r.volume_id == h.id.as_str())
    {
        if crate::sys::mountinfo::is_mount_point(&old.dir) {
            return Err(VolumeError::Attached {
                id: h.id.to_string(),
                at: old.dir.display().to_string(),
                hint: "it is mounted there; unmount it first".into(),
            }
            .into());
        }
        undo_mount(cfg, &old)?;
    }
    if let Some(a) =
        daemon_status(cfg).and_then(|s| s.attached.into_iter().find(|a| a.volume_id == h.id))
    {
        return Err(VolumeError::Attached {
            id: h.id.to_string(),
            at: a.dir.display().to_string(),
            hint: "detach it first".into(),
        }
        .into());
    }
    let attach_dir = region.attach_dir(h.id.as_str());
    fsio::create_private_dir(&attach_dir)
        .map_err(|e| VolumeError::io("cannot create", &attach_dir, e))?;
    let mut rec = MountRecord {
        volume_id: h.id.to_string(),
        dir: dir.clone(),
        attach_dir: attach_dir.clone(),
        loop_device: None,
        fs: m.fs,
    };
    // Record first, so that `unmount` can undo whatever part of this succeeds.
    mount::save_record(&region, &rec)?;
    let mut steps = || -> Result<(), CliError> {
        attach_via_daemon(
            cfg,
            &h,
            &attach_dir,
            &dk,
            m.accept_rollback,
            m.fuse_transport,
        )?;
        let dev = crate::sys::loopdev::loop_attach(&attach_dir.join(FILE_NAME))?;
        rec.loop_device = Some(dev.clone());
        mount::save_record(&region, &rec)?;
        match crate::sys::filesystem::fs_type(&dev) {
            None => crate::sys::filesystem::mkfs(&dev, m.fs)?,
            Some(t) if t != m.fs.as_str() => {
                return Err(VolumeError::invalid(
                    "--fs",
                    format!(
                        "volume {} holds {t}, not {}; pass --fs {t}",
                        h.id,
                        m.fs.as_str()
                    ),
                )
                .into());
            }
            Some(_) => {}
        }
        crate::sys::filesystem::mount_fs(&dev, &dir, m.fs)?;
        Ok(())
    };
    if let Err(e) = steps() {
        let _ = undo_mount(
            cfg,
            &mount::records(&region)
                .into_iter()
                .find(|r| r.volume_id == h.id.as_str())
                .unwrap_or(rec.clone()),
        );
        return Err(e);
    }
    cfg.print(&rec, "Mount")
}

/// Undoes every step of a mount that is still in place; safe to repeat.
fn undo_mount(cfg: &Config, rec: &MountRecord) -> Result<(), CliError> {
    let region = cfg.region_dir();
    if crate::sys::mountinfo::is_mount_point(&rec.dir) {
        crate::sys::filesystem::umount(&rec.dir)?;
    }
    let file = rec.attach_dir.join(FILE_NAME);
    // Only devices bound to our file: the record's device by name only if it still is (a
    // crash's leftover record may name a device another mount has bound since).
    let mut devs = crate::sys::loopdev::loops_of(&file);
    if let Some(d) = &rec.loop_device
        && !devs.contains(d)
        && crate::sys::loopdev::backs(d, &file)
    {
        devs.push(d.clone());
    }
    for dev in devs {
        let _ = crate::sys::loopdev::loop_detach(&dev);
    }
    // The kernel lets go of a detached loop device's file a moment later (it finishes the
    // device's last I/O first); until then the FUSE mount is busy.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !crate::sys::loopdev::loops_of(&file).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if Client::connect(&region).is_some() || daemon::is_cryptvol_mount(&rec.attach_dir) {
        // Busy for a moment while the kernel releases the loop device: retry briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match detach(cfg, &rec.attach_dir) {
                Ok(()) | Err(CliError::Volume(VolumeError::NotAttached { .. })) => break,
                Err(CliError::Volume(VolumeError::Remote {
                    kind: ErrorKind::NotAttached,
                    ..
                })) => break,
                Err(CliError::Volume(VolumeError::Remote {
                    kind: ErrorKind::Attached,
                    ..
                })) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
    let _ = std::fs::remove_dir(&rec.attach_dir);
    mount::remove_record(&region, &rec.volume_id);
    Ok(())
}

/// Undoes the `mount` at DIR. Its record is in the region of the volume, whatever
/// `--region` says: this command's region is searched first, then every other one.
pub fn unmount(cfg: &Config, dir: &Path) -> Result<(), CliError> {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for r in regions_of(cfg) {
        let rcfg = cfg.for_region(&r);
        if let Some(rec) = mount::records(&rcfg.region_dir())
            .into_iter()
            .find(|m| m.dir == canon || m.dir == dir)
        {
            return undo_mount(&rcfg, &rec);
        }
    }
    Err(VolumeError::NotAttached {
        at: format!("{} (see `cryptvol status`)", dir.display()),
    }
    .into())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusEntry {
    volume_id: String,
    attached_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    mounted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loop_device: Option<String>,
    size: u64,
    allocated_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fuse_transport: Option<String>,
}

pub fn status(cfg: &Config) -> Result<(), CliError> {
    let region = cfg.region_dir();
    let st = daemon_status(cfg);
    let mounts = mount::records(&region);
    let entries: Vec<StatusEntry> = st
        .as_ref()
        .map(|s| s.attached.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|a| {
            let m = mounts.iter().find(|m| m.volume_id == a.volume_id.as_str());
            StatusEntry {
                volume_id: a.volume_id.to_string(),
                attached_at: a.dir.display().to_string(),
                mounted_at: m.map(|m| m.dir.display().to_string()),
                loop_device: m.and_then(|m| m.loop_device.clone()),
                size: a.size,
                allocated_bytes: a.allocated_bytes,
                fuse_transport: a.fuse_transport,
            }
        })
        .collect();
    cfg.print(
        &serde_json::json!({
            "Region": cfg.region.as_str(),
            "DaemonPid": st.map(|s| s.pid),
            "Volumes": entries,
        }),
        "Status",
    )
}

fn init_logging() {
    use tracing::Level;
    use tracing_subscriber::prelude::*;
    // fuser logs every unimplemented request (xattrs) at warn: keep only its errors.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(Level::INFO)
        .with_target("fuser", Level::ERROR)
        .with_target("fuser::session", Level::INFO);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .try_init();
}

pub fn daemon(cfg: &Config, hardening: Result<(), String>) -> Result<(), CliError> {
    init_logging();
    if let Err(e) = hardening {
        tracing::warn!("memory protection incomplete: {e}");
    }
    cfg.region_dir().config()?;
    daemon::run(cfg.region_dir(), None)?;
    Ok(())
}
