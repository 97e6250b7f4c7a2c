//! What the keystore records about keys and aliases (the JSON body of the keystore file,
//! docs/formats.md "Keystore body"). Plain data and the state rules that need no I/O.
//! Unknown fields are refused and missing optional ones take defaults, so a newer
//! cryptvol can add fields without a format bump and an older one refuses what it cannot
//! honour.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ids::{AliasName, KeyId};

use crate::aws::ids::{AccountId, Region};

/// Unix time in whole seconds (UTC).
pub use crate::sys::clock::UnixTime;

pub const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
        }
    }
}

/// Who manages a key: the user, or cryptvol on a service's behalf (`alias/aws/...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyManager {
    Customer,
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionOrigin {
    /// The material the key was created with.
    Initial,
    Automatic,
    OnDemand,
}

/// One generation of key material. `sealed` is `nonce || AES-256-GCM(material) || tag`
/// under the region's version-sealing key (docs/formats.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVersion {
    pub number: u32,
    pub created: UnixTime,
    pub origin: VersionOrigin,
    #[serde(with = "crate::aws::b64")]
    pub sealed: Vec<u8>,
    /// AWS's `KeyMaterialId`: 64 lowercase hex digits naming this version, random when the
    /// version is made, so it says nothing about the material (docs/formats.md). Keystores
    /// written before it was kept get a keyed hash of the root key, key id and version
    /// number at load (`Keystore::load`), stored with the next write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub material_id: Option<String>,
    /// For a key in a custom key store: the `CKA_ID` (hex) of the AES key object in the
    /// token that is this version's material; `sealed` is then empty, since the material
    /// never leaves the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_object: Option<String>,
}

impl KeyVersion {
    /// The version's `KeyMaterialId` (always set once the keystore is loaded).
    pub fn material_id(&self) -> &str {
        self.material_id.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub enabled: bool,
    /// Days between automatic rotations (90..=2560); kept when rotation is disabled so that
    /// re-enabling without a period restores it, as AWS does.
    pub period_days: u32,
    pub next_rotation: Option<UnixTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: KeyId,
    #[serde(default)]
    pub description: String,
    pub created: UnixTime,
    pub state: KeyState,
    pub manager: KeyManager,
    #[serde(default)]
    pub deletion_date: Option<UnixTime>,
    #[serde(default)]
    pub pending_window_days: Option<u32>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub rotation: Rotation,
    /// The key policy document as put; None is the default policy for the key's manager.
    #[serde(default)]
    pub policy: Option<String>,
    /// The unique ids of the users and roles the policy named when it was put (ARN → id),
    /// so a user deleted and created again under the same name is not the one the policy
    /// meant (AWS binds policies to unique ids the same way).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policy_principals: BTreeMap<String, String>,
    /// Oldest first; the last is current. Never empty.
    pub versions: Vec<KeyVersion>,
    /// The custom key store (`cks-...`) whose token holds this key's material; None for
    /// keys whose material the keystore seals (`Origin` AWS_KMS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_key_store_id: Option<String>,
}

impl KeyRecord {
    pub fn current_version(&self) -> &KeyVersion {
        self.versions.last().expect("a key always has a version")
    }

    pub fn is_managed(&self) -> bool {
        self.manager == KeyManager::Aws
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasRecord {
    pub target: KeyId,
    pub created: UnixTime,
    pub updated: UnixTime,
}

/// What remains of a deleted key: enough to say "deleted on …" instead of "not found".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletedKey {
    pub deleted: UnixTime,
    /// For metering (key-months); absent in keystores written before it was kept.
    #[serde(default)]
    pub created: Option<UnixTime>,
}

/// The keystore body: everything a region's KMS knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreBody {
    pub region: Region,
    pub account_id: AccountId,
    #[serde(default)]
    pub keys: BTreeMap<KeyId, KeyRecord>,
    #[serde(default)]
    pub aliases: BTreeMap<AliasName, AliasRecord>,
    #[serde(default)]
    pub deleted_keys: BTreeMap<KeyId, DeletedKey>,
    /// Each key's live grants, oldest first (absent in keystores written before grants).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<KeyId, Vec<GrantRecord>>,
    /// Custom key stores by id (`cks-...`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_key_stores: BTreeMap<String, CustomKeyStoreRecord>,
    /// Written by the first root-key rotation: the region's first root key, from which its
    /// audit chain, grant tokens, paging markers and legacy material ids are derived, sealed
    /// under the current root (keystore.rs). Absent: the current root is that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derivation_key: Option<SealedSecret>,
    /// The audit chain's successor keys, one added by each root-key rotation (epoch 1,
    /// 2, ...; epoch 0 is derived from the derivation key), sealed under the current root
    /// (keystore.rs). Absent in a region never rotated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_chain_keys: Vec<SealedSecret>,
}

/// Whether a custom key store is meant to be connected. AWS's `ConnectionState` is
/// DISCONNECTED, or CONNECTED while its token can be reached and FAILED while it cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreConnection {
    Connected,
    Disconnected,
}

/// The crypto user's PIN of a custom key store's token. Stored in the keystore body,
/// which the root key seals; zeroized when dropped, never shown.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StorePassword(zeroize::Zeroizing<String>);

impl StorePassword {
    pub fn new(pin: String) -> Self {
        StorePassword(zeroize::Zeroizing::new(pin))
    }

    pub fn char_len(&self) -> usize {
        self.0.chars().count()
    }

    /// The PIN as PKCS#11 takes it (a zeroizing copy).
    pub fn auth_pin(&self) -> cryptoki::types::AuthPin {
        self.0.as_str().into()
    }
}

impl std::fmt::Debug for StorePassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorePassword(***)")
    }
}

/// A custom key store (AWS's `CustomKeyStoresListEntry`, type AWS_CLOUDHSM): a PKCS#11
/// token whose AES key objects are the material of the store's keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomKeyStoreRecord {
    pub id: String,
    pub name: String,
    pub created: UnixTime,
    pub token: crate::hsm::TokenSpec,
    pub password: StorePassword,
    pub connection: StoreConnection,
    /// Incremented at every connect and disconnect, so that every process drops the
    /// sessions it opened before a disconnect or a change of password.
    #[serde(default)]
    pub epoch: u64,
    /// `CKA_ID`s (hex) of objects of deleted keys that the token could not destroy when the
    /// keys were deleted (it was unreachable); destroyed at the next use of the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects_to_destroy: Vec<String>,
}

/// A secret sealed with `crypto::aead::seal_secret` (nonce ‖ ciphertext ‖ tag), base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret(#[serde(with = "crate::aws::b64")] pub Vec<u8>);

impl KeystoreBody {
    pub fn empty(region: Region, account_id: AccountId) -> Self {
        KeystoreBody {
            region,
            account_id,
            keys: BTreeMap::new(),
            aliases: BTreeMap::new(),
            deleted_keys: BTreeMap::new(),
            grants: BTreeMap::new(),
            custom_key_stores: BTreeMap::new(),
            derivation_key: None,
            audit_chain_keys: Vec::new(),
        }
    }

    /// The earliest time at which housekeeping (a due rotation or deletion) has work.
    pub fn next_due(&self) -> Option<UnixTime> {
        self.keys
            .values()
            .filter_map(|k| match k.state {
                KeyState::PendingDeletion => k.deletion_date,
                // Disabled keys are not rotated (as AWS); they catch up once re-enabled.
                KeyState::Enabled if k.rotation.enabled => k.rotation.next_rotation,
                _ => None,
            })
            .min()
    }
}

/// A grant's encryption context constraint (AWS's `GrantConstraints`: one of the two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum GrantConstraint {
    /// The request's context must include these pairs (and may hold more).
    EncryptionContextSubset(BTreeMap<String, String>),
    /// The request's context must be exactly these pairs.
    EncryptionContextEquals(BTreeMap<String, String>),
}

/// One grant on a key (AWS's `GrantListEntry`). Principals are kept as given; `grantee_id`
/// binds the grant to the user or role that existed when it was made, as key policies are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRecord {
    /// 64 lowercase hex digits.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub created: UnixTime,
    pub grantee: String,
    #[serde(default)]
    pub grantee_id: Option<String>,
    #[serde(default)]
    pub retiring: Option<String>,
    /// As `grantee_id`, for the retiring principal: a user of that name created again
    /// later does not retire the grant.
    #[serde(default)]
    pub retiring_id: Option<String>,
    /// The issuing account root, `arn:aws:iam::ACCT:root`.
    pub issuing_account: String,
    /// AWS operation names, in the order given.
    pub operations: Vec<String>,
    #[serde(default)]
    pub constraint: Option<GrantConstraint>,
}
