use serde_json::json;

use super::{fixture, token};

#[test]
fn create_get_put_moves_labels_and_reads_each_version() {
    let f = fixture();
    let c = f.ok(
        "CreateSecret",
        json!({"Name": "db/pw", "SecretString": "s3cret-one", "ClientRequestToken": token(1)}),
    );
    let arn = c["ARN"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:secretsmanager:test-1:"), "{arn}");
    assert!(
        arn.contains(":secret:db/pw-")
            && arn.len() == arn.find(":secret:").unwrap() + 8 + 5 + 1 + 6,
        "{arn}"
    );
    assert_eq!(c["VersionId"], token(1));
    let g = f.ok("GetSecretValue", json!({"SecretId": "db/pw"}));
    assert_eq!(g["SecretString"], "s3cret-one");
    assert_eq!(g["VersionStages"], json!(["AWSCURRENT"]));
    let p = f.ok(
        "PutSecretValue",
        json!({"SecretId": arn, "SecretString": "s3cret-two", "ClientRequestToken": token(2)}),
    );
    assert_eq!(p["VersionStages"], json!(["AWSCURRENT"]));
    let d = f.ok("DescribeSecret", json!({"SecretId": "db/pw"}));
    assert_eq!(d["VersionIdsToStages"][token(1)], json!(["AWSPREVIOUS"]));
    assert_eq!(d["VersionIdsToStages"][token(2)], json!(["AWSCURRENT"]));
    assert_eq!(
        f.ok(
            "GetSecretValue",
            json!({"SecretId": "db/pw", "VersionStage": "AWSPREVIOUS"})
        )["SecretString"],
        "s3cret-one"
    );
    assert_eq!(
        f.ok(
            "GetSecretValue",
            json!({"SecretId": "db/pw", "VersionId": token(2)})
        )["SecretString"],
        "s3cret-two"
    );
    // The same token and value again: nothing changes; another value: refused.
    f.ok(
        "PutSecretValue",
        json!({"SecretId": arn, "SecretString": "s3cret-two", "ClientRequestToken": token(2)}),
    );
    assert_eq!(
        f.code(
            "PutSecretValue",
            json!({"SecretId": arn, "SecretString": "other", "ClientRequestToken": token(2)})
        ),
        "ResourceExistsException"
    );
    // Binary values round-trip.
    let b = f.ok(
        "CreateSecret",
        json!({"Name": "bin", "SecretBinary": "AAEC/w=="}),
    );
    assert!(b["VersionId"].is_string());
    assert_eq!(
        f.ok("GetSecretValue", json!({"SecretId": "bin"}))["SecretBinary"],
        "AAEC/w=="
    );
    assert_eq!(
        f.code(
            "CreateSecret",
            json!({"Name": "db/pw", "SecretString": "x"})
        ),
        "ResourceExistsException"
    );
    assert_eq!(
        f.code("GetSecretValue", json!({"SecretId": "nope"})),
        "ResourceNotFoundException"
    );
}

#[test]
fn delete_restore_and_force_delete() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "a", "SecretString": "v"}));
    assert_eq!(
        f.code(
            "DeleteSecret",
            json!({"SecretId": "a", "RecoveryWindowInDays": 6})
        ),
        "InvalidParameterException"
    );
    let d = f.ok(
        "DeleteSecret",
        json!({"SecretId": "a", "RecoveryWindowInDays": 7}),
    );
    assert!(d["DeletionDate"].as_i64().unwrap() > 0);
    assert_eq!(
        f.code("GetSecretValue", json!({"SecretId": "a"})),
        "InvalidRequestException"
    );
    assert_eq!(
        f.code("CreateSecret", json!({"Name": "a", "SecretString": "v"})),
        "InvalidRequestException"
    );
    assert_eq!(f.ok("ListSecrets", json!({}))["SecretList"], json!([]));
    assert_eq!(
        f.ok("ListSecrets", json!({"IncludePlannedDeletion": true}))["SecretList"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    f.ok("RestoreSecret", json!({"SecretId": "a"}));
    assert_eq!(
        f.ok("GetSecretValue", json!({"SecretId": "a"}))["SecretString"],
        "v"
    );
    f.ok(
        "DeleteSecret",
        json!({"SecretId": "a", "ForceDeleteWithoutRecovery": true}),
    );
    assert_eq!(
        f.code("DescribeSecret", json!({"SecretId": "a"})),
        "ResourceNotFoundException"
    );
    f.ok(
        "CreateSecret",
        json!({"Name": "a", "SecretString": "again"}),
    );
}

#[test]
fn no_value_is_in_the_store_file_or_the_trail() {
    let f = fixture();
    let value = "plain-value-4f1d9e";
    f.ok(
        "CreateSecret",
        json!({"Name": "n", "SecretString": value, "Description": "d"}),
    );
    f.ok("GetSecretValue", json!({"SecretId": "n"}));
    let pw = f.ok("GetRandomPassword", json!({"PasswordLength": 40}))["RandomPassword"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pw.chars().count(), 40);
    let mut stack = vec![f.dir.path().to_path_buf()];
    let mut files = 0;
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files += 1;
                let bytes = std::fs::read(&p).unwrap();
                for needle in [value.as_bytes(), pw.as_bytes()] {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "{} holds a value",
                        p.display()
                    );
                }
            }
        }
    }
    assert!(files > 3);
}

#[test]
fn tags_filters_and_paging() {
    let f = fixture();
    for i in 0..5 {
        f.ok("CreateSecret", json!({"Name": format!("app/{i}"), "Tags": [{"Key": "team", "Value": if i % 2 == 0 {"red"} else {"blue"}}]}));
    }
    let red = f.ok(
        "ListSecrets",
        json!({"Filters": [{"Key": "tag-value", "Values": ["red"]}]}),
    );
    assert_eq!(red["SecretList"].as_array().unwrap().len(), 3);
    let not_red = f.ok(
        "ListSecrets",
        json!({"Filters": [{"Key": "tag-value", "Values": ["!red"]}]}),
    );
    assert_eq!(not_red["SecretList"].as_array().unwrap().len(), 2);
    let p1 = f.ok("ListSecrets", json!({"MaxResults": 2}));
    assert_eq!(p1["SecretList"].as_array().unwrap().len(), 2);
    let p2 = f.ok(
        "ListSecrets",
        json!({"MaxResults": 2, "NextToken": p1["NextToken"]}),
    );
    assert_eq!(p2["SecretList"][0]["Name"], "app/2");
    assert_eq!(
        f.code("ListSecrets", json!({"NextToken": "garbage"})),
        "InvalidNextTokenException"
    );
    f.ok(
        "UntagResource",
        json!({"SecretId": "app/0", "TagKeys": ["team"]}),
    );
    assert!(
        f.ok("DescribeSecret", json!({"SecretId": "app/0"}))
            .get("Tags")
            .is_none()
    );
}

#[test]
fn labels_move_only_as_aws_allows() {
    let f = fixture();
    f.ok(
        "CreateSecret",
        json!({"Name": "s", "SecretString": "1", "ClientRequestToken": token(1)}),
    );
    f.ok("PutSecretValue", json!({"SecretId": "s", "SecretString": "2", "ClientRequestToken": token(2), "VersionStages": ["AWSPENDING"]}));
    assert_eq!(
        f.code(
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "AWSCURRENT", "MoveToVersionId": token(2)})
        ),
        "InvalidParameterException"
    );
    assert_eq!(
        f.code(
            "UpdateSecretVersionStage",
            json!({"SecretId": "s", "VersionStage": "AWSCURRENT", "RemoveFromVersionId": token(1)})
        ),
        "InvalidParameterException"
    );
    f.ok("UpdateSecretVersionStage", json!({"SecretId": "s", "VersionStage": "AWSCURRENT", "MoveToVersionId": token(2), "RemoveFromVersionId": token(1)}));
    let d = f.ok("DescribeSecret", json!({"SecretId": "s"}));
    assert_eq!(
        d["VersionIdsToStages"][token(2)],
        json!(["AWSPENDING", "AWSCURRENT"])
    );
    assert_eq!(d["VersionIdsToStages"][token(1)], json!(["AWSPREVIOUS"]));
    let v = f.ok("ListSecretVersionIds", json!({"SecretId": "s"}));
    assert_eq!(v["Versions"][0]["VersionId"], token(2));
}

#[test]
fn a_resource_policy_with_a_public_principal_is_blocked() {
    let f = fixture();
    f.ok("CreateSecret", json!({"Name": "s", "SecretString": "1"}));
    let public = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*"}]}"#;
    assert_eq!(
        f.code(
            "PutResourcePolicy",
            json!({"SecretId": "s", "ResourcePolicy": public, "BlockPublicPolicy": true})
        ),
        "PublicPolicyException"
    );
    let v = f.ok("ValidateResourcePolicy", json!({"ResourcePolicy": public}));
    assert_eq!(v["PolicyValidationPassed"], false);
    let typo = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"secretsmanager:GetSecretValu","Resource":"*"}]}"#;
    assert_eq!(
        f.code(
            "PutResourcePolicy",
            json!({"SecretId": "s", "ResourcePolicy": typo})
        ),
        "MalformedPolicyDocumentException"
    );
    f.ok(
        "PutResourcePolicy",
        // As AWS, public policies are not blocked unless asked.
        json!({"SecretId": "s", "ResourcePolicy": public}),
    );
    assert_eq!(
        f.ok("GetResourcePolicy", json!({"SecretId": "s"}))["ResourcePolicy"],
        public
    );
}

/// A change the trail cannot record is not made: the event is written before the store.
#[test]
fn a_change_the_trail_cannot_record_is_not_made() {
    let f = fixture();
    let audit = f.kms.region_dir().audit_dir();
    let _ = std::fs::remove_dir_all(&audit);
    std::fs::write(&audit, b"not a directory").unwrap();
    let e = f
        .call("CreateSecret", json!({"Name": "unrecorded"}))
        .unwrap_err();
    assert_eq!(e.aws_code(), "KMSInternalException", "{e}");
    std::fs::remove_file(&audit).unwrap();
    std::fs::create_dir(&audit).unwrap();
    assert_eq!(
        f.code("DescribeSecret", json!({"SecretId": "unrecorded"})),
        "ResourceNotFoundException"
    );
}
