//! The tables of authenticated volumes (`volume::integrity`, `pool::auth`): slot records,
//! roots and error counts, judged against the maps.
//!
//! - A `slot_auth` row belongs to a slot that a map row points at: the commit that frees a
//!   slot removes its record. A record of a slot nothing maps (free, past the high-water
//!   mark, uncounted, or counted by a leak) is an orphan: repair removes it, and the record
//!   of every slot it frees.
//! - Every slot an authenticated owner maps has a record that decodes. One missing or
//!   damaged is only reported: the tags vouch for the data, and tags recomputed from what
//!   the slot holds now would vouch for whatever is there.
//! - Every `roots` and `integrity_errors` row names an existing owner (repair removes the
//!   others).
//! - A `slot_domain` row (`pool::domains`, plain slots of restored volumes) belongs to a
//!   slot a map row points at, like a record; repair removes the others.
//!
//! Which owners are authenticated: a volume whose header says so; a snapshot or a copy in
//! progress when [`OwnerRecords`] says so or, when it cannot tell, when it has a `roots`
//! row (only authenticated owners get one: their commits write it, a snapshot or restore
//! copies it). Slots of plain owners may have records (a slot shared with an authenticated
//! lineage): that direction is not judged.

use std::collections::{BTreeMap, BTreeSet};

use redb::WriteTransaction;

use super::OwnerRecords;
use super::report::*;
use super::scan::{Analysis, Geometry, Model};
use crate::volume::error::{Result, VolumeError};
use crate::volume::header::{MAX_CHUNK_SHIFT, MIN_CHUNK_SHIFT, VolumeHeader};
use crate::volume::ids::format_size;
use crate::volume::integrity::SlotRecord;
use crate::volume::tables::{INTEGRITY_ERRORS, ROOTS, SLOT_AUTH, SLOT_DOMAIN};

/// Problems of one kind and owner listed one by one; past this many they are summed up in
/// one more (a lost table would otherwise print a line per chunk).
const LISTED: u64 = 32;

/// The rows of the authenticated volumes' tables, in memory.
#[derive(Debug, Default)]
pub(super) struct AuthRows {
    /// `slot_auth`: (chunk shift, slot) → the row decodes as a record of that chunk size
    /// (or why not). The records themselves are not kept: a pool holds many.
    pub(super) records: BTreeMap<(u8, u64), std::result::Result<(), String>>,
    /// Keys of `slot_domain` rows.
    pub(super) domains: BTreeSet<(u8, u64)>,
    /// Owners of `roots` rows.
    pub(super) roots: BTreeSet<String>,
    /// Owners of `integrity_errors` rows.
    pub(super) errors: BTreeSet<String>,
}

/// What repair removes from those tables.
#[derive(Debug, Default)]
pub(super) struct AuthDrops {
    pub(super) records: BTreeSet<(u8, u64)>,
    pub(super) domains: BTreeSet<(u8, u64)>,
    pub(super) roots: Vec<String>,
    pub(super) errors: Vec<String>,
}

/// Whether a `slot_auth` value decodes as the record of a slot of `1 << shift` bytes.
pub(super) fn decode_record(shift: u8, bytes: &[u8]) -> std::result::Result<(), String> {
    if !(MIN_CHUNK_SHIFT..=MAX_CHUNK_SHIFT).contains(&shift) {
        return Err(format!("its key's chunk shift {shift} is no chunk size"));
    }
    // The decoder's own advice (run `volume verify`) is left to the problem's fix.
    SlotRecord::decode(bytes, 1usize << (shift - 12))
        .map(|_| ())
        .map_err(|e| match e {
            VolumeError::Corrupt { detail, .. } => detail
                .split(": run `")
                .next()
                .unwrap_or_default()
                .to_string(),
            other => other.to_string(),
        })
}

/// Reads `slot_auth`, `roots` and `integrity_errors` into an [`AuthRows`], inside
/// `load_model!` (same `tx` and `has`; absent tables are empty).
macro_rules! load_auth {
    ($tx:expr, $has:expr) => {{
        use $crate::volume::tables::{INTEGRITY_ERRORS, ROOTS, SLOT_AUTH, SLOT_DOMAIN};
        let mut rows = $crate::volume::check::auth::AuthRows::default();
        if $has(SLOT_AUTH.name()) {
            for item in $tx.open_table(SLOT_AUTH)?.iter()? {
                let (k, v) = item?;
                let (shift, slot) = k.value();
                let decoded = $crate::volume::check::auth::decode_record(shift, v.value());
                rows.records.insert((shift, slot), decoded);
            }
        }
        if $has(SLOT_DOMAIN.name()) {
            for item in $tx.open_table(SLOT_DOMAIN)?.iter()? {
                rows.domains.insert(item?.0.value());
            }
        }
        if $has(ROOTS.name()) {
            for item in $tx.open_table(ROOTS)?.iter()? {
                rows.roots.insert(item?.0.value().to_string());
            }
        }
        if $has(INTEGRITY_ERRORS.name()) {
            for item in $tx.open_table(INTEGRITY_ERRORS)?.iter()? {
                rows.errors.insert(item?.0.value().to_string());
            }
        }
        rows
    }};
}

pub(super) use load_auth;

/// Owners whose mapped slots must all have a record. An id in several tables is judged
/// by its first one, as its geometry is (volumes, snapshots, pending).
fn authenticated<'m>(m: &'m Model, owners: &dyn OwnerRecords) -> BTreeSet<&'m str> {
    let mut seen = BTreeSet::new();
    let mut out = BTreeSet::new();
    for (id, bytes) in &m.volumes {
        if seen.insert(id.as_str()) && VolumeHeader::decode(bytes).is_ok_and(|h| h.integrity) {
            out.insert(id.as_str());
        }
    }
    let told = |id: &str, said: Option<bool>| said.unwrap_or_else(|| m.auth.roots.contains(id));
    for (id, bytes) in &m.snapshots {
        if seen.insert(id.as_str()) && told(id, owners.snapshot_authenticated(bytes)) {
            out.insert(id.as_str());
        }
    }
    for (id, bytes) in &m.pending {
        if seen.insert(id.as_str()) && told(id, owners.pending_authenticated(bytes)) {
            out.insert(id.as_str());
        }
    }
    out
}

/// Problems pushed one by one up to [`LISTED`] per (kind, object), then counted.
struct Capped<'a> {
    problems: &'a mut Vec<Problem>,
    seen: BTreeMap<(ProblemKind, Option<String>), u64>,
}

impl Capped<'_> {
    fn push(&mut self, p: Problem) {
        let n = self.seen.entry((p.kind, p.object.clone())).or_insert(0);
        *n += 1;
        if *n <= LISTED {
            self.problems.push(p);
        }
    }

    /// One more problem per (kind, object) that had more than were listed.
    fn finish(self) {
        for ((kind, object), n) in self.seen {
            if n > LISTED {
                let mut p = Problem::new(kind, format!("and {} more like the above", n - LISTED));
                p.object = object;
                self.problems.push(p);
            }
        }
    }
}

/// Judges the authenticated volumes' tables against the maps (`a.used`, `a.pinned` as
/// `scan::analyze` computed them) and the owners (`geometry`).
pub(super) fn analyze_auth(
    m: &Model,
    owners: &dyn OwnerRecords,
    geometry: &BTreeMap<&str, (Geometry, &'static str)>,
    a: &mut Analysis,
) {
    let mut out = Capped {
        problems: &mut a.report_problems,
        seen: BTreeMap::new(),
    };

    // Every slot an authenticated owner maps has a record that decodes.
    for id in authenticated(m, owners) {
        let (Some((Geometry::Known { shift, .. }, what)), Some(rows)) =
            (geometry.get(id), m.maps.get(id))
        else {
            continue;
        };
        let fix = if *what == "volume" {
            format!("run `cryptvol volume verify {id}`, or restore the volume from a snapshot")
        } else {
            "a volume restored from it will not attach: restore from another snapshot".to_string()
        };
        for &(chunk, slot) in rows {
            let (kind, why) = match m.auth.records.get(&(*shift, slot)) {
                Some(Ok(())) => continue,
                None => (
                    ProblemKind::MissingSlotRecord,
                    "the slot has no slot record".to_string(),
                ),
                Some(Err(e)) => (
                    ProblemKind::BadSlotRecord,
                    format!("its slot record does not decode ({e})"),
                ),
            };
            let mut p = Problem::new(
                kind,
                format!("{why}: the {what}'s blocks in it cannot be checked; {fix}"),
            )
            .object(id)
            .slot(*shift, slot);
            p.chunk = Some(chunk);
            out.push(p);
        }
    }

    // Every record is of a slot a map row points at. Slot numbers an owner with an
    // unreadable record uses are not judged (repair keeps those slots).
    for &(shift, slot) in m.auth.records.keys() {
        if a.used.contains_key(&(shift, slot)) || a.pinned.contains_key(&slot) {
            continue;
        }
        let hwm = m.hwm.get(&shift).copied().unwrap_or(0);
        let why = if slot >= hwm {
            format!("the slot is at or past the high-water mark {hwm}")
        } else if m.free.contains(&(shift, slot)) {
            "the slot is free".to_string()
        } else if let Some(n) = m.refs.get(&(shift, slot)) {
            format!("no map row points at the slot (its count {n} is leaked)")
        } else {
            "no map row points at the slot and it has no count".to_string()
        };
        out.push(
            Problem::new(
                ProblemKind::OrphanSlotRecord,
                format!("a slot record, but {why}: no block is checked against it"),
            )
            .slot(shift, slot),
        );
        a.auth_drops.records.insert((shift, slot));
    }
    // Likewise every tweak domain row (`pool::domains`).
    for &(shift, slot) in &m.auth.domains {
        if a.used.contains_key(&(shift, slot)) || a.pinned.contains_key(&slot) {
            continue;
        }
        out.push(
            Problem::new(
                ProblemKind::OrphanSlotDomain,
                "a tweak domain row, but no map row points at the slot",
            )
            .slot(shift, slot),
        );
        a.auth_drops.domains.insert((shift, slot));
    }

    // Roots and error counts of owners that exist.
    let tables = [
        (&m.auth.roots, ProblemKind::OrphanRoot, "an integrity root"),
        (
            &m.auth.errors,
            ProblemKind::OrphanIntegrityErrors,
            "a count of blocks that failed their check",
        ),
    ];
    for (ids, kind, row) in tables {
        for id in ids.iter().filter(|id| !geometry.contains_key(id.as_str())) {
            out.push(
                Problem::new(
                    kind,
                    format!("{row}, but no volume, snapshot or copy in progress has this id"),
                )
                .object(id),
            );
            if kind == ProblemKind::OrphanRoot {
                a.auth_drops.roots.push(id.clone());
            } else {
                a.auth_drops.errors.push(id.clone());
            }
        }
    }
    out.finish();
}

/// Removes, in `w`, the orphan rows the scan found and the record of every slot the repair
/// freed (`freed`), so no record outlives its slot.
pub(super) fn repair_auth(
    w: &WriteTransaction,
    m: &Model,
    a: &Analysis,
    freed: &[(u8, u64)],
    fixes: &mut Vec<Fix>,
) -> Result<()> {
    let mut records = a.auth_drops.records.clone();
    records.extend(freed.iter().filter(|k| m.auth.records.contains_key(k)));
    if !records.is_empty() {
        let mut t = w.open_table(SLOT_AUTH)?;
        let mut per_shift: BTreeMap<u8, u64> = BTreeMap::new();
        for &k in &records {
            t.remove(k)?;
            *per_shift.entry(k.0).or_insert(0) += 1;
        }
        for (shift, n) in per_shift {
            let mut f = Fix::new(
                FixAction::DroppedSlotRecords,
                format!(
                    "removed {} of {} slots that no map row points at",
                    plural(n, "slot record", "slot records"),
                    format_size(chunk_bytes(shift))
                ),
            );
            f.chunk_size = Some(chunk_bytes(shift));
            fixes.push(f);
        }
    }
    let mut domains = a.auth_drops.domains.clone();
    domains.extend(freed.iter().filter(|k| m.auth.domains.contains(k)));
    if !domains.is_empty() {
        let mut t = w.open_table(SLOT_DOMAIN)?;
        for &k in &domains {
            t.remove(k)?;
        }
        fixes.push(Fix::new(
            FixAction::DroppedSlotDomains,
            format!(
                "removed {} of slots that no map row points at",
                plural(
                    domains.len() as u64,
                    "tweak domain row",
                    "tweak domain rows"
                )
            ),
        ));
    }
    if !a.auth_drops.roots.is_empty() {
        let mut t = w.open_table(ROOTS)?;
        for id in &a.auth_drops.roots {
            t.remove(id.as_str())?;
            let mut f = Fix::new(FixAction::DroppedRoot, "removed its integrity root");
            f.object = Some(id.clone());
            fixes.push(f);
        }
    }
    if !a.auth_drops.errors.is_empty() {
        let mut t = w.open_table(INTEGRITY_ERRORS)?;
        for id in &a.auth_drops.errors {
            t.remove(id.as_str())?;
            let mut f = Fix::new(
                FixAction::DroppedIntegrityErrors,
                "removed its count of blocks that failed their check",
            );
            f.object = Some(id.clone());
            fixes.push(f);
        }
    }
    Ok(())
}
