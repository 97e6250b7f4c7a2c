//! The key policies AWS writes for you: the default policy (`CreateKey` without one), the
//! console's least-privilege template, and the policy of an AWS managed key (`aws/ebs`).
//!
//! They are serialised from structs rather than `serde_json::Value` so that fields come out
//! in AWS's order (Sid, Effect, Principal, Action, Resource, Condition), pretty-printed with
//! two-space indentation.

use serde::Serialize;

use super::actions::{ADMIN_ACTIONS, PERSISTENT_RESOURCE_ACTIONS, USAGE_ACTIONS};

const VERSION: &str = "2012-10-17";
const ROOT_SID: &str = "Enable IAM User Permissions";

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    version: &'static str,
    id: &'static str,
    statement: Vec<Statement>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Statement {
    sid: &'static str,
    effect: &'static str,
    principal: AwsPrincipal,
    action: OneOrMany,
    resource: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<Condition>,
}

#[derive(Serialize)]
struct AwsPrincipal {
    #[serde(rename = "AWS")]
    aws: OneOrMany,
}

/// A single value is written as a string, several as an array, as AWS stores them.
#[derive(Serialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn of<S: AsRef<str>>(values: &[S]) -> Self {
        match values {
            [one] => Self::One(one.as_ref().to_string()),
            many => Self::Many(many.iter().map(|s| s.as_ref().to_string()).collect()),
        }
    }
}

#[derive(Serialize)]
enum Condition {
    #[serde(rename = "StringEquals")]
    StringEquals(ViaService),
    #[serde(rename = "Bool")]
    Bool(GrantIsForAwsResource),
}

#[derive(Serialize)]
struct GrantIsForAwsResource {
    #[serde(rename = "kms:GrantIsForAWSResource")]
    value: &'static str,
}

#[derive(Serialize)]
struct ViaService {
    #[serde(rename = "kms:CallerAccount")]
    caller_account: String,
    #[serde(rename = "kms:ViaService")]
    via_service: String,
}

fn root_statement(account: &str) -> Statement {
    Statement {
        sid: ROOT_SID,
        effect: "Allow",
        principal: AwsPrincipal {
            aws: OneOrMany::One(format!("arn:aws:iam::{account}:root")),
        },
        action: OneOrMany::One("kms:*".to_string()),
        resource: "*",
        condition: None,
    }
}

fn render(document: &Document) -> String {
    // Serialising plain structs of strings cannot fail; fall back to compact output rather
    // than panic if it ever did.
    serde_json::to_string_pretty(document).unwrap_or_default()
}

/// AWS's default key policy: the account root may do anything, which delegates the key to
/// the account's IAM policies.
pub fn default_key_policy(account: &str) -> String {
    render(&Document {
        version: VERSION,
        id: "key-default-1",
        statement: vec![root_statement(account)],
    })
}

/// The console's least-privilege template: the root statement, then key administrators
/// (if any) with [`ADMIN_ACTIONS`], then key users (if any) with [`USAGE_ACTIONS`] and,
/// as AWS's template has it, grants for AWS resources (a volume's grant to the volume
/// service) with [`PERSISTENT_RESOURCE_ACTIONS`].
pub fn least_privilege_key_policy(account: &str, admins: &[String], users: &[String]) -> String {
    let mut statement = vec![root_statement(account)];
    if !admins.is_empty() {
        statement.push(Statement {
            sid: "Allow access for Key Administrators",
            effect: "Allow",
            principal: AwsPrincipal {
                aws: OneOrMany::of(admins),
            },
            action: OneOrMany::of(ADMIN_ACTIONS),
            resource: "*",
            condition: None,
        });
    }
    if !users.is_empty() {
        statement.push(Statement {
            sid: "Allow use of the key",
            effect: "Allow",
            principal: AwsPrincipal {
                aws: OneOrMany::of(users),
            },
            action: OneOrMany::of(USAGE_ACTIONS),
            resource: "*",
            condition: None,
        });
        statement.push(Statement {
            sid: "Allow attachment of persistent resources",
            effect: "Allow",
            principal: AwsPrincipal {
                aws: OneOrMany::of(users),
            },
            action: OneOrMany::of(PERSISTENT_RESOURCE_ACTIONS),
            resource: "*",
            condition: Some(Condition::Bool(GrantIsForAwsResource { value: "true" })),
        });
    }
    render(&Document {
        version: VERSION,
        id: "key-consolepolicy-3",
        statement,
    })
}

/// The policy AWS gives the managed key `alias/aws/ebs`: anyone in the account may use it
/// through EBS (EC2 in `region`), and the account may read its metadata directly.
pub fn managed_key_policy(account: &str, region: &str) -> String {
    service_managed_key_policy(
        account,
        &format!("ec2.{region}.amazonaws.com"),
        "auto-ebs-2",
        "Allow access through EBS for all principals in the account that are authorized to use EBS",
    )
}

/// The policy AWS gives the managed key `alias/aws/secretsmanager`: anyone in the account
/// may use it through Secrets Manager in `region`, and read its metadata directly.
pub fn secrets_managed_key_policy(account: &str, region: &str) -> String {
    service_managed_key_policy(
        account,
        &format!("secretsmanager.{region}.amazonaws.com"),
        "auto-secretsmanager-2",
        "Allow access through AWS Secrets Manager for all principals in the account that are authorized to use AWS Secrets Manager",
    )
}

/// An AWS managed key's policy: use only through `via_service`, metadata to the account.
fn service_managed_key_policy(
    account: &str,
    via_service: &str,
    id: &'static str,
    sid: &'static str,
) -> String {
    render(&Document {
        version: VERSION,
        id,
        statement: vec![
            Statement {
                sid,
                effect: "Allow",
                principal: AwsPrincipal {
                    aws: OneOrMany::One("*".to_string()),
                },
                action: OneOrMany::of(&[
                    "kms:Encrypt",
                    "kms:Decrypt",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:CreateGrant",
                    "kms:DescribeKey",
                ]),
                resource: "*",
                condition: Some(Condition::StringEquals(ViaService {
                    caller_account: account.to_string(),
                    via_service: via_service.to_string(),
                })),
            },
            Statement {
                sid: "Allow direct access to key metadata to the account",
                effect: "Allow",
                principal: AwsPrincipal {
                    aws: OneOrMany::One(format!("arn:aws:iam::{account}:root")),
                },
                action: OneOrMany::of(&[
                    "kms:Describe*",
                    "kms:Get*",
                    "kms:List*",
                    "kms:RevokeGrant",
                ]),
                resource: "*",
                condition: None,
            },
        ],
    })
}
