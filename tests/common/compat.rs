//! The real AWS clients of the compat tests (tests/compat.rs and its siblings): the venv's
//! boto3 and AWS CLI, a data dir with two users and two regions, a suite script run against
//! a `kms serve`, and the audit trail it must leave.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use super::mount::REQUIRE_ENV;
use super::server::KmsServer as Server;
use super::*;

/// The second region of [`setup`]'s data dir.
pub const OTHER_REGION: &str = "eu-2";

/// The venv's python (with boto3) and aws; None (after a note) when missing and not required.
pub fn compat_tools() -> Option<(PathBuf, PathBuf)> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat-venv/bin");
    let python = std::env::var_os("CRYPTVOL_COMPAT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv.join("python"));
    let aws = std::env::var_os("CRYPTVOL_COMPAT_AWS")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv.join("aws"));
    let works = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    let missing = if !works(Command::new(&python).args(["-c", "import boto3"])) {
        Some(format!("{} cannot import boto3", python.display()))
    } else if !works(Command::new(&aws).arg("--version")) {
        Some(format!("{} --version failed", aws.display()))
    } else {
        None
    };
    let Some(why) = missing else {
        return Some((python, aws));
    };
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    assert!(
        !required,
        "the AWS client tools are missing ({why}); test.sh installs them \
         (CRYPTVOL_COMPAT_PYTHON / CRYPTVOL_COMPAT_AWS)"
    );
    eprintln!(
        "note: skipping (run ./test.sh to install awscli and boto3, or set CI=true or \
         {REQUIRE_ENV}=1 to make this a failure): {why}"
    );
    None
}

pub struct AccessKey {
    pub id: String,
    pub secret: String,
}

/// A data dir with two regions; `alice` may use kms:* by identity policy, `bob` has no
/// identity policy.
pub struct Setup {
    pub env: Env,
    pub alice: AccessKey,
    pub bob: AccessKey,
    pub bob_arn: String,
}

pub fn setup() -> Setup {
    let env = Env::init();
    env.ok(&["--region", OTHER_REGION, "init"]);
    let mut keys = vec![];
    let mut bob_arn = String::new();
    for user in ["alice", "bob"] {
        let u = env.json(&["iam", "create-user", "--user-name", user]);
        bob_arn = str_field(&u["User"], "Arn");
        let k = env.json(&["iam", "create-access-key", "--user-name", user]);
        let id = str_field(&k["AccessKey"], "AccessKeyId");
        let secret = str_field(&k["AccessKey"], "SecretAccessKey");
        env.add_secret(secret.as_bytes());
        keys.push(AccessKey { id, secret });
    }
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    });
    let doc = format!(
        "file://{}",
        env.file(policy.to_string().as_bytes()).display()
    );
    env.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "kms-all",
        "--policy-document",
        &doc,
    ]);
    let bob = keys.pop().unwrap();
    let alice = keys.pop().unwrap();
    Setup {
        env,
        alice,
        bob,
        bob_arn,
    }
}

/// Runs a suite script; returns its JSON summary (last stdout line).
pub fn run_suite(
    python: &Path,
    script: &str,
    server: &Server,
    s: &Setup,
    extra: &[(&str, &str)],
) -> Value {
    let run = run_suite_unchecked(python, script, server, s, extra);
    assert!(
        run.success,
        "{script} failed ({}) after {:.1} s\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- kms serve stderr ---\n{}",
        run.status,
        run.seconds,
        run.stdout,
        run.stderr,
        server.stderr()
    );
    let summary = run
        .summary
        .unwrap_or_else(|| panic!("{script}: the last line is not JSON: {}", run.stdout));
    if !run.stderr.is_empty() {
        eprintln!("--- {script} stderr ---\n{}", run.stderr);
    }
    eprintln!("{script}: {summary}");
    summary
}

/// What a suite script did: its exit, its output, and its summary if its last stdout
/// line is JSON (a suite may print one on failure too).
pub struct SuiteRun {
    pub success: bool,
    pub status: std::process::ExitStatus,
    pub seconds: f64,
    pub stdout: String,
    pub stderr: String,
    pub summary: Option<Value>,
}

/// Runs a suite script, failed or not (for a test that checks more after a failure).
pub fn run_suite_unchecked(
    python: &Path,
    script: &str,
    server: &Server,
    s: &Setup,
    extra: &[(&str, &str)],
) -> SuiteRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(script);
    let mut cmd = Command::new(python);
    cmd.arg(&path);
    // No configuration of the runner's own AWS account may leak in.
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs([
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("CV_ENDPOINT", server.endpoint.as_str()),
        ("CV_REGION", DEFAULT_REGION),
        ("CV_OTHER_REGION", OTHER_REGION),
        ("CV_AK", s.alice.id.as_str()),
        ("CV_SK", s.alice.secret.as_str()),
        ("CV_DENIED_AK", s.bob.id.as_str()),
        ("CV_DENIED_SK", s.bob.secret.as_str()),
        ("CV_DENIED_ARN", s.bob_arn.as_str()),
    ]);
    cmd.envs(extra.iter().copied());
    let started = Instant::now();
    let out = cmd.output().expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = serde_json::from_str(stdout.lines().last().unwrap_or("")).ok();
    SuiteRun {
        success: out.status.success(),
        status: out.status,
        seconds: started.elapsed().as_secs_f64(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        stdout,
        summary,
    }
}

/// Events of `principal` in `region`, after the server has stopped.
pub fn events_of(env: &Env, region: &str, principal: &str) -> Vec<Value> {
    let v = env.json(&[
        "--region",
        region,
        "audit",
        "lookup",
        "--principal",
        principal,
    ]);
    v["Events"]
        .as_array()
        .unwrap_or_else(|| panic!("no Events in {v}"))
        .clone()
}

/// Every event was made with `key` from 127.0.0.1; returns the event names.
#[track_caller]
pub fn assert_trail(events: &[Value], user: &str, key: &AccessKey) -> Vec<String> {
    assert!(!events.is_empty(), "no event for {user}");
    for e in events {
        assert_eq!(e["userIdentity"]["userName"], user, "{e:#}");
        assert_eq!(e["userIdentity"]["accessKeyId"], key.id.as_str(), "{e:#}");
        assert_eq!(e["sourceIPAddress"], "127.0.0.1", "{e:#}");
        assert_no_secret(
            "an audit event",
            e.to_string().as_bytes(),
            key.secret.as_bytes(),
        );
    }
    events.iter().map(|e| str_field(e, "eventName")).collect()
}
