//! Grants, as AWS KMS has them: CreateGrant, ListGrants, ListRetirableGrants, RetireGrant
//! and RevokeGrant, the grant tokens they hand out, and the rules by which a grant lets its
//! grantee use a key (`authz::authorize_key` asks [`allows`]).
//!
//! A grant lives in the keystore beside its key (`KeystoreBody::grants`) and goes when the
//! key is deleted. Grants take effect at once here (AWS's are eventually consistent), so a
//! grant token only has to be well formed and issued by this region: the grant it names
//! is live or not, whoever presents it. Tokens are authenticated (keyed BLAKE3 under a key
//! derived from the region root key), so a token this region did not issue is refused as
//! InvalidGrantTokenException, as AWS refuses one it cannot read.
//!
//! This file has the grant types, CreateGrant, ListGrants and ListRetirableGrants;
//! `grant_tokens.rs` the tokens, `grant_retire.rs` RetireGrant and RevokeGrant,
//! `grant_rules.rs` the input checks and the rules by which a grant applies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EmbeddedKms;
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::iam::root_arn;
use crate::kms::context::EncryptionContext;
use crate::kms::event::Call;
use crate::kms::ids::{KeyId, KeyRef};
use crate::kms::model::{GrantConstraint, GrantRecord, UnixTime};

#[path = "grant_retire.rs"]
mod retire;
#[path = "grant_rules.rs"]
mod rules;
#[path = "grant_tokens.rs"]
mod tokens;

use rules::*;
pub(super) use rules::{allows, constraint_holds, shown};

/// AWS's quota of grants per key.
pub const MAX_GRANTS_PER_KEY: usize = 50_000;
/// botocore's `GrantTokenList` and `GrantTokenType` bounds.
pub const MAX_GRANT_TOKENS: usize = 10;
pub const MAX_GRANT_TOKEN_LEN: usize = 8192;
/// AWS's limits on a constraint: pairs per constraint, characters per value.
const MAX_CONSTRAINT_PAIRS: usize = 8;
const MAX_CONSTRAINT_VALUE: usize = 384;
const DEFAULT_LIMIT: usize = 50;

/// Operations a grant may allow on a key that cryptvol serves (all symmetric), and which
/// the authorizer consults grants for.
pub(super) const GRANTABLE: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "DescribeKey",
    "CreateGrant",
    "RetireGrant",
];
/// Valid for a SYMMETRIC_DEFAULT key in AWS although cryptvol has no such operation.
const SYMMETRIC_ONLY_IN_AWS: &[&str] =
    &["GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext"];
/// In AWS's `GrantOperation` enum, but for asymmetric or HMAC keys.
const OTHER_KEY_TYPES: &[&str] = &[
    "Sign",
    "Verify",
    "GetPublicKey",
    "GenerateMac",
    "VerifyMac",
    "DeriveSharedSecret",
];
/// The operations that take an encryption context, to which constraints apply.
const CRYPTOGRAPHIC: &[&str] = &[
    "Decrypt",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncryptFrom",
    "ReEncryptTo",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
];

/// What a request asks of a grant.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GrantUse<'a> {
    /// A cryptographic operation with this encryption context.
    Context(&'a EncryptionContext),
    /// An operation without an encryption context (DescribeKey): constraints do not apply.
    NoContext,
    /// CreateGrant: the new grant's operations and constraint.
    NewGrant {
        operations: &'a [String],
        constraint: Option<&'a GrantConstraint>,
    },
}

impl<'a> GrantUse<'a> {
    pub(crate) fn of(ctx: Option<&'a EncryptionContext>) -> Self {
        ctx.map_or(GrantUse::NoContext, GrantUse::Context)
    }
}

/// `Constraints` as AWS's API and CLI spell them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct GrantConstraintsInput {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_subset: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_context_equals: Option<BTreeMap<String, String>>,
}

impl GrantConstraintsInput {
    fn of(c: &GrantConstraint) -> Self {
        match c {
            GrantConstraint::EncryptionContextSubset(m) => GrantConstraintsInput {
                encryption_context_subset: Some(m.clone()),
                ..Default::default()
            },
            GrantConstraint::EncryptionContextEquals(m) => GrantConstraintsInput {
                encryption_context_equals: Some(m.clone()),
                ..Default::default()
            },
        }
    }
}

/// CreateGrant's inputs (the request's `GrantTokens` travel with the [`Caller`]).
#[derive(Debug, Clone)]
pub struct CreateGrantRequest {
    pub key: KeyRef,
    pub grantee_principal: String,
    pub retiring_principal: Option<String>,
    pub operations: Vec<String>,
    pub constraints: Option<GrantConstraintsInput>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantResponse {
    pub grant_token: String,
    pub grant_id: String,
}

/// ListGrants' inputs.
#[derive(Debug, Clone)]
pub struct ListGrantsRequest {
    pub key: KeyRef,
    pub grant_id: Option<String>,
    pub grantee_principal: Option<String>,
    pub limit: Option<usize>,
    pub marker: Option<String>,
}

/// RetireGrant's inputs: a grant token, or a key and a grant id.
#[derive(Debug, Clone, Default)]
pub struct RetireGrantRequest {
    pub grant_token: Option<String>,
    pub key: Option<KeyRef>,
    pub grant_id: Option<String>,
}

/// AWS's `GrantListEntry`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantListEntry {
    pub key_id: String,
    pub grant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub creation_date: UnixTime,
    pub grantee_principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retiring_principal: Option<String>,
    pub issuing_account: String,
    pub operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<GrantConstraintsInput>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    pub grants: Vec<GrantListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
    pub truncated: bool,
}

fn grant_params(call: Call, req: &CreateGrantRequest) -> Call {
    let mut call = call
        .param("keyId", req.key.to_string())
        .param("granteePrincipal", req.grantee_principal.as_str())
        .param("operations", req.operations.clone());
    if let Some(r) = &req.retiring_principal {
        call = call.param("retiringPrincipal", r.as_str());
    }
    if let Some(n) = &req.name {
        call = call.param("name", n.as_str());
    }
    if let Some(c) = &req.constraints {
        let mut m = serde_json::Map::new();
        if let Some(s) = &c.encryption_context_subset {
            m.insert("encryptionContextSubset".into(), serde_json::json!(s));
        }
        if let Some(e) = &c.encryption_context_equals {
            m.insert("encryptionContextEquals".into(), serde_json::json!(e));
        }
        call = call.param("constraints", serde_json::Value::Object(m));
    }
    call
}

impl EmbeddedKms {
    /// Refuses a grantee or retiring principal of this account that does not exist, and
    /// returns the unique id of the user or role it names.
    fn principal_binding(&self, field: &str, p: &str) -> Result<Option<String>> {
        let body = self.identities.load()?;
        if !self.identities.principal_exists(&body, p) {
            return Err(AwsError::validation(
                field,
                format!(
                    "'{}' does not exist: create it with `cryptvol iam create-user` / `create-role`, or fix the ARN",
                    rules::shown(p)
                ),
            ));
        }
        // An assumed-role session is bound to its role: a role deleted and created again
        // under the same name has new sessions, not the old ones.
        let p = match p
            .strip_prefix("arn:aws:sts::")
            .and_then(|r| r.split_once(':'))
        {
            Some((acct, res)) => match res.strip_prefix("assumed-role/") {
                Some(r) => format!(
                    "arn:aws:iam::{acct}:role/{}",
                    r.split('/').next().unwrap_or("")
                ),
                None => p.to_string(),
            },
            None => canonical(p),
        };
        Ok(self.identities.unique_id_of(&body, &p))
    }

    fn grant_entry(&self, key: &KeyId, g: &GrantRecord) -> GrantListEntry {
        GrantListEntry {
            key_id: self.arn(key),
            grant_id: g.id.clone(),
            name: g.name.clone(),
            creation_date: g.created,
            grantee_principal: g.grantee.clone(),
            retiring_principal: g.retiring.clone(),
            issuing_account: g.issuing_account.clone(),
            operations: g.operations.clone(),
            constraints: g.constraint.as_ref().map(GrantConstraintsInput::of),
        }
    }

    pub fn create_grant(
        &self,
        caller: &Caller,
        req: &CreateGrantRequest,
    ) -> Result<CreateGrantResponse> {
        let mut call = grant_params(Call::new("CreateGrant", false), req);
        let out = self.create_grant_inner(caller, req, &mut call, false);
        self.finish(caller, call, out)
    }

    /// CreateGrant with `DryRun`: every check, then DryRunOperationException; no grant.
    pub fn create_grant_dry_run(&self, caller: &Caller, req: &CreateGrantRequest) -> AwsError {
        let mut call = grant_params(Call::new("CreateGrant", false), req).param("dryRun", true);
        let out = self
            .create_grant_inner(caller, req, &mut call, true)
            .map(|_| ());
        super::dry_run::answer(self.finish(caller, call, out))
    }

    fn create_grant_inner(
        &self,
        caller: &Caller,
        req: &CreateGrantRequest,
        call: &mut Call,
        dry_run: bool,
    ) -> Result<CreateGrantResponse> {
        check_principal("GranteePrincipal", &req.grantee_principal)?;
        if let Some(r) = &req.retiring_principal {
            check_principal("RetiringPrincipal", r)?;
        }
        let operations = check_operations(&req.operations)?;
        let constraint = check_constraints(req.constraints.as_ref(), &operations)?;
        if let Some(n) = &req.name {
            check_name(n)?;
        }
        let grantee_id = self.principal_binding("GranteePrincipal", &req.grantee_principal)?;
        let retiring_id = match &req.retiring_principal {
            Some(r) => self.principal_binding("RetiringPrincipal", r)?,
            None => None,
        };
        self.ensure_managed(&req.key)?;
        let mut extra: Vec<(&str, &str)> = vec![
            ("kms:GrantIsForAWSResource", for_aws_resource(caller)),
            ("kms:GranteePrincipal", req.grantee_principal.as_str()),
        ];
        if let Some(r) = &req.retiring_principal {
            extra.push(("kms:RetiringPrincipal", r.as_str()));
        }
        extra.extend(
            operations
                .iter()
                .map(|o| ("kms:GrantOperations", o.as_str())),
        );
        if let Some(c) = &constraint {
            extra.push(("kms:GrantConstraintType", constraint_type(c)));
        }
        self.mutate(Some(caller), call, |ks, now, call| {
            let k = self.resolve_key(ks, &req.key)?;
            let id = k.id;
            call.resource(&self.arn(&id));
            let usage = GrantUse::NewGrant {
                operations: &operations,
                constraint: constraint.as_ref(),
            };
            self.authorize_key(ks, caller, call, "kms:CreateGrant", k, usage, &extra)?;
            self.require_enabled(k, "CreateGrant")?;
            if dry_run {
                // Changes nothing: mutate writes the keystore only for a call that succeeds.
                check_grant_limit(
                    ks.body.grants.get(&id).map_or(&[], Vec::as_slice),
                    &self.arn(&id),
                )?;
                return Err(AwsError::DryRun);
            }
            let list = ks.body.grants.entry(id).or_default();
            // AWS's idempotence: the same Name with the same parameters is the same grant
            // (a new token each time); without a Name every call makes a new grant.
            let same = |g: &&GrantRecord| {
                req.name.is_some()
                    && g.name == req.name
                    && g.grantee == req.grantee_principal
                    && g.grantee_id == grantee_id
                    && g.retiring == req.retiring_principal
                    && g.retiring_id == retiring_id
                    && g.constraint == constraint
                    && g.operations.len() == operations.len()
                    && operations.iter().all(|o| g.operations.contains(o))
            };
            let grant_id = match list.iter().find(same) {
                Some(g) => g.id.clone(),
                None => {
                    check_grant_limit(list, &self.arn(&id))?;
                    let grant_id = hex::encode(crate::crypto::random::array::<32>());
                    list.push(GrantRecord {
                        id: grant_id.clone(),
                        name: req.name.clone(),
                        created: now,
                        grantee: req.grantee_principal.clone(),
                        grantee_id,
                        retiring: req.retiring_principal.clone(),
                        retiring_id: retiring_id.clone(),
                        issuing_account: root_arn(&self.account),
                        operations: operations.clone(),
                        constraint: constraint.clone(),
                    });
                    grant_id
                }
            };
            call.respond(serde_json::json!({ "grantId": grant_id, "keyId": self.arn(&id) }));
            Ok(CreateGrantResponse {
                grant_token: self.grant_token(&id, &grant_id),
                grant_id,
            })
        })
    }

    pub fn list_grants(
        &self,
        caller: &Caller,
        req: &ListGrantsRequest,
    ) -> Result<ListGrantsResponse> {
        let mut call = Call::new("ListGrants", true).param("keyId", req.key.to_string());
        if let Some(g) = &req.grant_id {
            call = call.param("grantId", g.as_str());
        }
        if let Some(p) = &req.grantee_principal {
            call = call.param("granteePrincipal", p.as_str());
        }
        if let Some(l) = req.limit {
            call = call.param("limit", l);
        }
        if let Some(m) = &req.marker {
            call = call.param("marker", m.as_str());
        }
        let out = (|| {
            if let Some(g) = &req.grant_id {
                check_grant_id(g)?;
            }
            if let Some(p) = &req.grantee_principal {
                check_principal("GranteePrincipal", p)?;
            }
            self.ensure_managed(&req.key)?;
            self.read(|ks, _| {
                let k = self.resolve_key(ks, &req.key)?;
                let id = k.id;
                call.resource(&self.arn(&id));
                let aws = [("kms:GrantIsForAWSResource", for_aws_resource(caller))];
                self.authorize(caller, "kms:ListGrants", Some(k), None, &aws)?;
                let items = ks
                    .body
                    .grants
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter(|g| {
                        req.grant_id
                            .as_ref()
                            .is_none_or(|x| x.eq_ignore_ascii_case(&g.id))
                    })
                    .filter(|g| {
                        req.grantee_principal
                            .as_ref()
                            .is_none_or(|p| canonical(p) == canonical(&g.grantee))
                    })
                    .map(|g| {
                        (
                            format!("{:020}/{}", g.created, g.id),
                            self.grant_entry(&id, g),
                        )
                    })
                    .collect();
                let scope = id.to_string();
                page(
                    items,
                    req.limit,
                    req.marker.as_deref(),
                    |m| self.grant_marker_cursor(false, &scope, m),
                    |c| self.grant_marker(false, &scope, c),
                )
            })
        })();
        self.finish(caller, call, out)
    }

    pub fn list_retirable_grants(
        &self,
        caller: &Caller,
        retiring_principal: &str,
        limit: Option<usize>,
        marker: Option<&str>,
    ) -> Result<ListGrantsResponse> {
        let mut call =
            Call::new("ListRetirableGrants", true).param("retiringPrincipal", retiring_principal);
        if let Some(l) = limit {
            call = call.param("limit", l);
        }
        if let Some(m) = marker {
            call = call.param("marker", m);
        }
        let out = check_principal("RetiringPrincipal", retiring_principal)
            .and_then(|()| self.authorize(caller, "kms:ListRetirableGrants", None, None, &[]))
            .and_then(|()| {
                self.read(|ks, _| {
                    let want = canonical(retiring_principal);
                    let items = ks
                        .body
                        .grants
                        .iter()
                        .flat_map(|(id, gs)| gs.iter().map(move |g| (id, g)))
                        .filter(|(_, g)| {
                            g.retiring.as_deref().is_some_and(|r| canonical(r) == want)
                        })
                        .map(|(id, g)| {
                            (
                                format!("{id}/{:020}/{}", g.created, g.id),
                                self.grant_entry(id, g),
                            )
                        })
                        .collect();
                    page(
                        items,
                        limit,
                        marker,
                        |m| self.grant_marker_cursor(true, &want, m),
                        |c| self.grant_marker(true, &want, c),
                    )
                })
            });
        self.finish(caller, call, out)
    }
}

/// AWS's quota: LimitExceededException past 50,000 grants on one key.
pub(super) fn check_grant_limit(list: &[GrantRecord], key_arn: &str) -> Result<()> {
    if list.len() >= MAX_GRANTS_PER_KEY {
        return Err(AwsError::LimitExceeded {
            what: format!(
                "key {key_arn} already has {MAX_GRANTS_PER_KEY} grants, AWS's limit per key: retire or revoke some with `cryptvol kms retire-grant` / `revoke-grant`"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "grant_tests.rs"]
mod tests;
