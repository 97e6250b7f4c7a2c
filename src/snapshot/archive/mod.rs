//! Snapshots archived in an S3-compatible object store, as EBS keeps snapshots in S3: the
//! chunks (XTS ciphertext, as the pool holds it) and a sealed manifest per snapshot, so
//! that any machine with the store and the key's KMS can list and restore them.
//!
//! - `store` (one level up) speaks S3; `manifest` is the per-snapshot format; `index`
//!   counts references to chunk objects (conditional writes make concurrent machines
//!   safe); `upload` archives one snapshot; `job` is the local record of archive jobs;
//!   `restore` reads a snapshot back; `delete` removes what nothing references.
//! - Layout under `s3://BUCKET/PREFIX/`: `snapshots/<snap>.manifest`,
//!   `chunks/<lineage>/<blake3>-<generation>`, `index/<lineage>.json`,
//!   `refs/<lineage>/<holder>.json` (docs/formats.md, "Snapshot store").

pub mod copy;
pub mod delete;
pub mod fetch;
pub mod index;
pub mod job;
pub mod manifest;
pub mod restore;
pub mod upload;

use crate::aws::{AwsError, Region};
use crate::crypto::SecretBytes;
use crate::datadir::RegionDir;
use crate::kms::KeyBackend;
use crate::snapshot::catalog::Catalog;
use crate::snapshot::store::{SnapshotStore, StoreConfig, StoreCredentials, StoreError};
use crate::sys::fsio;
use crate::volume::ids::SnapshotId;
use crate::volume::integrity::SlotRecord;
use crate::volume::{VolumeError, lifecycle, pool};
use job::{ArchiveState, ArchiveStatus};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Kms(#[from] AwsError),
    #[error(
        "region {region} has no snapshot store: set one with `cryptvol region set-snapshot-store s3://BUCKET/PREFIX [--s3-endpoint URL]`, or name one with --snapshot-store"
    )]
    NoStore { region: String },
    #[error("snapshot {snapshot} is not in the snapshot store {url}")]
    NotInStore { snapshot: String, url: String },
    #[error(
        "snapshot {snapshot} is being archived by another process; wait for it (`cryptvol snapshot describe {snapshot}` shows its progress)"
    )]
    Busy { snapshot: String },
    #[error(
        "snapshot {snapshot} is being copied into {destination} by another process; wait for it to finish (its command prints the new snapshot), then run this copy again if you want a second one"
    )]
    CopyBusy {
        snapshot: String,
        destination: String,
    },
    #[error(
        "snapshot {snapshot} changed while it was archived: run `cryptvol pool check`, then `cryptvol snapshot archive {snapshot}`"
    )]
    Changed { snapshot: String },
    #[error("the archive was interrupted: {0}")]
    Interrupted(String),
    #[error(
        "snapshot {snapshot} is of a volume with a customer-provided key: archive it with `cryptvol snapshot archive {snapshot} --customer-key-file FILE`"
    )]
    NeedsCustomerKey { snapshot: String },
}

/// Checks a snapshot id given by a user before it names any local file or store key
/// (`../x` would otherwise name a lock file outside the archive directory, or another
/// object of the store).
pub fn check_snapshot_id(snapshot: &str) -> Result<SnapshotId, ArchiveError> {
    SnapshotId::parse(snapshot).ok_or_else(|| {
        VolumeError::invalid(
            "snapshot id",
            format!(
                "'{}' is not a snapshot id (snap- and 17 hex digits)",
                snapshot.escape_debug()
            ),
        )
        .into()
    })
}

/// Checks a holder name read from the user or the store: a snapshot or volume id.
pub fn check_holder(holder: &str) -> Result<(), ArchiveError> {
    if SnapshotId::parse(holder).is_some() || crate::volume::ids::VolumeId::parse(holder).is_some()
    {
        return Ok(());
    }
    Err(VolumeError::invalid(
        "snapshot id",
        format!("'{}' is not a snapshot or volume id", holder.escape_debug()),
    )
    .into())
}

/// Checks a lineage read from a manifest header (checksummed, not authenticated): it
/// names the index and the chunk prefix, so it must be an id, no path: a volume's (the
/// data key was made for it) or a snapshot's (a copy's new data key was made for it).
pub fn check_lineage(lineage: &str) -> Result<(), ArchiveError> {
    if crate::volume::ids::VolumeId::parse(lineage).is_some()
        || SnapshotId::parse(lineage).is_some()
    {
        return Ok(());
    }
    Err(VolumeError::Corrupt {
        what: "snapshot manifest".into(),
        detail: format!(
            "its lineage '{}' is neither a volume nor a snapshot id",
            lineage.escape_debug()
        ),
    }
    .into())
}

/// The lease an archive job holds on its snapshot (the pool keeps the snapshot, and so
/// the slots it reads, until the job ends).
pub fn lease_holder(snapshot: &str) -> String {
    format!("archive:{snapshot}")
}

/// The region's snapshot store, if it has one.
pub fn load_config(dir: &RegionDir) -> Result<Option<StoreConfig>, VolumeError> {
    let p = dir.snapshot_store_file();
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| VolumeError::Corrupt {
                what: format!("{}", p.display()),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(VolumeError::io("cannot read", p, e)),
    }
}

pub fn save_config(dir: &RegionDir, cfg: &StoreConfig) -> Result<(), VolumeError> {
    let p = dir.snapshot_store_file();
    let bytes = serde_json::to_vec_pretty(cfg).expect("config serializes");
    fsio::write_atomic(&p, &bytes, fsio::PRIVATE_FILE)
        .map_err(|e| VolumeError::io("cannot write", p, e))
}

/// Connects to a store with credentials as the AWS SDKs find them (environment, shared
/// files, `credential_process`; `profile` or AWS_PROFILE).
pub fn open_store(cfg: &StoreConfig, profile: Option<&str>) -> Result<SnapshotStore, ArchiveError> {
    let c = crate::aws::credentials::resolve(profile)?;
    Ok(SnapshotStore::open(
        cfg,
        StoreCredentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
        },
    )?)
}

/// What an archive job needs from its caller.
pub struct JobEnv<'a> {
    pub dir: &'a RegionDir,
    pub region: &'a Region,
    /// Opens the region's pool catalog (briefly: the pool is not held while uploading).
    pub catalog: &'a dyn Fn() -> Result<Box<dyn Catalog>, VolumeError>,
    pub kms: Option<&'a dyn KeyBackend>,
    pub customer_key: Option<&'a SecretBytes>,
    pub now_ns: i64,
}

/// The volume's latest completed archive before `status`, if any (the new one's parent).
fn parent_of(dir: &RegionDir, status: &ArchiveStatus) -> Option<SnapshotId> {
    job::list(dir)
        .into_iter()
        .rfind(|s| {
            s.volume_id == status.volume_id
                && s.snapshot_id != status.snapshot_id
                && s.state == ArchiveState::Completed
                && (s.started_ns, &s.snapshot_id) < (status.started_ns, &status.snapshot_id)
        })
        .and_then(|s| SnapshotId::parse(&s.snapshot_id))
}

/// Runs (or resumes) the archive of `snapshot` into `store`.
pub fn run_job(
    env: &JobEnv,
    store: &SnapshotStore,
    snapshot: &str,
    max_bandwidth: Option<u64>,
) -> Result<ArchiveStatus, ArchiveError> {
    check_snapshot_id(snapshot)?;
    let Some(_lock) = job::try_lock(env.dir, snapshot)? else {
        return Err(ArchiveError::Busy {
            snapshot: snapshot.to_string(),
        });
    };
    let holder = lease_holder(snapshot);
    let catalog = (env.catalog)()?;
    let rec = catalog.snapshot(snapshot, env.region.as_str())?;
    let mut status = job::read(env.dir, snapshot).unwrap_or_else(|| {
        ArchiveStatus::new(snapshot, rec.volume.id.as_str(), max_bandwidth, env.now_ns)
    });
    if status.state == ArchiveState::Completed {
        catalog.release_lease(snapshot, &holder)?;
        return Ok(status);
    }
    if max_bandwidth.is_some() {
        status.max_bandwidth = max_bandwidth;
    }
    status.pid = Some(std::process::id());
    job::write(env.dir, &status)?;
    catalog.take_lease(snapshot, &holder)?;
    let map = catalog.load_map(snapshot)?;
    let remote = catalog.load_remote(snapshot)?;
    // What the manifest carries besides the chunks: each chunk's tweak domain, and an
    // authenticated snapshot's slot records (read under the lease, as the map).
    let shift = rec.volume.chunk_shift;
    // (An authenticated snapshot's domains are in its records.)
    let domains = if rec.volume.integrity {
        Default::default()
    } else {
        catalog.load_domains(snapshot, shift)?.into_iter().collect()
    };
    let records = if rec.volume.integrity {
        let blocks = 1usize << (shift - 12);
        let mut m = std::collections::HashMap::new();
        for (c, bytes) in catalog.load_records(snapshot, shift)? {
            m.insert(c, SlotRecord::decode(&bytes, blocks)?);
        }
        Some(m)
    } else {
        None
    };
    // The pool is not held while uploading: volumes may attach meanwhile; the lease
    // keeps this snapshot's slots as they are.
    drop(catalog);
    let data_key = match (&rec.volume.key, env.customer_key) {
        (crate::volume::KeySource::Customer { .. }, None) => {
            return Err(ArchiveError::NeedsCustomerKey {
                snapshot: snapshot.to_string(),
            });
        }
        _ => lifecycle::data_key(&rec.volume, env.kms, env.customer_key)?,
    };
    let up = upload::Upload {
        store,
        region: env.region,
        record: &rec,
        map,
        remote,
        data_path: pool::data_path(&env.dir.pool_dir(), rec.volume.chunk_shift),
        domains,
        records,
        data_key: &data_key,
        parent: parent_of(env.dir, &status),
        max_bandwidth: status.max_bandwidth,
    };
    let report = |s: &ArchiveStatus| {
        let _ = job::write(env.dir, s);
    };
    match upload::run(&up, &mut status, &report) {
        Ok(()) => {
            (env.catalog)()?.release_lease(snapshot, &holder)?;
            job::write(env.dir, &status)?;
            Ok(status)
        }
        Err(e) => {
            // Still pending: a later run resumes. The message says why it stopped.
            status.error = Some(e.to_string());
            let _ = job::write(env.dir, &status);
            Err(e)
        }
    }
}
