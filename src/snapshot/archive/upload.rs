//! Uploading one snapshot: read every written chunk's ciphertext from the pool's data
//! file (the snapshot is leased, so its slots stay as they are; an authenticated slot's
//! blocks that its record places in the second half come from the alternate file, so the
//! object holds the chunk assembled), hash it, count the
//! snapshot's references in the lineage index, upload (in parallel, throttled) only the
//! chunks whose bytes the store does not hold yet, then write the sealed manifest. Every
//! step is safe to repeat, so a killed run resumes where its last index update left it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::ArchiveError;
use super::index::{self, HolderState};
use super::job::{ArchiveState, ArchiveStatus};
use super::manifest::{self, ChunkEntry, ManifestHeader};
use crate::aws::Region;
use crate::crypto::SecretBytes;
use crate::snapshot::SnapshotRecord;
use crate::snapshot::store::{Bounded, SnapshotStore, StoreError};
use crate::snapshot::throttle::Throttle;
use crate::volume::ids::{BLOCK_SIZE, SlotNo, SnapshotId};
use crate::volume::integrity::SlotRecord;
use crate::volume::storage::file::read_full_at;

/// Uploads in flight at once: S3 scales with parallel requests, and each holds one chunk.
pub const PARALLEL_UPLOADS: usize = 8;
/// Chunks uploaded between two saves of the uploaded marks in the index.
const BATCH: usize = 16;

pub struct Upload<'a> {
    pub store: &'a SnapshotStore,
    pub region: &'a Region,
    pub record: &'a SnapshotRecord,
    /// The snapshot's committed map, read under its lease.
    pub map: Vec<(u64, SlotNo)>,
    /// Its chunks that are still in the object store (a snapshot of a lazily restored
    /// volume): their hashes are known, and their objects are copied if need be.
    pub remote: Vec<(u64, crate::volume::remote::RemoteChunk)>,
    /// The pool's data file for the snapshot's chunk size (its alternate file, the second
    /// halves of authenticated slots, is beside it).
    pub data_path: PathBuf,
    /// The tweak domain of each mapped chunk not in domain 0 (a plain snapshot's).
    pub domains: HashMap<u64, u64>,
    /// An authenticated snapshot's slot record of every mapped chunk (None: plain).
    pub records: Option<HashMap<u64, SlotRecord>>,
    pub data_key: &'a SecretBytes,
    pub parent: Option<SnapshotId>,
    pub max_bandwidth: Option<u64>,
}

/// Where a chunk's ciphertext is read from.
#[derive(Debug, Clone)]
enum Source {
    /// The pool's data file (and, for the blocks of an authenticated slot that its record
    /// places in the second half, the alternate file).
    Slot(SlotNo, Option<Arc<SlotRecord>>),
    /// An object of the store (a chunk the snapshot's volume never fetched).
    Object(String),
}

/// The pool's files a chunk is read from.
struct Files {
    data: File,
    data_path: PathBuf,
    /// The alternate file, opened when some record places a block in it.
    alt: Option<(File, PathBuf)>,
}

/// Reads a slot's chunk as its record places it (every block in the first half without
/// a record).
fn read_chunk(
    f: &Files,
    slot: SlotNo,
    shift: u8,
    rec: Option<&SlotRecord>,
) -> Result<Vec<u8>, ArchiveError> {
    let mut buf = vec![0u8; 1 << shift];
    read_full_at(&f.data, &mut buf, slot.0 << shift)
        .map_err(|e| crate::volume::VolumeError::io("cannot read", &f.data_path, e))?;
    if let Some(rec) = rec.filter(|r| !r.all_in_first_half()) {
        let (alt, path) = f.alt.as_ref().expect("opened when a record has halves");
        rec.read_second_halves(alt, slot.0 << shift, &mut buf)
            .map_err(|e| crate::volume::VolumeError::io("cannot read", path, e))?;
    }
    Ok(buf)
}

/// A record as the manifest carries it: every block in the first half (the object holds
/// the chunk assembled), encoded.
fn assembled(rec: &SlotRecord) -> Vec<u8> {
    let mut r = rec.clone();
    r.alt.iter_mut().for_each(|w| *w = 0);
    r.encode()
}

/// The record of mapped chunk `c` of an authenticated snapshot.
fn record_of<'r>(
    records: &'r HashMap<u64, SlotRecord>,
    holder: &str,
    c: u64,
) -> Result<&'r SlotRecord, ArchiveError> {
    records.get(&c).ok_or_else(|| {
        crate::volume::VolumeError::Tampered {
            volume: holder.to_string(),
            detail: format!("chunk {c} has no integrity record"),
        }
        .into()
    })
}

/// Runs the upload; `report` gets the status as it changes (for the job's status file).
pub fn run(
    u: &Upload,
    status: &mut ArchiveStatus,
    report: &dyn Fn(&ArchiveStatus),
) -> Result<(), ArchiveError> {
    let rec = u.record;
    let lineage = rec.volume.lineage.as_str();
    let holder = rec.id.as_str();
    let shift = rec.volume.chunk_shift;
    let chunk_len = 1u32 << shift;
    status.parent = u.parent.as_ref().map(|p| p.to_string());
    if u.records.is_some() != rec.volume.integrity {
        return Err(crate::volume::VolumeError::invalid(
            "snapshot",
            format!("{holder}: the block tags must come with an authenticated snapshot only"),
        )
        .into());
    }

    // 1. Hash every written chunk (in slot order: the file is read front to back).
    let mut by_slot = u.map.clone();
    by_slot.sort_by_key(|(_, s)| *s);
    let open = |p: &std::path::Path| {
        File::open(p).map_err(|e| crate::volume::VolumeError::io("cannot open", p, e))
    };
    let file = if by_slot.is_empty() {
        None
    } else {
        let halves = u
            .records
            .as_ref()
            .is_some_and(|r| r.values().any(|r| !r.all_in_first_half()));
        let alt = if halves {
            let p = u
                .data_path
                .with_file_name(crate::volume::storage::alt_file_name(shift));
            Some((open(&p)?, p))
        } else {
            None
        };
        Some(Files {
            data: open(&u.data_path)?,
            data_path: u.data_path.clone(),
            alt,
        })
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(by_slot.len() + u.remote.len());
    if let Some(f) = &file {
        crate::sys::file::sequential(&f.data);
        for (c, s) in &by_slot {
            let rec = match &u.records {
                Some(r) => Some(Arc::new(record_of(r, holder, *c)?.clone())),
                None => None,
            };
            let buf = read_chunk(f, *s, shift, rec.as_deref())?;
            entries.push(Entry {
                chunk: *c,
                hash: *blake3::hash(&buf).as_bytes(),
                domain: match &rec {
                    Some(r) => r.domain,
                    None => u.domains.get(c).copied().unwrap_or(0),
                },
                record: rec.as_deref().map(assembled),
                source: Source::Slot(*s, rec),
            });
        }
    }
    for (c, rc) in &u.remote {
        // A remote row's record goes into the manifest as it is: it must be one of this
        // chunk size, in its row's domain, all in the first half.
        let fits = match &rc.record {
            Some(r) => SlotRecord::decode(r, (chunk_len as u64 / BLOCK_SIZE) as usize)
                .is_ok_and(|r| r.domain == rc.domain && r.all_in_first_half()),
            None => true,
        };
        if u.records.is_some() != rc.record.is_some() || !fits {
            return Err(crate::volume::VolumeError::Tampered {
                volume: holder.to_string(),
                detail: format!("the slot record of its remote chunk {c} does not fit it"),
            }
            .into());
        }
        entries.push(Entry {
            chunk: *c,
            source: Source::Object(rc.object.clone()),
            hash: rc.blake3,
            domain: rc.domain,
            record: rc.record.clone(),
        });
    }
    entries.sort_by_key(|e| e.chunk);
    let hashes: BTreeSet<String> = entries.iter().map(|e| hex::encode(e.hash)).collect();
    status.chunks = entries.len() as u64;
    report(status);

    // 2. Count the snapshot's references before relying on (or uploading) any object.
    index::save_refs(u.store, lineage, holder, &hashes)?;
    let objects = index::update(u.store, lineage, |idx| {
        index::hold(idx, holder, HolderState::Archiving, &hashes)
    })?;

    // 3. Upload what the store does not hold: one chunk per distinct hash.
    let mut todo: BTreeMap<String, (u64, Source)> = BTreeMap::new();
    for e in &entries {
        let hx = hex::encode(e.hash);
        if let Some((generation, true)) = objects.get(&hx) {
            todo.entry(hx).or_insert((*generation, e.source.clone()));
        }
    }
    status.chunks_reused =
        (hashes.len() as u64).saturating_sub(todo.len() as u64 + status.chunks_uploaded);
    let total = todo.len() as u64 * chunk_len as u64;
    let throttle = Throttle::new(u.max_bandwidth);
    let file = file.map(Arc::new);
    let mut done = 0u64;
    let (start_chunks, start_bytes) = (status.chunks_uploaded, status.bytes_uploaded);
    // In batches: between two, the uploaded marks are saved (what a resumed run skips)
    // and the progress reported.
    let todo: Vec<(String, (u64, Source))> = todo.into_iter().collect();
    for batch in todo.chunks(BATCH) {
        let jobs = batch.iter().map(|(hx, (generation, source))| {
            let file = file.clone();
            let key = manifest::object_key(lineage, &hex_to_hash(hx), *generation);
            let throttle = &throttle;
            async move {
                tokio::time::sleep(throttle.delay(chunk_len as u64)).await;
                let buf = match (source, file) {
                    (Source::Slot(slot, rec), Some(f)) => {
                        let (slot, rec) = (*slot, rec.clone());
                        tokio::task::spawn_blocking(move || {
                            read_chunk(&f, slot, shift, rec.as_deref())
                        })
                        .await
                        .map_err(|e| ArchiveError::Interrupted(e.to_string()))??
                    }
                    // Bounded: a huge object where a chunk is expected is not read.
                    (Source::Object(object), _) => {
                        match u.store.get_at_most_async(object, chunk_len as u64).await? {
                            Some(Bounded::Fetched(f)) => f.bytes.to_vec(),
                            found => {
                                return Err(crate::volume::VolumeError::Corrupt {
                                    what: format!(
                                        "object {object} of {}",
                                        u.store.config().url
                                    ),
                                    detail: if found.is_none() {
                                        "it is missing: the snapshot this volume was restored from is damaged in the store".into()
                                    } else {
                                        "it is larger than a chunk: the snapshot this volume was restored from is damaged in the store".into()
                                    },
                                }
                                .into());
                            }
                        }
                    }
                    (Source::Slot(..), None) => {
                        unreachable!("a data file when a slot is mapped")
                    }
                };
                if &hex::encode(blake3::hash(&buf).as_bytes()) != hx {
                    return Err(ArchiveError::Changed {
                        snapshot: holder.to_string(),
                    });
                }
                u.store.put_async(&key, Bytes::from(buf)).await?;
                Ok::<(), ArchiveError>(())
            }
        });
        u.store.run_parallel(PARALLEL_UPLOADS, jobs)?;
        index::update(u.store, lineage, |idx| {
            for (h, _) in batch {
                if let Some(e) = idx.chunks.get_mut(h) {
                    e.uploaded = true;
                }
            }
        })?;
        done += batch.len() as u64;
        status.chunks_uploaded = start_chunks + done;
        status.bytes_uploaded = start_bytes + done * chunk_len as u64;
        status.progress = (done * chunk_len as u64 * 99 / total.max(1)) as u8;
        report(status);
    }

    // 4. The manifest, then the holder is complete: the snapshot is restorable.
    // Every hash has its entry (this holder counts it) unless the index was damaged.
    let list: Vec<ChunkEntry> = entries
        .iter()
        .map(|e| {
            let hx = hex::encode(e.hash);
            let (generation, _) = objects.get(&hx).ok_or_else(|| StoreError::Request {
                url: u.store.config().url.clone(),
                op: "GET",
                key: index::index_key(lineage),
                message: format!(
                    "it lists {holder} as a holder but does not count its chunk {hx}: the snapshot store's index was damaged"
                ),
            })?;
            Ok(ChunkEntry {
                chunk: e.chunk,
                blake3: e.hash,
                generation: *generation,
                len: chunk_len,
                domain: e.domain,
                record: e.record.clone(),
            })
        })
        .collect::<Result<_, ArchiveError>>()?;
    let header = ManifestHeader {
        snapshot_id: rec.id.clone(),
        parent: u.parent.clone(),
        region: u.region.clone(),
        description: rec.description.clone(),
        created_ns: rec.created_ns,
        volume: rec.volume.clone(),
        chunk_count: list.len() as u64,
    };
    let sealed = manifest::seal(&header, &list, u.data_key);
    // A manifest already there is this snapshot's own, from a run that died after
    // writing it (ids are random): keep it.
    u.store
        .put_if_absent(&manifest::manifest_key(holder), Bytes::from(sealed))?;
    index::update(u.store, lineage, |idx| {
        if let Some(s) = idx.holders.get_mut(holder) {
            *s = HolderState::Complete;
        }
    })?;
    // The caller records the completed state once it has let go of what it holds (the
    // snapshot's lease): a job shown completed has nothing left to do.
    status.state = ArchiveState::Completed;
    status.progress = 100;
    status.error = None;
    Ok(())
}

/// One chunk of the snapshot: where its bytes are, their blake3, and what the manifest
/// says of it besides.
struct Entry {
    chunk: u64,
    source: Source,
    hash: [u8; 32],
    domain: u64,
    record: Option<Vec<u8>>,
}

fn hex_to_hash(hx: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hx, &mut out).expect("hashes we made are 64 hex digits");
    out
}
