//! A volume's grant to the volume service, as EBS makes one: created with the volume
//! (and with a volume restored from a snapshot), constrained to the volume's lineage,
//! retired when the volume is deleted; a user whom an identity policy allows
//! `ec2:AttachVolume` attaches through it without `kms:Decrypt` on the key, and the trail
//! shows the service's Decrypt on that user's behalf with the grant id.
//!
//! Needs FUSE; without it the test skips, unless `CRYPTVOL_REQUIRE_MOUNT=1`.

mod common;

use common::mount::*;
use common::{Env, str_field, unb64};
use serde_json::{Value, json};

const SERVICE: &str = "ec2.local-1.amazonaws.com";

fn identity(effect: &str, action: &str, resource: &str) -> Value {
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": effect, "Action": action, "Resource": resource}]})
}

/// The key's grants named after `vol`.
#[track_caller]
fn grants_of(env: &Env, key: &str, vol: &str) -> Vec<Value> {
    let v = env.json(&["kms", "list-grants", "--key-id", key]);
    v["Grants"]
        .as_array()
        .expect("Grants")
        .iter()
        .filter(|g| g["Name"] == vol)
        .cloned()
        .collect()
}

#[test]
fn a_user_attaches_a_volume_through_the_volume_service_grant_only() {
    needs!(Fuse);
    let v = VolEnv::new();
    let acct = v.account();
    for user in ["alice", "bob"] {
        v.ok(&["iam", "create-user", "--user-name", user]);
    }
    // The default key policy delegates to IAM; neither user has any kms: permission.
    let key = v.create_key();
    let a = v.create(&["--size", "64M", "--kms-key", &key]);
    let b = v.create(&["--size", "64M", "--kms-key", &key]);

    // The grant made with A: to the volume service, Decrypt only, bound to A's lineage.
    let grants = grants_of(&v, &key, &a);
    assert_eq!(grants.len(), 1, "{grants:#?}");
    let g = &grants[0];
    assert_eq!(g["GranteePrincipal"], SERVICE, "{g:#}");
    assert_eq!(g["RetiringPrincipal"], SERVICE, "{g:#}");
    assert_eq!(g["Operations"], json!(["Decrypt"]), "{g:#}");
    assert_eq!(
        g["Constraints"],
        json!({"EncryptionContextSubset": {"cryptvol:lineage": a}}),
        "{g:#}"
    );
    let grant_a = str_field(g, "GrantId");
    assert_eq!(grants_of(&v, &key, &b).len(), 1);

    // alice may attach A (and only A), but may not decrypt its key herself.
    let a_arn = format!("arn:aws:ec2:local-1:{acct}:volume/{a}");
    v.put_user_policy(
        "alice",
        "volumes",
        &identity("Allow", "ec2:AttachVolume", &a_arn),
    );
    let wrapped = v.fileb(&unb64(&str_field(
        &v.json(&["inspect", "volume", &a]),
        "WrappedDataKey",
    )));
    let ctx = json!({"cryptvol:lineage": a}).to_string();
    v.fail(
        &[
            "--profile",
            "alice",
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &wrapped,
            "--encryption-context",
            &ctx,
        ],
        18,
    );

    let da = v.dir("a");
    let path = v.attach(&a, &da, &["--profile", "alice"]);
    let f = open_rw(&path);
    pwrite(&f, 8192, b"attached through a grant");
    f.sync_all().expect("fsync");
    assert_eq!(pread(&f, 8192, 24), b"attached through a grant");
    drop(f);
    v.detach(&da);
    assert!(v.wait_no_daemon(std::time::Duration::from_secs(10)));

    // The trail: the service decrypted on alice's behalf, through A's grant.
    let ev: Vec<Value> = v
        .lookup(&["--principal", "alice", "--event-name", "Decrypt"])
        .into_iter()
        .filter(|e| e.get("errorCode").is_none())
        .collect();
    assert_eq!(ev.len(), 1, "{ev:#?}");
    let e = &ev[0];
    assert_eq!(e["userIdentity"]["type"], "AWSService", "{e:#}");
    assert_eq!(e["userIdentity"]["invokedBy"], SERVICE, "{e:#}");
    assert_eq!(
        e["userIdentity"]["onBehalfOf"]["arn"],
        format!("arn:aws:iam::{acct}:user/alice"),
        "{e:#}"
    );
    assert_eq!(
        e["additionalEventData"]["grantId"],
        grant_a.as_str(),
        "{e:#}"
    );

    // alice's policy names A only: B falls back to her own kms:Decrypt, which she lacks.
    let db = v.dir("b");
    v.attach_run(&b, &db, &["--profile", "alice"]).fails(18);
    assert!(!is_mount_point(&db));
    // bob has no ec2:AttachVolume and no kms:Decrypt.
    let line = v.attach_run(&a, &da, &["--profile", "bob"]).fails(18);
    assert!(line.contains("kms:Decrypt"), "{line}");
    // An explicit Deny of ec2:AttachVolume refuses even a user who may decrypt the key.
    v.put_user_policy(
        "bob",
        "volumes",
        &json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
            {"Effect": "Deny", "Action": "ec2:AttachVolume", "Resource": "*"}]}),
    );
    let line = v.attach_run(&a, &da, &["--profile", "bob"]).fails(18);
    assert!(
        line.contains("ec2:AttachVolume") && line.contains("explicit deny"),
        "{line}"
    );
    assert!(!is_mount_point(&da));

    // A volume restored from a snapshot of A gets a grant of its own (same lineage).
    let snap = str_field(&v.json(&["snapshot", "create", &a]), "SnapshotId");
    let r = str_field(
        &v.json(&["volume", "create", "--from-snapshot", &snap]),
        "VolumeId",
    );
    let grants = grants_of(&v, &key, &r);
    assert_eq!(grants.len(), 1, "{grants:#?}");
    assert_eq!(
        grants[0]["Constraints"],
        json!({"EncryptionContextSubset": {"cryptvol:lineage": a}})
    );

    // Deleting A retires A's grant, and only it; alice can no longer attach anything.
    v.ok(&["volume", "delete", &a, "--yes"]);
    assert!(grants_of(&v, &key, &a).is_empty());
    assert_eq!(grants_of(&v, &key, &b).len(), 1);
    assert_eq!(grants_of(&v, &key, &r).len(), 1);
    let retired = v.json(&["audit", "lookup", "--event-name", "RetireGrant"]);
    let retired = retired["Events"].as_array().expect("Events");
    assert!(
        retired
            .iter()
            .any(|e| e["userIdentity"]["type"] == "AWSService"
                && e["requestParameters"]["grantId"] == grant_a.as_str()
                && e.get("errorCode").is_none()),
        "{retired:#?}"
    );
}
