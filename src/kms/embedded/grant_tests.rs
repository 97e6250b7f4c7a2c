//! The decision table of grants: what a live grant allows, what beats it, and what ends it.

use super::*;
use crate::aws::ids::Region;
use crate::iam::{EntityKind, Identity};
use crate::kms::model::DAY;
use crate::kms::{CreateKeyRequest, DataKeySpec};
use crate::sys::clock::Clock;

struct World {
    _d: tempfile::TempDir,
    kms: EmbeddedKms,
    key: KeyRef,
}

fn world() -> World {
    let d = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(d.path(), &r, None, 0).unwrap();
    let mut no = || -> Result<crate::crypto::SecretBytes> { panic!("no passphrase") };
    let kms = EmbeddedKms::open_region(d.path(), &r, &mut no, Clock::System).unwrap();
    let id = kms
        .create_key(&root(&kms), &CreateKeyRequest::default())
        .unwrap()
        .key_id;
    World {
        _d: d,
        key: KeyRef::parse(&id).unwrap(),
        kms,
    }
}

fn root(kms: &EmbeddedKms) -> Caller {
    Caller::local(Identity::root(kms.account().clone()))
}

/// A user (or role) with no identity policy; returns the caller and its ARN.
fn principal(kms: &EmbeddedKms, kind: EntityKind, name: &str) -> (Caller, String) {
    kms.identities.create(kind, name, "", None).unwrap();
    let body = kms.identities.load().unwrap();
    let id = kms.identities.identity_of(&body, kind, name).unwrap();
    (Caller::local(id), kms.identities.arn_of(kind, name))
}

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .unwrap()
}

fn subset(pairs: &[(&str, &str)]) -> Option<GrantConstraintsInput> {
    Some(GrantConstraintsInput {
        encryption_context_subset: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    })
}

fn grant(
    w: &World,
    grantee: &str,
    ops: &[&str],
    constraints: Option<GrantConstraintsInput>,
) -> CreateGrantResponse {
    w.kms
        .create_grant(
            &root(&w.kms),
            &CreateGrantRequest {
                key: w.key.clone(),
                grantee_principal: grantee.to_string(),
                retiring_principal: None,
                operations: ops.iter().map(|s| s.to_string()).collect(),
                constraints,
                name: None,
            },
        )
        .unwrap()
}

fn blob(w: &World, c: &EncryptionContext) -> Vec<u8> {
    w.kms
        .encrypt(&root(&w.kms), &w.key, b"secret", c)
        .unwrap()
        .ciphertext_blob
}

fn denied<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(AwsError::AccessDenied { message }) => message,
        other => panic!("expected AccessDenied, got {other:?}"),
    }
}

#[test]
fn a_grant_allows_its_operations_and_nothing_else() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    let c = ctx(&[("purpose", "test")]);
    let b = blob(&w, &c);
    denied(w.kms.decrypt(&bob, &b, &c, None));
    grant(&w, &arn, &["Decrypt", "GenerateDataKey"], None);
    assert_eq!(
        w.kms
            .decrypt(&bob, &b, &c, None)
            .unwrap()
            .plaintext
            .expose(),
        b"secret"
    );
    w.kms
        .generate_data_key(&bob, &w.key, DataKeySpec::Aes256, &c)
        .unwrap();
    // Wrong operation: Encrypt, DescribeKey and management are still refused.
    denied(w.kms.encrypt(&bob, &w.key, b"x", &c));
    denied(w.kms.describe_key(&bob, &w.key));
    denied(w.kms.disable_key(&bob, &w.key));
    // Another user gets nothing from bob's grant.
    let (carol, _) = principal(&w.kms, EntityKind::User, "carol");
    denied(w.kms.decrypt(&carol, &b, &c, None));
}

#[test]
fn explicit_deny_beats_a_grant() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    let c = EncryptionContext::new();
    let b = blob(&w, &c);
    grant(&w, &arn, &["Decrypt"], None);
    w.kms.decrypt(&bob, &b, &c, None).unwrap();
    // In an identity policy…
    w.kms
        .identities
        .put_policy(
            EntityKind::User,
            "bob",
            "no-decrypt",
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"kms:Decrypt","Resource":"*"}]}"#,
        )
        .unwrap();
    let body = w.kms.identities.load().unwrap();
    let bob2 = Caller::local(
        w.kms
            .identities
            .identity_of(&body, EntityKind::User, "bob")
            .unwrap(),
    );
    assert!(
        denied(w.kms.decrypt(&bob2, &b, &c, None))
            .contains("explicit deny in an identity-based policy")
    );
    // …and in the key policy.
    let acct = w.kms.account().to_string();
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{acct}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Deny","Principal":{{"AWS":"{arn}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
    );
    w.kms
        .put_key_policy(&root(&w.kms), &w.key, "default", &policy, false)
        .unwrap();
    assert!(
        denied(w.kms.decrypt(&bob, &b, &c, None))
            .contains("explicit deny in a resource-based policy")
    );
}

#[test]
fn constraints_bind_the_encryption_context() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    grant(&w, &arn, &["Decrypt"], subset(&[("Lineage", "vol-1")]));
    let exact = ctx(&[("lineage", "vol-1")]);
    let more = ctx(&[("lineage", "vol-1"), ("x", "y")]);
    let wrong = ctx(&[("lineage", "vol-2")]);
    let case = ctx(&[("lineage", "VOL-1")]);
    // Keys compare without case, values exactly; a subset allows extra pairs.
    w.kms
        .decrypt(&bob, &blob(&w, &exact), &exact, None)
        .unwrap();
    w.kms.decrypt(&bob, &blob(&w, &more), &more, None).unwrap();
    denied(w.kms.decrypt(&bob, &blob(&w, &wrong), &wrong, None));
    denied(w.kms.decrypt(&bob, &blob(&w, &case), &case, None));
    let empty = EncryptionContext::new();
    denied(w.kms.decrypt(&bob, &blob(&w, &empty), &empty, None));

    let (eve, eve_arn) = principal(&w.kms, EntityKind::User, "eve");
    grant(
        &w,
        &eve_arn,
        &["Decrypt"],
        Some(GrantConstraintsInput {
            encryption_context_equals: Some([("lineage".to_string(), "vol-1".to_string())].into()),
            ..Default::default()
        }),
    );
    w.kms
        .decrypt(&eve, &blob(&w, &exact), &exact, None)
        .unwrap();
    denied(w.kms.decrypt(&eve, &blob(&w, &more), &more, None));
}

#[test]
fn retired_and_revoked_grants_allow_nothing() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    let c = EncryptionContext::new();
    let b = blob(&w, &c);
    let g = grant(&w, &arn, &["Decrypt", "RetireGrant"], None);
    w.kms.decrypt(&bob, &b, &c, None).unwrap();
    w.kms
        .retire_grant(
            &bob,
            &RetireGrantRequest {
                grant_token: Some(g.grant_token.clone()),
                ..Default::default()
            },
        )
        .unwrap();
    denied(w.kms.decrypt(&bob, &b, &c, None));
    // Its token is still well formed, but names no live grant.
    assert!(matches!(
        w.kms.retire_grant(
            &bob,
            &RetireGrantRequest {
                grant_token: Some(g.grant_token),
                ..Default::default()
            }
        ),
        Err(AwsError::NotFound { .. })
    ));
    let g = grant(&w, &arn, &["Decrypt"], None);
    w.kms.decrypt(&bob, &b, &c, None).unwrap();
    // The grantee without RetireGrant cannot retire it; the key's admin revokes it.
    denied(w.kms.retire_grant(
        &bob,
        &RetireGrantRequest {
            key: Some(w.key.clone()),
            grant_id: Some(g.grant_id.clone()),
            ..Default::default()
        },
    ));
    denied(w.kms.revoke_grant(&bob, &w.key, &g.grant_id));
    w.kms
        .revoke_grant(&root(&w.kms), &w.key, &g.grant_id)
        .unwrap();
    denied(w.kms.decrypt(&bob, &b, &c, None));
    assert!(matches!(
        w.kms.revoke_grant(&root(&w.kms), &w.key, &g.grant_id),
        Err(AwsError::NotFound { .. })
    ));
    assert!(matches!(
        w.kms.revoke_grant(&root(&w.kms), &w.key, "abc"),
        Err(AwsError::InvalidGrantId { .. })
    ));
}

#[test]
fn a_role_grantee_is_its_sessions() {
    let w = world();
    let (ops, role_arn) = principal(&w.kms, EntityKind::Role, "ops");
    let c = EncryptionContext::new();
    let b = blob(&w, &c);
    denied(w.kms.decrypt(&ops, &b, &c, None));
    grant(&w, &role_arn, &["Decrypt"], None);
    w.kms.decrypt(&ops, &b, &c, None).unwrap();
    // A grant to the session ARN works too.
    let (dev, _) = principal(&w.kms, EntityKind::Role, "dev");
    let acct = w.kms.account().to_string();
    grant(
        &w,
        &format!("arn:aws:sts::{acct}:assumed-role/dev/cryptvol-cli"),
        &["Decrypt"],
        None,
    );
    w.kms.decrypt(&dev, &b, &c, None).unwrap();
}

#[test]
fn a_service_decrypts_only_through_its_constrained_grant() {
    let w = world();
    let (alice, _) = principal(&w.kms, EntityKind::User, "alice");
    let svc_name = crate::iam::caller::volume_service(w.kms.region());
    let svc = Caller::aws_service(&svc_name, &alice);
    let vol = ctx(&[("cryptvol:lineage", "vol-1")]);
    let other = ctx(&[("cryptvol:lineage", "vol-2")]);
    let (b1, b2) = (blob(&w, &vol), blob(&w, &other));
    assert!(denied(w.kms.decrypt(&svc, &b1, &vol, None)).contains(&svc_name));
    let g = grant(
        &w,
        &svc_name,
        &["Decrypt"],
        subset(&[("cryptvol:lineage", "vol-1")]),
    );
    w.kms.decrypt(&svc, &b1, &vol, None).unwrap();
    denied(w.kms.decrypt(&svc, &b2, &other, None));
    // The trail shows the service, the user it acted for, and the grant.
    let e = {
        let mut call = Call::new("Decrypt", true);
        call.grant_id = Some(g.grant_id.clone());
        call.event(&svc, w.kms.region(), w.kms.account(), Ok(()), 0)
    };
    assert_eq!(e["userIdentity"]["type"], "AWSService");
    assert_eq!(e["userIdentity"]["invokedBy"], svc_name.as_str());
    assert_eq!(e["userIdentity"]["onBehalfOf"]["userName"], "alice");
    assert_eq!(e["additionalEventData"]["grantId"], g.grant_id.as_str());
    // A key policy naming the service lets it in directly.
    let acct = w.kms.account().to_string();
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{acct}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Allow","Principal":{{"Service":"{svc_name}"}},"Action":"kms:Decrypt","Resource":"*"}}]}}"#
    );
    w.kms
        .put_key_policy(&root(&w.kms), &w.key, "default", &policy, false)
        .unwrap();
    w.kms.decrypt(&svc, &b2, &other, None).unwrap();
}

#[test]
fn create_grant_through_a_grant_gives_no_more_than_it_has() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    let (_, carol) = principal(&w.kms, EntityKind::User, "carol");
    grant(&w, &arn, &["Decrypt", "CreateGrant"], subset(&[("a", "1")]));
    let req = |ops: &[&str], c: Option<GrantConstraintsInput>| CreateGrantRequest {
        key: w.key.clone(),
        grantee_principal: carol.clone(),
        retiring_principal: None,
        operations: ops.iter().map(|s| s.to_string()).collect(),
        constraints: c,
        name: None,
    };
    w.kms
        .create_grant(&bob, &req(&["Decrypt"], subset(&[("a", "1"), ("b", "2")])))
        .unwrap();
    denied(
        w.kms
            .create_grant(&bob, &req(&["Decrypt", "Encrypt"], subset(&[("a", "1")]))),
    );
    denied(w.kms.create_grant(&bob, &req(&["Decrypt"], None)));
    denied(
        w.kms
            .create_grant(&bob, &req(&["Decrypt"], subset(&[("a", "2")]))),
    );
}

#[test]
fn grant_condition_keys_reach_the_policy() {
    let w = world();
    let (alice, _) = principal(&w.kms, EntityKind::User, "alice");
    let (_, bob) = principal(&w.kms, EntityKind::User, "bob");
    let acct = w.kms.account().to_string();
    // alice may create grants only for Decrypt/Encrypt, only through an AWS service.
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{acct}:root"}},"Action":"kms:*","Resource":"*"}},
        {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{acct}:user/alice"}},"Action":"kms:CreateGrant","Resource":"*",
          "Condition":{{"ForAllValues:StringEquals":{{"kms:GrantOperations":["Decrypt","Encrypt"]}},
                        "Bool":{{"kms:GrantIsForAWSResource":"true"}},
                        "StringEquals":{{"kms:GrantConstraintType":"EncryptionContextSubset"}}}}}}]}}"#
    );
    w.kms
        .put_key_policy(&root(&w.kms), &w.key, "default", &policy, false)
        .unwrap();
    let req = |ops: &[&str], c| CreateGrantRequest {
        key: w.key.clone(),
        grantee_principal: bob.clone(),
        retiring_principal: None,
        operations: ops.iter().map(|s| s.to_string()).collect(),
        constraints: c,
        name: None,
    };
    let via = alice.via_volumes(w.kms.region());
    w.kms
        .create_grant(&via, &req(&["Decrypt", "Encrypt"], subset(&[("a", "1")])))
        .unwrap();
    denied(
        w.kms
            .create_grant(&alice, &req(&["Decrypt"], subset(&[("a", "1")]))),
    );
    denied(w.kms.create_grant(
        &via,
        &req(&["Decrypt", "DescribeKey"], subset(&[("a", "1")])),
    ));
    denied(w.kms.create_grant(&via, &req(&["Decrypt"], None)));
}

#[test]
fn validation_tokens_names_and_limits() {
    let w = world();
    let (_, bob) = principal(&w.kms, EntityKind::User, "bob");
    let r = |grantee: &str, ops: &[&str], name: Option<&str>| CreateGrantRequest {
        key: w.key.clone(),
        grantee_principal: grantee.to_string(),
        retiring_principal: None,
        operations: ops.iter().map(|s| s.to_string()).collect(),
        constraints: None,
        name: name.map(str::to_string),
    };
    let root = root(&w.kms);
    let invalid = |req: CreateGrantRequest| {
        assert!(
            matches!(
                w.kms.create_grant(&root, &req),
                Err(AwsError::Validation { .. })
            ),
            "{req:?}"
        )
    };
    invalid(r("bob", &["Decrypt"], None));
    invalid(r("arn:aws:iam::123:user/bob", &["Decrypt"], None));
    invalid(r("Ec2.amazonaws.com", &["Decrypt"], None));
    invalid(r(&bob, &[], None));
    invalid(r(&bob, &["Sign"], None));
    invalid(r(&bob, &["decrypt"], None));
    invalid(r(&bob, &["Decrypt"], Some("bad name")));
    invalid(r(&format!("{bob}x"), &["Decrypt"], None));
    let mut c = r(&bob, &["DescribeKey"], None);
    c.constraints = subset(&[("a", "1")]);
    invalid(c);
    // The same Name and parameters: the same grant, a new token.
    let a = w
        .kms
        .create_grant(&root, &r(&bob, &["Decrypt"], Some("n/1")))
        .unwrap();
    let b = w
        .kms
        .create_grant(&root, &r(&bob, &["Decrypt"], Some("n/1")))
        .unwrap();
    assert_eq!(a.grant_id, b.grant_id);
    assert_ne!(a.grant_token, b.grant_token);
    let c = w
        .kms
        .create_grant(&root, &r(&bob, &["Encrypt"], Some("n/1")))
        .unwrap();
    assert_ne!(a.grant_id, c.grant_id);
    let d = w
        .kms
        .create_grant(&root, &r(&bob, &["Decrypt"], None))
        .unwrap();
    assert_ne!(a.grant_id, d.grant_id);
    assert_eq!(a.grant_id.len(), 64);
    // Tokens: any of a grant's tokens work; altered or foreign ones are refused.
    w.kms
        .check_grant_tokens(&[a.grant_token.clone(), b.grant_token.clone()])
        .unwrap();
    let mut bytes = crate::aws::b64::decode(&a.grant_token).unwrap();
    bytes[30] ^= 1;
    let altered = crate::aws::b64::encode(&bytes);
    assert!(matches!(
        w.kms.check_grant_tokens(&[altered]),
        Err(AwsError::InvalidGrantToken { .. })
    ));
    assert!(matches!(
        w.kms.check_grant_tokens(&vec![a.grant_token.clone(); 11]),
        Err(AwsError::Validation { .. })
    ));
    let bob_caller =
        Caller::local(Identity::root(w.kms.account().clone())).with_grant_tokens(vec!["x".into()]);
    assert!(matches!(
        w.kms.describe_key(&bob_caller, &w.key),
        Err(AwsError::InvalidGrantToken { .. })
    ));
    // The quota.
    let list = vec![
        GrantRecord {
            id: String::new(),
            name: None,
            created: 0,
            grantee: bob.clone(),
            grantee_id: None,
            retiring: None,
            retiring_id: None,
            issuing_account: String::new(),
            operations: vec![],
            constraint: None,
        };
        MAX_GRANTS_PER_KEY
    ];
    assert!(matches!(
        check_grant_limit(&list, "k"),
        Err(AwsError::LimitExceeded { .. })
    ));
    assert!(check_grant_limit(&list[1..], "k").is_ok());
}

#[test]
fn listing_pages_and_deleted_keys_take_their_grants() {
    let w = world();
    let (_, bob) = principal(&w.kms, EntityKind::User, "bob");
    let root = root(&w.kms);
    let mut ids = vec![];
    for _ in 0..5 {
        let g = w
            .kms
            .create_grant(
                &root,
                &CreateGrantRequest {
                    key: w.key.clone(),
                    grantee_principal: bob.clone(),
                    retiring_principal: Some(bob.clone()),
                    operations: vec!["Decrypt".into()],
                    constraints: None,
                    name: None,
                },
            )
            .unwrap();
        ids.push(g.grant_id);
    }
    let list = |marker: Option<String>| {
        w.kms
            .list_grants(
                &root,
                &ListGrantsRequest {
                    key: w.key.clone(),
                    grant_id: None,
                    grantee_principal: None,
                    limit: Some(2),
                    marker,
                },
            )
            .unwrap()
    };
    let mut seen = vec![];
    let mut marker = None;
    loop {
        let p = list(marker);
        seen.extend(p.grants.iter().map(|g| g.grant_id.clone()));
        if !p.truncated {
            assert!(p.next_marker.is_none());
            break;
        }
        marker = p.next_marker;
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let r = w
        .kms
        .list_retirable_grants(&root, &bob, None, None)
        .unwrap();
    assert_eq!(r.grants.len(), 5);
    // Deleting the key takes its grants with it.
    w.kms.schedule_key_deletion(&root, &w.key, Some(7)).unwrap();
    let later = EmbeddedKms::open(
        w.kms.dir.clone(),
        w.kms.root().unwrap(),
        Clock::Skewed(8 * DAY),
    )
    .unwrap();
    assert!(later.read(|ks, _| Ok(ks.body.grants.is_empty())).unwrap());
}

#[path = "grant_attack_tests.rs"]
mod attack;
