//! What the embedded KMS's unit tests share: a fresh key-file region, opening it with a
//! clock, its account root as caller, and (for custom key stores) a key made in a store
//! and the token as another process sees it.

use super::*;
use crate::hsm::Token;
use crate::hsm::test_token::{TestToken, USER_PIN};
use crate::kms::ids::KeyRef;

/// A data dir with region test-1 (key-file root).
pub fn setup() -> (tempfile::TempDir, Region) {
    let d = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(d.path(), &r, None, 0).unwrap();
    (d, r)
}

pub fn open(d: &tempfile::TempDir, r: &Region, clock: Clock) -> EmbeddedKms {
    let mut no = || -> Result<SecretBytes> { panic!("key-file region asks no passphrase") };
    EmbeddedKms::open_region(d.path(), r, &mut no, clock).unwrap()
}

/// The account root, calling from this machine.
pub fn root(kms: &EmbeddedKms) -> Caller {
    Caller::local(crate::iam::Identity::root(kms.account().clone()))
}

/// CreateKey with Origin AWS_CLOUDHSM in `store`.
pub fn hsm_key(kms: &EmbeddedKms, store: &str) -> Result<KeyRef> {
    let meta = kms.create_key(
        &root(kms),
        &CreateKeyRequest {
            origin: Some("AWS_CLOUDHSM".into()),
            custom_key_store_id: Some(store.into()),
            ..Default::default()
        },
    )?;
    Ok(KeyRef::parse(&meta.key_id).unwrap())
}

/// The test token as another process would see it.
pub fn token(t: &TestToken) -> Token {
    Token::connect(&t.spec, &USER_PIN.into()).unwrap()
}

/// A store named `name` on the test token, created (not connected) with PIN `pin`.
pub fn store_with_pin(kms: &EmbeddedKms, t: &TestToken, name: &str, pin: &str) -> String {
    kms.create_custom_key_store(
        &root(kms),
        &CreateCustomKeyStoreRequest {
            name: name.into(),
            cluster: Some(t.spec.uri()),
            password: Some(StorePassword::new(pin.into())),
            ..Default::default()
        },
    )
    .unwrap()
}

/// What AWS asks of a FAILED store with a wrong PIN: disconnect it, give it the right PIN,
/// connect it again.
pub fn fix_pin(kms: &EmbeddedKms, store: &str) {
    let c = root(kms);
    kms.disconnect_custom_key_store(&c, store).unwrap();
    kms.update_custom_key_store(
        &c,
        &UpdateCustomKeyStoreRequest {
            id: store.to_string(),
            password: Some(StorePassword::new(USER_PIN.into())),
            ..Default::default()
        },
    )
    .unwrap();
    kms.connect_custom_key_store(&c, store).unwrap();
}
