//! Copying an archived snapshot into another region's store under that region's key, as
//! EBS's CopySnapshot: run in the destination region, it asks the source's KMS (through
//! its endpoint) for the source data key, gets a new data key from its own KMS, and
//! re-encrypts every chunk, reading only the source's *store*: the source region's files
//! are never opened, and its machine may be anywhere.
//!
//! The same copy also runs *from* the source's machine into another machine's store and
//! KMS (a push): then the source is this machine's own store and KMS, and the destination
//! is reached only through its store and its KMS endpoint, whose files are never opened.
//!
//! Chunks are re-encrypted into a local spool file (`<jobs>/<new snap>.spool`, one slot
//! per chunk index, sparse), then archived from it by `upload` as any snapshot: hashes
//! first, references counted, uploads, manifest. A re-run resumes: the new snapshot id
//! and its wrapped data key are kept in `<jobs>/copy-<source snap>.json`, XTS is
//! deterministic, so chunks re-encrypted again are the same bytes. `<jobs>` is the
//! destination's [`CopyJobs`] directory, apart from the region's own archive jobs.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::job::{self, ArchiveStatus, CopyJobs, JobDir};
use super::{ArchiveError, restore, upload};
use crate::aws::{Region, b64};
use crate::crypto::SecretBytes;
use crate::kms::{DataKeySpec, KeyBackend, KeyRef};
use crate::snapshot::SnapshotRecord;
use crate::snapshot::reencrypt::{crypt_blocks, crypt_blocks_at};
use crate::snapshot::store::{Bounded, SnapshotStore};
use crate::snapshot::throttle::Throttle;
use crate::sys::fsio;
use crate::volume::block_io::is_written;
use crate::volume::ids::{BLOCK_SIZE, SlotNo, SnapshotId};
use crate::volume::integrity::{BlockTag, IntegrityKeys, SlotRecord};
use crate::volume::{KeySource, VolumeError, key_check, keys, lifecycle};

const BS: usize = BLOCK_SIZE as usize;

/// What a copy remembers between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CopyRecord {
    snapshot_id: String,
    source_snapshot_id: String,
    key_arn: String,
    /// The new data key, wrapped by the destination KMS (a blob: not secret).
    wrapped: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    /// Every chunk is in the spool.
    spooled: bool,
    /// The key check of the new data key (base64; `volume::key_check`), so that a resumed
    /// run refuses another key from the KMS. Absent in records of older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_check: Option<String>,
}

pub struct StoreCopy<'a> {
    /// Where this copy's job, record and spool live (on the machine that runs it).
    pub jobs: &'a CopyJobs,
    /// The destination region.
    pub region: &'a Region,
    pub source_store: &'a SnapshotStore,
    /// The KMS that made the source's data key (its region's endpoint).
    pub source_kms: Option<&'a dyn KeyBackend>,
    pub store: &'a SnapshotStore,
    pub kms: &'a dyn KeyBackend,
    pub key: &'a KeyRef,
    pub description: Option<String>,
    pub max_bandwidth: Option<u64>,
    pub now_ns: i64,
}

fn record_path(jobs: &CopyJobs, source: &str) -> PathBuf {
    jobs.jobs_dir().join(format!("copy-{source}.json"))
}

fn io(what: &'static str, p: &std::path::Path, e: std::io::Error) -> ArchiveError {
    VolumeError::io(what, p, e).into()
}

/// A resumed copy's data key, unwrapped again, must be the one its first run made (its
/// spool is encrypted under it). A record of an older run has no check: not checked.
fn check_resumed_key(
    r: &CopyRecord,
    key: &SecretBytes,
    path: &std::path::Path,
) -> Result<(), VolumeError> {
    let Some(check) = &r.key_check else {
        return Ok(());
    };
    let check: [u8; key_check::CHECK_LEN] = b64::decode(check)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| VolumeError::Corrupt {
            what: path.display().to_string(),
            detail: "the key check is not 32 bytes of base64".into(),
        })?;
    if key_check::matches(key, &r.snapshot_id, &check) {
        return Ok(());
    }
    Err(VolumeError::WrongDataKey {
        what: format!(
            "snapshot {} (the copy of {})",
            r.snapshot_id, r.source_snapshot_id
        ),
        key_arn: r.key_arn.clone(),
        kms: r
            .endpoint
            .clone()
            .unwrap_or_else(|| "of this data dir".to_string()),
    })
}

fn save(jobs: &CopyJobs, source: &str, r: &CopyRecord) -> Result<(), ArchiveError> {
    let d = jobs.jobs_dir();
    fsio::create_private_dir(&d).map_err(|e| io("cannot create", &d, e))?;
    let p = record_path(jobs, source);
    let bytes = serde_json::to_vec_pretty(r).expect("record serializes");
    fsio::write_atomic(&p, &bytes, fsio::PRIVATE_FILE).map_err(|e| io("cannot write", &p, e))
}

/// Runs (or resumes) the copy of `source` (a snapshot in the source store) into this
/// region's store; returns the new snapshot's archive status.
pub fn copy(c: &StoreCopy, source: &str) -> Result<ArchiveStatus, ArchiveError> {
    let Some(_lock) = job::try_lock(c.jobs, &format!("copy-{source}"))? else {
        return Err(ArchiveError::CopyBusy {
            snapshot: source.to_string(),
            destination: format!("{} ({})", c.store.config().url, c.region),
        });
    };
    // The destination store must answer before anything is spooled: a store that is
    // down or a bucket that does not exist would otherwise fail the upload only after
    // the whole snapshot was re-encrypted into a local spool, left behind (a re-run with
    // the right store is another copy, in another directory). A listing of one name is
    // the cheapest request that fails for a missing bucket.
    c.store.list(&super::manifest::manifest_key(source))?;
    let (bytes, head) = restore::fetch(c.source_store, source)?;
    let src_key = lifecycle::data_key(&head.volume, c.source_kms, None)?;
    let (_, entries) = restore::open(&bytes, source, &src_key)?;

    // The new snapshot's id and data key: made once, kept for a resumed run.
    let existing: Option<CopyRecord> = std::fs::read(record_path(c.jobs, source))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let (mut rec, dst_key) = match existing {
        Some(r) => {
            let wrapped = b64::decode(&r.wrapped).map_err(|_| VolumeError::Corrupt {
                what: record_path(c.jobs, source).display().to_string(),
                detail: "the wrapped key is not base64".into(),
            })?;
            let ctx = lifecycle::lineage_context(&r.snapshot_id);
            let key = c.kms.decrypt(&wrapped, &ctx)?.plaintext;
            check_resumed_key(&r, &key, &record_path(c.jobs, source))?;
            (r, key)
        }
        None => {
            let id = SnapshotId::random();
            let dk = c.kms.generate_data_key(
                c.key,
                DataKeySpec::Bytes(keys::DATA_KEY_LEN),
                &lifecycle::lineage_context(id.as_str()),
            )?;
            let r = CopyRecord {
                snapshot_id: id.to_string(),
                source_snapshot_id: source.to_string(),
                key_arn: dk.key_id.clone(),
                wrapped: b64::encode(&dk.ciphertext_blob),
                endpoint: c.kms.endpoint().map(str::to_string),
                spooled: false,
                key_check: Some(b64::encode(&key_check::compute(&dk.plaintext, id.as_str()))),
            };
            save(c.jobs, source, &r)?;
            (r, dk.plaintext)
        }
    };
    let new_id = SnapshotId::parse(&rec.snapshot_id).ok_or_else(|| VolumeError::Corrupt {
        what: record_path(c.jobs, source).display().to_string(),
        detail: "not a snapshot id".into(),
    })?;
    let spool = c.jobs.jobs_dir().join(format!("{new_id}.spool"));
    // A run killed after its copy completed (its status says so, written once the
    // manifest was) but before it removed its record has only its cleanup left: its spool
    // may be gone already, and uploading again would need it.
    if let Some(done) = job::read(c.jobs, new_id.as_str())
        .filter(|s| s.state == super::job::ArchiveState::Completed)
    {
        let _ = std::fs::remove_file(&spool);
        let _ = std::fs::remove_file(record_path(c.jobs, source));
        return Ok(done);
    }
    if !rec.spooled {
        respool(
            c,
            source,
            &head.volume,
            &entries,
            &src_key,
            &dst_key,
            &spool,
        )?;
        rec.spooled = true;
        save(c.jobs, source, &rec)?;
    }
    drop(src_key);
    // An authenticated source's copy is authenticated too: new tags under the new key.
    let records = if head.volume.integrity {
        Some(spool_records(&head.volume, &entries, &dst_key, &spool)?)
    } else {
        None
    };

    let mut volume = head.volume.clone();
    volume.lineage = new_id.to_string();
    volume.region = c.region.clone();
    volume.key = KeySource::Kms {
        key_arn: rec.key_arn.clone(),
        wrapped: b64::decode(&rec.wrapped).unwrap_or_default(),
        endpoint: rec.endpoint.clone(),
        check: Some(key_check::compute(&dst_key, new_id.as_str())),
    };
    let record = SnapshotRecord {
        id: new_id.clone(),
        description: c
            .description
            .clone()
            .unwrap_or_else(|| format!("Copied from {source} ({})", head.region)),
        created_ns: c.now_ns,
        volume,
    };
    let mut status = job::read(c.jobs, new_id.as_str()).unwrap_or_else(|| {
        ArchiveStatus::new(
            new_id.as_str(),
            head.volume.id.as_str(),
            c.max_bandwidth,
            c.now_ns,
        )
    });
    status.pid = Some(std::process::id());
    let up = upload::Upload {
        store: c.store,
        region: c.region,
        record: &record,
        map: entries.iter().map(|e| (e.chunk, SlotNo(e.chunk))).collect(),
        remote: Vec::new(),
        data_path: spool.clone(),
        domains: Default::default(),
        records,
        data_key: &dst_key,
        parent: None,
        max_bandwidth: c.max_bandwidth,
    };
    let report = |s: &ArchiveStatus| {
        let _ = job::write(c.jobs, s);
    };
    upload::run(&up, &mut status, &report)?;
    job::write(c.jobs, &status)?;
    let _ = std::fs::remove_file(&spool);
    let _ = std::fs::remove_file(record_path(c.jobs, source));
    Ok(status)
}

/// The copy's slot records: for each chunk of an authenticated source, the source's holes
/// stay holes and every other block gets a tag under the new key, in domain 0 (the copy
/// is the first volume of its data key), over its ciphertext in the spool, with the
/// source tag's generation (so a resumed copy makes the same records).
fn spool_records(
    volume: &crate::volume::VolumeHeader,
    entries: &[super::manifest::ChunkEntry],
    dst_key: &SecretBytes,
    spool: &std::path::Path,
) -> Result<std::collections::HashMap<u64, SlotRecord>, ArchiveError> {
    let shift = volume.chunk_shift;
    let blocks = 1usize << (shift - 12);
    let keys = IntegrityKeys::from_data_key(dst_key);
    let file = std::fs::File::open(spool).map_err(|e| io("cannot open", spool, e))?;
    let mut buf = vec![0u8; 1 << shift];
    let mut out = std::collections::HashMap::with_capacity(entries.len());
    for e in entries {
        let src = SlotRecord::decode(e.record.as_deref().unwrap_or(&[]), blocks)?;
        file.read_exact_at(&mut buf, e.chunk << shift)
            .map_err(|err| io("cannot read", spool, err))?;
        let mut r = SlotRecord::holes(0, blocks);
        let first = e.chunk * blocks as u64;
        for (b, tag) in src.tags.iter().enumerate() {
            if !tag.is_hole() {
                let n = first + b as u64;
                r.tags[b] = BlockTag {
                    generation: tag.generation,
                    mac: keys.block_mac(r.mac, 0, n, tag.generation, &buf[b * BS..(b + 1) * BS]),
                };
            }
        }
        out.insert(e.chunk, r);
    }
    Ok(out)
}

/// Fetches every source chunk, checks it (an authenticated source's tags too, before a
/// block is decrypted), decrypts it with the source key in its tweak domain and encrypts
/// it with the new one in domain 0 (holes stay holes), checks the result decrypts back,
/// and writes it at its chunk's place in the spool.
fn respool(
    c: &StoreCopy,
    source: &str,
    volume: &crate::volume::VolumeHeader,
    entries: &[super::manifest::ChunkEntry],
    src_key: &SecretBytes,
    dst_key: &SecretBytes,
    spool: &std::path::Path,
) -> Result<(), ArchiveError> {
    let shift = volume.chunk_shift;
    let chunk = 1usize << shift;
    let lineage = volume.lineage.as_str();
    let src = keys::xts_from_data_key(src_key)?;
    let dst = keys::xts_from_data_key(dst_key)?;
    let src_tags = IntegrityKeys::from_data_key(src_key);
    let blocks = chunk / BS;
    let d = c.jobs.jobs_dir();
    fsio::create_private_dir(&d).map_err(|e| io("cannot create", &d, e))?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(spool)
        .map_err(|e| io("cannot open", spool, e))?;
    let throttle = Throttle::new(c.max_bandwidth);
    let jobs = entries.iter().map(|e| {
        let (src, dst, file, throttle, src_tags) = (&src, &dst, &file, &throttle, &src_tags);
        async move {
            tokio::time::sleep(throttle.delay(chunk as u64)).await;
            let key = e.object_key(lineage);
            let bad = |detail: &str| -> ArchiveError {
                VolumeError::Corrupt {
                    what: format!("object {key} of {}", c.source_store.config().url),
                    detail: format!("{detail}: the source snapshot in the store is damaged"),
                }
                .into()
            };
            // Sized from the answer's headers first: a huge object where a chunk is
            // expected is refused, not read into memory.
            let got = match c.source_store.get_at_most_async(&key, chunk as u64).await? {
                Some(Bounded::Fetched(f)) => f,
                Some(Bounded::TooLarge(_)) => return Err(bad("it is larger than a chunk")),
                None => return Err(bad("it is missing")),
            };
            if got.bytes.len() != chunk || blake3::hash(&got.bytes).as_bytes() != &e.blake3 {
                return Err(bad("its bytes do not match the manifest"));
            }
            let mut buf = got.bytes.to_vec();
            let first = e.chunk * (chunk / BS) as u64;
            // Whole chunks through the batched XTS (as `reencrypt`): holes stay holes; what
            // is written must decrypt under the new key to the source's plaintext. An
            // authenticated source says which blocks are holes, and each other block must
            // carry its tag before it is decrypted.
            let written: Vec<bool> = match &e.record {
                None => buf.chunks(BS).map(is_written).collect(),
                Some(r) => {
                    let rec = SlotRecord::decode(r, blocks)?;
                    let mut w = vec![false; blocks];
                    for (b, tag) in rec.tags.iter().enumerate() {
                        if tag.is_hole() {
                            continue;
                        }
                        let n = first + b as u64;
                        if !src_tags.verify(rec.mac, rec.domain, n, tag, &buf[b * BS..(b + 1) * BS])
                        {
                            return Err(VolumeError::BadSourceBlock {
                                snapshot: source.to_string(),
                                store: c.source_store.config().url.to_string(),
                                chunk: e.chunk,
                                block: n,
                            }
                            .into());
                        }
                        w[b] = true;
                    }
                    w
                }
            };
            for (b, w) in buf.chunks_mut(BS).zip(&written) {
                if !w {
                    b.fill(0);
                }
            }
            crypt_blocks_at(src, e.domain, first, &mut buf, &written, true);
            let plain = buf.clone();
            crypt_blocks(dst, first, &mut buf, &written, false);
            let mut check = buf.clone();
            crypt_blocks(dst, first, &mut check, &written, true);
            if check != plain {
                return Err(ArchiveError::Changed {
                    snapshot: c.source_store.config().url.clone(),
                });
            }
            file.write_all_at(&buf, e.chunk << shift)
                .map_err(|err| io("cannot write", spool, err))?;
            Ok::<(), ArchiveError>(())
        }
    });
    c.store
        .run_parallel(super::upload::PARALLEL_UPLOADS, jobs)?;
    file.sync_all().map_err(|e| io("cannot sync", spool, e))?;
    Ok(())
}
