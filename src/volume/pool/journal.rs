//! The tag journal: where an fsync of an authenticated volume commits its slot records when
//! nothing else changed, instead of a metadata transaction.
//!
//! Why: an fsync of a plain volume that only overwrote blocks is one `fdatasync` of the
//! data file. An authenticated volume's overwrite also changes its slot's record (the
//! block's tag, and the half it lies in), and a redb transaction for them costs a second
//! sync plus one B-tree page per touched record: it made fsync-heavy jobs 0.7x as fast as
//! on a plain volume. An append to this file costs one small sequential write and its sync.
//!
//! Protocol (formats.md, "Tag journal"): a journaled commit syncs the data files first, then
//! appends one entry (its records, whole, the new roots and the write generation) and syncs
//! the journal; the commit is durable when that sync returns. Entries carry consecutive
//! sequence numbers and a blake3 checksum. A *fold* is an ordinary metadata transaction
//! that also writes every record and root journaled since the last fold and stores the last
//! sequence number handed out (`meta` "journalfolded"); once it is durable the next entry
//! goes to the start of the file again. Every metadata transaction that could touch what
//! the journal holds folds: [`Pool::commit`] always does, and every object operation
//! commits first, so an entry newer than the last fold is newer than every transaction.
//!
//! Opening the pool replays the entries after the folded number, in order, stopping at the
//! first that is missing, torn (checksum), or of another number (an older entry left behind
//! a reset), and folds them at once. A torn entry is the one whose sync never returned: its
//! commit was not acknowledged, and its blocks lie in halves the records before it do not
//! name (the halves rule, `pool/auth.rs`), so nothing acknowledged is lost.
//!
//! Trust: like the metadata database, the journal is checksummed, not keyed. Whoever can
//! write the pool can write either; what they could change is caught where it is for the
//! database: records must match the keyed root of their volume, and the root its anchor.

use std::collections::HashMap;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};

use super::auth::write_auth_rows;
use super::{Pool, lock};
use crate::volume::error::{Result, VolumeError};
use crate::volume::storage::BlockStore;
use crate::volume::tables::{META, REFS, VOLUMES};

/// `meta` key: the last sequence number whose entry the metadata holds.
pub(super) const JOURNAL_FOLDED: &str = "journalfolded";
/// `meta` key: the pool's journal number (random, not 0), stored before its first entry
/// and covered by every entry's checksum: an entry of another pool (whose numbers start
/// at 1 too) is no entry of this one.
pub(super) const JOURNAL_POOL: &str = "journalpool";

const MAGIC: &[u8; 8] = b"CVTAGJ01";
/// For messages.
const JOURNAL_NAME: &str = crate::volume::storage::JOURNAL_FILE;
/// magic, sequence number, payload length, 4 zero bytes, blake3 of the rest.
const HEAD: usize = 8 + 8 + 4 + 4 + 32;
/// Entries start on page boundaries: a torn write damages one entry only.
const PAGE: u64 = 4096;
/// Zeros written per call while the file is laid out.
const LAYOUT_STEP: u64 = 1 << 20;

/// Records and roots committed through the journal and not folded yet: committed state
/// that the metadata database does not hold. Newer entries replace older values.
#[derive(Debug, Default, Clone)]
pub(super) struct Overlay {
    /// (chunk shift, slot) → encoded record.
    pub(super) records: HashMap<(u8, u64), Vec<u8>>,
    /// Owner → encoded root.
    pub(super) roots: HashMap<String, Vec<u8>>,
    /// The highest write generation journaled.
    pub(super) generation: Option<u64>,
}

impl Overlay {
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.roots.is_empty() && self.generation.is_none()
    }

    /// Takes in a newer entry's content.
    pub(super) fn absorb(&mut self, e: Entry) {
        self.records.extend(e.records);
        self.roots.extend(e.roots);
        self.generation = self.generation.max(e.generation);
    }
}

/// One journal entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) generation: Option<u64>,
    pub(super) records: Vec<((u8, u64), Vec<u8>)>,
    pub(super) roots: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// formats.md, "Tag journal": the head, then the payload (generation, records, roots),
    /// zero-padded to whole pages.
    pub(super) fn encode(&self, pool: u64) -> Vec<u8> {
        // One buffer, head first (filled in once the payload's length and checksum are
        // known): an entry is some 200 KB for fio's 32 writes, not worth a second copy.
        let size = 8
            + 4
            + self
                .records
                .iter()
                .map(|(_, b)| 13 + b.len())
                .sum::<usize>()
            + 4
            + self
                .roots
                .iter()
                .map(|(o, b)| 6 + o.len() + b.len())
                .sum::<usize>();
        let mut out = Vec::with_capacity(padded(HEAD + size) as usize);
        out.resize(HEAD, 0);
        out.extend_from_slice(&self.generation.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for ((shift, slot), bytes) in &self.records {
            out.push(*shift);
            out.extend_from_slice(&slot.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out.extend_from_slice(&(self.roots.len() as u32).to_le_bytes());
        for (owner, bytes) in &self.roots {
            out.extend_from_slice(&(owner.len() as u16).to_le_bytes());
            out.extend_from_slice(owner.as_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        let len = out.len() - HEAD;
        let (head, payload) = out.split_at_mut(HEAD);
        head[..8].copy_from_slice(MAGIC);
        head[8..16].copy_from_slice(&self.seq.to_le_bytes());
        head[16..20].copy_from_slice(&(len as u32).to_le_bytes());
        let sum = checksum(&head[..24], pool, payload);
        head[24..].copy_from_slice(&sum);
        out.resize(padded(out.len()) as usize, 0);
        out
    }

    fn decode_payload(seq: u64, p: &[u8]) -> std::result::Result<Entry, String> {
        let mut r = Reader { b: p, at: 0 };
        let generation = Some(r.u64()?).filter(|g| *g != 0);
        let n = r.u32()?;
        let mut records = Vec::new();
        for _ in 0..n {
            let shift = r.take(1)?[0];
            let slot = r.u64()?;
            let len = r.u32()? as usize;
            records.push(((shift, slot), r.take(len)?.to_vec()));
        }
        let n = r.u32()?;
        let mut roots = Vec::new();
        for _ in 0..n {
            let len = u16::from_le_bytes(r.take(2)?.try_into().expect("2")) as usize;
            let owner = std::str::from_utf8(r.take(len)?)
                .map_err(|_| "an owner name that is not UTF-8".to_string())?
                .to_string();
            let len = r.u32()? as usize;
            roots.push((owner, r.take(len)?.to_vec()));
        }
        if r.at != p.len() {
            return Err(format!("{} bytes after the roots", p.len() - r.at));
        }
        Ok(Entry {
            seq,
            generation,
            records,
            roots,
        })
    }
}

fn padded(n: usize) -> u64 {
    (n as u64).div_ceil(PAGE) * PAGE
}

fn checksum(head: &[u8], pool: u64, payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(&pool.to_le_bytes());
    h.update(payload);
    *h.finalize().as_bytes()
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or_else(|| format!("it ends at byte {} inside a field", self.b.len()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
}

/// The entries after `folded`, in order, as a replay applies them. Stops at the first
/// entry that is missing, torn, or of another sequence number; an entry whose checksum
/// holds but whose content does not parse is damage (or tampering), an error.
pub(super) fn replay(store: &dyn BlockStore, folded: u64, pool: u64) -> Result<Vec<Entry>> {
    let io = |e| VolumeError::io("cannot read", store.path(), e);
    let end = store.len().map_err(io)?;
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut expect = folded + 1;
    while pos + HEAD as u64 <= end {
        let mut head = [0u8; HEAD];
        store.read_at(&mut head, pos).map_err(io)?;
        let seq = u64::from_le_bytes(head[8..16].try_into().expect("8"));
        let len = u32::from_le_bytes(head[16..20].try_into().expect("4")) as u64;
        if &head[..8] != MAGIC || seq != expect || len > end - pos - HEAD as u64 {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        store.read_at(&mut payload, pos + HEAD as u64).map_err(io)?;
        if checksum(&head[..24], pool, &payload) != head[24..] {
            break;
        }
        let entry = Entry::decode_payload(seq, &payload).map_err(|detail| VolumeError::Corrupt {
            what: format!("the tag journal {}", store.path().display()),
            detail: format!(
                "entry {seq} at byte {pos} has a valid checksum but {detail}: restore the pool from a backup"
            ),
        })?;
        out.push(entry);
        pos += padded(HEAD + len as usize);
        expect += 1;
    }
    Ok(out)
}

/// The journal's writer: where the next entry goes and its number. Used under the pool's
/// commit lock only.
#[derive(Debug)]
pub(super) struct Journal {
    store: Arc<dyn BlockStore>,
    capacity: u64,
    /// Where the next entry goes.
    pos: u64,
    /// The number the next entry gets.
    next_seq: u64,
    /// The file is laid out to its capacity (written, so that later syncs change no
    /// filesystem metadata).
    laid_out: bool,
    /// False after a failed append until the next fold: the failed entry may or may not
    /// be on disk, and only a fold (which stores its number as folded) settles it.
    usable: bool,
    /// The last number the metadata holds as folded.
    stored: u64,
    /// The pool's journal number (`JOURNAL_POOL`).
    pool: u64,
}

impl Journal {
    /// A writer after `folded`, the last number the metadata holds: the next entry is
    /// `folded + 1`, at the start of the file.
    pub(super) fn new(
        store: Arc<dyn BlockStore>,
        capacity: u64,
        folded: u64,
        pool: u64,
    ) -> Journal {
        Journal {
            store,
            capacity,
            pos: 0,
            next_seq: folded + 1,
            laid_out: false,
            usable: true,
            stored: folded,
            pool,
        }
    }

    pub(super) fn usable(&self) -> bool {
        self.usable
    }

    /// What a fold must store as folded: the last number handed out, if the metadata
    /// does not hold it yet (an entry was appended, or tried, since the last fold).
    pub(super) fn to_fold(&self) -> Option<u64> {
        let last = self.next_seq - 1;
        (last > self.stored).then_some(last)
    }

    /// Appends `entry` (its `seq` is set here) and syncs it. `Ok(None)`: it does not fit
    /// in what is left, nothing was written (fold instead). On an error the journal is
    /// unusable until the next fold.
    pub(super) fn append(&mut self, entry: &mut Entry) -> Result<Option<u64>> {
        if !self.laid_out
            && let Err(e) = self.lay_out()
        {
            // No entry was written: the commit folds instead (its data is synced and a
            // fold needs no room in this file). Tried again after the next fold.
            tracing::warn!("tag journal: {e}: committing to the metadata database instead");
            self.usable = false;
            return Ok(None);
        }
        let path = self.store.path().to_path_buf();
        let io = |what: &'static str, e| VolumeError::io(what, &path, e);
        entry.seq = self.next_seq;
        let bytes = entry.encode(self.pool);
        if self.pos + bytes.len() as u64 > self.capacity {
            return Ok(None);
        }
        self.next_seq += 1;
        let r = self
            .store
            .write_at(&bytes, self.pos)
            .map_err(|e| io("cannot write", e))
            .and_then(|()| self.store.sync_data().map_err(|e| io("cannot sync", e)));
        if let Err(e) = r {
            self.usable = false;
            return Err(e);
        }
        self.pos += bytes.len() as u64;
        Ok(Some(entry.seq))
    }

    /// A fold that stored `seq` (from [`Journal::to_fold`], or the number stored already
    /// when it had none to store) is durable: the next entry goes to the start again.
    pub(super) fn folded(&mut self, seq: u64) {
        self.stored = self.stored.max(seq);
        if self.next_seq - 1 == self.stored {
            self.pos = 0;
            self.usable = true;
        }
    }

    /// Writes zeros up to the capacity, once: appends then overwrite allocated blocks,
    /// and their syncs have no filesystem metadata to commit. (Zeros never parse as an
    /// entry: a crash here loses nothing.) A failure (a full filesystem) gives back what
    /// this call wrote: the zeros must not keep the room the metadata database needs.
    fn lay_out(&mut self) -> Result<()> {
        let path = self.store.path().to_path_buf();
        let io = |what: &'static str, e| VolumeError::io(what, &path, e);
        let mut at = self.store.len().map_err(|e| io("cannot stat", e))?;
        if at < self.capacity {
            let zeros = vec![0u8; LAYOUT_STEP as usize];
            // From a page boundary: a partial last page is rewritten whole.
            at -= at % PAGE;
            let start = at;
            let r = (|| {
                while at < self.capacity {
                    let n = LAYOUT_STEP.min(self.capacity - at) as usize;
                    self.store
                        .write_at(&zeros[..n], at)
                        .map_err(|e| io("cannot write", e))?;
                    at += n as u64;
                }
                self.store.sync_data().map_err(|e| io("cannot sync", e))
            })();
            if r.is_err() {
                // Best effort; only zeros (and no entry) lie there.
                let _ = self.store.punch(start, self.capacity - start);
            }
            r?;
        }
        self.laid_out = true;
        Ok(())
    }
}

/// The pool's journal: its writer once a commit used it, and the folded number.
#[derive(Debug, Default)]
pub(super) struct JournalState {
    pub(super) writer: Option<Journal>,
    /// The last number the metadata holds as folded (read at open).
    pub(super) folded: u64,
    /// The pool's journal number, once stored (read at open).
    pub(super) pool: Option<u64>,
}

impl Pool {
    /// At open, before anything reads the metadata: applies the entries journaled after
    /// the last fold, in one transaction that also stores the last one's number. A record
    /// of a slot nothing references, or a root of a volume that does not exist, is not
    /// applied: a transaction that freed or deleted them would have folded the journal
    /// first, so such an entry is not the pool's (it is logged).
    pub(super) fn replay_journal(&self) -> Result<()> {
        let (folded, pool) = {
            let r = self.db()?.begin_read()?;
            let meta = r.open_table(META)?;
            let folded = meta.get(JOURNAL_FOLDED)?.map(|v| v.value()).unwrap_or(0);
            (folded, meta.get(JOURNAL_POOL)?.map(|v| v.value()))
        };
        {
            let mut j = lock(&self.journal);
            j.folded = folded;
            j.pool = pool;
        }
        // Without a journal number this pool never journaled: a file there is not its own.
        let Some(pool) = pool.filter(|_| self.storage.has_journal()) else {
            return Ok(());
        };
        let store = self
            .storage
            .journal()
            .map_err(|e| VolumeError::io("cannot open", self.dir.join(JOURNAL_NAME), e))?;
        let entries = replay(store.as_ref(), folded, pool)?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            return Ok(());
        };
        let mut all = Overlay::default();
        for e in entries {
            all.absorb(e);
        }
        let w = self.begin_write()?;
        {
            let refs = w.open_table(REFS)?;
            let mut foreign = vec![];
            for k in all.records.keys() {
                if refs.get(*k)?.is_none() {
                    tracing::warn!(
                        "tag journal: not applying the record of slot {} (chunk size 2^{}): no map points at it",
                        k.1,
                        k.0
                    );
                    foreign.push(*k);
                }
            }
            for k in foreign {
                all.records.remove(&k);
            }
            let volumes = w.open_table(VOLUMES)?;
            let mut unknown = vec![];
            for owner in all.roots.keys() {
                if volumes.get(owner.as_str())?.is_none() {
                    tracing::warn!("tag journal: not applying a root of {owner}: no such volume");
                    unknown.push(owner.clone());
                }
            }
            for owner in unknown {
                all.roots.remove(&owner);
            }
            write_overlay(&w, &mut w.open_table(META)?, &all, Some(last))?;
        }
        w.commit()?;
        tracing::info!(
            "tag journal: applied entries {}..={last} ({} records)",
            folded + 1,
            all.records.len()
        );
        lock(&self.journal).folded = last;
        Ok(())
    }

    /// Appends a journaled commit's records, roots and generation (after its data was
    /// synced). `Ok(false)`: the journal cannot take it (full, or unusable after a failure):
    /// the caller folds instead. On success the overlay holds them.
    pub(super) fn append_to_journal(&self, auth: &mut super::auth::AuthDirty) -> Result<bool> {
        let mut j = lock(&self.journal);
        let folded = j.folded;
        if j.writer.is_none() {
            let pool = match j.pool {
                Some(p) => p,
                None => {
                    // Stored before the first entry: replay knows its entries by it.
                    let p = u64::from_le_bytes(crate::crypto::random::array()).max(1);
                    let w = self.begin_write()?;
                    w.open_table(META)?.insert(JOURNAL_POOL, p)?;
                    w.commit()?;
                    j.pool = Some(p);
                    p
                }
            };
            let store = self
                .storage
                .journal()
                .map_err(|e| VolumeError::io("cannot open", self.dir.join(JOURNAL_NAME), e))?;
            j.writer = Some(Journal::new(
                store,
                self.storage.journal_capacity(),
                folded,
                pool,
            ));
        }
        let writer = j.writer.as_mut().expect("made above");
        if !writer.usable() {
            return Ok(false);
        }
        // Moved, not copied (a commit's records are some 200 KB): into the overlay once
        // durable, back into the commit if not.
        let mut entry = Entry {
            seq: 0,
            generation: auth.generation,
            records: auth.records.drain().collect(),
            roots: auth.roots.drain().collect(),
        };
        let put_back = |auth: &mut super::auth::AuthDirty, entry: Entry| {
            auth.records.extend(entry.records);
            auth.roots.extend(entry.roots);
        };
        match writer.append(&mut entry) {
            Ok(Some(_)) => {
                Arc::make_mut(&mut lock(&self.state).journaled).absorb(entry);
                Ok(true)
            }
            Ok(None) => {
                put_back(auth, entry);
                Ok(false)
            }
            Err(e) => {
                put_back(auth, entry);
                Err(e)
            }
        }
    }

    /// What a fold must write: the overlay, and the number to store as folded (if any).
    pub(super) fn fold_content(&self) -> (Arc<Overlay>, Option<u64>) {
        let seq = lock(&self.journal)
            .writer
            .as_ref()
            .and_then(Journal::to_fold);
        (lock(&self.state).journaled.clone(), seq)
    }

    /// A fold that wrote `overlay` and stored `seq` is durable: the metadata now holds all
    /// of it, and the journal starts over.
    pub(super) fn fold_done(&self, seq: Option<u64>) {
        lock(&self.state).journaled = Arc::default();
        let mut j = lock(&self.journal);
        if let Some(seq) = seq {
            j.folded = j.folded.max(seq);
        }
        // Also with no number to store: a writer that could not lay its file out is
        // usable again (it tries once more).
        let folded = j.folded;
        if let Some(w) = j.writer.as_mut() {
            w.folded(seq.unwrap_or(folded));
        }
    }
}

/// Writes a fold's overlay into a commit's transaction, before the commit's own records
/// and roots (which are newer and replace them) and before its reference counts (so a
/// slot the commit frees loses its record).
pub(super) fn write_overlay(
    w: &redb::WriteTransaction,
    meta: &mut redb::Table<&str, u64>,
    overlay: &Overlay,
    seq: Option<u64>,
) -> Result<()> {
    write_auth_rows(
        w,
        meta,
        &overlay.records,
        &overlay.roots,
        overlay.generation,
    )?;
    if let Some(seq) = seq {
        meta.insert(JOURNAL_FOLDED, seq)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
