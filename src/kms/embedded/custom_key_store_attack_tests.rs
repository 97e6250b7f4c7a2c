//! Attacks on custom key stores against a real SoftHSM2 token: keystore writes that fail
//! after an object was made in the token, several users of one token in one process,
//! hostile URIs and names, a crafted keystore naming another key's object, paging abuse.

use std::cell::Cell;

use cryptoki::object::{Attribute, KeyType, ObjectClass};

use super::test_support::*;
use super::*;
use crate::hsm::test_token::{TestToken, USER_PIN, test_token};
use crate::hsm::{ObjectRef, TokenSelector, modules};
use crate::kms::ids::KeyRef;

thread_local! {
    static FAIL_SAVE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the keystore write of the `mutate` in progress on this thread is to fail (once).
pub(super) fn fail_this_save() -> bool {
    FAIL_SAVE.with(|f| f.replace(false))
}

fn fail_next_save() {
    FAIL_SAVE.with(|f| f.set(true));
}

fn create_store(kms: &EmbeddedKms, t: &TestToken, name: &str) -> String {
    kms.create_custom_key_store(
        &root(kms),
        &CreateCustomKeyStoreRequest {
            name: name.into(),
            cluster: Some(t.spec.uri()),
            password: Some(StorePassword::new(USER_PIN.into())),
            ..Default::default()
        },
    )
    .unwrap()
}

fn connected_store(kms: &EmbeddedKms, t: &TestToken) -> String {
    let store = create_store(kms, t, "hsm");
    kms.connect_custom_key_store(&root(kms), &store).unwrap();
    store
}

fn key_id(r: &KeyRef) -> KeyId {
    let s = r.to_string();
    KeyId::parse(&s[s.len() - 36..]).unwrap()
}

fn ctx() -> crate::kms::context::EncryptionContext {
    crate::kms::context::EncryptionContext::single("purpose", "attack")
}

fn roundtrip(kms: &EmbeddedKms, key: &KeyRef) -> Result<()> {
    let c = root(kms);
    let ct = kms.encrypt(&c, key, b"attack", &ctx())?.ciphertext_blob;
    let plain = kms.decrypt(&c, &ct, &ctx(), None)?;
    assert_eq!(plain.plaintext.expose(), b"attack");
    Ok(())
}

fn exists(t: &TestToken, object: Vec<u8>) -> bool {
    token(t).exists(&ObjectRef::Id(object)).unwrap()
}

fn versions(kms: &EmbeddedKms, id: &KeyId) -> Vec<u32> {
    kms.read(|ks, _| Ok(ks.body.keys[id].versions.iter().map(|v| v.number).collect()))
        .unwrap()
}

#[test]
fn a_rotation_whose_keystore_write_fails_leaves_no_orphan_object() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let store = connected_store(&kms, t);
    let key = hsm_key(&kms, &store).unwrap();
    let id = key_id(&key);
    fail_next_save();
    let e = kms.rotate_key_on_demand(&root(&kms), &key).unwrap_err();
    assert!(e.to_string().contains("injected by a test"), "{e}");
    assert_eq!(versions(&kms, &id), vec![1]);
    assert!(
        !exists(t, hsm_keys::object_id(&id, 2)),
        "version 2's object is left in the token though no keystore names it"
    );
    // The next rotation makes version 2 and it works.
    kms.rotate_key_on_demand(&root(&kms), &key).unwrap();
    assert_eq!(versions(&kms, &id), vec![1, 2]);
    roundtrip(&kms, &key).unwrap();
}

#[test]
fn a_create_key_whose_keystore_write_fails_leaves_no_orphan_object() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let store = connected_store(&kms, t);
    fail_next_save();
    hsm_key(&kms, &store).unwrap_err();
    // The failed CreateKey is in the audit trail with the key it was making.
    let events = kms.audit_log().events().unwrap();
    let arn = events
        .iter()
        .rev()
        .find(|(_, e)| e["eventName"] == "CreateKey")
        .and_then(|(_, e)| e["resources"][0]["ARN"].as_str().map(str::to_string))
        .expect("the failed CreateKey is recorded with its key");
    let id = key_id(&KeyRef::parse(&arn).unwrap());
    assert!(
        kms.read(|ks, _| Ok(!ks.body.keys.contains_key(&id)))
            .unwrap()
    );
    assert!(
        !exists(t, hsm_keys::object_id(&id, 1)),
        "the object of a key that was never written is left in the token"
    );
}

#[test]
fn a_crash_between_making_the_object_and_writing_the_keystore_does_not_wedge_rotation() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let store = connected_store(&kms, t);
    let key = hsm_key(&kms, &store).unwrap();
    let id = key_id(&key);
    // What a kill -9 of `rotate-key-on-demand` after C_GenerateKey and before the keystore
    // write leaves: version 2's object in the token, a keystore with version 1 only.
    token(t)
        .generate_aes256(
            &hsm_keys::object_id(&id, 2),
            "crashed",
            crate::hsm::KeyUse::Cmk,
        )
        .unwrap();
    kms.rotate_key_on_demand(&root(&kms), &key)
        .expect("a rotation after the crash is refused for ever (ObjectExists)");
    assert_eq!(versions(&kms, &id), vec![1, 2]);
    roundtrip(&kms, &key).unwrap();
    // In another process too.
    let other = open(&d, &r, Clock::System);
    roundtrip(&other, &key).unwrap();
}

/// Imports a known AES key with `id` into the token (not generated there, so its value
/// is known outside it).
fn plant_known_key(t: &TestToken, id: &[u8]) {
    let _login = token(t);
    let ctx = modules::load(&t.spec.module).unwrap();
    let TokenSelector::Label(label) = &t.spec.token else {
        unreachable!()
    };
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    let s = ctx.open_rw_session(slot).unwrap();
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![7u8; 32]),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Id(id.to_vec()),
    ])
    .unwrap();
}

#[test]
fn an_object_planted_under_the_next_version_id_is_never_taken_as_key_material() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let store = connected_store(&kms, t);
    let key = hsm_key(&kms, &store).unwrap();
    let id = key_id(&key);
    plant_known_key(t, &hsm_keys::object_id(&id, 2));
    let e = kms.rotate_key_on_demand(&root(&kms), &key).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(versions(&kms, &id), vec![1]);
    roundtrip(&kms, &key).unwrap();
}

#[test]
fn disconnecting_one_store_leaves_another_store_on_the_same_token_working() {
    // `kms serve` serves every region in one process, and each region may have a store on
    // the same token (one store per token is a per-region rule); PKCS#11 login is per
    // process.
    let Some(t) = test_token() else { return };
    let (da, ra) = setup();
    let (db, rb) = setup();
    let a = open(&da, &ra, Clock::System);
    let b = open(&db, &rb, Clock::System);
    let store_a = connected_store(&a, t);
    let store_b = connected_store(&b, t);
    let key_a = hsm_key(&a, &store_a).unwrap();
    let key_b = hsm_key(&b, &store_b).unwrap();
    roundtrip(&a, &key_a).unwrap();
    roundtrip(&b, &key_b).unwrap();
    a.disconnect_custom_key_store(&root(&a), &store_a).unwrap();
    roundtrip(&b, &key_b).expect("region a's disconnect logged region b out of the token");
    // A second handle on region b that goes away does not log b out either.
    let b2 = open(&db, &rb, Clock::System);
    roundtrip(&b2, &key_b).unwrap();
    drop(b2);
    roundtrip(&b, &key_b).unwrap();
    // And a reconnects.
    a.connect_custom_key_store(&root(&a), &store_a).unwrap();
    roundtrip(&a, &key_a).unwrap();
}

#[test]
fn a_pin_in_a_uri_is_never_in_the_audit_trail_or_an_error() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let module = t.spec.module.display();
    for uri in [
        format!("pkcs11:token=cryptvol-test?module-path={module}&pin-value=SECRETPIN4242"),
        format!("pkcs11:token=cryptvol-test;pin-value=SECRETPIN4242?module-path={module}"),
        format!("pkcs11:token=cryptvol-test;PIN-VALUE=SECRETPIN4242?module-path={module}"),
        format!("pkcs11:token=cryptvol-test?module-path={module}&pin%2Dvalue=SECRETPIN4242"),
    ] {
        let e = kms
            .create_custom_key_store(
                &root(&kms),
                &CreateCustomKeyStoreRequest {
                    name: "leak".into(),
                    cluster: Some(uri.clone()),
                    password: Some(StorePassword::new(USER_PIN.into())),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(!e.to_string().contains("SECRETPIN4242"), "{uri}: {e}");
        let store = create_store(&kms, t, "upd");
        let e = kms
            .update_custom_key_store(
                &root(&kms),
                &UpdateCustomKeyStoreRequest {
                    id: store.clone(),
                    cluster: Some(uri.clone()),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(!e.to_string().contains("SECRETPIN4242"), "{uri}: {e}");
        kms.delete_custom_key_store(&root(&kms), &store).unwrap();
    }
    let trail = serde_json::to_string(&kms.audit_log().events().unwrap()).unwrap();
    assert!(trail.contains("CreateCustomKeyStore"));
    assert!(
        !trail.contains("SECRETPIN4242"),
        "the PIN of a URI is in the audit trail"
    );
    assert!(
        !trail.contains(USER_PIN),
        "the store's PIN is in the audit trail"
    );
}

#[test]
fn hostile_uris_and_names_get_one_line_aws_errors() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let module = t.spec.module.display().to_string();
    // A symlink to a module nobody registered, in a directory of registered ones, is
    // refused like the module itself (the path is resolved first).
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("libsofthsm2.so");
    std::os::unix::fs::symlink("/usr/lib/x86_64-linux-gnu/libc.so.6", &link).unwrap();
    let long = "a".repeat(100_000);
    let cases = [
        format!("pkcs11:token=cryptvol-test?module-path={module}%0Aowned"),
        format!("pkcs11:token=cryptvol-test?module-path={module}%00"),
        format!("pkcs11:token=cryptvol-test?module-path={module}/"),
        "pkcs11:token=cryptvol-test?module-path=/usr/lib/softhsm/../../../tmp/x.so".to_string(),
        format!("pkcs11:token=cryptvol-test?module-path={}", link.display()),
        format!("pkcs11:token={long}?module-path={module}"),
        format!("pkcs11:token=%E2%98%83%0A?module-path={module}"),
        "pkcs11:token=x\ny?module-path=/m.so".to_string(),
        format!("pkcs11:token=cryptvol-test?module-path={long}"),
        "pkcs11:token=%ZZ?module-path=/m.so".to_string(),
        "pkcs11:token=%FF?module-path=/m.so".to_string(),
    ];
    for uri in &cases {
        let e = kms
            .create_custom_key_store(
                &root(&kms),
                &CreateCustomKeyStoreRequest {
                    name: "hostile".into(),
                    cluster: Some(uri.clone()),
                    password: Some(StorePassword::new(USER_PIN.into())),
                    ..Default::default()
                },
            )
            .unwrap_err();
        let text = e.to_string();
        let shown = &uri[..uri.len().min(60)];
        assert!(!text.contains('\n'), "{shown}: more than one line: {text}");
        assert!(text.len() < 2_000, "{shown}: {} bytes of error", text.len());
        assert!(
            matches!(
                e.aws_code(),
                "ValidationException" | "CloudHsmClusterNotFoundException"
            ),
            "{shown}: {}",
            e.aws_code()
        );
    }
    for name in ["a\nb".to_string(), "n".repeat(257), "é".repeat(257)] {
        let e = kms
            .create_custom_key_store(
                &root(&kms),
                &CreateCustomKeyStoreRequest {
                    name: name.clone(),
                    cluster: Some(t.spec.uri()),
                    password: Some(StorePassword::new(USER_PIN.into())),
                    ..Default::default()
                },
            )
            .map(|_| ());
        if name == "a\nb" {
            // A name with a newline is a valid AWS name (1..256 of anything).
            let id = kms
                .describe_custom_key_stores(&root(&kms), None, Some("a\nb"), &Paging::default())
                .unwrap()
                .0[0]
                .custom_key_store_id
                .clone();
            let e = create_store_named(&kms, t, "a\nb").unwrap_err();
            assert!(!e.to_string().contains('\n'), "{e}");
            kms.delete_custom_key_store(&root(&kms), &id).unwrap();
            continue;
        }
        let e = e.unwrap_err();
        assert_eq!(e.aws_code(), "ValidationException");
        assert!(e.to_string().len() < 2_000);
    }
    // 256 characters (not bytes) is the bound.
    create_store_named(&kms, t, &"é".repeat(256)).unwrap();
    // Passwords: 7 and 32 characters are accepted, 6 and 33 are not; non-ASCII counts in
    // characters; the value is never in the error.
    for (pin, ok) in [
        ("123456", false),
        ("1234567", true),
        (&"p".repeat(32) as &str, true),
        (&"p".repeat(33), false),
        (&"ü".repeat(32), true),
        (&"ü".repeat(33), false),
    ] {
        let store = kms
            .describe_custom_key_stores(&root(&kms), None, None, &Paging::default())
            .unwrap()
            .0[0]
            .custom_key_store_id
            .clone();
        let out = kms.update_custom_key_store(
            &root(&kms),
            &UpdateCustomKeyStoreRequest {
                id: store,
                password: Some(StorePassword::new(pin.into())),
                ..Default::default()
            },
        );
        assert_eq!(out.is_ok(), ok, "{pin}");
        if let Err(e) = out {
            assert_eq!(e.aws_code(), "ValidationException");
            assert!(!e.to_string().contains(pin));
        }
    }
}

fn create_store_named(kms: &EmbeddedKms, t: &TestToken, name: &str) -> Result<String> {
    kms.create_custom_key_store(
        &root(kms),
        &CreateCustomKeyStoreRequest {
            name: name.into(),
            cluster: Some(t.spec.uri()),
            password: Some(StorePassword::new(USER_PIN.into())),
            ..Default::default()
        },
    )
}

#[test]
fn a_keystore_naming_another_keys_object_is_refused_and_shreds_nothing() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let store = connected_store(&kms, t);
    let a = key_id(&hsm_key(&kms, &store).unwrap());
    let b_ref = hsm_key(&kms, &store).unwrap();
    let b = key_id(&b_ref);
    let path = kms.dir.keystore_path();
    let good = std::fs::read(&path).unwrap();
    let root_key = kms.root().unwrap();
    let craft = |edit: &dyn Fn(&mut Keystore)| {
        std::fs::write(&path, &good).unwrap();
        let mut ks = Keystore::load(&path, &root_key, &r).unwrap();
        edit(&mut ks);
        ks.save(&path, &root_key).unwrap();
        let mut no = || -> Result<SecretBytes> { unreachable!() };
        EmbeddedKms::open_region(d.path(), &r, &mut no, Clock::Skewed(40 * DAY))
    };
    let b_object = hex::encode(hsm_keys::object_id(&b, 1));
    // Key a's version names b's object, and a is past its deletion date: opening would
    // shred b's material.
    let e = craft(&|ks| {
        let k = ks.body.keys.get_mut(&a).unwrap();
        k.versions[0].token_object = Some(b_object.clone());
        k.state = KeyState::PendingDeletion;
        k.deletion_date = Some(0);
    })
    .unwrap_err();
    assert!(e.to_string().contains("not its own"), "{e}");
    // The store lists b's (live) object for destruction at its next connection.
    let e = craft(&|ks| {
        let s = ks.body.custom_key_stores.get_mut(&store).unwrap();
        s.connection = StoreConnection::Disconnected;
        s.objects_to_destroy.push(b_object.clone());
    })
    .unwrap_err();
    assert!(e.to_string().contains("live key"), "{e}");
    // A key in a store that does not exist.
    let e = craft(&|ks| {
        ks.body.keys.get_mut(&a).unwrap().custom_key_store_id = Some("cks-0000000000000000".into());
    })
    .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(
        exists(t, hsm_keys::object_id(&b, 1)),
        "b's object was destroyed"
    );
    std::fs::write(&path, &good).unwrap();
    let kms = open(&d, &r, Clock::System);
    roundtrip(&kms, &b_ref).unwrap();
}

#[test]
fn blobs_relabelled_between_embedded_and_token_keys_do_not_open() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let store = connected_store(&kms, t);
    let hsm = hsm_key(&kms, &store).unwrap();
    let plain = KeyRef::parse(&kms.create_key(&c, &Default::default()).unwrap().key_id).unwrap();
    let relabel = |blob: &[u8], to: &KeyRef, version: Option<u32>| {
        let mut b = blob.to_vec();
        let rlen = b[4] as usize;
        let at = 5 + rlen;
        b[at..at + 16].copy_from_slice(key_id(to).as_bytes());
        if let Some(v) = version {
            b[at + 16..at + 20].copy_from_slice(&v.to_le_bytes());
        }
        b
    };
    let from_plain = kms
        .encrypt(&c, &plain, b"x", &ctx())
        .unwrap()
        .ciphertext_blob;
    let from_hsm = kms.encrypt(&c, &hsm, b"x", &ctx()).unwrap().ciphertext_blob;
    for (blob, what) in [
        (
            relabel(&from_plain, &hsm, None),
            "embedded blob as the token key's",
        ),
        (
            relabel(&from_hsm, &plain, None),
            "token blob as the embedded key's",
        ),
        (
            relabel(&from_hsm, &hsm, Some(9)),
            "a version the token key lacks",
        ),
        (relabel(&from_hsm, &hsm, Some(0)), "version 0"),
        (relabel(&from_hsm, &hsm, Some(u32::MAX)), "version u32::MAX"),
    ] {
        let e = kms.decrypt(&c, &blob, &ctx(), None).unwrap_err();
        assert_eq!(e.aws_code(), "InvalidCiphertextException", "{what}: {e}");
        assert!(!e.to_string().contains('\n'), "{what}: {e}");
    }
    // A tag cut short, and nothing but the header.
    let e = kms
        .decrypt(&c, &from_hsm[..from_hsm.len() - 1], &ctx(), None)
        .unwrap_err();
    assert_eq!(e.aws_code(), "InvalidCiphertextException", "{e}");
}

#[test]
fn describe_custom_key_stores_paging_abuse_gets_aws_errors() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    create_store(&kms, t, "one");
    let page = |limit: Option<i64>, marker: Option<&str>| {
        kms.describe_custom_key_stores(
            &c,
            None,
            None,
            &Paging {
                limit,
                marker: marker.map(str::to_string),
            },
        )
    };
    for limit in [0, -1, 1001, i64::MAX, i64::MIN] {
        let e = page(Some(limit), None).unwrap_err();
        assert_eq!(e.aws_code(), "ValidationException", "{limit}");
    }
    let list_keys_marker = {
        kms.create_key(&c, &Default::default()).unwrap();
        kms.create_key(&c, &Default::default()).unwrap();
        let v = kms
            .list_keys_page(
                &c,
                &Paging {
                    limit: Some(1),
                    marker: None,
                },
            )
            .unwrap();
        v["NextMarker"].as_str().unwrap().to_string()
    };
    for marker in [
        "",
        "x",
        "%00",
        &"A".repeat(100_000),
        list_keys_marker.as_str(),
    ] {
        let e = page(None, Some(marker)).unwrap_err();
        assert_eq!(
            e.aws_code(),
            "InvalidMarkerException",
            "{}",
            &marker[..marker.len().min(20)]
        );
    }
    let (all, _) = page(Some(1), None).unwrap();
    assert_eq!(all.len(), 1);
}

#[test]
fn concurrent_rotations_and_connection_changes_from_two_handles_stay_consistent() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let store = connected_store(&kms, t);
    let key = hsm_key(&kms, &store).unwrap();
    let id = key_id(&key);
    let other = open(&d, &r, Clock::System);
    std::thread::scope(|s| {
        for h in [&kms, &other] {
            let key = key.clone();
            s.spawn(move || {
                for _ in 0..3 {
                    h.rotate_key_on_demand(&root(h), &key).unwrap();
                }
            });
        }
    });
    assert_eq!(versions(&kms, &id), (1..=7).collect::<Vec<_>>());
    for n in 1..=7 {
        assert!(exists(t, hsm_keys::object_id(&id, n)), "version {n}");
    }
    assert!(!exists(t, hsm_keys::object_id(&id, 8)));
    // Disconnect and connect in one handle while the other uses the key and tries to
    // delete the store: every answer is an AWS error or a success, the store is never
    // deleted while it has a key, and no key is made in a disconnected store.
    let first = &kms;
    std::thread::scope(|s| {
        let toggled = store.clone();
        s.spawn(move || {
            for _ in 0..5 {
                let _ = first.disconnect_custom_key_store(&root(first), &toggled);
                let _ = first.connect_custom_key_store(&root(first), &toggled);
            }
        });
        let c = root(&other);
        for _ in 0..10 {
            match roundtrip(&other, &key) {
                Ok(()) => {}
                Err(e) => assert!(
                    matches!(
                        e.aws_code(),
                        "KMSInvalidStateException" | "InvalidCiphertextException"
                    ),
                    "{e}"
                ),
            }
            let e = other.delete_custom_key_store(&c, &store).unwrap_err();
            assert!(
                matches!(
                    e.aws_code(),
                    "CustomKeyStoreInvalidStateException" | "CustomKeyStoreHasCMKsException"
                ),
                "{e}"
            );
            if let Ok(k) = hsm_key(&other, &store) {
                // Made while the store was connected: it works once connected.
                other.schedule_key_deletion(&c, &k, Some(7)).unwrap();
            }
        }
    });
    let (entries, _) = other
        .describe_custom_key_stores(&root(&other), Some(&store), None, &Paging::default())
        .unwrap();
    assert_eq!(entries[0].connection_state, "CONNECTED");
    roundtrip(&other, &key).unwrap();
}

#[test]
fn crashes_in_deletion_housekeeping_and_in_connect_destroy_each_object_and_orphan_none() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let store = connected_store(&kms, t);
    let deleted_connected = hsm_key(&kms, &store).unwrap();
    let deleted_disconnected = hsm_key(&kms, &store).unwrap();
    let kept = hsm_key(&kms, &store).unwrap();
    let object = |k: &KeyRef| hsm_keys::object_id(&key_id(k), 1);
    kms.schedule_key_deletion(&c, &deleted_connected, Some(7))
        .unwrap();
    // Housekeeping destroys the objects, then its keystore write is lost (a crash).
    fail_next_save();
    let mut no = || -> Result<SecretBytes> { unreachable!() };
    let e = EmbeddedKms::open_region(d.path(), &r, &mut no, Clock::Skewed(8 * DAY)).unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    assert!(!exists(t, object(&deleted_connected)));
    // The next housekeeping deletes the key again and records nothing left to destroy.
    let later = open(&d, &r, Clock::Skewed(8 * DAY));
    let lc = root(&later);
    later
        .read(|ks, _| {
            assert!(!ks.body.keys.contains_key(&key_id(&deleted_connected)));
            assert!(
                ks.body.custom_key_stores[&store]
                    .objects_to_destroy
                    .is_empty()
            );
            Ok(())
        })
        .unwrap();
    // A key whose deletion falls due while the store is disconnected: its object waits for
    // the connection, and a connect whose write is lost destroys it without forgetting it.
    later
        .schedule_key_deletion(&lc, &deleted_disconnected, Some(7))
        .unwrap();
    later.disconnect_custom_key_store(&lc, &store).unwrap();
    let much_later = open(&d, &r, Clock::Skewed(16 * DAY));
    let mc = root(&much_later);
    assert!(exists(t, object(&deleted_disconnected)));
    fail_next_save();
    much_later
        .connect_custom_key_store(&mc, &store)
        .unwrap_err();
    assert!(!exists(t, object(&deleted_disconnected)));
    much_later.connect_custom_key_store(&mc, &store).unwrap();
    much_later
        .read(|ks, _| {
            assert!(
                ks.body.custom_key_stores[&store]
                    .objects_to_destroy
                    .is_empty()
            );
            Ok(())
        })
        .unwrap();
    // The key that was not deleted kept its object throughout.
    assert!(exists(t, object(&kept)));
    roundtrip(&much_later, &kept).unwrap();
}

/// The slot id of the test token, as `pkcs11:slot-id=` names it.
fn slot_of(t: &TestToken) -> u64 {
    let ctx = modules::load(&t.spec.module).unwrap();
    let TokenSelector::Label(label) = &t.spec.token else {
        unreachable!()
    };
    ctx.get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap()
        .id()
}

#[test]
fn one_token_backs_one_store_whether_named_by_label_or_by_slot() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let by_label = create_store(&kms, t, "by-label");
    let by_slot = format!(
        "pkcs11:slot-id={}?module-path={}",
        slot_of(t),
        t.spec.module.display()
    );
    let e = kms
        .create_custom_key_store(
            &root(&kms),
            &CreateCustomKeyStoreRequest {
                name: "by-slot".into(),
                cluster: Some(by_slot.clone()),
                password: Some(StorePassword::new(USER_PIN.into())),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.aws_code(), "CloudHsmClusterInUseException", "{e}");
    assert!(e.to_string().contains(&by_label), "{e}");
}

#[test]
fn a_failed_store_is_renamed_only_once_disconnected_as_aws() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    // The process is logged in with the right PIN, so a store with another PIN is FAILED
    // (USER_LOGGED_IN) once connected.
    let _held = token(t);
    let store = kms
        .create_custom_key_store(
            &c,
            &CreateCustomKeyStoreRequest {
                name: "failing".into(),
                cluster: Some(t.spec.uri()),
                password: Some(StorePassword::new("other-pin-77".into())),
                ..Default::default()
            },
        )
        .unwrap();
    let rename = |name: &str| {
        kms.update_custom_key_store(
            &c,
            &UpdateCustomKeyStoreRequest {
                id: store.clone(),
                new_name: Some(name.into()),
                ..Default::default()
            },
        )
    };
    // DISCONNECTED: yes.
    rename("renamed-1").unwrap();
    kms.connect_custom_key_store(&c, &store).unwrap();
    let (entries, _) = kms
        .describe_custom_key_stores(&c, Some(&store), None, &Paging::default())
        .unwrap();
    assert_eq!(entries[0].connection_state, "FAILED");
    // FAILED: no (CONNECTED is the one other state that allows a new name).
    let e = rename("renamed-2").unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    kms.disconnect_custom_key_store(&c, &store).unwrap();
    rename("renamed-2").unwrap();
}

#[test]
fn a_wrong_pin_is_tried_once_per_connection_not_at_every_call() {
    let Some(t) = test_token() else { return };
    // No other login in the process, so the wrong PIN reaches C_Login.
    let _alone = crate::hsm::test_token::alone();
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let store = store_with_pin(&kms, t, "wrong-pin", "wrong-pin-42");
    let tries = || crate::hsm::token::LOGIN_ATTEMPTS.with(|n| n.get());
    let before = tries();
    kms.connect_custom_key_store(&c, &store).unwrap();
    for _ in 0..5 {
        let (entries, _) = kms
            .describe_custom_key_stores(&c, Some(&store), None, &Paging::default())
            .unwrap();
        assert_eq!(
            entries[0].connection_error_code,
            Some("INVALID_CREDENTIALS")
        );
        hsm_key(&kms, &store).unwrap_err();
    }
    let made = tries() - before;
    assert!(
        made <= 1,
        "{made} logins with a wrong PIN: a real HSM locks its user after a few"
    );
    // Another process (each CLI command is one) does not try that PIN again either.
    for _ in 0..3 {
        let other = open(&d, &r, Clock::System);
        let (entries, _) = other
            .describe_custom_key_stores(&c, Some(&store), None, &Paging::default())
            .unwrap();
        assert_eq!(entries[0].connection_state, "FAILED");
        assert_eq!(
            entries[0].connection_error_code,
            Some("INVALID_CREDENTIALS")
        );
        hsm_key(&other, &store).unwrap_err();
    }
    let made = tries() - before;
    assert!(made <= 1, "{made} logins with a wrong PIN across processes");
    let note = std::fs::read_to_string(
        RegionDir::new(d.path(), &r)
            .pin_refusals_dir()
            .join(format!("{store}.pin-refused")),
    )
    .unwrap();
    assert!(
        note.contains("INVALID_CREDENTIALS") && !note.contains("wrong-pin-42"),
        "{note}"
    );
    // Disconnect, a new PIN, connect: tried again, and it works.
    fix_pin(&kms, &store);
    let key = hsm_key(&kms, &store).unwrap();
    roundtrip(&kms, &key).unwrap();
}

/// `<id>.pin-refused` is not authenticated: garbage, a record for another epoch or with an
/// unknown code, or one naming another token costs one more try (and is replaced by a
/// true record), never an error text taken from the file. The file is 0600 in a 0700
/// directory and holds no PIN. A reconnect (same PIN) or a new PIN is tried again by every
/// process, and deleting the store deletes the record.
#[test]
fn a_recorded_pin_refusal_is_honoured_only_for_its_store_epoch_and_token() {
    use std::os::unix::fs::PermissionsExt;
    let Some(t) = test_token() else { return };
    let _alone = crate::hsm::test_token::alone();
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let store = store_with_pin(&kms, t, "refused", "wrong-pin-43");
    let tries = || crate::hsm::token::LOGIN_ATTEMPTS.with(|n| n.get());
    let start = tries();
    kms.connect_custom_key_store(&c, &store).unwrap();
    // A fresh process's view of the store: its state, and the logins it made.
    let as_other_process = || {
        let before = tries();
        let other = open(&d, &r, Clock::System);
        let (entries, _) = other
            .describe_custom_key_stores(&c, Some(&store), None, &Paging::default())
            .unwrap();
        let e = &entries[0];
        let state = (e.connection_state.to_string(), e.connection_error_code);
        let err = hsm_key(&other, &store).map(|_| ()).err();
        (state, err.map(|e| e.to_string()), tries() - before)
    };
    let dir = RegionDir::new(d.path(), &r).pin_refusals_dir();
    let file = dir.join(format!("{store}.pin-refused"));
    let failed = ("FAILED".to_string(), Some("INVALID_CREDENTIALS"));

    let (state, _, _) = as_other_process();
    assert_eq!((state, tries() - start), (failed.clone(), 1));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));
    let genuine = std::fs::read_to_string(&file).unwrap();
    let v: serde_json::Value = serde_json::from_str(&genuine).unwrap();
    let mut members: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    members.sort();
    assert_eq!(members, ["code", "epoch", "token"]);
    assert!(!genuine.contains("wrong-pin-43") && !genuine.contains(USER_PIN));
    assert_eq!(v["epoch"], 1);
    // The genuine record: no more tries.
    let (state, _, n) = as_other_process();
    assert_eq!((state, n), (failed.clone(), 0));

    let hostile = [
        b"\x00\xffnot json".to_vec(),
        br#"{"epoch":0,"code":"INVALID_CREDENTIALS","token":"x"}"#.to_vec(),
        genuine.replace("INVALID_CREDENTIALS", "NOPE").into_bytes(),
        serde_json::to_vec(&serde_json::json!({
            "epoch": 1,
            "code": "INVALID_CREDENTIALS",
            "token": "evil\ntoken: call 555-0100 to unlock",
        }))
        .unwrap(),
    ];
    for bytes in hostile {
        std::fs::write(&file, &bytes).unwrap();
        let (state, err, n) = as_other_process();
        let shown = String::from_utf8_lossy(&bytes);
        assert_eq!((state, n), (failed.clone(), 1), "{shown}");
        let err = err.unwrap();
        assert!(!err.contains("evil") && !err.contains('\n'), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), genuine, "{shown}");
    }

    // Reconnected with the same PIN (someone fixed the token): every process tries again.
    kms.disconnect_custom_key_store(&c, &store).unwrap();
    let start = tries();
    kms.connect_custom_key_store(&c, &store).unwrap();
    let (state, _, _) = as_other_process();
    assert_eq!((state, tries() - start), (failed.clone(), 1));
    let (_, _, n) = as_other_process();
    assert_eq!(n, 0);

    // A new PIN: tried, and it works in another process despite the old record.
    fix_pin(&kms, &store);
    let other = open(&d, &r, Clock::System);
    let (entries, _) = other
        .describe_custom_key_stores(&c, Some(&store), None, &Paging::default())
        .unwrap();
    assert_eq!(
        (
            entries[0].connection_state,
            entries[0].connection_error_code
        ),
        ("CONNECTED", None)
    );
    drop(other);

    // Deleted: its record goes with it.
    kms.disconnect_custom_key_store(&c, &store).unwrap();
    assert!(file.exists());
    kms.delete_custom_key_store(&c, &store).unwrap();
    assert!(!file.exists());
}
