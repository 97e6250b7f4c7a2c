//! Snapshots archived in an S3-compatible object store (moto's server, a real S3
//! implementation nobody here wrote): `init --snapshot-store`, `snapshot create` archiving
//! in the background (pending with a progress, then completed), incremental uploads, a
//! killed archive resuming, `snapshot list --snapshot-store` from another data dir,
//! deletes that remove exactly the objects nothing else references (also two data dirs
//! deleting at once), and bad input.
//!
//! Needs FUSE (to write the volumes) and moto's server from the test venv (test.sh):
//! without them the tests skip, unless `CRYPTVOL_REQUIRE_MOUNT=1` or `CI=true`.

mod common;

use std::time::Duration;

use common::mount::*;
use common::store::*;
use common::{Env, str_field};
use serde_json::Value;

#[test]
fn an_archive_is_pending_then_completed_and_another_data_dir_lists_it() {
    needs!(Fuse);
    let Some(s) = Store::new("team/a") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "64M", "--name", "db"]);
    let mut rng = Rng::new(1);
    let data = rng.bytes(8 * MIB as usize);
    write_volume(&a, &vol, &[(3 * MIB, &data)]);

    // Throttled to 2 MB/s, 8 MiB cannot be archived in under 4 s: it is pending first.
    let snap = snapshot_create(
        &a,
        &s,
        &vol,
        &["--max-bandwidth", "2M", "--description", "nightly"],
    );
    let id = str_field(&snap, "SnapshotId");
    assert_eq!(snap["State"], "pending", "{snap:#}");
    let p = snap["Progress"].as_str().unwrap_or_default();
    assert!(p.ends_with('%') && p != "100%", "{snap:#}");
    // The job is held from the moment `snapshot create` returns: the archiver gets the
    // lock from it. A `snapshot describe` that found the job pending and unlocked while
    // the archiver started would take it for interrupted and start a second one (once
    // with an environment lacking the first one's credentials: the job then stayed
    // pending until the test gave up).
    let held = std::fs::File::open(a.region().join(format!("archive/{id}.lock")))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
    assert!(
        held,
        "the archive of {id} is pending and nobody holds its lock"
    );
    let done = wait_completed(&a, &s, &id);
    assert_eq!(done["Archive"]["Chunks"], 8, "{done:#}");
    assert_eq!(done["Archive"]["ChunksUploaded"], 8, "{done:#}");
    assert_eq!(done["Archive"]["BytesUploaded"], 8 * MIB, "{done:#}");
    assert_eq!(s.chunk_objects().len(), 8);
    // Ciphertext only: no 4 KiB of what was written appears in any object.
    for (key, size) in s.chunk_objects() {
        assert_eq!(size, MIB, "{key}");
    }

    // Another data dir that shares only the store sees the snapshot.
    let b = Env::new();
    let mut args = vec!["snapshot", "list"];
    let f = s.flags();
    args.extend(f.iter().map(String::as_str));
    let listed = json(&b, &s, &args);
    let snaps = listed["Snapshots"].as_array().expect("Snapshots");
    assert_eq!(snaps.len(), 1, "{listed:#}");
    let got = &snaps[0];
    assert_eq!(got["SnapshotId"], id.as_str());
    assert_eq!(got["VolumeId"], vol.as_str());
    assert_eq!(got["VolumeName"], "db");
    assert_eq!(got["VolumeSize"], 64 * MIB);
    assert_eq!(got["Description"], "nightly");
    assert_eq!(got["KmsKeyId"], done["KmsKeyId"]);
    assert_eq!(got["State"], "completed");
    assert_eq!(got["Chunks"], 8);
    assert!(!b.data.exists(), "listing a store creates no data dir");
}

#[test]
fn a_second_archive_uploads_only_the_changed_chunks_and_deletes_free_only_unshared_objects() {
    needs!(Fuse);
    let Some(s) = Store::new("inc") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "100M"]);
    let mut rng = Rng::new(2);
    let all = rng.bytes(100 * MIB as usize);
    write_volume(&a, &vol, &[(0, &all)]);
    let s1 = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    let d1 = wait_completed(&a, &s, &s1);
    assert_eq!(d1["Archive"]["ChunksUploaded"], 100, "{d1:#}");

    // Change 1 % of the volume: one 4 KiB block in chunk 42.
    let block = rng.bytes(4096);
    write_volume(&a, &vol, &[(42 * MIB + 8192, &block)]);
    let s2 = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    let d2 = wait_completed(&a, &s, &s2);
    assert_eq!(d2["Archive"]["ChunksUploaded"], 1, "{d2:#}");
    assert_eq!(d2["Archive"]["ChunksReused"], 99, "{d2:#}");
    assert_eq!(d2["Archive"]["Parent"], s1.as_str(), "{d2:#}");
    assert_eq!(s.chunk_objects().len(), 101);

    // The first snapshot alone held the old chunk 42: only that object goes.
    let del = json(&a, &s, &["snapshot", "delete", &s1]);
    assert_eq!(del["Store"]["ObjectsDeleted"], 1, "{del:#}");
    assert_eq!(s.chunk_objects().len(), 100);
    let del = json(&a, &s, &["snapshot", "delete", &s2]);
    assert_eq!(del["Store"]["ObjectsDeleted"], 100, "{del:#}");
    assert!(s.chunk_objects().is_empty());
    a.assert_pool_clean("local-1");
}

#[test]
fn a_killed_archive_resumes_without_uploading_its_finished_batches_again() {
    needs!(Fuse);
    let Some(s) = Store::new("kill") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "48M"]);
    let mut rng = Rng::new(3);
    let all = rng.bytes(48 * MIB as usize);
    write_volume(&a, &vol, &[(0, &all)]);
    // 4 MB/s: 48 chunks take about 12 s; the first batch of 16 is saved after about 4 s.
    let snap = str_field(
        &snapshot_create(&a, &s, &vol, &["--max-bandwidth", "4M"]),
        "SnapshotId",
    );
    let status_file = a.region().join(format!("archive/{snap}.json"));
    let status = || -> Value {
        serde_json::from_slice(&std::fs::read(&status_file).unwrap_or_default()).unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(60), || status()["ChunksUploaded"]
            .as_u64()
            .is_some_and(|n| n >= 16)),
        "no batch finished: {:#}",
        status()
    );
    let st = status();
    assert_eq!(st["State"], "pending", "{st:#}");
    let pid = st["Pid"].as_i64().expect("the archiver's pid") as i32;
    let done_before = st["ChunksUploaded"].as_u64().unwrap();
    assert!(
        done_before < 48,
        "the archive finished before it could be killed: {st:#}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the archiver");
    assert!(wait_until(Duration::from_secs(10), || !process_alive(pid)));
    // The snapshot is still pending; resuming in the foreground completes it.
    let out = json(&a, &s, &["snapshot", "archive", &snap]);
    assert_eq!(out["State"], "completed", "{out:#}");
    assert_eq!(out["ChunksUploaded"], 48, "{out:#}");
    assert_eq!(out["Chunks"], 48, "{out:#}");
    assert_eq!(s.chunk_objects().len(), 48);
    // The re-run uploaded only what the killed run had not saved as done.
    assert_eq!(out["ChunksReused"], 0, "{out:#}");
    a.assert_pool_clean("local-1");
}

#[test]
fn two_data_dirs_deleting_snapshots_that_share_chunks_at_once_leave_nothing_behind() {
    needs!(Fuse);
    let Some(s) = Store::new("race") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "32M"]);
    let mut rng = Rng::new(4);
    let all = rng.bytes(32 * MIB as usize);
    write_volume(&a, &vol, &[(0, &all)]);
    let s1 = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &s1);
    write_volume(&a, &vol, &[(5 * MIB, &rng.bytes(4096))]);
    let s2 = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &s2);
    assert_eq!(s.chunk_objects().len(), 33);

    // Machine A deletes s1 (its own); machine B deletes s2 straight from the store.
    let b = Env::new();
    let flags = s.flags();
    let (ad, bd, envs) = (a.data.clone(), b.data.clone(), s.env());
    let spawn = |data: &std::path::Path, args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cryptvol"))
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
    };
    let mut b_args = vec!["snapshot", "delete", s2.as_str()];
    b_args.extend(flags.iter().map(String::as_str));
    let (ra, rb) = std::thread::scope(|t| {
        let ha = t.spawn(|| spawn(&ad, &["snapshot", "delete", &s1]));
        let hb = t.spawn(|| spawn(&bd, &b_args));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    for r in [ra, rb] {
        let o = r.expect("run cryptvol");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(s.chunk_objects().is_empty(), "{:?}", s.chunk_objects());
    let mut args = vec!["snapshot", "list"];
    args.extend(flags.iter().map(String::as_str));
    assert_eq!(json(&b, &s, &args)["Snapshots"], serde_json::json!([]));
}

#[test]
fn bad_store_input_is_one_error_line_and_changes_nothing() {
    let Some(s) = Store::new("bad") else {
        return;
    };
    // init with a malformed url or an unreachable store makes no data dir.
    let e = Env::new();
    for (url, endpoint, code, says) in [
        ("/tmp/x", s.moto.endpoint.as_str(), 6, "not an S3 url"),
        ("s3://A", s.moto.endpoint.as_str(), 6, "not a bucket name"),
        (
            "s3://no-such-bucket/x",
            s.moto.endpoint.as_str(),
            23,
            "NoSuchBucket",
        ),
        (
            "s3://cryptvol-snapshots/x",
            "http://127.0.0.1:1",
            23,
            "no answer",
        ),
        ("s3://cryptvol-snapshots/x", "localhost:9", 6, "not a URL"),
    ] {
        let err = e
            .run_env(
                &["init", "--snapshot-store", url, "--s3-endpoint", endpoint],
                &s.env(),
            )
            .fails(code);
        assert!(err.contains(says), "{url} {endpoint}: {err}");
        assert!(!e.data.exists(), "{url}: init left a data dir behind");
    }
    // No credentials (none in the environment, no shared files): exit 7, nothing made.
    let home = e.scratch().to_str().unwrap().to_string();
    let err = e
        .run_env(
            &[
                "init",
                "--snapshot-store",
                &s.url,
                "--s3-endpoint",
                &s.moto.endpoint,
            ],
            &[("HOME", home.as_str())],
        )
        .fails(7);
    assert!(!e.data.exists());
    assert!(err.contains("credentials"), "{err}");

    // A region with a store: deleting or listing what is not there.
    let a = Env::new();
    let mut init = vec!["init"];
    let f = s.flags();
    init.extend(f.iter().map(String::as_str));
    json(&a, &s, &init);
    let before = a.snapshot();
    let err = run(&a, &s, &["snapshot", "delete", "snap-0123456789abcdef0"]).fails(3);
    assert!(
        err.contains("snap-0123456789abcdef0") && err.contains(&s.url),
        "{err}"
    );
    let err = run(
        &a,
        &s,
        &[
            "region",
            "set-snapshot-store",
            "s3://no-such-bucket/p",
            "--s3-endpoint",
            &s.moto.endpoint,
        ],
    )
    .fails(23);
    assert!(err.contains("no-such-bucket"), "{err}");
    // A lazy restore reads from the region's own store only.
    let err = run(
        &a,
        &s,
        &[
            "volume",
            "create",
            "--from-snapshot",
            "snap-0123456789abcdef0",
            "--snapshot-store",
            &format!("s3://{BUCKET}/elsewhere"),
            "--s3-endpoint",
            &s.moto.endpoint,
        ],
    )
    .fails(6);
    assert!(err.contains("region set-snapshot-store"), "{err}");
    a.snapshot().assert_unchanged_since(
        &before,
        "failed snapshot delete, set-snapshot-store and restore",
    );
    let region = json(&a, &s, &["region", "describe"]);
    assert_eq!(region["SnapshotStore"]["Url"], s.url.as_str(), "{region:#}");
}

#[test]
fn chunks_of_16_mib_go_up_in_parts() {
    needs!(Fuse);
    let Some(s) = Store::new("big") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "64M", "--chunk-size", "16M"]);
    let data = Rng::new(5).bytes(32 * MIB as usize);
    write_volume(&a, &vol, &[(0, &data)]);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    let done = wait_completed(&a, &s, &snap);
    assert_eq!(done["Archive"]["ChunksUploaded"], 2, "{done:#}");
    let objects = s.chunk_objects();
    assert_eq!(objects.len(), 2, "{objects:?}");
    for (key, size) in objects {
        assert_eq!(size, 16 * MIB, "{key}");
        // S3 gives a multipart object the ETag `<md5 of the parts' md5s>-<parts>`.
        let etag = s.moto.etag(BUCKET, &key);
        assert!(
            etag.ends_with("-2"),
            "{key} was not uploaded in 2 parts: ETag {etag}"
        );
    }
}

/// A store whose bucket was removed: the archive stops at its first write with "no such
/// bucket" (exit 23) and stays pending for a later run; a delete's index update does not
/// take the missing bucket for an index changed under it (and retry 120 times).
#[test]
fn an_archive_into_a_removed_bucket_says_so_at_once() {
    needs!(Fuse);
    let Some(s) = Store::new("gone") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "8M"]);
    write_volume(&a, &vol, &[(0, &Rng::new(5).bytes(MIB as usize))]);
    s.moto.aws(&["s3api", "delete-bucket", "--bucket", BUCKET]);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    // The job's own file (a `snapshot describe` would restart the archiver).
    let job = a.region().join(format!("archive/{snap}.json"));
    let status = || -> Value {
        serde_json::from_slice(&std::fs::read(&job).unwrap_or_default()).unwrap_or(Value::Null)
    };
    assert!(
        wait_until(Duration::from_secs(60), || status()["Error"].is_string()),
        "{:#}",
        status()
    );
    // Runs the archive here once the background archiver has let it go.
    let archive_here = || {
        let mut out = run(&a, &s, &["snapshot", "archive", &snap]);
        for _ in 0..100 {
            if out.code != 16 {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
            out = run(&a, &s, &["snapshot", "archive", &snap]);
        }
        out
    };
    let err = archive_here().fails(23);
    assert!(err.contains("no such bucket"), "{err}");
    assert!(!err.contains("attempts"), "{err}");
    assert_eq!(status()["State"], "pending", "{:#}", status());
    // With the bucket back, the same archive completes.
    s.moto.create_bucket(BUCKET);
    let done = archive_here().ok().json();
    assert_eq!(done["State"], "completed", "{done:#}");
    // The bucket emptied and removed under an archived snapshot: its delete says so (the
    // index update's conditional write is answered 404), and the snapshot stays.
    s.moto
        .aws(&["s3", "rb", &format!("s3://{BUCKET}"), "--force"]);
    let err = run(&a, &s, &["snapshot", "delete", &snap]).fails(23);
    assert!(err.contains("no such bucket"), "{err}");
    assert!(!err.contains("attempts"), "{err}");
    assert_eq!(
        json(&a, &s, &["snapshot", "list"])["Snapshots"][0]["SnapshotId"],
        snap.as_str()
    );
}
