//! The tag journal: where an fsync of an authenticated volume commits its slot records when
//! nothing else changed, instead of a metadata transaction.
//!
//! Why: an fsync of a plain volume that only overwrote blocks is one `fdatasync` of the
//! data file. An authenticated volume's overwrite also changes its slot's record (the
//! block's tag, and the half it lies in), and a redb transaction for them costs a second
//! sync plus one B-tree page per touched record: it made fsync-heavy jobs 0.7x as fast as
//! on a plain volume. An append to this file costs one small sequential write and its sync.
//!
//! Protocol (formats.md, "Tag journal"): a journaled commit appends one entry (its records,
//! whole, the new roots and the write generation) and syncs the journal; the commit is
//! durable when that sync returns. Before it, either the data files were synced (the entry
//! says so), or the entry carries the ranges written since the journal last covered them
//! (`entry.rs`): then the fsync is one device flush, and the next fold syncs the files. A
//! replay writes back the ranges of the entries after the last data-synced one only: those
//! before it were on disk by its sync, and newer acknowledged writes may lie over them. For
//! the same reason a bare data sync (a plain volume's fsync) is not allowed while an entry
//! with blocks is outstanding (`commit_to_journal` in `alloc.rs`). Entries carry consecutive
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
use super::data::Written;
use super::{Pool, lock};
use crate::volume::error::{Result, VolumeError};
use crate::volume::storage::{BlockStore, PoolStorage};
use crate::volume::tables::{META, REFS, VOLUMES};

mod entry;
pub(super) use entry::{Block, Content, Entry};
use entry::{HEAD, MAGIC, MAGIC_V1, PAGE, checksum, padded};

/// `meta` key: the last sequence number whose entry the metadata holds.
pub(super) const JOURNAL_FOLDED: &str = "journalfolded";
/// `meta` key: the pool's journal number (random, not 0), stored before its first entry
/// and covered by every entry's checksum: an entry of another pool (whose numbers start
/// at 1 too) is no entry of this one.
pub(super) const JOURNAL_POOL: &str = "journalpool";

/// For messages.
const JOURNAL_NAME: &str = crate::volume::storage::JOURNAL_FILE;
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

/// The entries after `folded`, in order, as a replay applies them. Stops at the first
/// entry that is missing, torn, or of another sequence number; an entry whose checksum
/// holds but whose content does not parse is damage (or tampering), an error.
pub(super) fn replay(store: &dyn BlockStore, folded: u64, pool: u64) -> Result<Vec<Entry>> {
    let io = |e| VolumeError::io("cannot read", store.path(), e);
    // No journal is written past the largest capacity: what lies beyond is no entry, and a
    // head there (or a length reaching there) must not make replay read gigabytes.
    let end = store
        .len()
        .map_err(io)?
        .min(crate::volume::storage::JOURNAL_CAPACITY);
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut expect = folded + 1;
    while pos + HEAD as u64 <= end {
        let mut head = [0u8; HEAD];
        store.read_at(&mut head, pos).map_err(io)?;
        let seq = u64::from_le_bytes(head[8..16].try_into().expect("8"));
        let len = u32::from_le_bytes(head[16..20].try_into().expect("4")) as u64;
        let v2 = &head[..8] == MAGIC;
        if !(v2 || &head[..8] == MAGIC_V1) || seq != expect || len > end - pos - HEAD as u64 {
            break;
        }
        let mut payload = vec![0u8; len as usize];
        store.read_at(&mut payload, pos + HEAD as u64).map_err(io)?;
        if checksum(&head[..24], pool, &payload) != head[24..] {
            break;
        }
        let entry = Entry::decode_payload(seq, v2, &payload).map_err(|detail| VolumeError::Corrupt {
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
    /// An entry carrying blocks may have been appended since the last fold or entry
    /// written after a data sync: until one of those, every durable point must be an entry
    /// (a replay would write those blocks over what a bare data sync made durable since).
    pub(super) blocks_outstanding: bool,
}

/// Most bytes of blocks one entry carries; a commit with more syncs the data files.
pub(super) const ENTRY_BLOCKS_MAX: u64 = 1 << 20;

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
        // The blocks of the entries after the last one written after a data sync, in
        // order: what those entries stood for instead of a sync. (The blocks of entries
        // before it were on disk by its sync, and writing them again could undo an
        // acknowledged write made since.) Durable before the fold stops their replay.
        let since_sync = entries
            .iter()
            .rposition(|e| e.data_synced)
            .map_or(0, |i| i + 1);
        let blocks: Vec<&Block> = entries[since_sync..]
            .iter()
            .flat_map(|e| &e.blocks)
            .collect();
        let written_back = blocks.len();
        self.write_back(&blocks)?;
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
            "tag journal: applied entries {}..={last} ({} records, {written_back} ranges of data written back)",
            folded + 1,
            all.records.len()
        );
        lock(&self.journal).folded = last;
        // Folded: nothing written so far needs an entry.
        self.take_written();
        Ok(())
    }

    /// Replay: writes (or punches) `blocks` into their data files in order, then syncs
    /// them (`Pool::sync_data`: the files written since their last sync).
    fn write_back(&self, blocks: &[&Block]) -> Result<()> {
        for b in blocks {
            let f = self.file(b.shift, b.half as usize)?;
            match &b.content {
                Content::Bytes(v) => f.write_at(v, b.off)?,
                Content::Punched(n) => f.punch(b.off, *n)?,
            }
        }
        self.sync_data()
    }

    /// Takes every data file's ranges written since the last take (`DataFile::take_written`),
    /// with the file's chunk shift and half.
    pub(super) fn take_written(&self) -> Vec<((u8, u8), Arc<super::DataFile>, Written)> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, f)| (*k, f.clone(), f.take_written()))
            .collect()
    }

    /// A cover of ranges [`Pool::take_written`] took failed: the next journaled commit
    /// syncs the data files instead of carrying blocks.
    pub(super) fn lose_written(&self) {
        for f in self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            f.lose_written();
        }
    }

    /// The blocks an entry carries for `written`, read back from the data files (the page
    /// cache, mostly); `None` when there are too many to carry (or a file lost track of
    /// its ranges): the commit syncs the data files instead.
    pub(super) fn carried_blocks(
        &self,
        written: &[((u8, u8), Arc<super::DataFile>, Written)],
    ) -> Result<Option<Vec<Block>>> {
        if written.iter().any(|(_, _, w)| w.overflow)
            || written.iter().map(|(_, _, w)| w.bytes).sum::<u64>() > ENTRY_BLOCKS_MAX
        {
            return Ok(None);
        }
        let mut blocks = vec![];
        for ((shift, half), f, w) in written {
            for r in &w.ranges {
                let content = if r.hole {
                    Content::Punched(r.len)
                } else {
                    let mut v = vec![0u8; r.len as usize];
                    f.read_whole(&mut v, r.off)?;
                    Content::Bytes(v)
                };
                blocks.push(Block {
                    shift: *shift,
                    half: *half,
                    off: r.off,
                    content,
                });
            }
        }
        Ok(Some(blocks))
    }

    /// Appends a journaled commit's records, roots and generation, with `blocks` (what
    /// was written since the journal last covered the data files), or with `None` after
    /// the caller synced the data files. `Ok(false)`: the journal cannot take it (full, or
    /// unusable after a failure): the caller folds instead. On success the overlay holds
    /// the records and roots.
    pub(super) fn append_to_journal(
        &self,
        auth: &mut super::auth::AuthDirty,
        blocks: Option<Vec<Block>>,
    ) -> Result<bool> {
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
                // Replay reads no further (`replay`).
                self.storage
                    .journal_capacity()
                    .min(crate::volume::storage::JOURNAL_CAPACITY),
                folded,
                pool,
            ));
        }
        if !j.writer.as_ref().expect("made above").usable() {
            return Ok(false);
        }
        // Moved, not copied (a commit's records are some 200 KB): into the overlay once
        // durable, back into the commit if not.
        let data_synced = blocks.is_none();
        if !data_synced {
            // Before the append: a failed one may be on disk all the same.
            j.blocks_outstanding = true;
        }
        let writer = j.writer.as_mut().expect("made above");
        let mut entry = Entry {
            seq: 0,
            generation: auth.generation,
            records: auth.records.drain().collect(),
            roots: auth.roots.drain().collect(),
            data_synced,
            blocks: blocks.unwrap_or_default(),
        };
        let put_back = |auth: &mut super::auth::AuthDirty, entry: Entry| {
            auth.records.extend(entry.records);
            auth.roots.extend(entry.roots);
        };
        match writer.append(&mut entry) {
            Ok(Some(_)) => {
                if data_synced {
                    j.blocks_outstanding = false;
                }
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
        // The fold synced the data files before its transaction: no entry's blocks are
        // replayed any more.
        j.blocks_outstanding = false;
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
