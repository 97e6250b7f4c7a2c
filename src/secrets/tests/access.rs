use serde_json::json;

use super::{events, fixture, user};

#[test]
fn identity_and_resource_policies_decide_and_the_managed_key_works_only_through_the_service() {
    let f = fixture();
    let s = f.ok("CreateSecret", json!({"Name": "db", "SecretString": "v1"}));
    let arn = s["ARN"].as_str().unwrap().to_string();
    // A user allowed Secrets Manager but no KMS action reads it: the managed key admits
    // anyone in the account through the service.
    let reader = user(
        &f,
        "reader",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}),
    );
    assert_eq!(
        f.as_user(&reader, "GetSecretValue", json!({"SecretId": "db"}))
            .unwrap()["SecretString"],
        "v1"
    );
    // ... but cannot use that key directly.
    let key = crate::kms::KeyRef::parse("alias/aws/secretsmanager").unwrap();
    let direct = f.kms.generate_data_key(
        &reader,
        &key,
        crate::kms::DataKeySpec::Aes256,
        &Default::default(),
    );
    assert_eq!(direct.unwrap_err().aws_code(), "AccessDeniedException");
    // A resource policy's explicit Deny wins over the identity policy's Allow.
    let deny = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny",
        "Principal": {"AWS": reader.identity.arn()}, "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]});
    f.ok(
        "PutResourcePolicy",
        json!({"SecretId": "db", "ResourcePolicy": deny.to_string()}),
    );
    let e = f
        .as_user(&reader, "GetSecretValue", json!({"SecretId": "db"}))
        .unwrap_err();
    assert_eq!(e.aws_code(), "AccessDeniedException");
    // The denial names the secret as the request did, not by its ARN's random suffix.
    assert!(!e.to_string().contains(&arn), "{e}");
    assert!(e.to_string().contains(":secret:db "), "{e}");
    // A user with no policy is refused, and learns nothing of which secrets exist.
    let nobody = user(
        &f,
        "nobody",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "kms:DescribeKey", "Resource": "*"}]}),
    );
    for id in ["db", "missing"] {
        let e = f
            .as_user(&nobody, "DescribeSecret", json!({"SecretId": id}))
            .unwrap_err();
        assert_eq!(e.aws_code(), "AccessDeniedException", "{id}");
    }
    // A resource policy that names the user lets them in without an identity policy.
    let allow = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": {"AWS": nobody.identity.arn()}, "Action": "secretsmanager:DescribeSecret", "Resource": "*"}]});
    f.ok(
        "PutResourcePolicy",
        json!({"SecretId": "db", "ResourcePolicy": allow.to_string()}),
    );
    assert_eq!(
        f.as_user(&nobody, "DescribeSecret", json!({"SecretId": "db"}))
            .unwrap()["Name"],
        "db"
    );
}

#[test]
fn a_customer_key_governs_reads_and_the_kms_trail_shows_the_secret_context() {
    let f = fixture();
    let key = f.kms.create_key(&f.root, &Default::default()).unwrap().arn;
    let s = f.ok("CreateSecret", json!({"Name": "k", "SecretString": "v", "KmsKeyId": key, "ClientRequestToken": super::token(7)}));
    let arn = s["ARN"].as_str().unwrap().to_string();
    assert_eq!(
        f.ok("DescribeSecret", json!({"SecretId": "k"}))["KmsKeyId"],
        key
    );
    // A user allowed every Secrets Manager action but no use of the key cannot read it.
    let u = user(
        &f,
        "u",
        json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}),
    );
    let e = f
        .as_user(&u, "GetSecretValue", json!({"SecretId": "k"}))
        .unwrap_err();
    assert_eq!(e.aws_code(), "AccessDeniedException");
    assert!(
        e.to_string().contains("Access to KMS is not allowed"),
        "{e}"
    );
    f.ok("GetSecretValue", json!({"SecretId": "k"}));
    let ev = events(&f);
    let gdk = ev
        .iter()
        .find(|e| e["eventName"] == "GenerateDataKey" && e["eventSource"] == "kms.amazonaws.com")
        .expect("GenerateDataKey event");
    assert_eq!(
        gdk["requestParameters"]["encryptionContext"]["SecretARN"],
        arn.as_str()
    );
    assert_eq!(
        gdk["requestParameters"]["encryptionContext"]["SecretVersionId"],
        super::token(7)
    );
    assert_eq!(
        gdk["userIdentity"]["invokedBy"],
        "secretsmanager.test-1.amazonaws.com"
    );
    let decrypts = ev.iter().filter(|e| e["eventName"] == "Decrypt").count();
    assert_eq!(decrypts, 2, "one allowed, one denied");
    let sm: Vec<&str> = ev
        .iter()
        .filter(|e| e["eventSource"] == "secretsmanager.amazonaws.com")
        .map(|e| e["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(
        sm,
        [
            "CreateSecret",
            "DescribeSecret",
            "GetSecretValue",
            "GetSecretValue"
        ]
    );
    let denied = ev
        .iter()
        .find(|e| {
            e["eventSource"] == "secretsmanager.amazonaws.com" && e.get("errorCode").is_some()
        })
        .unwrap();
    assert_eq!(denied["errorCode"], "AccessDeniedException");
    assert!(!serde_json::to_string(&ev).unwrap().contains("\"v\""));
}

#[test]
fn changing_the_key_reseals_the_labelled_versions() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "k", "SecretString": "one"}));
    f.ok(
        "PutSecretValue",
        json!({"SecretId": "k", "SecretString": "two"}),
    );
    let key = f.kms.create_key(&f.root, &Default::default()).unwrap().arn;
    f.ok("UpdateSecret", json!({"SecretId": "k", "KmsKeyId": key}));
    let v = f.ok("ListSecretVersionIds", json!({"SecretId": "k"}));
    for ver in v["Versions"].as_array().unwrap() {
        assert_eq!(ver["KmsKeyIds"], json!([key]), "{ver}");
    }
    assert_eq!(
        f.ok(
            "GetSecretValue",
            json!({"SecretId": "k", "VersionStage": "AWSPREVIOUS"})
        )["SecretString"],
        "one"
    );
    // A disabled key: the value cannot be read, with DecryptionFailure naming the key.
    f.kms
        .disable_key(&f.root, &crate::kms::KeyRef::parse(&key).unwrap())
        .unwrap();
    let e = f
        .call("GetSecretValue", json!({"SecretId": "k"}))
        .unwrap_err();
    assert_eq!(e.aws_code(), "DecryptionFailure");
    let e = f
        .call(
            "PutSecretValue",
            json!({"SecretId": "k", "SecretString": "three"}),
        )
        .unwrap_err();
    assert_eq!(e.aws_code(), "EncryptionFailure");
}
