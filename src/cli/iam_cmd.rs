//! `cryptvol iam ...`: users, roles and their inline identity policies, with the AWS
//! CLI's `aws iam` names, flags and output. Only the account root, or an identity whose
//! policies allow the `iam:` action, may change identities.

use clap::Subcommand;

use super::Config;
use super::args::text_value;
use super::exit::CliError;
use crate::datadir;
use crate::iam::{EntityKind, Identity, IdentityStore};

#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Create a user (an identity the CLI can act as with --profile NAME)
    CreateUser {
        #[arg(long)]
        user_name: String,
    },
    /// Show a user [default: the caller]
    GetUser {
        #[arg(long)]
        user_name: Option<String>,
    },
    ListUsers,
    /// Delete a user (its inline policies must be deleted first)
    DeleteUser {
        #[arg(long)]
        user_name: String,
    },
    /// A new access key for the KMS server (SigV4); the secret is shown only now
    CreateAccessKey {
        #[arg(long)]
        user_name: String,
    },
    ListAccessKeys {
        #[arg(long)]
        user_name: String,
    },
    DeleteAccessKey {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        access_key_id: String,
    },
    /// Make an access key Active or Inactive (an inactive key, and every session issued
    /// through it, is refused by `kms serve`)
    UpdateAccessKey {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        access_key_id: String,
        /// Active or Inactive
        #[arg(long, value_parser = ["Active", "Inactive"])]
        status: String,
    },
    /// Create a role (the CLI acts as it with --profile role/NAME)
    CreateRole {
        #[arg(long)]
        role_name: String,
        /// Trust policy (file://PATH or JSON): who may `sts assume-role` it [default: no one]
        #[arg(long)]
        assume_role_policy_document: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    GetRole {
        #[arg(long)]
        role_name: String,
    },
    ListRoles,
    DeleteRole {
        #[arg(long)]
        role_name: String,
    },
    /// Attach (or replace) an inline identity policy on a user
    PutUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
        /// file://PATH or JSON
        #[arg(long)]
        policy_document: String,
    },
    GetUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
    ListUserPolicies {
        #[arg(long)]
        user_name: String,
    },
    DeleteUserPolicy {
        #[arg(long)]
        user_name: String,
        #[arg(long)]
        policy_name: String,
    },
    /// Attach (or replace) an inline identity policy on a role
    PutRolePolicy {
        #[arg(long)]
        role_name: String,
        #[arg(long)]
        policy_name: String,
        /// file://PATH or JSON
        #[arg(long)]
        policy_document: String,
    },
    GetRolePolicy {
        #[arg(long)]
        role_name: String,
        #[arg(long)]
        policy_name: String,
    },
    ListRolePolicies {
        #[arg(long)]
        role_name: String,
    },
    DeleteRolePolicy {
        #[arg(long)]
        role_name: String,
        #[arg(long)]
        policy_name: String,
    },
}

/// The identity store and the caller acting on it.
struct Iam {
    store: IdentityStore,
    caller: Identity,
}

impl Iam {
    fn allow(&self, action: &str, kind: EntityKind, name: &str) -> Result<(), CliError> {
        let resource = self.store.arn_of(kind, name);
        Ok(self.store.authorize(&self.caller, action, &resource)?)
    }

    fn policy_json(
        &self,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
    ) -> Result<serde_json::Value, CliError> {
        let text = self.store.get_policy(kind, name, policy_name)?;
        let doc = serde_json::from_str::<serde_json::Value>(&text).unwrap_or(text.into());
        let who = match kind {
            EntityKind::User => "UserName",
            EntityKind::Role => "RoleName",
        };
        Ok(serde_json::json!({ who: name, "PolicyName": policy_name, "PolicyDocument": doc }))
    }
}

pub fn run(cfg: &Config, cmd: IamCommand) -> Result<(), CliError> {
    use EntityKind::{Role, User};
    use IamCommand::*;
    let store = IdentityStore::new(&cfg.data_dir, datadir::read_account_id(&cfg.data_dir)?);
    let caller = store.resolve_profile(cfg.profile.as_deref())?;
    let iam = Iam { store, caller };
    let s = &iam.store;
    match cmd {
        CreateUser { user_name } => {
            iam.allow("iam:CreateUser", User, &user_name)?;
            cfg.print(&s.create(User, &user_name, "", None)?, "User")
        }
        GetUser { user_name } => {
            let name = match (user_name, &iam.caller.principal) {
                (Some(n), _) => n,
                (None, crate::iam::Principal::User { name, .. }) => name.clone(),
                (None, _) => {
                    return Err(CliError::bad(
                        "--user-name",
                        "the caller is not a user: name one with --user-name",
                    ));
                }
            };
            iam.allow("iam:GetUser", User, &name)?;
            cfg.print(
                &serde_json::json!({ "User": s.describe(User, &name)? }),
                "User",
            )
        }
        ListUsers => {
            iam.allow("iam:ListUsers", User, "*")?;
            let users = s.list(User)?;
            cfg.print(
                &serde_json::json!({ "Users": users, "IsTruncated": false }),
                "Users",
            )
        }
        DeleteUser { user_name } => {
            iam.allow("iam:DeleteUser", User, &user_name)?;
            Ok(s.delete(User, &user_name)?)
        }
        CreateAccessKey { user_name } => {
            iam.allow("iam:CreateAccessKey", User, &user_name)?;
            cfg.print(&s.create_access_key(&user_name)?, "AccessKey")
        }
        ListAccessKeys { user_name } => {
            iam.allow("iam:ListAccessKeys", User, &user_name)?;
            let keys = s.list_access_keys(&user_name)?;
            cfg.print(
                &serde_json::json!({ "AccessKeyMetadata": keys, "IsTruncated": false }),
                "AccessKeys",
            )
        }
        DeleteAccessKey {
            user_name,
            access_key_id,
        } => {
            iam.allow("iam:DeleteAccessKey", User, &user_name)?;
            Ok(s.delete_access_key(&user_name, &access_key_id)?)
        }
        UpdateAccessKey {
            user_name,
            access_key_id,
            status,
        } => {
            iam.allow("iam:UpdateAccessKey", User, &user_name)?;
            Ok(s.update_access_key(&user_name, &access_key_id, &status)?)
        }
        CreateRole {
            role_name,
            assume_role_policy_document,
            description,
        } => {
            iam.allow("iam:CreateRole", Role, &role_name)?;
            let trust = assume_role_policy_document
                .map(|t| text_value("--assume-role-policy-document", &t))
                .transpose()?;
            if let Some(t) = &trust {
                serde_json::from_str::<serde_json::Value>(t).map_err(|e| {
                    CliError::bad("--assume-role-policy-document", format!("not JSON: {e}"))
                })?;
                // The trust policy decides `sts:AssumeRole`: a bad one is refused here.
                crate::policy::Policy::parse(t, crate::policy::PolicyKind::Trust)
                    .map_err(|e| CliError::bad("--assume-role-policy-document", e.to_string()))?;
            }
            cfg.print(
                &s.create(Role, &role_name, &description, trust.as_deref())?,
                "Role",
            )
        }
        GetRole { role_name } => {
            iam.allow("iam:GetRole", Role, &role_name)?;
            cfg.print(
                &serde_json::json!({ "Role": s.describe(Role, &role_name)? }),
                "Role",
            )
        }
        ListRoles => {
            iam.allow("iam:ListRoles", Role, "*")?;
            let roles = s.list(Role)?;
            cfg.print(
                &serde_json::json!({ "Roles": roles, "IsTruncated": false }),
                "Roles",
            )
        }
        DeleteRole { role_name } => {
            iam.allow("iam:DeleteRole", Role, &role_name)?;
            Ok(s.delete(Role, &role_name)?)
        }
        PutUserPolicy {
            user_name,
            policy_name,
            policy_document,
        } => {
            iam.allow("iam:PutUserPolicy", User, &user_name)?;
            let doc = text_value("--policy-document", &policy_document)?;
            Ok(s.put_policy(User, &user_name, &policy_name, &doc)?)
        }
        PutRolePolicy {
            role_name,
            policy_name,
            policy_document,
        } => {
            iam.allow("iam:PutRolePolicy", Role, &role_name)?;
            let doc = text_value("--policy-document", &policy_document)?;
            Ok(s.put_policy(Role, &role_name, &policy_name, &doc)?)
        }
        GetUserPolicy {
            user_name,
            policy_name,
        } => {
            iam.allow("iam:GetUserPolicy", User, &user_name)?;
            cfg.print(&iam.policy_json(User, &user_name, &policy_name)?, "Policy")
        }
        GetRolePolicy {
            role_name,
            policy_name,
        } => {
            iam.allow("iam:GetRolePolicy", Role, &role_name)?;
            cfg.print(&iam.policy_json(Role, &role_name, &policy_name)?, "Policy")
        }
        ListUserPolicies { user_name } => {
            iam.allow("iam:ListUserPolicies", User, &user_name)?;
            let names = s.policy_names(User, &user_name)?;
            cfg.print(
                &serde_json::json!({ "PolicyNames": names, "IsTruncated": false }),
                "Policies",
            )
        }
        ListRolePolicies { role_name } => {
            iam.allow("iam:ListRolePolicies", Role, &role_name)?;
            let names = s.policy_names(Role, &role_name)?;
            cfg.print(
                &serde_json::json!({ "PolicyNames": names, "IsTruncated": false }),
                "Policies",
            )
        }
        DeleteUserPolicy {
            user_name,
            policy_name,
        } => {
            iam.allow("iam:DeleteUserPolicy", User, &user_name)?;
            Ok(s.delete_policy(User, &user_name, &policy_name)?)
        }
        DeleteRolePolicy {
            role_name,
            policy_name,
        } => {
            iam.allow("iam:DeleteRolePolicy", Role, &role_name)?;
            Ok(s.delete_policy(Role, &role_name, &policy_name)?)
        }
    }
}
