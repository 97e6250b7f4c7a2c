//! Attacks on the snapshot store (moto's S3): ids that are not ids, restores and deletes
//! racing from two data dirs, the hold of a lazily restored volume and what still reads
//! through it, hostile objects (a huge one where a chunk is expected, a damaged index),
//! and deletes interrupted half way.
//!
//! Needs FUSE and moto's server from the test venv; without them the tests skip unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` or `CI=true`.

mod common;

use std::path::Path;

use common::mount::*;
use common::store::*;
use common::{Env, assert_one_error_line, str_field};
use serde_json::Value;

/// Every object of the store (keys inside the bucket).
fn all_objects(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = s
        .moto
        .objects(BUCKET, &format!("{}/", prefix(s)))
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    v.sort();
    v
}

/// The lineage index of the store's only lineage.
fn only_index(s: &Store) -> (String, Value) {
    let keys: Vec<String> = all_objects(s)
        .into_iter()
        .filter(|k| k.contains("/index/"))
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let v = serde_json::from_slice(&s.moto.get_object(BUCKET, &keys[0])).unwrap();
    (keys[0].clone(), v)
}

/// Reads `len` bytes at `off` of a file.
fn read_at(file: &Path, off: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(file)?;
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, off)?;
    Ok(buf)
}

#[test]
fn snapshot_ids_that_are_not_ids_name_no_file_and_no_object() {
    needs!(Fuse);
    let Some(s) = Store::new("ids") else {
        return;
    };
    let a = machine(&s);
    let flags = s.flags();
    let mut flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    // The archive's lock and status files are named after the id: `../../..` would
    // create them outside the region's archive directory.
    let out = run(&a, &s, &["snapshot", "archive", "../../../escape"]);
    let err = out.fails(6);
    assert_one_error_line("snapshot archive ../../../escape", &format!("{err}\n"));
    assert!(err.contains("not a snapshot id"), "{err}");
    assert!(
        !a.data.join("escape.lock").exists() && !a.data.join("escape.json").exists(),
        "a lock file was created outside the archive directory"
    );
    // Store-only commands from a data dir that has nothing.
    let b = Env::new();
    let mut del = vec!["snapshot", "delete", "../index/x"];
    del.append(&mut flag_refs);
    let err = run(&b, &s, &del).fails(6);
    assert_one_error_line("snapshot delete ../index/x", &format!("{err}\n"));
    assert!(err.contains("not a snapshot id"), "{err}");
    let before = a.snapshot();
    let out = run(
        &a,
        &s,
        &[
            "volume",
            "create",
            "--from-snapshot",
            "../../index/vol-00000000000000000",
        ],
    );
    assert_ne!(out.code, 0);
    assert_ne!(out.code, 101, "a panic: {}", out.stderr);
    assert_one_error_line("volume create --from-snapshot ../../index/..", &out.stderr);
    a.snapshot()
        .assert_unchanged_since(&before, "a bad --from-snapshot");
}

#[test]
fn a_restore_that_read_the_manifest_before_a_delete_makes_no_volume() {
    needs!(Fuse);
    let Some(s) = Store::new("race") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, _) = archived(&a, &s, &k, 41);
    // The interleaving: B reads the manifest, A deletes the snapshot (objects and all),
    // then B registers its volume. The manifest put back is what B had read.
    let manifest = s.moto.get_object(BUCKET, &manifest_key(&s, &snap));
    json(&a, &s, &["snapshot", "delete", &snap]);
    assert!(s.chunk_objects().is_empty());
    s.moto
        .put_object(BUCKET, &manifest_key(&s, &snap), &manifest);
    let b = machine(&s);
    let out = b.run_env(&["volume", "create", "--from-snapshot", &snap], &k.env());
    let err = out.fails(3);
    assert_one_error_line("volume create --from-snapshot", &format!("{err}\n"));
    assert!(
        err.contains(&snap) && err.contains("not in the snapshot store"),
        "{err}"
    );
    let vols = b.json(&["volume", "list"]);
    assert_eq!(vols["Volumes"], serde_json::json!([]), "{vols:#}");
    // Nothing of B stays counted in the store.
    let (_, idx) = only_index(&s);
    assert_eq!(idx["holders"], serde_json::json!({}), "{idx:#}");
    assert_eq!(idx["chunks"], serde_json::json!({}), "{idx:#}");
    assert!(
        all_objects(&s).iter().all(|k| !k.contains("/refs/")),
        "{:?}",
        all_objects(&s)
    );
}

#[test]
fn objects_a_snapshot_of_a_lazy_volume_reads_outlive_the_volume() {
    needs!(Fuse);
    let Some(s) = Store::new("lazy") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, data) = archived(&a, &s, &k, 51);
    let b = machine(&s);
    let env = k.env();
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &snap], &env)
        .ok()
        .json();
    let vol = str_field(&v, "VolumeId");
    // A snapshot of the lazy volume, and a volume restored from it here: both read the
    // store's objects through the lazy volume's rows.
    let bs = str_field(
        &b.run_env(&["snapshot", "create", &vol], &env).ok().json(),
        "SnapshotId",
    );
    wait_completed(&b, &s, &bs);
    let v2 = b
        .run_env(&["volume", "create", "--from-snapshot", &bs], &env)
        .ok()
        .json();
    let vol2 = str_field(&v2, "VolumeId");
    assert_eq!(v2["RemoteBytes"], 4 * MIB, "{v2:#}");
    // The archive of B's snapshot goes, then A's snapshot: the lazy volume's hold is the
    // last thing that keeps the objects. Deleting that volume must not free what the
    // volume restored from its snapshot still reads.
    b.run_env(&["snapshot", "delete", &bs], &env).ok();
    json(&a, &s, &["snapshot", "delete", &snap]);
    b.run_env(&["volume", "delete", &vol, "--yes"], &env).ok();
    assert_eq!(s.chunk_objects().len(), 4, "{:?}", s.chunk_objects());
    k.export();
    let dir = b.dir("m2");
    let file = b.attach(&vol2, &dir, &[]);
    let got = read_at(&file, 0, 4 * MIB as usize).expect("read the second restore");
    assert_bytes(
        "volume restored from the lazy volume's snapshot",
        0,
        &got,
        &data,
    );
    b.detach(&dir);
    // Once nothing here reads them, hydrating the last reader frees them.
    let h = b.run_env(&["volume", "hydrate", &vol2], &env).ok().json();
    assert_eq!(h["RemoteBytes"], 0, "{h:#}");
    assert!(s.chunk_objects().is_empty(), "{:?}", s.chunk_objects());
    let (_, idx) = only_index(&s);
    assert_eq!(idx["chunks"], serde_json::json!({}), "{idx:#}");
}

#[test]
fn a_huge_object_where_a_chunk_is_expected_is_not_read_into_memory() {
    needs!(Fuse);
    let Some(s) = Store::new("huge") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, data) = archived(&a, &s, &k, 61);
    let b = machine(&s);
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &snap], &k.env())
        .ok()
        .json();
    let vol = str_field(&v, "VolumeId");
    // Every chunk object replaced by 192 MiB: each read must refuse it from its size.
    let huge = vec![0x5au8; 192 * MIB as usize];
    let objects = s.chunk_objects();
    for (key, _) in &objects {
        s.moto.put_object(BUCKET, key, &huge);
    }
    drop(huge);
    k.export();
    let dir = b.dir("m");
    let file = b.attach(&vol, &dir, &[]);
    for c in 0..4u64 {
        let e = read_at(&file, c * MIB, 4096).expect_err("a huge object read as data");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "chunk {c}: {e}");
    }
    let pid = b.daemon_pid().expect("the region daemon");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(
        hwm_kib < 128 * 1024,
        "the daemon's peak memory is {hwm_kib} KiB after refusing four 192 MiB objects"
    );
    b.detach(&dir);
    assert!(
        b.daemon_log().contains("not 1048576"),
        "the daemon names the size:\n{}",
        b.daemon_log()
    );
    let _ = data;
}

#[test]
fn an_index_that_lost_a_holders_chunks_is_an_error_not_a_panic() {
    needs!(Fuse);
    let Some(s) = Store::new("index") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "16M"]);
    write_volume(&a, &vol, &[(0, &Rng::new(71).bytes(2 * MIB as usize))]);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &snap);
    // The index keeps the holder but forgets its chunks; the local job is pending again
    // (as one killed before it marked the holder complete).
    let (key, mut idx) = only_index(&s);
    idx["chunks"] = serde_json::json!({});
    s.moto
        .put_object(BUCKET, &key, &serde_json::to_vec(&idx).unwrap());
    let status_file = a.region().join(format!("archive/{snap}.json"));
    let mut st: Value = serde_json::from_slice(&std::fs::read(&status_file).unwrap()).unwrap();
    st["State"] = "pending".into();
    std::fs::write(&status_file, serde_json::to_vec(&st).unwrap()).unwrap();
    let out = run(&a, &s, &["snapshot", "archive", &snap]);
    let err = out.fails(23);
    assert_one_error_line("snapshot archive", &format!("{err}\n"));
    assert!(
        err.contains("index was damaged") && err.contains(&snap),
        "{err}"
    );
}

#[test]
fn a_store_delete_killed_after_removing_the_manifest_completes_when_run_again() {
    needs!(Fuse);
    let Some(s) = Store::new("del") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "16M"]);
    write_volume(&a, &vol, &[(0, &Rng::new(81).bytes(3 * MIB as usize))]);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &snap);
    assert_eq!(s.chunk_objects().len(), 3);
    // What a `snapshot delete --snapshot-store` killed after its first step leaves.
    s.moto.delete_object(BUCKET, &manifest_key(&s, &snap));
    let b = Env::new();
    let flags = s.flags();
    let mut del = vec!["snapshot", "delete", snap.as_str()];
    del.extend(flags.iter().map(String::as_str));
    let out = json(&b, &s, &del);
    assert_eq!(out["Store"]["ObjectsDeleted"], 3, "{out:#}");
    assert!(s.chunk_objects().is_empty(), "{:?}", s.chunk_objects());
    let (_, idx) = only_index(&s);
    assert_eq!(idx["holders"], serde_json::json!({}), "{idx:#}");
    // Run once more: the snapshot is gone for good.
    let err = run(&b, &s, &del).fails(3);
    assert!(err.contains("not in the snapshot store"), "{err}");
}

#[test]
fn a_huge_source_object_refuses_a_copy_between_stores() {
    needs!(Fuse);
    let Some(s) = Store::new("bigsrc") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, _) = archived(&a, &s, &k, 61);
    // One chunk object replaced by 64 MiB: the copy must say so, not read it whole.
    let (victim, _) = s.chunk_objects()[0].clone();
    s.moto.put_object(BUCKET, &victim, &vec![7u8; 64 << 20]);
    let b = Env::new();
    let dst = format!("s3://{BUCKET}/bigdst");
    b.run_env(
        &[
            "init",
            "--snapshot-store",
            &dst,
            "--s3-endpoint",
            &s.moto.endpoint,
        ],
        &s.env(),
    )
    .ok();
    let env = [
        ("AWS_ACCESS_KEY_ID", k.id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", k.secret.as_str()),
    ];
    let err = b
        .run_env(
            &[
                "snapshot",
                "copy",
                &snap,
                "--source-snapshot-store",
                &s.url,
                "--source-s3-endpoint",
                &s.moto.endpoint,
                "--source-kms-endpoint",
                &k.server.endpoint,
            ],
            &env,
        )
        .fails(12);
    assert!(err.contains("larger than a chunk"), "{err}");
}
