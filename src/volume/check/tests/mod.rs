//! The checker's tests on real pools: `clean.rs` (what ordinary operations make, formats,
//! reports), `repair.rs` (damage found, repaired, or only reported), `auth.rs` (the tables
//! of authenticated volumes). The helpers and the damaged pool's fixture they share are
//! here.

mod auth;
mod clean;
mod repair;

use crate::volume::test_support::*;
use std::collections::BTreeSet;
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::scan::gaps;
use super::*;
use crate::datadir::RegionDir;
use crate::volume::OpenVolume;
use crate::volume::header::VolumeHeader;
use crate::volume::ids::{SlotNo, VolumeId};
use crate::volume::tables::{
    FREE, LEASES, MAPS, META, META_FORMAT, POOL_FORMAT_V1, REFS, VOLUMES, hwm_key,
};

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
