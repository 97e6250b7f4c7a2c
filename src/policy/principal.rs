//! Principal values (`"*"`, `{"AWS": ...}`, `{"Service": ...}`): validating what a policy
//! names and deciding whether, and how, a [`Requester`] is among them.
//!
//! "How" matters for key policies: naming the caller (or `*`) grants directly, while
//! naming the caller's account root delegates to the account's IAM (identity) policies.

use super::request::Requester;
use super::wildcard::{Case, glob_match};

/// One entry of a Principal or NotPrincipal element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrincipalEntry {
    /// `"*"` or `{"AWS": "*"}`.
    Anyone,
    /// A 12-digit account id or `arn:aws:iam::ACCT:root`: the account as a whole.
    Account(String),
    /// An IAM user; `name` is the last path segment.
    User { account: String, name: String },
    /// An IAM role; `name` is the last path segment.
    Role { account: String, name: String },
    /// `arn:aws:sts::ACCT:assumed-role/ROLE/SESSION`; `session` may hold `*` and `?`.
    AssumedRole {
        account: String,
        role: String,
        session: String,
    },
    /// `{"Service": ...}`: matches an AWS service acting itself (`iam::Caller::aws_service`),
    /// whose policy ARN is its service principal name.
    Service(String),
}

/// How a principal entry let the caller in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grant {
    /// Through the account: the caller's identity policies must also allow.
    Account,
    /// The caller (or everyone) is named outright.
    Direct,
}

pub(crate) const INVALID_AWS_PRINCIPAL: &str =
    "use \"*\", a 12-digit account id, or arn:aws:iam::ACCOUNT:root|user/NAME|role/NAME";

impl PrincipalEntry {
    /// Parses one `"AWS"` value; `None` when it is not a principal we accept.
    pub(crate) fn parse_aws(value: &str) -> Option<Self> {
        if value == "*" {
            return Some(Self::Anyone);
        }
        if is_account_id(value) {
            return Some(Self::Account(value.to_string()));
        }
        if let Some(rest) = value.strip_prefix("arn:aws:iam::") {
            let (account, resource) = rest.split_once(':')?;
            if !is_account_id(account) {
                return None;
            }
            let account = account.to_string();
            if resource == "root" {
                return Some(Self::Account(account));
            }
            let (kind, path) = resource.split_once('/')?;
            let segments: Vec<&str> = path.split('/').collect();
            if !segments.iter().all(|s| is_name(s)) {
                return None;
            }
            let name = segments.last()?.to_string();
            return match kind {
                "user" => Some(Self::User { account, name }),
                "role" => Some(Self::Role { account, name }),
                _ => None,
            };
        }
        if let Some(rest) = value.strip_prefix("arn:aws:sts::") {
            let (account, resource) = rest.split_once(':')?;
            let parts: Vec<&str> = resource.split('/').collect();
            let [kind, role, session] = parts.as_slice() else {
                return None;
            };
            let session_ok = (1..=64).contains(&session.chars().count())
                && session
                    .chars()
                    .all(|c| is_name_char(c) || c == '*' || c == '?');
            if *kind != "assumed-role" || !is_account_id(account) || !is_name(role) || !session_ok {
                return None;
            }
            return Some(Self::AssumedRole {
                account: account.to_string(),
                role: role.to_string(),
                session: session.to_string(),
            });
        }
        None
    }

    /// Parses one `"Service"` value, e.g. `ec2.amazonaws.com`.
    /// A service principal is a DNS name: an ARN given as `"Service"` would otherwise name
    /// an IAM user or role that no existence check or unique-id binding sees.
    pub(crate) fn parse_service(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && !value
                .chars()
                .any(|c| c.is_whitespace() || c == ':' || c == '/' || c == '*');
        ok.then(|| Self::Service(value.to_string()))
    }

    /// Whether the caller is this principal, and if so how it was let in.
    pub(crate) fn grant_for(&self, caller: &Requester) -> Option<Grant> {
        match self {
            Self::Anyone => Some(Grant::Direct),
            Self::Account(account) if *account == caller.account => Some(if caller.is_root {
                Grant::Direct
            } else {
                Grant::Account
            }),
            Self::Account(_) => None,
            Self::Service(name) => (caller.arn == *name).then_some(Grant::Direct),
            Self::User { account, name } => (caller.arn
                == format!("arn:aws:iam::{account}:user/{name}"))
            .then_some(Grant::Direct),
            Self::Role { account, name } => (caller.arn
                == format!("arn:aws:iam::{account}:role/{name}"))
            .then_some(Grant::Direct),
            Self::AssumedRole {
                account,
                role,
                session,
            } => {
                // A role session's caller is reported by its role ARN, so any session pattern
                // of that role matches; a caller given as the session ARN is globbed.
                let role_arn = format!("arn:aws:iam::{account}:role/{role}");
                let session_arn = format!("arn:aws:sts::{account}:assumed-role/{role}/{session}");
                (caller.arn == role_arn || glob_match(&session_arn, &caller.arn, Case::Sensitive))
                    .then_some(Grant::Direct)
            }
        }
    }

    /// Whether a NotPrincipal entry exempts the caller. Unlike [`Self::grant_for`], an
    /// account entry names only the account principal itself (its root), not every identity
    /// of the account: AWS's `"Deny", "NotPrincipal": [user/alice, ACCT:root]` denies bob.
    pub(crate) fn exempts(&self, caller: &Requester) -> bool {
        match self {
            Self::Account(account) => caller.is_root && *account == caller.account,
            other => other.grant_for(caller).is_some(),
        }
    }

    /// The IAM identity this entry names, for existence checks: the account root, the user
    /// or role ARN without its path, or for a role session the role's ARN. `None` for `*`
    /// and services.
    pub(crate) fn identity_arn(&self) -> Option<String> {
        match self {
            Self::Anyone | Self::Service(_) => None,
            Self::Account(account) => Some(format!("arn:aws:iam::{account}:root")),
            Self::User { account, name } => Some(format!("arn:aws:iam::{account}:user/{name}")),
            Self::Role { account, name } => Some(format!("arn:aws:iam::{account}:role/{name}")),
            Self::AssumedRole { account, role, .. } => {
                Some(format!("arn:aws:iam::{account}:role/{role}"))
            }
        }
    }
}

fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.chars().all(is_name_char)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn user(arn: &str) -> Requester {
        Requester {
            arn: arn.to_string(),
            account: "111122223333".to_string(),
            is_root: arn.ends_with(":root"),
        }
    }

    #[test]
    fn accepted_and_rejected_values() {
        for ok in [
            "*",
            "111122223333",
            "arn:aws:iam::111122223333:root",
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::111122223333:user/team/a/alice",
            "arn:aws:iam::111122223333:role/ops",
            "arn:aws:sts::111122223333:assumed-role/ops/*",
        ] {
            assert!(PrincipalEntry::parse_aws(ok).is_some(), "{ok}");
        }
        for bad in [
            "",
            "alice",
            "11112222333",
            "arn:aws:iam::111122223333:group/devs",
            "arn:aws:iam::111122223333:user/",
            "arn:aws:iam::111122223333:user/a//b",
            "arn:aws:iam::111122223333:user/al ice",
            "arn:aws:iam::*:root",
            "arn:aws:iam::111122223333:user/*",
            "arn:aws:sts::111122223333:assumed-role/ops",
            "arn:aws:sts::111122223333:federated-user/x/y",
            "arn:aws:s3:::bucket",
        ] {
            assert!(PrincipalEntry::parse_aws(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn grants() {
        let alice = user("arn:aws:iam::111122223333:user/alice");
        let root = user("arn:aws:iam::111122223333:root");
        let account = PrincipalEntry::Account("111122223333".into());
        assert_eq!(account.grant_for(&alice), Some(Grant::Account));
        assert_eq!(account.grant_for(&root), Some(Grant::Direct));
        let pathed = PrincipalEntry::parse_aws("arn:aws:iam::111122223333:user/team/alice");
        assert_eq!(
            pathed.and_then(|p| p.grant_for(&alice)),
            Some(Grant::Direct)
        );
        let other = PrincipalEntry::Account("444455556666".into());
        assert_eq!(other.grant_for(&root), None);
        let service = PrincipalEntry::Service("ec2.amazonaws.com".into());
        assert_eq!(service.grant_for(&root), None);
    }

    #[test]
    fn a_service_entry_never_names_an_iam_identity() {
        let alice = user("arn:aws:iam::111122223333:user/alice");
        for v in [
            "arn:aws:iam::111122223333:user/alice",
            "arn:aws:iam::111122223333:root",
            "*",
        ] {
            assert!(
                PrincipalEntry::parse_service(v).is_none_or(|p| p.grant_for(&alice).is_none()),
                "{v}"
            );
            assert!(PrincipalEntry::parse_service(v).is_none(), "{v}");
        }
        assert!(PrincipalEntry::parse_service("ec2.us-east-1.amazonaws.com").is_some());
    }
}
