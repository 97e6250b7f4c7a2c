//! A secret's life: create, describe, get (values from flags and files), errors with
//! their exceptions and exit codes, deletion and restore, tags, output formats.

use super::support::*;
use crate::common::*;
use serde_json::{Value, json};

#[test]
fn create_secret_then_describe_and_get_it_by_name_and_arn() {
    let env = Env::init();
    let acct = env.account();
    let t0 = now();
    env.add_secret(b"s3cr3t-first-value");
    let c = create(
        &env,
        "prod/db/password",
        "s3cr3t-first-value",
        &[
            "--description",
            "the db",
            "--tags",
            "Key=team,Value=db",
            "Key=env,Value=prod",
        ],
    );
    let arn = str_field(&c, "ARN");
    let prefix = format!("arn:aws:secretsmanager:{DEFAULT_REGION}:{acct}:secret:prod/db/password-");
    let suffix = arn
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{arn} does not start with {prefix}"));
    assert_eq!(suffix.len(), 6, "{arn}");
    assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()), "{arn}");
    let v1 = str_field(&c, "VersionId");

    for id in ["prod/db/password", arn.as_str()] {
        let d = describe(&env, id);
        assert_eq!(d["ARN"], arn.as_str(), "{d:#}");
        assert_eq!(d["Name"], "prod/db/password");
        assert_eq!(d["Description"], "the db");
        assert_eq!(d["RotationEnabled"], false);
        let created = unix_time(&d["CreatedDate"]);
        assert!((created - t0).abs() <= 120, "{d:#}");
        assert_eq!(
            d["VersionIdsToStages"],
            json!({ v1.clone(): ["AWSCURRENT"] })
        );
        let mut tags: Vec<(String, String)> = d["Tags"]
            .as_array()
            .expect("Tags")
            .iter()
            .map(|t| (str_field(t, "Key"), str_field(t, "Value")))
            .collect();
        tags.sort();
        assert_eq!(
            tags,
            vec![("env".into(), "prod".into()), ("team".into(), "db".into())]
        );
        assert!(
            d.get("SecretString").is_none(),
            "describe shows no value: {d:#}"
        );

        let g = get(&env, id, &[]);
        assert_eq!(g["SecretString"], "s3cr3t-first-value");
        assert_eq!(g["ARN"], arn.as_str());
        assert_eq!(g["VersionId"], v1.as_str());
        assert_eq!(g["VersionStages"], json!(["AWSCURRENT"]));
        unix_time(&g["CreatedDate"]);
    }
    // The value alone, as scripts read it.
    let out = env.ok(&sm(&[
        "get-secret-value",
        "--secret-id",
        "prod/db/password",
        "--query",
        "SecretString",
        "--output",
        "text",
    ]));
    assert_eq!(out, "s3cr3t-first-value\n");
}

#[test]
fn values_from_files_binary_and_hyphens() {
    let env = Env::init();
    // Every byte value, raw from a file.
    let bytes = pattern(300, 7);
    env.add_secret(&bytes);
    let f = env.fileb(&bytes);
    let c = env.json(&sm(&[
        "create-secret",
        "--name",
        "bin",
        "--secret-binary",
        &f,
    ]));
    assert_eq!(c["Name"], "bin");
    let g = get(&env, "bin", &[]);
    assert_eq!(unb64(&str_field(&g, "SecretBinary")), bytes);
    assert!(g.get("SecretString").is_none(), "{g:#}");

    // file:// is a file's text, kept as it is (newline included).
    let json_value = "{\"username\":\"app\",\"password\":\"file-s3cr3t-42\"}\n";
    env.add_secret(b"file-s3cr3t-42");
    let t = text_file(&env, json_value);
    env.json(&sm(&[
        "create-secret",
        "--name",
        "json",
        "--secret-string",
        &t,
    ]));
    assert_eq!(current_string(&env, "json"), json_value);

    // A plain --secret-binary is the flag's own bytes.
    env.json(&sm(&[
        "create-secret",
        "--name",
        "plainbin",
        "--secret-binary",
        "raw-bytes-value",
    ]));
    let g = get(&env, "plainbin", &[]);
    assert_eq!(unb64(&str_field(&g, "SecretBinary")), b"raw-bytes-value");

    // A value that starts with '-' is a value, not a flag.
    create(&env, "dash", "-dash-s3cr3t-value", &[]);
    assert_eq!(current_string(&env, "dash"), "-dash-s3cr3t-value");
}

#[test]
fn bad_value_files_are_named_and_their_content_never_shown() {
    let env = Env::init();
    let missing = env.path("no-such-file");
    let arg = format!("fileb://{}", missing.display());
    let line = env.fail(
        &sm(&["create-secret", "--name", "x", "--secret-binary", &arg]),
        3,
    );
    assert!(line.contains(&missing.display().to_string()), "{line}");

    // Not UTF-8 text: the file is named, its bytes are not shown.
    let mut content = b"not-utf8-s3cr3t-content".to_vec();
    content.push(0xff);
    env.add_secret(b"not-utf8-s3cr3t-content");
    let p = env.file(&content);
    let arg = format!("file://{}", p.display());
    let line = env.fail(
        &sm(&["create-secret", "--name", "x", "--secret-string", &arg]),
        6,
    );
    assert!(line.contains(&p.display().to_string()), "{line}");

    // A usage error does not quote the value.
    let stderr = env
        .run(&sm(&[
            "create-secret",
            "--secret-string",
            "usage-s3cr3t-value",
        ]))
        .usage_error();
    assert!(!stderr.contains("usage-s3cr3t-value"), "{stderr}");
    // Nothing was created.
    assert_eq!(names(&env, &[]), Vec::<String>::new());
}

#[test]
fn errors_have_aws_exceptions_and_exit_codes() {
    let env = Env::init();
    create(&env, "app", "app-s3cr3t-value", &[]);
    env.add_secret(b"app-s3cr3t-value");

    // ResourceNotFoundException: 3.
    for args in [
        vec!["describe-secret", "--secret-id", "nope"],
        vec!["get-secret-value", "--secret-id", "nope"],
        vec![
            "put-secret-value",
            "--secret-id",
            "nope",
            "--secret-string",
            "x",
        ],
        vec!["delete-secret", "--secret-id", "nope"],
        vec![
            "tag-resource",
            "--secret-id",
            "nope",
            "--tags",
            "Key=a,Value=b",
        ],
        vec!["list-secret-version-ids", "--secret-id", "nope"],
        vec![
            "get-secret-value",
            "--secret-id",
            "app",
            "--version-stage",
            "NOPE",
        ],
        vec![
            "get-secret-value",
            "--secret-id",
            "app",
            "--version-id",
            "00000000-0000-0000-0000-000000000000",
        ],
    ] {
        refused(&env, &args, 3, "ResourceNotFoundException");
    }
    let arn = str_field(&describe(&env, "app"), "ARN");
    let other_arn = format!("{}X", &arn[..arn.len() - 1]);
    refused(
        &env,
        &["describe-secret", "--secret-id", &other_arn],
        3,
        "ResourceNotFoundException",
    );

    // ResourceExistsException on a duplicate name: 9.
    let line = refused(
        &env,
        &[
            "create-secret",
            "--name",
            "app",
            "--secret-string",
            "other-value",
        ],
        9,
        "ResourceExistsException",
    );
    assert!(line.contains("app"), "{line}");

    // InvalidParameterException: 6.
    for w in ["6", "31", "0", "-1"] {
        refused(
            &env,
            &[
                "delete-secret",
                "--secret-id",
                "app",
                "--recovery-window-in-days",
                w,
            ],
            6,
            "InvalidParameterException",
        );
    }
    refused(
        &env,
        &[
            "delete-secret",
            "--secret-id",
            "app",
            "--recovery-window-in-days",
            "7",
            "--force-delete-without-recovery",
        ],
        6,
        "InvalidParameterException",
    );
    refused(
        &env,
        &[
            "create-secret",
            "--name",
            "both",
            "--secret-string",
            "a",
            "--secret-binary",
            "b",
        ],
        6,
        "InvalidParameterException",
    );
    refused(
        &env,
        &[
            "create-secret",
            "--name",
            "bad name!",
            "--secret-string",
            "a",
        ],
        6,
        "InvalidParameterException",
    );
    refused(
        &env,
        &["list-secrets", "--next-token", "not-a-token"],
        6,
        "InvalidNextTokenException",
    );

    // InvalidRequestException on a value operation of a deleted secret: 4.
    env.json(&sm(&[
        "delete-secret",
        "--secret-id",
        "app",
        "--recovery-window-in-days",
        "7",
    ]));
    for args in [
        vec!["get-secret-value", "--secret-id", "app"],
        vec![
            "put-secret-value",
            "--secret-id",
            "app",
            "--secret-string",
            "new-value",
        ],
        vec![
            "update-secret",
            "--secret-id",
            "app",
            "--secret-string",
            "new-value",
        ],
        vec!["update-secret", "--secret-id", "app", "--description", "d"],
        vec!["delete-secret", "--secret-id", "app"],
    ] {
        refused(&env, &args, 4, "InvalidRequestException");
    }
    for args in [
        vec!["rotate-secret", "--secret-id", "app"],
        vec![
            "tag-resource",
            "--secret-id",
            "app",
            "--tags",
            "Key=a,Value=b",
        ],
    ] {
        refused(&env, &args, 4, "InvalidRequestException");
    }
    refused(
        &env,
        &["cancel-rotate-secret", "--secret-id", "nope"],
        3,
        "ResourceNotFoundException",
    );
    // A name scheduled for deletion is not free.
    refused(
        &env,
        &["create-secret", "--name", "app", "--secret-string", "x"],
        4,
        "InvalidRequestException",
    );
}

#[test]
fn delete_with_a_recovery_window_then_restore() {
    let env = Env::init();
    create(&env, "s", "value-one", &[]);
    create(&env, "other", "value-other", &[]);
    let t0 = now();
    let d = env.json(&sm(&[
        "delete-secret",
        "--secret-id",
        "s",
        "--recovery-window-in-days",
        "7",
    ]));
    assert_eq!(d["Name"], "s");
    let deletion = unix_time(&d["DeletionDate"]);
    assert!((deletion - (t0 + 7 * DAY)).abs() <= 120, "{d:#}");

    // Described, not listed unless asked, no value.
    let desc = describe(&env, "s");
    unix_time(&desc["DeletedDate"]);
    assert_eq!(names(&env, &[]), vec!["other"]);
    assert_eq!(
        names(&env, &["--include-planned-deletion"]),
        vec!["other", "s"]
    );

    let r = env.json(&sm(&["restore-secret", "--secret-id", "s"]));
    assert_eq!(r["Name"], "s");
    assert!(describe(&env, "s").get("DeletedDate").is_none());
    assert_eq!(current_string(&env, "s"), "value-one");
    assert_eq!(names(&env, &[]), vec!["other", "s"]);

    // The default window is 30 days; once it has passed the secret is gone.
    let d = env.json(&sm(&["delete-secret", "--secret-id", "s"]));
    let deletion = unix_time(&d["DeletionDate"]);
    assert!((deletion - (t0 + 30 * DAY)).abs() <= 120, "{d:#}");
    let later = skew_days(31);
    let env_later = [(SKEW_ENV, later.as_str())];
    let line = env
        .run_env(&sm(&["describe-secret", "--secret-id", "s"]), &env_later)
        .fails(3);
    assert_exception(&line, "ResourceNotFoundException");
    let line = env
        .run_env(&sm(&["restore-secret", "--secret-id", "s"]), &env_later)
        .fails(3);
    assert_exception(&line, "ResourceNotFoundException");
    // ... and its name is free.
    env.json_env(
        &sm(&[
            "create-secret",
            "--name",
            "s",
            "--secret-string",
            "value-new",
        ]),
        &env_later,
    );
}

#[test]
fn force_delete_frees_the_name_at_once() {
    let env = Env::init();
    let arn1 = str_field(&create(&env, "s", "value-one", &[]), "ARN");
    let d = env.json(&sm(&[
        "delete-secret",
        "--secret-id",
        "s",
        "--force-delete-without-recovery",
    ]));
    assert_eq!(d["Name"], "s");
    refused(
        &env,
        &["describe-secret", "--secret-id", "s"],
        3,
        "ResourceNotFoundException",
    );
    refused(
        &env,
        &["restore-secret", "--secret-id", "s"],
        3,
        "ResourceNotFoundException",
    );
    let arn2 = str_field(&create(&env, "s", "value-two", &[]), "ARN");
    assert_ne!(arn1, arn2, "a new secret gets a new ARN");
    assert_eq!(current_string(&env, "s"), "value-two");
    // The old ARN names nothing.
    refused(
        &env,
        &["get-secret-value", "--secret-id", &arn1],
        3,
        "ResourceNotFoundException",
    );
    assert_eq!(version_ids(&env, "s", &["--include-deprecated"]).len(), 1);
}

#[test]
fn tags_are_added_replaced_and_removed() {
    let env = Env::init();
    create(
        &env,
        "s",
        "value-one",
        &["--tags", r#"[{"Key":"a","Value":"1"}]"#],
    );
    let out = env.ok(&sm(&[
        "tag-resource",
        "--secret-id",
        "s",
        "--tags",
        "Key=b,Value=2",
        "Key=a,Value=one",
    ]));
    assert_eq!(out, "", "tag-resource prints nothing");
    assert_eq!(
        tags_of(&env, "s"),
        vec![("a".into(), "one".into()), ("b".into(), "2".into())]
    );
    env.ok(&sm(&[
        "tag-resource",
        "--secret-id",
        "s",
        "--tags",
        r#"[{"Key":"c","Value":"3"},{"Key":"d","Value":""}]"#,
    ]));
    assert_eq!(tags_of(&env, "s").len(), 4);
    let out = env.ok(&sm(&[
        "untag-resource",
        "--secret-id",
        "s",
        "--tag-keys",
        "a",
        "d",
        "zz",
    ]));
    assert_eq!(out, "");
    assert_eq!(
        tags_of(&env, "s"),
        vec![("b".into(), "2".into()), ("c".into(), "3".into())]
    );
    // Malformed shorthand is the CLI's error, naming the flag.
    let line = env.fail(
        &sm(&["tag-resource", "--secret-id", "s", "--tags", "b=2"]),
        6,
    );
    assert!(line.contains("--tags"), "{line}");
    // aws: is reserved.
    refused(
        &env,
        &[
            "tag-resource",
            "--secret-id",
            "s",
            "--tags",
            "Key=aws:x,Value=1",
        ],
        6,
        "InvalidParameterException",
    );
}

#[test]
fn output_formats_and_queries() {
    let env = Env::init();
    let c = create(&env, "s", "v-value", &["--tags", "Key=a,Value=b"]);
    let arn = str_field(&c, "ARN");
    let out = env.ok(&sm(&[
        "describe-secret",
        "--secret-id",
        "s",
        "--query",
        "ARN",
        "--output",
        "text",
    ]));
    assert_eq!(out, format!("{arn}\n"));
    let out = env.ok(&sm(&[
        "describe-secret",
        "--secret-id",
        "s",
        "--output",
        "table",
    ]));
    assert!(
        out.contains("DescribeSecret") && out.contains(&arn),
        "{out}"
    );
    let out = env.ok(&sm(&["list-secrets", "--output", "text"]));
    assert!(out.contains(&arn), "{out}");
    let out = env.ok(&sm(&["list-secrets", "--query", "SecretList[].Name"]));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!(["s"]));
}

/// A secret may be created without a value: it has no version until one is put.
#[test]
fn a_secret_created_without_a_value_has_no_version_until_one_is_put() {
    let env = Env::init();
    let c = env.json(&sm(&["create-secret", "--name", "empty"]));
    assert!(c.get("VersionId").is_none(), "{c:#}");
    assert_eq!(describe(&env, "empty")["VersionIdsToStages"], json!({}));
    refused(
        &env,
        &["get-secret-value", "--secret-id", "empty"],
        3,
        "ResourceNotFoundException",
    );
    refused(
        &env,
        &["put-secret-value", "--secret-id", "empty"],
        6,
        "InvalidParameterException",
    );
    let v = put(&env, "empty", "first-value", &[]);
    assert_eq!(stages(&env, "empty")[&v], labels(&["AWSCURRENT"]));
    assert_eq!(current_string(&env, "empty"), "first-value");
}
