//! Secrets Manager through the real AWS clients: boto3's `secretsmanager` client and `aws
//! secretsmanager` (`tests/compat/secretsmanager_suite.py`) against `cryptvol kms serve`,
//! which answers `X-Amz-Target: secretsmanager.<Op>` on its one port. The suite checks
//! every operation's values as AWS documents them; then this test checks what only the
//! data dir shows:
//!
//! - every Secrets Manager call is in the region's trail as secretsmanager.amazonaws.com,
//!   by the access key that made it, bob's denied read included;
//! - a secret under a customer managed key leaves that key's GenerateDataKey (per version
//!   written) and Decrypt (per read) in the KMS trail, with the encryption context
//!   `SecretARN` / `SecretVersionId`;
//! - no secret value the suite stored is in the server's stdout or stderr, or in any file
//!   of the data dir, in any spelling (raw, hex, base64).
//!
//! A second test has `kms serve` run due rotations: two secrets of a region, set up (as
//! the CLI does) with a local rotation command, fall due; the first request to that
//! region opens it and its rotations run: one rotates through the AWS CLI against the
//! server (as a Lambda would), the other fails with a value on its stderr, which the
//! server's log must not repeat.
//!
//! The suite reports every failed check (it goes on after one), and so does this test:
//! it checks the trail and the data dir even when the suite failed, and fails at the end
//! with everything that went wrong. Without the venv it skips, unless CI=true or
//! CRYPTVOL_REQUIRE_MOUNT=1 makes that a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::compat::*;
use common::server::KmsServer as Server;
use common::*;
use serde_json::{Value, json};

const SECRETS_SOURCE: &str = "secretsmanager.amazonaws.com";
const KMS_SOURCE: &str = "kms.amazonaws.com";

/// `kms serve` on `env`'s data dir with its stdout also copied to `stdout_copy` (the
/// harness reads the first line; the copy is checked for secrets afterwards). `exec`
/// keeps the server's pid, so that SIGTERM reaches it.
fn start_server(env: &Env, stdout_copy: &Path) -> Server {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"out="$1"; shift; exec "$@" > >(tee -a "$out")"#)
        .arg("kms-serve")
        .arg(stdout_copy)
        .arg(env!("CARGO_BIN_EXE_cryptvol"))
        .arg("--data-dir")
        .arg(&env.data);
    for v in [
        "CRYPTVOL_REGION",
        "CRYPTVOL_DATA_DIR",
        "CRYPTVOL_PASSPHRASE_FILE",
        SKEW_ENV,
    ] {
        cmd.env_remove(v);
    }
    Server::spawn(cmd, &[], env.path("serve-sm.stderr"))
}

/// Every event of `region`'s trail, read from its log files (in file order); none if it
/// has no trail yet.
fn trail(env: &Env, region: &str) -> Vec<Value> {
    let Ok(dir) = std::fs::read_dir(env.region_dir(region).join("audit")) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = dir
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<Value>>()
        })
        .collect()
}

/// Every regular file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            out.push(p);
        }
    }
    out
}

/// Where `text` holds `secret` in some spelling (raw, hex, base64...), as
/// `assert_no_secret` looks for it, without panicking.
fn leak_of(what: &str, text: &[u8], secret: &[u8]) -> Option<String> {
    if text.windows(secret.len()).any(|w| w == secret) {
        return Some(format!("{what}: a secret value's raw bytes"));
    }
    let s = String::from_utf8_lossy(text);
    spellings(secret)
        .into_iter()
        .find(|sp| s.contains(sp.as_str()))
        .map(|sp| format!("{what}: a secret value as {sp:?}"))
}

/// Failures, gathered so that the test reports all of them.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }
}

#[test]
fn boto3_and_the_aws_cli_drive_secrets_manager() {
    let Some((python, aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    // Both users may use Secrets Manager by identity policy (alice already has kms:*).
    let all = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}],
    });
    for user in ["alice", "bob"] {
        s.env.put_user_policy(user, "secretsmanager-all", &all);
    }
    let stdout_copy = s.env.path("serve-sm.stdout");
    let server = start_server(&s.env, &stdout_copy);
    let scratch = s.env.path("sm-cli");
    std::fs::create_dir(&scratch).unwrap();
    let run = run_suite_unchecked(
        &python,
        "secretsmanager_suite.py",
        &server,
        &s,
        &[
            ("CV_AWS", aws.to_str().unwrap()),
            ("CV_SCRATCH", scratch.to_str().unwrap()),
        ],
    );
    let log = server.stderr();
    server.stop();
    let mut problems = Problems::default();
    if !run.success {
        problems.0.push(format!(
            "the suite failed ({}) after {:.1} s:\n{}",
            run.status, run.seconds, run.stderr
        ));
    }
    let Some(summary) = run.summary else {
        panic!(
            "the suite printed no summary ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- kms serve stderr ---\n{log}",
            run.status, run.stdout, run.stderr
        );
    };
    eprintln!(
        "secretsmanager_suite: {} checks, {} failed, {} s",
        summary["checks"],
        summary["failures"].as_array().map_or(0, Vec::len),
        summary["seconds"]
    );

    // The values the suite stored: nowhere in the server's output or the data dir.
    let mut values: Vec<Vec<u8>> = summary["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().as_bytes().to_vec())
        .collect();
    values.extend(
        summary["binaries_b64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| unb64(v.as_str().unwrap())),
    );
    problems.check(values.len() >= 20, || {
        format!("the suite stored only {} values", values.len())
    });
    let stdout = std::fs::read(&stdout_copy).unwrap_or_default();
    problems.check(stdout.starts_with(b"{\"Endpoint\""), || {
        format!(
            "the server's stdout copy: {:?}",
            String::from_utf8_lossy(&stdout)
        )
    });
    let files = files_under(&s.env.data);
    problems.check(files.len() > 10, || {
        format!("only {files:?} in the data dir")
    });
    for v in &values {
        problems
            .0
            .extend(leak_of("kms serve's stderr", log.as_bytes(), v));
        problems.0.extend(leak_of("kms serve's stdout", &stdout, v));
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            problems
                .0
                .extend(leak_of(&f.display().to_string(), &bytes, v));
        }
    }

    // Secrets Manager's calls in the trail: by alice's and bob's access keys, from here.
    let events = trail(&s.env, DEFAULT_REGION);
    let sm: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventSource"] == SECRETS_SOURCE)
        .collect();
    let by = |user: &str, name: &str| -> Vec<&Value> {
        sm.iter()
            .copied()
            .filter(|e| e["userIdentity"]["userName"] == user && e["eventName"] == name)
            .collect()
    };
    for name in [
        "CreateSecret",
        "GetSecretValue",
        "PutSecretValue",
        "UpdateSecret",
        "DescribeSecret",
        "ListSecrets",
        "ListSecretVersionIds",
        "UpdateSecretVersionStage",
        "TagResource",
        "UntagResource",
        "DeleteSecret",
        "RestoreSecret",
        "GetRandomPassword",
        "PutResourcePolicy",
        "GetResourcePolicy",
        "DeleteResourcePolicy",
        "ValidateResourcePolicy",
        "RotateSecret",
    ] {
        let mine = by("alice", name);
        problems.check(!mine.is_empty(), || {
            format!("no {name} by alice from {SECRETS_SOURCE} in the trail")
        });
        for e in mine {
            let key = &e["userIdentity"]["accessKeyId"];
            let ok = (*key == s.alice.id.as_str() || *key == summary["session_key"])
                && e["sourceIPAddress"] == "127.0.0.1"
                && e["awsRegion"] == DEFAULT_REGION;
            problems.check(ok, || {
                format!("{name}: the caller is not alice's key: {e:#}")
            });
        }
    }
    let session_reads = by("alice", "GetSecretValue")
        .into_iter()
        .filter(|e| e["userIdentity"]["accessKeyId"] == summary["session_key"])
        .count();
    problems.check(session_reads > 0, || {
        "no GetSecretValue with alice's session credentials".to_string()
    });
    let db = summary["db_secret"].as_str().unwrap_or("").to_string();
    let gets = by("alice", "GetSecretValue");
    problems.check(
        gets.iter()
            .any(|e| e.get("errorCode").is_none() && e.to_string().contains(&db)),
        || format!("no successful GetSecretValue of {db}: {gets:#?}"),
    );
    let denied = by("bob", "GetSecretValue");
    problems.check(
        denied.iter().any(|e| {
            e["errorCode"]
                .as_str()
                .is_some_and(|c| c.starts_with("AccessDenied"))
                && e["userIdentity"]["accessKeyId"] == s.bob.id.as_str()
        }),
        || format!("no GetSecretValue of bob's denied: {denied:#?}"),
    );
    problems.check(denied.iter().any(|e| e.get("errorCode").is_none()), || {
        format!("bob's allowed reads are not in the trail: {denied:#?}")
    });
    let rotate = by("alice", "RotateSecret");
    problems.check(
        rotate
            .iter()
            .any(|e| e["errorCode"] == "InvalidParameterException"),
        || format!("no refused RotateSecret in the trail: {rotate:#?}"),
    );
    // The refusals the server made itself: recorded with the operation they named.
    let unknown: Vec<&Value> = events
        .iter()
        .filter(|e| e["eventName"] == "GetSecretValues")
        .collect();
    problems.check(
        unknown
            .iter()
            .any(|e| e["errorCode"] == "UnknownOperationException"),
        || format!("the unknown operation is not in the trail: {unknown:#?}"),
    );
    // In Secrets Manager's name: the caller was known.
    problems.check(
        unknown.iter().all(|e| {
            e["eventSource"] == SECRETS_SOURCE && e["userIdentity"]["userName"] == "alice"
        }),
        || format!("the unknown operation is not alice's Secrets Manager event: {unknown:#?}"),
    );

    // The trail's requestID is the response's x-amzn-requestid.
    let rid = summary["cmk_create_request_id"].as_str().unwrap_or("");
    problems.check(
        sm.iter()
            .any(|e| e["requestID"] == rid && e["eventName"] == "CreateSecret"),
        || format!("no CreateSecret with the requestID {rid:?} the client got"),
    );

    // The customer managed key: a GenerateDataKey for each version written, a Decrypt for
    // reads, each with the secret's ARN and the version's id as encryption context.
    let cmk = summary["cmk"].as_str().unwrap_or("").to_string();
    let cmk_secret = summary["cmk_secret"].as_str().unwrap_or("").to_string();
    let kms_of_key = |name: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| {
                e["eventSource"] == KMS_SOURCE
                    && e["eventName"] == name
                    && e.get("errorCode").is_none()
                    && e["resources"].to_string().contains(&cmk)
            })
            .collect()
    };
    let generates = kms_of_key("GenerateDataKey");
    let decrypts = kms_of_key("Decrypt");
    let versions: Vec<String> = summary["cmk_versions"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    problems.check(versions.len() == 2, || {
        format!("the suite reported versions {versions:?}")
    });
    for v in &versions {
        let context = json!({"SecretARN": cmk_secret, "SecretVersionId": v});
        let with = |list: &[&Value]| {
            list.iter()
                .any(|e| e["requestParameters"]["encryptionContext"] == context)
        };
        problems.check(with(&generates), || {
            format!("no GenerateDataKey of {cmk} with {context} in: {generates:#?}")
        });
        problems.check(with(&decrypts), || {
            format!("no Decrypt of {cmk} with {context} in: {decrypts:#?}")
        });
    }
    for e in generates.iter().chain(&decrypts) {
        let ctx = &e["requestParameters"]["encryptionContext"];
        problems.check(
            ctx["SecretARN"].is_string() && ctx["SecretVersionId"].is_string(),
            || format!("a KMS call for a secret without its context: {e:#}"),
        );
    }
    if let Some(e) = generates.first() {
        eprintln!("a GenerateDataKey for a secret: {e}");
    }

    // The other region's trail has the AWS CLI's secret there.
    let other = trail(&s.env, OTHER_REGION);
    problems.check(
        other.iter().any(|e| {
            e["eventSource"] == SECRETS_SOURCE
                && e["eventName"] == "CreateSecret"
                && e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.contains("aws-cli/"))
        }),
        || "no CreateSecret by the AWS CLI in the other region's trail".to_string(),
    );
    s.env.ok(&["audit", "verify"]);

    assert!(
        problems.0.is_empty(),
        "{} problems:\n\n{}\n\n--- kms serve stderr ---\n{log}",
        problems.0.len(),
        problems.0.join("\n\n")
    );
}

// ---- due rotations while the server runs ----------------------------------------------

/// The rotation command of [`kms_serve_runs_due_rotations_and_logs_no_value`]: a
/// Lambda-like rotation through the AWS CLI against the server itself (alice's access
/// key, from the server's environment): createSecret puts `$CV_NEW_VALUE` under
/// AWSPENDING with the token, finishSecret moves AWSCURRENT to it. With `fail` it writes
/// `$CV_LEAK` on stderr at setSecret and exits 3.
fn rotation_script(dir: &Path, name: &str, fail: bool) -> String {
    use std::os::unix::fs::PermissionsExt;
    let failing = if fail {
        r#"[ "$1" = setSecret ] && { echo "the database refused $CV_LEAK" >&2; exit 3; }"#
    } else {
        ""
    };
    let body = format!(
        r#"#!/bin/sh
set -e
# Set up with RotateImmediately false, the rotation is tested (testSecret alone) before
# the server and its variables exist: that test passes.
[ "$1" = testSecret ] && [ -z "$CV_STEPS" ] && exit 0
echo "$1 $2 $3" >> "$CV_STEPS"
{failing}
ep=$(cat "$CV_ENDPOINT_FILE")
sm() {{ "$CV_AWS" --endpoint-url "$ep" --region "$CRYPTVOL_REGION" --output text secretsmanager "$@"; }}
case "$1" in
  createSecret)
    sm put-secret-value --secret-id "$2" --client-request-token "$3" \
      --secret-string "$CV_NEW_VALUE" --version-stages AWSPENDING >/dev/null ;;
  finishSecret)
    cur=$(sm list-secret-version-ids --secret-id "$2" \
      --query "Versions[?contains(VersionStages, 'AWSCURRENT')].VersionId")
    sm update-secret-version-stage --secret-id "$2" --version-stage AWSCURRENT \
      --move-to-version-id "$3" --remove-from-version-id "$cur" >/dev/null ;;
esac
"#
    );
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p.to_str().unwrap().to_string()
}

/// Polls `f` every 200 ms for up to 60 s.
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn kms_serve_runs_due_rotations_and_logs_no_value() {
    use cryptvol::aws::Region;
    use cryptvol::secrets::{SecretsManager, Via};
    use cryptvol::sys::clock::Clock;

    let Some((_, aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    let all = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}],
    });
    s.env.put_user_policy("alice", "secretsmanager-all", &all);
    let scratch = s.env.path("rotation");
    std::fs::create_dir(&scratch).unwrap();
    let ok_cmd = rotation_script(&scratch, "rotate.sh", false);
    let fail_cmd = rotation_script(&scratch, "rotate-fails.sh", true);
    let rand = |tag: &str| format!("sm-{tag}-{}", uuid::Uuid::new_v4().simple());
    let (old, new, failing_old, leak) = (rand("old"), rand("new"), rand("fold"), rand("leak"));

    // Two secrets in the other region with a daily rotation by a local command (which only
    // the CLI may set: here the library, as the CLI does), set up two days ago so that
    // both are due: the server runs them when that region opens.
    let (arn, failing_arn, old_version) = {
        let region = Region::parse(OTHER_REGION).unwrap();
        let mut no = || -> Result<cryptvol::crypto::SecretBytes, cryptvol::aws::AwsError> {
            panic!("no passphrase")
        };
        let kms = cryptvol::kms::EmbeddedKms::open_region(
            &s.env.data,
            &region,
            &mut no,
            Clock::Skewed(-2 * DAY),
        )
        .unwrap();
        let root =
            cryptvol::iam::Caller::local(cryptvol::iam::Identity::root(kms.account().clone()));
        let sm = SecretsManager::open(std::sync::Arc::new(kms)).unwrap();
        let call = |op: &str, req: Value| {
            sm.call(&root, op, &req, Via::Cli)
                .unwrap_or_else(|e| panic!("{op}: {e}"))
        };
        let a = call(
            "CreateSecret",
            json!({"Name": "rotating", "SecretString": old}),
        );
        let f = call(
            "CreateSecret",
            json!({"Name": "failing", "SecretString": failing_old}),
        );
        for (id, cmd) in [("rotating", &ok_cmd), ("failing", &fail_cmd)] {
            call(
                "RotateSecret",
                json!({"SecretId": id, "RotationCommand": cmd, "RotateImmediately": false,
                       "RotationRules": {"AutomaticallyAfterDays": 1}}),
            );
        }
        (
            str_field(&a, "ARN"),
            str_field(&f, "ARN"),
            str_field(&a, "VersionId"),
        )
    };

    let endpoint_file = scratch.join("endpoint");
    let steps = scratch.join("steps");
    let aws_str = aws.to_str().unwrap();
    let server = Server::start_with(
        &s.env,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", s.alice.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", s.alice.secret.as_str()),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_MAX_ATTEMPTS", "1"),
            ("AWS_PAGER", ""),
            ("CV_AWS", aws_str),
            ("CV_ENDPOINT_FILE", endpoint_file.to_str().unwrap()),
            ("CV_STEPS", steps.to_str().unwrap()),
            ("CV_NEW_VALUE", new.as_str()),
            ("CV_LEAK", leak.as_str()),
        ],
    );
    std::fs::write(&endpoint_file, &server.endpoint).unwrap();
    let cli = |args: &[&str]| -> Value {
        let out = Command::new(&aws)
            .args(["--endpoint-url", &server.endpoint, "--region", OTHER_REGION])
            .args(["--output", "json", "secretsmanager"])
            .args(args)
            .env("AWS_ACCESS_KEY_ID", &s.alice.id)
            .env("AWS_SECRET_ACCESS_KEY", &s.alice.secret)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_MAX_ATTEMPTS", "1")
            .env("AWS_PAGER", "")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "aws secretsmanager {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The first request to the other region opens it, and with it its rotations.
    let listed = cli(&["list-secrets"]);
    assert_eq!(
        listed["SecretList"].as_array().unwrap().len(),
        2,
        "{listed}"
    );

    let described = wait_for("the rotation of 'rotating'", || {
        let d = cli(&["describe-secret", "--secret-id", "rotating"]);
        d.get("LastRotatedDate").is_some().then_some(d)
    });
    let got = cli(&["get-secret-value", "--secret-id", "rotating"]);
    assert_eq!(got["SecretString"], new.as_str(), "{got}");
    let token = str_field(&got, "VersionId");
    assert_ne!(token, old_version);
    assert_eq!(
        described["VersionIdsToStages"],
        json!({ token.clone(): ["AWSCURRENT"], old_version.clone(): ["AWSPREVIOUS"] }),
        "{described}"
    );
    let previous = cli(&[
        "get-secret-value",
        "--secret-id",
        &arn,
        "--version-stage",
        "AWSPREVIOUS",
    ]);
    assert_eq!(previous["SecretString"], old.as_str());
    let next = described["NextRotationDate"].as_f64().unwrap_or(0.0) as i64;
    assert!(
        (now() + DAY - 120..=now() + DAY + 120).contains(&next),
        "NextRotationDate {next}, want a day from now: {described}"
    );

    // The failing one: one line in the log naming it, without the command's output.
    let line = wait_for("the failed rotation in the server's log", || {
        server
            .stderr()
            .lines()
            .find(|l| l.contains(&failing_arn))
            .map(str::to_string)
    });
    let failed = cli(&["describe-secret", "--secret-id", "failing"]);
    assert!(failed.get("LastRotatedDate").is_none(), "{failed}");
    let still = cli(&["get-secret-value", "--secret-id", "failing"]);
    assert_eq!(still["SecretString"], failing_old.as_str());
    let log = server.stderr();
    server.stop();
    eprintln!("the failed rotation's log line: {line}");
    let ran = std::fs::read_to_string(&steps).unwrap();
    let steps_of = |of: &str| -> Vec<String> {
        ran.lines()
            .filter(|l| l.split(' ').nth(1) == Some(of))
            .map(|l| l.split(' ').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        steps_of(&arn),
        ["createSecret", "setSecret", "testSecret", "finishSecret"],
        "{ran}"
    );
    assert_eq!(
        steps_of(&failing_arn),
        ["createSecret", "setSecret"],
        "{ran}"
    );
    assert!(
        ran.lines()
            .all(|l| l.ends_with(&token) || l.contains(&failing_arn)),
        "{ran}"
    );

    // The trail: both outcomes, as root on this machine; no value in the log or any file.
    let events = trail(&s.env, OTHER_REGION);
    let outcome = |name: &str, of: &str| {
        events.iter().find(|e| {
            e["eventName"] == name
                && e["eventSource"] == SECRETS_SOURCE
                && e.to_string().contains(of)
        })
    };
    let ok = outcome("RotationSucceeded", &arn).expect("no RotationSucceeded");
    assert_eq!(ok["userIdentity"]["type"], "Root", "{ok}");
    let ko = outcome("RotationFailed", &failing_arn).expect("no RotationFailed");
    assert!(ko.to_string().contains("setSecret"), "{ko}");
    let mut leaks = vec![];
    for v in [&old, &new, &failing_old, &leak] {
        leaks.extend(leak_of("kms serve's stderr", log.as_bytes(), v.as_bytes()));
        for f in files_under(&s.env.data) {
            leaks.extend(leak_of(
                &f.display().to_string(),
                &std::fs::read(&f).unwrap(),
                v.as_bytes(),
            ));
        }
    }
    assert!(
        leaks.is_empty(),
        "{leaks:#?}\n--- kms serve stderr ---\n{log}"
    );
}
