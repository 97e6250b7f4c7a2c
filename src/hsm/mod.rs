//! Hardware security modules through PKCS#11: where the material of keys in a custom key
//! store (and, optionally, a region's root key) lives and is used, never leaving the token.
//!
//! - [`uri`]: RFC 7512 `pkcs11:` URIs naming a module, a token and an object.
//! - [`modules`]: which module files may be loaded (a `dlopen` runs the module's code, so
//!   only modules the machine's administrator registered) and the process-wide registry
//!   that loads and initialises each module once, as PKCS#11 requires.
//! - [`spec`]: the names of a token and of an object in it; [`slots`]: finding a token's
//!   slot (looking again when another process hid it), and the checks without a login.
//! - [`token`]: a logged-in token: AES-256 keys generated inside it as sensitive,
//!   non-extractable objects, AES-GCM run inside it, objects destroyed in it.
//!
//! Every failure is an [`HsmError`] that names the module or token and the fix, and maps to
//! AWS's `ConnectionErrorCode` for `describe-custom-key-stores`. The PIN is a
//! `secrecy::SecretString` (zeroized on drop) and is never in an error.

pub mod modules;
pub mod slots;
pub mod spec;
pub mod token;
pub mod uri;

#[cfg(test)]
pub(crate) mod test_token;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use spec::{KeyUse, ObjectRef, TokenSelector, TokenSpec};
pub use token::Token;
pub use uri::Pkcs11Uri;

/// Why a token could not be reached or could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HsmError {
    #[error("PKCS#11 module {0} does not exist: install it or correct the path")]
    ModuleMissing(PathBuf),
    #[error(
        "PKCS#11 module {0} is not registered with p11-kit (/usr/share/p11-kit/modules) nor listed in CRYPTVOL_PKCS11_MODULES: register it there (only modules the administrator lists are loaded)"
    )]
    ModuleNotAllowed(PathBuf),
    #[error("PKCS#11 module {module} cannot be loaded or initialised: {why}")]
    ModuleBroken { module: PathBuf, why: String },
    #[error(
        "no token {token} in PKCS#11 module {module}: insert or initialise the token, or name another"
    )]
    TokenNotFound { module: PathBuf, token: String },
    #[error("the PIN for token {token} is incorrect: give the crypto user's PIN")]
    PinIncorrect { token: String },
    #[error("the user PIN of token {token} is locked: unlock it with the token's security officer")]
    PinLocked { token: String },
    #[error("token {token} has no user PIN set: initialise it (softhsm2-util --init-pin)")]
    UserNotInitialized { token: String },
    #[error(
        "token {token} is already logged in by this process with another PIN: one token backs one key store"
    )]
    LoggedInWithAnotherPin { token: String },
    #[error("object {object} is not in token {token}: it was destroyed or the token was replaced")]
    ObjectMissing { token: String, object: String },
    #[error("object {object} already exists in token {token}")]
    ObjectExists { token: String, object: String },
    #[error("the ciphertext does not verify under object {object} of token {token}")]
    AuthenticationFailed { token: String, object: String },
    #[error("token {token} failed in {operation}: {why}")]
    Device {
        token: String,
        operation: &'static str,
        why: String,
    },
    #[error("{0} is not a valid PKCS#11 URI: {1}")]
    BadUri(String, String),
}

impl HsmError {
    /// AWS's `ConnectionErrorCode` for a custom key store whose token failed this way. A
    /// module that cannot be found or loaded is a missing cluster; a missing token, a
    /// cluster without HSMs.
    pub fn connection_error_code(&self) -> &'static str {
        match self {
            HsmError::ModuleMissing(_)
            | HsmError::ModuleNotAllowed(_)
            | HsmError::ModuleBroken { .. }
            | HsmError::BadUri(..) => "CLUSTER_NOT_FOUND",
            HsmError::TokenNotFound { .. } => "INSUFFICIENT_CLOUDHSM_HSMS",
            HsmError::PinIncorrect { .. } => "INVALID_CREDENTIALS",
            HsmError::PinLocked { .. } => "USER_LOCKED_OUT",
            HsmError::UserNotInitialized { .. } => "USER_NOT_FOUND",
            HsmError::LoggedInWithAnotherPin { .. } => "USER_LOGGED_IN",
            HsmError::ObjectMissing { .. }
            | HsmError::ObjectExists { .. }
            | HsmError::AuthenticationFailed { .. }
            | HsmError::Device { .. } => "INTERNAL_ERROR",
        }
    }

    /// Whether the token itself is unreachable (as opposed to one object or one ciphertext
    /// being wrong): the store should be reported FAILED.
    pub fn is_connection_failure(&self) -> bool {
        !matches!(
            self,
            HsmError::ObjectMissing { .. }
                | HsmError::ObjectExists { .. }
                | HsmError::AuthenticationFailed { .. }
        )
    }
}
