//! A running `cryptvol kms serve` on 127.0.0.1 port 0 for the server tests (compat,
//! hardening): started with the data dir of an [`Env`], ready once it prints its one
//! stdout line, stopped with SIGTERM (it must exit 0), killed (and its stderr printed) if
//! the test panics.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Env, SKEW_ENV, str_field};

/// A user of `env`'s KMS with a key of her own and an access key: what another data dir
/// needs to use that key through `kms serve`. The secret is registered with `env` (never
/// to appear in its output).
pub struct KeyUser {
    pub key: String,
    pub id: String,
    pub secret: String,
}

impl KeyUser {
    pub fn new(env: &Env, name: &str) -> KeyUser {
        let user = env.create_user(name);
        let key = str_field(
            &env.json(&["kms", "create-key", "--user", &user])["KeyMetadata"],
            "Arn",
        );
        let ak = env.json(&["iam", "create-access-key", "--user-name", name]);
        let secret = str_field(&ak["AccessKey"], "SecretAccessKey");
        env.add_secret(secret.as_bytes());
        KeyUser {
            key,
            id: str_field(&ak["AccessKey"], "AccessKeyId"),
            secret,
        }
    }

    /// Makes this process's environment (and so every command and daemon it starts) call
    /// the KMS at `endpoint` with this user's access key; `v`, the data dir that uses the
    /// key, is told the secret too.
    pub fn export(&self, v: &Env, endpoint: &str) {
        v.add_secret(self.secret.as_bytes());
        // SAFETY: nextest runs each test in its own process; nothing else reads the
        // environment concurrently here.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", &self.id);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", &self.secret);
            std::env::set_var("CRYPTVOL_KMS_ENDPOINT", endpoint);
        }
    }
}

pub struct KmsServer {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    stderr_path: PathBuf,
}

impl KmsServer {
    pub fn start(env: &Env) -> KmsServer {
        Self::start_with(env, &[], &[])
    }

    /// With extra `kms serve` flags and environment variables.
    pub fn start_with(env: &Env, args: &[&str], envs: &[(&str, &str)]) -> KmsServer {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let stderr_path = env.path(&format!("serve-{n}.stderr"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cryptvol"));
        for v in [
            "CRYPTVOL_REGION",
            "CRYPTVOL_DATA_DIR",
            "CRYPTVOL_PASSPHRASE_FILE",
            SKEW_ENV,
        ] {
            cmd.env_remove(v);
        }
        cmd.envs(envs.iter().copied());
        cmd.arg("--data-dir").arg(&env.data);
        Self::spawn(cmd, args, stderr_path)
    }

    /// `cmd kms serve --listen 127.0.0.1:0 ARGS`: `cmd` is cryptvol with its data dir (or
    /// a wrapper that runs it, e.g. in another mount namespace); its stderr goes to
    /// `stderr_path`.
    pub fn spawn(mut cmd: Command, args: &[&str], stderr_path: PathBuf) -> KmsServer {
        let child = cmd
            .args(["kms", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).expect("create the server's stderr file"))
            .spawn()
            .expect("spawn cryptvol kms serve");
        let mut server = KmsServer {
            child: Some(child),
            addr: String::new(),
            endpoint: String::new(),
            stderr_path,
        };
        // The readiness signal is the first stdout line; read it off-thread to bound the wait.
        let stdout = server.child.as_mut().unwrap().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = String::new();
            let _ = r.read_to_string(&mut rest);
            assert!(
                rest.is_empty(),
                "kms serve printed more than one line: {rest:?}"
            );
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("kms serve printed no line within 30 s");
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("kms serve's first line is not JSON ({e}): {line:?}"));
        server.addr = str_field(&v, "Listening");
        server.endpoint = str_field(&v, "Endpoint");
        assert!(
            server.addr.starts_with("127.0.0.1:") && !server.addr.ends_with(":0"),
            "{v}"
        );
        // https with `--tls-cert`.
        assert!(
            [
                format!("http://{}", server.addr),
                format!("https://{}", server.addr)
            ]
            .contains(&server.endpoint),
            "{v}"
        );
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM; the server must exit 0 within 30 s.
    pub fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status: ExitStatus = loop {
            if let Some(s) = child.try_wait().expect("wait for kms serve") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kms serve did not stop within 30 s of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            status.code(),
            Some(0),
            "kms serve did not exit 0 on SIGTERM ({status}); stderr:\n{}",
            self.stderr()
        );
    }
}

impl Drop for KmsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- kms serve stderr ---\n{}", self.stderr());
        }
    }
}
