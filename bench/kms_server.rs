//! KMS server throughput: SigV4-signed Decrypt requests per second over loopback, many
//! keep-alive connections, against `cryptvol kms serve` (release build) on this machine.
//!
//! Run: `cargo bench --bench kms_server` (env BENCH_SECS, BENCH_CONNS). Client and server
//! share the machine's cores, as they would on one host; the client signs every request
//! (SigV4), the server verifies it, authorizes it, records it in the audit trail and
//! meters it. Target: at least 10,000 Decrypt/s on 2 cores.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptvol::aws::b64;
use cryptvol::aws::sigv4::{self, Credentials, RequestParts};

const BIN: &str = env!("CARGO_BIN_EXE_cryptvol");

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

fn cli(data: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
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

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let conns: usize = std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    cli(&data, &["init"]);
    cli(&data, &["iam", "create-user", "--user-name", "bench"]);
    let policy = dir.path().join("p.json");
    std::fs::write(
        &policy,
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"kms:*","Resource":"*"}]}"#,
    )
    .unwrap();
    cli(
        &data,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "bench",
            "--policy-name",
            "all",
            "--policy-document",
            &format!("file://{}", policy.display()),
        ],
    );
    let key = cli(&data, &["iam", "create-access-key", "--user-name", "bench"]);
    let id = key["AccessKey"]["AccessKeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = key["AccessKey"]["SecretAccessKey"]
        .as_str()
        .unwrap()
        .to_string();
    let cmk = cli(&data, &["kms", "create-key"])["KeyMetadata"]["KeyId"]
        .as_str()
        .unwrap()
        .to_string();
    let dk = cli(
        &data,
        &[
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            &cmk,
            "--number-of-bytes",
            "64",
            "--encryption-context",
            "cryptvol:lineage=vol-0123456789abcdef0",
        ],
    );
    let blob = dk["CiphertextBlob"].as_str().unwrap().to_string();
    assert!(b64::decode(&blob).is_ok());

    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["kms", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _server = Server(child);
    let hello: serde_json::Value = serde_json::from_str(&line).expect("listening line");
    let endpoint = hello["Endpoint"].as_str().unwrap().to_string();
    let host = hello["Listening"].as_str().unwrap().to_string();

    let body = serde_json::to_vec(&serde_json::json!({
        "CiphertextBlob": blob,
        "EncryptionContext": {"cryptvol:lineage": "vol-0123456789abcdef0"},
    }))
    .unwrap();
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Duration::from_millis(500);
    let run = Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (endpoint, host, body, id, secret) = (
                endpoint.clone(),
                host.clone(),
                body.clone(),
                id.clone(),
                secret.clone(),
            );
            let (done, stop) = (done.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let headers = vec![
                    ("host".to_string(), host.clone()),
                    (
                        "content-type".to_string(),
                        "application/x-amz-json-1.1".to_string(),
                    ),
                    (
                        "x-amz-target".to_string(),
                        "TrentService.Decrypt".to_string(),
                    ),
                ];
                let creds = Credentials {
                    access_key_id: &id,
                    secret_access_key: &secret,
                    session_token: None,
                };
                while !stop.load(Ordering::Relaxed) {
                    let parts = RequestParts {
                        method: "POST",
                        path: "/",
                        query: "",
                        headers: &headers,
                        body: &body,
                    };
                    let signed = sigv4::sign(
                        &parts,
                        &creds,
                        "local-1",
                        "kms",
                        std::time::SystemTime::now(),
                    );
                    let mut req = agent.post(&endpoint);
                    for (k, v) in headers.iter().skip(1).chain(signed.iter()) {
                        req = req.header(k.as_str(), v.as_str());
                    }
                    let mut resp = req.send(&body[..]).expect("request");
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    assert_eq!(status, 200, "{text}");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(warm);
    let start_count = done.load(Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(run);
    let n = done.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("client thread");
    }
    let rate = n as f64 / elapsed;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Decrypt over loopback, SigV4, {conns} keep-alive connections, {cpus} CPUs: {rate:.0} req/s ({n} in {elapsed:.1} s)"
    );
    println!();
    println!("| connections | Decrypt req/s | target |");
    println!("|--:|--:|--:|");
    println!("| {conns} | {rate:.0} | ≥ 10,000 |");
}
