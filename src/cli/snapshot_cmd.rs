//! `cryptvol snapshot ...`: create, list, describe and delete snapshots. Restore is
//! `volume create --from-snapshot`.

use clap::Subcommand;
use serde::Serialize;

use super::Config;
use super::exit::CliError;
use crate::daemon::catalog;
use crate::daemon::mount;
use crate::snapshot::PendingCopy;
use crate::snapshot::catalog::Catalog;
use crate::snapshot::{self, SnapshotRecord, SnapshotUsage};
use crate::volume::KeySource;
use crate::volume::ids::format_size;

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take an instant, crash-consistent snapshot of a volume (filesystem-consistent when
    /// it is mounted with `cryptvol mount`: the filesystem is frozen around it)
    Create {
        /// Volume id or name
        volume: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List snapshots, oldest first
    List {
        /// Only snapshots of this volume (id or name)
        #[arg(long)]
        volume: Option<String>,
    },
    /// Source, time, size, key, and bytes shared with the previous snapshot or unique to it
    Describe { snapshot: String },
    /// Delete a snapshot; frees only the pool space nothing else uses
    Delete { snapshot: String },
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
    },
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SnapshotInfo {
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
    state: &'static str,
    #[serde(flatten)]
    usage: SnapshotUsage,
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
    Ok(SnapshotInfo {
        snapshot_id: r.id.to_string(),
        volume_id: r.volume.id.to_string(),
        volume_name: r.volume.name.clone(),
        description: r.description.clone(),
        start_time: r.created(),
        volume_size: r.volume.size,
        size: format_size(r.volume.size),
        encrypted: true,
        kms_key_id: match &r.volume.key {
            KeySource::Kms { key_arn, .. } => Some(key_arn.clone()),
            KeySource::Customer { .. } => None,
        },
        state: "completed",
        usage: snapshot::usage(&map, prev.as_deref(), r.volume.chunk_size()),
    })
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
    region.config()?;
    let open = || catalog::open(&region);
    match cmd {
        SnapshotCommand::Copy {
            snapshot,
            destination_region,
            kms_key,
            description,
            customer_key_file,
            max_bandwidth,
        } => {
            let max_bandwidth = max_bandwidth
                .as_deref()
                .map(super::args::parse_rate)
                .transpose()?;
            let dest = match destination_region {
                Some(r) => crate::aws::Region::parse(&r)?,
                None => cfg.region.clone(),
            };
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
        } => {
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
            let all = access.list_snapshots()?;
            cfg.print(&info(access.as_ref(), &all, &rec)?, "Snapshot")
        }
        SnapshotCommand::List { volume } => {
            let access = open()?;
            let mut all = access.list_snapshots()?;
            all.sort_by_key(|r| (r.created_ns, r.id.clone()));
            let only = volume
                .map(|v| access.find(&v, cfg.region.as_str()).map(|h| h.id))
                .transpose()?;
            let shown = all
                .iter()
                .filter(|r| only.as_ref().is_none_or(|id| &r.volume.id == id))
                .map(|r| info(access.as_ref(), &all, r))
                .collect::<Result<Vec<_>, _>>()?;
            cfg.print(&serde_json::json!({ "Snapshots": shown }), "Snapshots")
        }
        SnapshotCommand::Describe { snapshot } => {
            let access = open()?;
            let rec = access.snapshot(&snapshot, cfg.region.as_str())?;
            let all = access.list_snapshots()?;
            cfg.print(&info(access.as_ref(), &all, &rec)?, "Snapshot")
        }
        SnapshotCommand::Delete { snapshot } => {
            let access = open()?;
            if access.get_snapshot(&snapshot)?.is_none()
                && let Some(cancelled) = cancel_copy(cfg, access.as_ref(), &snapshot)?
            {
                return cfg.print(&cancelled, "Snapshot");
            }
            let rec = access.snapshot(&snapshot, cfg.region.as_str())?;
            for holder in
                snapshot::transfer::stale_foreign_leases(cfg, access.as_ref(), rec.id.as_str())?
            {
                access.release_lease(rec.id.as_str(), &holder)?;
            }
            access.delete_snapshot(rec.id.as_str())?;
            cfg.print(
                &serde_json::json!({ "SnapshotId": rec.id.to_string(), "Deleted": true }),
                "Snapshot",
            )
        }
    }
}
