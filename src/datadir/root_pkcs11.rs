//! A region root key kept sealed by an AES-256 key object inside a PKCS#11 token.
//!
//! The root key itself is 32 random bytes, as for a key-file region; what the token holds
//! is the key that seals it. AES-GCM runs inside the token, so the sealing key never
//! reaches this process, and the keystore cannot be opened without the token and its PIN.
//! region.json keeps the URI (never a PIN) and the sealed root:
//! `nonce (12) ‖ AES-256-GCM ciphertext (32) ‖ tag (16)`, with AAD [`ROOT_AAD`] ‖ region
//! name (docs/formats.md, "PKCS#11 root key").
//!
//! The PIN is read from the URI's `pin-source` file on every open: the daemon and
//! `kms serve` run without a terminal, and a `pin-value` would end up in region.json.

use std::path::{Path, PathBuf};

use cryptoki::types::AuthPin;

use crate::aws::error::{AwsError, Result};
use crate::aws::ids::Region;
use crate::crypto::{Key256, NONCE_LEN, TAG_LEN};
use crate::hsm::{HsmError, KeyUse, ObjectRef, Pkcs11Uri, Token, TokenSpec};

/// Binds a sealed root to its purpose; the region name follows it.
pub const ROOT_AAD: &[u8] = b"cryptvol region root key v1\0";
/// Length of the sealed root in region.json.
pub const SEALED_ROOT_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// A checked root-key URI: names a module, a token, an object and a PIN file.
#[derive(Debug)]
pub struct RootUri {
    /// The URI as given (it holds no PIN), stored in region.json.
    pub text: String,
    pub spec: TokenSpec,
    pub object: ObjectRef,
    /// Label for an object that init creates.
    pub label: String,
    pub pin_source: PathBuf,
}

fn bad(region: &Region, uri: &str, why: &str) -> AwsError {
    AwsError::RootKeyToken {
        region: region.to_string(),
        error: HsmError::BadUri(crate::hsm::uri::redact(uri), why.to_string()),
        hint: String::new(),
    }
}

/// Parses and checks a `--root-key` URI. A `pin-value` is refused: the URI is stored in
/// region.json, and a PIN must not be.
pub fn parse_root_uri(region: &Region, text: &str) -> Result<RootUri> {
    let uri = Pkcs11Uri::parse(text).map_err(|error| AwsError::RootKeyToken {
        region: region.to_string(),
        error,
        hint: String::new(),
    })?;
    if uri.pin_value.is_some() {
        return Err(bad(
            region,
            text,
            "a pin-value would be stored in region.json: put the PIN in a 0600 file and name it with pin-source=file:/path",
        ));
    }
    let module = uri
        .module_path
        .clone()
        .ok_or_else(|| bad(region, text, "it names no module-path"))?;
    let token = uri
        .token_selector()
        .ok_or_else(|| bad(region, text, "it names no token (token= or slot-id=)"))?;
    let object = uri
        .object_ref()
        .ok_or_else(|| bad(region, text, "it names no key object (object= or id=)"))?;
    let pin_source = uri
        .pin_source
        .clone()
        .ok_or_else(|| bad(region, text, "it has no pin-source=file:/path"))?;
    let label = uri
        .object
        .clone()
        .unwrap_or_else(|| format!("cryptvol-root-{region}"));
    Ok(RootUri {
        text: text.to_string(),
        spec: TokenSpec { module, token },
        object,
        label,
        pin_source,
    })
}

/// The PIN in `path` (a `file:` URI or a plain path): the whole file less one trailing
/// newline (`without_line_end`).
fn read_pin(region: &Region, source: &Path) -> Result<AuthPin> {
    let path = match source.to_str().and_then(|s| s.strip_prefix("file:")) {
        Some(rest) => PathBuf::from(rest),
        None => source.to_path_buf(),
    };
    let bytes = crate::crypto::SecretBytes::new(std::fs::read(&path).map_err(|source| {
        AwsError::PinSource {
            region: region.to_string(),
            path: path.clone(),
            source,
        }
    })?);
    let v = super::root_key::without_line_end(bytes.expose());
    let text = std::str::from_utf8(v).map_err(|_| AwsError::PinSource {
        region: region.to_string(),
        path: path.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the PIN is not UTF-8"),
    })?;
    Ok(AuthPin::from(text.to_string()))
}

fn token_err(region: &Region) -> impl Fn(HsmError) -> AwsError + '_ {
    move |error| AwsError::RootKeyToken {
        region: region.to_string(),
        error,
        hint: String::new(),
    }
}

fn connect(region: &Region, uri: &RootUri) -> Result<Token> {
    let pin = read_pin(region, &uri.pin_source)?;
    Token::connect(&uri.spec, &pin).map_err(|error| {
        let hint = match error {
            HsmError::PinIncorrect { .. } => format!(
                " (read from the pin-source file {}: correct it)",
                uri.pin_source.display()
            ),
            _ => String::new(),
        };
        AwsError::RootKeyToken {
            region: region.to_string(),
            error,
            hint,
        }
    })
}

fn aad(region: &Region) -> Vec<u8> {
    [ROOT_AAD, region.as_str().as_bytes()].concat()
}

/// What sealing a new root did to the token's object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectOutcome {
    Created,
    Existing,
}

/// A fresh random root sealed by the URI's object, which is created in the token
/// (sensitive, non-extractable AES-256) if it is not there.
pub fn seal_new_root(region: &Region, uri: &RootUri) -> Result<(Key256, Vec<u8>, ObjectOutcome)> {
    let token = connect(region, uri)?;
    let err = token_err(region);
    let outcome = if token.exists(&uri.object).map_err(&err)? {
        ObjectOutcome::Existing
    } else {
        let id = match &uri.object {
            ObjectRef::Id(id) => id.clone(),
            // The URI names a label: the object gets a random id of its own.
            ObjectRef::Label(_) => crate::crypto::random::array::<16>().to_vec(),
        };
        token
            .generate_aes256(&id, &uri.label, KeyUse::RootKey)
            .map_err(&err)?;
        ObjectOutcome::Created
    };
    let root = Key256::generate();
    let nonce: [u8; NONCE_LEN] = crate::crypto::random::array();
    let ct = token
        .encrypt_gcm(&uri.object, &nonce, &aad(region), root.expose())
        .map_err(&err)?;
    let sealed = [nonce.as_slice(), &ct].concat();
    if sealed.len() != SEALED_ROOT_LEN {
        return Err(err(HsmError::Device {
            token: uri.spec.to_string(),
            operation: "C_Encrypt",
            why: format!("{} bytes of AES-GCM output for 32", ct.len()),
        }));
    }
    Ok((root, sealed, outcome))
}

/// Opens a sealed root with the token. `config` names region.json in errors.
pub fn unseal_root(
    region: &Region,
    uri_text: &str,
    sealed: &[u8],
    config: &Path,
) -> Result<Key256> {
    let uri = parse_root_uri(region, uri_text)?;
    if sealed.len() != SEALED_ROOT_LEN {
        return Err(AwsError::Corrupt {
            path: config.to_path_buf(),
            what: format!(
                "the sealed root is {} bytes, not {SEALED_ROOT_LEN}",
                sealed.len()
            ),
        });
    }
    let token = connect(region, &uri)?;
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
    let plain = token
        .decrypt_gcm(&uri.object, &nonce, &aad(region), ct)
        .map_err(token_err(region))?;
    Key256::from_slice(plain.expose()).ok_or_else(|| AwsError::Corrupt {
        path: config.to_path_buf(),
        what: "the sealed root does not open to 32 bytes".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        Region::parse("local-1").unwrap()
    }

    fn refused(uri: &str) -> String {
        match parse_root_uri(&region(), uri) {
            Err(e @ AwsError::RootKeyToken { .. }) => e.to_string(),
            other => panic!("{uri}: {other:?}"),
        }
    }

    #[test]
    fn a_root_uri_needs_module_token_object_and_pin_file_and_no_pin() {
        let ok = "pkcs11:token=t;object=o?module-path=/m.so&pin-source=file:/p";
        let u = parse_root_uri(&region(), ok).unwrap();
        assert_eq!(u.text, ok);
        assert_eq!(u.object, ObjectRef::Label("o".into()));
        assert_eq!(u.label, "o");
        assert_eq!(u.pin_source, PathBuf::from("/p"));
        // By id: the label of an object init makes names the region.
        let u = parse_root_uri(
            &region(),
            "pkcs11:token=t;id=%01%02?module-path=/m.so&pin-source=/p",
        )
        .unwrap();
        assert_eq!(u.object, ObjectRef::Id(vec![1, 2]));
        assert_eq!(u.label, "cryptvol-root-local-1");

        let e = refused("pkcs11:token=t;object=o?module-path=/m.so&pin-value=s3cret-pin");
        assert!(e.contains("pin-source") && !e.contains("s3cret-pin"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        for (uri, says) in [
            ("pkcs11:token=t;object=o?pin-source=/p", "module-path"),
            ("pkcs11:object=o?module-path=/m.so&pin-source=/p", "token"),
            ("pkcs11:token=t?module-path=/m.so&pin-source=/p", "object"),
            ("pkcs11:token=t;object=o?module-path=/m.so", "pin-source"),
            (
                "pkcs11:token=t;object=o;colour=red?module-path=/m.so",
                "colour",
            ),
        ] {
            let e = refused(uri);
            assert!(e.contains(says), "{uri}: {e}");
        }
    }

    #[test]
    fn the_pin_file_is_read_less_one_newline_and_its_absence_names_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pin");
        std::fs::write(&p, "1234\r\n").unwrap();
        let source = PathBuf::from(format!("file:{}", p.display()));
        let pin = read_pin(&region(), &source).unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&pin), "1234");
        std::fs::remove_file(&p).unwrap();
        match read_pin(&region(), &source) {
            Err(AwsError::PinSource { path, source, .. }) => {
                assert_eq!(path, p);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }
}
