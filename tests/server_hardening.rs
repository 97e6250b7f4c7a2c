//! `cryptvol kms serve` under hostile clients, over raw sockets: a slow-loris client is
//! cut off while others are served; 10,000 connections against a cap of 256 are refused
//! (503 or a close) with the server's descriptors bounded, and it serves again after;
//! SigV4 scoped to another service, a Host left unsigned, an expired presigned URL;
//! per-access-key quotas (ThrottlingException for one key while another is served);
//! error bodies without paths or CLI advice; every refusal in the audit trail, and a
//! flood of refusals counted rather than written one by one beyond its budget; rounds of
//! 1 MiB bodies leave the server's memory where the first round left it.
//!
//! Requests are signed with the crate's own SigV4 signer. Every test starts its own
//! server on port 0 and stops it with SIGTERM, which must exit 0.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use common::mount::vm_rss_kib;
use common::server::KmsServer as Server;
use common::*;
use cryptvol::aws::sigv4::{self, Credentials, RequestParts};
use serde_json::{Value, json};

const JSON_11: &str = "application/x-amz-json-1.1";

// ---- raw HTTP ------------------------------------------------------------------------

#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts an AWS error with this status and `__type`; returns its message.
    #[track_caller]
    fn error(&self, status: u16, code: &str) -> String {
        let v = self.json();
        assert_eq!(self.status, status, "{}\n{v}", self.head);
        assert_eq!(v["__type"], code, "{}\n{v}", self.head);
        str_field(&v, "message")
    }

    #[track_caller]
    fn ok(&self) -> Value {
        let v = self.json();
        assert_eq!(self.status, 200, "{}\n{v}", self.head);
        v
    }
}

/// Parses a complete response (head, then a body of Content-Length bytes); None if
/// `raw` does not hold one yet.
fn parse_response(raw: &[u8]) -> Option<Resp> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let len: usize = head
        .lines()
        .skip(1)
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(raw.len() - end - 4);
    let body = raw.get(end + 4..end + 4 + len)?.to_vec();
    Some(Resp { status, head, body })
}

/// Sends one request (which says `Connection: close`) and reads the response to EOF;
/// None if the connection closed without one.
fn try_send(addr: &str, bytes: &[u8]) -> Option<Resp> {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.write_all(bytes);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn send(addr: &str, bytes: &[u8]) -> Resp {
    try_send(addr, bytes).expect("the connection closed without a response")
}

struct Key {
    id: String,
    secret: String,
}

fn kms_headers(op: &str) -> Vec<(String, String)> {
    vec![
        ("Host".to_string(), "127.0.0.1".to_string()),
        ("Content-Type".to_string(), JSON_11.to_string()),
        ("X-Amz-Target".to_string(), format!("TrentService.{op}")),
    ]
}

fn raw_request(query: &str, headers: &[(String, String)], body: &str) -> Vec<u8> {
    let path = if query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{query}")
    };
    let mut r = format!("POST {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    r.into_bytes()
}

/// A KMS request signed by `key` for `service` in `region` at `at`.
fn signed_as(
    op: &str,
    body: &str,
    key: &Key,
    region: &str,
    service: &str,
    at: SystemTime,
) -> Vec<u8> {
    let mut headers = kms_headers(op);
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
    };
    let creds = Credentials {
        access_key_id: &key.id,
        secret_access_key: &key.secret,
        session_token: None,
    };
    let added = sigv4::sign(&parts, &creds, region, service, at);
    headers.extend(added);
    raw_request("", &headers, body)
}

fn signed(op: &str, body: &str, key: &Key) -> Vec<u8> {
    signed_as(op, body, key, DEFAULT_REGION, "kms", SystemTime::now())
}

fn call(addr: &str, op: &str, body: Value, key: &Key) -> Resp {
    send(addr, &signed(op, &body.to_string(), key))
}

/// A data dir whose users alice and bob may use kms:* (identity policy); carol may not.
struct Setup {
    env: Env,
    alice: Key,
    bob: Key,
    carol: Key,
}

fn setup() -> Setup {
    let env = Env::init();
    let mut keys = vec![];
    for user in ["alice", "bob", "carol"] {
        env.json(&["iam", "create-user", "--user-name", user]);
        let k = env.json(&["iam", "create-access-key", "--user-name", user]);
        let key = Key {
            id: str_field(&k["AccessKey"], "AccessKeyId"),
            secret: str_field(&k["AccessKey"], "SecretAccessKey"),
        };
        env.add_secret(key.secret.as_bytes());
        keys.push(key);
    }
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
    });
    let doc = format!(
        "file://{}",
        env.file(policy.to_string().as_bytes()).display()
    );
    for user in ["alice", "bob"] {
        env.ok(&[
            "iam",
            "put-user-policy",
            "--user-name",
            user,
            "--policy-name",
            "kms-all",
            "--policy-document",
            &doc,
        ]);
    }
    let carol = keys.pop().unwrap();
    let bob = keys.pop().unwrap();
    let alice = keys.pop().unwrap();
    Setup {
        env,
        alice,
        bob,
        carol,
    }
}

/// Every event of the default region's trail.
fn trail(env: &Env) -> Vec<Value> {
    env.json(&["audit", "lookup"])["Events"]
        .as_array()
        .expect("Events")
        .clone()
}

/// The events with `errorCode` = `code`.
fn refusals<'a>(events: &'a [Value], code: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["errorCode"] == code).collect()
}

/// Keeps only what a request from this test looks like in the trail.
#[track_caller]
fn assert_from_here(e: &Value) {
    assert_eq!(e["sourceIPAddress"], "127.0.0.1", "{e:#}");
    assert!(
        e["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{e:#}"
    );
}

// ---- slow clients ---------------------------------------------------------------------

/// Sends a request head one byte a second; true once the server has cut the connection.
fn slow_loris(addr: &str, prefix: &[u8], max_secs: u32) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if s.write_all(prefix).is_err() {
        return true;
    }
    let mut buf = [0u8; 1024];
    for _ in 0..max_secs {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // An answer (408) is being cut off too; read on to the close.
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
        if s.write_all(b"a").is_err() {
            return true;
        }
    }
    false
}

#[test]
fn a_slow_loris_client_is_cut_off_while_others_are_served() {
    let s = setup();
    let server = Server::start_with(
        &s.env,
        &[
            "--header-timeout",
            "2",
            "--body-timeout",
            "2",
            "--max-connections",
            "4",
        ],
        &[],
    );
    let addr = server.addr.clone();
    // Two clients trickle a header, one trickles a body.
    let mut slow: Vec<std::thread::JoinHandle<bool>> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                slow_loris(
                    &addr,
                    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
                    120,
                )
            })
        })
        .collect();
    let body_addr = addr.clone();
    let slow_body = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&body_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Target: TrentService.ListKeys\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .unwrap();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        parse_response(&raw)
    });
    // Meanwhile, a normal client is served.
    call(&addr, "ListKeys", json!({}), &s.alice).ok();
    for t in slow.drain(..) {
        assert!(t.join().unwrap(), "a slow-loris client was never cut off");
    }
    let r = slow_body
        .join()
        .unwrap()
        .expect("no answer to the slow body");
    let message = r.error(408, "RequestTimeoutException");
    assert!(message.contains("2 seconds"), "{message}");

    // Their places are free again: four connections at once are all served.
    let mut served = false;
    for _ in 0..50 {
        let mut socks: Vec<TcpStream> =
            (0..4).map(|_| TcpStream::connect(&addr).unwrap()).collect();
        let statuses: Vec<u16> = socks
            .iter_mut()
            .map(|sock| {
                sock.set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                let _ = sock.write_all(&signed("ListKeys", "{}", &s.alice));
                let mut raw = Vec::new();
                let _ = sock.read_to_end(&mut raw);
                parse_response(&raw).map_or(0, |r| r.status)
            })
            .collect();
        if statuses.iter().all(|&st| st == 200) {
            served = true;
            break;
        }
        // A slot is freed just after its socket closes: try again.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        served,
        "the slow clients' connections still hold their places"
    );
    server.stop();

    // The slow body is in the trail.
    let events = trail(&s.env);
    let timed_out = refusals(&events, "RequestTimeoutException");
    assert_eq!(timed_out.len(), 1, "{events:#?}");
    assert_eq!(timed_out[0]["eventName"], "ListKeys");
    assert_eq!(timed_out[0]["userIdentity"]["type"], "Unknown");
    assert_from_here(timed_out[0]);
}

// ---- the connection cap ---------------------------------------------------------------

/// Raises this process's open-file limit to its hard limit.
fn raise_nofile(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < need {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= need,
        "this test needs {need} open files; the hard limit is {soft}"
    );
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn ten_thousand_connections_meet_the_cap_and_the_server_serves_again() {
    const CONNECTIONS: usize = 10_000;
    const CAP: usize = 256;
    raise_nofile(CONNECTIONS as u64 + 512);
    let s = setup();
    let server = Server::start_with(&s.env, &["--max-connections", &CAP.to_string()], &[]);
    let addr = server.addr.clone();

    let mut socks = Vec::with_capacity(CONNECTIONS);
    let mut connect_failures = 0;
    let mut most_fds = 0;
    for i in 0..CONNECTIONS {
        match TcpStream::connect(&addr) {
            Ok(sock) => {
                sock.set_nonblocking(true).unwrap();
                socks.push((sock, Vec::new(), false));
            }
            Err(_) => connect_failures += 1,
        }
        if i % 500 == 0 {
            most_fds = most_fds.max(open_fds(server.pid()));
        }
    }
    most_fds = most_fds.max(open_fds(server.pid()));
    // The cap, the refusing tasks (64) and the server's own files (128 reserved).
    assert!(
        most_fds <= CAP + 64 + 128,
        "kms serve held {most_fds} descriptors under a flood of {CONNECTIONS} connections"
    );

    // Wait until every connection beyond the cap has been answered 503 or closed.
    let mut refused_503 = 0;
    let mut aws_shaped = None;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        for (sock, got, done) in socks.iter_mut().filter(|(_, _, d)| !d) {
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => {
                        *done = true;
                        break;
                    }
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        *done = true;
                        break;
                    }
                }
            }
            if *done && let Some(r) = parse_response(got) {
                refused_503 += 1;
                aws_shaped.get_or_insert(r);
            }
        }
        let open = socks.iter().filter(|(_, _, d)| !d).count();
        if open <= CAP || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let open = socks.iter().filter(|(_, _, d)| !d).count();
    assert!(
        open <= CAP,
        "{open} connections are still open, over the cap of {CAP} ({connect_failures} connects failed)"
    );
    let r = aws_shaped.expect("no connection over the cap got a 503");
    let message = r.error(503, "ServiceUnavailableException");
    assert!(message.contains(&format!("limit of {CAP}")), "{message}");
    assert!(refused_503 > 0);

    // While the cap is full, a new client is refused too; once the idle ones go, served.
    drop(socks);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Over the cap: a 503, or a close when the refusing tasks are all busy.
        match try_send(&addr, &signed("ListKeys", "{}", &s.alice)) {
            Some(r) if r.status == 200 => break,
            Some(r) => assert_eq!(r.status, 503, "{r:?}"),
            None => {}
        }
        assert!(Instant::now() < deadline, "the server never served again");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server
            .stderr()
            .contains(&format!("at the limit of {CAP} connections")),
        "{}",
        server.stderr()
    );
    server.stop();
}

// ---- SigV4 ----------------------------------------------------------------------------

fn presigned(op: &str, body: &str, key: &Key, at: SystemTime, expires: i64) -> Vec<u8> {
    let headers = kms_headers(op);
    let parts = RequestParts {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: body.as_bytes(),
    };
    let creds = Credentials {
        access_key_id: &key.id,
        secret_access_key: &key.secret,
        session_token: None,
    };
    let query = sigv4::presign(&parts, &creds, DEFAULT_REGION, "kms", at, expires);
    raw_request(&query, &headers, body)
}

#[test]
fn signatures_must_be_for_kms_sign_the_host_and_be_fresh() {
    let s = setup();
    let server = Server::start_with(&s.env, &[], &[]);
    let addr = server.addr.clone();
    let now = SystemTime::now();

    // Scoped to another service: a valid signature, refused.
    let r = send(
        &addr,
        &signed_as("ListKeys", "{}", &s.alice, DEFAULT_REGION, "s3", now),
    );
    let m = r.error(400, "InvalidSignatureException");
    assert_eq!(m, "Credential should be scoped to correct service: 'kms'. ");

    // Host left out of SignedHeaders.
    let mut raw = String::from_utf8(signed("ListKeys", "{}", &s.alice)).unwrap();
    raw = raw.replace(
        "SignedHeaders=content-type;host;",
        "SignedHeaders=content-type;",
    );
    let m = send(&addr, raw.as_bytes()).error(400, "IncompleteSignatureException");
    assert!(m.contains("'Host'"), "{m}");

    // Presigned: fresh is served, stale or past its X-Amz-Expires is not.
    send(&addr, &presigned("ListKeys", "{}", &s.alice, now, 60)).ok();
    let stale = now - Duration::from_secs(400);
    let m = send(&addr, &presigned("ListKeys", "{}", &s.alice, stale, 3600))
        .error(400, "InvalidSignatureException");
    assert!(m.starts_with("Signature expired"), "{m}");
    let m = send(
        &addr,
        &presigned("ListKeys", "{}", &s.alice, now - Duration::from_secs(10), 1),
    )
    .error(400, "InvalidSignatureException");
    assert!(m.starts_with("Request has expired"), "{m}");

    // No signature at all, and an unknown access key.
    send(&addr, &raw_request("", &kms_headers("ListKeys"), "{}"))
        .error(400, "MissingAuthenticationTokenException");
    let stranger = Key {
        id: "AKIAUNKNOWNKEY000001".into(),
        secret: "x".into(),
    };
    send(&addr, &signed("Decrypt", "{}", &stranger)).error(400, "UnrecognizedClientException");
    server.stop();

    // Every refusal is in the trail, with the access key it claimed and the address.
    let events = trail(&s.env);
    let invalid = refusals(&events, "InvalidSignatureException");
    assert_eq!(invalid.len(), 3, "{invalid:#?}");
    for e in &invalid {
        assert_from_here(e);
        assert_eq!(e["eventName"], "ListKeys", "{e:#}");
        assert_eq!(e["userIdentity"]["type"], "Unknown", "{e:#}");
        assert_eq!(
            e["userIdentity"]["accessKeyId"],
            s.alice.id.as_str(),
            "{e:#}"
        );
    }
    assert!(
        invalid
            .iter()
            .any(|e| e["errorMessage"].as_str().unwrap().contains("'kms'")),
        "{invalid:#?}"
    );
    assert_eq!(refusals(&events, "IncompleteSignatureException").len(), 1);
    let missing = refusals(&events, "MissingAuthenticationTokenException");
    assert_eq!(missing.len(), 1);
    assert!(missing[0]["userIdentity"].get("accessKeyId").is_none());
    let unknown = refusals(&events, "UnrecognizedClientException");
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["eventName"], "Decrypt");
    assert_eq!(
        unknown[0]["userIdentity"]["accessKeyId"],
        stranger.id.as_str()
    );
    // The presigned ListKeys that was served is an ordinary event of alice's.
    assert!(events.iter().any(|e| e["eventName"] == "ListKeys"
        && e["userIdentity"]["userName"] == "alice"
        && e.get("errorCode").is_none_or(Value::is_null)));
    let all = serde_json::to_string(&events).unwrap();
    assert!(!all.contains(&s.alice.secret));
}

// ---- quotas ---------------------------------------------------------------------------

/// Repeats `op` as `key` until it is throttled; returns the message.
fn until_throttled(addr: &str, op: &str, body: &Value, key: &Key) -> String {
    for _ in 0..200 {
        let r = call(addr, op, body.clone(), key);
        if r.status != 200 {
            return r.error(400, "ThrottlingException");
        }
    }
    panic!("{op} was never throttled");
}

#[test]
fn an_access_key_over_its_quota_is_throttled_while_another_is_served() {
    let s = setup();
    let key = s.env.create_key();
    let server = Server::start_with(
        &s.env,
        &["--crypto-rate", "2", "--management-rate", "1"],
        &[],
    );
    let addr = server.addr.clone();
    let encrypt = json!({"KeyId": key, "Plaintext": b64(b"quota")});

    // Cryptographic operations share one quota: Encrypt uses it up for GenerateDataKey
    // too (unless half a second passed in between, and a token came back: then again).
    let gdk = json!({"KeyId": key, "KeySpec": "AES_256"});
    let mut shared = false;
    for _ in 0..5 {
        let m = until_throttled(&addr, "Encrypt", &encrypt, &s.alice);
        assert_eq!(m, "Rate exceeded");
        let r = call(&addr, "GenerateDataKey", gdk.clone(), &s.alice);
        if r.status != 200 {
            r.error(400, "ThrottlingException");
            shared = true;
            break;
        }
    }
    assert!(shared, "GenerateDataKey did not share Encrypt's quota");
    // Another access key has its own.
    call(&addr, "Encrypt", encrypt.clone(), &s.bob).ok();
    // Management operations: a quota each.
    until_throttled(&addr, "ListKeys", &json!({}), &s.alice);
    call(&addr, "ListKeys", json!({}), &s.bob).ok();

    // Input refused before the KMS call (after the signature verified).
    call(
        &addr,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": "***"}),
        &s.bob,
    )
    .error(400, "ValidationException");
    let bad_json = signed("DescribeKey", "{not json", &s.bob);
    send(&addr, &bad_json).error(400, "SerializationException");
    server.stop();

    let events = trail(&s.env);
    let throttled = refusals(&events, "ThrottlingException");
    assert!(throttled.len() >= 3, "{throttled:#?}");
    for e in &throttled {
        assert_from_here(e);
        assert_eq!(e["userIdentity"]["userName"], "alice", "{e:#}");
        assert_eq!(e["userIdentity"]["accessKeyId"], s.alice.id.as_str());
        assert_eq!(e["errorMessage"], "Rate exceeded");
    }
    for op in ["Encrypt", "GenerateDataKey", "ListKeys"] {
        assert!(
            throttled.iter().any(|e| e["eventName"] == op),
            "no throttled {op}: {throttled:#?}"
        );
    }
    let invalid = refusals(&events, "ValidationException");
    assert!(
        invalid
            .iter()
            .any(|e| e["eventName"] == "Encrypt" && e["userIdentity"]["userName"] == "bob"),
        "{invalid:#?}"
    );
    let serialization = refusals(&events, "SerializationException");
    assert!(
        serialization
            .iter()
            .any(|e| e["eventName"] == "DescribeKey" && e["userIdentity"]["userName"] == "bob"),
        "{serialization:#?}"
    );
}

// ---- what remote clients are told -----------------------------------------------------

/// No path of this machine, no CLI command or flag, no backtick.
#[track_caller]
fn assert_remote_clean(env: &Env, what: &str, r: &Resp) {
    let text = String::from_utf8_lossy(&r.body);
    assert!(!text.contains('`'), "{what}: {text}");
    assert!(!text.contains("cryptvol "), "{what}: {text}");
    assert!(!text.contains(" --"), "{what}: {text}");
    assert!(
        !text.contains(&env.data.display().to_string()),
        "{what}: {text}"
    );
    let message = str_field(&r.json(), "message");
    for word in message.split([' ', '(', '\'', '"']) {
        assert!(!word.starts_with('/'), "{what}: a path in {message:?}");
    }
}

#[test]
fn error_bodies_carry_no_paths_or_cli_advice() {
    let s = setup();
    let env = &s.env;
    let disabled = env.create_key();
    env.ok(&["kms", "disable-key", "--key-id", &disabled]);
    let pending = env.create_key();
    env.ok(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &pending,
        "--pending-window-days",
        "30",
    ]);
    let doomed = env.create_key();
    let blob = b64(&env.encrypt(&doomed, b"soon gone", None));
    env.ok(&[
        "kms",
        "schedule-key-deletion",
        "--key-id",
        &doomed,
        "--pending-window-days",
        "7",
    ]);
    let usable = env.create_key();

    let server = Server::start_with(env, &[], &[]);
    let addr = server.addr.clone();
    let cases: Vec<(&str, Resp, u16, &str)> = vec![
        (
            "NotFound",
            call(
                &addr,
                "DescribeKey",
                json!({"KeyId": "0b7c3f3e-1111-4222-8333-444455556666"}),
                &s.alice,
            ),
            400,
            "NotFoundException",
        ),
        (
            "Disabled",
            call(
                &addr,
                "Encrypt",
                json!({"KeyId": disabled, "Plaintext": b64(b"x")}),
                &s.alice,
            ),
            400,
            "DisabledException",
        ),
        (
            "InvalidState",
            call(
                &addr,
                "Encrypt",
                json!({"KeyId": pending, "Plaintext": b64(b"x")}),
                &s.alice,
            ),
            400,
            "KMSInvalidStateException",
        ),
        (
            "AccessDenied",
            call(
                &addr,
                "Encrypt",
                json!({"KeyId": usable, "Plaintext": b64(b"x")}),
                &s.carol,
            ),
            400,
            "AccessDeniedException",
        ),
        (
            "region not initialized",
            send(
                &addr,
                &signed_as("ListKeys", "{}", &s.alice, "eu-9", "kms", SystemTime::now()),
            ),
            400,
            "UnrecognizedClientException",
        ),
    ];
    for (what, r, status, code) in &cases {
        r.error(*status, code);
        assert_remote_clean(env, what, r);
    }
    server.stop();

    // Eight days later the doomed key's window is over: its blob names a deleted key.
    let skew = (8 * DAY).to_string();
    let later = Server::start_with(env, &[], &[(SKEW_ENV, skew.as_str())]);
    let at = SystemTime::now() + Duration::from_secs(8 * DAY as u64);
    let r = send(
        &later.addr,
        &signed_as(
            "Decrypt",
            &json!({"CiphertextBlob": blob}).to_string(),
            &s.alice,
            DEFAULT_REGION,
            "kms",
            at,
        ),
    );
    r.error(400, "NotFoundException");
    assert_remote_clean(env, "KeyDeleted", &r);
    later.stop();

    // The audit directory becomes a file: the call fails inside, and says only that.
    let audit = env.region_dir(DEFAULT_REGION).join("audit");
    std::fs::rename(&audit, env.path("audit.moved")).unwrap();
    std::fs::write(&audit, b"not a directory").unwrap();
    let broken = Server::start_with(env, &[], &[]);
    let r = call(
        &broken.addr,
        "Encrypt",
        json!({"KeyId": usable, "Plaintext": b64(b"x")}),
        &s.alice,
    );
    let m = r.error(500, "KMSInternalException");
    assert_remote_clean(env, "AuditFailed", &r);
    assert!(m.contains("internal error"), "{m}");
    let request_id = r
        .head
        .lines()
        .find_map(|l| l.strip_prefix("x-amzn-requestid: "))
        .expect("a request id")
        .to_string();
    // The detail is in the server's log, under the same request id.
    let log = broken.stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(&request_id) && l.contains("audit")),
        "{log}"
    );
    broken.stop();
}

// ---- the audit budget of refusals -----------------------------------------------------

#[test]
fn a_flood_of_bad_requests_is_counted_not_written_line_by_line() {
    const FLOOD: u64 = 60;
    let s = setup();
    let server = Server::start_with(&s.env, &["--refused-audit-rate", "5"], &[]);
    let addr = server.addr.clone();
    let unsigned = raw_request("", &kms_headers("Decrypt"), "{}");
    for _ in 0..FLOOD {
        send(&addr, &unsigned).error(400, "MissingAuthenticationTokenException");
    }
    // Once the budget has refilled, the next refusal is written with the count of those
    // that were not.
    std::thread::sleep(Duration::from_millis(1500));
    send(&addr, &unsigned).error(400, "MissingAuthenticationTokenException");
    server.stop();

    let events = trail(&s.env);
    let written = refusals(&events, "MissingAuthenticationTokenException");
    let counted: u64 = written
        .iter()
        .map(|e| {
            e["additionalEventData"]["refusalsNotRecorded"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    assert!(
        (written.len() as u64) < FLOOD,
        "{} of {FLOOD} refusals written one by one at 5 a second",
        written.len()
    );
    assert_eq!(
        written.len() as u64 + counted,
        FLOOD + 1,
        "every refusal is written or counted: {written:#?}"
    );
    let last = written.last().unwrap();
    assert!(
        last["additionalEventData"]["refusalsNotRecorded"].as_u64() > Some(0),
        "{last:#}"
    );
}

/// Hostile bodies cost the server memory while they are in flight, not after: as root its
/// pages are locked, so memory an allocator hands back with `madvise` (mimalloc, which
/// serves the server's small blocks, and glibc's arenas) stays resident. The bodies must
/// be mapped and unmapped on their own. Eight rounds of 16 bodies of 1 MiB at once (128
/// MiB) must leave the server less than one round's bodies above where it started.
#[test]
fn hostile_bodies_do_not_stay_in_the_servers_memory() {
    // Without root nothing is locked and the kernel takes freed memory back whatever the
    // allocator does: the test would prove nothing.
    needs!(Root);
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 8;
    let s = setup();
    let server = Server::start_with(&s.env, &[], &[]);
    let addr = server.addr.clone();
    // Just under the 1 MiB limit, and unsigned: read whole, then refused.
    let body = format!("{{\"KeyId\":\"{}\"}}", "k".repeat(1024 * 1024 - 64));
    let request = raw_request("", &kms_headers("Decrypt"), &body);
    send(&addr, &raw_request("", &kms_headers("ListKeys"), "{}"));
    let mut rss = vec![vm_rss_kib(server.pid())];
    for _ in 0..ROUNDS {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (addr, request) = (addr.clone(), request.clone());
                std::thread::spawn(move || send(&addr, &request))
            })
            .collect();
        for t in threads {
            let r = t.join().unwrap();
            assert!((400..500).contains(&r.status), "{}", r.head);
        }
        rss.push(vm_rss_kib(server.pid()));
    }
    eprintln!("VmRSS (KiB) at start and after each round: {rss:?}");
    let one_round_kib = (CLIENTS * 1024) as u64;
    assert!(
        rss[ROUNDS] < rss[0] + one_round_kib,
        "{} MiB of bodies, {CLIENTS} at a time, left the server at {} KiB from {} KiB \
         (after each round: {rss:?})",
        CLIENTS * ROUNDS,
        rss[ROUNDS],
        rss[0]
    );
    server.stop();
}
