//! The remote KMS as AWS clients use one: credentials from the AWS chain (session tokens
//! from STS, a `credential_process` in a shared config file, named profiles), signing for
//! the region of the key's ARN, a private CA for an https endpoint (`--kms-ca-bundle`),
//! and the endpoint recorded in the volume header so that attach finds it again.
//!
//! Against moto's server (its STS and KMS, which nobody here wrote) and against
//! `cryptvol kms serve` with TLS. Each test sets the AWS variables of its own process
//! (nextest runs each test in its own process), so the commands it runs see only those.

mod common;

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::moto::MotoServer;
use common::mount::*;
use common::server::KmsServer;
use common::*;
use serde_json::Value;

/// moto's region for the key: not the data dir's (`local-1`), so a request signed for
/// anything but the key ARN's region finds no key there.
const MOTO_REGION: &str = "eu-west-3";

/// Sets the AWS variables of this process to `vars` and nothing else; the shared files
/// are pointed at a path that does not exist unless `vars` names them.
fn aws_env(scratch: &Path, vars: &[(&str, &str)]) {
    let none = scratch.join("no-such-aws-file");
    let none = none.to_str().unwrap();
    let defaults = [
        ("AWS_CONFIG_FILE", none),
        ("AWS_SHARED_CREDENTIALS_FILE", none),
    ];
    // SAFETY: nextest runs each test in its own process, and this test sets its
    // environment before it starts any thread that reads it.
    unsafe {
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_CREDENTIAL_EXPIRATION",
            "AWS_PROFILE",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_CA_BUNDLE",
            "CRYPTVOL_KMS_ENDPOINT",
        ] {
            std::env::remove_var(k);
        }
        for (k, v) in defaults.iter().chain(vars) {
            std::env::set_var(k, v);
        }
    }
}

/// The test venv's AWS CLI against moto, as a plain moto client.
fn aws(moto: &str, args: &[&str]) -> Value {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat-venv/bin/aws");
    let out = Command::new(&bin)
        .args([
            "--endpoint-url",
            moto,
            "--region",
            MOTO_REGION,
            "--output",
            "json",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An executable shell script in the scratch dir.
fn script(v: &Env, name: &str, body: &str) -> PathBuf {
    let p = v.scratch().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A volume command that must fail with `code`: one line, and nothing under the data dir
/// changed but the pool's metadata file, which a volume command opens (and so creates)
/// before it asks the KMS anything; `volume list` says no volume was made.
#[track_caller]
fn fail_volume(v: &VolEnv, args: &[&str], envs: &[(&str, &str)], code: i32) -> String {
    let skip = [dir_state::CALL_RECORDS, &[dir_state::POOL_META]].concat();
    let before = DirState::of(&v.data, &skip).files_only();
    let line = v.run_env(args, envs).fails(code);
    DirState::of(&v.data, &skip)
        .files_only()
        .assert_unchanged_since(&before, &format!("`cryptvol {}`", args.join(" ")));
    line
}

/// Temporary credentials from moto's STS: (id, secret, token, expiration).
fn session_credentials(moto: &str) -> (String, String, String, String) {
    let c = aws(moto, &["sts", "get-session-token"])["Credentials"].clone();
    let s = |k: &str| str_field(&c, k);
    (
        s("AccessKeyId"),
        s("SecretAccessKey"),
        s("SessionToken"),
        s("Expiration"),
    )
}

/// Attaches `vol` (with `extra` flags), writes a pattern through the FUSE file, detaches,
/// attaches again (a second Decrypt) and reads it back.
fn write_and_read_back(v: &VolEnv, vol: &str, name: &str, extra: &[&str], seed: u8) {
    let dir = v.dir(name);
    let data = pattern(256 << 10, seed);
    let file = v.attach(vol, &dir, extra);
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&data, 1 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    v.detach(&dir);
    let file = v.attach(vol, &dir, extra);
    let mut back = vec![0u8; data.len()];
    std::fs::File::open(&file)
        .unwrap()
        .read_exact_at(&mut back, 1 << 20)
        .unwrap();
    assert!(back == data, "{vol}: the data read back differs");
    v.detach(&dir);
}

#[test]
fn moto_session_and_process_credentials_make_volumes_that_attach_without_the_endpoint() {
    needs!(Fuse);
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let ep = moto.endpoint.clone();
    let (id, secret, token, expiration) = session_credentials(&ep);
    let key = str_field(
        &aws(&ep, &["kms", "create-key", "--description", "cryptvol"])["KeyMetadata"],
        "Arn",
    );
    assert!(
        key.starts_with(&format!("arn:aws:kms:{MOTO_REGION}:")),
        "{key}"
    );
    let v = VolEnv::new();
    v.add_secret(secret.as_bytes());
    v.add_secret(token.as_bytes());

    // Session credentials from the environment only.
    aws_env(
        v.scratch(),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("AWS_SESSION_TOKEN", &token),
        ],
    );
    let vol = v.create(&["--kms-endpoint", &ep, "--size", "64M", "--kms-key", &key]);
    assert_eq!(str_field(&v.describe_vol(&vol), "KmsKeyId"), key);
    let h = v.json(&["inspect", "volume", &vol]);
    assert_eq!(h["FormatVersion"], 3, "{h:#}");
    assert_eq!(h["KmsEndpoint"], format!("{ep}/"), "{h:#}");
    // Attach with no --kms-endpoint: the header's endpoint, signed for the key's region.
    write_and_read_back(&v, &vol, "env", &[], 1);

    // The same through a shared config file whose profile runs a credential_process;
    // the process counts its runs, so the test knows the chain used it.
    let runs = v.scratch().join("runs");
    let process = script(
        &v,
        "creds.sh",
        &format!(
            r#"echo run >> '{}'
printf '{{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "SessionToken": "%s", "Expiration": "%s"}}' '{id}' '{secret}' '{token}' '{expiration}'"#,
            runs.display()
        ),
    );
    let config = v.scratch().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[default]\nregion = us-east-1\n\n[profile moto]\ncredential_process = \"{}\" --quiet\n",
            process.display()
        ),
    )
    .unwrap();
    aws_env(
        v.scratch(),
        &[("AWS_CONFIG_FILE", config.to_str().unwrap())],
    );
    let vol2 = v.create(&[
        "--kms-endpoint",
        &ep,
        "--aws-profile",
        "moto",
        "--size",
        "64M",
        "--kms-key",
        &key,
    ]);
    write_and_read_back(&v, &vol2, "process", &["--aws-profile", "moto"], 2);
    let n = std::fs::read_to_string(&runs).unwrap().lines().count();
    assert_eq!(n, 3, "one run per create and per attach");
}

/// Rewrites a volume header as format 1 wrote it (six fields: no endpoint, no key check),
/// as a volume made with `--kms-endpoint` before the header recorded it.
fn rewrite_as_v1(v: &VolEnv, vol: &str) {
    use redb::{ReadableDatabase, TableDefinition};
    const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
    let db = redb::Database::open(v.pool_dir().join("meta.redb")).unwrap();
    let mut b = {
        let r = db.begin_read().unwrap();
        let t = r.open_table(VOLUMES).unwrap();
        t.get(vol).unwrap().expect("the row").value().to_vec()
    };
    assert_eq!(b[8], 3, "written as format 3");
    // The last two fields (the endpoint and the key check, u16 length ‖ bytes) end where
    // the checksum starts.
    b.truncate(b.len() - 32);
    let mut at = 32;
    let mut starts = vec![];
    while at < b.len() {
        starts.push(at);
        at += 2 + u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    }
    assert_eq!(starts.len(), 8, "eight fields");
    b.truncate(starts[6]);
    b[8] = 1;
    let sum = *blake3::hash(&b).as_bytes();
    b.extend_from_slice(&sum);
    let w = db.begin_write().unwrap();
    w.open_table(VOLUMES)
        .unwrap()
        .insert(vol, b.as_slice())
        .unwrap();
    w.commit().unwrap();
}

#[test]
fn an_aws_blob_with_no_endpoint_to_go_to_says_pass_the_endpoint() {
    needs!(Fuse);
    let Some(moto) = MotoServer::start() else {
        return;
    };
    let ep = moto.endpoint.clone();
    let key = str_field(&aws(&ep, &["kms", "create-key"])["KeyMetadata"], "Arn");
    let v = VolEnv::new();
    aws_env(
        v.scratch(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDMOTO"),
            ("AWS_SECRET_ACCESS_KEY", "moto-secret"),
        ],
    );
    let vol = v.create(&["--kms-endpoint", &ep, "--size", "16M", "--kms-key", &key]);
    rewrite_as_v1(&v, &vol);
    let h = v.json(&["inspect", "volume", &vol]);
    assert_eq!(
        h["KmsEndpoint"],
        Value::Null,
        "format 1: this data dir's KMS"
    );
    // The embedded KMS is not asked to open moto's blob: exit 3 and the fix.
    let dir = v.dir("a");
    let line = v.attach_run(&vol, &dir, &[]).fails(3);
    assert!(
        line.contains("this key lives in a remote KMS: pass --kms-endpoint URL")
            && line.contains(&vol),
        "{line}"
    );
    assert!(!line.contains("bad magic"), "{line}");
    assert!(!is_mount_point(&dir));
    // Given explicitly, the endpoint is used.
    write_and_read_back(&v, &vol, "b", &["--kms-endpoint", &ep], 3);
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with openssl:
/// (ca.pem, cert.pem, key.pem).
fn ca_and_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "2", "-subj", "/CN=cryptvol test CA"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-new"][..],
            &ec,
            &["-subj", "/CN=127.0.0.1"],
            &["-addext", "subjectAltName=IP:127.0.0.1"],
            &["-keyout", "key.pem", "-out", "cert.csr"],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-copy_extensions",
        "copyall",
        "-out",
        "cert.pem",
    ]);
    (p("ca.pem"), p("cert.pem"), p("key.pem"))
}

#[test]
fn https_endpoint_trusted_only_with_its_ca_bundle_and_session_tokens_reach_the_server() {
    needs!(Fuse);
    let kms_side = Env::init();
    kms_side.ok(&["iam", "create-user", "--user-name", "vols"]);
    let acct: Value =
        serde_json::from_slice(&std::fs::read(kms_side.data.join("account.json")).unwrap())
            .unwrap();
    let user = format!("arn:aws:iam::{}:user/vols", str_field(&acct, "account_id"));
    let key = str_field(
        &kms_side.json(&["kms", "create-key", "--user", &user])["KeyMetadata"],
        "Arn",
    );
    let ak = kms_side.json(&["iam", "create-access-key", "--user-name", "vols"]);
    let id = str_field(&ak["AccessKey"], "AccessKeyId");
    let secret = str_field(&ak["AccessKey"], "SecretAccessKey");
    let (ca, cert, tls_key) = ca_and_certificate(kms_side.scratch());
    let server = KmsServer::start_with(
        &kms_side,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            tls_key.to_str().unwrap(),
        ],
        &[],
    );
    let ep = server.endpoint.clone();
    assert!(ep.starts_with("https://"), "{ep}");

    let v = VolEnv::new();
    v.add_secret(secret.as_bytes());
    aws_env(
        v.scratch(),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    let create = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["volume", "create", "--kms-endpoint", &ep, "--size", "16M"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--kms-key".to_string(), key.clone()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: &[String], envs: &[(&str, &str)], code: i32| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fail_volume(&v, &a, envs, code)
    };

    // Without the CA: the Mozilla roots do not know it; one line, exit 20, nothing made.
    let line = run(&create(&[]), &[], 20);
    assert!(
        line.contains("not trusted") && line.contains("--kms-ca-bundle") && line.contains(&ep),
        "{line}"
    );
    // A bundle that cannot be read, or that holds no certificate.
    let missing = v.scratch().join("missing.pem");
    let line = run(
        &create(&["--kms-ca-bundle", missing.to_str().unwrap()]),
        &[],
        11,
    );
    assert!(
        line.contains("missing.pem") && line.contains("CA bundle"),
        "{line}"
    );
    let line = run(
        &create(&[]),
        &[("AWS_CA_BUNDLE", tls_key.to_str().unwrap())],
        6,
    );
    assert!(line.contains("holds no certificate"), "{line}");
    // A session token is signed and sent: this server has issued none, so it refuses the
    // request as AWS refuses an unknown token (the same key without one works below).
    let line = run(
        &create(&["--kms-ca-bundle", ca.to_str().unwrap()]),
        &[("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEBogus")],
        7,
    );
    assert!(line.contains("UnrecognizedClientException"), "{line}");
    assert!(line.contains("security token"), "{line}");
    assert_eq!(
        v.json(&["volume", "list"])["Volumes"],
        serde_json::json!([])
    );

    // With the CA: created; attached with no flag but AWS_CA_BUNDLE.
    let args = create(&["--kms-ca-bundle", ca.to_str().unwrap()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let vol = str_field(&v.json(&a), "VolumeId");
    let dir = v.dir("no-ca");
    let line = v.attach_run(&vol, &dir, &[]).fails(20);
    assert!(line.contains("not trusted"), "{line}");
    aws_env(
        v.scratch(),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("AWS_CA_BUNDLE", ca.to_str().unwrap()),
        ],
    );
    write_and_read_back(&v, &vol, "tls", &[], 4);
    let events = kms_side.json(&["audit", "lookup", "--principal", "vols"]);
    let names: Vec<&str> = events["Events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["eventName"].as_str().unwrap())
        .collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    assert_eq!(
        (count("GenerateDataKey"), count("Decrypt")),
        (1, 2),
        "one create and two attaches reached the server as vols: {names:?}"
    );
    server.stop();
}

#[test]
fn bad_credential_sources_fail_in_one_line_and_make_nothing() {
    let v = VolEnv::new();
    aws_env(v.scratch(), &[]);
    let cfg = v.scratch().join("aws-config");
    let base = [
        "volume",
        "create",
        "--kms-endpoint",
        "http://127.0.0.1:9",
        "--size",
        "16M",
        "--kms-key",
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    ];
    let with = |extra: &[&'static str]| [&base[..], extra].concat();
    let cfg_env = [("AWS_CONFIG_FILE", cfg.to_str().unwrap())];
    let profile = |name: &str, body: &str| {
        let s = script(&v, &format!("{name}.sh"), body);
        std::fs::write(
            &cfg,
            format!("[profile {name}]\ncredential_process = {}\n", s.display()),
        )
        .unwrap();
    };

    // No credentials anywhere.
    let line = v.fail_env(&base, &cfg_env, 7);
    assert!(line.contains("no AWS credentials"), "{line}");
    // A profile in neither file.
    let line = v.fail_env(&with(&["--aws-profile", "ghost"]), &cfg_env, 3);
    assert!(
        line.contains("'ghost'") && line.contains("aws-config"),
        "{line}"
    );
    // A credential_process that prints junk: its output is not shown.
    profile("junk", "echo 'SECRETJUNK not json'");
    let line = v.fail_env(&with(&["--aws-profile", "junk"]), &cfg_env, 17);
    assert!(
        line.contains("not JSON credentials") && !line.contains("SECRETJUNK"),
        "{line}"
    );
    // Expired credentials.
    profile(
        "old",
        r#"printf '{"Version":1,"AccessKeyId":"AKOLD","SecretAccessKey":"s","Expiration":"2021-01-01T00:00:00Z"}'"#,
    );
    let line = v.fail_env(&with(&["--aws-profile", "old"]), &cfg_env, 7);
    assert!(line.contains("expired at 2021-01-01T00:00:00Z"), "{line}");
    // Version 2 output.
    profile(
        "v2",
        r#"printf '{"Version":2,"AccessKeyId":"A","SecretAccessKey":"s"}'"#,
    );
    let line = v.fail_env(&with(&["--aws-profile", "v2"]), &cfg_env, 17);
    assert!(line.contains("Version 2"), "{line}");
    // A failing process: its own stderr passes through, then cryptvol's one line.
    profile("down", "echo 'token service down' >&2; exit 4");
    let before = v.snapshot();
    let out = v.run_env(&with(&["--aws-profile", "down"]), &cfg_env);
    assert_eq!(out.code, 17, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{:?}", out.stderr);
    assert_eq!(lines[0], "token service down");
    assert!(
        lines[1].starts_with("cryptvol: ") && lines[1].contains("down.sh"),
        "{}",
        lines[1]
    );
    assert!(out.stdout.is_empty());
    v.snapshot()
        .assert_unchanged_since(&before, "a failing credential_process");
    assert_eq!(
        v.json(&["volume", "list"])["Volumes"],
        serde_json::json!([])
    );
}
