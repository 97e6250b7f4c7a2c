//! Rotation and sealing of log files, and writers racing through one or several
//! `AuditLog`s, on the same files or a read-only copy.

use super::*;

#[test]
fn size_rotation_chains_across_files_and_digests() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path()).with_max_file_bytes(1000);
    append_n(&log, 1..=50, T0);
    let files = log_files(&log);
    assert!(files.len() > 5, "{files:?}");
    let r = log.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(
        (r.files, r.sealed_files, r.last_seq),
        (files.len(), files.len() - 1, 50)
    );
    // Every sealed file's digest links to the one before.
    let digests: Vec<Value> = files[..files.len() - 1]
        .iter()
        .map(|f| {
            let dn = f.replace(".jsonl", ".digest.json");
            serde_json::from_slice(&fs::read(path(&log, &dn)).unwrap()).unwrap()
        })
        .collect();
    assert_eq!(digests[0]["previousDigestHash"], Value::Null);
    for w in digests.windows(2) {
        assert_eq!(w[1]["previousDigestHash"], w[0]["digestHash"]);
        assert_eq!(w[1]["firstSeq"], w[0]["lastSeq"].as_u64().unwrap() + 1);
    }
    assert_eq!(log.events().unwrap().len(), 50);
}

#[test]
fn next_day_seals_the_old_file() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=3, T0);
    append_n(&log, 4..=5, T0 + DAY);
    assert_eq!(log_files(&log), [FIRST, "20261130-000000000004.jsonl"]);
    assert!(path(&log, "20261129-000000000001.digest.json").exists());
    let digest: Value =
        serde_json::from_slice(&fs::read(path(&log, "20261129-000000000001.digest.json")).unwrap())
            .unwrap();
    assert_eq!(digest["sealedAt"], "2026-11-30T01:00:00Z");
    assert_eq!(digest["eventCount"], 3);
    assert!(log.verify().unwrap().valid);
}

#[test]
fn seal_is_a_no_op_without_events_and_the_next_append_starts_a_file() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=2, T0);
    assert!(log.seal(T0).unwrap().is_some());
    assert_eq!(log.seal(T0).unwrap(), None);
    append_n(&log, 3..=3, T0);
    assert_eq!(log_files(&log), [FIRST, "20261129-000000000003.jsonl"]);
    assert!(log.verify().unwrap().valid);
}

#[test]
fn half_done_seal_is_resumed_as_the_active_file() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=3, T0);
    // A seal that died after chmod, before writing the digest.
    fs::set_permissions(path(&log, FIRST), fs::Permissions::from_mode(0o400)).unwrap();
    append_n(&log, 4..=4, T0);
    assert_eq!(log_files(&log), [FIRST]);
    assert!(log.verify().unwrap().valid);
}

#[test]
fn two_instances_interleaving_keep_one_chain() {
    let d = tempfile::tempdir().unwrap();
    let a = open(d.path()).with_max_file_bytes(2000);
    let b = open(d.path()).with_max_file_bytes(2000);
    for i in 1..=60 {
        let (log, now) = if i % 3 == 0 { (&b, T0) } else { (&a, T0) };
        assert_eq!(log.append(&ev(i), now).unwrap(), i);
        if i == 30 {
            b.seal(T0).unwrap();
        }
    }
    a.append(&ev(61), T0 + DAY).unwrap();
    assert_eq!(b.append(&ev(62), T0 + DAY).unwrap(), 62);
    let r = a.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(r.last_seq, 62);
    let ids: Vec<u64> = b.events().unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(ids, (1..=62).collect::<Vec<_>>());
}

#[test]
fn empty_file_removed_by_another_writer_is_noticed() {
    let d = tempfile::tempdir().unwrap();
    let a = open(d.path());
    let b = open(d.path());
    append_n(&a, 1..=3, T0);
    a.seal(T0).unwrap();
    // A file created but never written (a crash right after creating it).
    let empty = path(&a, "20261129-000000000004.jsonl");
    fs::write(&empty, b"").unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o600)).unwrap();
    a.sync().unwrap(); // a now caches the empty file as active
    // The next day, b replaces the empty file of the old day instead of sealing it.
    assert_eq!(b.append(&ev(4), T0 + DAY).unwrap(), 4);
    assert!(!empty.exists());
    assert_eq!(a.append(&ev(5), T0 + DAY).unwrap(), 5);
    assert_eq!(log_files(&a), [FIRST, "20261130-000000000004.jsonl"]);
    let r = a.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(r.last_seq, 5);
}

#[test]
fn read_only_copy_verifies_without_the_lock() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=3, T0);
    fs::remove_file(path(&log, ".lock")).unwrap();
    let r = read_only(d.path(), log.dir(), || open(d.path()).verify());
    assert!(r.unwrap().valid);
    assert!(!path(&log, ".lock").exists());
}

/// Runs `f` with `dir` (under `top`) read-only to it: mode 0500. Root ignores modes, so as
/// root `f` runs on a thread of its own whose filesystem uid and gid are nobody's, with
/// the tree under `top` given to nobody: the permission checks then apply to that thread
/// alone (the fsuid is per thread, and leaving uid 0 drops its capabilities such as
/// CAP_DAC_OVERRIDE). A file created in `dir` there fails, which the thread proves first.
fn read_only<T: Send>(top: &Path, dir: &Path, f: impl FnOnce() -> T + Send) -> T {
    use nix::unistd::{Gid, Uid, geteuid, setfsgid, setfsuid};
    const NOBODY: u32 = 65_534;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o500)).unwrap();
    let r = if geteuid().is_root() {
        chown_tree(top, NOBODY);
        std::thread::scope(|s| {
            s.spawn(|| {
                setfsgid(Gid::from_raw(NOBODY));
                setfsuid(Uid::from_raw(NOBODY));
                // An invalid id changes nothing and returns the current one.
                let now = setfsuid(Uid::from_raw(u32::MAX));
                assert_eq!(now.as_raw(), NOBODY, "cannot take nobody's fsuid");
                let probe = fs::File::create(dir.join("probe"));
                assert!(
                    matches!(&probe, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied),
                    "{dir:?} is not read-only to this thread: {probe:?}"
                );
                fs::read_dir(dir).unwrap_or_else(|e| panic!("nobody cannot read {dir:?}: {e}"));
                f()
            })
            .join()
            .unwrap()
        })
    } else {
        f()
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    r
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

fn check_concurrent(logs: Vec<Arc<AuditLog>>, per_thread: u64) {
    let threads: Vec<_> = logs
        .iter()
        .enumerate()
        .map(|(t, log)| {
            let log = Arc::clone(log);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    let e = json!({"eventID": format!("t{t}-{i}"), "eventName": "Decrypt"});
                    // Crossing midnight halfway exercises date rotation under contention.
                    let now = if i < per_thread / 2 { T0 } else { T0 + DAY };
                    log.append(&e, now).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = per_thread * logs.len() as u64;
    let r = logs[0].verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!((r.events, r.last_seq), (total, total));
    let events = logs[0].events().unwrap();
    assert_eq!(events.len() as u64, total);
    // Each thread's events appear in its own order.
    for t in 0..logs.len() {
        let mine: Vec<String> = events
            .iter()
            .filter_map(|(_, e)| e["eventID"].as_str())
            .filter(|id| id.starts_with(&format!("t{t}-")))
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = (0..per_thread).map(|i| format!("t{t}-{i}")).collect();
        assert_eq!(mine, want);
    }
}

#[test]
fn threads_through_one_instance() {
    let d = tempfile::tempdir().unwrap();
    let log = Arc::new(open(d.path()).with_max_file_bytes(4000));
    check_concurrent(vec![log; 4], 200);
}

#[test]
fn threads_through_separate_instances() {
    let d = tempfile::tempdir().unwrap();
    let logs = (0..4)
        .map(|_| Arc::new(open(d.path()).with_max_file_bytes(4000)))
        .collect();
    check_concurrent(logs, 200);
}
