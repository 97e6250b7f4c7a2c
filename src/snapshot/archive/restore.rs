//! Reading archived snapshots back: listing the store (headers only, no key needed),
//! and opening one snapshot's manifest under its data key for a restore.

use std::collections::BTreeSet;

use super::ArchiveError;
use super::index::{self, HolderState};
use super::manifest::{self, ChunkEntry, ManifestHeader};
use crate::crypto::SecretBytes;
use crate::snapshot::store::SnapshotStore;
use crate::volume::integrity::{IntegrityKeys, Root};
use crate::volume::remote::RemoteChunk;

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
    super::check_snapshot_id(snapshot)?;
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

/// The `remote` rows of a volume restored lazily from a snapshot whose authenticated
/// chunk list is `entries`: each chunk's object, hash, domain and record.
pub fn remote_rows(entries: &[ChunkEntry], lineage: &str) -> Vec<(u64, RemoteChunk)> {
    entries
        .iter()
        .map(|e| {
            (
                e.chunk,
                RemoteChunk {
                    object: e.object_key(lineage),
                    blake3: e.blake3,
                    len: e.len,
                    domain: e.domain,
                    record: e.record.clone(),
                },
            )
        })
        .collect()
}

/// The first root (the pool's `roots` row) of a volume restored lazily from an
/// authenticated snapshot: generation 1 over every chunk's (chunk, record) leaf, as its
/// pool computes it over `remote` rows, under keys from the snapshot's data key. Made
/// here, from the authenticated chunk list, so the pool's copy of the records is bound to
/// it from the start.
pub fn first_root(data_key: &SecretBytes, entries: &[ChunkEntry]) -> Vec<u8> {
    let keys = IntegrityKeys::from_data_key(data_key);
    let mut root = Root {
        generation: 1,
        acc: [0; 32],
    };
    for e in entries {
        let rec = e.record.as_deref().unwrap_or(&[]);
        root.xor_leaf(&keys.leaf(e.chunk, rec));
    }
    root.encode(&keys)
}

/// Registers `volume` as a holder of every chunk of `snapshot` (whose authenticated
/// chunk list is `entries`), so that deleting the snapshot keeps what the volume still
/// reads from the store. In the same index change, the snapshot must still be a holder
/// with these very objects: a delete that ran since its manifest was read released them
/// (and may have removed them), and a hold taken then would count objects that are gone
/// (new entries, under new generations, that nothing uploads).
pub fn hold_for_volume(
    store: &SnapshotStore,
    lineage: &str,
    snapshot: &str,
    volume: &str,
    entries: &[ChunkEntry],
) -> Result<(), ArchiveError> {
    super::check_lineage(lineage)?;
    let hashes: BTreeSet<String> = entries.iter().map(|e| hex::encode(e.blake3)).collect();
    index::save_refs(store, lineage, volume, &hashes)?;
    let held = index::update(store, lineage, |idx| {
        let snapshot_holds = matches!(
            idx.holders.get(snapshot),
            Some(HolderState::Archiving | HolderState::Complete)
        ) && entries.iter().all(|e| {
            idx.chunks
                .get(&hex::encode(e.blake3))
                .is_some_and(|c| c.generation == e.generation && c.uploaded)
        });
        if snapshot_holds {
            index::hold(idx, volume, HolderState::Restored, &hashes);
        }
        snapshot_holds
    })?;
    if !held {
        // Nothing was counted for the volume; its chunk set goes too.
        let _ = index::update(store, lineage, |idx| index::release(idx, volume, &hashes));
        let _ = store.delete(&index::refs_key(lineage, volume));
        return Err(ArchiveError::NotInStore {
            snapshot: snapshot.to_string(),
            url: store.config().url.clone(),
        });
    }
    Ok(())
}
