//! The objects of a pool: volumes, snapshots, copies in progress and the leases that
//! keep a copy's source alive. Every change here is one redb transaction; block-level
//! changes (writes, discards) go through `alloc` instead.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::auth::{clone_root, drop_record, drop_root, seal_root};
use super::remote::{clone_remote, drop_remote, insert_remote};
use super::{Pool, lock};
use crate::volume::error::{Result, VolumeError};
use crate::volume::header::VolumeHeader;
use crate::volume::ids::{SlotNo, SnapshotId, VolumeId};
use crate::volume::record::named;
use crate::volume::remote::RemoteChunk;
use crate::volume::tables::{FREE, LEASES, MAPS, PENDING, REFS, SNAPSHOTS, VOLUMES};

impl Pool {
    pub fn list_volumes(&self) -> Result<Vec<VolumeHeader>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(VOLUMES)?;
        let mut out = vec![];
        for item in t.iter()? {
            let (k, v) = item?;
            out.push(VolumeHeader::decode(v.value()).map_err(|e| named(e, k.value()))?);
        }
        Ok(out)
    }

    pub fn get_volume(&self, id: &VolumeId) -> Result<Option<VolumeHeader>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(VOLUMES)?;
        t.get(id.as_str())?
            .map(|v| VolumeHeader::decode(v.value()).map_err(|e| named(e, id.as_str())))
            .transpose()
    }

    /// Stores a new volume's header durably; fails if its id or name is taken.
    pub fn create_volume(&self, h: &VolumeHeader) -> Result<()> {
        self.add_volume(h, None, &[], None)
    }

    /// Stores a new volume, empty or (`share_from`) with every slot of that map shared
    /// and its `remote` rows copied, or with the `remote` chunks given (and `root`, the
    /// first root of an authenticated one), in one transaction.
    pub(super) fn add_volume(
        &self,
        h: &VolumeHeader,
        share_from: Option<&SnapshotId>,
        remote: &[(u64, RemoteChunk)],
        root: Option<&[u8]>,
    ) -> Result<()> {
        let _c = lock(&self.commit_lock);
        if !h.name.is_empty()
            && let Some(other) = self.list_volumes()?.into_iter().find(|o| o.name == h.name)
        {
            return Err(VolumeError::NameTaken {
                name: h.name.clone(),
                id: other.id.to_string(),
            });
        }
        let w = self.begin_write()?;
        {
            let mut t = w.open_table(VOLUMES)?;
            if t.get(h.id.as_str())?.is_some() {
                return Err(VolumeError::invalid(
                    "volume id",
                    format!("{} exists", h.id),
                ));
            }
            t.insert(h.id.as_str(), h.encode().as_slice())?;
        }
        if let Some(from) = share_from {
            // In the same transaction: a snapshot deleted a moment ago is not restored
            // as an empty volume.
            if w.open_table(SNAPSHOTS)?.get(from.as_str())?.is_none() {
                return Err(VolumeError::NotFound {
                    name: format!("snapshot {from}"),
                    region: h.region.to_string(),
                });
            }
            clone_map(&w, from.as_str(), h.id.as_str(), h.chunk_shift)?;
            clone_remote(&w, from.as_str(), h.id.as_str())?;
            clone_root(&w, from.as_str(), h.id.as_str())?;
        }
        insert_remote(&w, h.id.as_str(), remote, root)?;
        w.commit()?;
        Ok(())
    }

    /// Replaces a volume's header (resize, rename) durably.
    pub fn update_volume(&self, h: &VolumeHeader) -> Result<()> {
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        w.open_table(VOLUMES)?
            .insert(h.id.as_str(), h.encode().as_slice())?;
        w.commit()?;
        Ok(())
    }

    /// The committed map of a volume or snapshot: chunk → slot.
    pub fn load_map(&self, owner: &str) -> Result<Vec<(u64, SlotNo)>> {
        let r = self.db()?.begin_read()?;
        let t = r.open_table(MAPS)?;
        let mut out = vec![];
        for item in t.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            out.push((k.value().1, SlotNo(v.value())));
        }
        Ok(out)
    }

    /// Deletes a volume and drops its references; slots nothing else uses are freed.
    pub fn delete_volume(&self, h: &VolumeHeader) -> Result<()> {
        self.commit()?;
        let c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        let freed = drop_map(&w, h.id.as_str(), h.chunk_shift)?;
        drop_remote(&w, h.id.as_str())?;
        drop_root(&w, h.id.as_str())?;
        w.open_table(VOLUMES)?.remove(h.id.as_str())?;
        w.commit()?;
        drop(c);
        self.release_freed(freed);
        if h.integrity
            && let Some(a) = self.anchor(h.id.as_str())
            && let Err(e) = a.remove()
        {
            tracing::warn!("volume {} deleted, but not its anchor: {e}", h.id);
        }
        Ok(())
    }

    /// Takes a snapshot: `record` is stored under `snap_id`, and the snapshot's map is the
    /// volume's committed map, sharing every slot (one more reference each). Pending
    /// writes are committed first, so the snapshot holds everything acknowledged before
    /// it. The caller keeps writers out for the duration (see `OpenVolume::quiesce`).
    pub fn create_snapshot(
        &self,
        vol: &VolumeHeader,
        snap_id: &SnapshotId,
        record: &[u8],
    ) -> Result<()> {
        self.commit()?;
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        if w.open_table(VOLUMES)?.get(vol.id.as_str())?.is_none() {
            return Err(VolumeError::NotFound {
                name: vol.id.to_string(),
                region: vol.region.to_string(),
            });
        }
        {
            let mut snaps = w.open_table(SNAPSHOTS)?;
            if snaps.get(snap_id.as_str())?.is_some() {
                return Err(VolumeError::invalid(
                    "snapshot id",
                    format!("{snap_id} exists"),
                ));
            }
            snaps.insert(snap_id.as_str(), record)?;
        }
        clone_map(&w, vol.id.as_str(), snap_id.as_str(), vol.chunk_shift)?;
        clone_remote(&w, vol.id.as_str(), snap_id.as_str())?;
        clone_root(&w, vol.id.as_str(), snap_id.as_str())?;
        w.commit()?;
        Ok(())
    }

    /// Deletes a snapshot; slots no volume or other snapshot uses are freed.
    pub fn delete_snapshot(&self, snap_id: &SnapshotId, chunk_shift: u8) -> Result<()> {
        self.commit()?;
        let c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        // Checked in the transaction that deletes: no lease can be taken in between.
        if let Some((holder, _)) = leases_in(&w.open_table(LEASES)?, snap_id.as_str())?
            .into_iter()
            .next()
        {
            let hint = match holder.split_once('/') {
                Some((region, id)) if id.starts_with("snap-") => format!(
                    "wait for that copy to finish (re-run it if it was interrupted), or cancel it with `cryptvol --region {region} snapshot delete {id}`"
                ),
                _ => "wait for that copy to finish (re-run it if it was interrupted)".into(),
            };
            return Err(VolumeError::InUse {
                what: format!("snapshot {snap_id}"),
                by: format!("the copy {holder}"),
                hint,
            });
        }
        let freed = drop_map(&w, snap_id.as_str(), chunk_shift)?;
        drop_remote(&w, snap_id.as_str())?;
        drop_root(&w, snap_id.as_str())?;
        w.open_table(SNAPSHOTS)?.remove(snap_id.as_str())?;
        w.commit()?;
        drop(c);
        self.release_freed(freed);
        Ok(())
    }

    /// A new volume sharing every slot of a snapshot (copy-on-write restore).
    pub fn restore_volume(&self, snap_id: &SnapshotId, h: &VolumeHeader) -> Result<()> {
        self.add_volume(h, Some(snap_id), &[], None)
    }

    /// Records a copy in progress under `owner` (durably, before any chunk is copied).
    pub fn begin_pending(&self, owner: &str, record: &[u8]) -> Result<()> {
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        // A copy that finished already must not start again under the same id (its map
        // would be copied into twice).
        if w.open_table(VOLUMES)?.get(owner)?.is_some()
            || w.open_table(SNAPSHOTS)?.get(owner)?.is_some()
        {
            return Err(VolumeError::invalid(
                "copy",
                format!("{owner} exists already: the copy finished"),
            ));
        }
        w.open_table(PENDING)?.insert(owner, record)?;
        w.commit()?;
        Ok(())
    }

    /// Copies in progress: (owner, record).
    pub fn pending(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self.db()?.begin_read()?;
        let t = match r.open_table(PENDING) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![];
        for item in t.iter()? {
            let (k, v) = item?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Makes a finished copy visible, in one transaction with its last chunks: as a
    /// snapshot (`volume` = None) or as a volume.
    pub fn finish_pending(
        &self,
        owner: &str,
        snapshot: Option<&[u8]>,
        volume: Option<&VolumeHeader>,
        lease: Option<(&str, &str)>,
        root: Option<(&crate::volume::integrity::IntegrityKeys, u8)>,
    ) -> Result<()> {
        self.commit()?;
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        if w.open_table(PENDING)?.remove(owner)?.is_none() {
            return Err(VolumeError::Cancelled {
                what: format!("the copy into {owner} (it was abandoned meanwhile)"),
            });
        }
        if let Some(rec) = snapshot {
            w.open_table(SNAPSHOTS)?.insert(owner, rec)?;
        }
        if let Some(h) = volume {
            w.open_table(VOLUMES)?
                .insert(h.id.as_str(), h.encode().as_slice())?;
        }
        if let Some((keys, shift)) = root {
            seal_root(&w, owner, shift, keys)?;
        }
        // The copy's lease on a source in this same pool ends with it, atomically.
        if let Some(l) = lease {
            w.open_table(LEASES)?.remove(l)?;
        }
        w.commit()?;
        Ok(())
    }

    /// Abandons a copy in progress: its chunks are freed, nothing of it remains.
    /// `chunk_shift` is the copy's own (from its record); `lease`, one on a source in this
    /// pool, ends in the same transaction.
    pub fn abandon_pending(
        &self,
        owner: &str,
        chunk_shift: u8,
        lease: Option<(&str, &str)>,
    ) -> Result<()> {
        self.commit()?;
        let c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        // Only a copy still in progress: an id that finished is a volume or snapshot now.
        if w.open_table(PENDING)?.remove(owner)?.is_none() {
            return Ok(());
        }
        if let Some(l) = lease {
            w.open_table(LEASES)?.remove(l)?;
        }
        let freed = drop_map(&w, owner, chunk_shift)?;
        drop_remote(&w, owner)?;
        w.commit()?;
        drop(c);
        self.release_freed(freed);
        Ok(())
    }

    pub fn list_snapshots(&self) -> Result<Vec<Vec<u8>>> {
        let r = self.db()?.begin_read()?;
        let t = match r.open_table(SNAPSHOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = vec![];
        for item in t.iter()? {
            out.push(item?.1.value().to_vec());
        }
        Ok(out)
    }

    pub fn get_snapshot(&self, snap_id: &SnapshotId) -> Result<Option<Vec<u8>>> {
        let r = self.db()?.begin_read()?;
        let t = match r.open_table(SNAPSHOTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(snap_id.as_str())?.map(|v| v.value().to_vec()))
    }

    /// Bytes of pool data referenced by a volume's committed map.
    pub fn allocated_bytes(&self, h: &VolumeHeader) -> Result<u64> {
        Ok(self.load_map(h.id.as_str())?.len() as u64 * h.chunk_size())
    }

    // ---- leases: copies reading a snapshot ---------------------------------------------

    /// Records durably that `holder` (a copy, named "<region>/<owner id>") reads
    /// `snap_id`, which then cannot be deleted until [`Pool::release_lease`]. Taking the
    /// same lease again is a no-op (a resumed copy).
    pub fn take_lease(&self, snap_id: &SnapshotId, holder: &str) -> Result<()> {
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        if w.open_table(SNAPSHOTS)?.get(snap_id.as_str())?.is_none() {
            return Err(VolumeError::NotFound {
                name: format!("snapshot {snap_id}"),
                region: String::new(),
            });
        }
        w.open_table(LEASES)?
            .insert((snap_id.as_str(), holder), &[][..])?;
        w.commit()?;
        Ok(())
    }

    /// Ends a lease (the copy finished or was abandoned). Releasing one that does not
    /// exist is a no-op.
    pub fn release_lease(&self, snap_id: &SnapshotId, holder: &str) -> Result<()> {
        let _c = lock(&self.commit_lock);
        let w = self.begin_write()?;
        w.open_table(LEASES)?.remove((snap_id.as_str(), holder))?;
        w.commit()?;
        Ok(())
    }

    /// The holders of leases on `snap_id`.
    pub fn leases(&self, snap_id: &SnapshotId) -> Result<Vec<String>> {
        let r = self.db()?.begin_read()?;
        match r.open_table(LEASES) {
            Ok(t) => Ok(leases_in(&t, snap_id.as_str())?
                .into_iter()
                .map(|(h, _)| h)
                .collect()),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(vec![]),
            Err(e) => Err(e.into()),
        }
    }
}

/// (holder, record) of every lease on `snap_id`.
fn leases_in(
    t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    snap_id: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = vec![];
    for item in t.range((snap_id, "")..)? {
        let (k, v) = item?;
        let (s, h) = k.value();
        if s != snap_id {
            break;
        }
        out.push((h.to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// Gives `to` the same map as `from`, one more reference per slot.
fn clone_map(w: &WriteTransaction, from: &str, to: &str, shift: u8) -> Result<()> {
    let mut maps = w.open_table(MAPS)?;
    let mut refs = w.open_table(REFS)?;
    let rows: Vec<(u64, u64)> = maps
        .range((from, 0)..=(from, u64::MAX))?
        .map(|item| item.map(|(k, v)| (k.value().1, v.value())))
        .collect::<std::result::Result<_, _>>()?;
    for (chunk, slot) in rows {
        maps.insert((to, chunk), slot)?;
        let old = refs.get((shift, slot))?.map(|v| v.value()).unwrap_or(0);
        refs.insert((shift, slot), old + 1)?;
    }
    Ok(())
}

/// Removes `owner`'s map, one reference less per slot; returns the slots freed.
fn drop_map(w: &WriteTransaction, owner: &str, shift: u8) -> Result<Vec<(u8, u64)>> {
    let mut maps = w.open_table(MAPS)?;
    let mut refs = w.open_table(REFS)?;
    let mut free = w.open_table(FREE)?;
    let rows: Vec<(u64, u64)> = maps
        .range((owner, 0)..=(owner, u64::MAX))?
        .map(|item| item.map(|(k, v)| (k.value().1, v.value())))
        .collect::<std::result::Result<_, _>>()?;
    let mut freed = vec![];
    for (chunk, slot) in rows {
        maps.remove((owner, chunk))?;
        let k = (shift, slot);
        let old = refs.get(k)?.map(|v| v.value()).unwrap_or(0);
        if old == 0 {
            return Err(VolumeError::Corrupt {
                what: "pool reference counts".into(),
                detail: format!(
                    "{owner} maps chunk {chunk} to slot {slot}, whose count is 0: run `cryptvol pool check`"
                ),
            });
        }
        if old == 1 {
            refs.remove(k)?;
            free.insert(k, ())?;
            drop_record(w, k.0, k.1)?;
            super::domains::drop_domain(w, k.0, k.1)?;
            freed.push(k);
        } else {
            refs.insert(k, old - 1)?;
        }
    }
    Ok(freed)
}
