//! Reading archived snapshots back: listing the store (headers only, no key needed),
//! and opening one snapshot's manifest under its data key for a restore.

use std::collections::BTreeSet;

use super::ArchiveError;
use super::index::{self, HolderState};
use super::manifest::{self, ChunkEntry, ManifestHeader};
use crate::crypto::SecretBytes;
use crate::snapshot::store::SnapshotStore;

/// Every snapshot in the store, oldest first (a manifest that does not decode is named
/// in the error: the store holds something cryptvol did not write).
pub fn list(store: &SnapshotStore) -> Result<Vec<ManifestHeader>, ArchiveError> {
    let mut out = Vec::new();
    for key in store.list("snapshots")? {
        let Some(id) = key
            .strip_prefix("snapshots/")
            .and_then(|k| k.strip_suffix(".manifest"))
        else {
            continue;
        };
        let Some(f) = store.get(&key)? else {
            continue; // deleted since the listing
        };
        let h = manifest::read_header(&f.bytes)
            .map_err(|e| crate::volume::record::named(e, &format!("snapshot {id} in the store")))?;
        out.push(h);
    }
    out.sort_by_key(|h| (h.created_ns, h.snapshot_id.clone()));
    Ok(out)
}

/// A snapshot's manifest bytes and its (not yet authenticated) header.
pub fn fetch(
    store: &SnapshotStore,
    snapshot: &str,
) -> Result<(Vec<u8>, ManifestHeader), ArchiveError> {
    let f = store
        .get(&manifest::manifest_key(snapshot))?
        .ok_or_else(|| ArchiveError::NotInStore {
            snapshot: snapshot.to_string(),
            url: store.config().url.clone(),
        })?;
    let h = manifest::read_header(&f.bytes).map_err(|e| {
        crate::volume::record::named(e, &format!("snapshot {snapshot} in the store"))
    })?;
    Ok((f.bytes.to_vec(), h))
}

/// The authenticated chunk list of a fetched manifest.
pub fn open(
    bytes: &[u8],
    snapshot: &str,
    data_key: &SecretBytes,
) -> Result<(ManifestHeader, Vec<ChunkEntry>), ArchiveError> {
    manifest::open(bytes, snapshot, data_key).map_err(|e| {
        crate::volume::record::named(e, &format!("snapshot {snapshot} in the store")).into()
    })
}

/// Registers `volume` as a holder of every chunk of the snapshot it was restored from,
/// so that deleting the snapshot keeps what the volume still reads from the store.
pub fn hold_for_volume(
    store: &SnapshotStore,
    lineage: &str,
    volume: &str,
    entries: &[ChunkEntry],
) -> Result<(), ArchiveError> {
    let hashes: BTreeSet<String> = entries.iter().map(|e| hex::encode(e.blake3)).collect();
    index::save_refs(store, lineage, volume, &hashes)?;
    index::update(store, lineage, |idx| {
        index::hold(idx, volume, HolderState::Restored, &hashes);
    })?;
    Ok(())
}
