//! KMS server throughput: SigV4-signed GenerateDataKey and Decrypt requests per second over
//! loopback, many keep-alive connections, against `cryptvol kms serve` (release build) on
//! this machine; on an embedded key and, in the same run, on a key in a custom key store
//! (AWS_CLOUDHSM) whose material lives in a SoftHSM2 token made by the bench
//! (bench/common/softhsm.rs).
//!
//! Run: `cargo bench --bench kms_server` (env BENCH_SECS, BENCH_CONNS; BENCH_KEYS=embedded
//! for the embedded key alone; CRYPTVOL_BENCH_BIN to serve with another build's binary;
//! BENCH_CLIENT=threads for the older load generator, a thread and a ureq agent per
//! connection). Client and server share the machine's cores, as they would on one host;
//! the client signs every request (SigV4), the server verifies it, authorizes it, records
//! it in the audit trail and meters it. The load generator is one thread with a task per
//! connection (as wrk is), so that the cores go to the server rather than to client
//! threads waking up. Target: at least 30,000 Decrypt/s on 2 cores on the embedded key;
//! none for the token's key, whose figures are reported as measured.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/softhsm.rs"]
mod softhsm;

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptvol::aws::b64;
use cryptvol::aws::sigv4::{self, Credentials, RequestParts};

const BIN: &str = env!("CARGO_BIN_EXE_cryptvol");

/// The server binary: this build's, or `CRYPTVOL_BENCH_BIN` (to run another build's server
/// under the same client, e.g. before and after a change, alternately).
fn bin() -> String {
    std::env::var("CRYPTVOL_BENCH_BIN").unwrap_or_else(|_| BIN.to_string())
}
const CONTEXT: &str = "cryptvol:lineage=vol-0123456789abcdef0";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

/// `cryptvol --data-dir DATA ARGS` with the bench's token configuration (the CLI loads
/// the module when it reaches the token).
fn cli(data: &Path, token: &softhsm::BenchToken, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("SOFTHSM2_CONF", &token.conf)
        .output()
        .expect("run cryptvol");
    assert!(
        out.status.success(),
        "cryptvol {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&out.stdout).expect("json")
    }
}

fn field(v: &serde_json::Value, outer: &str, name: &str) -> String {
    v[outer][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {outer}.{name} in {v}"))
        .to_string()
}

/// Where the clients send their requests, and as whom.
#[derive(Clone)]
struct Target {
    endpoint: String,
    host: String,
    id: String,
    secret: String,
    conns: usize,
    warm: Duration,
    run: Duration,
    /// The server's pid, to read its CPU time.
    server_pid: u32,
}

/// What one figure cost: CPU time per request of the server and of this client process.
struct Cost {
    server_us: f64,
    client_us: f64,
}

/// What a client sends and counts: `operation` with `body`, each answer counted in
/// `done`, until `stop`.
#[derive(Clone)]
struct Load {
    operation: String,
    body: Vec<u8>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Target {
    /// Requests per second of `operation` with `body`, each signed anew, over `conns`
    /// keep-alive connections; after `warm`, counted for `run`. The client is
    /// `BENCH_CLIENT`: `async` (default: one thread, every connection a task of a tokio
    /// runtime, HTTP/1.1 written and read by hand, as wrk does it) or `threads` (a thread
    /// and a ureq agent per connection: about twice the client CPU per request).
    fn rate(&self, operation: &str, body: &serde_json::Value) -> (f64, u64, f64, Cost) {
        let load = Load {
            operation: operation.to_string(),
            body: serde_json::to_vec(body).unwrap(),
            done: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let client = if client_kind() == "threads" {
            self.threads_client(&load)
        } else {
            self.async_client(&load)
        };
        let done = &load.done;
        std::thread::sleep(self.warm);
        let start_count = done.load(Ordering::Relaxed);
        let start = Instant::now();
        let cpu_start = (
            machine::process_cpu_secs(self.server_pid),
            machine::process_cpu_secs(std::process::id()),
        );
        std::thread::sleep(self.run);
        let n = done.load(Ordering::Relaxed) - start_count;
        let elapsed = start.elapsed().as_secs_f64();
        let per_request = |now: f64, then: f64| (now - then) * 1e6 / n.max(1) as f64;
        let cost = Cost {
            server_us: per_request(machine::process_cpu_secs(self.server_pid), cpu_start.0),
            client_us: per_request(machine::process_cpu_secs(std::process::id()), cpu_start.1),
        };
        load.stop.store(true, Ordering::Relaxed);
        for t in client {
            t.join().expect("client thread");
        }
        (n as f64 / elapsed, n, elapsed, cost)
    }

    /// The headers a request of `operation` carries before it is signed.
    fn headers(&self, operation: &str) -> Vec<(String, String)> {
        vec![
            ("host".to_string(), self.host.clone()),
            (
                "content-type".to_string(),
                "application/x-amz-json-1.1".to_string(),
            ),
            (
                "x-amz-target".to_string(),
                format!("TrentService.{operation}"),
            ),
        ]
    }

    /// The SigV4 headers of a request with `headers` and `body`, signed now (anew for each
    /// request, as every SDK signs every request).
    fn sign(&self, headers: &[(String, String)], body: &[u8]) -> Vec<(String, String)> {
        let creds = Credentials {
            access_key_id: &self.id,
            secret_access_key: &self.secret,
            session_token: None,
        };
        let parts = RequestParts {
            method: "POST",
            path: "/",
            query: "",
            headers,
            body,
        };
        sigv4::sign(
            &parts,
            &creds,
            "local-1",
            "kms",
            std::time::SystemTime::now(),
        )
    }

    /// One whole signed HTTP/1.1 request with `headers` and `body`.
    fn signed_request(&self, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
        let signed = self.sign(headers, body);
        let mut head = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers.iter().chain(signed.iter()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        request
    }

    /// One client thread: a tokio runtime on it, one task per connection, each writing a
    /// signed request and reading its whole response before the next.
    fn async_client(&self, load: &Load) -> Vec<std::thread::JoinHandle<()>> {
        let (this, load) = (Arc::new(self.clone()), load.clone());
        vec![std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let tasks: Vec<_> = (0..this.conns)
                    .map(|_| {
                        let (this, load) = (this.clone(), load.clone());
                        tokio::spawn(async move {
                            let connect = || async {
                                let conn = tokio::net::TcpStream::connect(&this.host)
                                    .await
                                    .expect("connect");
                                conn.set_nodelay(true).expect("nodelay");
                                conn
                            };
                            let headers = this.headers(&load.operation);
                            let mut conn = connect().await;
                            let mut buf = Vec::with_capacity(4096);
                            while !load.stop.load(Ordering::Relaxed) {
                                let request = this.signed_request(&headers, &load.body);
                                // The server may close a keep-alive connection (idle or
                                // header timeouts): connect again, as ureq does.
                                let answer = match write_all(&conn, &request).await {
                                    Ok(()) => read_response(&conn, &mut buf).await,
                                    Err(_) => None,
                                };
                                let Some((status, text)) = answer else {
                                    conn = connect().await;
                                    continue;
                                };
                                assert_eq!(status, 200, "{text}");
                                load.done.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("client task");
                }
            });
        })]
    }

    /// `conns` threads with a ureq agent each (the client before `async_client`).
    fn threads_client(&self, load: &Load) -> Vec<std::thread::JoinHandle<()>> {
        (0..self.conns)
            .map(|_| {
                let (this, load) = (self.clone(), load.clone());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let headers = this.headers(&load.operation);
                    while !load.stop.load(Ordering::Relaxed) {
                        let signed = this.sign(&headers, &load.body);
                        let mut req = agent.post(&this.endpoint);
                        for (k, v) in headers.iter().skip(1).chain(signed.iter()) {
                            req = req.header(k.as_str(), v.as_str());
                        }
                        let mut resp = req.send(&load.body[..]).expect("request");
                        let status = resp.status().as_u16();
                        let text = resp.body_mut().read_to_string().unwrap_or_default();
                        assert_eq!(status, 200, "{text}");
                        load.done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect()
    }
}

/// `BENCH_CLIENT`: `async` (default) or `threads`.
fn client_kind() -> String {
    std::env::var("BENCH_CLIENT").unwrap_or_else(|_| "async".to_string())
}

async fn write_all(conn: &tokio::net::TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        conn.writable().await?;
        match conn.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads one HTTP/1.1 response (a head with `content-length`, then that many bytes) into
/// `buf`; returns its status and body, or None if the server closed the connection. The
/// server answers one request at a time per connection, so nothing follows it.
async fn read_response(conn: &tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<(u16, String)> {
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("response head");
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return Some((status, body));
            }
        }
        conn.readable().await.ok()?;
        let old = buf.len();
        buf.resize(old + 8192, 0);
        match conn.try_read(&mut buf[old..]) {
            Ok(0) => return None,
            Ok(n) => buf.truncate(old + n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => buf.truncate(old),
            Err(_) => return None,
        }
    }
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let conns: usize = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let token = softhsm::BenchToken::make();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let cv = |args: &[&str]| cli(&data, &token, args);
    cv(&["init"]);
    cv(&["iam", "create-user", "--user-name", "bench"]);
    let policy = dir.path().join("p.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
    )
    .unwrap();
    cv(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "bench",
        "--policy-name",
        "all",
        "--policy-document",
        &format!("file://{}", policy.display()),
    ]);
    let key = cv(&["iam", "create-access-key", "--user-name", "bench"]);
    let id = field(&key, "AccessKey", "AccessKeyId");
    let secret = field(&key, "AccessKey", "SecretAccessKey");
    let cmk = field(&cv(&["kms", "create-key"]), "KeyMetadata", "KeyId");
    // The key in the token: a custom key store on the bench's token, connected.
    let pin = dir.path().join("pin");
    std::fs::write(&pin, softhsm::USER_PIN).unwrap();
    let store = cv(&[
        "kms",
        "create-custom-key-store",
        "--custom-key-store-name",
        "bench",
        "--cloud-hsm-cluster-id",
        &token.uri,
        "--key-store-password-file",
        pin.to_str().unwrap(),
    ])["CustomKeyStoreId"]
        .as_str()
        .expect("CustomKeyStoreId")
        .to_string();
    cv(&[
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &store,
    ]);
    let hsm_cmk = field(
        &cv(&[
            "kms",
            "create-key",
            "--origin",
            "AWS_CLOUDHSM",
            "--custom-key-store-id",
            &store,
        ]),
        "KeyMetadata",
        "KeyId",
    );
    let blob_of = |cmk: &str| {
        let dk = cv(&[
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            cmk,
            "--number-of-bytes",
            "64",
            "--encryption-context",
            CONTEXT,
        ]);
        let blob = dk["CiphertextBlob"].as_str().unwrap().to_string();
        assert!(b64::decode(&blob).is_ok());
        blob
    };
    let blobs = [blob_of(&cmk), blob_of(&hsm_cmk)];

    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(&data)
        .args(["kms", "serve", "--listen", "127.0.0.1:0"])
        .env("SOFTHSM2_CONF", &token.conf)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server_pid = child.id();
    let _server = Server(child);
    let hello: serde_json::Value = serde_json::from_str(&line).expect("listening line");
    let target = Target {
        endpoint: hello["Endpoint"].as_str().unwrap().to_string(),
        host: hello["Listening"].as_str().unwrap().to_string(),
        id,
        secret,
        conns,
        warm: Duration::from_millis(500),
        run: Duration::from_secs_f64(secs),
        server_pid,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "CPU: {}; cores allowed: {}; client and server on the same {cpus} CPUs; 0.5 s warm-up, then {secs} s per figure",
        machine::cpu(),
        machine::cores_allowed(),
    );
    println!(
        "load generator: {} (BENCH_CLIENT), {conns} keep-alive connections, every request signed anew",
        if client_kind() == "threads" {
            "a thread and a ureq agent per connection"
        } else {
            "one thread, a tokio task per connection"
        }
    );
    println!(
        "load average before the run: {} (other busy processes lower every figure)",
        machine::load_average()
    );
    println!(
        "custom key store: {} token ({})",
        softhsm::version(),
        token.uri
    );
    let context = serde_json::json!({"cryptvol:lineage": "vol-0123456789abcdef0"});
    let mut rows = vec![];
    // BENCH_KEYS=embedded skips the token's key (quicker rounds when tuning).
    let keys = std::env::var("BENCH_KEYS").unwrap_or_default();
    for (what, cmk, blob) in [
        ("embedded key", &cmk, &blobs[0]),
        ("key in the token", &hsm_cmk, &blobs[1]),
    ] {
        if keys == "embedded" && what != "embedded key" {
            rows.push(vec![0.0, 0.0]);
            continue;
        }
        let mut figures = vec![];
        for (op, body) in [
            (
                "GenerateDataKey",
                serde_json::json!({"KeyId": cmk, "NumberOfBytes": 64, "EncryptionContext": context}),
            ),
            (
                "Decrypt",
                serde_json::json!({"CiphertextBlob": blob, "EncryptionContext": context}),
            ),
        ] {
            let (rate, n, elapsed, cost) = target.rate(op, &body);
            println!(
                "{op} over loopback, SigV4, {conns} keep-alive connections, {what}: {rate:.0} req/s ({n} in {elapsed:.1} s)"
            );
            // What the rate would be if server and client had the CPUs to themselves.
            let bound = cpus as f64 * 1e6 / (cost.server_us + cost.client_us).max(1e-9);
            println!(
                "  CPU per request: server {:.1} µs, client {:.1} µs; {bound:.0} req/s if they had the {cpus} CPUs to themselves",
                cost.server_us, cost.client_us
            );
            figures.push(rate);
        }
        rows.push(figures);
    }
    println!();
    println!("| key | connections | GenerateDataKey req/s | Decrypt req/s | target (Decrypt) |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| embedded | {conns} | {:.0} | {:.0} | ≥ 30,000 |",
        rows[0][0], rows[0][1]
    );
    println!(
        "| custom key store ({}) | {conns} | {:.0} | {:.0} | – |",
        softhsm::version(),
        rows[1][0],
        rows[1][1]
    );
}
