//! The identity store: reading and changing `iam.json` (read-modify-write under
//! `iam.lock`, written atomically), resolving a profile to an [`Identity`], and the IAM
//! operations of the `cryptvol iam ...` commands.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::aws::error::{AwsError, Result};
use crate::aws::ids::AccountId;
use crate::policy::{self, Policy, PolicyKind};
use crate::sys::clock::UnixTime;
use crate::sys::fsio::{self, FileLock};

use super::identity::*;
use super::records::*;

/// The data dir's identity file.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    pub(super) data_dir: PathBuf,
    pub account: AccountId,
}

impl IdentityStore {
    pub fn new(data_dir: &Path, account: AccountId) -> Self {
        IdentityStore {
            data_dir: data_dir.to_path_buf(),
            account,
        }
    }

    /// The data dir's files (iam.json and the rest).
    pub(super) fn files(&self) -> crate::datadir::DataDir {
        crate::datadir::DataDir::new(&self.data_dir)
    }

    pub fn path(&self) -> PathBuf {
        self.files().iam_file()
    }

    /// The identities on disk; an absent file is an account with only its root.
    pub fn load(&self) -> Result<IdentityBody> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                if let Some(v) = crate::format_version::json_version(&bytes, "format")
                    && v > u64::from(FORMAT_V1)
                {
                    return Err(AwsError::NewerFormat {
                        what: format!("the identity file {}", path.display()),
                        found: v,
                        newest: FORMAT_V1.into(),
                    });
                }
                let body: IdentityBody =
                    serde_json::from_slice(&bytes).map_err(|e| AwsError::Corrupt {
                        path: path.clone(),
                        what: format!("not a cryptvol identity file: {e}"),
                    })?;
                if body.format != FORMAT_V1 {
                    return Err(AwsError::Corrupt {
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
            Err(e) => Err(AwsError::io("cannot read", &path, e)),
        }
    }

    /// Read-modify-write under the lock; nothing is written if `f` fails.
    pub fn mutate<T>(&self, f: impl FnOnce(&mut IdentityBody, UnixTime) -> Result<T>) -> Result<T> {
        let lock = self.files().iam_lock_file();
        let _l = FileLock::exclusive(&lock).map_err(|e| AwsError::io("cannot lock", &lock, e))?;
        let mut body = self.load()?;
        let out = f(&mut body, jiff::Timestamp::now().as_second())?;
        let bytes = serde_json::to_vec_pretty(&body).expect("identity body serialises");
        let path = self.path();
        fsio::write_atomic(&path, &bytes, fsio::PRIVATE_FILE)
            .map_err(|e| AwsError::io("cannot write", &path, e))?;
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
            AwsError::NoSuchEntity { .. } => AwsError::NoSuchEntity {
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
                Policy::parse(text, PolicyKind::Identity).map_err(|e| AwsError::Corrupt {
                    path: self.path(),
                    what: format!("policy {pname} of {} {name}: {e}", kind.word()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Identity {
            account: self.account.clone(),
            principal,
            policies,
            session: None,
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
            &policy::AccessRequest {
                caller: &who,
                action,
                resource,
                conditions: &c,
            },
        );
        if d.is_allowed() {
            return Ok(());
        }
        Err(AwsError::AccessDenied {
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
                return Err(AwsError::DeleteConflict {
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
                return Err(AwsError::DeleteConflict {
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
        Policy::parse(document, PolicyKind::Identity).map_err(AwsError::from_policy)?;
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
                .ok_or_else(|| AwsError::NoSuchEntity {
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
            .ok_or_else(|| AwsError::NoSuchEntity {
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

pub(super) fn policies_of<'b>(
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

pub(super) fn policies_mut<'b>(
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

pub(super) fn no_such(kind: EntityKind, name: &str) -> AwsError {
    AwsError::NoSuchEntity {
        what: format!("{} {name}", kind.word()),
        hint: format!(": list them with `cryptvol iam list-{}s`", kind.word()),
    }
}

pub(super) fn exists(kind: EntityKind, name: &str) -> AwsError {
    AwsError::EntityAlreadyExists {
        what: format!("{} {name}", kind.word()),
    }
}

/// IAM shows dates as ISO 8601 with an offset.
pub(super) fn iso(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_default()
}

pub(super) fn user_json(account: &AccountId, name: &str, u: &UserRecord) -> serde_json::Value {
    serde_json::json!({
        "Path": "/",
        "UserName": name,
        "UserId": u.id,
        "Arn": user_arn(account, name),
        "CreateDate": iso(u.created),
    })
}

pub(super) fn role_json(account: &AccountId, name: &str, r: &RoleRecord) -> serde_json::Value {
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
