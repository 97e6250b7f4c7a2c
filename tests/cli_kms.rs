//! Every `cryptvol kms` command, run as a process: key lifecycle, cryptography, data keys,
//! rotation, aliases, managed keys, output formats.

mod common;

use common::*;
use serde_json::Value;

fn ids_of(list_keys: &Value) -> Vec<String> {
    list_keys["Keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no Keys: {list_keys:#}"))
        .iter()
        .map(|k| str_field(k, "KeyId"))
        .collect()
}

fn alias_names(v: &Value) -> Vec<String> {
    v["Aliases"]
        .as_array()
        .unwrap_or_else(|| panic!("no Aliases: {v:#}"))
        .iter()
        .map(|a| str_field(a, "AliasName"))
        .collect()
}

fn rotations(env: &Env, key: &str) -> Vec<Value> {
    env.json(&["kms", "list-key-rotations", "--key-id", key])["Rotations"]
        .as_array()
        .expect("Rotations")
        .clone()
}

#[track_caller]
fn assert_near(what: &str, actual: i64, expected: i64) {
    assert!(
        (actual - expected).abs() <= 120,
        "{what}: {actual} is not within 2 minutes of {expected}"
    );
}

fn account(env: &Env) -> String {
    str_field(&env.json(&["init"]), "AccountId")
}

// ---- create / describe / list ---------------------------------------------------------

#[test]
fn create_key_and_describe_it_by_every_name() {
    let env = Env::init();
    let acct = account(&env);
    let t0 = now();
    let meta = env.create_key_meta(&[
        "--description",
        "volume keys for db-1",
        "--tag",
        "team=storage",
        "--tag",
        "TagKey=env,TagValue=prod",
    ]);
    let id = str_field(&meta, "KeyId");
    // Canonical lowercase hyphenated UUID.
    assert_eq!(id.len(), 36, "{id}");
    assert!(
        id.chars()
            .enumerate()
            .all(|(i, c)| if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
            }),
        "{id}"
    );
    let arn = format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:key/{id}");
    assert_eq!(str_field(&meta, "Arn"), arn);
    assert_eq!(str_field(&meta, "AWSAccountId"), acct);
    assert_eq!(meta["Description"], "volume keys for db-1");
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["Enabled"], true);
    assert_eq!(meta["KeyManager"], "CUSTOMER");
    assert_eq!(meta["KeyUsage"], "ENCRYPT_DECRYPT");
    assert_eq!(meta["KeySpec"], "SYMMETRIC_DEFAULT");
    assert_eq!(meta["Origin"], "AWS_KMS");
    assert!(meta.get("DeletionDate").is_none(), "{meta:#}");
    assert_near("CreationDate", unix_time(&meta["CreationDate"]), t0);

    // Tags are kept (describe-key does not show them, as AWS; the keystore dump does).
    let ks = env.json(&["inspect", "keystore"]);
    let tags = &ks["body"]["keys"][&id]["tags"];
    assert_eq!(tags["team"], "storage", "{ks:#}");
    assert_eq!(tags["env"], "prod", "{ks:#}");

    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/db-1",
        "--target-key-id",
        &id,
    ]);
    let alias_arn = format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:alias/db-1");
    for name in [id.as_str(), &arn, "alias/db-1", &alias_arn] {
        assert_eq!(env.describe(name), meta, "describe-key --key-id {name}");
    }

    let other = env.create_key();
    assert_ne!(other, id, "fresh ids");
    let list = env.json(&["kms", "list-keys"]);
    let mut ids = ids_of(&list);
    ids.sort();
    let mut want = vec![id.clone(), other.clone()];
    want.sort();
    assert_eq!(ids, want);
    for k in list["Keys"].as_array().unwrap() {
        assert_eq!(
            str_field(k, "KeyArn"),
            format!(
                "arn:aws:kms:{DEFAULT_REGION}:{acct}:key/{}",
                str_field(k, "KeyId")
            )
        );
    }
    assert_eq!(list["Truncated"], false);
}

#[test]
fn create_key_rejects_bad_tags_and_descriptions() {
    let env = Env::init();
    env.fail(&["kms", "create-key", "--tag", "novalue"], 6);
    env.fail(&["kms", "create-key", "--tag", "aws:owner=me"], 6);
    env.fail(&["kms", "create-key", "--tag", "=v"], 6);
    let long = "d".repeat(8193);
    env.fail(&["kms", "create-key", "--description", &long], 6);
    assert!(ids_of(&env.json(&["kms", "list-keys"])).is_empty());
    let ok = "d".repeat(8192);
    env.create_key_meta(&["--description", &ok]);
}

// ---- enable / disable -----------------------------------------------------------------

#[test]
fn disabled_key_refuses_every_cryptographic_operation() {
    let env = Env::init();
    let key = env.create_key();
    let other = env.create_key();
    let blob = env.encrypt(&key, b"before disable", None);
    let blob_other = env.encrypt(&other, b"other", None);
    let pt = env.fileb(b"x");
    let b = b64(&blob);
    let bo = b64(&blob_other);

    env.ok(&["kms", "disable-key", "--key-id", &key]);
    let meta = env.describe(&key);
    assert_eq!(meta["KeyState"], "Disabled");
    assert_eq!(meta["Enabled"], false);

    for args in [
        vec!["kms", "encrypt", "--key-id", &key, "--plaintext", &pt],
        vec!["kms", "decrypt", "--ciphertext-blob", &b],
        vec![
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--number-of-bytes",
            "32",
        ],
        vec![
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--number-of-bytes",
            "32",
        ],
        vec![
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &b,
            "--destination-key-id",
            &other,
        ],
        vec![
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &bo,
            "--destination-key-id",
            &key,
        ],
        vec!["kms", "rotate-key-on-demand", "--key-id", &key],
    ] {
        let line = env.fail(&args, 4);
        assert!(line.contains("DisabledException"), "{line}");
        assert!(line.contains(&key), "the error names the key: {line}");
    }
    // Disabling twice is fine; metadata reads still work.
    env.ok(&["kms", "disable-key", "--key-id", &key]);
    env.ok(&["kms", "enable-key", "--key-id", &key]);
    let meta = env.describe(&key);
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["Enabled"], true);
    assert_eq!(env.decrypt(&blob, None), b"before disable");
}

// ---- deletion -------------------------------------------------------------------------

#[test]
fn schedule_and_cancel_key_deletion() {
    let env = Env::init();
    let key = env.create_key();
    let blob = env.encrypt(&key, b"pending", None);
    let b = b64(&blob);

    for bad in ["6", "31", "0"] {
        let line = env.fail(
            &[
                "kms",
                "schedule-key-deletion",
                "--key-id",
                &key,
                "--pending-window-days",
                bad,
            ],
            6,
        );
        assert!(line.contains("ValidationException"), "{line}");
    }
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");

    let t0 = now();
    let r = env.json(&["kms", "schedule-key-deletion", "--key-id", &key]);
    assert_eq!(r["KeyState"], "PendingDeletion");
    assert_eq!(r["PendingWindowInDays"], 30);
    assert_eq!(
        str_field(&r, "KeyId"),
        str_field(&env.describe(&key), "Arn")
    );
    assert_near("DeletionDate", unix_time(&r["DeletionDate"]), t0 + 30 * DAY);
    let meta = env.describe(&key);
    assert_eq!(meta["KeyState"], "PendingDeletion");
    assert_eq!(meta["Enabled"], false);
    assert_eq!(meta["DeletionDate"], r["DeletionDate"]);
    assert_eq!(meta["PendingDeletionWindowInDays"], 30);

    let pt = env.fileb(b"x");
    for args in [
        vec!["kms", "encrypt", "--key-id", &key, "--plaintext", &pt],
        vec!["kms", "decrypt", "--ciphertext-blob", &b],
        vec![
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--number-of-bytes",
            "16",
        ],
        vec![
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &b,
            "--destination-key-id",
            &key,
        ],
        vec!["kms", "enable-key", "--key-id", &key],
        vec!["kms", "disable-key", "--key-id", &key],
        vec!["kms", "schedule-key-deletion", "--key-id", &key],
        vec!["kms", "enable-key-rotation", "--key-id", &key],
        vec![
            "kms",
            "create-alias",
            "--alias-name",
            "alias/doomed",
            "--target-key-id",
            &key,
        ],
    ] {
        let line = env.fail(&args, 4);
        assert!(line.contains("KMSInvalidStateException"), "{line}");
    }

    let c = env.json(&["kms", "cancel-key-deletion", "--key-id", &key]);
    assert_eq!(str_field(&c, "KeyId"), str_field(&meta, "Arn"));
    let meta = env.describe(&key);
    assert_eq!(
        meta["KeyState"], "Disabled",
        "cancelled keys come back disabled"
    );
    assert!(meta.get("DeletionDate").is_none(), "{meta:#}");
    assert!(
        meta.get("PendingDeletionWindowInDays").is_none(),
        "{meta:#}"
    );
    // Cancelling a key that is not pending deletion is an invalid state.
    let line = env.fail(&["kms", "cancel-key-deletion", "--key-id", &key], 4);
    assert!(line.contains("KMSInvalidStateException"), "{line}");
    env.ok(&["kms", "enable-key", "--key-id", &key]);
    assert_eq!(env.decrypt(&blob, None), b"pending");

    // Window 7 works, and is what the response and metadata say.
    let t0 = now();
    let r = env.json(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &key,
        "--pending-window-days",
        "7",
    ]);
    assert_eq!(r["PendingWindowInDays"], 7);
    assert_near("DeletionDate", unix_time(&r["DeletionDate"]), t0 + 7 * DAY);
    assert_eq!(env.describe(&key)["PendingDeletionWindowInDays"], 7);
}

#[test]
fn key_is_destroyed_after_the_window() {
    let env = Env::init();
    let key = env.create_key();
    let keep = env.create_key();
    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/gone",
        "--target-key-id",
        &key,
    ]);
    let blob = env.encrypt(&key, b"doomed data", Some("a=1"));
    let kept_blob = env.encrypt(&keep, b"kept data", None);
    env.json(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &key,
        "--pending-window-days",
        "7",
    ]);

    // One day before the date: still pending, still refused, not destroyed.
    let six = skew_days(6);
    let m = env.json_env(
        &["kms", "describe-key", "--key-id", &key],
        &[(SKEW_ENV, &six)],
    );
    assert_eq!(m["KeyMetadata"]["KeyState"], "PendingDeletion");
    let b = env.fileb(&blob);
    env.fail_env(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b,
            "--encryption-context",
            "a=1",
        ],
        &[(SKEW_ENV, &six)],
        4,
    );

    // After the date: any command destroys it.
    let eight = skew_days(8);
    let list = env.json_env(&["kms", "list-keys"], &[(SKEW_ENV, &eight)]);
    assert_eq!(ids_of(&list), vec![keep.clone()]);

    // The deletion is on disk: it holds without the skewed clock too.
    for envs in [vec![], vec![(SKEW_ENV, eight.as_str())]] {
        let line = env.fail_env(&["kms", "describe-key", "--key-id", &key], &envs, 14);
        assert!(line.contains("deleted"), "{line}");
        let line = env.fail_env(
            &[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &b,
                "--encryption-context",
                "a=1",
            ],
            &envs,
            14,
        );
        assert!(line.contains("deleted"), "{line}");
        assert!(line.contains(&key), "{line}");
        // Its alias went with it.
        env.fail_env(&["kms", "describe-key", "--key-id", "alias/gone"], &envs, 3);
    }
    assert!(alias_names(&env.json(&["kms", "list-aliases"])).is_empty());
    let pt = env.fileb(b"x");
    env.fail(
        &["kms", "encrypt", "--key-id", &key, "--plaintext", &pt],
        14,
    );
    env.fail(&["kms", "cancel-key-deletion", "--key-id", &key], 14);
    // Its material is gone from the keystore.
    let ks = env.json(&["inspect", "keystore"]);
    assert!(ks["body"]["keys"].get(&key).is_none(), "{ks:#}");
    // Other keys are untouched.
    assert_eq!(env.decrypt(&kept_blob, None), b"kept data");
}

// ---- encrypt / decrypt ----------------------------------------------------------------

#[test]
fn encrypt_decrypt_inputs_and_contexts() {
    let env = Env::init();
    let key = env.create_key();
    let arn = str_field(&env.describe(&key), "Arn");
    let data = pattern(300, 7);

    // fileb:// input, k=v context, --ciphertext-out.
    let out = env.path("blob.bin");
    let pt = env.fileb(&data);
    let r = env.json(&[
        "kms",
        "encrypt",
        "--key-id",
        &key,
        "--plaintext",
        &pt,
        "--encryption-context",
        "purpose=test,volume=vol-1",
        "--ciphertext-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(str_field(&r, "KeyId"), arn);
    assert_eq!(r["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    let blob = unb64(&str_field(&r, "CiphertextBlob"));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        blob,
        "--ciphertext-out holds the blob"
    );
    assert_eq!(mode(&out), 0o600);
    assert!(
        !blob.windows(16).any(|w| w == &data[..16]),
        "the plaintext is not in the blob"
    );
    let info = env.inspect_blob(&blob);
    assert_eq!(info["KeyId"], key.as_str());
    assert_eq!(info["KeyVersion"], 1);
    assert_eq!(info["PlaintextLength"], 300);
    assert_eq!(info["BlobLength"], blob.len());

    // Base64 input gives the same plaintext back; two encryptions differ.
    let r2 = env.json(&[
        "kms",
        "encrypt",
        "--key-id",
        &key,
        "--plaintext",
        &b64(&data),
        "--encryption-context",
        r#"{"volume":"vol-1","purpose":"test"}"#,
    ]);
    let blob2 = unb64(&str_field(&r2, "CiphertextBlob"));
    assert_ne!(blob, blob2, "random nonces");

    // Context order and form do not matter.
    for (b, ctx) in [
        (&blob, "volume=vol-1,purpose=test"),
        (&blob, r#"{"purpose":"test","volume":"vol-1"}"#),
        (&blob2, "purpose=test,volume=vol-1"),
        (&blob2, r#" { "volume" : "vol-1", "purpose" : "test" } "#),
    ] {
        let d = env.decrypt_json(b, Some(ctx));
        assert_eq!(unb64(&str_field(&d, "Plaintext")), data, "context {ctx}");
        assert_eq!(str_field(&d, "KeyId"), arn);
        assert_eq!(d["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    }
    // Base64 blob input.
    let d = env.json(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &b64(&blob),
        "--encryption-context",
        "purpose=test,volume=vol-1",
    ]);
    assert_eq!(unb64(&str_field(&d, "Plaintext")), data);

    // Any other context fails.
    let bf = env.fileb(&blob);
    for ctx in [
        Some("purpose=test"),
        Some("purpose=test,volume=vol-2"),
        Some("purpose=test,volume=vol-1,extra=1"),
        Some("Purpose=test,volume=vol-1"),
        Some(r#"{"purpose":"test","volume":"vol-1 "}"#),
        None,
    ] {
        let mut args = vec!["kms", "decrypt", "--ciphertext-blob", &bf];
        if let Some(c) = ctx {
            args.extend(["--encryption-context", c]);
        }
        let line = env.fail(&args, 5);
        assert!(
            line.contains("InvalidCiphertextException"),
            "{ctx:?}: {line}"
        );
    }
    // A blob made without context needs none.
    let plain = env.encrypt(&key, b"no context", None);
    assert_eq!(env.decrypt(&plain, None), b"no context");
    env.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b64(&plain),
            "--encryption-context",
            "a=b",
        ],
        5,
    );
}

#[test]
fn malformed_encryption_contexts_are_refused() {
    let env = Env::init();
    let key = env.create_key();
    let pt = env.fileb(b"x");
    for ctx in [
        "novalue",
        r#"{"a":1}"#,
        "{not json",
        "a=1,a=2",
        "=v",
        r#"["a"]"#,
    ] {
        let line = env.fail(
            &[
                "kms",
                "encrypt",
                "--key-id",
                &key,
                "--plaintext",
                &pt,
                "--encryption-context",
                ctx,
            ],
            6,
        );
        assert!(line.contains("--encryption-context"), "{ctx}: {line}");
    }
}

#[test]
fn plaintext_out_writes_a_private_file_and_keeps_stdout_clean() {
    let env = Env::init();
    let key = env.create_key();
    let data = pattern(64, 99);
    env.add_secret(&data);
    let blob = env.encrypt(&key, &data, None);
    let out = env.path("plain.out");
    // A pre-existing world-readable file is replaced by a private one.
    std::fs::write(&out, b"old").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let b = env.fileb(&blob);
    let stdout = env.ok(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &b,
        "--plaintext-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    assert_eq!(mode(&out), 0o600);
    assert_no_secret("decrypt --plaintext-out stdout", stdout.as_bytes(), &data);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.get("Plaintext").is_none(), "{v:#}");
    assert_eq!(
        str_field(&v, "KeyId"),
        str_field(&env.describe(&key), "Arn")
    );

    // Same for generate-data-key.
    let dk = env.path("dk.out");
    let ct = env.path("dk.blob");
    let stdout = env.ok(&[
        "kms",
        "generate-data-key",
        "--key-id",
        &key,
        "--number-of-bytes",
        "32",
        "--plaintext-out",
        dk.to_str().unwrap(),
        "--ciphertext-out",
        ct.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v.get("Plaintext").is_none(), "{v:#}");
    let dk_bytes = std::fs::read(&dk).unwrap();
    env.add_secret(&dk_bytes);
    assert_eq!(dk_bytes.len(), 32);
    assert_eq!(mode(&dk), 0o600);
    assert_no_secret(
        "generate-data-key --plaintext-out stdout",
        stdout.as_bytes(),
        &dk_bytes,
    );
    let blob = std::fs::read(&ct).unwrap();
    assert_eq!(blob, unb64(&str_field(&v, "CiphertextBlob")));
    let out2 = env.path("dk.check");
    env.ok(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &fileb(&ct),
        "--plaintext-out",
        out2.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out2).unwrap(), dk_bytes);

    // An unwritable output path fails cleanly (exit 11) and writes nothing.
    let bad = env.scratch().join("no/such/dir/out");
    let line = env.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b,
            "--plaintext-out",
            bad.to_str().unwrap(),
        ],
        11,
    );
    assert!(line.contains("no/such/dir"), "{line}");
}

#[test]
fn encrypt_size_limits() {
    let env = Env::init();
    let key = env.create_key();
    let max = pattern(4096, 1);
    let blob = env.encrypt(&key, &max, None);
    assert_eq!(env.decrypt(&blob, None), max);

    let over = env.fileb(&pattern(4097, 1));
    let line = env.fail(
        &["kms", "encrypt", "--key-id", &key, "--plaintext", &over],
        6,
    );
    assert!(line.contains("4096"), "{line}");
    let empty = env.fileb(b"");
    env.fail(
        &["kms", "encrypt", "--key-id", &key, "--plaintext", &empty],
        6,
    );
    env.fail(&["kms", "encrypt", "--key-id", &key, "--plaintext", ""], 6);
    let one = env.encrypt(&key, b"1", None);
    assert_eq!(env.decrypt(&one, None), b"1");
    // Binary inputs: file:// is refused (text), and non-base64 is refused.
    let path = env.file(b"abc");
    env.fail(
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &format!("file://{}", path.display()),
        ],
        6,
    );
    env.fail(
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            "not base64!",
        ],
        6,
    );
}

#[test]
fn decrypt_with_key_id_checks_the_key() {
    let env = Env::init();
    let a = env.create_key();
    let b = env.create_key();
    let arn_a = str_field(&env.describe(&a), "Arn");
    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/a",
        "--target-key-id",
        &a,
    ]);
    let blob = env.encrypt(&a, b"for a", None);
    let bf = env.fileb(&blob);
    for name in [a.as_str(), &arn_a, "alias/a"] {
        let d = env.json(&["kms", "decrypt", "--ciphertext-blob", &bf, "--key-id", name]);
        assert_eq!(unb64(&str_field(&d, "Plaintext")), b"for a");
    }
    let line = env.fail(
        &["kms", "decrypt", "--ciphertext-blob", &bf, "--key-id", &b],
        5,
    );
    assert!(line.contains("IncorrectKeyException"), "{line}");
    assert!(line.contains(&a) && line.contains(&b), "{line}");
}

// ---- re-encrypt -----------------------------------------------------------------------

#[test]
fn re_encrypt_to_another_key_and_after_rotation() {
    let env = Env::init();
    let a = env.create_key();
    let b = env.create_key();
    let arn_a = str_field(&env.describe(&a), "Arn");
    let arn_b = str_field(&env.describe(&b), "Arn");
    let data = pattern(100, 3);
    let blob = env.encrypt(&a, &data, Some("src=1"));
    let bf = env.fileb(&blob);

    let out = env.path("re.blob");
    let r = env.json(&[
        "kms",
        "re-encrypt",
        "--ciphertext-blob",
        &bf,
        "--source-encryption-context",
        "src=1",
        "--destination-key-id",
        &b,
        "--destination-encryption-context",
        "dst=2",
        "--ciphertext-out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(str_field(&r, "SourceKeyId"), arn_a);
    assert_eq!(str_field(&r, "KeyId"), arn_b);
    let nb = unb64(&str_field(&r, "CiphertextBlob"));
    assert_eq!(std::fs::read(&out).unwrap(), nb);
    assert_eq!(env.inspect_blob(&nb)["KeyId"], b.as_str());
    let d = env.decrypt_json(&nb, Some("dst=2"));
    assert_eq!(unb64(&str_field(&d, "Plaintext")), data);
    assert_eq!(str_field(&d, "KeyId"), arn_b);
    env.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &fileb(&out),
            "--encryption-context",
            "src=1",
        ],
        5,
    );
    env.fail(&["kms", "decrypt", "--ciphertext-blob", &fileb(&out)], 5);

    // Wrong source context or wrong --source-key-id: refused.
    env.fail(
        &[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &bf,
            "--destination-key-id",
            &b,
        ],
        5,
    );
    let line = env.fail(
        &[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &bf,
            "--source-encryption-context",
            "src=1",
            "--source-key-id",
            &b,
            "--destination-key-id",
            &b,
        ],
        5,
    );
    assert!(line.contains("IncorrectKeyException"), "{line}");
    env.fail(
        &[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &bf,
            "--source-encryption-context",
            "src=1",
            "--destination-key-id",
            "alias/none",
        ],
        3,
    );

    // Same key after rotation: moves to the current version.
    env.json(&["kms", "rotate-key-on-demand", "--key-id", &a]);
    assert_eq!(env.inspect_blob(&blob)["KeyVersion"], 1);
    let r = env.json(&[
        "kms",
        "re-encrypt",
        "--ciphertext-blob",
        &bf,
        "--source-encryption-context",
        "src=1",
        "--source-key-id",
        &a,
        "--destination-key-id",
        &arn_a,
        "--destination-encryption-context",
        "src=1",
    ]);
    assert_eq!(str_field(&r, "SourceKeyId"), arn_a);
    assert_eq!(str_field(&r, "KeyId"), arn_a);
    let moved = unb64(&str_field(&r, "CiphertextBlob"));
    let info = env.inspect_blob(&moved);
    assert_eq!(info["KeyVersion"], 2);
    assert_eq!(info["KeyId"], a.as_str());
    assert_eq!(env.decrypt(&moved, Some("src=1")), data);
    // The old blob still decrypts.
    assert_eq!(env.decrypt(&blob, Some("src=1")), data);
}

// ---- data keys ------------------------------------------------------------------------

#[test]
fn generate_data_key_sizes_and_round_trip() {
    let env = Env::init();
    let key = env.create_key();
    let arn = str_field(&env.describe(&key), "Arn");
    let mut seen = vec![];
    for (flags, len) in [
        (vec!["--number-of-bytes", "32"], 32),
        (vec!["--number-of-bytes", "1"], 1),
        (vec!["--number-of-bytes", "64"], 64),
        (vec!["--number-of-bytes", "1024"], 1024),
    ] {
        let mut args = vec![
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--encryption-context",
            "vol=v1",
        ];
        args.extend(flags.iter().copied());
        let out = env.run(&args);
        if out.code != 0 {
            panic!("generate-data-key {flags:?} failed: {}", out.stderr);
        }
        let v = out.ok().json();
        assert_eq!(str_field(&v, "KeyId"), arn);
        let plain = unb64(&str_field(&v, "Plaintext"));
        assert_eq!(plain.len(), len, "{flags:?}");
        let blob = unb64(&str_field(&v, "CiphertextBlob"));
        assert_eq!(env.inspect_blob(&blob)["PlaintextLength"], len);
        if len >= 16 {
            env.add_secret(&plain);
        }
        assert_eq!(env.decrypt(&blob, Some("vol=v1")), plain, "{flags:?}");
        env.fail(&["kms", "decrypt", "--ciphertext-blob", &b64(&blob)], 5);
        if len >= 16 {
            assert!(!seen.contains(&plain), "data keys repeat");
            seen.push(plain);
        }
    }

    for n in ["0", "1025"] {
        let line = env.fail(
            &[
                "kms",
                "generate-data-key",
                "--key-id",
                &key,
                "--number-of-bytes",
                n,
            ],
            6,
        );
        assert!(line.contains("ValidationException"), "{line}");
    }
    env.run(&[
        "kms",
        "generate-data-key",
        "--key-id",
        &key,
        "--key-spec",
        "AES_128",
        "--number-of-bytes",
        "16",
    ])
    .usage_error();
    env.run(&[
        "kms",
        "generate-data-key",
        "--key-id",
        &key,
        "--key-spec",
        "AES_512",
    ])
    .usage_error();
    // Neither flag: refused.
    let out = env.run(&["kms", "generate-data-key", "--key-id", &key]);
    assert_ne!(out.code, 0, "a data key needs a size");
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn generate_data_key_without_plaintext() {
    let env = Env::init();
    let key = env.create_key();
    let arn = str_field(&env.describe(&key), "Arn");
    let v = env.json(&[
        "kms",
        "generate-data-key-without-plaintext",
        "--key-id",
        &key,
        "--number-of-bytes",
        "32",
        "--encryption-context",
        "k=v",
    ]);
    assert!(v.get("Plaintext").is_none(), "{v:#}");
    assert_eq!(str_field(&v, "KeyId"), arn);
    let blob = unb64(&str_field(&v, "CiphertextBlob"));
    let plain = env.decrypt(&blob, Some("k=v"));
    assert_eq!(plain.len(), 32);
    let v = env.json(&[
        "kms",
        "generate-data-key-without-plaintext",
        "--key-id",
        &key,
        "--number-of-bytes",
        "48",
    ]);
    assert!(v.get("Plaintext").is_none(), "{v:#}");
    let blob = unb64(&str_field(&v, "CiphertextBlob"));
    assert_eq!(env.decrypt(&blob, None).len(), 48);
    env.fail(
        &[
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--number-of-bytes",
            "1025",
        ],
        6,
    );
}

/// `--key-spec` takes AWS's names, AES_256 and AES_128, as `aws kms` does.
#[test]
fn key_spec_takes_the_aws_names() {
    let env = Env::init();
    let key = env.create_key();
    for (spec, len) in [("AES_256", 32), ("AES_128", 16)] {
        let out = env.run(&[
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            spec,
        ]);
        assert_eq!(
            out.code, 0,
            "--key-spec {spec} must be accepted (the AWS CLI spelling): {}",
            out.stderr
        );
        let v = out.ok().json();
        let plain = unb64(&str_field(&v, "Plaintext"));
        env.add_secret(&plain);
        assert_eq!(plain.len(), len, "{spec}");
        let blob = unb64(&str_field(&v, "CiphertextBlob"));
        assert_eq!(env.decrypt(&blob, None), plain);

        let v = env.json(&[
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--key-spec",
            spec,
        ]);
        assert!(v.get("Plaintext").is_none(), "{v:#}");
        let blob = unb64(&str_field(&v, "CiphertextBlob"));
        assert_eq!(env.decrypt(&blob, None).len(), len, "{spec}");
    }
}

// ---- rotation -------------------------------------------------------------------------

#[test]
fn rotation_settings_and_on_demand_rotation() {
    let env = Env::init();
    let key = env.create_key();
    let arn = str_field(&env.describe(&key), "Arn");

    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(s["KeyRotationEnabled"], false, "{s:#}");
    assert_eq!(str_field(&s, "KeyId"), arn);
    assert!(rotations(&env, &key).is_empty());

    for bad in ["89", "2561", "0"] {
        let line = env.fail(
            &[
                "kms",
                "enable-key-rotation",
                "--key-id",
                &key,
                "--rotation-period-in-days",
                bad,
            ],
            6,
        );
        assert!(line.contains("ValidationException"), "{line}");
    }
    let t0 = now();
    env.ok(&["kms", "enable-key-rotation", "--key-id", &key]);
    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(s["KeyRotationEnabled"], true);
    assert_eq!(s["RotationPeriodInDays"], 365);
    assert_near(
        "NextRotationDate",
        unix_time(&s["NextRotationDate"]),
        t0 + 365 * DAY,
    );

    env.ok(&[
        "kms",
        "enable-key-rotation",
        "--key-id",
        &key,
        "--rotation-period-in-days",
        "90",
    ]);
    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(s["RotationPeriodInDays"], 90);
    assert_near(
        "NextRotationDate",
        unix_time(&s["NextRotationDate"]),
        t0 + 90 * DAY,
    );
    env.ok(&[
        "kms",
        "enable-key-rotation",
        "--key-id",
        &key,
        "--rotation-period-in-days",
        "2560",
    ]);
    env.ok(&[
        "kms",
        "enable-key-rotation",
        "--key-id",
        &key,
        "--rotation-period-in-days",
        "90",
    ]);
    let next =
        env.json(&["kms", "get-key-rotation-status", "--key-id", &key])["NextRotationDate"].clone();

    // On-demand rotation.
    let old_blob = env.encrypt(&key, b"v1 data", None);
    let r = env.json(&["kms", "rotate-key-on-demand", "--key-id", &key]);
    assert_eq!(str_field(&r, "KeyId"), arn);
    let rots = rotations(&env, &key);
    assert_eq!(rots.len(), 1, "{rots:#?}");
    assert_eq!(rots[0]["RotationType"], "ON_DEMAND");
    assert!(str_field(&r, "KeyId").ends_with(&str_field(&rots[0], "KeyId")));
    assert_near("RotationDate", unix_time(&rots[0]["RotationDate"]), now());
    // The automatic schedule is unchanged by an on-demand rotation.
    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(s["NextRotationDate"], next);

    let new_blob = env.encrypt(&key, b"v2 data", None);
    assert_eq!(env.inspect_blob(&old_blob)["KeyVersion"], 1);
    assert_eq!(env.inspect_blob(&new_blob)["KeyVersion"], 2);
    assert_eq!(env.decrypt(&old_blob, None), b"v1 data");
    assert_eq!(env.decrypt(&new_blob, None), b"v2 data");
    let moved = env.json(&[
        "kms",
        "re-encrypt",
        "--ciphertext-blob",
        &b64(&old_blob),
        "--destination-key-id",
        &key,
    ]);
    let moved = unb64(&str_field(&moved, "CiphertextBlob"));
    assert_eq!(env.inspect_blob(&moved)["KeyVersion"], 2);
    assert_eq!(env.decrypt(&moved, None), b"v1 data");

    env.json(&["kms", "rotate-key-on-demand", "--key-id", &key]);
    let rots = rotations(&env, &key);
    assert_eq!(rots.len(), 2);
    assert!(rots.iter().all(|r| r["RotationType"] == "ON_DEMAND"));
    assert_eq!(
        env.inspect_blob(&env.encrypt(&key, b"v3", None))["KeyVersion"],
        3
    );
    assert_eq!(env.decrypt(&old_blob, None), b"v1 data");

    // Disable: status says so, no period or date shown.
    env.ok(&["kms", "disable-key-rotation", "--key-id", &key]);
    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(s["KeyRotationEnabled"], false, "{s:#}");
    assert!(s.get("NextRotationDate").is_none(), "{s:#}");
    // With rotation disabled, time passing rotates nothing.
    let far = skew_days(3000);
    let r = env.json_env(
        &["kms", "list-key-rotations", "--key-id", &key],
        &[(SKEW_ENV, &far)],
    );
    assert_eq!(r["Rotations"].as_array().unwrap().len(), 2, "{r:#}");
    // Re-enabling without a period keeps the last one, as AWS.
    env.ok(&["kms", "enable-key-rotation", "--key-id", &key]);
    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(s["RotationPeriodInDays"], 90, "{s:#}");
}

#[test]
fn automatic_rotation_happens_when_due() {
    let env = Env::init();
    let key = env.create_key();
    let idle = env.create_key();
    let disabled = env.create_key();
    for k in [&key, &disabled] {
        env.ok(&[
            "kms",
            "enable-key-rotation",
            "--key-id",
            k,
            "--rotation-period-in-days",
            "90",
        ]);
    }
    env.ok(&["kms", "disable-key", "--key-id", &disabled]);
    let old_blob = env.encrypt(&key, b"made under v1", Some("c=1"));

    // 89 days on: nothing is due yet.
    let d89 = skew_days(89);
    let r = env.json_env(
        &["kms", "list-key-rotations", "--key-id", &key],
        &[(SKEW_ENV, &d89)],
    );
    assert!(r["Rotations"].as_array().unwrap().is_empty(), "{r:#}");

    // 91 days on: any command rotates it.
    let d91 = skew_days(91);
    let t0 = now();
    env.json_env(&["kms", "list-keys"], &[(SKEW_ENV, &d91)]);
    let rots = rotations(&env, &key);
    assert_eq!(rots.len(), 1, "{rots:#?}");
    assert_eq!(rots[0]["RotationType"], "AUTOMATIC");
    assert_near(
        "RotationDate",
        unix_time(&rots[0]["RotationDate"]),
        t0 + 91 * DAY,
    );
    let s = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_near(
        "NextRotationDate",
        unix_time(&s["NextRotationDate"]),
        t0 + (91 + 90) * DAY,
    );
    // New blobs use version 2, old ones still decrypt and move with re-encrypt.
    let new_blob = env.encrypt(&key, b"made under v2", None);
    assert_eq!(env.inspect_blob(&new_blob)["KeyVersion"], 2);
    assert_eq!(env.decrypt(&old_blob, Some("c=1")), b"made under v1");
    let moved = env.json(&[
        "kms",
        "re-encrypt",
        "--ciphertext-blob",
        &b64(&old_blob),
        "--source-encryption-context",
        "c=1",
        "--destination-key-id",
        &key,
        "--destination-encryption-context",
        "c=1",
    ]);
    let moved = unb64(&str_field(&moved, "CiphertextBlob"));
    assert_eq!(env.inspect_blob(&moved)["KeyVersion"], 2);

    // Running again at the same time does not rotate twice.
    env.json_env(&["kms", "list-keys"], &[(SKEW_ENV, &d91)]);
    assert_eq!(rotations(&env, &key).len(), 1);
    // Keys without rotation, and disabled keys, are not rotated.
    assert!(rotations(&env, &idle).is_empty());
    assert!(rotations(&env, &disabled).is_empty());

    // Another period later: a second automatic rotation.
    let d182 = skew_days(182);
    let r = env.json_env(
        &["kms", "list-key-rotations", "--key-id", &key],
        &[(SKEW_ENV, &d182)],
    );
    let rots = r["Rotations"].as_array().unwrap();
    assert_eq!(rots.len(), 2, "{r:#}");
    assert!(rots.iter().all(|r| r["RotationType"] == "AUTOMATIC"));
    assert_eq!(
        env.inspect_blob(&env.encrypt(&key, b"v3", None))["KeyVersion"],
        3
    );
    assert_eq!(env.decrypt(&old_blob, Some("c=1")), b"made under v1");
    assert_eq!(env.decrypt(&new_blob, None), b"made under v2");
}

// ---- aliases --------------------------------------------------------------------------

#[test]
fn alias_lifecycle() {
    let env = Env::init();
    let acct = account(&env);
    let a = env.create_key();
    let b = env.create_key();
    let arn_a = str_field(&env.describe(&a), "Arn");
    assert!(alias_names(&env.json(&["kms", "list-aliases"])).is_empty());

    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/app",
        "--target-key-id",
        &a,
    ]);
    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/team/db_1-x",
        "--target-key-id",
        &arn_a,
    ]);
    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/other",
        "--target-key-id",
        &b,
    ]);
    let list = env.json(&["kms", "list-aliases"]);
    let mut names = alias_names(&list);
    names.sort();
    assert_eq!(names, vec!["alias/app", "alias/other", "alias/team/db_1-x"]);
    for e in list["Aliases"].as_array().unwrap() {
        let name = str_field(e, "AliasName");
        assert_eq!(
            str_field(e, "AliasArn"),
            format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:{name}")
        );
        let want = if name == "alias/other" { &b } else { &a };
        assert_eq!(&str_field(e, "TargetKeyId"), want, "{name}");
        unix_time(&e["CreationDate"]);
        unix_time(&e["LastUpdatedDate"]);
    }
    let mut only_a = alias_names(&env.json(&["kms", "list-aliases", "--key-id", &a]));
    only_a.sort();
    assert_eq!(only_a, vec!["alias/app", "alias/team/db_1-x"]);
    assert_eq!(
        alias_names(&env.json(&["kms", "list-aliases", "--key-id", "alias/other"])),
        vec!["alias/other"]
    );
    assert_eq!(env.describe("alias/app")["KeyId"], a.as_str());

    // Duplicate: exit 9.
    let line = env.fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/app",
            "--target-key-id",
            &b,
        ],
        9,
    );
    assert!(line.contains("AlreadyExistsException"), "{line}");
    // Reserved names: refused for create, update and delete.
    for args in [
        vec![
            "kms",
            "create-alias",
            "--alias-name",
            "alias/aws/mine",
            "--target-key-id",
            &a,
        ],
        vec![
            "kms",
            "create-alias",
            "--alias-name",
            "alias/aws/ebs",
            "--target-key-id",
            &a,
        ],
        vec![
            "kms",
            "update-alias",
            "--alias-name",
            "alias/aws/ebs",
            "--target-key-id",
            &a,
        ],
        vec!["kms", "delete-alias", "--alias-name", "alias/aws/ebs"],
    ] {
        // As AWS: NotAuthorizedException, whatever the operation.
        let line = env.fail(&args, 18);
        assert!(line.contains("NotAuthorizedException"), "{line}");
    }
    // Malformed names: ValidationException as AWS, InvalidAliasNameException for an
    // empty name after the prefix.
    for (bad, code) in [
        ("app", "ValidationException"),
        ("alias/", "InvalidAliasNameException"),
        ("alias/sp ace", "ValidationException"),
        ("alias/é", "ValidationException"),
    ] {
        let line = env.fail(
            &[
                "kms",
                "create-alias",
                "--alias-name",
                bad,
                "--target-key-id",
                &a,
            ],
            6,
        );
        assert!(line.contains(code), "{bad}: {line}");
    }
    // An alias cannot point at an alias.
    env.fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/x",
            "--target-key-id",
            "alias/app",
        ],
        6,
    );
    let alias_arn = format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:alias/app");
    env.fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/x",
            "--target-key-id",
            &alias_arn,
        ],
        6,
    );
    env.fail(
        &[
            "kms",
            "update-alias",
            "--alias-name",
            "alias/other",
            "--target-key-id",
            "alias/app",
        ],
        6,
    );
    // Unknown targets and aliases: exit 3.
    env.fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/x",
            "--target-key-id",
            "00000000-0000-4000-8000-000000000000",
        ],
        3,
    );
    env.fail(&["kms", "describe-key", "--key-id", "alias/nope"], 3);
    env.fail(
        &[
            "kms",
            "update-alias",
            "--alias-name",
            "alias/nope",
            "--target-key-id",
            &b,
        ],
        3,
    );
    env.fail(&["kms", "delete-alias", "--alias-name", "alias/nope"], 3);
    let line = env.fail(&["kms", "list-aliases", "--key-id", "alias/nope"], 3);
    assert!(line.contains("alias/nope"), "{line}");

    // Update moves the alias; decrypting via the alias follows.
    env.ok(&[
        "kms",
        "update-alias",
        "--alias-name",
        "alias/app",
        "--target-key-id",
        &b,
    ]);
    assert_eq!(env.describe("alias/app")["KeyId"], b.as_str());
    let blob = env.encrypt("alias/app", b"via alias", None);
    assert_eq!(env.inspect_blob(&blob)["KeyId"], b.as_str());
    assert_eq!(
        alias_names(&env.json(&["kms", "list-aliases", "--key-id", &a])),
        vec!["alias/team/db_1-x"]
    );

    env.ok(&["kms", "delete-alias", "--alias-name", "alias/app"]);
    env.fail(&["kms", "describe-key", "--key-id", "alias/app"], 3);
    env.fail(&["kms", "delete-alias", "--alias-name", "alias/app"], 3);
    let mut names = alias_names(&env.json(&["kms", "list-aliases"]));
    names.sort();
    assert_eq!(names, vec!["alias/other", "alias/team/db_1-x"]);
    // The key itself is untouched.
    assert_eq!(env.decrypt(&blob, None), b"via alias");
}

// ---- managed keys ---------------------------------------------------------------------

#[test]
fn managed_ebs_key_is_created_on_first_use_and_protected() {
    let env = Env::init();
    let acct = account(&env);
    assert!(ids_of(&env.json(&["kms", "list-keys"])).is_empty());

    let meta = env.describe("alias/aws/ebs");
    assert_eq!(meta["KeyManager"], "AWS");
    assert_eq!(meta["KeyState"], "Enabled");
    let id = str_field(&meta, "KeyId");
    // Idempotent: the same key every time, also by alias ARN.
    assert_eq!(env.describe("alias/aws/ebs")["KeyId"], id.as_str());
    assert_eq!(
        env.describe(&format!(
            "arn:aws:kms:{DEFAULT_REGION}:{acct}:alias/aws/ebs"
        ))["KeyId"],
        id.as_str()
    );
    assert_eq!(ids_of(&env.json(&["kms", "list-keys"])), vec![id.clone()]);

    let aliases = env.json(&["kms", "list-aliases"]);
    let e = &aliases["Aliases"][0];
    assert_eq!(e["AliasName"], "alias/aws/ebs", "{aliases:#}");
    assert_eq!(e["TargetKeyId"], id.as_str());

    let s = env.json(&[
        "kms",
        "get-key-rotation-status",
        "--key-id",
        "alias/aws/ebs",
    ]);
    assert_eq!(s["KeyRotationEnabled"], true, "{s:#}");
    assert_eq!(s["RotationPeriodInDays"], 365);
    assert_near(
        "NextRotationDate",
        unix_time(&s["NextRotationDate"]),
        now() + 365 * DAY,
    );

    // As in AWS, it serves only the volume service: its policy allows cryptography to
    // callers of this account through `ec2.<region>.amazonaws.com`, so a direct call,
    // even by the account root, is refused (volumes use it in tests/volume_*.rs).
    let line = env.fail(
        &[
            "kms",
            "generate-data-key",
            "--key-id",
            "alias/aws/ebs",
            "--number-of-bytes",
            "32",
        ],
        18,
    );
    assert!(
        line.contains("AccessDeniedException")
            && line.contains("is not authorized to perform: kms:GenerateDataKey on resource"),
        "{line}"
    );
    let policy = env.json(&["kms", "get-key-policy", "--key-id", "alias/aws/ebs"]);
    let text = str_field(&policy, "Policy");
    assert!(
        text.contains(&format!("ec2.{DEFAULT_REGION}.amazonaws.com"))
            && text.contains("kms:ViaService"),
        "{text}"
    );

    // ... but refuses every change, by alias or by id.
    for name in ["alias/aws/ebs", id.as_str()] {
        for args in [
            vec!["kms", "disable-key", "--key-id", name],
            vec!["kms", "schedule-key-deletion", "--key-id", name],
            vec![
                "kms",
                "schedule-key-deletion",
                "--key-id",
                name,
                "--pending-window-days",
                "7",
            ],
            vec!["kms", "disable-key-rotation", "--key-id", name],
            vec![
                "kms",
                "enable-key-rotation",
                "--key-id",
                name,
                "--rotation-period-in-days",
                "90",
            ],
            vec!["kms", "rotate-key-on-demand", "--key-id", name],
        ] {
            // Its key policy lets the account only describe, get and list it.
            let line = env.fail(&args, 18);
            assert!(line.contains("AccessDeniedException"), "{line}");
        }
    }
    // A customer alias cannot point at it.
    env.fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/mine",
            "--target-key-id",
            &id,
        ],
        18,
    );
    assert_eq!(env.describe(&id)["KeyState"], "Enabled");
}

#[test]
fn managed_key_is_created_on_first_describe_and_rotates_itself() {
    let env = Env::init();
    let meta = env.describe("alias/aws/ebs");
    assert_eq!(meta["KeyManager"], "AWS");
    // It rotates itself yearly.
    let r = env.json_env(
        &["kms", "list-key-rotations", "--key-id", "alias/aws/ebs"],
        &[(SKEW_ENV, &skew_days(366))],
    );
    let rots = r["Rotations"].as_array().unwrap();
    assert_eq!(rots.len(), 1, "{r:#}");
    assert_eq!(rots[0]["RotationType"], "AUTOMATIC");
    // Other alias/aws/ names are not managed keys cryptvol knows.
    env.fail(&["kms", "describe-key", "--key-id", "alias/aws/s3"], 3);
}

// ---- output formats -------------------------------------------------------------------

#[test]
fn output_formats_and_query() {
    let env = Env::init();
    let meta = env.create_key_meta(&["--description", "fmt"]);
    let id = str_field(&meta, "KeyId");
    let arn = str_field(&meta, "Arn");

    let out = env.ok(&[
        "kms",
        "describe-key",
        "--key-id",
        &id,
        "--query",
        "KeyMetadata.KeyId",
        "--output",
        "text",
    ]);
    assert_eq!(out, format!("{id}\n"));
    let out = env.ok(&[
        "--output",
        "text",
        "--query",
        "KeyMetadata.Arn",
        "kms",
        "describe-key",
        "--key-id",
        "alias/aws/ebs",
    ]);
    assert!(
        out.starts_with(&format!("arn:aws:kms:{DEFAULT_REGION}:")),
        "{out}"
    );
    assert_ne!(out.trim(), arn);
    let out = env.ok(&[
        "kms",
        "describe-key",
        "--key-id",
        &id,
        "--query",
        "KeyMetadata.KeyState",
    ]);
    assert_eq!(out.trim(), "\"Enabled\"");
    let out = env.ok(&[
        "kms",
        "describe-key",
        "--key-id",
        &id,
        "--query",
        "KeyMetadata.Enabled",
        "--output",
        "text",
    ]);
    assert_eq!(out, "true\n");

    // Text without a query: tab-separated rows, the metadata row holding id and ARN.
    let out = env.ok(&["kms", "describe-key", "--key-id", &id, "--output", "text"]);
    let row = out
        .lines()
        .find(|l| l.starts_with("KEYMETADATA\t"))
        .unwrap_or_else(|| panic!("no KEYMETADATA row: {out}"));
    let cells: Vec<&str> = row.split('\t').collect();
    assert!(cells.contains(&id.as_str()), "{row}");
    assert!(cells.contains(&arn.as_str()), "{row}");
    assert!(cells.contains(&"fmt"), "{row}");
    assert!(!out.contains('{'), "text output is not JSON: {out}");

    // Table: boxed, with the id in the KeyId row.
    let out = env.ok(&["kms", "describe-key", "--key-id", &id, "--output", "table"]);
    assert!(
        out.lines()
            .all(|l| l.starts_with('+') || l.starts_with('|')),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("KeyId") && l.contains(&id)),
        "{out}"
    );
    assert!(out.lines().any(|l| l.contains("KeyMetadata")), "{out}");

    // Projection over a list.
    let other = env.create_key();
    let out = env.ok(&[
        "kms",
        "list-keys",
        "--query",
        "Keys[].KeyId",
        "--output",
        "text",
    ]);
    let mut got: Vec<&str> = out.trim_end().split('\t').collect();
    got.sort();
    let ebs = str_field(&env.describe("alias/aws/ebs"), "KeyId");
    let mut want = vec![id.as_str(), other.as_str(), ebs.as_str()];
    want.sort();
    assert_eq!(got, want);
    let v: Value =
        serde_json::from_str(&env.ok(&["kms", "list-keys", "--query", "Keys[].KeyArn"])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert!(v.as_array().unwrap().contains(&Value::String(arn.clone())));

    // A query for a field that is not there prints null, as JMESPath and the AWS CLI do.
    let missing = env.ok(&[
        "kms",
        "describe-key",
        "--key-id",
        &id,
        "--query",
        "KeyMetadata.Nope",
    ]);
    assert_eq!(missing.trim(), "null");
    env.run(&["kms", "describe-key", "--key-id", &id, "--output", "yaml"])
        .usage_error();
}
