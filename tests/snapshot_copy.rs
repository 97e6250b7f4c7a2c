//! Snapshot copy between regions and within one under a new key, rekey restore, resuming
//! an interrupted copy, and crypto-shredding. Real FUSE mounts; each test has
//! its own data dir.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use common::mount::*;
use common::str_field;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Fills `mib` MiB of a fresh volume with seeded random data (with one hole left
/// unwritten in the middle of each 4 MiB), returns its id and the blake3 of the volume.
fn volume_with_data(v: &VolEnv, name: &str, mib: u64, extra: &[&str]) -> (String, blake3::Hash) {
    let size = format!("{}M", mib + 8);
    let mut args = vec!["--size", size.as_str(), "--name", name];
    args.extend_from_slice(extra);
    let vol = v.create(&args);
    let dir = v.dir(&format!("fill-{name}"));
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    let mut rng = Rng::new(0xC0FFEE ^ mib);
    for i in 0..mib {
        if i % 4 == 2 {
            continue;
        }
        f.write_all_at(&rng.bytes(MIB as usize), i * MIB).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let h = hash_file(&path);
    v.detach(&dir);
    (vol, h)
}

fn hash_file(path: &Path) -> blake3::Hash {
    let f = std::fs::File::open(path).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    loop {
        let n = f.read_at(&mut buf, off).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finalize()
}

/// Attaches `vol` (in `region`) and hashes its first `bytes` bytes.
fn hash_volume(v: &VolEnv, region: &str, vol: &str, bytes: u64) -> blake3::Hash {
    let dir = v.dir(&format!("h-{vol}"));
    let d = dir.to_string_lossy().to_string();
    v.ok(&["--region", region, "attach", vol, &d]);
    let path = canon(&dir).join("volume");
    let f = std::fs::File::open(&path).unwrap();
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    while off < bytes {
        let n = f
            .read_at(&mut buf[..((bytes - off).min(MIB)) as usize], off)
            .unwrap();
        assert!(n > 0, "short read at {off}");
        h.update(&buf[..n]);
        off += n as u64;
    }
    drop(f);
    v.ok(&["--region", region, "detach", &d]);
    h.finalize()
}

/// Starts `cryptvol args` (a copy or restore slowed by --max-bandwidth), lets it run for
/// `ms`, checks it is still running (`what` otherwise: it finished before it could be
/// interrupted), and kills it with SIGKILL.
#[track_caller]
fn kill_midway(v: &VolEnv, args: &[&str], ms: u64, what: &str) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cryptvol"))
        .arg("--data-dir")
        .arg(&v.data)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    assert!(child.try_wait().unwrap().is_none(), "{what}");
    child.kill().unwrap();
    child.wait().unwrap();
}

fn snapshot(v: &VolEnv, vol: &str) -> String {
    str_field(&v.json(&["snapshot", "create", vol]), "SnapshotId")
}

fn wrapped_key(v: &VolEnv, region: &str, snap: &str) -> String {
    let i: Value = v.json(&["--region", region, "inspect", "snapshot", snap]);
    str_field(&i["Volume"], "WrappedDataKey")
}

#[test]
fn copy_to_another_region_reads_the_same_and_each_region_keeps_its_keys() {
    needs!(Fuse);
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let (vol, _) = volume_with_data(&v, "src", 24, &[]);
    let snap = snapshot(&v, &vol);
    let want = hash_volume(&v, "local-1", &vol, 32 * MIB);

    let r = v.json(&["snapshot", "copy", &snap, "--destination-region", "eu-2"]);
    let copy = str_field(&r, "SnapshotId");
    assert_ne!(copy, snap);
    assert_eq!(str_field(&r, "Region"), "eu-2");
    assert!(
        str_field(&r, "KmsKeyId").starts_with("arn:aws:kms:eu-2:"),
        "{r:#}"
    );
    assert_eq!(
        r["ChunksCopied"].as_u64(),
        Some(18),
        "24 MiB with a hole every 4th MiB"
    );
    // Visible in B, not in A.
    let listed_b = v.json(&["--region", "eu-2", "snapshot", "list"]);
    assert_eq!(listed_b["Snapshots"].as_array().unwrap().len(), 1);
    let listed_a = v.json(&["snapshot", "list"]);
    assert_eq!(listed_a["Snapshots"].as_array().unwrap().len(), 1);

    let restored = str_field(
        &v.json(&[
            "--region",
            "eu-2",
            "volume",
            "create",
            "--from-snapshot",
            &copy,
        ]),
        "VolumeId",
    );
    assert_eq!(
        hash_volume(&v, "eu-2", &restored, 32 * MIB),
        want,
        "same bytes in region B"
    );

    // The copy's data key is region B's; the original's is region A's.
    let copy_blob = wrapped_key(&v, "eu-2", &copy);
    let orig_blob = wrapped_key(&v, "local-1", &snap);
    let ctx_copy = format!("cryptvol:lineage={copy}");
    let e = v.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &copy_blob,
            "--encryption-context",
            &ctx_copy,
        ],
        8,
    );
    assert!(e.contains("eu-2") && e.contains("local-1"), "{e}");
    let lineage = str_field(
        &v.json(&["inspect", "snapshot", &snap])["Volume"],
        "Lineage",
    );
    let ctx_orig = format!("cryptvol:lineage={lineage}");
    v.fail(
        &[
            "--region",
            "eu-2",
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &orig_blob,
            "--encryption-context",
            &ctx_orig,
        ],
        8,
    );
    // Each region's own KMS knows its own blob's key; as in AWS, the managed EBS key
    // answers only calls made through the volume service, so a direct Decrypt by the
    // account root is refused by its key policy (not as a foreign or unknown blob).
    for (region, blob, ctx) in [
        ("eu-2", &copy_blob, &ctx_copy),
        ("local-1", &orig_blob, &ctx_orig),
    ] {
        let e = v.fail(
            &[
                "--region",
                region,
                "kms",
                "decrypt",
                "--ciphertext-blob",
                blob,
                "--encryption-context",
                ctx,
            ],
            18,
        );
        assert!(
            e.contains("AccessDeniedException") && e.contains(&format!("arn:aws:kms:{region}:")),
            "{e}"
        );
    }
}

#[test]
fn copy_within_a_region_under_a_new_key_and_rekey_restore() {
    needs!(Fuse);
    let v = VolEnv::new();
    let k1 = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "KeyId");
    let k2 = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "KeyId");
    let (vol, _) = volume_with_data(&v, "src", 10, &["--kms-key", &k1]);
    let snap = snapshot(&v, &vol);
    let want = hash_volume(&v, "local-1", &vol, 18 * MIB);

    // Same region needs a new key.
    fails(&v, &["snapshot", "copy", &snap], 6);
    let r = v.json(&["snapshot", "copy", &snap, "--kms-key", &k2]);
    assert!(str_field(&r, "KmsKeyId").ends_with(&k2), "{r:#}");
    let copy = str_field(&r, "SnapshotId");

    // Rekey restore: a volume under k2 with the same bytes.
    let rekeyed = v.json(&[
        "volume",
        "create",
        "--from-snapshot",
        &snap,
        "--kms-key",
        &k2,
        "--name",
        "rk",
    ]);
    assert!(str_field(&rekeyed, "KmsKeyId").ends_with(&k2));
    let rk = str_field(&rekeyed, "VolumeId");
    assert_eq!(hash_volume(&v, "local-1", &rk, 18 * MIB), want);
    let same_key = str_field(
        &v.json(&["volume", "create", "--from-snapshot", &snap]),
        "VolumeId",
    );

    // With k1 disabled, what was rekeyed (and the copy) no longer depends on it.
    v.ok(&["kms", "disable-key", "--key-id", &k1]);
    assert_eq!(hash_volume(&v, "local-1", &rk, 18 * MIB), want);
    let from_copy = str_field(
        &v.json(&["volume", "create", "--from-snapshot", &copy]),
        "VolumeId",
    );
    assert_eq!(hash_volume(&v, "local-1", &from_copy, 18 * MIB), want);
    let dir = v.dir("same");
    let out = v.attach_run(&same_key, &dir, &[]);
    assert_eq!(
        out.code, 4,
        "a same-key restore still needs k1: {}",
        out.stderr
    );
    assert!(out.stderr.contains("DisabledException"), "{}", out.stderr);
}

#[test]
fn an_interrupted_copy_is_invisible_and_a_rerun_resumes_it() {
    needs!(Fuse);
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let (vol, _) = volume_with_data(&v, "big", 160, &[]);
    let snap = snapshot(&v, &vol);
    let want = hash_volume(&v, "local-1", &vol, 168 * MIB);

    // Slow the copy down and kill it half way: at 24 MiB/s the 120 chunks take about 5 s,
    // and progress is committed every second.
    kill_midway(
        &v,
        &[
            "snapshot",
            "copy",
            &snap,
            "--destination-region",
            "eu-2",
            "--output",
            "json",
            "--max-bandwidth",
            "24M",
        ],
        2500,
        "the copy finished before it could be interrupted",
    );

    // Nothing visible in region B.
    let listed = v.json(&["--region", "eu-2", "snapshot", "list"]);
    assert_eq!(
        listed["Snapshots"].as_array().unwrap().len(),
        0,
        "{listed:#}"
    );

    let r = v.json(&["snapshot", "copy", &snap, "--destination-region", "eu-2"]);
    let resumed = r["ChunksResumed"].as_u64().unwrap();
    let copied = r["ChunksCopied"].as_u64().unwrap();
    assert!(
        resumed > 0 && copied < 120,
        "progress was committed and reused: {r:#}"
    );
    assert_eq!(
        resumed + copied,
        120,
        "every written chunk exactly once: {r:#}"
    );
    let copy = str_field(&r, "SnapshotId");
    let restored = str_field(
        &v.json(&[
            "--region",
            "eu-2",
            "volume",
            "create",
            "--from-snapshot",
            &copy,
        ]),
        "VolumeId",
    );
    assert_eq!(hash_volume(&v, "eu-2", &restored, 168 * MIB), want);
    // A third run has nothing pending: it makes a new, complete copy.
    let again = v.json(&["snapshot", "copy", &snap, "--destination-region", "eu-2"]);
    assert_eq!(again["ChunksResumed"].as_u64(), Some(0));
    v.assert_pool_clean("local-1");
    v.assert_pool_clean("eu-2");
}

#[test]
fn deleting_the_cmk_makes_volumes_and_snapshots_unreadable_and_says_so() {
    needs!(Fuse);
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let k = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "KeyId");
    let (vol, _) = volume_with_data(&v, "doomed", 4, &["--kms-key", &k]);
    let snap = snapshot(&v, &vol);
    v.ok(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &k,
        "--pending-window-days",
        "7",
    ]);
    let later = [("CRYPTVOL_TEST_CLOCK_SKEW_SECS", "691200")]; // 8 days
    let dir = v.dir("m");
    let d = dir.to_string_lossy().to_string();
    for args in [
        vec!["attach", vol.as_str(), d.as_str()],
        vec![
            "snapshot",
            "copy",
            snap.as_str(),
            "--destination-region",
            "eu-2",
        ],
        vec![
            "volume",
            "create",
            "--from-snapshot",
            snap.as_str(),
            "--kms-key",
            "alias/aws/ebs",
        ],
    ] {
        let out = v.run_env(&args, &later);
        assert_eq!(out.code, 14, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("deleted"), "{}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
    assert!(!is_mount_point(&dir));
    let listed = v.json(&["--region", "eu-2", "snapshot", "list"]);
    assert_eq!(listed["Snapshots"].as_array().unwrap().len(), 0);
}

/// A failing pool command: exit code and the one-line error contract. (Pool commands may
/// touch `meta.redb`'s bytes just by opening it, so the data dir is checked by listing.)
#[track_caller]
fn fails(v: &VolEnv, args: &[&str], code: i32) -> String {
    let out = v.run(args);
    assert_eq!(out.code, code, "{args:?}: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("cryptvol: "), "{}", out.stderr);
    out.stderr
}

#[test]
fn copy_errors_leave_the_source_untouched() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (vol, _) = volume_with_data(&v, "src", 2, &[]);
    let snap = snapshot(&v, &vol);
    let e = fails(
        &v,
        &[
            "snapshot",
            "copy",
            &snap,
            "--destination-region",
            "nowhere-1",
        ],
        8,
    );
    assert!(e.contains("cryptvol init"), "{e}");
    // A region of another machine is reached through its store and KMS: the line says how.
    assert!(e.contains("--destination-snapshot-store"), "{e}");
    fails(
        &v,
        &[
            "snapshot",
            "copy",
            "snap-0123456789abcdef0",
            "--destination-region",
            "local-1",
            "--kms-key",
            "alias/aws/ebs",
        ],
        3,
    );
    fails(
        &v,
        &[
            "snapshot",
            "copy",
            &snap,
            "--destination-region",
            "Bad/Region",
        ],
        6,
    );
    let listed = v.json(&["snapshot", "list"]);
    assert_eq!(listed["Snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(str_field(&listed["Snapshots"][0], "SnapshotId"), snap);
}

/// With volumes attached, the region daemon owns the pool: a copy into that region and a
/// rekey restore in it run inside the daemon, with the same result.
#[test]
fn copy_and_rekey_restore_work_while_the_destination_daemon_owns_the_pool() {
    needs!(Fuse);
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let (vol, _) = volume_with_data(&v, "src", 6, &[]);
    let snap = snapshot(&v, &vol);
    let want = hash_volume(&v, "local-1", &vol, 14 * MIB);

    // Keep a daemon running in both regions.
    let busy_b = str_field(
        &v.json(&["--region", "eu-2", "volume", "create", "--size", "8M"]),
        "VolumeId",
    );
    let db = v.dir("busy-b");
    let dbs = db.to_string_lossy().to_string();
    v.ok(&["--region", "eu-2", "attach", &busy_b, &dbs]);
    let da = v.dir("busy-a");
    v.attach(&vol, &da, &[]);

    let r = v.json(&["snapshot", "copy", &snap, "--destination-region", "eu-2"]);
    let copy = str_field(&r, "SnapshotId");
    let restored = str_field(
        &v.json(&[
            "--region",
            "eu-2",
            "volume",
            "create",
            "--from-snapshot",
            &copy,
        ]),
        "VolumeId",
    );
    assert_eq!(hash_volume(&v, "eu-2", &restored, 14 * MIB), want);

    let rk = v.json(&[
        "volume",
        "create",
        "--from-snapshot",
        &snap,
        "--kms-key",
        "alias/aws/ebs",
        "--name",
        "rk",
    ]);
    let rk = str_field(&rk, "VolumeId");
    assert_eq!(hash_volume(&v, "local-1", &rk, 14 * MIB), want);

    v.ok(&["--region", "eu-2", "detach", &dbs]);
    v.detach(&da);
}

#[test]
fn a_key_of_another_region_is_refused_before_anything_is_written() {
    needs!(Fuse);
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let arn_a = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "Arn");
    let (vol, _) = volume_with_data(&v, "src", 2, &[]);
    let snap = snapshot(&v, &vol);
    let e = fails(
        &v,
        &[
            "snapshot",
            "copy",
            &snap,
            "--destination-region",
            "eu-2",
            "--kms-key",
            &arn_a,
        ],
        8,
    );
    assert!(e.contains("local-1") && e.contains("eu-2"), "{e}");
    let listed = v.json(&["--region", "eu-2", "snapshot", "list"]);
    assert_eq!(listed["Snapshots"].as_array().unwrap().len(), 0);
}

/// A destination region whose disk fills during the copy: a clear "no space" error, no
/// snapshot visible there, the source untouched; with space, the same command finishes.
#[test]
fn a_full_destination_disk_fails_cleanly_and_the_copy_resumes_with_space() {
    needs!(Fuse, Root);
    let v = VolEnv::new();
    let small = v.data.join("regions/small-1");
    std::fs::create_dir_all(&small).unwrap();
    v.mount_tmpfs(&small, "24M");
    v.ok(&["--region", "small-1", "init"]);
    let (vol, _) = volume_with_data(&v, "src", 40, &[]);
    let snap = snapshot(&v, &vol);
    let want = hash_volume(&v, "local-1", &vol, 48 * MIB);

    let e = fails(
        &v,
        &["snapshot", "copy", &snap, "--destination-region", "small-1"],
        15,
    );
    assert!(e.contains("no space"), "{e}");
    let listed = v.json(&["--region", "small-1", "snapshot", "list"]);
    assert_eq!(
        listed["Snapshots"].as_array().unwrap().len(),
        0,
        "nothing visible"
    );
    let src = v.json(&["snapshot", "list"]);
    assert_eq!(
        src["Snapshots"].as_array().unwrap().len(),
        1,
        "source untouched"
    );

    let d = small.to_string_lossy().to_string();
    sh_ok("mount", &["-o", "remount,size=256M", &d]);
    let r = v.json(&["snapshot", "copy", &snap, "--destination-region", "small-1"]);
    let copy = str_field(&r, "SnapshotId");
    let restored = str_field(
        &v.json(&[
            "--region",
            "small-1",
            "volume",
            "create",
            "--from-snapshot",
            &copy,
        ]),
        "VolumeId",
    );
    assert_eq!(hash_volume(&v, "small-1", &restored, 48 * MIB), want);
}

/// A copy used to read its source by slot number from a map captured at the start, while
/// the source snapshot could be deleted under it (its slots punched or reused: the copy
/// re-encrypted zeros or another volume's data). And a killed command left its copy
/// running in the daemon: a re-run abandoned it, and the old copy later finished as a
/// second volume with the same name. Now the source is leased for the whole copy, and a
/// copy is a job that stops when its command goes away.
#[test]
fn copy_from_a_moving_source() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (vol, _) = volume_with_data(&v, "src", 80, &[]);
    let snap = snapshot(&v, &vol);
    let want = hash_volume(&v, "local-1", &vol, 88 * MIB);
    let key = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "KeyId");

    // A daemon owns the pool, so the copy runs in it.
    let busy = v.create(&["--size", "8M"]);
    let d = v.dir("busy");
    v.attach(&busy, &d, &[]);
    let restore = |name: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cryptvol"))
            .arg("--data-dir")
            .arg(&v.data)
            .args([
                "volume",
                "create",
                "--from-snapshot",
                &snap,
                "--kms-key",
                &key,
                "--name",
                name,
                "--output",
                "json",
                // Slow enough to be interrupted: about 6 s for the 80 chunks.
                "--max-bandwidth",
                "14M",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = restore("restored");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(first.try_wait().unwrap().is_none(), "finished too early");

    // While it runs, its source cannot be deleted.
    let out = v.run(&["snapshot", "delete", &snap]);
    let line = out.fails(4);
    assert!(line.contains(&snap) && line.contains("in use"), "{line}");

    // Kill the command: its copy stops in the daemon.
    first.kill().unwrap();
    first.wait().unwrap();
    // The re-run abandons what the first one left and makes the volume.
    let second = restore("restored").wait_with_output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let h: Value = serde_json::from_slice(&second.stdout).unwrap();
    let restored = str_field(&h, "VolumeId");
    // Long enough for an orphaned first copy to have finished, had it gone on.
    std::thread::sleep(Duration::from_secs(6));
    let names: Vec<String> = v.json(&["volume", "list"])["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| str_field(x, "Name"))
        .collect();
    assert_eq!(
        names.iter().filter(|n| *n == "restored").count(),
        1,
        "one volume of that name: {names:?}"
    );
    v.ok(&["detach", &d.to_string_lossy()]);
    assert_eq!(hash_volume(&v, "local-1", &restored, 88 * MIB), want);
    // The copy is done: its lease ended, and the source can go.
    v.ok(&["snapshot", "delete", &snap]);
    v.assert_pool_clean("local-1");
}

/// An interrupted copy holds its source: deleting the source says which copy holds it and
/// how to cancel that copy; cancelling (deleting the pending copy's id, as EBS deletes a
/// pending snapshot) frees what it copied and lets the source go.
#[test]
fn an_interrupted_copy_can_be_cancelled_and_then_releases_its_source() {
    needs!(Fuse);
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let (vol, _) = volume_with_data(&v, "src", 40, &[]);
    let snap = snapshot(&v, &vol);
    kill_midway(
        &v,
        &[
            "snapshot",
            "copy",
            &snap,
            "--destination-region",
            "eu-2",
            "--max-bandwidth",
            "10M",
        ],
        1500,
        "finished too early",
    );

    let line = v.run(&["snapshot", "delete", &snap]).fails(4);
    let at = line.find("eu-2/snap-").unwrap_or_else(|| panic!("{line}"));
    let pending = line[at + 5..at + 5 + 22].to_string();
    assert!(
        line.contains(&format!("cryptvol --region eu-2 snapshot delete {pending}")),
        "{line}"
    );
    let r = v.json(&["--region", "eu-2", "snapshot", "delete", &pending]);
    assert_eq!(r["CopyCancelled"], Value::Bool(true), "{r:#}");
    v.assert_pool_clean("eu-2");
    v.ok(&["snapshot", "delete", &snap]);
    v.assert_pool_clean("local-1");
    // Nothing of the copy remains in the destination.
    let listed = v.json(&["--region", "eu-2", "snapshot", "list"]);
    assert_eq!(listed["Snapshots"], serde_json::json!([]), "{listed:#}");
}

/// A restore under another key (`--kms-key`) killed half way has made its volume's grant;
/// the re-run abandons the unfinished restore and retires that grant with it, so the key
/// ends with the finished volume's grant only.
#[test]
fn an_interrupted_rekeyed_restore_leaves_no_grant_behind() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (vol, _) = volume_with_data(&v, "big", 160, &[]);
    let snap = snapshot(&v, &vol);
    let key = v.create_key();
    let grants = |v: &VolEnv| -> Vec<Value> {
        v.json(&["kms", "list-grants", "--key-id", &key])["Grants"]
            .as_array()
            .expect("Grants")
            .clone()
    };
    kill_midway(
        &v,
        &[
            "volume",
            "create",
            "--from-snapshot",
            &snap,
            "--kms-key",
            &key,
            "--max-bandwidth",
            "24M",
        ],
        2500,
        "the restore finished before it could be interrupted",
    );
    let left = grants(&v);
    assert_eq!(left.len(), 1, "the killed restore's grant: {left:#?}");
    let abandoned = str_field(&left[0], "Name");

    let restored = str_field(
        &v.json(&[
            "volume",
            "create",
            "--from-snapshot",
            &snap,
            "--kms-key",
            &key,
        ]),
        "VolumeId",
    );
    assert_ne!(restored, abandoned);
    let now = grants(&v);
    assert_eq!(now.len(), 1, "{now:#?}");
    assert_eq!(now[0]["Name"], restored.as_str(), "{now:#?}");
    v.assert_pool_clean("local-1");
}

/// A snapshot of a volume that was never written has no chunks, and its pool may have no
/// data file yet: copying it (to another region, or under a new key) and restoring the copy
/// must work and give an empty volume, not fail on the missing data file.
#[test]
fn a_snapshot_of_a_never_written_volume_copies_and_restores() {
    let v = VolEnv::new();
    v.ok(&["--region", "eu-2", "init"]);
    let vol = str_field(
        &v.json(&["volume", "create", "--size", "8M", "--name", "blank"]),
        "VolumeId",
    );
    let snap = snapshot(&v, &vol);
    let r = v.json(&["snapshot", "copy", &snap, "--destination-region", "eu-2"]);
    assert_eq!(r["ChunksCopied"].as_u64(), Some(0), "{r:#}");
    let copy = str_field(&r, "SnapshotId");
    let restored = v.json(&[
        "--region",
        "eu-2",
        "volume",
        "create",
        "--from-snapshot",
        &copy,
        "--name",
        "back",
    ]);
    assert_eq!(
        restored["SizeBytes"].as_u64(),
        Some(8 << 20),
        "{restored:#}"
    );
    let rekeyed = v.json(&[
        "volume",
        "create",
        "--from-snapshot",
        &snap,
        "--kms-key",
        "alias/aws/ebs",
        "--name",
        "rekeyed",
    ]);
    assert_eq!(rekeyed["SizeBytes"].as_u64(), Some(8 << 20), "{rekeyed:#}");
    let check = v.json(&["--region", "eu-2", "pool", "check"]);
    assert_eq!(check["Clean"], true, "{check:#}");
}
