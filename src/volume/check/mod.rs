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
//!
//! The files, one concern each:
//!
//! - `report.rs`: what a check finds and a repair does ([`CheckReport`], [`Problem`],
//!   [`RepairReport`], [`Fix`]), serialized for `--json` and displayed for people.
//! - `scan.rs`: the tables read into memory, the bookkeeping recomputed from the maps and
//!   compared; [`check`].
//! - `rebuild.rs`: [`repair`], the recomputed bookkeeping written back.
//! - `auth.rs`: the tables of authenticated volumes (slot records, roots, error counts)
//!   judged against the maps, and their orphan rows removed by repair.
//! - `tests/`: a clean pool, damage found and repaired, damage only reported.

mod auth;
mod rebuild;
mod report;
mod scan;

#[cfg(test)]
mod tests;

use redb::ReadableDatabase;

use super::error::Result;
use super::ids::SlotNo;
use super::pool::Pool;

pub use rebuild::repair;
pub use report::{
    CheckReport, ChunkSizeCounts, Fix, FixAction, Problem, ProblemKind, RepairReport,
};
pub use scan::check;

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
    /// Whether a `snapshots` row is of an authenticated volume (`volume create
    /// --integrity`), whose every mapped slot has a slot record. `None`: this
    /// implementation cannot tell, and the snapshot counts as authenticated if it has a
    /// `roots` row (only authenticated owners get one).
    fn snapshot_authenticated(&self, _record: &[u8]) -> Option<bool> {
        None
    }
    /// [`OwnerRecords::snapshot_authenticated`] for the object a `pending` row will become.
    fn pending_authenticated(&self, _record: &[u8]) -> Option<bool> {
        None
    }
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
