//! Custom key stores (AWS_CLOUDHSM over PKCS#11) through the real AWS clients: boto3 and
//! the AWS CLI (`tests/compat/custom_key_stores_suite.py`) against `cryptvol kms serve`,
//! with the shared SoftHSM2 test token as the "cluster" (its `pkcs11:` URI is the
//! `CloudHsmClusterId`, its user PIN the `KeyStorePassword`). Then the audit trail must
//! hold every store operation, refusals with their error codes, and the password nowhere:
//! not in the trail, the server's log or any file of the data dir.
//!
//! Without the venv or SoftHSM2 the test skips, unless CI=true or CRYPTVOL_REQUIRE_MOUNT=1
//! makes that a failure.

mod common;

use common::compat::*;
use common::server::KmsServer as Server;
use common::*;
use serde_json::Value;

use common::hsm::SHARED_PIN as USER_PIN;

/// A PIN of valid length (7..32) that is not the token's.
const WRONG_PIN: &str = "wrong-pin-0";

/// The events named `name` among `events`.
fn named<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["eventName"] == name).collect()
}

/// Whether one of `events` is refused with `code`.
fn refused(events: &[&Value], code: &str) -> bool {
    events.iter().any(|e| e["errorCode"] == code)
}

#[test]
fn boto3_and_the_aws_cli_drive_custom_key_stores_on_a_pkcs11_token() {
    let Some((python, aws)) = compat_tools() else {
        return;
    };
    let Some(uri) = common::hsm::shared_token_uri() else {
        return;
    };
    let s = setup();
    for pin in [USER_PIN, WRONG_PIN] {
        s.env.add_secret(pin.as_bytes());
    }
    let server = Server::start(&s.env);
    let scratch = s.env.path("cks");
    std::fs::create_dir(&scratch).unwrap();
    let summary = run_suite(
        &python,
        "custom_key_stores_suite.py",
        &server,
        &s,
        &[
            ("CV_AWS", aws.to_str().unwrap()),
            ("CV_SCRATCH", scratch.to_str().unwrap()),
            ("CV_HSM_URI", uri.as_str()),
            ("CV_HSM_PIN", USER_PIN),
            ("CV_WRONG_PIN", WRONG_PIN),
        ],
    );
    let log = server.stderr();
    server.stop();
    for pin in [USER_PIN, WRONG_PIN] {
        assert_no_secret("kms serve's stderr", log.as_bytes(), pin.as_bytes());
    }
    let store = str_field(&summary, "store_id");
    let key = str_field(&summary, "key_id");
    let cli_store = str_field(&summary, "cli_store_id");

    // boto3's region: every store operation by alice's access key, refusals included.
    let events = events_of(&s.env, DEFAULT_REGION, "alice");
    assert_trail(&events, "alice", &s.alice);
    let creates = named(&events, "CreateCustomKeyStore");
    assert!(
        creates.iter().any(|e| e.get("errorCode").is_none()
            && e["requestParameters"]["customKeyStoreName"] == "boto3-store"
            && e["requestParameters"]["cloudHsmClusterId"] == uri.as_str()
            && e["responseElements"]["customKeyStoreId"] == store.as_str()),
        "no CreateCustomKeyStore of {store}: {creates:#?}"
    );
    assert!(refused(&creates, "CustomKeyStoreNameInUseException"));
    assert!(refused(&creates, "CloudHsmClusterInUseException"));
    assert!(refused(&creates, "CloudHsmClusterNotFoundException"));
    let updates = named(&events, "UpdateCustomKeyStore");
    assert!(
        updates
            .iter()
            .any(|e| e["requestParameters"]["newCustomKeyStoreName"] == "boto3-renamed"),
        "{updates:#?}"
    );
    assert!(refused(&updates, "CustomKeyStoreInvalidStateException"));
    assert!(refused(&updates, "CustomKeyStoreNotFoundException"));
    let deletes = named(&events, "DeleteCustomKeyStore");
    for code in [
        "CustomKeyStoreHasCMKsException",
        "CustomKeyStoreInvalidStateException",
        "CustomKeyStoreNotFoundException",
    ] {
        assert!(
            refused(&deletes, code),
            "no DeleteCustomKeyStore refused with {code}"
        );
    }
    assert!(
        deletes.iter().any(|e| e.get("errorCode").is_none()),
        "the store without keys was not deleted: {deletes:#?}"
    );
    for op in [
        "ConnectCustomKeyStore",
        "DisconnectCustomKeyStore",
        "DescribeCustomKeyStores",
    ] {
        let of_store = named(&events, op)
            .into_iter()
            .filter(|e| {
                e.get("errorCode").is_none()
                    && e["requestParameters"]["customKeyStoreId"] == store.as_str()
            })
            .count();
        assert!(of_store > 0, "no {op} of {store}");
    }
    assert!(
        named(&events, "CreateKey")
            .iter()
            .any(|e| e.to_string().contains(&key) && e.to_string().contains(&store)),
        "no CreateKey of {key} naming {store}"
    );
    assert!(
        named(&events, "GenerateRandom")
            .iter()
            .any(|e| e.get("errorCode").is_none()
                && e["requestParameters"]["customKeyStoreId"] == store.as_str()),
        "no GenerateRandom from {store}"
    );
    assert!(
        refused(&named(&events, "Decrypt"), "KMSInvalidStateException"),
        "no Decrypt refused while the store was disconnected"
    );

    // The AWS CLI's region: its store, with the CLI's User-Agent.
    let other = events_of(&s.env, OTHER_REGION, "alice");
    assert_trail(&other, "alice", &s.alice);
    assert!(
        named(&other, "CreateCustomKeyStore").iter().any(
            |e| e["responseElements"]["customKeyStoreId"] == cli_store.as_str()
                && e["userAgent"]
                    .as_str()
                    .is_some_and(|a| a.contains("aws-cli/"))
        ),
        "no CreateCustomKeyStore of {cli_store} by the AWS CLI"
    );

    // The password is nowhere: not in either region's trail, not in any file of the data
    // dir (the keystore keeps it sealed).
    for region in [DEFAULT_REGION, OTHER_REGION] {
        let trail = s.env.ok(&["--region", region, "audit", "lookup"]);
        assert!(
            trail.contains("CreateCustomKeyStore"),
            "{region}: no store events"
        );
        for pin in [USER_PIN, WRONG_PIN] {
            assert_no_secret("the audit trail", trail.as_bytes(), pin.as_bytes());
        }
    }
    let mut files = vec![s.env.data.clone()];
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            for pin in [USER_PIN, WRONG_PIN] {
                assert_no_secret(&p.display().to_string(), &bytes, pin.as_bytes());
            }
        }
    }
}
