//! Attacks on the Secrets Manager core: races between instances over one data dir, a
//! damaged or foreign store, hostile requests, AWS's semantics, leaks of values, and
//! authorization. A test that fails here is a defect (see its comment for what AWS does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::{Fixture, events, fixture, token, user};
use crate::aws::{AwsError, Region};
use crate::kms::embedded::EmbeddedKms;
use crate::secrets::{OPERATIONS, SecretsManager, Via};
use crate::sys::clock::Clock;

/// The Secrets Manager exceptions a refused request may carry.
const SM_CODES: &[&str] = &[
    "InvalidParameterException",
    "InvalidRequestException",
    "ResourceNotFoundException",
    "ResourceExistsException",
    "LimitExceededException",
    "InvalidNextTokenException",
    "MalformedPolicyDocumentException",
    "PublicPolicyException",
    "EncryptionFailure",
    "DecryptionFailure",
];

/// A 32-character token from two small numbers.
fn tok(a: usize, b: usize) -> String {
    format!("{a:02}{b:02}").repeat(8)
}

/// Another SecretsManager over the fixture's data dir, as another process opens it.
fn reopen(f: &Fixture) -> SecretsManager {
    reopen_region(f.dir.path(), "test-1")
}

fn reopen_region(dir: &Path, region: &str) -> SecretsManager {
    let r = Region::parse(region).unwrap();
    let mut no = || -> Result<crate::crypto::SecretBytes, AwsError> { panic!("no passphrase") };
    let kms = Arc::new(EmbeddedKms::open_region(dir, &r, &mut no, Clock::System).unwrap());
    SecretsManager::open(kms).unwrap()
}

fn store_path(f: &Fixture) -> PathBuf {
    f.kms.region_dir().secrets_dir().join("store.cvsm")
}

fn store_bytes(f: &Fixture) -> Option<Vec<u8>> {
    std::fs::read(store_path(f)).ok()
}

fn code_of(r: &Result<Value, AwsError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.aws_code(),
    }
}

/// Every version of `id` (deprecated ones too) and its labels, over every page.
fn all_versions(
    sm: &SecretsManager,
    who: &crate::iam::caller::Caller,
    id: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut next: Option<Value> = None;
    loop {
        let mut req = json!({"SecretId": id, "IncludeDeprecated": true});
        if let Some(n) = next.take() {
            req["NextToken"] = n;
        }
        let v = sm
            .call(who, "ListSecretVersionIds", &req, Via::Cli)
            .unwrap();
        for x in v["Versions"].as_array().unwrap() {
            out.insert(
                x["VersionId"].as_str().unwrap().to_string(),
                x["VersionStages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            );
        }
        match v.get("NextToken") {
            Some(n) => next = Some(n.clone()),
            None => return out,
        }
    }
}

/// Exactly one AWSCURRENT when there are versions, each label on one version at most,
/// AWSPREVIOUS never beside AWSCURRENT.
fn assert_labels_consistent(versions: &BTreeMap<String, Vec<String>>, ctx: &str) {
    let mut holders: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (vid, stages) in versions {
        let mut seen = std::collections::BTreeSet::new();
        for s in stages {
            assert!(seen.insert(s), "{ctx}: label {s} twice on version {vid}");
            holders.entry(s.as_str()).or_default().push(vid.as_str());
        }
    }
    if !versions.is_empty() {
        assert_eq!(
            holders.get("AWSCURRENT").map(Vec::len),
            Some(1),
            "{ctx}: AWSCURRENT must be on exactly one version: {versions:?}"
        );
    }
    for (label, vids) in &holders {
        assert!(vids.len() <= 1, "{ctx}: label {label} is on {vids:?}");
    }
    if let (Some(c), Some(p)) = (holders.get("AWSCURRENT"), holders.get("AWSPREVIOUS")) {
        assert_ne!(c[0], p[0], "{ctx}: AWSPREVIOUS on the AWSCURRENT version");
    }
}

fn no_permission_user(f: &Fixture, name: &str) -> crate::iam::caller::Caller {
    user(
        f,
        name,
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}]}),
    )
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// 1. Races
// ---------------------------------------------------------------------------------------

/// Six writers on three instances (as three processes) put versions with their own
/// tokens while two movers shift AWSCURRENT: every accepted version is kept and the
/// labels stay consistent.
#[test]
fn race_puts_and_label_moves_lose_no_version_and_keep_labels_consistent() {
    let f = fixture();
    let others = [reopen(&f), reopen(&f)];
    f.ok(
        "CreateSecret",
        json!({"Name": "race", "SecretString": "v0", "ClientRequestToken": tok(0, 0)}),
    );
    let sms: Vec<&SecretsManager> = std::iter::once(&f.sm).chain(others.iter()).collect();
    let accepted = Mutex::new(vec![tok(0, 0)]);
    let failures = Mutex::new(Vec::new());
    let root = &f.root;
    std::thread::scope(|s| {
        for t in 0..6 {
            let sm = sms[t % 3];
            let (accepted, failures) = (&accepted, &failures);
            s.spawn(move || {
                for i in 0..10 {
                    let stages = match i % 3 {
                        0 => json!(["AWSCURRENT"]),
                        1 => json!(["AWSPENDING"]),
                        _ => json!([format!("L{t}")]),
                    };
                    let req = json!({"SecretId": "race", "SecretString": format!("v{t}-{i}"),
                        "ClientRequestToken": tok(t + 1, i), "VersionStages": stages});
                    match sm.call(root, "PutSecretValue", &req, Via::Cli) {
                        Ok(v) => accepted
                            .lock()
                            .unwrap()
                            .push(v["VersionId"].as_str().unwrap().to_string()),
                        Err(e) => failures.lock().unwrap().push(format!("put {t}/{i}: {e}")),
                    }
                }
            });
        }
        for t in 0..2 {
            let sm = sms[t + 1];
            let failures = &failures;
            s.spawn(move || {
                for i in 0..10 {
                    let versions = all_versions(sm, root, "race");
                    let current = versions
                        .iter()
                        .find(|(_, st)| st.iter().any(|x| x == "AWSCURRENT"))
                        .map(|(v, _)| v.clone())
                        .unwrap();
                    let keys: Vec<&String> = versions.keys().collect();
                    let target = keys[(i * 7 + t) % keys.len()].clone();
                    let r = sm.call(
                        root,
                        "UpdateSecretVersionStage",
                        &json!({"SecretId": "race", "VersionStage": "AWSCURRENT",
                            "MoveToVersionId": target, "RemoveFromVersionId": current}),
                        Via::Cli,
                    );
                    // Losing the race (AWSCURRENT moved meanwhile) is a clear refusal.
                    if let Err(e) = r
                        && e.aws_code() != "InvalidParameterException"
                    {
                        failures.lock().unwrap().push(format!("move: {e}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    let versions = all_versions(&f.sm, &f.root, "race");
    for vid in accepted.into_inner().unwrap() {
        assert!(versions.contains_key(&vid), "version {vid} was lost");
    }
    assert_eq!(versions.len(), 61);
    assert_labels_consistent(&versions, "after the race");
    // Each instance sees the same store.
    for sm in &sms {
        assert_eq!(all_versions(sm, &f.root, "race"), versions);
    }
}

/// Eight CreateSecret of one name at once, from three instances, five rounds: exactly one
/// wins each round and there is never a second secret of that name.
#[test]
fn race_create_of_one_name_makes_one_secret() {
    let f = fixture();
    let others = [reopen(&f), reopen(&f)];
    let sms: Vec<&SecretsManager> = std::iter::once(&f.sm).chain(others.iter()).collect();
    let root = &f.root;
    for round in 0..5 {
        let outcomes = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..8 {
                let sm = sms[t % 3];
                let outcomes = &outcomes;
                s.spawn(move || {
                    let r = sm.call(
                        root,
                        "CreateSecret",
                        &json!({"Name": "dup", "SecretString": format!("r{round}t{t}")}),
                        Via::Cli,
                    );
                    outcomes.lock().unwrap().push(code_of(&r));
                });
            }
        });
        let outcomes = outcomes.into_inner().unwrap();
        assert_eq!(
            outcomes.iter().filter(|c| **c == "ok").count(),
            1,
            "round {round}: {outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .all(|c| *c == "ok" || *c == "ResourceExistsException"),
            "round {round}: {outcomes:?}"
        );
        let list = f.ok("ListSecrets", json!({"IncludePlannedDeletion": true}));
        let named = list["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Name"] == "dup")
            .count();
        assert_eq!(named, 1, "round {round}");
        f.ok(
            "DeleteSecret",
            json!({"SecretId": "dup", "ForceDeleteWithoutRecovery": true}),
        );
    }
}

/// Create, Put, Delete, Restore, ForceDelete and label moves of one name at once: only
/// clear refusals, at most one secret of the name, labels consistent at the end.
#[test]
fn race_mixed_lifecycle_of_one_name_stays_consistent() {
    let f = fixture();
    let others = [reopen(&f), reopen(&f)];
    let sms: Vec<&SecretsManager> = std::iter::once(&f.sm).chain(others.iter()).collect();
    let root = &f.root;
    let bad = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..6 {
            let sm = sms[t % 3];
            let bad = &bad;
            s.spawn(move || {
                let mut x: u64 = 0x9e37_79b9 + t as u64 * 7919;
                for i in 0..15 {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let (op, req) = match (x >> 33) % 6 {
                        0 => (
                            "CreateSecret",
                            json!({"Name": "mix", "SecretString": "c", "ClientRequestToken": tok(t, i)}),
                        ),
                        1 => (
                            "PutSecretValue",
                            json!({"SecretId": "mix", "SecretString": format!("p{t}{i}"), "ClientRequestToken": tok(t + 10, i)}),
                        ),
                        2 => (
                            "DeleteSecret",
                            json!({"SecretId": "mix", "RecoveryWindowInDays": 7}),
                        ),
                        3 => ("RestoreSecret", json!({"SecretId": "mix"})),
                        4 => (
                            "DeleteSecret",
                            json!({"SecretId": "mix", "ForceDeleteWithoutRecovery": true}),
                        ),
                        _ => (
                            "PutSecretValue",
                            json!({"SecretId": "mix", "SecretString": "q", "ClientRequestToken": tok(t + 20, i), "VersionStages": ["AWSPENDING"]}),
                        ),
                    };
                    if let Err(e) = sm.call(root, op, &req, Via::Cli)
                        && ![
                            "ResourceNotFoundException",
                            "ResourceExistsException",
                            "InvalidRequestException",
                        ]
                        .contains(&e.aws_code())
                    {
                        bad.lock().unwrap().push(format!("{op}: {} {e}", e.aws_code()));
                    }
                }
            });
        }
    });
    let bad = bad.into_inner().unwrap();
    assert!(bad.is_empty(), "{bad:#?}");
    let list = f.ok("ListSecrets", json!({"IncludePlannedDeletion": true}));
    let named: Vec<&Value> = list["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Name"] == "mix")
        .collect();
    assert!(named.len() <= 1, "{named:?}");
    if !named.is_empty() {
        let versions = all_versions(&f.sm, &f.root, "mix");
        assert_labels_consistent(&versions, "mixed race");
    }
}

/// GetSecretValue writes LastAccessedDate; it must not undo a concurrent PutSecretValue.
#[test]
fn race_reads_noting_access_do_not_undo_puts() {
    let f = fixture();
    let other = reopen(&f);
    f.ok(
        "CreateSecret",
        json!({"Name": "r", "SecretString": "0", "ClientRequestToken": tok(99, 0)}),
    );
    let root = &f.root;
    std::thread::scope(|s| {
        let sm = &f.sm;
        s.spawn(move || {
            for i in 0..20 {
                sm.call(
                    root,
                    "PutSecretValue",
                    &json!({"SecretId": "r", "SecretString": format!("{i}"), "ClientRequestToken": tok(1, i)}),
                    Via::Cli,
                )
                .unwrap();
            }
        });
        let other = &other;
        s.spawn(move || {
            for _ in 0..40 {
                other
                    .call(root, "GetSecretValue", &json!({"SecretId": "r"}), Via::Cli)
                    .unwrap();
            }
        });
    });
    let versions = all_versions(&f.sm, &f.root, "r");
    assert_eq!(versions.len(), 21);
    assert_eq!(versions[&tok(1, 19)], vec!["AWSCURRENT".to_string()]);
    assert_eq!(versions[&tok(1, 18)], vec!["AWSPREVIOUS".to_string()]);
}

// ---------------------------------------------------------------------------------------
// 2. Crash safety
// ---------------------------------------------------------------------------------------

/// A truncated, extended or altered store is Corrupt naming the file, for reads and
/// changes alike, and no change writes over it.
#[test]
fn a_damaged_store_is_corrupt_naming_the_file_and_never_rewritten() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "a", "SecretString": "v", "ClientRequestToken": token(1)}),
    );
    let good = store_bytes(&f).unwrap();
    let n = good.len();
    let mut flipped = good.clone();
    flipped[n / 2] ^= 0x01;
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0x20;
    let mut appended = good.clone();
    appended.push(0);
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("4 bytes", good[..4].to_vec()),
        ("magic only", good[..8].to_vec()),
        ("magic and 11 bytes", good[..19].to_vec()),
        ("half", good[..n / 2].to_vec()),
        ("less its last byte", good[..n - 1].to_vec()),
        ("one bit flipped", flipped),
        ("bad magic", bad_magic),
        ("a byte appended", appended),
    ];
    for (what, bytes) in variants {
        std::fs::write(store_path(&f), &bytes).unwrap();
        for (op, req) in [
            ("DescribeSecret", json!({"SecretId": "a"})),
            ("GetSecretValue", json!({"SecretId": "a"})),
            ("ListSecrets", json!({})),
            ("ListSecretVersionIds", json!({"SecretId": "a"})),
            ("CreateSecret", json!({"Name": "b", "SecretString": "x"})),
            (
                "PutSecretValue",
                json!({"SecretId": "a", "SecretString": "y"}),
            ),
            (
                "DeleteSecret",
                json!({"SecretId": "a", "ForceDeleteWithoutRecovery": true}),
            ),
            ("RestoreSecret", json!({"SecretId": "a"})),
        ] {
            let e = f
                .call(op, req)
                .expect_err(&format!("{what}: {op} succeeded on a damaged store"));
            assert!(
                matches!(e, AwsError::Corrupt { .. }),
                "{what}: {op}: not Corrupt: {e:?}"
            );
            assert!(
                e.to_string().contains("store.cvsm"),
                "{what}: {op}: the error does not name the file: {e}"
            );
            assert_eq!(
                std::fs::read(store_path(&f)).unwrap(),
                bytes,
                "{what}: {op} rewrote the damaged store"
            );
        }
    }
    std::fs::write(store_path(&f), &good).unwrap();
    assert_eq!(
        f.ok("GetSecretValue", json!({"SecretId": "a"}))["SecretString"],
        "v"
    );
}

/// A store copied from another region of the data dir, or from the same region of
/// another data dir, does not open.
#[test]
fn a_store_from_another_region_or_data_dir_does_not_open() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "a", "SecretString": "v"}));
    let mine = store_bytes(&f).unwrap();
    // Region test-2 of the same data dir.
    let r2 = Region::parse("test-2").unwrap();
    crate::kms::init::init(f.dir.path(), &r2, None, 0).unwrap();
    let sm2 = reopen_region(f.dir.path(), "test-2");
    let dir2 = sm2.kms.region_dir().secrets_dir();
    std::fs::create_dir_all(&dir2).unwrap();
    std::fs::write(dir2.join("store.cvsm"), &mine).unwrap();
    let e = sm2
        .call(&f.root, "ListSecrets", &json!({}), Via::Cli)
        .unwrap_err();
    assert!(matches!(e, AwsError::Corrupt { .. }), "{e:?}");
    // Region test-1 of another data dir.
    let g = fixture();
    std::fs::create_dir_all(g.kms.region_dir().secrets_dir()).unwrap();
    std::fs::write(store_path(&g), &mine).unwrap();
    let e = g
        .call("DescribeSecret", json!({"SecretId": "a"}))
        .unwrap_err();
    assert!(matches!(e, AwsError::Corrupt { .. }), "{e:?}");
    assert!(e.to_string().contains("store.cvsm"), "{e}");
}

/// A damaged store is an internal error of Secrets Manager: AWS's exception for that is
/// an internal error: Corrupt in process, InternalServiceError over the server.
#[test]
fn a_damaged_store_is_reported_with_a_secrets_manager_exception() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "a", "SecretString": "v"}));
    std::fs::write(store_path(&f), b"CVSM").unwrap();
    let e = f.call("ListSecrets", json!({})).unwrap_err();
    // In process it stays Corrupt (the CLI's exit 12); `kms serve` answers any internal
    // error of Secrets Manager as InternalServiceError (src/server's tests).
    assert!(matches!(e, AwsError::Corrupt { .. }), "{e}");
    assert_eq!(e.aws_code(), "KMSInternalException", "{e}");
}

/// Deleting `secrets/store.cvsm` (a crash of the directory, a careless cleanup, or an
/// attacker with write access) silently shows an empty store; the region knows it had
/// one (the lock file, the managed key alias/aws/secretsmanager exist).
#[test]
fn a_store_that_vanished_is_not_silently_an_empty_store() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "a", "SecretString": "v"}));
    std::fs::remove_file(store_path(&f)).unwrap();
    let r = f.call("ListSecrets", json!({}));
    assert!(
        r.is_err(),
        "a store that was written and is gone reads as empty: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Hostile input
// ---------------------------------------------------------------------------------------

fn base_request(op: &str) -> Value {
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
    match op {
        "CreateSecret" => json!({"Name": "fresh", "SecretString": "v"}),
        "UpdateSecret" => json!({"SecretId": "s", "Description": "d"}),
        "DeleteSecret" => json!({"SecretId": "s", "RecoveryWindowInDays": 7}),
        "TagResource" => json!({"SecretId": "s", "Tags": [{"Key": "k", "Value": "v"}]}),
        "UntagResource" => json!({"SecretId": "s", "TagKeys": ["k"]}),
        "PutSecretValue" => json!({"SecretId": "s", "SecretString": "v2"}),
        "UpdateSecretVersionStage" => {
            json!({"SecretId": "s", "VersionStage": "L", "MoveToVersionId": token(1)})
        }
        "ListSecrets" | "GetRandomPassword" => json!({}),
        "PutResourcePolicy" => json!({"SecretId": "s", "ResourcePolicy": policy}),
        "ValidateResourcePolicy" => json!({"ResourcePolicy": policy}),
        "RotateSecret" => json!({"SecretId": "s", "RotateImmediately": false}),
        _ => json!({"SecretId": "s"}),
    }
}

/// The members each operation reads, with their JSON type (s string, i integer, b bool,
/// a list, o object).
fn members(op: &str) -> &'static [(&'static str, char)] {
    match op {
        "CreateSecret" => &[
            ("Name", 's'),
            ("SecretString", 's'),
            ("SecretBinary", 's'),
            ("ClientRequestToken", 's'),
            ("Description", 's'),
            ("KmsKeyId", 's'),
            ("Tags", 'a'),
            ("AddReplicaRegions", 'a'),
        ],
        "UpdateSecret" => &[
            ("SecretId", 's'),
            ("Description", 's'),
            ("KmsKeyId", 's'),
            ("ClientRequestToken", 's'),
            ("SecretString", 's'),
            ("SecretBinary", 's'),
        ],
        "DeleteSecret" => &[
            ("SecretId", 's'),
            ("RecoveryWindowInDays", 'i'),
            ("ForceDeleteWithoutRecovery", 'b'),
        ],
        "TagResource" => &[("SecretId", 's'), ("Tags", 'a')],
        "UntagResource" => &[("SecretId", 's'), ("TagKeys", 'a')],
        "GetSecretValue" => &[("SecretId", 's'), ("VersionId", 's'), ("VersionStage", 's')],
        "PutSecretValue" => &[
            ("SecretId", 's'),
            ("SecretString", 's'),
            ("SecretBinary", 's'),
            ("ClientRequestToken", 's'),
            ("VersionStages", 'a'),
        ],
        "ListSecretVersionIds" => &[
            ("SecretId", 's'),
            ("MaxResults", 'i'),
            ("NextToken", 's'),
            ("IncludeDeprecated", 'b'),
        ],
        "UpdateSecretVersionStage" => &[
            ("SecretId", 's'),
            ("VersionStage", 's'),
            ("RemoveFromVersionId", 's'),
            ("MoveToVersionId", 's'),
        ],
        "ListSecrets" => &[
            ("MaxResults", 'i'),
            ("NextToken", 's'),
            ("IncludePlannedDeletion", 'b'),
            ("Filters", 'a'),
            ("SortOrder", 's'),
        ],
        "PutResourcePolicy" => &[
            ("SecretId", 's'),
            ("ResourcePolicy", 's'),
            ("BlockPublicPolicy", 'b'),
        ],
        "ValidateResourcePolicy" => &[("SecretId", 's'), ("ResourcePolicy", 's')],
        "GetRandomPassword" => &[
            ("PasswordLength", 'i'),
            ("ExcludeCharacters", 's'),
            ("ExcludeNumbers", 'b'),
            ("ExcludePunctuation", 'b'),
            ("ExcludeUppercase", 'b'),
            ("ExcludeLowercase", 'b'),
            ("IncludeSpace", 'b'),
            ("RequireEachIncludedType", 'b'),
        ],
        "RotateSecret" => &[
            ("SecretId", 's'),
            ("ClientRequestToken", 's'),
            ("RotationRules", 'o'),
            ("RotateImmediately", 'b'),
            ("RotationLambdaARN", 's'),
            ("RotationCommand", 's'),
        ],
        _ => &[("SecretId", 's')],
    }
}

fn type_of(v: &Value) -> char {
    match v {
        Value::String(_) => 's',
        Value::Number(n) if n.is_i64() || n.is_u64() => 'i',
        Value::Number(_) => 'f',
        Value::Bool(_) => 'b',
        Value::Array(_) => 'a',
        Value::Object(_) => 'o',
        Value::Null => 'n',
    }
}

fn hostile_values() -> Vec<Value> {
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    vec![
        json!(12345),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(true),
        json!([]),
        json!({}),
        json!(""),
        json!("x"),
        json!("\u{0}\u{7}\u{202e}é漢\u{1F600}"),
        json!("a".repeat(70_000)),
        json!(["a", 1]),
        json!([{"Key": 1}]),
        json!({"Key": "k"}),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(-0.0),
        json!(1e300),
        deep,
    ]
}

/// Every operation, every member it reads, every hostile value: no panic, a Secrets
/// Manager exception when refused (and then the store unchanged), and a member of the
/// wrong JSON type never accepted.
#[test]
fn hostile_members_give_one_clear_error_never_a_panic_or_a_change() {
    let mut problems = Vec::new();
    for op in OPERATIONS {
        let f = fixture();
        f.ok(
            "CreateSecret",
            json!({"Name": "s", "SecretString": "v1", "ClientRequestToken": token(1)}),
        );
        f.ok(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "v2", "ClientRequestToken": token(2)}),
        );
        let mut cases: Vec<(String, Value)> = Vec::new();
        for body in [json!(null), json!([]), json!("x"), json!(1)] {
            cases.push((format!("body {body}"), body));
        }
        for (member, ty) in members(op) {
            for bad in hostile_values() {
                let mut req = base_request(op);
                req[*member] = bad.clone();
                let shown: String = bad.to_string().chars().take(40).collect();
                let wrong_type = type_of(&bad) != *ty;
                cases.push((
                    format!(
                        "{member}={shown}{}",
                        if wrong_type { " (wrong type)" } else { "" }
                    ),
                    req,
                ));
            }
        }
        for (what, req) in cases {
            let before = store_bytes(&f);
            let r =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(op, req.clone())));
            match r {
                Err(_) => problems.push(format!("{op} {what}: PANIC")),
                Ok(Err(e)) => {
                    if !SM_CODES.contains(&e.aws_code()) {
                        problems.push(format!("{op} {what}: {} {e}", e.aws_code()));
                    }
                    if store_bytes(&f) != before {
                        problems.push(format!("{op} {what}: refused but the store changed"));
                    }
                }
                Ok(Ok(_)) => {
                    if what.ends_with("(wrong type)") {
                        problems.push(format!("{op} {what}: accepted"));
                    }
                    // Keep the secret usable for the next case.
                    let _ = f.call("RestoreSecret", json!({"SecretId": "s"}));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// A NextToken is an offset we gave out; a forged one with a huge offset must be refused
/// (InvalidNextTokenException) or give an empty page, never overflow.
#[test]
fn a_forged_next_token_with_a_huge_offset_is_refused_not_a_panic() {
    let f = fixture();
    for i in 0..3 {
        f.ok(
            "CreateSecret",
            json!({"Name": format!("n{i}"), "SecretString": "v"}),
        );
    }
    let forged = crate::aws::b64::encode(format!("cvsm-page-v1:{}", usize::MAX).as_bytes());
    for (op, req) in [
        ("ListSecrets", json!({"NextToken": forged})),
        (
            "ListSecretVersionIds",
            json!({"SecretId": "n0", "NextToken": forged}),
        ),
    ] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.call(op, req)));
        match r {
            Err(_) => panic!("{op}: a forged NextToken {forged} panicked"),
            Ok(Err(e)) => assert_eq!(e.aws_code(), "InvalidNextTokenException", "{e}"),
            Ok(Ok(v)) => assert!(v.get("NextToken").is_none(), "{v}"),
        }
    }
}

/// A tag's Value of the wrong JSON type is stored as "" instead of refused.
#[test]
fn a_tag_value_of_the_wrong_type_is_refused() {
    let f = fixture();
    let before = f.call(
        "CreateSecret",
        json!({"Name": "t", "Tags": [{"Key": "team", "Value": 42}]}),
    );
    assert_eq!(
        code_of(&before),
        "InvalidParameterException",
        "a numeric tag Value was accepted: {:?}",
        f.call("DescribeSecret", json!({"SecretId": "t"}))
            .map(|d| d["Tags"].clone())
    );
}

/// PutSecretValue's VersionStages has 1 to 20 items (AWS's model): an empty list is
/// refused, not a version born deprecated.
#[test]
fn put_secret_value_with_an_empty_version_stages_list_is_refused() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    let r = f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": "v2", "VersionStages": []}),
    );
    assert_eq!(code_of(&r), "InvalidParameterException", "{r:?}");
}

/// RotationRules.Duration is "Nh" (a window of 1 to 24 hours that does not reach the
/// next window); anything else is InvalidParameterException.
#[test]
fn rotation_rules_duration_is_validated() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    for bad in ["banana", "", "0h", "25h", "-3h", "3 hours"] {
        let r = f.call(
            "RotateSecret",
            json!({"SecretId": "s", "RotationCommand": "/bin/true", "RotateImmediately": false,
                "RotationRules": {"ScheduleExpression": "rate(10 days)", "Duration": bad}}),
        );
        assert_eq!(
            code_of(&r),
            "InvalidParameterException",
            "Duration {bad:?}: {r:?}"
        );
    }
}

/// Names in ranges: MON-WED and JUN-JUL are valid cron fields, refused because they
/// contain a W or an L.
#[test]
fn cron_ranges_of_names_with_w_or_l_are_accepted() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    for expr in ["cron(0 12 ? * MON-WED *)", "cron(0 12 1 JUN-JUL ? *)"] {
        let r = f.call(
            "RotateSecret",
            json!({"SecretId": "s", "RotationCommand": "/bin/true", "RotateImmediately": false,
                "RotationRules": {"ScheduleExpression": expr}}),
        );
        assert!(r.is_ok(), "{expr}: {r:?}");
    }
}

/// AWS's cron needs `?` in day-of-month or day-of-week: both set is refused.
#[test]
fn cron_with_both_day_fields_set_is_refused() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    let r = f.call(
        "RotateSecret",
        json!({"SecretId": "s", "RotationCommand": "/bin/true", "RotateImmediately": false,
            "RotationRules": {"ScheduleExpression": "cron(0 12 1 * MON *)"}}),
    );
    assert_eq!(code_of(&r), "InvalidParameterException", "{r:?}");
}

/// A body as deep as the server's JSON parser accepts: its members are copied into the
/// event one level deeper, and the trail must still read back.
#[test]
fn a_deeply_nested_member_does_not_make_the_trail_unreadable() {
    let f = fixture();
    let body_at = |depth: usize| {
        format!(
            r#"{{"Name":"deep","Junk":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let mut depth = 1;
    while serde_json::from_str::<Value>(&body_at(depth + 1)).is_ok() {
        depth += 1;
    }
    let body: Value = serde_json::from_str(&body_at(depth)).unwrap();
    let _ = f.call("CreateSecret", body);
    let r = f.kms.audit_log().events();
    assert!(
        r.is_ok(),
        "a request the server parses (depth {depth}) made the trail unreadable: {:?}",
        r.err()
    );
}

/// GetRandomPassword at its edges.
#[test]
fn get_random_password_edges() {
    let f = fixture();
    let all_out = json!({"ExcludeLowercase": true, "ExcludeUppercase": true,
        "ExcludeNumbers": true, "ExcludePunctuation": true});
    assert_eq!(
        f.code("GetRandomPassword", all_out),
        "InvalidParameterException"
    );
    for n in [0, 4097] {
        assert_eq!(
            f.code("GetRandomPassword", json!({"PasswordLength": n})),
            "InvalidParameterException"
        );
    }
    let long = f.ok("GetRandomPassword", json!({"PasswordLength": 4096}));
    let pw = long["RandomPassword"].as_str().unwrap();
    assert_eq!(pw.chars().count(), 4096);
    for class in [
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
    ] {
        assert!(pw.chars().any(|c| class.contains(c)), "{class}");
    }
    let only_digits = format!(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ{}",
        r##"!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"##
    );
    let d = f.ok(
        "GetRandomPassword",
        json!({"PasswordLength": 64, "ExcludeCharacters": only_digits}),
    );
    assert!(
        d["RandomPassword"]
            .as_str()
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit()),
        "{d}"
    );
    let one = f.ok(
        "GetRandomPassword",
        json!({"PasswordLength": 1, "ExcludeCharacters": "0123456789", "ExcludeLowercase": true,
            "ExcludeUppercase": true, "ExcludePunctuation": true, "IncludeSpace": true}),
    );
    assert_eq!(one["RandomPassword"], " ");
    assert_eq!(
        f.code("GetRandomPassword", json!({"PasswordLength": 2})),
        "InvalidParameterException"
    );
    // The passwords are in no event.
    let ev = serde_json::to_string(&events(&f)).unwrap();
    assert!(!ev.contains(pw), "a password is in the trail");
}

/// Bounds of tokens, names, values, labels, page sizes, filters and tags.
#[test]
fn member_bounds_are_checked_as_aws_checks_them() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "v1", "ClientRequestToken": token(1)}),
    );
    let ip = "InvalidParameterException";
    let cases = [
        (
            "CreateSecret",
            json!({"Name": "n".repeat(513), "SecretString": "v"}),
        ),
        ("CreateSecret", json!({"Name": "", "SecretString": "v"})),
        ("CreateSecret", json!({"Name": "a b", "SecretString": "v"})),
        ("CreateSecret", json!({"Name": "é", "SecretString": "v"})),
        (
            "CreateSecret",
            json!({"Name": "arn:aws:secretsmanager:test-1:111122223333:secret:x"}),
        ),
        (
            "CreateSecret",
            json!({"Name": "n", "SecretString": "v", "ClientRequestToken": "a".repeat(31)}),
        ),
        (
            "CreateSecret",
            json!({"Name": "n", "SecretString": "v", "ClientRequestToken": "a".repeat(65)}),
        ),
        (
            "CreateSecret",
            json!({"Name": "n", "SecretString": "x".repeat(65_537)}),
        ),
        (
            "CreateSecret",
            json!({"Name": "n", "SecretString": "x", "SecretBinary": "eA=="}),
        ),
        ("CreateSecret", json!({"Name": "n", "SecretBinary": ""})),
        (
            "CreateSecret",
            json!({"Name": "n", "Description": "d".repeat(2049)}),
        ),
        (
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "v", "ClientRequestToken": "b".repeat(65)}),
        ),
        ("PutSecretValue", json!({"SecretId": "s"})),
        (
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "v", "VersionStages": [""]}),
        ),
        (
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "v", "VersionStages": ["x".repeat(257)]}),
        ),
        (
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "v", "VersionStages": ["a\nb"]}),
        ),
        (
            "UpdateSecret",
            json!({"SecretId": "s", "SecretString": "v", "ClientRequestToken": "c".repeat(31)}),
        ),
        (
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "", "MoveToVersionId": token(1)}),
        ),
        (
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "L"}),
        ),
        (
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "AWSCURRENT", "RemoveFromVersionId": token(1)}),
        ),
        ("ListSecrets", json!({"MaxResults": 0})),
        ("ListSecrets", json!({"MaxResults": 101})),
        (
            "ListSecretVersionIds",
            json!({"SecretId": "s", "MaxResults": 0}),
        ),
        (
            "ListSecretVersionIds",
            json!({"SecretId": "s", "MaxResults": 101}),
        ),
        ("ListSecrets", json!({"Filters": {"Key": "name"}})),
        (
            "ListSecrets",
            json!({"Filters": [{"Key": "nom", "Values": ["a"]}]}),
        ),
        ("ListSecrets", json!({"Filters": [{"Values": ["a"]}]})),
        (
            "ListSecrets",
            json!({"Filters": [{"Key": "name", "Values": []}]}),
        ),
        (
            "ListSecrets",
            json!({"Filters": [{"Key": "name", "Values": vec!["a"; 11]}]}),
        ),
        (
            "ListSecrets",
            json!({"Filters": [{"Key": "name", "Values": [1]}]}),
        ),
        ("ListSecrets", json!({"SortOrder": "sideways"})),
        (
            "DeleteSecret",
            json!({"SecretId": "s", "RecoveryWindowInDays": 6}),
        ),
        (
            "DeleteSecret",
            json!({"SecretId": "s", "RecoveryWindowInDays": 31}),
        ),
        (
            "DeleteSecret",
            json!({"SecretId": "s", "RecoveryWindowInDays": 7, "ForceDeleteWithoutRecovery": true}),
        ),
        (
            "TagResource",
            json!({"SecretId": "s", "Tags": [{"Key": "aws:x", "Value": "v"}]}),
        ),
        (
            "TagResource",
            json!({"SecretId": "s", "Tags": [{"Key": "k".repeat(129), "Value": "v"}]}),
        ),
        (
            "TagResource",
            json!({"SecretId": "s", "Tags": [{"Key": "k", "Value": "v".repeat(257)}]}),
        ),
        ("TagResource", json!({"SecretId": "s"})),
        ("UntagResource", json!({"SecretId": "s"})),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"AutomaticallyAfterDays": 0}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"AutomaticallyAfterDays": 1001}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"ScheduleExpression": "rate(3 hours)"}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"ScheduleExpression": "cron(61 * * * ? *)"}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"ScheduleExpression": "cron(0 0 1/0 * ? *)"}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"ScheduleExpression": "cron(0 0 31 2 ? *)"}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"ScheduleExpression": "rate(99999999999999999999 days)"}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationRules": {"AutomaticallyAfterDays": 1, "ScheduleExpression": "rate(1 days)"}}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationLambdaARN": "arn:aws:lambda:test-1:111122223333:function:f"}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationCommand": "relative/cmd"}),
        ),
    ];
    let before = store_bytes(&f);
    let mut problems = Vec::new();
    for (op, req) in cases {
        let shown: String = req.to_string().chars().take(120).collect();
        match f.call(op, req) {
            Ok(v) => problems.push(format!("{op} {shown}: accepted: {v}")),
            Err(e) if e.aws_code() != ip => {
                problems.push(format!("{op} {shown}: {} {e}", e.aws_code()))
            }
            Err(_) => {}
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        store_bytes(&f),
        before,
        "a refused request changed the store"
    );
}

/// 10 000 tags (a 300 kB body, well under the server's 1 MiB) are refused at once: a
/// secret has 50 at most. The tags are deduplicated with a scan per tag (quadratic), so
/// this takes seconds of CPU per request, and a 1 MiB body about ten times as long.
#[test]
fn ten_thousand_tags_are_refused_quickly() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    let before = store_bytes(&f);
    let many: Vec<Value> = (0..10_000)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    let started = std::time::Instant::now();
    let r = f.call("TagResource", json!({"SecretId": "s", "Tags": many}));
    let took = started.elapsed();
    assert!(
        matches!(
            code_of(&r),
            "InvalidParameterException" | "LimitExceededException"
        ),
        "{r:?}"
    );
    assert_eq!(store_bytes(&f), before);
    assert!(took.as_millis() < 1000, "10 000 tags took {took:?}");
}

/// A remote client may not name a rotation command, even on a secret that has none yet.
#[test]
fn a_rotation_command_over_the_network_is_refused() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    let r = f.sm.call(
        &f.root,
        "RotateSecret",
        &json!({"SecretId": "s", "RotationCommand": "/bin/sh", "RotateImmediately": false}),
        Via::Server { request_id: "r1" },
    );
    assert_eq!(code_of(&r), "InvalidParameterException");
    let d = f.ok("DescribeSecret", json!({"SecretId": "s"}));
    assert_eq!(d["RotationEnabled"], false);
}

/// SecretId as a name, a full ARN, a partial ARN (no suffix), another region's or
/// account's ARN, a wrong suffix.
#[test]
fn secret_ids_in_every_form() {
    let f = fixture();
    let arn = f.ok(
        "CreateSecret",
        json!({"Name": "db/pw", "SecretString": "v"}),
    )["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    let account = f.kms.account().as_str().to_string();
    let partial = format!("arn:aws:secretsmanager:test-1:{account}:secret:db/pw");
    for id in [arn.as_str(), "db/pw", partial.as_str()] {
        assert_eq!(
            f.ok("DescribeSecret", json!({"SecretId": id}))["ARN"],
            arn.as_str(),
            "{id}"
        );
    }
    let suffix = &arn[arn.len() - 6..];
    for id in [
        format!("arn:aws:secretsmanager:test-2:{account}:secret:db/pw-{suffix}"),
        format!("arn:aws:secretsmanager:test-1:999999999999:secret:db/pw-{suffix}"),
        format!("arn:aws:secretsmanager:test-1:{account}:secret:db/pw-ZZZZZZ"),
        format!("arn:aws-cn:secretsmanager:test-1:{account}:secret:db/pw"),
        "db/pw-ZZZZZZ".to_string(),
        "DB/PW".to_string(),
        "db".to_string(),
        "".to_string(),
    ] {
        let c = f.code("GetSecretValue", json!({"SecretId": id}));
        assert!(
            c == "ResourceNotFoundException" || c == "InvalidParameterException",
            "{id}: {c}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 4. AWS semantics
// ---------------------------------------------------------------------------------------

/// "If this operation creates the first version for the secret, then Secrets Manager
/// automatically attaches the staging label AWSCURRENT to it" (PutSecretValue), whatever
/// VersionStages says.
#[test]
fn the_first_version_put_gets_awscurrent_whatever_its_stages() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s"}));
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": "v", "ClientRequestToken": token(1), "VersionStages": ["AWSPENDING"]}),
    );
    let versions = all_versions(&f.sm, &f.root, "s");
    assert_labels_consistent(&versions, "first version with AWSPENDING");
    assert_eq!(
        f.ok("GetSecretValue", json!({"SecretId": "s"}))["SecretString"],
        "v"
    );
}

/// "If you forcibly delete an already deleted or nonexistent secret, the operation does
/// not return ResourceNotFoundException" (DeleteSecret, ForceDeleteWithoutRecovery).
#[test]
fn force_delete_of_a_missing_secret_succeeds() {
    let f = fixture();
    let r = f.call(
        "DeleteSecret",
        json!({"SecretId": "never-was", "ForceDeleteWithoutRecovery": true}),
    );
    assert!(r.is_ok(), "{r:?}");
}

/// The description filter is a prefix match that is not case-sensitive (AWS's Filter).
#[test]
fn list_secrets_description_filter_ignores_case() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "a", "Description": "Production database"}),
    );
    let l = f.ok(
        "ListSecrets",
        json!({"Filters": [{"Key": "description", "Values": ["production"]}]}),
    );
    assert_eq!(l["SecretList"].as_array().unwrap().len(), 1, "{l}");
}

/// The all filter "breaks the filter value string into words and then searches all
/// attributes for matches. Not case-sensitive."
#[test]
fn list_secrets_all_filter_matches_words_ignoring_case() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "svc/db", "Description": "Main store",
            "Tags": [{"Key": "Env", "Value": "Prod"}]}),
    );
    for v in ["prod", "store", "ENV"] {
        let l = f.ok(
            "ListSecrets",
            json!({"Filters": [{"Key": "all", "Values": [v]}]}),
        );
        assert_eq!(l["SecretList"].as_array().unwrap().len(), 1, "all={v}: {l}");
    }
}

/// The other filter rules hold: name is a case-sensitive prefix, ! negates, several keys
/// must all match, IncludePlannedDeletion shows deleted secrets, pages chain.
#[test]
fn list_secrets_filters_and_planned_deletion() {
    let f = fixture();
    for (n, team) in [("app/a", "red"), ("app/b", "blue"), ("db/c", "red")] {
        f.ok(
            "CreateSecret",
            json!({"Name": n, "Tags": [{"Key": "team", "Value": team}]}),
        );
    }
    let names = |req: Value| -> Vec<String> {
        f.ok("ListSecrets", req)["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(json!({"Filters": [{"Key": "name", "Values": ["app/"]}]})),
        ["app/a", "app/b"]
    );
    assert!(names(json!({"Filters": [{"Key": "name", "Values": ["APP/"]}]})).is_empty());
    assert_eq!(
        names(json!({"Filters": [{"Key": "name", "Values": ["!app/"]}]})),
        ["db/c"]
    );
    assert_eq!(
        names(
            json!({"Filters": [{"Key": "name", "Values": ["app/"]}, {"Key": "tag-value", "Values": ["red"]}]})
        ),
        ["app/a"]
    );
    f.ok(
        "DeleteSecret",
        json!({"SecretId": "app/a", "RecoveryWindowInDays": 7}),
    );
    assert_eq!(names(json!({})), ["app/b", "db/c"]);
    assert_eq!(
        names(json!({"IncludePlannedDeletion": true})),
        ["app/a", "app/b", "db/c"]
    );
    let p1 = f.ok("ListSecrets", json!({"MaxResults": 1}));
    let p2 = f.ok(
        "ListSecrets",
        json!({"MaxResults": 1, "NextToken": p1["NextToken"]}),
    );
    assert_eq!(p2["SecretList"][0]["Name"], "db/c");
    assert!(p2.get("NextToken").is_none(), "{p2}");
}

/// AWSPREVIOUS follows AWSCURRENT wherever it moves; labels stay unique.
#[test]
fn awsprevious_follows_awscurrent() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    for i in 2..=3 {
        f.ok(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": format!("{i}"), "ClientRequestToken": token(i)}),
        );
    }
    let v = all_versions(&f.sm, &f.root, "s");
    assert_eq!(v[&token(3)], ["AWSCURRENT"]);
    assert_eq!(v[&token(2)], ["AWSPREVIOUS"]);
    assert!(v[&token(1)].is_empty());
    // Back to version 1.
    f.ok(
        "UpdateSecretVersionStage",
        json!({"SecretId": "s", "VersionStage": "AWSCURRENT", "MoveToVersionId": token(1), "RemoveFromVersionId": token(3)}),
    );
    let v = all_versions(&f.sm, &f.root, "s");
    assert_eq!(v[&token(1)], ["AWSCURRENT"]);
    assert_eq!(v[&token(3)], ["AWSPREVIOUS"]);
    assert!(v[&token(2)].is_empty());
    // A put with AWSCURRENT on the version that is AWSPREVIOUS.
    f.ok(
        "UpdateSecretVersionStage",
        json!({"SecretId": "s", "VersionStage": "AWSCURRENT", "MoveToVersionId": token(3), "RemoveFromVersionId": token(1)}),
    );
    let v = all_versions(&f.sm, &f.root, "s");
    assert_labels_consistent(&v, "moved back");
    assert_eq!(v[&token(3)], ["AWSCURRENT"]);
    assert_eq!(v[&token(1)], ["AWSPREVIOUS"]);
    // A custom label moves alone, and RemoveFromVersionId must name its holder.
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": "4", "ClientRequestToken": token(4), "VersionStages": ["blue"]}),
    );
    assert_eq!(
        f.code(
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "blue", "MoveToVersionId": token(2)})
        ),
        "InvalidParameterException"
    );
    assert_eq!(
        f.code(
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "blue", "MoveToVersionId": token(2), "RemoveFromVersionId": token(1)})
        ),
        "InvalidParameterException"
    );
    f.ok(
        "UpdateSecretVersionStage",
        json!({"SecretId": "s", "VersionStage": "blue", "MoveToVersionId": token(2), "RemoveFromVersionId": token(4)}),
    );
    let v = all_versions(&f.sm, &f.root, "s");
    assert_labels_consistent(&v, "custom label");
    assert_eq!(v[&token(3)], ["AWSCURRENT"]);
    assert_eq!(v[&token(2)], ["blue"]);
}

/// Idempotent tokens: the same token and value again changes nothing (Create, Put,
/// Update); another value is ResourceExistsException.
#[test]
fn client_request_tokens_are_idempotent() {
    let f = fixture();
    let a = f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    let b = f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    assert_eq!(a["ARN"], b["ARN"]);
    assert_eq!(
        f.code(
            "CreateSecret",
            json!({"Name": "s", "SecretString": "2", "ClientRequestToken": token(1)})
        ),
        "ResourceExistsException"
    );
    f.ok(
        "UpdateSecret",
        json!({"SecretId": "s", "SecretString": "2", "ClientRequestToken": token(2)}),
    );
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": "3", "ClientRequestToken": token(3)}),
    );
    // Retrying the update after the put must not move AWSCURRENT back.
    f.ok(
        "UpdateSecret",
        json!({"SecretId": "s", "SecretString": "2", "ClientRequestToken": token(2)}),
    );
    assert_eq!(
        f.ok("GetSecretValue", json!({"SecretId": "s"}))["SecretString"],
        "3"
    );
    assert_eq!(
        f.code(
            "UpdateSecret",
            json!({"SecretId": "s", "SecretString": "x", "ClientRequestToken": token(2)})
        ),
        "ResourceExistsException"
    );
    // A string and a binary of the same bytes are different values.
    assert_eq!(
        f.code(
            "PutSecretValue",
            json!({"SecretId": "s", "SecretBinary": "Mw==", "ClientRequestToken": token(3)})
        ),
        "ResourceExistsException"
    );
    assert_eq!(all_versions(&f.sm, &f.root, "s").len(), 3);
}

/// A secret scheduled for deletion: its value and changes are refused with
/// InvalidRequestException, its metadata is readable, RestoreSecret brings it back;
/// RestoreSecret on a live secret is harmless; the window is 7 to 30 days.
#[test]
fn deleted_secret_behaviour() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    let live = f.ok("RestoreSecret", json!({"SecretId": "s"}));
    assert_eq!(live["Name"], "s");
    let d = f.ok(
        "DeleteSecret",
        json!({"SecretId": "s", "RecoveryWindowInDays": 30}),
    );
    let date = d["DeletionDate"].as_i64().unwrap();
    let desc = f.ok("DescribeSecret", json!({"SecretId": "s"}));
    assert!(desc["DeletedDate"].as_i64().is_some(), "{desc}");
    assert!(date - desc["DeletedDate"].as_i64().unwrap() == 30 * 86_400);
    let ir = "InvalidRequestException";
    for (op, req) in [
        ("GetSecretValue", json!({"SecretId": "s"})),
        (
            "PutSecretValue",
            json!({"SecretId": "s", "SecretString": "2"}),
        ),
        ("UpdateSecret", json!({"SecretId": "s", "Description": "x"})),
        (
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "L", "MoveToVersionId": token(1)}),
        ),
        (
            "RotateSecret",
            json!({"SecretId": "s", "RotationCommand": "/bin/true"}),
        ),
        ("DeleteSecret", json!({"SecretId": "s"})),
        ("CreateSecret", json!({"Name": "s", "SecretString": "3"})),
    ] {
        assert_eq!(f.code(op, req.clone()), ir, "{op} {req}");
    }
    f.ok("RestoreSecret", json!({"SecretId": "s"}));
    assert!(
        f.ok("DescribeSecret", json!({"SecretId": "s"}))
            .get("DeletedDate")
            .is_none()
    );
    assert_eq!(
        f.ok("GetSecretValue", json!({"SecretId": "s"}))["SecretString"],
        "1"
    );
}

/// DescribeSecret answers AWS's members (and no value).
#[test]
fn describe_secret_fields() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "hush-123", "Description": "d",
            "Tags": [{"Key": "k", "Value": "v"}], "ClientRequestToken": token(1)}),
    );
    let d = f.ok("DescribeSecret", json!({"SecretId": "s"}));
    for k in [
        "ARN",
        "Name",
        "Description",
        "LastChangedDate",
        "CreatedDate",
        "Tags",
        "VersionIdsToStages",
        "RotationEnabled",
    ] {
        assert!(d.get(k).is_some(), "{k} missing: {d}");
    }
    assert!(
        d.get("KmsKeyId").is_none(),
        "the default key is not named: {d}"
    );
    assert!(!d.to_string().contains("hush-123"));
}

// ---------------------------------------------------------------------------------------
// 5. Secrets never leak
// ---------------------------------------------------------------------------------------

/// Values of accepted and refused calls, and passwords, appear in no error, no event and
/// no file of the data dir (neither raw nor base64).
#[test]
fn values_of_refused_calls_leak_nowhere() {
    let f = fixture();
    let canary = |i: usize| format!("CANARY{i:02}-7f3e9a1b5c");
    let nobody = no_permission_user(&f, "nobody");
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": canary(0), "ClientRequestToken": token(1)}),
    );
    f.ok("CreateSecret", json!({"Name": "gone", "SecretString": "x"}));
    f.ok("DeleteSecret", json!({"SecretId": "gone"}));
    let b64 = |s: &str| crate::aws::b64::encode(s.as_bytes());
    let mut errors: Vec<String> = Vec::new();
    let mut push = |r: Result<Value, AwsError>| match r {
        Ok(v) => panic!("expected a refusal: {v}"),
        Err(e) => errors.push(format!("{e} | {e:?} | {}", e.remote_message())),
    };
    push(f.as_user(
        &nobody,
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": canary(1)}),
    ));
    push(f.as_user(
        &nobody,
        "CreateSecret",
        json!({"Name": "n", "SecretString": canary(2)}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": canary(3).repeat(6000)}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": {"nested": canary(4)}}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretBinary": format!("!{}", canary(5))}),
    ));
    push(f.call(
        "CreateSecret",
        json!({"Name": "s", "SecretString": canary(6)}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": canary(7), "ClientRequestToken": token(1)}),
    ));
    push(f.call(
        "UpdateSecret",
        json!({"SecretId": "gone", "SecretString": canary(8)}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": canary(9), "SecretBinary": b64(&canary(9))}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": canary(10), "VersionStages": ["a\u{1}"]}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "missing", "SecretBinary": b64(&canary(11))}),
    ));
    push(f.call(
        "CreateSecret",
        json!({"Name": "bad name", "SecretString": canary(12)}),
    ));
    push(f.call(
        "UpdateSecret",
        json!({"SecretId": "s", "SecretString": canary(13), "KmsKeyId": "alias/nope"}),
    ));
    push(f.call(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": canary(14), "VersionStages": vec!["x"; 21].iter().enumerate().map(|(i, _)| format!("l{i}")).collect::<Vec<_>>()}),
    ));
    let pw = f.ok("GetRandomPassword", json!({"PasswordLength": 64}))["RandomPassword"]
        .as_str()
        .unwrap()
        .to_string();
    let trail = serde_json::to_string(&events(&f)).unwrap();
    let files: Vec<(PathBuf, Vec<u8>)> = files_under(f.dir.path())
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let mut needles: Vec<String> = (0..15).map(canary).collect();
    needles.extend((0..15).map(|i| b64(&canary(i))));
    needles.push(pw);
    for n in &needles {
        for e in &errors {
            assert!(!e.contains(n.as_str()), "{n} in an error: {e}");
        }
        assert!(!trail.contains(n.as_str()), "{n} in the trail");
        for (p, b) in &files {
            assert!(!contains(b, n.as_bytes()), "{n} in {}", p.display());
        }
    }
}

// ---------------------------------------------------------------------------------------
// 6. Authorization
// ---------------------------------------------------------------------------------------

fn request_on(op: &str, id: &str) -> Value {
    let mut r = base_request(op);
    if r.get("SecretId").is_some() {
        r["SecretId"] = id.into();
    }
    if op == "CreateSecret" {
        r["Name"] = id.into();
    }
    r
}

/// A caller with no Secrets Manager permission is refused every operation, on a secret
/// that exists as on one that does not, and nothing changes.
#[test]
fn without_permission_every_operation_is_denied_on_existing_and_missing_secrets() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "v", "ClientRequestToken": token(1)}),
    );
    let nobody = no_permission_user(&f, "nobody");
    let before = store_bytes(&f);
    let mut problems = Vec::new();
    for op in OPERATIONS {
        for id in ["s", "missing"] {
            let r = f.as_user(&nobody, op, request_on(op, id));
            if code_of(&r) != "AccessDeniedException" {
                problems.push(format!("{op} on {id}: {}", code_of(&r)));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(store_bytes(&f), before);
}

/// The refusal must not tell a caller with no permission whether the secret exists: the
/// message for an existing secret names its full ARN (with AWS's random suffix), the one
/// for a missing secret names only what was asked. AWS names the SecretId as given.
#[test]
fn a_refusal_does_not_tell_whether_the_secret_exists() {
    let f = fixture();
    let arn = f.ok(
        "CreateSecret",
        json!({"Name": "payroll", "SecretString": "v"}),
    )["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    let nobody = no_permission_user(&f, "nobody");
    let mut problems = Vec::new();
    for op in OPERATIONS {
        let Some(_) = base_request(op).get("SecretId") else {
            continue;
        };
        let existing = f
            .as_user(&nobody, op, request_on(op, "payroll"))
            .unwrap_err();
        let missing = f
            .as_user(&nobody, op, request_on(op, "payrolx"))
            .unwrap_err();
        let a = existing.remote_message();
        let b = missing.remote_message().replace("payrolx", "payroll");
        if a.contains(&arn) || a != b {
            problems.push(format!("{op}:\n  existing: {a}\n  missing:  {b}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A resource policy's Deny beats an identity Allow; a resource policy naming another
/// user, or the account, does not admit a user without an identity policy.
#[test]
fn resource_policy_deny_wins_and_names_only_its_principals() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v"}));
    let admin = user(
        &f,
        "admin",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}),
    );
    let alice = no_permission_user(&f, "alice");
    let bob = no_permission_user(&f, "bob");
    let account = f.kms.account().as_str().to_string();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": {"AWS": admin.identity.arn()},
            "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": alice.identity.arn()},
            "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")},
            "Action": "secretsmanager:DescribeSecret", "Resource": "*"}]});
    f.ok(
        "PutResourcePolicy",
        json!({"SecretId": "s", "ResourcePolicy": policy.to_string()}),
    );
    let get = json!({"SecretId": "s"});
    assert_eq!(
        code_of(&f.as_user(&admin, "GetSecretValue", get.clone())),
        "AccessDeniedException"
    );
    assert_eq!(
        code_of(&f.as_user(&alice, "GetSecretValue", get.clone())),
        "ok"
    );
    assert_eq!(
        code_of(&f.as_user(&bob, "GetSecretValue", get.clone())),
        "AccessDeniedException"
    );
    // The account as principal delegates to IAM: bob has no identity policy.
    assert_eq!(
        code_of(&f.as_user(&bob, "DescribeSecret", get.clone())),
        "AccessDeniedException"
    );
    assert_eq!(code_of(&f.as_user(&admin, "DescribeSecret", get)), "ok");
}

/// aws:username and secretsmanager:ResourceTag/... conditions decide as written.
#[test]
fn username_and_resource_tag_conditions() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "red", "SecretString": "r", "Tags": [{"Key": "team", "Value": "red"}]}),
    );
    f.ok(
        "CreateSecret",
        json!({"Name": "blue", "SecretString": "b", "Tags": [{"Key": "team", "Value": "blue"}]}),
    );
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
            "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": "red", "aws:username": "alice"}}}]});
    let alice = user(&f, "alice", policy.clone());
    let mallory = user(&f, "mallory", policy);
    let get = |who, id: &str| code_of(&f.as_user(who, "GetSecretValue", json!({"SecretId": id})));
    assert_eq!(get(&alice, "red"), "ok");
    assert_eq!(get(&alice, "blue"), "AccessDeniedException");
    assert_eq!(get(&alice, "missing"), "AccessDeniedException");
    assert_eq!(get(&mallory, "red"), "AccessDeniedException");
}

/// AWS's guardrail: Deny PutResourcePolicy when secretsmanager:BlockPublicPolicy is
/// false. The key is never set, so the Deny never applies and a public policy goes in.
#[test]
fn condition_key_block_public_policy_is_enforced() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v"}));
    let admin = user(
        &f,
        "admin",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "secretsmanager:PutResourcePolicy", "Resource": "*",
                "Condition": {"Bool": {"secretsmanager:BlockPublicPolicy": "false"}}}]}),
    );
    let public = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
    let r = f.as_user(
        &admin,
        "PutResourcePolicy",
        json!({"SecretId": "s", "ResourcePolicy": public, "BlockPublicPolicy": false}),
    );
    assert_eq!(code_of(&r), "AccessDeniedException", "{r:?}");
}

/// Tag-based access (ABAC) relies on aws:TagKeys / aws:RequestTag to stop a user from
/// retagging a secret into their reach. Neither key is set for TagResource, so the Deny
/// never applies: the user tags a red secret blue and reads it.
#[test]
fn condition_keys_on_tags_guard_tag_resource() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "red", "SecretString": "red-value", "Tags": [{"Key": "team", "Value": "red"}]}),
    );
    let blue = user(
        &f,
        "blue",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
                "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": "blue"}}},
            {"Effect": "Allow", "Action": "secretsmanager:TagResource", "Resource": "*"},
            {"Effect": "Deny", "Action": "secretsmanager:TagResource", "Resource": "*",
                "Condition": {"ForAnyValue:StringEquals": {"aws:TagKeys": ["team"]}}}]}),
    );
    assert_eq!(
        code_of(&f.as_user(&blue, "GetSecretValue", json!({"SecretId": "red"}))),
        "AccessDeniedException"
    );
    let r = f.as_user(
        &blue,
        "TagResource",
        json!({"SecretId": "red", "Tags": [{"Key": "team", "Value": "blue"}]}),
    );
    let read = f.as_user(&blue, "GetSecretValue", json!({"SecretId": "red"}));
    assert_eq!(
        code_of(&r),
        "AccessDeniedException",
        "retagging allowed; then GetSecretValue: {}",
        code_of(&read)
    );
}

/// Deny GetSecretValue of AWSPREVIOUS with secretsmanager:VersionStage: never applies.
#[test]
fn condition_key_version_stage_is_enforced() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "old", "ClientRequestToken": token(1)}),
    );
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": "new", "ClientRequestToken": token(2)}),
    );
    let u = user(
        &f,
        "u",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
            {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
                "Condition": {"StringEquals": {"secretsmanager:VersionStage": "AWSPREVIOUS"}}}]}),
    );
    assert_eq!(
        code_of(&f.as_user(&u, "GetSecretValue", json!({"SecretId": "s"}))),
        "ok"
    );
    let r = f.as_user(
        &u,
        "GetSecretValue",
        json!({"SecretId": "s", "VersionStage": "AWSPREVIOUS"}),
    );
    assert_eq!(code_of(&r), "AccessDeniedException", "{r:?}");
}

/// CreateSecret allowed only for names under app/ (secretsmanager:Name): the key is not
/// set for CreateSecret, so no name is ever allowed.
#[test]
fn condition_key_name_on_create_secret() {
    let f = fixture();
    let u = user(
        &f,
        "u",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:CreateSecret", "Resource": "*",
                "Condition": {"StringLike": {"secretsmanager:Name": "app/*"}}}]}),
    );
    let r = f.as_user(&u, "CreateSecret", json!({"Name": "app/x"}));
    assert!(r.is_ok(), "{r:?}");
    let r = f.as_user(&u, "CreateSecret", json!({"Name": "db/x"}));
    assert_eq!(code_of(&r), "AccessDeniedException");
}

// ---------------------------------------------------------------------------------------
// Processes and time
// ---------------------------------------------------------------------------------------

const CHILD_DIR_ENV: &str = "CRYPTVOL_SM_ATTACK_DIR";
const CHILD_WORKER_ENV: &str = "CRYPTVOL_SM_ATTACK_WORKER";
const CHILD_FOREVER_ENV: &str = "CRYPTVOL_SM_ATTACK_FOREVER";
const CHILD_TEST: &str = "secrets::tests::attack::process_race_child";

/// The body of a child process of the process tests below; does nothing on its own.
#[test]
fn process_race_child() {
    let (Ok(dir), Ok(w)) = (
        std::env::var(CHILD_DIR_ENV),
        std::env::var(CHILD_WORKER_ENV),
    ) else {
        return;
    };
    let w: usize = w.parse().unwrap();
    let sm = reopen_region(Path::new(&dir), "test-1");
    let root =
        crate::iam::caller::Caller::local(crate::iam::Identity::root(sm.kms.account().clone()));
    let forever = std::env::var(CHILD_FOREVER_ENV).is_ok();
    let mut i = 0;
    while forever || i < 15 {
        let stages = if i % 2 == 0 {
            json!(["AWSCURRENT"])
        } else {
            json!([format!("P{w}")])
        };
        sm.call(
            &root,
            "PutSecretValue",
            &json!({"SecretId": "proc", "SecretString": format!("w{w}-{}", i % 100),
                "ClientRequestToken": tok(40 + w, i % 100), "VersionStages": stages}),
            Via::Cli,
        )
        .unwrap();
        i += 1;
    }
}

fn spawn_child(f: &Fixture, w: usize, forever: bool) -> std::process::Child {
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, f.dir.path())
        .env(CHILD_WORKER_ENV, w.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if forever {
        c.env(CHILD_FOREVER_ENV, "1");
    }
    c.spawn().unwrap()
}

/// Three processes and this one put versions of one secret at once: none is lost, the
/// labels stay consistent.
#[test]
fn race_between_processes_loses_no_version() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "proc", "SecretString": "v0", "ClientRequestToken": tok(0, 0)}),
    );
    let children: Vec<_> = (0..3).map(|w| spawn_child(&f, w, false)).collect();
    for i in 0..15 {
        f.ok(
            "PutSecretValue",
            json!({"SecretId": "proc", "SecretString": format!("p{i}"), "ClientRequestToken": tok(30, i)}),
        );
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "child: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let versions = all_versions(&f.sm, &f.root, "proc");
    for i in 0..15 {
        assert!(versions.contains_key(&tok(30, i)), "mine {i} lost");
        for w in 0..3 {
            assert!(
                versions.contains_key(&tok(40 + w, i)),
                "child {w}'s {i} lost"
            );
        }
    }
    assert_eq!(versions.len(), 61);
    assert_labels_consistent(&versions, "process race");
}

/// A writer killed (SIGKILL) at random moments leaves a store that opens, with
/// consistent labels, and the secret stays usable.
#[test]
fn a_writer_killed_mid_change_leaves_a_usable_store() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "proc", "SecretString": "v0", "ClientRequestToken": tok(0, 0)}),
    );
    for round in 0..6u64 {
        let mut c = spawn_child(&f, round as usize, true);
        std::thread::sleep(std::time::Duration::from_millis(150 + round * 37));
        c.kill().unwrap();
        c.wait().unwrap();
        let versions = all_versions(&f.sm, &f.root, "proc");
        assert_labels_consistent(&versions, &format!("after kill {round}"));
        f.ok("GetSecretValue", json!({"SecretId": "proc"}));
        f.ok(
            "PutSecretValue",
            json!({"SecretId": "proc", "SecretString": format!("after{round}")}),
        );
    }
    // The children did write before they were killed.
    let versions = all_versions(&f.sm, &f.root, "proc");
    assert!(versions.len() > 12, "{} versions", versions.len());
}

/// After the recovery window the secret is gone for good: not found, not listed, its
/// name free again.
#[test]
fn a_secret_past_its_recovery_window_is_gone() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "e", "SecretString": "v"}));
    f.ok(
        "DeleteSecret",
        json!({"SecretId": "e", "RecoveryWindowInDays": 7}),
    );
    let r = Region::parse("test-1").unwrap();
    let mut no = || -> Result<crate::crypto::SecretBytes, AwsError> { panic!("no passphrase") };
    let later = SecretsManager::open(Arc::new(
        EmbeddedKms::open_region(f.dir.path(), &r, &mut no, Clock::Skewed(7 * 86_400 + 60))
            .unwrap(),
    ))
    .unwrap();
    let call = |op: &str, req: Value| later.call(&f.root, op, &req, Via::Cli);
    assert_eq!(
        code_of(&call("RestoreSecret", json!({"SecretId": "e"}))),
        "ResourceNotFoundException"
    );
    let l = call("ListSecrets", json!({"IncludePlannedDeletion": true})).unwrap();
    assert_eq!(l["SecretList"], json!([]));
    assert_eq!(
        code_of(&call(
            "CreateSecret",
            json!({"Name": "e", "SecretString": "w"})
        )),
        "ok"
    );
}

/// "Secrets Manager removes outdated versions when there are more than 100, but it does
/// not remove versions created less than 24 hours ago" (PutSecretValue). Here the 101st
/// deprecated version is dropped at once, minutes old.
#[test]
fn deprecated_versions_younger_than_a_day_are_kept() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "many", "SecretString": "v", "ClientRequestToken": tok(0, 0)}),
    );
    for i in 0..102 {
        f.ok(
            "PutSecretValue",
            json!({"SecretId": "many", "SecretString": format!("v{i}"), "ClientRequestToken": tok(1 + i / 100, i % 100)}),
        );
    }
    let versions = all_versions(&f.sm, &f.root, "many");
    assert!(
        versions.contains_key(&tok(0, 0)),
        "the first version, minutes old, was dropped ({} versions kept)",
        versions.len()
    );
    assert_eq!(versions.len(), 103);
}

/// "You can rotate a secret as often as every four hours" (RotationRulesType): a cron
/// that fires every 15 minutes or every hour is refused as rate(1 hours) is.
#[test]
fn cron_schedules_more_often_than_every_four_hours_are_refused() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v1"}));
    for expr in ["cron(0/15 * * * ? *)", "cron(0 * * * ? *)"] {
        let r = f.call(
            "RotateSecret",
            json!({"SecretId": "s", "RotationCommand": "/bin/true", "RotateImmediately": false,
                "RotationRules": {"ScheduleExpression": expr}}),
        );
        assert_eq!(code_of(&r), "InvalidParameterException", "{expr}: {r:?}");
    }
}

/// The rotation command calls back "as the caller" through `CRYPTVOL_PROFILE`, but only
/// the root and users are mapped: for a role the variable is not set, and the CLI's
/// default profile is the account root. A role allowed only RotateSecret thus has the
/// command's callbacks (PutSecretValue, UpdateSecretVersionStage) run as root.
#[test]
fn a_rotation_started_by_a_role_does_not_call_back_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "r", "SecretString": "v1"}));
    let log = f.dir.path().join("profile.log");
    let cmd = f.dir.path().join("rotate.sh");
    std::fs::write(
        &cmd,
        format!(
            "#!/bin/sh\necho \"profile=${{CRYPTVOL_PROFILE-unset}}\" >> {}\nexit 1\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Set up by root: the schedule is saved, and its testSecret run (as root) fails.
    let set = f.call(
        "RotateSecret",
        json!({"SecretId": "r", "RotationCommand": cmd, "RotateImmediately": false}),
    );
    assert!(
        matches!(
            set,
            Err(AwsError::RotationFailed {
                step: "testSecret",
                ..
            })
        ),
        "{set:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        "profile=root"
    );
    std::fs::remove_file(&log).unwrap();
    let store = crate::iam::IdentityStore::new(f.dir.path(), f.kms.account().clone());
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{}:root", f.kms.account().as_str())},
        "Action": "sts:AssumeRole"}]})
    .to_string();
    store
        .create(crate::iam::EntityKind::Role, "rotator", "", Some(&trust))
        .unwrap();
    store
        .put_policy(
            crate::iam::EntityKind::Role,
            "rotator",
            "p",
            &json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "secretsmanager:RotateSecret", "Resource": "*"}]})
            .to_string(),
        )
        .unwrap();
    let role =
        crate::iam::caller::Caller::local(store.resolve_profile(Some("role/rotator")).unwrap());
    let r = f.as_user(&role, "RotateSecret", json!({"SecretId": "r"}));
    assert!(r.is_err(), "the command fails at createSecret: {r:?}");
    let seen = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        seen.trim(),
        "profile=role/rotator",
        "the role's rotation ran its callbacks with this profile (unset = root)"
    );
}

/// secretsmanager:SecretId is "the SecretID value in the request" (AWS's condition keys):
/// a Deny on the name the caller uses must apply. Here the key holds the secret's ARN, so
/// a Deny written for the name never matches.
#[test]
fn condition_key_secret_id_is_the_id_in_the_request() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "db", "SecretString": "v"}));
    let u = user(
        &f,
        "u",
        json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
            {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*",
                "Condition": {"StringEquals": {"secretsmanager:SecretId": "db"}}}]}),
    );
    let r = f.as_user(&u, "GetSecretValue", json!({"SecretId": "db"}));
    assert_eq!(code_of(&r), "AccessDeniedException", "{r:?}");
}

/// NextToken is an offset into the list as it is at each call: deleting a secret of an
/// earlier page makes the next page skip one that was never shown. AWS's token marks a
/// position in the listing, so every secret present throughout is listed once.
#[test]
fn paging_does_not_skip_a_secret_when_an_earlier_one_goes() {
    let f = fixture();
    for n in ["a", "b", "c"] {
        f.ok("CreateSecret", json!({"Name": n, "SecretString": "v"}));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let p1 = f.ok("ListSecrets", json!({"MaxResults": 1}));
    assert_eq!(p1["SecretList"][0]["Name"], "a");
    f.ok(
        "DeleteSecret",
        json!({"SecretId": "a", "ForceDeleteWithoutRecovery": true}),
    );
    let mut seen = Vec::new();
    let mut token = p1["NextToken"].clone();
    while !token.is_null() {
        let p = f.ok("ListSecrets", json!({"MaxResults": 1, "NextToken": token}));
        for s in p["SecretList"].as_array().unwrap() {
            seen.push(s["Name"].as_str().unwrap().to_string());
        }
        token = p.get("NextToken").cloned().unwrap_or(Value::Null);
    }
    assert_eq!(seen, ["b", "c"], "secret b was never listed");
}

/// A writer killed during its atomic replace leaves its temp file (a whole sealed copy of
/// the store, with versions later deleted) in secrets/ for good: nothing removes it.
#[test]
fn a_killed_writer_leaves_no_stale_copy_of_the_store() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "proc", "SecretString": "v0", "ClientRequestToken": tok(0, 0)}),
    );
    let dir = f.kms.region_dir().secrets_dir();
    let stale = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect::<Vec<_>>()
    };
    for round in 0..12u64 {
        let mut c = spawn_child(&f, (round % 5) as usize, true);
        std::thread::sleep(std::time::Duration::from_millis(120 + round * 23));
        c.kill().unwrap();
        c.wait().unwrap();
        f.ok(
            "PutSecretValue",
            json!({"SecretId": "proc", "SecretString": format!("after{round}")}),
        );
        let left = stale();
        assert!(left.is_empty(), "after kill {round}: {left:?}");
    }
}

/// A resource policy names a user by ARN, but AWS binds it to the user's unique id when
/// it is put (as this KMS does for key policies, `policy_principals`): a user deleted and
/// created again under the same name is someone else and must not inherit the access.
#[test]
fn a_resource_policy_does_not_admit_a_recreated_user_of_the_same_name() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v"}));
    let store = crate::iam::IdentityStore::new(f.dir.path(), f.kms.account().clone());
    let kind = crate::iam::EntityKind::User;
    store.create(kind, "alice", "", None).unwrap();
    let alice = crate::iam::caller::Caller::local(store.resolve_profile(Some("alice")).unwrap());
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": alice.identity.arn()},
        "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]});
    f.ok(
        "PutResourcePolicy",
        json!({"SecretId": "s", "ResourcePolicy": policy.to_string()}),
    );
    assert_eq!(
        code_of(&f.as_user(&alice, "GetSecretValue", json!({"SecretId": "s"}))),
        "ok"
    );
    store.delete(kind, "alice").unwrap();
    store.create(kind, "alice", "", None).unwrap();
    let other = crate::iam::caller::Caller::local(store.resolve_profile(Some("alice")).unwrap());
    assert_ne!(other.identity.unique_id(), alice.identity.unique_id());
    let r = f.as_user(&other, "GetSecretValue", json!({"SecretId": "s"}));
    assert_eq!(code_of(&r), "AccessDeniedException", "{r:?}");
}

/// A resource policy naming a user of the account that does not exist is refused as AWS
/// refuses it (MalformedPolicyDocumentException, an invalid principal): otherwise whoever
/// later creates that user inherits the access.
#[test]
fn a_resource_policy_naming_a_user_that_does_not_exist_is_refused() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v"}));
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{}:user/ghost", f.kms.account().as_str())},
        "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]});
    let r = f.call(
        "PutResourcePolicy",
        json!({"SecretId": "s", "ResourcePolicy": policy.to_string()}),
    );
    assert_eq!(code_of(&r), "MalformedPolicyDocumentException", "{r:?}");
}

/// BlockPublicPolicy must refuse a policy that lets everyone in, however it is written:
/// an Allow with NotPrincipal (everyone but one) or a Principal "*" whose Condition every
/// caller meets. AWS checks the policy's meaning (PublicPolicyException); here only a
/// literal "*" without a Condition is caught, and the NotPrincipal policy then lets a user
/// with no permission at all read the value.
#[test]
fn block_public_policy_catches_every_way_of_saying_everyone() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "v"}));
    let account = f.kms.account().as_str().to_string();
    let nobody = no_permission_user(&f, "nobody");
    let policies = [
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "NotPrincipal": {"AWS": format!("arn:aws:iam::{account}:user/someone-else")},
            "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]}),
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
            "Action": "secretsmanager:GetSecretValue", "Resource": "*",
            "Condition": {"StringLike": {"aws:PrincipalArn": "*"}}}]}),
    ];
    let mut problems = Vec::new();
    for p in policies {
        let r = f.call(
            "PutResourcePolicy",
            json!({"SecretId": "s", "ResourcePolicy": p.to_string(), "BlockPublicPolicy": true}),
        );
        if code_of(&r) == "ok" {
            let read = f.as_user(&nobody, "GetSecretValue", json!({"SecretId": "s"}));
            problems.push(format!(
                "accepted {p}; then a user with no permission reads: {}",
                code_of(&read)
            ));
        } else if !matches!(
            code_of(&r),
            "PublicPolicyException" | "MalformedPolicyDocumentException"
        ) {
            problems.push(format!("{p}: {r:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The managed key alias/aws/secretsmanager is made on first use: the first uses, at
/// once from several processes, must all succeed and share one key.
#[test]
fn race_first_use_of_the_managed_key_makes_one_key() {
    let f = fixture();
    let others = [reopen(&f), reopen(&f), reopen(&f)];
    let sms: Vec<&SecretsManager> = std::iter::once(&f.sm).chain(others.iter()).collect();
    let root = &f.root;
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for (t, sm) in sms.iter().enumerate() {
            let outcomes = &outcomes;
            s.spawn(move || {
                let r = sm.call(
                    root,
                    "CreateSecret",
                    &json!({"Name": format!("first{t}"), "SecretString": "v"}),
                    Via::Cli,
                );
                outcomes.lock().unwrap().push(match r {
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("{} {e}", e.aws_code()),
                });
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap();
    assert!(outcomes.iter().all(|o| o == "ok"), "{outcomes:#?}");
    let mut keys = std::collections::BTreeSet::new();
    for t in 0..sms.len() {
        let v = f.ok(
            "ListSecretVersionIds",
            json!({"SecretId": format!("first{t}")}),
        );
        keys.insert(
            v["Versions"][0]["KmsKeyIds"][0]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(keys.len(), 1, "{keys:?}");
}

/// A NextToken is bound to nothing: one given by ListSecretVersionIds of a secret, or by
/// ListSecrets with other filters, is taken by ListSecrets as an offset into its own
/// list. AWS refuses a token from another listing (InvalidNextTokenException).
#[test]
fn a_next_token_from_another_listing_is_refused() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "v", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "v", "SecretString": "2", "ClientRequestToken": token(2)}),
    );
    for n in ["a", "b"] {
        f.ok("CreateSecret", json!({"Name": n, "SecretString": "x"}));
    }
    let versions = f.ok(
        "ListSecretVersionIds",
        json!({"SecretId": "v", "MaxResults": 1}),
    );
    let foreign = versions["NextToken"].clone();
    assert!(foreign.is_string(), "{versions}");
    let r = f.call("ListSecrets", json!({"NextToken": foreign}));
    assert_eq!(code_of(&r), "InvalidNextTokenException", "{r:?}");
}

/// A version left under AWSPENDING (by a rotation that failed, or a PutSecretValue) that
/// is not AWSCURRENT: AWS refuses a new RotateSecret ("A previous rotation isn't
/// complete", InvalidRequestException) and keeps that version's label. Here the label is
/// silently taken off the pending version and the rotation runs.
#[test]
fn rotate_secret_with_a_pending_version_left_is_refused() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "s", "SecretString": "2", "ClientRequestToken": token(2), "VersionStages": ["AWSPENDING"]}),
    );
    let r = f.call(
        "RotateSecret",
        json!({"SecretId": "s", "RotationCommand": "/bin/true", "ClientRequestToken": token(3)}),
    );
    let versions = all_versions(&f.sm, &f.root, "s");
    assert_eq!(
        versions[&token(2)],
        ["AWSPENDING"],
        "the pending version lost its label; RotateSecret gave {r:?}"
    );
    assert_eq!(code_of(&r), "InvalidRequestException", "{r:?}");
}
