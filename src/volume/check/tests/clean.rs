//! Pools that ordinary operations make are clean; formats, foreign records and leaked
//! slots are judged and reported as they should be.

use super::*;

#[test]
fn a_pool_made_by_ordinary_operations_is_clean() {
    let f = fixture();
    let r = f.pool.check(&HeaderOwners).unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!((r.volumes, r.snapshots, r.pending_copies), (1, 1, 0));
    assert_eq!(r.format, Some(POOL_FORMAT_V1));
    let c = &r.chunk_sizes[0];
    assert_eq!(c.chunk_size, CHUNK);
    // a: 5 slots (chunk 0 copied); the snapshot shares 4 and holds the old chunk 0.
    assert_eq!(c.map_rows, 10);
    assert_eq!(c.slots_in_use, 6);
    assert_eq!(c.free_slots, 2);
    assert_eq!(c.high_water_mark, 8);
    assert!(r.to_string().ends_with("clean"), "{r}");
    // Repairing a clean pool changes nothing.
    let rep = f.pool.repair(&HeaderOwners).unwrap();
    assert!(rep.fixes.is_empty(), "{rep}");
    assert!(rep.freed.is_empty());
    assert_eq!(rep.after, r);
}

#[test]
fn a_header_under_another_id_and_a_pending_copy_are_judged() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Arc::new(Pool::open(&region(&dir)).unwrap());
    let h = volume_with_data(&pool, 2 * CHUNK, 1, 1);
    // A copy in progress: its map is counted like any other.
    let p = header(2 * CHUNK);
    pool.begin_pending(p.id.as_str(), &p.encode()).unwrap();
    let s = pool.reserve(SHIFT).unwrap();
    pool.remap(SHIFT, p.id.as_str(), 1, Some(s), None, 0);
    pool.commit().unwrap();
    let r = pool.check(&HeaderOwners).unwrap();
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.pending_copies, 1);
    assert_eq!(r.chunk_sizes[0].map_rows, 2);
    // The same header stored under a second id.
    let other = VolumeId::random();
    damage(&pool, |w| {
        w.open_table(VOLUMES)
            .unwrap()
            .insert(other.as_str(), h.encode().as_slice())
            .unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    let p = find(&r, ProblemKind::BadVolumeHeader, Some(other.as_str()), None);
    assert!(p.detail.contains(h.id.as_str()), "{p}");
}

#[test]
fn formats_empty_and_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let db = redb::Database::create(dir.path().join("m.redb")).unwrap();
    // No tables at all: only the marker is missing, and repair writes it.
    let r = check(&db.begin_read().unwrap(), &HeaderOwners).unwrap();
    let kinds: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, vec![ProblemKind::MissingFormat]);
    let w = db.begin_write().unwrap();
    let rep = repair(&w, &HeaderOwners).unwrap();
    w.commit().unwrap();
    assert!(rep.after.is_clean(), "{rep}");
    assert!(
        check(&db.begin_read().unwrap(), &HeaderOwners)
            .unwrap()
            .is_clean()
    );
    // A format from the future: reported alone, and repair refuses it.
    let w = db.begin_write().unwrap();
    w.open_table(META).unwrap().insert(META_FORMAT, 7).unwrap();
    w.commit().unwrap();
    let r = check(&db.begin_read().unwrap(), &HeaderOwners).unwrap();
    assert_eq!(r.problems.len(), 1);
    assert_eq!(r.problems[0].kind, ProblemKind::UnknownFormat);
    let w = db.begin_write().unwrap();
    let e = repair(&w, &HeaderOwners).unwrap_err();
    assert!(e.to_string().contains("upgrade cryptvol"), "{e}");
}

#[test]
fn leaked_slots_are_reported_as_ranges() {
    let mut taken = BTreeSet::new();
    assert_eq!(gaps(&taken, 0), vec![]);
    assert_eq!(gaps(&taken, 3), vec![(0, 2)]);
    taken.extend([0, 1, 4, 9]);
    assert_eq!(gaps(&taken, 12), vec![(2, 3), (5, 8), (10, 11)]);
    assert_eq!(gaps(&taken, 10), vec![(2, 3), (5, 8)]);
}
