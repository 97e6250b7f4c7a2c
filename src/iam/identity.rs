//! A resolved caller ([`Identity`]): who it is, its account and its parsed identity
//! policies, which is all that policy evaluation needs; and the names IAM gives to
//! principals (ARNs, unique ids, name rules).

use crate::aws::error::{AwsError, Result};
use crate::aws::ids::AccountId;
use crate::policy::{self, Policy};

use super::records::*;

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
    /// Set when the caller signed with temporary credentials (`cryptvol sts ...`).
    pub session: Option<SessionContext>,
}

/// What a temporary credential adds to its identity: the role session's name and when
/// the session began (CloudTrail's `sessionContext.attributes.creationDate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionContext {
    /// The role session name (AssumeRole); `None` for a user's session (GetSessionToken).
    pub role_session_name: Option<String>,
    pub created: crate::sys::clock::UnixTime,
    pub expires: crate::sys::clock::UnixTime,
    /// The long-term identity and access key the session descends from (None for a
    /// session made by other means).
    pub origin: Option<super::sessions::Origin>,
}

impl Identity {
    pub fn root(account: AccountId) -> Identity {
        Identity {
            account,
            principal: Principal::Root,
            policies: Vec::new(),
            session: None,
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
                format!(
                    "arn:aws:sts::{a}:assumed-role/{name}/{}",
                    self.session_name()
                )
            }
            Principal::Service { name } => name.clone(),
        }
    }

    /// The role session's name: the one it was assumed with, or the CLI's.
    pub fn session_name(&self) -> &str {
        self.session
            .as_ref()
            .and_then(|s| s.role_session_name.as_deref())
            .unwrap_or(CLI_ROLE_SESSION)
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

    pub fn policy_caller(&self) -> policy::Requester {
        policy::Requester {
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
                "principalId": format!("{id}:{}", self.session_name()),
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
        if let Some(s) = &self.session {
            // CloudTrail's attributes of a call made with temporary credentials.
            v["sessionContext"]["attributes"] = serde_json::json!({
                "creationDate": crate::sys::clock::format_time(s.created),
                "mfaAuthenticated": "false",
            });
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
        return Err(AwsError::validation(
            field,
            format!("'{name}' must be 1 to {max} characters of letters, digits and +=,.@_-"),
        ));
    }
    Ok(())
}

/// An IAM-style unique id: a 4-letter prefix (AIDA users, AROA roles) and 17 characters.
pub(super) fn unique_id(prefix: &str) -> String {
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
