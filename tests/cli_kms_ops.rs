//! `cryptvol kms` commands for the AWS operations beyond the key flow: generate-random,
//! update-key-description, --dry-run, paging flags, key material ids, the on-demand
//! rotation limit, and AWS's input checks on tags, aliases and descriptions.

mod common;

use common::*;
use serde_json::Value;

fn key_ids(v: &Value, field: &str, name: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field}: {v:#}"))
        .iter()
        .map(|k| str_field(k, name))
        .collect()
}

#[test]
fn generate_random_prints_base64_and_checks_its_size() {
    let env = Env::init();
    let v = env.json(&["kms", "generate-random", "--number-of-bytes", "32"]);
    let a = unb64(&str_field(&v, "Plaintext"));
    assert_eq!(a.len(), 32);
    let b = unb64(&str_field(
        &env.json(&["kms", "generate-random", "--number-of-bytes", "32"]),
        "Plaintext",
    ));
    assert_ne!(a, b, "two random draws are equal");
    assert_eq!(
        unb64(&str_field(
            &env.json(&["kms", "generate-random", "--number-of-bytes", "1024"]),
            "Plaintext"
        ))
        .len(),
        1024
    );
    for n in ["0", "1025"] {
        let line = env.fail(&["kms", "generate-random", "--number-of-bytes", n], 6);
        assert!(
            line.contains("ValidationException") && line.contains("'numberOfBytes'"),
            "{line}"
        );
    }
    let line = env.fail(&["kms", "generate-random"], 6);
    assert!(line.contains("NumberOfBytes is required"), "{line}");
    let line = env.fail(
        &[
            "kms",
            "generate-random",
            "--number-of-bytes",
            "8",
            "--custom-key-store-id",
            "cks-1234567890abcdef0",
        ],
        3,
    );
    assert!(line.contains("CustomKeyStoreNotFoundException"), "{line}");
    // Audited without a key.
    let ev = env.json(&["audit", "lookup", "--event-name", "GenerateRandom"]);
    let events = ev["Events"].as_array().expect("Events");
    assert!(events.len() >= 3, "{ev:#}");
    assert!(
        events
            .iter()
            .all(|e| e["resources"].as_array().is_none_or(|r| r.is_empty())),
        "{ev:#}"
    );
}

#[test]
fn update_key_description_changes_only_the_description() {
    let env = Env::init();
    let key = env.create_key();
    env.ok(&[
        "kms",
        "update-key-description",
        "--key-id",
        &key,
        "--description",
        "payroll 2027",
    ]);
    assert_eq!(env.describe(&key)["Description"], "payroll 2027");
    let long = "d".repeat(8193);
    let line = env.fail(
        &[
            "kms",
            "update-key-description",
            "--key-id",
            &key,
            "--description",
            &long,
        ],
        6,
    );
    assert!(
        line.contains("ValidationException") && line.contains("8192"),
        "{line}"
    );
    let line = env.fail(
        &[
            "kms",
            "update-key-description",
            "--key-id",
            "not-a-key",
            "--description",
            "x",
        ],
        3,
    );
    assert!(line.contains("Invalid keyId 'not-a-key'"), "{line}");
    // The AWS managed key keeps its description.
    env.describe("alias/aws/ebs");
    let out = env.run(&[
        "kms",
        "update-key-description",
        "--key-id",
        "alias/aws/ebs",
        "--description",
        "mine",
    ]);
    assert_ne!(out.code, 0, "{out:?}");
    assert_ne!(env.describe("alias/aws/ebs")["Description"], "mine");
    env.ok(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &key,
        "--pending-window-days",
        "7",
    ]);
    let line = env.fail(
        &[
            "kms",
            "update-key-description",
            "--key-id",
            &key,
            "--description",
            "late",
        ],
        4,
    );
    assert!(line.contains("KMSInvalidStateException"), "{line}");
}

#[test]
fn dry_run_answers_dry_run_operation_exception_or_the_real_error() {
    let env = Env::init();
    let key = env.create_key();
    let pt = env.fileb(b"dry");
    let line = env.fail(
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &pt,
            "--dry-run",
        ],
        22,
    );
    assert!(
        line.contains("DryRunOperationException")
            && line.contains("The request would have succeeded, but the DryRun option is set."),
        "{line}"
    );
    let blob = env.encrypt(&key, b"dry", None);
    let blob_arg = env.fileb(&blob);
    for args in [
        vec![
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--dry-run",
        ],
        vec![
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--destination-key-id",
            &key,
            "--dry-run",
        ],
        vec![
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
            "--dry-run",
        ],
        vec![
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--number-of-bytes",
            "64",
            "--dry-run",
        ],
    ] {
        let out = env.run(&args).fails(22);
        assert!(out.contains("DryRunOperationException"), "{args:?}: {out}");
    }
    // A failing check answers its own error, not the dry run's.
    let line = env.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &blob_arg,
            "--encryption-context",
            "a=b",
            "--dry-run",
        ],
        5,
    );
    assert!(line.contains("InvalidCiphertextException"), "{line}");
    env.ok(&["kms", "disable-key", "--key-id", &key]);
    let line = env.fail(
        &[
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &pt,
            "--dry-run",
        ],
        4,
    );
    assert!(line.contains("DisabledException"), "{line}");
    // The trail has the dry runs with their error code.
    let ev = env.json(&["audit", "lookup", "--event-name", "Encrypt"]);
    let codes: Vec<&str> = ev["Events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["errorCode"].as_str())
        .collect();
    assert!(codes.contains(&"DryRunOperationException"), "{ev:#}");
    assert!(codes.contains(&"DisabledException"), "{ev:#}");
}

#[test]
fn list_commands_page_with_limit_and_marker_or_all_at_once() {
    let env = Env::init();
    let mut ids: Vec<String> = (0..7).map(|_| env.create_key()).collect();
    ids.sort();
    // One page at a time.
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["kms", "list-keys", "--limit", "2"];
        if let Some(m) = &marker {
            args.extend(["--marker", m.as_str()]);
        }
        let v = env.json(&args);
        pages += 1;
        seen.extend(key_ids(&v, "Keys", "KeyId"));
        marker = v["NextMarker"].as_str().map(String::from);
        assert_eq!(v["Truncated"], marker.is_some(), "{v:#}");
        if marker.is_none() {
            break;
        }
    }
    assert_eq!(pages, 4);
    assert_eq!(seen, ids);
    // All pages merged, as the AWS CLI prints them.
    let all = env.json(&["kms", "list-keys", "--page-size", "2"]);
    assert_eq!(key_ids(&all, "Keys", "KeyId"), ids);
    assert!(all.get("NextMarker").is_none(), "{all:#}");
    // --max-items stops and gives a token to go on from.
    let first = env.json(&["kms", "list-keys", "--max-items", "3", "--page-size", "2"]);
    assert_eq!(key_ids(&first, "Keys", "KeyId"), ids[..3]);
    let token = str_field(&first, "NextToken");
    let rest = env.json(&["kms", "list-keys", "--starting-token", &token]);
    assert_eq!(key_ids(&rest, "Keys", "KeyId"), ids[3..]);
    // A marker this KMS did not give.
    let line = env.fail(&["kms", "list-keys", "--marker", "bm90IGEgbWFya2Vy"], 6);
    assert!(line.contains("InvalidMarkerException"), "{line}");
    let line = env.fail(&["kms", "list-keys", "--limit", "0"], 6);
    assert!(line.contains("ValidationException"), "{line}");

    // Aliases with a KeyId filter, tags, rotations.
    for i in 0..3 {
        env.ok(&[
            "kms",
            "create-alias",
            "--alias-name",
            &format!("alias/a{i}"),
            "--target-key-id",
            &ids[0],
        ]);
    }
    let v = env.json(&["kms", "list-aliases", "--key-id", &ids[0], "--limit", "2"]);
    assert_eq!(
        key_ids(&v, "Aliases", "AliasName"),
        ["alias/a0", "alias/a1"]
    );
    let v = env.json(&[
        "kms",
        "list-aliases",
        "--key-id",
        &ids[0],
        "--marker",
        v["NextMarker"].as_str().unwrap(),
    ]);
    assert_eq!(key_ids(&v, "Aliases", "AliasName"), ["alias/a2"]);
    assert_eq!(v["Truncated"], false);
    let mut tag_args = vec!["kms", "tag-resource", "--key-id", ids[1].as_str()];
    let tags: Vec<String> = (0..5).map(|i| format!("t{i}=v{i}")).collect();
    for t in &tags {
        tag_args.extend(["--tag", t.as_str()]);
    }
    env.ok(&tag_args);
    let v = env.json(&[
        "kms",
        "list-resource-tags",
        "--key-id",
        &ids[1],
        "--limit",
        "3",
    ]);
    assert_eq!(key_ids(&v, "Tags", "TagKey"), ["t0", "t1", "t2"]);
    let v = env.json(&[
        "kms",
        "list-resource-tags",
        "--key-id",
        &ids[1],
        "--page-size",
        "2",
    ]);
    assert_eq!(key_ids(&v, "Tags", "TagKey").len(), 5);
    for _ in 0..3 {
        env.ok(&["kms", "rotate-key-on-demand", "--key-id", &ids[2]]);
    }
    let v = env.json(&[
        "kms",
        "list-key-rotations",
        "--key-id",
        &ids[2],
        "--limit",
        "2",
    ]);
    assert_eq!(v["Rotations"].as_array().unwrap().len(), 2);
    assert_eq!(v["Truncated"], true);
    let v = env.json(&[
        "kms",
        "list-key-rotations",
        "--key-id",
        &ids[2],
        "--include-key-material",
        "ALL_KEY_MATERIAL",
    ]);
    let rot = v["Rotations"].as_array().unwrap();
    assert_eq!(rot.len(), 4);
    let current = str_field(&env.describe(&ids[2]), "CurrentKeyMaterialId");
    assert_eq!(str_field(&rot[3], "KeyMaterialId"), current);
    assert_eq!(current.len(), 64);
    assert!(
        current
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[test]
fn on_demand_rotation_stops_after_ten() {
    let env = Env::init();
    let key = env.create_key();
    let mut material = vec![str_field(&env.describe(&key), "CurrentKeyMaterialId")];
    for _ in 0..10 {
        env.ok(&["kms", "rotate-key-on-demand", "--key-id", &key]);
        material.push(str_field(&env.describe(&key), "CurrentKeyMaterialId"));
    }
    let unique: std::collections::BTreeSet<_> = material.iter().collect();
    assert_eq!(unique.len(), 11, "every version has its own material id");
    let line = env.fail(&["kms", "rotate-key-on-demand", "--key-id", &key], 4);
    assert!(
        line.contains("LimitExceededException")
            && line.contains("The on-demand rotations limit has been reached for the given keyId."),
        "{line}"
    );
}

#[test]
fn tags_aliases_and_descriptions_are_checked_as_aws_checks_them() {
    let env = Env::init();
    let key = env.create_key();
    let tag_fail = |args: &[&str], code: i32, want: &str| {
        let line = env.fail(args, code);
        assert!(line.contains(want), "{args:?}: {line}");
    };
    for (tags, want) in [
        (vec!["a=1", "a=2"], "Duplicate tag keys"),
        (vec!["aws:x=1"], "Tags beginning with aws: are reserved"),
        (vec!["AWS:x=1"], "Tags beginning with aws: are reserved"),
    ] {
        let mut create = vec!["kms", "create-key"];
        let mut tag = vec!["kms", "tag-resource", "--key-id", key.as_str()];
        for t in &tags {
            create.extend(["--tag", t]);
            tag.extend(["--tag", t]);
        }
        tag_fail(&create, 6, "TagException");
        tag_fail(&create, 6, want);
        tag_fail(&tag, 6, want);
    }
    let long_key = format!("{}=v", "k".repeat(129));
    tag_fail(
        &["kms", "tag-resource", "--key-id", &key, "--tag", &long_key],
        6,
        "ValidationException",
    );
    // 50 tags fit, the 51st does not.
    let fifty: Vec<String> = (0..50).map(|i| format!("k{i}=v")).collect();
    let mut args = vec!["kms", "tag-resource", "--key-id", key.as_str()];
    for t in &fifty {
        args.extend(["--tag", t.as_str()]);
    }
    env.ok(&args);
    tag_fail(
        &["kms", "tag-resource", "--key-id", &key, "--tag", "one=more"],
        6,
        "Too many tags",
    );
    tag_fail(
        &[
            "kms",
            "untag-resource",
            "--key-id",
            &key,
            "--tag-key",
            "aws:x",
        ],
        6,
        "TagException",
    );
    // Aliases.
    tag_fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/a:b",
            "--target-key-id",
            &key,
        ],
        6,
        "contains invalid characters for an alias",
    );
    tag_fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "x",
            "--target-key-id",
            &key,
        ],
        6,
        "Alias must start with the prefix \"alias/\"",
    );
    tag_fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            "alias/aws/x",
            "--target-key-id",
            &key,
        ],
        18,
        "NotAuthorizedException",
    );
    let long = format!("alias/{}", "a".repeat(251));
    tag_fail(
        &[
            "kms",
            "create-alias",
            "--alias-name",
            &long,
            "--target-key-id",
            &key,
        ],
        6,
        "less than or equal to 256",
    );
    // Descriptions and key ids.
    let long = "d".repeat(8193);
    tag_fail(
        &["kms", "create-key", "--description", &long],
        6,
        "ValidationException",
    );
    tag_fail(
        &["kms", "describe-key", "--key-id", "xyz"],
        3,
        "Invalid keyId 'xyz'",
    );
}
