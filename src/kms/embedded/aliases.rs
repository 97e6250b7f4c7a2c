//! Aliases: CreateAlias, UpdateAlias, DeleteAlias and ListAliases. A customer alias points
//! at a customer key; the `alias/aws/` names belong to AWS managed keys.

use super::{EmbeddedKms, checks};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::api::*;
use crate::kms::event::Call;
use crate::kms::ids::{AliasName, KeyId, KeyRef, alias_arn};
use crate::kms::keystore::Keystore;
use crate::kms::model::*;
impl EmbeddedKms {
    fn user_alias(name: &str, operation: &str) -> Result<AliasName> {
        checks::user_alias(name, operation)
    }

    /// An alias target: a key id or key ARN of a customer key that is not pending
    /// deletion, on which the caller may perform `action`.
    fn alias_target(
        &self,
        ks: &Keystore,
        caller: &Caller,
        call: &mut Call,
        target: &KeyRef,
        action: &str,
    ) -> Result<KeyId> {
        if matches!(target, KeyRef::Alias(_) | KeyRef::AliasArn { .. }) {
            return Err(AwsError::validation(
                "TargetKeyId",
                format!("'{target}' is an alias; an alias must point at a key id or key ARN"),
            ));
        }
        let k = self.resolve_authorized(ks, target, caller, call, action, None)?;
        self.refuse_managed(k, "the target of a customer alias")?;
        if k.state == KeyState::PendingDeletion {
            return Err(self.pending_state_error(k, "CreateAlias/UpdateAlias"));
        }
        Ok(k.id)
    }

    pub fn create_alias(&self, caller: &Caller, name: &str, target: &KeyRef) -> Result<()> {
        let mut call = Call::new("CreateAlias", false)
            .param("aliasName", name)
            .param("targetKeyId", target.to_string());
        let out = Self::user_alias(name, "create").and_then(|alias| {
            self.mutate(Some(caller), &mut call, |ks, now, call| {
                let id = self.alias_target(ks, caller, call, target, "kms:CreateAlias")?;
                if ks.body.aliases.contains_key(&alias) {
                    return Err(AwsError::AlreadyExists {
                        what: format!("alias {alias}"),
                        hint: ": point it elsewhere with `cryptvol kms update-alias`".into(),
                    });
                }
                ks.body.aliases.insert(
                    alias,
                    AliasRecord {
                        target: id,
                        created: now,
                        updated: now,
                    },
                );
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }

    pub fn update_alias(&self, caller: &Caller, name: &str, target: &KeyRef) -> Result<()> {
        let mut call = Call::new("UpdateAlias", false)
            .param("aliasName", name)
            .param("targetKeyId", target.to_string());
        let out = Self::user_alias(name, "update").and_then(|alias| {
            self.mutate(Some(caller), &mut call, |ks, now, call| {
                let mut a =
                    ks.body
                        .aliases
                        .get(&alias)
                        .cloned()
                        .ok_or_else(|| AwsError::NotFound {
                            what: format!("alias {alias} in region {}", self.dir.region),
                        })?;
                // As AWS: permission on both the key it leaves and the key it joins.
                self.resolve_authorized(
                    ks,
                    &KeyRef::Id(a.target),
                    caller,
                    call,
                    "kms:UpdateAlias",
                    None,
                )?;
                a.target = self.alias_target(ks, caller, call, target, "kms:UpdateAlias")?;
                a.updated = now;
                ks.body.aliases.insert(alias, a);
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }

    pub fn delete_alias(&self, caller: &Caller, name: &str) -> Result<()> {
        let mut call = Call::new("DeleteAlias", false).param("aliasName", name);
        let out = Self::user_alias(name, "delete").and_then(|alias| {
            self.mutate(Some(caller), &mut call, |ks, _, call| {
                let target = ks
                    .body
                    .aliases
                    .get(&alias)
                    .map(|a| a.target)
                    .ok_or_else(|| AwsError::NotFound {
                        what: format!("alias {alias} in region {}", self.dir.region),
                    })?;
                self.resolve_authorized(
                    ks,
                    &KeyRef::Id(target),
                    caller,
                    call,
                    "kms:DeleteAlias",
                    None,
                )?;
                ks.body.aliases.remove(&alias);
                Ok(())
            })
        });
        self.finish(caller, call, out)
    }

    pub fn list_aliases(
        &self,
        caller: &Caller,
        key: Option<&KeyRef>,
    ) -> Result<ListAliasesResponse> {
        let call = Call::new("ListAliases", true).key_param(key);
        let out = self
            .authorize(caller, "kms:ListAliases", None, None, &[])
            .and_then(|()| {
                self.read(|ks, _| {
                    let only = key.map(|r| self.resolve(ks, r)).transpose()?;
                    let aliases = ks
                        .body
                        .aliases
                        .iter()
                        .filter(|(_, a)| only.is_none_or(|id| a.target == id))
                        .map(|(name, a)| AliasEntry {
                            alias_name: name.to_string(),
                            alias_arn: alias_arn(&self.dir.region, &self.account, name),
                            target_key_id: a.target.to_string(),
                            creation_date: a.created,
                            last_updated_date: a.updated,
                        })
                        .collect();
                    Ok(ListAliasesResponse {
                        aliases,
                        truncated: false,
                    })
                })
            });
        self.finish(caller, call, out)
    }
}
