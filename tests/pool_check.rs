//! `cryptvol pool check [--repair]`: the pool metadata checker on pools made by the real
//! CLI, then damaged through redb directly (as a bug or a bad restore of meta.redb would).
//!
//! Proves: a fresh pool and a pool after ordinary create / write / snapshot / restore
//! (shared and re-keyed) / delete are clean; the check refuses while the region daemon
//! owns the pool (exit 16) and changes nothing; each damage is reported with its kind
//! and slot or owner (exit 21, one stderr line naming the first problem); `--repair`
//! fixes every repairable problem (exit 0), a second check is clean, and the volume's and
//! the snapshot's data read back the same; problems repair must leave (a map row past its
//! volume's end, an unreadable snapshot record) keep exit 21 after `--repair`, and their
//! slots are never freed.
//!
//! Tests that write through `attach` need FUSE; without it they skip, unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes them fail.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::mount::*;
use common::{assert_one_error_line, str_field};
use cryptvol::volume::tables::{
    FREE, LEASES, MAPS, META, PENDING, REFS, SNAPSHOTS, VOLUMES, hwm_key,
};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde_json::Value;

/// 1 MiB chunks (the default).
const SHIFT: u8 = 20;

// ---- the pool file, read and damaged directly ---------------------------------------------

/// Opens meta.redb. A daemon that has just stopped may still hold it for a moment (its
/// leader shows as a zombie while other threads finish), so retry for a while.
#[track_caller]
fn open_meta(v: &VolEnv) -> Database {
    let path = v.pool_dir().join("meta.redb");
    let mut db = None;
    wait_until(Duration::from_secs(10), || {
        db = Database::open(&path).ok();
        db.is_some()
    });
    db.expect("meta.redb opens (no daemon or command holds it)")
}

/// (chunk, slot) rows of an owner.
fn map_of(db: &Database, owner: &str) -> Vec<(u64, u64)> {
    let r = db.begin_read().unwrap();
    let t = r.open_table(MAPS).unwrap();
    t.range((owner, 0)..=(owner, u64::MAX))
        .unwrap()
        .map(|i| {
            let (k, v) = i.unwrap();
            (k.value().1, v.value())
        })
        .collect()
}

fn free_rows(db: &Database) -> Vec<u64> {
    let r = db.begin_read().unwrap();
    let t = r.open_table(FREE).unwrap();
    t.iter()
        .unwrap()
        .map(|i| i.unwrap().0.value())
        .filter(|k| k.0 == SHIFT)
        .map(|k| k.1)
        .collect()
}

fn hwm(db: &Database) -> u64 {
    let r = db.begin_read().unwrap();
    let t = r.open_table(META).unwrap();
    t.get(hwm_key(SHIFT).as_str()).unwrap().unwrap().value()
}

fn refcount(db: &Database, slot: u64) -> Option<u32> {
    let r = db.begin_read().unwrap();
    let t = r.open_table(REFS).unwrap();
    t.get((SHIFT, slot)).unwrap().map(|g| g.value())
}

/// Every row of every table, as text (the redb file itself changes on every open).
fn dump(v: &VolEnv) -> String {
    let db = open_meta(v);
    let r = db.begin_read().unwrap();
    let mut out = String::new();
    for item in r.open_table(META).unwrap().iter().unwrap() {
        let (k, v) = item.unwrap();
        out += &format!("meta {} {}\n", k.value(), v.value());
    }
    for def in [VOLUMES, SNAPSHOTS, PENDING] {
        if let Ok(t) = r.open_table(def) {
            for item in t.iter().unwrap() {
                let (k, v) = item.unwrap();
                out += &format!("{def} {} {:?}\n", k.value(), v.value());
            }
        }
    }
    for item in r.open_table(MAPS).unwrap().iter().unwrap() {
        let (k, v) = item.unwrap();
        out += &format!("maps {:?} {}\n", k.value(), v.value());
    }
    for item in r.open_table(REFS).unwrap().iter().unwrap() {
        let (k, v) = item.unwrap();
        out += &format!("refs {:?} {}\n", k.value(), v.value());
    }
    for item in r.open_table(FREE).unwrap().iter().unwrap() {
        out += &format!("free {:?}\n", item.unwrap().0.value());
    }
    out
}

// ---- running the check --------------------------------------------------------------------

/// `pool check` must pass: exit 0, quiet stderr, `Clean` and no problems.
#[track_caller]
fn assert_clean(v: &VolEnv, what: &str) -> Value {
    let out = v.run(&["pool", "check"]);
    assert_eq!(
        out.code, 0,
        "{what}: pool check failed: {}\n{}",
        out.stderr, out.stdout
    );
    assert!(out.stderr.is_empty(), "{what}: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["Clean"], true, "{what}: {r:#}");
    assert_eq!(r["Problems"], Value::Array(vec![]), "{what}: {r:#}");
    r
}

/// `pool check ARGS` must fail with exit 21: one stderr line, the report on stdout.
#[track_caller]
fn damaged(v: &VolEnv, args: &[&str]) -> (String, Value) {
    let mut a = vec!["pool", "check"];
    a.extend_from_slice(args);
    let out = v.run(&a);
    assert_eq!(
        out.code,
        21,
        "`{}`: stdout {} stderr {}",
        a.join(" "),
        out.stdout,
        out.stderr
    );
    assert_one_error_line(&a.join(" "), &out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("the report is printed");
    (out.stderr, report)
}

fn problems(r: &Value) -> Vec<Value> {
    r["Problems"].as_array().expect("Problems").clone()
}

/// The problem of `kind` at `slot` (or naming `object`).
#[track_caller]
fn find(r: &Value, kind: &str, slot: Option<u64>, object: Option<&str>) -> Value {
    problems(r)
        .into_iter()
        .find(|p| {
            p["Kind"] == kind
                && slot.is_none_or(|s| p["Slot"] == s)
                && object.is_none_or(|o| p["Object"] == o)
        })
        .unwrap_or_else(|| panic!("no {kind} at slot {slot:?} / {object:?} in {r:#}"))
}

fn kinds(r: &Value) -> BTreeSet<String> {
    problems(r)
        .iter()
        .map(|p| p["Kind"].as_str().unwrap().to_string())
        .collect()
}

#[track_caller]
fn check_bytes(f: &std::fs::File, what: &str, want: &[u8]) {
    assert_bytes(what, 0, &pread(f, 0, want.len()), want);
}

#[track_caller]
fn detach_all(v: &VolEnv, dirs: &[&Path]) {
    for d in dirs {
        v.detach(d);
    }
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the daemon did not stop after the last detach"
    );
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn a_fresh_pool_is_clean_and_an_uninitialised_region_is_refused() {
    let v = VolEnv::uninit();
    v.fail(&["pool", "check"], 8);
    v.ok(&["init"]);
    let r = assert_clean(&v, "fresh pool");
    assert_eq!(r["Volumes"], 0, "{r:#}");
    assert_eq!(r["Format"], 1, "{r:#}");
    let text = v.ok(&["pool", "check", "--output", "text"]);
    assert!(text.starts_with("true\t1\t"), "{text:?}");
    let r = v.json(&["pool", "check", "--repair"]);
    assert_eq!(r["Fixes"], Value::Array(vec![]), "{r:#}");
    assert_eq!(r["After"]["Clean"], true, "{r:#}");
}

#[test]
fn ordinary_operations_leave_a_clean_pool() {
    needs!(Fuse);
    let v = VolEnv::new();
    let a = v.create(&["--size", "16M", "--name", "a"]);
    assert_clean(&v, "after volume create");
    let da = v.dir("a");
    let fa = open_rw(&v.attach(&a, &da, &[]));
    let mut rng = Rng::from_env(0x9001_0000_0000_0001);
    let mut data = rng.bytes(5 * MIB as usize + 777);
    pwrite(&fa, 0, &data);
    fa.sync_all().unwrap();

    // The daemon owns the pool (and holds meta.redb) while a volume is attached.
    assert!(
        matches!(
            Database::open(v.pool_dir().join("meta.redb")),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ),
        "meta.redb opened while the daemon serves a volume"
    );
    // Online, through the daemon: what was fsynced is committed and checked.
    let r = v.json(&["pool", "check"]);
    assert_eq!(r["Clean"], serde_json::Value::Bool(true), "{r:#}");
    assert_eq!(r["Volumes"], 1, "{r:#}");
    // Repair rewrites the bookkeeping: not under an attached volume.
    let line = v.run(&["pool", "check", "--repair"]).fails(4);
    assert!(line.contains(&a) && line.contains("detach"), "{line}");

    let snap = str_field(&v.json(&["snapshot", "create", &a]), "SnapshotId");
    let snap_data = data.clone();
    // Copy on write of chunk 0 and a new chunk 9.
    let patch = rng.bytes(100_000);
    pwrite(&fa, 4096, &patch);
    data[4096..4096 + patch.len()].copy_from_slice(&patch);
    let far = rng.bytes(3000);
    pwrite(&fa, 9 * MIB + 5, &far);
    fa.sync_all().unwrap();
    drop(fa);
    detach_all(&v, &[&da]);
    let r = assert_clean(&v, "after writes, a snapshot and copy-on-write");
    let c = &r["ChunkSizes"][0];
    assert_eq!(c["ChunkSize"], MIB, "{r:#}");
    // a: chunks 0..=5 and 9, chunk 0 copied; the snapshot shares 1..=5.
    assert_eq!(c["MapRows"], 13, "{r:#}");
    assert_eq!(c["SlotsInUse"], 8, "{r:#}");
    assert_eq!(r["Snapshots"], 1, "{r:#}");

    // Restores, shared and re-keyed, written to, then everything deleted but a.
    let shared = v.create(&["--from-snapshot", &snap, "--name", "r1"]);
    assert_clean(&v, "after a shared restore");
    let key = v.create_key();
    let rekeyed = v.create(&["--from-snapshot", &snap, "--kms-key", &key, "--name", "r2"]);
    assert_clean(&v, "after a re-keyed restore");
    let d1 = v.dir("r1");
    let f1 = open_rw(&v.attach(&shared, &d1, &[]));
    check_bytes(&f1, "shared restore", &snap_data);
    pwrite(&f1, 2 * MIB, &rng.bytes(MIB as usize));
    f1.sync_all().unwrap();
    drop(f1);
    detach_all(&v, &[&d1]);
    assert_clean(&v, "after writing to the restore");
    v.json(&["snapshot", "delete", &snap]);
    assert_clean(&v, "after snapshot delete");
    v.json(&["volume", "delete", &shared, "--yes"]);
    v.json(&["volume", "delete", &rekeyed, "--yes"]);
    let r = assert_clean(&v, "after volume deletes");
    assert_eq!(r["ChunkSizes"][0]["SlotsInUse"], 7, "{r:#}");
    let fa = open_rw(&v.attach(&a, &da, &[]));
    check_bytes(&fa, "a after it all", &data);
    assert_bytes(
        "a's far chunk",
        9 * MIB + 5,
        &pread(&fa, 9 * MIB + 5, 3000),
        &far,
    );
    drop(fa);
    detach_all(&v, &[&da]);
    assert_clean(&v, "at the end");
}

#[test]
fn damage_is_reported_repaired_and_the_data_reads_back() {
    needs!(Fuse);
    let v = VolEnv::new();
    let a = v.create(&["--size", "16M", "--name", "a"]);
    let b = v.create(&["--size", "8M", "--name", "b"]);
    let (da, db_dir) = (v.dir("a"), v.dir("b"));
    let mut rng = Rng::from_env(0x9001_0000_0000_0002);
    let fa = open_rw(&v.attach(&a, &da, &[]));
    let mut data = rng.bytes(5 * MIB as usize);
    pwrite(&fa, 0, &data);
    fa.sync_all().unwrap();
    let snap = str_field(&v.json(&["snapshot", "create", &a]), "SnapshotId");
    let snap_data = data.clone();
    let patch = rng.bytes(300_000);
    pwrite(&fa, MIB / 2, &patch);
    data[MIB as usize / 2..MIB as usize / 2 + patch.len()].copy_from_slice(&patch);
    fa.sync_all().unwrap();
    let fb = open_rw(&v.attach(&b, &db_dir, &[]));
    pwrite(&fb, 0, &rng.bytes(2 * MIB as usize));
    fb.sync_all().unwrap();
    drop((fa, fb));
    detach_all(&v, &[&da, &db_dir]);
    // b's two slots become free.
    v.json(&["volume", "delete", &b, "--yes"]);
    assert_clean(&v, "before the damage");

    let orphan = "vol-0000000000000dead";
    let stale = "snap-000000000000000aa";
    let (shared, own, free, top) = {
        let db = open_meta(&v);
        let a_slots: Vec<u64> = map_of(&db, &a).into_iter().map(|r| r.1).collect();
        let s_slots: Vec<u64> = map_of(&db, &snap).into_iter().map(|r| r.1).collect();
        let shared: Vec<u64> = a_slots
            .iter()
            .copied()
            .filter(|s| s_slots.contains(s))
            .collect();
        let own: Vec<u64> = a_slots
            .iter()
            .copied()
            .filter(|s| !s_slots.contains(s))
            .collect();
        assert_eq!((shared.len(), own.len()), (4, 1), "{a_slots:?} {s_slots:?}");
        let free = free_rows(&db);
        assert_eq!(free.len(), 2, "{free:?}");
        let top = hwm(&db);
        assert_eq!(refcount(&db, shared[0]), Some(2));

        let w = db.begin_write().unwrap();
        {
            let mut refs = w.open_table(REFS).unwrap();
            refs.insert((SHIFT, shared[0]), 3).unwrap(); // leaked reference
            refs.insert((SHIFT, shared[1]), 1).unwrap(); // missing reference
            refs.insert((SHIFT, top + 4), 1).unwrap(); // past the high-water mark
            let mut fr = w.open_table(FREE).unwrap();
            fr.remove((SHIFT, free[0])).unwrap(); // leaked slot
            fr.insert((SHIFT, shared[2]), ()).unwrap(); // double owner
            let mut maps = w.open_table(MAPS).unwrap();
            maps.insert((orphan, 3), own[0]).unwrap(); // orphan map
            w.open_table(LEASES)
                .unwrap()
                .insert((stale, "test"), b"{}".as_slice())
                .unwrap(); // stale lease
        }
        w.commit().unwrap();
        (shared, own, free, top)
    };

    // The check names each, changes nothing, and fails with 21.
    let before = dump(&v);
    let (line, r) = damaged(&v, &[]);
    assert_eq!(dump(&v), before, "pool check changed the metadata");
    assert!(line.contains("the pool is damaged: 8 problems"), "{line}");
    assert!(
        line.contains(&format!("first orphan-map: {orphan}")),
        "{line}"
    );
    assert!(line.contains("--repair"), "{line}");
    assert_eq!(r["Clean"], false, "{r:#}");
    let p = find(&r, "leaked-reference", Some(shared[0]), None);
    assert_eq!(p["ChunkSize"], MIB, "{p:#}");
    let p = find(&r, "missing-reference", Some(shared[1]), None);
    assert!(
        p["Detail"]
            .as_str()
            .unwrap()
            .contains("count 1, but 2 map rows"),
        "{p:#}"
    );
    find(&r, "past-high-water", Some(top + 4), None);
    find(&r, "leaked-reference", Some(top + 4), None);
    find(&r, "leaked-slot", Some(free[0]), None);
    find(&r, "double-owner", Some(shared[2]), None);
    find(&r, "orphan-map", None, Some(orphan));
    find(&r, "stale-lease", None, Some(stale));
    assert!(
        problems(&r).iter().all(|p| p["Repairable"] == true),
        "{r:#}"
    );
    // --output text: one line per problem, naming the slot.
    let out = v.run(&["pool", "check", "--output", "text"]);
    assert_eq!(out.code, 21);
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("PROBLEMS\t"))
        .collect();
    assert_eq!(lines.len(), 8, "{}", out.stdout);
    assert!(
        lines.iter().any(
            |l| l.contains("double-owner") && l.split('\t').any(|c| c == shared[2].to_string())
        ),
        "{lines:#?}"
    );

    // Repair: exit 0, what it did, nothing left.
    let rep = v.json(&["pool", "check", "--repair"]);
    assert_eq!(rep["After"]["Clean"], true, "{rep:#}");
    assert_eq!(rep["NotRepaired"], Value::Array(vec![]), "{rep:#}");
    assert_eq!(rep["FreedSlots"], 1, "{rep:#}");
    assert_eq!(kinds(&rep["Before"]), kinds(&r), "{rep:#}");
    let actions: BTreeSet<&str> = rep["Fixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["Action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from([
            "dropped-orphan-map",
            "set-refcount",
            "removed-free",
            "freed-slots",
            "removed-stale-lease"
        ]),
        "{rep:#}"
    );
    {
        let db = open_meta(&v);
        assert_eq!(refcount(&db, shared[0]), Some(2));
        assert_eq!(refcount(&db, shared[1]), Some(2));
        assert_eq!(refcount(&db, top + 4), None);
        assert_eq!(refcount(&db, own[0]), Some(1));
        assert!(map_of(&db, orphan).is_empty());
        assert_eq!(free_rows(&db), free, "the same two slots are free again");
        assert_eq!(hwm(&db), top);
    }
    assert_clean(&v, "after --repair");

    // The volume and the snapshot read back as written.
    let fa = open_rw(&v.attach(&a, &da, &[]));
    check_bytes(&fa, "a after repair", &data);
    let r1 = v.create(&["--from-snapshot", &snap, "--name", "r1"]);
    let d1 = v.dir("r1");
    let f1 = open_rw(&v.attach(&r1, &d1, &[]));
    check_bytes(&f1, "restore of the snapshot after repair", &snap_data);
    // New writes after the repair (slots from the repaired free list) disturb neither.
    let more = rng.bytes(3 * MIB as usize);
    pwrite(&f1, 8 * MIB, &more);
    f1.sync_all().unwrap();
    check_bytes(&fa, "a after writes to the restore", &data);
    drop((fa, f1));
    detach_all(&v, &[&da, &d1]);
    assert_clean(&v, "after writing on the repaired pool");
}

#[test]
fn repair_keeps_what_it_cannot_place_and_still_exits_21() {
    let v = VolEnv::new();
    let a = v.create(&["--size", "16M", "--name", "a"]);
    let snap = str_field(&v.json(&["snapshot", "create", &a]), "SnapshotId");
    let copy_owner = "vol-000000000000000c0";
    {
        let db = open_meta(&v);
        let w = db.begin_write().unwrap();
        {
            // A copy in progress (a re-keyed restore of a's header under a new id) with
            // one chunk, correctly counted: clean.
            let hdr = w
                .open_table(VOLUMES)
                .unwrap()
                .get(a.as_str())
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let mut h = cryptvol::volume::VolumeHeader::decode(&hdr).unwrap();
            h.id = cryptvol::volume::VolumeId::parse(copy_owner).unwrap();
            let rec = cryptvol::snapshot::PendingCopy::Restore {
                source_snapshot: snap.clone(),
                header: common::b64(&h.encode()),
            };
            w.open_table(PENDING)
                .unwrap()
                .insert(copy_owner, rec.encode().as_slice())
                .unwrap();
            w.open_table(MAPS)
                .unwrap()
                .insert((copy_owner, 2), 0)
                .unwrap();
            w.open_table(REFS).unwrap().insert((SHIFT, 0), 1).unwrap();
            w.open_table(META)
                .unwrap()
                .insert(hwm_key(SHIFT).as_str(), 1)
                .unwrap();
        }
        w.commit().unwrap();
    }
    let r = assert_clean(&v, "a pool with a copy in progress");
    assert_eq!(r["PendingCopies"], 1, "{r:#}");

    // A row of a far past its 16 chunks, on a slot nothing counts, past the mark; and
    // the snapshot's record damaged.
    {
        let db = open_meta(&v);
        let w = db.begin_write().unwrap();
        {
            w.open_table(MAPS)
                .unwrap()
                .insert((a.as_str(), 500), 3)
                .unwrap();
            let mut snaps = w.open_table(SNAPSHOTS).unwrap();
            let mut rec = snaps.get(snap.as_str()).unwrap().unwrap().value().to_vec();
            let last = rec.len() - 1;
            rec[last] ^= 0xff;
            snaps.insert(snap.as_str(), rec.as_slice()).unwrap();
        }
        w.commit().unwrap();
    }
    let (line, r) = damaged(&v, &[]);
    assert!(line.contains("fixes 2 of them"), "{line}");
    let p = find(&r, "chunk-out-of-range", Some(3), Some(&a));
    assert_eq!(p["Chunk"], 500, "{p:#}");
    assert_eq!(p["Repairable"], false, "{p:#}");
    let p = find(&r, "bad-snapshot-record", None, Some(&snap));
    assert!(p["Detail"].as_str().unwrap().contains("checksum"), "{p:#}");
    find(&r, "past-high-water", Some(3), None);
    find(&r, "missing-reference", Some(3), None);

    let (line, rep) = damaged(&v, &["--repair"]);
    assert!(line.contains("still damaged: 2 problems"), "{line}");
    assert_eq!(
        kinds(&rep["After"]),
        BTreeSet::from(["chunk-out-of-range".into(), "bad-snapshot-record".into()]),
        "{rep:#}"
    );
    assert_eq!(
        kinds(&rep["After"]),
        kinds(&serde_json::json!({"Problems": rep["NotRepaired"]}))
    );
    // The mark now covers slot 3; 1 and 2 (never referenced) are free, 0 and 3 are not.
    assert_eq!(rep["FreedSlots"], 2, "{rep:#}");
    let db = open_meta(&v);
    assert_eq!(hwm(&db), 4);
    assert_eq!(free_rows(&db), vec![1, 2]);
    assert_eq!(refcount(&db, 0), Some(1));
    assert_eq!(refcount(&db, 3), Some(1));
    drop(db);
    let (line, _) = damaged(&v, &[]);
    assert!(line.contains("fixes 0 of them"), "{line}");
}
