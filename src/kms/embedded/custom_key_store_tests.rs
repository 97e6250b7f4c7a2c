//! Custom key stores against a real SoftHSM2 token: the store lifecycle and its connection
//! rules, keys whose material the token makes and keeps, and their AWS errors.

use super::test_support::*;
use super::*;
use crate::hsm::ObjectRef;
use crate::hsm::test_token::{TestToken, USER_PIN, test_token};
use crate::kms::backend::DataKeySpec;
use crate::kms::blob;
use crate::kms::context::EncryptionContext;
use crate::kms::ids::KeyRef;

fn create_store(kms: &EmbeddedKms, t: &TestToken, name: &str, pin: &str) -> Result<String> {
    kms.create_custom_key_store(
        &root(kms),
        &CreateCustomKeyStoreRequest {
            name: name.into(),
            cluster: Some(t.spec.uri()),
            password: Some(StorePassword::new(pin.into())),
            ..Default::default()
        },
    )
}

fn state(kms: &EmbeddedKms, store: &str) -> (String, Option<&'static str>) {
    let (entries, _) = kms
        .describe_custom_key_stores(&root(kms), Some(store), None, &Paging::default())
        .unwrap();
    (
        entries[0].connection_state.to_string(),
        entries[0].connection_error_code,
    )
}

fn ctx() -> EncryptionContext {
    EncryptionContext::single("purpose", "test")
}

#[test]
fn a_key_made_in_the_token_encrypts_decrypts_rotates_and_is_shredded_at_deletion() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let store = create_store(&kms, t, "hsm", USER_PIN).unwrap();
    assert!(store.starts_with("cks-") && store.len() == 21, "{store}");
    assert_eq!(state(&kms, &store).0, "DISCONNECTED");
    // Keys are made only in a connected store.
    let e = hsm_key(&kms, &store).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    kms.connect_custom_key_store(&c, &store).unwrap();
    assert_eq!(state(&kms, &store), ("CONNECTED".into(), None));

    let key = hsm_key(&kms, &store).unwrap();
    let meta = kms.describe_key(&c, &key).unwrap();
    assert_eq!(meta.origin, "AWS_CLOUDHSM");
    assert_eq!(meta.custom_key_store_id.as_deref(), Some(store.as_str()));
    assert_eq!(meta.cloud_hsm_cluster_id, Some(t.spec.uri()));
    let id = KeyId::parse(&meta.key_id).unwrap();
    let v1 = ObjectRef::Id(hsm_keys::object_id(&id, 1));
    assert!(token(t).exists(&v1).unwrap());

    // Every cryptographic operation runs in the token and binds the context.
    let enc = kms.encrypt(&c, &key, b"hello hsm", &ctx()).unwrap();
    let dec = kms.decrypt(&c, &enc.ciphertext_blob, &ctx(), None).unwrap();
    assert_eq!(dec.plaintext.expose(), b"hello hsm");
    let e = kms
        .decrypt(&c, &enc.ciphertext_blob, &EncryptionContext::new(), None)
        .unwrap_err();
    assert_eq!(e.aws_code(), "InvalidCiphertextException", "{e}");
    let mut bad = enc.ciphertext_blob.clone();
    *bad.last_mut().unwrap() ^= 1;
    let e = kms.decrypt(&c, &bad, &ctx(), None).unwrap_err();
    assert_eq!(e.aws_code(), "InvalidCiphertextException", "{e}");
    let dk = kms
        .generate_data_key(&c, &key, DataKeySpec::Bytes(64), &ctx())
        .unwrap();
    let back = kms.decrypt(&c, &dk.ciphertext_blob, &ctx(), None).unwrap();
    assert_eq!(back.plaintext.expose(), dk.plaintext.expose());

    // The material is nowhere in the data dir: the keystore records only the object id.
    let summary = kms.keystore_summary().unwrap().to_string();
    assert!(summary.contains(&hex::encode(hsm_keys::object_id(&id, 1))));
    assert!(!summary.contains(USER_PIN), "the PIN is shown");
    let raw = std::fs::read(kms.dir.keystore_path()).unwrap();
    assert!(
        !raw.windows(USER_PIN.len())
            .any(|w| w == USER_PIN.as_bytes())
    );

    // Rotation makes a second object; blobs of the first still decrypt.
    kms.rotate_key_on_demand(&c, &key).unwrap();
    let v2 = ObjectRef::Id(hsm_keys::object_id(&id, 2));
    assert!(token(t).exists(&v2).unwrap());
    let enc2 = kms.encrypt(&c, &key, b"second", &ctx()).unwrap();
    assert_eq!(
        blob::parse(&enc2.ciphertext_blob)
            .unwrap()
            .header
            .key_version,
        2
    );
    for b in [&enc.ciphertext_blob, &enc2.ciphertext_blob] {
        kms.decrypt(&c, b, &ctx(), None).unwrap();
    }
    // A re-encryption to an embedded key and back.
    let plain_key = KeyRef::parse(
        &kms.create_key(&c, &CreateKeyRequest::default())
            .unwrap()
            .key_id,
    )
    .unwrap();
    let re = kms
        .re_encrypt(&c, &enc.ciphertext_blob, &ctx(), None, &plain_key, &ctx())
        .unwrap();
    let re2 = kms
        .re_encrypt(&c, &re.ciphertext_blob, &ctx(), None, &key, &ctx())
        .unwrap();
    let out = kms.decrypt(&c, &re2.ciphertext_blob, &ctx(), None).unwrap();
    assert_eq!(out.plaintext.expose(), b"hello hsm");
    // No timer rotation for token keys, as AWS.
    let e = kms.enable_key_rotation(&c, &key, None).unwrap_err();
    assert_eq!(e.aws_code(), "UnsupportedOperationException", "{e}");

    // The store cannot go while it has keys; deletion destroys the objects in the token.
    kms.disconnect_custom_key_store(&c, &store).unwrap();
    let e = kms.delete_custom_key_store(&c, &store).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreHasCMKsException", "{e}");
    kms.connect_custom_key_store(&c, &store).unwrap();
    kms.schedule_key_deletion(&c, &key, Some(7)).unwrap();
    let later = open(&d, &r, Clock::Skewed(8 * DAY));
    assert!(
        !token(t).exists(&v1).unwrap(),
        "version 1 outlived deletion"
    );
    assert!(
        !token(t).exists(&v2).unwrap(),
        "version 2 outlived deletion"
    );
    let e = later
        .decrypt(&root(&later), &enc.ciphertext_blob, &ctx(), None)
        .unwrap_err();
    assert_eq!(e.aws_code(), "NotFoundException", "{e}");
    let e = later
        .delete_custom_key_store(&root(&later), &store)
        .unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    later
        .disconnect_custom_key_store(&root(&later), &store)
        .unwrap();
    later
        .delete_custom_key_store(&root(&later), &store)
        .unwrap();
    let e = later
        .describe_custom_key_stores(&root(&later), Some(&store), None, &Paging::default())
        .unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreNotFoundException", "{e}");
}

#[test]
fn a_disconnected_store_refuses_its_keys_and_reconnecting_resumes_in_another_process() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let store = create_store(&kms, t, "hsm", USER_PIN).unwrap();
    kms.connect_custom_key_store(&c, &store).unwrap();
    let key = hsm_key(&kms, &store).unwrap();
    let enc = kms.encrypt(&c, &key, b"data", &ctx()).unwrap();

    // A second KMS over the same data dir (another process) connects on its first use.
    let other = open(&d, &r, Clock::System);
    other
        .decrypt(&root(&other), &enc.ciphertext_blob, &ctx(), None)
        .unwrap();
    kms.disconnect_custom_key_store(&c, &store).unwrap();
    let e = kms.disconnect_custom_key_store(&c, &store).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    for k in [&kms, &other] {
        let e = k
            .decrypt(&root(k), &enc.ciphertext_blob, &ctx(), None)
            .unwrap_err();
        assert_eq!(e.aws_code(), "KMSInvalidStateException", "{e}");
        assert!(e.to_string().contains("connect-custom-key-store"), "{e}");
        let e = k.encrypt(&root(k), &key, b"x", &ctx()).unwrap_err();
        assert_eq!(e.aws_code(), "KMSInvalidStateException", "{e}");
    }
    // GenerateRandom from the store needs it connected.
    let req = GenerateRandomRequest {
        number_of_bytes: Some(32),
        custom_key_store_id: Some(store.clone()),
        recipient: false,
    };
    let e = kms.generate_random(&c, &req).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    other
        .connect_custom_key_store(&root(&other), &store)
        .unwrap();
    let out = kms.decrypt(&c, &enc.ciphertext_blob, &ctx(), None).unwrap();
    assert_eq!(out.plaintext.expose(), b"data");
    assert_eq!(kms.generate_random(&c, &req).unwrap().len(), 32);
    // A connected store cannot change its PIN or be deleted.
    let e = kms
        .update_custom_key_store(
            &c,
            &UpdateCustomKeyStoreRequest {
                id: store.clone(),
                password: Some(StorePassword::new("another-pin".into())),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    let e = kms.delete_custom_key_store(&c, &store).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    // Its name can change at any time.
    kms.update_custom_key_store(
        &c,
        &UpdateCustomKeyStoreRequest {
            id: store.clone(),
            new_name: Some("renamed".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let (found, _) = kms
        .describe_custom_key_stores(&c, None, Some("renamed"), &Paging::default())
        .unwrap();
    assert_eq!(found[0].custom_key_store_id, store);
}

#[test]
fn a_wrong_pin_leaves_the_store_failed_until_it_is_disconnected_and_fixed() {
    let Some(t) = test_token() else { return };
    let _alone = crate::hsm::test_token::alone();
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    // The wrong PIN comes first: PKCS#11 keeps one login per process.
    let store = create_store(&kms, t, "hsm", "wrong-pin-0").unwrap();
    kms.connect_custom_key_store(&c, &store).unwrap();
    assert_eq!(
        state(&kms, &store),
        ("FAILED".into(), Some("INVALID_CREDENTIALS"))
    );
    let e = hsm_key(&kms, &store).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    assert!(e.to_string().contains("INVALID_CREDENTIALS"), "{e}");
    // As AWS: a FAILED store is disconnected before it is connected again.
    let e = kms.connect_custom_key_store(&c, &store).unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreInvalidStateException", "{e}");
    assert!(e.to_string().contains("disconnect"), "{e}");
    fix_pin(&kms, &store);
    assert_eq!(state(&kms, &store), ("CONNECTED".into(), None));
    let key = hsm_key(&kms, &store).unwrap();
    kms.encrypt(&c, &key, b"ok", &ctx()).unwrap();
}

#[test]
fn bad_store_requests_get_aws_errors_and_change_nothing() {
    let Some(t) = test_token() else { return };
    let (d, r) = setup();
    let kms = open(&d, &r, Clock::System);
    let c = root(&kms);
    let before = std::fs::read(kms.dir.keystore_path()).unwrap();
    let req =
        |name: &str, cluster: Option<String>, pin: Option<&str>| CreateCustomKeyStoreRequest {
            name: name.into(),
            cluster,
            password: pin.map(|p| StorePassword::new(p.into())),
            ..Default::default()
        };
    let uri = Some(t.spec.uri());
    let missing_module = Some(format!(
        "pkcs11:token={}?module-path=/nonexistent/p11.so",
        t.label
    ));
    let unlisted = Some(format!(
        "pkcs11:token={}?module-path=/usr/lib/x86_64-linux-gnu/libz.so.1",
        t.label
    ));
    let no_token = Some(format!(
        "pkcs11:token=absent?module-path={}",
        t.spec.module.display()
    ));
    for (r, code) in [
        (req("", uri.clone(), Some(USER_PIN)), "ValidationException"),
        (req("a", uri.clone(), Some("short")), "ValidationException"),
        (req("a", uri.clone(), None), "ValidationException"),
        (req("a", None, Some(USER_PIN)), "ValidationException"),
        (
            req("a", Some("cluster-1234567890a".into()), Some(USER_PIN)),
            "ValidationException",
        ),
        (
            req("a", missing_module, Some(USER_PIN)),
            "CloudHsmClusterNotFoundException",
        ),
        (
            req("a", no_token, Some(USER_PIN)),
            "CloudHsmClusterNotFoundException",
        ),
    ] {
        let e = kms.create_custom_key_store(&c, &r).unwrap_err();
        assert_eq!(e.aws_code(), code, "{}: {e}", r.name);
        assert!(!e.to_string().contains(USER_PIN), "{e}");
    }
    if std::path::Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1").exists() {
        let e = kms
            .create_custom_key_store(&c, &req("a", unlisted, Some(USER_PIN)))
            .unwrap_err();
        assert_eq!(e.aws_code(), "CloudHsmClusterNotFoundException", "{e}");
        assert!(e.to_string().contains("p11-kit"), "{e}");
    }
    let xks = CreateCustomKeyStoreRequest {
        store_type: Some("EXTERNAL_KEY_STORE".into()),
        ..req("a", uri.clone(), Some(USER_PIN))
    };
    let e = kms.create_custom_key_store(&c, &xks).unwrap_err();
    assert_eq!(e.aws_code(), "UnsupportedOperationException", "{e}");
    assert_eq!(std::fs::read(kms.dir.keystore_path()).unwrap(), before);

    // One name per store, one store per token.
    let id = create_store(&kms, t, "first", USER_PIN).unwrap();
    let e = kms
        .create_custom_key_store(&c, &req("first", uri.clone(), Some(USER_PIN)))
        .unwrap_err();
    assert_eq!(e.aws_code(), "CustomKeyStoreNameInUseException", "{e}");
    let e = kms
        .create_custom_key_store(&c, &req("second", uri.clone(), Some(USER_PIN)))
        .unwrap_err();
    assert_eq!(e.aws_code(), "CloudHsmClusterInUseException", "{e}");
    assert!(e.to_string().contains(&id), "{e}");
    // Unknown ids; Origin rules of CreateKey.
    for e in [
        kms.connect_custom_key_store(&c, "cks-00000000000000000")
            .unwrap_err(),
        kms.delete_custom_key_store(&c, "cks-00000000000000000")
            .unwrap_err(),
        hsm_key(&kms, "cks-00000000000000000").unwrap_err(),
    ] {
        assert_eq!(e.aws_code(), "CustomKeyStoreNotFoundException", "{e}");
    }
    for (origin, store) in [
        (Some("AWS_CLOUDHSM"), None),
        (None, Some(id.clone())),
        (Some("AWS_KMS"), Some(id.clone())),
        (Some("NONSENSE"), None),
    ] {
        let e = kms
            .create_key(
                &c,
                &CreateKeyRequest {
                    origin: origin.map(String::from),
                    custom_key_store_id: store,
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.aws_code(), "ValidationException", "{origin:?}: {e}");
    }
    let e = kms
        .create_key(
            &c,
            &CreateKeyRequest {
                origin: Some("EXTERNAL".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.aws_code(), "UnsupportedOperationException", "{e}");
}

#[test]
fn stores_of_two_regions_on_one_token_in_one_process_do_not_disconnect_each_other() {
    let Some(t) = test_token() else { return };
    let d = tempfile::tempdir().unwrap();
    let (ra, rb) = (
        Region::parse("test-1").unwrap(),
        Region::parse("test-2").unwrap(),
    );
    crate::kms::init::init(d.path(), &ra, None, 0).unwrap();
    crate::kms::init::init(d.path(), &rb, None, 0).unwrap();
    // One process serving both regions, as `kms serve` does.
    let (a, b) = (open(&d, &ra, Clock::System), open(&d, &rb, Clock::System));
    let (sa, sb) = (
        create_store(&a, t, "a", USER_PIN).unwrap(),
        create_store(&b, t, "b", USER_PIN).unwrap(),
    );
    a.connect_custom_key_store(&root(&a), &sa).unwrap();
    b.connect_custom_key_store(&root(&b), &sb).unwrap();
    let (ka, kb) = (hsm_key(&a, &sa).unwrap(), hsm_key(&b, &sb).unwrap());
    let blob_b = b.encrypt(&root(&b), &kb, b"b's", &ctx()).unwrap();
    a.encrypt(&root(&a), &ka, b"a's", &ctx()).unwrap();
    a.disconnect_custom_key_store(&root(&a), &sa).unwrap();
    // Region b's key still works: a's disconnect closed a's sessions only.
    let out = b
        .decrypt(&root(&b), &blob_b.ciphertext_blob, &ctx(), None)
        .unwrap();
    assert_eq!(out.plaintext.expose(), b"b's");
    b.encrypt(&root(&b), &kb, b"more", &ctx()).unwrap();
    let e = a.encrypt(&root(&a), &ka, b"x", &ctx()).unwrap_err();
    assert_eq!(e.aws_code(), "KMSInvalidStateException", "{e}");
}
