//! Chain key epochs under hostile edits: every other spelling of `keyEpoch`, epochs forged,
//! removed or out of range, lines moved across the switch, digests re-keyed by whoever
//! kept the old key, and a switch that falls on a UTC day rollover (sealing at the switch).

use super::*;
use crate::audit::digest::Digest;

fn k1() -> Key256 {
    Key256::from_bytes([0x17; 32])
}

fn k2() -> Key256 {
    Key256::from_bytes([0x29; 32])
}

fn rotated(dir: &Path) -> AuditLog {
    AuditLog::new(dir.join("audit"), ChainKeys::new(key(), [k1()]))
}

/// Events 1..=3 under key 0, 4..=5 under key 1, in one file; returns the log and the file.
fn switched(dir: &Path) -> (AuditLog, PathBuf) {
    append_n(&open(dir), 1..=3, T0);
    let log = rotated(dir);
    append_n(&log, 4..=5, T0);
    let name = log_files(&log).pop().unwrap();
    let p = path(&log, &name);
    (log, p)
}

fn kind_at(log: &AuditLog) -> (ProblemKind, Option<u64>, Option<u64>) {
    let p = problem(log);
    (p.kind, p.seq, p.line)
}

/// `keyEpoch` has one spelling: any other is an unreadable line, an epoch the region does
/// not have is a ChainKey problem, and a line whose epoch was changed or removed no longer
/// hashes (or goes back a key).
#[test]
fn every_forged_spelling_of_key_epoch_is_reported() {
    use ProblemKind::*;
    let cases: &[(&str, ProblemKind)] = &[
        (",\"keyEpoch\":01}}", Unreadable),
        (",\"keyEpoch\":0}}", Unreadable),
        (",\"keyEpoch\":-1}}", Unreadable),
        (",\"keyEpoch\":1.0}}", Unreadable),
        (",\"keyEpoch\":1e0}}", Unreadable),
        (",\"keyEpoch\":\"1\"}}", Unreadable),
        (",\"keyEpoch\": 1}}", Unreadable),
        (",\"keyEpoch\":1,\"keyEpoch\":1}}", Unreadable),
        (",\"keyEpoch\":4294967296}}", Unreadable),
        (",\"keyEpoch\":99999999999999999999999}}", Unreadable),
        (",\"keyEpoch\":4294967295}}", ChainKey),
        (",\"keyEpoch\":2}}", ChainKey),
        // Removed: the line is read as key 0, under which its hash does not match.
        ("}}", Altered),
    ];
    for (spelling, want) in cases {
        let d = tempfile::tempdir().unwrap();
        let (log, p) = switched(d.path());
        edit_lines(&p, |l| {
            l[3] = l[3].replace(",\"keyEpoch\":1}}", spelling);
        });
        assert_eq!(
            kind_at(&log),
            (*want, Some(4), Some(4)),
            "{spelling} at the first line under key 1"
        );
    }
    // keyEpoch moved before the hash: the member is not the one spelling.
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    edit_lines(&p, |l| {
        let v = l[3].replace(",\"keyEpoch\":1}}", "\"}}");
        l[3] = v.replace(",\"prev\":", ",\"keyEpoch\":1,\"prev\":");
    });
    assert_eq!(kind_at(&log).0, ProblemKind::Unreadable);
    // Removed from a later line: it would go back to key 0.
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    edit_lines(&p, |l| l[4] = l[4].replace(",\"keyEpoch\":1}}", "}}"));
    assert_eq!(kind_at(&log), (ProblemKind::ChainKey, Some(5), Some(5)));
    // Relabelled to another key the region has: the hash binds the epoch.
    let d = tempfile::tempdir().unwrap();
    let (_, p) = switched(d.path());
    edit_lines(&p, |l| {
        l[4] = l[4].replace(",\"keyEpoch\":1}}", ",\"keyEpoch\":2}}")
    });
    let three = AuditLog::new(d.path().join("audit"), ChainKeys::new(key(), [k1(), k2()]));
    assert_eq!(kind_at(&three), (ProblemKind::Altered, Some(5), Some(5)));
}

/// A last line that claims a key the writer lacks (forged or real) stops writers with
/// ChainKeyUnknown and writes nothing; it never makes them write under an older key.
#[test]
fn a_forged_huge_epoch_at_the_end_stops_writers_without_writing() {
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    edit_lines(&p, |l| {
        l[4] = l[4].replace(",\"keyEpoch\":1}}", ",\"keyEpoch\":4294967295}}")
    });
    let before = fs::read(&p).unwrap();
    for w in [open(d.path()), rotated(d.path()), log] {
        let e = w.append(&ev(6), T0).unwrap_err();
        assert!(
            matches!(
                e,
                AuditError::ChainKeyUnknown {
                    epoch: u32::MAX,
                    ..
                }
            ),
            "{e}"
        );
    }
    assert_eq!(fs::read(&p).unwrap(), before);
}

/// Lines moved across the switch (an old line after the new ones, a new one before the
/// old ones) are reported, whichever way.
#[test]
fn lines_moved_across_the_switch_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    edit_lines(&p, |l| {
        let old = l.remove(2);
        l.push(old);
    });
    assert_eq!(kind_at(&log), (ProblemKind::Reordered, Some(3), Some(3)));
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    edit_lines(&p, |l| l.swap(2, 3));
    assert_eq!(kind_at(&log), (ProblemKind::Reordered, Some(3), Some(3)));
    // An old line copied to the end again.
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    edit_lines(&p, |l| {
        let old = l[2].clone();
        l.push(old);
    });
    assert_eq!(kind_at(&log), (ProblemKind::Reordered, Some(3), Some(6)));
}

/// Re-keys the digest of `log_name` under `key`, changing `sealedAt`, as whoever holds
/// `key` can.
fn rekey_digest(dir: &Path, log_name: &str, key: &Key256) {
    let p = dir.join(names::digest_name(log_name));
    let mut d = Digest::parse(&fs::read(&p).unwrap()).unwrap();
    d.body.sealed_at = "2030-01-01T00:00:00Z".into();
    let (text, _) = d.body.encode(key);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&p, text).unwrap();
}

/// A file sealed before the switch (digest under key 0), one sealed after it (key 1) and
/// the active file verify; whoever kept key 0 can re-key neither digest without `verify`
/// saying so (the later digest links to the earlier one under key 1).
#[test]
fn digests_on_both_sides_of_the_switch_cannot_be_rekeyed_with_the_old_key() {
    let setup = |d: &Path| -> (AuditLog, Vec<String>) {
        let old = open(d);
        append_n(&old, 1..=2, T0);
        old.seal(T0).unwrap().unwrap();
        let log = rotated(d);
        append_n(&log, 3..=4, T0);
        log.seal(T0).unwrap().unwrap();
        append_n(&log, 5..=5, T0);
        let files = log_files(&log);
        assert_eq!(files.len(), 3);
        let r = log.verify().unwrap();
        assert!(r.valid, "{r:?}");
        assert_eq!((r.events, r.sealed_files), (5, 2));
        (log, files)
    };
    let d = tempfile::tempdir().unwrap();
    let (log, files) = setup(d.path());
    rekey_digest(log.dir(), &files[1], &key());
    let p = problem(&log);
    assert_eq!(p.kind, ProblemKind::DigestMismatch, "{p:?}");
    assert!(p.message.contains("was altered"), "{}", p.message);

    let d = tempfile::tempdir().unwrap();
    let (log, files) = setup(d.path());
    rekey_digest(log.dir(), &files[0], &key());
    let p = problem(&log);
    assert_eq!(p.kind, ProblemKind::DigestMismatch, "{p:?}");
    assert_eq!(p.file, names::digest_name(&files[1]), "{p:?}");
    assert!(p.message.contains("does not link"), "{}", p.message);

    // The digest of a file whose last event is under key 1 is under key 1, even if the
    // file starts under key 0.
    let d = tempfile::tempdir().unwrap();
    let (log, p) = switched(d.path());
    log.seal(T0).unwrap().unwrap();
    let name = log_files(&log).pop().unwrap();
    assert!(p.ends_with(&name));
    assert!(log.verify().unwrap().valid);
    rekey_digest(log.dir(), &name, &key());
    assert_eq!(problem(&log).kind, ProblemKind::DigestMismatch);
}

/// The switch falls on a UTC day rollover: the first event under the new key, on the next
/// day, seals the old day's file under key 0 and starts a file under key 1; a writer with
/// only the old key is stopped on that new day; a writer whose clock is a day behind then
/// seals the new file (under key 1) and goes on under key 1. All of it verifies.
#[test]
fn a_switch_on_a_day_rollover_seals_under_the_old_key_and_goes_on_under_the_new() {
    let d = tempfile::tempdir().unwrap();
    let old = open(d.path());
    append_n(&old, 1..=2, T0);
    let log = rotated(d.path());
    append_n(&log, 3..=3, T0 + DAY);
    let files = log_files(&log);
    assert_eq!(files.len(), 2, "{files:?}");
    let digest =
        Digest::parse(&fs::read(path(&log, &names::digest_name(&files[0]))).unwrap()).unwrap();
    assert!(digest.is_authentic(&key()) && !digest.is_authentic(&k1()));
    let e = old.append(&ev(4), T0 + DAY).unwrap_err();
    assert!(
        matches!(e, AuditError::ChainKeyUnknown { epoch: 1, .. }),
        "{e}"
    );
    // The rotation's own clock was read before the rollover.
    let behind = rotated(d.path());
    append_n(&behind, 4..=4, T0);
    append_n(&log, 5..=5, T0 + DAY);
    let r = log.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(r.events, 5);
    let lines: Vec<String> = log_files(&log)
        .iter()
        .flat_map(|f| {
            fs::read_to_string(path(&log, f))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let tagged = lines
        .iter()
        .filter(|l| l.contains(",\"keyEpoch\":1}}"))
        .count();
    assert_eq!(tagged, 3, "{lines:#?}");
}
