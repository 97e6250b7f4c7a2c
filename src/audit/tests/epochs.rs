//! Chain key epochs: a root-key rotation gives the chain a successor key. Events after it
//! are under the new key, writers that only know the old key cannot continue the chain,
//! and whoever holds only the old key cannot add, replace or cut events after the switch
//! without `verify` saying so.

use super::*;

fn k1() -> Key256 {
    Key256::from_bytes([0x17; 32])
}

fn rotated(dir: &Path) -> AuditLog {
    AuditLog::new(dir.join("audit"), ChainKeys::new(key(), [k1()]))
}

fn epoch_of(line: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(line).unwrap();
    v["cryptvolChain"]["keyEpoch"].as_u64()
}

fn active_lines(log: &AuditLog) -> Vec<String> {
    let name = log_files(log).pop().unwrap();
    fs::read_to_string(path(log, &name))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn events_after_a_rotation_are_under_the_new_key_and_verify() {
    let d = tempfile::tempdir().unwrap();
    append_n(&open(d.path()), 1..=3, T0);
    let log = rotated(d.path());
    append_n(&log, 4..=5, T0);
    let lines = active_lines(&log);
    let epochs: Vec<_> = lines.iter().map(|l| epoch_of(l)).collect();
    assert_eq!(epochs, [None, None, None, Some(1), Some(1)]);
    let r = log.verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!(r.events, 5);
    // Without the successor, the new events cannot be checked: a ChainKey problem at 4.
    let p = problem(&open(d.path()));
    assert_eq!(
        (p.kind, p.seq, p.line),
        (ProblemKind::ChainKey, Some(4), Some(4))
    );
    assert!(p.message.contains("chain key 1"), "{}", p.message);
}

/// A process that opened the region before the rotation knows only the old key: once the
/// log went on under the new one, it refuses to append (one line naming the fix) instead of
/// writing an event under the old key; given the new keys, it continues under them.
#[test]
fn a_writer_with_only_the_old_key_stops_then_continues_with_the_new_keys() {
    let d = tempfile::tempdir().unwrap();
    let old = open(d.path());
    append_n(&old, 1..=2, T0);
    append_n(&rotated(d.path()), 3..=3, T0);
    let e = old.append(&ev(4), T0).unwrap_err();
    assert!(
        matches!(e, AuditError::ChainKeyUnknown { epoch: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("reopen the region"), "{e}");
    assert!(!e.to_string().contains('\n'));
    old.set_keys(ChainKeys::new(key(), [k1()]));
    assert_eq!(old.append(&ev(4), T0).unwrap(), 4);
    assert_eq!(epoch_of(active_lines(&old).last().unwrap()), Some(1));
    assert!(rotated(d.path()).verify().unwrap().valid);
}

/// The epoch of a sealed file's last event is read back from the file, so a writer that
/// starts after the seal still knows the log is under the new key.
#[test]
fn the_epoch_survives_sealing_and_the_digest_is_under_the_new_key() {
    let d = tempfile::tempdir().unwrap();
    append_n(&open(d.path()), 1..=2, T0);
    let log = rotated(d.path());
    append_n(&log, 3..=4, T0);
    log.seal(T0).unwrap().expect("sealed");
    let old = open(d.path());
    assert!(matches!(
        old.append(&ev(5), T0),
        Err(AuditError::ChainKeyUnknown { epoch: 1, .. })
    ));
    append_n(&rotated(d.path()), 5..=6, T0);
    let r = rotated(d.path()).verify().unwrap();
    assert!(r.valid, "{r:?}");
    assert_eq!((r.events, r.sealed_files), (6, 1));
    // With another key 1, the events under it no longer verify.
    let wrong = AuditLog::new(
        d.path().join("audit"),
        ChainKeys::new(key(), [Key256::from_bytes([9; 32])]),
    );
    let p = problem(&wrong);
    assert_eq!((p.kind, p.seq), (ProblemKind::Altered, Some(3)));
}

/// Someone who kept the old root key (the reason to rotate) writes an event under the old
/// key after the switch, with a correct link: `verify` refuses it.
#[test]
fn an_event_under_the_old_key_after_the_switch_is_a_chain_key_problem() {
    let d = tempfile::tempdir().unwrap();
    append_n(&open(d.path()), 1..=2, T0);
    let log = rotated(d.path());
    append_n(&log, 3..=3, T0);
    let name = log_files(&log).pop().unwrap();
    let p = path(&log, &name);
    let last = chain::parse_line(active_lines(&log).last().unwrap().as_bytes())
        .unwrap()
        .hash;
    let mut forged = serde_json::to_vec(&ev(4)).unwrap();
    chain::make_line(&mut forged, &key(), 0, 4, &last);
    let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
    std::io::Write::write_all(&mut f, &forged).unwrap();
    let pr = problem(&log);
    assert_eq!((pr.kind, pr.seq), (ProblemKind::ChainKey, Some(4)));
    assert!(pr.message.contains("never goes back"), "{}", pr.message);
}

/// Cutting every event logged after the rotation (and writing on under the old key) leaves
/// a log whose newest event is under the old key: `verify` says events were removed.
#[test]
fn cutting_the_events_after_a_rotation_is_detected() {
    let d = tempfile::tempdir().unwrap();
    append_n(&open(d.path()), 1..=2, T0);
    let log = rotated(d.path());
    append_n(&log, 3..=4, T0);
    let name = log_files(&log).pop().unwrap();
    edit_lines(&path(&log, &name), |l| l.truncate(2));
    append_n(&open(d.path()), 3..=3, T0);
    let p = problem(&log);
    assert_eq!((p.kind, p.seq), (ProblemKind::ChainKey, Some(4)));
    assert!(
        p.message.contains("ends at event 3 under key 0"),
        "{}",
        p.message
    );
    // A region that was never rotated has nothing to miss.
    assert!(open(d.path()).verify().unwrap().valid);
}
