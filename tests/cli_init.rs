//! `cryptvol init`, passphrase regions, and regions (the CLI run as a process).

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn init_creates_data_dir_region_and_private_files() {
    let env = Env::new();
    assert!(!env.data.exists());
    let v = env.json(&["init"]);
    assert_eq!(v["Created"], true, "{v:#}");
    assert_eq!(v["Region"], DEFAULT_REGION, "CRYPTVOL_REGION unset: {v:#}");
    let account = str_field(&v, "AccountId");
    assert_eq!(account.len(), 12, "{account}");
    assert!(account.bytes().all(|b| b.is_ascii_digit()), "{account}");
    assert!(
        str_field(&v, "RootKey").contains("root.key"),
        "a key-file region names its key file: {v:#}"
    );

    let region = env.region_dir(DEFAULT_REGION);
    assert!(env.data.is_dir());
    assert!(region.is_dir());
    assert_eq!(mode(&region), 0o700, "region dir mode");
    let root_key = region.join("root.key");
    assert_eq!(mode(&root_key), 0o600, "root.key mode");
    assert_eq!(std::fs::read(&root_key).unwrap().len(), 32);
    assert_eq!(mode(&env.keystore(DEFAULT_REGION)), 0o600, "keystore mode");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(region.join("region.json")).unwrap()).unwrap();
    assert_eq!(cfg["account_id"], account.as_str());
    // The region config is public: the root key is not in it in any spelling.
    let root = std::fs::read(&root_key).unwrap();
    assert_no_secret(
        "region.json",
        &std::fs::read(region.join("region.json")).unwrap(),
        &root,
    );
    assert_no_secret("keystore.cvks", &env.keystore_bytes(DEFAULT_REGION), &root);
}

#[test]
fn reinit_is_harmless() {
    let env = Env::init();
    let account = str_field(&env.json(&["init"]), "AccountId");
    let key = env.create_key();
    let blob = env.encrypt(&key, b"survives re-init", Some("app=x"));
    let before = env.snapshot();

    for _ in 0..2 {
        let v = env.json(&["init"]);
        assert_eq!(v["Created"], false, "{v:#}");
        assert_eq!(str_field(&v, "AccountId"), account);
        assert_eq!(v["Region"], DEFAULT_REGION);
    }
    env.snapshot()
        .assert_unchanged_since(&before, "re-running init");
    assert_eq!(env.decrypt(&blob, Some("app=x")), b"survives re-init");
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");
    let ids: Vec<String> = env.json(&["kms", "list-keys"])["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| str_field(k, "KeyId"))
        .collect();
    assert_eq!(ids, vec![key]);
}

#[test]
fn data_dir_from_environment_and_nested_path() {
    let env = Env::new();
    let nested = env.scratch().join("a/b/c");
    let mut c = env.cmd();
    c.env("CRYPTVOL_DATA_DIR", &nested).arg("init");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["Created"], true);
    assert!(nested.join("regions").join(DEFAULT_REGION).is_dir());
    assert!(!env.data.exists(), "only the env var's dir was used");

    // The flag wins over the variable.
    let mut c = env.cmd();
    c.env("CRYPTVOL_DATA_DIR", &nested)
        .arg("--data-dir")
        .arg(&env.data)
        .arg("init");
    assert!(c.output().unwrap().status.success());
    assert!(env.region_dir(DEFAULT_REGION).is_dir());
}

#[test]
fn regions_share_the_account_and_nothing_else() {
    let env = Env::new();
    let a = env.json(&["--region", "a-1", "init"]);
    let b = env.json(&["--region", "b-1", "init"]);
    assert_eq!(a["Region"], "a-1");
    assert_eq!(b["Region"], "b-1");
    assert_eq!(a["Created"], true);
    assert_eq!(b["Created"], true);
    assert_eq!(a["AccountId"], b["AccountId"], "one account per data dir");
    assert!(env.region_dir("a-1").join("root.key").exists());
    assert!(env.region_dir("b-1").join("root.key").exists());
    assert_ne!(
        std::fs::read(env.region_dir("a-1").join("root.key")).unwrap(),
        std::fs::read(env.region_dir("b-1").join("root.key")).unwrap(),
        "each region has its own root key"
    );

    let ka = env.json(&["--region", "a-1", "kms", "create-key"])["KeyMetadata"].clone();
    let ka_id = str_field(&ka, "KeyId");
    assert_eq!(
        str_field(&ka, "Arn"),
        format!(
            "arn:aws:kms:a-1:{}:key/{ka_id}",
            a["AccountId"].as_str().unwrap()
        )
    );
    assert_eq!(ka["AWSAccountId"], a["AccountId"]);
    let keys_b = env.json(&["--region", "b-1", "kms", "list-keys"]);
    assert_eq!(keys_b["Keys"].as_array().unwrap().len(), 0, "{keys_b:#}");
    // The region also comes from CRYPTVOL_REGION when the flag is absent.
    let keys_a = env.json_env(&["kms", "list-keys"], &[("CRYPTVOL_REGION", "a-1")]);
    assert_eq!(keys_a["Keys"][0]["KeyId"], ka_id.as_str());
    // ... and the flag wins over the variable.
    let keys = env.json_env(
        &["--region", "b-1", "kms", "list-keys"],
        &[("CRYPTVOL_REGION", "a-1")],
    );
    assert_eq!(keys["Keys"].as_array().unwrap().len(), 0);
}

#[test]
fn blobs_and_arns_do_not_cross_regions() {
    let env = Env::new();
    env.ok(&["--region", "a-1", "init"]);
    env.ok(&["--region", "b-1", "init"]);
    let key_a = env.json(&["--region", "a-1", "kms", "create-key"])["KeyMetadata"].clone();
    let arn_a = str_field(&key_a, "Arn");
    let id_a = str_field(&key_a, "KeyId");
    let id_b = str_field(
        &env.json(&["--region", "b-1", "kms", "create-key"])["KeyMetadata"],
        "KeyId",
    );

    let pt = env.fileb(b"region-bound");
    let enc = env.json(&[
        "--region",
        "a-1",
        "kms",
        "encrypt",
        "--key-id",
        &id_a,
        "--plaintext",
        &pt,
    ]);
    let blob = str_field(&enc, "CiphertextBlob");
    let info = env.json(&["inspect", "blob", "--ciphertext-blob", &blob]);
    assert_eq!(info["Region"], "a-1");

    let line = env.fail(
        &[
            "--region",
            "b-1",
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &blob,
        ],
        8,
    );
    assert!(
        line.contains("a-1") && line.contains("b-1"),
        "the error names both regions: {line}"
    );
    // Re-encrypt in the wrong region is refused the same way.
    let line = env.fail(
        &[
            "--region",
            "b-1",
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob,
            "--destination-key-id",
            &id_b,
        ],
        8,
    );
    assert!(line.contains("a-1") && line.contains("b-1"), "{line}");

    // A key ARN of region a-1 used in region b-1.
    for args in [
        vec!["kms", "describe-key", "--key-id", &arn_a],
        vec!["kms", "encrypt", "--key-id", &arn_a, "--plaintext", &pt],
        vec!["kms", "disable-key", "--key-id", &arn_a],
        vec![
            "kms",
            "generate-data-key",
            "--key-id",
            &arn_a,
            "--number-of-bytes",
            "32",
        ],
    ] {
        let mut full = vec!["--region", "b-1"];
        full.extend(args);
        let line = env.fail(&full, 8);
        assert!(line.contains("a-1") && line.contains("b-1"), "{line}");
    }
    // An alias ARN of another region, even the managed alias (which must not be created).
    let account = str_field(&key_a, "AWSAccountId");
    let alias_arn = format!("arn:aws:kms:a-1:{account}:alias/aws/ebs");
    let line = env.fail(
        &[
            "--region",
            "b-1",
            "kms",
            "describe-key",
            "--key-id",
            &alias_arn,
        ],
        8,
    );
    assert!(line.contains("a-1") && line.contains("b-1"), "{line}");

    // The same blob still decrypts at home.
    let d = env.json(&[
        "--region",
        "a-1",
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &blob,
    ]);
    assert_eq!(unb64(&str_field(&d, "Plaintext")), b"region-bound");
    assert_eq!(str_field(&d, "KeyId"), arn_a);
}

#[test]
fn uninitialised_region_says_run_init_and_creates_nothing() {
    let env = Env::init();
    for args in [
        vec!["--region", "zz-9", "kms", "list-keys"],
        vec!["--region", "zz-9", "kms", "create-key"],
        vec![
            "--region",
            "zz-9",
            "kms",
            "describe-key",
            "--key-id",
            "alias/aws/ebs",
        ],
        vec!["--region", "zz-9", "inspect", "keystore"],
    ] {
        let line = env.fail(&args, 8);
        assert!(line.contains("cryptvol init"), "{line}");
        assert!(line.contains("zz-9"), "{line}");
    }
    assert!(!env.region_dir("zz-9").exists());

    // No data dir at all: same error, and the data dir is not created.
    let fresh = Env::new();
    let line = fresh.fail(&["kms", "list-keys"], 8);
    assert!(line.contains("cryptvol init"), "{line}");
    assert!(
        !fresh.data.exists(),
        "a failed command created the data dir"
    );
}

#[test]
fn bad_region_names_are_refused() {
    let env = Env::init();
    for bad in ["../x", "Local-1", "1abc", "a/b", ""] {
        env.fail(&["--region", bad, "kms", "list-keys"], 6);
        env.fail(&["--region", bad, "init"], 6);
    }
    assert_eq!(
        std::fs::read_dir(env.data.join("regions")).unwrap().count(),
        1,
        "no stray region dirs"
    );
}

#[test]
fn passphrase_region_lifecycle() {
    // Argon2id is slow in debug builds: this test runs as few passphrase commands as it can.
    let env = Env::new();
    let secret = b"correct horse battery staple";
    env.add_secret(secret);
    let mut with_newline = secret.to_vec();
    with_newline.push(b'\n');
    let pass = env.file(&with_newline);
    let pass_no_newline = env.file(secret);
    let wrong = env.file(b"correct horse battery stapler\n");
    let pass_s = pass.to_str().unwrap();

    let v = env.json(&["--region", "p-1", "--passphrase-file", pass_s, "init"]);
    assert_eq!(v["Created"], true);
    assert_eq!(v["Region"], "p-1");
    assert!(
        str_field(&v, "RootKey")
            .to_lowercase()
            .contains("passphrase"),
        "{v:#}"
    );
    let region = env.region_dir("p-1");
    assert!(region.join("region.json").exists());
    assert!(
        !region.join("root.key").exists(),
        "a passphrase region has no root.key"
    );
    assert_eq!(mode(&env.keystore("p-1")), 0o600);
    for f in ["region.json", "keystore.cvks"] {
        assert_no_secret(f, &std::fs::read(region.join(f)).unwrap(), secret);
    }

    // A key-file region in the same data dir shares the account id.
    let k = env.json(&["--region", "k-1", "init"]);
    assert_eq!(k["AccountId"], v["AccountId"]);

    // The right passphrase (here without the trailing newline: one final newline is
    // not part of the passphrase) opens the region.
    let meta = env.json(&[
        "--region",
        "p-1",
        "--passphrase-file",
        pass_no_newline.to_str().unwrap(),
        "kms",
        "create-key",
    ])["KeyMetadata"]
        .clone();
    assert_eq!(meta["KeyState"], "Enabled");
    assert!(str_field(&meta, "Arn").starts_with("arn:aws:kms:p-1:"));

    // A wrong passphrase: exit 7, one line naming the region, nothing changed.
    let line = env.fail(
        &[
            "--region",
            "p-1",
            "--passphrase-file",
            wrong.to_str().unwrap(),
            "kms",
            "create-key",
        ],
        7,
    );
    assert!(line.contains("p-1"), "{line}");
    assert!(line.contains("passphrase"), "{line}");

    // No passphrase and no terminal: exit 7, says how to give one.
    let line = env.fail(&["--region", "p-1", "kms", "list-keys"], 7);
    assert!(line.contains("p-1"), "{line}");
    assert!(line.contains("--passphrase-file"), "{line}");
    let line = env.fail(&["--region", "p-1", "init"], 7);
    assert!(line.contains("p-1"), "{line}");

    // A missing passphrase file is a clear error too, not a prompt.
    let missing = env.path("no-such-passphrase");
    let missing_s = missing.to_str().unwrap();
    let before = env.snapshot();
    for args in [
        vec![
            "--region",
            "p-1",
            "--passphrase-file",
            missing_s,
            "kms",
            "list-keys",
        ],
        vec!["--region", "p-1", "--passphrase-file", missing_s, "init"],
    ] {
        let out = env.run(&args);
        let code = out.code;
        assert!(
            [3, 6, 7].contains(&code),
            "missing passphrase file: exit {code}: {}",
            out.stderr
        );
        let line = out.fails(code);
        assert!(line.contains("no-such-passphrase"), "{line}");
    }
    env.snapshot()
        .assert_unchanged_since(&before, "missing passphrase file");
}

/// Runs `cryptvol --data-dir D --region R init` for every region at once.
fn init_all_at_once(env: &Env, regions: &[&str]) -> Vec<serde_json::Value> {
    let bin = env!("CARGO_BIN_EXE_cryptvol");
    let children: Vec<_> = regions
        .iter()
        .map(|r| {
            std::process::Command::new(bin)
                .env_remove("CRYPTVOL_REGION")
                .env_remove("CRYPTVOL_DATA_DIR")
                .env_remove("CRYPTVOL_PASSPHRASE_FILE")
                .arg("--data-dir")
                .arg(&env.data)
                .args(["--region", r, "init"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "concurrent init failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            serde_json::from_slice(&o.stdout).unwrap()
        })
        .collect()
}

#[test]
fn concurrent_inits_of_different_regions_share_one_account() {
    let env = Env::new();
    let regions = ["r-1", "r-2", "r-3", "r-4", "r-5", "r-6", "r-7", "r-8"];
    let outs = init_all_at_once(&env, &regions);
    assert!(outs.iter().all(|v| v["Created"] == true), "{outs:#?}");
    let account = &outs[0]["AccountId"];
    assert!(
        outs.iter().all(|v| &v["AccountId"] == account),
        "one account id for the data dir: {outs:#?}"
    );
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.data.join("account.json")).unwrap()).unwrap();
    assert_eq!(&file["account_id"], account);
    for r in regions {
        let meta = env.json(&["--region", r, "kms", "create-key"])["KeyMetadata"].clone();
        assert_eq!(&meta["AWSAccountId"], account, "{r}");
    }
}

#[test]
fn concurrent_inits_agree() {
    let env = Env::new();
    let outs = init_all_at_once(&env, &[DEFAULT_REGION; 6]);
    let created = outs.iter().filter(|v| v["Created"] == true).count();
    assert_eq!(created, 1, "exactly one init made the region: {outs:#?}");
    let account = &outs[0]["AccountId"];
    assert!(outs.iter().all(|v| &v["AccountId"] == account), "{outs:#?}");
    // No leftovers of the losers' staging dirs.
    let names: Vec<String> = std::fs::read_dir(env.data.join("regions"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![DEFAULT_REGION.to_string()]);
    env.create_key();
}
