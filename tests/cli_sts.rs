//! `cryptvol sts ...` and temporary credentials at `kms serve`: the decision table of
//! AssumeRole (trust policy × identity policy), credentials issued by the CLI and by the
//! server's STS used for KMS calls over real HTTP (signed with the crate's SigV4 signer),
//! key policies naming a role, expiry (the clock moved with CRYPTVOL_TEST_CLOCK_SKEW_SECS
//! when issuing, rather than waiting), revocation by deleting or disabling what a session
//! descends from, the audit trail's AssumedRole identity, and bad input (one error line,
//! an exit code, nothing written); `cli_sts/through_cli.rs`: cryptvol's own `--kms-endpoint`
//! client with temporary credentials.

mod common;

#[path = "cli_sts/support.rs"]
mod support;
#[path = "cli_sts/through_cli.rs"]
mod through_cli;

use common::server::KmsServer as Server;
use common::*;
use serde_json::{Value, json};
use support::*;

const ACCESS_DENIED: i32 = 18;
const NOT_FOUND: i32 = 3;
const INVALID_VALUE: i32 = 6;

// ---- tests ---------------------------------------------------------------------------

/// AssumeRole as AWS decides it: an explicit deny anywhere refuses; a trust policy naming
/// the caller is enough; one naming the account needs the caller's identity policy too.
#[test]
fn assume_role_follows_the_trust_and_identity_policy_decision_table() {
    let env = Env::init();
    let account = env.account();
    env.create_user("alice");
    let alice_arn = format!("arn:aws:iam::{account}:user/alice");
    let root = format!("arn:aws:iam::{account}:root");
    let deny_alice = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": root}, "Action": "sts:AssumeRole"},
        {"Effect": "Deny", "Principal": {"AWS": alice_arn}, "Action": "sts:AssumeRole"}]});
    // (role, its trust policy, alice's identity policy allows it, alice may assume it)
    let table: Vec<(&str, Option<Value>, bool, bool)> = vec![
        ("names-alice", Some(trust(&alice_arn)), false, true),
        ("names-account", Some(trust(&root)), false, false),
        ("names-account-iam", Some(trust(&root)), true, true),
        (
            "names-bob",
            Some(trust(&format!("arn:aws:iam::{account}:user/bob"))),
            true,
            false,
        ),
        ("denies-alice", Some(deny_alice), true, false),
        ("no-trust-policy", None, true, false),
    ];
    let mut allowed_arns = vec![];
    for (role, t, _, _) in &table {
        let arn = create_role(&env, role, t.as_ref());
        if table.iter().any(|(r, _, iam, _)| r == role && *iam) {
            allowed_arns.push(arn);
        }
    }
    let resources: Vec<&str> = allowed_arns.iter().map(String::as_str).collect();
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": resources}]});
    put_policy(&env, "user", "alice", &policy);
    for (role, _, _, allowed) in &table {
        let arn = format!("arn:aws:iam::{account}:role/{role}");
        let args = [
            "sts",
            "assume-role",
            "--role-arn",
            &arn,
            "--role-session-name",
            "t1",
        ];
        if *allowed {
            let v = env.json(&as_("alice", &args));
            let c = &v["Credentials"];
            assert!(str_field(c, "AccessKeyId").starts_with("ASIA"), "{v}");
            assert_eq!(str_field(c, "SecretAccessKey").len(), 40, "{v}");
            assert_eq!(
                v["AssumedRoleUser"]["Arn"],
                format!("arn:aws:sts::{account}:assumed-role/{role}/t1"),
                "{v}"
            );
        } else {
            let line = env.fail(&as_("alice", &args), ACCESS_DENIED);
            assert!(
                line.contains("sts:AssumeRole") && line.contains(&arn),
                "{line}"
            );
        }
    }
    // An identity policy's explicit deny wins over a trust policy naming the caller.
    let deny = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Action": "sts:AssumeRole", "Resource": "*"}]});
    put_policy(&env, "user", "alice", &deny);
    let arn = format!("arn:aws:iam::{account}:role/names-alice");
    env.fail(
        &as_(
            "alice",
            &[
                "sts",
                "assume-role",
                "--role-arn",
                &arn,
                "--role-session-name",
                "t1",
            ],
        ),
        ACCESS_DENIED,
    );
    // The root may not assume roles, as in AWS.
    let line = env.fail(
        &[
            "sts",
            "assume-role",
            "--role-arn",
            &arn,
            "--role-session-name",
            "t1",
        ],
        ACCESS_DENIED,
    );
    assert!(line.contains("root"), "{line}");
}

#[test]
fn bad_input_is_one_error_line_an_exit_code_and_nothing_written() {
    let env = Env::init();
    let account = env.account();
    env.create_user("alice");
    let arn = create_role(
        &env,
        "r",
        Some(&trust(&format!("arn:aws:iam::{account}:user/alice"))),
    );
    let nope = format!("arn:aws:iam::{account}:role/nope");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--role-arn", &nope, "--role-session-name", "s1"],
            NOT_FOUND,
            "role nope",
        ),
        (
            vec![
                "--role-arn",
                "arn:aws:iam::123:user/x",
                "--role-session-name",
                "s1",
            ],
            INVALID_VALUE,
            "not a valid ARN",
        ),
        (
            vec!["--role-arn", "role/r", "--role-session-name", "s1"],
            INVALID_VALUE,
            "not a valid ARN",
        ),
        (
            vec!["--role-arn", &arn, "--role-session-name", "bad name"],
            INVALID_VALUE,
            "role-session-name",
        ),
        (
            vec!["--role-arn", &arn, "--role-session-name", "x"],
            INVALID_VALUE,
            "role-session-name",
        ),
        (
            vec!["--role-arn", &arn, "--role-session-name", "s/1"],
            INVALID_VALUE,
            "role-session-name",
        ),
        (
            vec![
                "--role-arn",
                &arn,
                "--role-session-name",
                "s1",
                "--duration-seconds",
                "899",
            ],
            INVALID_VALUE,
            "900 to 43200",
        ),
        (
            vec![
                "--role-arn",
                &arn,
                "--role-session-name",
                "s1",
                "--duration-seconds",
                "43201",
            ],
            INVALID_VALUE,
            "900 to 43200",
        ),
        (
            vec![
                "--role-arn",
                &arn,
                "--role-session-name",
                "s1",
                "--duration-seconds",
                "1h",
            ],
            INVALID_VALUE,
            "--duration-seconds",
        ),
    ];
    for (args, code, says) in &cases {
        let mut full = vec!["sts", "assume-role"];
        full.extend(args.iter().copied());
        let line = env.fail(&as_("alice", &full), *code);
        assert!(line.contains(says), "{full:?}: {line}");
    }
    for (d, code) in [
        ("899", INVALID_VALUE),
        ("129601", INVALID_VALUE),
        ("x", INVALID_VALUE),
    ] {
        let args = ["sts", "get-session-token", "--duration-seconds", d];
        env.fail(&as_("alice", &args), code);
    }
    // GetSessionToken is for users: refused for a role and for the root.
    env.fail(&as_("role/r", &["sts", "get-session-token"]), ACCESS_DENIED);
    env.fail(&["sts", "get-session-token"], ACCESS_DENIED);
    // A role may assume a role (chaining), for an hour at most.
    let args = [
        "sts",
        "assume-role",
        "--role-arn",
        &arn,
        "--role-session-name",
        "c1",
        "--duration-seconds",
        "3601",
    ];
    let line = env.fail(&as_("role/r", &args), INVALID_VALUE);
    assert!(line.contains("role chaining"), "{line}");
    // A trust policy must be one: sts: actions, with a Principal.
    let bad = allow(&["kms:Decrypt"], "*");
    let d = doc(&env, &bad);
    let args = [
        "iam",
        "create-role",
        "--role-name",
        "b",
        "--assume-role-policy-document",
        &d,
    ];
    let line = env.fail(&args, INVALID_VALUE);
    assert!(line.contains("--assume-role-policy-document"), "{line}");
    // Disabling a key that is not there.
    let args = [
        "iam",
        "update-access-key",
        "--user-name",
        "alice",
        "--access-key-id",
        "AKIANOPE",
        "--status",
        "Inactive",
    ];
    let line = env.fail(&args, NOT_FOUND);
    assert!(line.contains("AKIANOPE"), "{line}");
    // What the caller is, for each kind of profile.
    let v = env.json(&as_("alice", &["sts", "get-caller-identity"]));
    assert_eq!(
        v["Arn"],
        format!("arn:aws:iam::{account}:user/alice"),
        "{v}"
    );
    assert_eq!(v["Account"], account.as_str());
    let v = env.json(&as_("role/r", &["sts", "get-caller-identity"]));
    assert!(str_field(&v, "UserId").starts_with("AROA"), "{v}");
}

/// Credentials from the CLI and from the server's STS, used for KMS calls: what the role
/// allows, what a key policy naming the role allows, nothing else; then refused once
/// expired, tampered, without their token, or revoked.
#[test]
fn temporary_credentials_work_at_the_server_until_expired_or_revoked() {
    let env = Env::init();
    let account = env.account();
    env.create_user("alice");
    let alice = access_key(&env, "alice");
    let alice_arn = format!("arn:aws:iam::{account}:user/alice");
    let reader = create_role(&env, "reader", Some(&trust(&alice_arn)));
    put_policy(
        &env,
        "role",
        "reader",
        &allow(&["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], "*"),
    );
    let keyonly = create_role(&env, "keyonly", Some(&trust(&alice_arn)));
    let key = env.create_key();
    // A key whose policy names the keyonly role (which has no identity policy).
    let key_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "kms:*", "Resource": "*"},
        {"Effect": "Allow", "Principal": {"AWS": keyonly}, "Action": "kms:Encrypt", "Resource": "*"}]});
    let d = doc(&env, &key_policy);
    let key2 = str_field(
        &env.json(&["kms", "create-key", "--policy", &d])["KeyMetadata"],
        "KeyId",
    );
    let server = Server::start(&env);
    let addr = server.addr.as_str();

    // The role session from the CLI.
    let cli = Creds::from_cli(&assume(&env, "alice", &reader, "from-cli"));
    env.add_secret(cli.secret.as_bytes());
    let pt = b64(b"hello");
    let r = kms(
        addr,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": pt}),
        &cli,
    );
    let blob: Value = serde_json::from_str(&r.ok().body).unwrap();
    let r = kms(
        addr,
        "Decrypt",
        json!({"CiphertextBlob": blob["CiphertextBlob"]}),
        &cli,
    );
    let v: Value = serde_json::from_str(&r.ok().body).unwrap();
    assert_eq!(v["Plaintext"], pt.as_str());
    kms(
        addr,
        "GenerateDataKey",
        json!({"KeyId": key, "KeySpec": "AES_256"}),
        &cli,
    )
    .ok();
    assert_eq!(
        kms(addr, "CreateKey", json!({}), &cli).code(),
        "AccessDeniedException"
    );
    assert_eq!(
        kms(addr, "DescribeKey", json!({"KeyId": key}), &cli).code(),
        "AccessDeniedException"
    );

    // The key policy naming a role applies to its sessions.
    let ko = Creds::from_cli(&assume(&env, "alice", &keyonly, "ko"));
    kms(
        addr,
        "Encrypt",
        json!({"KeyId": key2, "Plaintext": pt}),
        &ko,
    )
    .ok();
    assert_eq!(
        kms(addr, "Encrypt", json!({"KeyId": key, "Plaintext": pt}), &ko).code(),
        "AccessDeniedException"
    );

    // Missing, foreign and tampered tokens; a token on a long-term key.
    let invalid = "UnrecognizedClientException";
    let list = |c: &Creds| kms(addr, "ListKeys", json!({}), c).code();
    assert_eq!(list(&cli.with_token(None)), invalid);
    assert_eq!(list(&cli.with_token(ko.token.as_deref())), invalid);
    let mut t = cli.token.clone().unwrap().into_bytes();
    t[10] = if t[10] == b'A' { b'B' } else { b'A' };
    assert_eq!(
        list(&cli.with_token(Some(std::str::from_utf8(&t).unwrap()))),
        invalid
    );
    assert_eq!(list(&alice.with_token(cli.token.as_deref())), invalid);

    // Issued with the clock 2 hours back for 15 minutes: expired now.
    let skew = [(SKEW_ENV, "-7200")];
    let args = as_(
        "alice",
        &[
            "sts",
            "assume-role",
            "--role-arn",
            &reader,
            "--role-session-name",
            "old",
            "--duration-seconds",
            "900",
        ],
    );
    let old = Creds::from_cli(&env.json_env(&args, &skew));
    assert_eq!(
        kms(
            addr,
            "Encrypt",
            json!({"KeyId": key, "Plaintext": pt}),
            &old
        )
        .code(),
        "ExpiredTokenException"
    );
    assert_eq!(
        sts(addr, "Action=GetCallerIdentity", &old).code(),
        "ExpiredToken"
    );

    // The server's STS: signed with alice's key, then with the session it gave.
    let r = sts(
        addr,
        &format!(
            "Action=AssumeRole&RoleArn={}&RoleSessionName=srv",
            enc(&reader)
        ),
        &alice,
    );
    let srv = Creds::from_xml(&r.ok().body);
    env.add_secret(srv.secret.as_bytes());
    assert!(
        xml(&r.body, "Arn").ends_with(":assumed-role/reader/srv"),
        "{}",
        r.body
    );
    let r = sts(addr, "Action=GetCallerIdentity", &srv);
    assert_eq!(
        xml(&r.ok().body, "Arn"),
        format!("arn:aws:sts::{account}:assumed-role/reader/srv")
    );
    let r = sts(addr, "Action=GetSessionToken&DurationSeconds=900", &alice);
    let gst = Creds::from_xml(&r.ok().body);
    assert_eq!(
        xml(
            &sts(addr, "Action=GetCallerIdentity", &gst).ok().body,
            "Arn"
        ),
        alice_arn
    );
    assert_eq!(
        sts(addr, "Action=GetSessionToken", &srv).code(),
        "AccessDenied"
    );
    assert_eq!(
        sts(
            addr,
            "Action=AssumeRole&RoleArn=x&RoleSessionName=ab",
            &alice
        )
        .code(),
        "ValidationError"
    );
    let nope = enc(&format!("arn:aws:iam::{account}:role/nope"));
    assert_eq!(
        sts(
            addr,
            &format!("Action=AssumeRole&RoleArn={nope}&RoleSessionName=ab"),
            &alice
        )
        .code(),
        "AccessDenied"
    );
    assert_eq!(
        sts(addr, "Action=Frobnicate", &alice).code(),
        "InvalidAction"
    );
    kms(
        addr,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": pt}),
        &srv,
    )
    .ok();

    // Role chaining: a session of reader assumes a role that trusts reader, for an hour at
    // most, and the chained session descends from alice's key too.
    let chained = create_role(&env, "chained", Some(&trust(&reader)));
    put_policy(&env, "role", "chained", &allow(&["kms:Encrypt"], "*"));
    let form = format!(
        "Action=AssumeRole&RoleArn={}&RoleSessionName=ch",
        enc(&chained)
    );
    let r = sts(addr, &format!("{form}&DurationSeconds=3601"), &srv);
    assert_eq!(r.code(), "ValidationError", "{}", r.body);
    assert_eq!(sts(addr, &form, &alice).code(), "AccessDenied");
    let ch = Creds::from_xml(
        &sts(addr, &format!("{form}&DurationSeconds=900"), &srv)
            .ok()
            .body,
    );
    kms(addr, "Encrypt", json!({"KeyId": key, "Plaintext": pt}), &ch).ok();

    // Revocation: disabling alice's key stops the sessions issued through it (not the
    // CLI's, which came through no key); enabling it again restores them.
    let status = |s: &str| {
        env.ok(&[
            "iam",
            "update-access-key",
            "--user-name",
            "alice",
            "--access-key-id",
            &alice.id,
            "--status",
            s,
        ])
    };
    status("Inactive");
    assert_eq!(list(&srv), invalid);
    assert_eq!(
        kms(addr, "Encrypt", json!({"KeyId": key, "Plaintext": pt}), &ch).code(),
        invalid
    );
    assert_eq!(
        sts(addr, "Action=GetCallerIdentity", &gst).code(),
        "InvalidClientTokenId"
    );
    kms(
        addr,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": pt}),
        &cli,
    )
    .ok();
    status("Active");
    kms(
        addr,
        "Encrypt",
        json!({"KeyId": key, "Plaintext": pt}),
        &srv,
    )
    .ok();
    env.ok(&[
        "iam",
        "delete-access-key",
        "--user-name",
        "alice",
        "--access-key-id",
        &alice.id,
    ]);
    assert_eq!(list(&srv), invalid);
    // Deleting the role stops its sessions; a new role of the same name does not revive them.
    env.ok(&[
        "iam",
        "delete-role-policy",
        "--role-name",
        "reader",
        "--policy-name",
        "p",
    ]);
    env.ok(&["iam", "delete-role", "--role-name", "reader"]);
    assert_eq!(list(&cli), invalid);
    create_role(&env, "reader", Some(&trust(&alice_arn)));
    put_policy(&env, "role", "reader", &allow(&["kms:*"], "*"));
    assert_eq!(list(&cli), invalid);
    // Deleting the user a session descends from stops it too.
    kms(
        addr,
        "Encrypt",
        json!({"KeyId": key2, "Plaintext": pt}),
        &ko,
    )
    .ok();
    env.ok(&["iam", "delete-user", "--user-name", "alice"]);
    assert_eq!(
        kms(
            addr,
            "Encrypt",
            json!({"KeyId": key2, "Plaintext": pt}),
            &ko
        )
        .code(),
        invalid
    );
    server.stop();

    // The trail: AssumedRole sessions as CloudTrail shows them, and no secret or token.
    let events = env.lookup(&["--principal", "keyonly"]);
    let e = events
        .iter()
        .find(|e| e["eventName"] == "Encrypt" && e.get("errorCode").is_none())
        .expect("an Encrypt by keyonly");
    let id = &e["userIdentity"];
    assert_eq!(id["type"], "AssumedRole", "{e:#}");
    assert_eq!(
        id["arn"],
        format!("arn:aws:sts::{account}:assumed-role/keyonly/ko"),
        "{e:#}"
    );
    assert_eq!(id["accessKeyId"], ko.id.as_str(), "{e:#}");
    assert!(str_field(id, "principalId").ends_with(":ko"), "{e:#}");
    assert_eq!(
        id["sessionContext"]["sessionIssuer"]["arn"], keyonly,
        "{e:#}"
    );
    assert_eq!(
        id["sessionContext"]["sessionIssuer"]["type"], "Role",
        "{e:#}"
    );
    assert!(
        id["sessionContext"]["attributes"]["creationDate"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z')),
        "{e:#}"
    );
    // The server's STS calls, as CloudTrail records STS: the issued key id, no secret.
    let sts_events: Vec<Value> = env
        .lookup(&["--principal", "alice"])
        .into_iter()
        .filter(|e| e["eventSource"] == "sts.amazonaws.com")
        .collect();
    let e = sts_events
        .iter()
        .find(|e| e["eventName"] == "AssumeRole" && e.get("errorCode").is_none())
        .unwrap_or_else(|| panic!("no AssumeRole event: {sts_events:#?}"));
    assert_eq!(e["requestParameters"]["roleSessionName"], "srv", "{e:#}");
    assert_eq!(e["requestParameters"]["roleArn"], reader, "{e:#}");
    assert_eq!(
        e["responseElements"]["credentials"]["accessKeyId"],
        srv.id.as_str(),
        "{e:#}"
    );
    assert_eq!(e["userIdentity"]["accessKeyId"], alice.id.as_str(), "{e:#}");
    assert_eq!(e["resources"][0]["ARN"], reader, "{e:#}");
    assert!(
        sts_events
            .iter()
            .any(|e| e["eventName"] == "GetSessionToken"
                && e["responseElements"]["credentials"]["accessKeyId"] == gst.id.as_str()),
        "no GetSessionToken event: {sts_events:#?}"
    );
    env.ok(&["audit", "verify"]);
    let trail = env.ok(&["audit", "lookup"]);
    for c in [&cli, &ko, &srv, &gst, &old] {
        assert!(
            !trail.contains(c.token.as_deref().unwrap()),
            "a session token in the trail"
        );
        assert_no_secret("the audit trail", trail.as_bytes(), c.secret.as_bytes());
    }
}
