//! What `<data dir>/iam.json` holds: users, roles, their access keys and inline policies.
//! The file holds no secret (secret access keys are sealed by `iam.key`); it is 0600 because
//! it says who may use which key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sys::clock::UnixTime;

/// AWS's limit of access keys per user.
pub const MAX_ACCESS_KEYS: usize = 2;
pub(super) const FORMAT_V1: u32 = 1;
/// The session name of a role assumed by the CLI (`--profile role/NAME`).
pub const CLI_ROLE_SESSION: &str = "cryptvol-cli";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    pub id: String,
    pub created: UnixTime,
    /// Inline policies: name → policy document text (validated when put).
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
    /// Access keys for the KMS server (SigV4): access key id → record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub access_keys: BTreeMap<String, AccessKeyRecord>,
}

/// An access key: its secret is sealed under `iam.key` with the key id as associated data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyRecord {
    pub created: UnixTime,
    /// `Active` or `Inactive`.
    pub status: String,
    #[serde(with = "crate::aws::b64")]
    pub sealed_secret: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRecord {
    pub id: String,
    pub created: UnixTime,
    #[serde(default)]
    pub description: String,
    /// The trust policy (`AssumeRolePolicyDocument`), kept as given: who may assume the
    /// role with `sts assume-role`. None trusts no one.
    #[serde(default)]
    pub assume_role_policy: Option<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityBody {
    pub format: u32,
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
    #[serde(default)]
    pub roles: BTreeMap<String, RoleRecord>,
}
