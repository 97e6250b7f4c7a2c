//! The re-encryption pipeline behind restore-with-another-key and cross-region copy:
//! every written chunk of a snapshot is read from the source pool, decrypted with the
//! source key, hashed (blake3 of the plaintext, folded into the copy's digest), encrypted
//! with the destination key, decrypted again and compared byte for byte with the source
//! plaintext, and written to a new slot of the destination pool. Workers (two per core:
//! reads block) pull chunks from a shared counter; each holds three chunk-sized buffers,
//! so memory stays at a few MiB per worker.
//!
//! Progress is committed every `COMMIT_INTERVAL` under the copy's pending owner, so an
//! interrupted copy resumes where its last commit left it (`done`).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::throttle::Throttle;
use crate::crypto::xts::Xts;
use crate::volume::aligned::AlignedBuf;
use crate::volume::block_io::is_written;
use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::{BLOCK_SIZE, SlotNo};
use crate::volume::integrity::{BlockTag, IntegrityKeys, SlotRecord, tweak};
use crate::volume::pool::Pool;

const BS: usize = BLOCK_SIZE as usize;
/// How often a copy's progress is committed (so a re-run resumes from there). Time-based:
/// a commit costs an fdatasync, so a fast copy should not pay it every few MiB.
pub const COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Source<'a> {
    /// The source pool's data file for this chunk size (read only).
    pub data_path: PathBuf,
    pub map: Vec<(u64, SlotNo)>,
    pub chunk_shift: u8,
    pub xts: &'a Xts,
    /// `--max-bandwidth`: plaintext bytes per second, or unlimited.
    pub max_bandwidth: Option<u64>,
    /// An authenticated source: each chunk's record, checked with these keys; its holes
    /// are recorded, every other block is checked before it is decrypted.
    pub auth: Option<(HashMap<u64, SlotRecord>, &'a IntegrityKeys)>,
    /// A plain source's chunks not in tweak domain 0, with their domain.
    pub domains: HashMap<u64, u64>,
}

pub struct Dest<'a> {
    pub pool: &'a Pool,
    /// The pending owner the new map is recorded under.
    pub owner: String,
    pub xts: &'a Xts,
    /// An authenticated destination: every block written gets a tag under these keys
    /// (domain 0: the copy is the first volume of its new data key).
    pub auth: Option<&'a IntegrityKeys>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CopyStats {
    pub chunks_copied: u64,
    pub chunks_resumed: u64,
    pub bytes_copied: u64,
    /// blake3 over the per-chunk blake3 of the plaintext copied in this run.
    pub plaintext_blake3: String,
}

/// Decrypts (`decrypt`) or encrypts every written block of a chunk in place; `written`
/// says which blocks hold data (holes stay holes).
pub(super) fn crypt_blocks(
    xts: &Xts,
    first_block: u64,
    buf: &mut [u8],
    written: &[bool],
    decrypt: bool,
) {
    crypt_blocks_at(xts, 0, first_block, buf, written, decrypt)
}

/// [`crypt_blocks`] in tweak domain `domain`.
pub(super) fn crypt_blocks_at(
    xts: &Xts,
    domain: u64,
    first_block: u64,
    buf: &mut [u8],
    written: &[bool],
    decrypt: bool,
) {
    for (i, w) in written.iter().enumerate() {
        if *w {
            let b = &mut buf[i * BS..(i + 1) * BS];
            let t = tweak(domain, first_block + i as u64);
            if decrypt {
                xts.decrypt_units_at(t, b);
            } else {
                xts.encrypt_units_at(t, b);
            }
        }
    }
}

/// Reads the blocks of `slot` that its record places in the slot's second half (the
/// source pool's alternate file) over `buf`, which holds the slot's first half.
fn read_second_halves(
    src: &Source,
    alt: &mut Option<File>,
    rec: &SlotRecord,
    slot: SlotNo,
    buf: &mut [u8],
) -> Result<()> {
    let path = src
        .data_path
        .with_file_name(crate::volume::storage::alt_file_name(src.chunk_shift));
    if alt.is_none() {
        *alt = Some(File::open(&path).map_err(|e| VolumeError::io("cannot open", &path, e))?);
    }
    let f = alt.as_ref().expect("opened above");
    rec.read_second_halves(f, slot.0 << src.chunk_shift, buf)
        .map_err(|e| VolumeError::io("cannot read", &path, e))
}

/// Copies every chunk of `src.map` not in `done`; `progress` gets the bytes of each chunk
/// and returns false to cancel the copy (what was copied stays, for a later resume).
pub fn reencrypt(
    src: &Source,
    dst: &Dest,
    done: &HashSet<u64>,
    progress: &(dyn Fn(u64) -> bool + Sync),
) -> Result<CopyStats> {
    let chunk = 1usize << src.chunk_shift;
    let blocks = chunk / BS;
    let df = dst.pool.data_file(src.chunk_shift)?;
    // In slot order: the source file is then read front to back, which its readahead
    // (told below that access is sequential) turns into large reads.
    let mut todo: Vec<(u64, SlotNo)> = src
        .map
        .iter()
        .filter(|(c, _)| !done.contains(c))
        .copied()
        .collect();
    todo.sort_by_key(|(_, s)| *s);
    // The source's data file is opened only when there is something to read: a pool makes
    // it on its first write, so a never-written source may have none.
    let file = if todo.is_empty() {
        None
    } else {
        // O_DIRECT reads: the source is read once, so the page cache would only cost a copy.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&src.data_path)
            .or_else(|_| File::open(&src.data_path))
            .map_err(|e| VolumeError::io("cannot open", &src.data_path, e))?;
        crate::sys::file::sequential(&f);
        Some(f)
    };
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let copied = AtomicU64::new(0);
    let first_error: Mutex<Option<VolumeError>> = Mutex::new(None);
    let last_commit = Mutex::new(std::time::Instant::now());
    let hashes: Mutex<Vec<(u64, blake3::Hash)>> = Mutex::new(Vec::with_capacity(todo.len()));
    // Reads block on the disk: more workers than cores keep the disk busy while others
    // compute. `CRYPTVOL_COPY_WORKERS` overrides it for tuning.
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let workers = std::env::var("CRYPTVOL_COPY_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cores * 2)
        .clamp(1, 32);

    let throttle = Throttle::new(src.max_bandwidth);
    let work = || -> Result<()> {
        let Some(file) = &file else {
            return Ok(());
        };
        // plain: source plaintext; enc: what we write; check: enc decrypted again.
        let mut plain_buf = AlignedBuf::new(chunk);
        let plain = plain_buf.as_mut_slice();
        let mut enc_buf = AlignedBuf::new(chunk);
        let enc = enc_buf.as_mut_slice();
        let mut check = vec![0u8; chunk];
        let mut written = vec![false; blocks];
        // The source's alternate file (second halves of its slots), opened when a record
        // first names it.
        let mut alt: Option<File> = None;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let i = next.fetch_add(1, Ordering::AcqRel);
            let Some(&(c, slot)) = todo.get(i) else {
                return Ok(());
            };
            throttle.take(chunk as u64);
            let first_block = c * blocks as u64;
            crate::volume::storage::file::read_full_at(file, plain, slot.0 << src.chunk_shift)
                .map_err(|e| VolumeError::io("cannot read", &src.data_path, e))?;
            match &src.auth {
                None => {
                    for (b, w) in written.iter_mut().enumerate() {
                        let block = &mut plain[b * BS..(b + 1) * BS];
                        *w = is_written(block);
                        if !*w {
                            // A hole (or a torn first write into one, which reads as a hole).
                            block.fill(0);
                        }
                    }
                    let domain = src.domains.get(&c).copied().unwrap_or(0);
                    crypt_blocks_at(src.xts, domain, first_block, plain, &written, true);
                }
                Some((records, keys)) => {
                    let rec = records.get(&c).ok_or_else(|| VolumeError::Corrupt {
                        what: format!("source chunk {c}"),
                        detail: "it has no integrity record".into(),
                    })?;
                    if !rec.all_in_first_half() {
                        read_second_halves(src, &mut alt, rec, slot, plain)?;
                    }
                    for (b, w) in written.iter_mut().enumerate() {
                        let block = &mut plain[b * BS..(b + 1) * BS];
                        let tag = &rec.tags[b];
                        *w = !tag.is_hole();
                        if !*w {
                            block.fill(0);
                            continue;
                        }
                        let n = first_block + b as u64;
                        if !keys.verify(rec.mac, rec.domain, n, tag, block) {
                            return Err(VolumeError::BadBlock {
                                volume: format!("the copy's source (chunk {c})"),
                                block: n,
                                detail: "its MAC does not match its ciphertext",
                            });
                        }
                        src.xts.decrypt_units_at(tweak(rec.domain, n), block);
                    }
                }
            }
            hashes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((c, blake3::hash(plain)));
            enc.copy_from_slice(plain);
            crypt_blocks(dst.xts, first_block, enc, &written, false);
            // What we are about to write must decrypt, with the destination key and
            // tweaks, to the source's plaintext, byte for byte. (A read-back would only
            // read our own page cache; the write is checked by its result and made durable
            // by the commit's fdatasync.)
            check.copy_from_slice(enc);
            crypt_blocks(dst.xts, first_block, &mut check, &written, true);
            if check.as_slice() != &*plain {
                return Err(VolumeError::Corrupt {
                    what: format!("copied chunk {c}"),
                    detail: "its new ciphertext does not decrypt to the source's plaintext".into(),
                });
            }
            let new = dst.pool.reserve(src.chunk_shift)?;
            let base = df.slot_offset(new.0);
            // The destination's tags, recorded once the data is written.
            let record = dst.auth.map(|keys| {
                let mut r = SlotRecord::holes(0, blocks);
                let alg = r.mac;
                for (b, w) in written.iter().enumerate() {
                    if *w {
                        let n = first_block + b as u64;
                        let generation = dst.pool.next_generation();
                        r.tags[b] = BlockTag {
                            generation,
                            mac: keys.block_mac(alg, 0, n, generation, &enc[b * BS..(b + 1) * BS]),
                        };
                    }
                }
                std::sync::Arc::new(Mutex::new(r))
            });
            let write = || -> Result<()> {
                // Only written blocks: holes stay holes (and take no space).
                let mut b = 0;
                while b < blocks {
                    if !written[b] {
                        b += 1;
                        continue;
                    }
                    let start = b;
                    while b < blocks && written[b] {
                        b += 1;
                    }
                    df.write_direct(&enc[start * BS..b * BS], base + (start * BS) as u64)?;
                }
                Ok(())
            };
            if let Err(e) = write() {
                dst.pool.unreserve(src.chunk_shift, new);
                return Err(e);
            }
            if let Some(r) = &record {
                dst.pool.record_dirty(src.chunk_shift, new.0, r);
            }
            dst.pool
                .remap(src.chunk_shift, &dst.owner, c, Some(new), None, 0);
            copied.fetch_add(1, Ordering::AcqRel);
            if !progress(chunk as u64) {
                return Err(VolumeError::Cancelled {
                    what: format!("the copy into {}", dst.owner),
                });
            }
            // One worker commits when the interval has passed; the others carry on.
            if let Ok(mut last) = last_commit.try_lock()
                && last.elapsed() >= COMMIT_INTERVAL
            {
                dst.pool.commit()?;
                *last = std::time::Instant::now();
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                if let Err(e) = work() {
                    stop.store(true, Ordering::Release);
                    first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert(e);
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        // Keep what was copied: a rerun resumes from the last commit.
        let _ = dst.pool.commit();
        return Err(e);
    }
    dst.pool.commit()?;
    let n = copied.load(Ordering::Acquire);
    // blake3 over (chunk number, blake3 of its plaintext) in chunk order: one digest of
    // everything this run copied, comparable between runs of the same source.
    let mut hs = hashes.into_inner().unwrap_or_else(|p| p.into_inner());
    hs.sort_by_key(|(c, _)| *c);
    let mut d = blake3::Hasher::new();
    for (c, h) in &hs {
        d.update(&c.to_le_bytes());
        d.update(h.as_bytes());
    }
    Ok(CopyStats {
        chunks_copied: n,
        chunks_resumed: (src.map.len() - todo.len()) as u64,
        bytes_copied: n * chunk as u64,
        plaintext_blake3: d.finalize().to_hex().to_string(),
    })
}

/// Everything a pool owner needs to run one copy, prepared by the CLI (which makes the
/// KMS calls): it runs in the CLI when the CLI owns the destination pool, or in the
/// region daemon when that owns it. Keys are base64 and zeroized after use.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct CopyJob {
    /// The pending owner id (the new snapshot's or volume's id).
    pub owner: String,
    /// `PendingCopy` record (base64) written before the first chunk.
    pub pending: String,
    pub source_data_path: PathBuf,
    pub source_map: Vec<(u64, u64)>,
    pub chunk_shift: u8,
    pub source_key: String,
    pub dest_key: String,
    /// What the owner becomes when done: a snapshot record or a volume header (base64).
    pub finish_snapshot: Option<String>,
    pub finish_volume: Option<String>,
    /// `--max-bandwidth` in bytes per second (absent: unlimited).
    #[serde(default)]
    pub max_bandwidth: Option<u64>,
    /// An authenticated source: (chunk, its slot record, base64); the copy is then
    /// authenticated too.
    #[serde(default)]
    pub source_records: Option<Vec<(u64, String)>>,
    /// The tweak domain of each chunk of a plain source whose slot is not in domain 0 (a
    /// snapshot of a restored volume).
    #[serde(default)]
    pub source_domains: Vec<(u64, u64)>,
}

impl Drop for CopyJob {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.source_key);
        zeroize::Zeroize::zeroize(&mut self.dest_key);
    }
}

fn b64_field(what: &str, s: &str) -> Result<Vec<u8>> {
    crate::aws::b64::decode(s).map_err(|e| VolumeError::invalid(what, e.to_string()))
}

/// Runs (or resumes) a copy job against `pool` and makes the result visible.
/// `lease`: the copy's lease on a source in this same pool, released as it finishes.
pub fn run_job(
    pool: &Pool,
    job: &CopyJob,
    lease: Option<(&str, &str)>,
    progress: &(dyn Fn(u64) -> bool + Sync),
) -> Result<CopyStats> {
    // The copy was recorded before its source was leased (`Catalog::begin_copy`). If it
    // is not in progress now, it was cancelled: never start it over from here.
    if !pool.pending()?.iter().any(|(o, _)| o == &job.owner) {
        return Err(VolumeError::Cancelled {
            what: format!("the copy into {} (it is no longer in progress)", job.owner),
        });
    }
    let done: HashSet<u64> = pool
        .load_map(&job.owner)?
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    let src_key = crate::crypto::SecretBytes::new(b64_field("source key", &job.source_key)?);
    let dst_key = crate::crypto::SecretBytes::new(b64_field("destination key", &job.dest_key)?);
    let src_xts = crate::volume::keys::xts_from_data_key(&src_key)?;
    let dst_xts = crate::volume::keys::xts_from_data_key(&dst_key)?;
    let src_auth = IntegrityKeys::from_data_key(&src_key);
    let dst_auth = IntegrityKeys::from_data_key(&dst_key);
    let blocks = 1usize << (job.chunk_shift - 12);
    let records = match &job.source_records {
        None => None,
        Some(rows) => {
            let mut m = HashMap::new();
            for (c, r) in rows {
                m.insert(
                    *c,
                    SlotRecord::decode(&b64_field("source record", r)?, blocks)?,
                );
            }
            Some(m)
        }
    };
    let authenticated = records.is_some();
    let src = Source {
        data_path: job.source_data_path.clone(),
        map: job
            .source_map
            .iter()
            .map(|(c, s)| (*c, SlotNo(*s)))
            .collect(),
        chunk_shift: job.chunk_shift,
        xts: &src_xts,
        max_bandwidth: job.max_bandwidth,
        auth: records.map(|r| (r, &src_auth)),
        domains: job.source_domains.iter().copied().collect(),
    };
    let dst = Dest {
        pool,
        owner: job.owner.clone(),
        xts: &dst_xts,
        auth: authenticated.then_some(&dst_auth),
    };
    let stats = reencrypt(&src, &dst, &done, progress)?;
    let snap = job
        .finish_snapshot
        .as_deref()
        .map(|s| b64_field("snapshot", s))
        .transpose()?;
    let vol = job
        .finish_volume
        .as_deref()
        .map(|s| b64_field("volume", s).and_then(|b| crate::volume::VolumeHeader::decode(&b)))
        .transpose()?;
    pool.finish_pending(
        &job.owner,
        snap.as_deref(),
        vol.as_ref(),
        lease,
        authenticated.then_some((&dst_auth, job.chunk_shift)),
    )?;
    Ok(stats)
}
