//! A SoftHSM2 token of the benchmarks' own, for the rows measured on a key in a custom key
//! store (AWS_CLOUDHSM over PKCS#11): a fresh token directory and `softhsm2.conf` in a temp
//! dir, so a bench never writes into the tokens of the machine or of a test run. SoftHSM2
//! reads `SOFTHSM2_CONF` once, when a process first loads the module: whatever loads it
//! (the bench itself, `cryptvol`, `kms serve`) must be started with [`BenchToken::conf`].

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's softhsm2 module (registered with p11-kit by the package, so cryptvol may load it).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The token's label and user PIN (the custom key store's `KeyStorePassword`).
pub const LABEL: &str = "cryptvol-bench";
pub const USER_PIN: &str = "cv-bench-pin-1";
const SO_PIN: &str = "cv-bench-so-pin";

pub struct BenchToken {
    /// Holds the token directory and the configuration; removed on drop.
    _dir: tempfile::TempDir,
    /// The `SOFTHSM2_CONF` to give every process that loads the module.
    pub conf: PathBuf,
    /// The token as the store's `CloudHsmClusterId`.
    pub uri: String,
}

/// "softhsm2-util VERSION" for the report, or why there is none.
pub fn version() -> String {
    Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!("SoftHSM2 {}", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "SoftHSM2 (version unknown)".into())
}

impl BenchToken {
    /// Makes the token; panics naming the package when SoftHSM2 is not installed (bench/run
    /// installs it), since a run without the HSM rows must not look like a complete one.
    pub fn make() -> BenchToken {
        assert!(
            Path::new(MODULE).exists(),
            "SoftHSM2 ({MODULE}) is not installed: apt-get install softhsm2 (bench/run installs it)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm2.conf");
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--so-pin", SO_PIN, "--pin", USER_PIN])
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BenchToken {
            _dir: dir,
            conf,
            uri: format!("pkcs11:token={LABEL}?module-path={MODULE}"),
        }
    }
}
