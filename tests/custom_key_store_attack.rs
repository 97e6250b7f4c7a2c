//! A custom key store's PIN from the command line: given in a file, it is in no output,
//! no error, no audit record and no file of the data dir (the keystore seals it), however
//! the commands around it fail; a PIN slipped into a `pkcs11:` URI is refused and recorded
//! as `***`.
//!
//! Needs SoftHSM2 and test.sh's token: fails without them when `CRYPTVOL_REQUIRE_MOUNT=1`.

mod common;

use common::mount::{file_contains, files_under};
use common::str_field;

use common::hsm::{SHARED_PIN as PIN, SHARED_TOKEN as TOKEN, SOFTHSM_MODULE as MODULE};

#[test]
fn the_store_pin_is_in_no_output_error_audit_record_or_file() {
    if !common::hsm::ready() {
        return;
    }
    let v = common::Env::init();
    v.add_secret(PIN.as_bytes());
    v.add_secret(b"SLIPPED-PIN-77");
    let pin_file = v.file(format!("{PIN}\n").as_bytes());
    let pin_file = pin_file.to_string_lossy();
    let create = v.json(&[
        "kms",
        "create-custom-key-store",
        "--custom-key-store-name",
        "secret",
        "--pkcs11-module",
        MODULE,
        "--token-label",
        TOKEN,
        "--key-store-password-file",
        &pin_file,
    ]);
    let id = str_field(&create, "CustomKeyStoreId");
    let mut outputs = vec![];
    outputs.push(v.ok(&[
        "kms",
        "connect-custom-key-store",
        "--custom-key-store-id",
        &id,
    ]));
    let key = v.json(&[
        "kms",
        "create-key",
        "--origin",
        "AWS_CLOUDHSM",
        "--custom-key-store-id",
        &id,
    ]);
    let key = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    outputs.push(v.ok(&["kms", "describe-custom-key-stores"]));
    outputs.push(v.ok(&["kms", "describe-key", "--key-id", &key]));
    outputs.push(v.ok(&["inspect", "keystore"]));
    // Failures around the store: each checks its stderr for the PINs (add_secret).
    let slipped = format!("pkcs11:token={TOKEN}?module-path={MODULE}&pin-value=SLIPPED-PIN-77");
    let e = v
        .run(&[
            "kms",
            "create-custom-key-store",
            "--custom-key-store-name",
            "slipped",
            "--cloud-hsm-cluster-id",
            &slipped,
            "--key-store-password-file",
            &pin_file,
        ])
        .fails(6);
    assert!(
        e.contains("pin-value=***") || e.contains("holds no PIN"),
        "{e}"
    );
    v.run(&[
        "kms",
        "delete-custom-key-store",
        "--custom-key-store-id",
        &id,
    ])
    .fails(4);
    v.run(&[
        "kms",
        "update-custom-key-store",
        "--custom-key-store-id",
        &id,
        "--key-store-password-file",
        &pin_file,
    ])
    .fails(4);
    outputs.push(v.ok(&["audit", "verify"]));
    for out in &outputs {
        assert!(!out.contains(PIN), "the PIN is in an output: {out}");
    }
    // No file of the data dir holds either PIN in the clear: the keystore is sealed, the
    // audit trail records neither.
    let files = files_under(&v.data);
    assert!(files.iter().any(|f| f.to_string_lossy().contains("audit")));
    for f in files {
        for secret in [PIN.as_bytes(), b"SLIPPED-PIN-77"] {
            assert!(
                !file_contains(&f, secret),
                "{} holds a PIN in the clear",
                f.display()
            );
        }
    }
}
