//! Repair: the bookkeeping the scan recomputed, written back in the caller's transaction.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableTable, TableHandle, WriteTransaction};

use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::format_size;
use crate::volume::tables::{
    FREE, LEASES, MAPS, META, META_FORMAT, PENDING, POOL_FORMAT_V1, REFS, REMOTE, SNAPSHOTS,
    VOLUMES, hwm_key,
};

use super::OwnerRecords;
use super::report::*;
use super::scan::*;

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
/// - leases on snapshots that do not exist are removed; a missing format marker is written;
/// - `remote` rows of owners that do not exist, or of chunks that are also mapped (the
///   local data wins), are removed.
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

    if !a.remote_drops.is_empty() {
        let mut remote = w.open_table(REMOTE)?;
        for (owner, chunk) in &a.remote_drops {
            remote.remove((owner.as_str(), *chunk))?;
            let mut f = Fix::new(
                FixAction::DroppedRemoteRow,
                format!("removed the remote row of chunk {chunk}"),
            );
            f.object = Some(owner.clone());
            fixes.push(f);
        }
    }

    super::auth::repair_auth(w, &m, &a, &freed, &mut fixes)?;

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
                ProblemKind::MissingSlotRecord | ProblemKind::BadSlotRecord => {
                    " (not repaired: tags vouch for the data, they cannot be recomputed from it)"
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
