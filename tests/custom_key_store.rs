//! Custom key stores from the command line, against a real SoftHSM2 token (the one test.sh
//! makes): a store is created and connected, a key is made inside the token, a volume is
//! wrapped by it, attached through FUSE, snapshotted and restored; disconnecting the store
//! keeps attached volumes working and refuses new attaches with one clear line; the key's
//! material is in no file of the data dir; wrong PINs, missing modules and tokens give
//! their exit codes.
//!
//! Needs SoftHSM2 and FUSE: fails without them when `CRYPTVOL_REQUIRE_MOUNT=1` (CI).

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::mount::*;
use common::str_field;
use cryptvol::crypto::Key256;
use cryptvol::hsm::{ObjectRef, Token, TokenSelector, TokenSpec};

use common::hsm::{SHARED_PIN as PIN, SHARED_TOKEN as TOKEN, SOFTHSM_MODULE as MODULE};

fn spec() -> TokenSpec {
    TokenSpec {
        module: MODULE.into(),
        token: TokenSelector::Label(TOKEN.into()),
    }
}

/// A store on the test token, created and connected; returns its id.
fn connected_store(v: &VolEnv, name: &str) -> String {
    let pin = v.file(format!("{PIN}\n").as_bytes());
    let pin = pin.to_string_lossy();
    let out = v.json(&[
        "kms",
        "create-custom-key-store",
        "--custom-key-store-name",
        name,
        "--pkcs11-module",
        MODULE,
        "--token-label",
        TOKEN,
        "--key-store-password-file",
        &pin,
    ]);
    let id = str_field(&out, "CustomKeyStoreId");
    v.ok(&[
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &id,
    ]);
    id
}

fn store_state(v: &VolEnv, id: &str) -> (String, Option<String>) {
    let d = v.json(&[
        "kms",
        "describe-custom-key-stores",
        "--custom-key-store-id",
        id,
    ]);
    let s = &d["CustomKeyStores"][0];
    (
        str_field(s, "ConnectionState"),
        s["ConnectionErrorCode"].as_str().map(String::from),
    )
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Every file of the data dir except the pool's chunk files (volume ciphertext), read.
fn data_dir_files(dir: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            data_dir_files(&p, out);
        } else if ft.is_file() {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("data-") && name.ends_with(".pool") {
                continue;
            }
            out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
        }
    }
}

#[test]
fn a_volume_wrapped_by_a_key_in_the_token_lives_through_disconnects_and_its_key_stays_in_the_token()
{
    if !common::hsm::ready() || !require_mount_support(&[Need::Fuse]) {
        return;
    }
    let v = VolEnv::new();
    v.add_secret(PIN.as_bytes());
    let store = connected_store(&v, "hsm");
    assert_eq!(store_state(&v, &store), ("CONNECTED".into(), None));
    let key = v.json(&[
        "kms",
        "create-key",
        "--origin",
        "AWS_CLOUDHSM",
        "--custom-key-store-id",
        &store,
    ]);
    let meta = &key["KeyMetadata"];
    assert_eq!(str_field(meta, "Origin"), "AWS_CLOUDHSM");
    assert_eq!(str_field(meta, "CustomKeyStoreId"), store);
    let key_id = str_field(meta, "KeyId");

    // A volume wrapped by the key, written, snapshotted and restored.
    let vol = v.create(&["--size", "16M", "--kms-key", &key_id]);
    let d1 = v.dir("a");
    let f1 = v.attach(&vol, &d1, &[]);
    let data = pattern(256 * 1024, 7);
    {
        let f = std::fs::OpenOptions::new().write(true).open(&f1).unwrap();
        f.write_all_at(&data, 4096 * 3).unwrap();
        f.sync_all().unwrap();
    }
    v.detach(&d1);
    let snap = str_field(&v.json(&["snapshot", "create", &vol]), "SnapshotId");
    let restored = v.create(&["--from-snapshot", &snap]);
    let d2 = v.dir("b");
    let f2 = v.attach(&restored, &d2, &[]);

    // Disconnected: the attached volume keeps working (its data key is in the daemon's
    // memory); a new attach is refused with one line that says how to fix it.
    v.ok(&[
        "kms",
        "disconnect-custom-key-store",
        "--custom-key-store-id",
        &store,
    ]);
    assert_eq!(store_state(&v, &store).0, "DISCONNECTED");
    let mut back = vec![0u8; data.len()];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f2)
        .unwrap();
    f.read_exact_at(&mut back, 4096 * 3).unwrap();
    assert_eq!(back, data, "the restored volume reads what was written");
    f.write_all_at(&pattern(4096, 9), 0).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let err = v.attach_run(&vol, &d1, &[]).fails(4);
    assert!(err.contains("connect-custom-key-store"), "{err}");
    assert!(err.contains(&store), "{err}");
    assert!(!is_mount_point(&d1), "a refused attach left a mount");

    // Reconnecting resumes.
    v.ok(&[
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &store,
    ]);
    let f1 = v.attach(&vol, &d1, &[]);
    let mut back = vec![0u8; data.len()];
    std::fs::File::open(&f1)
        .unwrap()
        .read_exact_at(&mut back, 4096 * 3)
        .unwrap();
    assert_eq!(back, data);
    v.detach(&d1);
    v.detach(&d2);

    // The key's material is in no file of the data dir: a known answer made inside the
    // token opens under no 32 bytes of any file (the token refuses to export the key, so
    // its ciphertext is what we compare).
    let id_bytes = uuid_bytes(&key_id);
    let mut object = id_bytes.to_vec();
    object.extend_from_slice(&1u32.to_be_bytes());
    let token = Token::connect(&spec(), &PIN.into()).unwrap();
    let nonce = [3u8; 12];
    let sealed = token
        .encrypt_gcm(&ObjectRef::Id(object), &nonce, b"kcv", &[0u8; 16])
        .unwrap();
    let (ct, tag) = sealed.split_at(16);
    let tag: [u8; 16] = tag.try_into().unwrap();
    let mut files = Vec::new();
    data_dir_files(&v.data, &mut files);
    assert!(files.iter().any(|(p, _)| p.ends_with("keystore.cvks")));
    for (path, bytes) in &files {
        for w in bytes.windows(32) {
            let k = Key256::from_slice(w).unwrap();
            let mut buf = ct.to_vec();
            assert!(
                cryptvol::crypto::aead::open_in_place(&k, &nonce, b"kcv", &mut buf, &tag).is_err(),
                "{} holds the key's material",
                path.display()
            );
        }
    }
}

/// The 16 bytes of a key id (a UUID in its usual text form).
fn uuid_bytes(id: &str) -> [u8; 16] {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let v = hex::decode(hex).unwrap();
    v.try_into().unwrap()
}

#[test]
fn wrong_pins_missing_modules_and_tokens_get_one_line_and_their_exit_codes() {
    if !common::hsm::ready() {
        return;
    }
    let v = VolEnv::new();
    v.add_secret(b"wrong-pin-0");
    let create = |name: &str, module: &str, token: &str, pin: &str| -> common::Out {
        v.run(&[
            "kms",
            "create-custom-key-store",
            "--custom-key-store-name",
            name,
            "--pkcs11-module",
            module,
            "--token-label",
            token,
            "--key-store-password",
            pin,
        ])
    };
    // A module that is not there, and a token that is not there: CloudHsmClusterNotFound.
    let e = create("a", "/nonexistent/libp11.so", TOKEN, PIN).fails(3);
    assert!(e.contains("CloudHsmClusterNotFoundException"), "{e}");
    assert!(e.contains("/nonexistent/libp11.so"), "{e}");
    let e = create("a", MODULE, "no-such-token", PIN).fails(3);
    assert!(e.contains("no-such-token"), "{e}");
    // A PIN too short for AWS's rules.
    let e = create("a", MODULE, TOKEN, "12").fails(6);
    assert!(e.contains("keyStorePassword"), "{e}");
    // A wrong PIN: the connect says FAILED (exit 27) with AWS's error code.
    let id = str_field(
        &create("a", MODULE, TOKEN, "wrong-pin-0").ok().json(),
        "CustomKeyStoreId",
    );
    let e = v
        .run(&[
            "kms",
            "connect-custom-key-store",
            "--custom-key-store-id",
            &id,
        ])
        .fails(27);
    assert!(e.contains("INVALID_CREDENTIALS"), "{e}");
    assert_eq!(
        store_state(&v, &id),
        ("FAILED".into(), Some("INVALID_CREDENTIALS".into()))
    );
    // Fixed the AWS way: disconnect, new password, connect.
    let e = v
        .run(&[
            "kms",
            "connect-custom-key-store",
            "--custom-key-store-id",
            &id,
        ])
        .fails(4);
    assert!(e.contains("disconnect"), "{e}");
    v.ok(&[
        "kms",
        "disconnect-custom-key-store",
        "--custom-key-store-id",
        &id,
    ]);
    v.ok(&[
        "kms",
        "update-custom-key-store",
        "--custom-key-store-id",
        &id,
        "--key-store-password",
        PIN,
    ]);
    v.ok(&[
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &id,
    ]);
    assert_eq!(store_state(&v, &id), ("CONNECTED".into(), None));
    // Unknown ids are NotFound; the store cannot be deleted while connected.
    let e = v
        .run(&[
            "kms",
            "connect-custom-key-store",
            "--custom-key-store-id",
            "cks-0123456789abcdef0",
        ])
        .fails(3);
    assert!(e.contains("cks-0123456789abcdef0"), "{e}");
    let e = v
        .run(&[
            "kms",
            "delete-custom-key-store",
            "--custom-key-store-id",
            &id,
        ])
        .fails(4);
    assert!(e.contains("DISCONNECTED"), "{e}");
}

/// A pkcs11 URI for a region root object in the test token, with its PIN file.
fn root_uri(v: &VolEnv, object: &str) -> String {
    let pin = v.file(format!("{PIN}\n").as_bytes());
    format!(
        "pkcs11:token={TOKEN};object={object}?module-path={MODULE}&pin-source=file:{}",
        pin.display()
    )
}

#[test]
fn a_snapshot_under_a_token_key_is_copied_to_a_token_root_region_under_its_own_token_key() {
    if !common::hsm::ready() || !require_mount_support(&[Need::Fuse]) {
        return;
    }
    let v = VolEnv::new();
    v.add_secret(PIN.as_bytes());
    // Region local-1: a key in a custom key store wraps the volume.
    let store = connected_store(&v, "hsm-src");
    let key = str_field(
        &v.json(&[
            "kms",
            "create-key",
            "--origin",
            "AWS_CLOUDHSM",
            "--custom-key-store-id",
            &store,
        ])["KeyMetadata"],
        "KeyId",
    );
    let vol = v.create(&["--size", "16M", "--kms-key", &key]);
    let d = v.dir("src");
    let f = v.attach(&vol, &d, &[]);
    let data = pattern(300 * 1024, 11);
    {
        let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
        file.write_all_at(&data, 1 << 20).unwrap();
        file.sync_all().unwrap();
    }
    v.detach(&d);
    let snap = str_field(&v.json(&["snapshot", "create", &vol]), "SnapshotId");

    // Region eu-1: its root key is sealed by an object in the token, and it has a custom
    // key store of its own on the same token.
    let object = format!("root-{}", std::process::id());
    v.ok(&[
        "--region",
        "eu-1",
        "init",
        "--root-key",
        &root_uri(&v, &object),
    ]);
    assert!(
        !v.region_dir("eu-1").join("root.key").exists(),
        "a token-root region wrote a root.key"
    );
    let pin = v.file(format!("{PIN}\n").as_bytes());
    let pin = pin.to_string_lossy();
    let dest_store = str_field(
        &v.json(&[
            "--region",
            "eu-1",
            "kms",
            "create-custom-key-store",
            "--custom-key-store-name",
            "hsm-dst",
            "--pkcs11-module",
            MODULE,
            "--token-label",
            TOKEN,
            "--key-store-password-file",
            &pin,
        ]),
        "CustomKeyStoreId",
    );
    v.ok(&[
        "--region",
        "eu-1",
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &dest_store,
    ]);
    let dest_key = str_field(
        &v.json(&[
            "--region",
            "eu-1",
            "kms",
            "create-key",
            "--origin",
            "AWS_CLOUDHSM",
            "--custom-key-store-id",
            &dest_store,
        ])["KeyMetadata"],
        "Arn",
    );
    let copy = v.json(&[
        "snapshot",
        "copy",
        &snap,
        "--destination-region",
        "eu-1",
        "--kms-key",
        &dest_key,
    ]);
    let copied = str_field(&copy, "SnapshotId");
    let restored = str_field(
        &v.json(&[
            "--region",
            "eu-1",
            "volume",
            "create",
            "--from-snapshot",
            &copied,
        ]),
        "VolumeId",
    );
    let d2 = v.dir("dst");
    let out = v
        .run(&[
            "--region",
            "eu-1",
            "attach",
            &restored,
            &d2.to_string_lossy(),
        ])
        .ok()
        .json();
    let file = std::path::PathBuf::from(str_field(&out, "File"));
    let mut back = vec![0u8; data.len()];
    std::fs::File::open(&file)
        .unwrap()
        .read_exact_at(&mut back, 1 << 20)
        .unwrap();
    assert_eq!(
        back, data,
        "the copy in the token-root region reads what was written"
    );
    v.run(&["--region", "eu-1", "detach", &d2.to_string_lossy()])
        .ok();
    // The copy's data key is wrapped by eu-1's token key: disconnecting eu-1's store stops
    // a new attach there, while local-1's store (same token) keeps its volume attachable.
    v.ok(&[
        "--region",
        "eu-1",
        "kms",
        "disconnect-custom-key-store",
        "--custom-key-store-id",
        &dest_store,
    ]);
    v.run(&[
        "--region",
        "eu-1",
        "attach",
        &restored,
        &d2.to_string_lossy(),
    ])
    .fails(4);
    let f = v.attach(&vol, &d, &[]);
    let mut back = vec![0u8; data.len()];
    std::fs::File::open(&f)
        .unwrap()
        .read_exact_at(&mut back, 1 << 20)
        .unwrap();
    assert_eq!(back, data);
    v.detach(&d);
}
