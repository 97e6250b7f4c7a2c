//! Reaching into a region's thin pool while nothing runs, as an attacker who can write the
//! pool's files would: where a volume block's ciphertext lies in the data file (through the
//! `maps` table of `meta.redb`), reading and overwriting it, the per-slot authentication
//! records, and copying the whole pool directory aside and back (a rollback).
//!
//! Every function first waits until no daemon serves the data dir (after the last detach or
//! unmount the daemon exits by itself) and fails the test if one still runs: the pool's
//! files may only be touched while no cryptvol process owns them.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cryptvol::volume::tables::MAPS;
use redb::{Database, ReadableDatabase, TableDefinition, TableHandle};

use super::mount::{BLOCK, CHUNK, VolEnv, daemons_of, wait_until};

/// log2 of the default chunk size (1 MiB).
pub const SHIFT: u8 = 20;
/// 4 KiB blocks per 1 MiB chunk.
pub const BLOCKS_PER_CHUNK: u64 = CHUNK / BLOCK;

/// (chunk shift, slot) → the slot's authentication record (its MAC domain and, per block,
/// write generation and MAC). Named here, not taken from the crate, so that the tests
/// check the table docs/formats.md describes.
pub const SLOT_AUTH: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("slot_auth");

/// Fails the test unless no daemon serves the data dir (waiting up to 15 s for one that is
/// exiting after the last detach).
#[track_caller]
pub fn assert_pool_idle(v: &VolEnv) {
    assert!(
        v.wait_no_daemon(Duration::from_secs(15)),
        "a daemon still serves the data dir, the pool cannot be touched: {:?}",
        daemons_of(&v.data)
    );
}

/// Opens meta.redb once nothing runs. A daemon that has just exited may hold the file for a
/// moment longer (its other threads finishing), so the open is retried for a while.
#[track_caller]
pub fn open_meta(v: &VolEnv) -> Database {
    assert_pool_idle(v);
    let path = v.pool_dir().join("meta.redb");
    let mut db = None;
    let mut last = String::new();
    wait_until(Duration::from_secs(10), || match Database::open(&path) {
        Ok(d) => {
            db = Some(d);
            true
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    db.unwrap_or_else(|| panic!("{path:?} does not open (is the pool owned?): {last}"))
}

/// The slot that holds chunk `chunk` of `owner` (a volume or snapshot id), if it has one.
pub fn slot_of(db: &Database, owner: &str, chunk: u64) -> Option<u64> {
    let r = db.begin_read().expect("read transaction");
    let t = r.open_table(MAPS).expect("maps table");
    t.get((owner, chunk)).expect("maps row").map(|g| g.value())
}

/// Every slot of `owner`, in chunk order.
pub fn slots_of(db: &Database, owner: &str) -> Vec<u64> {
    let r = db.begin_read().expect("read transaction");
    let t = r.open_table(MAPS).expect("maps table");
    t.range((owner, 0)..=(owner, u64::MAX))
        .expect("maps range")
        .map(|i| i.expect("maps row").1.value())
        .collect()
}

/// The row of `slot` in `slot_auth`: Ok(None) when the slot has none, Err when the table
/// is missing or of another type than docs/formats.md says (the message says which).
pub fn auth_record(db: &Database, slot: u64) -> Result<Option<Vec<u8>>, String> {
    let r = db.begin_read().map_err(|e| e.to_string())?;
    let names: Vec<String> = r
        .list_tables()
        .map_err(|e| e.to_string())?
        .map(|h| h.name().to_string())
        .collect();
    let t = r
        .open_table(SLOT_AUTH)
        .map_err(|e| format!("table slot_auth: {e} (tables in meta.redb: {names:?})"))?;
    let row = t.get((SHIFT, slot)).map_err(|e| e.to_string())?;
    Ok(row.map(|g| g.value().to_vec()))
}

/// Where the ciphertext of block `block` of `vol` lies: (data file, byte offset). Panics if
/// the block's chunk has no slot (never written). A block of an authenticated volume lies
/// in its slot's first half (the data file) or second half (`data-1024k.alt`), as its
/// record's halves map says (docs/formats.md, "Slot record", version 2).
#[track_caller]
pub fn block_location(v: &VolEnv, vol: &str, block: u64) -> (PathBuf, u64) {
    let db = open_meta(v);
    let chunk = block / BLOCKS_PER_CHUNK;
    let slot = slot_of(&db, vol, chunk)
        .unwrap_or_else(|| panic!("{vol}: chunk {chunk} (block {block}) has no slot in maps"));
    let off = slot * CHUNK + (block % BLOCKS_PER_CHUNK) * BLOCK;
    let i = (block % BLOCKS_PER_CHUNK) as usize;
    let in_second_half = matches!(
        auth_record(&db, slot),
        Ok(Some(r)) if r[0] == 2 && r[16 + i / 8] & (1 << (i % 8)) != 0
    );
    if in_second_half {
        (v.pool_dir().join("data-1024k.alt"), off)
    } else {
        (v.pool_data_file(), off)
    }
}

/// The 4 KiB of ciphertext of block `block` of `vol`, as the pool holds it.
#[track_caller]
pub fn read_ct(v: &VolEnv, vol: &str, block: u64) -> Vec<u8> {
    let (file, off) = block_location(v, vol, block);
    let f = std::fs::File::open(&file).unwrap_or_else(|e| panic!("open {file:?}: {e}"));
    let mut b = vec![0; BLOCK as usize];
    f.read_exact_at(&mut b, off)
        .unwrap_or_else(|e| panic!("read {file:?} at {off}: {e}"));
    b
}

/// Overwrites the ciphertext of block `block` of `vol` in the pool's data file (synced).
#[track_caller]
pub fn write_ct(v: &VolEnv, vol: &str, block: u64, ct: &[u8]) {
    assert_eq!(ct.len(), BLOCK as usize, "a block's ciphertext is 4 KiB");
    let (file, off) = block_location(v, vol, block);
    let f = OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap_or_else(|e| panic!("open {file:?} for writing: {e}"));
    f.write_all_at(ct, off)
        .unwrap_or_else(|e| panic!("write {file:?} at {off}: {e}"));
    f.sync_all().expect("fsync the data file");
}

/// Flips bit `bit` (0..32768) of block `block`'s ciphertext.
#[track_caller]
pub fn flip_bit(v: &VolEnv, vol: &str, block: u64, bit: usize) {
    let mut ct = read_ct(v, vol, block);
    ct[bit / 8] ^= 1 << (bit % 8);
    write_ct(v, vol, block, &ct);
}

/// Copies the pool directory (metadata and data files) to `to`, which must not exist.
#[track_caller]
pub fn save_pool(v: &VolEnv, to: &Path) {
    assert_pool_idle(v);
    assert!(!to.exists(), "{to:?} exists already");
    copy_dir(&v.pool_dir(), to);
}

/// Replaces the pool directory by the copy at `from` (a rollback of the whole pool).
#[track_caller]
pub fn put_pool_back(v: &VolEnv, from: &Path) {
    assert_pool_idle(v);
    let pool = v.pool_dir();
    std::fs::remove_dir_all(&pool).unwrap_or_else(|e| panic!("remove {pool:?}: {e}"));
    copy_dir(from, &pool);
}

#[track_caller]
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {to:?}: {e}"));
    let rd = std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {from:?}: {e}"));
    for e in rd {
        let e = e.expect("dir entry");
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ty = e.file_type().expect("file type");
        if ty.is_dir() {
            copy_dir(&src, &dst);
        } else if ty.is_file() {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {src:?}: {e}"));
        }
    }
}
