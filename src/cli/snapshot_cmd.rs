//! `cryptvol snapshot ...`: create, list, describe and delete snapshots. Restore is
//! `volume create --from-snapshot`.

use clap::Subcommand;
use serde::Serialize;

use super::Config;
use super::archive_cmd::{self, StoreArgs};
use super::exit::CliError;
use crate::daemon::catalog;
use crate::daemon::mount;
use crate::snapshot::PendingCopy;
use crate::snapshot::archive::{self, job, job::ArchiveStatus, manifest::ManifestHeader};
use crate::snapshot::catalog::Catalog;
use crate::snapshot::{self, SnapshotRecord, SnapshotUsage};
use crate::volume::KeySource;
use crate::volume::ids::format_size;

// `Copy` carries both ends' flags; a command line is parsed once per process, so its
// size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take an instant, crash-consistent snapshot of a volume (filesystem-consistent when
    /// it is mounted with `cryptvol mount`: the filesystem is frozen around it)
    Create {
        /// Volume id or name
        volume: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Archive at most this many bytes per second, e.g. 50M (with a snapshot store)
        #[arg(long, value_name = "RATE")]
        max_bandwidth: Option<String>,
    },
    /// Archive a snapshot into the region's snapshot store now, in the foreground, or
    /// resume an archive that was interrupted (`snapshot create` starts one by itself)
    Archive {
        snapshot: String,
        /// At most this many bytes per second, e.g. 50M
        #[arg(long, value_name = "RATE")]
        max_bandwidth: Option<String>,
        /// The volume's customer-provided key, if it has one
        #[arg(long, value_name = "FILE")]
        customer_key_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List snapshots, oldest first (with --snapshot-store: those in that store)
    List {
        /// Only snapshots of this volume (id or name)
        #[arg(long)]
        volume: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Source, time, size, key, archive state, and bytes shared with the previous
    /// snapshot or unique to it
    Describe { snapshot: String },
    /// Delete a snapshot; frees only the pool space nothing else uses, and, when it is
    /// archived, the store objects no other snapshot uses
    Delete {
        snapshot: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Copy a snapshot to another region (or within one, under a new key): every chunk is
    /// re-encrypted under a new data key from the destination's KMS. Re-run to resume
    Copy {
        snapshot: String,
        #[arg(long, value_name = "REGION")]
        destination_region: Option<String>,
        /// Destination key [default: the destination region's alias/aws/ebs]
        #[arg(long, value_name = "KEY")]
        kms_key: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The source's customer-provided key, if it has one
        #[arg(long, value_name = "FILE")]
        customer_key_file: Option<std::path::PathBuf>,
        /// At most this many bytes per second, e.g. 50M (leaves disk time to the volumes)
        #[arg(long, value_name = "RATE")]
        max_bandwidth: Option<String>,
        /// Copy from another machine's snapshot store (s3://BUCKET/PREFIX) into this
        /// region's store: run it in the destination region
        #[arg(long, value_name = "URL", conflicts_with = "destination_region")]
        source_snapshot_store: Option<String>,
        /// The source store's S3-compatible endpoint
        #[arg(long, value_name = "URL", requires = "source_snapshot_store")]
        source_s3_endpoint: Option<String>,
        /// The source store's region, for signing [default: us-east-1]
        #[arg(long, value_name = "REGION", requires = "source_snapshot_store")]
        source_s3_region: Option<String>,
        /// The KMS of the source's key [default: the endpoint its header records]
        #[arg(long, value_name = "URL", requires = "source_snapshot_store")]
        source_kms_endpoint: Option<String>,
        /// Copy into another machine's region through its snapshot store (s3://BUCKET/PREFIX)
        /// and its KMS: run it where the source snapshot is archived
        #[arg(long, value_name = "URL", requires = "destination_region")]
        destination_snapshot_store: Option<String>,
        /// The destination store's S3-compatible endpoint
        #[arg(long, value_name = "URL", requires = "destination_snapshot_store")]
        destination_s3_endpoint: Option<String>,
        /// The destination store's region, for signing [default: us-east-1]
        #[arg(long, value_name = "REGION", requires = "destination_snapshot_store")]
        destination_s3_region: Option<String>,
        /// The destination region's KMS [default: https://kms.REGION.amazonaws.com]
        #[arg(long, value_name = "URL", requires = "destination_snapshot_store")]
        destination_kms_endpoint: Option<String>,
        /// AWS profile for the destination's store and KMS [default: --aws-profile's]
        #[arg(long, value_name = "NAME", requires = "destination_snapshot_store")]
        destination_aws_profile: Option<String>,
    },
}

/// What a snapshot's id, volume and description say, wherever it is listed from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotFacts {
    snapshot_id: String,
    volume_id: String,
    volume_name: String,
    description: String,
    start_time: i64,
    volume_size: u64,
    size: String,
    encrypted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_id: Option<String>,
}

impl SnapshotFacts {
    fn new(
        id: &crate::volume::ids::SnapshotId,
        volume: &crate::volume::VolumeHeader,
        description: &str,
        created_ns: i64,
    ) -> Self {
        SnapshotFacts {
            snapshot_id: id.to_string(),
            volume_id: volume.id.to_string(),
            volume_name: volume.name.clone(),
            description: description.to_string(),
            start_time: created_ns.div_euclid(1_000_000_000),
            volume_size: volume.size,
            size: format_size(volume.size),
            encrypted: true,
            kms_key_id: match &volume.key {
                KeySource::Kms { key_arn, .. } => Some(key_arn.clone()),
                KeySource::Customer { .. } => None,
            },
        }
    }
}

/// A snapshot of this region's pool.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotInfo {
    #[serde(flatten)]
    facts: SnapshotFacts,
    state: &'static str,
    /// How much of the archive is done, as EBS's `Progress` ("100%" when not archived).
    progress: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    archive: Option<ArchiveStatus>,
    #[serde(flatten)]
    usage: SnapshotUsage,
}

/// A snapshot as the store shows it (from its manifest's header): archived, so completed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct StoredInfo {
    #[serde(flatten)]
    facts: SnapshotFacts,
    state: &'static str,
    progress: &'static str,
    region: String,
    parent_snapshot_id: Option<String>,
    chunks: u64,
}

/// Snapshots of one volume, oldest first.
fn of_volume(all: &[SnapshotRecord], volume: &str) -> Vec<SnapshotRecord> {
    let mut v: Vec<SnapshotRecord> = all
        .iter()
        .filter(|r| r.volume.id.as_str() == volume)
        .cloned()
        .collect();
    v.sort_by_key(|r| (r.created_ns, r.id.clone()));
    v
}

fn info(
    cfg: &Config,
    access: &dyn Catalog,
    all: &[SnapshotRecord],
    r: &SnapshotRecord,
) -> Result<SnapshotInfo, CliError> {
    let siblings = of_volume(all, r.volume.id.as_str());
    let prev = siblings
        .iter()
        .take_while(|s| s.id != r.id)
        .last()
        .map(|p| access.load_map(p.id.as_str()))
        .transpose()?;
    let map = access.load_map(r.id.as_str())?;
    let archive = job::read(&cfg.region_dir(), r.id.as_str());
    Ok(SnapshotInfo {
        facts: SnapshotFacts::new(&r.id, &r.volume, &r.description, r.created_ns),
        state: archive.as_ref().map_or("completed", |a| a.state.as_str()),
        progress: format!("{}%", archive.as_ref().map_or(100, |a| a.progress)),
        archive,
        usage: snapshot::usage(&map, prev.as_deref(), r.volume.chunk_size()),
    })
}

fn stored_info(h: &ManifestHeader) -> StoredInfo {
    StoredInfo {
        facts: SnapshotFacts::new(&h.snapshot_id, &h.volume, &h.description, h.created_ns),
        state: "completed",
        progress: "100%",
        region: h.region.to_string(),
        parent_snapshot_id: h.parent.as_ref().map(|p| p.to_string()),
        chunks: h.chunk_count,
    }
}

/// Runs `f` with the filesystem on `dir` frozen (FIFREEZE through fsfreeze(8)), so that
/// what it captures is filesystem-consistent; always thaws.
fn with_frozen<T>(
    dir: &std::path::Path,
    f: impl FnOnce() -> Result<T, CliError>,
) -> Result<T, CliError> {
    crate::sys::filesystem::freeze(dir)?;
    let r = f();
    let thawed = crate::sys::filesystem::thaw(dir);
    let v = r?;
    thawed?;
    Ok(v)
}

/// `snapshot delete` of a copy still in progress (its destination id, as EBS shows a
/// pending snapshot): the copy is cancelled (a run in progress stops), what it copied is
/// freed, and its lease on the source ends. `None` if `id` is no copy in progress.
fn cancel_copy(
    cfg: &Config,
    access: &dyn Catalog,
    id: &str,
) -> Result<Option<serde_json::Value>, CliError> {
    let Some((
        owner,
        PendingCopy::Copy {
            source_region,
            source_snapshot,
            ..
        },
    )) = access.pending()?.into_iter().find(|(o, _)| o == id)
    else {
        return Ok(None);
    };
    access.abandon_pending(&owner)?;
    // A lease on a source in this region ended with the copy; one in another region's
    // pool is released there.
    let src_region = crate::aws::Region::parse(&source_region)?;
    if src_region != cfg.region {
        let holder = format!("{}/{owner}", cfg.region);
        catalog::open(&cfg.for_region(&src_region).region_dir())?
            .release_lease(&source_snapshot, &holder)?;
    }
    Ok(Some(serde_json::json!({
        "SnapshotId": owner,
        "Deleted": true,
        "CopyCancelled": true,
    })))
}

pub fn run(cfg: &Config, cmd: SnapshotCommand) -> Result<(), CliError> {
    let region = cfg.region_dir();
    // Listing or deleting in a store named on the command line needs no region here:
    // another machine may only read the store.
    let store_only = match &cmd {
        SnapshotCommand::List { store, .. } => store.snapshot_store.is_some(),
        SnapshotCommand::Delete { store, .. } => {
            store.snapshot_store.is_some() && !region.is_initialized()
        }
        _ => false,
    };
    if !store_only {
        region.config()?;
    }
    let open = || catalog::open(&region);
    match cmd {
        SnapshotCommand::Copy {
            snapshot,
            kms_key,
            description,
            max_bandwidth,
            source_snapshot_store: Some(url),
            source_s3_endpoint,
            source_s3_region,
            source_kms_endpoint,
            ..
        } => {
            let max_bandwidth = super::args::parse_rate_opt(max_bandwidth.as_deref())?;
            let source = StoreArgs {
                snapshot_store: Some(url),
                s3_endpoint: source_s3_endpoint,
                s3_region: source_s3_region,
            };
            let status = archive_cmd::copy_from_store(
                cfg,
                &source,
                source_kms_endpoint,
                &snapshot,
                kms_key.as_deref(),
                description,
                max_bandwidth,
            )?;
            cfg.print(&status, "SnapshotCopy")
        }
        SnapshotCommand::Copy {
            snapshot,
            destination_region: Some(destination_region),
            kms_key,
            description,
            max_bandwidth,
            destination_snapshot_store: Some(url),
            destination_s3_endpoint,
            destination_s3_region,
            destination_kms_endpoint,
            destination_aws_profile,
            ..
        } => {
            let max_bandwidth = super::args::parse_rate_opt(max_bandwidth.as_deref())?;
            let destination = archive_cmd::Destination {
                region: crate::aws::Region::parse(&destination_region)?,
                store: StoreArgs {
                    snapshot_store: Some(url),
                    s3_endpoint: destination_s3_endpoint,
                    s3_region: destination_s3_region,
                },
                kms_endpoint: destination_kms_endpoint,
                aws_profile: destination_aws_profile,
            };
            let status = archive_cmd::copy_to_store(
                cfg,
                &destination,
                &snapshot,
                kms_key.as_deref(),
                description,
                max_bandwidth,
            )?;
            cfg.print(&status, "SnapshotCopy")
        }
        SnapshotCommand::Copy {
            snapshot,
            destination_region,
            kms_key,
            description,
            customer_key_file,
            max_bandwidth,
            ..
        } => {
            let max_bandwidth = super::args::parse_rate_opt(max_bandwidth.as_deref())?;
            let dest = match destination_region {
                Some(r) => crate::aws::Region::parse(&r)?,
                None => cfg.region.clone(),
            };
            if !cfg.for_region(&dest).region_dir().is_initialized() {
                return Err(CliError::RegionElsewhere {
                    region: dest.to_string(),
                    data_dir: cfg.data_dir.clone(),
                });
            }
            let ck = customer_key_file
                .as_deref()
                .map(super::volume_cmd::customer_key)
                .transpose()?;
            let r = snapshot::transfer::copy_snapshot(
                cfg,
                &snapshot,
                &dest,
                kms_key.as_deref(),
                description.as_deref(),
                ck.as_ref(),
                max_bandwidth,
            )?;
            cfg.print(&r, "SnapshotCopy")
        }
        SnapshotCommand::Create {
            volume,
            description,
            max_bandwidth,
        } => {
            let max_bandwidth = super::args::parse_rate_opt(max_bandwidth.as_deref())?;
            let store = archive::load_config(&region)?;
            let access = open()?;
            let h = access.find(&volume, cfg.region.as_str())?;
            let rec = SnapshotRecord::new(&h, &description, cfg.clock.now_nanos())?;
            let mounted = mount::records(&region).into_iter().find(|m| {
                m.volume_id == h.id.as_str() && crate::sys::mountinfo::is_mount_point(&m.dir)
            });
            match mounted {
                Some(m) => with_frozen(&m.dir, || Ok(access.create_snapshot(&h.id, &rec)?))?,
                None => access.create_snapshot(&h.id, &rec)?,
            }
            // With a snapshot store, the archive starts now, in the background: the
            // snapshot is `pending` until it is complete, as in EBS (an authenticated
            // volume's too: the archive carries its block tags).
            if store.is_some() && matches!(h.key, KeySource::Kms { .. }) {
                let status = job::ArchiveStatus::new(
                    rec.id.as_str(),
                    h.id.as_str(),
                    max_bandwidth,
                    cfg.clock.now_nanos(),
                );
                job::write(&region, &status)?;
                archive_cmd::spawn_archiver(cfg, rec.id.as_str())?;
            }
            let all = access.list_snapshots()?;
            cfg.print(&info(cfg, access.as_ref(), &all, &rec)?, "Snapshot")
        }
        SnapshotCommand::List {
            volume,
            store:
                StoreArgs {
                    snapshot_store: Some(url),
                    s3_endpoint,
                    s3_region,
                },
        } => {
            let store = StoreArgs {
                snapshot_store: Some(url),
                s3_endpoint,
                s3_region,
            }
            .require(cfg)?;
            let shown: Vec<_> = archive::restore::list(&store)?
                .iter()
                .filter(|h| {
                    volume
                        .as_deref()
                        .is_none_or(|v| h.volume.id.as_str() == v || h.volume.name == v)
                })
                .map(stored_info)
                .collect();
            cfg.print(&serde_json::json!({ "Snapshots": shown }), "Snapshots")
        }
        SnapshotCommand::List { volume, .. } => {
            archive_cmd::resume_stale(cfg)?;
            let access = open()?;
            let mut all = access.list_snapshots()?;
            all.sort_by_key(|r| (r.created_ns, r.id.clone()));
            let only = volume
                .map(|v| access.find(&v, cfg.region.as_str()).map(|h| h.id))
                .transpose()?;
            let shown = all
                .iter()
                .filter(|r| only.as_ref().is_none_or(|id| &r.volume.id == id))
                .map(|r| info(cfg, access.as_ref(), &all, r))
                .collect::<Result<Vec<_>, _>>()?;
            cfg.print(&serde_json::json!({ "Snapshots": shown }), "Snapshots")
        }
        SnapshotCommand::Archive {
            snapshot,
            max_bandwidth,
            customer_key_file,
            store,
        } => {
            let max_bandwidth = super::args::parse_rate_opt(max_bandwidth.as_deref())?;
            let ck = customer_key_file
                .as_deref()
                .map(super::volume_cmd::customer_key)
                .transpose()?;
            let status =
                archive_cmd::run_archive(cfg, &snapshot, max_bandwidth, ck.as_ref(), &store)?;
            cfg.print(&status, "Archive")
        }
        SnapshotCommand::Describe { snapshot } => {
            archive_cmd::resume_stale(cfg)?;
            let access = open()?;
            let rec = access.snapshot(&snapshot, cfg.region.as_str())?;
            let all = access.list_snapshots()?;
            cfg.print(&info(cfg, access.as_ref(), &all, &rec)?, "Snapshot")
        }
        SnapshotCommand::Delete { snapshot, store } => {
            // A region without a pool has no snapshot of its own: opening the catalog
            // would make an empty pool just to find that out.
            let local = !store_only && archive_cmd::has_pool(cfg);
            let access = if local { Some(open()?) } else { None };
            let is_local = match &access {
                Some(a) => a.get_snapshot(&snapshot)?.is_some(),
                None => false,
            };
            if let Some(a) = &access
                && !is_local
                && let Some(cancelled) = cancel_copy(cfg, a.as_ref(), &snapshot)?
            {
                return cfg.print(&cancelled, "Snapshot");
            }
            if !is_local && store.resolve(cfg)?.is_some() {
                // Only in the store (archived elsewhere, or deleted here already).
                let s = store.require(cfg)?;
                let stats = archive::delete::delete_snapshot(&s, &snapshot)?;
                return cfg.print(
                    &serde_json::json!({ "SnapshotId": snapshot, "Deleted": true, "Store": stats }),
                    "Snapshot",
                );
            }
            let access = match access {
                Some(a) => a,
                None => open()?,
            };
            let rec = access.snapshot(&snapshot, cfg.region.as_str())?;
            // Archived (or being archived): the store's objects go first, so a failure
            // leaves the snapshot here to delete again.
            let stats = archive_cmd::cancel_archive(
                cfg,
                access.as_ref(),
                rec.id.as_str(),
                &rec.volume.lineage,
            )?;
            for holder in
                snapshot::transfer::stale_foreign_leases(cfg, access.as_ref(), rec.id.as_str())?
            {
                access.release_lease(rec.id.as_str(), &holder)?;
            }
            access.delete_snapshot(rec.id.as_str())?;
            job::remove(&region, rec.id.as_str());
            // The last reader of a lazily restored volume's objects may have gone.
            archive_cmd::release_hold(cfg, access.as_ref(), rec.id.as_str())?;
            let mut out = serde_json::json!({ "SnapshotId": rec.id.to_string(), "Deleted": true });
            if let Some(stats) = stats {
                out["Store"] = serde_json::to_value(stats).expect("stats serialize");
            }
            cfg.print(&out, "Snapshot")
        }
    }
}
