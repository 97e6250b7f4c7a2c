//! Unit tests of the embedded KMS: rotation, deletion, concurrency, policies, audit.

use super::test_support::*;
use super::*;
use crate::kms::backend::{DataKeySpec, KeyBackend};
use crate::kms::blob;
use crate::kms::context::EncryptionContext;
use crate::kms::ids::KeyRef;

fn key_req(description: &str) -> CreateKeyRequest {
    CreateKeyRequest {
        description: description.into(),
        ..Default::default()
    }
}

#[test]
fn backend_trait_roundtrip_binds_context() {
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let session = Session::for_volumes(&kms, &root(&kms));
    let backend: &dyn KeyBackend = &session;
    let ctx = EncryptionContext::single("cryptvol:lineage", "vol-1");
    let key = KeyRef::parse("alias/aws/ebs").unwrap();
    let dk = backend
        .generate_data_key(&key, DataKeySpec::Bytes(64), &ctx)
        .unwrap();
    assert_eq!(dk.plaintext.len(), 64);
    let back = backend.decrypt(&dk.ciphertext_blob, &ctx).unwrap();
    assert_eq!(back.plaintext, dk.plaintext);
    assert_eq!(back.key_id, dk.key_id);
    let other = EncryptionContext::single("cryptvol:lineage", "vol-2");
    assert!(matches!(
        backend.decrypt(&dk.ciphertext_blob, &other),
        Err(AwsError::InvalidCiphertext { .. })
    ));
    assert_eq!(backend.describe_key(&key).unwrap().key_manager, "AWS");
}

#[test]
fn automatic_rotation_happens_on_open_when_due_and_old_blobs_decrypt() {
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let id = KeyRef::parse(&kms.create_key(&root(&kms), &key_req("")).unwrap().key_id).unwrap();
    kms.enable_key_rotation(&root(&kms), &id, Some(90)).unwrap();
    let ctx = EncryptionContext::new();
    let old = kms
        .encrypt(&root(&kms), &id, b"before", &ctx)
        .unwrap()
        .ciphertext_blob;
    drop(kms);

    let later = open(&d, &r, Clock::Skewed(91 * DAY));
    let rot = later
        .list_key_rotations(&root(&later), &id)
        .unwrap()
        .rotations;
    assert_eq!(rot.len(), 1);
    assert_eq!(rot[0].rotation_type, "AUTOMATIC");
    let new = later
        .encrypt(&root(&later), &id, b"after", &ctx)
        .unwrap()
        .ciphertext_blob;
    assert_eq!(blob::parse(&new).unwrap().header.key_version, 2);
    assert_eq!(
        later
            .decrypt(&root(&later), &old, &ctx, None)
            .unwrap()
            .plaintext
            .expose(),
        b"before"
    );
    // Next rotation is one period after this one, not immediately again.
    let status = later.get_key_rotation_status(&root(&later), &id).unwrap();
    assert!(status.next_rotation_date.unwrap() > Clock::Skewed(91 * DAY).now() + 89 * DAY);
}

#[test]
fn deletion_destroys_material_when_window_ends() {
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let id = KeyRef::parse(&kms.create_key(&root(&kms), &key_req("")).unwrap().key_id).unwrap();
    kms.create_alias(&root(&kms), "alias/doomed", &id).unwrap();
    let ctx = EncryptionContext::new();
    let b = kms
        .encrypt(&root(&kms), &id, b"x", &ctx)
        .unwrap()
        .ciphertext_blob;
    kms.schedule_key_deletion(&root(&kms), &id, Some(7))
        .unwrap();
    assert!(matches!(
        kms.decrypt(&root(&kms), &b, &ctx, None),
        Err(AwsError::InvalidState { .. })
    ));
    drop(kms);
    // Six days on: still pending, still refusing.
    let six = open(&d, &r, Clock::Skewed(6 * DAY));
    assert_eq!(
        six.describe_key(&root(&six), &id).unwrap().key_state,
        "PendingDeletion"
    );
    drop(six);
    let eight = open(&d, &r, Clock::Skewed(8 * DAY));
    assert!(matches!(
        eight.decrypt(&root(&eight), &b, &ctx, None),
        Err(AwsError::KeyDeleted { .. })
    ));
    assert!(matches!(
        eight.describe_key(&root(&eight), &id),
        Err(AwsError::KeyDeleted { .. })
    ));
    assert!(
        eight
            .list_aliases(&root(&eight), None)
            .unwrap()
            .aliases
            .is_empty()
    );
    let summary = eight.keystore_summary().unwrap();
    let key_id = id.to_string();
    assert!(
        summary["body"]["keys"].get(&key_id).is_none(),
        "record and sealed versions gone"
    );
    assert!(
        summary["body"]["deleted_keys"].get(&key_id).is_some(),
        "tombstone kept"
    );
}

#[test]
fn writers_in_parallel_lose_nothing() {
    let (d, r) = setup();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let path = d.path().to_path_buf();
            let r = r.clone();
            std::thread::spawn(move || {
                let mut no = || -> Result<SecretBytes> { unreachable!() };
                let kms = EmbeddedKms::open_region(&path, &r, &mut no, Clock::System).unwrap();
                for _ in 0..5 {
                    kms.create_key(&root(&kms), &key_req("")).unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(
        {
            let k = open(&d, &r, Clock::System);
            k.list_keys(&root(&k)).unwrap().keys.len()
        },
        20
    );
}

/// An instance of the region with one new key in it.
fn open_with_a_key(d: &tempfile::TempDir, r: &Region) -> (EmbeddedKms, KeyRef) {
    let kms = open(d, r, Clock::System);
    let id = KeyRef::parse(&kms.create_key(&root(&kms), &key_req("")).unwrap().key_id).unwrap();
    (kms, id)
}

#[test]
fn a_long_lived_instance_sees_changes_by_others() {
    let (d, r) = setup();
    let (server, id) = open_with_a_key(&d, &r);
    let ctx = EncryptionContext::new();
    assert!(server.encrypt(&root(&server), &id, b"x", &ctx).is_ok());
    let other = open(&d, &r, Clock::System);
    other.disable_key(&root(&other), &id).unwrap();
    assert!(matches!(
        server.encrypt(&root(&server), &id, b"x", &ctx),
        Err(AwsError::Disabled { .. })
    ));
}

/// The keystore is watched through a descriptor on the file we read (`watch.rs`): a
/// replacement by rename (even with another link to the old file), an edit in place and
/// a deletion are all seen at the next call, as a `stat` of the path saw them.
#[test]
fn a_long_lived_instance_sees_every_kind_of_keystore_change() {
    let (d, r) = setup();
    let (server, id) = open_with_a_key(&d, &r);
    let ctx = EncryptionContext::new();
    let works = |kms: &EmbeddedKms| kms.encrypt(&root(kms), &id, b"x", &ctx);
    assert!(works(&server).is_ok());
    let path = server.dir.keystore_path();
    let enabled = std::fs::read(&path).unwrap();
    // Replaced by rename while another link holds the old file (its link count 2 → 1).
    std::fs::hard_link(&path, path.with_extension("link")).unwrap();
    let other = open(&d, &r, Clock::System);
    other.disable_key(&root(&other), &id).unwrap();
    assert!(matches!(works(&server), Err(AwsError::Disabled { .. })));
    // Edited in place (same inode, likely the same size): an old copy written back by
    // hand. A kernel without fine-grained timestamps gives both writes the same mtime
    // within one clock tick; a path stat would miss that too, so let a tick pass.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&path, &enabled).unwrap();
    assert!(works(&server).is_ok());
    // Deleted: the call fails rather than go on with what it read.
    std::fs::remove_file(&path).unwrap();
    assert!(works(&server).is_err());
}

#[test]
fn failed_mutation_changes_nothing_on_disk() {
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let id = KeyRef::parse(&kms.create_key(&root(&kms), &key_req("")).unwrap().key_id).unwrap();
    // The keystore is what a mutation changes; the audit trail records the failed calls,
    // as it must.
    let path = crate::datadir::RegionDir::new(d.path(), &r).keystore_path();
    let before = std::fs::read(&path).unwrap();
    assert!(matches!(
        kms.create_alias(&root(&kms), "alias/aws/mine", &id),
        Err(AwsError::NotAuthorized { .. })
    ));
    assert!(matches!(
        kms.schedule_key_deletion(&root(&kms), &id, Some(3)),
        Err(AwsError::Validation { field, .. }) if field == "PendingWindowInDays"
    ));
    assert!(matches!(
        kms.cancel_key_deletion(&root(&kms), &id),
        Err(AwsError::InvalidState { .. })
    ));
    assert!(matches!(
        kms.delete_alias(&root(&kms), "alias/none"),
        Err(AwsError::NotFound { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// Group commit at the KMS: Decrypts made at once by several threads, while the audit
/// write ahead of them is held, share the next write; when that write fails, every one of
/// them fails with AuditFailed and none returns plaintext, and the trail holds none of
/// their events.
#[test]
fn callers_whose_shared_audit_write_fails_get_no_result() {
    use crate::audit::fail_point;
    let (d, r) = setup();
    let kms = std::sync::Arc::new(open(&d, &r, Clock::System));
    let ctx = EncryptionContext::single("purpose", "group");
    let key = KeyRef::parse(&kms.create_key(&root(&kms), &key_req("")).unwrap().key_id).unwrap();
    let blob = kms
        .generate_data_key(&root(&kms), &key, DataKeySpec::Bytes(32), &ctx)
        .unwrap()
        .ciphertext_blob;
    let dir = kms.audit_log().dir().to_path_buf();
    let events_before = kms.audit_log().events().unwrap().len();
    let writes = fail_point::writes(&dir);
    fail_point::hold(&dir);
    let spawn = |kms: &std::sync::Arc<EmbeddedKms>| {
        let (kms, blob, ctx) = (kms.clone(), blob.clone(), ctx.clone());
        std::thread::spawn(move || kms.decrypt(&root(&kms), &blob, &ctx, None))
    };
    let leader = spawn(&kms);
    fail_point::wait_for_held_writer(&dir);
    let followers: Vec<_> = (0..4).map(|_| spawn(&kms)).collect();
    // Let them queue behind the held write (whether they all made it in time or not,
    // none of the writes after the leader's goes through).
    std::thread::sleep(std::time::Duration::from_millis(200));
    fail_point::tear_write(&dir, writes + 1);
    fail_point::release(&dir);
    let first = leader
        .join()
        .unwrap()
        .expect("the leader's write went through");
    assert_eq!(first.plaintext.len(), 32);
    let mut failed = 0;
    for f in followers {
        match f.join().unwrap() {
            Err(AwsError::AuditFailed { message, .. }) => {
                assert!(message.contains("torn by a test"), "{message}");
                failed += 1;
            }
            Ok(_) => {} // its event was queued after the torn write, in a later one
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(failed >= 1);
    let events = kms.audit_log().events().unwrap();
    // The leader's event and those of the followers that succeeded, nothing else.
    assert_eq!(events.len(), events_before + 1 + (4 - failed));
    assert!(kms.audit_log().verify().unwrap().valid);
}
