//! `cryptvol kms create-grant | list-grants | list-retirable-grants | retire-grant |
//! revoke-grant`, and what a grant lets its grantee do, through the real binary.
//!
//! Proves: a user the key policy gives nothing decrypts through a grant (and only under
//! its constraint); retiring or revoking the grant stops it; an explicit Deny beats it;
//! grant tokens are checked; every grant call is in the audit trail, and a call a grant
//! allowed names the grant; bad input gets the right AWS error and exit code, changing
//! nothing.

mod common;

use common::{Env, as_, str_field, unb64};
use serde_json::{Value, json};

/// `kms decrypt` of `blob` as `who`; the raw Out.
fn decrypt_as(env: &Env, who: &str, blob: &[u8], ctx: &str, extra: &[&str]) -> common::Out {
    let b = env.fileb(blob);
    let mut args = as_(
        who,
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &b,
            "--encryption-context",
            ctx,
        ],
    );
    args.extend_from_slice(extra);
    env.run(&args)
}

/// A key, a user bob with no policy at all, and a blob under context `lineage=vol-1`.
fn setup() -> (Env, String, String, Vec<u8>) {
    let env = Env::init();
    let key = env.create_key();
    let bob = env.create_user("bob");
    let blob = env.encrypt(&key, b"grant me", Some("lineage=vol-1,team=a"));
    (env, key, bob, blob)
}

fn events(env: &Env, name: &str) -> Vec<Value> {
    env.lookup(&["--event-name", name])
}

#[test]
fn a_user_without_key_policy_access_decrypts_through_a_grant_until_it_is_retired() {
    let (env, key, bob, blob) = setup();
    let ctx = "lineage=vol-1,team=a";
    let line = decrypt_as(&env, "bob", &blob, ctx, &[]).fails(18);
    assert!(line.contains("AccessDeniedException"), "{line}");

    let g = env.json(&[
        "kms",
        "create-grant",
        "--key-id",
        &key,
        "--grantee-principal",
        &bob,
        "--operations",
        "Decrypt",
        "RetireGrant",
        "--constraints",
        "EncryptionContextSubset={lineage=vol-1}",
        "--retiring-principal",
        &bob,
        "--name",
        "bob-reads-vol-1",
    ]);
    let grant_id = str_field(&g, "GrantId");
    let token = str_field(&g, "GrantToken");
    assert_eq!(grant_id.len(), 64, "{g}");
    assert!(grant_id.bytes().all(|b| b.is_ascii_hexdigit()), "{g}");

    let out = decrypt_as(&env, "bob", &blob, ctx, &["--grant-tokens", &token])
        .ok()
        .json();
    assert_eq!(unb64(&str_field(&out, "Plaintext")), b"grant me");
    // Without the token as well (grants take effect at once here).
    decrypt_as(&env, "bob", &blob, ctx, &[]).ok();
    // The constraint: another volume's context is refused.
    let other = env.encrypt(&key, b"x", Some("lineage=vol-2"));
    decrypt_as(&env, "bob", &other, "lineage=vol-2", &[]).fails(18);
    // The grant is for Decrypt only.
    let pt = env.fileb(b"x");
    env.fail(
        &as_(
            "bob",
            &[
                "kms",
                "encrypt",
                "--key-id",
                &key,
                "--plaintext",
                &pt,
                "--encryption-context",
                "lineage=vol-1",
            ],
        ),
        18,
    );

    // Listing: by key, by grant id, by grantee; and as retirable by bob.
    let acct = env.account();
    let all = env.json(&["kms", "list-grants", "--key-id", &key]);
    let gs = all["Grants"].as_array().unwrap();
    assert_eq!(gs.len(), 1, "{all}");
    let e = &gs[0];
    assert_eq!(e["GrantId"], grant_id.as_str());
    assert_eq!(e["GranteePrincipal"], bob.as_str());
    assert_eq!(e["RetiringPrincipal"], bob.as_str());
    assert_eq!(e["IssuingAccount"], format!("arn:aws:iam::{acct}:root"));
    assert_eq!(e["Operations"], json!(["Decrypt", "RetireGrant"]));
    assert_eq!(
        e["Constraints"],
        json!({"EncryptionContextSubset": {"lineage": "vol-1"}})
    );
    assert_eq!(e["Name"], "bob-reads-vol-1");
    assert!(str_field(e, "KeyId").ends_with(&key), "{e}");
    assert!(str_field(e, "CreationDate").ends_with('Z'), "{e}");
    assert_eq!(all["Truncated"], false);
    let one = env.json(&[
        "kms",
        "list-grants",
        "--key-id",
        &key,
        "--grant-id",
        &grant_id,
    ]);
    assert_eq!(one["Grants"].as_array().unwrap().len(), 1);
    let none = env.json(&[
        "kms",
        "list-grants",
        "--key-id",
        &key,
        "--grantee-principal",
        &format!("arn:aws:iam::{acct}:root"),
    ]);
    assert_eq!(none["Grants"].as_array().unwrap().len(), 0);
    let r = env.json(&["kms", "list-retirable-grants", "--retiring-principal", &bob]);
    assert_eq!(r["Grants"][0]["GrantId"], grant_id.as_str());

    // bob retires it with its token; then nothing.
    env.ok(&as_(
        "bob",
        &["kms", "retire-grant", "--grant-token", &token],
    ));
    decrypt_as(&env, "bob", &blob, ctx, &[]).fails(18);
    assert_eq!(
        env.json(&["kms", "list-grants", "--key-id", &key])["Grants"],
        json!([])
    );

    // The trail: every grant call, and the Decrypt the grant allowed names it.
    let created = events(&env, "CreateGrant");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["responseElements"]["grantId"], grant_id.as_str());
    assert_eq!(
        created[0]["requestParameters"]["granteePrincipal"],
        bob.as_str()
    );
    assert_eq!(
        created[0]["requestParameters"]["operations"],
        json!(["Decrypt", "RetireGrant"])
    );
    assert_eq!(
        created[0]["requestParameters"]["constraints"],
        json!({"encryptionContextSubset": {"lineage": "vol-1"}})
    );
    for name in ["ListGrants", "ListRetirableGrants", "RetireGrant"] {
        assert!(!events(&env, name).is_empty(), "no {name} event");
    }
    let retired = &events(&env, "RetireGrant")[0];
    assert_eq!(retired["requestParameters"]["grantId"], grant_id.as_str());
    assert!(
        !retired.to_string().contains(&token),
        "the token is in the trail"
    );
    let decrypts = events(&env, "Decrypt");
    assert!(
        decrypts
            .iter()
            .any(|e| e["userIdentity"]["userName"] == "bob"
                && e["additionalEventData"]["grantId"] == grant_id.as_str()),
        "{decrypts:#?}"
    );
}

#[test]
fn revoke_grant_needs_permission_and_stops_the_grant() {
    let (env, key, bob, blob) = setup();
    let ctx = "lineage=vol-1,team=a";
    let g = env.json(&[
        "kms",
        "create-grant",
        "--key-id",
        &key,
        "--grantee-principal",
        &bob,
        "--operations",
        "Decrypt,DescribeKey",
    ]);
    let id = str_field(&g, "GrantId");
    decrypt_as(&env, "bob", &blob, ctx, &[]).ok();
    env.json(&as_("bob", &["kms", "describe-key", "--key-id", &key]));
    // bob may not revoke (kms:RevokeGrant is the key policy's to give) nor retire it.
    env.fail(
        &as_(
            "bob",
            &["kms", "revoke-grant", "--key-id", &key, "--grant-id", &id],
        ),
        18,
    );
    env.fail(
        &as_(
            "bob",
            &["kms", "retire-grant", "--key-id", &key, "--grant-id", &id],
        ),
        18,
    );
    env.ok(&["kms", "revoke-grant", "--key-id", &key, "--grant-id", &id]);
    decrypt_as(&env, "bob", &blob, ctx, &[]).fails(18);
    let line = env.fail(
        &["kms", "revoke-grant", "--key-id", &key, "--grant-id", &id],
        3,
    );
    assert!(line.contains("NotFoundException"), "{line}");
    let ev = events(&env, "RevokeGrant");
    assert!(
        ev.iter()
            .any(|e| e["requestParameters"]["grantId"] == id.as_str()
                && e.get("errorCode").is_none())
    );
}

#[test]
fn an_explicit_deny_beats_a_grant() {
    let (env, key, bob, blob) = setup();
    let ctx = "lineage=vol-1,team=a";
    env.json(&[
        "kms",
        "create-grant",
        "--key-id",
        &key,
        "--grantee-principal",
        &bob,
        "--operations",
        "Decrypt",
    ]);
    decrypt_as(&env, "bob", &blob, ctx, &[]).ok();
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]});
    let f = format!("file://{}", env.file(deny.to_string().as_bytes()).display());
    env.ok(&[
        "iam",
        "put-user-policy",
        "--user-name",
        "bob",
        "--policy-name",
        "no",
        "--policy-document",
        &f,
    ]);
    let line = decrypt_as(&env, "bob", &blob, ctx, &[]).fails(18);
    assert!(line.contains("explicit deny"), "{line}");
}

#[test]
fn bad_grant_input_is_refused_with_the_aws_error() {
    let (env, key, bob, _) = setup();
    let acct = env.account();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "--grantee-principal".into(),
                "bob".into(),
                "--operations".into(),
                "Decrypt".into(),
            ],
            6,
            "ValidationException",
        ),
        (
            vec![
                "--grantee-principal".into(),
                bob.clone(),
                "--operations".into(),
                "Sign".into(),
            ],
            6,
            "ValidationException",
        ),
        (
            vec![
                "--grantee-principal".into(),
                bob.clone(),
                "--operations".into(),
                "Decrypt".into(),
                "--name".into(),
                "has space".into(),
            ],
            6,
            "ValidationException",
        ),
        (
            vec![
                "--grantee-principal".into(),
                bob.clone(),
                "--operations".into(),
                "DescribeKey".into(),
                "--constraints".into(),
                "EncryptionContextSubset={a=1}".into(),
            ],
            6,
            "ValidationException",
        ),
        (
            vec![
                "--grantee-principal".into(),
                format!("arn:aws:iam::{acct}:user/nobody"),
                "--operations".into(),
                "Decrypt".into(),
            ],
            6,
            "ValidationException",
        ),
        (
            vec![
                "--grantee-principal".into(),
                bob.clone(),
                "--operations".into(),
                "Decrypt".into(),
                "--grant-tokens".into(),
                "not-a-token".into(),
            ],
            6,
            "InvalidGrantTokenException",
        ),
    ];
    for (extra, code, name) in cases {
        let mut args = vec!["kms", "create-grant", "--key-id", &key];
        args.extend(extra.iter().map(String::as_str));
        let line = env.fail(&args, code);
        assert!(line.contains(name), "{args:?}: {line}");
    }
    let line = env.fail(
        &[
            "kms",
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            &bob,
            "--operations",
            "Decrypt",
            "--constraints",
            "Subset={a=1}",
        ],
        6,
    );
    assert!(line.contains("--constraints"), "{line}");
    let line = env.fail(&["kms", "retire-grant", "--grant-token", "AAAA"], 6);
    assert!(line.contains("InvalidGrantTokenException"), "{line}");
    let line = env.fail(
        &["kms", "revoke-grant", "--key-id", &key, "--grant-id", "xyz"],
        6,
    );
    assert!(line.contains("InvalidGrantIdException"), "{line}");
    let line = env.fail(
        &["kms", "list-grants", "--key-id", &key, "--grant-id", "xyz"],
        6,
    );
    assert!(line.contains("InvalidGrantIdException"), "{line}");
    let line = env.fail(&["kms", "list-grants", "--key-id", &key, "--limit", "0"], 6);
    assert!(line.contains("ValidationException"), "{line}");
    let missing = "1234abcd-12ab-34cd-56ef-1234567890ab";
    let line = env.fail(
        &[
            "kms",
            "create-grant",
            "--key-id",
            missing,
            "--grantee-principal",
            &bob,
            "--operations",
            "Decrypt",
        ],
        3,
    );
    assert!(line.contains("NotFoundException"), "{line}");
    env.run(&["kms", "retire-grant"]).usage_error();
    // A disabled key takes no new grant.
    env.ok(&["kms", "disable-key", "--key-id", &key]);
    let line = env.fail(
        &[
            "kms",
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            &bob,
            "--operations",
            "Decrypt",
        ],
        4,
    );
    assert!(line.contains("DisabledException"), "{line}");
}

#[test]
fn list_grants_pages_with_markers() {
    let (env, key, bob, _) = setup();
    let mut made = vec![];
    for _ in 0..3 {
        let g = env.json(&[
            "kms",
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            &bob,
            "--operations",
            "Decrypt",
        ]);
        made.push(str_field(&g, "GrantId"));
    }
    let first = env.json(&["kms", "list-grants", "--key-id", &key, "--limit", "2"]);
    assert_eq!(first["Truncated"], true);
    assert_eq!(first["Grants"].as_array().unwrap().len(), 2);
    let marker = str_field(&first, "NextMarker");
    let second = env.json(&[
        "kms",
        "list-grants",
        "--key-id",
        &key,
        "--limit",
        "2",
        "--marker",
        &marker,
    ]);
    assert_eq!(second["Truncated"], false);
    assert!(second.get("NextMarker").is_none(), "{second}");
    let mut seen: Vec<String> = first["Grants"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["Grants"].as_array().unwrap())
        .map(|g| str_field(g, "GrantId"))
        .collect();
    seen.sort();
    made.sort();
    assert_eq!(seen, made);
}

/// `--dry-run` on create-grant, retire-grant and revoke-grant: every check, then
/// DryRunOperationException (exit 22) and no change; a failing check answers its own
/// error; the dry runs are in the trail with their error code.
#[test]
fn grant_dry_runs_check_everything_and_change_nothing() {
    let (env, key, bob, _) = setup();
    let grants = |env: &Env| {
        env.json(&["kms", "list-grants", "--key-id", &key])["Grants"]
            .as_array()
            .expect("Grants")
            .len()
    };
    let create = |extra: &[&str]| {
        let mut args = vec![
            "kms",
            "create-grant",
            "--key-id",
            &key,
            "--grantee-principal",
            &bob,
            "--operations",
            "Decrypt",
        ];
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let argv = create(&["--dry-run"]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let line = env.fail(&argv, 22);
    assert!(line.contains("DryRunOperationException"), "{line}");
    assert_eq!(grants(&env), 0, "a dry run made a grant");
    // bob may not create grants: the dry run answers the denial, not DryRun.
    let mut as_bob = vec!["--profile", "bob"];
    as_bob.extend_from_slice(&argv);
    env.fail(&as_bob, 18);

    let argv = create(&[]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let id = str_field(&env.json(&argv), "GrantId");
    for op in ["revoke-grant", "retire-grant"] {
        let line = env.fail(
            &["kms", op, "--key-id", &key, "--grant-id", &id, "--dry-run"],
            22,
        );
        assert!(line.contains("DryRunOperationException"), "{op}: {line}");
        assert_eq!(grants(&env), 1, "{op} --dry-run removed the grant");
    }
    // A grant that does not exist: NotFound even under --dry-run.
    let missing = "0".repeat(64);
    env.fail(
        &[
            "kms",
            "revoke-grant",
            "--key-id",
            &key,
            "--grant-id",
            &missing,
            "--dry-run",
        ],
        3,
    );
    let dry: Vec<Value> = ["CreateGrant", "RevokeGrant", "RetireGrant"]
        .iter()
        .flat_map(|n| events(&env, n))
        .filter(|e| e["errorCode"] == "DryRunOperationException")
        .collect();
    assert_eq!(dry.len(), 3, "{dry:#?}");
    assert!(dry.iter().all(|e| e["requestParameters"]["dryRun"] == true));
}
