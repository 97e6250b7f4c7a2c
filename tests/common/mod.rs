//! Harness for the CLI integration tests: runs the real `cryptvol` binary as a process
//! against a private data directory, parses its JSON output, and checks the error
//! contract (one `cryptvol: ` line on stderr, a distinct exit code, no panic, no secret,
//! nothing changed on disk).
//!
//! Every test binary includes this module and uses a different part of it.
#![allow(dead_code)]

/// Real FUSE, loop and kernel mounts: capability check, cleanup guard, I/O helpers.
pub mod mount;

/// Detaching a test's own loop devices, re-checked while held open.
pub mod loops;

/// A `kms serve` process for the server tests.
pub mod server;

/// The real AWS clients (boto3, the AWS CLI) and their suites against `kms serve`.
pub mod compat;

/// moto's server: a real S3 / KMS / STS endpoint.
pub mod moto;

/// A snapshot store in moto for the archive tests.
pub mod store;

/// The thin pool's files, read and tampered with while nothing runs.
pub mod pool_peek;

/// SoftHSM2 tokens for regions whose root key is in a PKCS#11 token.
pub mod hsm;

/// The one "nothing changed under the data dir" check.
pub mod dir_state;
pub use dir_state::DirState;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

pub const DEFAULT_REGION: &str = "local-1";

/// `ARGS` with `--profile WHO` in front.
pub fn as_<'a>(who: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["--profile", who];
    v.extend_from_slice(args);
    v
}
pub const DAY: i64 = 86_400;
pub const SKEW_ENV: &str = "CRYPTVOL_TEST_CLOCK_SKEW_SECS";

/// Variables of the test runner's environment that would change what the binary does.
/// `CRYPTVOL_FUSE_TRANSPORT` is not one of them on purpose: CI runs the volume tests once
/// more with `classic` so that both FUSE transports pass them.
const SCRUBBED_ENV: &[&str] = &[
    "CRYPTVOL_REGION",
    "CRYPTVOL_DATA_DIR",
    "CRYPTVOL_PASSPHRASE_FILE",
    SKEW_ENV,
];

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Out {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts success with a quiet stderr; returns self for chaining.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(
            self.code,
            0,
            "`cryptvol {}` failed with {}: stderr: {}",
            self.args.join(" "),
            self.code,
            self.stderr
        );
        assert!(
            self.stderr.is_empty(),
            "`cryptvol {}` succeeded but wrote to stderr: {}",
            self.args.join(" "),
            self.stderr
        );
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`cryptvol {}` did not print JSON ({e}): {:?}",
                self.args.join(" "),
                self.stdout
            )
        })
    }

    /// Asserts the error contract for a failure with exit `code` and returns the one
    /// stderr line.
    #[track_caller]
    pub fn fails(self, code: i32) -> String {
        let cmd = self.args.join(" ");
        assert_eq!(
            self.code, code,
            "`cryptvol {cmd}`: expected exit {code}, got {}; stdout: {:?}; stderr: {:?}",
            self.code, self.stdout, self.stderr
        );
        assert_one_error_line(&cmd, &self.stderr);
        assert!(
            self.stdout.is_empty(),
            "`cryptvol {cmd}` failed but printed to stdout: {:?}",
            self.stdout
        );
        self.stderr.trim_end_matches('\n').to_string()
    }

    /// Asserts a clap usage error (exit 2); clap's message is several lines by design.
    #[track_caller]
    pub fn usage_error(self) -> String {
        assert_eq!(
            self.code,
            2,
            "`cryptvol {}`: expected a usage error (exit 2), got {}; stderr: {}",
            self.args.join(" "),
            self.code,
            self.stderr
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(self.stdout.is_empty(), "{}", self.stdout);
        self.stderr
    }
}

/// One line, `cryptvol: ` first, no panic, no debug dump.
#[track_caller]
pub fn assert_one_error_line(cmd: &str, stderr: &str) {
    assert!(
        stderr.ends_with('\n'),
        "`cryptvol {cmd}`: stderr does not end with a newline: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "`cryptvol {cmd}`: expected exactly one stderr line, got: {stderr:?}"
    );
    assert!(
        lines[0].starts_with("cryptvol: "),
        "`cryptvol {cmd}`: stderr does not start with 'cryptvol: ': {stderr:?}"
    );
    assert!(
        lines[0].len() > "cryptvol: ".len() + 10,
        "`cryptvol {cmd}`: the error says nothing: {stderr:?}"
    );
    for bad in ["panicked", "RUST_BACKTRACE", "Os {", "Error {", "kind: "] {
        assert!(
            !stderr.contains(bad),
            "`cryptvol {cmd}`: stderr contains {bad:?}: {stderr:?}"
        );
    }
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[track_caller]
pub fn unb64(s: &str) -> Vec<u8> {
    STANDARD
        .decode(s)
        .unwrap_or_else(|e| panic!("{s:?} is not base64: {e}"))
}

/// Every printable spelling of `secret` a careless program might emit.
pub fn spellings(secret: &[u8]) -> Vec<String> {
    let mut v = vec![
        hex::encode(secret),
        hex::encode_upper(secret),
        STANDARD.encode(secret),
        STANDARD_NO_PAD.encode(secret),
        URL_SAFE.encode(secret),
        URL_SAFE_NO_PAD.encode(secret),
        format!("{secret:?}"),
    ];
    // A prefix long enough to be unmistakable also counts (truncated dumps).
    if secret.len() >= 16 {
        v.push(hex::encode(&secret[..12]));
        v.push(STANDARD_NO_PAD.encode(&secret[..12]));
    }
    v
}

/// Asserts that `text` holds `secret` in no spelling (raw bytes included).
#[track_caller]
pub fn assert_no_secret(what: &str, text: &[u8], secret: &[u8]) {
    // Shorter strings occur by chance; nothing meaningful can be checked.
    if secret.len() < 8 {
        return;
    }
    assert!(
        !text.windows(secret.len()).any(|w| w == secret),
        "{what}: raw secret bytes found"
    );
    let s = String::from_utf8_lossy(text);
    for sp in spellings(secret) {
        assert!(!s.contains(&sp), "{what}: secret found as {sp:?} in {s:?}");
    }
}

/// A private data dir and scratch space for one test.
pub struct Env {
    tmp: tempfile::TempDir,
    pub data: PathBuf,
    /// Secrets the test has seen; no failing command may print any of them.
    secrets: RefCell<Vec<Vec<u8>>>,
    files: RefCell<u32>,
    /// Variables every command of this test runs with (`Env::set_env`).
    env: RefCell<Vec<(String, String)>>,
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A fresh temp dir; the data dir inside it does not exist yet.
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        Env {
            tmp,
            data,
            secrets: RefCell::new(vec![]),
            files: RefCell::new(0),
            env: RefCell::default(),
        }
    }

    /// A data dir with the default region initialised (key-file root key).
    pub fn init() -> Env {
        let env = Env::new();
        env.ok(&["init"]);
        env
    }

    /// Scratch dir, outside the data dir.
    pub fn scratch(&self) -> &Path {
        self.tmp.path()
    }

    pub fn region_dir(&self, region: &str) -> PathBuf {
        self.data.join("regions").join(region)
    }

    pub fn keystore(&self, region: &str) -> PathBuf {
        self.region_dir(region).join("keystore.cvks")
    }

    /// Runs every later command of this test with `key=value` in its environment.
    pub fn set_env(&self, key: &str, value: &str) {
        let mut env = self.env.borrow_mut();
        env.retain(|(k, _)| k != key);
        env.push((key.into(), value.into()));
    }

    /// The binary with a scrubbed environment, `--data-dir` set, stdin not a terminal.
    pub fn cmd(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("cryptvol").expect("the cryptvol binary");
        for v in SCRUBBED_ENV {
            c.env_remove(v);
        }
        c.env("NO_COLOR", "1");
        for (k, v) in self.env.borrow().iter() {
            c.env(k, v);
        }
        c.current_dir(self.tmp.path());
        c.write_stdin(Vec::<u8>::new());
        c.timeout(std::time::Duration::from_secs(60));
        c
    }

    /// Runs `cryptvol --data-dir D ARGS` with extra environment variables.
    pub fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Out {
        let mut c = self.cmd();
        c.arg("--data-dir").arg(&self.data).args(args);
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().expect("run cryptvol");
        let out = Out {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8(o.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(o.stderr).expect("stderr is UTF-8"),
        };
        self.check_no_secrets(&out);
        out
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Runs and asserts success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args).ok().stdout
    }

    #[track_caller]
    pub fn ok_env(&self, args: &[&str], envs: &[(&str, &str)]) -> String {
        self.run_env(args, envs).ok().stdout
    }

    /// Runs, asserts success, parses JSON.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        self.run(args).ok().json()
    }

    #[track_caller]
    pub fn json_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Value {
        self.run_env(args, envs).ok().json()
    }

    /// Runs a command that must fail with `code`; asserts the error contract and that
    /// nothing in the data dir changed. Returns the stderr line.
    #[track_caller]
    pub fn fail(&self, args: &[&str], code: i32) -> String {
        self.fail_env(args, &[], code)
    }

    #[track_caller]
    pub fn fail_env(&self, args: &[&str], envs: &[(&str, &str)], code: i32) -> String {
        let before = self.snapshot();
        let line = self.run_env(args, envs).fails(code);
        self.snapshot()
            .assert_unchanged_since(&before, &format!("`cryptvol {}`", args.join(" ")));
        line
    }

    /// Everything under the data dir (see [`DirState::of`]) but the records every KMS call
    /// adds, failed or not.
    pub fn snapshot(&self) -> DirState {
        DirState::of(&self.data, dir_state::CALL_RECORDS)
    }

    /// Registers a secret: no later command may print it in stderr, and no failing
    /// command may print it at all.
    pub fn add_secret(&self, s: &[u8]) {
        self.secrets.borrow_mut().push(s.to_vec());
    }

    fn check_no_secrets(&self, out: &Out) {
        let cmd = format!("`cryptvol {}`", out.args.join(" "));
        let mut secrets = self.secrets.borrow().clone();
        secrets.extend(self.root_keys());
        for s in &secrets {
            assert_no_secret(&format!("{cmd} stderr"), out.stderr.as_bytes(), s);
        }
        // Root keys never appear anywhere, not even in successful output.
        for s in self.root_keys() {
            assert_no_secret(&format!("{cmd} stdout"), out.stdout.as_bytes(), &s);
        }
    }

    /// The root keys of all key-file regions in the data dir.
    pub fn root_keys(&self) -> Vec<Vec<u8>> {
        let Ok(rd) = std::fs::read_dir(self.data.join("regions")) else {
            return vec![];
        };
        rd.filter_map(|e| std::fs::read(e.ok()?.path().join("root.key")).ok())
            .filter(|k| k.len() >= 16)
            .collect()
    }

    /// Writes a scratch file outside the data dir; returns its path.
    pub fn file(&self, bytes: &[u8]) -> PathBuf {
        let mut n = self.files.borrow_mut();
        *n += 1;
        let p = self.tmp.path().join(format!("f{n}.bin"));
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }

    /// A scratch path that does not exist yet.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `fileb://PATH` of a new scratch file holding `bytes`.
    pub fn fileb(&self, bytes: &[u8]) -> String {
        fileb(&self.file(bytes))
    }

    // ---- shortcuts for common steps -----------------------------------------------

    /// Creates a key; returns its KeyMetadata.
    #[track_caller]
    pub fn create_key_meta(&self, extra: &[&str]) -> Value {
        let mut args = vec!["kms", "create-key"];
        args.extend_from_slice(extra);
        self.json(&args)["KeyMetadata"].clone()
    }

    /// Creates a key; returns its id.
    #[track_caller]
    pub fn create_key(&self) -> String {
        str_field(&self.create_key_meta(&[]), "KeyId")
    }

    /// The data dir's account id (`account.json`).
    #[track_caller]
    pub fn account(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("account.json")).expect("account.json");
        let v: Value = serde_json::from_str(&text).expect("account.json is JSON");
        str_field(&v, "account_id")
    }

    /// `iam create-user`; returns the user's ARN.
    #[track_caller]
    pub fn create_user(&self, name: &str) -> String {
        let v = self.json(&["iam", "create-user", "--user-name", name]);
        assert_eq!(v["User"]["UserName"], name, "{v:#}");
        str_field(&v["User"], "Arn")
    }

    /// `iam put-user-policy` of the identity policy `policy`, named `name`.
    #[track_caller]
    pub fn put_user_policy(&self, user: &str, name: &str, policy: &Value) {
        let f = format!(
            "file://{}",
            self.file(policy.to_string().as_bytes()).display()
        );
        let out = self.ok(&[
            "iam",
            "put-user-policy",
            "--user-name",
            user,
            "--policy-name",
            name,
            "--policy-document",
            &f,
        ]);
        assert_eq!(out, "", "put-user-policy prints nothing");
    }

    /// The audit trail's events that `audit lookup FILTERS…` finds.
    #[track_caller]
    pub fn lookup(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["audit", "lookup"];
        args.extend_from_slice(filters);
        self.json(&args)["Events"]
            .as_array()
            .expect("Events")
            .clone()
    }

    #[track_caller]
    pub fn describe(&self, key: &str) -> Value {
        self.json(&["kms", "describe-key", "--key-id", key])["KeyMetadata"].clone()
    }

    /// Encrypts `plaintext` under `key` with an optional context; returns the blob.
    #[track_caller]
    pub fn encrypt(&self, key: &str, plaintext: &[u8], ctx: Option<&str>) -> Vec<u8> {
        let pt = self.fileb(plaintext);
        let mut args = vec!["kms", "encrypt", "--key-id", key, "--plaintext", &pt];
        if let Some(c) = ctx {
            args.extend(["--encryption-context", c]);
        }
        let v = self.json(&args);
        unb64(&str_field(&v, "CiphertextBlob"))
    }

    /// Decrypts a blob (passed as a file) and returns the whole JSON response.
    #[track_caller]
    pub fn decrypt_json(&self, blob: &[u8], ctx: Option<&str>) -> Value {
        let b = self.fileb(blob);
        let mut args = vec!["kms", "decrypt", "--ciphertext-blob", &b];
        if let Some(c) = ctx {
            args.extend(["--encryption-context", c]);
        }
        self.json(&args)
    }

    #[track_caller]
    pub fn decrypt(&self, blob: &[u8], ctx: Option<&str>) -> Vec<u8> {
        unb64(&str_field(&self.decrypt_json(blob, ctx), "Plaintext"))
    }

    /// `inspect blob` of a blob.
    #[track_caller]
    pub fn inspect_blob(&self, blob: &[u8]) -> Value {
        let b = self.fileb(blob);
        self.json(&["inspect", "blob", "--ciphertext-blob", &b])
    }

    pub fn keystore_bytes(&self, region: &str) -> Vec<u8> {
        std::fs::read(self.keystore(region)).expect("read keystore")
    }
}

pub fn fileb(p: &Path) -> String {
    format!("fileb://{}", p.display())
}

#[track_caller]
pub fn str_field(v: &Value, name: &str) -> String {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name} in {v:#}"))
        .to_string()
}

/// File mode bits (permissions only).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{p:?}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

/// Deterministic non-trivial bytes (every byte value, shifted by `seed`).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn skew_days(days: i64) -> String {
    (days * DAY).to_string()
}

/// Parses an RFC 3339 time as the CLI prints it (`2024-01-02T03:04:05Z`) to Unix seconds.
#[track_caller]
pub fn unix_time(v: &Value) -> i64 {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {v}"));
    s.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .as_second()
}

pub fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}
