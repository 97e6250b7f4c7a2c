//! Names of things in the KMS: key ids, aliases, ARNs, and the
//! `KeyRef` a caller uses to name a key (id, key ARN, alias name or alias ARN).
//! Parsing only; whether a named key exists is the keystore's business.

use std::fmt;

use crate::aws::error::AwsError;
use crate::aws::ids::{AccountId, Region};

/// A CMK id: a UUID, shown lowercase and hyphenated as AWS does.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(uuid::Uuid);

impl KeyId {
    pub fn random() -> Self {
        let bytes: [u8; 16] = crate::crypto::random::array();
        KeyId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// Only the canonical hyphenated form, so that one key has one spelling.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 36 {
            return None;
        }
        uuid::Uuid::try_parse(s).ok().map(KeyId)
    }

    pub fn from_bytes(b: [u8; 16]) -> Self {
        KeyId(uuid::Uuid::from_bytes(b))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl TryFrom<String> for KeyId {
    type Error = AwsError;
    fn try_from(s: String) -> Result<Self, AwsError> {
        KeyId::parse(&s).ok_or(AwsError::Validation {
            field: "KeyId".into(),
            message: format!("'{s}' is not a key id (UUID)"),
        })
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.to_string()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// An alias name, always with its `alias/` prefix: `alias/` followed by 1..=250 characters
/// of `[A-Za-z0-9/_-]`, as AWS.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AliasName(String);

impl AliasName {
    pub const PREFIX: &'static str = "alias/";
    /// Aliases of AWS managed keys; users may not create or change them.
    pub const RESERVED_PREFIX: &'static str = "alias/aws/";

    pub fn parse(s: &str) -> Result<Self, AwsError> {
        let bad = |why: &str| AwsError::InvalidAliasName {
            name: s.to_string(),
            why: why.to_string(),
        };
        let Some(rest) = s.strip_prefix(Self::PREFIX) else {
            return Err(bad("an alias name starts with 'alias/'"));
        };
        if rest.is_empty() || rest.len() > 250 {
            return Err(bad("the part after 'alias/' must be 1 to 250 characters"));
        }
        if !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
        {
            return Err(bad("use only letters, digits, '/', '_' and '-'"));
        }
        Ok(AliasName(s.to_string()))
    }

    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(Self::RESERVED_PREFIX)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AliasName {
    type Error = AwsError;
    fn try_from(s: String) -> Result<Self, AwsError> {
        AliasName::parse(&s)
    }
}

impl From<AliasName> for String {
    fn from(a: AliasName) -> String {
        a.0
    }
}

impl fmt::Display for AliasName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `arn:aws:kms:<region>:<account>:key/<id>`.
pub fn key_arn(region: &Region, account: &AccountId, id: &KeyId) -> String {
    format!("arn:aws:kms:{region}:{account}:key/{id}")
}

/// `arn:aws:kms:<region>:<account>:alias/<name>` (the name keeps no second `alias/`).
pub fn alias_arn(region: &Region, account: &AccountId, alias: &AliasName) -> String {
    format!("arn:aws:kms:{region}:{account}:{alias}")
}

/// How a caller names a key: by id, key ARN, alias name or alias ARN — any form that works
/// with `--key-id` in the AWS CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Id(KeyId),
    KeyArn {
        region: Region,
        account: AccountId,
        id: KeyId,
    },
    Alias(AliasName),
    AliasArn {
        region: Region,
        account: AccountId,
        alias: AliasName,
    },
}

impl KeyRef {
    pub fn parse(s: &str) -> Result<Self, AwsError> {
        if let Some(rest) = s.strip_prefix("arn:") {
            return Self::parse_arn(s, rest);
        }
        if s.starts_with(AliasName::PREFIX) {
            return Ok(KeyRef::Alias(AliasName::parse(s)?));
        }
        // AWS's answer for a string that cannot name a key at all.
        KeyId::parse(s)
            .map(KeyRef::Id)
            .ok_or_else(|| AwsError::InvalidKeyId {
                key_id: s.to_string(),
            })
    }

    fn parse_arn(whole: &str, rest: &str) -> Result<Self, AwsError> {
        let bad = |why: &str| AwsError::InvalidArn {
            arn: whole.to_string(),
            why: why.to_string(),
        };
        // arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts[..] else {
            return Err(bad(
                "expected arn:aws:kms:REGION:ACCOUNT:key/ID or :alias/NAME",
            ));
        };
        if partition != "aws" || service != "kms" {
            return Err(bad("only arn:aws:kms:... ARNs name KMS keys"));
        }
        let region =
            Region::parse(region).map_err(|_| bad("the region part is not a region name"))?;
        let account =
            AccountId::parse(account).map_err(|_| bad("the account part is not 12 digits"))?;
        if let Some(id) = resource.strip_prefix("key/") {
            let id = KeyId::parse(id).ok_or_else(|| bad("the part after key/ is not a key id"))?;
            Ok(KeyRef::KeyArn {
                region,
                account,
                id,
            })
        } else if resource.starts_with(AliasName::PREFIX) {
            let alias = AliasName::parse(resource)?;
            Ok(KeyRef::AliasArn {
                region,
                account,
                alias,
            })
        } else {
            Err(bad("the resource must be key/ID or alias/NAME"))
        }
    }

    /// The region an ARN names, if this is an ARN.
    pub fn region(&self) -> Option<&Region> {
        match self {
            KeyRef::KeyArn { region, .. } | KeyRef::AliasArn { region, .. } => Some(region),
            _ => None,
        }
    }

    pub fn account(&self) -> Option<&AccountId> {
        match self {
            KeyRef::KeyArn { account, .. } | KeyRef::AliasArn { account, .. } => Some(account),
            _ => None,
        }
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Id(id) => write!(f, "{id}"),
            KeyRef::KeyArn {
                region,
                account,
                id,
            } => f.write_str(&key_arn(region, account, id)),
            KeyRef::Alias(a) => write!(f, "{a}"),
            KeyRef::AliasArn {
                region,
                account,
                alias,
            } => f.write_str(&alias_arn(region, account, alias)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_ref_form() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert!(matches!(KeyRef::parse(id), Ok(KeyRef::Id(_))));
        let arn = format!("arn:aws:kms:us-east-2:111122223333:key/{id}");
        let r = KeyRef::parse(&arn).unwrap();
        assert_eq!(r.to_string(), arn);
        assert_eq!(r.region().unwrap().as_str(), "us-east-2");
        assert!(matches!(
            KeyRef::parse("alias/my-key"),
            Ok(KeyRef::Alias(_))
        ));
        let aarn = "arn:aws:kms:local-1:111122223333:alias/my/key_1";
        assert_eq!(KeyRef::parse(aarn).unwrap().to_string(), aarn);
    }

    #[test]
    fn rejects_malformed_names_with_the_right_error() {
        for bad in [
            "arn:aws:kms:us-east-2:1111:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:s3:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:us-east-2:111122223333:key/nope",
            "arn:aws:kms:us-east-2:111122223333",
            "arn:aws:kms:US:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            assert!(
                matches!(KeyRef::parse(bad), Err(AwsError::InvalidArn { .. })),
                "{bad}"
            );
        }
        let e = KeyRef::parse("banana").unwrap_err();
        assert_eq!(e.aws_code(), "NotFoundException");
        assert_eq!(e.to_string(), "Invalid keyId 'banana'");
        for bad in ["alias/", "alias/sp ace", "alias/é"] {
            assert!(
                matches!(KeyRef::parse(bad), Err(AwsError::InvalidAliasName { .. })),
                "{bad}"
            );
        }
        assert!(AliasName::parse("alias/aws/ebs").unwrap().is_reserved());
    }

    #[test]
    fn region_and_account_rules() {
        assert!(Region::parse("local-1").is_ok());
        for bad in ["", "1abc", "Local", "a/b", "..", &"a".repeat(33)] {
            assert!(
                matches!(
                    Region::parse(bad),
                    Err(AwsError::Validation { field, .. }) if field == "region"
                ),
                "{bad}"
            );
        }
        let a = AccountId::random();
        assert_eq!(a.as_str().len(), 12);
        assert!(AccountId::parse(a.as_str()).is_ok());
        assert!(matches!(
            AccountId::parse("12345"),
            Err(AwsError::Validation { field, .. }) if field == "account id"
        ));
    }
}
