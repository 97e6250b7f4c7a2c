//! Hostile cases of grants: encryption contexts whose keys differ only by case, principals
//! deleted and created again under the same name, and the volume service's grant used for
//! another volume than the one the caller may attach.

use super::*;
use crate::kms::{KeyBackend, Session};

fn equals(pairs: &[(&str, &str)]) -> Option<GrantConstraintsInput> {
    Some(GrantConstraintsInput {
        encryption_context_equals: Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    })
}

#[test]
fn equals_refuses_a_context_with_an_extra_key_differing_only_by_case() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    grant(
        &w,
        &arn,
        &["Encrypt", "Decrypt"],
        equals(&[("purpose", "x")]),
    );
    // The constrained context itself is allowed.
    let ok = ctx(&[("purpose", "x")]);
    w.kms.encrypt(&bob, &w.key, b"m", &ok).unwrap();
    // A context with one more pair is not "equal", whatever the case of its key.
    let extra = ctx(&[("PURPOSE", "anything"), ("purpose", "x")]);
    denied(w.kms.encrypt(&bob, &w.key, b"m", &extra));
    let b = blob(&w, &extra);
    denied(w.kms.decrypt(&bob, &b, &extra, None));
    // Nor does a key in another case satisfy Equals when its value differs.
    let other = ctx(&[("Purpose", "x"), ("purpose", "y")]);
    denied(w.kms.encrypt(&bob, &w.key, b"m", &other));
    // Keys still compare case-insensitively (AWS's rule for constraints).
    w.kms
        .encrypt(&bob, &w.key, b"m", &ctx(&[("PURPOSE", "x")]))
        .unwrap();
}

#[test]
fn a_child_grant_cannot_loosen_equals_with_case_colliding_keys() {
    let w = world();
    let (bob, arn) = principal(&w.kms, EntityKind::User, "bob");
    let (_, carol) = principal(&w.kms, EntityKind::User, "carol");
    grant(&w, &arn, &["Decrypt", "CreateGrant"], equals(&[("a", "1")]));
    let req = |c: Option<GrantConstraintsInput>| CreateGrantRequest {
        key: w.key.clone(),
        grantee_principal: carol.clone(),
        retiring_principal: None,
        operations: vec!["Decrypt".into()],
        constraints: c,
        name: None,
    };
    // {a:1, A:2} lets through a context that the parent's {a:1} refuses.
    denied(
        w.kms
            .create_grant(&bob, &req(equals(&[("a", "1"), ("A", "2")]))),
    );
    // The same constraint in another case of its key is as strict.
    w.kms
        .create_grant(&bob, &req(equals(&[("A", "1")])))
        .unwrap();
    // A parent whose Subset has two pairs differing by case does not pass on a child
    // that names only one of them.
    let (dave, dave_arn) = principal(&w.kms, EntityKind::User, "dave");
    grant(
        &w,
        &dave_arn,
        &["Decrypt", "CreateGrant"],
        subset(&[("A", "2"), ("a", "1")]),
    );
    denied(w.kms.create_grant(&dave, &req(subset(&[("a", "1")]))));
    w.kms
        .create_grant(&dave, &req(subset(&[("a", "1"), ("A", "2"), ("b", "3")])))
        .unwrap();
}

#[test]
fn a_role_created_again_gets_nothing_from_a_grant_to_its_old_session() {
    let w = world();
    let (dev, _) = principal(&w.kms, EntityKind::Role, "dev");
    let acct = w.kms.account().to_string();
    let c = EncryptionContext::new();
    let b = blob(&w, &c);
    grant(
        &w,
        &format!("arn:aws:sts::{acct}:assumed-role/dev/cryptvol-cli"),
        &["Decrypt"],
        None,
    );
    w.kms.decrypt(&dev, &b, &c, None).unwrap();
    w.kms.identities.delete(EntityKind::Role, "dev").unwrap();
    let (dev2, _) = principal(&w.kms, EntityKind::Role, "dev");
    denied(w.kms.decrypt(&dev2, &b, &c, None));
}

#[test]
fn a_user_created_again_is_not_the_old_retiring_principal() {
    let w = world();
    let (_, bob) = principal(&w.kms, EntityKind::User, "bob");
    let (_, carol_arn) = principal(&w.kms, EntityKind::User, "carol");
    let g = w
        .kms
        .create_grant(
            &root(&w.kms),
            &CreateGrantRequest {
                key: w.key.clone(),
                grantee_principal: bob,
                retiring_principal: Some(carol_arn),
                operations: vec!["Decrypt".into()],
                constraints: None,
                name: None,
            },
        )
        .unwrap();
    w.kms.identities.delete(EntityKind::User, "carol").unwrap();
    let (carol2, _) = principal(&w.kms, EntityKind::User, "carol");
    let retire = RetireGrantRequest {
        grant_token: None,
        key: Some(w.key.clone()),
        grant_id: Some(g.grant_id.clone()),
    };
    denied(w.kms.retire_grant(&carol2, &retire));
    // The grant is still there for the account to retire.
    w.kms.retire_grant(&root(&w.kms), &retire).unwrap();
}

#[test]
fn a_grant_by_the_same_name_for_a_user_created_again_is_a_new_grant() {
    let w = world();
    let (_, bob_arn) = principal(&w.kms, EntityKind::User, "bob");
    let mk = || {
        w.kms
            .create_grant(
                &root(&w.kms),
                &CreateGrantRequest {
                    key: w.key.clone(),
                    grantee_principal: bob_arn.clone(),
                    retiring_principal: None,
                    operations: vec!["Decrypt".into()],
                    constraints: None,
                    name: Some("n".into()),
                },
            )
            .unwrap()
    };
    let g1 = mk();
    w.kms.identities.delete(EntityKind::User, "bob").unwrap();
    let (bob2, _) = principal(&w.kms, EntityKind::User, "bob");
    let g2 = mk();
    assert_ne!(
        g1.grant_id, g2.grant_id,
        "the old grant is bound to the old bob"
    );
    let c = EncryptionContext::new();
    let b = blob(&w, &c);
    w.kms.decrypt(&bob2, &b, &c, None).unwrap();
}

#[test]
fn the_volume_service_decrypts_only_the_volume_the_caller_may_attach() {
    let w = world();
    principal(&w.kms, EntityKind::User, "alice");
    let vol_a = w.kms.volume_arn("vol-aaaa");
    w.kms
        .identities
        .put_policy(
            EntityKind::User,
            "alice",
            "attach-a",
            &format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"ec2:AttachVolume","Resource":"{vol_a}"}}]}}"#
            ),
        )
        .unwrap();
    let body = w.kms.identities.load().unwrap();
    let alice = Caller::local(
        w.kms
            .identities
            .identity_of(&body, EntityKind::User, "alice")
            .unwrap(),
    );
    let admin = Session::for_volumes(&w.kms, &root(&w.kms));
    let key = w.kms.describe_key(&root(&w.kms), &w.key).unwrap().arn;
    let (ca, cb) = (
        ctx(&[("cryptvol:lineage", "vol-aaaa")]),
        ctx(&[("cryptvol:lineage", "vol-bbbb")]),
    );
    let (ba, bb) = (blob(&w, &ca), blob(&w, &cb));
    admin.grant_volume_service(&key, &ca, "vol-aaaa").unwrap();
    admin.grant_volume_service(&key, &cb, "vol-bbbb").unwrap();
    let s = Session::for_volumes(&w.kms, &alice);
    // Her volume, through its grant.
    s.decrypt_for_volume(&ba, &ca, "vol-aaaa").unwrap();
    // Volume B by its own name: she may not attach it, and has no kms:Decrypt.
    denied(s.decrypt_for_volume(&bb, &cb, "vol-bbbb"));
    // Volume B's key presented as volume A's (a header edited to name A): the grant of
    // A is bound to A's lineage, so B's key is not A's to unwrap.
    denied(s.decrypt_for_volume(&bb, &cb, "vol-aaaa"));
}
