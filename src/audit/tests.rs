//! The audit log against real files: append, tamper in each way `verify` names, crash
//! leftovers, rotation, and writers racing through one or several `AuditLog`s.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;

/// 2026-11-29T01:00:00Z.
const T0: i64 = 1_795_910_400 + 3600;
const DAY: i64 = 86_400;
const FIRST: &str = "20261129-000000000001.jsonl";

fn key() -> Key256 {
    Key256::from_bytes([0x42; 32])
}

fn open(dir: &Path) -> AuditLog {
    AuditLog::new(dir.join("audit"), key())
}

fn ev(i: u64) -> Value {
    json!({
        "eventVersion": "1.08",
        "eventSource": "kms.amazonaws.com",
        "eventName": "Encrypt",
        "eventID": format!("ev-{i}"),
        "requestParameters": {"encryptionContext": {"purpose": format!("p{i}")}},
    })
}

fn append_n(log: &AuditLog, range: std::ops::RangeInclusive<u64>, now: i64) {
    for i in range {
        assert_eq!(log.append(&ev(i), now).unwrap(), i);
    }
}

fn path(log: &AuditLog, name: &str) -> PathBuf {
    log.dir().join(name)
}

/// Rewrites a file's lines (making a sealed file writable first).
fn edit_lines(p: &Path, f: impl FnOnce(&mut Vec<String>)) {
    fs::set_permissions(p, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(p).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    f(&mut lines);
    let mut out = lines.join("\n");
    out.push('\n');
    fs::write(p, out).unwrap();
}

fn problem(log: &AuditLog) -> Problem {
    let r = log.verify().unwrap();
    assert!(!r.valid);
    r.problem.expect("a problem")
}

fn log_files(log: &AuditLog) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(log.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    v.sort();
    v
}

#[test]
fn appended_events_verify_and_read_back() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    assert!(!log.dir().exists(), "new() does no I/O");
    append_n(&log, 1..=20, T0);
    let r = log.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(
        (r.files, r.sealed_files, r.events, r.last_seq),
        (1, 0, 20, 20)
    );
    assert_eq!(log_files(&log), [FIRST]);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(log.dir()), 0o700);
    assert_eq!(mode(&path(&log, FIRST)), 0o600);
    let events = log.events().unwrap();
    let want: Vec<(u64, Value)> = (1..=20).map(|i| (i, ev(i))).collect();
    assert_eq!(events, want);
    // Each line is a CloudTrail-shaped object with the chain member last.
    let text = fs::read_to_string(path(&log, FIRST)).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["eventID"], "ev-1");
    assert_eq!(first["cryptvolChain"]["seq"], 1);
    assert_eq!(first["cryptvolChain"]["prev"], "0".repeat(64));
    log.sync().unwrap();
}

#[test]
fn empty_log_verifies() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    let r = log.verify().unwrap();
    assert!(r.valid);
    assert_eq!((r.files, r.events), (0, 0));
    assert!(log.events().unwrap().is_empty());
    assert_eq!(log.seal(T0).unwrap(), None);
}

#[test]
fn non_object_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    for v in [json!([1]), json!("x"), json!(null), json!(3)] {
        assert!(matches!(log.append(&v, T0), Err(AuditError::NotAnObject)));
    }
    assert_eq!(log.append(&json!({}), T0).unwrap(), 1);
    assert!(log.verify().unwrap().valid);
    assert_eq!(log.events().unwrap(), [(1, json!({}))]);
}

#[test]
fn edited_event_name_is_altered() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=20, T0);
    edit_lines(&path(&log, FIRST), |l| {
        l[16] = l[16].replace("\"eventName\":\"Encrypt\"", "\"eventName\":\"Decrypt\"");
    });
    let p = problem(&log);
    assert_eq!(p.kind, ProblemKind::Altered);
    assert_eq!((p.seq, p.line), (Some(17), Some(17)));
    assert_eq!(p.event_id.as_deref(), Some("ev-17"));
    assert_eq!(
        p.message,
        format!(
            "event 17 (eventID ev-17, line 17 of {FIRST}) was altered: its hash does not match its contents"
        )
    );
    assert_eq!(log.verify().unwrap().events, 16);
}

#[test]
fn edited_context_value_is_altered() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=10, T0);
    edit_lines(&path(&log, FIRST), |l| l[4] = l[4].replace("p5", "p6"));
    let p = problem(&log);
    assert_eq!((p.kind, p.seq), (ProblemKind::Altered, Some(5)));
}

#[test]
fn deleted_line_is_removed() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=10, T0);
    edit_lines(&path(&log, FIRST), |l| {
        l.remove(4);
    });
    let p = problem(&log);
    assert_eq!(
        (p.kind, p.seq, p.line),
        (ProblemKind::Removed, Some(5), Some(5))
    );
    assert_eq!(
        p.message,
        format!("event 5 is missing: line 5 of {FIRST} holds event 6 (an event was removed)")
    );
}

#[test]
fn swapped_lines_are_reordered() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=10, T0);
    edit_lines(&path(&log, FIRST), |l| l.swap(5, 6));
    let p = problem(&log);
    assert_eq!(
        (p.kind, p.seq, p.line),
        (ProblemKind::Reordered, Some(6), Some(6))
    );
    assert_eq!(p.event_id.as_deref(), Some("ev-6"));
    assert_eq!(
        p.message,
        format!(
            "event 6 is out of order: line 6 of {FIRST} holds event 7 and event 6 comes later (events were reordered)"
        )
    );
}

#[test]
fn duplicated_line_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=5, T0);
    edit_lines(&path(&log, FIRST), |l| {
        let dup = l[2].clone();
        l.insert(3, dup);
    });
    let p = problem(&log);
    assert_eq!(
        (p.kind, p.seq, p.line),
        (ProblemKind::Reordered, Some(3), Some(4))
    );
}

#[test]
fn torn_last_line_is_reported_then_repaired_by_the_next_append() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=5, T0);
    let p = path(&log, FIRST);
    let bytes = fs::read(&p).unwrap();
    let last_start = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let cut = last_start + (bytes.len() - last_start) / 2;
    fs::write(&p, &bytes[..cut]).unwrap();

    let pr = problem(&log);
    assert_eq!(
        (pr.kind, pr.seq, pr.line),
        (ProblemKind::Truncated, Some(5), Some(5))
    );
    assert_eq!(log.events().unwrap().len(), 4, "the torn line is skipped");

    // The same instance notices the size change and repairs before appending.
    assert_eq!(log.append(&ev(5), T0).unwrap(), 5);
    assert!(log.verify().unwrap().valid);
    // A fresh instance (another process after a crash) does the same.
    let len = fs::metadata(&p).unwrap().len();
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"{\"eventName\":\"Enc")
        .unwrap();
    assert!(fs::metadata(&p).unwrap().len() > len);
    let other = open(d.path());
    assert_eq!(other.append(&ev(6), T0).unwrap(), 6);
    let r = log.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(r.last_seq, 6);
}

use std::io::Write;

#[test]
fn events_removed_from_end_of_sealed_file_are_detected() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=10, T0);
    let s = log.seal(T0).unwrap().unwrap();
    assert_eq!((s.first_seq, s.last_seq, s.event_count), (1, 10, 10));
    assert_eq!(s.digest_file, "20261129-000000000001.digest.json");
    assert_eq!(
        fs::metadata(path(&log, FIRST))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o400
    );
    append_n(&log, 11..=12, T0);
    assert!(log.verify().unwrap().valid);
    edit_lines(&path(&log, FIRST), |l| {
        l.truncate(8);
    });
    let p = problem(&log);
    assert_eq!((p.kind, p.seq), (ProblemKind::Removed, Some(9)));
    assert!(
        p.message.starts_with("events 9..10 are missing"),
        "{}",
        p.message
    );
}

#[test]
fn removed_sealed_file_is_detected_with_or_without_its_digest() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=40, T0);
    log.seal(T0).unwrap();
    append_n(&log, 41..=45, T0);
    fs::remove_file(path(&log, FIRST)).unwrap();
    let p = problem(&log);
    assert_eq!((p.kind, p.seq), (ProblemKind::Removed, Some(1)));
    assert_eq!(
        p.message,
        format!("events 1..40 are missing: log file {FIRST} was removed (its digest remains)")
    );
    fs::remove_file(path(&log, "20261129-000000000001.digest.json")).unwrap();
    let p = problem(&log);
    assert_eq!((p.kind, p.seq), (ProblemKind::Removed, Some(1)));
    assert!(
        p.message.starts_with("events 1..40 are missing: the next log file 20261129-000000000041.jsonl starts at event 41"),
        "{}",
        p.message
    );
}

#[test]
fn edited_digest_is_a_digest_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=5, T0);
    log.seal(T0).unwrap();
    let dp = path(&log, "20261129-000000000001.digest.json");
    let text = fs::read_to_string(&dp).unwrap();
    fs::write(
        &dp,
        text.replace("\"sealedAt\":\"2026", "\"sealedAt\":\"2025"),
    )
    .unwrap();
    let p = problem(&log);
    assert_eq!(p.kind, ProblemKind::DigestMismatch);
    assert_eq!(p.file, "20261129-000000000001.digest.json");
    assert!(p.message.contains("was altered"), "{}", p.message);
}

#[test]
fn bytes_added_to_a_sealed_file_are_a_digest_mismatch() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=5, T0);
    log.seal(T0).unwrap();
    let p = path(&log, FIRST);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&p)
        .unwrap()
        .write_all(b"junk")
        .unwrap();
    let pr = problem(&log);
    assert_eq!(pr.kind, ProblemKind::DigestMismatch);
    assert!(
        pr.message.contains("changed after it was sealed"),
        "{}",
        pr.message
    );
}

#[test]
fn removed_middle_digest_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    append_n(&log, 1..=3, T0);
    log.seal(T0).unwrap();
    append_n(&log, 4..=6, T0);
    log.seal(T0).unwrap();
    append_n(&log, 7..=7, T0);
    assert!(log.verify().unwrap().valid);
    fs::remove_file(path(&log, "20261129-000000000001.digest.json")).unwrap();
    let p = problem(&log);
    assert_eq!(p.kind, ProblemKind::DigestMismatch);
    assert!(
        p.message
            .starts_with("the digest of 20261129-000000000001.jsonl is missing")
    );
}

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
fn wrong_mac_key_is_altered_at_seq_1() {
    let d = tempfile::tempdir().unwrap();
    append_n(&open(d.path()), 1..=3, T0);
    let other = AuditLog::new(d.path().join("audit"), Key256::from_bytes([1; 32]));
    let p = problem(&other);
    assert_eq!((p.kind, p.seq), (ProblemKind::Altered, Some(1)));
}

#[test]
fn context_key_named_cryptvol_chain_verifies() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    let tricky = json!({
        "eventName": "Encrypt",
        "requestParameters": {"encryptionContext": {"cryptvolChain": "{\"seq\":1}", "x": "y"}},
        "cryptvolChain": {"seq": 99},
    });
    log.append(&ev(1), T0).unwrap();
    log.append(&tricky, T0).unwrap();
    log.append(&ev(3), T0).unwrap();
    assert!(log.verify().unwrap().valid);
    assert_eq!(log.events().unwrap()[1], (2, tricky));
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

#[test]
fn errors_are_one_line() {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("audit"), b"a file, not a directory").unwrap();
    let log = open(d.path());
    let e = log.append(&ev(1), T0).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, AuditError::Io { .. }), "{e:?}");
    assert!(!text.contains('\n') && text.contains("audit"), "{text}");
    let dd = tempfile::tempdir().unwrap();
    let log = open(dd.path());
    append_n(&log, 1..=2, T0);
    edit_lines(&path(&log, FIRST), |l| l[1] = "not json".into());
    let e = log.events().unwrap_err().to_string();
    assert!(
        e.contains(FIRST) && e.contains("line 2") && !e.contains('\n'),
        "{e}"
    );
    let e = log.append(&ev(3), T0).unwrap_err().to_string();
    assert!(
        e.contains("move the file aside") && !e.contains('\n'),
        "{e}"
    );
}
