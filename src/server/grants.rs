//! The grant operations of the KMS protocol: CreateGrant, ListGrants, ListRetirableGrants,
//! RetireGrant and RevokeGrant (AWS's member names in, `GrantListEntry` and friends out).

use serde::Deserialize;
use serde_json::{Value, json};

use super::dispatch::{Failure, key, parse, to_json};
use crate::iam::Caller;
use crate::kms::EmbeddedKms;
use crate::kms::embedded::{
    CreateGrantRequest, GrantConstraintsInput, ListGrantsRequest, RetireGrantRequest,
};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateGrant {
    key_id: String,
    grantee_principal: String,
    retiring_principal: Option<String>,
    #[serde(default)]
    operations: Vec<String>,
    constraints: Option<GrantConstraintsInput>,
    #[serde(default)]
    grant_tokens: Vec<String>,
    name: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListGrants {
    key_id: String,
    grant_id: Option<String>,
    grantee_principal: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRetirable {
    retiring_principal: String,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Retire {
    grant_token: Option<String>,
    key_id: Option<String>,
    grant_id: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Revoke {
    key_id: String,
    grant_id: String,
    #[serde(default)]
    dry_run: bool,
}

/// `Limit` as the wire gives it (any JSON integer) → what the KMS checks (1..1000); a
/// value below 1 is AWS's ValidationException, not a SerializationException.
fn limit(value: Option<i64>) -> Result<Option<usize>, Failure> {
    match value {
        None => Ok(None),
        Some(n) if n >= 1 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Some(n) => Err(Failure::Input {
            code: "ValidationException",
            message: format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value greater than or equal to 1"
            ),
        }),
    }
}

/// Runs grant operation `op` for `c`.
pub fn call(kms: &EmbeddedKms, c: &Caller, op: &str, body: &Value) -> Result<Value, Failure> {
    Ok(match op {
        "CreateGrant" => {
            let r: CreateGrant = parse(op, body)?;
            let c = &c.with_grant_tokens(r.grant_tokens);
            let req = CreateGrantRequest {
                key: key(&r.key_id)?,
                grantee_principal: r.grantee_principal,
                retiring_principal: r.retiring_principal,
                operations: r.operations,
                constraints: r.constraints,
                name: r.name,
            };
            if r.dry_run {
                return Err(kms.create_grant_dry_run(c, &req).into());
            }
            to_json(kms.create_grant(c, &req)?)
        }
        "ListGrants" => {
            let r: ListGrants = parse(op, body)?;
            to_json(kms.list_grants(
                c,
                &ListGrantsRequest {
                    key: key(&r.key_id)?,
                    grant_id: r.grant_id,
                    grantee_principal: r.grantee_principal,
                    limit: limit(r.limit)?,
                    marker: r.marker,
                },
            )?)
        }
        "ListRetirableGrants" => {
            let r: ListRetirable = parse(op, body)?;
            to_json(kms.list_retirable_grants(
                c,
                &r.retiring_principal,
                limit(r.limit)?,
                r.marker.as_deref(),
            )?)
        }
        "RetireGrant" => {
            let r: Retire = parse(op, body)?;
            let req = RetireGrantRequest {
                grant_token: r.grant_token,
                key: r.key_id.as_deref().map(key).transpose()?,
                grant_id: r.grant_id,
            };
            if r.dry_run {
                return Err(kms.retire_grant_dry_run(c, &req).into());
            }
            kms.retire_grant(c, &req)?;
            json!({})
        }
        "RevokeGrant" => {
            let r: Revoke = parse(op, body)?;
            if r.dry_run {
                return Err(kms
                    .revoke_grant_dry_run(c, &key(&r.key_id)?, &r.grant_id)
                    .into());
            }
            kms.revoke_grant(c, &key(&r.key_id)?, &r.grant_id)?;
            json!({})
        }
        other => unreachable!("{other} is routed here only when it is a grant operation"),
    })
}
