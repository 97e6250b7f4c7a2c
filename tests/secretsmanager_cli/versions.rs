//! Versions and staging labels: put-secret-value, update-secret-version-stage,
//! list-secret-version-ids, idempotent client request tokens, update-secret.

use std::collections::BTreeMap;

use super::support::*;
use crate::common::*;

#[test]
fn put_secret_value_moves_awscurrent_and_awsprevious() {
    let env = Env::init();
    let v1 = str_field(&create(&env, "s", "value-one", &[]), "VersionId");
    let v2 = put(&env, "s", "value-two", &[]);
    assert_ne!(v1, v2);
    assert_eq!(
        stages(&env, "s"),
        BTreeMap::from([
            (v1.clone(), labels(&["AWSPREVIOUS"])),
            (v2.clone(), labels(&["AWSCURRENT"])),
        ])
    );
    assert_eq!(current_string(&env, "s"), "value-two");
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "AWSPREVIOUS"]),
            "SecretString"
        ),
        "value-one"
    );
    assert_eq!(
        str_field(&get(&env, "s", &["--version-id", &v1]), "SecretString"),
        "value-one"
    );

    let v3 = put(&env, "s", "value-three", &[]);
    // v1 has no label left: deprecated, hidden unless asked for.
    assert_eq!(
        stages(&env, "s"),
        BTreeMap::from([
            (v2.clone(), labels(&["AWSPREVIOUS"])),
            (v3.clone(), labels(&["AWSCURRENT"])),
        ])
    );
    let mut shown = vec![v2.clone(), v3.clone()];
    shown.sort();
    assert_eq!(version_ids(&env, "s", &[]), shown);
    assert_eq!(version_ids(&env, "s", &["--no-include-deprecated"]), shown);
    let mut all = vec![v1.clone(), v2.clone(), v3.clone()];
    all.sort();
    assert_eq!(version_ids(&env, "s", &["--include-deprecated"]), all);
    // A deprecated version is still readable by its id.
    assert_eq!(
        str_field(&get(&env, "s", &["--version-id", &v1]), "SecretString"),
        "value-one"
    );

    // A version put under another label leaves AWSCURRENT where it is.
    let v4 = put(
        &env,
        "s",
        "value-four",
        &["--version-stages", "BLUE", "GREEN"],
    );
    assert_eq!(current_string(&env, "s"), "value-three");
    let mut l = stages(&env, "s")[&v4].clone();
    l.sort();
    assert_eq!(l, labels(&["BLUE", "GREEN"]));
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "GREEN"]),
            "SecretString"
        ),
        "value-four"
    );

    // The versions listing pages like list-secrets.
    let v = env.json(&sm(&[
        "list-secret-version-ids",
        "--secret-id",
        "s",
        "--max-results",
        "1",
    ]));
    assert_eq!(v["Versions"].as_array().unwrap().len(), 1, "{v:#}");
    let t = str_field(&v, "NextToken");
    let v = env.json(&sm(&[
        "list-secret-version-ids",
        "--secret-id",
        "s",
        "--max-results",
        "5",
        "--next-token",
        &t,
    ]));
    assert_eq!(v["Versions"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(v.get("NextToken").is_none(), "{v:#}");
    let v = env.json(&sm(&[
        "list-secret-version-ids",
        "--secret-id",
        "s",
        "--page-size",
        "1",
    ]));
    assert_eq!(v["Versions"].as_array().unwrap().len(), 3, "{v:#}");
    assert_eq!(v["Name"], "s");
}

#[test]
fn update_secret_version_stage_moves_labels() {
    let env = Env::init();
    let v1 = str_field(&create(&env, "s", "value-one", &[]), "VersionId");
    let v2 = put(&env, "s", "value-two", &[]);
    let v3 = put(&env, "s", "value-three", &[]);

    // AWSCURRENT back to v1: the old current becomes AWSPREVIOUS.
    let out = env.json(&sm(&[
        "update-secret-version-stage",
        "--secret-id",
        "s",
        "--version-stage",
        "AWSCURRENT",
        "--move-to-version-id",
        &v1,
        "--remove-from-version-id",
        &v3,
    ]));
    assert_eq!(out["Name"], "s", "{out:#}");
    let st = stages(&env, "s");
    assert_eq!(st[&v1], labels(&["AWSCURRENT"]), "{st:?}");
    assert_eq!(st[&v3], labels(&["AWSPREVIOUS"]), "{st:?}");
    assert!(!st.contains_key(&v2), "v2 lost AWSPREVIOUS: {st:?}");
    assert_eq!(current_string(&env, "s"), "value-one");

    // A label on a version must be removed from it by naming it.
    refused(
        &env,
        &[
            "update-secret-version-stage",
            "--secret-id",
            "s",
            "--version-stage",
            "AWSCURRENT",
            "--move-to-version-id",
            &v2,
        ],
        6,
        "InvalidParameterException",
    );
    refused(
        &env,
        &[
            "update-secret-version-stage",
            "--secret-id",
            "s",
            "--version-stage",
            "AWSCURRENT",
            "--move-to-version-id",
            &v2,
            "--remove-from-version-id",
            &v3,
        ],
        6,
        "InvalidParameterException",
    );

    // A label of one's own: added, moved, removed.
    env.json(&sm(&[
        "update-secret-version-stage",
        "--secret-id",
        "s",
        "--version-stage",
        "MINE",
        "--move-to-version-id",
        &v2,
    ]));
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "MINE"]),
            "SecretString"
        ),
        "value-two"
    );
    env.json(&sm(&[
        "update-secret-version-stage",
        "--secret-id",
        "s",
        "--version-stage",
        "MINE",
        "--remove-from-version-id",
        &v2,
    ]));
    refused(
        &env,
        &[
            "get-secret-value",
            "--secret-id",
            "s",
            "--version-stage",
            "MINE",
        ],
        3,
        "ResourceNotFoundException",
    );
    // An unknown version (AWS documents no exception for it; the core says
    // InvalidParameterException).
    refused(
        &env,
        &[
            "update-secret-version-stage",
            "--secret-id",
            "s",
            "--version-stage",
            "MINE",
            "--move-to-version-id",
            "11111111-1111-1111-1111-111111111111",
        ],
        6,
        "InvalidParameterException",
    );
}

#[test]
fn client_request_tokens_are_idempotent() {
    let env = Env::init();
    let t1 = "11111111-2222-3333-4444-555555555555";
    let c = create(&env, "s", "value-one", &["--client-request-token", t1]);
    assert_eq!(c["VersionId"], t1);

    let t2 = "22222222-2222-3333-4444-555555555555";
    assert_eq!(
        put(&env, "s", "value-two", &["--client-request-token", t2]),
        t2
    );
    let before = stages(&env, "s");
    // The same token and value again: the same version, nothing moves.
    assert_eq!(
        put(&env, "s", "value-two", &["--client-request-token", t2]),
        t2
    );
    assert_eq!(stages(&env, "s"), before);
    assert_eq!(version_ids(&env, "s", &["--include-deprecated"]).len(), 2);
    // The same token with another value: refused, nothing changed.
    refused(
        &env,
        &[
            "put-secret-value",
            "--secret-id",
            "s",
            "--secret-string",
            "value-other",
            "--client-request-token",
            t2,
        ],
        9,
        "ResourceExistsException",
    );
    assert_eq!(current_string(&env, "s"), "value-two");
    // update-secret's token too.
    let t3 = "33333333-2222-3333-4444-555555555555";
    let u = env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "s",
        "--secret-string",
        "value-three",
        "--client-request-token",
        t3,
    ]));
    assert_eq!(u["VersionId"], t3);
    assert_eq!(current_string(&env, "s"), "value-three");
    // A token of the wrong length.
    refused(
        &env,
        &[
            "put-secret-value",
            "--secret-id",
            "s",
            "--secret-string",
            "v",
            "--client-request-token",
            "short",
        ],
        6,
        "InvalidParameterException",
    );
}

#[test]
fn update_secret_changes_description_key_and_value() {
    let env = Env::init();
    let key = env.create_key();
    let v1 = str_field(&create(&env, "s", "value-one", &[]), "VersionId");
    let u = env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "s",
        "--description",
        "new text",
    ]));
    assert!(u.get("VersionId").is_none(), "no value, no version: {u:#}");
    assert_eq!(describe(&env, "s")["Description"], "new text");
    assert_eq!(stages(&env, "s").len(), 1);

    let u = env.json(&sm(&[
        "update-secret",
        "--secret-id",
        "s",
        "--kms-key-id",
        &key,
        "--secret-string",
        "value-two",
    ]));
    let v2 = str_field(&u, "VersionId");
    let d = describe(&env, "s");
    assert!(
        d["KmsKeyId"].as_str().unwrap_or_default().contains(&key),
        "{d:#}"
    );
    assert_eq!(current_string(&env, "s"), "value-two");
    assert_eq!(stages(&env, "s")[&v1], labels(&["AWSPREVIOUS"]));
    assert_eq!(stages(&env, "s")[&v2], labels(&["AWSCURRENT"]));
    // The old version, under the old key, still reads.
    assert_eq!(
        str_field(
            &get(&env, "s", &["--version-stage", "AWSPREVIOUS"]),
            "SecretString"
        ),
        "value-one"
    );
}
