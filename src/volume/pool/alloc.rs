//! Slot allocation and the commit of block-level metadata.
//!
//! Writers change the pool's metadata in memory only: they *reserve* a slot (which
//! changes nothing durable), fill it, and then *remap* a chunk in one step that records
//! the new mapping and both reference-count changes together. A commit (fsync, or any
//! admin operation) takes every recorded change at once, syncs the data files, and writes
//! the metadata in one redb transaction. So no commit can ever see half of a remap: a
//! crash never leaves a slot referenced by nothing (leaked) or a count one too high.
//!
//! Slot states, durably: below the high-water mark a slot is either referenced or in
//! `free`. A reservation from past the high-water mark raises it in memory; the commit
//! that writes the new mark also writes every slot it covers into `free`, and the commit
//! that writes a slot's first reference removes it from `free`. A reservation that is
//! never used therefore stays free after a crash, never leaked.
//!
//! A commit whose redb transaction returns Err is *in doubt*, not rolled back: redb
//! writes the transaction's pages and header and then syncs, and when only the sync
//! fails the pages are in the page cache, where the reopen after the error finds them
//! committed. Reference-count deltas are not idempotent, so such a commit must not simply
//! be put back and applied again (its -1 on a shared slot, applied twice, freed the slot
//! under the snapshot that still maps it). Each commit transaction therefore stores its
//! number in `meta` ("commit"); the next commit reads it to learn whether the one in doubt
//! landed. If it did, its changes stay as they are and only become durable with the next
//! transaction, which is forced even if nothing else changed; until then the slots it
//! freed are not released. If it did not, its changes are put back, under anything newer.
//!
//! Freed slots (count reaches zero in a durable commit) are punched and only then handed
//! to the in-memory free set, so nothing reuses a slot that a durable map may still point
//! at or that is about to be punched. The in-memory allocator of every chunk size in use
//! is loaded when the pool is opened, before any commit can free anything: loading it
//! later raced with a commit's punch-then-release (the defect `allocator_window`).

use std::collections::{BTreeSet, HashMap, HashSet};

use redb::{ReadableDatabase, ReadableTable};

use std::sync::{Arc, Mutex};

use super::auth::{AuthDirty, OwnerRoot, drop_record};
use super::data::{DataFile, Written};
use super::journal::{Overlay, write_overlay};
use super::{Pool, lock};
use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::SlotNo;
use crate::volume::integrity::SlotRecord;
use crate::volume::tables::{FREE, MAPS, META, REFS, REMOTE, hwm_key};

/// Allocation state of one chunk size, in memory.
#[derive(Debug, Default)]
pub(super) struct Allocator {
    /// Slots free in the last committed metadata, punched, and not reserved.
    free: BTreeSet<u64>,
    /// First slot never handed out (may be ahead of the committed mark).
    hwm: u64,
}

/// Metadata changes since the last commit.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    /// (owner: a volume, or a copy in progress, chunk) → slot.
    pub(super) maps: HashMap<(String, u64), Option<u64>>,
    pub(super) refs: HashMap<(u8, u64), i64>,
    /// New high-water marks per chunk size.
    hwm: HashMap<u8, u64>,
    /// `remote` rows to drop: chunks fetched from the object store (their map row is in
    /// `maps`, in the same commit) or discarded. Idempotent, unlike the counts.
    pub(super) remote_drops: HashSet<(String, u64)>,
    /// A commit in doubt landed, but is not known to be durable: the next commit writes
    /// a transaction even with nothing else to write, and only when that one succeeds
    /// are the slots the landed commit freed released.
    sync_landed: bool,
    landed_freed: Vec<(u8, u64)>,
    /// Records, roots and counts of authenticated volumes (`auth.rs`).
    pub(super) auth: AuthDirty,
    /// Tweak domains of the slots mapped since the last commit (0: no `slot_domain` row).
    pub(super) domains: HashMap<(u8, u64), u64>,
    /// The epoch the take closed: once this commit is durable, so is every write of it.
    pub(super) closed_epoch: u64,
}

impl Dirty {
    /// Only records, roots and the write generation changed: what the tag journal may
    /// commit (every one of them is a value, not a delta, so an entry applied twice does
    /// no harm). Error counts are deltas; they go to the metadata.
    fn journalable(&self) -> bool {
        self.maps.is_empty()
            && self.refs.is_empty()
            && self.hwm.is_empty()
            && self.remote_drops.is_empty()
            && self.domains.is_empty()
            && !self.sync_landed
            && self.landed_freed.is_empty()
            && self.auth.errors.is_empty()
    }

    /// Nothing to write: no change a journal could take, and none it could not.
    fn is_empty(&self) -> bool {
        self.journalable() && self.auth.is_empty()
    }

    /// Puts back what a failed commit took, under anything recorded since (which is newer).
    fn merge_older(&mut self, older: Dirty) {
        for (k, v) in older.maps {
            self.maps.entry(k).or_insert(v);
        }
        for (k, d) in older.refs {
            *self.refs.entry(k).or_insert(0) += d;
        }
        for (k, v) in older.hwm {
            let e = self.hwm.entry(k).or_insert(v);
            *e = (*e).max(v);
        }
        self.remote_drops.extend(older.remote_drops);
        for (k, v) in older.domains {
            self.domains.entry(k).or_insert(v);
        }
        self.sync_landed |= older.sync_landed;
        self.landed_freed.extend(older.landed_freed);
        self.auth.merge_older(older.auth);
    }
}

/// A commit whose transaction returned Err (see the module doc).
#[derive(Debug)]
pub(super) struct InDoubt {
    /// The number its transaction stored in `meta` "commit".
    seq: u64,
    pub(super) dirty: Dirty,
    /// The slots its transaction freed.
    freed: Vec<(u8, u64)>,
    /// It folded the tag journal, storing this number (if any): if it landed, the overlay
    /// it wrote is in the metadata and must go (written again by a later fold, it would
    /// replace the newer records the same transaction wrote after it).
    fold: Option<Option<u64>>,
}

/// `meta` key: the number of the last block-level commit transaction.
const COMMIT_SEQ: &str = "commit";
/// A commit with at least this much unsynced data writes it back before its take (an
/// fsync after a few small writes does not: one sync is cheaper than two). Unit tests use
/// a small one, so that their simulated crashes and races meet both kinds of commit.
const PRESYNC_BYTES: u64 = if cfg!(test) { 64 << 10 } else { 8 << 20 };

#[derive(Debug, Default)]
pub(super) struct PoolState {
    pub(super) alloc: HashMap<u8, Allocator>,
    pub(super) dirty: Dirty,
    pub(super) in_doubt: Option<InDoubt>,
    /// Records of authenticated volumes' slots written since the last commit.
    pub(super) live_auth: HashMap<(u8, u64), Arc<Mutex<SlotRecord>>>,
    /// Open authenticated volumes, whose roots every commit keeps.
    pub(super) owners: HashMap<String, OwnerRoot>,
    /// Records and roots committed through the tag journal, not yet folded into the
    /// metadata (`journal.rs`): committed state, read before the database.
    /// Shared with a fold in flight, which writes it without copying it (`Arc::make_mut`
    /// copies only if an append came while a fold holds it: both run under the commit
    /// lock, so none does).
    pub(super) journaled: Arc<super::journal::Overlay>,
}

/// A chunk of an owner's committed map, as opening a volume needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedSlot {
    pub chunk: u64,
    pub slot: SlotNo,
    /// Map rows pointing at the slot (more than 1: shared with a snapshot or a clone).
    pub refs: u32,
    /// The slot's tweak domain (`domains`).
    pub domain: u64,
}

/// A slot handed out by [`Pool::reserve`]: all zeros, owned by the caller until it is
/// mapped with [`Pool::remap`] or given back with [`Pool::unreserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reserved(pub SlotNo);

impl Pool {
    /// Loads the allocator of every chunk size the pool has used. Called by `open`, before
    /// anything can commit.
    pub(super) fn load_allocators(&self) -> Result<()> {
        let shifts: Vec<u8> = {
            let r = self.db()?.begin_read()?;
            let meta = r.open_table(META)?;
            let mut v = vec![];
            for item in meta.range("hwm/".."hwm0")? {
                let (k, _) = item?;
                if let Some(s) = k.value().strip_prefix("hwm/").and_then(|s| s.parse().ok()) {
                    v.push(s);
                }
            }
            v
        };
        let mut st = lock(&self.state);
        for shift in shifts {
            let a = self.read_allocator(shift)?;
            st.alloc.insert(shift, a);
        }
        Ok(())
    }

    /// The committed allocation state of one chunk size. Slots at or past the high-water
    /// mark were never committed; after a crash they may hold stale ciphertext, so they
    /// are made holes here, once, and handing them out needs no punch.
    fn read_allocator(&self, shift: u8) -> Result<Allocator> {
        let r = self.db()?.begin_read()?;
        let free_t = r.open_table(FREE)?;
        let mut free = BTreeSet::new();
        for item in free_t.range((shift, 0)..=(shift, u64::MAX))? {
            free.insert(item?.0.value().1);
        }
        let hwm = r
            .open_table(META)?
            .get(hwm_key(shift).as_str())?
            .map(|g| g.value())
            .unwrap_or(0);
        let df = self.data_file(shift)?;
        let len = df.len()?;
        let start = hwm << shift;
        if len > start {
            df.punch(start, len - start)?;
        }
        Ok(Allocator { free, hwm })
    }

    /// Hands out a slot whose content is all zeros. Nothing durable changes until the
    /// caller maps it ([`Pool::remap`]); if it does not, it gives it back
    /// ([`Pool::unreserve`]).
    pub fn reserve(&self, shift: u8) -> Result<Reserved> {
        let (slot, reused) = {
            let mut st = lock(&self.state);
            let a = match st.alloc.entry(shift) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                // A chunk size never used before: nothing of it can be free or freed.
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(self.read_allocator(shift)?)
                }
            };
            match a.free.pop_first() {
                Some(s) => (s, true),
                None => {
                    a.hwm += 1;
                    let hwm = a.hwm;
                    let e = st.dirty.hwm.entry(shift).or_insert(hwm);
                    *e = (*e).max(hwm);
                    (hwm - 1, false)
                }
            }
        };
        // A reused slot may hold old ciphertext if a crash came between the commit that
        // freed it and the hole punch after it, or if it was reserved, partly written
        // and given back; make sure it reads as zeros.
        if reused && let Err(e) = self.data_file(shift)?.punch_slot(SlotNo(slot)) {
            self.unreserve(shift, Reserved(SlotNo(slot)));
            return Err(e);
        }
        Ok(Reserved(SlotNo(slot)))
    }

    /// Gives back a reservation that was not mapped.
    pub fn unreserve(&self, shift: u8, slot: Reserved) {
        let mut st = lock(&self.state);
        // A record made for it (a copy that failed half way) must not be committed for a
        // free slot.
        st.live_auth.remove(&(shift, slot.0.0));
        if let Some(a) = st.alloc.get_mut(&shift) {
            a.free.insert(slot.0.0);
        }
    }

    /// Records, as one change, that `(owner, chunk)` now maps to `new` (a reservation,
    /// or nothing) instead of `old`: the map row, both reference counts, and the tweak
    /// domain `new`'s blocks were written in (`pool::domains`; 0 for an authenticated
    /// slot, whose record carries it). One change, so a commit never takes the domain of
    /// a slot without its map row, or the other way round.
    pub fn remap(
        &self,
        shift: u8,
        owner: &str,
        chunk: u64,
        new: Option<Reserved>,
        old: Option<SlotNo>,
        domain: u64,
    ) {
        let new = new.map(|r| r.0);
        let mut st = lock(&self.state);
        if let Some(n) = new {
            st.dirty.domains.insert((shift, n.0), domain);
        }
        st.dirty
            .maps
            .insert((owner.to_string(), chunk), new.map(|s| s.0));
        if new != old {
            if let Some(n) = new {
                *st.dirty.refs.entry((shift, n.0)).or_insert(0) += 1;
            }
            if let Some(o) = old {
                *st.dirty.refs.entry((shift, o.0)).or_insert(0) -= 1;
            }
        }
    }

    /// Makes everything written and recorded so far durable, in the metadata database
    /// (folding the tag journal into it). See the module doc.
    pub fn commit(&self) -> Result<()> {
        self.commit_with(false)
    }

    /// An fsync of a volume: makes everything written and recorded so far durable, like
    /// [`Pool::commit`], but a commit that only changed slot records (an authenticated
    /// volume's overwrites) goes to the tag journal instead of a metadata transaction
    /// (`journal.rs`).
    pub fn sync(&self) -> Result<()> {
        self.sync_since(self.epoch())
    }

    /// [`Pool::sync`] for a caller whose writes all returned before the epoch was
    /// `started`. Group commit: every write of that caller precedes the take of any commit
    /// that closes `started` or a later epoch, so once such a commit is durable there is
    /// nothing left to do. Concurrent fsyncs that queued on the commit lock behind a
    /// commit in flight are then answered by the one commit after it instead of one each
    /// (other writers keep the files dirty in between, so each used to sync again).
    pub(super) fn sync_since(&self, started: u64) -> Result<()> {
        let _one_at_a_time = lock(&self.commit_lock);
        if self.durable_epoch() >= started {
            return Ok(());
        }
        self.commit_locked(true)
    }

    fn commit_with(&self, journal: bool) -> Result<()> {
        let _one_at_a_time = lock(&self.commit_lock);
        self.commit_locked(journal)
    }

    /// [`Pool::commit_with`] under the commit lock, which the caller holds: a reader of
    /// the metadata that must see everything committed (no journal entry newer than what
    /// it reads) commits and reads under one hold of the lock.
    pub(super) fn commit_locked(&self, journal: bool) -> Result<()> {
        // Durable, failed or even panicked, this commit is over when this returns: writes
        // waiting for it look again (`Pool::wait_for_commit_in_flight`).
        struct EndInFlight<'a>(&'a Pool);
        impl Drop for EndInFlight<'_> {
            fn drop(&mut self) {
                self.0.end_in_flight();
            }
        }
        let _end = EndInFlight(self);
        let r = self
            .resolve_in_doubt()
            .and_then(|()| self.commit_pending(journal));
        // (Not after a failed sync: the open database stays, for reads; see `reopen`.)
        if let Err(e) = &r
            && matches!(
                e,
                VolumeError::NoSpace { .. } | VolumeError::Io { .. } | VolumeError::Metadata(_)
            )
            && !self.syncs_refused()
            && let Err(re) = self.reopen()
        {
            tracing::warn!("reopening {}: {re}", self.db_path.display());
        }
        r
    }

    /// Commits the pending changes (under the commit lock, with nothing in doubt): to the
    /// journal if `journal` allows and the changes are records only, else in a metadata
    /// transaction that folds the journal.
    fn commit_pending(&self, journal: bool) -> Result<()> {
        // Write back the bulk of a large backlog before the take. From the take until the
        // commit is durable, a write to a block the commit names cannot overwrite it and
        // copies its whole chunk into a fresh slot (`integrity::Moves`): with seconds of
        // sequential writes pending, that window was the sync of all of them, and the
        // copies cost authenticated volumes some 10% of their sequential write speed.
        // Synced here, the sync after the take only has what came in meanwhile.
        if self.unsynced_bytes() >= PRESYNC_BYTES {
            self.sync_data()?;
        }
        let mut dirty = self.take_dirty();
        // After the take: every write it names has returned, so its range is among these.
        // Whatever covers this commit (an entry carrying them, or a data sync) covers them.
        let written = self.take_written();
        if journal && dirty.journalable() {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_to_journal(&mut dirty.auth, &written)
            }));
            let r = match r {
                Ok(r) => r,
                // A panic (the FUSE ring's dispatcher catches it and the daemon serves on)
                // must not lose what the take took: put it back as a failure does.
                Err(panic) => {
                    self.lose_written();
                    lock(&self.state).dirty.merge_older(dirty);
                    std::panic::resume_unwind(panic);
                }
            };
            match r {
                Ok(true) => {
                    self.durable_epoch
                        .fetch_max(dirty.closed_epoch, std::sync::atomic::Ordering::AcqRel);
                    self.write_anchors(&std::mem::take(&mut dirty.auth.anchors));
                    return Ok(());
                }
                // Full or unusable: fold below (the data is synced already).
                Ok(false) => {}
                Err(e) => {
                    // Nothing of it is known durable: its records are pending again (and a
                    // failed append leaves the journal unusable, so they are folded).
                    self.lose_written();
                    lock(&self.state).dirty.merge_older(dirty);
                    return Err(e);
                }
            }
        }
        let (overlay, fold_seq) = self.fold_content();
        let mut attempt = None;
        // A panic is handled as a failure (what the take took is put back, or in doubt once
        // the transaction's commit was called), then goes on: dropping what was taken lost
        // the changes of every write in this epoch while later fsyncs still succeeded.
        let (r, panic) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.commit_dirty(&dirty, &overlay, fold_seq, &mut attempt)
        })) {
            Ok(r) => (r, None),
            Err(panic) => (
                Err(VolumeError::Corrupt {
                    what: "pool commit".into(),
                    detail: "it panicked".into(),
                }),
                Some(panic),
            ),
        };
        match r {
            Ok(mut freed) => {
                // Also what a failed commit before took: it was merged into this one.
                self.durable_epoch
                    .fetch_max(dirty.closed_epoch, std::sync::atomic::Ordering::AcqRel);
                self.fold_done(fold_seq);
                freed.extend_from_slice(&dirty.landed_freed);
                self.release_freed(freed);
                self.write_anchors(&std::mem::take(&mut dirty.auth.anchors));
                Ok(())
            }
            Err(e) => {
                self.lose_written();
                let mut st = lock(&self.state);
                match attempt {
                    // The transaction's commit failed: it may have landed all the same.
                    Some((seq, freed)) => {
                        let fold = (!overlay.is_empty() || fold_seq.is_some()).then_some(fold_seq);
                        st.in_doubt = Some(InDoubt {
                            seq,
                            dirty,
                            freed,
                            fold,
                        });
                    }
                    // It never got that far: nothing of it is in the metadata.
                    None => st.dirty.merge_older(dirty),
                }
                drop(st);
                if let Some(panic) = panic {
                    std::panic::resume_unwind(panic);
                }
                Err(e)
            }
        }
    }

    /// A journaled commit (an fsync whose changes are slot records only, or none): one
    /// append and one sync where it can. `Ok(false)`: the journal cannot take it, fold.
    ///
    /// - No records, and no entry since the last fold or data sync carried blocks: a sync
    ///   of the data files is all it needs (a plain volume's fsync).
    /// - Nothing to record and nothing written since the last entry: already durable.
    /// - Few blocks written since the journal last covered the data files: the entry
    ///   carries them and nothing else is synced (one device flush instead of two or three;
    ///   the files are synced by the next fold).
    /// - Else the data files are synced, then the entry says so.
    fn commit_to_journal(
        &self,
        auth: &mut super::auth::AuthDirty,
        written: &[((u8, u8), Arc<DataFile>, Written)],
    ) -> Result<bool> {
        let records = !(auth.records.is_empty() && auth.roots.is_empty());
        if !records && !lock(&self.journal).blocks_outstanding {
            self.sync_data()?;
            return Ok(true);
        }
        if !records && written.iter().all(|(_, _, w)| w.is_empty()) {
            return Ok(true);
        }
        match self.carried_blocks(written)? {
            Some(blocks) => self.append_to_journal(auth, Some(blocks)),
            None => {
                self.sync_data()?;
                self.append_to_journal(auth, None)
            }
        }
    }

    /// Settles a commit left in doubt by a failed transaction: did it land? (Under the
    /// commit lock, after the reopen that followed the failure.) Fails, leaving it in
    /// doubt, if the metadata cannot be read.
    fn resolve_in_doubt(&self) -> Result<()> {
        let Some(d) = lock(&self.state).in_doubt.take() else {
            return Ok(());
        };
        let seq = self.db().and_then(|db| {
            let r = db.begin_read()?;
            Ok(r.open_table(META)?.get(COMMIT_SEQ)?.map(|v| v.value()))
        });
        let mut st = lock(&self.state);
        match seq {
            Ok(Some(s)) if s >= d.seq => {
                // Landed: its changes are in the metadata; make them durable, then free.
                st.dirty.sync_landed = true;
                st.dirty.landed_freed.extend(d.freed);
                st.dirty.landed_freed.extend(d.dirty.landed_freed);
                drop(st);
                // And the journal it folded is folded (no entry was appended since: every
                // commit settles what is in doubt first).
                if let Some(fold_seq) = d.fold {
                    self.fold_done(fold_seq);
                }
                Ok(())
            }
            Ok(_) => {
                st.dirty.merge_older(d.dirty);
                Ok(())
            }
            Err(e) => {
                st.in_doubt = Some(d);
                Err(e)
            }
        }
    }

    /// Bytes written to the data files since their last sync.
    fn unsynced_bytes(&self) -> u64 {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|f| f.unsynced_bytes())
            .sum()
    }

    pub(super) fn sync_data(&self) -> Result<()> {
        let files: Vec<_> = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for f in files {
            f.sync_if_dirty()?;
        }
        Ok(())
    }

    /// Data first, then metadata; returns the slots this commit freed. `attempt` is set
    /// when the transaction's commit is called: (its number, the slots it frees).
    fn commit_dirty(
        &self,
        d: &Dirty,
        overlay: &Overlay,
        fold_seq: Option<u64>,
        attempt: &mut Option<(u64, Vec<(u8, u64)>)>,
    ) -> Result<Vec<(u8, u64)>> {
        self.sync_data()?;
        if d.is_empty() && overlay.is_empty() && fold_seq.is_none() {
            return Ok(vec![]);
        }
        let w = self.begin_write()?;
        let mut freed = vec![];
        let seq;
        {
            let mut free = w.open_table(FREE)?;
            let mut meta = w.open_table(META)?;
            seq = meta.get(COMMIT_SEQ)?.map(|v| v.value()).unwrap_or(0) + 1;
            meta.insert(COMMIT_SEQ, seq)?;
            // New slots enter the pool free; the first reference below takes them.
            for (shift, hwm) in &d.hwm {
                let cur = meta
                    .get(hwm_key(*shift).as_str())?
                    .map(|v| v.value())
                    .unwrap_or(0);
                for s in cur..*hwm {
                    free.insert((*shift, s), ())?;
                }
                if *hwm > cur {
                    meta.insert(hwm_key(*shift).as_str(), *hwm)?;
                }
            }
            let mut maps = w.open_table(MAPS)?;
            for ((owner, chunk), slot) in &d.maps {
                match slot {
                    Some(s) => maps.insert((owner.as_str(), *chunk), *s)?,
                    None => maps.remove((owner.as_str(), *chunk))?,
                };
            }
            if !d.remote_drops.is_empty() {
                let mut remote = w.open_table(REMOTE)?;
                for (owner, chunk) in &d.remote_drops {
                    remote.remove((owner.as_str(), *chunk))?;
                }
            }
            write_overlay(&w, &mut meta, overlay, fold_seq)?;
            d.auth.write(&w, &mut meta)?;
            super::domains::write_domains(&w, &d.domains)?;
            let mut refs = w.open_table(REFS)?;
            for (k, delta) in &d.refs {
                let old = refs.get(*k)?.map(|v| v.value() as i64).unwrap_or(0);
                let new = old + delta;
                if new < 0 {
                    return Err(VolumeError::Corrupt {
                        what: "pool reference counts".into(),
                        detail: format!(
                            "slot {} of chunk size 2^{} would drop below zero: run `cryptvol pool check`",
                            k.1, k.0
                        ),
                    });
                }
                if new == 0 {
                    // Also when it was 0 before: mapped and unmapped again since the
                    // last commit, it holds data and is reserved by no one.
                    refs.remove(*k)?;
                    free.insert(*k, ())?;
                    drop_record(&w, k.0, k.1)?;
                    super::domains::drop_domain(&w, k.0, k.1)?;
                    freed.push(*k);
                } else {
                    refs.insert(*k, new as u32)?;
                    if old == 0 {
                        free.remove(*k)?;
                    }
                }
            }
        }
        *attempt = Some((seq, freed.clone()));
        w.commit()?;
        Ok(freed)
    }

    /// Slots freed by a durable commit: return their space, then let them be reused.
    pub(super) fn release_freed(&self, freed: Vec<(u8, u64)>) {
        // One punch per run of adjacent slots: on a filesystem mounted with `discard` each
        // punch is a device discard that costs milliseconds whatever its length, and a
        // commit after copy-on-write frees many neighbouring slots.
        let mut sorted = freed.clone();
        sorted.sort_unstable();
        let mut i = 0;
        while i < sorted.len() {
            let (shift, first) = sorted[i];
            let mut n = 1;
            while i + n < sorted.len() && sorted[i + n] == (shift, first + n as u64) {
                n += 1;
            }
            if let Ok(df) = self.data_file(shift) {
                // Best effort: reservation punches again before reuse.
                let _ = df.punch(df.slot_offset(SlotNo(first)), (n as u64) << shift);
            }
            // The second halves too (a new record never reads them before writing them:
            // this only returns their space).
            if let Some(alt) = self.alt_file_if_any(shift) {
                let _ = alt.punch(alt.slot_offset(SlotNo(first)), (n as u64) << shift);
            }
            i += n;
        }
        let mut st = lock(&self.state);
        for (shift, slot) in freed {
            if let Some(a) = st.alloc.get_mut(&shift) {
                a.free.insert(slot);
            }
        }
    }

    /// The committed map of `owner` with each slot's reference count and tweak domain
    /// (`domains`; 0 for an authenticated slot, whose record carries it), in one read
    /// transaction (opening a volume needs all three).
    pub fn load_map_with_refcounts(&self, owner: &str, shift: u8) -> Result<Vec<MappedSlot>> {
        let r = self.db()?.begin_read()?;
        let maps = r.open_table(MAPS)?;
        let refs = r.open_table(REFS)?;
        let domains = super::read_table(&r, crate::volume::tables::SLOT_DOMAIN)?;
        let mut out = vec![];
        for item in maps.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            let slot = v.value();
            let refs = refs.get((shift, slot))?.map(|c| c.value()).unwrap_or(0);
            let domain = match &domains {
                Some(t) => t.get((shift, slot))?.map(|d| d.value()).unwrap_or(0),
                None => 0,
            };
            out.push(MappedSlot {
                chunk: k.value().1,
                slot: SlotNo(slot),
                refs,
                domain,
            });
        }
        Ok(out)
    }

    /// The committed reference count of a slot.
    pub fn refcount(&self, shift: u8, slot: SlotNo) -> Result<u32> {
        let r = self.db()?.begin_read()?;
        Ok(r.open_table(REFS)?
            .get((shift, slot.0))?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}
