//! The built-in policies' text (default, managed, least privilege), their principals,
//! and the shape of denial messages.

use super::*;

#[test]
fn templates_parse_and_round_trip() {
    let users = [
        ALICE.to_string(),
        "arn:aws:iam::111122223333:role/ops".to_string(),
    ];
    let texts = [
        default_key_policy(ACCT),
        least_privilege_key_policy(ACCT, &[BOB.to_string()], &users),
        least_privilege_key_policy(ACCT, &[], &[]),
        managed_key_policy(ACCT, "eu-west-1"),
    ];
    for text in &texts {
        let policy = Policy::parse(text, PolicyKind::Key)
            .unwrap_or_else(|e| panic!("template does not parse: {e}\n{text}"));
        // Round trip: the JSON re-serialised the same way parses to the same principals.
        let value: serde_json::Value = serde_json::from_str(text).expect("template is JSON");
        let again = serde_json::to_string_pretty(&value).expect("re-serialise");
        let reparsed = Policy::parse(&again, PolicyKind::Key).expect("re-serialised parses");
        assert_eq!(policy.principal_arns(), reparsed.principal_arns());
        assert_eq!(policy.statements.len(), reparsed.statements.len());
    }
    // Root, administrators, users, and the users' grants for AWS resources.
    assert_eq!(
        Policy::parse(&texts[1], PolicyKind::Key).map(|p| p.statements.len()),
        Ok(4)
    );
    assert_eq!(
        Policy::parse(&texts[2], PolicyKind::Key).map(|p| p.statements.len()),
        Ok(1)
    );
}

#[test]
fn default_policy_text_is_aws_shaped() {
    let expected = r#"{
  "Version": "2012-10-17",
  "Id": "key-default-1",
  "Statement": [
    {
      "Sid": "Enable IAM User Permissions",
      "Effect": "Allow",
      "Principal": {
        "AWS": "arn:aws:iam::111122223333:root"
      },
      "Action": "kms:*",
      "Resource": "*"
    }
  ]
}"#;
    assert_eq!(default_key_policy(ACCT), expected);
}

#[test]
fn managed_policy_text_names_the_region_and_account() {
    let text = managed_key_policy(ACCT, "us-west-2");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let first = &value["Statement"][0];
    assert_eq!(
        first["Sid"],
        "Allow access through EBS for all principals in the account that are authorized to use EBS"
    );
    assert_eq!(first["Principal"]["AWS"], "*");
    assert_eq!(
        first["Condition"]["StringEquals"]["kms:CallerAccount"],
        ACCT
    );
    assert_eq!(
        first["Condition"]["StringEquals"]["kms:ViaService"],
        "ec2.us-west-2.amazonaws.com"
    );
    assert_eq!(first["Action"].as_array().map(Vec::len), Some(6));
    let second = &value["Statement"][1];
    assert_eq!(
        second["Sid"],
        "Allow direct access to key metadata to the account"
    );
    assert_eq!(second["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    assert!(
        text.contains("\n    {\n      \"Sid\""),
        "two-space indent:\n{text}"
    );
}

#[test]
fn least_privilege_statement_order_and_actions() {
    let text = least_privilege_key_policy(ACCT, &[BOB.to_string()], &[ALICE.to_string()]);
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let sids: Vec<&str> = (0..5)
        .filter_map(|i| value["Statement"][i]["Sid"].as_str())
        .collect();
    assert_eq!(
        sids,
        [
            "Enable IAM User Permissions",
            "Allow access for Key Administrators",
            "Allow use of the key",
            "Allow attachment of persistent resources"
        ]
    );
    assert_eq!(value["Statement"][3]["Principal"]["AWS"], ALICE);
    assert_eq!(
        value["Statement"][3]["Condition"],
        serde_json::json!({"Bool": {"kms:GrantIsForAWSResource": "true"}})
    );
    assert_eq!(value["Statement"][1]["Principal"]["AWS"], BOB);
    assert_eq!(
        value["Statement"][1]["Action"].as_array().map(Vec::len),
        Some(ADMIN_ACTIONS.len())
    );
    assert_eq!(
        value["Statement"][2]["Action"].as_array().map(Vec::len),
        Some(USAGE_ACTIONS.len())
    );
}

#[test]
fn principal_arns_expand_and_deduplicate() {
    let text = format!(
        r#"{{"Statement": [
            {{"Effect": "Allow", "Principal": {{"AWS": ["{ACCT}", "*", "{ALICE}"]}}, "Action": "kms:*"}},
            {{"Effect": "Deny", "NotPrincipal": {{"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/team/bob"]}}, "Action": "kms:Decrypt"}},
            {{"Effect": "Allow", "Principal": {{"AWS": "arn:aws:sts::111122223333:assumed-role/ops/s1", "Service": "ec2.amazonaws.com"}}, "Action": "kms:Decrypt"}}
        ]}}"#
    );
    let policy = Policy::parse(&text, PolicyKind::Key).expect("parses");
    assert_eq!(
        policy.principal_arns(),
        [
            "arn:aws:iam::111122223333:root",
            ALICE,
            BOB,
            "arn:aws:iam::111122223333:role/ops"
        ]
    );
}

#[test]
fn denial_messages_have_aws_shape() {
    let msg = |d: Decision| d.denial_message(ALICE, "kms:Decrypt", KEY);
    assert_eq!(msg(Decision::Allow), None);
    let prefix =
        format!("User: {ALICE} is not authorized to perform: kms:Decrypt on resource: {KEY}");
    assert_eq!(
        msg(Decision::NoKeyPolicyAllow),
        Some(format!(
            "{prefix} because no resource-based policy allows the kms:Decrypt action"
        ))
    );
    assert_eq!(
        msg(Decision::DenyExplicitInKeyPolicy),
        Some(format!(
            "{prefix} with an explicit deny in a resource-based policy"
        ))
    );
    assert_eq!(
        msg(Decision::DenyExplicitInIdentityPolicy),
        Some(format!(
            "{prefix} with an explicit deny in an identity-based policy"
        ))
    );
    assert_eq!(
        msg(Decision::NoIdentityPolicyAllow),
        Some(format!(
            "{prefix} because no identity-based policy allows the kms:Decrypt action"
        ))
    );
    assert!(Decision::Allow.is_allowed());
    assert!(!Decision::NoKeyPolicyAllow.is_allowed());
}
