//! `cryptvol pool check [--repair]`: the pool metadata's consistency checker, as
//! thin_check / thin_repair and e2fsck are for theirs. Pure functions over redb
//! transactions, so whoever owns the pool (the CLI offline, later the region daemon) can run
//! them: [`check`] reads, [`repair`] rewrites what the maps imply.
//!
//! The maps are the ground truth: a map row is data someone wrote, a reference count or a
//! free row is bookkeeping derived from them. So the checker recomputes the bookkeeping
//! from the maps and compares (the invariants are listed in `tables.rs` and in
//! docs/formats.md, "Thin pool"), and repair writes the recomputed bookkeeping back. Repair
//! never frees a slot that a map row points at; it drops only map rows that no volume,
//! snapshot or copy in progress owns (whose data no key can read any more).
//!
//! Owners whose record does not decode (a damaged volume header, snapshot record or
//! pending copy) have an unknown chunk size, so their slots cannot be placed in a data
//! file. They are reported (not repairable here), and their slot numbers are protected
//! in every chunk size: never freed, counts never lowered (see [`repair`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableHandle, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::{Result, VolumeError};
use super::header::VolumeHeader;
use super::ids::{SlotNo, format_size};
use super::pool::Pool;
use super::tables::{
    FREE, LEASES, MAPS, META, META_FORMAT, PENDING, POOL_FORMAT_V1, REFS, SNAPSHOTS, VOLUMES,
    hwm_key,
};

/// Decodes the records the volume layer does not own (their formats belong to the
/// snapshot layer, which implements this: `snapshot::SnapshotOwners`).
pub trait OwnerRecords {
    /// (chunk shift, size in bytes) of a `snapshots` row.
    fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)>;
    /// (chunk shift, size in bytes) of the object a `pending` row will become.
    fn pending(&self, record: &[u8]) -> Result<(u8, u64)>;
    /// True if a lease holder (`<region>/<copy id>`) names a copy into this same pool:
    /// such a lease is stale once that copy is no longer in progress here (copies record
    /// themselves as pending before they lease their source, and release it when they
    /// finish). Holders in other regions cannot be judged from this pool.
    fn local_holder(&self, _holder: &str) -> bool {
        false
    }
}

/// What is wrong. Serialized (and displayed) as a stable kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// The `meta` format marker is a version this cryptvol does not know.
    UnknownFormat,
    /// The `meta` table has no format marker.
    MissingFormat,
    /// A `volumes` row does not decode, or holds another volume's header.
    BadVolumeHeader,
    /// A `snapshots` row does not decode.
    BadSnapshotRecord,
    /// A `pending` row does not decode.
    BadPendingRecord,
    /// `maps` rows whose owner has no volume, snapshot or pending record.
    OrphanMap,
    /// A `maps` row whose chunk lies past the end of its owner.
    ChunkOutOfRange,
    /// A slot's count is higher than the number of map rows pointing at it: it is never
    /// freed (harmless but wasted space).
    LeakedReference,
    /// A slot's count is lower than the number of map rows pointing at it: a write would
    /// change another map's data in place, and deleting one owner frees the others' data.
    MissingReference,
    /// A slot is referenced and also in `free`: the allocator would hand it out again.
    DoubleOwner,
    /// Slots below the high-water mark that are neither referenced nor free.
    LeakedSlot,
    /// A slot at or past the high-water mark is referenced, counted or free: the allocator
    /// would hand it out again as fresh.
    PastHighWater,
    /// A `leases` row names a snapshot that does not exist.
    StaleLease,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::UnknownFormat => "unknown-format",
            ProblemKind::MissingFormat => "missing-format",
            ProblemKind::BadVolumeHeader => "bad-volume-header",
            ProblemKind::BadSnapshotRecord => "bad-snapshot-record",
            ProblemKind::BadPendingRecord => "bad-pending-record",
            ProblemKind::OrphanMap => "orphan-map",
            ProblemKind::ChunkOutOfRange => "chunk-out-of-range",
            ProblemKind::LeakedReference => "leaked-reference",
            ProblemKind::MissingReference => "missing-reference",
            ProblemKind::DoubleOwner => "double-owner",
            ProblemKind::LeakedSlot => "leaked-slot",
            ProblemKind::PastHighWater => "past-high-water",
            ProblemKind::StaleLease => "stale-lease",
        }
    }

    /// True if [`repair`] fixes this kind.
    pub fn repairable(self) -> bool {
        !matches!(
            self,
            ProblemKind::UnknownFormat
                | ProblemKind::BadVolumeHeader
                | ProblemKind::BadSnapshotRecord
                | ProblemKind::BadPendingRecord
                | ProblemKind::ChunkOutOfRange
        )
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One finding: what, where (an object, a chunk of it, a slot or a range of slots of one
/// chunk size), and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Problem {
    pub kind: ProblemKind,
    /// The volume, snapshot or copy in progress concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The chunk index of a map row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// The chunk size (bytes) of the data file the slot is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    /// Last slot of a range starting at `slot` (leaked slots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<u64>,
    pub repairable: bool,
    pub detail: String,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
        Problem {
            kind,
            object: None,
            chunk: None,
            chunk_size: None,
            slot: None,
            last_slot: None,
            repairable: kind.repairable(),
            detail: detail.into(),
        }
    }

    fn object(mut self, o: &str) -> Problem {
        self.object = Some(o.to_string());
        self
    }

    fn slot(mut self, shift: u8, slot: u64) -> Problem {
        self.chunk_size = Some(chunk_bytes(shift));
        self.slot = Some(slot);
        self
    }
}

/// Where a finding is, for people: `vol-… chunk 5, slot 7 of the 1.0 MiB chunks`.
fn place(
    f: &mut fmt::Formatter<'_>,
    object: &Option<String>,
    chunk: Option<u64>,
    chunk_size: Option<u64>,
    slot: Option<u64>,
    last_slot: Option<u64>,
) -> fmt::Result {
    let mut sep = "";
    if let Some(o) = object {
        write!(f, "{o}")?;
        sep = " ";
    }
    if let Some(c) = chunk {
        write!(f, "{sep}chunk {c}")?;
        sep = ", ";
    }
    if let Some(s) = slot {
        match last_slot {
            Some(l) => write!(f, "{sep}slots {s}..={l}")?,
            None => write!(f, "{sep}slot {s}")?,
        }
        if let Some(cs) = chunk_size {
            write!(f, " of the {} chunks", format_size(cs))?;
        }
    }
    Ok(())
}

impl fmt::Display for Problem {
    /// One line: `kind: where: detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind)?;
        if self.object.is_some() || self.slot.is_some() || self.chunk.is_some() {
            place(
                f,
                &self.object,
                self.chunk,
                self.chunk_size,
                self.slot,
                self.last_slot,
            )?;
            write!(f, ": ")?;
        }
        f.write_str(&self.detail)
    }
}

/// The slots of one chunk size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChunkSizeCounts {
    pub chunk_size: u64,
    /// First slot never handed out (`meta` "hwm/<shift>"; 0 if absent).
    pub high_water_mark: u64,
    /// Map rows of owners of this chunk size.
    pub map_rows: u64,
    /// Distinct slots those rows point at.
    pub slots_in_use: u64,
    /// `free` rows.
    pub free_slots: u64,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckReport {
    /// True when there is no problem.
    pub clean: bool,
    /// The pool format marker, if any.
    pub format: Option<u64>,
    pub volumes: u64,
    pub snapshots: u64,
    pub pending_copies: u64,
    pub leases: u64,
    pub chunk_sizes: Vec<ChunkSizeCounts>,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// How many problems [`repair`] would fix.
    pub fn repairable(&self) -> usize {
        self.problems.iter().filter(|p| p.repairable).count()
    }
}

/// Bytes of a chunk of `shift` (0 for a shift no chunk can have: damaged rows must not
/// make the checker overflow).
fn chunk_bytes(shift: u8) -> u64 {
    1u64.checked_shl(shift.into()).unwrap_or(0)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for CheckReport {
    /// A summary line, then one line per problem.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool: {}, {}, {}",
            plural(self.volumes, "volume", "volumes"),
            plural(self.snapshots, "snapshot", "snapshots"),
            plural(
                self.pending_copies,
                "copy in progress",
                "copies in progress"
            ),
        )?;
        for c in &self.chunk_sizes {
            write!(
                f,
                "; {} chunks: {} in use, {} free, high-water mark {}",
                format_size(c.chunk_size),
                c.slots_in_use,
                c.free_slots,
                c.high_water_mark
            )?;
        }
        if self.is_clean() {
            write!(f, "; clean")?;
        } else {
            write!(
                f,
                "; {} ({} repairable)",
                plural(self.problems.len() as u64, "problem", "problems"),
                self.repairable()
            )?;
        }
        for p in &self.problems {
            write!(f, "\n{p}")?;
        }
        Ok(())
    }
}

/// What [`repair`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixAction {
    /// Wrote the missing pool format marker.
    WroteFormatMarker,
    /// Removed the map rows of an owner that does not exist.
    DroppedOrphanMap,
    /// Set a slot's count to the number of map rows pointing at it (0: row removed).
    SetRefcount,
    /// Kept the slots an owner with an unreadable record may use (count never lowered,
    /// not free).
    ProtectedSlot,
    /// Removed a `free` row of a referenced slot, or of one at or past the high-water mark.
    RemovedFree,
    /// Added unreferenced slots below the high-water mark to `free` (they are punched).
    FreedSlots,
    /// Raised the high-water mark past a referenced slot.
    RaisedHighWater,
    /// Removed a lease on a snapshot that does not exist.
    RemovedStaleLease,
}

impl fmt::Display for FixAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).expect("serialises");
        f.write_str(v.as_str().unwrap_or("?"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Fix {
    pub action: FixAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<u64>,
    pub detail: String,
}

impl Fix {
    /// The release of a stale lease on `snapshot` held by `holder`.
    pub fn removed_stale_lease(snapshot: &str, holder: &str) -> Fix {
        let mut f = Fix::new(FixAction::RemovedStaleLease, format!("held by {holder}"));
        f.object = Some(snapshot.to_string());
        f
    }

    fn new(action: FixAction, detail: impl Into<String>) -> Fix {
        Fix {
            action,
            object: None,
            chunk_size: None,
            slot: None,
            last_slot: None,
            detail: detail.into(),
        }
    }

    fn slot(mut self, shift: u8, slot: u64) -> Fix {
        self.chunk_size = Some(chunk_bytes(shift));
        self.slot = Some(slot);
        self
    }
}

impl fmt::Display for Fix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.action)?;
        if self.object.is_some() || self.slot.is_some() {
            place(
                f,
                &self.object,
                None,
                self.chunk_size,
                self.slot,
                self.last_slot,
            )?;
            write!(f, ": ")?;
        }
        f.write_str(&self.detail)
    }
}

/// What [`repair`] found, did and left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RepairReport {
    /// The check before repairing.
    pub before: CheckReport,
    pub fixes: Vec<Fix>,
    /// Number of slots that became free (see `freed`).
    pub freed_slots: u64,
    /// Problems repair leaves alone, each with the reason in its detail.
    pub not_repaired: Vec<Problem>,
    /// The check of the repaired metadata (in the same transaction: what a commit makes
    /// durable).
    pub after: CheckReport,
    /// (chunk shift, slot) of every slot that became free: the caller punches them so
    /// they read as zeros, as any freed slot.
    #[serde(skip)]
    pub freed: Vec<(u8, u64)>,
}

impl fmt::Display for RepairReport {
    /// One line per fix, then the state after repair.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.fixes {
            writeln!(f, "fixed: {x}")?;
        }
        for p in &self.not_repaired {
            writeln!(f, "not repaired: {p}")?;
        }
        write!(f, "{}", self.after)
    }
}

// ---- reading the tables ---------------------------------------------------------------------

/// Every table of the pool, in memory.
#[derive(Debug, Default)]
struct Model {
    format: Option<u64>,
    hwm: BTreeMap<u8, u64>,
    volumes: Vec<(String, Vec<u8>)>,
    snapshots: Vec<(String, Vec<u8>)>,
    pending: Vec<(String, Vec<u8>)>,
    maps: BTreeMap<String, Vec<(u64, u64)>>,
    refs: BTreeMap<(u8, u64), u32>,
    free: BTreeSet<(u8, u64)>,
    leases: Vec<(String, String)>,
}

/// Loads a `Model` from a read or a write transaction (both have `list_tables` and
/// `open_table`, but share no trait). Absent tables are empty; a write transaction is
/// never made to create one.
macro_rules! load_model {
    ($tx:expr) => {{
        let tx = $tx;
        let names: BTreeSet<String> = tx.list_tables()?.map(|h| h.name().to_string()).collect();
        let has = |n: &str| names.contains(n);
        let mut m = Model::default();
        if has(META.name()) {
            let t = tx.open_table(META)?;
            for item in t.iter()? {
                let (k, v) = item?;
                let (k, v) = (k.value(), v.value());
                if k == META_FORMAT {
                    m.format = Some(v);
                } else if let Some(shift) = k.strip_prefix("hwm/").and_then(|s| s.parse().ok()) {
                    m.hwm.insert(shift, v);
                }
            }
        }
        if has(VOLUMES.name()) {
            for item in tx.open_table(VOLUMES)?.iter()? {
                let (k, v) = item?;
                m.volumes.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        if has(SNAPSHOTS.name()) {
            for item in tx.open_table(SNAPSHOTS)?.iter()? {
                let (k, v) = item?;
                m.snapshots
                    .push((k.value().to_string(), v.value().to_vec()));
            }
        }
        if has(PENDING.name()) {
            for item in tx.open_table(PENDING)?.iter()? {
                let (k, v) = item?;
                m.pending.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        if has(MAPS.name()) {
            for item in tx.open_table(MAPS)?.iter()? {
                let (k, v) = item?;
                let (owner, chunk) = k.value();
                match m.maps.get_mut(owner) {
                    Some(rows) => rows.push((chunk, v.value())),
                    None => {
                        m.maps.insert(owner.to_string(), vec![(chunk, v.value())]);
                    }
                }
            }
        }
        if has(REFS.name()) {
            for item in tx.open_table(REFS)?.iter()? {
                let (k, v) = item?;
                m.refs.insert(k.value(), v.value());
            }
        }
        if has(FREE.name()) {
            for item in tx.open_table(FREE)?.iter()? {
                m.free.insert(item?.0.value());
            }
        }
        if has(LEASES.name()) {
            for item in tx.open_table(LEASES)?.iter()? {
                let (k, _) = item?;
                let (snap, holder) = k.value();
                m.leases.push((snap.to_string(), holder.to_string()));
            }
        }
        Result::<Model>::Ok(m)
    }};
}

// ---- the analysis -----------------------------------------------------------------------

/// An owner's geometry: known from its record, or unknown (the record does not decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Geometry {
    Known { shift: u8, size: u64 },
    Unknown,
}

/// What the analysis derives from a `Model`.
#[derive(Debug, Default)]
struct Analysis {
    report_problems: Vec<Problem>,
    /// The format is unknown: nothing else was judged.
    unknown_format: bool,
    /// Owners with no record: their map rows.
    orphans: BTreeMap<String, usize>,
    /// (shift, slot) → map rows of owners with a known geometry pointing at it.
    used: BTreeMap<(u8, u64), u32>,
    /// Slot number → map rows of owners with an unknown geometry (any chunk size).
    pinned: BTreeMap<u64, u32>,
    /// Every chunk size the pool knows of.
    shifts: BTreeSet<u8>,
    counts: Vec<ChunkSizeCounts>,
}

fn analyze(m: &Model, owners: &dyn OwnerRecords) -> Analysis {
    let mut a = Analysis::default();
    let problems = &mut a.report_problems;
    match m.format {
        Some(POOL_FORMAT_V1) => {}
        Some(other) => {
            problems.push(Problem::new(
                ProblemKind::UnknownFormat,
                format!(
                    "pool format {other} is unknown: upgrade cryptvol (nothing else was checked)"
                ),
            ));
            a.unknown_format = true;
            return a;
        }
        None => problems.push(Problem::new(
            ProblemKind::MissingFormat,
            format!("the meta table has no \"{META_FORMAT}\" row (format {POOL_FORMAT_V1})"),
        )),
    }

    // Owners and their geometry. An id in several tables keeps its first geometry.
    let mut geometry: BTreeMap<&str, (Geometry, &'static str)> = BTreeMap::new();
    for (id, bytes) in &m.volumes {
        let g = match VolumeHeader::decode(bytes) {
            Ok(h) if h.id.as_str() == id => Geometry::Known {
                shift: h.chunk_shift,
                size: h.size,
            },
            Ok(h) => {
                problems.push(
                    Problem::new(
                        ProblemKind::BadVolumeHeader,
                        format!(
                            "the row holds the header of {}; its map's chunk size is unknown",
                            h.id
                        ),
                    )
                    .object(id),
                );
                Geometry::Unknown
            }
            Err(e) => {
                problems.push(
                    Problem::new(
                        ProblemKind::BadVolumeHeader,
                        format!("{e}; its map's chunk size is unknown"),
                    )
                    .object(id),
                );
                Geometry::Unknown
            }
        };
        geometry.entry(id).or_insert((g, "volume"));
    }
    let records = [
        (&m.snapshots, ProblemKind::BadSnapshotRecord, "snapshot"),
        (
            &m.pending,
            ProblemKind::BadPendingRecord,
            "copy in progress",
        ),
    ];
    for (rows, kind, what) in records {
        for (id, bytes) in rows {
            let decoded = if kind == ProblemKind::BadSnapshotRecord {
                owners.snapshot(bytes)
            } else {
                owners.pending(bytes)
            };
            let g = match decoded {
                Ok((shift, size)) => Geometry::Known { shift, size },
                Err(e) => {
                    problems.push(
                        Problem::new(kind, format!("{e}; its map's chunk size is unknown"))
                            .object(id),
                    );
                    Geometry::Unknown
                }
            };
            geometry.entry(id).or_insert((g, what));
        }
    }

    // The maps: what every slot's count should be.
    let mut map_rows: BTreeMap<u8, u64> = BTreeMap::new();
    for (owner, rows) in &m.maps {
        match geometry.get(owner.as_str()) {
            None => {
                problems.push(
                    Problem::new(
                        ProblemKind::OrphanMap,
                        format!(
                            "{} but no volume, snapshot or copy in progress has this id",
                            plural(rows.len() as u64, "map row", "map rows")
                        ),
                    )
                    .object(owner),
                );
                a.orphans.insert(owner.clone(), rows.len());
            }
            Some((Geometry::Unknown, _)) => {
                for (_, slot) in rows {
                    *a.pinned.entry(*slot).or_insert(0) += 1;
                }
            }
            Some((Geometry::Known { shift, size }, what)) => {
                let chunks = size.div_ceil(chunk_bytes(*shift).max(1));
                for &(chunk, slot) in rows {
                    if chunk >= chunks {
                        let mut p = Problem::new(
                            ProblemKind::ChunkOutOfRange,
                            format!(
                                "past the end of the {what} {owner} ({size} bytes, {}); the row is kept: its data cannot be placed safely",
                                plural(chunks, "chunk", "chunks")
                            ),
                        )
                        .object(owner)
                        .slot(*shift, slot);
                        p.chunk = Some(chunk);
                        problems.push(p);
                    }
                    *a.used.entry((*shift, slot)).or_insert(0) += 1;
                }
                *map_rows.entry(*shift).or_insert(0) += rows.len() as u64;
            }
        }
    }

    a.shifts.extend(m.hwm.keys().copied());
    a.shifts.extend(m.refs.keys().map(|k| k.0));
    a.shifts.extend(m.free.iter().map(|k| k.0));
    a.shifts.extend(a.used.keys().map(|k| k.0));

    for &shift in &a.shifts {
        let hwm = m.hwm.get(&shift).copied().unwrap_or(0);
        let range = (shift, 0)..=(shift, u64::MAX);
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        seen.extend(a.used.range(range.clone()).map(|(k, _)| k.1));
        seen.extend(m.refs.range(range.clone()).map(|(k, _)| k.1));
        seen.extend(m.free.range(range.clone()).map(|k| k.1));
        for &slot in &seen {
            let k = (shift, slot);
            let used = a.used.get(&k).copied().unwrap_or(0);
            let count = m.refs.get(&k).copied();
            let free = m.free.contains(&k);
            let pinned = a.pinned.get(&slot).copied();
            let c = count.unwrap_or(0);
            if slot >= hwm {
                let mut what = vec![];
                if used > 0 {
                    what.push(plural(
                        used as u64,
                        "map row points at it",
                        "map rows point at it",
                    ));
                }
                if count.is_some() {
                    what.push("it has a reference count".to_string());
                }
                if free {
                    what.push("it is in the free list".to_string());
                }
                problems.push(
                    Problem::new(
                        ProblemKind::PastHighWater,
                        format!(
                            "at or past the high-water mark {hwm}, yet {}: it would be handed out again as a fresh slot",
                            what.join(" and ")
                        ),
                    )
                    .slot(shift, slot),
                );
            }
            if c < used {
                problems.push(
                    Problem::new(
                        ProblemKind::MissingReference,
                        format!(
                            "reference count {c}, but {}: a write would change the other maps' data, and a delete would free it under them",
                            plural(used as u64, "map row points at it", "map rows point at it")
                        ),
                    )
                    .slot(shift, slot),
                );
            } else if pinned.is_none() && (c > used || count == Some(0)) {
                problems.push(
                    Problem::new(
                        ProblemKind::LeakedReference,
                        format!(
                            "reference count {c}, but {}: {}",
                            plural(used as u64, "map row points at it", "map rows point at it"),
                            if used == 0 {
                                "the slot is never freed"
                            } else {
                                "it is never freed when they go"
                            }
                        ),
                    )
                    .slot(shift, slot),
                );
            }
            if free && used > 0 {
                problems.push(
                    Problem::new(
                        ProblemKind::DoubleOwner,
                        format!(
                            "in the free list, but {}: the allocator would hand it out again",
                            plural(used as u64, "map row points at it", "map rows point at it")
                        ),
                    )
                    .slot(shift, slot),
                );
            } else if free && let Some(n) = pinned {
                problems.push(
                    Problem::new(
                        ProblemKind::DoubleOwner,
                        format!(
                            "in the free list, but {} of an owner whose record is unreadable may point at it (its chunk size is unknown)",
                            plural(n as u64, "map row", "map rows")
                        ),
                    )
                    .slot(shift, slot),
                );
            }
        }
        // Leaked slots: the gaps below the high-water mark (slot numbers an unreadable
        // owner uses are not judged).
        let accounted: BTreeSet<u64> = seen
            .range(..hwm)
            .copied()
            .chain(a.pinned.range(..hwm).map(|(s, _)| *s))
            .collect();
        for (from, to) in gaps(&accounted, hwm) {
            let mut p = Problem::new(
                ProblemKind::LeakedSlot,
                format!(
                    "{} below the high-water mark {hwm}, neither referenced nor free: never reused",
                    plural((to - from).saturating_add(1), "slot", "slots")
                ),
            )
            .slot(shift, from);
            if to > from {
                p.last_slot = Some(to);
            }
            problems.push(p);
        }
        a.counts.push(ChunkSizeCounts {
            chunk_size: chunk_bytes(shift),
            high_water_mark: hwm,
            map_rows: map_rows.get(&shift).copied().unwrap_or(0),
            slots_in_use: a.used.range(range.clone()).count() as u64,
            free_slots: m.free.range(range).count() as u64,
        });
    }

    for (snap, holder) in &m.leases {
        if let Some(why) = stale_lease(m, owners, snap, holder) {
            problems.push(
                Problem::new(
                    ProblemKind::StaleLease,
                    format!("held by {holder}, but {why}"),
                )
                .object(snap),
            );
        }
    }
    a
}

/// Why a lease protects nothing, if it does not: its snapshot is gone, or its holder is a
/// copy into this pool that is no longer in progress.
fn stale_lease(
    m: &Model,
    owners: &dyn OwnerRecords,
    snap: &str,
    holder: &str,
) -> Option<&'static str> {
    if !m.snapshots.iter().any(|(id, _)| id == snap) {
        return Some("the snapshot does not exist");
    }
    let copy = holder.split_once('/').map(|(_, id)| id).unwrap_or(holder);
    if owners.local_holder(holder) && !m.pending.iter().any(|(id, _)| id == copy) {
        return Some("that copy is not in progress (it finished or was abandoned)");
    }
    None
}

/// The ranges (first, last) of `0..end` that are not in `taken` (sorted, all below `end`).
fn gaps(taken: &BTreeSet<u64>, end: u64) -> Vec<(u64, u64)> {
    let mut out = vec![];
    let mut next = 0u64;
    for &s in taken {
        if s > next {
            out.push((next, s - 1));
        }
        next = s.saturating_add(1);
    }
    if end > next {
        out.push((next, end - 1));
    }
    out
}

fn report(m: &Model, a: &Analysis) -> CheckReport {
    CheckReport {
        clean: a.report_problems.is_empty(),
        format: m.format,
        volumes: m.volumes.len() as u64,
        snapshots: m.snapshots.len() as u64,
        pending_copies: m.pending.len() as u64,
        leases: m.leases.len() as u64,
        chunk_sizes: a.counts.clone(),
        problems: a.report_problems.clone(),
    }
}

/// Checks every invariant of the pool metadata (tables.rs, docs/formats.md "Thin pool").
/// Never writes.
pub fn check(r: &ReadTransaction, owners: &dyn OwnerRecords) -> Result<CheckReport> {
    let m = load_model!(r)?;
    let a = analyze(&m, owners);
    Ok(report(&m, &a))
}

/// Freeing more slots than this in one repair means a damaged high-water mark, not leaks.
const MAX_FREED: u64 = 1 << 32;

/// Rewrites the bookkeeping from the maps, in `w` (the caller commits, then punches
/// `RepairReport::freed`):
/// - map rows of owners with no record are dropped (no key can read their data);
/// - map rows past their owner's end are kept, and reported: the data is someone's, and
///   which of the row and the size is wrong cannot be told;
/// - every reference count is set to the number of map rows pointing at its slot;
/// - `free` becomes every slot below the high-water mark that no map row points at; the
///   mark is first raised past any referenced slot;
/// - leases on snapshots that do not exist are removed; a missing format marker is written.
///
/// Slot numbers that owners with an unreadable record use are protected in every chunk
/// size where they are below the mark or counted: their count is never lowered (and at
/// least the rows that may point at them), and they are not free. Repair never frees a
/// slot any map row points at. Refuses an unknown pool format.
pub fn repair(w: &WriteTransaction, owners: &dyn OwnerRecords) -> Result<RepairReport> {
    let m = load_model!(w)?;
    let a = analyze(&m, owners);
    let before = report(&m, &a);
    if a.unknown_format {
        return Err(VolumeError::Corrupt {
            what: "the pool metadata".into(),
            detail: format!(
                "format {} is unknown: upgrade cryptvol; nothing was repaired",
                m.format.unwrap_or(0)
            ),
        });
    }
    let mut fixes = vec![];
    let mut freed = vec![];

    if m.format.is_none() {
        w.open_table(META)?.insert(META_FORMAT, POOL_FORMAT_V1)?;
        fixes.push(Fix::new(
            FixAction::WroteFormatMarker,
            format!("format {POOL_FORMAT_V1}"),
        ));
    }

    if !a.orphans.is_empty() {
        let mut maps = w.open_table(MAPS)?;
        for (owner, n) in &a.orphans {
            for (chunk, _) in &m.maps[owner] {
                maps.remove((owner.as_str(), *chunk))?;
            }
            let mut f = Fix::new(
                FixAction::DroppedOrphanMap,
                format!("removed {}", plural(*n as u64, "map row", "map rows")),
            );
            f.object = Some(owner.clone());
            fixes.push(f);
        }
    }

    {
        let mut refs = w.open_table(REFS)?;
        let mut free = w.open_table(FREE)?;
        let mut meta = w.open_table(META)?;
        let mut total_freed = 0u64;
        for &shift in &a.shifts {
            let hwm = m.hwm.get(&shift).copied().unwrap_or(0);
            let range = (shift, 0)..=(shift, u64::MAX);
            // The mark goes past every referenced slot, and past every counted slot an
            // unreadable owner may use.
            let used_top = a
                .used
                .range(range.clone())
                .next_back()
                .map(|(k, _)| k.1.saturating_add(1));
            let pinned_top = a
                .pinned
                .keys()
                .rfind(|s| m.refs.contains_key(&(shift, **s)))
                .map(|s| s.saturating_add(1));
            let new_hwm = hwm.max(used_top.unwrap_or(0)).max(pinned_top.unwrap_or(0));
            if new_hwm > hwm {
                meta.insert(hwm_key(shift).as_str(), new_hwm)?;
                fixes.push(
                    Fix::new(
                        FixAction::RaisedHighWater,
                        format!("from {hwm} to {new_hwm}: a referenced slot was at or past it"),
                    )
                    .slot(shift, hwm),
                );
            }
            // The target count of every slot that has or needs one. Slot numbers an
            // unreadable owner uses are protected below the mark.
            let mut want: BTreeMap<u64, u32> = BTreeMap::new();
            for (k, n) in a.used.range(range.clone()) {
                want.insert(k.1, *n);
            }
            let mut protected = BTreeSet::new();
            for (&slot, &n) in a.pinned.range(..new_hwm) {
                let count = m.refs.get(&(shift, slot)).copied();
                let used = a.used.get(&(shift, slot)).copied().unwrap_or(0);
                let keep = count.unwrap_or(0).max(used.saturating_add(n));
                want.insert(slot, keep);
                protected.insert(slot);
                if count != Some(keep) || m.free.contains(&(shift, slot)) {
                    fixes.push(
                        Fix::new(
                            FixAction::ProtectedSlot,
                            format!(
                                "an owner whose record is unreadable may use it: count {keep}, not free"
                            ),
                        )
                        .slot(shift, slot),
                    );
                }
            }
            // Counts.
            let mut slots: BTreeSet<u64> = want.keys().copied().collect();
            slots.extend(m.refs.range(range.clone()).map(|(k, _)| k.1));
            for slot in slots {
                let k = (shift, slot);
                let have = m.refs.get(&k).copied();
                let to = want.get(&slot).copied().unwrap_or(0);
                if have == Some(to) && to > 0 || have.is_none() && to == 0 {
                    continue;
                }
                if to == 0 {
                    refs.remove(k)?;
                } else {
                    refs.insert(k, to)?;
                }
                if !protected.contains(&slot) {
                    fixes.push(
                        Fix::new(
                            FixAction::SetRefcount,
                            format!(
                                "from {} to {to}{}",
                                have.map_or("none".to_string(), |c| c.to_string()),
                                if to == 0 { " (row removed)" } else { "" }
                            ),
                        )
                        .slot(shift, slot),
                    );
                }
            }
            // Free rows that must go: referenced, protected, or at or past the mark.
            for k in m.free.range(range.clone()) {
                let slot = k.1;
                let why = if want.contains_key(&slot) {
                    "the slot is referenced"
                } else if slot >= new_hwm {
                    "the slot is at or past the high-water mark"
                } else {
                    continue;
                };
                free.remove(*k)?;
                if !protected.contains(&slot) {
                    fixes.push(
                        Fix::new(
                            FixAction::RemovedFree,
                            format!("removed from the free list: {why}"),
                        )
                        .slot(shift, slot),
                    );
                }
            }
            // Every other slot below the mark is free.
            let taken: BTreeSet<u64> = want
                .keys()
                .copied()
                .chain(m.free.range(range.clone()).map(|k| k.1))
                .filter(|s| *s < new_hwm)
                .collect();
            for (from, to) in gaps(&taken, new_hwm) {
                total_freed = total_freed.saturating_add((to - from).saturating_add(1));
                if total_freed > MAX_FREED {
                    return Err(VolumeError::Corrupt {
                        what: "the pool metadata".into(),
                        detail: format!(
                            "repair would free over {MAX_FREED} slots (high-water mark {hwm} of the {} chunks looks damaged); nothing was repaired",
                            format_size(chunk_bytes(shift))
                        ),
                    });
                }
                for slot in from..=to {
                    free.insert((shift, slot), ())?;
                    freed.push((shift, slot));
                }
                let mut f = Fix::new(
                    FixAction::FreedSlots,
                    format!(
                        "{} below the high-water mark that no map row points at",
                        plural((to - from).saturating_add(1), "slot", "slots")
                    ),
                )
                .slot(shift, from);
                if to > from {
                    f.last_slot = Some(to);
                }
                fixes.push(f);
            }
        }
    }

    let stale: Vec<&(String, String)> = m
        .leases
        .iter()
        .filter(|(s, h)| stale_lease(&m, owners, s, h).is_some())
        .collect();
    if !stale.is_empty() {
        let mut leases = w.open_table(LEASES)?;
        for (snap, holder) in stale {
            leases.remove((snap.as_str(), holder.as_str()))?;
            let mut f = Fix::new(FixAction::RemovedStaleLease, format!("held by {holder}"));
            f.object = Some(snap.clone());
            fixes.push(f);
        }
    }

    let not_repaired = before
        .problems
        .iter()
        .filter(|p| !p.repairable)
        .cloned()
        .map(|mut p| {
            p.detail.push_str(match p.kind {
                ProblemKind::ChunkOutOfRange => {
                    " (not repaired: the row may be right and the size wrong; the slot stays referenced)"
                }
                _ => {
                    " (not repaired: a damaged record cannot be rebuilt; its slots are kept)"
                }
            });
            p
        })
        .collect();
    let after_model = load_model!(w)?;
    let after = report(&after_model, &analyze(&after_model, owners));
    Ok(RepairReport {
        before,
        fixes,
        freed_slots: freed.len() as u64,
        not_repaired,
        after,
        freed,
    })
}

// ---- on a pool ------------------------------------------------------------------------

impl Pool {
    /// [`check`] on this pool's last committed metadata.
    pub fn check(&self, owners: &dyn OwnerRecords) -> Result<CheckReport> {
        let r = self.db()?.begin_read()?;
        check(&r, owners)
    }

    /// [`repair`] in one transaction, then punches the slots it freed (best effort, as
    /// any freed slot: a reused slot is punched again) and reloads the allocators.
    /// Only with nothing attached: the caller (the pool's owner) makes sure of it.
    pub fn repair(&self, owners: &dyn OwnerRecords) -> Result<RepairReport> {
        let report = self.rewrite_metadata(|w| repair(w, owners))?;
        let valid = super::header::MIN_CHUNK_SHIFT..=super::header::MAX_CHUNK_SHIFT;
        for &(shift, slot) in report.freed.iter().filter(|f| valid.contains(&f.0)) {
            if let Err(e) = self.punch_slot(shift, SlotNo(slot)) {
                tracing::warn!("pool repair: punching slot {slot} (2^{shift}): {e}");
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aws::Region;
    use crate::crypto::xts::Xts;
    use crate::datadir::RegionDir;
    use crate::volume::OpenVolume;
    use crate::volume::header::KeySource;
    use crate::volume::ids::{SlotNo, VolumeId};

    const SHIFT: u8 = 16;
    const CHUNK: u64 = 1 << SHIFT;

    /// Snapshot and pending records are volume headers here: the volume layer's tests do
    /// not use the snapshot layer.
    struct HeaderOwners;
    impl OwnerRecords for HeaderOwners {
        fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)> {
            let h = VolumeHeader::decode(record)?;
            Ok((h.chunk_shift, h.size))
        }
        fn pending(&self, record: &[u8]) -> Result<(u8, u64)> {
            self.snapshot(record)
        }
    }

    fn xts() -> Xts {
        let mut k = [0u8; 64];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        Xts::new(&k).unwrap()
    }

    fn header(size: u64) -> VolumeHeader {
        VolumeHeader {
            id: VolumeId::random(),
            lineage: "vol-00000000000000000".into(),
            region: Region::parse("test-1").unwrap(),
            name: String::new(),
            size,
            chunk_shift: SHIFT,
            created: 0,
            key: KeySource::Customer {
                salt: [0; 16],
                verifier: [0; 32],
            },
        }
    }

    fn region(d: &tempfile::TempDir) -> RegionDir {
        let r = RegionDir::new(d.path(), &Region::parse("test-1").unwrap());
        std::fs::create_dir_all(&r.path).unwrap();
        r
    }

    fn pattern(len: u64, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
            .collect()
    }

    /// A new volume with `chunks` chunks written (1-based seed per chunk), committed.
    fn volume_with_data(pool: &Arc<Pool>, size: u64, chunks: u64, seed: u8) -> VolumeHeader {
        let h = header(size);
        pool.create_volume(&h).unwrap();
        let v = OpenVolume::open(pool.clone(), &h, xts()).unwrap();
        for c in 0..chunks {
            v.write(c * CHUNK, &pattern(CHUNK, seed.wrapping_add(c as u8)))
                .unwrap();
        }
        v.flush().unwrap();
        h
    }

    fn read_all(pool: &Arc<Pool>, h: &VolumeHeader) -> Vec<u8> {
        let v = OpenVolume::open(pool.clone(), h, xts()).unwrap();
        let mut buf = vec![0u8; h.size as usize];
        v.read(0, &mut buf).unwrap();
        buf
    }

    fn slots(pool: &Pool, owner: &str) -> Vec<u64> {
        pool.load_map(owner)
            .unwrap()
            .into_iter()
            .map(|(_, s)| s.0)
            .collect()
    }

    fn hwm(pool: &Pool) -> u64 {
        let r = pool.db().unwrap().begin_read().unwrap();
        r.open_table(META)
            .unwrap()
            .get(hwm_key(SHIFT).as_str())
            .unwrap()
            .unwrap()
            .value()
    }

    fn free_slots(pool: &Pool) -> Vec<u64> {
        let r = pool.db().unwrap().begin_read().unwrap();
        r.open_table(FREE)
            .unwrap()
            .iter()
            .unwrap()
            .map(|i| i.unwrap().0.value().1)
            .collect()
    }

    /// Runs `f` in one committed write transaction on the pool's database.
    fn damage(pool: &Pool, f: impl FnOnce(&WriteTransaction)) {
        let w = pool.db().unwrap().begin_write().unwrap();
        f(&w);
        w.commit().unwrap();
    }

    #[track_caller]
    fn find<'r>(
        r: &'r CheckReport,
        kind: ProblemKind,
        object: Option<&str>,
        slot: Option<u64>,
    ) -> &'r Problem {
        r.problems
            .iter()
            .find(|p| {
                p.kind == kind
                    && (object.is_none() || p.object.as_deref() == object)
                    && (slot.is_none() || p.slot == slot)
            })
            .unwrap_or_else(|| panic!("no {kind} at {object:?} slot {slot:?} in:\n{r}"))
    }

    /// Volume `a` (5 chunks, chunk 0 overwritten after a snapshot, so chunk 0 has two
    /// slots), its snapshot, and a deleted volume whose two slots are free.
    struct Fixture {
        _dir: tempfile::TempDir,
        region: RegionDir,
        pool: Arc<Pool>,
        a: VolumeHeader,
        snap: String,
        a_data: Vec<u8>,
        snap_data: Vec<u8>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let region = region(&dir);
        let pool = Arc::new(Pool::open(&region).unwrap());
        let a = volume_with_data(&pool, 8 * CHUNK, 5, 10);
        let snap = "snap-0123456789abcdef0".to_string();
        let snap_header = VolumeHeader {
            id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
            ..a.clone()
        };
        pool.create_snapshot(&a, &snap.clone().try_into().unwrap(), &snap_header.encode())
            .unwrap();
        let snap_data = read_all(&pool, &a);
        {
            let v = OpenVolume::open(pool.clone(), &a, xts()).unwrap();
            v.mark_all_shared();
            v.write(100, &pattern(5000, 99)).unwrap();
            v.flush().unwrap();
        }
        let b = volume_with_data(&pool, 4 * CHUNK, 2, 50);
        pool.delete_volume(&b).unwrap();
        let a_data = read_all(&pool, &a);
        assert_ne!(a_data, snap_data);
        Fixture {
            _dir: dir,
            region,
            pool,
            a,
            snap,
            a_data,
            snap_data,
        }
    }

    #[test]
    fn a_pool_made_by_ordinary_operations_is_clean() {
        let f = fixture();
        let r = f.pool.check(&HeaderOwners).unwrap();
        assert!(r.is_clean(), "{r}");
        assert_eq!((r.volumes, r.snapshots, r.pending_copies), (1, 1, 0));
        assert_eq!(r.format, Some(POOL_FORMAT_V1));
        let c = &r.chunk_sizes[0];
        assert_eq!(c.chunk_size, CHUNK);
        // a: 5 slots (chunk 0 copied); the snapshot shares 4 and holds the old chunk 0.
        assert_eq!(c.map_rows, 10);
        assert_eq!(c.slots_in_use, 6);
        assert_eq!(c.free_slots, 2);
        assert_eq!(c.high_water_mark, 8);
        assert!(r.to_string().ends_with("clean"), "{r}");
        // Repairing a clean pool changes nothing.
        let rep = f.pool.repair(&HeaderOwners).unwrap();
        assert!(rep.fixes.is_empty(), "{rep}");
        assert!(rep.freed.is_empty());
        assert_eq!(rep.after, r);
    }

    #[test]
    fn every_repairable_damage_is_found_and_repaired_and_the_data_survives() {
        let f = fixture();
        let pool = &f.pool;
        let a_id = f.a.id.as_str();
        let a_slots = slots(pool, a_id);
        let snap_slots = slots(pool, &f.snap);
        let shared: Vec<u64> = a_slots
            .iter()
            .copied()
            .filter(|s| snap_slots.contains(s))
            .collect();
        let own: Vec<u64> = a_slots
            .iter()
            .copied()
            .filter(|s| !snap_slots.contains(s))
            .collect();
        assert_eq!((shared.len(), own.len()), (4, 1));
        let free = free_slots(pool);
        assert_eq!(free.len(), 2);
        let top = hwm(pool);
        let orphan = "vol-00000000000000dead";

        damage(pool, |w| {
            let mut refs = w.open_table(REFS).unwrap();
            // Leaked reference: one too many on a shared slot.
            refs.insert((SHIFT, shared[0]), 3).unwrap();
            // Missing reference: a shared slot counted once.
            refs.insert((SHIFT, shared[1]), 1).unwrap();
            // Missing reference: a slot with no count at all.
            refs.remove((SHIFT, own[0])).unwrap();
            // Past the high-water mark.
            refs.insert((SHIFT, top + 5), 1).unwrap();
            let mut fr = w.open_table(FREE).unwrap();
            // Leaked slot: a free slot forgotten.
            fr.remove((SHIFT, free[0])).unwrap();
            // Double owner: a referenced slot in the free list.
            fr.insert((SHIFT, shared[2]), ()).unwrap();
            // Orphan map rows.
            let mut maps = w.open_table(MAPS).unwrap();
            maps.insert((orphan, 0), shared[3]).unwrap();
            maps.insert((orphan, 1), free[1]).unwrap();
            // A stale lease (the table does not exist yet: old pools lack it).
            w.open_table(LEASES)
                .unwrap()
                .insert(("snap-00000000000000bad", "copy-to-eu-1"), b"{}".as_slice())
                .unwrap();
            // No format marker.
            w.open_table(META).unwrap().remove(META_FORMAT).unwrap();
        });

        let r = pool.check(&HeaderOwners).unwrap();
        let text = r.to_string();
        assert!(!r.is_clean());
        assert!(!r.clean);
        find(&r, ProblemKind::LeakedReference, None, Some(shared[0]));
        let p = find(&r, ProblemKind::MissingReference, None, Some(shared[1]));
        assert!(p.detail.contains("count 1, but 2 map rows"), "{p}");
        find(&r, ProblemKind::MissingReference, None, Some(own[0]));
        find(&r, ProblemKind::PastHighWater, None, Some(top + 5));
        let p = find(&r, ProblemKind::LeakedSlot, None, Some(free[0]));
        assert_eq!(p.last_slot, None, "{p}");
        find(&r, ProblemKind::DoubleOwner, None, Some(shared[2]));
        let p = find(&r, ProblemKind::OrphanMap, Some(orphan), None);
        assert!(p.detail.contains("2 map rows"), "{p}");
        find(
            &r,
            ProblemKind::StaleLease,
            Some("snap-00000000000000bad"),
            None,
        );
        find(&r, ProblemKind::MissingFormat, None, None);
        assert!(r.problems.iter().all(|p| p.repairable), "{text}");
        // One line per problem after the summary, each naming where.
        assert_eq!(text.lines().count(), r.problems.len() + 1, "{text}");
        assert!(
            text.contains(&format!(
                "double-owner: slot {} of the 64.0 KiB chunks: in the free list",
                shared[2]
            )),
            "{text}"
        );
        // JSON names are stable.
        let j = serde_json::to_value(&r).unwrap();
        assert!(
            j["Problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["Kind"] == "orphan-map" && p["Object"] == orphan),
            "{j:#}"
        );

        let rep = pool.repair(&HeaderOwners).unwrap();
        assert!(rep.after.is_clean(), "{rep}");
        assert!(rep.not_repaired.is_empty(), "{rep}");
        assert_eq!(rep.freed, vec![(SHIFT, free[0])], "{rep}");
        let actions: BTreeSet<String> = rep.fixes.iter().map(|x| x.action.to_string()).collect();
        for a in [
            "wrote-format-marker",
            "dropped-orphan-map",
            "set-refcount",
            "removed-free",
            "freed-slots",
            "removed-stale-lease",
        ] {
            assert!(actions.contains(a), "{a} missing: {rep}");
        }
        let again = pool.check(&HeaderOwners).unwrap();
        assert!(again.is_clean(), "{again}");
        assert_eq!(again, rep.after);
        assert_eq!(pool.refcount(SHIFT, SlotNo(shared[0])).unwrap(), 2);
        assert_eq!(pool.refcount(SHIFT, SlotNo(shared[1])).unwrap(), 2);
        assert_eq!(pool.refcount(SHIFT, SlotNo(own[0])).unwrap(), 1);
        assert!(pool.load_map(orphan).unwrap().is_empty());

        // The data reads back the same, through a fresh pool (allocators reloaded).
        let (pool, region) = (f.pool, f.region);
        drop(pool);
        let pool = Arc::new(Pool::open(&region).unwrap());
        assert_eq!(read_all(&pool, &f.a), f.a_data);
        let restored = VolumeHeader {
            id: VolumeId::random(),
            ..f.a.clone()
        };
        pool.restore_volume(&f.snap.clone().try_into().unwrap(), &restored)
            .unwrap();
        assert_eq!(read_all(&pool, &restored), f.snap_data);
        // And writing after the repair allocates without disturbing either.
        let c = volume_with_data(&pool, 4 * CHUNK, 3, 77);
        assert_eq!(read_all(&pool, &f.a), f.a_data);
        assert_eq!(read_all(&pool, &restored), f.snap_data);
        assert_eq!(read_all(&pool, &c)[..CHUNK as usize], pattern(CHUNK, 77));
        let r = pool.check(&HeaderOwners).unwrap();
        assert!(r.is_clean(), "{r}");
    }

    #[test]
    fn unreadable_records_and_rows_past_the_end_are_reported_and_their_slots_kept() {
        let f = fixture();
        let pool = &f.pool;
        let c = volume_with_data(pool, 4 * CHUNK, 2, 30);
        let c_slots = slots(pool, c.id.as_str());
        let c_data = read_all(pool, &c);
        let good = c.encode();
        let mut bad = good.clone();
        bad[20] ^= 1;
        let top = hwm(pool);
        let a_id = f.a.id.as_str();
        damage(pool, |w| {
            w.open_table(VOLUMES)
                .unwrap()
                .insert(c.id.as_str(), bad.as_slice())
                .unwrap();
            // c's slots lose a count and one lands in the free list: repair must not
            // free them, since c's chunk size is unknown while its header is unreadable.
            w.open_table(REFS)
                .unwrap()
                .remove((SHIFT, c_slots[0]))
                .unwrap();
            w.open_table(FREE)
                .unwrap()
                .insert((SHIFT, c_slots[0]), ())
                .unwrap();
            // A row of a past its end (8 chunks), pointing past the high-water mark.
            w.open_table(MAPS)
                .unwrap()
                .insert((a_id, 40), top + 2)
                .unwrap();
        });
        let r = pool.check(&HeaderOwners).unwrap();
        let p = find(&r, ProblemKind::BadVolumeHeader, Some(c.id.as_str()), None);
        assert!(p.detail.contains("checksum"), "{p}");
        assert!(!p.repairable);
        let p = find(&r, ProblemKind::ChunkOutOfRange, Some(a_id), Some(top + 2));
        assert_eq!(p.chunk, Some(40));
        assert!(p.to_string().contains(&format!("{a_id} chunk 40")), "{p}");
        find(&r, ProblemKind::PastHighWater, None, Some(top + 2));
        find(&r, ProblemKind::MissingReference, None, Some(top + 2));
        find(&r, ProblemKind::DoubleOwner, None, Some(c_slots[0]));
        // An unreadable owner's slot with no count is not called leaked.
        assert!(
            !r.problems
                .iter()
                .any(|p| p.kind == ProblemKind::LeakedSlot && p.slot == Some(c_slots[0])),
            "{r}"
        );

        let rep = pool.repair(&HeaderOwners).unwrap();
        let kinds: Vec<ProblemKind> = rep.not_repaired.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![ProblemKind::BadVolumeHeader, ProblemKind::ChunkOutOfRange],
            "{rep}"
        );
        assert!(rep.not_repaired[1].detail.contains("not repaired"), "{rep}");
        for s in &c_slots {
            assert!(!rep.freed.contains(&(SHIFT, *s)), "{rep}");
            assert!(pool.refcount(SHIFT, SlotNo(*s)).unwrap() >= 1, "{rep}");
        }
        // The mark went past the row's slot; the two slots skipped on the way are free.
        assert_eq!(hwm(pool), top + 3);
        assert_eq!(rep.freed, vec![(SHIFT, top), (SHIFT, top + 1)], "{rep}");
        assert_eq!(pool.refcount(SHIFT, SlotNo(top + 2)).unwrap(), 1);
        let left: Vec<ProblemKind> = rep.after.problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            left,
            vec![ProblemKind::BadVolumeHeader, ProblemKind::ChunkOutOfRange],
            "{rep}"
        );
        assert_eq!(pool.check(&HeaderOwners).unwrap(), rep.after);

        // Once the header is back, c's data is all there and only the row past a's end
        // is left (removing it is the owner's call).
        damage(pool, |w| {
            w.open_table(VOLUMES)
                .unwrap()
                .insert(c.id.as_str(), good.as_slice())
                .unwrap();
        });
        let r = pool.check(&HeaderOwners).unwrap();
        let left: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
        assert_eq!(left, vec![ProblemKind::ChunkOutOfRange], "{r}");
        assert_eq!(read_all(pool, &c), c_data);
        assert_eq!(read_all(pool, &f.a), f.a_data);
    }

    #[test]
    fn a_header_under_another_id_and_a_pending_copy_are_judged() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Arc::new(Pool::open(&region(&dir)).unwrap());
        let h = volume_with_data(&pool, 2 * CHUNK, 1, 1);
        // A copy in progress: its map is counted like any other.
        let p = header(2 * CHUNK);
        pool.begin_pending(p.id.as_str(), &p.encode()).unwrap();
        let s = pool.reserve(SHIFT).unwrap();
        pool.remap(SHIFT, p.id.as_str(), 1, Some(s), None);
        pool.commit().unwrap();
        let r = pool.check(&HeaderOwners).unwrap();
        assert!(r.is_clean(), "{r}");
        assert_eq!(r.pending_copies, 1);
        assert_eq!(r.chunk_sizes[0].map_rows, 2);
        // The same header stored under a second id.
        let other = VolumeId::random();
        damage(&pool, |w| {
            w.open_table(VOLUMES)
                .unwrap()
                .insert(other.as_str(), h.encode().as_slice())
                .unwrap();
        });
        let r = pool.check(&HeaderOwners).unwrap();
        let p = find(&r, ProblemKind::BadVolumeHeader, Some(other.as_str()), None);
        assert!(p.detail.contains(h.id.as_str()), "{p}");
    }

    #[test]
    fn formats_empty_and_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
        // No tables at all: only the marker is missing, and repair writes it.
        let r = check(&db.begin_read().unwrap(), &HeaderOwners).unwrap();
        let kinds: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec![ProblemKind::MissingFormat]);
        let w = db.begin_write().unwrap();
        let rep = repair(&w, &HeaderOwners).unwrap();
        w.commit().unwrap();
        assert!(rep.after.is_clean(), "{rep}");
        assert!(
            check(&db.begin_read().unwrap(), &HeaderOwners)
                .unwrap()
                .is_clean()
        );
        // A format from the future: reported alone, and repair refuses it.
        let w = db.begin_write().unwrap();
        w.open_table(META).unwrap().insert(META_FORMAT, 7).unwrap();
        w.commit().unwrap();
        let r = check(&db.begin_read().unwrap(), &HeaderOwners).unwrap();
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].kind, ProblemKind::UnknownFormat);
        let w = db.begin_write().unwrap();
        let e = repair(&w, &HeaderOwners).unwrap_err();
        assert!(e.to_string().contains("upgrade cryptvol"), "{e}");
    }

    #[test]
    fn leaked_slots_are_reported_as_ranges() {
        let mut taken = BTreeSet::new();
        assert_eq!(gaps(&taken, 0), vec![]);
        assert_eq!(gaps(&taken, 3), vec![(0, 2)]);
        taken.extend([0, 1, 4, 9]);
        assert_eq!(gaps(&taken, 12), vec![(2, 3), (5, 8), (10, 11)]);
        assert_eq!(gaps(&taken, 10), vec![(2, 3), (5, 8)]);
    }
}
