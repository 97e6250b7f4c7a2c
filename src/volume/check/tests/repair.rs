//! Damage to the bookkeeping is found and repaired with the data intact; damage repair
//! cannot undo (unreadable records, rows past the end) is reported and its slots kept.

use super::*;

#[test]
fn every_repairable_damage_is_found_and_repaired_and_the_data_survives() {
    let f = fixture();
    let pool = &f.pool;
    let a_id = f.a.id.as_str();
    let a_slots = slots(pool, a_id);
    let snap_slots = slots(pool, &f.snap);
    let shared: Vec<u64> = a_slots
        .iter()
        .copied()
        .filter(|s| snap_slots.contains(s))
        .collect();
    let own: Vec<u64> = a_slots
        .iter()
        .copied()
        .filter(|s| !snap_slots.contains(s))
        .collect();
    assert_eq!((shared.len(), own.len()), (4, 1));
    let free = free_slots(pool);
    assert_eq!(free.len(), 2);
    let top = hwm(pool);
    let orphan = "vol-00000000000000dead";

    damage(pool, |w| {
        let mut refs = w.open_table(REFS).unwrap();
        // Leaked reference: one too many on a shared slot.
        refs.insert((SHIFT, shared[0]), 3).unwrap();
        // Missing reference: a shared slot counted once.
        refs.insert((SHIFT, shared[1]), 1).unwrap();
        // Missing reference: a slot with no count at all.
        refs.remove((SHIFT, own[0])).unwrap();
        // Past the high-water mark.
        refs.insert((SHIFT, top + 5), 1).unwrap();
        let mut fr = w.open_table(FREE).unwrap();
        // Leaked slot: a free slot forgotten.
        fr.remove((SHIFT, free[0])).unwrap();
        // Double owner: a referenced slot in the free list.
        fr.insert((SHIFT, shared[2]), ()).unwrap();
        // Orphan map rows.
        let mut maps = w.open_table(MAPS).unwrap();
        maps.insert((orphan, 0), shared[3]).unwrap();
        maps.insert((orphan, 1), free[1]).unwrap();
        // A stale lease (the table does not exist yet: old pools lack it).
        w.open_table(LEASES)
            .unwrap()
            .insert(("snap-00000000000000bad", "copy-to-eu-1"), b"{}".as_slice())
            .unwrap();
        // No format marker.
        w.open_table(META).unwrap().remove(META_FORMAT).unwrap();
    });

    let r = pool.check(&HeaderOwners).unwrap();
    let text = r.to_string();
    assert!(!r.is_clean());
    assert!(!r.clean);
    find(&r, ProblemKind::LeakedReference, None, Some(shared[0]));
    let p = find(&r, ProblemKind::MissingReference, None, Some(shared[1]));
    assert!(p.detail.contains("count 1, but 2 map rows"), "{p}");
    find(&r, ProblemKind::MissingReference, None, Some(own[0]));
    find(&r, ProblemKind::PastHighWater, None, Some(top + 5));
    let p = find(&r, ProblemKind::LeakedSlot, None, Some(free[0]));
    assert_eq!(p.last_slot, None, "{p}");
    find(&r, ProblemKind::DoubleOwner, None, Some(shared[2]));
    let p = find(&r, ProblemKind::OrphanMap, Some(orphan), None);
    assert!(p.detail.contains("2 map rows"), "{p}");
    find(
        &r,
        ProblemKind::StaleLease,
        Some("snap-00000000000000bad"),
        None,
    );
    find(&r, ProblemKind::MissingFormat, None, None);
    assert!(r.problems.iter().all(|p| p.repairable), "{text}");
    // One line per problem after the summary, each naming where.
    assert_eq!(text.lines().count(), r.problems.len() + 1, "{text}");
    assert!(
        text.contains(&format!(
            "double-owner: slot {} of the 64.0 KiB chunks: in the free list",
            shared[2]
        )),
        "{text}"
    );
    // JSON names are stable.
    let j = serde_json::to_value(&r).unwrap();
    assert!(
        j["Problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Kind"] == "orphan-map" && p["Object"] == orphan),
        "{j:#}"
    );

    let rep = pool.repair(&HeaderOwners).unwrap();
    assert!(rep.after.is_clean(), "{rep}");
    assert!(rep.not_repaired.is_empty(), "{rep}");
    assert_eq!(rep.freed, vec![(SHIFT, free[0])], "{rep}");
    let actions: BTreeSet<String> = rep.fixes.iter().map(|x| x.action.to_string()).collect();
    for a in [
        "wrote-format-marker",
        "dropped-orphan-map",
        "set-refcount",
        "removed-free",
        "freed-slots",
        "removed-stale-lease",
    ] {
        assert!(actions.contains(a), "{a} missing: {rep}");
    }
    let again = pool.check(&HeaderOwners).unwrap();
    assert!(again.is_clean(), "{again}");
    assert_eq!(again, rep.after);
    assert_eq!(pool.refcount(SHIFT, SlotNo(shared[0])).unwrap(), 2);
    assert_eq!(pool.refcount(SHIFT, SlotNo(shared[1])).unwrap(), 2);
    assert_eq!(pool.refcount(SHIFT, SlotNo(own[0])).unwrap(), 1);
    assert!(pool.load_map(orphan).unwrap().is_empty());

    // The data reads back the same, through a fresh pool (allocators reloaded).
    let (pool, region) = (f.pool, f.region);
    drop(pool);
    let pool = Arc::new(Pool::open(&region).unwrap());
    assert_eq!(read_all(&pool, &f.a), f.a_data);
    let restored = VolumeHeader {
        id: VolumeId::random(),
        ..f.a.clone()
    };
    pool.restore_volume(&f.snap.clone().try_into().unwrap(), &restored)
        .unwrap();
    assert_eq!(read_all(&pool, &restored), f.snap_data);
    // And writing after the repair allocates without disturbing either.
    let c = volume_with_data(&pool, 4 * CHUNK, 3, 77);
    assert_eq!(read_all(&pool, &f.a), f.a_data);
    assert_eq!(read_all(&pool, &restored), f.snap_data);
    assert_eq!(read_all(&pool, &c)[..CHUNK as usize], pattern(CHUNK, 77));
    let r = pool.check(&HeaderOwners).unwrap();
    assert!(r.is_clean(), "{r}");
}

#[test]
fn unreadable_records_and_rows_past_the_end_are_reported_and_their_slots_kept() {
    let f = fixture();
    let pool = &f.pool;
    let c = volume_with_data(pool, 4 * CHUNK, 2, 30);
    let c_slots = slots(pool, c.id.as_str());
    let c_data = read_all(pool, &c);
    let good = c.encode();
    let mut bad = good.clone();
    bad[20] ^= 1;
    let top = hwm(pool);
    let a_id = f.a.id.as_str();
    damage(pool, |w| {
        w.open_table(VOLUMES)
            .unwrap()
            .insert(c.id.as_str(), bad.as_slice())
            .unwrap();
        // c's slots lose a count and one lands in the free list: repair must not
        // free them, since c's chunk size is unknown while its header is unreadable.
        w.open_table(REFS)
            .unwrap()
            .remove((SHIFT, c_slots[0]))
            .unwrap();
        w.open_table(FREE)
            .unwrap()
            .insert((SHIFT, c_slots[0]), ())
            .unwrap();
        // A row of a past its end (8 chunks), pointing past the high-water mark.
        w.open_table(MAPS)
            .unwrap()
            .insert((a_id, 40), top + 2)
            .unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    let p = find(&r, ProblemKind::BadVolumeHeader, Some(c.id.as_str()), None);
    assert!(p.detail.contains("checksum"), "{p}");
    assert!(!p.repairable);
    let p = find(&r, ProblemKind::ChunkOutOfRange, Some(a_id), Some(top + 2));
    assert_eq!(p.chunk, Some(40));
    assert!(p.to_string().contains(&format!("{a_id} chunk 40")), "{p}");
    find(&r, ProblemKind::PastHighWater, None, Some(top + 2));
    find(&r, ProblemKind::MissingReference, None, Some(top + 2));
    find(&r, ProblemKind::DoubleOwner, None, Some(c_slots[0]));
    // An unreadable owner's slot with no count is not called leaked.
    assert!(
        !r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::LeakedSlot && p.slot == Some(c_slots[0])),
        "{r}"
    );

    let rep = pool.repair(&HeaderOwners).unwrap();
    let kinds: Vec<ProblemKind> = rep.not_repaired.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        vec![ProblemKind::BadVolumeHeader, ProblemKind::ChunkOutOfRange],
        "{rep}"
    );
    assert!(rep.not_repaired[1].detail.contains("not repaired"), "{rep}");
    for s in &c_slots {
        assert!(!rep.freed.contains(&(SHIFT, *s)), "{rep}");
        assert!(pool.refcount(SHIFT, SlotNo(*s)).unwrap() >= 1, "{rep}");
    }
    // The mark went past the row's slot; the two slots skipped on the way are free.
    assert_eq!(hwm(pool), top + 3);
    assert_eq!(rep.freed, vec![(SHIFT, top), (SHIFT, top + 1)], "{rep}");
    assert_eq!(pool.refcount(SHIFT, SlotNo(top + 2)).unwrap(), 1);
    let left: Vec<ProblemKind> = rep.after.problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        left,
        vec![ProblemKind::BadVolumeHeader, ProblemKind::ChunkOutOfRange],
        "{rep}"
    );
    assert_eq!(pool.check(&HeaderOwners).unwrap(), rep.after);

    // Once the header is back, c's data is all there and only the row past a's end
    // is left (removing it is the owner's call).
    damage(pool, |w| {
        w.open_table(VOLUMES)
            .unwrap()
            .insert(c.id.as_str(), good.as_slice())
            .unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    let left: Vec<ProblemKind> = r.problems.iter().map(|p| p.kind).collect();
    assert_eq!(left, vec![ProblemKind::ChunkOutOfRange], "{r}");
    assert_eq!(read_all(pool, &c), c_data);
    assert_eq!(read_all(pool, &f.a), f.a_data);
}

/// `remote` rows (lazy restore): a chunk both mapped and remote, and rows of an owner
/// that does not exist, are reported and dropped by repair; the data stays; a row that
/// does not decode is only reported.
#[test]
fn remote_rows_mapped_twice_or_orphaned_are_found_and_dropped() {
    use crate::volume::remote::RemoteChunk;
    use crate::volume::tables::REMOTE;
    let f = fixture();
    let pool = &f.pool;
    let a_id = f.a.id.as_str();
    let row = RemoteChunk {
        object: "chunk-0".into(),
        blake3: [1; 32],
        len: CHUNK as u32,
        domain: 0,
        record: None,
    }
    .encode();
    let orphan = "vol-00000000000000dead";
    // A volume with one remote chunk (chunk 6) is clean.
    let lazy = VolumeHeader {
        id: VolumeId::random(),
        ..f.a.clone()
    };
    pool.restore_remote_volume(&lazy, &[(6, RemoteChunk::decode(&row, "row").unwrap())])
        .unwrap();
    let clean = pool.check(&HeaderOwners).unwrap();
    assert!(clean.clean, "{clean}");
    damage(pool, |w| {
        let mut t = w.open_table(REMOTE).unwrap();
        t.insert((a_id, 0), row.as_slice()).unwrap();
        t.insert((orphan, 3), row.as_slice()).unwrap();
        t.insert((orphan, 4), row.as_slice()).unwrap();
        t.insert((lazy.id.as_str(), 7), &[1u8, 2, 3][..]).unwrap();
    });
    let r = pool.check(&HeaderOwners).unwrap();
    let p = find(&r, ProblemKind::MappedAndRemote, Some(a_id), None);
    assert_eq!(p.chunk, Some(0));
    assert!(p.repairable);
    let p = find(&r, ProblemKind::OrphanRemote, Some(orphan), None);
    assert!(p.detail.starts_with("2 remote rows"), "{p}");
    let p = find(&r, ProblemKind::BadRemoteRow, Some(lazy.id.as_str()), None);
    assert!(!p.repairable);
    assert_eq!(r.problems.len(), 3, "{r}");

    let rep = pool.repair(&HeaderOwners).unwrap();
    let dropped = rep
        .fixes
        .iter()
        .filter(|x| x.action == FixAction::DroppedRemoteRow)
        .count();
    assert_eq!(dropped, 3, "{rep:?}");
    let after = pool.check(&HeaderOwners).unwrap();
    assert_eq!(after.problems.len(), 1, "{after}");
    assert_eq!(after.problems[0].kind, ProblemKind::BadRemoteRow);
    assert!(pool.load_remote(orphan).unwrap().is_empty());
    assert!(pool.load_remote(a_id).unwrap().is_empty());
    assert_eq!(read_all(pool, &f.a), f.a_data);
}
