//! The audit trail and metering, through the real binary: every KMS call —
//! allowed, denied or failed — appends exactly one CloudTrail-shaped event; no secret is
//! in any event; `audit verify` names an edited, a deleted and a swapped event; `audit
//! lookup` filters; a call the trail cannot record is not made; `kms usage` counts and
//! prices requests, and an attach costs one Decrypt.

mod common;

use std::path::{Path, PathBuf};

use common::mount::*;
use common::*;
use serde_json::Value;

fn audit_dir(env: &Env) -> PathBuf {
    env.region_dir(DEFAULT_REGION).join("audit")
}

/// Every event line of every log file, in file and line order.
fn lines(env: &Env) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(audit_dir(env))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "jsonl"));
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn events(env: &Env) -> Vec<Value> {
    lines(env)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The only log file (these tests never rotate).
fn log_file(env: &Env) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(audit_dir(env))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs.pop().unwrap()
}

#[test]
fn every_kms_call_writes_exactly_one_event_allowed_denied_or_failed() {
    let env = Env::init();
    let acct = env.account();
    let key = env.create_key();
    let blob = b64(&env.encrypt(&key, b"hello", Some("app=audit")));
    env.ok(&["iam", "create-user", "--user-name", "alice"]);
    let alice = ["--profile", "alice"];
    let prof = |args: &[&'static str]| -> Vec<String> {
        alice
            .iter()
            .chain(args.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let key_arn = format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:key/{key}");

    // (args, exit code, eventName, errorCode)
    let k = key.as_str();
    let b = blob.as_str();
    let cases: Vec<(Vec<String>, i32, &str, Option<&str>)> = vec![
        (
            strs(&["kms", "describe-key", "--key-id", k]),
            0,
            "DescribeKey",
            None,
        ),
        (strs(&["kms", "list-keys"]), 0, "ListKeys", None),
        (strs(&["kms", "list-aliases"]), 0, "ListAliases", None),
        (
            strs(&["kms", "encrypt", "--key-id", k, "--plaintext", "aGk="]),
            0,
            "Encrypt",
            None,
        ),
        (
            strs(&[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                b,
                "--encryption-context",
                "app=audit",
            ]),
            0,
            "Decrypt",
            None,
        ),
        // Wrong context: a failed call is recorded with AWS's error code.
        (
            strs(&[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                b,
                "--encryption-context",
                "app=x",
            ]),
            5,
            "Decrypt",
            Some("InvalidCiphertextException"),
        ),
        (
            strs(&[
                "kms",
                "generate-data-key",
                "--key-id",
                k,
                "--key-spec",
                "AES_256",
            ]),
            0,
            "GenerateDataKey",
            None,
        ),
        (
            strs(&[
                "kms",
                "generate-data-key-without-plaintext",
                "--key-id",
                k,
                "--number-of-bytes",
                "16",
            ]),
            0,
            "GenerateDataKeyWithoutPlaintext",
            None,
        ),
        (
            strs(&[
                "kms",
                "re-encrypt",
                "--ciphertext-blob",
                b,
                "--source-encryption-context",
                "app=audit",
                "--destination-key-id",
                k,
            ]),
            0,
            "ReEncrypt",
            None,
        ),
        (
            strs(&["kms", "enable-key-rotation", "--key-id", k]),
            0,
            "EnableKeyRotation",
            None,
        ),
        (
            strs(&["kms", "get-key-rotation-status", "--key-id", k]),
            0,
            "GetKeyRotationStatus",
            None,
        ),
        (
            strs(&["kms", "rotate-key-on-demand", "--key-id", k]),
            0,
            "RotateKeyOnDemand",
            None,
        ),
        (
            strs(&["kms", "list-key-rotations", "--key-id", k]),
            0,
            "ListKeyRotations",
            None,
        ),
        (
            strs(&["kms", "disable-key-rotation", "--key-id", k]),
            0,
            "DisableKeyRotation",
            None,
        ),
        (
            strs(&[
                "kms",
                "create-alias",
                "--alias-name",
                "alias/a",
                "--target-key-id",
                k,
            ]),
            0,
            "CreateAlias",
            None,
        ),
        (
            strs(&[
                "kms",
                "update-alias",
                "--alias-name",
                "alias/a",
                "--target-key-id",
                k,
            ]),
            0,
            "UpdateAlias",
            None,
        ),
        (
            strs(&["kms", "delete-alias", "--alias-name", "alias/a"]),
            0,
            "DeleteAlias",
            None,
        ),
        (
            strs(&["kms", "get-key-policy", "--key-id", k]),
            0,
            "GetKeyPolicy",
            None,
        ),
        (
            strs(&["kms", "list-key-policies", "--key-id", k]),
            0,
            "ListKeyPolicies",
            None,
        ),
        (
            strs(&["kms", "disable-key", "--key-id", k]),
            0,
            "DisableKey",
            None,
        ),
        (
            strs(&["kms", "encrypt", "--key-id", k, "--plaintext", "aGk="]),
            4,
            "Encrypt",
            Some("DisabledException"),
        ),
        (
            strs(&["kms", "enable-key", "--key-id", k]),
            0,
            "EnableKey",
            None,
        ),
        (
            strs(&["kms", "schedule-key-deletion", "--key-id", k]),
            0,
            "ScheduleKeyDeletion",
            None,
        ),
        (
            strs(&["kms", "cancel-key-deletion", "--key-id", k]),
            0,
            "CancelKeyDeletion",
            None,
        ),
        (
            strs(&["kms", "enable-key", "--key-id", k]),
            0,
            "EnableKey",
            None,
        ),
        (
            strs(&["kms", "describe-key", "--key-id", "alias/none"]),
            3,
            "DescribeKey",
            Some("NotFoundException"),
        ),
        // Denied: alice has no identity policy, and the default key policy delegates to IAM.
        (
            prof(&["kms", "encrypt", "--key-id", "KEY", "--plaintext", "aGk="]),
            18,
            "Encrypt",
            Some("AccessDeniedException"),
        ),
        (
            prof(&["kms", "create-key"]),
            18,
            "CreateKey",
            Some("AccessDeniedException"),
        ),
        (
            strs(&["kms", "create-key", "--description", "two"]),
            0,
            "CreateKey",
            None,
        ),
    ];
    for (args, code, name, error) in cases {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| if a == "KEY" { key.clone() } else { a })
            .collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let before = lines(&env).len();
        let out = env.run(&argv);
        assert_eq!(out.code, code, "{argv:?}: {}", out.stderr);
        let evs = events(&env);
        assert_eq!(
            evs.len(),
            before + 1,
            "{argv:?} must append exactly one event"
        );
        let e = evs.last().unwrap();
        assert_eq!(e["eventName"], name, "{argv:?}: {e:#}");
        assert_eq!(e["eventSource"], "kms.amazonaws.com");
        assert_eq!(e["awsRegion"], DEFAULT_REGION);
        assert_eq!(e["eventType"], "AwsApiCall");
        assert_eq!(e["recipientAccountId"], acct.as_str());
        assert!(
            e["eventID"].as_str().is_some_and(|s| s.len() == 36),
            "{e:#}"
        );
        assert!(
            e["requestID"].as_str().is_some_and(|s| s.len() == 36),
            "{e:#}"
        );
        assert!(
            e["eventTime"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
            "{e:#}"
        );
        assert!(
            e["sourceIPAddress"]
                .as_str()
                .is_some_and(|s| s.starts_with("user:") || s.starts_with("uid:")),
            "{e:#}"
        );
        let read_only = [
            "Describe",
            "List",
            "Get",
            "Encrypt",
            "Decrypt",
            "Generate",
            "ReEncrypt",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        assert_eq!(e["readOnly"], read_only, "{name}: {e:#}");
        assert_eq!(e["errorCode"].as_str(), error, "{argv:?}: {e:#}");
        if error.is_some() {
            let msg = e["errorMessage"].as_str().unwrap();
            assert!(
                out.stderr.contains(msg),
                "stderr and errorMessage differ: {} / {msg}",
                out.stderr
            );
            assert!(e["responseElements"].is_null(), "{e:#}");
        }
        let who = &e["userIdentity"];
        if argv[0] == "--profile" {
            assert_eq!(who["type"], "IAMUser", "{e:#}");
            assert_eq!(who["userName"], "alice");
            assert_eq!(who["arn"], format!("arn:aws:iam::{acct}:user/alice"));
            assert!(
                who["principalId"].as_str().unwrap().starts_with("AIDA"),
                "{e:#}"
            );
        } else {
            assert_eq!(who["type"], "Root", "{e:#}");
            assert_eq!(who["arn"], format!("arn:aws:iam::{acct}:root"));
        }
        // Calls that name the key list it as the resource.
        if argv.contains(&k) && code != 3 {
            assert_eq!(
                e["resources"][0]["ARN"],
                key_arn.as_str(),
                "{argv:?}: {e:#}"
            );
            assert_eq!(e["resources"][0]["type"], "AWS::KMS::Key");
        }
    }
    // Request parameters carry the context and key spec (not secret), never data.
    let evs = events(&env);
    let gdk = evs
        .iter()
        .find(|e| e["eventName"] == "GenerateDataKey")
        .unwrap();
    assert_eq!(gdk["requestParameters"]["keySpec"], "AES_256", "{gdk:#}");
    let dec = evs.iter().find(|e| e["eventName"] == "Decrypt").unwrap();
    assert_eq!(
        dec["requestParameters"]["encryptionContext"]["app"], "audit",
        "{dec:#}"
    );
    let create = evs
        .iter()
        .find(|e| e["eventName"] == "CreateKey" && e["errorCode"].is_null())
        .unwrap();
    assert!(
        create["responseElements"]["keyMetadata"]["keyId"].is_string(),
        "{create:#}"
    );
    env.ok(&["audit", "verify"]);
}

fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn no_secret_reaches_any_event_or_file_of_the_trail() {
    let env = Env::init();
    let key = env.create_key();
    let plain = pattern(48, 7);
    env.add_secret(&plain);
    let blob = env.encrypt(&key, &plain, Some("k=v"));
    assert_eq!(env.decrypt(&blob, Some("k=v")), plain);
    let dk = env.json(&[
        "kms",
        "generate-data-key",
        "--key-id",
        &key,
        "--number-of-bytes",
        "64",
    ]);
    let data_key = unb64(&str_field(&dk, "Plaintext"));
    env.add_secret(&data_key);
    let out = env.path("dk.bin");
    env.ok(&[
        "kms",
        "generate-data-key",
        "--key-id",
        &key,
        "--key-spec",
        "AES_256",
        "--plaintext-out",
        out.to_str().unwrap(),
    ]);
    let dk2 = std::fs::read(&out).unwrap();
    env.add_secret(&dk2);
    // A failed decrypt's message must not echo anything secret either.
    env.run(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &b64(&blob),
        "--encryption-context",
        "k=w",
    ]);
    env.ok(&["audit", "lookup"]);

    let mut secrets = vec![plain, data_key, dk2];
    secrets.extend(env.root_keys());
    let mut files = vec![env.region_dir(DEFAULT_REGION).join("usage.json")];
    files.extend(
        std::fs::read_dir(audit_dir(&env))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    assert!(files.len() >= 3, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for s in &secrets {
            assert_no_secret(&f.display().to_string(), &bytes, s);
        }
        if f.file_name().unwrap() != ".lock" {
            assert_eq!(mode(f) & 0o077, 0, "{f:?} is readable by others");
        }
    }
    assert_eq!(mode(&audit_dir(&env)), 0o700);
    // The ciphertext blob is not in the trail either (CloudTrail does not log it).
    let text = lines(&env).join("\n");
    assert!(
        !text.contains(&b64(&blob)),
        "a ciphertext blob is in the trail"
    );
    assert!(
        text.contains("\"k\":\"v\""),
        "the encryption context is recorded"
    );
}

/// Runs `audit verify` expecting tampering: exit 19, one line naming the event.
#[track_caller]
fn verify_fails(env: &Env, expect: &[&str]) -> String {
    let out = env.run(&["audit", "verify"]);
    assert_eq!(out.code, 19, "stdout {} stderr {}", out.stdout, out.stderr);
    assert_one_error_line("audit verify", &out.stderr);
    for e in expect {
        assert!(out.stderr.contains(e), "{:?} lacks {e:?}", out.stderr);
    }
    let report: Value = serde_json::from_str(&out.stdout).expect("the report is printed");
    assert_eq!(report["Valid"], false, "{report:#}");
    out.stderr
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn audit_verify_names_an_edited_a_deleted_and_a_swapped_event() {
    let env = Env::init();
    let key = env.create_key();
    for i in 0..5 {
        env.encrypt(&key, format!("m{i}").as_bytes(), Some(&format!("n={i}")));
    }
    let v = env.json(&["audit", "verify"]);
    assert_eq!(v["Valid"], true, "{v:#}");
    assert_eq!(v["Events"], 6);
    let path = log_file(&env);
    let pristine = lines(&env);
    assert_eq!(pristine.len(), 6);

    // Edited: event 4's context changes from n=2 to n=9.
    let mut edited = pristine.clone();
    assert!(edited[3].contains("\"n\":\"2\""), "{}", edited[3]);
    edited[3] = edited[3].replace("\"n\":\"2\"", "\"n\":\"9\"");
    write_lines(&path, &edited);
    let line = verify_fails(&env, &["event 4", "altered"]);
    assert!(!line.contains("event 3 "), "{line}");
    // A subtler edit: the caller's identity.
    let mut edited = pristine.clone();
    edited[1] = edited[1].replace("\"type\":\"Root\"", "\"type\":\"IAMUser\"");
    write_lines(&path, &edited);
    verify_fails(&env, &["event 2", "altered"]);

    // Deleted: event 3 is gone.
    let mut deleted = pristine.clone();
    deleted.remove(2);
    write_lines(&path, &deleted);
    verify_fails(&env, &["event 3", "missing"]);

    // Swapped: events 4 and 5 trade places.
    let mut swapped = pristine.clone();
    swapped.swap(3, 4);
    write_lines(&path, &swapped);
    verify_fails(&env, &["event 4", "order"]);

    // Restored, the log verifies again and new calls chain on.
    write_lines(&path, &pristine);
    env.encrypt(&key, b"after", None);
    let v = env.json(&["audit", "verify"]);
    assert_eq!(v["Valid"], true, "{v:#}");
    assert_eq!(v["Events"], 7);

    // A sealed file: its digest catches the removal of its last event.
    let s = env.json(&["audit", "seal"]);
    assert_eq!(s["Sealed"]["EventCount"], 7, "{s:#}");
    env.encrypt(&key, b"next file", None);
    let v = env.json(&["audit", "verify"]);
    assert_eq!(
        (v["Valid"].clone(), v["SealedFiles"].clone()),
        (Value::Bool(true), Value::from(1)),
        "{v:#}"
    );
    let mut sealed = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>();
    sealed.pop();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    write_lines(&path, &sealed);
    verify_fails(&env, &["event 7"]);
}

#[test]
fn audit_lookup_filters_by_key_event_principal_and_time() {
    let env = Env::init();
    let acct = env.account();
    let k1 = env.create_key();
    let k2 = env.create_key();
    env.ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/two",
        "--target-key-id",
        &k2,
    ]);
    env.encrypt(&k1, b"a", None);
    env.encrypt(&k2, b"b", None);
    env.encrypt(&k2, b"c", None);
    env.ok(&["iam", "create-user", "--user-name", "alice"]);
    env.fail(
        &["--profile", "alice", "kms", "describe-key", "--key-id", &k1],
        18,
    );

    let names = |v: &Value| -> Vec<String> {
        v["Events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| str_field(e, "eventName"))
            .collect()
    };
    let all = env.json(&["audit", "lookup"]);
    // Two CreateKey, CreateAlias, three Encrypt and the denied DescribeKey (IAM calls
    // are not KMS calls).
    assert_eq!(all["Events"].as_array().unwrap().len(), 7, "{all:#}");
    assert!(
        all["Events"][0].get("cryptvolChain").is_none(),
        "lookup shows CloudTrail fields only"
    );

    let by_alias = env.json(&["audit", "lookup", "--key", "alias/two"]);
    assert_eq!(
        names(&by_alias),
        ["CreateKey", "CreateAlias", "Encrypt", "Encrypt"]
    );
    let arn1 = format!("arn:aws:kms:{DEFAULT_REGION}:{acct}:key/{k1}");
    let by_arn = env.json(&["audit", "lookup", "--key", &arn1]);
    assert_eq!(names(&by_arn), ["CreateKey", "Encrypt", "DescribeKey"]);
    let enc = env.json(&["audit", "lookup", "--event-name", "Encrypt", "--key", &k2]);
    assert_eq!(names(&enc), ["Encrypt", "Encrypt"]);
    let alice = env.json(&["audit", "lookup", "--principal", "alice"]);
    assert_eq!(names(&alice), ["DescribeKey"]);
    assert_eq!(alice["Events"][0]["errorCode"], "AccessDeniedException");
    let root = env.json(&["audit", "lookup", "--principal", "root"]);
    assert_eq!(names(&root).len(), 6);
    let last = env.json(&["audit", "lookup", "--max-results", "2"]);
    assert_eq!(names(&last), ["Encrypt", "DescribeKey"]);

    // Time windows: everything happened today; nothing before yesterday or after tomorrow.
    let day = |offset: i64| {
        let t = jiff::Timestamp::now().as_second() + offset * DAY;
        jiff::Timestamp::from_second(t)
            .unwrap()
            .strftime("%Y-%m-%d")
            .to_string()
    };
    let today = env.json(&["audit", "lookup", "--start", &day(0), "--end", &day(0)]);
    assert_eq!(names(&today).len(), 7);
    let future = env.json(&["audit", "lookup", "--start", &day(1)]);
    assert_eq!(names(&future).len(), 0);
    let past = env.json(&["audit", "lookup", "--end", &day(-1)]);
    assert_eq!(names(&past).len(), 0);
    let unix = (jiff::Timestamp::now().as_second() - 3600).to_string();
    assert_eq!(
        names(&env.json(&["audit", "lookup", "--start", &unix])).len(),
        7
    );

    let table = env.ok(&[
        "--output",
        "table",
        "audit",
        "lookup",
        "--event-name",
        "CreateAlias",
    ]);
    assert!(
        table.contains("CreateAlias") && table.contains(&k2),
        "{table}"
    );
    env.fail(&["audit", "lookup", "--start", "yesterday"], 6);
}

#[test]
fn a_call_the_trail_cannot_record_is_not_made() {
    let env = Env::init();
    let key = env.create_key();
    let before = env.keystore_bytes(DEFAULT_REGION);
    // The audit directory becomes a file: no event can be written.
    let dir = audit_dir(&env);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    for args in [
        vec!["kms", "create-key"],
        vec!["kms", "disable-key", "--key-id", &key],
        vec!["kms", "schedule-key-deletion", "--key-id", &key],
        vec![
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
        ],
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 11, "{args:?}: {}", out.stderr);
        assert_one_error_line(&args.join(" "), &out.stderr);
        assert!(out.stderr.contains("audit log"), "{}", out.stderr);
        assert!(
            out.stdout.is_empty(),
            "a data key was released unrecorded: {}",
            out.stdout
        );
        assert_eq!(
            env.keystore_bytes(DEFAULT_REGION),
            before,
            "{args:?} changed the keystore"
        );
    }
    std::fs::remove_file(&dir).unwrap();
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");
    assert_eq!(
        env.json(&["kms", "list-keys"])["Keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn kms_usage_counts_requests_per_key_and_prices_them() {
    let env = Env::init();
    let key = env.create_key();
    for i in 0..3 {
        let b = env.encrypt(&key, b"x", Some(&format!("i={i}")));
        env.decrypt(&b, Some(&format!("i={i}")));
    }
    env.ok(&["kms", "list-keys"]);
    env.ok(&["iam", "create-user", "--user-name", "alice"]);
    env.fail(
        &[
            "--profile",
            "alice",
            "kms",
            "describe-key",
            "--key-id",
            &key,
        ],
        18,
    );
    let u = env.json(&["kms", "usage"]);
    let keys = u["Keys"].as_array().unwrap();
    let row = keys
        .iter()
        .find(|r| str_field(r, "KeyId").ends_with(&key))
        .unwrap();
    assert_eq!(row["Requests"]["Encrypt"], 3, "{u:#}");
    assert_eq!(row["Requests"]["Decrypt"], 3, "{u:#}");
    assert_eq!(row["Requests"]["CreateKey"], 1, "{u:#}");
    assert!(
        row["Requests"].get("DescribeKey").is_none(),
        "denied calls are not billed: {u:#}"
    );
    assert_eq!(row["RequestCount"], 7);
    assert_eq!(row["KeyManager"], "CUSTOMER");
    let other = keys.iter().find(|r| r["KeyId"] == "-").unwrap();
    assert_eq!(other["Requests"]["ListKeys"], 1, "{u:#}");
    assert_eq!(u["TotalRequests"], 8);
    // 8 requests at 0.03 USD per 10,000; the key existed a few seconds of the month.
    assert_eq!(u["RequestCostUSD"], "0.000024", "{u:#}");
    let key_cost: f64 = str_field(&u, "KeyCostUSD").parse().unwrap();
    assert!(key_cost < 0.001, "{u:#}");
    let total: f64 = str_field(&u, "EstimatedCostUSD").parse().unwrap();
    assert!((total - key_cost - 0.000024).abs() < 1e-6, "{u:#}");

    // A whole month later the key has cost a full key-month, and next month is empty.
    let month = |skew_days: i64| {
        let t = jiff::Timestamp::now().as_second() + skew_days * DAY;
        jiff::Timestamp::from_second(t)
            .unwrap()
            .strftime("%Y-%m")
            .to_string()
    };
    let next = env.json_env(
        &["kms", "usage", "--month", &month(40)],
        &[(SKEW_ENV, &skew_days(70))],
    );
    let row = next["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| str_field(r, "KeyId").ends_with(&key))
        .unwrap();
    assert_eq!(row["KeyMonths"], 1.0, "{next:#}");
    assert_eq!(row["KeyCostUSD"], "1.000000", "{next:#}");
    assert_eq!(row["RequestCount"], 0);
    env.fail(&["kms", "usage", "--month", "2026-13"], 6);
}

#[test]
fn attach_is_one_audited_decrypt_through_the_volume_service() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M"]);
    let count = |name: &str| events(&v).iter().filter(|e| e["eventName"] == name).count();
    let (gdk, dec) = (count("GenerateDataKey"), count("Decrypt"));
    assert_eq!(gdk, 1, "volume create is one GenerateDataKey");
    for round in 1..=2 {
        let dir = v.dir(&format!("a{round}"));
        let file = v.attach(&vol, &dir, &[]);
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&vec![round as u8; 4096 * 64], 0).unwrap();
        f.sync_all().unwrap();
        drop(f);
        v.detach(&dir);
        assert_eq!(
            count("Decrypt"),
            dec + round,
            "each attach is exactly one Decrypt"
        );
    }
    assert_eq!(count("GenerateDataKey"), gdk, "I/O makes no KMS call");
    let e = events(&v)
        .into_iter()
        .rfind(|e| e["eventName"] == "Decrypt")
        .unwrap();
    let region = DEFAULT_REGION;
    assert_eq!(
        e["userIdentity"]["invokedBy"],
        format!("ec2.{region}.amazonaws.com"),
        "{e:#}"
    );
    assert_eq!(
        e["sourceIPAddress"],
        format!("ec2.{region}.amazonaws.com"),
        "{e:#}"
    );
    assert_eq!(
        e["requestParameters"]["encryptionContext"]["cryptvol:lineage"],
        vol.as_str(),
        "{e:#}"
    );
    let u = v.json(&["kms", "usage"]);
    let ebs = u["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["KeyManager"] == "AWS")
        .unwrap()
        .clone();
    assert_eq!(ebs["Requests"]["Decrypt"], 2, "{u:#}");
    assert_eq!(
        ebs["KeyCostUSD"], "0.000000",
        "managed keys cost nothing a month: {u:#}"
    );
}

#[test]
fn due_rotation_and_deletion_are_recorded_as_service_events() {
    let env = Env::init();
    let key = env.create_key();
    env.ok(&[
        "kms",
        "enable-key-rotation",
        "--key-id",
        &key,
        "--rotation-period-in-days",
        "90",
    ]);
    let doomed = env.create_key();
    env.ok(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &doomed,
        "--pending-window-days",
        "7",
    ]);
    env.json_env(&["kms", "list-keys"], &[(SKEW_ENV, &skew_days(91))]);
    let evs = events(&env);
    let service: Vec<&Value> = evs
        .iter()
        .filter(|e| e["eventType"] == "AwsServiceEvent")
        .collect();
    let mut got: Vec<(String, String)> = service
        .iter()
        .map(|e| {
            (
                str_field(e, "eventName"),
                str_field(&e["resources"][0], "ARN"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), 2, "{service:#?}");
    assert!(
        got[0].0 == "DeleteKey" && got[0].1.ends_with(&doomed),
        "{got:?}"
    );
    assert!(
        got[1].0 == "RotateKey" && got[1].1.ends_with(&key),
        "{got:?}"
    );
    assert_eq!(service[0]["userIdentity"]["invokedBy"], "kms.amazonaws.com");
    env.ok(&["audit", "verify"]);
}
