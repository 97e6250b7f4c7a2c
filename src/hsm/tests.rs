//! The token layer against a real SoftHSM2 token.

use std::path::PathBuf;

use super::test_token::{test_token, user_pin};
use super::token::POOL_MAX;
use super::*;

fn connect() -> Option<Token> {
    let t = test_token()?;
    Some(Token::connect(&t.spec, &user_pin()).unwrap())
}

fn fresh_id() -> Vec<u8> {
    crate::crypto::random::array::<20>().to_vec()
}

#[test]
fn a_generated_key_seals_and_opens_inside_the_token_and_binds_nonce_and_aad() {
    let Some(tok) = connect() else { return };
    let id = fresh_id();
    tok.generate_aes256(&id, "cryptvol-test", KeyUse::Cmk)
        .unwrap();
    let obj = ObjectRef::Id(id.clone());
    let nonce = [7u8; 12];
    let sealed = tok
        .encrypt_gcm(&obj, &nonce, b"aad", b"secret bytes")
        .unwrap();
    assert_eq!(sealed.len(), 12 + 16);
    assert_ne!(&sealed[..12], b"secret bytes");
    let back = tok.decrypt_gcm(&obj, &nonce, b"aad", &sealed).unwrap();
    assert_eq!(back.expose(), b"secret bytes");
    // Every bound input matters.
    for (n, a, s) in [
        ([8u8; 12], &b"aad"[..], sealed.clone()),
        (nonce, &b"aaD"[..], sealed.clone()),
        (nonce, &b"aad"[..], {
            let mut s = sealed.clone();
            s[3] ^= 1;
            s
        }),
        (nonce, &b"aad"[..], sealed[..10].to_vec()),
    ] {
        let e = tok.decrypt_gcm(&obj, &n, a, &s).unwrap_err();
        assert!(matches!(e, HsmError::AuthenticationFailed { .. }), "{e:?}");
    }
    // A second key with another id does not open the first's ciphertext.
    let other = fresh_id();
    tok.generate_aes256(&other, "cryptvol-test", KeyUse::Cmk)
        .unwrap();
    let e = tok
        .decrypt_gcm(&ObjectRef::Id(other), &nonce, b"aad", &sealed)
        .unwrap_err();
    assert!(matches!(e, HsmError::AuthenticationFailed { .. }), "{e:?}");
}

#[test]
fn generated_keys_are_sensitive_and_never_extractable() {
    use cryptoki::object::{Attribute, AttributeType};
    let Some(tok) = connect() else { return };
    let id = fresh_id();
    tok.generate_aes256(&id, "cryptvol-test", KeyUse::Cmk)
        .unwrap();
    let h = tok.handle(&ObjectRef::Id(id.clone())).unwrap();
    let attrs = tok
        .with_session(|s| {
            s.get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::Token,
                    AttributeType::Wrap,
                    AttributeType::Value,
                ],
            )
        })
        .unwrap()
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Token(true)), "{attrs:?}");
    assert!(attrs.contains(&Attribute::Wrap(false)), "{attrs:?}");
    // The value is not readable: the token leaves it out.
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "{attrs:?}"
    );
    // A second key under the same id is refused, not shadowed.
    let e = tok
        .generate_aes256(&id, "cryptvol-test", KeyUse::Cmk)
        .unwrap_err();
    assert!(matches!(e, HsmError::ObjectExists { .. }), "{e:?}");
}

#[test]
fn a_destroyed_key_is_gone_for_every_session_and_a_second_destroy_says_so() {
    let Some(tok) = connect() else { return };
    let id = fresh_id();
    tok.generate_aes256(&id, "cryptvol-test", KeyUse::Cmk)
        .unwrap();
    let obj = ObjectRef::Id(id);
    let sealed = tok.encrypt_gcm(&obj, &[1; 12], b"", b"x").unwrap();
    assert!(tok.destroy(&obj).unwrap());
    assert!(!tok.exists(&obj).unwrap());
    assert!(!tok.destroy(&obj).unwrap());
    let e = tok.decrypt_gcm(&obj, &[1; 12], b"", &sealed).unwrap_err();
    assert!(matches!(e, HsmError::ObjectMissing { .. }), "{e:?}");
    // Another connection (new sessions, no cached handle) does not find it either.
    let again = connect().unwrap();
    assert!(!again.exists(&obj).unwrap());
}

#[test]
fn wrong_pin_missing_token_missing_and_unlisted_modules_are_named_errors() {
    let Some(t) = test_token() else { return };
    let _alone = super::test_token::alone();
    // Wrong PIN first, before any login of this process.
    let e = Token::connect(&t.spec, &"wrong-pin-000".into()).unwrap_err();
    assert!(matches!(e, HsmError::PinIncorrect { .. }), "{e}");
    assert_eq!(e.connection_error_code(), "INVALID_CREDENTIALS");
    assert!(e.to_string().contains(&t.label), "{e}");
    // The right PIN still works after a wrong one.
    let tok = Token::connect(&t.spec, &user_pin()).unwrap();
    // Once logged in, another PIN is refused rather than silently accepted.
    let e = Token::connect(&t.spec, &"another-pin-1".into()).unwrap_err();
    assert!(matches!(e, HsmError::LoggedInWithAnotherPin { .. }), "{e}");
    drop(tok);

    let no_token = TokenSpec {
        module: t.spec.module.clone(),
        token: TokenSelector::Label("no-such-token".into()),
    };
    let e = Token::connect(&no_token, &user_pin()).unwrap_err();
    assert!(matches!(e, HsmError::TokenNotFound { .. }), "{e}");
    assert!(e.to_string().contains("no-such-token"), "{e}");
    assert_eq!(e.connection_error_code(), "INSUFFICIENT_CLOUDHSM_HSMS");

    let missing = TokenSpec {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        token: t.spec.token.clone(),
    };
    let e = Token::connect(&missing, &user_pin()).unwrap_err();
    assert!(matches!(e, HsmError::ModuleMissing(_)), "{e}");
    assert_eq!(e.connection_error_code(), "CLUSTER_NOT_FOUND");

    // A shared library that exists but nobody registered is never loaded.
    let unlisted = TokenSpec {
        module: PathBuf::from("/usr/lib/x86_64-linux-gnu/libz.so.1"),
        token: t.spec.token.clone(),
    };
    if unlisted.module.exists() {
        let e = Token::connect(&unlisted, &user_pin()).unwrap_err();
        assert!(matches!(e, HsmError::ModuleNotAllowed(_)), "{e}");
        assert!(e.to_string().contains("CRYPTVOL_PKCS11_MODULES"), "{e}");
    }
    let relative = TokenSpec {
        module: PathBuf::from("libsofthsm2.so"),
        token: t.spec.token.clone(),
    };
    let e = Token::connect(&relative, &user_pin()).unwrap_err();
    assert!(matches!(e, HsmError::ModuleNotAllowed(_)), "{e}");
}

#[test]
fn the_token_is_found_by_slot_too_and_gives_random_bytes() {
    let Some(t) = test_token() else { return };
    let tok = Token::connect(&t.spec, &user_pin()).unwrap();
    let by_slot = TokenSpec {
        module: t.spec.module.clone(),
        token: TokenSelector::Slot(tok.slot.id()),
    };
    let again = Token::connect(&by_slot, &user_pin()).unwrap();
    let a = again.random(32).unwrap();
    let b = again.random(32).unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a.expose(), b.expose());
}

#[test]
fn concurrent_callers_share_the_session_pool() {
    let Some(tok) = connect() else { return };
    let id = fresh_id();
    tok.generate_aes256(&id, "cryptvol-test", KeyUse::Cmk)
        .unwrap();
    let obj = ObjectRef::Id(id);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let (tok, obj) = (&tok, &obj);
            s.spawn(move || {
                for i in 0..50u8 {
                    let nonce = [t, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                    let msg = [t, i];
                    let sealed = tok.encrypt_gcm(obj, &nonce, &[t], &msg).unwrap();
                    let back = tok.decrypt_gcm(obj, &nonce, &[t], &sealed).unwrap();
                    assert_eq!(back.expose(), &msg);
                }
            });
        }
    });
    assert!(tok.sessions.lock().unwrap().len() <= POOL_MAX);
}

#[test]
fn uris_parse_percent_decode_and_refuse_what_they_cannot_honour() {
    let u = Pkcs11Uri::parse(
        "pkcs11:token=my%20token;object=root-key;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin",
    )
    .unwrap();
    assert_eq!(u.token.as_deref(), Some("my token"));
    assert_eq!(u.object.as_deref(), Some("root-key"));
    assert_eq!(
        u.module_path.as_deref(),
        Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
    );
    assert_eq!(
        u.pin_source.as_deref(),
        Some(std::path::Path::new("/etc/pin"))
    );
    assert_eq!(
        u.token_selector(),
        Some(TokenSelector::Label("my token".into()))
    );
    assert_eq!(u.object_ref(), Some(ObjectRef::Label("root-key".into())));
    let u = Pkcs11Uri::parse("pkcs11:slot-id=3;id=%01%02").unwrap();
    assert_eq!(u.token_selector(), Some(TokenSelector::Slot(3)));
    assert_eq!(u.object_ref(), Some(ObjectRef::Id(vec![1, 2])));
    for bad in [
        "token=x",
        "pkcs11:tokn=x",
        "pkcs11:token=x;token=y",
        "pkcs11:token=x;slot-id=1",
        "pkcs11:slot-id=one",
        "pkcs11:token=%zz",
        "pkcs11:token=x?module-path=relative.so",
        "pkcs11:token=x?mystery=1",
        "pkcs11:token",
    ] {
        let e = Pkcs11Uri::parse(bad).unwrap_err();
        assert!(matches!(e, HsmError::BadUri(..)), "{bad}: {e}");
    }
    // A PIN in the URI never reaches an error message.
    let e = Pkcs11Uri::parse("pkcs11:tokn=x?pin-value=hunter22").unwrap_err();
    assert!(!e.to_string().contains("hunter22"), "{e}");
    let u = Pkcs11Uri::parse("pkcs11:token=x?pin-value=hunter22").unwrap();
    assert!(!format!("{u:?}").contains("hunter22"));
}

#[test]
fn a_token_spec_round_trips_through_its_uri() {
    for spec in [
        TokenSpec {
            module: PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"),
            token: TokenSelector::Label("my token;x=1?&%".into()),
        },
        TokenSpec {
            module: PathBuf::from("/opt/hsm/lib p11.so"),
            token: TokenSelector::Slot(7),
        },
    ] {
        let uri = spec.uri();
        assert!(uri.starts_with("pkcs11:"), "{uri}");
        assert_eq!(TokenSpec::from_uri(&uri).unwrap(), spec, "{uri}");
    }
    for bad in [
        "pkcs11:token=x",
        "pkcs11:object=x?module-path=/m.so",
        "pkcs11:token=x?module-path=/m.so&pin-value=1234567",
    ] {
        assert!(TokenSpec::from_uri(bad).is_err(), "{bad}");
    }
}

#[test]
fn probe_finds_the_token_without_a_pin() {
    let Some(t) = test_token() else { return };
    slots::probe(&t.spec).unwrap();
    let other = TokenSpec {
        module: t.spec.module.clone(),
        token: TokenSelector::Label("absent".into()),
    };
    assert!(matches!(
        slots::probe(&other),
        Err(HsmError::TokenNotFound { .. })
    ));
}

#[test]
fn a_module_is_initialised_afresh_only_when_no_token_of_it_is_in_use() {
    let Some(t) = test_token() else { return };
    let _alone = super::test_token::alone();
    let tok = Token::connect(&t.spec, &user_pin()).unwrap();
    assert!(
        !modules::reload_if_unused(&t.spec.module),
        "finalised a module with a live session"
    );
    // The token still works after the refused reload.
    let id = fresh_id();
    tok.generate_aes256(&id, "cryptvol-test", KeyUse::Cmk)
        .unwrap();
    tok.logout();
    drop(tok);
    assert!(modules::reload_if_unused(&t.spec.module));
    // The next connect initialises it again and logs in again.
    let again = Token::connect(&t.spec, &user_pin()).unwrap();
    assert!(again.exists(&ObjectRef::Id(id)).unwrap());
}
