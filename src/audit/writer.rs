//! The append side: the cached writer state, the cross-process lock, resync from the files
//! when another process moved the log on, rotation and sealing.
//!
//! The fast path of an append (of a batch: the group commit of `AuditLog`) is: flock, fstat
//! the cached active file, one write(2) of the batch's lines, unlock.
//! The fstat compares (size, mode, link count) with the cache: another process's append
//! changes the size; sealing first makes the log file read-only (0400); writers only ever
//! unlink a file that is empty (link count 0). Any of these sends us to [`resync`], which
//! reads the state back from the files. fstat rather than stat of the path: no path walk,
//! which on the test VM is 1.3 µs of a 5 µs append; and a `statx` of size, mode and link
//! count only, never the times, so that the write after it need not give the file a fresh
//! fine-grained ctime (an inode update per append, `sys::file::size_mode_links`). The cost: a file renamed by hand while a
//! writer has it cached keeps receiving that writer's events under its new name (the chain
//! stays intact; move files aside only with no writer running, or after an error).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::chain::{self, GENESIS, Hash};
use super::digest::{DIGEST_VERSION, Digest, DigestBody};
use super::error::{AuditError, Result, io};
use super::keys::ChainKeys;
use super::names::{self, Entry};
use super::tail;
use crate::sys;
use crate::sys::clock::format_time;
use crate::sys::fsio::{self, PRIVATE_FILE};

/// Mode of a sealed log file; also the signal to cached writers that it is sealed.
const SEALED_FILE: u32 = 0o400;

/// Where and how a log is kept.
pub(super) struct Config {
    pub dir: PathBuf,
    pub max_file_bytes: u64,
}

/// What a seal wrote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SealSummary {
    pub log_file: String,
    pub digest_file: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub event_count: u64,
    pub digest_hash: String,
}

/// The file being appended to.
struct Active {
    file: File,
    path: PathBuf,
    name: String,
    size: u64,
    day: i64,
    first_seq: u64,
}

/// What the files said when we last looked (under the lock), plus what we wrote since.
struct Cache {
    active: Option<Active>,
    next_seq: u64,
    last_hash: Hash,
    /// The chain key epoch of the last event (0 when there is none).
    last_epoch: u32,
}

/// The mutable part of an `AuditLog`, behind its mutex.
pub(super) struct Writer {
    /// The open `.lock` file; flock is per open file, so each `AuditLog` has its own.
    lock: Option<File>,
    /// `None` until first use and after any error: the next call resyncs.
    cache: Option<Cache>,
    /// The chain keys this process knows (more arrive with `AuditLog::set_keys`).
    pub keys: ChainKeys,
}

/// Releases the flock on drop.
struct Flock<'a>(&'a File);

impl Drop for Flock<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Writer {
    pub fn new(keys: ChainKeys) -> Writer {
        Writer {
            lock: None,
            cache: None,
            keys,
        }
    }

    /// Forgets the open lock file and the cached state (after a panic), keeping the keys.
    pub fn reset(&mut self) {
        self.lock = None;
        self.cache = None;
    }

    /// Runs `f` holding the directory's exclusive lock; any error invalidates the cache.
    fn locked<T>(
        &mut self,
        cfg: &Config,
        f: impl FnOnce(&mut Option<Cache>, &Config, &ChainKeys) -> Result<T>,
    ) -> Result<T> {
        let Writer { lock, cache, keys } = self;
        let lock_file = match lock.take() {
            Some(f) => f,
            None => open_lock_file(cfg)?,
        };
        let lock_file = &*lock.insert(lock_file);
        lock_file
            .lock()
            .map_err(io("lock", &cfg.dir.join(names::LOCK_FILE)))?;
        let _held = Flock(lock_file);
        let result = f(cache, cfg, keys);
        if result.is_err() {
            *cache = None;
        }
        result
    }

    /// Appends a batch of events in order, under one flock and (unless a file must be
    /// sealed or started between two of them) one `write(2)`: the group commit of
    /// [`super::AuditLog`]. Returns one result per event, in order. An event's `Ok(seq)`
    /// means its line is in the file (the `write(2)` that carried it returned); a failed
    /// write fails every event it carried and those after it (they are not written).
    pub fn append_batch(&mut self, cfg: &Config, batch: Vec<(Vec<u8>, i64)>) -> Vec<Result<u64>> {
        let n = batch.len();
        let mut results: Vec<Result<u64>> = Vec::with_capacity(n);
        let outcome = self.locked(cfg, |cache, cfg, keys| {
            let c = current(cache, cfg)?;
            // The newest key we know, unless the log already went further (another process
            // rotated the root and logged under the new key): never back along the chain.
            let epoch = c.last_epoch.max(keys.latest_epoch());
            let key = keys.get(epoch).ok_or_else(|| AuditError::ChainKeyUnknown {
                dir: cfg.dir.clone(),
                epoch,
            })?;
            // Lines made but not yet written, and the seqs they carry.
            let mut out: Vec<u8> = Vec::new();
            let mut pending: Vec<u64> = Vec::new();
            for (mut buf, now) in batch {
                let day = names::day_of(now);
                let turn = c.active.as_ref().is_some_and(|a| {
                    a.day != day || a.size + out.len() as u64 >= cfg.max_file_bytes
                });
                if turn {
                    write_out(c, &mut out)?;
                    results.extend(pending.drain(..).map(Ok));
                    let a = c.active.as_ref().expect("checked above");
                    if a.size == 0 {
                        // Nothing to seal: an empty file of another day is just replaced.
                        fs::remove_file(&a.path).map_err(io("remove empty log file", &a.path))?;
                        c.active = None;
                    } else {
                        seal_active(c, cfg, keys, now)?;
                    }
                }
                if c.active.is_none() {
                    write_out(c, &mut out)?;
                    results.extend(pending.drain(..).map(Ok));
                    c.active = Some(create_log(cfg, day, c.next_seq, now)?);
                }
                let seq = c.next_seq;
                let hash = chain::make_line(&mut buf, key, epoch, seq, &c.last_hash);
                out.extend_from_slice(&buf);
                pending.push(seq);
                c.next_seq += 1;
                c.last_hash = hash;
                c.last_epoch = epoch;
            }
            write_out(c, &mut out)?;
            results.extend(pending.drain(..).map(Ok));
            Ok(())
        });
        if let Err(e) = outcome {
            // The events not written fail with the error (the first one with the error
            // itself, the others with its copy); the cache was dropped, so the next append
            // reads the chain back from the files.
            for _ in results.len() + 1..n {
                results.push(Err(e.duplicate()));
            }
            results.push(Err(e));
        }
        results
    }

    /// Seals the active file if it holds events.
    pub fn seal(&mut self, cfg: &Config, now: i64) -> Result<Option<SealSummary>> {
        self.locked(cfg, |cache, cfg, keys| {
            let c = current(cache, cfg)?;
            match &c.active {
                Some(a) if a.size > 0 => seal_active(c, cfg, keys, now).map(Some),
                _ => Ok(None),
            }
        })
    }

    /// Makes the active file's appended events durable.
    pub fn sync(&mut self, cfg: &Config) -> Result<()> {
        self.locked(cfg, |cache, cfg, _| {
            let c = current(cache, cfg)?;
            if let Some(a) = &c.active {
                a.file.sync_data().map_err(io("sync", &a.path))?;
            }
            Ok(())
        })
    }
}

/// Writes the lines made so far (`out`) to the active file with one `write(2)`, and
/// empties `out`.
fn write_out(c: &mut Cache, out: &mut Vec<u8>) -> Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let a = c
        .active
        .as_mut()
        .expect("lines are made for an active file");
    #[cfg(test)]
    let hook = super::fail_point::before_write(&a.path, &mut a.file, out);
    #[cfg(not(test))]
    let hook = Ok(());
    let written = hook.and_then(|()| {
        a.file
            .write_all(out)
            .map_err(io("append to audit log", &a.path))
    });
    if let Err(e) = written {
        // Whole lines of a batch may have reached the file before the write failed: cut
        // back to the last line written before this write, so that no event whose caller
        // is told it failed stays in the trail. If even that fails, the next append's
        // resync cuts the torn last line (and whole lines before it stay: recorded calls
        // that reported a failure).
        let _ = a.file.set_len(a.size);
        return Err(e);
    }
    a.size += out.len() as u64;
    out.clear();
    Ok(())
}

/// Creates the directory (0700) and opens its `.lock` (0600).
fn open_lock_file(cfg: &Config) -> Result<File> {
    fsio::create_private_dir(&cfg.dir).map_err(io("create directory", &cfg.dir))?;
    let path = cfg.dir.join(names::LOCK_FILE);
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(PRIVATE_FILE)
        .open(&path)
        .map_err(io("open lock file", &path))
}

/// The cache, checked against the active file (one fstat) and rebuilt if it is stale.
fn current<'c>(cache: &'c mut Option<Cache>, cfg: &Config) -> Result<&'c mut Cache> {
    let fresh = cache
        .as_ref()
        .and_then(|c| c.active.as_ref())
        .is_some_and(|a| {
            // Size, mode and links only: asking for the file's times would make every
            // append after the look dirty its inode (`sys::file::size_mode_links`).
            sys::file::size_mode_links(&a.file).is_ok_and(|(size, mode, links)| {
                size == a.size && mode & 0o777 == PRIVATE_FILE && links > 0
            })
        });
    let c = match cache.take() {
        Some(c) if fresh => c,
        _ => resync(cfg)?,
    };
    Ok(cache.insert(c))
}

/// Reads the writer state back from the directory (under the lock).
fn resync(cfg: &Config) -> Result<Cache> {
    let entries = names::list(&cfg.dir).map_err(io("list", &cfg.dir))?;
    let Some((newest, older)) = entries.split_last() else {
        return Ok(Cache {
            active: None,
            next_seq: 1,
            last_hash: GENESIS,
            last_epoch: 0,
        });
    };
    if !newest.has_log || newest.has_digest {
        let (next_seq, last_hash, last_epoch) = chain_end(cfg, &entries)?;
        return Ok(Cache {
            active: None,
            next_seq,
            last_hash,
            last_epoch,
        });
    }
    let path = cfg.dir.join(&newest.log_name);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io("open audit log", &path))?;
    let meta = file.metadata().map_err(io("stat", &path))?;
    if meta.mode() & 0o777 != PRIVATE_FILE {
        // A seal that made the file read-only but died before writing the digest: the file
        // is still the active one.
        tracing::warn!(
            "audit log {} was left half-sealed (no digest); appending to it again",
            path.display()
        );
        file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(io("make writable", &path))?;
    }
    let size = tail::cut_torn_line(&file, meta.size()).map_err(io("repair", &path))?;
    if size != meta.size() {
        tracing::warn!(
            "audit log {}: removed a torn last line of {} bytes (a write was cut short)",
            path.display(),
            meta.size() - size
        );
    }
    let (next_seq, last_hash, last_epoch) = match tail::last_line(&file, size)
        .map_err(io("read", &path))?
    {
        Some(line) => {
            let l = chain::parse_line(&line).map_err(|why| AuditError::Corrupt {
                path: path.clone(),
                message: format!(
                    "its last line is not an audit event ({why}), so the chain cannot continue: move the file aside (keep it as evidence) to continue from the previous file"
                ),
            })?;
            (l.seq.saturating_add(1), l.hash, l.epoch)
        }
        None => {
            let end = chain_end(cfg, older)?;
            if end.0 != newest.first_seq {
                // An empty file named for another seq: nothing in it to keep.
                fs::remove_file(&path).map_err(io("remove empty log file", &path))?;
                return Ok(Cache {
                    active: None,
                    next_seq: end.0,
                    last_hash: end.1,
                    last_epoch: end.2,
                });
            }
            end
        }
    };
    Ok(Cache {
        active: Some(Active {
            file,
            name: newest.log_name.clone(),
            size,
            day: newest.day,
            first_seq: newest.first_seq,
            path,
        }),
        next_seq,
        last_hash,
        last_epoch,
    })
}

/// The next seq, the last hash and the last event's key epoch after the newest of
/// `entries`: seq and hash from its digest, or else from its last line, which also gives
/// the epoch (0 when the file is gone); (1, zeros, 0) when there are none.
fn chain_end(cfg: &Config, entries: &[Entry]) -> Result<(u64, Hash, u32)> {
    let Some(e) = entries.last() else {
        return Ok((1, GENESIS, 0));
    };
    let path = cfg.dir.join(&e.log_name);
    if e.has_digest {
        let digest = cfg.dir.join(e.digest_name());
        let end = fs::read(&digest)
            .ok()
            .and_then(|b| Digest::parse(&b).ok())
            .and_then(|d| d.chain_end());
        if let Some((last, hash)) = end {
            let epoch = File::open(&path)
                .ok()
                .and_then(|f| {
                    let size = f.metadata().ok()?.size();
                    tail::last_line(&f, size).ok().flatten()
                })
                .and_then(|line| chain::parse_line(&line).ok().map(|l| l.epoch))
                .unwrap_or(0);
            return Ok((last.saturating_add(1), hash, epoch));
        }
    }
    let damaged = |message: &str| AuditError::Corrupt {
        path: path.clone(),
        message: format!(
            "{message}, so the chain cannot continue after it: restore the file or its digest from a backup"
        ),
    };
    if !e.has_log {
        return Err(damaged(
            "its digest cannot be read and the log file is gone",
        ));
    }
    let file = File::open(&path).map_err(io("open audit log", &path))?;
    let size = file.metadata().map_err(io("stat", &path))?.size();
    let line = tail::last_line(&file, size)
        .map_err(io("read", &path))?
        .ok_or_else(|| damaged("it is sealed but empty"))?;
    let l = chain::parse_line(&line).map_err(|_| damaged("its last line is not an audit event"))?;
    Ok((l.seq.saturating_add(1), l.hash, l.epoch))
}

/// Creates the log file whose first event is `seq`.
fn create_log(cfg: &Config, day: i64, seq: u64, now: i64) -> Result<Active> {
    let name = names::log_name(day, seq).ok_or(AuditError::TimeOutOfRange { now })?;
    let path = cfg.dir.join(&name);
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(&path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => AuditError::Corrupt {
                path: path.clone(),
                message: format!(
                    "it already exists, but the chain says event {seq} is the next one: move it aside"
                ),
            },
            _ => io("create audit log", &path)(e),
        })?;
    let meta = file.metadata().map_err(io("stat", &path))?;
    if meta.mode() & 0o777 != PRIVATE_FILE {
        // The umask took bits away; the stat check expects exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
            .map_err(io("chmod", &path))?;
    }
    fsio::fsync_dir(&cfg.dir).map_err(io("sync directory", &cfg.dir))?;
    Ok(Active {
        file,
        path,
        name,
        size: 0,
        day,
        first_seq: seq,
    })
}

/// Seals the active file: fsync, make it read-only (which tells cached writers), write its
/// digest atomically, keyed under the chain key of the file's last event. Leaves no active
/// file; the next append creates one.
fn seal_active(c: &mut Cache, cfg: &Config, keys: &ChainKeys, now: i64) -> Result<SealSummary> {
    let key = keys
        .get(c.last_epoch)
        .ok_or_else(|| AuditError::ChainKeyUnknown {
            dir: cfg.dir.clone(),
            epoch: c.last_epoch,
        })?;
    let Some(a) = c.active.take() else {
        return Err(AuditError::Corrupt {
            path: cfg.dir.clone(),
            message: "no active log file to seal".into(),
        });
    };
    a.file.sync_all().map_err(io("sync", &a.path))?;
    let bytes = fs::read(&a.path).map_err(io("read", &a.path))?;
    let previous = previous_digest_hash(&cfg.dir, a.first_seq)?;
    fs::set_permissions(&a.path, fs::Permissions::from_mode(SEALED_FILE))
        .map_err(io("make read-only", &a.path))?;
    let last_seq = c.next_seq - 1;
    let body = DigestBody {
        digest_version: DIGEST_VERSION,
        log_file: a.name.clone(),
        first_seq: a.first_seq,
        last_seq,
        event_count: (last_seq + 1).saturating_sub(a.first_seq),
        log_file_blake3: blake3::hash(&bytes).to_hex().to_string(),
        last_event_hash: hex::encode(c.last_hash),
        previous_digest_hash: previous,
        sealed_at: format_time(now),
    };
    let (text, hash) = body.encode(key);
    let digest_name = names::digest_name(&a.name);
    let digest_path = cfg.dir.join(&digest_name);
    fsio::write_atomic(&digest_path, &text, PRIVATE_FILE)
        .map_err(io("write digest", &digest_path))?;
    Ok(SealSummary {
        log_file: a.name,
        digest_file: digest_name,
        first_seq: body.first_seq,
        last_seq,
        event_count: body.event_count,
        digest_hash: hex::encode(hash),
    })
}

/// `digestHash` of the digest of the log file just before the one starting at `first_seq`.
fn previous_digest_hash(dir: &Path, first_seq: u64) -> Result<Option<String>> {
    let entries = names::list(dir).map_err(io("list", dir))?;
    let Some(prev) = entries.iter().rev().find(|e| e.first_seq < first_seq) else {
        return Ok(None);
    };
    if !prev.has_digest {
        return Ok(None);
    }
    let path = dir.join(prev.digest_name());
    let bytes = fs::read(&path).map_err(io("read digest", &path))?;
    Ok(Digest::parse(&bytes).ok().map(|d| d.digest_hash))
}
