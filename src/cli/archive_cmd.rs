//! The snapshot store from the command line: `region set-snapshot-store`, the flags that
//! name a store for one command (`--snapshot-store`, `--s3-endpoint`, `--s3-region`),
//! `snapshot archive` (run or resume an archive in the foreground), and the background
//! archiver `snapshot create` starts.

use std::process::{Command, Stdio};

use clap::Subcommand;

use super::Config;
use super::exit::CliError;
use crate::daemon::catalog;
use crate::snapshot::archive::{self, ArchiveError, JobEnv, job};
use crate::snapshot::catalog::Catalog;
use crate::snapshot::store::{SnapshotStore, StoreConfig};

/// A snapshot store named on the command line (else the region's own).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StoreArgs {
    /// The snapshot store: s3://BUCKET/PREFIX [default: the region's, see `region set-snapshot-store`]
    #[arg(long, value_name = "URL")]
    pub snapshot_store: Option<String>,
    /// An S3-compatible endpoint for the store (http://HOST:PORT) [default: AWS S3]
    #[arg(long, value_name = "URL", requires = "snapshot_store")]
    pub s3_endpoint: Option<String>,
    /// The store's region, for signing [default: us-east-1]
    #[arg(long, value_name = "REGION", requires = "snapshot_store")]
    pub s3_region: Option<String>,
}

impl StoreArgs {
    /// The store these flags name, or the region's, or None.
    pub fn resolve(&self, cfg: &Config) -> Result<Option<StoreConfig>, CliError> {
        match &self.snapshot_store {
            Some(url) => Ok(Some(StoreConfig::new(
                url,
                self.s3_endpoint.as_deref(),
                self.s3_region.as_deref(),
            )?)),
            None => Ok(archive::load_config(&cfg.region_dir())?),
        }
    }

    /// As `resolve`, but a store is required.
    pub fn require(&self, cfg: &Config) -> Result<SnapshotStore, CliError> {
        let c = self.resolve(cfg)?.ok_or_else(|| ArchiveError::NoStore {
            region: cfg.region.to_string(),
        })?;
        Ok(archive::open_store(&c, cfg.aws_profile.as_deref())?)
    }
}

#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Archive this region's snapshots into an S3-compatible object store from now on
    SetSnapshotStore {
        /// s3://BUCKET/PREFIX
        url: String,
        /// An S3-compatible endpoint (http://HOST:PORT) [default: AWS S3]
        #[arg(long, value_name = "URL")]
        s3_endpoint: Option<String>,
        /// The store's region, for signing [default: us-east-1]
        #[arg(long, value_name = "REGION")]
        s3_region: Option<String>,
    },
    /// The region's settings: its snapshot store, if any
    Describe,
    /// Replace the region's root key with a fresh one and re-seal the keystore under it
    RotateRootKey(super::root_key_cmd::RotateArgs),
}

/// Checks that the store answers (so a typo fails now, not at the first snapshot).
pub fn check_store(store: &StoreConfig, profile: Option<&str>) -> Result<(), CliError> {
    archive::open_store(store, profile)?.list("snapshots")?;
    Ok(())
}

pub fn run_region(cfg: &Config, cmd: RegionCommand) -> Result<(), CliError> {
    let dir = cfg.region_dir();
    dir.config()?;
    match cmd {
        RegionCommand::SetSnapshotStore {
            url,
            s3_endpoint,
            s3_region,
        } => {
            let store = StoreConfig::new(&url, s3_endpoint.as_deref(), s3_region.as_deref())?;
            check_store(&store, cfg.aws_profile.as_deref())?;
            archive::save_config(&dir, &store)?;
            cfg.print(
                &serde_json::json!({ "Region": cfg.region.to_string(), "SnapshotStore": store }),
                "Region",
            )
        }
        RegionCommand::RotateRootKey(args) => super::root_key_cmd::run(cfg, args),
        RegionCommand::Describe => {
            let store = archive::load_config(&dir)?;
            cfg.print(
                &serde_json::json!({ "Region": cfg.region.to_string(), "SnapshotStore": store }),
                "Region",
            )
        }
    }
}

/// `snapshot archive SNAP`: runs (or resumes) the archive in this process.
pub fn run_archive(
    cfg: &Config,
    snapshot: &str,
    max_bandwidth: Option<u64>,
    customer_key: Option<&crate::crypto::SecretBytes>,
    store_args: &StoreArgs,
) -> Result<job::ArchiveStatus, CliError> {
    let dir = cfg.region_dir();
    let store = store_args.require(cfg)?;
    let open = || catalog::open(&dir);
    let kms = match customer_key {
        Some(_) => None,
        None => Some(cfg.volume_kms()?),
    };
    let env = JobEnv {
        dir: &dir,
        region: &cfg.region,
        catalog: &open,
        kms: kms.as_deref(),
        customer_key,
        now_ns: cfg.clock.now_nanos(),
    };
    Ok(archive::run_job(&env, &store, snapshot, max_bandwidth)?)
}

/// Starts `cryptvol snapshot archive SNAP` in the background (its own process group, so a
/// Ctrl-C of the command that started it does not stop it), logging to the region's
/// logs directory. The job's status file says how it goes. The job's lock is taken here
/// and handed to the archiver as its stdin, so the job is never seen as interrupted while
/// the archiver starts; if another process holds it, that one runs the job and nothing
/// is started.
pub fn spawn_archiver(cfg: &Config, snapshot: &str) -> Result<(), CliError> {
    let dir = cfg.region_dir();
    let Some(lock) = job::try_lock(&dir, snapshot)? else {
        return Ok(());
    };
    let logs = dir.logs_dir();
    crate::sys::fsio::create_private_dir(&logs)
        .map_err(|e| crate::volume::VolumeError::io("cannot create", &logs, e))?;
    let log_path = logs.join(format!("archive-{snapshot}.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| crate::volume::VolumeError::io("cannot open", &log_path, e))?;
    let err = log
        .try_clone()
        .map_err(|e| crate::volume::VolumeError::io("cannot open", &log_path, e))?;
    let exe = std::env::current_exe()
        .map_err(|e| crate::volume::VolumeError::io("cannot find", "the cryptvol binary", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir").arg(&cfg.data_dir).args([
        "--region",
        cfg.region.as_str(),
        "--output",
        "json",
    ]);
    if let Some(p) = &cfg.profile {
        cmd.args(["--profile", p]);
    }
    if let Some(e) = &cfg.kms_endpoint {
        cmd.args(["--kms-endpoint", e]);
    }
    if let Some(p) = &cfg.aws_profile {
        cmd.args(["--aws-profile", p]);
    }
    if let Some(f) = &cfg.passphrase.file {
        cmd.arg("--passphrase-file").arg(f);
    }
    cmd.args(["snapshot", "archive", snapshot])
        .stdin(Stdio::from(lock.into_file()))
        .stdout(log)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.spawn()
        .map_err(|e| crate::volume::VolumeError::io("cannot start", "the archiver", e))?;
    Ok(())
}

/// Starts an archiver for every archive of the region that is pending with no process
/// running it (one killed, or the machine restarted): archives resume by themselves.
pub fn resume_stale(cfg: &Config) -> Result<(), CliError> {
    let dir = cfg.region_dir();
    for s in job::list(&dir) {
        if s.state == job::ArchiveState::Pending && !job::is_running(&dir, &s.snapshot_id) {
            spawn_archiver(cfg, &s.snapshot_id)?;
        }
    }
    Ok(())
}

/// Cancels the archive of a snapshot about to be deleted: refused while a process runs
/// it; otherwise its lease ends and what it registered in the store is released.
pub fn cancel_archive(
    cfg: &Config,
    access: &dyn Catalog,
    snapshot: &str,
    lineage: &str,
) -> Result<Option<archive::delete::DeleteStats>, CliError> {
    let dir = cfg.region_dir();
    let Some(status) = job::read(&dir, snapshot) else {
        return Ok(None);
    };
    // A completed job's process is only exiting: wait for it. A pending one that runs is
    // refused.
    let _lock = if status.state == job::ArchiveState::Completed {
        job::lock(&dir, snapshot)?
    } else {
        match job::try_lock(&dir, snapshot)? {
            Some(l) => l,
            None => {
                return Err(ArchiveError::Busy {
                    snapshot: snapshot.to_string(),
                }
                .into());
            }
        }
    };
    let stats = match archive::load_config(&dir)? {
        Some(c) => Some(archive::delete::delete(
            &archive::open_store(&c, cfg.aws_profile.as_deref())?,
            lineage,
            snapshot,
        )?),
        None => None,
    };
    access.release_lease(snapshot, &archive::lease_holder(snapshot))?;
    // Forgotten while the lock is held: an archiver restarted by `snapshot list` in the
    // meantime would otherwise find it pending and lease the snapshot again.
    job::remove(&dir, snapshot);
    Ok(stats)
}

/// True when the region has a pool (opening its catalog would make an empty one just to
/// find that a snapshot is not there).
pub fn has_pool(cfg: &Config) -> bool {
    cfg.region_dir()
        .pool_dir()
        .join(crate::volume::storage::file::METADATA_FILE)
        .exists()
}

/// A lazily restored volume's hold on the store's objects: `<region>/archive/<vol>.hold`
/// names its lineage, so that hydrating or deleting it can release the hold.
fn hold_path(cfg: &Config, volume: &str) -> std::path::PathBuf {
    cfg.region_dir()
        .archive_dir()
        .join(format!("{volume}.hold"))
}

/// `volume create --from-snapshot SNAP` of a snapshot that is not in this region's pool
/// but in the snapshot store: one KMS Decrypt of the snapshot's data key authenticates its
/// manifest; the new volume's chunks stay in the store and are fetched on first read.
///
/// `pool` is the region's catalog if the caller has it open (None: the region has no pool
/// yet); it is let go before any request to the store or the KMS, so the pool is not held
/// while they answer. Returns the new volume and the catalog that holds it (for the
/// caller's answer: opening the pool costs a few syncs, so it is opened once more at most).
pub fn restore_from_store(
    cfg: &Config,
    store_args: &StoreArgs,
    snapshot: &str,
    name: &str,
    size: Option<u64>,
    customer_key: Option<&crate::crypto::SecretBytes>,
    pool: Option<Box<dyn Catalog>>,
) -> Result<(crate::volume::VolumeHeader, Box<dyn Catalog>), CliError> {
    use crate::snapshot::archive::restore;
    use crate::volume::{KeySource, lifecycle};

    let dir = cfg.region_dir();
    // The region daemon fetches a lazily restored volume's chunks from the region's own
    // store: a snapshot in another store must be copied (`snapshot copy
    // --source-snapshot-store`) or that store made the region's.
    let own = archive::load_config(&dir)?;
    if let (Some(named), own) = (store_args.resolve(cfg)?, &own)
        && own.as_ref().map(|o| &o.url) != Some(&named.url)
    {
        return Err(CliError::bad(
            "--snapshot-store",
            format!(
                "{}: a volume restored lazily reads from its region's snapshot store ({}); make it the region's with `cryptvol region set-snapshot-store {}`, or copy the snapshot into the region's store with `cryptvol snapshot copy {snapshot} --source-snapshot-store {}`",
                named.url,
                own.as_ref().map_or("none", |o| o.url.as_str()),
                named.url,
                named.url,
            ),
        ));
    }
    // A taken name is refused before the store is told of the volume (and before any
    // request): the volume keeps its name, so the check needs nothing from the manifest.
    if let Some(p) = &pool {
        p.refuse_taken_name(name)?;
    }
    drop(pool);
    let store = store_args.require(cfg)?;
    let (bytes, head) = restore::fetch(&store, snapshot)?;
    let rec = crate::snapshot::SnapshotRecord {
        id: head.snapshot_id.clone(),
        description: head.description.clone(),
        created_ns: head.created_ns,
        volume: head.volume.clone(),
    };
    let mut h = rec.restored_header(name, size, cfg.clock.now())?;
    // The volume lives here now; its key stays where it was (and the header says where:
    // the KMS endpoint used for this restore, if the snapshot's header named none).
    h.region = cfg.region.clone();
    if let KeySource::Kms { endpoint, .. } = &mut h.key
        && endpoint.is_none()
    {
        endpoint.clone_from(&cfg.kms_endpoint);
    }
    let kms = match h.key {
        KeySource::Kms { .. } => Some(cfg.volume_kms_for(&h)?),
        KeySource::Customer { .. } => None,
    };
    let kms = kms.as_deref();
    let data_key = lifecycle::data_key(&head.volume, kms, customer_key)?;
    let (_, entries) = restore::open(&bytes, snapshot, &data_key)?;
    let root = h
        .integrity
        .then(|| restore::first_root(&data_key, &entries));
    drop(data_key);
    // The pool is made (if the region has none) only now: a damaged manifest changes
    // nothing here, not even an empty pool.
    let lineage = head.volume.lineage.clone();
    // Counted in the store before the volume relies on any object.
    restore::hold_for_volume(&store, &lineage, snapshot, h.id.as_str(), &entries)?;
    let hold = hold_path(cfg, h.id.as_str());
    crate::sys::fsio::create_private_dir(&dir.archive_dir())
        .map_err(|e| crate::volume::VolumeError::io("cannot create", dir.archive_dir(), e))?;
    crate::sys::fsio::write_atomic(&hold, lineage.as_bytes(), crate::sys::fsio::PRIVATE_FILE)
        .map_err(|e| crate::volume::VolumeError::io("cannot write", &hold, e))?;
    let chunks = restore::remote_rows(&entries, &lineage);
    let mut access = None;
    let made = lifecycle::with_volume_grant::<CliError, _>(&h, kms, || {
        access
            .insert(catalog::open(&dir)?)
            .restore_remote_volume(&h, chunks, root)?;
        Ok(())
    });
    if let Err(e) = made {
        // The volume was not made: its hold alone goes.
        let _ = archive::delete::delete(&store, &lineage, h.id.as_str());
        let _ = std::fs::remove_file(&hold);
        return Err(e);
    }
    let access = access.expect("a volume made was stored through the catalog opened for it");
    Ok((h, access))
}

/// Ends a lazily restored volume's hold on the store (it was hydrated or deleted), and
/// any other hold of the region that nothing here reads through any more; a volume
/// without a hold has nothing to release.
///
/// A hold covers more than its volume: a snapshot of a lazily restored volume, and a
/// volume restored from that snapshot, share its `remote` rows (the same objects). So a
/// hold is kept while any volume or snapshot of this pool still has a chunk in the store
/// under the hold's lineage, and released by the delete or hydrate that ends the last.
pub fn release_hold(cfg: &Config, access: &dyn Catalog, volume: &str) -> Result<(), CliError> {
    let _ = volume;
    let dir = cfg.region_dir().archive_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    let mut holds: Vec<(String, String)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let vol = name.strip_suffix(".hold")?.to_string();
            let lineage = std::fs::read_to_string(e.path()).ok()?;
            Some((vol, lineage.trim().to_string()))
        })
        .collect();
    holds.sort();
    if holds.is_empty() {
        return Ok(());
    }
    let read_here = lineages_read_here(access)?;
    let mut store = None;
    for (vol, lineage) in holds {
        if read_here.contains(&lineage) {
            continue;
        }
        let s = match &store {
            Some(s) => s,
            None => store.insert(StoreArgs::default().require(cfg)?),
        };
        archive::delete::delete(s, &lineage, &vol)?;
        let _ = std::fs::remove_file(hold_path(cfg, &vol));
    }
    Ok(())
}

/// `snapshot copy SNAP --source-snapshot-store URL …`, run in the destination region: the
/// source snapshot's data key from the source's KMS, a new one from this region's, every
/// chunk re-encrypted from the source store into this region's store.
pub fn copy_from_store(
    cfg: &Config,
    source: &StoreArgs,
    source_kms_endpoint: Option<String>,
    snapshot: &str,
    kms_key: Option<&str>,
    description: Option<String>,
    max_bandwidth: Option<u64>,
) -> Result<job::ArchiveStatus, CliError> {
    check_key_region(kms_key, &cfg.region)?;
    let store = StoreArgs::default().require(cfg)?;
    let source_store = source.require(cfg)?;
    let (_, head) = archive::restore::fetch(&source_store, snapshot)?;
    // The source's key is reached through its KMS: the endpoint named here, else the
    // one its header records.
    let mut source_cfg = cfg.for_region(&cfg.region);
    source_cfg.kms_endpoint = source_kms_endpoint.or_else(|| cfg.kms_endpoint.clone());
    let source_kms = source_kms(&source_cfg, &head.volume, snapshot)?;
    let kms = cfg.volume_kms()?;
    let c = StoreCopyArgs {
        region: &cfg.region,
        source_store: &source_store,
        source_kms: source_kms.as_ref(),
        store: &store,
        kms: kms.as_ref(),
        kms_key,
        description,
        max_bandwidth,
    };
    run_store_copy(cfg, &c, snapshot)
}

/// Another machine's region, as a copy pushed there reaches it: its store and its KMS.
pub struct Destination {
    pub region: crate::aws::Region,
    pub store: StoreArgs,
    /// Its KMS [default: AWS KMS in that region].
    pub kms_endpoint: Option<String>,
    /// Credentials for its store and KMS [default: `--aws-profile`'s].
    pub aws_profile: Option<String>,
}

/// `snapshot copy SNAP --destination-region R --destination-snapshot-store URL …`, run on
/// the source's machine: the snapshot's archive in this region's store (finished first if
/// it is still pending), its data key from this region's KMS, a new one from the
/// destination's KMS, every chunk re-encrypted into the destination's store. The
/// destination's machine restores it with `volume create --from-snapshot`.
pub fn copy_to_store(
    cfg: &Config,
    dest: &Destination,
    snapshot: &str,
    kms_key: Option<&str>,
    description: Option<String>,
    max_bandwidth: Option<u64>,
) -> Result<job::ArchiveStatus, CliError> {
    let dir = cfg.region_dir();
    check_key_region(kms_key, &dest.region)?;
    let source_store = StoreArgs::default().require(cfg)?;
    finish_archive(cfg, &dir, snapshot, max_bandwidth)?;
    let (_, head) = archive::restore::fetch(&source_store, snapshot)?;
    let source_kms = source_kms(cfg, &head.volume, snapshot)?;
    // The destination as its own machine would be reached: its store and KMS with its
    // credentials, requests signed for its region.
    let mut dest_cfg = cfg.for_region(&dest.region);
    if dest.aws_profile.is_some() {
        dest_cfg.aws_profile.clone_from(&dest.aws_profile);
    }
    dest_cfg.kms_endpoint = Some(
        dest.kms_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://kms.{}.amazonaws.com", dest.region)),
    );
    let store = dest.store.require(&dest_cfg)?;
    let kms = dest_cfg.volume_kms_signed_for_region()?;
    let c = StoreCopyArgs {
        region: &dest.region,
        source_store: &source_store,
        source_kms: source_kms.as_ref(),
        store: &store,
        kms: &kms,
        kms_key,
        description,
        max_bandwidth,
    };
    run_store_copy(cfg, &c, snapshot)
}

/// The two ends of a copy between stores, whichever machine runs it.
struct StoreCopyArgs<'a> {
    /// The destination region.
    region: &'a crate::aws::Region,
    source_store: &'a SnapshotStore,
    source_kms: &'a dyn crate::kms::KeyBackend,
    store: &'a SnapshotStore,
    kms: &'a dyn crate::kms::KeyBackend,
    kms_key: Option<&'a str>,
    description: Option<String>,
    max_bandwidth: Option<u64>,
}

/// Runs (or resumes) a copy between stores, its job kept in this region's
/// `archive/copies/<destination>-<hash>/`.
fn run_store_copy(
    cfg: &Config,
    c: &StoreCopyArgs,
    snapshot: &str,
) -> Result<job::ArchiveStatus, CliError> {
    let key = crate::kms::KeyRef::parse(
        c.kms_key
            .unwrap_or(crate::volume::lifecycle::DEFAULT_KMS_KEY),
    )?;
    let jobs = job::CopyJobs::new(&cfg.region_dir(), c.region, c.store.config());
    let copy = archive::copy::StoreCopy {
        jobs: &jobs,
        region: c.region,
        source_store: c.source_store,
        source_kms: Some(c.source_kms),
        store: c.store,
        kms: c.kms,
        key: &key,
        description: c.description.clone(),
        max_bandwidth: c.max_bandwidth,
        now_ns: cfg.clock.now_nanos(),
    };
    Ok(archive::copy::copy(&copy, snapshot)?)
}

/// The KMS that unwraps a stored snapshot's data key (its header's endpoint, or `cfg`'s).
fn source_kms(
    cfg: &Config,
    volume: &crate::volume::VolumeHeader,
    snapshot: &str,
) -> Result<Box<dyn crate::kms::KeyBackend>, CliError> {
    match volume.key {
        crate::volume::KeySource::Kms { .. } => cfg.volume_kms_for(volume),
        crate::volume::KeySource::Customer { .. } => Err(customer_key_copy(snapshot)),
    }
}

/// A copy between stores unwraps its source's data key with a KMS: a customer-provided
/// key cannot be used (`snapshot archive --customer-key-file`, the archive's way out,
/// would not help). The way out is a volume under a KMS key.
fn customer_key_copy(snapshot: &str) -> CliError {
    CliError::bad(
        "SNAPSHOT",
        format!(
            "snapshot {snapshot} is of a volume with a customer-provided key, and a copy between snapshot stores needs a data key from a KMS: restore it under a KMS key (`cryptvol volume create --from-snapshot {snapshot} --kms-key KEY --customer-key-file FILE`), then snapshot that volume and copy its snapshot"
        ),
    )
}

/// A copy's key named by an ARN must be of the region the copy lands in: AWS KMS answers
/// an ARN of another region with NotFoundException ("Invalid arn"), and a KMS that served
/// it anyway would make a snapshot whose manifest names one region and its key another.
fn check_key_region(kms_key: Option<&str>, region: &crate::aws::Region) -> Result<(), CliError> {
    use crate::kms::KeyRef;
    let Some(k) = kms_key else {
        return Ok(());
    };
    match KeyRef::parse(k)? {
        KeyRef::KeyArn { region: r, .. } | KeyRef::AliasArn { region: r, .. } if &r != region => {
            Err(CliError::bad(
                "--kms-key",
                format!(
                    "{k} is a key of region {r}, not of {region}, where the copy lands: name a key of {region}, or copy into {r}"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// Makes sure a snapshot of this region is archived: waits for an archiver that runs it,
/// or runs (resumes) its archive here. A snapshot this pool does not hold (one copied
/// into the store, say) is left to the store to answer for.
fn finish_archive(
    cfg: &Config,
    dir: &crate::datadir::RegionDir,
    snapshot: &str,
    max_bandwidth: Option<u64>,
) -> Result<(), CliError> {
    archive::check_snapshot_id(snapshot)?;
    if !has_pool(cfg) {
        return Ok(());
    }
    // Only "not here" sends the copy to the store; any other failure of the pool (busy,
    // damaged) is the answer, not a reason to read a stale or missing archive.
    let rec = match catalog::open(dir)?.snapshot(snapshot, cfg.region.as_str()) {
        Ok(rec) => rec,
        Err(e) if e.kind() == crate::volume::error::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    // Refused before its archive starts: without the key that archive would stay pending
    // for ever (and be restarted by every `snapshot list`), and the copy could not use it.
    if matches!(rec.volume.key, crate::volume::KeySource::Customer { .. }) {
        return Err(customer_key_copy(snapshot));
    }
    let completed =
        || job::read(dir, snapshot).is_some_and(|s| s.state == job::ArchiveState::Completed);
    while !completed() {
        // Wait for a background archiver (its lock), then finish what it left; one that
        // took the lock in between is waited for again.
        drop(job::lock(dir, snapshot)?);
        match run_archive(cfg, snapshot, max_bandwidth, None, &StoreArgs::default()) {
            Ok(_) => break,
            Err(CliError::Archive(ArchiveError::Busy { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The lineages whose objects some volume or snapshot of this pool still reads.
fn lineages_read_here(
    access: &dyn Catalog,
) -> Result<std::collections::BTreeSet<String>, CliError> {
    let mut out = std::collections::BTreeSet::new();
    let mut add = |rows: Vec<(u64, crate::volume::remote::RemoteChunk)>| {
        for (_, rc) in rows {
            if let Some(l) = rc
                .object
                .strip_prefix("chunks/")
                .and_then(|r| r.split_once('/'))
            {
                out.insert(l.0.to_string());
            }
        }
    };
    for h in access.list_volumes()? {
        // An attached volume's fetches are committed later: ask it first.
        if access.remote_bytes(&h.id)? > 0 {
            add(access.load_remote(h.id.as_str())?);
        }
    }
    for r in access.list_snapshots()? {
        add(access.load_remote(r.id.as_str())?);
    }
    Ok(out)
}
