//! Which PKCS#11 modules may be loaded, and the process-wide registry of loaded ones.
//!
//! Loading a module runs its code in this process. A custom key store can be created over
//! `kms serve` by any caller allowed `kms:CreateCustomKeyStore`, so the module path in a
//! request must not be a way to run a file of the caller's choosing: a module is loaded
//! only if the machine's administrator registered it with p11-kit (the `module:` line of a
//! file in `/usr/share/p11-kit/modules` or `/etc/pkcs11/modules`, as Debian's softhsm2
//! and opensc packages do) or listed it in `CRYPTVOL_PKCS11_MODULES` (absolute paths
//! separated by `:`) in cryptvol's own environment. Paths are compared after resolving
//! symlinks.
//!
//! PKCS#11 allows one `C_Initialize` per module per process, so each module is loaded and
//! initialised once and kept while anything uses it. A module may read its tokens only at
//! `C_Initialize` (SoftHSM2 does, and misses a token whose file another process is
//! rewriting at that moment, as every login does): [`reload_if_unused`] lets a caller that
//! did not find its token look again with a fresh initialisation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use super::HsmError;

/// The environment variable listing extra modules cryptvol may load.
pub const MODULES_ENV: &str = "CRYPTVOL_PKCS11_MODULES";

const P11KIT_CONFIG_DIRS: &[&str] = &["/usr/share/p11-kit/modules", "/etc/pkcs11/modules"];
/// Where p11-kit looks for a module named without a directory.
const P11KIT_MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
];

/// The modules the administrator allows, resolved.
fn allowed_modules() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in P11KIT_CONFIG_DIRS {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().extension().is_none_or(|x| x != "module") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            for line in text.lines() {
                let Some(m) = line.trim().strip_prefix("module:") else {
                    continue;
                };
                let m = Path::new(m.trim());
                if m.is_absolute() {
                    out.push(m.to_path_buf());
                } else {
                    out.extend(P11KIT_MODULE_DIRS.iter().map(|d| Path::new(d).join(m)));
                }
            }
        }
    }
    if let Some(list) = std::env::var_os(MODULES_ENV) {
        out.extend(std::env::split_paths(&list).filter(|p| p.is_absolute()));
    }
    out.iter().filter_map(|p| p.canonicalize().ok()).collect()
}

/// `path` resolved, if it exists and the administrator allows it.
pub fn check_allowed(path: &Path) -> Result<PathBuf, HsmError> {
    if !path.is_absolute() {
        return Err(HsmError::ModuleNotAllowed(path.to_path_buf()));
    }
    let real = path
        .canonicalize()
        .map_err(|_| HsmError::ModuleMissing(path.to_path_buf()))?;
    if !real.is_file() {
        return Err(HsmError::ModuleMissing(path.to_path_buf()));
    }
    if allowed_modules().contains(&real) {
        Ok(real)
    } else {
        Err(HsmError::ModuleNotAllowed(path.to_path_buf()))
    }
}

type Loaded = Mutex<HashMap<PathBuf, Arc<Pkcs11>>>;

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The initialised context of module `path`, loading it on first use.
pub fn load(path: &Path) -> Result<Arc<Pkcs11>, HsmError> {
    let real = check_allowed(path)?;
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(&real) {
        return Ok(ctx.clone());
    }
    let broken = |why: String| HsmError::ModuleBroken {
        module: path.to_path_buf(),
        why,
    };
    let ctx = Pkcs11::new(&real).map_err(|e| broken(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(broken(e.to_string())),
    }
    let ctx = Arc::new(ctx);
    map.insert(real, ctx.clone());
    Ok(ctx)
}

/// Finalises module `path` if no token of it is in use in this process, so that the next
/// [`load`] initialises it afresh. False if something still uses it.
pub fn reload_if_unused(path: &Path) -> bool {
    let Ok(real) = path.canonicalize() else {
        return false;
    };
    let mut map = loaded().lock().unwrap_or_else(|p| p.into_inner());
    let Some(ctx) = map.remove(&real) else {
        return true;
    };
    match Arc::try_unwrap(ctx) {
        Ok(ctx) => {
            let _ = ctx.finalize();
            true
        }
        Err(ctx) => {
            map.insert(real, ctx);
            false
        }
    }
}
