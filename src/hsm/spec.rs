//! How cryptvol names what is in a PKCS#11 module: a token (by label or slot) of a module,
//! an object in it (by `CKA_ID` or `CKA_LABEL`), and what a generated key is for.

use std::fmt;
use std::path::PathBuf;

/// Which token of a module: by label (as `softhsm2-util --init-token --label`) or slot id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TokenSelector {
    Label(String),
    Slot(u64),
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSelector::Label(l) => write!(f, "{l:?}"),
            TokenSelector::Slot(s) => write!(f, "in slot {s}"),
        }
    }
}

/// A module and a token in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenSpec {
    pub module: PathBuf,
    pub token: TokenSelector,
}

impl fmt::Display for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of module {}", self.token, self.module.display())
    }
}

/// An object in a token: by `CKA_ID` (cryptvol's keys) or `CKA_LABEL` (a URI's `object=`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectRef {
    Id(Vec<u8>),
    Label(String),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Id(id) => write!(f, "id={}", hex::encode(id)),
            ObjectRef::Label(l) => write!(f, "label={l:?}"),
        }
    }
}

/// What a generated key is for. Both encrypt and decrypt with AES-GCM and nothing else:
/// no wrap, sign or derive, so the token refuses any other use of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    /// A CMK version in a custom key store.
    Cmk,
    /// A region's root key, which seals the keystore.
    RootKey,
}
