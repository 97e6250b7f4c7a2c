//! The simulator's tests: `disk.rs` (its own contract: reads, crashes, torn writes,
//! faults, the storage), `redb_crashes.rs` (what it showed about redb). The helpers they
//! share are here.

mod disk;
mod redb_crashes;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::backend::{META_FILE, SimBackend};
use crate::volume::storage::{BlockStore, PoolStorage, SyncLatch, data_file_name};

use super::*;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const DIR: &str = "/sim/pool";

fn is_os_error(r: io::Result<()>, code: i32) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(code))
}

fn read(file: &SimFile, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0xEE; len];
    file.read_at(&mut buf, off).unwrap();
    buf
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i * 7 % 251) as u8))
        .collect()
}
