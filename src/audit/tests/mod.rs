//! The audit log against real files: append, and tamper in each way `verify` names, crash
//! leftovers included. Rotation, sealing and writers racing through one or several
//! `AuditLog`s are in `writers.rs`.

mod epoch_attack;
mod epochs;
mod group;
mod writers;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::crypto::Key256;

/// 2026-11-29T01:00:00Z.
const T0: i64 = 1_795_910_400 + 3600;
const DAY: i64 = 86_400;
const FIRST: &str = "20261129-000000000001.jsonl";

fn key() -> Key256 {
    Key256::from_bytes([0x42; 32])
}

fn open(dir: &Path) -> AuditLog {
    AuditLog::new(dir.join("audit"), ChainKeys::single(key()))
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
fn wrong_mac_key_is_altered_at_seq_1() {
    let d = tempfile::tempdir().unwrap();
    append_n(&open(d.path()), 1..=3, T0);
    let other = AuditLog::new(
        d.path().join("audit"),
        ChainKeys::single(Key256::from_bytes([1; 32])),
    );
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
