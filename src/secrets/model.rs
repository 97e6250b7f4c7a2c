//! What the store keeps of each secret (docs/formats.md, "Secrets Manager store"). Times
//! are Unix seconds. A version's value is never here in the clear: only its sealed form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sys::clock::UnixTime;

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";
pub const AWSPENDING: &str = "AWSPENDING";

/// The whole store of a region.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreBody {
    /// Secrets by ARN.
    pub secrets: BTreeMap<String, SecretRecord>,
    /// The next version's sequence number (orders versions by creation).
    pub next_seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRecord {
    pub arn: String,
    pub name: String,
    pub description: Option<String>,
    /// The key as the user named it (id, ARN or alias); None: `alias/aws/secretsmanager`.
    pub kms_key_id: Option<String>,
    pub created: UnixTime,
    pub last_changed: UnixTime,
    /// A day (midnight UTC), as AWS keeps it.
    pub last_accessed: Option<UnixTime>,
    pub deletion: Option<Deletion>,
    pub tags: Vec<Tag>,
    pub policy: Option<String>,
    /// The unique id of each IAM principal the policy names, when it was put.
    #[serde(default)]
    pub policy_principals: BTreeMap<String, String>,
    pub rotation: Rotation,
    pub versions: BTreeMap<String, VersionRecord>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deletion {
    /// When DeleteSecret was called (DescribeSecret's DeletedDate).
    pub requested: UnixTime,
    /// When the secret is gone for good (DeleteSecret's DeletionDate).
    pub date: UnixTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub enabled: bool,
    /// The local executable run for each step (set only through the CLI).
    pub command: Option<String>,
    pub rules: Option<RotationRules>,
    pub last_rotated: Option<UnixTime>,
    pub next_rotation: Option<UnixTime>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotationRules {
    pub automatically_after_days: Option<u32>,
    pub duration: Option<String>,
    pub schedule_expression: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionRecord {
    pub seq: u64,
    pub created: UnixTime,
    pub stages: Vec<String>,
    pub last_accessed: Option<UnixTime>,
    pub sealed: SealedValue,
}

/// A value, envelope-encrypted (`envelope.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedValue {
    /// The KMS key that made the data key (its ARN).
    pub kms_key_arn: String,
    /// The data key, as KMS wrapped it (context SecretARN, SecretVersionId).
    #[serde(with = "crate::aws::b64")]
    pub encrypted_data_key: Vec<u8>,
    /// nonce ‖ AES-256-GCM(data key, value) ‖ tag.
    #[serde(with = "crate::aws::b64")]
    pub ciphertext: Vec<u8>,
    /// SecretBinary rather than SecretString.
    pub binary: bool,
    /// A keyed digest of the value, so an idempotent retry is recognised without KMS.
    pub digest: String,
}

impl SecretRecord {
    /// The version that carries `stage`.
    pub fn version_with(&self, stage: &str) -> Option<(&String, &VersionRecord)> {
        self.versions
            .iter()
            .find(|(_, v)| v.stages.iter().any(|s| s == stage))
    }

    /// Versions, newest first.
    pub fn versions_newest_first(&self) -> Vec<(&String, &VersionRecord)> {
        let mut v: Vec<_> = self.versions.iter().collect();
        v.sort_by_key(|(_, r)| std::cmp::Reverse(r.seq));
        v
    }

    /// `VersionIdsToStages` as AWS returns it (labelled versions only).
    pub fn version_stages(&self) -> BTreeMap<String, Vec<String>> {
        self.versions
            .iter()
            .filter(|(_, v)| !v.stages.is_empty())
            .map(|(id, v)| (id.clone(), v.stages.clone()))
            .collect()
    }
}
