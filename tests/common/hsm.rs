//! SoftHSM2 tokens for tests of regions whose root key is in a PKCS#11 token. Each call
//! makes a new token (its own label) in the token directory of `SOFTHSM2_CONF` (test.sh
//! makes one per run). Without SoftHSM2 or that variable, tests fail when
//! `CRYPTVOL_REQUIRE_MOUNT=1` (CI) and are skipped with a message otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const USER_PIN: &str = "cv-root-pin-1";
const SO_PIN: &str = "cv-so-pin-12";

pub struct TestToken {
    pub label: String,
    /// A 0600 file holding the user PIN (the URIs' pin-source).
    pub pin_file: PathBuf,
}

impl TestToken {
    /// `pkcs11:token=<label>;object=<object>?module-path=...&pin-source=file:<pin file>`.
    pub fn uri(&self, object: &str) -> String {
        format!(
            "pkcs11:token={};object={object}?module-path={SOFTHSM_MODULE}&pin-source=file:{}",
            self.label,
            self.pin_file.display()
        )
    }
}

/// The shared token test.sh makes for the run (src/kms/hsm/test_token.rs has the same):
/// its label, its user and SO PINs. Tests on it use their own keys and regions.
pub const SHARED_TOKEN: &str = "cryptvol-test";
pub const SHARED_PIN: &str = "cv-user-pin-1";
pub const SHARED_SO_PIN: &str = "cv-so-pin-12";

/// Whether SoftHSM2 and the run's token directory (`SOFTHSM2_CONF`, made by test.sh) are
/// there: false (after a note) when not, unless CI (`CI=true` or
/// `CRYPTVOL_REQUIRE_MOUNT=1`), where that is a failure.
pub fn ready() -> bool {
    let missing = if !Path::new(SOFTHSM_MODULE).exists() {
        Some(format!(
            "SoftHSM2 ({SOFTHSM_MODULE}) is not installed: apt-get install softhsm2"
        ))
    } else if std::env::var_os("SOFTHSM2_CONF").is_none_or(|c| c.is_empty()) {
        Some("SOFTHSM2_CONF is not set: run the tests through test.sh".to_string())
    } else {
        None
    };
    let Some(why) = missing else {
        return true;
    };
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var_os("CRYPTVOL_REQUIRE_MOUNT").is_some_and(|v| v == "1");
    assert!(!required, "{why}");
    eprintln!("skipped: {why}");
    false
}

/// A fresh token whose PIN file is in `scratch`, or None (skip) without SoftHSM2.
pub fn token(scratch: &Path) -> Option<TestToken> {
    if !ready() {
        return None;
    }
    static N: AtomicU32 = AtomicU32::new(0);
    let label = format!(
        "cvroot-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    init_token(&label, SO_PIN, USER_PIN, false);
    let pin_file = scratch.join(format!("{label}.pin"));
    std::fs::write(&pin_file, format!("{USER_PIN}\n")).unwrap();
    Some(TestToken { label, pin_file })
}

/// The URI of the run's shared token (`SHARED_TOKEN`), made here if test.sh did not make it
/// (a run outside test.sh), or None (skip) without SoftHSM2.
pub fn shared_token_uri() -> Option<String> {
    if !ready() {
        return None;
    }
    init_token(SHARED_TOKEN, SHARED_SO_PIN, SHARED_PIN, true);
    Some(format!(
        "pkcs11:token={SHARED_TOKEN}?module-path={SOFTHSM_MODULE}"
    ))
}

/// Initialises token `label` in a free slot (`unless_listed`: only if no token has that
/// label yet).
fn init_token(label: &str, so_pin: &str, user_pin: &str, unless_listed: bool) {
    // softhsm2-util picks a free slot without a lock, and it reads every token of the
    // directory first: it fails while another test process logs in to a token (SoftHSM2
    // rewrites a token's file at every login). Makers take turns under a lock beside
    // SOFTHSM2_CONF and try again after such a failure.
    let conf = std::env::var_os("SOFTHSM2_CONF").expect("checked above");
    let mut lock_path = conf;
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .expect("lock file beside SOFTHSM2_CONF");
    lock.lock().expect("lock beside SOFTHSM2_CONF");
    if unless_listed {
        let slots = Command::new("softhsm2-util")
            .arg("--show-slots")
            .output()
            .expect("softhsm2-util runs");
        let listed = String::from_utf8_lossy(&slots.stdout)
            .lines()
            .any(|l| l.trim() == format!("Label:            {label}"));
        if listed {
            return;
        }
    }
    let mut attempt = 0;
    let out = loop {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", so_pin, "--pin", user_pin])
            .output()
            .expect("softhsm2-util runs");
        attempt += 1;
        if out.status.success() || attempt == 20 {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
    };
    drop(lock);
    assert!(out.status.success(), "{out:?}");
}

/// Destroys the secret key labelled `object` in the token (as an administrator would).
pub fn destroy_object(t: &TestToken, object: &str) {
    let out = Command::new("pkcs11-tool")
        .args(["--module", SOFTHSM_MODULE, "--token-label", &t.label])
        .args(["--login", "--pin", USER_PIN, "--delete-object"])
        .args(["--type", "secrkey", "--label", object])
        .output()
        .expect("pkcs11-tool runs");
    assert!(out.status.success(), "{out:?}");
}
