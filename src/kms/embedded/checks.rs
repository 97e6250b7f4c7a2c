//! Input checks with AWS KMS's answers: the API model's constraints (lengths, patterns),
//! which AWS answers with `ValidationException` and its "1 validation error detected"
//! message, then the service's own rules (tags, reserved aliases, rotation limits), each
//! with the exception and message AWS gives.

use serde_json::Value;

use super::tags::MAX_TAGS;
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::{AccountId, Region};
use crate::kms::event;
use crate::kms::ids::AliasName;
use crate::kms::model::{KeyRecord, VersionOrigin};

/// DescriptionType: at most 8192 characters.
pub const MAX_DESCRIPTION: usize = 8192;
/// TagKeyType 1..=128 characters, TagValueType 0..=256.
pub const MAX_TAG_KEY: usize = 128;
pub const MAX_TAG_VALUE: usize = 256;
/// AliasNameType: 1..=256 characters of `^[a-zA-Z0-9:/_-]+$`.
pub const MAX_ALIAS_NAME: usize = 256;
pub const ALIAS_PATTERN: &str = "^[a-zA-Z0-9:/_-]+$";
/// AWS allows 10 on-demand rotations per key over its lifetime.
pub const MAX_ON_DEMAND_ROTATIONS: usize = 10;

/// AWS's message for a member outside its length range. `value` is left out for members
/// too long to repeat (AWS leaves out sensitive ones the same way).
fn length_error(value: Option<&str>, at: &str, max: Option<usize>) -> AwsError {
    let value = value.map(|v| format!(" '{v}'")).unwrap_or_default();
    let constraint = match max {
        Some(max) => format!("less than or equal to {max}"),
        None => "greater than or equal to 1".to_string(),
    };
    AwsError::InvalidInput {
        message: format!(
            "1 validation error detected: Value{value} at '{at}' failed to satisfy constraint: Member must have length {constraint}"
        ),
    }
}

pub fn check_description(d: &str) -> Result<()> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(length_error(None, "description", Some(MAX_DESCRIPTION)));
    }
    Ok(())
}

fn check_tag_key_length(k: &str, at: &str) -> Result<()> {
    let n = k.chars().count();
    if n == 0 {
        return Err(length_error(Some(k), at, None));
    }
    if n > MAX_TAG_KEY {
        return Err(length_error(Some(k), at, Some(MAX_TAG_KEY)));
    }
    Ok(())
}

fn reserved_tag(k: &str) -> bool {
    k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"))
}

fn tag_error(message: &str) -> AwsError {
    AwsError::Tag {
        message: message.to_string(),
    }
}

/// The tags of one CreateKey or TagResource request, as AWS checks them: lengths first
/// (the model), then duplicate keys, the count, and the reserved `aws:` prefix.
pub fn check_tags(tags: &[(String, String)]) -> Result<()> {
    for (i, (k, v)) in tags.iter().enumerate() {
        check_tag_key_length(k, &format!("tags.{}.member.tagKey", i + 1))?;
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(length_error(
                Some(v),
                &format!("tags.{}.member.tagValue", i + 1),
                Some(MAX_TAG_VALUE),
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if !tags.iter().all(|(k, _)| seen.insert(k.as_str())) {
        return Err(tag_error("Duplicate tag keys"));
    }
    if tags.len() > MAX_TAGS {
        return Err(tag_error("Too many tags"));
    }
    if tags.iter().any(|(k, _)| reserved_tag(k)) {
        return Err(tag_error("Tags beginning with aws: are reserved"));
    }
    Ok(())
}

/// A key may carry at most 50 tags once the change is made.
pub fn check_tag_count(after: usize) -> Result<()> {
    if after > MAX_TAGS {
        return Err(tag_error("Too many tags"));
    }
    Ok(())
}

/// UntagResource's `TagKeys`.
pub fn check_tag_keys(keys: &[String]) -> Result<()> {
    for (i, k) in keys.iter().enumerate() {
        check_tag_key_length(k, &format!("tagKeys.{}.member", i + 1))?;
    }
    let mut seen = std::collections::BTreeSet::new();
    if !keys.iter().all(|k| seen.insert(k.as_str())) {
        return Err(tag_error("Duplicate tag keys"));
    }
    if keys.iter().any(|k| reserved_tag(k)) {
        return Err(tag_error("Tags beginning with aws: are reserved"));
    }
    Ok(())
}

/// An alias name a caller may create, point or delete (`operation`: create, update or
/// delete): the model's length and pattern, the `alias/` prefix, then AWS's refusal of
/// the reserved `alias/aws/` names (NotAuthorizedException) and of `:` in a name.
pub fn user_alias(name: &str, operation: &str) -> Result<AliasName> {
    let n = name.chars().count();
    if n == 0 {
        return Err(length_error(Some(name), "aliasName", None));
    }
    if n > MAX_ALIAS_NAME {
        return Err(length_error(Some(name), "aliasName", Some(MAX_ALIAS_NAME)));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'/' | b'_' | b'-'))
    {
        return Err(AwsError::InvalidInput {
            message: format!(
                "1 validation error detected: Value '{name}' at 'aliasName' failed to satisfy constraint: Member must satisfy regular expression pattern: {ALIAS_PATTERN}"
            ),
        });
    }
    if !name.starts_with(AliasName::PREFIX) {
        return Err(AwsError::InvalidInput {
            message: "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html".into(),
        });
    }
    if name.starts_with(AliasName::RESERVED_PREFIX) {
        return Err(AwsError::NotAuthorized {
            message: format!(
                "Cannot {operation} alias with prefix 'alias/aws/': it is reserved for AWS managed keys (choose another name)"
            ),
        });
    }
    if name.contains(':') {
        return Err(AwsError::InvalidInput {
            message: format!("{name} contains invalid characters for an alias"),
        });
    }
    AliasName::parse(name)
}

/// RotateKeyOnDemand: at most 10 per key.
pub fn check_on_demand_limit(k: &KeyRecord, arn: &str) -> Result<()> {
    let done = k
        .versions
        .iter()
        .filter(|v| v.origin == VersionOrigin::OnDemand)
        .count();
    if done >= MAX_ON_DEMAND_ROTATIONS {
        return Err(AwsError::LimitExceeded {
            what: format!(
                "The on-demand rotations limit has been reached for the given keyId. No more on-demand rotations can be performed for this key: {arn}"
            ),
        });
    }
    Ok(())
}

/// The CreateKey event of an AWS managed key made on a service's first use: AWS records
/// it as a call the service made (`userIdentity.type` AWSService), not the user.
pub fn managed_key_event(
    key_arn: &str,
    description: &str,
    region: &Region,
    account: &AccountId,
    now_nanos: i64,
) -> Value {
    let mut e = event::service_event("CreateKey", key_arn, region, account, now_nanos);
    e["userIdentity"]["type"] = Value::from("AWSService");
    e["eventType"] = Value::from("AwsApiCall");
    e["requestParameters"] = serde_json::json!({
        "keyUsage": "ENCRYPT_DECRYPT",
        "keySpec": "SYMMETRIC_DEFAULT",
        "description": description,
    });
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn tags_are_refused_with_aws_exceptions_and_messages() {
        let e = check_tags(&tags(&[("a", "1"), ("a", "2")])).unwrap_err();
        assert_eq!(
            (e.aws_code(), e.to_string().as_str()),
            ("TagException", "Duplicate tag keys")
        );
        for k in ["aws:x", "AWS:x", "Aws:team"] {
            let e = check_tags(&tags(&[(k, "v")])).unwrap_err();
            assert_eq!(e.aws_code(), "TagException", "{k}");
            assert_eq!(e.to_string(), "Tags beginning with aws: are reserved");
        }
        let many: Vec<_> = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        let e = check_tags(&many).unwrap_err();
        assert_eq!(
            (e.aws_code(), e.to_string().as_str()),
            ("TagException", "Too many tags")
        );
        assert!(check_tags(&many[..50]).is_ok());
        let long = "k".repeat(129);
        let e = check_tags(&tags(&[("ok", ""), (&long, "v")])).unwrap_err();
        assert_eq!(e.aws_code(), "ValidationException");
        assert!(
            e.to_string().contains("at 'tags.2.member.tagKey'")
                && e.to_string().ends_with("less than or equal to 128"),
            "{e}"
        );
        let e = check_tags(&tags(&[("k", &"v".repeat(257))])).unwrap_err();
        assert!(e.to_string().contains("tags.1.member.tagValue"), "{e}");
        assert!(check_tags(&tags(&[(&"k".repeat(128), &"v".repeat(256))])).is_ok());
        assert!(check_tag_count(50).is_ok());
        assert_eq!(check_tag_count(51).unwrap_err().aws_code(), "TagException");
        let e = check_tag_keys(&["aws:a".into()]).unwrap_err();
        assert_eq!(e.aws_code(), "TagException");
    }

    #[test]
    fn alias_names_as_aws_answers_them() {
        let code = |n: &str| user_alias(n, "create").unwrap_err().aws_code();
        assert_eq!(code("app"), "ValidationException");
        assert!(
            user_alias("app", "create")
                .unwrap_err()
                .to_string()
                .starts_with("Alias must start with the prefix \"alias/\"")
        );
        assert_eq!(code("alias/sp ace"), "ValidationException");
        assert_eq!(
            code(&format!("alias/{}", "a".repeat(251))),
            "ValidationException"
        );
        assert_eq!(code("alias/a:b"), "ValidationException");
        assert_eq!(code("alias/aws/ebs"), "NotAuthorizedException");
        assert!(
            user_alias("alias/aws/x", "delete")
                .unwrap_err()
                .to_string()
                .starts_with("Cannot delete alias with prefix 'alias/aws/'")
        );
        assert_eq!(code("alias/"), "InvalidAliasNameException");
        assert!(user_alias("alias/my/app_1-x", "create").is_ok());
        assert!(user_alias(&format!("alias/{}", "a".repeat(250)), "create").is_ok());
    }

    #[test]
    fn descriptions_count_characters() {
        assert!(check_description(&"é".repeat(MAX_DESCRIPTION)).is_ok());
        let e = check_description(&"d".repeat(MAX_DESCRIPTION + 1)).unwrap_err();
        assert_eq!(e.aws_code(), "ValidationException");
        assert!(e.to_string().contains("'description'"), "{e}");
    }
}
