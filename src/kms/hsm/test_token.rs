//! A SoftHSM2 token for tests, one per test process, in the token directory of the
//! `SOFTHSM2_CONF` that test.sh makes for the run (PKCS#11 initialises a module once per
//! process, so the token must exist before the process first loads the module; the
//! OnceLock below makes it first). Without SoftHSM2 or that variable the tests fail when
//! `CRYPTVOL_REQUIRE_MOUNT=1` (CI) and are skipped with a message otherwise.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::token::{TokenSelector, TokenSpec};

/// Debian's softhsm2 module (registered with p11-kit by the package).
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const USER_PIN: &str = "cv-user-pin-1";
pub const SO_PIN: &str = "cv-so-pin-12";

pub struct TestToken {
    pub spec: TokenSpec,
    pub label: String,
}

/// The process's test token, or None (skip) when SoftHSM2 is not set up outside CI.
pub fn test_token() -> Option<&'static TestToken> {
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
    let label = format!("cvtest-{}", std::process::id());
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", &label])
        .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
        .output()
        .expect("softhsm2-util runs");
    assert!(out.status.success(), "{out:?}");
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
