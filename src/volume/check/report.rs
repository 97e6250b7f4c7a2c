//! What a check finds and a repair does: serialized (`--json`, the control socket) and
//! displayed.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::volume::ids::format_size;

#[cfg(doc)]
use super::{check, repair};

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
    /// A (owner, chunk) has both a `maps` row and a `remote` row.
    MappedAndRemote,
    /// `remote` rows whose owner has no volume, snapshot or pending record.
    OrphanRemote,
    /// A `remote` row does not decode.
    BadRemoteRow,
    /// A `slot_auth` row of a slot no map row points at (free, past the high-water mark,
    /// or uncounted): a record no block is checked against.
    OrphanSlotRecord,
    /// A `slot_domain` row of a slot no map row points at (harmless: mapping the slot
    /// again rewrites or clears it; reported so the tables stay what formats.md says).
    OrphanSlotDomain,
    /// A slot mapped by an authenticated volume or snapshot has no `slot_auth` row: its
    /// blocks cannot be checked, and the volume does not attach.
    MissingSlotRecord,
    /// A slot mapped by an authenticated volume or snapshot has a `slot_auth` row that does
    /// not decode.
    BadSlotRecord,
    /// A `roots` row whose owner has no volume, snapshot or pending record.
    OrphanRoot,
    /// An `integrity_errors` row whose owner has no volume, snapshot or pending record.
    OrphanIntegrityErrors,
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
            ProblemKind::MappedAndRemote => "mapped-and-remote",
            ProblemKind::OrphanRemote => "orphan-remote",
            ProblemKind::BadRemoteRow => "bad-remote-row",
            ProblemKind::OrphanSlotRecord => "orphan-slot-record",
            ProblemKind::OrphanSlotDomain => "orphan-slot-domain",
            ProblemKind::MissingSlotRecord => "missing-slot-record",
            ProblemKind::BadSlotRecord => "bad-slot-record",
            ProblemKind::OrphanRoot => "orphan-root",
            ProblemKind::OrphanIntegrityErrors => "orphan-integrity-errors",
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
                | ProblemKind::BadRemoteRow
                | ProblemKind::MissingSlotRecord
                | ProblemKind::BadSlotRecord
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
    pub(super) fn new(kind: ProblemKind, detail: impl Into<String>) -> Problem {
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

    pub(super) fn object(mut self, o: &str) -> Problem {
        self.object = Some(o.to_string());
        self
    }

    pub(super) fn slot(mut self, shift: u8, slot: u64) -> Problem {
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
pub(super) fn chunk_bytes(shift: u8) -> u64 {
    1u64.checked_shl(shift.into()).unwrap_or(0)
}

pub(super) fn plural(n: u64, one: &str, many: &str) -> String {
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
    /// Removed a `remote` row: its chunk is mapped (the local data wins), or its owner
    /// does not exist.
    DroppedRemoteRow,
    /// Removed the `slot_auth` rows of slots no map row points at (after the repair).
    DroppedSlotRecords,
    /// Removed the `slot_domain` rows of slots no map row points at (after the repair).
    DroppedSlotDomains,
    /// Removed a `roots` row whose owner does not exist.
    DroppedRoot,
    /// Removed an `integrity_errors` row whose owner does not exist.
    DroppedIntegrityErrors,
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

    pub(super) fn new(action: FixAction, detail: impl Into<String>) -> Fix {
        Fix {
            action,
            object: None,
            chunk_size: None,
            slot: None,
            last_slot: None,
            detail: detail.into(),
        }
    }

    pub(super) fn slot(mut self, shift: u8, slot: u64) -> Fix {
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
