//! The scan: every table read into memory, the bookkeeping (reference counts, free slots,
//! high-water marks, leases) recomputed from the maps and compared with what is stored.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadTransaction, ReadableTable, TableHandle};

use crate::volume::error::Result;
use crate::volume::header::VolumeHeader;
use crate::volume::tables::{
    FREE, LEASES, MAPS, META, META_FORMAT, PENDING, POOL_FORMAT_V1, REFS, REMOTE, SNAPSHOTS,
    VOLUMES,
};

use super::OwnerRecords;
use super::report::*;

// ---- reading the tables ---------------------------------------------------------------------

/// Every table of the pool, in memory.
#[derive(Debug, Default)]
pub(super) struct Model {
    pub(super) format: Option<u64>,
    pub(super) hwm: BTreeMap<u8, u64>,
    pub(super) volumes: Vec<(String, Vec<u8>)>,
    pub(super) snapshots: Vec<(String, Vec<u8>)>,
    pub(super) pending: Vec<(String, Vec<u8>)>,
    pub(super) maps: BTreeMap<String, Vec<(u64, u64)>>,
    pub(super) refs: BTreeMap<(u8, u64), u32>,
    pub(super) free: BTreeSet<(u8, u64)>,
    pub(super) leases: Vec<(String, String)>,
    /// `remote` rows: (owner, chunk) → the row decodes (or why not).
    pub(super) remote: BTreeMap<(String, u64), std::result::Result<(), String>>,
    /// `slot_auth`, `roots` and `integrity_errors` (authenticated volumes).
    pub(super) auth: super::auth::AuthRows,
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
        if has(REMOTE.name()) {
            for item in tx.open_table(REMOTE)?.iter()? {
                let (k, v) = item?;
                let (owner, chunk) = k.value();
                let decoded = crate::volume::remote::RemoteChunk::decode(v.value(), "the row")
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                m.remote.insert((owner.to_string(), chunk), decoded);
            }
        }
        m.auth = $crate::volume::check::auth::load_auth!(tx, has);
        Result::<Model>::Ok(m)
    }};
}

// ---- the analysis -----------------------------------------------------------------------

/// An owner's geometry: known from its record, or unknown (the record does not decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Geometry {
    Known { shift: u8, size: u64 },
    Unknown,
}

/// What the analysis derives from a `Model`.
#[derive(Debug, Default)]
pub(super) struct Analysis {
    pub(super) report_problems: Vec<Problem>,
    /// The format is unknown: nothing else was judged.
    pub(super) unknown_format: bool,
    /// Owners with no record: their map rows.
    pub(super) orphans: BTreeMap<String, usize>,
    /// `remote` rows to drop: of owners with no record, or of chunks also in `maps`.
    pub(super) remote_drops: Vec<(String, u64)>,
    /// (shift, slot) → map rows of owners with a known geometry pointing at it.
    pub(super) used: BTreeMap<(u8, u64), u32>,
    /// Slot number → map rows of owners with an unknown geometry (any chunk size).
    pub(super) pinned: BTreeMap<u64, u32>,
    /// Every chunk size the pool knows of.
    pub(super) shifts: BTreeSet<u8>,
    pub(super) counts: Vec<ChunkSizeCounts>,
    /// Rows of the authenticated volumes' tables to remove.
    pub(super) auth_drops: super::auth::AuthDrops,
}

pub(super) fn analyze(m: &Model, owners: &dyn OwnerRecords) -> Analysis {
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
    analyze_remote(m, &geometry, &mut a);
    super::auth::analyze_auth(m, owners, &geometry, &mut a);
    a
}

/// The `remote` rows: each owner exists, no chunk is both mapped and remote, every row
/// decodes.
fn analyze_remote(
    m: &Model,
    geometry: &BTreeMap<&str, (Geometry, &'static str)>,
    a: &mut Analysis,
) {
    let mut orphans: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for ((owner, chunk), decoded) in &m.remote {
        if !geometry.contains_key(owner.as_str()) {
            orphans.entry(owner).or_default().push(*chunk);
            a.remote_drops.push((owner.clone(), *chunk));
            continue;
        }
        let mapped = m
            .maps
            .get(owner)
            .is_some_and(|rows| rows.iter().any(|(c, _)| c == chunk));
        if mapped {
            let mut p = Problem::new(
                ProblemKind::MappedAndRemote,
                "both mapped and in the object store: the map row (local data) wins, the remote row is stale",
            )
            .object(owner);
            p.chunk = Some(*chunk);
            a.report_problems.push(p);
            a.remote_drops.push((owner.clone(), *chunk));
        } else if let Err(e) = decoded {
            let mut p = Problem::new(
                ProblemKind::BadRemoteRow,
                format!("its remote row does not decode: {e}"),
            )
            .object(owner);
            p.chunk = Some(*chunk);
            a.report_problems.push(p);
        }
    }
    for (owner, chunks) in orphans {
        a.report_problems.push(
            Problem::new(
                ProblemKind::OrphanRemote,
                format!(
                    "{} but no volume or snapshot has this id",
                    plural(chunks.len() as u64, "remote row", "remote rows")
                ),
            )
            .object(owner),
        );
    }
}

/// Why a lease protects nothing, if it does not: its snapshot is gone, or its holder is a
/// copy into this pool that is no longer in progress.
pub(super) fn stale_lease(
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
pub(super) fn gaps(taken: &BTreeSet<u64>, end: u64) -> Vec<(u64, u64)> {
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

pub(super) fn report(m: &Model, a: &Analysis) -> CheckReport {
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

pub(super) use load_model;

/// Checks every invariant of the pool metadata (tables.rs, docs/formats.md "Thin pool").
/// Never writes.
pub fn check(r: &ReadTransaction, owners: &dyn OwnerRecords) -> Result<CheckReport> {
    let m = load_model!(r)?;
    let a = analyze(&m, owners);
    Ok(report(&m, &a))
}
