//! A region opened before its root key was rotated (by another process, here by a direct
//! call): it keeps working, and what is derived from the root (grant tokens, the audit
//! chain) stays valid across the rotation.

use super::*;
use crate::datadir::NewRoot;
use crate::iam::Identity;
use crate::kms::ids::KeyRef;
use crate::kms::{CreateKeyRequest, EncryptionContext, root_rotation};
use crate::sys::clock::Clock;

fn no_passphrase() -> Result<SecretBytes> {
    panic!("a key-file region asks no passphrase")
}

#[test]
fn a_region_opened_before_a_rotation_keeps_working_and_deriving_the_same_keys() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(d.path(), &r, None, 0).unwrap();
    let kms = EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
    let caller = Caller::local(Identity::root(kms.account().clone()));
    let a = kms
        .create_key(&caller, &CreateKeyRequest::default())
        .unwrap()
        .key_id;
    let ctx = EncryptionContext::default();
    let blob = kms
        .encrypt(&caller, &KeyRef::parse(&a).unwrap(), b"before", &ctx)
        .unwrap()
        .ciphertext_blob;
    let grant = kms
        .create_grant(
            &caller,
            &CreateGrantRequest {
                key: KeyRef::parse(&a).unwrap(),
                grantee_principal: format!("arn:aws:iam::{}:root", kms.account()),
                retiring_principal: None,
                operations: vec!["Decrypt".to_string()],
                constraints: None,
                name: None,
            },
        )
        .unwrap();
    let old_root = kms.root().unwrap();

    let dir = RegionDir::new(d.path(), &r);
    root_rotation::rotate(&dir, &mut no_passphrase, Some(NewRoot::File), 0).unwrap();
    assert!(Keystore::load(&dir.keystore_path(), &old_root, &r).is_err());

    // This process still holds the old root: a write opens the new one and lands.
    let b = kms
        .create_key(&caller, &CreateKeyRequest::default())
        .unwrap()
        .key_id;
    assert_ne!(kms.root().unwrap().expose(), old_root.expose());

    let again = EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
    let ids: Vec<String> = again
        .read(|ks, _| Ok(ks.body.keys.keys().map(|k| k.to_string()).collect()))
        .unwrap();
    assert!(ids.contains(&a) && ids.contains(&b), "{ids:?}");
    let back = again.decrypt(&caller, &blob, &ctx, None).unwrap();
    assert_eq!(back.plaintext.expose(), b"before");
    // A grant token issued before the rotation is still one this region issued.
    again
        .check_grant_tokens(std::slice::from_ref(&grant.grant_token))
        .unwrap();
    let report = again.audit_log().verify().unwrap();
    assert!(report.valid, "{report:?}");
    // The rotation itself is in the trail.
    assert!(report.events >= 4, "{report:?}");
}

/// A rotation that stops after its commit point, before installing: a process that opened
/// the region before it writes next. The write must land in the keystore that is installed,
/// not in the old one that the install then replaces.
#[test]
fn a_write_after_a_rotation_stopped_past_its_commit_is_not_lost() {
    for step in ["committed", "root-key-installed", "keystore-installed"] {
        let d = tempfile::tempdir().unwrap();
        let r = Region::parse("test-1").unwrap();
        crate::kms::init::init(d.path(), &r, None, 0).unwrap();
        let kms =
            EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
        let caller = Caller::local(Identity::root(kms.account().clone()));
        let a = kms
            .create_key(&caller, &CreateKeyRequest::default())
            .unwrap()
            .key_id;
        let dir = RegionDir::new(d.path(), &r);
        root_rotation::STOP_AT.with(|s| s.set(Some(step)));
        let stopped = root_rotation::rotate(&dir, &mut no_passphrase, None, 0);
        root_rotation::STOP_AT.with(|s| s.set(None));
        assert!(stopped.is_err(), "{step}");
        let b = kms
            .create_key(&caller, &CreateKeyRequest::default())
            .unwrap()
            .key_id;
        let again =
            EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
        let ids: Vec<String> = again
            .read(|ks, _| Ok(ks.body.keys.keys().map(|k| k.to_string()).collect()))
            .unwrap();
        assert!(ids.contains(&a) && ids.contains(&b), "{step}: {ids:?}");
        assert!(!dir.path.join(".root-rotation").exists(), "{step}");
        assert!(again.audit_log().verify().unwrap().valid, "{step}");
    }
}

fn last_epoch(dir: &RegionDir) -> u64 {
    let mut names: Vec<_> = std::fs::read_dir(dir.audit_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    let text = std::fs::read_to_string(names.last().unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    v["cryptvolChain"]["keyEpoch"].as_u64().unwrap_or(0)
}

/// Each rotation gives the audit chain a successor key: a process that opened the region
/// before logs its next event under it, everything verifies across two rotations, and
/// whoever kept the first root key can derive the chain's first key but cannot cut the
/// events after the rotation and write on under it without `verify` saying so.
#[test]
fn the_audit_chain_gets_a_successor_key_the_old_root_cannot_extend() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(d.path(), &r, None, 0).unwrap();
    let kms = EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
    let caller = Caller::local(Identity::root(kms.account().clone()));
    let a = KeyRef::parse(
        &kms.create_key(&caller, &CreateKeyRequest::default())
            .unwrap()
            .key_id,
    )
    .unwrap();
    let ctx = EncryptionContext::default();
    let dir = RegionDir::new(d.path(), &r);
    assert_eq!(last_epoch(&dir), 0);
    let first_root = kms.root().unwrap();

    for epoch in 1..=2u64 {
        let now = Clock::System.now_nanos();
        root_rotation::rotate(&dir, &mut no_passphrase, None, now).unwrap();
        // The rotation's own last event is the first under the new key.
        assert_eq!(last_epoch(&dir), epoch);
        // A process that opened the region before the rotation (read-only call) follows.
        kms.encrypt(&caller, &a, b"x", &ctx).unwrap();
        assert_eq!(last_epoch(&dir), epoch);
        let again =
            EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
        let report = again.audit_log().verify().unwrap();
        assert!(report.valid, "after rotation {epoch}: {report:?}");
        let ks = again
            .read(|ks, _| Ok(ks.body.audit_chain_keys.len()))
            .unwrap();
        assert_eq!(ks as u64, epoch);
    }

    // The holder of the first root cuts everything logged since the first rotation's end
    // and writes on under the chain's first key.
    let files: Vec<_> = std::fs::read_dir(dir.audit_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .take_while(|l| !l.contains("\"keyEpoch\""))
        .collect();
    std::fs::write(&files[0], kept.join("\n") + "\n").unwrap();
    let first_key = crate::crypto::kdf::derive(
        crate::crypto::kdf::CTX_AUDIT_CHAIN,
        &first_root,
        r.as_str().as_bytes(),
    );
    let forger =
        crate::audit::AuditLog::new(dir.audit_dir(), crate::audit::ChainKeys::single(first_key));
    forger
        .append(
            &serde_json::json!({"eventName": "Decrypt"}),
            Clock::System.now(),
        )
        .unwrap();
    let again = EmbeddedKms::open_region(d.path(), &r, &mut no_passphrase, Clock::System).unwrap();
    let report = again.audit_log().verify().unwrap();
    let p = report.problem.expect("the cut is found");
    assert_eq!(p.kind, crate::audit::ProblemKind::ChainKey, "{p:?}");
    assert!(p.message.contains("chain key 2"), "{}", p.message);
}
