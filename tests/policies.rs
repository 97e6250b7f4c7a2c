//! Key policies, identity policies and `--profile`: who may do what with a key, as AWS KMS
//! decides it.
//!
//! Proves: the least-privilege template splits key users from key administrators; an
//! explicit Deny wins wherever it is; an identity policy alone opens no key whose policy
//! does not delegate to the account; condition keys (`kms:EncryptionContext:…`,
//! `kms:ViaService`) confine a user to one volume or to the volume service; the lockout
//! safety check; invalid policies are refused with the field named and the old policy
//! kept; the `iam` commands' lifecycle; and the managed key `alias/aws/ebs` serves volumes
//! only.
//!
//! The volume tests need FUSE; without it they skip, unless `CRYPTVOL_REQUIRE_MOUNT=1`.

mod common;

use common::mount::*;
use common::{Env, as_, assert_no_secret, mode, str_field, unb64};
use serde_json::{Value, json};

const VIA_EBS: &str = "ec2.local-1.amazonaws.com";

// ---- helpers ------------------------------------------------------------------------------

fn root_arn(acct: &str) -> String {
    format!("arn:aws:iam::{acct}:root")
}

fn user_arn(acct: &str, name: &str) -> String {
    format!("arn:aws:iam::{acct}:user/{name}")
}

fn role_arn(acct: &str, name: &str) -> String {
    format!("arn:aws:iam::{acct}:role/{name}")
}

/// `file://PATH` of a scratch file holding `text`.
fn text_file(env: &Env, text: &str) -> String {
    format!("file://{}", env.file(text.as_bytes()).display())
}

/// `file://PATH` of a scratch file holding the policy `doc`.
fn policy_file(env: &Env, doc: &Value) -> String {
    text_file(
        env,
        &serde_json::to_string_pretty(doc).expect("policy serialises"),
    )
}

fn doc(statements: Vec<Value>) -> Value {
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// A key policy statement allowing (or denying) `actions` to the principal ARNs.
fn stmt(sid: &str, effect: &str, principals: &[&str], actions: &[&str]) -> Value {
    json!({
        "Sid": sid,
        "Effect": effect,
        "Principal": { "AWS": principals },
        "Action": actions,
        "Resource": "*",
    })
}

fn root_stmt(acct: &str) -> Value {
    stmt("Root", "Allow", &[&root_arn(acct)], &["kms:*"])
}

/// An identity policy (no Principal).
fn identity(effect: &str, actions: &[&str], resource: &str) -> Value {
    doc(vec![json!({
        "Effect": effect,
        "Action": actions,
        "Resource": resource,
    })])
}

/// Creates a key with `--policy` (and any extra flags); returns (key id, key ARN).
#[track_caller]
fn create_key_with_policy(env: &Env, policy: &Value, extra: &[&str]) -> (String, String) {
    let f = policy_file(env, policy);
    let mut args = vec!["--policy", f.as_str()];
    args.extend_from_slice(extra);
    let m = env.create_key_meta(&args);
    (str_field(&m, "KeyId"), str_field(&m, "Arn"))
}

#[track_caller]
fn key_arn(env: &Env, key: &str) -> String {
    str_field(&env.describe(key), "Arn")
}

/// The key policy text as root reads it.
#[track_caller]
fn policy_text(env: &Env, key: &str) -> String {
    let v = env.json(&["kms", "get-key-policy", "--key-id", key]);
    assert_eq!(v["PolicyName"], "default", "{v:#}");
    str_field(&v, "Policy")
}

#[track_caller]
fn policy_json(env: &Env, key: &str) -> Value {
    serde_json::from_str(&policy_text(env, key)).expect("the key policy is JSON")
}

/// Root replaces the key policy (must succeed).
#[track_caller]
fn put_policy(env: &Env, key: &str, policy: &Value) {
    let f = policy_file(env, policy);
    let out = env.ok(&["kms", "put-key-policy", "--key-id", key, "--policy", &f]);
    assert_eq!(out, "", "put-key-policy prints nothing");
    assert_eq!(&policy_json(env, key), policy, "the policy as stored");
}

fn no_resource_policy(action: &str) -> String {
    format!("because no resource-based policy allows the {action} action")
}

fn no_identity_policy(action: &str) -> String {
    format!("because no identity-based policy allows the {action} action")
}

const DENY_IN_KEY_POLICY: &str = "with an explicit deny in a resource-based policy";
const DENY_IN_IDENTITY_POLICY: &str = "with an explicit deny in an identity-based policy";

/// The exact AccessDeniedException line.
#[track_caller]
fn assert_denied(line: &str, caller: &str, action: &str, resource: &str, reason: &str) {
    let want = format!(
        "cryptvol: AccessDeniedException: User: {caller} is not authorized to perform: {action} on resource: {resource} {reason}"
    );
    assert_eq!(line, want, "the AccessDenied message");
}

/// The MalformedPolicyDocumentException line names `field`; returns the line.
#[track_caller]
fn assert_malformed(line: &str, field: &str) {
    let prefix =
        format!("cryptvol: MalformedPolicyDocumentException: the policy is invalid at {field}: ");
    assert!(
        line.starts_with(&prefix),
        "expected a malformed-policy error at {field}, got: {line}"
    );
    assert!(
        line.ends_with("(the current policy is unchanged)"),
        "the error says the old policy stays: {line}"
    );
}

/// Encrypts as `who`; returns the blob.
#[track_caller]
fn encrypt_as(env: &Env, who: &str, key: &str, plaintext: &[u8]) -> Vec<u8> {
    let pt = env.fileb(plaintext);
    let v = env.json(&as_(
        who,
        &["kms", "encrypt", "--key-id", key, "--plaintext", &pt],
    ));
    assert!(
        str_field(&v, "KeyId").ends_with(key),
        "encrypted under {} instead of {key}",
        v["KeyId"]
    );
    unb64(&str_field(&v, "CiphertextBlob"))
}

/// Decrypts as `who`; returns the plaintext.
#[track_caller]
fn decrypt_as(env: &Env, who: &str, blob: &[u8]) -> Vec<u8> {
    let b = env.fileb(blob);
    let v = env.json(&as_(who, &["kms", "decrypt", "--ciphertext-blob", &b]));
    unb64(&str_field(&v, "Plaintext"))
}

/// A denied encrypt as `who`; returns the stderr line.
#[track_caller]
fn encrypt_denied(env: &Env, who: &str, key: &str) -> String {
    let pt = env.fileb(b"denied");
    env.fail(
        &as_(
            who,
            &["kms", "encrypt", "--key-id", key, "--plaintext", &pt],
        ),
        18,
    )
}

#[track_caller]
fn decrypt_denied(env: &Env, who: &str, blob: &[u8]) -> String {
    let b = env.fileb(blob);
    env.fail(&as_(who, &["kms", "decrypt", "--ciphertext-blob", &b]), 18)
}

/// A volume's lineage (`inspect volume`).
#[track_caller]
fn lineage(env: &Env, vol: &str) -> String {
    str_field(&env.json(&["inspect", "volume", vol]), "Lineage")
}

/// A volume's wrapped data key (`inspect volume`).
#[track_caller]
fn wrapped_key(env: &Env, vol: &str) -> Vec<u8> {
    unb64(&str_field(
        &env.json(&["inspect", "volume", vol]),
        "WrappedDataKey",
    ))
}

/// `detach DIR`, then waits for the region daemon to exit: it logs its shutdown into the
/// data dir, which a later `fail` would otherwise see change.
#[track_caller]
fn detach(v: &VolEnv, dir: &std::path::Path) {
    v.detach(dir);
    assert!(
        v.wait_no_daemon(std::time::Duration::from_secs(10)),
        "the region daemon still runs 10 s after the last detach"
    );
}

fn lineage_ctx(lineage: &str) -> String {
    json!({ "cryptvol:lineage": lineage }).to_string()
}

// ---- 1. a key user ------------------------------------------------------------------------

#[test]
fn usage_only_user_can_use_but_not_manage_the_key() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    assert_eq!(alice, user_arn(&acct, "alice"));
    let meta = env.create_key_meta(&["--user", &alice]);
    let key = str_field(&meta, "KeyId");
    let arn = str_field(&meta, "Arn");
    assert_eq!(meta["AWSAccountId"], acct.as_str());
    let policy_before = policy_text(&env, &key);
    let p: Value = serde_json::from_str(&policy_before).unwrap();
    let users = &p["Statement"][1];
    assert_eq!(users["Principal"]["AWS"], alice.as_str(), "{p:#}");
    assert_eq!(users["Effect"], "Allow", "{p:#}");

    // Cryptographic use: all allowed.
    let blob = encrypt_as(&env, "alice", &key, b"alice's secret");
    assert_eq!(decrypt_as(&env, "alice", &blob), b"alice's secret");

    let dk = env.json(&as_(
        "alice",
        &[
            "kms",
            "generate-data-key",
            "--key-id",
            &key,
            "--key-spec",
            "AES_256",
        ],
    ));
    assert_eq!(dk["KeyId"], arn.as_str(), "{dk:#}");
    let dk_plain = unb64(&str_field(&dk, "Plaintext"));
    assert_eq!(dk_plain.len(), 32);
    let dk_blob = unb64(&str_field(&dk, "CiphertextBlob"));
    assert_eq!(decrypt_as(&env, "alice", &dk_blob), dk_plain);

    let wp = env.json(&as_(
        "alice",
        &[
            "kms",
            "generate-data-key-without-plaintext",
            "--key-id",
            &key,
            "--number-of-bytes",
            "16",
        ],
    ));
    assert!(wp.get("Plaintext").is_none(), "{wp:#}");
    assert_eq!(wp["KeyId"], arn.as_str(), "{wp:#}");
    let wp_blob = unb64(&str_field(&wp, "CiphertextBlob"));
    assert_eq!(decrypt_as(&env, "alice", &wp_blob).len(), 16);

    let b = env.fileb(&blob);
    let re = env.json(&as_(
        "alice",
        &[
            "kms",
            "re-encrypt",
            "--ciphertext-blob",
            &b,
            "--destination-key-id",
            &key,
        ],
    ));
    assert_eq!(re["KeyId"], arn.as_str(), "{re:#}");
    assert_eq!(re["SourceKeyId"], arn.as_str(), "{re:#}");
    let re_blob = unb64(&str_field(&re, "CiphertextBlob"));
    assert_ne!(re_blob, blob, "re-encrypt makes a new blob");
    assert_eq!(decrypt_as(&env, "alice", &re_blob), b"alice's secret");

    let d = env.json(&as_("alice", &["kms", "describe-key", "--key-id", &key]));
    assert_eq!(d["KeyMetadata"]["KeyId"], key.as_str(), "{d:#}");

    // Management: all denied. The template's root statement delegates to IAM, where
    // alice has no policy.
    let policy_arg = text_file(&env, &policy_before);
    let denied: Vec<(&str, Vec<&str>)> = vec![
        (
            "kms:ScheduleKeyDeletion",
            vec![
                "kms",
                "schedule-key-deletion",
                "--key-id",
                &key,
                "--pending-window-days",
                "7",
            ],
        ),
        (
            "kms:PutKeyPolicy",
            vec![
                "kms",
                "put-key-policy",
                "--key-id",
                &key,
                "--policy",
                &policy_arg,
            ],
        ),
        (
            "kms:DisableKey",
            vec!["kms", "disable-key", "--key-id", &key],
        ),
        (
            "kms:CreateAlias",
            vec![
                "kms",
                "create-alias",
                "--alias-name",
                "alias/alice",
                "--target-key-id",
                &key,
            ],
        ),
        (
            "kms:EnableKeyRotation",
            vec!["kms", "enable-key-rotation", "--key-id", &key],
        ),
        (
            "kms:GetKeyPolicy",
            vec!["kms", "get-key-policy", "--key-id", &key],
        ),
    ];
    for (action, args) in &denied {
        let line = env.fail(&as_("alice", args), 18);
        assert_denied(&line, &alice, action, &arn, &no_identity_policy(action));
    }

    // Nothing changed.
    let m = env.describe(&key);
    assert_eq!(m["KeyState"], "Enabled", "{m:#}");
    assert_eq!(m["Enabled"], true, "{m:#}");
    assert!(m.get("DeletionDate").is_none(), "{m:#}");
    let rot = env.json(&["kms", "get-key-rotation-status", "--key-id", &key]);
    assert_eq!(rot["KeyRotationEnabled"], false, "{rot:#}");
    let aliases = env.json(&["kms", "list-aliases", "--key-id", &key]);
    assert_eq!(aliases["Aliases"], json!([]), "{aliases:#}");
    assert_eq!(policy_text(&env, &key), policy_before);
    // And alice can still use it.
    assert_eq!(decrypt_as(&env, "alice", &blob), b"alice's secret");
}

// ---- 2. a key administrator ---------------------------------------------------------------

#[test]
fn admin_only_user_can_manage_but_not_use_the_key() {
    let env = Env::init();
    let acct = env.account();
    let bob = env.create_user("bob");
    let meta = env.create_key_meta(&["--admin", &bob]);
    let key = str_field(&meta, "KeyId");
    let arn = str_field(&meta, "Arn");
    let p = policy_json(&env, &key);
    assert_eq!(p["Statement"][1]["Principal"]["AWS"], bob.as_str(), "{p:#}");

    // Cryptographic use: denied.
    let blob = env.encrypt(&key, b"root's data", None);
    let line = encrypt_denied(&env, "bob", &key);
    assert_denied(
        &line,
        &bob,
        "kms:Encrypt",
        &arn,
        &no_identity_policy("kms:Encrypt"),
    );
    let line = decrypt_denied(&env, "bob", &blob);
    assert_denied(
        &line,
        &bob,
        "kms:Decrypt",
        &arn,
        &no_identity_policy("kms:Decrypt"),
    );
    let line = env.fail(
        &as_(
            "bob",
            &[
                "kms",
                "generate-data-key",
                "--key-id",
                &key,
                "--key-spec",
                "AES_256",
            ],
        ),
        18,
    );
    assert_denied(
        &line,
        &bob,
        "kms:GenerateDataKey",
        &arn,
        &no_identity_policy("kms:GenerateDataKey"),
    );

    // Management: allowed, and each change is seen.
    let bob_ok = |args: &[&str]| env.ok(&as_("bob", args));
    bob_ok(&["kms", "enable-key-rotation", "--key-id", &key]);
    let rot = env.json(&as_(
        "bob",
        &["kms", "get-key-rotation-status", "--key-id", &key],
    ));
    assert_eq!(rot["KeyRotationEnabled"], true, "{rot:#}");

    bob_ok(&["kms", "disable-key", "--key-id", &key]);
    assert_eq!(env.describe(&key)["KeyState"], "Disabled");
    bob_ok(&["kms", "enable-key", "--key-id", &key]);
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");

    bob_ok(&[
        "kms",
        "create-alias",
        "--alias-name",
        "alias/bobs",
        "--target-key-id",
        &key,
    ]);
    // ListAliases is an account-level action (IAM, not the key policy): root lists.
    let aliases = env.json(&["kms", "list-aliases", "--key-id", &key]);
    let names: Vec<&str> = aliases["Aliases"]
        .as_array()
        .expect("Aliases")
        .iter()
        .filter_map(|a| a["AliasName"].as_str())
        .collect();
    assert_eq!(names, ["alias/bobs"], "{aliases:#}");

    let got = env.json(&as_("bob", &["kms", "get-key-policy", "--key-id", &key]));
    assert_eq!(str_field(&got, "Policy"), policy_text(&env, &key));

    // A new policy that still lets bob change it.
    let new = doc(vec![
        root_stmt(&acct),
        stmt(
            "Bob administers",
            "Allow",
            &[&bob],
            &[
                "kms:Put*",
                "kms:Get*",
                "kms:Describe*",
                "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion",
            ],
        ),
    ]);
    let f = policy_file(&env, &new);
    let out = bob_ok(&["kms", "put-key-policy", "--key-id", &key, "--policy", &f]);
    assert_eq!(out, "");
    assert_eq!(policy_json(&env, &key), new);

    let s = env.json(&as_(
        "bob",
        &[
            "kms",
            "schedule-key-deletion",
            "--key-id",
            &key,
            "--pending-window-days",
            "7",
        ],
    ));
    assert_eq!(s["KeyId"], arn.as_str(), "{s:#}");
    let m = env.describe(&key);
    assert_eq!(m["KeyState"], "PendingDeletion", "{m:#}");
    assert!(m["DeletionDate"].is_string(), "{m:#}");
    let c = env.json(&as_(
        "bob",
        &["kms", "cancel-key-deletion", "--key-id", &key],
    ));
    assert!(str_field(&c, "KeyId").ends_with(&key), "{c:#}");
    let m = env.describe(&key);
    assert_eq!(
        m["KeyState"], "Disabled",
        "cancelled deletion leaves it disabled"
    );
    assert!(m.get("DeletionDate").is_none(), "{m:#}");

    // Still no cryptographic use under the new policy either (and the key is disabled,
    // which bob must not learn before being authorized).
    let line = decrypt_denied(&env, "bob", &blob);
    assert_denied(
        &line,
        &bob,
        "kms:Decrypt",
        &arn,
        &no_identity_policy("kms:Decrypt"),
    );
}

// ---- 3. explicit deny ---------------------------------------------------------------------

#[test]
fn explicit_deny_wins_over_any_allow() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    let policy = doc(vec![
        root_stmt(&acct),
        stmt("Alice", "Allow", &[&alice], &["kms:*"]),
    ]);
    let (key, arn) = create_key_with_policy(&env, &policy, &[]);
    assert_eq!(policy_json(&env, &key), policy);

    // Before any deny, alice can do both.
    let blob = encrypt_as(&env, "alice", &key, b"payload");
    assert_eq!(decrypt_as(&env, "alice", &blob), b"payload");

    // An identity policy Deny beats the key policy's direct Allow.
    env.put_user_policy(
        "alice",
        "NoDecrypt",
        &identity("Deny", &["kms:Decrypt"], "*"),
    );
    let line = decrypt_denied(&env, "alice", &blob);
    assert_denied(&line, &alice, "kms:Decrypt", &arn, DENY_IN_IDENTITY_POLICY);
    let blob2 = encrypt_as(&env, "alice", &key, b"still allowed");
    assert_eq!(decrypt_as(&env, "root", &blob2), b"still allowed");

    // A key policy Deny beats root's kms:*.
    let with_deny = doc(vec![
        root_stmt(&acct),
        stmt("Alice", "Allow", &[&alice], &["kms:*"]),
        stmt("NoEncrypt", "Deny", &["*"], &["kms:Encrypt"]),
    ]);
    put_policy(&env, &key, &with_deny);
    let root = root_arn(&acct);
    let line = encrypt_denied(&env, "root", &key);
    assert_denied(&line, &root, "kms:Encrypt", &arn, DENY_IN_KEY_POLICY);
    let line = encrypt_denied(&env, "alice", &key);
    assert_denied(&line, &alice, "kms:Encrypt", &arn, DENY_IN_KEY_POLICY);
    // Other actions are unaffected: root decrypts; alice's own deny still holds.
    assert_eq!(decrypt_as(&env, "root", &blob), b"payload");
    let line = decrypt_denied(&env, "alice", &blob);
    assert_denied(&line, &alice, "kms:Decrypt", &arn, DENY_IN_IDENTITY_POLICY);

    // Removing the identity deny gives alice decrypt back; the key deny still stands.
    env.ok(&[
        "iam",
        "delete-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "NoDecrypt",
    ]);
    assert_eq!(decrypt_as(&env, "alice", &blob), b"payload");
    let line = encrypt_denied(&env, "alice", &key);
    assert_denied(&line, &alice, "kms:Encrypt", &arn, DENY_IN_KEY_POLICY);
}

/// AWS's documented `"Deny", "NotPrincipal": [alice, ACCOUNT:root]` denies everyone but
/// alice and the account principal, even users that another statement allows: the account
/// entry exempts the root only, not the account's users.
#[test]
fn not_principal_deny_spares_only_the_named_and_the_root() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    let bob = env.create_user("bob");
    let root = root_arn(&acct);
    let mut deny_others = stmt("OnlyAlice", "Deny", &[], &["kms:Decrypt"]);
    deny_others
        .as_object_mut()
        .expect("statement object")
        .remove("Principal");
    deny_others["NotPrincipal"] = json!({ "AWS": [&alice, &root] });
    let policy = doc(vec![
        root_stmt(&acct),
        stmt(
            "Users",
            "Allow",
            &[&alice, &bob],
            &["kms:Encrypt", "kms:Decrypt"],
        ),
        deny_others,
    ]);
    let (key, arn) = create_key_with_policy(&env, &policy, &[]);

    let blob = encrypt_as(&env, "bob", &key, b"for alice only");
    assert_eq!(decrypt_as(&env, "alice", &blob), b"for alice only");
    assert_eq!(decrypt_as(&env, "root", &blob), b"for alice only");
    let line = decrypt_denied(&env, "bob", &blob);
    assert_denied(&line, &bob, "kms:Decrypt", &arn, DENY_IN_KEY_POLICY);
    // The Deny names Decrypt only: bob still encrypts.
    encrypt_as(&env, "bob", &key, b"still allowed");
}

// ---- 4. the key policy must allow ---------------------------------------------------------

#[test]
fn identity_policy_alone_is_not_enough() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    let bob = env.create_user("bob");
    let carol = env.create_user("carol");
    env.put_user_policy("alice", "All", &identity("Allow", &["kms:*"], "*"));

    // A key whose policy names only bob (root gives up the key: bypass the check).
    let only_bob = doc(vec![stmt("Bob", "Allow", &[&bob], &["kms:*"])]);
    let (key, arn) =
        create_key_with_policy(&env, &only_bob, &["--bypass-policy-lockout-safety-check"]);
    let line = encrypt_denied(&env, "alice", &key);
    assert_denied(
        &line,
        &alice,
        "kms:Encrypt",
        &arn,
        &no_resource_policy("kms:Encrypt"),
    );
    let line = encrypt_denied(&env, "root", &key);
    assert_denied(
        &line,
        &root_arn(&acct),
        "kms:Encrypt",
        &arn,
        &no_resource_policy("kms:Encrypt"),
    );
    let blob = encrypt_as(&env, "bob", &key, b"bob's");
    assert_eq!(decrypt_as(&env, "bob", &blob), b"bob's");
    let line = decrypt_denied(&env, "alice", &blob);
    assert_denied(
        &line,
        &alice,
        "kms:Decrypt",
        &arn,
        &no_resource_policy("kms:Decrypt"),
    );

    // The default policy delegates to IAM: no identity policy, no access.
    let k2 = env.create_key();
    let arn2 = key_arn(&env, &k2);
    let line = encrypt_denied(&env, "carol", &k2);
    assert_denied(
        &line,
        &carol,
        "kms:Encrypt",
        &arn2,
        &no_identity_policy("kms:Encrypt"),
    );
    // alice's kms:* identity policy works through the delegation.
    let a_blob = encrypt_as(&env, "alice", &k2, b"alice via IAM");
    assert_eq!(decrypt_as(&env, "alice", &a_blob), b"alice via IAM");

    // Allowing carol only Encrypt on keys: Encrypt works, Decrypt does not.
    env.put_user_policy(
        "carol",
        "EncryptOnly",
        &identity("Allow", &["kms:Encrypt"], "arn:aws:kms:*:*:key/*"),
    );
    let c_blob = encrypt_as(&env, "carol", &k2, b"carol's");
    assert_eq!(env.decrypt(&c_blob, None), b"carol's");
    let line = decrypt_denied(&env, "carol", &c_blob);
    assert_denied(
        &line,
        &carol,
        "kms:Decrypt",
        &arn2,
        &no_identity_policy("kms:Decrypt"),
    );
    // Her identity policy still does not open bob's key.
    let line = encrypt_denied(&env, "carol", &key);
    assert_denied(
        &line,
        &carol,
        "kms:Encrypt",
        &arn,
        &no_resource_policy("kms:Encrypt"),
    );
}

// ---- 5. condition keys confine a user -----------------------------------------------------

#[test]
fn encryption_context_confines_a_user_to_one_volume() {
    needs!(Fuse);
    let v = VolEnv::new();
    let acct = v.account();
    let alice = v.create_user("alice");
    let key = v.create_key();
    let arn = key_arn(&v, &key);
    let a = v.create(&["--size", "64M", "--kms-key", &key]);
    let b = v.create(&["--size", "64M", "--kms-key", &key]);
    let la = lineage(&v, &a);
    let lb = lineage(&v, &b);
    assert_eq!(la, a, "a new volume is its own lineage");
    assert_eq!(lb, b);

    let mut only_a = stmt("Alice decrypts A", "Allow", &[&alice], &["kms:Decrypt"]);
    only_a["Condition"] = json!({
        "StringEquals": { "kms:EncryptionContext:cryptvol:lineage": la }
    });
    put_policy(&v, &key, &doc(vec![root_stmt(&acct), only_a]));

    let da = v.dir("a");
    let db = v.dir("b");
    let path = v.attach(&a, &da, &["--profile", "alice"]);
    let f = open_rw(&path);
    pwrite(&f, 4096, b"alice was here");
    f.sync_all().expect("fsync");
    assert_eq!(pread(&f, 4096, 14), b"alice was here");
    drop(f);
    detach(&v, &da);
    // The attach made one Decrypt, as alice, through the volume service, with A's lineage.
    let ev = decrypts_by(&v, "alice");
    assert_eq!(ev.len(), 1, "one Decrypt per attach: {ev:#?}");
    let e = &ev[0];
    assert_eq!(e["userIdentity"]["arn"], alice.as_str(), "{e:#}");
    assert_eq!(e["userIdentity"]["invokedBy"], VIA_EBS, "{e:#}");
    assert_eq!(
        e["requestParameters"]["encryptionContext"],
        json!({ "cryptvol:lineage": la }),
        "{e:#}"
    );
    assert!(e.get("errorCode").is_none(), "{e:#}");

    let line = v.attach_run(&b, &db, &["--profile", "alice"]).fails(18);
    assert_denied(
        &line,
        &alice,
        "kms:Decrypt",
        &arn,
        &no_identity_policy("kms:Decrypt"),
    );
    assert!(
        !is_mount_point(&db),
        "{db:?} is mounted after a denied attach"
    );
    assert!(!db.join("volume").exists());
    assert!(
        v.wait_no_daemon(std::time::Duration::from_secs(10)),
        "a daemon runs after a denied attach: {:?}",
        daemons_of(&v.data)
    );
    // The refusal is in the audit trail, with B's lineage.
    let ev = decrypts_by(&v, "alice");
    let refused: Vec<&Value> = ev.iter().filter(|e| e.get("errorCode").is_some()).collect();
    assert_eq!(refused.len(), 1, "{ev:#?}");
    assert_eq!(refused[0]["errorCode"], "AccessDeniedException", "{ev:#?}");
    assert_eq!(
        refused[0]["requestParameters"]["encryptionContext"],
        json!({ "cryptvol:lineage": lb }),
        "{ev:#?}"
    );

    // The same condition, directly: B's data key does not decrypt for alice.
    let wb = v.fileb(&wrapped_key(&v, &b));
    let ctx_b = lineage_ctx(&lb);
    let line = v.fail(
        &as_(
            "alice",
            &[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &wb,
                "--encryption-context",
                &ctx_b,
            ],
        ),
        18,
    );
    assert_denied(
        &line,
        &alice,
        "kms:Decrypt",
        &arn,
        &no_identity_policy("kms:Decrypt"),
    );
    // The condition is on the request's context: A's data key with B's context is refused
    // before any decryption, with A's it decrypts (this policy has no ViaService condition).
    let wa = v.fileb(&wrapped_key(&v, &a));
    let line = v.fail(
        &as_(
            "alice",
            &[
                "kms",
                "decrypt",
                "--ciphertext-blob",
                &wa,
                "--encryption-context",
                &ctx_b,
            ],
        ),
        18,
    );
    assert_denied(
        &line,
        &alice,
        "kms:Decrypt",
        &arn,
        &no_identity_policy("kms:Decrypt"),
    );
    let out = v.path("a.key");
    let out_s = out.to_string_lossy();
    let ctx_a = lineage_ctx(&la);
    let r = v.json(&as_(
        "alice",
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &wa,
            "--encryption-context",
            &ctx_a,
            "--plaintext-out",
            &out_s,
        ],
    ));
    assert_eq!(r["KeyId"], arn.as_str(), "{r:#}");
    assert!(r.get("Plaintext").is_none(), "{r:#}");
    assert!(
        !std::fs::read(&out).expect("the data key file").is_empty(),
        "an empty data key"
    );
    // Root (kms:*) attaches B.
    v.attach(&b, &db, &[]);
    detach(&v, &db);

    // kms:ViaService: alice may use the key through the volume service only.
    let mut via = stmt(
        "Alice through EBS",
        "Allow",
        &[&alice],
        // CreateGrant: a new volume's grant to the volume service, as EBS asks for one.
        &["kms:Decrypt", "kms:GenerateDataKey*", "kms:CreateGrant"],
    );
    via["Condition"] = json!({ "StringEquals": { "kms:ViaService": VIA_EBS } });
    put_policy(&v, &key, &doc(vec![root_stmt(&acct), via]));

    v.attach(&b, &db, &["--profile", "alice"]);
    detach(&v, &db);
    let path = v.attach(&a, &da, &["--profile", "alice"]);
    let f = open_rw(&path);
    assert_eq!(pread(&f, 4096, 14), b"alice was here");
    drop(f);
    detach(&v, &da);
    // She can make a volume under the key (GenerateDataKey through the service) ...
    let c = v.create(&["--size", "64M", "--kms-key", &key, "--profile", "alice"]);
    assert_eq!(str_field(&v.describe_vol(&c), "KmsKeyId"), arn);

    // ... but not use the key directly, with the right context or without.
    for vol in [&a, &b, &c] {
        let w = v.fileb(&wrapped_key(&v, vol));
        let ctx = lineage_ctx(&lineage(&v, vol));
        let line = v.fail(
            &as_(
                "alice",
                &[
                    "kms",
                    "decrypt",
                    "--ciphertext-blob",
                    &w,
                    "--encryption-context",
                    &ctx,
                ],
            ),
            18,
        );
        assert_denied(
            &line,
            &alice,
            "kms:Decrypt",
            &arn,
            &no_identity_policy("kms:Decrypt"),
        );
    }
    let blob = v.encrypt(&key, b"root's", None);
    let line = decrypt_denied(&v, "alice", &blob);
    assert_denied(
        &line,
        &alice,
        "kms:Decrypt",
        &arn,
        &no_identity_policy("kms:Decrypt"),
    );
    let line = v.fail(
        &as_(
            "alice",
            &[
                "kms",
                "generate-data-key",
                "--key-id",
                &key,
                "--key-spec",
                "AES_256",
            ],
        ),
        18,
    );
    assert_denied(
        &line,
        &alice,
        "kms:GenerateDataKey",
        &arn,
        &no_identity_policy("kms:GenerateDataKey"),
    );

    // The same confinement from the other side: the key policy allows alice everything,
    // her identity policy denies any use not made through the volume service.
    put_policy(
        &v,
        &key,
        &doc(vec![
            root_stmt(&acct),
            stmt("Alice", "Allow", &[&alice], &["kms:*"]),
        ]),
    );
    let mut only_via = identity("Deny", &["kms:Decrypt"], "*");
    only_via["Statement"][0]["Condition"] =
        json!({ "StringNotEquals": { "kms:ViaService": VIA_EBS } });
    v.put_user_policy("alice", "OnlyThroughEbs", &only_via);
    let line = decrypt_denied(&v, "alice", &blob);
    assert_denied(&line, &alice, "kms:Decrypt", &arn, DENY_IN_IDENTITY_POLICY);
    let path = v.attach(&a, &da, &["--profile", "alice"]);
    assert_eq!(pread(&open_rw(&path), 4096, 14), b"alice was here");
    detach(&v, &da);
}

/// The Decrypt events of the audit trail made by `who`.
#[track_caller]
fn decrypts_by(env: &Env, who: &str) -> Vec<Value> {
    env.lookup(&["--principal", who, "--event-name", "Decrypt"])
}

// ---- 6. lockout safety check --------------------------------------------------------------

#[test]
fn lockout_safety_check_refuses_a_policy_that_locks_the_caller_out() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    let key = env.create_key();
    let arn = key_arn(&env, &key);
    let before = policy_text(&env, &key);

    let only_alice = doc(vec![stmt("Alice", "Allow", &[&alice], &["kms:*"])]);
    let f = policy_file(&env, &only_alice);
    let line = env.fail(
        &["kms", "put-key-policy", "--key-id", &key, "--policy", &f],
        6,
    );
    assert_malformed(&line, "Policy");
    for word in ["kms:PutKeyPolicy", "--bypass-policy-lockout-safety-check"] {
        assert!(
            line.contains(word),
            "the lockout error names {word}: {line}"
        );
    }
    assert_eq!(policy_text(&env, &key), before);

    // The same for create-key: no key is made.
    let keys_before = env.json(&["kms", "list-keys"]);
    let line = env.fail(&["kms", "create-key", "--policy", &f], 6);
    assert_malformed(&line, "Policy");
    assert!(line.contains("kms:PutKeyPolicy"), "{line}");
    assert_eq!(env.json(&["kms", "list-keys"]), keys_before);

    // A non-root caller is checked as herself: with root delegation only (and no IAM
    // policy of hers) alice would lock herself out.
    put_policy(
        &env,
        &key,
        &doc(vec![
            root_stmt(&acct),
            stmt("Alice", "Allow", &[&alice], &["kms:*"]),
        ]),
    );
    let mid = policy_text(&env, &key);
    let root_only = policy_file(&env, &doc(vec![root_stmt(&acct)]));
    let line = env.fail(
        &as_(
            "alice",
            &[
                "kms",
                "put-key-policy",
                "--key-id",
                &key,
                "--policy",
                &root_only,
            ],
        ),
        6,
    );
    assert_malformed(&line, "Policy");
    assert_eq!(policy_text(&env, &key), mid);

    // With the bypass flag root gives the key away.
    let out = env.ok(&[
        "kms",
        "put-key-policy",
        "--key-id",
        &key,
        "--policy",
        &f,
        "--bypass-policy-lockout-safety-check",
    ]);
    assert_eq!(out, "");
    let root = root_arn(&acct);
    let line = env.fail(&["kms", "get-key-policy", "--key-id", &key], 18);
    assert_denied(
        &line,
        &root,
        "kms:GetKeyPolicy",
        &arn,
        &no_resource_policy("kms:GetKeyPolicy"),
    );
    let line = env.fail(
        &["kms", "put-key-policy", "--key-id", &key, "--policy", &f],
        18,
    );
    assert_denied(
        &line,
        &root,
        "kms:PutKeyPolicy",
        &arn,
        &no_resource_policy("kms:PutKeyPolicy"),
    );

    // alice still manages it, and can hand it back.
    let got = env.json(&as_("alice", &["kms", "get-key-policy", "--key-id", &key]));
    let got: Value = serde_json::from_str(&str_field(&got, "Policy")).unwrap();
    assert_eq!(got, only_alice);
    let back = doc(vec![
        root_stmt(&acct),
        stmt("Alice", "Allow", &[&alice], &["kms:*"]),
    ]);
    let fb = policy_file(&env, &back);
    env.ok(&as_(
        "alice",
        &["kms", "put-key-policy", "--key-id", &key, "--policy", &fb],
    ));
    assert_eq!(policy_json(&env, &key), back);
}

// ---- 7. invalid policies ------------------------------------------------------------------

#[test]
fn bad_policies_are_rejected_with_the_field_named_and_the_old_policy_stays() {
    let env = Env::init();
    let acct = env.account();
    let alice = env.create_user("alice");
    let root = root_arn(&acct);
    let (key, _) = create_key_with_policy(
        &env,
        &doc(vec![
            root_stmt(&acct),
            stmt("Alice", "Allow", &[&alice], &["kms:Encrypt"]),
        ]),
        &[],
    );
    let before = policy_text(&env, &key);

    let good = root_stmt(&acct);
    let with_bad = |bad: Value| serde_json::to_string(&doc(vec![good.clone(), bad])).unwrap();
    let mut bad_condition = stmt("C", "Allow", &[&alice], &["kms:Decrypt"]);
    bad_condition["Condition"] = json!({ "StringEqualz": { "kms:ViaService": VIA_EBS } });
    let ghost = user_arn(&acct, "ghost");
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "invalid JSON",
            "{\"Version\": \"2012-10-17\", \"Statement\": [".to_string(),
            "policy".to_string(),
            "invalid JSON",
        ),
        (
            "unknown Effect",
            serde_json::to_string(&json!({
                "Version": "2012-10-17",
                "Statement": [{
                    "Effect": "Allwo",
                    "Principal": { "AWS": root },
                    "Action": "kms:*",
                    "Resource": "*",
                }],
            }))
            .unwrap(),
            "Statement[0].Effect".to_string(),
            "Allwo",
        ),
        (
            "bad principal ARN",
            with_bad(stmt("P", "Allow", &["arn:aws:iam::12:user/x"], &["kms:*"])),
            "Statement[1].Principal.AWS[0]".to_string(),
            "arn:aws:iam::12:user/x",
        ),
        (
            "unknown condition operator",
            with_bad(bad_condition),
            "Statement[1].Condition.StringEqualz".to_string(),
            "StringEqualz",
        ),
        (
            "a user that does not exist",
            with_bad(stmt("G", "Allow", &[&ghost], &["kms:Decrypt"])),
            format!("Principal ({ghost})"),
            "iam create-user",
        ),
        (
            "a non-kms action",
            with_bad(stmt(
                "S3",
                "Allow",
                &[&alice],
                &["kms:Decrypt", "s3:GetObject"],
            )),
            "Statement[1].Action[1]".to_string(),
            "s3:GetObject",
        ),
        (
            "a misspelt kms action",
            with_bad(stmt("T", "Allow", &[&alice], &["kms:Decryptt"])),
            "Statement[1].Action[0]".to_string(),
            "kms:Decryptt",
        ),
    ];
    for (what, text, field, mention) in &cases {
        let f = text_file(&env, text);
        let line = env.fail(
            &["kms", "put-key-policy", "--key-id", &key, "--policy", &f],
            6,
        );
        assert_malformed(&line, field);
        assert!(
            line.contains(mention),
            "{what}: {line} does not mention {mention}"
        );
        assert_eq!(
            policy_text(&env, &key),
            before,
            "{what}: the policy changed"
        );
        // The bypass flag skips only the lockout check, not validation.
        let line = env.fail(
            &[
                "kms",
                "put-key-policy",
                "--key-id",
                &key,
                "--policy",
                &f,
                "--bypass-policy-lockout-safety-check",
            ],
            6,
        );
        assert_malformed(&line, field);
        // create-key validates the same way (and makes no key: `fail` checks the data dir).
        let line = env.fail(&["kms", "create-key", "--policy", &f], 6);
        assert_malformed(&line, field);
    }
    assert_eq!(
        env.json(&["kms", "list-keys"])["Keys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // An identity policy names no Principal.
    let with_principal = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "AWS": root },
            "Action": "kms:*",
            "Resource": "*",
        }],
    });
    let f = policy_file(&env, &with_principal);
    let line = env.fail(
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "alice",
            "--policy-name",
            "P",
            "--policy-document",
            &f,
        ],
        6,
    );
    assert_malformed(&line, "Statement[0].Principal");
    // And one without a Resource is refused too.
    let f = policy_file(
        &env,
        &doc(vec![json!({ "Effect": "Allow", "Action": "kms:*" })]),
    );
    let line = env.fail(
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "alice",
            "--policy-name",
            "P",
            "--policy-document",
            &f,
        ],
        6,
    );
    assert_malformed(&line, "Statement[0].Resource");
    let names = env.json(&["iam", "list-user-policies", "--user-name", "alice"]);
    assert_eq!(names["PolicyNames"], json!([]), "{names:#}");
    assert_eq!(policy_text(&env, &key), before);
}

// ---- 8. users and roles -------------------------------------------------------------------

#[test]
fn iam_lifecycle_of_users_roles_and_their_policies() {
    let env = Env::init();
    let acct = env.account();
    let users = env.json(&["iam", "list-users"]);
    assert_eq!(users, json!({ "Users": [], "IsTruncated": false }));

    let created = env.json(&["iam", "create-user", "--user-name", "alice"]);
    let u = &created["User"];
    assert_eq!(u["UserName"], "alice", "{created:#}");
    assert_eq!(u["Arn"], user_arn(&acct, "alice"), "{created:#}");
    assert_eq!(u["Path"], "/", "{created:#}");
    let id = str_field(u, "UserId");
    assert!(
        id.starts_with("AIDA") && id.len() == 21,
        "not an IAM user id: {id}"
    );
    let t = common::unix_time(&u["CreateDate"]);
    assert!((t - common::now()).abs() < 300, "CreateDate {t}");
    env.create_user("bob");

    let got = env.json(&["iam", "get-user", "--user-name", "alice"]);
    assert_eq!(&got["User"], u);
    let users = env.json(&["iam", "list-users"]);
    let names: Vec<&str> = users["Users"]
        .as_array()
        .expect("Users")
        .iter()
        .filter_map(|u| u["UserName"].as_str())
        .collect();
    assert_eq!(names, ["alice", "bob"], "{users:#}");

    let line = env.fail(&["iam", "create-user", "--user-name", "alice"], 9);
    assert!(line.contains("EntityAlreadyExists"), "{line}");
    assert!(line.contains("alice"), "{line}");
    let line = env.fail(&["iam", "get-user", "--user-name", "nobody"], 3);
    assert!(
        line.contains("NoSuchEntity") && line.contains("nobody"),
        "{line}"
    );

    // Unknown profiles.
    let line = env.fail(&["--profile", "nobody", "kms", "list-keys"], 3);
    assert!(line.contains("NoSuchEntity"), "{line}");
    assert!(
        line.contains("iam create-user --user-name nobody"),
        "the error says how to create the user: {line}"
    );
    let line = env.fail(&["--profile", "role/ghost", "kms", "list-keys"], 3);
    assert!(
        line.contains("iam create-role --role-name ghost"),
        "the error says how to create the role: {line}"
    );
    // CRYPTVOL_PROFILE is the same as --profile.
    let line = env.fail_env(&["kms", "list-keys"], &[("CRYPTVOL_PROFILE", "nobody")], 3);
    assert!(line.contains("nobody"), "{line}");

    // A user without IAM permissions may not create users.
    let line = env.fail(
        &as_("bob", &["iam", "create-user", "--user-name", "carol"]),
        18,
    );
    assert_denied(
        &line,
        &user_arn(&acct, "bob"),
        "iam:CreateUser",
        &user_arn(&acct, "carol"),
        &no_identity_policy("iam:CreateUser"),
    );
    // With an identity policy allowing iam:CreateUser she may.
    let p = identity("Allow", &["iam:CreateUser"], "*");
    env.put_user_policy("alice", "CreateUsers", &p);
    let got = env.json(&[
        "iam",
        "get-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "CreateUsers",
    ]);
    assert_eq!(
        got,
        json!({ "UserName": "alice", "PolicyName": "CreateUsers", "PolicyDocument": p })
    );
    let names = env.json(&["iam", "list-user-policies", "--user-name", "alice"]);
    assert_eq!(names["PolicyNames"], json!(["CreateUsers"]), "{names:#}");
    let carol = env.json(&as_(
        "alice",
        &["iam", "create-user", "--user-name", "carol"],
    ));
    assert_eq!(carol["User"]["Arn"], user_arn(&acct, "carol"), "{carol:#}");
    // ... but nothing else.
    let line = env.fail(
        &as_("alice", &["iam", "delete-user", "--user-name", "carol"]),
        18,
    );
    assert_denied(
        &line,
        &user_arn(&acct, "alice"),
        "iam:DeleteUser",
        &user_arn(&acct, "carol"),
        &no_identity_policy("iam:DeleteUser"),
    );

    // A user with an inline policy cannot be deleted.
    let line = env.fail(&["iam", "delete-user", "--user-name", "alice"], 4);
    assert!(line.contains("DeleteConflict"), "{line}");
    assert!(
        line.contains("delete-user-policy") && line.contains("CreateUsers"),
        "the error says what to delete first: {line}"
    );
    env.ok(&["iam", "get-user", "--user-name", "alice"]);
    let out = env.ok(&[
        "iam",
        "delete-user-policy",
        "--user-name",
        "alice",
        "--policy-name",
        "CreateUsers",
    ]);
    assert_eq!(out, "");
    env.fail(
        &[
            "iam",
            "get-user-policy",
            "--user-name",
            "alice",
            "--policy-name",
            "CreateUsers",
        ],
        3,
    );
    env.fail(
        &[
            "iam",
            "delete-user-policy",
            "--user-name",
            "alice",
            "--policy-name",
            "CreateUsers",
        ],
        3,
    );
    assert_eq!(
        env.ok(&["iam", "delete-user", "--user-name", "alice"]),
        "",
        "delete-user prints nothing"
    );
    env.fail(&["iam", "get-user", "--user-name", "alice"], 3);
    env.fail(&["iam", "delete-user", "--user-name", "alice"], 3);
    env.fail(&["--profile", "alice", "kms", "list-keys"], 3);
    let users = env.json(&["iam", "list-users"]);
    let names: Vec<&str> = users["Users"]
        .as_array()
        .expect("Users")
        .iter()
        .filter_map(|u| u["UserName"].as_str())
        .collect();
    assert_eq!(names, ["bob", "carol"], "{users:#}");

    // Roles.
    let role = env.json(&[
        "iam",
        "create-role",
        "--role-name",
        "ops",
        "--description",
        "operators",
    ]);
    let r = &role["Role"];
    assert_eq!(r["RoleName"], "ops", "{role:#}");
    assert_eq!(r["Arn"], role_arn(&acct, "ops"), "{role:#}");
    let rid = str_field(r, "RoleId");
    assert!(
        rid.starts_with("AROA") && rid.len() == 21,
        "not an IAM role id: {rid}"
    );
    env.fail(&["iam", "create-role", "--role-name", "ops"], 9);
    let got = env.json(&["iam", "get-role", "--role-name", "ops"]);
    assert_eq!(&got["Role"], r);
    let roles = env.json(&["iam", "list-roles"]);
    assert_eq!(roles["Roles"], json!([r]), "{roles:#}");

    let session = format!("arn:aws:sts::{acct}:assumed-role/ops/cryptvol-cli");
    let (key, arn) = {
        let m = env.create_key_meta(&["--user", &role_arn(&acct, "ops")]);
        (str_field(&m, "KeyId"), str_field(&m, "Arn"))
    };
    let blob = encrypt_as(&env, "role/ops", &key, b"ops data");
    assert_eq!(decrypt_as(&env, "role/ops", &blob), b"ops data");
    let line = env.fail(
        &as_("role/ops", &["kms", "disable-key", "--key-id", &key]),
        18,
    );
    assert_denied(
        &line,
        &session,
        "kms:DisableKey",
        &arn,
        &no_identity_policy("kms:DisableKey"),
    );
    let line = encrypt_denied(&env, "bob", &key);
    assert_denied(
        &line,
        &user_arn(&acct, "bob"),
        "kms:Encrypt",
        &arn,
        &no_identity_policy("kms:Encrypt"),
    );
    // A role policy opens what the key policy delegates to the account.
    let rp = identity("Allow", &["kms:DisableKey", "kms:EnableKey"], "*");
    let f = policy_file(&env, &rp);
    env.ok(&[
        "iam",
        "put-role-policy",
        "--role-name",
        "ops",
        "--policy-name",
        "Toggle",
        "--policy-document",
        &f,
    ]);
    let got = env.json(&[
        "iam",
        "get-role-policy",
        "--role-name",
        "ops",
        "--policy-name",
        "Toggle",
    ]);
    assert_eq!(got["PolicyDocument"], rp, "{got:#}");
    assert_eq!(got["RoleName"], "ops", "{got:#}");
    let names = env.json(&["iam", "list-role-policies", "--role-name", "ops"]);
    assert_eq!(names["PolicyNames"], json!(["Toggle"]), "{names:#}");
    env.ok(&as_("role/ops", &["kms", "disable-key", "--key-id", &key]));
    assert_eq!(env.describe(&key)["KeyState"], "Disabled");
    env.ok(&as_("role/ops", &["kms", "enable-key", "--key-id", &key]));
    assert_eq!(env.describe(&key)["KeyState"], "Enabled");

    let line = env.fail(&["iam", "delete-role", "--role-name", "ops"], 4);
    assert!(
        line.contains("DeleteConflict") && line.contains("delete-role-policy"),
        "{line}"
    );
    env.ok(&[
        "iam",
        "delete-role-policy",
        "--role-name",
        "ops",
        "--policy-name",
        "Toggle",
    ]);
    // A role still named in a key policy may be deleted (as in IAM).
    env.ok(&["iam", "delete-role", "--role-name", "ops"]);
    env.fail(&["iam", "get-role", "--role-name", "ops"], 3);
    env.fail(&["--profile", "role/ops", "kms", "list-keys"], 3);
    assert_eq!(
        env.json(&["iam", "list-roles"]),
        json!({ "Roles": [], "IsTruncated": false })
    );
}

// ---- 9. the managed key -------------------------------------------------------------------

/// Creates user alice and, as her, a volume under `alias/aws/ebs`; returns (volume,
/// managed key ARN).
#[track_caller]
fn managed_key_volume(env: &Env) -> (String, String) {
    env.create_user("alice");
    let vol = str_field(
        &env.json(&as_("alice", &["volume", "create", "--size", "64M"])),
        "VolumeId",
    );
    let m = env.describe("alias/aws/ebs");
    assert_eq!(m["KeyManager"], "AWS", "{m:#}");
    let arn = str_field(&m, "Arn");
    assert_eq!(
        str_field(&env.json(&["volume", "describe", &vol]), "KmsKeyId"),
        arn
    );
    (vol, arn)
}

#[test]
fn managed_key_refuses_direct_use_by_anyone() {
    let env = Env::init();
    let acct = env.account();
    let alice = user_arn(&acct, "alice");
    let root = root_arn(&acct);
    let (vol, arn) = managed_key_volume(&env);

    for who in [(alice.as_str(), "alice"), (root.as_str(), "root")] {
        let (caller, profile) = who;
        let line = env.fail(
            &as_(
                profile,
                &[
                    "kms",
                    "generate-data-key",
                    "--key-id",
                    "alias/aws/ebs",
                    "--key-spec",
                    "AES_256",
                ],
            ),
            18,
        );
        assert_denied(
            &line,
            caller,
            "kms:GenerateDataKey",
            &arn,
            &no_resource_policy("kms:GenerateDataKey"),
        );
        let line = encrypt_denied(&env, profile, "alias/aws/ebs");
        assert_denied(
            &line,
            caller,
            "kms:Encrypt",
            &arn,
            &no_resource_policy("kms:Encrypt"),
        );
        let w = env.fileb(&wrapped_key(&env, &vol));
        let ctx = lineage_ctx(&lineage(&env, &vol));
        let line = env.fail(
            &as_(
                profile,
                &[
                    "kms",
                    "decrypt",
                    "--ciphertext-blob",
                    &w,
                    "--encryption-context",
                    &ctx,
                ],
            ),
            18,
        );
        assert_denied(
            &line,
            caller,
            "kms:Decrypt",
            &arn,
            &no_resource_policy("kms:Decrypt"),
        );
    }
    // The account may read its metadata and policy, which allows EBS only.
    let p = policy_json(&env, "alias/aws/ebs");
    let text = p.to_string();
    assert!(text.contains(VIA_EBS), "{p:#}");
    // A user reads metadata only if IAM allows it (the policy delegates to the account).
    let line = env.fail(
        &as_(
            "alice",
            &["kms", "describe-key", "--key-id", "alias/aws/ebs"],
        ),
        18,
    );
    assert_denied(
        &line,
        &alice,
        "kms:DescribeKey",
        &arn,
        &no_identity_policy("kms:DescribeKey"),
    );
}

#[test]
fn managed_key_serves_only_volumes() {
    needs!(Fuse);
    let v = VolEnv::new();
    let acct = v.account();
    let (vol, arn) = managed_key_volume(&v);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &["--profile", "alice"]);
    let f = open_rw(&path);
    pwrite(&f, 0, b"through EBS");
    f.sync_all().expect("fsync");
    drop(f);
    detach(&v, &dir);
    // Root attaches it too, through the same service.
    let path = v.attach(&vol, &dir, &[]);
    assert_eq!(pread(&open_rw(&path), 0, 11), b"through EBS");
    detach(&v, &dir);

    for (caller, profile) in [
        (user_arn(&acct, "alice"), "alice"),
        (root_arn(&acct), "root"),
    ] {
        let line = v.fail(
            &as_(
                profile,
                &[
                    "kms",
                    "generate-data-key",
                    "--key-id",
                    "alias/aws/ebs",
                    "--number-of-bytes",
                    "32",
                ],
            ),
            18,
        );
        assert_denied(
            &line,
            &caller,
            "kms:GenerateDataKey",
            &arn,
            &no_resource_policy("kms:GenerateDataKey"),
        );
    }
}

/// A key policy binds the users it names by their unique ids, as AWS does: a user deleted
/// and created again under the same name is not the user the policy meant.
#[test]
fn a_recreated_user_does_not_inherit_the_old_users_access() {
    let env = Env::init();
    let acct = env.account();
    env.create_user("alice");
    let alice = user_arn(&acct, "alice");
    let meta = env.json(&["kms", "create-key", "--user", &alice]);
    let key = str_field(&meta["KeyMetadata"], "KeyId");
    let blob = encrypt_as(&env, "alice", &key, b"before");
    assert_eq!(decrypt_as(&env, "alice", &blob), b"before");

    env.ok(&["iam", "delete-user", "--user-name", "alice"]);
    env.create_user("alice");
    let line = encrypt_denied(&env, "alice", &key);
    // The default root statement still delegates to IAM, and the new alice has no
    // identity policy: she gets what any new user of the account gets, which is nothing.
    assert!(line.contains(&no_identity_policy("kms:Encrypt")), "{line}");
    decrypt_denied(&env, "alice", &blob);

    // Naming her again binds the new identity.
    let policy = policy_json(&env, &key);
    put_policy(&env, &key, &policy);
    assert_eq!(decrypt_as(&env, "alice", &blob), b"before");
}

/// Access keys for the KMS server: at most two per user, the secret shown once and kept
/// only sealed (never in iam.json), listed without secrets, and a user with keys cannot be
/// deleted until they are.
#[test]
fn access_keys_are_shown_once_kept_sealed_and_block_user_deletion() {
    let env = Env::init();
    env.create_user("svc");
    let mut ids = vec![];
    for _ in 0..2 {
        let k = env.json(&["iam", "create-access-key", "--user-name", "svc"]);
        let id = str_field(&k["AccessKey"], "AccessKeyId");
        let secret = str_field(&k["AccessKey"], "SecretAccessKey");
        assert!(id.starts_with("AKIA") && id.len() == 20, "{id}");
        assert_eq!(secret.len(), 40, "a secret like AWS's");
        assert_eq!(k["AccessKey"]["Status"], "Active");
        env.add_secret(secret.as_bytes());
        let iam = std::fs::read(env.data.join("iam.json")).unwrap();
        assert_no_secret("iam.json", &iam, secret.as_bytes());
        ids.push(id);
    }
    assert_eq!(mode(&env.data.join("iam.key")), 0o600);
    assert_eq!(mode(&env.data.join("iam.json")), 0o600);
    let line = env.fail(&["iam", "create-access-key", "--user-name", "svc"], 4);
    assert!(
        line.contains("LimitExceededException") && line.contains("2 access keys"),
        "{line}"
    );

    let listed = env.json(&["iam", "list-access-keys", "--user-name", "svc"]);
    let got: Vec<String> = listed["AccessKeyMetadata"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert!(
                k.get("SecretAccessKey").is_none(),
                "a listing shows no secret: {k}"
            );
            str_field(k, "AccessKeyId")
        })
        .collect();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);

    let line = env.fail(&["iam", "delete-user", "--user-name", "svc"], 4);
    assert!(line.contains("delete-access-key"), "{line}");
    env.fail(
        &[
            "iam",
            "delete-access-key",
            "--user-name",
            "svc",
            "--access-key-id",
            "AKIANOTAKEY000000000",
        ],
        3,
    );
    for id in &ids {
        env.ok(&[
            "iam",
            "delete-access-key",
            "--user-name",
            "svc",
            "--access-key-id",
            id,
        ]);
    }
    env.ok(&["iam", "delete-user", "--user-name", "svc"]);
    // Another user may not make keys for someone else without iam permissions.
    env.create_user("a");
    env.create_user("b");
    env.fail(
        &as_("a", &["iam", "create-access-key", "--user-name", "b"]),
        18,
    );
}
