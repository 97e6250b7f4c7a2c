//! Hostile use of grants through the real binary: many processes creating, retiring and
//! revoking grants on one key at once; hostile values for every grant flag; an empty
//! Equals constraint; forged list markers.
//!
//! Proves: concurrent grant changes from separate processes lose nothing and leave a
//! keystore that opens; every bad value gets one error line with its exit code and changes
//! nothing on disk; `EncryptionContextEquals={}` allows only an empty context; a
//! ListGrants marker the KMS did not give is InvalidMarkerException.

mod common;

use common::{Env, str_field};
use serde_json::Value;
use std::process::Command;

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("cryptvol")
}

/// `cryptvol --data-dir D ARGS` in a process of its own (Env is not shared across threads).
fn run(data: &std::path::Path, args: &[String]) -> (i32, String, String) {
    let out = Command::new(bin())
        .env_remove("CRYPTVOL_REGION")
        .env_remove("CRYPTVOL_DATA_DIR")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .expect("run cryptvol");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn grants(env: &Env, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut args = vec!["kms", "list-grants", "--key-id", key, "--limit", "7"];
        if let Some(m) = &marker {
            args.extend_from_slice(&["--marker", m]);
        }
        let v = env.json(&args);
        all.extend(v["Grants"].as_array().expect("Grants").iter().cloned());
        match v["NextMarker"].as_str() {
            Some(m) => marker = Some(m.to_string()),
            None => break,
        }
    }
    all
}

#[test]
fn concurrent_grant_changes_from_many_processes_lose_nothing() {
    let env = Env::init();
    let key = env.create_key();
    let bob = str_field(
        &env.json(&["iam", "create-user", "--user-name", "bob"])["User"],
        "Arn",
    );
    const N: usize = 16;
    let data = env.data.clone();
    let create = |i: usize| {
        let (code, out, err) = run(
            &data,
            &s(&[
                "kms",
                "create-grant",
                "--key-id",
                &key,
                "--grantee-principal",
                &bob,
                "--retiring-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--name",
                &format!("g{i}"),
            ]),
        );
        assert_eq!(code, 0, "create-grant #{i}: {err}");
        let v: Value = serde_json::from_str(&out).expect("JSON");
        str_field(&v, "GrantId")
    };
    let ids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..N).map(|i| sc.spawn(move || create(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let listed = grants(&env, &key);
    assert_eq!(listed.len(), N, "every concurrent CreateGrant is kept");
    for id in &ids {
        assert!(listed.iter().any(|g| g["GrantId"] == id.as_str()), "{id}");
    }
    // Half revoked by the root, half retired by bob, all at once, and a second round
    // of creations racing them.
    let (revoke, retire) = ids.split_at(N / 2);
    let new: Vec<String> = std::thread::scope(|sc| {
        let mut hs = Vec::new();
        for id in revoke {
            let (data, key) = (&data, &key);
            hs.push(sc.spawn(move || {
                let (code, _, err) = run(
                    data,
                    &s(&["kms", "revoke-grant", "--key-id", key, "--grant-id", id]),
                );
                assert_eq!(code, 0, "revoke {id}: {err}");
                None
            }));
        }
        for id in retire {
            let (data, key) = (&data, &key);
            hs.push(sc.spawn(move || {
                let (code, _, err) = run(
                    data,
                    &s(&[
                        "--profile",
                        "bob",
                        "kms",
                        "retire-grant",
                        "--key-id",
                        key,
                        "--grant-id",
                        id,
                    ]),
                );
                assert_eq!(code, 0, "retire {id}: {err}");
                None
            }));
        }
        for i in N..N + 4 {
            hs.push(sc.spawn(move || Some(create(i))));
        }
        hs.into_iter().filter_map(|h| h.join().unwrap()).collect()
    });
    let left: Vec<String> = grants(&env, &key)
        .iter()
        .map(|g| str_field(g, "GrantId"))
        .collect();
    assert_eq!(left.len(), new.len(), "{left:?}");
    for id in &new {
        assert!(left.contains(id));
    }
    // A second revoke of the same grant is NotFound, not a corrupt keystore.
    let line = env.fail(
        &[
            "kms",
            "revoke-grant",
            "--key-id",
            &key,
            "--grant-id",
            &ids[0],
        ],
        3,
    );
    assert!(line.contains("NotFoundException"), "{line}");
}

#[test]
fn hostile_values_for_grant_flags_give_one_error_line_and_change_nothing() {
    let env = Env::init();
    let key = env.create_key();
    let bob = str_field(
        &env.json(&["iam", "create-user", "--user-name", "bob"])["User"],
        "Arn",
    );
    let long = "a".repeat(10_000);
    let many_ops = vec!["Decrypt"; 300].join(",");
    let ctrl = format!("{bob}\u{7}\n");
    let unicode = format!("{bob}é");
    let long_value = format!("EncryptionContextSubset={{a={}}}", "v".repeat(385));
    let nine_pairs = format!(
        "EncryptionContextSubset={{{}}}",
        (0..9)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cg = |extra: &[&str]| -> Vec<String> {
        let mut v = s(&["kms", "create-grant", "--key-id", &key]);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            cg(&["--grantee-principal", &long, "--operations", "Decrypt"]),
            6,
            "ValidationException",
        ),
        (
            cg(&["--grantee-principal", &ctrl, "--operations", "Decrypt"]),
            6,
            "ValidationException",
        ),
        (
            cg(&["--grantee-principal", &unicode, "--operations", "Decrypt"]),
            6,
            "ValidationException",
        ),
        (
            cg(&["--grantee-principal", &bob, "--operations", "decrypt"]),
            6,
            "ValidationException",
        ),
        (
            cg(&["--grantee-principal", &bob, "--operations", "Sign"]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--name",
                &long,
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--name",
                "a b",
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--retiring-principal",
                &format!("{bob}/.."),
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--constraints",
                r#"{"EncryptionContextSubset": [1, 2]}"#,
            ]),
            6,
            "--constraints",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--constraints",
                r#"{"EncryptionContextSubset": {"a": 1}}"#,
            ]),
            6,
            "--constraints",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--constraints",
                r#"{"EncryptionContextSubset": {"a": "1"}, "EncryptionContextEquals": {"a": "1"}}"#,
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "DescribeKey",
                "--constraints",
                "EncryptionContextSubset={a=1}",
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--constraints",
                &long_value,
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--constraints",
                &nine_pairs,
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--grant-tokens",
                &long,
            ]),
            6,
            "ValidationException",
        ),
        (
            cg(&[
                "--grantee-principal",
                &bob,
                "--operations",
                "Decrypt",
                "--grant-tokens",
                "Y3ZnMQ==",
            ]),
            6,
            "InvalidGrantTokenException",
        ),
        (
            s(&["kms", "list-grants", "--key-id", &key, "--limit", "0"]),
            6,
            "ValidationException",
        ),
        (
            s(&["kms", "list-grants", "--key-id", &key, "--limit", "1001"]),
            6,
            "ValidationException",
        ),
        (
            s(&["kms", "list-grants", "--key-id", &key, "--grant-id", &long]),
            6,
            "ValidationException",
        ),
        (
            s(&["kms", "revoke-grant", "--key-id", &key, "--grant-id", "zz"]),
            6,
            "InvalidGrantIdException",
        ),
        (
            s(&["kms", "retire-grant", "--grant-token", &long]),
            6,
            "ValidationException",
        ),
        (
            s(&["kms", "retire-grant", "--grant-token", "!!!"]),
            6,
            "InvalidGrantTokenException",
        ),
        (
            s(&["kms", "generate-random", "--number-of-bytes", "0"]),
            6,
            "ValidationException",
        ),
        (
            s(&["kms", "generate-random", "--number-of-bytes", "1025"]),
            6,
            "ValidationException",
        ),
    ];
    // 300 operations (one name repeated) is one grant with Decrypt once, not an error.
    let v = env.json(&[
        "kms",
        "create-grant",
        "--key-id",
        &key,
        "--grantee-principal",
        &bob,
        "--operations",
        &many_ops,
    ]);
    let id = str_field(&v, "GrantId");
    let g = env.json(&["kms", "list-grants", "--key-id", &key, "--grant-id", &id]);
    assert_eq!(g["Grants"][0]["Operations"], serde_json::json!(["Decrypt"]));
    for (args, code, what) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = env.fail(&a, code);
        assert!(
            line.contains(what),
            "`{}`: {line}",
            a.join(" ").chars().take(200).collect::<String>()
        );
        assert!(line.len() < 12_000, "{} chars", line.len());
    }
}

#[test]
fn an_empty_equals_constraint_allows_only_an_empty_context() {
    let env = Env::init();
    let key = env.create_key();
    let bob = str_field(
        &env.json(&["iam", "create-user", "--user-name", "bob"])["User"],
        "Arn",
    );
    env.json(&[
        "kms",
        "create-grant",
        "--key-id",
        &key,
        "--grantee-principal",
        &bob,
        "--operations",
        "Encrypt",
        "--constraints",
        "EncryptionContextEquals={}",
    ]);
    let pt = env.fileb(b"x");
    env.json(&[
        "--profile",
        "bob",
        "kms",
        "encrypt",
        "--key-id",
        &key,
        "--plaintext",
        &pt,
    ]);
    let line = env.fail(
        &[
            "--profile",
            "bob",
            "kms",
            "encrypt",
            "--key-id",
            &key,
            "--plaintext",
            &pt,
            "--encryption-context",
            "any=thing",
        ],
        18,
    );
    assert!(line.contains("AccessDeniedException"), "{line}");
}

#[test]
fn a_list_grants_marker_the_kms_did_not_give_is_invalid_marker() {
    let env = Env::init();
    let key = env.create_key();
    let bob = str_field(
        &env.json(&["iam", "create-user", "--user-name", "bob"])["User"],
        "Arn",
    );
    for _ in 0..3 {
        env.json(&[
            "kms",
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            &bob,
            "--operations",
            "Decrypt",
        ]);
    }
    let p1 = env.json(&["kms", "list-grants", "--key-id", &key, "--limit", "2"]);
    let m = p1["NextMarker"].as_str().expect("NextMarker").to_string();
    // The genuine marker works.
    let p2 = env.json(&["kms", "list-grants", "--key-id", &key, "--marker", &m]);
    assert_eq!(p2["Grants"].as_array().unwrap().len(), 1);
    // A forged one, or one of another key, is refused rather than trusted.
    let other = env.create_key();
    for bad in ["zzzz", "00000000000000000000/", &m[..m.len() - 1]] {
        let line = env.fail(
            &["kms", "list-grants", "--key-id", &key, "--marker", bad],
            6,
        );
        assert!(line.contains("InvalidMarkerException"), "{bad}: {line}");
    }
    let line = env.fail(
        &["kms", "list-grants", "--key-id", &other, "--marker", &m],
        6,
    );
    assert!(line.contains("InvalidMarkerException"), "{line}");
    let line = env.fail(
        &[
            "kms",
            "list-retirable-grants",
            "--retiring-principal",
            &bob,
            "--marker",
            "zzzz",
        ],
        6,
    );
    assert!(line.contains("InvalidMarkerException"), "{line}");
}
