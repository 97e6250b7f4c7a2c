//! Names AWS gives to places and owners: regions and 12-digit account ids. Parsing only.

use std::fmt;

use super::error::AwsError;

/// A region name such as `local-1` or `eu-west-3`: 1..=32 chars of `[a-z0-9-]`, starting
/// with a letter. It is a directory name, so nothing else is allowed.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    pub const MAX_LEN: usize = 32;

    pub fn parse(s: &str) -> Result<Self, AwsError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.as_bytes()[0].is_ascii_lowercase()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Region(s.to_string()))
        } else {
            Err(AwsError::Validation {
                field: "region".into(),
                message: format!(
                    "'{s}' is not a region name: use 1 to 32 lowercase letters, digits and '-', starting with a letter (e.g. local-1)"
                ),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Region {
    type Error = AwsError;
    fn try_from(s: String) -> Result<Self, AwsError> {
        Region::parse(&s)
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.0
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A 12-digit account id, as AWS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    pub fn parse(s: &str) -> Result<Self, AwsError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.to_string()))
        } else {
            Err(AwsError::Validation {
                field: "account id".into(),
                message: format!("'{s}' is not a 12-digit account id"),
            })
        }
    }

    /// A random 12-digit id that does not start with 0 (AWS ids can, but a leading zero is
    /// lost by tools that treat the id as a number).
    pub fn random() -> Self {
        let mut b = [0u8; 8];
        crate::crypto::random::fill(&mut b);
        let n = u64::from_le_bytes(b) % 900_000_000_000 + 100_000_000_000;
        AccountId(n.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = AwsError;
    fn try_from(s: String) -> Result<Self, AwsError> {
        AccountId::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
