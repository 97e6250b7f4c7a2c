//! The SoftHSM2 token of the tests, in the token directory of the `SOFTHSM2_CONF` that
//! test.sh makes for the run (PKCS#11 initialises a module once per process, so the token
//! must exist before a process first loads the module). Without SoftHSM2 or that variable the tests fail when
//! `CRYPTVOL_REQUIRE_MOUNT=1` (CI) and are skipped with a message otherwise.

use std::cell::RefCell;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::spec::{TokenSelector, TokenSpec};

/// Debian's softhsm2 module (registered with p11-kit by the package).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const USER_PIN: &str = "cv-user-pin-1";
pub const SO_PIN: &str = "cv-so-pin-12";
/// The label of the shared test token (test.sh makes it with these PINs).
pub const TEST_TOKEN_LABEL: &str = "cryptvol-test";

pub struct TestToken {
    pub spec: TokenSpec,
    pub label: String,
}

/// Tests of one process share its login to the token (PKCS#11 login is per process), so
/// a test that needs the process logged out (a wrong PIN is INVALID_CREDENTIALS only then;
/// a module is finalised only when no token of it is in use) runs [`alone`]: every test
/// that takes the token holds this lock shared until its thread ends.
static LOGIN_STATE: RwLock<()> = RwLock::new(());

thread_local! {
    static SHARING: RefCell<Option<RwLockReadGuard<'static, ()>>> = const { RefCell::new(None) };
}

/// Waits until no other test of the process uses the token, and keeps it so until the
/// guard is dropped (at the end of the test).
pub fn alone() -> RwLockWriteGuard<'static, ()> {
    SHARING.with(|s| s.borrow_mut().take());
    LOGIN_STATE.write().unwrap_or_else(|p| p.into_inner())
}

/// The process's test token, or None (skip) when SoftHSM2 is not set up outside CI.
pub fn test_token() -> Option<&'static TestToken> {
    SHARING.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = Some(LOGIN_STATE.read().unwrap_or_else(|p| p.into_inner()));
        }
    });
    static TOKEN: OnceLock<Option<TestToken>> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let missing = if !std::path::Path::new(SOFTHSM_MODULE).exists() {
                Some(format!("SoftHSM2 ({SOFTHSM_MODULE}) is not installed: apt-get install softhsm2"))
            } else if std::env::var_os("SOFTHSM2_CONF").is_none() {
                Some("SOFTHSM2_CONF is not set: run the tests through test.sh, which makes a token directory".to_string())
            } else {
                None
            };
            if let Some(why) = missing {
                assert!(
                    std::env::var_os("CRYPTVOL_REQUIRE_MOUNT").is_none_or(|v| v != "1"),
                    "{why}"
                );
                eprintln!("skipped: {why}");
                return None;
            }
            Some(make_token())
        })
        .as_ref()
}

fn make_token() -> TestToken {
    // One token for every test process: test.sh makes it before the tests start, since
    // softhsm2-util cannot make a token while other processes are writing theirs (it reads
    // every token of the directory). Outside test.sh the first process makes it, under a
    // lock; each test uses its own object ids and its own region, so they share it safely.
    let label = TEST_TOKEN_LABEL.to_string();
    let conf = std::env::var_os("SOFTHSM2_CONF").expect("checked");
    let mut lock_path = conf.clone();
    lock_path.push(".lock");
    let _turn = crate::sys::fsio::FileLock::exclusive(std::path::Path::new(&lock_path))
        .expect("lock beside SOFTHSM2_CONF");
    let slots = Command::new("softhsm2-util")
        .arg("--show-slots")
        .output()
        .expect("softhsm2-util runs");
    let listed = String::from_utf8_lossy(&slots.stdout);
    if !listed
        .lines()
        .any(|l| l.trim() == format!("Label:            {label}"))
    {
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &label])
            .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
            .output()
            .expect("softhsm2-util runs");
        assert!(out.status.success(), "{out:?}");
    }
    TestToken {
        spec: TokenSpec {
            module: PathBuf::from(SOFTHSM_MODULE),
            token: TokenSelector::Label(label.clone()),
        },
        label,
    }
}

pub fn user_pin() -> cryptoki::types::AuthPin {
    USER_PIN.into()
}
