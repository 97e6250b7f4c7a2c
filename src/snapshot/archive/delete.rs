//! Deleting an archived snapshot (or releasing a lazily restored volume's hold): the
//! manifest first (nothing can start restoring it), then the holder's references in one
//! index change, then the objects that change left unreferenced, then any garbage of the
//! lineage (objects the index does not name, left by a deleter that died). Each step is
//! safe to repeat, and safe against another machine archiving or deleting at once.

use super::ArchiveError;
use super::index;
use super::manifest;
use crate::snapshot::store::SnapshotStore;

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteStats {
    /// Chunk objects removed because nothing references them any more.
    pub objects_deleted: u64,
    /// Objects of the lineage found unreferenced (from an interrupted delete) and removed.
    pub garbage_deleted: u64,
}

/// Deletes snapshot (or volume hold) `holder` of `lineage` from the store.
pub fn delete(
    store: &SnapshotStore,
    lineage: &str,
    holder: &str,
) -> Result<DeleteStats, ArchiveError> {
    super::check_holder(holder)?;
    super::check_lineage(lineage)?;
    if holder.starts_with("snap-") {
        store.delete(&manifest::manifest_key(holder))?;
    }
    let hashes = index::load_refs(store, lineage, holder)?;
    let dead = index::update(store, lineage, |idx| index::release(idx, holder, &hashes))?;
    let mut stats = DeleteStats::default();
    for key in &dead {
        store.delete(key)?;
        stats.objects_deleted += 1;
    }
    store.delete(&index::refs_key(lineage, holder))?;
    stats.garbage_deleted = sweep(store, lineage)?;
    Ok(stats)
}

/// Deletes archived snapshot `snapshot` from the store, knowing only its id (another
/// machine's snapshot, or one deleted here already). Its lineage is in its manifest; a
/// delete killed after removing the manifest left the snapshot's chunk set
/// (`refs/<lineage>/<snap>.json`), which names the lineage too, so a re-run completes it.
pub fn delete_snapshot(store: &SnapshotStore, snapshot: &str) -> Result<DeleteStats, ArchiveError> {
    let lineage = match super::restore::fetch(store, snapshot) {
        Ok((_, h)) => h.volume.lineage,
        Err(ArchiveError::NotInStore { snapshot, url }) => {
            let tail = format!("/{snapshot}.json");
            let found = store
                .list("refs")?
                .into_iter()
                .filter_map(|k| {
                    k.strip_prefix("refs/")?
                        .strip_suffix(&tail)
                        .map(str::to_string)
                })
                .find(|l| super::check_lineage(l).is_ok());
            found.ok_or(ArchiveError::NotInStore { snapshot, url })?
        }
        Err(e) => return Err(e),
    };
    delete(store, &lineage, snapshot)
}

/// Removes objects under `chunks/<lineage>/` that the index does not name. Listed before
/// the index is read: an object that exists at the listing was uploaded after its entry
/// was counted, so the index read afterwards names it unless it is really dead.
pub fn sweep(store: &SnapshotStore, lineage: &str) -> Result<u64, ArchiveError> {
    let listed = store.list(&format!("chunks/{lineage}"))?;
    let (idx, _) = index::load(store, lineage)?;
    let live: std::collections::BTreeSet<String> =
        idx.chunks.keys().filter_map(|h| idx.object_of(h)).collect();
    let mut n = 0;
    for key in listed {
        if !live.contains(&key) {
            store.delete(&key)?;
            n += 1;
        }
    }
    Ok(n)
}
