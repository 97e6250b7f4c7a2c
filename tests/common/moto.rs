//! A running moto server (`moto_server` from the test venv, see test.sh) on 127.0.0.1: a
//! real S3 / KMS / STS endpoint that nobody here wrote. Started on port 0, ready once it
//! prints the address it listens on; killed when dropped. Tests that need it call
//! [`MotoServer::start`], which skips (None) on a machine without the venv, and fails under
//! `CRYPTVOL_REQUIRE_MOUNT=1` or `CI=true`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::mount::REQUIRE_ENV;

pub struct MotoServer {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// The venv's `moto_server`: `CRYPTVOL_COMPAT_MOTO`, else `target/compat-venv/bin/moto_server`.
fn moto_binary() -> PathBuf {
    std::env::var_os("CRYPTVOL_COMPAT_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/compat-venv/bin/moto_server")
        })
}

impl MotoServer {
    /// A fresh server (its state is in memory: every test gets its own).
    pub fn start() -> Option<MotoServer> {
        let bin = moto_binary();
        if !bin.exists() {
            let required = std::env::var("CI").is_ok_and(|v| v == "true")
                || std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
            assert!(
                !required,
                "{} is missing; test.sh installs moto[server] into target/compat-venv",
                bin.display()
            );
            eprintln!(
                "note: skipping: {} is missing (run ./test.sh to install it)",
                bin.display()
            );
            return None;
        }
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn moto_server");
        // Werkzeug prints " * Running on http://127.0.0.1:PORT" on stderr; keep draining
        // stderr afterwards so the server never blocks on a full pipe.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("http://127.0.0.1:")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(e) => e,
            Err(_) => {
                let _ = child.kill();
                panic!("moto_server did not say where it listens within 30 s");
            }
        };
        Some(MotoServer { child, endpoint })
    }
}

impl MotoServer {
    /// Runs the venv's AWS CLI against this server (`--endpoint-url` first); asserts
    /// success and returns its stdout.
    pub fn aws(&self, args: &[&str]) -> Vec<u8> {
        let aws = moto_binary().with_file_name("aws");
        let out = Command::new(&aws)
            .args(["--endpoint-url", &self.endpoint])
            .args(args)
            .envs(Self::credentials())
            .output()
            .expect("run the aws CLI");
        assert!(
            out.status.success(),
            "aws {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `s3api` with JSON output, parsed.
    fn s3api(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["s3api"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--output", "json"]);
        serde_json::from_slice(&self.aws(&all)).unwrap_or_default()
    }

    /// Creates a bucket (S3 clients cannot be told to make one).
    pub fn create_bucket(&self, bucket: &str) {
        self.aws(&["s3", "mb", &format!("s3://{bucket}")]);
    }

    /// Every object key under `s3://bucket/prefix` with its size.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let v = self.s3api(&["list-objects-v2", "--bucket", bucket, "--prefix", prefix]);
        v["Contents"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|o| {
                        (
                            o["Key"].as_str().unwrap_or_default().to_string(),
                            o["Size"].as_u64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One object's bytes (through a file: the CLI streams to it).
    pub fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        let to = tmp.path().to_string_lossy().into_owned();
        self.aws(&["s3", "cp", "--quiet", &format!("s3://{bucket}/{key}"), &to]);
        std::fs::read(tmp.path()).expect("read the object")
    }

    /// An object's ETag (a multipart upload's ends in `-<parts>`).
    pub fn etag(&self, bucket: &str, key: &str) -> String {
        let v = self.s3api(&["head-object", "--bucket", bucket, "--key", key]);
        v["ETag"]
            .as_str()
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    }

    /// Writes (overwrites) one object.
    pub fn put_object(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(tmp.path(), bytes).expect("write the temp file");
        let from = tmp.path().to_string_lossy().into_owned();
        self.aws(&[
            "s3",
            "cp",
            "--quiet",
            &from,
            &format!("s3://{bucket}/{key}"),
        ]);
    }

    /// Deletes one object.
    pub fn delete_object(&self, bucket: &str, key: &str) {
        self.aws(&["s3api", "delete-object", "--bucket", bucket, "--key", key]);
    }

    /// The credentials the tests use with moto (which accepts any).
    pub fn credentials() -> [(&'static str, &'static str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
