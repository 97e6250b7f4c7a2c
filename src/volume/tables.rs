//! The pool's metadata schema: every redb table of `meta.redb`, in one place, so the pool,
//! its checker and docs/formats.md ("Pool metadata") describe the same thing.
//!
//! Invariants every committed transaction keeps (checked by `volume::check`):
//! - a slot below its chunk size's high-water mark is either referenced (a `refcounts`
//!   row, count > 0) or free (a `free` row), never both and never neither;
//! - a slot's count equals the number of `maps` rows that point at it, over every owner
//!   (volume, snapshot, copy in progress) of that chunk size;
//! - every `maps` owner has a record in `volumes`, `snapshots` or `pending`;
//! - a snapshot with a `leases` row is not deleted;
//! - a (owner, chunk) has a `maps` row or a `remote` row, never both, and every `remote`
//!   owner has a record in `volumes` or `snapshots`.

use redb::TableDefinition;

/// Volume id → volume header (docs/formats.md, "Volume header").
pub const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
/// (owner id, chunk index) → slot. Owners: volumes, snapshots and pending copies.
pub const MAPS: TableDefinition<(&str, u64), u64> = TableDefinition::new("maps");
/// (chunk shift, slot) → number of map rows pointing at it (absent = 0).
pub const REFS: TableDefinition<(u8, u64), u32> = TableDefinition::new("refcounts");
/// (chunk shift, slot) of slots below the high-water mark that nothing references.
pub const FREE: TableDefinition<(u8, u64), ()> = TableDefinition::new("free");
/// "format" → pool format; "hwm/<shift>" → first slot never handed out.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Snapshot id → snapshot record (its format belongs to the snapshot layer).
pub const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// Owner id → record of a copy in progress (rekey restore, snapshot copy): its map grows
/// in `maps` but the object is invisible until the copy finishes and moves the record to
/// `volumes` or `snapshots`.
pub const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
/// (snapshot id, holder) → JSON lease record: a copy reading that snapshot (from this
/// pool or from another region's). The snapshot cannot be deleted while a lease exists.
pub const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");

/// (owner id, chunk index) → encoded `volume::remote::RemoteChunk`: a chunk of a volume
/// or snapshot that still lives in the object store (lazy restore). A (owner, chunk) is
/// in `maps` or here, never both. Absent in pools made before it; created on first write.
pub const REMOTE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("remote");

/// (chunk shift, slot) → `volume::integrity::SlotRecord` of a slot of an authenticated
/// volume: its tweak domain and each block's tag. Written in the commit that maps the slot,
/// removed in the one that frees it; a slot's record never changes once committed.
pub const SLOT_AUTH: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("slot_auth");
/// (chunk shift, slot) → tweak domain of a plain volume's slot not in domain 0 (a slot a
/// restored volume filled; see `pool::domains`). Written in the commit that maps the slot,
/// removed in the one that frees it. Absent in pools made before it.
pub const SLOT_DOMAIN: TableDefinition<(u8, u64), u64> = TableDefinition::new("slot_domain");
/// Owner id → the root of an authenticated volume or snapshot (`volume::integrity::Root`).
pub const ROOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("roots");
/// Owner id → blocks of an authenticated volume that failed their check when read.
pub const INTEGRITY_ERRORS: TableDefinition<&str, u64> = TableDefinition::new("integrity_errors");

pub const META_FORMAT: &str = "format";
pub const POOL_FORMAT_V1: u64 = 1;

/// The `meta` key of a chunk size's high-water mark.
pub fn hwm_key(shift: u8) -> String {
    format!("hwm/{shift}")
}
