//! The question a policy answers: who is calling ([`Requester`]), what they want to do to which
//! resource, and the request's condition keys ([`ConditionValues`]). Nothing here reads a
//! policy; the key store and the IAM layer fill these in.

use std::collections::BTreeMap;

/// Who is asking, as policies see it.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The ARN matched against Principal: `arn:aws:iam::ACCT:root`,
    /// `arn:aws:iam::ACCT:user/NAME`, or for a role session the role's ARN
    /// `arn:aws:iam::ACCT:role/NAME`.
    pub arn: String,
    /// The caller's 12-digit account id.
    pub account: String,
    /// The account's root identity, which a key policy's account delegation lets in
    /// without any identity policy.
    pub is_root: bool,
}

/// The condition keys of one request.
///
/// Condition key names are case-insensitive, except the part after
/// `kms:EncryptionContext:`, which is the encryption-context key itself and so
/// case-sensitive. Keys are stored normalised that way; lookups normalise the same way.
#[derive(Debug, Clone, Default)]
pub struct ConditionValues {
    values: BTreeMap<String, Vec<String>>,
}

const CONTEXT_PREFIX: &str = "kms:encryptioncontext:";

/// The form condition keys are compared in (see [`ConditionValues`]).
pub(crate) fn normalize_key(key: &str) -> String {
    match key.get(..CONTEXT_PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(CONTEXT_PREFIX) => {
            format!("{CONTEXT_PREFIX}{}", &key[CONTEXT_PREFIX.len()..])
        }
        _ => key.to_lowercase(),
    }
}

impl ConditionValues {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a single-valued key, replacing any earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(normalize_key(key), vec![value.into()]);
    }

    /// Sets a multi-valued key (such as `kms:EncryptionContextKeys`), replacing any earlier
    /// values. An empty list counts as the key being absent.
    pub fn set_multi(&mut self, key: &str, values: Vec<String>) {
        self.values.insert(normalize_key(key), values);
    }

    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values.get(&normalize_key(key)).map(Vec::as_slice)
    }
}

/// One authorization question.
pub struct AccessRequest<'a> {
    pub caller: &'a Requester,
    /// The action, e.g. `kms:Decrypt`; compared case-insensitively.
    pub action: &'a str,
    /// The key ARN, or `*` for account-level actions (CreateKey, ListKeys, ListAliases,
    /// `iam:*`).
    pub resource: &'a str,
    pub conditions: &'a ConditionValues,
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn key_names_ignore_case_except_the_context_key() {
        let mut values = ConditionValues::new();
        values.set("kms:ViaService", "ec2.us-east-1.amazonaws.com");
        values.set("KMS:EncryptionContext:Lineage", "vol-a");
        assert_eq!(
            values.get("KMS:VIASERVICE"),
            Some(&["ec2.us-east-1.amazonaws.com".to_string()][..])
        );
        assert!(values.get("kms:encryptioncontext:Lineage").is_some());
        assert!(values.get("kms:EncryptionContext:lineage").is_none());
        assert!(values.get("kms:encryptioncontextkeys").is_none());
    }

    #[test]
    fn set_replaces_and_multi_keeps_all() {
        let mut values = ConditionValues::new();
        values.set("aws:PrincipalArn", "a");
        values.set("aws:principalarn", "b");
        assert_eq!(values.get("aws:PrincipalArn"), Some(&["b".to_string()][..]));
        values.set_multi("kms:EncryptionContextKeys", vec!["x".into(), "y".into()]);
        assert_eq!(
            values.get("kms:encryptioncontextkeys").map(<[_]>::len),
            Some(2)
        );
    }

    #[test]
    fn non_ascii_keys_do_not_panic() {
        let mut values = ConditionValues::new();
        values.set("kms:Encryptionéontext:x", "1");
        values.set("é", "2");
        assert!(values.get("kms:encryptionéontext:x").is_some());
    }
}
