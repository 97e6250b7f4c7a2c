//! `cryptvol kms serve` against real AWS clients and raw sockets.
//!
//! The client tests run boto3 (`tests/compat/boto3_suite.py`) and the AWS CLI
//! (`tests/compat/awscli_suite.py`) from the venv that `test.sh` installs
//! (`CRYPTVOL_COMPAT_PYTHON`, `CRYPTVOL_COMPAT_AWS`, else `target/compat-venv`): every
//! operation with real values checked, access denied by identity and key policies, bad
//! signatures and unknown keys, concurrent clients; then the audit trail must name each
//! call's access key and the client's address. Without the tools they skip, unless CI=true
//! or CRYPTVOL_REQUIRE_MOUNT=1 makes that a failure. The client harness (tools, data dir,
//! suite runner, trail checks) is tests/common/compat.rs, shared with
//! tests/compat_custom_key_stores.rs and tests/compat_secretsmanager.rs.
//!
//! The raw tests write HTTP/1.1 by hand on a TcpStream: what no SDK sends (no signature,
//! GET, a body over the limit, garbage) gets an AWS-shaped error, and the server keeps
//! serving. Every test starts its own server on port 0, reads the port from its one stdout
//! line, and stops it with SIGTERM, which must exit 0; a guard kills it on panic and prints
//! its stderr.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::compat::*;
use common::server::KmsServer as Server;
use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cryptvol");
const JSON_11: &str = "application/x-amz-json-1.1";

/// A child process killed when dropped (after a panic too); `wait` reaps it normally.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

// ---- raw HTTP ------------------------------------------------------------------------

/// One HTTP response, read to EOF (every request says `Connection: close`).
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// Asserts an AWS error envelope with this status and `__type`.
    #[track_caller]
    fn assert_aws_error(&self, status: u16, code: &str) -> Value {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{}\n{body}", self.head);
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {body:?}"));
        assert_eq!(v["__type"], code, "{}\n{body}", self.head);
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {body}"
        );
        assert_eq!(
            self.header("content-type").as_deref(),
            Some(JSON_11),
            "{}",
            self.head
        );
        assert!(self.header("x-amzn-requestid").is_some(), "{}", self.head);
        v
    }
}

/// A request with `Host`, `Content-Length` and `Connection: close` added.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A KMS request as an SDK sends it, minus the signature.
fn unsigned(op: &str, body: &str) -> Vec<u8> {
    request(
        "POST",
        "/",
        &[
            ("Content-Type", JSON_11),
            ("X-Amz-Target", &format!("TrentService.{op}")),
        ],
        body.as_bytes(),
    )
}

/// Sends `bytes` (from another thread, so that a server answering before it has read
/// everything cannot block us) and reads the response to EOF.
fn send(addr: &str, bytes: Vec<u8>) -> Resp {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // The server may answer and close before reading everything: not our error.
        let _ = w.write_all(&bytes);
    });
    let mut raw = Vec::new();
    let mut r = s;
    if let Err(e) = r.read_to_end(&mut raw) {
        // A reset after a complete response is how a server refuses the rest of a body.
        assert!(
            !raw.is_empty(),
            "reading the response from {addr} failed before any byte: {e}"
        );
    }
    let _ = writer.join();
    parse_response(&raw)
}

#[track_caller]
fn parse_response(raw: &[u8]) -> Resp {
    let text = String::from_utf8_lossy(raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete HTTP head in {text:?}"));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let mut resp = Resp {
        status,
        head,
        body: raw[end + 4..].to_vec(),
    };
    if let Some(len) = resp.header("content-length") {
        let len: usize = len.parse().expect("Content-Length");
        assert!(resp.body.len() >= len, "short body: {text:?}");
        resp.body.truncate(len);
    }
    resp
}

#[test]
fn raw_requests_get_aws_shaped_errors_and_the_server_keeps_serving() {
    let env = Env::init();
    let server = Server::start(&env);
    let addr = server.addr.clone();

    // No Authorization header at all.
    send(&addr, unsigned("ListKeys", "{}"))
        .assert_aws_error(400, "MissingAuthenticationTokenException");
    // An Authorization header that is not SigV4.
    let bearer = request(
        "POST",
        "/",
        &[
            ("Content-Type", JSON_11),
            ("X-Amz-Target", "TrentService.ListKeys"),
            ("Authorization", "Bearer abc"),
        ],
        b"{}",
    );
    send(&addr, bearer).assert_aws_error(400, "IncompleteSignatureException");

    // Not the KMS protocol: GET /, POST elsewhere.
    for (method, path) in [("GET", "/"), ("POST", "/keys"), ("PUT", "/")] {
        let r = send(&addr, request(method, path, &[], b""));
        assert!(
            matches!(r.status, 400 | 404 | 405),
            "{method} {path}: {}",
            r.head
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!("{method} {path}: the body is not JSON ({e}): {:?}", r.body)
        });
        r.assert_aws_error(r.status, &str_field(&v, "__type"));
    }

    // 2 MiB body: 413 before any signature check.
    let big = format!("{{\"Plaintext\":\"{}\"}}", "A".repeat(2 << 20));
    send(&addr, unsigned("Encrypt", &big)).assert_aws_error(413, "ValidationException");
    // Exactly at the limit is no 413: it goes on to authentication.
    let at_limit = format!("{{\"x\":\"{}\"}}", "A".repeat((1 << 20) - 8));
    assert_eq!(at_limit.len(), 1 << 20);
    send(&addr, unsigned("Encrypt", &at_limit))
        .assert_aws_error(400, "MissingAuthenticationTokenException");

    // Garbage bytes, a header line without a colon, a truncated request: a 4xx or a
    // closed connection, never a crash.
    for junk in [
        b"\x00\xff\xfe garbage \x01\x02\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nthis is not a header\r\n\r\n".to_vec(),
        b"POST / HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
    ] {
        let r = send(&addr, junk.clone());
        assert!(
            (400..500).contains(&r.status),
            "{:?} got {}",
            String::from_utf8_lossy(&junk),
            r.head
        );
    }
    {
        // Half a request, then the client goes away.
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"a\":")
            .unwrap();
    }

    // Concurrent clients: 8 threads x 25 unauthenticated requests, all answered.
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    let r = send(&addr, unsigned("Decrypt", &format!("{{\"n\":{t}{i}}}")));
                    r.assert_aws_error(400, "MissingAuthenticationTokenException");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a client thread failed");
    }

    // Still serving.
    send(&addr, unsigned("ListKeys", "{}"))
        .assert_aws_error(400, "MissingAuthenticationTokenException");
    server.stop();
}

// ---- real AWS clients (harness: tests/common/compat.rs) -------------------------------

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[test]
fn boto3_drives_every_operation_and_the_trail_names_its_access_key() {
    let Some((python, _)) = compat_tools() else {
        return;
    };
    let s = setup();
    let server = Server::start(&s.env);
    // Junk first: the suite below then shows the server survived it.
    let r = send(
        &server.addr,
        b"\x16\x03\x01 not http at all\r\n\r\n".to_vec(),
    );
    assert!((400..500).contains(&r.status), "{}", r.head);

    let summary = run_suite(
        &python,
        "boto3_suite.py",
        &server,
        &s,
        &[("CV_CONCURRENCY", "8x50")],
    );
    assert_eq!(summary["access_key_id"], s.alice.id.as_str());
    assert_eq!(summary["concurrent_decrypts"], 400);
    server.stop();

    let alice = assert_trail(
        &events_of(&s.env, DEFAULT_REGION, "alice"),
        "alice",
        &s.alice,
    );
    for op in [
        "CreateKey",
        "DescribeKey",
        "CreateAlias",
        "Encrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "ReEncrypt",
        "EnableKeyRotation",
        "RotateKeyOnDemand",
        "ListKeyRotations",
        "PutKeyPolicy",
        "GetKeyPolicy",
        "TagResource",
        "UntagResource",
        "ListResourceTags",
        "ListKeys",
        "ListAliases",
        "DisableKey",
        "EnableKey",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
        "UpdateAlias",
        "DeleteAlias",
    ] {
        assert!(
            alice.contains(&op.to_string()),
            "no {op} event by alice: {alice:?}"
        );
    }
    assert!(
        count(&alice, "Decrypt") >= 400,
        "{} Decrypt events for 400+ Decrypts",
        count(&alice, "Decrypt")
    );
    let boto = events_of(&s.env, DEFAULT_REGION, "alice");
    assert!(
        boto.iter().any(|e| e["userAgent"]
            .as_str()
            .is_some_and(|a| a.contains("Boto3/"))),
        "no event has boto3's User-Agent"
    );

    // bob: denied by the default key policy, allowed by the one naming him.
    let bob_events = events_of(&s.env, DEFAULT_REGION, "bob");
    let bob = assert_trail(&bob_events, "bob", &s.bob);
    assert!(
        bob_events
            .iter()
            .any(|e| e["eventName"] == "Encrypt" && e["errorCode"] == "AccessDeniedException"),
        "no denied Encrypt by bob: {bob:?}"
    );
    assert!(
        bob_events
            .iter()
            .any(|e| e["eventName"] == "Decrypt" && e.get("errorCode").is_none_or(Value::is_null)),
        "no allowed Decrypt by bob: {bob:?}"
    );

    // The other region's trail has the key made there, and only there.
    let other = assert_trail(&events_of(&s.env, OTHER_REGION, "alice"), "alice", &s.alice);
    assert_eq!(count(&other, "CreateKey"), 1, "{other:?}");
}

#[test]
fn aws_cli_drives_the_key_flow_and_the_trail_names_its_access_key() {
    let Some((python, aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    let server = Server::start(&s.env);
    let scratch = s.env.path("awscli");
    std::fs::create_dir(&scratch).unwrap();
    let summary = run_suite(
        &python,
        "awscli_suite.py",
        &server,
        &s,
        &[
            ("CV_AWS", aws.to_str().unwrap()),
            ("CV_SCRATCH", scratch.to_str().unwrap()),
        ],
    );
    server.stop();

    let events = events_of(&s.env, DEFAULT_REGION, "alice");
    let alice = assert_trail(&events, "alice", &s.alice);
    for op in [
        "CreateKey",
        "CreateAlias",
        "Encrypt",
        "Decrypt",
        "GenerateDataKey",
        "EnableKeyRotation",
        "RotateKeyOnDemand",
        "ScheduleKeyDeletion",
        "CancelKeyDeletion",
    ] {
        assert!(
            alice.contains(&op.to_string()),
            "no {op} event by alice: {alice:?}"
        );
    }
    let key = str_field(&summary, "key_id");
    assert!(
        events.iter().any(|e| e["eventName"] == "CreateKey"
            && e["userAgent"]
                .as_str()
                .is_some_and(|a| a.contains("aws-cli/"))
            && e.to_string().contains(&key)),
        "no CreateKey of {key} with the AWS CLI's User-Agent"
    );
    let bob = events_of(&s.env, DEFAULT_REGION, "bob");
    assert_trail(&bob, "bob", &s.bob);
    assert!(
        bob.iter()
            .any(|e| e["eventName"] == "Encrypt" && e["errorCode"] == "AccessDeniedException"),
        "no denied Encrypt by bob: {bob:#?}"
    );
}

/// `--tls-cert/--tls-key`: the server speaks HTTPS with the given certificate, boto3
/// verifies it and works, and a plain-HTTP request to the same port gets no answer.
#[test]
fn tls_serves_https_with_the_given_certificate() {
    let Some((python, _aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    // alice may use KMS only over TLS (aws:SecureTransport), as a policy would demand.
    let tls_only = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "kms:*", "Resource": "*",
                       "Condition": {"Bool": {"aws:SecureTransport": "false"}}}],
    });
    let doc = format!(
        "file://{}",
        s.env.file(tls_only.to_string().as_bytes()).display()
    );
    s.env.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "tls-only",
        "--policy-document",
        &doc,
    ]);
    let dir = s.env.scratch();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&s.env.data)
        .args(["kms", "serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kms serve --tls-cert");
    // Killed if an assertion below fails, so a failing run leaves no server behind.
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: Value = serde_json::from_str(&line).expect("listening line");
    let endpoint = str_field(&v, "Endpoint");
    let addr = str_field(&v, "Listening");
    assert_eq!(endpoint, format!("https://{addr}"));
    let script = r#"
import os, boto3
kms = boto3.client("kms", endpoint_url=os.environ["EP"], region_name="local-1",
    aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"],
    verify=os.environ["CA"])
k = kms.create_key(Description="over tls")["KeyMetadata"]["KeyId"]
b = kms.encrypt(KeyId=k, Plaintext=b"tls")["CiphertextBlob"]
assert kms.decrypt(CiphertextBlob=b)["Plaintext"] == b"tls"
print(k)
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .env("EP", &endpoint)
        .env("AK", &s.alice.id)
        .env("SK", &s.alice.secret)
        .env("CA", &cert)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "boto3 over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP to the TLS port: the handshake fails and nothing is served.
    let mut sock = std::net::TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.write_all(&unsigned("ListKeys", "{}")).unwrap();
    let mut buf = Vec::new();
    let _ = sock.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("\"Keys\""),
        "plain HTTP was served on the TLS port"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    // The same call over plain HTTP is refused by the policy: aws:SecureTransport is false.
    let plain = Server::start(&s.env);
    let denied = r#"
import os, boto3, botocore
kms = boto3.client("kms", endpoint_url=os.environ["EP"], region_name="local-1",
    aws_access_key_id=os.environ["AK"], aws_secret_access_key=os.environ["SK"])
try:
    kms.list_keys()
    raise SystemExit("list_keys over plain HTTP was allowed")
except botocore.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDeniedException", e.response
    assert "explicit deny in an identity-based policy" in e.response["Error"]["Message"], e.response
"#;
    let out = Command::new(&python)
        .args(["-c", denied])
        .env("EP", &plain.endpoint)
        .env("AK", &s.alice.id)
        .env("SK", &s.alice.secret)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "plain HTTP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    plain.stop();
    // The call over TLS is in the trail with the caller's key.
    let evs = events_of(&s.env, DEFAULT_REGION, "alice");
    assert!(
        evs.iter().any(|e| e["eventName"] == "Decrypt"
            && e["userIdentity"]["accessKeyId"] == s.alice.id.as_str()),
        "{evs:#?}"
    );
}

/// Grants through boto3 and the AWS CLI (`tests/compat/grants_suite.py`): bob, whom no
/// policy lets use the key, decrypts with his own access key through a grant alice made,
/// until he retires it; errors arrive as botocore's exception classes; the trail has
/// every grant call and names the grant on the Decrypt it allowed.
#[test]
fn grants_through_boto3_and_the_aws_cli() {
    let Some((python, aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    let server = Server::start(&s.env);
    let summary = run_suite(
        &python,
        "grants_suite.py",
        &server,
        &s,
        &[("CV_AWS", aws.to_str().unwrap())],
    );
    server.stop();
    let grant = str_field(&summary, "grant_id");
    let alice = assert_trail(
        &events_of(&s.env, DEFAULT_REGION, "alice"),
        "alice",
        &s.alice,
    );
    for op in [
        "CreateGrant",
        "ListGrants",
        "ListRetirableGrants",
        "RevokeGrant",
    ] {
        assert!(
            alice.contains(&op.to_string()),
            "no {op} event by alice: {alice:?}"
        );
    }
    let bob = events_of(&s.env, DEFAULT_REGION, "bob");
    assert_trail(&bob, "bob", &s.bob);
    assert!(
        bob.iter().any(|e| e["eventName"] == "Decrypt"
            && e["additionalEventData"]["grantId"] == grant.as_str()),
        "no Decrypt by bob naming grant {grant}: {bob:#?}"
    );
    assert!(
        bob.iter()
            .any(|e| e["eventName"] == "RetireGrant" && e.get("errorCode").is_none()),
        "no RetireGrant by bob"
    );
}

/// The operations beyond the key flow (tests/compat/ops_suite.py) through boto3, its
/// modelled exception classes and paginators, and the AWS CLI; then the trail must hold
/// the dry runs with their error code and the AWS CLI's paged ListKeys requests.
#[test]
fn boto3_and_aws_cli_drive_the_added_operations_and_checks() {
    let Some((python, aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    let server = Server::start(&s.env);
    let scratch = s.env.path("ops");
    std::fs::create_dir(&scratch).unwrap();
    let summary = run_suite(
        &python,
        "ops_suite.py",
        &server,
        &s,
        &[
            ("CV_AWS", aws.to_str().unwrap()),
            ("CV_SCRATCH", scratch.to_str().unwrap()),
        ],
    );
    assert!(
        summary["list_keys_pages"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    server.stop();

    let events = events_of(&s.env, DEFAULT_REGION, "alice");
    let names = assert_trail(&events, "alice", &s.alice);
    for op in [
        "GenerateRandom",
        "UpdateKeyDescription",
        "RotateKeyOnDemand",
    ] {
        assert!(names.contains(&op.to_string()), "no {op} event: {names:?}");
    }
    for op in [
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
    ] {
        assert!(
            events.iter().any(|e| e["eventName"] == op
                && e["errorCode"] == "DryRunOperationException"
                && e["requestParameters"]["dryRun"] == true),
            "no dry-run {op} event with errorCode DryRunOperationException"
        );
    }
    let cli_list_keys = events
        .iter()
        .filter(|e| {
            e["eventName"] == "ListKeys"
                && e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.contains("aws-cli/"))
        })
        .count();
    assert!(
        cli_list_keys >= 5,
        "`aws kms list-keys --page-size 2` made {cli_list_keys} requests for 9+ keys"
    );
    assert!(
        events
            .iter()
            .any(|e| e["eventName"] == "RotateKeyOnDemand"
                && e["errorCode"] == "LimitExceededException"),
        "the refused 11th rotation is not in the trail"
    );
}

/// STS through boto3 and the AWS CLI (`tests/compat/sts_suite.py`): alice assumes a role
/// whose trust policy names her (bob is refused) and gets a session token of her own; the
/// temporary credentials then make the KMS calls the role allows and are denied the rest;
/// expired, tampered and missing tokens are refused. The trail shows each role session
/// as CloudTrail shows an AssumedRole caller, with no secret or token in it.
#[test]
fn sts_through_boto3_and_the_aws_cli_issues_credentials_kms_accepts() {
    let Some((python, aws)) = compat_tools() else {
        return;
    };
    let s = setup();
    let env = &s.env;
    let account = env.account();
    let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{account}:user/alice")},
        "Action": "sts:AssumeRole"}]});
    let trust = format!(
        "file://{}",
        env.file(trust.to_string().as_bytes()).display()
    );
    let role = env.json(&[
        "iam",
        "create-role",
        "--role-name",
        "encryptor",
        "--assume-role-policy-document",
        &trust,
    ]);
    let role_arn = str_field(&role["Role"], "Arn");
    let allow = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*"}]});
    let allow = format!(
        "file://{}",
        env.file(allow.to_string().as_bytes()).display()
    );
    env.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "encryptor",
        "--policy-name",
        "use",
        "--policy-document",
        &allow,
    ]);
    let key = env.create_key();
    // Issued two hours ago (the clock moved back) for 15 minutes: expired.
    let expired = env.json_env(
        &as_(
            "alice",
            &[
                "sts",
                "assume-role",
                "--role-arn",
                &role_arn,
                "--role-session-name",
                "old",
                "--duration-seconds",
                "900",
            ],
        ),
        &[(SKEW_ENV, "-7200")],
    );
    let server = Server::start(env);
    let summary = run_suite(
        &python,
        "sts_suite.py",
        &server,
        &s,
        &[
            ("CV_AWS", aws.to_str().unwrap()),
            ("CV_ROLE_ARN", role_arn.as_str()),
            ("CV_KEY", key.as_str()),
            ("CV_EXPIRED", &expired["Credentials"].to_string()),
        ],
    );
    server.stop();
    assert!(summary["checks"].as_u64().unwrap_or(0) >= 30, "{summary}");

    let events = events_of(env, DEFAULT_REGION, "encryptor");
    let session_ids: Vec<&str> = summary["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for session in ["boto3-session", "cli-session"] {
        let arn = format!("arn:aws:sts::{account}:assumed-role/encryptor/{session}");
        let mine: Vec<&Value> = events
            .iter()
            .filter(|e| e["userIdentity"]["arn"] == arn.as_str())
            .collect();
        for op in ["Encrypt", "Decrypt", "GenerateDataKey"] {
            assert!(
                mine.iter()
                    .any(|e| e["eventName"] == op && e.get("errorCode").is_none()),
                "no {op} by {arn}: {mine:#?}"
            );
        }
        assert!(
            mine.iter().any(|e| e["eventName"] == "CreateKey"
                && e["errorCode"] == "AccessDeniedException"),
            "no denied CreateKey by {arn}"
        );
        for e in mine {
            let id = &e["userIdentity"];
            assert_eq!(id["type"], "AssumedRole", "{e:#}");
            assert!(
                session_ids.contains(&id["accessKeyId"].as_str().unwrap_or("")),
                "{e:#}"
            );
            assert_eq!(
                id["sessionContext"]["sessionIssuer"]["arn"],
                role_arn.as_str(),
                "{e:#}"
            );
            assert!(
                id["sessionContext"]["attributes"]["creationDate"].is_string(),
                "{e:#}"
            );
        }
    }
    let trail = env.ok(&["audit", "lookup"]);
    let token = str_field(&expired["Credentials"], "SessionToken");
    assert!(!trail.contains(&token), "a session token in the trail");
    assert_no_secret(
        "the audit trail",
        trail.as_bytes(),
        str_field(&expired["Credentials"], "SecretAccessKey").as_bytes(),
    );
}
