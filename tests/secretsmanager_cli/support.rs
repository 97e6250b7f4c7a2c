//! Helpers of the secretsmanager CLI tests: running commands, reading secrets' versions
//! and labels, the exception check, and rotation commands written as shell scripts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::{Value, json};

/// `secretsmanager ARGS`.
pub fn sm<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["secretsmanager"];
    v.extend_from_slice(args);
    v
}

/// `--profile WHO secretsmanager ARGS`.
pub fn sm_as<'a>(who: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    as_(who, &sm(args))
}

/// `create-secret --name NAME --secret-string VALUE EXTRA…`; returns the answer.
#[track_caller]
pub fn create(env: &Env, name: &str, value: &str, extra: &[&str]) -> Value {
    let mut args = vec!["create-secret", "--name", name, "--secret-string", value];
    args.extend_from_slice(extra);
    let v = env.json(&sm(&args));
    assert_eq!(v["Name"], name, "{v:#}");
    v
}

#[track_caller]
pub fn describe(env: &Env, id: &str) -> Value {
    env.json(&sm(&["describe-secret", "--secret-id", id]))
}

/// `get-secret-value --secret-id ID EXTRA…`.
#[track_caller]
pub fn get(env: &Env, id: &str, extra: &[&str]) -> Value {
    let mut args = vec!["get-secret-value", "--secret-id", id];
    args.extend_from_slice(extra);
    env.json(&sm(&args))
}

#[track_caller]
pub fn current_string(env: &Env, id: &str) -> String {
    str_field(&get(env, id, &[]), "SecretString")
}

/// `put-secret-value --secret-id ID --secret-string VALUE EXTRA…`; returns the VersionId.
#[track_caller]
pub fn put(env: &Env, id: &str, value: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "put-secret-value",
        "--secret-id",
        id,
        "--secret-string",
        value,
    ];
    args.extend_from_slice(extra);
    str_field(&env.json(&sm(&args)), "VersionId")
}

/// Version id → staging labels, from describe-secret.
#[track_caller]
pub fn stages(env: &Env, id: &str) -> BTreeMap<String, Vec<String>> {
    let d = describe(env, id);
    serde_json::from_value(d["VersionIdsToStages"].clone())
        .unwrap_or_else(|e| panic!("VersionIdsToStages: {e}: {d:#}"))
}

pub fn labels(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The version ids list-secret-version-ids prints (EXTRA: its flags).
#[track_caller]
pub fn version_ids(env: &Env, id: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["list-secret-version-ids", "--secret-id", id];
    args.extend_from_slice(extra);
    let v = env.json(&sm(&args));
    let mut ids: Vec<String> = v["Versions"]
        .as_array()
        .unwrap_or_else(|| panic!("no Versions: {v:#}"))
        .iter()
        .map(|x| str_field(x, "VersionId"))
        .collect();
    ids.sort();
    ids
}

/// The names list-secrets prints (EXTRA: its flags).
#[track_caller]
pub fn names(env: &Env, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["list-secrets"];
    args.extend_from_slice(extra);
    let v = env.json(&sm(&args));
    let mut n: Vec<String> = v["SecretList"]
        .as_array()
        .unwrap_or_else(|| panic!("no SecretList: {v:#}"))
        .iter()
        .map(|x| str_field(x, "Name"))
        .collect();
    n.sort();
    n
}

/// Asserts the one stderr line names AWS's exception the AWS CLI's way.
#[track_caller]
pub fn assert_exception(line: &str, code: &str) {
    assert!(
        line.starts_with(&format!("cryptvol: {code}: ")),
        "expected {code}: {line}"
    );
}

/// Runs a command that must fail with `exit` and the exception `code`, changing nothing
/// under the data dir; returns the line.
#[track_caller]
pub fn refused(env: &Env, args: &[&str], exit: i32, code: &str) -> String {
    let line = env.fail(&sm(args), exit);
    assert_exception(&line, code);
    line
}

pub fn cryptvol_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cryptvol")
}

/// Writes an executable shell script into the test's scratch dir.
pub fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = env.path(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// A rotation command as AWS's Lambda template does it: createSecret puts
/// `<new_prefix>-<token>` under AWSPENDING with the token, testSecret reads AWSPENDING back
/// (that value after this command's createSecret of the token; when the rotation is only
/// tested, `--no-rotate-immediately`, a copy of the current value), finishSecret moves
/// AWSCURRENT to the token. Each call is logged, one line of `args|env` per step, in
/// `<name>.log`; each step writes a line on standard output (which must never reach the
/// CLI's); with `fail_at`, that step writes two stderr lines and exits 3.
pub fn rotation_command(env: &Env, name: &str, new_prefix: &str, fail_at: Option<&str>) -> PathBuf {
    let log = env.path(&format!("{name}.log"));
    let fail_at = fail_at.unwrap_or("none");
    let body = format!(
        r#"CV='{bin}'
echo "$1|$2|$3|$CRYPTVOL_ROTATION_STEP|$CRYPTVOL_SECRET_ID|$CRYPTVOL_CLIENT_REQUEST_TOKEN|$CRYPTVOL_DATA_DIR|$CRYPTVOL_REGION|$CRYPTVOL_PROFILE" >> '{log}'
new='{new_prefix}'-"$3"
echo "the command's standard output, which no one prints"
if [ "$1" = '{fail_at}' ]; then
  echo "an earlier line" >&2
  echo "$1: the new password does not work" >&2
  exit 3
fi
case "$1" in
createSecret)
  echo "$3" > '{log}.created'
  "$CV" secretsmanager get-secret-value --secret-id "$2" --version-id "$3" >/dev/null 2>&1 && exit 0
  exec "$CV" secretsmanager put-secret-value --secret-id "$2" --client-request-token "$3" \
    --secret-string "$new" --version-stages AWSPENDING >/dev/null ;;
setSecret) exit 0 ;;
testSecret)
  v=$("$CV" secretsmanager get-secret-value --secret-id "$2" --version-stage AWSPENDING \
    --query SecretString --output text) || exit 1
  if [ "$(cat '{log}.created' 2>/dev/null)" = "$3" ]; then
    [ "$v" = "$new" ] || {{ echo "AWSPENDING holds another value" >&2; exit 1; }}
  else
    [ -n "$v" ] || {{ echo "AWSPENDING holds no value" >&2; exit 1; }}
  fi ;;
finishSecret)
  cur=$("$CV" secretsmanager get-secret-value --secret-id "$2" --version-stage AWSCURRENT \
    --query VersionId --output text) || exit 1
  [ "$cur" = "$3" ] && exit 0
  exec "$CV" secretsmanager update-secret-version-stage --secret-id "$2" \
    --version-stage AWSCURRENT --move-to-version-id "$3" --remove-from-version-id "$cur" >/dev/null ;;
*) echo "unknown step $1" >&2; exit 1 ;;
esac
"#,
        bin = cryptvol_bin().display(),
        log = log.display(),
    );
    script(env, name, &body)
}

/// The steps a rotation command logged: each line split at `|`.
pub fn step_log(env: &Env, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(env.path(&format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// An identity policy allowing `actions` on everything.
pub fn allow(actions: &[&str]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
    })
}

pub fn text_file(env: &Env, text: &str) -> String {
    format!("file://{}", env.file(text.as_bytes()).display())
}

pub fn tags_of(env: &Env, id: &str) -> Vec<(String, String)> {
    let d = describe(env, id);
    let mut t: Vec<(String, String)> = d["Tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| (str_field(t, "Key"), str_field(t, "Value")))
                .collect()
        })
        .unwrap_or_default();
    t.sort();
    t
}

pub const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

pub fn password(env: &Env, extra: &[&str]) -> String {
    let mut args = vec!["get-random-password"];
    args.extend_from_slice(extra);
    str_field(&env.json(&sm(&args)), "RandomPassword")
}
