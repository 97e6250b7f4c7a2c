//! Authenticated volumes' tables (`slot_auth`, `roots`, `integrity_errors`): a pool made by
//! ordinary operations is clean; orphan rows are found and removed, with the record of
//! every slot the repair frees; missing or damaged records of mapped slots are only
//! reported, and the volume they belong to indeed does not attach.

use super::*;
use crate::crypto::SecretBytes;
use crate::volume::integrity::IntegrityKeys;
use crate::volume::pool::Rollback;
use crate::volume::tables::{INTEGRITY_ERRORS, ROOTS, SLOT_AUTH, SLOT_DOMAIN, SNAPSHOTS};
use std::collections::BTreeMap;

/// Also says which snapshots are authenticated (from the header the test stores as the
/// record), rather than leaving it to their `roots` rows.
struct KnowsIntegrity;
impl OwnerRecords for KnowsIntegrity {
    fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)> {
        HeaderOwners.snapshot(record)
    }
    fn pending(&self, record: &[u8]) -> Result<(u8, u64)> {
        HeaderOwners.pending(record)
    }
    fn snapshot_authenticated(&self, record: &[u8]) -> Option<bool> {
        VolumeHeader::decode(record).ok().map(|h| h.integrity)
    }
}

fn keys() -> Arc<IntegrityKeys> {
    Arc::new(IntegrityKeys::from_data_key(&SecretBytes::new(vec![7; 64])))
}

fn open_auth(pool: &Arc<Pool>, h: &VolumeHeader) -> Result<OpenVolume> {
    OpenVolume::open_authenticated(pool.clone(), h, xts(), keys(), Rollback::Refuse)
}

fn read_auth(pool: &Arc<Pool>, h: &VolumeHeader) -> Vec<u8> {
    let v = open_auth(pool, h).unwrap();
    let mut buf = vec![0u8; h.size as usize];
    v.read(0, &mut buf).unwrap();
    buf
}

/// The committed `slot_auth` rows.
fn records(pool: &Pool) -> BTreeMap<(u8, u64), Vec<u8>> {
    let r = pool.db().unwrap().begin_read().unwrap();
    r.open_table(SLOT_AUTH)
        .unwrap()
        .iter()
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            (k.value(), v.value().to_vec())
        })
        .collect()
}

/// The slot of `owner`'s chunk `chunk`.
fn slot_of(pool: &Pool, owner: &str, chunk: u64) -> u64 {
    pool.load_map(owner)
        .unwrap()
        .into_iter()
        .find(|(c, _)| *c == chunk)
        .unwrap()
        .1
        .0
}

fn kinds(r: &CheckReport) -> BTreeSet<ProblemKind> {
    r.problems.iter().map(|p| p.kind).collect()
}

/// An authenticated volume `a` (8 chunks, 0..5 written, then chunk 0 rewritten after a
/// snapshot, so the snapshot keeps the old chunk 0 alone and shares 1..5), a plain volume
/// `c` beside it, and a deleted plain volume whose two slots are free.
struct AuthFixture {
    _dir: tempfile::TempDir,
    pool: Arc<Pool>,
    a: VolumeHeader,
    snap: String,
    c: VolumeHeader,
    a_data: Vec<u8>,
}

fn auth_fixture() -> AuthFixture {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::open(&region(&dir)).unwrap());
    let a = VolumeHeader {
        integrity: true,
        ..header(8 * CHUNK)
    };
    pool.create_volume(&a).unwrap();
    {
        let v = open_auth(&pool, &a).unwrap();
        for c in 0..5 {
            v.write(c * CHUNK, &pattern(CHUNK, 10 + c as u8)).unwrap();
        }
        v.flush().unwrap();
    }
    let snap = "snap-0123456789abcdef0".to_string();
    let snap_header = VolumeHeader {
        id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
        ..a.clone()
    };
    pool.create_snapshot(&a, &snap.clone().try_into().unwrap(), &snap_header.encode())
        .unwrap();
    {
        let v = open_auth(&pool, &a).unwrap();
        v.write(100, &pattern(5000, 99)).unwrap();
        v.flush().unwrap();
    }
    let c = volume_with_data(&pool, 4 * CHUNK, 2, 30);
    let b = volume_with_data(&pool, 4 * CHUNK, 2, 50);
    pool.delete_volume(&b).unwrap();
    let a_data = read_auth(&pool, &a);
    // Every slot of `a` and of its snapshot has a record (6 slots), `c`'s have none.
    let recs = records(&pool);
    assert_eq!(recs.len(), 6, "{recs:?}");
    assert_ne!(slot_of(&pool, a.id.as_str(), 0), slot_of(&pool, &snap, 0));
    assert!(
        slots(&pool, c.id.as_str())
            .iter()
            .all(|s| !recs.contains_key(&(SHIFT, *s)))
    );
    AuthFixture {
        _dir: dir,
        pool,
        a,
        snap,
        c,
        a_data,
    }
}

/// No false positive: authenticated volumes, their snapshots and plain volumes side by
/// side are clean, whoever says which snapshots are authenticated; repair changes nothing.
#[test]
fn a_pool_with_authenticated_volumes_is_clean() {
    let f = auth_fixture();
    for owners in [&HeaderOwners as &dyn OwnerRecords, &KnowsIntegrity] {
        let r = f.pool.check(owners).unwrap();
        assert!(r.is_clean(), "{r}");
    }
    // Deleting the snapshot frees its own slot, and the commit removes its record.
    let before = records(&f.pool);
    let own = slot_of(&f.pool, &f.snap, 0);
    f.pool
        .delete_snapshot(&f.snap.clone().try_into().unwrap(), SHIFT)
        .unwrap();
    assert!(!records(&f.pool).contains_key(&(SHIFT, own)));
    assert_eq!(records(&f.pool).len(), before.len() - 1);
    let r = f.pool.check(&KnowsIntegrity).unwrap();
    assert!(r.is_clean(), "{r}");
    let rep = f.pool.repair(&KnowsIntegrity).unwrap();
    assert!(rep.fixes.is_empty(), "{rep}");
    assert_eq!(read_auth(&f.pool, &f.a), f.a_data);
}

/// Records of slots no map row points at, and roots and error counts of owners that do
/// not exist, are found and removed; so is the record of a slot the repair frees because
/// its only map rows were an orphan's.
#[test]
fn orphan_records_roots_and_error_counts_are_found_and_removed() {
    let f = auth_fixture();
    let pool = &f.pool;
    assert!(pool.check(&HeaderOwners).unwrap().is_clean());
    let a_id = f.a.id.as_str();
    let snap_own = slot_of(pool, &f.snap, 0);
    let free = free_slots(pool);
    assert_eq!(free.len(), 2);
    let top = hwm(pool);
    let record = records(pool)[&(SHIFT, slot_of(pool, a_id, 1))].clone();
    let ghost = "vol-00000000000000dead";
    damage(pool, |w| {
        let mut t = w.open_table(SLOT_AUTH).unwrap();
        // A record of a free slot, and of one past the high-water mark.
        t.insert((SHIFT, free[0]), record.as_slice()).unwrap();
        t.insert((SHIFT, top + 3), record.as_slice()).unwrap();
        // A record of a slot whose count is leaked (no map row points at it).
        t.insert((SHIFT, free[1]), record.as_slice()).unwrap();
        w.open_table(FREE)
            .unwrap()
            .remove((SHIFT, free[1]))
            .unwrap();
        w.open_table(REFS)
            .unwrap()
            .insert((SHIFT, free[1]), 1)
            .unwrap();
        // The snapshot's record is lost: its map, its root and its own slot's record
        // are left behind.
        w.open_table(SNAPSHOTS)
            .unwrap()
            .remove(f.snap.as_str())
            .unwrap();
        // An error count of an owner that never existed.
        w.open_table(INTEGRITY_ERRORS)
            .unwrap()
            .insert(ghost, 3)
            .unwrap();
    });

    let r = pool.check(&HeaderOwners).unwrap();
    let p = find(&r, ProblemKind::OrphanSlotRecord, None, Some(free[0]));
    assert!(p.detail.contains("the slot is free"), "{p}");
    assert!(p.repairable);
    let p = find(&r, ProblemKind::OrphanSlotRecord, None, Some(top + 3));
    assert!(p.detail.contains("past the high-water mark"), "{p}");
    let p = find(&r, ProblemKind::OrphanSlotRecord, None, Some(free[1]));
    assert!(p.detail.contains("count 1 is leaked"), "{p}");
    find(&r, ProblemKind::OrphanSlotRecord, None, Some(snap_own));
    let p = find(&r, ProblemKind::OrphanRoot, Some(&f.snap), None);
    assert!(p.repairable);
    find(&r, ProblemKind::OrphanIntegrityErrors, Some(ghost), None);
    find(&r, ProblemKind::OrphanMap, Some(&f.snap), None);
    // Records of mapped slots are not orphans; nothing is called missing.
    let orphans = r
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::OrphanSlotRecord)
        .count();
    assert_eq!(orphans, 4, "{r}");
    assert!(!kinds(&r).contains(&ProblemKind::MissingSlotRecord), "{r}");
    assert!(r.problems.iter().all(|p| p.repairable), "{r}");
    assert!(
        r.to_string().contains(&format!(
            "orphan-slot-record: slot {} of the 64.0 KiB chunks: a slot record, but the slot is free",
            free[0]
        )),
        "{r}"
    );
    let j = serde_json::to_value(&r).unwrap();
    assert!(
        j["Problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Kind"] == "orphan-integrity-errors" && p["Object"] == ghost),
        "{j:#}"
    );

    let rep = pool.repair(&HeaderOwners).unwrap();
    assert!(rep.after.is_clean(), "{rep}");
    assert!(rep.not_repaired.is_empty(), "{rep}");
    // The snapshot's own slot and the leaked one are freed, and lose their records.
    assert!(rep.freed.contains(&(SHIFT, snap_own)), "{rep}");
    assert!(rep.freed.contains(&(SHIFT, free[1])), "{rep}");
    let recs = records(pool);
    for s in [free[0], free[1], top + 3, snap_own] {
        assert!(!recs.contains_key(&(SHIFT, s)), "slot {s}: {rep}");
    }
    // `a`'s records are all kept (5 slots).
    assert_eq!(recs.len(), 5, "{recs:?}");
    let actions: Vec<FixAction> = rep.fixes.iter().map(|x| x.action).collect();
    for a in [
        FixAction::DroppedSlotRecords,
        FixAction::DroppedRoot,
        FixAction::DroppedIntegrityErrors,
    ] {
        assert!(actions.contains(&a), "{a} missing: {rep}");
    }
    assert!(rep.to_string().contains("removed 4 slot records"), "{rep}");
    let rd = pool.db().unwrap().begin_read().unwrap();
    assert!(
        rd.open_table(ROOTS)
            .unwrap()
            .get(f.snap.as_str())
            .unwrap()
            .is_none()
    );
    assert!(rd.open_table(ROOTS).unwrap().get(a_id).unwrap().is_some());
    assert!(
        rd.open_table(INTEGRITY_ERRORS)
            .unwrap()
            .get(ghost)
            .unwrap()
            .is_none()
    );
    drop(rd);
    assert_eq!(pool.check(&HeaderOwners).unwrap(), rep.after);
    // `a` still attaches against its root and reads the same; `c` too.
    assert_eq!(read_auth(pool, &f.a), f.a_data);
    assert_eq!(read_all(pool, &f.c)[..CHUNK as usize], pattern(CHUNK, 30));
}

/// A mapped slot of an authenticated owner with no record, or a record that does not
/// decode, is reported for every owner that maps it and left alone by repair; the volume
/// indeed does not attach.
#[test]
fn missing_or_damaged_records_of_mapped_slots_are_reported_not_repaired() {
    let f = auth_fixture();
    let pool = &f.pool;
    assert!(pool.check(&HeaderOwners).unwrap().is_clean());
    let a_id = f.a.id.as_str();
    let shared = slot_of(pool, a_id, 1);
    assert_eq!(slot_of(pool, &f.snap, 1), shared);
    let a_own = slot_of(pool, a_id, 0);
    let snap_own = slot_of(pool, &f.snap, 0);
    let mut bad = records(pool)[&(SHIFT, a_own)].clone();
    bad[0] = 9; // a version no cryptvol writes
    damage(pool, |w| {
        let mut t = w.open_table(SLOT_AUTH).unwrap();
        t.remove((SHIFT, shared)).unwrap();
        t.insert((SHIFT, a_own), bad.as_slice()).unwrap();
    });

    let r = pool.check(&HeaderOwners).unwrap();
    let p = find(&r, ProblemKind::MissingSlotRecord, Some(a_id), Some(shared));
    assert_eq!(p.chunk, Some(1));
    assert!(!p.repairable);
    assert!(
        p.detail
            .contains(&format!("run `cryptvol volume verify {a_id}`")),
        "{p}"
    );
    assert!(
        p.detail.contains("restore the volume from a snapshot"),
        "{p}"
    );
    assert!(
        p.to_string().starts_with(&format!(
            "missing-slot-record: {a_id} chunk 1, slot {shared} of the 64.0 KiB chunks: "
        )),
        "{p}"
    );
    // The snapshot maps the same slot (it has a root: authenticated).
    let p = find(
        &r,
        ProblemKind::MissingSlotRecord,
        Some(&f.snap),
        Some(shared),
    );
    assert_eq!(p.chunk, Some(1));
    let p = find(&r, ProblemKind::BadSlotRecord, Some(a_id), Some(a_own));
    assert_eq!(p.chunk, Some(0));
    assert!(p.detail.contains("(version 9)"), "{p}");
    assert!(!p.repairable);
    assert_eq!(r.problems.len(), 3, "{r}");
    assert!(open_auth(pool, &f.a).is_err());

    let rep = pool.repair(&HeaderOwners).unwrap();
    assert!(rep.fixes.is_empty(), "{rep}");
    assert_eq!(rep.not_repaired.len(), 3, "{rep}");
    assert!(
        rep.not_repaired
            .iter()
            .all(|p| p.detail.contains("not repaired: tags vouch for the data")),
        "{rep}"
    );
    assert_eq!(rep.after.problems.len(), 3, "{rep}");
    assert_eq!(pool.refcount(SHIFT, SlotNo(shared)).unwrap(), 2);
    assert_eq!(records(pool)[&(SHIFT, a_own)], bad);
    assert!(!records(pool).contains_key(&(SHIFT, shared)));

    // Without its `roots` row a snapshot's records are judged only when the snapshot
    // layer says it is authenticated.
    damage(pool, |w| {
        w.open_table(ROOTS)
            .unwrap()
            .remove(f.snap.as_str())
            .unwrap();
        w.open_table(SLOT_AUTH)
            .unwrap()
            .remove((SHIFT, snap_own))
            .unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    assert!(
        !r.problems
            .iter()
            .any(|p| p.object.as_deref() == Some(&f.snap)),
        "{r}"
    );
    let r = pool.check(&KnowsIntegrity).unwrap();
    let p = find(
        &r,
        ProblemKind::MissingSlotRecord,
        Some(&f.snap),
        Some(snap_own),
    );
    assert_eq!(p.chunk, Some(0));
    assert!(
        p.detail
            .ends_with("will not attach: restore from another snapshot"),
        "{p}"
    );
    find(
        &r,
        ProblemKind::MissingSlotRecord,
        Some(&f.snap),
        Some(shared),
    );
    assert_eq!(r.problems.len(), 4, "{r}");
}

/// A lost `slot_auth` table is a line per chunk for the first ones of each owner, then
/// one line with the count of the others.
#[test]
fn many_missing_records_are_summed_up_per_owner() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::open(&region(&dir)).unwrap());
    let h = VolumeHeader {
        integrity: true,
        ..header(40 * CHUNK)
    };
    pool.create_volume(&h).unwrap();
    {
        let v = open_auth(&pool, &h).unwrap();
        for c in 0..40 {
            v.write(c * CHUNK, &pattern(4096, c as u8)).unwrap();
        }
        v.flush().unwrap();
    }
    assert!(pool.check(&HeaderOwners).unwrap().is_clean());
    damage(&pool, |w| {
        w.delete_table(SLOT_AUTH).unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    assert_eq!(r.problems.len(), 33, "{r}");
    assert!(
        r.problems
            .iter()
            .all(|p| p.kind == ProblemKind::MissingSlotRecord)
    );
    assert_eq!(r.problems.iter().filter(|p| p.chunk.is_some()).count(), 32);
    let last = r.problems.last().unwrap();
    assert_eq!(last.object.as_deref(), Some(h.id.as_str()));
    assert_eq!(last.detail, "and 8 more like the above");
}

/// `slot_domain` rows (`pool::domains`): those of mapped slots (the plain volume `c` is a
/// clone: its lineage is another volume's, so its slots have rows) are not orphans; a row
/// of a free slot is found and removed, and `c` still reads its data.
#[test]
fn orphan_domain_rows_are_found_and_removed() {
    let f = auth_fixture();
    let pool = &f.pool;
    let c_data = read_all(pool, &f.c);
    let mapped = pool.load_domains(f.c.id.as_str(), SHIFT).unwrap();
    assert_eq!(mapped.len(), 2, "c's two chunks are in its own domain");
    assert!(pool.check(&HeaderOwners).unwrap().is_clean());
    let free = free_slots(pool);
    damage(pool, |w| {
        w.open_table(SLOT_DOMAIN)
            .unwrap()
            .insert((SHIFT, free[0]), 99u64)
            .unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    let p = find(&r, ProblemKind::OrphanSlotDomain, None, Some(free[0]));
    assert!(p.repairable, "{p}");
    let orphans = r
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::OrphanSlotDomain)
        .count();
    assert_eq!(orphans, 1, "{r}");
    assert!(r.to_string().contains("orphan-slot-domain"), "{r}");
    let rep = pool.repair(&HeaderOwners).unwrap();
    assert!(rep.after.is_clean(), "{rep}");
    assert!(
        rep.fixes
            .iter()
            .any(|x| x.action == FixAction::DroppedSlotDomains),
        "{rep}"
    );
    assert_eq!(pool.load_domains(f.c.id.as_str(), SHIFT).unwrap(), mapped);
    assert_eq!(read_all(pool, &f.c), c_data);
}
