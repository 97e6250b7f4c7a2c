//! The owner of a region's pool: the one place where volumes, snapshots and copies change.
//! The region daemon holds one while volumes are attached; a CLI command holds one when
//! no daemon runs. Both run the same code, so the rules below hold on either path.
//!
//! One owner per volume: every operation on an object (attach, detach, snapshot, resize,
//! delete, restore, copy) takes that object's lock for its whole duration, check and act
//! together, so no operation sees a state another one is in the middle of changing. The
//! states of a volume are detached → attaching → attached → detaching: "attaching" and
//! "detaching" are an attach or detach holding the volume's lock; "attached" is an entry
//! in `open`. Locks are taken in sorted order when an operation needs several, so two
//! operations never wait for each other.
//!
//! A copy holds a durable lease on its source snapshot (taken by the caller in the
//! source's pool) and runs as a job that owns its destination id: a re-run cancels a run
//! still going and takes over, an abandon cancels it and waits for it, and a job whose
//! client went away is cancelled at its next progress report.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::aws::Region;
use crate::crypto::SecretBytes;
use crate::snapshot::catalog::{Catalog, Progress};
use crate::snapshot::reencrypt::{CopyJob, CopyStats};
use crate::snapshot::{PendingCopy, RegionOwners, SnapshotOwners, SnapshotRecord};
use crate::volume::VerifyReport;
use crate::volume::check::OwnerRecords;
use crate::volume::check::{CheckReport, RepairReport};
use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::{SlotNo, SnapshotId, format_size};
use crate::volume::keys::VolumeKeys;
use crate::volume::pool::Rollback;
use crate::volume::remote::{ChunkFetcher, RemoteChunk};
use crate::volume::{OpenVolume, Pool, VolumeHeader, VolumeId};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exclusive locks on object ids (volume, snapshot and copy ids, mount directories).
#[derive(Debug, Default)]
struct ObjectLocks {
    held: Mutex<HashSet<String>>,
    released: Condvar,
}

/// Holds some object locks until dropped.
#[derive(Debug)]
pub struct ObjectGuard<'a> {
    locks: &'a ObjectLocks,
    ids: Vec<String>,
}

impl Drop for ObjectGuard<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.locks.held);
        for id in &self.ids {
            held.remove(id);
        }
        drop(held);
        self.locks.released.notify_all();
    }
}

impl ObjectLocks {
    /// Waits until every id is free, then takes them all at once.
    fn take(&self, ids: &[&str]) -> ObjectGuard<'_> {
        let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        ids.sort();
        ids.dedup();
        let mut held = lock(&self.held);
        while ids.iter().any(|id| held.contains(id)) {
            held = self.released.wait(held).unwrap_or_else(|p| p.into_inner());
        }
        for id in &ids {
            held.insert(id.clone());
        }
        ObjectGuard { locks: self, ids }
    }
}

#[derive(Debug)]
pub struct PoolOwner {
    pub pool: Arc<Pool>,
    region: Region,
    locks: ObjectLocks,
    /// Attached volumes (the "attached" state).
    open: Mutex<HashMap<VolumeId, Arc<OpenVolume>>>,
    /// Cancel flags of running copy jobs, by destination id.
    jobs: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Held shared by every attach (from its start until the volume is registered as
    /// attached) and every copy job; `pool check --repair` takes it exclusively, so it
    /// never rebuilds the free set under a reservation it cannot see.
    repair_gate: std::sync::RwLock<()>,
}

impl PoolOwner {
    pub fn new(pool: Arc<Pool>, region: Region) -> PoolOwner {
        PoolOwner::with_fetcher(pool, region, None)
    }

    /// An owner whose volumes fetch their remote chunks (lazy restore) through `fetcher`
    /// (`daemon::fetcher::for_region`); `None`: the region has no snapshot store.
    pub fn with_fetcher(
        pool: Arc<Pool>,
        region: Region,
        fetcher: Option<Arc<dyn ChunkFetcher>>,
    ) -> PoolOwner {
        pool.set_fetcher(fetcher);
        PoolOwner {
            pool,
            region,
            locks: ObjectLocks::default(),
            open: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            repair_gate: std::sync::RwLock::new(()),
        }
    }

    fn gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.repair_gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of copy `owner` in progress, if it is one.
    fn pending_record(&self, owner: &str) -> Result<Option<PendingCopy>> {
        self.pool
            .pending()?
            .into_iter()
            .find(|(o, _)| o == owner)
            .map(|(_, b)| PendingCopy::decode(&b))
            .transpose()
    }

    /// The holder name of copy `owner` into this pool, as its lease records it.
    fn holder(&self, owner: &str) -> String {
        format!("{}/{owner}", self.region)
    }

    /// Takes the locks of `ids` for an operation (see the module doc).
    pub fn lock_objects(&self, ids: &[&str]) -> ObjectGuard<'_> {
        self.locks.take(ids)
    }

    fn not_found(&self, name: impl Into<String>) -> VolumeError {
        VolumeError::NotFound {
            name: name.into(),
            region: self.region.to_string(),
        }
    }

    /// Snapshot `id` (as the pool's key) and its record, or "not found".
    fn existing_snapshot(&self, id: &str) -> Result<(SnapshotId, SnapshotRecord)> {
        let not_found = || self.not_found(format!("snapshot {id}"));
        let sid = SnapshotId::parse(id).ok_or_else(not_found)?;
        let rec = self.get_snapshot(id)?.ok_or_else(not_found)?;
        Ok((sid, rec))
    }

    fn existing_volume(&self, id: &VolumeId) -> Result<VolumeHeader> {
        self.pool
            .get_volume(id)?
            .ok_or_else(|| self.not_found(id.as_str()))
    }

    /// The attached volume `id`, if it is attached.
    pub fn open_volume(&self, id: &VolumeId) -> Option<Arc<OpenVolume>> {
        lock(&self.open).get(id).cloned()
    }

    pub fn attached(&self) -> Vec<Arc<OpenVolume>> {
        lock(&self.open).values().cloned().collect()
    }

    /// Attaches `id`: opens it and hands it to `serve` (which mounts it), all under the
    /// volume's lock and the locks of `also` (its mount directory). On error nothing stays.
    pub fn attach<T>(
        &self,
        id: &VolumeId,
        also: &[&str],
        keys: VolumeKeys,
        rollback: Rollback,
        serve: impl FnOnce(Arc<OpenVolume>) -> Result<T>,
    ) -> Result<T> {
        let _repair = self.gate();
        let mut ids = vec![id.as_str()];
        ids.extend_from_slice(also);
        let _g = self.locks.take(&ids);
        if lock(&self.open).contains_key(id) {
            return Err(VolumeError::Attached {
                id: id.to_string(),
                at: String::new(),
                hint: "detach it first (`cryptvol detach DIR`)".into(),
            });
        }
        let h = self.existing_volume(id)?;
        let vol = Arc::new(if h.integrity {
            OpenVolume::open_authenticated(
                self.pool.clone(),
                &h,
                keys.xts,
                keys.integrity,
                rollback,
            )?
        } else {
            OpenVolume::open(self.pool.clone(), &h, keys.xts)?
        });
        let out = serve(vol.clone())?;
        lock(&self.open).insert(id.clone(), vol);
        Ok(out)
    }

    /// Detaches `id`: `stop` ends the serving (unmount, join the FUSE threads) and may
    /// refuse (a busy mount: the volume stays attached); then everything is flushed, and
    /// only then does the volume leave the attached state.
    pub fn detach(
        &self,
        id: &VolumeId,
        also: &[&str],
        stop: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut ids = vec![id.as_str()];
        ids.extend_from_slice(also);
        let _g = self.locks.take(&ids);
        let Some(vol) = self.open_volume(id) else {
            return Err(VolumeError::NotAttached { at: id.to_string() });
        };
        stop()?;
        let flushed = vol.flush();
        lock(&self.open).remove(id);
        flushed.map_err(|e| VolumeError::DetachedUnflushed {
            what: id.to_string(),
            source: Box::new(e),
        })
    }

    /// Asks every running copy to stop (the daemon is shutting down; they resume later).
    pub fn cancel_jobs(&self) {
        for cancel in lock(&self.jobs).values() {
            cancel.store(true, Ordering::Release);
        }
    }

    /// Commits every attached volume's pending metadata (a periodic commit, or shutdown).
    pub fn commit(&self) -> Result<()> {
        self.pool.commit()
    }
}

impl Catalog for PoolOwner {
    fn is_daemon(&self) -> bool {
        false
    }

    fn list_volumes(&self) -> Result<Vec<VolumeHeader>> {
        self.pool.list_volumes()
    }

    fn get_volume(&self, id: &VolumeId) -> Result<Option<VolumeHeader>> {
        self.pool.get_volume(id)
    }

    fn create_volume(&self, h: &VolumeHeader) -> Result<()> {
        let _g = self.locks.take(&[h.id.as_str()]);
        self.pool.create_volume(h)
    }

    fn resize_volume(&self, id: &VolumeId, size: u64) -> Result<VolumeHeader> {
        let _g = self.locks.take(&[id.as_str()]);
        let mut h = self.existing_volume(id)?;
        VolumeHeader::validate_size(size)?;
        if size < h.size {
            return Err(VolumeError::invalid(
                "size",
                format!(
                    "{} is smaller than the volume ({}); volumes only grow (shrink the filesystem and copy instead)",
                    format_size(size),
                    format_size(h.size)
                ),
            ));
        }
        h.size = size;
        self.pool.update_volume(&h)?;
        if let Some(v) = self.open_volume(id) {
            v.set_size(size);
        }
        Ok(h)
    }

    fn delete_volume(&self, id: &VolumeId) -> Result<()> {
        let _g = self.locks.take(&[id.as_str()]);
        if self.open_volume(id).is_some() {
            return Err(VolumeError::Attached {
                id: id.to_string(),
                at: String::new(),
                hint: "detach it before deleting".into(),
            });
        }
        let h = self.existing_volume(id)?;
        self.pool.delete_volume(&h)
    }

    /// A pool this process owns outside the daemon has nothing attached (attaching
    /// starts the daemon, which then owns the pool).
    fn attached_at(&self, _id: &VolumeId) -> Result<Option<std::path::PathBuf>> {
        Ok(None)
    }

    fn allocated_bytes(&self, id: &VolumeId) -> Result<u64> {
        match self.open_volume(id) {
            Some(v) => Ok(v.allocated_bytes()),
            None => {
                let h = self.existing_volume(id)?;
                self.pool.allocated_bytes(&h)
            }
        }
    }

    /// Takes a snapshot of `volume`: of exactly the writes acknowledged before it if the
    /// volume is attached (no I/O in flight while the map is shared).
    fn create_snapshot(&self, volume: &VolumeId, rec: &SnapshotRecord) -> Result<()> {
        let _g = self.locks.take(&[volume.as_str(), rec.id.as_str()]);
        let h = self.existing_volume(volume)?;
        // The record embeds the volume's header as it is now, under its lock: the one the
        // caller built it from may be older (a resize in between), or name another volume.
        let rec = SnapshotRecord {
            volume: h.clone(),
            ..rec.clone()
        };
        let bytes = rec.encode();
        match self.open_volume(volume) {
            Some(v) => {
                let _quiet = v.quiesce();
                let r = self.pool.create_snapshot(&h, &rec.id, &bytes);
                // Whatever the result: a snapshot whose commit returned an error may still
                // exist (redb's sync failed after its pages were written), and chunks not
                // marked shared would then be written in place under it. "Shared" when
                // not is only one needless copy.
                v.mark_all_shared();
                r
            }
            None => self.pool.create_snapshot(&h, &rec.id, &bytes),
        }
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        self.pool
            .list_snapshots()?
            .iter()
            .map(|b| SnapshotRecord::decode(b))
            .collect()
    }

    fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        // A string that is not a snapshot id names no snapshot.
        let Some(id) = SnapshotId::parse(id) else {
            return Ok(None);
        };
        self.pool
            .get_snapshot(&id)?
            .map(|b| {
                SnapshotRecord::decode(&b).map_err(|e| crate::volume::record::named(e, id.as_str()))
            })
            .transpose()
    }

    fn delete_snapshot(&self, id: &str) -> Result<()> {
        let _g = self.locks.take(&[id]);
        let (sid, rec) = self.existing_snapshot(id)?;
        // A lease of a copy into this pool that is no longer in progress protects nothing
        // (its command died between finishing and releasing it, or before starting).
        let owners = RegionOwners(self.region.as_str());
        for holder in self.pool.leases(&sid)? {
            let copy = holder.split_once('/').map_or(holder.as_str(), |(_, c)| c);
            if owners.local_holder(&holder) && self.pending_record(copy)?.is_none() {
                self.pool.release_lease(&sid, &holder)?;
            }
        }
        self.pool.delete_snapshot(&sid, rec.volume.chunk_shift)?;
        // Copies of it in this pool that never leased it (their command died before)
        // can never finish: abandon them rather than keep their chunks for ever.
        for (owner, p) in self.pending()? {
            if p.source_in(self.region.as_str()) == Some(id) {
                self.abandon_pending(&owner)?;
            }
        }
        Ok(())
    }

    /// A new volume `h` sharing every slot of snapshot `snap` (copy-on-write restore).
    fn restore_volume(&self, snap: &str, h: &VolumeHeader) -> Result<()> {
        let _g = self.locks.take(&[snap, h.id.as_str()]);
        let (sid, rec) = self.existing_snapshot(snap)?;
        // The new map shares the snapshot's slots: it must be of the same chunk size and
        // reach every chunk of it.
        if h.chunk_shift != rec.volume.chunk_shift || h.size < rec.volume.size {
            return Err(VolumeError::invalid(
                "restore",
                format!(
                    "volume {} must have the chunk size of snapshot {snap} and at least its size",
                    h.id
                ),
            ));
        }
        self.pool.restore_volume(&sid, h)
    }

    fn load_map(&self, owner: &str) -> Result<Vec<(u64, SlotNo)>> {
        self.pool.load_map(owner)
    }

    fn take_lease(&self, snap: &str, holder: &str) -> Result<()> {
        let _g = self.locks.take(&[snap]);
        let id =
            SnapshotId::parse(snap).ok_or_else(|| self.not_found(format!("snapshot {snap}")))?;
        self.pool.take_lease(&id, holder)
    }

    fn leases(&self, snap: &str) -> Result<Vec<String>> {
        match SnapshotId::parse(snap) {
            Some(id) => self.pool.leases(&id),
            None => Ok(vec![]),
        }
    }

    fn release_lease(&self, snap: &str, holder: &str) -> Result<()> {
        let _g = self.locks.take(&[snap]);
        match SnapshotId::parse(snap) {
            Some(id) => self.pool.release_lease(&id, holder),
            // No lease can name it: releasing one that does not exist is a no-op.
            None => Ok(()),
        }
    }

    /// Copies in progress: (destination id, record).
    fn pending(&self) -> Result<Vec<(String, PendingCopy)>> {
        self.pool
            .pending()?
            .into_iter()
            .map(|(o, b)| PendingCopy::decode(&b).map(|p| (o, p)))
            .collect()
    }

    fn begin_copy(&self, owner: &str, pending: &PendingCopy) -> Result<()> {
        let _g = self.locks.take(&[owner]);
        self.pool.begin_pending(owner, &pending.encode())
    }

    /// Abandons a copy in progress: a running job is cancelled first and waited for. Its
    /// chunk size comes from its own record (never from the caller), and a lease it holds
    /// on a source in this pool ends in the same transaction.
    fn abandon_pending(&self, owner: &str) -> Result<()> {
        if let Some(cancel) = lock(&self.jobs).get(owner) {
            cancel.store(true, Ordering::Release);
        }
        let _g = self.locks.take(&[owner]);
        let Some(p) = self.pending_record(owner)? else {
            return Ok(());
        };
        let (shift, _) = SnapshotOwners.pending(&p.encode())?;
        let holder = self.holder(owner);
        let lease = p
            .source_in(self.region.as_str())
            .map(|s| (s, holder.as_str()));
        self.pool.abandon_pending(owner, shift, lease)
    }

    fn restore_remote_volume(
        &self,
        h: &VolumeHeader,
        chunks: Vec<(u64, RemoteChunk)>,
        root: Option<Vec<u8>>,
    ) -> Result<()> {
        let _g = self.locks.take(&[h.id.as_str()]);
        self.pool
            .restore_remote_authenticated(h, &chunks, root.as_deref())
    }

    fn remote_bytes(&self, id: &VolumeId) -> Result<u64> {
        match self.open_volume(id) {
            Some(v) => Ok(v.remote_bytes()),
            None => {
                self.existing_volume(id)?;
                self.pool.remote_bytes(id.as_str())
            }
        }
    }

    fn load_remote(&self, owner: &str) -> Result<Vec<(u64, RemoteChunk)>> {
        self.pool.load_remote(owner)
    }

    /// Hydrates in batches, each under the volume's lock: through the open volume if it is
    /// attached (alongside its I/O), else straight into the pool (committed before the
    /// lock is released, so an attach in between loads what was fetched). Between
    /// batches the volume may be attached, detached, snapshotted or deleted.
    fn verify_volume(&self, id: &VolumeId, data_key: &SecretBytes) -> Result<VerifyReport> {
        let _g = self.locks.take(&[id.as_str()]);
        let h = self.existing_volume(id)?;
        if let Some(v) = self.open_volume(id) {
            return v.verify();
        }
        if !h.integrity {
            return Err(VolumeError::invalid(
                "volume",
                format!("{id} was created without --integrity: it has no block tags to verify"),
            ));
        }
        let keys = VolumeKeys::from_data_key(data_key)?;
        // Opened for the check only: a rolled-back pool is reported, not refused.
        let v = OpenVolume::open_authenticated(
            self.pool.clone(),
            &h,
            keys.xts,
            keys.integrity,
            Rollback::Report,
        )?;
        v.verify()
    }

    fn load_records(&self, owner: &str, shift: u8) -> Result<Vec<(u64, Vec<u8>)>> {
        self.pool.load_records(owner, shift)
    }

    fn load_domains(&self, owner: &str, shift: u8) -> Result<Vec<(u64, u64)>> {
        let mut v: Vec<_> = self.pool.load_domains(owner, shift)?.into_iter().collect();
        v.sort_unstable();
        Ok(v)
    }

    fn integrity_errors(&self, id: &VolumeId) -> Result<u64> {
        self.pool.integrity_errors(id.as_str())
    }

    fn hydrate_volume(&self, id: &VolumeId, progress: Progress) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let _repair = self.gate();
            let _g = self.locks.take(&[id.as_str()]);
            let h = self.existing_volume(id)?;
            let (n, more) = match self.open_volume(id) {
                Some(v) => v.hydrate(crate::volume::pool::HYDRATE_BATCH, progress)?,
                None => {
                    self.pool
                        .hydrate_detached(&h, crate::volume::pool::HYDRATE_BATCH, progress)?
                }
            };
            total += n;
            if !more {
                return Ok(total);
            }
        }
    }

    /// Runs (or resumes) a copy job; refused while the same copy runs for another caller.
    fn check_pool(&self) -> Result<CheckReport> {
        // Everything acknowledged so far is in the committed metadata being checked.
        self.pool.commit()?;
        self.pool.check(&RegionOwners(self.region.as_str()))
    }

    fn repair_pool(&self) -> Result<RepairReport> {
        // No attach or copy may start (or be half way) while the bookkeeping is rebuilt.
        let Ok(_exclusive) = self.repair_gate.try_write() else {
            return Err(VolumeError::InUse {
                what: "the pool".into(),
                by: "an attach or a copy in progress".into(),
                hint: "retry once it is done".into(),
            });
        };
        if let Some(v) = self.attached().first() {
            return Err(VolumeError::Attached {
                id: v.id.to_string(),
                at: String::new(),
                hint: "detach every volume of the region before `pool check --repair`".into(),
            });
        }
        if let Some(job) = lock(&self.jobs).keys().next() {
            return Err(VolumeError::InUse {
                what: "the pool".into(),
                by: format!("the copy into {job}"),
                hint: "wait for the copy to finish".into(),
            });
        }
        self.pool.repair(&RegionOwners(self.region.as_str()))
    }

    fn run_copy(&self, job: CopyJob, progress: Progress) -> Result<CopyStats> {
        // A re-run takes over: a run of the same copy still going (its command was
        // killed a moment ago, or is still running) is cancelled, and this one resumes
        // where it stopped once it has.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let cancel = loop {
            let mut jobs = lock(&self.jobs);
            match jobs.get(&job.owner) {
                Some(running) if std::time::Instant::now() < deadline => {
                    running.store(true, Ordering::Release);
                }
                Some(_) => {
                    return Err(VolumeError::InUse {
                        what: format!("copy {}", job.owner),
                        by: "another run of it that does not stop".into(),
                        hint: "retry later".into(),
                    });
                }
                None => {
                    let c = Arc::new(AtomicBool::new(false));
                    jobs.insert(job.owner.clone(), c.clone());
                    break c;
                }
            }
            drop(jobs);
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let result = {
            let _repair = self.gate();
            let _g = self.locks.take(&[job.owner.as_str()]);
            let holder = self.holder(&job.owner);
            let pending = self.pending_record(&job.owner);
            let tick = |n: u64| {
                if !progress(n) {
                    cancel.store(true, Ordering::Release);
                }
                !cancel.load(Ordering::Acquire)
            };
            match pending {
                Ok(p) => {
                    let lease = p
                        .as_ref()
                        .and_then(|p| p.source_in(self.region.as_str()))
                        .map(|s| (s, holder.as_str()));
                    crate::snapshot::reencrypt::run_job(&self.pool, &job, lease, &tick)
                }
                Err(e) => Err(e),
            }
        };
        lock(&self.jobs).remove(&job.owner);
        result
    }
}

#[cfg(test)]
#[path = "owner_tests.rs"]
mod tests;
