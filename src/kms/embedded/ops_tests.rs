//! Unit tests of the AWS operations and checks added beside the core: paging over a
//! changing list, DryRun, GenerateRandom, UpdateKeyDescription, the on-demand rotation
//! limit, KeyMaterialId, and the managed key's creation event.

use super::*;
use crate::kms::backend::DataKeySpec;
use crate::kms::context::EncryptionContext;
use crate::kms::ids::KeyRef;

fn setup() -> (tempfile::TempDir, EmbeddedKms) {
    let d = tempfile::tempdir().unwrap();
    let r = Region::parse("test-1").unwrap();
    crate::kms::init::init(d.path(), &r, None, 0).unwrap();
    let mut no = || -> Result<SecretBytes> { panic!("key-file region asks no passphrase") };
    let kms = EmbeddedKms::open_region(d.path(), &r, &mut no, Clock::System).unwrap();
    (d, kms)
}

fn root(kms: &EmbeddedKms) -> Caller {
    Caller::local(crate::iam::Identity::root(kms.account().clone()))
}

fn new_key(kms: &EmbeddedKms) -> (String, KeyRef) {
    let id = kms
        .create_key(&root(kms), &CreateKeyRequest::default())
        .unwrap()
        .key_id;
    let r = KeyRef::parse(&id).unwrap();
    (id, r)
}

fn events(kms: &EmbeddedKms) -> Vec<serde_json::Value> {
    kms.audit_log()
        .events()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

fn page(limit: i64, marker: Option<&serde_json::Value>) -> Paging {
    Paging {
        limit: Some(limit),
        marker: marker.and_then(|m| m.as_str()).map(String::from),
    }
}

#[test]
fn paging_a_changing_list_never_repeats_or_skips_an_unchanged_key() {
    let (_d, kms) = setup();
    let c = root(&kms);
    let mut ids: Vec<String> = (0..7).map(|_| new_key(&kms).0).collect();
    ids.sort();
    let first = kms.list_keys_page(&c, &page(3, None)).unwrap();
    assert_eq!(first["Truncated"], true);
    let got: Vec<String> = first["Keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["KeyId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, ids[..3]);
    // Between pages: the marker's own key goes, others come.
    let gone = KeyRef::parse(&ids[2]).unwrap();
    kms.schedule_key_deletion(&c, &gone, Some(7)).unwrap();
    let mut added: Vec<String> = (0..3).map(|_| new_key(&kms).0).collect();
    added.sort();
    let mut seen = got.clone();
    let mut marker = first.get("NextMarker").cloned();
    while let Some(m) = marker {
        let p = kms.list_keys_page(&c, &page(3, Some(&m))).unwrap();
        for k in p["Keys"].as_array().unwrap() {
            seen.push(k["KeyId"].as_str().unwrap().to_string());
        }
        marker = p.get("NextMarker").cloned();
        assert_eq!(p["Truncated"], marker.is_some());
    }
    let unique: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a key came twice: {seen:?}");
    for id in &ids[3..] {
        assert!(seen.contains(id), "unchanged key {id} skipped: {seen:?}");
    }
    // A key added after the marker's position shows up; one before it cannot.
    for id in added.iter().filter(|a| **a > ids[2]) {
        assert!(seen.contains(id), "{id} added after the cursor is missing");
    }
}

#[test]
fn a_marker_this_kms_did_not_give_is_invalid() {
    let (_d, kms) = setup();
    let c = root(&kms);
    for _ in 0..3 {
        new_key(&kms);
    }
    let p = kms.list_keys_page(&c, &page(1, None)).unwrap();
    let good = p["NextMarker"].as_str().unwrap().to_string();
    assert!(
        kms.list_keys_page(&c, &page(1, Some(&good.clone().into())))
            .is_ok()
    );
    let mut forged = crate::aws::b64::decode(&good).unwrap();
    *forged.last_mut().unwrap() ^= 1;
    let forged = crate::aws::b64::encode(&forged);
    for bad in ["1", "not a marker", forged.as_str()] {
        let e = kms
            .list_keys_page(&c, &page(1, Some(&bad.into())))
            .unwrap_err();
        assert_eq!(e.aws_code(), "InvalidMarkerException", "{bad}");
    }
    // A ListKeys marker is no ListAliases marker.
    let e = kms
        .list_aliases_page(&c, None, &page(1, Some(&good.into())))
        .unwrap_err();
    assert_eq!(e.aws_code(), "InvalidMarkerException");
}

#[test]
fn tags_and_rotations_page_in_order() {
    let (_d, kms) = setup();
    let c = root(&kms);
    let (_, r) = new_key(&kms);
    let tags: Vec<_> = (0..5).map(|i| (format!("t{i}"), format!("v{i}"))).collect();
    kms.tag_resource(&c, &r, &tags).unwrap();
    let p = kms.list_resource_tags_page(&c, &r, &page(2, None)).unwrap();
    assert_eq!(p["Tags"][0]["TagKey"], "t0");
    let p = kms
        .list_resource_tags_page(&c, &r, &page(2, p.get("NextMarker")))
        .unwrap();
    assert_eq!(p["Tags"][0]["TagKey"], "t2");
    for _ in 0..3 {
        kms.rotate_key_on_demand(&c, &r).unwrap();
    }
    let p = kms
        .list_key_rotations_page(&c, &r, false, &page(2, None))
        .unwrap();
    assert_eq!(p["Rotations"].as_array().unwrap().len(), 2);
    assert_eq!(p["Truncated"], true);
    let all = kms
        .list_key_rotations_page(&c, &r, true, &Paging::default())
        .unwrap();
    let rot = all["Rotations"].as_array().unwrap();
    assert_eq!(rot.len(), 4);
    assert!(rot[0].get("RotationType").is_none());
    assert_eq!(rot[3]["KeyMaterialState"], "CURRENT");
    let current = kms.describe_key(&c, &r).unwrap().current_key_material_id;
    assert_eq!(rot[3]["KeyMaterialId"].as_str(), current.as_deref());
}

#[test]
fn on_demand_rotations_stop_at_ten() {
    let (_d, kms) = setup();
    let c = root(&kms);
    let (_, r) = new_key(&kms);
    for _ in 0..10 {
        kms.rotate_key_on_demand(&c, &r).unwrap();
    }
    let e = kms.rotate_key_on_demand(&c, &r).unwrap_err();
    assert_eq!(e.aws_code(), "LimitExceededException");
    assert!(
        e.to_string()
            .starts_with("The on-demand rotations limit has been reached for the given keyId."),
        "{e}"
    );
}

#[test]
fn dry_run_checks_everything_then_changes_nothing_and_is_audited() {
    let (_d, kms) = setup();
    let c = root(&kms);
    let (_, r) = new_key(&kms);
    let ctx = EncryptionContext::new();
    let e = kms.encrypt_dry_run(&c, &r, b"x", &ctx);
    assert_eq!(e.aws_code(), "DryRunOperationException");
    assert_eq!(
        e.to_string(),
        "The request would have succeeded, but the DryRun option is set."
    );
    let blob = kms.encrypt(&c, &r, b"x", &ctx).unwrap().ciphertext_blob;
    assert_eq!(
        kms.decrypt_dry_run(&c, &blob, &ctx, None).aws_code(),
        "DryRunOperationException"
    );
    let other = EncryptionContext::single("a", "b");
    assert_eq!(
        kms.decrypt_dry_run(&c, &blob, &other, None).aws_code(),
        "InvalidCiphertextException"
    );
    kms.disable_key(&c, &r).unwrap();
    for e in [
        kms.encrypt_dry_run(&c, &r, b"x", &ctx),
        kms.generate_data_key_dry_run(&c, &r, DataKeySpec::Aes256, &ctx, true),
        kms.re_encrypt_dry_run(&c, &blob, &ctx, None, &r, &ctx),
    ] {
        assert_eq!(e.aws_code(), "DisabledException", "{e}");
    }
    kms.enable_key(&c, &r).unwrap();
    assert_eq!(
        kms.generate_data_key_dry_run(&c, &r, DataKeySpec::Bytes(2000), &ctx, false)
            .aws_code(),
        "ValidationException"
    );
    let evs = events(&kms);
    let dry: Vec<_> = evs
        .iter()
        .filter(|e| e["errorCode"] == "DryRunOperationException")
        .collect();
    assert_eq!(dry.len(), 2, "{evs:#?}");
    assert_eq!(dry[0]["eventName"], "Encrypt");
    assert_eq!(dry[0]["requestParameters"]["dryRun"], true);
    assert_eq!(dry[1]["eventName"], "Decrypt");
}

#[test]
fn generate_random_and_update_key_description() {
    let (_d, kms) = setup();
    let c = root(&kms);
    let req = |n| ops::GenerateRandomRequest {
        number_of_bytes: Some(n),
        ..Default::default()
    };
    let a = kms.generate_random(&c, &req(1024)).unwrap();
    assert_eq!(a.len(), 1024);
    assert_ne!(
        a.expose(),
        kms.generate_random(&c, &req(1024)).unwrap().expose()
    );
    for n in [0, 1025] {
        assert_eq!(
            kms.generate_random(&c, &req(n)).unwrap_err().aws_code(),
            "ValidationException"
        );
    }
    let store = ops::GenerateRandomRequest {
        number_of_bytes: Some(8),
        custom_key_store_id: Some("cks-1234567890abcdef0".into()),
        recipient: false,
    };
    assert_eq!(
        kms.generate_random(&c, &store).unwrap_err().aws_code(),
        "CustomKeyStoreNotFoundException"
    );
    let evs = events(&kms);
    let e = evs
        .iter()
        .find(|e| e["eventName"] == "GenerateRandom")
        .unwrap();
    assert!(e["resources"].as_array().unwrap().is_empty(), "{e:#}");

    let (_, r) = new_key(&kms);
    kms.update_key_description(&c, &r, "new words").unwrap();
    assert_eq!(kms.describe_key(&c, &r).unwrap().description, "new words");
    let e = kms
        .update_key_description(&c, &r, &"d".repeat(8193))
        .unwrap_err();
    assert_eq!(e.aws_code(), "ValidationException");
    assert_eq!(kms.describe_key(&c, &r).unwrap().description, "new words");
    let ebs = KeyRef::parse("alias/aws/ebs").unwrap();
    kms.describe_key(&c, &ebs).unwrap();
    assert!(matches!(
        kms.update_key_description(&c, &ebs, "mine"),
        Err(AwsError::AccessDenied { .. })
    ));
    assert!(
        events(&kms)
            .iter()
            .any(|e| e["eventName"] == "UpdateKeyDescription" && e.get("errorCode").is_none())
    );
}

#[test]
fn the_managed_key_creation_is_a_service_event_and_material_ids_show() {
    let (_d, kms) = setup();
    let c = root(&kms);
    let meta = kms
        .describe_key(&c, &KeyRef::parse("alias/aws/ebs").unwrap())
        .unwrap();
    let evs = events(&kms);
    let created: Vec<_> = evs
        .iter()
        .filter(|e| e["eventName"] == "CreateKey")
        .collect();
    assert_eq!(created.len(), 1, "{evs:#?}");
    assert_eq!(created[0]["userIdentity"]["type"], "AWSService");
    assert_eq!(created[0]["resources"][0]["ARN"], meta.arn.as_str());
    // A second use creates nothing more.
    kms.describe_key(&c, &KeyRef::parse("alias/aws/ebs").unwrap())
        .unwrap();
    assert_eq!(
        events(&kms)
            .iter()
            .filter(|e| e["eventName"] == "CreateKey")
            .count(),
        1
    );
    let id = meta.current_key_material_id.unwrap();
    assert_eq!(id.len(), 64);
    let (_, r) = new_key(&kms);
    let before = kms.describe_key(&c, &r).unwrap().current_key_material_id;
    kms.rotate_key_on_demand(&c, &r).unwrap();
    let after = kms.describe_key(&c, &r).unwrap().current_key_material_id;
    assert_ne!(before, after);
}
