//! Reference counts of chunk objects, kept in the store beside them, so that machines
//! that share nothing but the store may archive and delete snapshots of one lineage at
//! the same time. One JSON object per lineage, `index/<lineage>.json`, changed only by a
//! compare-and-swap (`If-Match` on its ETag, `If-None-Match: *` to create it): a change
//! re-reads and retries when another machine changed it first. Format in
//! docs/formats.md, "Snapshot store".
//!
//! The rules that make deletion safe without a lock:
//! - A holder (a snapshot being archived, or a volume lazily restored from one) counts
//!   its references here *before* it relies on any object, and before it uploads one.
//! - An object whose count reaches zero is dropped from the index in the same change;
//!   only then does its deleter remove it. A later archive of the same bytes finds no
//!   entry and uploads them under a new random generation, i.e. another object name, so
//!   a deleter that is slow to remove the old object never removes the new one.
//! - An entry is marked uploaded only after its object is complete; an archive uploads
//!   every object of its own that is not marked (it may have been created by an archive
//!   that died), and bytes are content-addressed, so a second upload is harmless.
//! - Every object under `chunks/<lineage>/` that the index does not name is garbage
//!   (uploads happen only after their entry exists) and may be swept.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::super::store::{SnapshotStore, StoreError};
use super::manifest::object_key;

const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolderState {
    /// A snapshot whose archive is under way.
    Archiving,
    /// A snapshot whose manifest is written.
    Complete,
    /// A volume restored lazily, still reading chunks from the store.
    Restored,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub generation: u64,
    pub refs: u64,
    pub uploaded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineageIndex {
    pub format: u32,
    pub lineage: String,
    /// Holders and their state; each holder's chunk set is `refs/<lineage>/<holder>`.
    pub holders: BTreeMap<String, HolderState>,
    /// blake3 (hex) of a chunk's ciphertext → its object's generation and references.
    pub chunks: BTreeMap<String, Entry>,
}

pub fn index_key(lineage: &str) -> String {
    format!("index/{lineage}.json")
}

/// The chunk set of a holder: the blake3 (hex) of each distinct chunk it references.
pub fn refs_key(lineage: &str, holder: &str) -> String {
    format!("refs/{lineage}/{holder}.json")
}

impl LineageIndex {
    fn empty(lineage: &str) -> LineageIndex {
        LineageIndex {
            format: FORMAT,
            lineage: lineage.to_string(),
            holders: BTreeMap::new(),
            chunks: BTreeMap::new(),
        }
    }

    /// The object that holds the chunk with this blake3 (hex), if the index has it.
    pub fn object_of(&self, hash: &str) -> Option<String> {
        let e = self.chunks.get(hash)?;
        let raw: [u8; 32] = hex::decode(hash).ok()?.try_into().ok()?;
        Some(object_key(&self.lineage, &raw, e.generation))
    }
}

fn corrupt(store: &SnapshotStore, key: &str, why: String) -> StoreError {
    StoreError::Request {
        url: store.config().url.clone(),
        op: "GET",
        key: key.to_string(),
        message: format!(
            "{why}: the snapshot store's index was damaged or written by a newer cryptvol"
        ),
    }
}

/// Reads the lineage's index (an empty one if none exists yet) and its version tag.
pub fn load(
    store: &SnapshotStore,
    lineage: &str,
) -> Result<(LineageIndex, Option<String>), StoreError> {
    let key = index_key(lineage);
    let Some(f) = store.get(&key)? else {
        return Ok((LineageIndex::empty(lineage), None));
    };
    let idx: LineageIndex = serde_json::from_slice(&f.bytes)
        .map_err(|e| corrupt(store, &key, format!("not an index ({e})")))?;
    if idx.format != FORMAT || idx.lineage != lineage {
        return Err(corrupt(store, &key, "unexpected format or lineage".into()));
    }
    Ok((idx, f.etag))
}

/// Applies `change` to the lineage's index atomically: re-reads and retries when another
/// writer got there first. `change` must be a pure function of the index it is given.
pub fn update<T>(
    store: &SnapshotStore,
    lineage: &str,
    mut change: impl FnMut(&mut LineageIndex) -> T,
) -> Result<T, StoreError> {
    let key = index_key(lineage);
    let mut backoff = std::time::Duration::from_millis(5);
    for _ in 0..MAX_ATTEMPTS {
        let (mut idx, etag) = load(store, lineage)?;
        let out = change(&mut idx);
        let bytes = Bytes::from(serde_json::to_vec(&idx).expect("index serializes"));
        let done = match &etag {
            Some(tag) => store.put_if_match(&key, bytes, tag)?,
            None => store.put_if_absent(&key, bytes)?,
        };
        if done {
            return Ok(out);
        }
        std::thread::sleep(backoff + std::time::Duration::from_micros(random_below(5000)));
        backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
    }
    // Many machines at once can each win a turn well within this; a server that refuses
    // every conditional write (or a store that is rewritten all the time) cannot.
    Err(StoreError::Request {
        url: store.config().url.clone(),
        op: "PUT",
        key,
        message: format!(
            "the index changed under every one of {MAX_ATTEMPTS} attempts to update it (is the server honouring If-Match?): try again"
        ),
    })
}

/// Compare-and-swap attempts before `update` gives up (about a minute with the backoff).
const MAX_ATTEMPTS: u32 = 120;

fn random_below(n: u64) -> u64 {
    let r: [u8; 8] = crate::crypto::random::array();
    u64::from_le_bytes(r) % n
}

/// Registers `holder` with references to every chunk in `hashes` (once: a holder already
/// registered changes nothing, so a resumed archive counts nothing twice). Returns the
/// object of each hash and whether it still needs uploading.
pub fn hold(
    idx: &mut LineageIndex,
    holder: &str,
    state: HolderState,
    hashes: &BTreeSet<String>,
) -> BTreeMap<String, (u64, bool)> {
    if !idx.holders.contains_key(holder) {
        for h in hashes {
            idx.chunks
                .entry(h.clone())
                .and_modify(|e| e.refs += 1)
                .or_insert_with(|| Entry {
                    generation: u64::from_le_bytes(crate::crypto::random::array()),
                    refs: 1,
                    uploaded: false,
                });
        }
        idx.holders.insert(holder.to_string(), state);
    }
    hashes
        .iter()
        .filter_map(|h| {
            idx.chunks
                .get(h)
                .map(|e| (h.clone(), (e.generation, !e.uploaded)))
        })
        .collect()
}

/// Unregisters `holder` (if registered) and drops its references; returns the objects
/// no holder references any more, now gone from the index, for the caller to delete.
pub fn release(idx: &mut LineageIndex, holder: &str, hashes: &BTreeSet<String>) -> Vec<String> {
    if idx.holders.remove(holder).is_none() {
        return Vec::new();
    }
    let mut dead = Vec::new();
    for h in hashes {
        let Some(e) = idx.chunks.get_mut(h) else {
            continue;
        };
        e.refs = e.refs.saturating_sub(1);
        if e.refs == 0 {
            if let Some(obj) = idx.object_of(h) {
                dead.push(obj);
            }
            idx.chunks.remove(h);
        }
    }
    dead
}

/// Reads a holder's chunk set (empty if it was never written).
pub fn load_refs(
    store: &SnapshotStore,
    lineage: &str,
    holder: &str,
) -> Result<BTreeSet<String>, StoreError> {
    let key = refs_key(lineage, holder);
    match store.get(&key)? {
        None => Ok(BTreeSet::new()),
        Some(f) => serde_json::from_slice(&f.bytes)
            .map_err(|e| corrupt(store, &key, format!("not a chunk set ({e})"))),
    }
}

pub fn save_refs(
    store: &SnapshotStore,
    lineage: &str,
    holder: &str,
    hashes: &BTreeSet<String>,
) -> Result<(), StoreError> {
    let bytes = Bytes::from(serde_json::to_vec(hashes).expect("a set serializes"));
    store.put(&refs_key(lineage, holder), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn counts_follow_holders_and_dead_objects_leave_the_index() {
        let h = |c: char| c.to_string().repeat(64);
        let (a, b, c) = (h('a'), h('b'), h('c'));
        let mut idx = LineageIndex::empty("vol-00000000000000001");
        let s1 = set(&[&a, &b]);
        let got = hold(&mut idx, "snap-1", HolderState::Archiving, &s1);
        assert!(got.values().all(|(_, upload)| *upload));
        // Registering again (a resumed archive) counts nothing twice.
        hold(&mut idx, "snap-1", HolderState::Archiving, &s1);
        assert_eq!(idx.chunks[&a].refs, 1);
        for e in idx.chunks.values_mut() {
            e.uploaded = true;
        }
        let s2 = set(&[&b, &c]);
        let got = hold(&mut idx, "snap-2", HolderState::Archiving, &s2);
        assert!(!got[&b].1, "b is uploaded already: incremental");
        assert!(got[&c].1);
        assert_eq!(idx.chunks[&b].refs, 2);
        let gen_a = idx.chunks[&a].generation;
        let dead = release(&mut idx, "snap-1", &s1);
        assert_eq!(dead.len(), 1, "only a is unreferenced");
        assert!(dead[0].contains(&a) && dead[0].ends_with(&format!("{gen_a:016x}")));
        assert!(!idx.chunks.contains_key(&a));
        assert_eq!(idx.chunks[&b].refs, 1);
        // Releasing twice (a re-run delete) frees nothing more.
        assert!(release(&mut idx, "snap-1", &s1).is_empty());
        // The same bytes archived again get a new object name.
        hold(&mut idx, "snap-3", HolderState::Archiving, &set(&[&a]));
        assert_ne!(idx.chunks[&a].generation, gen_a);
    }
}
