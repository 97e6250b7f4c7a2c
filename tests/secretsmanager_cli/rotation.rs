//! Rotation through a local command: the four steps and their contract, a failed step,
//! the command checked by the CLI, rotate-due, and whose identity the callbacks act as.

use std::collections::BTreeMap;
use std::path::Path;

use super::support::*;
use crate::common::*;
use serde_json::{Value, json};

#[test]
fn rotation_with_a_local_command_succeeds() {
    let env = Env::init();
    let c = create(&env, "db", "rot-s3cr3t-old", &[]);
    let arn = str_field(&c, "ARN");
    let old = str_field(&c, "VersionId");
    let cmd = rotation_command(&env, "rotate.sh", "rot-s3cr3t-new", None);
    let t0 = now();
    let token = "aaaaaaaa-bbbb-cccc-dddd-000000000001";
    let r = env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "db",
        "--rotation-command",
        cmd.to_str().unwrap(),
        "--rotation-rules",
        "AutomaticallyAfterDays=10",
        "--client-request-token",
        token,
    ]));
    assert_eq!(r, json!({"ARN": arn, "Name": "db", "VersionId": token}));

    // The four steps, in order, each with the arguments and environment of the contract.
    let log = step_log(&env, "rotate.sh");
    let steps: Vec<&str> = log.iter().map(|l| l[0].as_str()).collect();
    assert_eq!(
        steps,
        ["createSecret", "setSecret", "testSecret", "finishSecret"],
        "{log:?}"
    );
    for l in &log {
        assert_eq!(l[1], arn, "{l:?}");
        assert_eq!(l[2], token, "{l:?}");
        assert_eq!(l[3], l[0], "CRYPTVOL_ROTATION_STEP: {l:?}");
        assert_eq!(l[4], arn, "CRYPTVOL_SECRET_ID: {l:?}");
        assert_eq!(l[5], token, "CRYPTVOL_CLIENT_REQUEST_TOKEN: {l:?}");
        assert_eq!(Path::new(&l[6]), env.data, "CRYPTVOL_DATA_DIR: {l:?}");
        assert_eq!(l[7], DEFAULT_REGION, "CRYPTVOL_REGION: {l:?}");
    }

    // AWSCURRENT on the token's version, AWSPREVIOUS on the old one, no AWSPENDING.
    assert_eq!(
        stages(&env, "db"),
        BTreeMap::from([
            (old.clone(), labels(&["AWSPREVIOUS"])),
            (token.to_string(), labels(&["AWSCURRENT"])),
        ])
    );
    assert_eq!(
        current_string(&env, "db"),
        format!("rot-s3cr3t-new-{token}")
    );
    let d = describe(&env, "db");
    assert_eq!(d["RotationEnabled"], true, "{d:#}");
    assert_eq!(d["RotationRules"]["AutomaticallyAfterDays"], 10, "{d:#}");
    assert_eq!(d["RotationCommand"], cmd.to_str().unwrap(), "{d:#}");
    let last = unix_time(&d["LastRotatedDate"]);
    assert!((last - t0).abs() <= 120, "{d:#}");
    let next = unix_time(&d["NextRotationDate"]);
    assert!((next - (last + 10 * DAY)).abs() <= DAY, "{d:#}");

    // Rotating again needs no command: the secret keeps it. A random token this time.
    let r = env.json(&sm(&["rotate-secret", "--secret-id", &arn]));
    let token2 = str_field(&r, "VersionId");
    assert_ne!(token2, token);
    assert_eq!(
        current_string(&env, "db"),
        format!("rot-s3cr3t-new-{token2}")
    );
    assert_eq!(stages(&env, "db")[token], labels(&["AWSPREVIOUS"]));

    // cancel-rotate-secret turns it off.
    env.json(&sm(&["cancel-rotate-secret", "--secret-id", "db"]));
    let d = describe(&env, "db");
    assert_eq!(d["RotationEnabled"], false, "{d:#}");
    assert!(d.get("NextRotationDate").is_none(), "{d:#}");
}

#[test]
fn a_rotation_that_fails_at_test_secret_leaves_awscurrent() {
    let env = Env::init();
    let c = create(&env, "db", "rot-s3cr3t-old", &[]);
    let old = str_field(&c, "VersionId");
    let arn = str_field(&c, "ARN");
    let cmd = rotation_command(&env, "bad.sh", "rot-s3cr3t-new", Some("testSecret"));
    let token = "aaaaaaaa-bbbb-cccc-dddd-000000000002";
    let line = env
        .run(&sm(&[
            "rotate-secret",
            "--secret-id",
            "db",
            "--rotation-command",
            cmd.to_str().unwrap(),
            "--client-request-token",
            token,
        ]))
        .fails(28);
    assert_exception(&line, "InvalidRequestException");
    assert!(line.contains("testSecret"), "{line}");
    assert!(
        line.contains("testSecret: the new password does not work"),
        "{line}"
    );
    assert!(
        !line.contains("an earlier line"),
        "only the last stderr line: {line}"
    );
    assert!(line.contains(&arn), "{line}");
    // Another token is refused while this rotation is unfinished.
    let other = refused(
        &env,
        &["rotate-secret", "--secret-id", "db"],
        4,
        "InvalidRequestException",
    );
    assert!(other.contains(token), "{other}");

    let steps: Vec<String> = step_log(&env, "bad.sh")
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    assert_eq!(steps, ["createSecret", "setSecret", "testSecret"]);
    // AWSCURRENT unchanged.
    assert_eq!(current_string(&env, "db"), "rot-s3cr3t-old");
    assert_eq!(stages(&env, "db")[&old], labels(&["AWSCURRENT"]));
    assert!(describe(&env, "db").get("LastRotatedDate").is_none());

    // Fixed, the same token goes on from where it stopped.
    let good = rotation_command(&env, "good.sh", "rot-s3cr3t-new", None);
    let r = env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "db",
        "--rotation-command",
        good.to_str().unwrap(),
        "--client-request-token",
        token,
    ]));
    assert_eq!(r["VersionId"], token);
    assert_eq!(
        current_string(&env, "db"),
        format!("rot-s3cr3t-new-{token}")
    );
    assert_eq!(stages(&env, "db")[&old], labels(&["AWSPREVIOUS"]));
    // The way out the failure names must be that retry, with its token (another token
    // is refused, above).
    assert!(
        line.contains(&format!("--client-request-token {token}")),
        "the line must say how to retry, with the token: {line}"
    );
}

#[test]
fn a_finish_secret_that_does_not_move_awscurrent_fails() {
    let env = Env::init();
    let c = create(&env, "db", "rot-s3cr3t-old", &[]);
    let lazy = script(
        &env,
        "lazy.sh",
        &format!(
            "[ \"$1\" = createSecret ] && exec '{}' secretsmanager put-secret-value --secret-id \"$2\" --client-request-token \"$3\" --secret-string lazy-new-value --version-stages AWSPENDING >/dev/null\nexit 0\n",
            cryptvol_bin().display()
        ),
    );
    let line = env
        .run(&sm(&[
            "rotate-secret",
            "--secret-id",
            "db",
            "--rotation-command",
            lazy.to_str().unwrap(),
        ]))
        .fails(28);
    assert!(line.contains("finishSecret"), "{line}");
    assert_eq!(current_string(&env, "db"), "rot-s3cr3t-old");
    assert_eq!(
        stages(&env, "db")[&str_field(&c, "VersionId")],
        labels(&["AWSCURRENT"])
    );
}

#[test]
fn rotation_commands_are_checked_by_the_cli() {
    let env = Env::init();
    create(&env, "db", "rot-s3cr3t-old", &[]);
    let missing = env.path("missing.sh");
    let line = env.fail(
        &sm(&[
            "rotate-secret",
            "--secret-id",
            "db",
            "--rotation-command",
            missing.to_str().unwrap(),
        ]),
        6,
    );
    assert!(
        line.contains("--rotation-command") && line.contains("does not exist"),
        "{line}"
    );
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    let plain = env.path("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    let line = env.fail(
        &sm(&[
            "rotate-secret",
            "--secret-id",
            "db",
            "--rotation-command",
            plain.to_str().unwrap(),
        ]),
        6,
    );
    assert!(line.contains("not executable"), "{line}");

    // A relative path is resolved against the working directory (the scratch dir here)
    // and stored absolute: rotate-due runs it from anywhere.
    rotation_command(&env, "rel.sh", "rel-s3cr3t-new", None);
    env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "db",
        "--rotation-command",
        "rel.sh",
    ]));
    let log = step_log(&env, "rel.sh");
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(current_string(&env, "db").starts_with("rel-s3cr3t-new-"));

    // A secret without a command cannot rotate.
    create(&env, "plain", "v", &[]);
    refused(
        &env,
        &["rotate-secret", "--secret-id", "plain"],
        4,
        "InvalidRequestException",
    );
    // Lambda ARNs are AWS's, not ours.
    refused(
        &env,
        &[
            "rotate-secret",
            "--secret-id",
            "plain",
            "--rotation-lambda-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:f",
        ],
        6,
        "InvalidParameterException",
    );
    // Malformed rules are the CLI's error.
    let line = env.fail(
        &sm(&[
            "rotate-secret",
            "--secret-id",
            "db",
            "--rotation-rules",
            "AutomaticallyAfterDays=soon",
        ]),
        6,
    );
    assert!(line.contains("--rotation-rules"), "{line}");
}

#[test]
fn rotate_due_runs_the_rotations_whose_time_has_come() {
    let env = Env::init();
    let due = create(&env, "due", "due-s3cr3t-old", &[]);
    create(&env, "later", "later-s3cr3t-old", &[]);
    create(&env, "never", "never-s3cr3t-old", &[]);
    let cmd = rotation_command(&env, "rotate.sh", "due-s3cr3t-new", None);
    let cmd = cmd.to_str().unwrap();
    for (name, days) in [
        ("due", "AutomaticallyAfterDays=2"),
        ("later", "AutomaticallyAfterDays=30"),
    ] {
        let r = env.json(&sm(&[
            "rotate-secret",
            "--secret-id",
            name,
            "--rotation-command",
            cmd,
            "--rotation-rules",
            days,
            "--no-rotate-immediately",
        ]));
        assert!(r.get("VersionId").is_none(), "{r:#}");
        let d = describe(&env, name);
        assert_eq!(d["RotationEnabled"], true, "{d:#}");
        unix_time(&d["NextRotationDate"]);
    }
    assert_eq!(current_string(&env, "due"), "due-s3cr3t-old");

    // Nothing is due now.
    let v = env.json(&sm(&["rotate-due"]));
    assert_eq!(v, json!({"Rotations": []}));

    // Three days on, "due" is.
    let later = skew_days(3);
    let skew = [(SKEW_ENV, later.as_str())];
    let v = env.json_env(&sm(&["rotate-due"]), &skew);
    let reports = v["Rotations"].as_array().expect("Rotations");
    assert_eq!(reports.len(), 1, "{v:#}");
    let rep = &reports[0];
    assert_eq!(rep["ARN"], due["ARN"]);
    assert_eq!(rep["Name"], "due");
    assert!(rep.get("Error").is_none_or(Value::is_null), "{v:#}");
    assert!(rep.get("FailedStep").is_none(), "{v:#}");
    let token = str_field(rep, "VersionId");
    assert_eq!(
        current_string(&env, "due"),
        format!("due-s3cr3t-new-{token}")
    );
    assert_eq!(current_string(&env, "later"), "later-s3cr3t-old");
    assert_eq!(current_string(&env, "never"), "never-s3cr3t-old");
    // Not due again until the next period.
    let v = env.json_env(&sm(&["rotate-due"]), &skew);
    assert_eq!(v, json!({"Rotations": []}));

    // A failing due rotation: reported, exit 28, AWSCURRENT unchanged.
    let bad = rotation_command(&env, "bad.sh", "later-s3cr3t-new", Some("setSecret"));
    env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "later",
        "--rotation-command",
        bad.to_str().unwrap(),
        "--no-rotate-immediately",
    ]));
    let far = skew_days(40);
    let out = env.run_env(&sm(&["rotate-due"]), &[(SKEW_ENV, far.as_str())]);
    assert_eq!(out.code, 28, "{out:?}");
    assert_one_error_line("rotate-due", &out.stderr);
    assert!(out.stderr.contains("setSecret"), "{}", out.stderr);
    let v = out.json();
    let reports = v["Rotations"].as_array().expect("Rotations");
    let failed: Vec<&Value> = reports.iter().filter(|r| r["Name"] == "later").collect();
    assert_eq!(failed.len(), 1, "{v:#}");
    assert!(str_field(failed[0], "Error").contains("setSecret"), "{v:#}");
    assert_eq!(failed[0]["FailedStep"], "setSecret", "{v:#}");
    assert_eq!(current_string(&env, "later"), "later-s3cr3t-old");
}

/// The rotation command's callbacks act as the identity that rotates (CRYPTVOL_PROFILE),
/// a role included: never as the account root.
#[test]
fn rotation_callbacks_act_as_the_caller() {
    let env = Env::init();
    create(&env, "db", "rot-s3cr3t-old", &[]);
    env.create_user("ops");
    env.put_user_policy("ops", "Secrets", &allow(&["secretsmanager:*"]));
    env.json(&["iam", "create-role", "--role-name", "rotator"]);
    let policy = text_file(&env, &allow(&["secretsmanager:*"]).to_string());
    env.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "rotator",
        "--policy-name",
        "Secrets",
        "--policy-document",
        &policy,
    ]);
    let cmd = rotation_command(&env, "rotate.sh", "rot-s3cr3t-new", None);
    for who in ["ops", "role/rotator"] {
        env.json(&sm_as(
            who,
            &[
                "rotate-secret",
                "--secret-id",
                "db",
                "--rotation-command",
                cmd.to_str().unwrap(),
            ],
        ));
    }
    let profiles: Vec<String> = step_log(&env, "rotate.sh")
        .into_iter()
        .map(|l| l[8].clone())
        .collect();
    assert_eq!(profiles[..4], ["ops", "ops", "ops", "ops"], "{profiles:?}");
    assert_eq!(
        profiles[4..],
        [
            "role/rotator",
            "role/rotator",
            "role/rotator",
            "role/rotator"
        ],
        "{profiles:?}"
    );
}

/// `rotate-due` runs stored commands; a caller who may not rotate a secret must not make
/// it run (AWS's scheduled rotations are the service's, not any caller's).
#[test]
fn rotate_due_by_a_caller_who_may_not_rotate_runs_nothing() {
    let env = Env::init();
    create(&env, "s", "due-s3cr3t-old", &[]);
    let cmd = rotation_command(&env, "rotate.sh", "due-s3cr3t-new", None);
    env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "s",
        "--rotation-command",
        cmd.to_str().unwrap(),
        "--rotation-rules",
        "AutomaticallyAfterDays=1",
        "--no-rotate-immediately",
    ]));
    // Set up for later, the rotation was tested once (testSecret, by root).
    let tested = step_log(&env, "rotate.sh");
    assert_eq!(tested.len(), 1, "{tested:?}");
    assert_eq!(tested[0][0], "testSecret", "{tested:?}");
    env.create_user("bob");
    let later = skew_days(2);
    let out = env.run_env(
        &sm_as("bob", &["rotate-due"]),
        &[(SKEW_ENV, later.as_str())],
    );
    assert_eq!(
        step_log(&env, "rotate.sh"),
        tested,
        "bob, with no policy, made the rotation command run: {out:?}"
    );
    assert!(
        out.code == 18 || (out.code == 0 && out.json() == json!({"Rotations": []})),
        "{out:?}"
    );
    assert_eq!(current_string(&env, "s"), "due-s3cr3t-old");
}

/// AWS (RotateSecret, RotateImmediately): "If you don't immediately rotate the secret,
/// Secrets Manager tests the rotation configuration by running the testSecret step of the
/// Lambda rotation function." A command that fails testSecret is refused at once.
#[test]
fn no_rotate_immediately_still_tests_the_command() {
    let env = Env::init();
    create(&env, "s", "rot-s3cr3t-old", &[]);
    let bad = rotation_command(&env, "bad.sh", "rot-s3cr3t-new", Some("testSecret"));
    let out = env.run(&sm(&[
        "rotate-secret",
        "--secret-id",
        "s",
        "--rotation-command",
        bad.to_str().unwrap(),
        "--rotation-rules",
        "AutomaticallyAfterDays=1",
        "--no-rotate-immediately",
    ]));
    let steps: Vec<String> = step_log(&env, "bad.sh")
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    assert!(
        steps.contains(&"testSecret".to_string()),
        "testSecret was not run: {steps:?}, {out:?}"
    );
    let line = out.fails(28);
    assert!(line.contains("testSecret"), "{line}");
    assert_eq!(current_string(&env, "s"), "rot-s3cr3t-old");
    // The schedule is kept; the test's AWSPENDING copy is gone again.
    assert_eq!(describe(&env, "s")["RotationEnabled"], true);
    let before = version_ids(&env, "s", &["--include-deprecated"]);
    assert_eq!(before.len(), 1, "{before:?}");

    // A command that passes: testSecret alone ran, on a copy of the current value,
    // nothing rotated and nothing left behind; the schedule is set.
    let good = rotation_command(&env, "good.sh", "rot-s3cr3t-new", None);
    let r = env.json(&sm(&[
        "rotate-secret",
        "--secret-id",
        "s",
        "--rotation-command",
        good.to_str().unwrap(),
        "--rotation-rules",
        "AutomaticallyAfterDays=1",
        "--no-rotate-immediately",
    ]));
    assert!(r.get("VersionId").is_none(), "{r:#}");
    let steps: Vec<String> = step_log(&env, "good.sh")
        .into_iter()
        .map(|l| l[0].clone())
        .collect();
    assert_eq!(steps, ["testSecret"]);
    assert_eq!(version_ids(&env, "s", &["--include-deprecated"]), before);
    assert_eq!(current_string(&env, "s"), "rot-s3cr3t-old");
    let d = describe(&env, "s");
    assert_eq!(d["RotationEnabled"], true, "{d:#}");
    assert!(d.get("LastRotatedDate").is_none(), "{d:#}");
    unix_time(&d["NextRotationDate"]);
}

/// The example rotation command of docs/cli.md ("Rotation") works as printed.
#[test]
fn the_rotation_command_of_the_docs_rotates() {
    let env = Env::init();
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md"))
        .expect("docs/cli.md");
    let start = docs
        .find("#!/bin/sh\n# /usr/local/bin/rotate-db")
        .expect("the example rotation command in docs/cli.md");
    let len = docs[start..].find("```").expect("the end of the example");
    let body = &docs[start..start + len];
    let cmd = script(&env, "rotate-db", body.strip_prefix("#!/bin/sh\n").unwrap());
    let c = create(&env, "prod/db", "docs-s3cr3t-old", &[]);
    let old = str_field(&c, "VersionId");
    // `cryptvol` on the PATH, as the example expects.
    let bin_dir = cryptvol_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = env.json_env(
        &sm(&[
            "rotate-secret",
            "--secret-id",
            "prod/db",
            "--rotation-command",
            cmd.to_str().unwrap(),
            "--rotation-rules",
            "AutomaticallyAfterDays=30",
        ]),
        &[("PATH", path.as_str())],
    );
    let token = str_field(&r, "VersionId");
    let st = stages(&env, "prod/db");
    assert_eq!(st[&token], labels(&["AWSCURRENT"]), "{st:?}");
    assert_eq!(st[&old], labels(&["AWSPREVIOUS"]), "{st:?}");
    let new = current_string(&env, "prod/db");
    assert_eq!(new.len(), 32, "{new}");
    assert!(new.chars().all(|c| c.is_ascii_alphanumeric()), "{new}");
}

/// In a region opened with a passphrase, the rotation command's callbacks can open it too:
/// the contract says they can call `cryptvol secretsmanager …` back, and a passphrase
/// given as `--passphrase-file` (not in the environment) must reach them.
#[test]
fn rotation_callbacks_open_a_passphrase_region() {
    let env = Env::new();
    let pass = env.file(b"a long enough passphrase for p-1\n");
    let pass = pass.to_str().unwrap();
    env.json(&["--region", "p-1", "--passphrase-file", pass, "init"]);
    let with = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--region", "p-1", "--passphrase-file", pass]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.push("secretsmanager".into());
        v.extend(args.iter().map(|s| s.to_string()));
        v
    };
    let run = |args: &[&str]| {
        let a = with(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        env.run(&a)
    };
    run(&[
        "create-secret",
        "--name",
        "s",
        "--secret-string",
        "pass-s3cr3t-old",
    ])
    .ok();
    let cmd = rotation_command(&env, "rotate.sh", "pass-s3cr3t-new", None);
    let out = run(&[
        "rotate-secret",
        "--secret-id",
        "s",
        "--rotation-command",
        cmd.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let v = run(&["get-secret-value", "--secret-id", "s"]).ok().json();
    assert!(
        str_field(&v, "SecretString").starts_with("pass-s3cr3t-new-"),
        "{v:#}"
    );
    let log = step_log(&env, "rotate.sh");
    assert!(log.iter().all(|l| l[7] == "p-1"), "{log:?}");
}

/// `--rotation-rules` in its three spellings reaches the schedule: days, `rate()` and a
/// `cron()` whose commas stay in the expression, with a Duration.
#[test]
fn rotation_rules_shorthand_and_json_set_the_schedule() {
    let env = Env::init();
    create(&env, "s", "rules-s3cr3t", &[]);
    let cmd = rotation_command(&env, "rotate.sh", "rules-s3cr3t-new", None);
    let cmd = cmd.to_str().unwrap();
    let rules = |r: &str| -> Value {
        env.json(&sm(&[
            "rotate-secret",
            "--secret-id",
            "s",
            "--rotation-command",
            cmd,
            "--rotation-rules",
            r,
            "--no-rotate-immediately",
        ]));
        describe(&env, "s")
    };
    let t0 = now();
    let d = rules(r#"{"AutomaticallyAfterDays": 5}"#);
    assert_eq!(d["RotationRules"]["AutomaticallyAfterDays"], 5, "{d:#}");
    assert!(
        (unix_time(&d["NextRotationDate"]) - (t0 + 5 * DAY)).abs() <= DAY,
        "{d:#}"
    );

    let d = rules("ScheduleExpression=rate(3 days)");
    assert_eq!(
        d["RotationRules"]["ScheduleExpression"], "rate(3 days)",
        "{d:#}"
    );
    assert!(
        (unix_time(&d["NextRotationDate"]) - (t0 + 3 * DAY)).abs() <= DAY,
        "{d:#}"
    );

    let d = rules("ScheduleExpression=cron(0 16 1,15 * ? *),Duration=2h");
    assert_eq!(
        d["RotationRules"]["ScheduleExpression"], "cron(0 16 1,15 * ? *)",
        "{d:#}"
    );
    assert_eq!(d["RotationRules"]["Duration"], "2h", "{d:#}");
    let next = d["NextRotationDate"].as_str().expect("NextRotationDate");
    // The 1st or the 15th of a month, from 16:00 UTC (within the 2 h window).
    // RFC 3339 in UTC: YYYY-MM-DDTHH:MM:SSZ.
    let day: u32 = next[8..10].parse().unwrap();
    let hour: u32 = next[11..13].parse().unwrap();
    assert!(next.ends_with('Z'), "{next}");
    assert!([1, 15].contains(&day), "{next}");
    assert!(hour == 16 || hour == 17, "{next}");
    let n = unix_time(&d["NextRotationDate"]);
    assert!(n > t0 && n <= t0 + 17 * DAY, "{next}");
    let rotated: Vec<_> = step_log(&env, "rotate.sh")
        .into_iter()
        .filter(|l| l[0] != "testSecret")
        .collect();
    assert!(
        rotated.is_empty(),
        "nothing rotated yet, only tested: {rotated:?}"
    );

    // Rules the service refuses.
    for bad in [
        "AutomaticallyAfterDays=0",
        "AutomaticallyAfterDays=1001",
        "ScheduleExpression=every day",
    ] {
        refused(
            &env,
            &["rotate-secret", "--secret-id", "s", "--rotation-rules", bad],
            6,
            "InvalidParameterException",
        );
    }
}

/// The region daemon (started by an attach) runs due rotations by itself; a failed one is
/// in its log, with no value there or anywhere else in the data dir.
#[test]
fn the_region_daemon_runs_due_rotations_and_logs_no_value() {
    crate::needs!(Fuse);
    let v = crate::common::mount::VolEnv::new();
    let env: &Env = &v;
    let good = create(env, "good", "daemon-s3cr3t-old", &[]);
    create(env, "bad", "daemon-s3cr3t-bad-old", &[]);
    env.add_secret(b"daemon-s3cr3t-old");
    env.add_secret(b"daemon-s3cr3t-bad-old");
    let ok_cmd = rotation_command(env, "ok.sh", "daemon-s3cr3t-new", None);
    let bad_cmd = rotation_command(env, "bad.sh", "daemon-s3cr3t-bad-new", Some("setSecret"));
    for (name, cmd) in [("good", &ok_cmd), ("bad", &bad_cmd)] {
        env.json(&sm(&[
            "rotate-secret",
            "--secret-id",
            name,
            "--rotation-command",
            cmd.to_str().unwrap(),
            "--rotation-rules",
            "AutomaticallyAfterDays=1",
            "--no-rotate-immediately",
        ]));
    }
    // The daemon keeps the attach's environment: two days on, both are due.
    let vol = v.create(&["--size", "64M"]);
    let dir = v.dir("mnt");
    let later = skew_days(2);
    v.attach_run_env(&vol, &dir, &[], &[(SKEW_ENV, later.as_str())])
        .ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rotated = loop {
        let g = get(env, "good", &[]);
        if g["VersionId"] != good["VersionId"] {
            break g;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not rotate the due secret in 60 s; its log: {}",
            v.daemon_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let new = str_field(&rotated, "SecretString");
    assert!(new.starts_with("daemon-s3cr3t-new-"), "{new}");
    env.add_secret(new.as_bytes());
    // The callbacks act as the root, the daemon's identity.
    let log = step_log(env, "ok.sh");
    assert!(log.iter().all(|l| l[8] == "root"), "{log:?}");
    // The failed one is logged, naming the step; AWSCURRENT unchanged.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !v.daemon_log().contains("setSecret") {
        assert!(
            std::time::Instant::now() < deadline,
            "no failed rotation in the daemon's log: {}",
            v.daemon_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(current_string(env, "bad"), "daemon-s3cr3t-bad-old");
    v.detach(&dir);

    let daemon_log = v.daemon_log();
    let mut files = Vec::new();
    files_under(&env.data, &mut files);
    for value in [
        b"daemon-s3cr3t-old".as_slice(),
        b"daemon-s3cr3t-bad-old",
        new.as_bytes(),
    ] {
        assert_no_secret("daemon.log", daemon_log.as_bytes(), value);
        for f in &files {
            assert_no_secret(
                &f.display().to_string(),
                &std::fs::read(f).unwrap_or_default(),
                value,
            );
        }
    }
}
