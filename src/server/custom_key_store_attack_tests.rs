//! Hostile custom key store requests over the KMS protocol: a PIN of the wrong JSON type
//! is refused without being echoed.

use serde_json::json;

use super::custom_key_stores::call;
use super::dispatch::Failure;
use crate::aws::ids::Region;
use crate::iam::caller::Caller;
use crate::kms::EmbeddedKms;
use crate::sys::clock::Clock;

#[test]
fn a_pin_of_the_wrong_json_type_is_refused_without_being_echoed() {
    let d = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(d.path(), &r, None, 0).unwrap();
    let mut no = || -> crate::aws::error::Result<crate::crypto::SecretBytes> { unreachable!() };
    let kms = EmbeddedKms::open_region(d.path(), &r, &mut no, Clock::System).unwrap();
    let c = Caller::local(crate::iam::Identity::root(kms.account().clone()));
    for (op, body) in [
        (
            "CreateCustomKeyStore",
            json!({"CustomKeyStoreName": "n", "CloudHsmClusterId": "pkcs11:token=t?module-path=/m.so",
                   "KeyStorePassword": 987654321012_u64}),
        ),
        (
            "CreateCustomKeyStore",
            json!({"CustomKeyStoreName": "n", "KeyStorePassword": [987654321012_u64]}),
        ),
        (
            "UpdateCustomKeyStore",
            json!({"CustomKeyStoreId": "cks-1", "KeyStorePassword": 987654321012_u64}),
        ),
        (
            "UpdateCustomKeyStore",
            json!({"CustomKeyStoreId": "cks-1", "KeyStorePassword": {"pin": 987654321012_u64}}),
        ),
    ] {
        let message = match call(&kms, &c, op, &body) {
            Ok(v) => panic!("{op} accepted {v}"),
            Err(Failure::Input { code, message }) => {
                assert_eq!(code, "SerializationException");
                message
            }
            Err(Failure::Kms(e)) => e.to_string(),
        };
        assert!(
            !message.contains("987654321012"),
            "{op}: the PIN is in the error: {message}"
        );
        assert!(message.contains("KeyStorePassword"), "{message}");
    }
    // A string PIN still parses (and the store is refused for its module, not its PIN).
    let ok = call(
        &kms,
        &c,
        "CreateCustomKeyStore",
        &json!({"CustomKeyStoreName": "n", "CloudHsmClusterId": "pkcs11:token=t?module-path=/m.so",
                "KeyStorePassword": "987654321012"}),
    );
    match ok {
        Err(Failure::Kms(e)) => assert!(!e.to_string().contains("987654321012"), "{e}"),
        _ => panic!("a string PIN did not parse"),
    }
}
