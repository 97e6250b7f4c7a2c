//! The pool's side of authenticated volumes (`volume::integrity`): slot records, roots and
//! anchors, committed with the maps.
//!
//! Crash safety needs one rule: a block a commit has seen is never overwritten where it
//! lies. Overwritten in place, it would hold new ciphertext under the old committed tag
//! until the next commit, and a crash in between would leave a block that fails its check.
//! So the first write to a block in a commit epoch goes into the block's other half of the
//! slot (`integrity::SlotRecord`), and the commit writes the record that names it
//! (`record_moved`). A commit is taken at one instant and durable later: until it is
//! (`durable_epoch`), the blocks it moved have no free half, and a write to one copies the
//! chunk into a fresh slot (`integrity::Moves`). The `gate` makes the epochs exact: every
//! write of an authenticated volume holds it shared from choosing its place to recording its
//! tag, and a commit takes it exclusively while it takes the pending changes and moves to
//! the next epoch. So a write is wholly in the commit (its data synced, its tag written) or
//! wholly after it.
//!
//! Root: at the same moment the commit updates the root of each open authenticated volume
//! whose map or records changed (one leaf per changed chunk, see `integrity`), writes it to `roots`,
//! and after the transaction is durable writes the volume's anchor.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use redb::{ReadableDatabase, ReadableTable};

use super::{Pool, lock, read_table};
use crate::volume::anchor::Anchor;
use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::SlotNo;
use crate::volume::integrity::{IntegrityKeys, Root, SlotRecord};
use crate::volume::tables::{INTEGRITY_ERRORS, MAPS, META, ROOTS, SLOT_AUTH};

/// `meta` key: the highest write generation handed out before the last commit.
pub(super) const BLOCK_GENERATION: &str = "blockgen";

/// A commit between its take and its end, as writes waiting for it see it.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// The thread running the commit, between its take and its end.
    taken: Option<std::thread::ThreadId>,
    ended: u64,
    /// Writes that began waiting, ever (tests watch it).
    waits: u64,
}

/// An open authenticated volume, as the pool's commit sees it.
pub(super) struct OwnerRoot {
    shift: u8,
    keys: Arc<IntegrityKeys>,
    leaves: HashMap<u64, [u8; 32]>,
    root: Root,
    anchor: Option<Anchor>,
    /// Which open registered it: only that one's close unregisters it.
    token: u64,
}

/// What a commit writes for authenticated volumes, taken with the maps.
#[derive(Default, Debug)]
pub(super) struct AuthDirty {
    /// Records of slots written since the last commit, encoded.
    pub(super) records: HashMap<(u8, u64), Vec<u8>>,
    /// Chunks whose record changed without their map row: (owner, chunk) → slot (a write
    /// into a slot's other half). Their leaves change with the record.
    pub(super) relinked: HashMap<(String, u64), u64>,
    /// New roots, encoded.
    pub(super) roots: HashMap<String, Vec<u8>>,
    /// Anchors to write once the transaction is durable.
    pub(super) anchors: Vec<(Anchor, Arc<IntegrityKeys>, Root)>,
    /// Blocks found bad, per owner.
    pub(super) errors: HashMap<String, u64>,
    /// The write generation to store.
    pub(super) generation: Option<u64>,
}

impl std::fmt::Debug for OwnerRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerRoot")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl AuthDirty {
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.roots.is_empty() && self.errors.is_empty()
    }

    /// Puts back what a failed commit took, under anything newer.
    pub(super) fn merge_older(&mut self, older: AuthDirty) {
        for (k, v) in older.records {
            self.records.entry(k).or_insert(v);
        }
        for (k, v) in older.roots {
            self.roots.entry(k).or_insert(v);
        }
        for (k, v) in older.relinked {
            self.relinked.entry(k).or_insert(v);
        }
        for (k, n) in older.errors {
            *self.errors.entry(k).or_insert(0) += n;
        }
        self.generation = self.generation.max(older.generation);
        let mut anchors = older.anchors;
        anchors.append(&mut self.anchors);
        self.anchors = anchors;
    }

    /// Writes the records, roots, counts and generation into the commit's transaction.
    /// Records go in before the reference counts are applied, so a slot freed by the same
    /// commit loses its record there.
    pub(super) fn write(
        &self,
        w: &redb::WriteTransaction,
        meta: &mut redb::Table<&str, u64>,
    ) -> Result<()> {
        write_auth_rows(w, meta, &self.records, &self.roots, self.generation)?;
        if !self.errors.is_empty() {
            let mut t = w.open_table(INTEGRITY_ERRORS)?;
            for (k, n) in &self.errors {
                let old = t.get(k.as_str())?.map(|v| v.value()).unwrap_or(0);
                t.insert(k.as_str(), old + n)?;
            }
        }
        Ok(())
    }
}

/// An authenticated volume's committed state: its records by slot, leaves by chunk, root.
pub type OwnerState = (HashMap<SlotNo, SlotRecord>, HashMap<u64, [u8; 32]>, Root);

/// How attach treats a pool older than the volume's anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollback {
    Refuse,
    /// Attach anyway and move the anchor to the pool's state (`--accept-rollback`).
    Accept,
    /// Neither refuse nor move the anchor (`volume verify` reports it instead).
    Report,
}

impl Pool {
    /// Takes the gate shared: held by a write of an authenticated volume from choosing its
    /// slot to recording its tag (see the module doc).
    pub fn write_gate(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits, if a commit has taken its changes and is not done with them, until it is
    /// (durable or failed); true if it waited. Why: until that commit is durable the blocks
    /// it moved have no free half, and a write to one copies its whole chunk into a fresh
    /// slot, which then costs an allocation, a map change and a freed slot to punch. A
    /// sequential writer met this for every chunk it wrote in that window (some 130 copies
    /// per commit at 2.5 GB/s). Waiting is safe with the gate held shared: the commit
    /// needs neither the gate nor any stripe after its take, and the next commit cannot
    /// take before this one ends (the commit lock).
    pub(crate) fn wait_for_commit_in_flight(&self) -> bool {
        let mut f = lock(&self.in_flight);
        // A write from inside the commit itself (a hook of the tests; nothing in the daemon
        // writes while it commits) would wait for itself: it copies.
        if f.taken.is_none_or(|t| t == std::thread::current().id()) {
            return false;
        }
        let seen = f.ended;
        f.waits += 1;
        while f.ended == seen {
            f = self
                .in_flight_ended
                .wait(f)
                .unwrap_or_else(|p| p.into_inner());
        }
        true
    }

    /// How many writes began waiting for a commit in flight, ever.
    #[cfg(test)]
    pub(crate) fn commit_waits(&self) -> u64 {
        lock(&self.in_flight).waits
    }

    /// A commit that took its changes has ended (however it ended).
    pub(super) fn end_in_flight(&self) {
        let mut f = lock(&self.in_flight);
        if f.taken.is_some() {
            f.taken = None;
            f.ended += 1;
            self.in_flight_ended.notify_all();
        }
    }

    /// The current epoch: a slot mapped in it has not been seen by any commit.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The newest epoch whose writes a commit has made durable (0: none yet).
    pub fn durable_epoch(&self) -> u64 {
        self.durable_epoch.load(Ordering::Acquire)
    }

    /// A fresh write generation (never 0).
    pub fn next_generation(&self) -> u64 {
        self.next_generations(1)
    }

    /// `n` fresh write generations in one step: the first of them (the others follow it).
    pub fn next_generations(&self, n: u64) -> u64 {
        self.next_gen.fetch_add(n, Ordering::AcqRel) + 1
    }

    /// Records that `record`, the record of a slot written since the last commit, must be
    /// committed with the maps (its current content is encoded when the commit takes it).
    pub fn record_dirty(&self, shift: u8, slot: SlotNo, record: &Arc<Mutex<SlotRecord>>) {
        lock(&self.state)
            .live_auth
            .insert((shift, slot.0), record.clone());
    }

    /// Records that the record of `slot`, which `owner` maps at `chunk`, changed without a
    /// map change (a write into the slot's other half): the commit takes it, and `owner`'s
    /// root gets the chunk's new leaf.
    pub fn record_moved(
        &self,
        owner: &str,
        chunk: u64,
        shift: u8,
        slot: SlotNo,
        record: &Arc<Mutex<SlotRecord>>,
    ) {
        let mut st = lock(&self.state);
        st.live_auth.insert((shift, slot.0), record.clone());
        st.dirty
            .auth
            .relinked
            .insert((owner.to_string(), chunk), slot.0);
    }

    /// Counts a block of `owner` that failed its check.
    pub fn count_bad_block(&self, owner: &str) {
        *lock(&self.state)
            .dirty
            .auth
            .errors
            .entry(owner.to_string())
            .or_insert(0) += 1;
    }

    /// Blocks of `owner` that failed their check, committed or not.
    pub fn integrity_errors(&self, owner: &str) -> Result<u64> {
        let pending = lock(&self.state)
            .dirty
            .auth
            .errors
            .get(owner)
            .copied()
            .unwrap_or(0);
        let r = self.db()?.begin_read()?;
        let committed = match read_table(&r, INTEGRITY_ERRORS)? {
            Some(t) => t.get(owner)?.map(|v| v.value()).unwrap_or(0),
            None => 0,
        };
        Ok(committed + pending)
    }

    /// The record of a slot: the one a commit took but has not made durable yet (a failed
    /// or doubtful commit's), else the committed one. A record not durable yet comes with
    /// all its blocks placed in the last closed epoch: until a commit succeeds, either of
    /// a block's halves may be the one the metadata names, so none may be written.
    pub fn load_slot_record(&self, shift: u8, slot: SlotNo) -> Result<Option<SlotRecord>> {
        let blocks = 1usize << (shift - 12);
        {
            let st = lock(&self.state);
            let pending = st.dirty.auth.records.get(&(shift, slot.0)).or_else(|| {
                st.in_doubt
                    .as_ref()
                    .and_then(|d| d.dirty.auth.records.get(&(shift, slot.0)))
            });
            if let Some(b) = pending {
                let mut rec = SlotRecord::decode(b, blocks)?;
                rec.moves.mark(self.epoch() - 1, 0, blocks, blocks);
                return Ok(Some(rec));
            }
            if let Some(b) = st.journaled.records.get(&(shift, slot.0)) {
                return SlotRecord::decode(b, blocks).map(Some);
            }
        }
        self.load_committed_record(shift, slot)
    }

    /// The record of a slot in the metadata database (callable under the state lock; the
    /// caller looks in the journal's overlay first, `PoolState::journaled`).
    fn load_committed_record(&self, shift: u8, slot: SlotNo) -> Result<Option<SlotRecord>> {
        let r = self.db()?.begin_read()?;
        let Some(t) = read_table(&r, SLOT_AUTH)? else {
            return Ok(None);
        };
        t.get((shift, slot.0))?
            .map(|v| SlotRecord::decode(v.value(), 1 << (shift - 12)))
            .transpose()
    }

    /// The record of every chunk `owner` maps, encoded (a copy of an authenticated
    /// snapshot reads its source's tags with it). A mapped slot without one is tampering.
    pub fn load_records(&self, owner: &str, shift: u8) -> Result<Vec<(u64, Vec<u8>)>> {
        let r = self.db()?.begin_read()?;
        Ok(mapped_records(&r, owner, shift)?
            .into_iter()
            .map(|(chunk, _, bytes)| (chunk, bytes))
            .collect())
    }

    /// Opens an authenticated volume's records: reads its map and every record it points
    /// at, checks them against the stored root and the root against the anchor, and
    /// registers the volume so that every commit keeps its root and anchor. Returns the
    /// records by slot, and the token that [`Pool::close_integrity`] takes.
    pub fn open_integrity(
        &self,
        owner: &str,
        shift: u8,
        keys: Arc<IntegrityKeys>,
        rollback: Rollback,
    ) -> Result<(HashMap<SlotNo, SlotRecord>, u64)> {
        let anchor = self.anchor(owner);
        let (records, leaves, root) = self.read_root(owner, shift, &keys)?;
        let mut reanchor = true;
        if let Some(a) = &anchor
            && let Some(anchored) = a.load(&keys)?
        {
            let problem = if anchored.generation > root.generation {
                Some("the pool is older")
            } else if anchored.generation == root.generation && anchored.acc != root.acc {
                Some("the same generation holds other data")
            } else {
                None
            };
            match (problem, rollback) {
                (Some(detail), Rollback::Refuse) => {
                    return Err(VolumeError::RolledBack {
                        volume: owner.to_string(),
                        pool_generation: root.generation,
                        anchor_generation: anchored.generation,
                        detail,
                    });
                }
                (Some(detail), Rollback::Accept) => tracing::warn!(
                    "volume {owner}: accepting a pool rolled back from generation {} to {} ({detail})",
                    anchored.generation,
                    root.generation
                ),
                (Some(_), Rollback::Report) => reanchor = false,
                (None, _) => reanchor = anchored != root,
            }
        }
        // `volume verify` only looks.
        if rollback == Rollback::Report {
            reanchor = false;
        }
        if reanchor && let Some(a) = &anchor {
            a.store(&keys, &root)?;
        }
        // Any number no other open has: one from the generation counter will do.
        let token = self.next_generation();
        lock(&self.state).owners.insert(
            owner.to_string(),
            OwnerRoot {
                shift,
                keys,
                leaves,
                root,
                anchor,
                token,
            },
        );
        Ok((records, token))
    }

    /// Reads `owner`'s map, the records it points at and its stored root, and checks that
    /// they agree (`Tampered` if not). Commits what is pending first.
    pub fn read_root(&self, owner: &str, shift: u8, keys: &IntegrityKeys) -> Result<OwnerState> {
        // Anything pending of this owner is committed first: the root read below is then
        // the root of everything it maps. (Outside the commit lock: reading every record
        // of a large volume must not hold off the pool's other commits. The owner is not
        // open, so no journaled commit of its records can come in between.)
        self.commit()?;
        self.read_root_uncommitted(owner, shift, keys)
    }

    /// [`Pool::read_root`] without the commit first.
    fn read_root_uncommitted(
        &self,
        owner: &str,
        shift: u8,
        keys: &IntegrityKeys,
    ) -> Result<OwnerState> {
        let blocks = 1usize << (shift - 12);
        let r = self.db()?.begin_read()?;
        let stored = match read_table(&r, ROOTS)? {
            Some(t) => t.get(owner)?.map(|v| v.value().to_vec()),
            None => None,
        };
        let mut records = HashMap::new();
        let mut leaves = HashMap::new();
        let mut acc = Root::default();
        for (chunk, slot, bytes) in mapped_records(&r, owner, shift)? {
            let leaf = keys.leaf(chunk, &bytes);
            acc.xor_leaf(&leaf);
            leaves.insert(chunk, leaf);
            let rec = SlotRecord::decode(&bytes, blocks).map_err(|e| VolumeError::Tampered {
                volume: owner.to_string(),
                detail: format!("the record of chunk {chunk} (slot {slot}): {e}"),
            })?;
            records.insert(SlotNo(slot), rec);
        }
        // Chunks still in the object store count with the record their row carries (the
        // same leaf once fetched).
        for (chunk, record) in super::remote::remote_records(&r, owner)? {
            let bytes = record.ok_or_else(|| VolumeError::Tampered {
                volume: owner.to_string(),
                detail: format!("its remote chunk {chunk} has no integrity record"),
            })?;
            let leaf = keys.leaf(chunk, &bytes);
            acc.xor_leaf(&leaf);
            leaves.insert(chunk, leaf);
        }
        let root = match stored {
            Some(b) => Root::decode(&b, keys, owner)?,
            None if leaves.is_empty() => Root::default(),
            None => {
                return Err(VolumeError::Tampered {
                    volume: owner.to_string(),
                    detail: "it has data but no root in the pool metadata".into(),
                });
            }
        };
        if root.acc != acc.acc {
            return Err(VolumeError::Tampered {
                volume: owner.to_string(),
                detail: "its map and block tags do not match its root".into(),
            });
        }
        Ok((records, leaves, root))
    }

    /// `volume verify`'s check of the root: the map and tags against the stored root
    /// (`Tampered` if not), then the root against the anchor, both read under the commit
    /// lock, so that a commit running meanwhile (whose anchor follows its transaction)
    /// cannot pair an older root with a newer anchor. Returns the rollback found, if any.
    pub fn check_root(
        &self,
        owner: &str,
        shift: u8,
        keys: &IntegrityKeys,
    ) -> Result<Option<String>> {
        // One hold of the lock from the fold to the read: a journaled commit in between
        // would leave the newest root in the journal and its anchor ahead of the metadata.
        let _c = lock(&self.commit_lock);
        self.commit_locked(false)?;
        #[cfg(test)]
        self.in_test_window();
        let (_, _, root) = self.read_root_uncommitted(owner, shift, keys)?;
        self.rollback_problem(owner, keys, &root)
    }

    /// Whether `owner`'s pool state is older than its anchor: the problem, if any.
    fn rollback_problem(
        &self,
        owner: &str,
        keys: &IntegrityKeys,
        root: &Root,
    ) -> Result<Option<String>> {
        let Some(a) = self.anchor(owner) else {
            return Ok(None);
        };
        Ok(match a.load(keys)? {
            Some(x) if x.generation > root.generation => Some(format!(
                "rolled back: the pool is at generation {}, its anchor at {}",
                root.generation, x.generation
            )),
            Some(x) if x.generation == root.generation && x.acc != root.acc => Some(format!(
                "rolled back: generation {} holds other data than its anchor",
                root.generation
            )),
            _ => None,
        })
    }

    /// The anchor of a volume, if this pool keeps anchors.
    pub fn anchor(&self, owner: &str) -> Option<Anchor> {
        self.anchors.as_ref().map(|d| Anchor::new(d, owner))
    }

    /// Stops keeping `owner`'s root (its volume was closed, after its last commit), if the
    /// open that registered it is `token`'s: a volume closed late (its last reference
    /// dropped after it was attached again) never unregisters the newer open.
    pub fn close_integrity(&self, owner: &str, token: u64) {
        let mut st = lock(&self.state);
        if st.owners.get(owner).is_some_and(|o| o.token == token) {
            st.owners.remove(owner);
        }
    }

    /// Takes the pending changes for a commit: under the gate, so no write of an
    /// authenticated volume is half recorded; encodes the records written since the last
    /// commit, updates the roots of the open volumes whose maps changed, and starts the
    /// next epoch.
    pub(super) fn take_dirty(&self) -> super::alloc::Dirty {
        let _gate = self.gate.write().unwrap_or_else(|p| p.into_inner());
        // Under the gate: a write that finds its block moved by this take sees it taken.
        lock(&self.in_flight).taken = Some(std::thread::current().id());
        let mut st = lock(&self.state);
        // Disjoint borrows of its fields below.
        let st = &mut *st;
        let mut d = std::mem::take(&mut st.dirty);
        let live: Vec<_> = st.live_auth.drain().collect();
        for (k, rec) in live {
            d.auth
                .records
                .insert(k, rec.lock().unwrap_or_else(|p| p.into_inner()).encode());
        }
        if !st.owners.is_empty() {
            let mut touched: Vec<String> = vec![];
            // Chunks whose leaf changes: remapped ones, and ones whose record changed in
            // place (a write into a slot's other half).
            let relinked = d
                .auth
                .relinked
                .iter()
                .filter(|(k, _)| !d.maps.contains_key(*k))
                .map(|(k, s)| (k, Some(*s)));
            let changes: Vec<_> = d
                .maps
                .iter()
                .map(|(k, s)| (k, *s))
                .chain(relinked)
                .collect();
            for ((owner, chunk), slot) in changes {
                let Some(o) = st.owners.get_mut(owner) else {
                    continue;
                };
                if let Some(old) = o.leaves.remove(chunk) {
                    o.root.xor_leaf(&old);
                }
                if let Some(s) = slot {
                    let bytes = match d
                        .auth
                        .records
                        .get(&(o.shift, s))
                        .or_else(|| st.journaled.records.get(&(o.shift, s)))
                    {
                        Some(b) => Some(b.clone()),
                        None => self
                            .load_committed_record(o.shift, SlotNo(s))
                            .ok()
                            .flatten()
                            .map(|r| r.encode()),
                    };
                    if let Some(b) = bytes {
                        let leaf = o.keys.leaf(*chunk, &b);
                        o.root.xor_leaf(&leaf);
                        o.leaves.insert(*chunk, leaf);
                    }
                }
                if !touched.contains(owner) {
                    touched.push(owner.clone());
                }
            }
            for owner in touched {
                let o = st.owners.get_mut(&owner).expect("touched owners are open");
                o.root.generation += 1;
                let row = o.root.encode(&o.keys);
                let anchor = o.anchor.clone().map(|a| (a, o.keys.clone(), o.root));
                d.auth.roots.insert(owner, row);
                d.auth.anchors.extend(anchor);
            }
        }
        if !d.auth.records.is_empty() || !d.auth.roots.is_empty() {
            d.auth.generation = Some(self.next_gen.load(Ordering::Acquire));
        }
        d.closed_epoch = self.epoch.fetch_add(1, Ordering::AcqRel);
        d
    }

    /// After a durable commit: anchors the roots it wrote. A failure only lets the anchor
    /// lag (rollback to the commit before is then not detected); it is logged.
    pub(super) fn write_anchors(&self, anchors: &[(Anchor, Arc<IntegrityKeys>, Root)]) {
        for (a, keys, root) in anchors {
            if let Err(e) = a.store(keys, root) {
                tracing::warn!("cannot anchor generation {}: {e}", root.generation);
            }
        }
    }

    /// The write generation to start from: the highest one committed.
    pub(super) fn load_generation(&self) -> Result<()> {
        let r = self.db()?.begin_read()?;
        let g = r
            .open_table(META)?
            .get(BLOCK_GENERATION)?
            .map(|v| v.value())
            .unwrap_or(0);
        self.next_gen.store(g, Ordering::Release);
        Ok(())
    }
}

/// Writes slot records and roots into a transaction (replacing what the rows held) and
/// raises the stored write generation to `generation`: what a commit, a fold of the tag
/// journal and its replay write alike.
pub(super) fn write_auth_rows(
    w: &redb::WriteTransaction,
    meta: &mut redb::Table<&str, u64>,
    records: &HashMap<(u8, u64), Vec<u8>>,
    roots: &HashMap<String, Vec<u8>>,
    generation: Option<u64>,
) -> Result<()> {
    if let Some(g) = generation {
        let old = meta.get(BLOCK_GENERATION)?.map(|v| v.value()).unwrap_or(0);
        meta.insert(BLOCK_GENERATION, g.max(old))?;
    }
    if !records.is_empty() {
        let mut t = w.open_table(SLOT_AUTH)?;
        for (k, v) in records {
            t.insert(*k, v.as_slice())?;
        }
    }
    if !roots.is_empty() {
        let mut t = w.open_table(ROOTS)?;
        for (k, v) in roots {
            t.insert(k.as_str(), v.as_slice())?;
        }
    }
    Ok(())
}

/// Every (chunk, slot, record) `owner` maps, in chunk order; a mapped slot without a record
/// is tampering.
fn mapped_records(
    r: &redb::ReadTransaction,
    owner: &str,
    shift: u8,
) -> Result<Vec<(u64, u64, Vec<u8>)>> {
    let maps = r.open_table(MAPS)?;
    let auth = read_table(r, SLOT_AUTH)?;
    let mut out = vec![];
    for item in maps.range((owner, 0)..=(owner, u64::MAX))? {
        let (k, v) = item?;
        let (chunk, slot) = (k.value().1, v.value());
        let bytes = auth
            .as_ref()
            .map(|t| t.get((shift, slot)))
            .transpose()?
            .flatten()
            .ok_or_else(|| VolumeError::Tampered {
                volume: owner.to_string(),
                detail: format!("chunk {chunk} has no integrity record"),
            })?;
        out.push((chunk, slot, bytes.value().to_vec()));
    }
    Ok(out)
}

/// Copies `from`'s root row to `to` (a snapshot of an authenticated volume, or a volume
/// restored from one: same map, same records, same root).
pub(super) fn clone_root(w: &redb::WriteTransaction, from: &str, to: &str) -> Result<()> {
    let mut t = w.open_table(ROOTS)?;
    let row = t.get(from)?.map(|v| v.value().to_vec());
    if let Some(row) = row {
        t.insert(to, row.as_slice())?;
    }
    Ok(())
}

/// Writes the first root of `owner` (a finished copy of an authenticated snapshot) from its
/// map and records, in the transaction that makes it visible.
pub(super) fn seal_root(
    w: &redb::WriteTransaction,
    owner: &str,
    shift: u8,
    keys: &IntegrityKeys,
) -> Result<()> {
    let mut root = Root {
        generation: 1,
        acc: [0; 32],
    };
    {
        let maps = w.open_table(MAPS)?;
        let auth = w.open_table(SLOT_AUTH)?;
        for item in maps.range((owner, 0)..=(owner, u64::MAX))? {
            let (k, v) = item?;
            let chunk = k.value().1;
            let rec = auth
                .get((shift, v.value()))?
                .ok_or_else(|| VolumeError::Corrupt {
                    what: format!("the copy into {owner}"),
                    detail: format!("chunk {chunk} was copied without its block tags"),
                })?;
            root.xor_leaf(&keys.leaf(chunk, rec.value()));
        }
    }
    w.open_table(ROOTS)?
        .insert(owner, root.encode(keys).as_slice())?;
    Ok(())
}

/// Forgets `owner`'s root and error count (it was deleted).
pub(super) fn drop_root(w: &redb::WriteTransaction, owner: &str) -> Result<()> {
    w.open_table(ROOTS)?.remove(owner)?;
    w.open_table(INTEGRITY_ERRORS)?.remove(owner)?;
    Ok(())
}

/// Forgets the record of a slot that a commit freed.
pub(super) fn drop_record(w: &redb::WriteTransaction, shift: u8, slot: u64) -> Result<()> {
    w.open_table(SLOT_AUTH)?.remove((shift, slot))?;
    Ok(())
}
