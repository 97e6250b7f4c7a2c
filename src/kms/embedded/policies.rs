//! GetKeyPolicy, PutKeyPolicy and ListKeyPolicies. A key has one policy, named
//! `default`, as in AWS; a key without one of its own shows the default for its kind.

use super::EmbeddedKms;
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::event::Call;
use crate::kms::ids::KeyRef;
use crate::kms::model::KeyManager;
use crate::policy;

/// The only policy name AWS KMS keys have.
pub const POLICY_NAME: &str = "default";

fn check_policy_name(name: &str) -> Result<()> {
    if name != POLICY_NAME {
        return Err(AwsError::validation(
            "PolicyName",
            format!("'{name}': a key has one policy, named \"default\""),
        ));
    }
    Ok(())
}

impl EmbeddedKms {
    /// The policy text a key answers GetKeyPolicy with.
    fn effective_policy_text(&self, k: &crate::kms::model::KeyRecord) -> String {
        match (&k.policy, k.manager) {
            (Some(text), _) => text.clone(),
            (None, KeyManager::Customer) => policy::default_key_policy(self.account.as_str()),
            (None, KeyManager::Aws) => {
                policy::managed_key_policy(self.account.as_str(), self.dir.region.as_str())
            }
        }
    }

    pub fn get_key_policy(
        &self,
        caller: &Caller,
        r: &KeyRef,
        policy_name: &str,
    ) -> Result<serde_json::Value> {
        let mut call = Call::new("GetKeyPolicy", true)
            .param("keyId", r.to_string())
            .param("policyName", policy_name);
        let out = check_policy_name(policy_name).and_then(|()| {
            self.ensure_managed(r)?;
            self.read(|ks, _| {
                let k =
                    self.resolve_authorized(ks, r, caller, &mut call, "kms:GetKeyPolicy", None)?;
                Ok(serde_json::json!({
                    "Policy": self.effective_policy_text(k),
                    "PolicyName": POLICY_NAME,
                }))
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_key_policies(&self, caller: &Caller, r: &KeyRef) -> Result<serde_json::Value> {
        let mut call = Call::new("ListKeyPolicies", true).param("keyId", r.to_string());
        let out = self.read(|ks, _| {
            self.resolve_authorized(ks, r, caller, &mut call, "kms:ListKeyPolicies", None)?;
            Ok(serde_json::json!({ "PolicyNames": [POLICY_NAME], "Truncated": false }))
        });
        self.finish(caller, call, out)
    }

    /// Replaces a key's policy after validating it, checking that its principals exist and
    /// (unless `bypass`) that the caller keeps the right to change it again.
    pub fn put_key_policy(
        &self,
        caller: &Caller,
        r: &KeyRef,
        policy_name: &str,
        text: &str,
        bypass: bool,
    ) -> Result<()> {
        let mut call = Call::new("PutKeyPolicy", false)
            .param("keyId", r.to_string())
            .param("policyName", policy_name)
            .param("policy", text)
            .param("bypassPolicyLockoutSafetyCheck", bypass);
        let out = check_policy_name(policy_name).and_then(|()| {
            self.mutate(Some(caller), &mut call, |ks, _, call| {
                let k = self.resolve_authorized_mut(ks, r, caller, call, "kms:PutKeyPolicy")?;
                self.refuse_managed(k, "given a new policy")?;
                let (parsed, principals) = self.parse_key_policy(text)?;
                if !bypass {
                    self.check_lockout(caller, &parsed, &k.id)?;
                }
                k.policy = Some(text.to_string());
                k.policy_principals = principals;
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }
}
