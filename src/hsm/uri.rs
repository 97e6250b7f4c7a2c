//! RFC 7512 `pkcs11:` URIs, the standard way to name a token and an object in it:
//! `pkcs11:token=cryptvol;object=root-key?module-path=/usr/lib/softhsm/libsofthsm2.so`.
//!
//! Path attributes (before `?`, separated by `;`): `token` (label), `slot-id`, `object`
//! (label), `id` (bytes), and the informational `type`, `serial`, `model`, `manufacturer`
//! and `library-*`, which are accepted and not used. Query attributes (after `?`,
//! separated by `&`): `module-path`, `pin-source` (a file holding the PIN) and `pin-value`.
//! Values are percent-decoded. Anything else is refused rather than silently ignored, so a
//! typo never selects a different token.

use std::path::PathBuf;

use super::HsmError;
use super::spec::{ObjectRef, TokenSelector};

/// A parsed `pkcs11:` URI. The PIN, if the URI holds one, is kept as a secret.
#[derive(Debug, Default)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub slot_id: Option<u64>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub module_path: Option<PathBuf>,
    pub pin_source: Option<PathBuf>,
    pub pin_value: Option<secrecy::SecretString>,
}

const IGNORED_PATH_ATTRS: &[&str] = &[
    "type",
    "serial",
    "model",
    "manufacturer",
    "library-manufacturer",
    "library-description",
    "library-version",
    "slot-description",
    "slot-manufacturer",
];

impl Pkcs11Uri {
    pub fn parse(text: &str) -> Result<Pkcs11Uri, HsmError> {
        let shown = redact(text);
        let bad = |why: &str| HsmError::BadUri(shown.clone(), why.to_string());
        let rest = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("it does not start with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(&format!("attribute {attr:?} has no '='")))?;
            let value = decode(value).map_err(|e| bad(&e))?;
            match name {
                "token" => {
                    let label = text_value(value).map_err(|e| bad(&e))?;
                    // CK_TOKEN_INFO's label is 32 bytes: a longer one names no token, and
                    // would be repeated in full by every error about it.
                    if label.len() > 32 {
                        return Err(bad("a token label is at most 32 bytes (PKCS#11)"));
                    }
                    set(&mut uri.token, label, name).map_err(|e| bad(&e))?
                }
                "object" => set(
                    &mut uri.object,
                    text_value(value).map_err(|e| bad(&e))?,
                    name,
                )
                .map_err(|e| bad(&e))?,
                "id" => set(&mut uri.id, value, name).map_err(|e| bad(&e))?,
                "slot-id" => {
                    let n = text_value(value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| bad("slot-id is not a decimal number"))?;
                    set(&mut uri.slot_id, n, name).map_err(|e| bad(&e))?
                }
                n if IGNORED_PATH_ATTRS.contains(&n) => {}
                n => return Err(bad(&format!("unknown attribute {n:?}"))),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(&format!("query attribute {:?} has no '='", attr_name(attr))))?;
            let value = decode(value).map_err(|e| bad(&e))?;
            match name {
                "module-path" => {
                    let p = PathBuf::from(text_value(value).map_err(|e| bad(&e))?);
                    if !p.is_absolute() {
                        return Err(bad("module-path must be absolute"));
                    }
                    // No file worth loading has one, and it would split the errors and
                    // audit records that show the path.
                    if p.to_string_lossy().chars().any(char::is_control) {
                        return Err(bad("module-path holds a control character"));
                    }
                    set(&mut uri.module_path, p, name).map_err(|e| bad(&e))?
                }
                "pin-source" => {
                    let s = text_value(value).map_err(|e| bad(&e))?;
                    let p = PathBuf::from(s.strip_prefix("file:").unwrap_or(&s));
                    set(&mut uri.pin_source, p, name).map_err(|e| bad(&e))?
                }
                "pin-value" => {
                    let s = zeroize::Zeroizing::new(value);
                    let s = std::str::from_utf8(&s).map_err(|_| bad("pin-value is not UTF-8"))?;
                    if uri.pin_value.is_some() {
                        return Err(bad("pin-value is given twice"));
                    }
                    uri.pin_value = Some(s.into());
                }
                n => return Err(bad(&format!("unknown query attribute {n:?}"))),
            }
        }
        if uri.token.is_some() && uri.slot_id.is_some() {
            return Err(bad("give token or slot-id, not both"));
        }
        Ok(uri)
    }

    /// The token this URI names, if it names one.
    pub fn token_selector(&self) -> Option<TokenSelector> {
        match (&self.token, self.slot_id) {
            (Some(label), _) => Some(TokenSelector::Label(label.clone())),
            (None, Some(slot)) => Some(TokenSelector::Slot(slot)),
            (None, None) => None,
        }
    }

    /// The object this URI names, if it names one (the id wins over the label).
    pub fn object_ref(&self) -> Option<ObjectRef> {
        match (&self.id, &self.object) {
            (Some(id), _) => Some(ObjectRef::Id(id.clone())),
            (None, Some(label)) => Some(ObjectRef::Label(label.clone())),
            (None, None) => None,
        }
    }
}

fn attr_name(attr: &str) -> &str {
    attr.split('=').next().unwrap_or(attr)
}

/// The URI as it may be shown in an error or recorded in the audit trail: the value of a
/// `pin-value` attribute, wherever it is (a misplaced one in the path too, and whatever
/// case or percent-encoding its name has), is replaced by `***`; control characters are
/// escaped, so the text stays on one line; and it is cut at [`SHOWN_MAX`] characters.
pub fn redact(text: &str) -> String {
    let hide = |part: &str, sep: char| -> String {
        part.split(sep)
            .map(|a| {
                let name = decode(attr_name(a)).unwrap_or_default();
                if name.eq_ignore_ascii_case(b"pin-value") {
                    "pin-value=***".to_string()
                } else {
                    a.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(&sep.to_string())
    };
    let shown = match text.split_once('?') {
        None => hide(text, ';'),
        Some((path, query)) => format!("{}?{}", hide(path, ';'), hide(query, '&')),
    };
    let mut out = String::new();
    for (n, c) in shown.chars().enumerate() {
        if n == SHOWN_MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// How much of a URI an error shows.
pub const SHOWN_MAX: usize = 300;

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("{name} is given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn text_value(bytes: Vec<u8>) -> Result<String, String> {
    String::from_utf8(bytes).map_err(|_| "a value is not UTF-8".to_string())
}

/// Percent-decoding (RFC 3986 section 2.1).
fn decode(value: &str) -> Result<Vec<u8>, String> {
    let b = value.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a '%' is not followed by two hex digits".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl super::TokenSpec {
    /// The spec as a `pkcs11:` URI (AWS's `CloudHsmClusterId` of a custom key store):
    /// `pkcs11:token=LABEL?module-path=PATH` or `pkcs11:slot-id=N?module-path=PATH`.
    pub fn uri(&self) -> String {
        let token = match &self.token {
            TokenSelector::Label(l) => format!("token={}", encode(l)),
            TokenSelector::Slot(s) => format!("slot-id={s}"),
        };
        format!(
            "pkcs11:{token}?module-path={}",
            encode(&self.module.to_string_lossy())
        )
    }

    /// The token a URI names, with its module; both must be there.
    pub fn from_uri(text: &str) -> Result<super::TokenSpec, HsmError> {
        let uri = Pkcs11Uri::parse(text)?;
        let bad = |why: &str| HsmError::BadUri(redact(text), why.to_string());
        if uri.pin_value.is_some() || uri.pin_source.is_some() {
            return Err(bad(
                "a key store's URI holds no PIN: give it as the key store password",
            ));
        }
        Ok(super::TokenSpec {
            token: uri
                .token_selector()
                .ok_or_else(|| bad("it names no token (token= or slot-id=)"))?,
            module: uri
                .module_path
                .ok_or_else(|| bad("it names no module (?module-path=)"))?,
        })
    }
}

/// Percent-encoding of everything but RFC 3986's unreserved characters and '/'.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
