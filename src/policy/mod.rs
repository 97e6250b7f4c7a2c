//! Key and identity policies in the AWS JSON policy language: parsing with strict
//! validation, and evaluation the way AWS KMS evaluates them.
//!
//! A key policy (resource-based, with `Principal`) is attached to a key; identity policies
//! (no `Principal`) to users and roles. [`evaluate`] combines both: an explicit deny wins,
//! then the key policy must allow the caller, directly or by delegating to the caller's
//! account, in which case an identity policy must allow as well.
//!
//! This module only reads JSON and answers questions; it does not know where policies
//! are stored, which users exist (see [`Policy::principal_arns`]) or how requests arrive.
//!
//! Files: `document` parses and validates, `principal`, `condition` and `wildcard` are the
//! element-level pieces, `request` is the question, `evaluate` the answer, `actions` and
//! `templates` the action lists and the policies AWS writes itself.

mod actions;
mod condition;
mod document;
mod evaluate;
mod principal;
mod request;
mod templates;
mod wildcard;

#[cfg(test)]
mod tests;

pub use actions::{
    ADMIN_ACTIONS, KMS_ACTIONS, PERSISTENT_RESOURCE_ACTIONS, SECRETS_ACTIONS, USAGE_ACTIONS,
};
pub use document::Policy;
pub use evaluate::{Decision, evaluate, evaluate_resource_based};
pub use request::{AccessRequest, ConditionValues, Requester};
pub use templates::{
    default_key_policy, least_privilege_key_policy, managed_key_policy, secrets_managed_key_policy,
};

/// AWS's limit on a key policy document.
pub const MAX_POLICY_BYTES: usize = 32 * 1024;

/// Which side of the evaluation a policy sits on; they accept different elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A key policy: resource-based, every statement names a Principal.
    Key,
    /// An IAM identity policy: names no Principal, every statement names a Resource.
    Identity,
    /// A secret's resource policy (Secrets Manager): resource-based like a key policy,
    /// every statement names a Principal, and it controls only `secretsmanager:` actions.
    Secret,
    /// A role's trust policy (`AssumeRolePolicyDocument`): resource-based like a key
    /// policy, every statement names a Principal, and it controls only `sts:` actions.
    Trust,
}

/// A policy that cannot be accepted, with where (a JSON-ish path such as
/// `Statement[0].Principal.AWS[2]`, or `policy` for the document as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PolicyError {
    pub path: String,
    pub message: String,
}

impl PolicyError {
    pub(crate) fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}
