//! The tamper-evident, append-only audit trail of a region (the CloudTrail of cryptvol).
//!
//! Owns the files of one audit directory (`<region>/audit/`): it stores, seals, verifies and
//! reads back events. It does not build events (the KMS does, as CloudTrail records), does
//! not derive the MAC key (the region does, from its root key), prints nothing.
//!
//! # Files (directory 0700, files 0600; sealed log files 0400)
//!
//! - `YYYYMMDD-<first seq, 12+ digits>.jsonl`: one event per line; the date is the UTC day
//!   the file was started. The active file is the one with the highest first seq and no
//!   digest.
//! - `<same stem>.digest.json`: the seal of a log file, written atomically when it is sealed.
//! - `.lock`: flock'ed (exclusive) by every writer and by `verify`.
//!
//! # A line
//!
//! The event's compact JSON object with one member appended as its last:
//! `{...,"cryptvolChain":{"seq":N,"prev":"<64 hex>","hash":"<64 hex>"}}` then `\n`, so each
//! line is still a CloudTrail record that any JSON tool reads.
//!
//! - `seq` is 1 for the region's first event and grows by 1 across files;
//! - `prev` is the previous event's `hash` (64 zeros for seq 1);
//! - `hash = BLAKE3-keyed(mac_key, "cryptvol audit event v1" || seq as u64 LE || prev (32
//!   raw bytes) || event)`, where `event` is the exact compact JSON without the chain member:
//!   `line[..i] + "}"` with `i` the last occurrence of `,"cryptvolChain":{` (for an empty
//!   event, the line is `{"cryptvolChain":{...}}` and `event` is `{}`). A `"` inside a JSON
//!   string is escaped, so that pattern only occurs where a member starts, and as ours is
//!   last, an event whose encryption context has a key named `cryptvolChain` is no problem.
//!
//! The MAC key comes from the region root key: without it nobody can rewrite the chain.
//! A root-key rotation gives the chain a successor key (a new *key epoch*, [`ChainKeys`]);
//! a line under epoch E ≥ 1 ends its member with `,"keyEpoch":E` and its hash is
//! `BLAKE3-keyed(mac_key_E, "cryptvol audit event v2" || E as u32 LE || seq || prev ||
//! event)`. Epochs never go back along the chain, and a digest is keyed under the epoch of
//! its file's last event.
//!
//! # Digests
//!
//! `{"digestVersion":1,"logFile","firstSeq","lastSeq","eventCount","logFileBlake3" (unkeyed
//! BLAKE3 of the whole file),"lastEventHash","previousDigestHash" (null for the first sealed
//! file),"sealedAt" (RFC 3339 UTC),"digestHash"}`. The canonical encoding that `digestHash`
//! covers is in [`digest`]: the compact JSON of the other members, in that order. A file is
//! sealed when it is started on another UTC day than the current append's, when it reaches
//! [`DEFAULT_MAX_FILE_BYTES`], or by [`AuditLog::seal`]. Sealing fsyncs the log file, makes
//! it read-only (0400: this is what tells writers in other processes that it is sealed),
//! then writes the digest with `fsio::write_atomic`.
//!
//! # Speed, crashes, concurrency
//!
//! An append is: serialise, flock, fstat the active file and compare (size, mode, link
//! count) with the cached state, one `write(2)` of the whole line (O_APPEND), unlock. No fsync (call
//! [`AuditLog::sync`]), no directory listing. Concurrent callers share it (group commit,
//! `AuditLog::commit`): events queued while one caller writes go out together in the next
//! `write(2)`, in queue order, and each caller returns only once the write carrying its
//! line did; a write that fails fails all its callers and is cut back to the line before. When the stat differs (another process
//! appended, sealed or rotated) the state is read back from the files (`resync`): the newest
//! file's last line, read backwards in chunks, or the previous digest. A torn last line (a
//! crash mid-write, or a failed write) is cut off by the next resync, with a warning; after
//! any error the cache is dropped, so the next append resyncs.
//!
//! # What verification can and cannot prove
//!
//! [`AuditLog::verify`] checks every line's hash and link, the seq order, every digest's
//! hash, its link to the previous digest and its count, last hash and file hash, and reports
//! the first problem in seq order. Like CloudTrail, whose last hour is not yet digested, it
//! cannot prove that the active (unsealed) file is complete: events removed from its end
//! (whole lines) are undetectable until something else remembers them. For the same reason,
//! removing the newest files together with their digests looks like a log that ended
//! earlier; keep a copy of the latest `digestHash` elsewhere if that matters.
//!
//! The format belongs in docs/formats.md; until it is there, this comment is its spec.

mod chain;
mod digest;
mod error;
mod events;
mod keys;
mod names;
mod tail;
mod verify;
mod writer;

#[cfg(test)]
pub(crate) mod fail_point;
#[cfg(test)]
mod tests;

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use error::AuditError;
pub use keys::ChainKeys;
pub use verify::{Problem, ProblemKind, VerifyReport};
pub use writer::SealSummary;

use crate::sys::fsio::FileLock;
use error::{Result, io};
use writer::{Config, Writer};

/// How many times a queued caller looks for its result before it parks (each look is an
/// uncontended lock and a spin-loop hint: a few microseconds in all).
const FOLLOWER_SPINS: u32 = 200;

/// Size at which a log file is sealed and a new one started.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// The audit log of one region. `Send + Sync`: share it between threads; other processes
/// may append to the same directory at the same time.
pub struct AuditLog {
    cfg: Config,
    writer: Mutex<Writer>,
    /// Events waiting for their group commit.
    group: Mutex<Group>,
}

/// The group commit's shared state: callers queue their events here; one of them (the
/// leader) takes the whole queue, appends it with one write, hands each caller its result
/// and wakes it, then hands the lead to the first caller queued meanwhile.
#[derive(Default)]
struct Group {
    /// Events not yet taken by a leader, in the order they were queued (chain order).
    queue: Vec<Queued>,
    /// A leader is writing (or has been named and is waking up).
    leading: bool,
}

/// One queued event and where its caller waits (`None`: the leader's own event).
struct Queued {
    line: Vec<u8>,
    now: i64,
    waiter: Option<Arc<Waiter>>,
}

/// A caller waiting for its event to be written: its result, or the lead, arrive here.
struct Waiter {
    state: Mutex<Wait>,
    thread: std::thread::Thread,
}

enum Wait {
    Queued,
    /// Lead the next batch.
    Lead,
    Done(Result<u64>),
}

impl Waiter {
    fn set(&self, to: Wait) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = to;
        self.thread.unpark();
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.cfg.dir)
            .field("max_file_bytes", &self.cfg.max_file_bytes)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// A log kept in `dir`, chained under `keys`; nothing is read or created until the
    /// first call.
    pub fn new(dir: PathBuf, keys: ChainKeys) -> AuditLog {
        AuditLog {
            cfg: Config {
                dir,
                max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            },
            writer: Mutex::new(Writer::new(keys)),
            group: Mutex::new(Group::default()),
        }
    }

    /// Replaces the chain keys (after a root-key rotation added one): the next append is
    /// under the newest.
    pub fn set_keys(&self, keys: ChainKeys) {
        self.writer().keys = keys;
    }

    /// Seals files once they reach `n` bytes (instead of 16 MiB).
    pub fn with_max_file_bytes(mut self, n: u64) -> Self {
        self.cfg.max_file_bytes = n;
        self
    }

    pub fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        // A panic while holding the lock leaves a state we cannot trust: start afresh.
        self.writer.lock().unwrap_or_else(|poisoned| {
            let mut w = poisoned.into_inner();
            w.reset();
            w
        })
    }

    /// Appends one event (a JSON object); `now` (unix seconds) dates the file. Returns the
    /// event's seq.
    pub fn append(&self, event: &serde_json::Value, now: i64) -> Result<u64> {
        if !event.is_object() {
            return Err(AuditError::NotAnObject);
        }
        let mut buf = Vec::with_capacity(512);
        serde_json::to_writer(&mut buf, event).map_err(|e| AuditError::Corrupt {
            path: self.cfg.dir.clone(),
            message: format!("the event cannot be encoded as JSON ({e})"),
        })?;
        self.commit(buf, now)
    }

    /// Appends one event already encoded as a compact JSON object (the KMS's hot path,
    /// which serializes its typed event straight to bytes).
    pub fn append_encoded(&self, object: Vec<u8>, now: i64) -> Result<u64> {
        if object.first() != Some(&b'{') || object.last() != Some(&b'}') {
            return Err(AuditError::NotAnObject);
        }
        self.commit(object, now)
    }

    fn group(&self) -> MutexGuard<'_, Group> {
        // The group's state is consistent whenever its lock is free (a leader that
        // panicked while writing is handled in `commit`).
        self.group.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Group commit: queues the event, then either waits (parked) while another caller's
    /// append carries it, or leads: appends every queued event (its own and those queued
    /// meanwhile) under one flock with one `write(2)`, gives each caller its result, and
    /// hands the lead to the first caller queued since. Returns only once the event's line
    /// is in the file, after every event queued before it: concurrent callers' events keep
    /// the order in which they were queued, and no caller gets its seq (and so no KMS
    /// caller its result) before its event is written.
    fn commit(&self, line: Vec<u8>, now: i64) -> Result<u64> {
        let mut g = self.group();
        // Nobody leads (and so nothing is queued: a leader that finds events queued hands
        // the lead on): lead at once with our own event, without queueing it.
        let (batch, own) = if !g.leading {
            g.leading = true;
            drop(g);
            (
                vec![Queued {
                    line,
                    now,
                    waiter: None,
                }],
                None,
            )
        } else {
            let waiter = Arc::new(Waiter {
                state: Mutex::new(Wait::Queued),
                thread: std::thread::current(),
            });
            g.queue.push(Queued {
                line,
                now,
                waiter: Some(waiter.clone()),
            });
            drop(g);
            let mut spins = 0;
            loop {
                let state = std::mem::replace(
                    &mut *waiter.state.lock().unwrap_or_else(|p| p.into_inner()),
                    Wait::Queued,
                );
                match state {
                    Wait::Done(out) => return out,
                    Wait::Lead => break,
                    // A leader's append is a few system calls: look again for about as
                    // long before sleeping, since a sleep and a wake-up cost more.
                    Wait::Queued if spins < FOLLOWER_SPINS => {
                        spins += 1;
                        std::hint::spin_loop();
                    }
                    Wait::Queued => std::thread::park(),
                }
            }
            // Lead: take the queue (it holds our event: only a leader takes events).
            (std::mem::take(&mut self.group().queue), Some(waiter))
        };
        let is_own = |w: &Option<Arc<Waiter>>| match (w, &own) {
            (Some(w), Some(own)) => Arc::ptr_eq(w, own),
            (None, _) => true,
            (Some(_), None) => false,
        };
        let (lines, waiters): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|q| ((q.line, q.now), q.waiter))
            .unzip();
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.writer().append_batch(&self.cfg, lines)
        }));
        // The next leader, if events were queued meanwhile; else nobody leads.
        {
            let mut g = self.group();
            match g.queue.first().and_then(|q| q.waiter.as_ref()) {
                Some(w) => w.set(Wait::Lead),
                None => g.leading = false,
            }
        }
        let mut mine = None;
        match results {
            Ok(results) => {
                for (w, r) in waiters.into_iter().zip(results) {
                    if is_own(&w) {
                        mine = Some(r);
                    } else if let Some(w) = w {
                        w.set(Wait::Done(r));
                    }
                }
            }
            Err(panic) => {
                // Fail every event of the batch (none may be taken as written), then let
                // the panic go on in this thread.
                for w in waiters.iter().filter(|w| !is_own(w)).flatten() {
                    w.set(Wait::Done(Err(AuditError::Corrupt {
                        path: self.cfg.dir.clone(),
                        message: "the append carrying this event panicked".into(),
                    })));
                }
                std::panic::resume_unwind(panic);
            }
        }
        mine.expect("the leader's event is in its batch")
    }

    /// Seals the active file now (no-op if it is empty or absent); the next append starts a
    /// new file.
    pub fn seal(&self, now: i64) -> Result<Option<SealSummary>> {
        self.writer().seal(&self.cfg, now)
    }

    /// Makes every event appended so far durable (fdatasync of the active file).
    pub fn sync(&self) -> Result<()> {
        self.writer().sync(&self.cfg)
    }

    /// Checks every file, line, link and digest. Tampering is reported in the report, never
    /// as an error. Holds the directory lock while it reads, so appends wait (and a write in
    /// progress is not mistaken for a torn line); a copy we may not write to is checked
    /// without the lock.
    pub fn verify(&self) -> Result<VerifyReport> {
        let dir = &self.cfg.dir;
        let path = dir.join(names::LOCK_FILE);
        let _lock = match FileLock::exclusive(&path) {
            Ok(lock) => Some(lock),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotFound
                        | ErrorKind::PermissionDenied
                        | ErrorKind::ReadOnlyFilesystem
                ) =>
            {
                None
            }
            Err(e) => return Err(io("lock", &path)(e)),
        };
        let keys = self.writer().keys.clone();
        verify::verify(dir, &keys)
    }

    /// All events in seq order, without the chain member, each with its seq. A line that is not an event is an error naming the file and
    /// line; an incomplete last line of the file being written is skipped.
    pub fn events(&self) -> Result<Vec<(u64, serde_json::Value)>> {
        events::read_events(&self.cfg.dir)
    }
}
