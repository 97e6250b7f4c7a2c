//! Identities: the account root, IAM-style users and roles, and their inline identity
//! policies (the `cryptvol iam ...` commands), kept in `<data dir>/iam.json`.
//!
//! IAM is global in AWS, so identities belong to the data dir's account, not to a region.
//! The file holds no secret (policies are not secret); it is 0600 because it says who may
//! use which key. Changes are read-modify-write under `iam.lock`, written atomically.
//!
//! A caller is resolved to an [`Identity`]: who it is and its parsed identity policies,
//! which is all that policy evaluation needs from this module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{KmsError, Result};
use super::ids::AccountId;
use super::model::UnixTime;
use super::policy::{self, Policy, PolicyKind};
use crate::crypto::{Key256, aead};
use crate::fsio::{self, FileLock};
use zeroize::Zeroizing;

pub const IAM_FILE: &str = "iam.json";
const IAM_LOCK: &str = "iam.lock";
/// The data dir's key that seals access key secrets (32 random bytes, 0600).
pub const IAM_KEY_FILE: &str = "iam.key";
/// AWS's limit of access keys per user.
pub const MAX_ACCESS_KEYS: usize = 2;
const FORMAT_V1: u32 = 1;
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
    #[serde(with = "super::b64")]
    pub sealed_secret: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRecord {
    pub id: String,
    pub created: UnixTime,
    #[serde(default)]
    pub description: String,
    /// Kept as given; cryptvol has no STS, so it is informational.
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

/// Who a principal is, without its policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Root,
    User {
        name: String,
        id: String,
    },
    Role {
        name: String,
        id: String,
    },
    /// An AWS service principal acting itself (`ec2.<region>.amazonaws.com`), as a grant
    /// to a service lets it: no identity policies, no IAM unique id.
    Service {
        name: String,
    },
}

/// A resolved caller: the principal, its account and its parsed identity policies.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account: AccountId,
    pub principal: Principal,
    pub policies: Vec<Policy>,
}

impl Identity {
    pub fn root(account: AccountId) -> Identity {
        Identity {
            account,
            principal: Principal::Root,
            policies: Vec::new(),
        }
    }

    /// The IAM unique id (AIDA… / AROA…) of a user or role.
    pub fn unique_id(&self) -> Option<&str> {
        match &self.principal {
            Principal::Root | Principal::Service { .. } => None,
            Principal::User { id, .. } | Principal::Role { id, .. } => Some(id),
        }
    }

    pub fn is_root(&self) -> bool {
        self.principal == Principal::Root
    }

    /// The caller's ARN as CloudTrail and error messages show it (a role is seen as its
    /// session, `assumed-role/NAME/SESSION`).
    pub fn arn(&self) -> String {
        let a = &self.account;
        match &self.principal {
            Principal::Root => root_arn(a),
            Principal::User { name, .. } => user_arn(a, name),
            Principal::Role { name, .. } => {
                format!("arn:aws:sts::{a}:assumed-role/{name}/{CLI_ROLE_SESSION}")
            }
            Principal::Service { name } => name.clone(),
        }
    }

    /// The ARN policies match against `Principal` and `aws:PrincipalArn` (a role session
    /// matches as its role, as in AWS).
    pub fn principal_arn(&self) -> String {
        match &self.principal {
            Principal::Role { name, .. } => role_arn(&self.account, name),
            _ => self.arn(),
        }
    }

    /// `aws:PrincipalType`.
    pub fn principal_type(&self) -> &'static str {
        match self.principal {
            Principal::Root => "Account",
            Principal::User { .. } => "User",
            Principal::Role { .. } => "AssumedRole",
            Principal::Service { .. } => "AWSService",
        }
    }

    pub fn policy_caller(&self) -> policy::Caller {
        policy::Caller {
            arn: self.principal_arn(),
            account: self.account.to_string(),
            is_root: self.is_root(),
        }
    }

    /// CloudTrail's `userIdentity`.
    pub fn user_identity(&self, access_key_id: Option<&str>) -> serde_json::Value {
        let a = self.account.as_str();
        let mut v = match &self.principal {
            Principal::Root => serde_json::json!({
                "type": "Root", "principalId": a, "arn": self.arn(), "accountId": a,
            }),
            Principal::User { name, id } => serde_json::json!({
                "type": "IAMUser", "principalId": id, "arn": self.arn(), "accountId": a,
                "userName": name,
            }),
            Principal::Role { name, id } => serde_json::json!({
                "type": "AssumedRole",
                "principalId": format!("{id}:{CLI_ROLE_SESSION}"),
                "arn": self.arn(),
                "accountId": a,
                "sessionContext": { "sessionIssuer": {
                    "type": "Role", "principalId": id, "arn": role_arn(&self.account, name),
                    "accountId": a, "userName": name,
                }},
            }),
            // CloudTrail's shape for a call an AWS service makes itself.
            Principal::Service { name } => serde_json::json!({
                "type": "AWSService", "invokedBy": name,
            }),
        };
        if let Some(k) = access_key_id {
            v["accessKeyId"] = serde_json::Value::String(k.to_string());
        }
        v
    }
}

pub fn root_arn(account: &AccountId) -> String {
    format!("arn:aws:iam::{account}:root")
}

pub fn user_arn(account: &AccountId, name: &str) -> String {
    format!("arn:aws:iam::{account}:user/{name}")
}

pub fn role_arn(account: &AccountId, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

/// IAM's rule for user, role and policy names: `[A-Za-z0-9+=,.@_-]`, 1..=max characters.
pub fn check_name(field: &str, name: &str, max: usize) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > max || !name.chars().all(ok_char) {
        return Err(KmsError::validation(
            field,
            format!("'{name}' must be 1 to {max} characters of letters, digits and +=,.@_-"),
        ));
    }
    Ok(())
}

/// An IAM-style unique id: a 4-letter prefix (AIDA users, AROA roles) and 17 characters.
fn unique_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bytes: [u8; 17] = crate::crypto::random::array();
    let tail: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{tail}")
}

/// What kind of identity an `iam` command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    User,
    Role,
}

impl EntityKind {
    pub fn word(self) -> &'static str {
        match self {
            EntityKind::User => "user",
            EntityKind::Role => "role",
        }
    }
}

/// The data dir's identity file.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    data_dir: PathBuf,
    pub account: AccountId,
}

impl IdentityStore {
    pub fn new(data_dir: &Path, account: AccountId) -> Self {
        IdentityStore {
            data_dir: data_dir.to_path_buf(),
            account,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.data_dir.join(IAM_FILE)
    }

    /// The identities on disk; an absent file is an account with only its root.
    pub fn load(&self) -> Result<IdentityBody> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                if let Some(v) = crate::format_version::json_version(&bytes, "format")
                    && v > u64::from(FORMAT_V1)
                {
                    return Err(KmsError::NewerFormat {
                        what: format!("the identity file {}", path.display()),
                        found: v,
                        newest: FORMAT_V1.into(),
                    });
                }
                let body: IdentityBody =
                    serde_json::from_slice(&bytes).map_err(|e| KmsError::Corrupt {
                        path: path.clone(),
                        what: format!("not a cryptvol identity file: {e}"),
                    })?;
                if body.format != FORMAT_V1 {
                    return Err(KmsError::Corrupt {
                        path,
                        what: format!(
                            "identity file format {} is not one this cryptvol reads ({FORMAT_V1})",
                            body.format
                        ),
                    });
                }
                Ok(body)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IdentityBody {
                format: FORMAT_V1,
                ..Default::default()
            }),
            Err(e) => Err(KmsError::io("cannot read", &path, e)),
        }
    }

    /// Read-modify-write under the lock; nothing is written if `f` fails.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut IdentityBody, UnixTime) -> Result<T>) -> Result<T> {
        let lock = self.data_dir.join(IAM_LOCK);
        let _l = FileLock::exclusive(&lock).map_err(|e| KmsError::io("cannot lock", &lock, e))?;
        let mut body = self.load()?;
        let out = f(&mut body, jiff::Timestamp::now().as_second())?;
        let bytes = serde_json::to_vec_pretty(&body).expect("identity body serialises");
        let path = self.path();
        fsio::write_atomic(&path, &bytes, fsio::PRIVATE_FILE)
            .map_err(|e| KmsError::io("cannot write", &path, e))?;
        Ok(out)
    }

    /// The identity a profile names: unset or `root` is the account root, `role/NAME` a
    /// role, anything else a user.
    pub fn resolve_profile(&self, profile: Option<&str>) -> Result<Identity> {
        let profile = profile.map(str::trim).filter(|p| !p.is_empty());
        let Some(p) = profile.filter(|p| *p != "root") else {
            return Ok(Identity::root(self.account.clone()));
        };
        let body = self.load()?;
        let (kind, name) = match p.strip_prefix("role/") {
            Some(r) => (EntityKind::Role, r),
            None => (EntityKind::User, p),
        };
        self.identity_of(&body, kind, name).map_err(|e| match e {
            KmsError::NoSuchEntity { .. } => KmsError::NoSuchEntity {
                what: format!("profile '{p}' ({} {name})", kind.word()),
                hint: match kind {
                    EntityKind::User => {
                        format!(": create it with `cryptvol iam create-user --user-name {name}`")
                    }
                    EntityKind::Role => {
                        format!(": create it with `cryptvol iam create-role --role-name {name}`")
                    }
                },
            },
            other => other,
        })
    }

    /// A user or role with its policies parsed.
    pub fn identity_of(
        &self,
        body: &IdentityBody,
        kind: EntityKind,
        name: &str,
    ) -> Result<Identity> {
        let (principal, texts) = match kind {
            EntityKind::User => {
                let u = body.users.get(name).ok_or_else(|| no_such(kind, name))?;
                (
                    Principal::User {
                        name: name.to_string(),
                        id: u.id.clone(),
                    },
                    &u.policies,
                )
            }
            EntityKind::Role => {
                let r = body.roles.get(name).ok_or_else(|| no_such(kind, name))?;
                (
                    Principal::Role {
                        name: name.to_string(),
                        id: r.id.clone(),
                    },
                    &r.policies,
                )
            }
        };
        let policies = texts
            .iter()
            .map(|(pname, text)| {
                Policy::parse(text, PolicyKind::Identity).map_err(|e| KmsError::Corrupt {
                    path: self.path(),
                    what: format!("policy {pname} of {} {name}: {e}", kind.word()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Identity {
            account: self.account.clone(),
            principal,
            policies,
        })
    }

    /// The unique id of the user or role `arn` names in this account, if it exists.
    pub fn unique_id_of(&self, body: &IdentityBody, arn: &str) -> Option<String> {
        let rest = arn.strip_prefix(&format!("arn:aws:iam::{}:", self.account))?;
        let last = |s: &str| s.rsplit('/').next().unwrap_or("").to_string();
        if let Some(u) = rest.strip_prefix("user/") {
            return body.users.get(&last(u)).map(|u| u.id.clone());
        }
        let r = rest.strip_prefix("role/")?;
        body.roles.get(&last(r)).map(|r| r.id.clone())
    }

    /// Whether `arn` names a user or role that exists (for key policy validation).
    /// ARNs of other accounts, and the root, are not ours to check.
    pub fn principal_exists(&self, body: &IdentityBody, arn: &str) -> bool {
        let prefix = format!("arn:aws:iam::{}:", self.account);
        let Some(rest) = arn.strip_prefix(&prefix) else {
            let sts = format!("arn:aws:sts::{}:assumed-role/", self.account);
            return match arn.strip_prefix(&sts) {
                Some(r) => body.roles.contains_key(r.split('/').next().unwrap_or("")),
                None => true,
            };
        };
        if rest == "root" || rest.contains('*') {
            return true;
        }
        let last = |s: &str| s.rsplit('/').next().unwrap_or("").to_string();
        if let Some(u) = rest.strip_prefix("user/") {
            return body.users.contains_key(&last(u));
        }
        if let Some(r) = rest.strip_prefix("role/") {
            return body.roles.contains_key(&last(r));
        }
        true
    }

    /// Authorizes an `iam:` action of `caller` on `resource` (a user or role ARN): the
    /// root may do everything; others need an identity policy that allows it.
    pub fn authorize(&self, caller: &Identity, action: &str, resource: &str) -> Result<()> {
        let who = caller.policy_caller();
        let mut c = policy::ConditionValues::new();
        c.set("aws:PrincipalArn", caller.principal_arn());
        c.set("aws:PrincipalAccount", caller.account.as_str());
        let d = policy::evaluate(
            None,
            &caller.policies,
            &policy::Request {
                caller: &who,
                action,
                resource,
                conditions: &c,
            },
        );
        if d.is_allowed() {
            return Ok(());
        }
        Err(KmsError::AccessDenied {
            message: d
                .denial_message(&caller.arn(), action, resource)
                .unwrap_or_else(|| format!("not authorized to perform {action}")),
        })
    }

    pub fn arn_of(&self, kind: EntityKind, name: &str) -> String {
        match kind {
            EntityKind::User => user_arn(&self.account, name),
            EntityKind::Role => role_arn(&self.account, name),
        }
    }

    pub fn create(
        &self,
        kind: EntityKind,
        name: &str,
        description: &str,
        trust: Option<&str>,
    ) -> Result<serde_json::Value> {
        check_name(&format!("{}-name", kind.word()), name, 64)?;
        let account = self.account.clone();
        self.mutate(|b, now| match kind {
            EntityKind::User => {
                if b.users.contains_key(name) {
                    return Err(exists(kind, name));
                }
                let rec = UserRecord {
                    id: unique_id("AIDA"),
                    created: now,
                    policies: BTreeMap::new(),
                    access_keys: BTreeMap::new(),
                };
                let v = user_json(&account, name, &rec);
                b.users.insert(name.to_string(), rec);
                Ok(serde_json::json!({ "User": v }))
            }
            EntityKind::Role => {
                if b.roles.contains_key(name) {
                    return Err(exists(kind, name));
                }
                let rec = RoleRecord {
                    id: unique_id("AROA"),
                    created: now,
                    description: description.to_string(),
                    assume_role_policy: trust.map(str::to_string),
                    policies: BTreeMap::new(),
                };
                let v = role_json(&account, name, &rec);
                b.roles.insert(name.to_string(), rec);
                Ok(serde_json::json!({ "Role": v }))
            }
        })
    }

    /// Deletes a user or role; as IAM, only once its inline policies are gone.
    pub fn delete(&self, kind: EntityKind, name: &str) -> Result<()> {
        self.mutate(|b, _| {
            if let Some(k) = b.users.get(name).filter(|_| kind == EntityKind::User)
                && let Some(id) = k.access_keys.keys().next()
            {
                return Err(KmsError::DeleteConflict {
                    what: format!("user {name}"),
                    why: format!(
                        "it still has access keys: delete them first with `cryptvol iam delete-access-key --user-name {name} --access-key-id {id}`"
                    ),
                });
            }
            let policies: Vec<String> = match kind {
                EntityKind::User => b.users.get(name).map(|u| u.policies.keys().cloned().collect()),
                EntityKind::Role => b.roles.get(name).map(|r| r.policies.keys().cloned().collect()),
            }
            .ok_or_else(|| no_such(kind, name))?;
            if let Some(p) = policies.first() {
                let w = kind.word();
                return Err(KmsError::DeleteConflict {
                    what: format!("{w} {name}"),
                    why: format!(
                        "it still has inline policies ({}): remove them first with `cryptvol iam delete-{w}-policy --{w}-name {name} --policy-name {p}`",
                        policies.join(", ")
                    ),
                });
            }
            match kind {
                EntityKind::User => b.users.remove(name).map(|_| ()),
                EntityKind::Role => b.roles.remove(name).map(|_| ()),
            };
            Ok(())
        })
    }

    /// Adds or replaces an inline policy after validating it.
    pub fn put_policy(
        &self,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
        document: &str,
    ) -> Result<()> {
        check_name("policy-name", policy_name, 128)?;
        Policy::parse(document, PolicyKind::Identity).map_err(KmsError::from_policy)?;
        self.mutate(|b, _| {
            policies_mut(b, kind, name)?.insert(policy_name.to_string(), document.to_string());
            Ok(())
        })
    }

    pub fn delete_policy(&self, kind: EntityKind, name: &str, policy_name: &str) -> Result<()> {
        self.mutate(|b, _| {
            policies_mut(b, kind, name)?
                .remove(policy_name)
                .map(|_| ())
                .ok_or_else(|| KmsError::NoSuchEntity {
                    what: format!("policy {policy_name} of {} {name}", kind.word()),
                    hint: format!(
                        ": list them with `cryptvol iam list-{}-policies`",
                        kind.word()
                    ),
                })
        })
    }

    pub fn get_policy(&self, kind: EntityKind, name: &str, policy_name: &str) -> Result<String> {
        let b = self.load()?;
        let policies = policies_of(&b, kind, name)?;
        policies
            .get(policy_name)
            .cloned()
            .ok_or_else(|| KmsError::NoSuchEntity {
                what: format!("policy {policy_name} of {} {name}", kind.word()),
                hint: format!(
                    ": list them with `cryptvol iam list-{}-policies`",
                    kind.word()
                ),
            })
    }

    pub fn policy_names(&self, kind: EntityKind, name: &str) -> Result<Vec<String>> {
        let b = self.load()?;
        Ok(policies_of(&b, kind, name)?.keys().cloned().collect())
    }

    pub fn describe(&self, kind: EntityKind, name: &str) -> Result<serde_json::Value> {
        let b = self.load()?;
        match kind {
            EntityKind::User => b
                .users
                .get(name)
                .map(|u| user_json(&self.account, name, u))
                .ok_or_else(|| no_such(kind, name)),
            EntityKind::Role => b
                .roles
                .get(name)
                .map(|r| role_json(&self.account, name, r))
                .ok_or_else(|| no_such(kind, name)),
        }
    }

    pub fn list(&self, kind: EntityKind) -> Result<Vec<serde_json::Value>> {
        let b = self.load()?;
        Ok(match kind {
            EntityKind::User => b
                .users
                .iter()
                .map(|(n, u)| user_json(&self.account, n, u))
                .collect(),
            EntityKind::Role => b
                .roles
                .iter()
                .map(|(n, r)| role_json(&self.account, n, r))
                .collect(),
        })
    }
}

impl IdentityStore {
    /// The key sealing access key secrets, made on first use.
    fn iam_key(&self) -> Result<Key256> {
        let path = self.data_dir.join(IAM_KEY_FILE);
        match std::fs::read(&path) {
            Ok(b) => Key256::from_slice(&b).ok_or_else(|| KmsError::Corrupt {
                path,
                what: format!("{} bytes, not a 32-byte key", b.len()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = Key256::generate();
                match fsio::create_atomic(&path, k.expose(), fsio::PRIVATE_FILE) {
                    Ok(()) => Ok(k),
                    // Another process made it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.iam_key(),
                    Err(e) => Err(KmsError::io("cannot create", &path, e)),
                }
            }
            Err(e) => Err(KmsError::io("cannot read", &path, e)),
        }
    }

    /// A new access key for `user`: (AccessKeyId, SecretAccessKey). The secret is shown
    /// once, here; only its sealed form is kept.
    pub fn create_access_key(&self, user: &str) -> Result<serde_json::Value> {
        let key = self.iam_key()?;
        self.mutate(|b, now| {
            let u = b
                .users
                .get_mut(user)
                .ok_or_else(|| no_such(EntityKind::User, user))?;
            if u.access_keys.len() >= MAX_ACCESS_KEYS {
                return Err(KmsError::LimitExceeded {
                    what: format!(
                        "user {user} already has {MAX_ACCESS_KEYS} access keys: delete one with `cryptvol iam delete-access-key`"
                    ),
                });
            }
            let id = unique_id("AKIA").chars().take(20).collect::<String>();
            let secret = zeroize::Zeroizing::new(random_secret());
            let sealed_secret = aead::seal_secret(&key, id.as_bytes(), secret.as_bytes());
            u.access_keys.insert(
                id.clone(),
                AccessKeyRecord {
                    created: now,
                    status: "Active".into(),
                    sealed_secret,
                },
            );
            Ok(serde_json::json!({ "AccessKey": {
                "UserName": user,
                "AccessKeyId": id,
                "Status": "Active",
                "SecretAccessKey": secret.as_str(),
                "CreateDate": iso(now),
            }}))
        })
    }

    pub fn list_access_keys(&self, user: &str) -> Result<Vec<serde_json::Value>> {
        let b = self.load()?;
        let u = b
            .users
            .get(user)
            .ok_or_else(|| no_such(EntityKind::User, user))?;
        Ok(u.access_keys
            .iter()
            .map(|(id, k)| {
                serde_json::json!({
                    "UserName": user, "AccessKeyId": id, "Status": k.status,
                    "CreateDate": iso(k.created),
                })
            })
            .collect())
    }

    pub fn delete_access_key(&self, user: &str, access_key_id: &str) -> Result<()> {
        self.mutate(|b, _| {
            let u = b
                .users
                .get_mut(user)
                .ok_or_else(|| no_such(EntityKind::User, user))?;
            u.access_keys
                .remove(access_key_id)
                .map(|_| ())
                .ok_or_else(|| KmsError::NoSuchEntity {
                    what: format!("access key {access_key_id} of user {user}"),
                    hint: format!(
                        ": list them with `cryptvol iam list-access-keys --user-name {user}`"
                    ),
                })
        })
    }

    /// Every active access key with its owner and secret (for the KMS server, which keeps
    /// them in memory and re-reads them when iam.json changes).
    pub fn access_keys(
        &self,
        body: &IdentityBody,
    ) -> Result<Vec<(String, Identity, Zeroizing<String>)>> {
        if body.users.values().all(|u| u.access_keys.is_empty()) {
            return Ok(Vec::new());
        }
        let key = self.iam_key()?;
        let mut out = Vec::new();
        for (name, u) in &body.users {
            for (id, k) in u.access_keys.iter().filter(|(_, k)| k.status == "Active") {
                let secret = aead::open_secret(&key, id.as_bytes(), &k.sealed_secret).map_err(|_| {
                    KmsError::Corrupt {
                        path: self.path(),
                        what: format!(
                            "the secret of access key {id} does not open with {}: restore the data dir's original {IAM_KEY_FILE}",
                            self.data_dir.join(IAM_KEY_FILE).display()
                        ),
                    }
                })?;
                let secret = Zeroizing::new(String::from_utf8_lossy(secret.expose()).into_owned());
                out.push((
                    id.clone(),
                    self.identity_of(body, EntityKind::User, name)?,
                    secret,
                ));
            }
        }
        Ok(out)
    }
}

/// A 40-character secret access key (base64 of 30 random bytes, as AWS's look).
fn random_secret() -> String {
    let mut b = [0u8; 30];
    crate::crypto::random::fill(&mut b);
    let s = super::b64::encode(&b);
    zeroize::Zeroize::zeroize(&mut b);
    s
}

fn policies_of<'b>(
    b: &'b IdentityBody,
    kind: EntityKind,
    name: &str,
) -> Result<&'b BTreeMap<String, String>> {
    match kind {
        EntityKind::User => b.users.get(name).map(|u| &u.policies),
        EntityKind::Role => b.roles.get(name).map(|r| &r.policies),
    }
    .ok_or_else(|| no_such(kind, name))
}

fn policies_mut<'b>(
    b: &'b mut IdentityBody,
    kind: EntityKind,
    name: &str,
) -> Result<&'b mut BTreeMap<String, String>> {
    match kind {
        EntityKind::User => b.users.get_mut(name).map(|u| &mut u.policies),
        EntityKind::Role => b.roles.get_mut(name).map(|r| &mut r.policies),
    }
    .ok_or_else(|| no_such(kind, name))
}

fn no_such(kind: EntityKind, name: &str) -> KmsError {
    KmsError::NoSuchEntity {
        what: format!("{} {name}", kind.word()),
        hint: format!(": list them with `cryptvol iam list-{}s`", kind.word()),
    }
}

fn exists(kind: EntityKind, name: &str) -> KmsError {
    KmsError::EntityAlreadyExists {
        what: format!("{} {name}", kind.word()),
    }
}

/// IAM shows dates as ISO 8601 with an offset.
fn iso(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_default()
}

fn user_json(account: &AccountId, name: &str, u: &UserRecord) -> serde_json::Value {
    serde_json::json!({
        "Path": "/",
        "UserName": name,
        "UserId": u.id,
        "Arn": user_arn(account, name),
        "CreateDate": iso(u.created),
    })
}

fn role_json(account: &AccountId, name: &str, r: &RoleRecord) -> serde_json::Value {
    let mut v = serde_json::json!({
        "Path": "/",
        "RoleName": name,
        "RoleId": r.id,
        "Arn": role_arn(account, name),
        "CreateDate": iso(r.created),
    });
    if !r.description.is_empty() {
        v["Description"] = r.description.clone().into();
    }
    if let Some(t) = &r.assume_role_policy {
        v["AssumeRolePolicyDocument"] =
            serde_json::from_str(t).unwrap_or_else(|_| t.clone().into());
    }
    v
}
