//! Every `cryptvol secretsmanager` command, run as a process: the secret's life, versions
//! and staging labels, idempotent tokens, deletion and restore, tags, listing and paging,
//! random passwords, resource policies and keys, rotation through a local command
//! (immediate, failed, due), output formats, and no value ever written in the clear.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

// ---- helpers ----------------------------------------------------------------------

/// `secretsmanager ARGS`.
fn sm<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["secretsmanager"];
    v.extend_from_slice(args);
    v
}

/// `--profile WHO secretsmanager ARGS`.
fn sm_as<'a>(who: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    as_(who, &sm(args))
}

/// `create-secret --name NAME --secret-string VALUE EXTRA…`; returns the answer.
#[track_caller]
fn create(env: &Env, name: &str, value: &str, extra: &[&str]) -> Value {
    let mut args = vec!["create-secret", "--name", name, "--secret-string", value];
    args.extend_from_slice(extra);
    let v = env.json(&sm(&args));
    assert_eq!(v["Name"], name, "{v:#}");
    v
}

#[track_caller]
fn describe(env: &Env, id: &str) -> Value {
    env.json(&sm(&["describe-secret", "--secret-id", id]))
}

/// `get-secret-value --secret-id ID EXTRA…`.
#[track_caller]
fn get(env: &Env, id: &str, extra: &[&str]) -> Value {
    let mut args = vec!["get-secret-value", "--secret-id", id];
    args.extend_from_slice(extra);
    env.json(&sm(&args))
}

#[track_caller]
fn current_string(env: &Env, id: &str) -> String {
    str_field(&get(env, id, &[]), "SecretString")
}

/// `put-secret-value --secret-id ID --secret-string VALUE EXTRA…`; returns the VersionId.
#[track_caller]
fn put(env: &Env, id: &str, value: &str, extra: &[&str]) -> String {
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
fn stages(env: &Env, id: &str) -> BTreeMap<String, Vec<String>> {
    let d = describe(env, id);
    serde_json::from_value(d["VersionIdsToStages"].clone())
        .unwrap_or_else(|e| panic!("VersionIdsToStages: {e}: {d:#}"))
}

fn labels(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The version ids list-secret-version-ids prints (EXTRA: its flags).
#[track_caller]
fn version_ids(env: &Env, id: &str, extra: &[&str]) -> Vec<String> {
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
fn names(env: &Env, extra: &[&str]) -> Vec<String> {
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
fn assert_exception(line: &str, code: &str) {
    assert!(
        line.starts_with(&format!("cryptvol: {code}: ")),
        "expected {code}: {line}"
    );
}

/// Runs a command that must fail with `exit` and the exception `code`, changing nothing
/// under the data dir; returns the line.
#[track_caller]
fn refused(env: &Env, args: &[&str], exit: i32, code: &str) -> String {
    let line = env.fail(&sm(args), exit);
    assert_exception(&line, code);
    line
}

fn cryptvol_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("cryptvol")
}

/// Writes an executable shell script into the test's scratch dir.
fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = env.path(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// A rotation command as AWS's Lambda template does it: createSecret puts
/// `<new_prefix>-<token>` under AWSPENDING with the token, testSecret reads AWSPENDING
/// back, finishSecret moves AWSCURRENT to the token. Each call is logged, one line of
/// `args|env` per step, in `<name>.log`; with `fail_at`, that step writes two stderr
/// lines and exits 3.
fn rotation_command(env: &Env, name: &str, new_prefix: &str, fail_at: Option<&str>) -> PathBuf {
    let log = env.path(&format!("{name}.log"));
    let fail_at = fail_at.unwrap_or("none");
    let body = format!(
        r#"CV='{bin}'
echo "$1|$2|$3|$CRYPTVOL_ROTATION_STEP|$CRYPTVOL_SECRET_ID|$CRYPTVOL_CLIENT_REQUEST_TOKEN|$CRYPTVOL_DATA_DIR|$CRYPTVOL_REGION|$CRYPTVOL_PROFILE" >> '{log}'
new='{new_prefix}'-"$3"
if [ "$1" = '{fail_at}' ]; then
  echo "an earlier line" >&2
  echo "$1: the new password does not work" >&2
  exit 3
fi
case "$1" in
createSecret)
  "$CV" secretsmanager get-secret-value --secret-id "$2" --version-id "$3" >/dev/null 2>&1 && exit 0
  exec "$CV" secretsmanager put-secret-value --secret-id "$2" --client-request-token "$3" \
    --secret-string "$new" --version-stages AWSPENDING >/dev/null ;;
setSecret) exit 0 ;;
testSecret)
  v=$("$CV" secretsmanager get-secret-value --secret-id "$2" --version-stage AWSPENDING \
    --query SecretString --output text) || exit 1
  [ "$v" = "$new" ] || {{ echo "AWSPENDING holds another value" >&2; exit 1; }} ;;
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
fn step_log(env: &Env, name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(env.path(&format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
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
fn allow(actions: &[&str]) -> Value {
    json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]
    })
}

fn text_file(env: &Env, text: &str) -> String {
    format!("file://{}", env.file(text.as_bytes()).display())
}

// ---- create, describe, get ------------------------------------------------------------

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

// ---- errors and their exit codes ------------------------------------------------------

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

// ---- versions and staging labels --------------------------------------------------------

#[test]
fn put_secret_value_moves_awscurrent_and_awsprevious() {
    let env = Env::init();
    let v1 = str_field(&create(&env, "s", "value-one", &[]), "VersionId");
    let v2 = put(&env, "s", "value-two", &[]);
    assert_ne!(v1, v2);
    assert_eq!(
        stages(&env, "s"),
        BTreeMap::from([
            (v1.clone(), labels(&["AWSPREVIOUS"])),
            (v2.clone(), labels(&["AWSCURRENT"])),
        ])
    );
    assert_eq!(current_string(&env, "s"), "value-two");
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "AWSPREVIOUS"]),
            "SecretString"
        ),
        "value-one"
    );
    assert_eq!(
        str_field(&get(&env, "s", &["--version-id", &v1]), "SecretString"),
        "value-one"
    );

    let v3 = put(&env, "s", "value-three", &[]);
    // v1 has no label left: deprecated, hidden unless asked for.
    assert_eq!(
        stages(&env, "s"),
        BTreeMap::from([
            (v2.clone(), labels(&["AWSPREVIOUS"])),
            (v3.clone(), labels(&["AWSCURRENT"])),
        ])
    );
    let mut shown = vec![v2.clone(), v3.clone()];
    shown.sort();
    assert_eq!(version_ids(&env, "s", &[]), shown);
    assert_eq!(version_ids(&env, "s", &["--no-include-deprecated"]), shown);
    let mut all = vec![v1.clone(), v2.clone(), v3.clone()];
    all.sort();
    assert_eq!(version_ids(&env, "s", &["--include-deprecated"]), all);
    // A deprecated version is still readable by its id.
    assert_eq!(
        str_field(&get(&env, "s", &["--version-id", &v1]), "SecretString"),
        "value-one"
    );

    // A version put under another label leaves AWSCURRENT where it is.
    let v4 = put(
        &env,
        "s",
        "value-four",
        &["--version-stages", "BLUE", "GREEN"],
    );
    assert_eq!(current_string(&env, "s"), "value-three");
    let mut l = stages(&env, "s")[&v4].clone();
    l.sort();
    assert_eq!(l, labels(&["BLUE", "GREEN"]));
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "GREEN"]),
            "SecretString"
        ),
        "value-four"
    );

    // The versions listing pages like list-secrets.
    let v = env.json(&sm(&[
        "list-secret-version-ids",
        "--secret-id",
        "s",
        "--max-results",
        "1",
    ]));
    assert_eq!(v["Versions"].as_array().unwrap().len(), 1, "{v:#}");
    let t = str_field(&v, "NextToken");
    let v = env.json(&sm(&[
        "list-secret-version-ids",
        "--secret-id",
        "s",
        "--max-results",
        "5",
        "--next-token",
        &t,
    ]));
    assert_eq!(v["Versions"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(v.get("NextToken").is_none(), "{v:#}");
    let v = env.json(&sm(&[
        "list-secret-version-ids",
        "--secret-id",
        "s",
        "--page-size",
        "1",
    ]));
    assert_eq!(v["Versions"].as_array().unwrap().len(), 3, "{v:#}");
    assert_eq!(v["Name"], "s");
}

#[test]
fn update_secret_version_stage_moves_labels() {
    let env = Env::init();
    let v1 = str_field(&create(&env, "s", "value-one", &[]), "VersionId");
    let v2 = put(&env, "s", "value-two", &[]);
    let v3 = put(&env, "s", "value-three", &[]);

    // AWSCURRENT back to v1: the old current becomes AWSPREVIOUS.
    let out = env.json(&sm(&[
        "update-secret-version-stage",
        "--secret-id",
        "s",
        "--version-stage",
        "AWSCURRENT",
        "--move-to-version-id",
        &v1,
        "--remove-from-version-id",
        &v3,
    ]));
    assert_eq!(out["Name"], "s", "{out:#}");
    let st = stages(&env, "s");
    assert_eq!(st[&v1], labels(&["AWSCURRENT"]), "{st:?}");
    assert_eq!(st[&v3], labels(&["AWSPREVIOUS"]), "{st:?}");
    assert!(!st.contains_key(&v2), "v2 lost AWSPREVIOUS: {st:?}");
    assert_eq!(current_string(&env, "s"), "value-one");

    // A label on a version must be removed from it by naming it.
    refused(
        &env,
        &[
            "update-secret-version-stage",
            "--secret-id",
            "s",
            "--version-stage",
            "AWSCURRENT",
            "--move-to-version-id",
            &v2,
        ],
        6,
        "InvalidParameterException",
    );
    refused(
        &env,
        &[
            "update-secret-version-stage",
            "--secret-id",
            "s",
            "--version-stage",
            "AWSCURRENT",
            "--move-to-version-id",
            &v2,
            "--remove-from-version-id",
            &v3,
        ],
        6,
        "InvalidParameterException",
    );

    // A label of one's own: added, moved, removed.
    env.json(&sm(&[
        "update-secret-version-stage",
        "--secret-id",
        "s",
        "--version-stage",
        "MINE",
        "--move-to-version-id",
        &v2,
    ]));
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "MINE"]),
            "SecretString"
        ),
        "value-two"
    );
    env.json(&sm(&[
        "update-secret-version-stage",
        "--secret-id",
        "s",
        "--version-stage",
        "MINE",
        "--remove-from-version-id",
        &v2,
    ]));
    refused(
        &env,
        &[
            "get-secret-value",
            "--secret-id",
            "s",
            "--version-stage",
            "MINE",
        ],
        3,
        "ResourceNotFoundException",
    );
    // An unknown version (AWS documents no exception for it; the core says
    // InvalidParameterException).
    refused(
        &env,
        &[
            "update-secret-version-stage",
            "--secret-id",
            "s",
            "--version-stage",
            "MINE",
            "--move-to-version-id",
            "11111111-1111-1111-1111-111111111111",
        ],
        6,
        "InvalidParameterException",
    );
}

#[test]
fn client_request_tokens_are_idempotent() {
    let env = Env::init();
    let t1 = "11111111-2222-3333-4444-555555555555";
    let c = create(&env, "s", "value-one", &["--client-request-token", t1]);
    assert_eq!(c["VersionId"], t1);

    let t2 = "22222222-2222-3333-4444-555555555555";
    assert_eq!(
        put(&env, "s", "value-two", &["--client-request-token", t2]),
        t2
    );
    let before = stages(&env, "s");
    // The same token and value again: the same version, nothing moves.
    assert_eq!(
        put(&env, "s", "value-two", &["--client-request-token", t2]),
        t2
    );
    assert_eq!(stages(&env, "s"), before);
    assert_eq!(version_ids(&env, "s", &["--include-deprecated"]).len(), 2);
    // The same token with another value: refused, nothing changed.
    refused(
        &env,
        &[
            "put-secret-value",
            "--secret-id",
            "s",
            "--secret-string",
            "value-other",
            "--client-request-token",
            t2,
        ],
        9,
        "ResourceExistsException",
    );
    assert_eq!(current_string(&env, "s"), "value-two");
    // update-secret's token too.
    let t3 = "33333333-2222-3333-4444-555555555555";
    let u = env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "s",
        "--secret-string",
        "value-three",
        "--client-request-token",
        t3,
    ]));
    assert_eq!(u["VersionId"], t3);
    assert_eq!(current_string(&env, "s"), "value-three");
    // A token of the wrong length.
    refused(
        &env,
        &[
            "put-secret-value",
            "--secret-id",
            "s",
            "--secret-string",
            "v",
            "--client-request-token",
            "short",
        ],
        6,
        "InvalidParameterException",
    );
}

#[test]
fn update_secret_changes_description_key_and_value() {
    let env = Env::init();
    let key = env.create_key();
    let v1 = str_field(&create(&env, "s", "value-one", &[]), "VersionId");
    let u = env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "s",
        "--description",
        "new text",
    ]));
    assert!(u.get("VersionId").is_none(), "no value, no version: {u:#}");
    assert_eq!(describe(&env, "s")["Description"], "new text");
    assert_eq!(stages(&env, "s").len(), 1);

    let u = env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "s",
        "--kms-key-id",
        &key,
        "--secret-string",
        "value-two",
    ]));
    let v2 = str_field(&u, "VersionId");
    let d = describe(&env, "s");
    assert!(
        d["KmsKeyId"].as_str().unwrap_or_default().contains(&key),
        "{d:#}"
    );
    assert_eq!(current_string(&env, "s"), "value-two");
    assert_eq!(stages(&env, "s")[&v1], labels(&["AWSPREVIOUS"]));
    assert_eq!(stages(&env, "s")[&v2], labels(&["AWSCURRENT"]));
    // The old version, under the old key, still reads.
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "AWSPREVIOUS"]),
            "SecretString"
        ),
        "value-one"
    );
}

// ---- deletion -------------------------------------------------------------------------

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

// ---- tags -----------------------------------------------------------------------------

fn tags_of(env: &Env, id: &str) -> Vec<(String, String)> {
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

// ---- listing --------------------------------------------------------------------------

#[test]
fn list_secrets_filters() {
    let env = Env::init();
    create(
        &env,
        "db/prod",
        "v-1",
        &[
            "--description",
            "Primary database",
            "--tags",
            "Key=team,Value=storage",
        ],
    );
    create(&env, "db/test", "v-2", &["--tags", "Key=team,Value=qa"]);
    create(&env, "api/key", "v-3", &["--tags", "Key=owner,Value=web"]);
    let all = names(&env, &[]);
    assert_eq!(all, vec!["api/key", "db/prod", "db/test"]);

    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=db/"]),
        vec!["db/prod", "db/test"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=DB/"]),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=!db/"]),
        vec!["api/key"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=name,Values=api,db/p"]),
        vec!["api/key", "db/prod"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=tag-key,Values=team"]),
        vec!["db/prod", "db/test"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=tag-value,Values=qa"]),
        vec!["db/test"]
    );
    // Several filters: all must match.
    assert_eq!(
        names(
            &env,
            &[
                "--filters",
                "Key=tag-key,Values=team",
                "Key=name,Values=db/t"
            ]
        ),
        vec!["db/test"]
    );
    assert_eq!(
        names(
            &env,
            &[
                "--filters",
                r#"[{"Key":"description","Values":["Primary"]}]"#
            ]
        ),
        vec!["db/prod"]
    );
    refused(
        &env,
        &["list-secrets", "--filters", "Key=colour,Values=red"],
        6,
        "InvalidParameterException",
    );
    // No value anywhere in a listing.
    let out = env.ok(&sm(&["list-secrets"]));
    for v in ["v-1", "v-2", "v-3"] {
        assert!(!out.contains(&format!("\"{v}\"")), "{out}");
    }
}

/// AWS: "description: Prefix match, not case-sensitive" (API_Filter); so is `all`.
#[test]
fn list_secrets_description_and_all_filters_are_not_case_sensitive() {
    let env = Env::init();
    create(
        &env,
        "db/prod",
        "v-1",
        &["--description", "Primary database"],
    );
    create(&env, "other", "v-2", &[]);
    assert_eq!(
        names(&env, &["--filters", "Key=description,Values=primary"]),
        vec!["db/prod"]
    );
    assert_eq!(
        names(&env, &["--filters", "Key=all,Values=PRIMARY"]),
        vec!["db/prod"]
    );
}

#[test]
fn list_secrets_pages() {
    let env = Env::init();
    for i in 0..5 {
        create(&env, &format!("page-{i}"), "v", &[]);
    }
    let all: Vec<String> = (0..5).map(|i| format!("page-{i}")).collect();

    // One request per call: --max-results and --next-token.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["list-secrets", "--max-results", "2"];
        if let Some(t) = &token {
            args.extend(["--next-token", t.as_str()]);
        }
        let v = env.json(&sm(&args));
        let list = v["SecretList"].as_array().expect("SecretList");
        assert!(list.len() <= 2, "{v:#}");
        seen.extend(list.iter().map(|s| str_field(s, "Name")));
        pages += 1;
        match v["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    seen.sort();
    assert_eq!(seen, all);

    // Every page, merged.
    let v = env.json(&sm(&["list-secrets", "--page-size", "2"]));
    assert_eq!(v["SecretList"].as_array().unwrap().len(), 5, "{v:#}");
    assert!(v.get("NextToken").is_none(), "{v:#}");

    // --max-items, then --starting-token.
    let v = env.json(&sm(&[
        "list-secrets",
        "--max-items",
        "3",
        "--page-size",
        "2",
    ]));
    let first: Vec<String> = v["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "Name"))
        .collect();
    assert_eq!(first.len(), 3, "{v:#}");
    let t = str_field(&v, "NextToken");
    let v = env.json(&sm(&[
        "list-secrets",
        "--max-items",
        "3",
        "--starting-token",
        &t,
    ]));
    let mut rest: Vec<String> = v["SecretList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_field(s, "Name"))
        .collect();
    assert_eq!(rest.len(), 2, "{v:#}");
    assert!(v.get("NextToken").is_none(), "{v:#}");
    rest.extend(first);
    rest.sort();
    assert_eq!(rest, all);

    // Sorted by creation date, both ways.
    let order = |o: &str| -> Vec<String> {
        env.json(&sm(&["list-secrets", "--sort-order", o]))["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| str_field(s, "Name"))
            .collect()
    };
    let mut asc = order("asc");
    let desc = order("desc");
    assert_eq!(asc.len(), 5);
    asc.reverse();
    assert_eq!(asc, desc);

    // By name, both ways.
    let by_name = |o: &str| -> Vec<String> {
        env.json(&sm(&[
            "list-secrets",
            "--sort-by",
            "name",
            "--sort-order",
            o,
        ]))["SecretList"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| str_field(s, "Name"))
            .collect()
    };
    assert_eq!(by_name("asc"), all);
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(by_name("desc"), rev);
    refused(
        &env,
        &["list-secrets", "--sort-by", "colour"],
        6,
        "InvalidParameterException",
    );

    // --max-results out of range.
    for n in ["0", "101"] {
        refused(
            &env,
            &["list-secrets", "--max-results", n],
            6,
            "InvalidParameterException",
        );
    }
    // Flags of the two paging styles do not mix.
    env.run(&sm(&[
        "list-secrets",
        "--max-results",
        "2",
        "--max-items",
        "2",
    ]))
    .usage_error();
}

// ---- get-random-password --------------------------------------------------------------

const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

fn password(env: &Env, extra: &[&str]) -> String {
    let mut args = vec!["get-random-password"];
    args.extend_from_slice(extra);
    str_field(&env.json(&sm(&args)), "RandomPassword")
}

#[test]
fn get_random_password_honours_length_and_classes() {
    let env = Env::init();
    let p = password(&env, &[]);
    assert_eq!(p.chars().count(), 32, "{p}");
    assert!(!p.contains(' '), "{p}");
    // Each type is included by default (RequireEachIncludedType).
    assert!(p.chars().any(|c| c.is_ascii_lowercase()), "{p}");
    assert!(p.chars().any(|c| c.is_ascii_uppercase()), "{p}");
    assert!(p.chars().any(|c| c.is_ascii_digit()), "{p}");
    assert!(p.chars().any(|c| PUNCTUATION.contains(c)), "{p}");

    for _ in 0..5 {
        let p = password(
            &env,
            &[
                "--password-length",
                "64",
                "--exclude-punctuation",
                "--exclude-uppercase",
            ],
        );
        assert_eq!(p.len(), 64, "{p}");
        assert!(
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{p}"
        );
        assert!(p.chars().any(|c| c.is_ascii_digit()), "{p}");

        let p = password(
            &env,
            &[
                "--password-length",
                "40",
                "--exclude-numbers",
                "--exclude-lowercase",
                "--exclude-characters",
                "ABCDE!\"#",
            ],
        );
        assert_eq!(p.len(), 40, "{p}");
        assert!(
            p.chars()
                .all(|c| (c.is_ascii_uppercase() || PUNCTUATION.contains(c))
                    && !"ABCDE!\"#".contains(c)),
            "{p}"
        );

        let p = password(
            &env,
            &[
                "--password-length",
                "100",
                "--include-space",
                "--exclude-punctuation",
                "--exclude-numbers",
                "--exclude-uppercase",
            ],
        );
        assert_eq!(p.len(), 100, "{p}");
        assert!(p.chars().all(|c| c == ' ' || c.is_ascii_lowercase()), "{p}");
        assert!(p.contains(' '), "{p}");
    }
    // Two passwords differ.
    assert_ne!(password(&env, &[]), password(&env, &[]));
    // A one-character password needs --no-require-each-included-type.
    let p = password(
        &env,
        &["--password-length", "1", "--no-require-each-included-type"],
    );
    assert_eq!(p.chars().count(), 1);
    refused(
        &env,
        &["get-random-password", "--password-length", "2"],
        6,
        "InvalidParameterException",
    );
    for n in ["0", "4097"] {
        refused(
            &env,
            &["get-random-password", "--password-length", n],
            6,
            "InvalidParameterException",
        );
    }
    refused(
        &env,
        &[
            "get-random-password",
            "--exclude-numbers",
            "--exclude-punctuation",
            "--exclude-uppercase",
            "--exclude-lowercase",
        ],
        6,
        "InvalidParameterException",
    );
}

// ---- rotation -------------------------------------------------------------------------

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

// ---- resource policies and keys -------------------------------------------------------

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

// ---- output ---------------------------------------------------------------------------

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

// ---- values never in the clear ----------------------------------------------------------

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
    env.create_user("bob");
    let later = skew_days(2);
    let out = env.run_env(
        &sm_as("bob", &["rotate-due"]),
        &[(SKEW_ENV, later.as_str())],
    );
    assert!(
        step_log(&env, "rotate.sh").is_empty(),
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
