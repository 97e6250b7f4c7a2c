//! A simulated disk for deterministic crash tests of the pool, modelled on redb's own
//! crash-consistency tests (`tests/crash_consistency.rs` in the redb crate).
//!
//! # What it models
//!
//! A [`SimDisk`] is a set of named files in memory. Each file has a *durable image* (what
//! the platter holds) and a *volatile layer*: the ordered list of writes, punches and
//! length changes made since the file's last successful `sync_data`. Reads see the latest
//! state (durable image with the volatile layer applied), as reads through the page cache
//! do. `sync_data` on a file makes that file's volatile operations durable, length
//! changes included (`fdatasync` flushes the size when it is needed to read the data).
//!
//! A crash freezes the disk: [`SimDisk::arm_crash_at_sync`] kills the machine at the n-th
//! `sync_data` call (over all files, before that sync takes effect), [`SimDisk::crash_now`]
//! at once. From then on every operation on every handle of that disk fails with EIO.
//! [`SimDisk::after_crash`] builds a new disk (fresh handles, nothing open) from what
//! survived, chosen by a [`CrashMode`]:
//! - [`CrashMode::DropVolatile`]: only the durable images;
//! - [`CrashMode::KeepVolatile`]: everything, as if the page cache was written back;
//! - [`CrashMode::KeepRandomSubset`]: each volatile operation kept or dropped on its own,
//!   which models the page cache writing back dirty pages in any order before the crash
//!   (a later write may reach the disk while an earlier one does not);
//! - [`CrashMode::TornWrites`]: the same, and a kept write may keep only some of its
//!   512-byte sectors (a write torn by power loss).
//!
//! This is what a Linux filesystem on a well-behaved disk guarantees, and no more: data is
//! durable once `fdatasync` returned Ok; before that any subset of the dirty data may have
//! reached the disk, in any order; the disk writes a 512-byte sector atomically (so does
//! every 4 KiB-sector disk, whose outcomes are a subset of these) and never changes a byte
//! outside the range written ("powersafe overwrite", which redb and SQLite assume too). The
//! simulator therefore never corrupts synced data and never tears within a sector. redb's
//! design document (`docs/design.md`, "Assumptions about underlying media") asks for no more
//! than this: single bytes written atomically (sectors are), data durable after fsync, and
//! powersafe overwrite.
//!
//! Faults: [`SimDisk::fail_at`] fails the n-th I/O call (a counter over reads, writes,
//! punches, syncs and length changes of all files, see [`SimDisk::op_count`]) once, with
//! EIO or ENOSPC; [`SimDisk::fail_sync`] the n-th sync; [`SimDisk::fail_from`] fails
//! every call from the n-th on (a dead disk). A failed call applies nothing, except a
//! failed sync, which behaves as Linux after a writeback error ("fsyncgate"): the file's
//! pending operations are no longer pending, each reached the disk whole or not at all
//! (chosen by the disk's seeded PRNG; [`SimDisk::set_failed_sync`] with
//! [`FailedSync::WritesNothing`] makes it none, the worst case), reads still see them
//! all, and a later successful sync does not write the others. A crash then keeps exactly
//! those that reached the disk, in every mode; [`SimDisk::drop_cache`] makes reads see the
//! disk again, and [`SimDisk::restarted`] is the disk the next process finds (page cache
//! kept).
//!
//! [`SimStorage`] is a [`PoolStorage`] over a `SimDisk`: data files are
//! [`BlockStore`]s, the metadata is a redb database over a [`redb::StorageBackend`] on the
//! file `meta.redb`, and a second `open_metadata` while a database is live is refused with
//! `DatabaseAlreadyOpen` (the one-owner rule of the pool, which `FileStorage` gets from
//! redb's file lock).
//!
//! # What it showed about redb 4.6 (the tests in `tests/redb_crashes.rs`)
//!
//! - With `Durability::Immediate` (the default), a crash at any sync point after the
//!   database was created, in every mode, leaves exactly the state of the last commit that
//!   returned Ok or of the commit in flight, never a mix, and redb repairs it on open. A
//!   commit writes its 320-byte header (in one sector) and its pages, then syncs once
//!   ("1-phase + checksum"): if the header lands without all the pages, the checksums send
//!   redb back to the previous commit. File growth is synced on its own before a header
//!   refers to it. No change to the simulator was needed for redb to survive reordering and
//!   torn sectors.
//! - Creating a database is not crash-atomic: redb extends the new file, syncs, and only
//!   then writes the header with the magic number; a crash before that second sync is
//!   durable leaves a non-empty file without the magic number, which redb refuses for good
//!   (`StorageError::Io` of kind `InvalidData`, "Not a redb database: magic number
//!   mismatch"). This holds on a real disk too; the pool has to create its metadata so that
//!   such a file cannot strand it.
//! - A commit that failed with an I/O error may still be there when the database is
//!   reopened without a crash (the failed sync left its writes in the page cache): an Err
//!   from `commit` means "unknown", not "rolled back".
//!
//! # What it does not model
//!
//! - Filesystem metadata: directory entries, creation, rename and unlink. A file exists as
//!   soon as it is first opened and survives every crash (possibly empty); there is no
//!   directory fsync to forget.
//! - Writeback at page granularity *within* one operation without tearing: with
//!   `KeepRandomSubset` a large write is kept or dropped whole; `TornWrites` covers the
//!   partial outcomes at sector granularity.
//! - A failed sync's partial writeback within one operation: each operation it covered
//!   lands whole or not at all (no torn sectors).
//! - Real space accounting: ENOSPC happens only when injected; holes take no space.
//! - Corruption of durable data (bit rot, misdirected or lost writes after a flush).
//! - O_DIRECT's memory alignment rule; `write_direct` checks only that offset and length
//!   are multiples of 4 KiB, the contract of [`BlockStore::write_direct`].
//! - redb's byte-range locks: the backend leaves them unsupported, so redb runs in its
//!   exclusive-writer mode and the one-owner rule is enforced by `open_metadata`.
//!
//! # Files
//!
//! - `image.rs`: one file's contents (sparse pages), its durable image and volatile layer.
//! - `disk.rs`: [`SimDisk`], the files and the I/O calls on them; [`SimFile`], a
//!   [`BlockStore`].
//! - `crash.rs`: crashes and injected faults ([`CrashMode`], [`FaultKind`]), and what
//!   survives a crash.
//! - `backend.rs`: [`SimStorage`], the pool's storage, and redb's backend on `meta.redb`.
//! - `tests/`: the simulator's own tests, and redb crashed and failed at every point.

mod backend;
mod crash;
mod disk;
mod image;

#[cfg(test)]
mod tests;

#[cfg(doc)]
use super::{BlockStore, PoolStorage};

pub use backend::SimStorage;
pub use crash::{CrashMode, FailedSync, FaultKind};
pub use disk::{SimDisk, SimFile};

/// The unit of an atomic write on the simulated disk.
pub const SECTOR: u64 = 512;
