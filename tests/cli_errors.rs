//! Bad input gets one clear line, a distinct exit code, and changes nothing on disk;
//! concurrent processes lose nothing; secrets never leak. The CLI run as a process.
//!
//! `Env::fail` checks the common contract on every failure here: exactly one stderr line
//! starting with `cryptvol: `, no panic, empty stdout, the data dir byte-for-byte
//! unchanged, and no root key (nor any registered secret) in the output.

mod common;

use std::process::Stdio;

use common::*;
use serde_json::Value;

const UNKNOWN_ID: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";

/// A region with one key, one alias and a blob; returns (env, key id, blob).
fn populated() -> (Env, String, Vec<u8>) {
    let env = Env::init();
    let key = env.create_key();
    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/k",
        "--target-key-id",
        &key,
    ]);
    let blob = env.encrypt(&key, b"some plaintext", Some("c=1"));
    (env, key, blob)
}

#[test]
fn unknown_keys_are_not_found() {
    let (env, key, blob) = populated();
    let acct = str_field(&env.json(&["init"]), "AccountId");
    let pt = env.fileb(b"x");
    let b = b64(&blob);
    let other_account = if acct == "111122223333" {
        "444455556666"
    } else {
        "111122223333"
    };
    let foreign_arn = format!("arn:aws:kms:{DEFAULT_REGION}:{other_account}:key/{key}");
    let unknown_arn = format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:key/{UNKNOWN_ID}");
    for name in [
        UNKNOWN_ID,
        "banana",
        &unknown_arn,
        &foreign_arn,
        "alias/nope",
    ] {
        let cmds: Vec<Vec<&str>> = vec![
            vec!["kms", "describe-key", "--key-id", name],
            vec!["kms", "enable-key", "--key-id", name],
            vec!["kms", "disable-key", "--key-id", name],
            vec!["kms", "schedule-key-deletion", "--key-id", name],
            vec!["kms", "cancel-key-deletion", "--key-id", name],
            vec!["kms", "encrypt", "--key-id", name, "--plaintext", &pt],
            vec![
                "kms",
                "generate-data-key",
                "--key-id",
                name,
                "--number-of-bytes",
                "32",
            ],
            vec![
                "kms",
                "generate-data-key-without-plaintext",
                "--key-id",
                name,
                "--number-of-bytes",
                "32",
            ],
            vec!["kms", "enable-key-rotation", "--key-id", name],
            vec!["kms", "disable-key-rotation", "--key-id", name],
            vec!["kms", "get-key-rotation-status", "--key-id", name],
            vec!["kms", "rotate-key-on-demand", "--key-id", name],
            vec!["kms", "list-key-rotations", "--key-id", name],
            vec!["kms", "list-aliases", "--key-id", name],
            vec![
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &b,
                "--encryption-context",
                "c=1",
                "--key-id",
                name,
            ],
            vec![
                "kms",
                "re-encrypt",
                "--ciphertext-blob",
                &b,
                "--source-encryption-context",
                "c=1",
                "--destination-key-id",
                name,
            ],
        ];
        for args in cmds {
            let line = env.fail(&args, 3);
            assert!(line.contains("NotFoundException"), "{line}");
        }
        if !name.starts_with("alias/") {
            env.fail(
                &[
                    "kms",
                    "create-alias",
                    "--alias-name",
                    "alias/new",
                    "--target-key-id",
                    name,
                ],
                3,
            );
            env.fail(
                &[
                    "kms",
                    "update-alias",
                    "--alias-name",
                    "alias/k",
                    "--target-key-id",
                    name,
                ],
                3,
            );
        }
    }
    // The garbage name is named back to the user.
    let line = env.fail(&["kms", "describe-key", "--key-id", "banana"], 3);
    assert!(line.contains("banana"), "{line}");
    let line = env.fail(&["kms", "describe-key", "--key-id", UNKNOWN_ID], 3);
    assert!(line.contains(UNKNOWN_ID), "{line}");
}

#[test]
fn malformed_arns_are_invalid() {
    let (env, key, _) = populated();
    let pt = env.fileb(b"x");
    for arn in [
        format!("arn:aws:kms:{DEFAULT_REGION}:1234:key/{key}"),
        format!("arn:aws:s3:{DEFAULT_REGION}:111122223333:key/{key}"),
        format!("arn:aws:kms:{DEFAULT_REGION}:111122223333:key/not-a-uuid"),
        format!("arn:aws:kms:{DEFAULT_REGION}:111122223333"),
        format!("arn:aws:kms:LOCAL:111122223333:key/{key}"),
        format!("arn:aws:kms:{DEFAULT_REGION}:111122223333:thing/{key}"),
        "arn:".to_string(),
    ] {
        for args in [
            vec!["kms", "describe-key", "--key-id", &arn],
            vec!["kms", "disable-key", "--key-id", &arn],
            vec!["kms", "encrypt", "--key-id", &arn, "--plaintext", &pt],
            vec![
                "kms",
                "create-alias",
                "--alias-name",
                "alias/x",
                "--target-key-id",
                &arn,
            ],
        ] {
            let line = env.fail(&args, 6);
            assert!(line.contains("InvalidArnException"), "{line}");
            assert!(line.contains(&arn), "the bad ARN is quoted: {line}");
        }
    }
}

#[test]
fn truncated_blobs_are_invalid_ciphertext() {
    let (env, _, blob) = populated();
    for len in [0, 1, 5, 20, blob.len() / 2, blob.len() - 17, blob.len() - 1] {
        let b = env.fileb(&blob[..len]);
        let line = env.fail(
            &[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &b,
                "--encryption-context",
                "c=1",
            ],
            5,
        );
        assert!(line.contains("InvalidCiphertextException"), "{len}: {line}");
    }
    // Extra bytes are tampering too.
    let mut longer = blob.clone();
    longer.push(0);
    env.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b64(&longer),
            "--encryption-context",
            "c=1",
        ],
        5,
    );
    // Not a blob at all; inspect says so too.
    let junk = b64(&[0x42u8; 100]);
    env.fail(&["kms", "decrypt", "--ciphertext-blob", &junk], 5);
    env.fail(&["inspect", "blob", "--ciphertext-blob", &junk], 5);
    env.fail(
        &["inspect", "blob", "--ciphertext-blob", &b64(&blob[..10])],
        5,
    );
}

#[test]
fn every_single_byte_change_of_a_blob_is_refused() {
    let (env, key, blob) = populated();
    let region_len = DEFAULT_REGION.len();
    // Layout (docs/formats.md): magic 3, version 1, region len 1, region, key id 16,
    // key version 4, salt 16, nonce 12, ciphertext, tag 16.
    let key_id_at = 5 + region_len;
    let key_version_at = key_id_at + 16;
    assert_eq!(&blob[..3], b"CVK");
    assert_eq!(blob[4] as usize, region_len);
    let before = env.snapshot();
    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let args = [
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b64(&bad),
            "--encryption-context",
            "c=1",
        ];
        let out = env.run(&args);
        let allowed: &[i32] = if (4..key_id_at).contains(&i) {
            // A changed region name or length is a blob of another (or no) region.
            &[5, 8]
        } else if (key_id_at..key_version_at).contains(&i) {
            // A changed key id names a key that does not exist.
            &[3, 5]
        } else {
            &[5]
        };
        assert!(
            allowed.contains(&out.code),
            "byte {i} of {} changed: exit {}, stderr {:?}",
            blob.len(),
            out.code,
            out.stderr
        );
        let code = out.code;
        out.fails(code);
    }
    env.snapshot()
        .assert_unchanged_since(&before, "decrypting tampered blobs");
    // The original still decrypts: nothing was damaged by the attempts.
    assert_eq!(env.decrypt(&blob, Some("c=1")), b"some plaintext");
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");
}

#[test]
fn missing_and_unreadable_input_files() {
    let (env, key, _) = populated();
    let missing = env.path("does-not-exist.bin");
    let m = fileb(&missing);
    for args in [
        vec![
            "kms",
            "encrypt",
            "--key-id",
            key.as_str(),
            "--plaintext",
            &m,
        ],
        vec!["kms", "decrypt", "--ciphertext-blob", &m],
        vec![
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &m,
            "--destination-key-id",
            &key,
        ],
        vec!["inspect", "blob", "--ciphertext-blob", &m],
    ] {
        let line = env.fail(&args, 3);
        assert!(line.contains("does-not-exist.bin"), "{line}");
    }
    // A directory where a file is expected: an I/O error.
    let dir = fileb(env.scratch());
    env.fail(
        &["kms", "encrypt", "--key-id", &key, "--plaintext", &dir],
        11,
    );
}

#[test]
fn corrupt_keystore_is_reported_and_left_alone() {
    let (env, key, blob) = populated();
    let ks_path = env.keystore(DEFAULT_REGION);
    let good = env.keystore_bytes(DEFAULT_REGION);
    let b = b64(&blob);
    let pt = env.fileb(b"x");
    let commands: Vec<Vec<&str>> = vec![
        vec!["kms", "list-keys"],
        vec!["kms", "create-key"],
        vec!["kms", "describe-key", "--key-id", &key],
        vec!["kms", "describe-key", "--key-id", "alias/aws/ebs"],
        vec!["kms", "encrypt", "--key-id", &key, "--plaintext", &pt],
        vec![
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b,
            "--encryption-context",
            "c=1",
        ],
        vec!["kms", "schedule-key-deletion", "--key-id", &key],
        vec!["inspect", "keystore"],
        vec!["init"],
    ];

    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x20;
    let mut header = good.clone();
    header[0] = b'X';
    for (what, bytes) in [
        ("a flipped body byte", flipped),
        ("a bad magic", header),
        ("a truncated file", good[..good.len() - 3].to_vec()),
        ("an empty file", vec![]),
        ("garbage", vec![0xAB; 600]),
    ] {
        std::fs::write(&ks_path, &bytes).unwrap();
        for args in &commands {
            let line = env.fail(args, 12);
            assert!(
                line.contains("keystore.cvks"),
                "{what}: the damaged file is named: {line}"
            );
        }
        assert_eq!(
            env.keystore_bytes(DEFAULT_REGION),
            bytes,
            "{what}: not rewritten"
        );
    }

    // A keystore that cannot be read at all (a directory in its place): an I/O error.
    std::fs::remove_file(&ks_path).unwrap();
    std::fs::create_dir(&ks_path).unwrap();
    for args in &commands {
        let line = env.fail(args, 11);
        assert!(line.contains("keystore.cvks"), "{line}");
    }
    // A missing keystore is not silently replaced by an empty one.
    std::fs::remove_dir(&ks_path).unwrap();
    for args in &commands {
        let out = env.run(args);
        assert!(
            out.code == 11 || out.code == 12,
            "missing keystore: exit {} for {args:?}: {}",
            out.code,
            out.stderr
        );
        let code = out.code;
        out.fails(code);
        assert!(!ks_path.exists(), "{args:?} created a new keystore");
    }

    // Restored, everything works again.
    std::fs::write(&ks_path, &good).unwrap();
    assert_eq!(env.decrypt(&blob, Some("c=1")), b"some plaintext");
}

#[test]
fn corrupt_region_config_and_root_key() {
    let (env, key, blob) = populated();
    let region = env.region_dir(DEFAULT_REGION);
    let cfg_path = region.join("region.json");
    let good_cfg = std::fs::read(&cfg_path).unwrap();
    let cfg: Value = serde_json::from_slice(&good_cfg).unwrap();
    let b = b64(&blob);
    let commands: Vec<Vec<&str>> = vec![
        vec!["kms", "list-keys"],
        vec!["kms", "create-key"],
        vec![
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b,
            "--encryption-context",
            "c=1",
        ],
        vec!["init"],
    ];

    let mut v2 = cfg.clone();
    v2["format"] = 2.into();
    let mut other_region = cfg.clone();
    other_region["region"] = "other-1".into();
    let mut unknown_field = cfg.clone();
    unknown_field["surprise"] = true.into();
    for (what, bytes) in [
        ("garbage", b"{ not json".to_vec()),
        ("empty", vec![]),
        (
            "another region's",
            serde_json::to_vec(&other_region).unwrap(),
        ),
        ("unknown field", serde_json::to_vec(&unknown_field).unwrap()),
    ] {
        std::fs::write(&cfg_path, &bytes).unwrap();
        for args in &commands {
            let line = env.fail(args, 12);
            assert!(line.contains("region.json"), "{what}: {line}");
        }
    }
    // A newer format is not damage: exit 13, upgrade.
    std::fs::write(&cfg_path, serde_json::to_vec(&v2).unwrap()).unwrap();
    for args in &commands {
        let line = env.fail(args, 13);
        assert!(
            line.contains("region.json") && line.contains("upgrade cryptvol"),
            "format 2: {line}"
        );
    }
    std::fs::write(&cfg_path, &good_cfg).unwrap();

    // The root key: another key is a wrong secret, a short one is damage, none is I/O.
    let root_path = region.join("root.key");
    let root = std::fs::read(&root_path).unwrap();
    let mut other = root.clone();
    other[0] ^= 0xFF;
    std::fs::write(&root_path, &other).unwrap();
    for args in &commands {
        let line = env.fail(args, 7);
        assert!(
            line.contains("root.key") || line.contains("root key"),
            "{line}"
        );
        assert!(line.contains(DEFAULT_REGION), "{line}");
    }
    std::fs::write(&root_path, &root[..31]).unwrap();
    for args in &commands {
        let line = env.fail(args, 12);
        assert!(line.contains("root.key"), "{line}");
    }
    std::fs::remove_file(&root_path).unwrap();
    for args in &commands {
        let line = env.fail(args, 11);
        assert!(line.contains("root.key"), "{line}");
    }
    assert!(
        !root_path.exists(),
        "a lost root key is not replaced by a new one"
    );
    std::fs::write(&root_path, &root).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");

    // A damaged account file stops a new region, and creates nothing.
    std::fs::write(env.data.join("account.json"), b"[]").unwrap();
    env.fail(&["--region", "new-1", "init"], 12);
    assert!(!env.region_dir("new-1").exists());
}

#[test]
fn unusable_data_dir() {
    let env = Env::new();
    std::fs::write(&env.data, b"a file, not a directory").unwrap();
    for args in [
        vec!["init"],
        vec!["kms", "list-keys"],
        vec!["kms", "create-key"],
    ] {
        let line = env.run(&args).fails(11);
        assert!(line.contains(env.data.to_str().unwrap()), "{line}");
    }
    assert_eq!(
        std::fs::read(&env.data).unwrap(),
        b"a file, not a directory"
    );
}

#[test]
fn failing_mutations_leave_the_keystore_unchanged() {
    let (env, key, _) = populated();
    let second = env.create_key();
    env.describe("alias/aws/ebs");
    let before = env.keystore_bytes(DEFAULT_REGION);
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (
            vec![
                "kms",
                "create-alias",
                "--alias-name",
                "alias/k",
                "--target-key-id",
                &second,
            ],
            9,
        ),
        (
            vec![
                "kms",
                "create-alias",
                "--alias-name",
                "alias/aws/x",
                "--target-key-id",
                &second,
            ],
            // NotAuthorizedException, as AWS answers a reserved name.
            18,
        ),
        (
            vec![
                "kms",
                "update-alias",
                "--alias-name",
                "alias/none",
                "--target-key-id",
                &second,
            ],
            3,
        ),
        (vec!["kms", "delete-alias", "--alias-name", "alias/none"], 3),
        (
            vec![
                "kms",
                "schedule-key-deletion",
                "--key-id",
                &key,
                "--pending-window-days",
                "31",
            ],
            6,
        ),
        (
            vec![
                "kms",
                "enable-key-rotation",
                "--key-id",
                &key,
                "--rotation-period-in-days",
                "89",
            ],
            6,
        ),
        (vec!["kms", "cancel-key-deletion", "--key-id", &key], 4),
        // The managed key's policy gives the account only Describe*, Get* and List*.
        (vec!["kms", "disable-key", "--key-id", "alias/aws/ebs"], 18),
        (
            vec!["kms", "schedule-key-deletion", "--key-id", "alias/aws/ebs"],
            18,
        ),
        (
            vec!["kms", "disable-key-rotation", "--key-id", "alias/aws/ebs"],
            18,
        ),
        (vec!["kms", "create-key", "--tag", "aws:x=y"], 6),
    ];
    for (args, code) in cases {
        env.fail(&args, code);
        assert_eq!(
            env.keystore_bytes(DEFAULT_REGION),
            before,
            "{args:?} changed the keystore"
        );
    }
}

/// A failed ReEncrypt must not create the managed key as a side effect: the blob is
/// checked before anything is written.
#[test]
fn failing_re_encrypt_to_the_managed_alias_changes_nothing() {
    let (env, _, blob) = populated();
    let mut tampered = blob.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    for (b, ctx, code) in [
        (b64(&tampered), "c=1", 5),
        (b64(&blob), "c=2", 5),
        (b64(&blob[..20]), "c=1", 5),
    ] {
        env.fail(
            &[
                "kms",
                "re-encrypt",
                "--ciphertext-blob",
                &b,
                "--source-encryption-context",
                ctx,
                "--destination-key-id",
                "alias/aws/ebs",
            ],
            code,
        );
    }
}

/// `--query` is applied to the result, so a query naming a missing field is found out
/// only after the operation ran. A command that then fails must not have changed anything
/// (else a script that retries creates a second key); printing `null` and succeeding, as
/// the AWS CLI does, would be fine too.
#[test]
fn bad_query_on_a_mutation_does_not_half_succeed() {
    let env = Env::init();
    let key = env.create_key();
    for args in [
        vec!["kms", "create-key", "--query", "Nope"],
        vec![
            "kms",
            "rotate-key-on-demand",
            "--key-id",
            &key,
            "--query",
            "Nope",
        ],
        vec![
            "kms",
            "schedule-key-deletion",
            "--key-id",
            &key,
            "--query",
            "Nope",
        ],
    ] {
        let before = env.snapshot();
        let out = env.run(&args);
        if out.code != 0 {
            let code = out.code;
            out.fails(code);
            env.snapshot()
                .assert_unchanged_since(&before, &format!("{args:?}"));
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::init();
    for args in [
        vec!["kms"],
        vec!["kms", "no-such-command"],
        vec!["kms", "describe-key"],
        vec!["kms", "create-key", "--no-such-flag"],
        vec!["--output", "xml", "kms", "list-keys"],
        vec![
            "kms",
            "schedule-key-deletion",
            "--key-id",
            "x",
            "--pending-window-days",
            "-1",
        ],
    ] {
        env.run(&args).usage_error();
    }
    // --help and --version are not errors.
    assert!(env.ok(&["--help"]).contains("kms"));
    assert!(env.ok(&["--version"]).contains(env!("CARGO_PKG_VERSION")));
}

// ---- concurrency ------------------------------------------------------------------------

fn spawn(env: &Env, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_cryptvol"))
        .env_remove("CRYPTVOL_REGION")
        .env_remove("CRYPTVOL_DATA_DIR")
        .env_remove("CRYPTVOL_PASSPHRASE_FILE")
        .env_remove(SKEW_ENV)
        .arg("--data-dir")
        .arg(&env.data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cryptvol")
}

fn wait_json(c: std::process::Child) -> Value {
    let o = c.wait_with_output().expect("wait");
    assert!(
        o.status.success(),
        "a concurrent command failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    if o.stdout.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&o.stdout).expect("JSON")
    }
}

#[test]
fn concurrent_create_key_loses_nothing() {
    let env = Env::init();
    let children: Vec<_> = (0..8)
        .map(|i| {
            let d = format!("key {i}");
            spawn(&env, &["kms", "create-key", "--description", &d])
        })
        .collect();
    let mut made: Vec<String> = children
        .into_iter()
        .map(|c| str_field(&wait_json(c)["KeyMetadata"], "KeyId"))
        .collect();
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 8, "eight distinct keys");
    let mut listed: Vec<String> = env.json(&["kms", "list-keys"])["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| str_field(k, "KeyId"))
        .collect();
    listed.sort();
    assert_eq!(listed, made, "list-keys shows every key created");
    let mut descs: Vec<String> = made
        .iter()
        .map(|k| str_field(&env.describe(k), "Description"))
        .collect();
    descs.sort();
    let want: Vec<String> = (0..8).map(|i| format!("key {i}")).collect();
    assert_eq!(descs, want);
    // Every key works.
    for k in &made {
        let blob = env.encrypt(k, k.as_bytes(), None);
        assert_eq!(env.decrypt(&blob, None), k.as_bytes());
    }
    // No temp files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(env.region_dir(DEFAULT_REGION))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn concurrent_mixed_mutations_lose_nothing() {
    let env = Env::init();
    let key = env.create_key();
    let mut children = vec![];
    for _ in 0..4 {
        children.push(spawn(
            &env,
            &["kms", "rotate-key-on-demand", "--key-id", &key],
        ));
    }
    for i in 0..4 {
        let name = format!("alias/c{i}");
        children.push(spawn(
            &env,
            &[
                "kms",
                "create-alias",
                "--alias-name",
                &name,
                "--target-key-id",
                &key,
            ],
        ));
    }
    for c in children {
        wait_json(c);
    }
    let rots = env.json(&["kms", "list-key-rotations", "--key-id", &key]);
    assert_eq!(rots["Rotations"].as_array().unwrap().len(), 4, "{rots:#}");
    let aliases = env.json(&["kms", "list-aliases", "--key-id", &key]);
    assert_eq!(
        aliases["Aliases"].as_array().unwrap().len(),
        4,
        "{aliases:#}"
    );
    let blob = env.encrypt(&key, b"v5", None);
    assert_eq!(env.inspect_blob(&blob)["KeyVersion"], 5);
}

// ---- secrets ----------------------------------------------------------------------------

/// Walks a JSON value and fails on any string that looks like key material (base64 of
/// 16 bytes or more).
fn assert_no_material(what: &str, v: &Value) {
    match v {
        Value::String(s) => {
            // 64 lowercase hex digits is a KeyMaterialId (AWS's form of it, random per key
            // version: docs/formats.md), which hex digits would otherwise pass as base64.
            let material_id =
                s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if s.len() >= 22
                && !material_id
                && let Ok(bytes) = base64_decode(s)
            {
                assert!(bytes.len() < 16, "{what}: {s:?} looks like key material");
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_no_material(what, x)),
        Value::Object(m) => m.values().for_each(|x| assert_no_material(what, x)),
        _ => {}
    }
}

fn base64_decode(s: &str) -> Result<Vec<u8>, ()> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| ())
}

#[test]
fn secrets_never_leak() {
    let (env, key, blob) = populated();
    let root = std::fs::read(env.region_dir(DEFAULT_REGION).join("root.key")).unwrap();
    let v = env.json(&[
        "kms",
        "generate-data-key",
        "--key-id",
        &key,
        "--number-of-bytes",
        "32",
        "--encryption-context",
        "c=1",
    ]);
    let data_key = unb64(&str_field(&v, "Plaintext"));
    let dk_blob = unb64(&str_field(&v, "CiphertextBlob"));
    // From here on every command's stderr is checked for the data key too.
    env.add_secret(&data_key);
    env.add_secret(b"some plaintext");
    env.ok(&["kms", "rotate-key-on-demand", "--key-id", &key]);

    // Failing commands that had the data key or plaintext in hand.
    let dkb = b64(&dk_blob);
    let mut tampered = dk_blob.clone();
    let n = tampered.len();
    tampered[n - 20] ^= 4;
    let other = env.create_key();
    for (args, code) in [
        (
            vec![
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &dkb,
                "--encryption-context",
                "c=2",
            ],
            5,
        ),
        (
            vec![
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &dkb,
                "--encryption-context",
                "c=1",
                "--key-id",
                &other,
            ],
            5,
        ),
        (
            vec![
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &b64(&tampered),
                "--encryption-context",
                "c=1",
            ],
            5,
        ),
        (
            vec![
                "kms",
                "re-encrypt",
                "--ciphertext-blob",
                &dkb,
                "--source-encryption-context",
                "c=1",
                "--destination-key-id",
                "alias/none",
            ],
            3,
        ),
        (
            vec![
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &dkb,
                "--encryption-context",
                "c=1",
                "--plaintext-out",
                "/no/such/dir/out",
            ],
            11,
        ),
    ] {
        let line = env.fail(&args, code);
        for s in [&data_key[..], &root] {
            assert_no_secret(&line, line.as_bytes(), s);
        }
    }
    env.ok(&["kms", "disable-key", "--key-id", &key]);
    env.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b64(&blob),
            "--encryption-context",
            "c=1",
        ],
        4,
    );
    env.ok(&["kms", "enable-key", "--key-id", &key]);

    // inspect keystore: structure, no material.
    let out = env.ok(&["inspect", "keystore"]);
    for s in [&root[..], &data_key[..], b"some plaintext"] {
        assert_no_secret("inspect keystore", out.as_bytes(), s);
    }
    let ks: Value = serde_json::from_str(&out).unwrap();
    assert_no_material("inspect keystore", &ks);
    let versions = ks["body"]["keys"][&key]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{ks:#}");
    assert!(ks["body"]["keys"].get(&other).is_some());
    assert_eq!(ks["body"]["aliases"]["alias/k"]["target"], key.as_str());
    // inspect blob: header only.
    let info = env.inspect_blob(&dk_blob);
    assert_no_material("inspect blob", &info);
    assert_eq!(info["PlaintextLength"], 32);

    // On disk: nothing in the clear.
    for f in ["keystore.cvks", "region.json"] {
        let bytes = std::fs::read(env.region_dir(DEFAULT_REGION).join(f)).unwrap();
        for s in [&root[..], &data_key[..], b"some plaintext"] {
            assert_no_secret(f, &bytes, s);
        }
    }
}

/// `kms serve --tls-cert/--tls-key` with a file it cannot use: one line naming the flag and
/// the file, before anything listens. A missing file is an I/O error (11); a file that is
/// not PEM of the right kind, or whose PEM is broken, is invalid input (6).
#[test]
fn unusable_tls_files_are_named() {
    let env = Env::init();
    // PEM framing is all that is read before the key: the DER inside need not be valid.
    let cert = env.file(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let key = env.file(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
    let junk = env.file(b"not pem at all\n");
    let cut_cert = env.file(b"-----BEGIN CERTIFICATE-----\nAAAA\n");
    let cut_key = env.file(b"-----BEGIN PRIVATE KEY-----\nAAAA\n");
    let bad_base64 = env.file(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    let missing = env.path("missing.pem");
    let serve = |cert: &std::path::Path, key: &std::path::Path, code: i32| {
        let (c, k) = (cert.display().to_string(), key.display().to_string());
        let args = ["kms", "serve", "--listen", "127.0.0.1:0"];
        env.fail(
            &[&args[..], &["--tls-cert", &c, "--tls-key", &k]].concat(),
            code,
        )
    };
    let p = |p: &std::path::Path| p.display().to_string();

    let line = serve(&missing, &key, 11);
    assert!(
        line.contains(&format!("cannot read {}", p(&missing))),
        "{line}"
    );
    let line = serve(&cert, &missing, 11);
    assert!(
        line.contains(&format!("cannot read {}", p(&missing))),
        "{line}"
    );

    // A file with no certificate, a key given as the certificate, broken PEM.
    for (file, why) in [
        (&junk, " holds no PEM certificate"),
        (&key, " holds no PEM certificate"),
        (&cut_cert, ": section end \"CERTIFICATE\" missing"),
        (&bad_base64, ": "),
    ] {
        let line = serve(file, &key, 6);
        let want = format!("invalid --tls-cert: {}{why}", p(file));
        assert!(line.contains(&want), "want {want:?} in {line}");
    }
    for (file, why) in [
        (&junk, " holds no PEM private key"),
        (&cert, " holds no PEM private key"),
        (&cut_key, ": section end \"PRIVATE KEY\" missing"),
    ] {
        let line = serve(&cert, file, 6);
        let want = format!("invalid --tls-key: {}{why}", p(file));
        assert!(line.contains(&want), "want {want:?} in {line}");
    }
}
