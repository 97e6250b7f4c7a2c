//! Re-encrypting transfers: `snapshot copy` (to another region, or the same region under
//! a new key) and `volume create --from-snapshot --kms-key` (rekey restore). The source's
//! data key is unwrapped by the source region's KMS (one Decrypt), the destination's made
//! by the destination region's KMS (one GenerateDataKey); every chunk is re-encrypted by
//! `snapshot::reencrypt` into the destination pool under a pending owner, which becomes
//! visible only when the copy is complete. A copy interrupted half way resumes when the
//! same command runs again; an interrupted rekey restore is cleaned up and started over.
//!
//! What the workflow needs from its caller (which regions exist, how their pools and KMS
//! are opened, the clock, a progress display) comes through [`Regions`].

use serde::Serialize;

use super::catalog::Catalog;
use super::reencrypt::{CopyJob, CopyStats};
use super::{PendingCopy, SnapshotRecord};
use crate::aws::b64;
use crate::aws::{AwsError, Region};
use crate::crypto::SecretBytes;
use crate::datadir::RegionDir;
use crate::kms::{DataKeySpec, KeyBackend, KeyRef};
use crate::sys::clock::Clock;
use crate::volume::lifecycle::{self, DEFAULT_KMS_KEY, lineage_context};
use crate::volume::pool;
use crate::volume::{KeySource, VolumeError, VolumeHeader, key_check, keys};

/// The regions a transfer works across, as its caller opens them.
pub trait Regions {
    /// The caller's error: KMS and volume failures convert into it unchanged, so that
    /// opening a region's KMS (`kms`) may fail with the caller's own errors.
    type Error: From<VolumeError> + From<AwsError>;

    /// The region the command runs in (a copy's source).
    fn here(&self) -> &Region;
    /// The data directory of region `r`.
    fn dir(&self, r: &Region) -> RegionDir;
    /// The pool catalog of a region: through its daemon when one runs, else owned here.
    fn catalog(&self, dir: &RegionDir) -> Result<Box<dyn Catalog>, VolumeError>;
    /// Region `r`'s KMS as the volume layer uses it.
    fn kms(&self, r: &Region) -> Result<Box<dyn KeyBackend>, Self::Error>;
    /// The KMS of the data key of `h`, a header of region `r` (a remote KMS it records).
    fn kms_for(&self, r: &Region, h: &VolumeHeader) -> Result<Box<dyn KeyBackend>, Self::Error> {
        let _ = h;
        self.kms(r)
    }
    fn clock(&self) -> Clock;
    /// Where to report the bytes copied of `total` (`what` names the copy), if anywhere.
    fn progress(&self, total: u64, what: &str) -> Option<Box<dyn Meter>>;
}

/// A display of a copy's progress (a progress bar, in the CLI).
pub trait Meter: Sync {
    /// `bytes` more were copied.
    fn add(&self, bytes: u64);
    /// The copy ended (done or failed): the display goes away.
    fn finish(&self);
}

/// A fresh data key under `key` of `kms`, bound to `lineage`, with its key check.
fn new_data_key(
    kms: &dyn KeyBackend,
    key: &KeyRef,
    lineage: &str,
) -> Result<(KeySource, SecretBytes), AwsError> {
    let dk = kms.generate_data_key(
        key,
        DataKeySpec::Bytes(keys::DATA_KEY_LEN),
        &lineage_context(lineage),
    )?;
    Ok((
        KeySource::Kms {
            key_arn: dk.key_id.clone(),
            wrapped: dk.ciphertext_blob.clone(),
            endpoint: kms.endpoint().map(String::from),
            check: Some(key_check::compute(&dk.plaintext, lineage)),
        },
        dk.plaintext,
    ))
}

/// The name a copy's lease on its source goes by: the destination region and id.
fn lease_holder(dst_region: &Region, owner: &str) -> String {
    format!("{dst_region}/{owner}")
}

/// Runs (or resumes) the copy of `rec` into `dst` under `owner`, wherever `dst`'s pool is
/// owned (here, or in that region's daemon, which streams its progress), with a lease on
/// the source snapshot for the whole copy: it cannot be deleted while it is read.
#[allow(clippy::too_many_arguments)]
fn run_copy<R: Regions + ?Sized>(
    env: &R,
    src: &dyn Catalog,
    src_region: &RegionDir,
    rec: &SnapshotRecord,
    src_key: &SecretBytes,
    dst: &dyn Catalog,
    dst_region: &Region,
    owner: &str,
    pending: &PendingCopy,
    dst_key: &SecretBytes,
    finish_snapshot: Option<&SnapshotRecord>,
    finish_volume: Option<&VolumeHeader>,
    max_bandwidth: Option<u64>,
) -> Result<CopyStats, VolumeError> {
    // The copy reads the source's slots: chunks still in the object store (a lazily
    // restored volume's) have none. Refused before anything is recorded.
    let remote = src.load_remote(rec.id.as_str())?.len() as u64;
    if remote > 0 {
        return Err(VolumeError::NotHydrated {
            snapshot: rec.id.to_string(),
            chunks: remote,
        });
    }
    let holder = lease_holder(dst_region, owner);
    // Recorded first, leased second: a lease always belongs to a copy that is (or was)
    // in progress, so one whose copy is gone is known to be stale.
    if !dst.pending()?.iter().any(|(o, _)| o == owner) {
        dst.begin_copy(owner, pending)?;
    }
    src.take_lease(rec.id.as_str(), &holder)?;
    // Leased: the snapshot's map and slots stay as they are until the lease ends.
    let map = src.load_map(rec.id.as_str())?;
    let chunk = rec.volume.chunk_size();
    let already = dst.load_map(owner)?.len() as u64;
    let job = CopyJob {
        owner: owner.to_string(),
        pending: b64::encode(&pending.encode()),
        source_data_path: pool::data_path(&src_region.pool_dir(), rec.volume.chunk_shift),
        source_map: map.iter().map(|(c, s)| (*c, s.0)).collect(),
        chunk_shift: rec.volume.chunk_shift,
        source_key: b64::encode(src_key.expose()),
        dest_key: b64::encode(dst_key.expose()),
        finish_snapshot: finish_snapshot.map(|r| b64::encode(&r.encode())),
        finish_volume: finish_volume.map(|h| b64::encode(&h.encode())),
        max_bandwidth,
        source_domains: if rec.volume.integrity {
            vec![]
        } else {
            src.load_domains(rec.id.as_str(), rec.volume.chunk_shift)?
        },
        source_records: if rec.volume.integrity {
            Some(
                src.load_records(rec.id.as_str(), rec.volume.chunk_shift)?
                    .into_iter()
                    .map(|(c, r)| (c, b64::encode(&r)))
                    .collect(),
            )
        } else {
            None
        },
    };
    let pb = env.progress(map.len() as u64 * chunk, &format!("{} → {owner}", rec.id));
    if let Some(pb) = &pb {
        pb.add(already * chunk);
    }
    let tick = |n: u64| {
        if let Some(pb) = &pb {
            pb.add(n);
        }
        true
    };
    let stats = dst.run_copy(job, &tick);
    if let Some(pb) = pb {
        pb.finish();
    }
    let stats = stats?;
    // The copy is complete. Its lease on a source in the same pool ended with it; one in
    // another region's pool is released there: if that region's daemon went away during
    // the copy, through whoever owns that pool now.
    if src.release_lease(rec.id.as_str(), &holder).is_err() {
        env.catalog(src_region)?
            .release_lease(rec.id.as_str(), &holder)?;
    }
    Ok(stats)
}

/// The holders of leases on `snap` that are copies into *other* regions no longer in
/// progress there: a command that died between finishing a copy and releasing its lease
/// left them. A copy records itself as pending before it leases its source, so "not in
/// progress" is never "not started yet". (Stale leases of copies into the snapshot's own
/// region are released by its pool owner.)
pub fn stale_foreign_leases<R: Regions + ?Sized>(
    env: &R,
    access: &dyn Catalog,
    snap: &str,
) -> Result<Vec<String>, VolumeError> {
    let mut stale = vec![];
    for holder in access.leases(snap)? {
        let Some((region, copy)) = holder.split_once('/') else {
            continue;
        };
        let Ok(region) = Region::parse(region) else {
            continue;
        };
        if &region == env.here() {
            continue;
        }
        let dir = env.dir(&region);
        // A region that no longer exists has no copy in progress.
        let in_progress =
            dir.config().is_ok() && env.catalog(&dir)?.pending()?.iter().any(|(o, _)| o == copy);
        if !in_progress {
            stale.push(holder);
        }
    }
    Ok(stale)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CopyResult {
    pub snapshot_id: String,
    pub source_snapshot_id: String,
    pub source_region: String,
    pub region: String,
    pub kms_key_id: String,
    #[serde(flatten)]
    pub stats: CopyStats,
}

/// `snapshot copy SNAP --destination-region R [--kms-key K]`.
pub fn copy_snapshot<R: Regions + ?Sized>(
    env: &R,
    snapshot: &str,
    dest_region: &Region,
    kms_key: Option<&str>,
    description: Option<&str>,
    customer_key: Option<&SecretBytes>,
    max_bandwidth: Option<u64>,
) -> Result<CopyResult, R::Error> {
    let here = env.here();
    let src_dir = env.dir(here);
    src_dir.config()?;
    let dst_dir = env.dir(dest_region);
    dst_dir.config()?;
    let same_region = dest_region == here;
    if same_region && kms_key.is_none() {
        return Err(VolumeError::invalid(
            "--kms-key",
            "a copy within the same region needs a new key: pass --kms-key (or --destination-region)",
        )
        .into());
    }
    let src_access = env.catalog(&src_dir)?;
    let rec = src_access.snapshot(snapshot, here.as_str())?;
    let dst_access_own;
    let dst: &dyn Catalog = if same_region {
        src_access.as_ref()
    } else {
        dst_access_own = env.catalog(&dst_dir)?;
        dst_access_own.as_ref()
    };

    // Source data key: one Decrypt in the source region (or the customer key).
    let src_kms = match rec.volume.key {
        KeySource::Kms { .. } => Some(env.kms_for(here, &rec.volume)?),
        KeySource::Customer { .. } => None,
    };
    let src_key = lifecycle::data_key(
        &rec.volume,
        src_kms.as_ref().map(|k| k as &dyn KeyBackend),
        customer_key,
    )?;
    let dst_kms = env.kms(dest_region)?;
    let key_ref = KeyRef::parse(kms_key.unwrap_or(DEFAULT_KMS_KEY))?;

    // Resume a copy of this snapshot that was interrupted, or start one.
    let resumed = dst.pending()?.into_iter().find_map(|(owner, p)| match p {
        PendingCopy::Copy {
            source_region,
            source_snapshot,
            record,
        } if source_region == here.as_str() && source_snapshot == rec.id.as_str() => {
            Some((owner, record))
        }
        _ => None,
    });
    let (new_rec, dst_key, pending) = match resumed {
        Some((_, record)) => {
            let bytes = b64::decode(&record).map_err(|e| VolumeError::Corrupt {
                what: "pending copy".into(),
                detail: e.to_string(),
            })?;
            let new_rec = SnapshotRecord::decode(&bytes)?;
            let key =
                lifecycle::data_key(&new_rec.volume, Some(&dst_kms as &dyn KeyBackend), None)?;
            let pending = PendingCopy::Copy {
                source_region: here.to_string(),
                source_snapshot: rec.id.to_string(),
                record,
            };
            (new_rec, key, pending)
        }
        None => {
            let mut new_rec = SnapshotRecord::new(
                &rec.volume,
                description.unwrap_or(&format!("Copied from {} in {}", rec.id, here)),
                env.clock().now_nanos(),
            )?;
            let (source, key) = new_data_key(&dst_kms, &key_ref, new_rec.id.as_str())?;
            new_rec.volume.region = dest_region.clone();
            new_rec.volume.lineage = new_rec.id.to_string();
            new_rec.volume.key = source;
            let pending = PendingCopy::Copy {
                source_region: here.to_string(),
                source_snapshot: rec.id.to_string(),
                record: b64::encode(&new_rec.encode()),
            };
            (new_rec, key, pending)
        }
    };
    let owner = new_rec.id.to_string();
    let stats = run_copy(
        env,
        src_access.as_ref(),
        &src_dir,
        &rec,
        &src_key,
        dst,
        dest_region,
        &owner,
        &pending,
        &dst_key,
        Some(&new_rec),
        None,
        max_bandwidth,
    )?;
    let kms_key_id = match &new_rec.volume.key {
        KeySource::Kms { key_arn, .. } => key_arn.clone(),
        KeySource::Customer { .. } => String::new(),
    };
    Ok(CopyResult {
        snapshot_id: owner,
        source_snapshot_id: rec.id.to_string(),
        source_region: here.to_string(),
        region: dest_region.to_string(),
        kms_key_id,
        stats,
    })
}

/// `volume create --from-snapshot SNAP --kms-key K`: a new volume under a new data key,
/// every chunk re-encrypted. Returns the new header.
pub fn restore_rekeyed<R: Regions + ?Sized>(
    env: &R,
    rec: &SnapshotRecord,
    name: &str,
    size: Option<u64>,
    kms_key: &str,
    customer_key: Option<&SecretBytes>,
    max_bandwidth: Option<u64>,
) -> Result<VolumeHeader, R::Error> {
    let here = env.here();
    let dir = env.dir(here);
    let access = env.catalog(&dir)?;
    // An earlier rekey restore of this snapshot that did not finish: clean it up (a run
    // still in progress is cancelled first), and end its lease.
    let kms = env.kms(here)?;
    for (owner, p) in access.pending()? {
        if let PendingCopy::Restore {
            source_snapshot,
            header,
        } = p
            && source_snapshot == rec.id.as_str()
        {
            // Its lease on the source (in this same pool) ends with it, and so does the
            // grant made for the volume it would have become.
            access.abandon_pending(&owner)?;
            if let Some(old) = b64::decode(&header)
                .ok()
                .and_then(|bytes| VolumeHeader::decode(&bytes).ok())
            {
                lifecycle::retire_volume_service_grant(&old, Some(&kms as &dyn KeyBackend))?;
            }
        }
    }
    let src_key = lifecycle::data_key(
        &rec.volume,
        matches!(rec.volume.key, KeySource::Kms { .. }).then_some(&kms as &dyn KeyBackend),
        customer_key,
    )?;
    let mut h = rec.restored_header(name, size, env.clock().now())?;
    access.refuse_taken_name(&h.name)?;
    let (source, dst_key) = new_data_key(&kms, &KeyRef::parse(kms_key)?, h.id.as_str())?;
    h.lineage = h.id.to_string();
    h.key = source;
    let pending = PendingCopy::Restore {
        source_snapshot: rec.id.to_string(),
        header: b64::encode(&h.encode()),
    };
    lifecycle::with_volume_grant(&h, Some(&kms as &dyn KeyBackend), || {
        run_copy(
            env,
            access.as_ref(),
            &dir,
            rec,
            &src_key,
            access.as_ref(),
            here,
            h.id.as_str(),
            &pending,
            &dst_key,
            None,
            Some(&h),
            max_bandwidth,
        )
        .map(|_| ())
    })?;
    Ok(h)
}
