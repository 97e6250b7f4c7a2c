//! Resource policies, customer keys a user may not use, and no value ever written in
//! the clear.

use super::support::*;
use crate::common::*;
use serde_json::{Value, json};

#[test]
fn resource_policies_are_put_read_validated_and_deleted() {
    let env = Env::init();
    let acct = env.account();
    create(&env, "s", "v", &[]);
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{acct}:root")},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*"
        }]
    })
    .to_string();
    let v = env.json(&sm(&[
        "validate-resource-policy",
        "--resource-policy",
        &policy,
    ]));
    assert_eq!(v["PolicyValidationPassed"], true, "{v:#}");
    let f = text_file(&env, &policy);
    let p = env.json(&sm(&[
        "put-resource-policy",
        "--secret-id",
        "s",
        "--resource-policy",
        &f,
    ]));
    assert_eq!(p["Name"], "s");
    let g = env.json(&sm(&["get-resource-policy", "--secret-id", "s"]));
    let got: Value = serde_json::from_str(&str_field(&g, "ResourcePolicy")).unwrap();
    assert_eq!(got, serde_json::from_str::<Value>(&policy).unwrap());
    let d = env.json(&sm(&["delete-resource-policy", "--secret-id", "s"]));
    assert_eq!(d["Name"], "s");
    let g = env.json(&sm(&["get-resource-policy", "--secret-id", "s"]));
    assert!(g.get("ResourcePolicy").is_none_or(Value::is_null), "{g:#}");

    // Malformed.
    refused(
        &env,
        &[
            "put-resource-policy",
            "--secret-id",
            "s",
            "--resource-policy",
            "{not json",
        ],
        6,
        "MalformedPolicyDocumentException",
    );
    // Broad access refused when blocked.
    let public = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
    })
    .to_string();
    let v = env.json(&sm(&[
        "validate-resource-policy",
        "--resource-policy",
        &public,
    ]));
    assert_eq!(v["PolicyValidationPassed"], false, "{v:#}");
    assert!(
        !v["ValidationErrors"]
            .as_array()
            .expect("ValidationErrors")
            .is_empty(),
        "{v:#}"
    );
    refused(
        &env,
        &[
            "put-resource-policy",
            "--secret-id",
            "s",
            "--resource-policy",
            &public,
            "--block-public-policy",
        ],
        6,
        "PublicPolicyException",
    );
    env.json(&sm(&[
        "put-resource-policy",
        "--secret-id",
        "s",
        "--resource-policy",
        &public,
        "--no-block-public-policy",
    ]));
}

/// AWS (PutResourcePolicy, BlockPublicPolicy): "By default, public policies aren't
/// blocked."
#[test]
fn public_policies_are_not_blocked_by_default() {
    let env = Env::init();
    create(&env, "s", "v", &[]);
    let public = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
    })
    .to_string();
    env.json(&sm(&[
        "put-resource-policy",
        "--secret-id",
        "s",
        "--resource-policy",
        &public,
    ]));
}

#[test]
fn a_resource_policy_denies_an_iam_user() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    env.put_user_policy("alice", "Secrets", &allow(&["secretsmanager:*"]));
    create(&env, "s", "deny-s3cr3t-value", &[]);
    env.add_secret(b"deny-s3cr3t-value");
    // The identity policy alone lets alice read it.
    assert_eq!(
        str_field(
            &env.json(&sm_as("alice", &["get-secret-value", "--secret-id", "s"])),
            "SecretString"
        ),
        "deny-s3cr3t-value"
    );
    let deny = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Deny",
            "Principal": {"AWS": alice},
            "Action": "secretsmanager:GetSecretValue",
            "Resource": "*"
        }]
    })
    .to_string();
    env.json(&sm(&[
        "put-resource-policy",
        "--secret-id",
        "s",
        "--resource-policy",
        &deny,
    ]));
    let line = env.fail(
        &sm_as("alice", &["get-secret-value", "--secret-id", "s"]),
        18,
    );
    assert_exception(&line, "AccessDeniedException");
    assert!(
        line.contains("alice") && line.contains("secretsmanager:GetSecretValue"),
        "{line}"
    );
    // Only that action: alice still describes it; the root still reads it.
    env.json(&sm_as("alice", &["describe-secret", "--secret-id", "s"]));
    assert_eq!(current_string(&env, "s"), "deny-s3cr3t-value");

    // A user with no identity policy may do nothing.
    env.create_user("bob");
    let line = env.fail(&sm_as("bob", &["describe-secret", "--secret-id", "s"]), 18);
    assert_exception(&line, "AccessDeniedException");
    let line = env.fail(
        &sm_as(
            "bob",
            &["create-secret", "--name", "b", "--secret-string", "v"],
        ),
        18,
    );
    assert_exception(&line, "AccessDeniedException");
    // A secret bob may not see is denied before its existence is told.
    let line = env.fail(
        &sm_as("bob", &["describe-secret", "--secret-id", "nope"]),
        18,
    );
    assert_exception(&line, "AccessDeniedException");
    let _ = acct;
}

#[test]
fn a_customer_key_the_user_may_not_use_is_access_denied() {
    let env = Env::init();
    let key = env.create_key();
    env.create_user("alice");
    env.put_user_policy("alice", "Secrets", &allow(&["secretsmanager:*"]));
    // The root, whom the key policy allows, stores a secret under the key.
    let c = create(&env, "ck", "ck-s3cr3t-value", &["--kms-key-id", &key]);
    env.add_secret(b"ck-s3cr3t-value");
    assert_eq!(current_string(&env, "ck"), "ck-s3cr3t-value");
    let versions = env.json(&sm(&["list-secret-version-ids", "--secret-id", "ck"]));
    let key_ids = versions["Versions"][0]["KmsKeyIds"].to_string();
    assert!(key_ids.contains(&key), "{versions:#}");
    // alice may use Secrets Manager, not the key.
    let line = env.fail(
        &sm_as("alice", &["get-secret-value", "--secret-id", "ck"]),
        18,
    );
    assert_exception(&line, "AccessDeniedException");
    let line = env.fail(
        &sm_as(
            "alice",
            &[
                "create-secret",
                "--name",
                "a",
                "--secret-string",
                "a-value",
                "--kms-key-id",
                &key,
            ],
        ),
        18,
    );
    assert_exception(&line, "AccessDeniedException");
    let line = env.fail(
        &sm_as(
            "alice",
            &[
                "put-secret-value",
                "--secret-id",
                "ck",
                "--secret-string",
                "a-value",
            ],
        ),
        18,
    );
    assert_exception(&line, "AccessDeniedException");
    // With kms:Decrypt and kms:GenerateDataKey she may.
    env.put_user_policy(
        "alice",
        "Key",
        &allow(&["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]),
    );
    assert_eq!(
        str_field(
            &env.json(&sm_as("alice", &["get-secret-value", "--secret-id", "ck"])),
            "SecretString"
        ),
        "ck-s3cr3t-value"
    );
    let _ = c;
    // A key that does not exist: the value cannot be encrypted.
    refused(
        &env,
        &[
            "create-secret",
            "--name",
            "x",
            "--secret-string",
            "v",
            "--kms-key-id",
            "11111111-2222-3333-4444-555555555555",
        ],
        5,
        "EncryptionFailure",
    );
}

#[test]
fn no_value_is_written_in_the_clear() {
    let env = Env::init();
    let key = env.create_key();
    let mut values: Vec<Vec<u8>> = Vec::new();
    let mut remember = |v: &[u8]| {
        env.add_secret(v);
        values.push(v.to_vec());
    };
    let s1 = "clear-s3cr3t-string-one";
    let s2 = "{\"password\":\"clear-s3cr3t-json-two\"}";
    let s3 = "clear-s3cr3t-updated-three";
    let s4 = "clear-s3cr3t-file-four";
    let bin = pattern(257, 99);
    for v in [
        s1.as_bytes(),
        s2.as_bytes(),
        b"clear-s3cr3t-json-two",
        s3.as_bytes(),
        s4.as_bytes(),
        &bin,
    ] {
        remember(v);
    }
    create(&env, "one", s1, &[]);
    create(&env, "two", s2, &["--kms-key-id", &key]);
    env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "one",
        "--secret-string",
        s3,
    ]));
    let f = text_file(&env, s4);
    env.json(&sm(&[
        "put-secret-value",
        "--secret-id",
        "two",
        "--secret-string",
        &f,
    ]));
    let b = env.fileb(&bin);
    env.json(&sm(&[
        "create-secret",
        "--name",
        "bin",
        "--secret-binary",
        &b,
    ]));
    // A rotated value, and a password.
    let cmd = rotation_command(&env, "rotate.sh", "clear-s3cr3t-rotated", None);
    env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "one",
        "--rotation-command",
        cmd.to_str().unwrap(),
    ]));
    let rotated = current_string(&env, "one");
    remember(rotated.as_bytes());
    let pw = password(&env, &["--password-length", "40"]);
    remember(pw.as_bytes());
    // Read everything back (LastAccessedDate and the trail's reads are written too).
    for id in ["one", "two", "bin"] {
        get(&env, id, &[]);
    }
    env.json(&sm(&[
        "delete-secret",
        "--secret-id",
        "two",
        "--recovery-window-in-days",
        "7",
    ]));

    let mut files = Vec::new();
    files_under(&env.data, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("secrets")),
        "the secrets store is under the data dir: {files:?}"
    );
    let trail = env.ok(&["audit", "lookup"]);
    assert!(
        trail.contains("GetSecretValue") && trail.contains("RotationSucceeded"),
        "{trail}"
    );
    for v in &values {
        for f in &files {
            let bytes = std::fs::read(f).unwrap_or_default();
            assert_no_secret(&f.display().to_string(), &bytes, v);
        }
        assert_no_secret("audit lookup", trail.as_bytes(), v);
    }
    // The region log, if a daemon wrote one, is among the files; say so when it is.
    let log = env.region_dir(DEFAULT_REGION).join("logs");
    if log.exists() {
        assert!(files.iter().any(|f| f.starts_with(&log)));
    }
    env.ok(&["audit", "verify"]);
}
