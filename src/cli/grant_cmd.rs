//! `cryptvol kms create-grant | list-grants | list-retirable-grants | retire-grant |
//! revoke-grant`: the AWS CLI's grant commands and flags, with AWS's output names.

use std::collections::BTreeMap;

use super::Config;
use super::args::key_ref;
use super::exit::CliError;
use crate::iam::Caller;
use crate::kms::EmbeddedKms;
use crate::kms::embedded::{
    CreateGrantRequest, GrantConstraintsInput, ListGrantsRequest, RetireGrantRequest,
};

#[derive(Debug, clap::Args)]
pub struct CreateGrantArgs {
    #[arg(long)]
    key_id: String,
    /// The principal the grant lets use the key: a user, role or root ARN, an
    /// assumed-role ARN, or a service principal such as ec2.REGION.amazonaws.com
    #[arg(long)]
    grantee_principal: String,
    /// Operations the grant allows (space- or comma-separated), e.g. Decrypt Encrypt
    #[arg(long, num_args = 1.., value_delimiter = ',', required = true)]
    operations: Vec<String>,
    /// A principal that may retire the grant
    #[arg(long)]
    retiring_principal: Option<String>,
    /// EncryptionContextSubset={k=v,...} or EncryptionContextEquals={k=v,...}, or JSON
    #[arg(long)]
    constraints: Option<String>,
    /// A name: retrying with the same name and parameters returns the same grant
    #[arg(long)]
    name: Option<String>,
    #[arg(long, num_args = 1..)]
    grant_tokens: Vec<String>,
    /// Check permissions and inputs only (DryRunOperationException if it would succeed)
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListGrantsArgs {
    #[arg(long)]
    key_id: String,
    /// Only this grant
    #[arg(long)]
    grant_id: Option<String>,
    /// Only grants to this principal
    #[arg(long)]
    grantee_principal: Option<String>,
    /// 1..1000 grants per page [default: 50]
    #[arg(long)]
    limit: Option<usize>,
    /// The NextMarker of the previous page
    #[arg(long)]
    marker: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListRetirableGrantsArgs {
    #[arg(long)]
    retiring_principal: String,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    marker: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RetireGrantArgs {
    /// The grant token CreateGrant returned (or give --key-id and --grant-id)
    #[arg(long, required_unless_present_all = ["key_id", "grant_id"])]
    grant_token: Option<String>,
    #[arg(long, requires = "grant_id")]
    key_id: Option<String>,
    #[arg(long, requires = "key_id")]
    grant_id: Option<String>,
    /// Check permissions and inputs only (DryRunOperationException if it would succeed)
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, clap::Args)]
pub struct RevokeGrantArgs {
    #[arg(long)]
    key_id: String,
    #[arg(long)]
    grant_id: String,
    /// Check permissions and inputs only (DryRunOperationException if it would succeed)
    #[arg(long)]
    dry_run: bool,
}

/// `--constraints`: JSON (`{"EncryptionContextSubset": {"k": "v"}}`) or the AWS CLI's
/// shorthand `EncryptionContextSubset={k=v,k2=v2}`.
pub fn constraints(value: &str) -> Result<GrantConstraintsInput, CliError> {
    const FLAG: &str = "--constraints";
    let v = value.trim();
    if v.starts_with('{') {
        return serde_json::from_str(v).map_err(|e| {
            CliError::bad(
                FLAG,
                format!("not a Constraints object ({e}): give {{\"EncryptionContextSubset\": {{\"k\": \"v\"}}}}"),
            )
        });
    }
    let mut out = GrantConstraintsInput::default();
    let mut rest = v;
    while !rest.is_empty() {
        let (name, tail) = rest.split_once("={").ok_or_else(|| {
            CliError::bad(
                FLAG,
                format!("'{rest}' is not NAME={{k=v,...}}: use EncryptionContextSubset={{k=v}} or EncryptionContextEquals={{k=v}}"),
            )
        })?;
        let (inner, after) = tail
            .split_once('}')
            .ok_or_else(|| CliError::bad(FLAG, format!("'{{{tail}' has no closing '}}'")))?;
        let mut pairs = BTreeMap::new();
        for p in inner.split(',').filter(|p| !p.is_empty()) {
            let (k, val) = p
                .split_once('=')
                .ok_or_else(|| CliError::bad(FLAG, format!("'{p}' is not KEY=VALUE")))?;
            pairs.insert(k.trim().to_string(), val.to_string());
        }
        match name.trim() {
            "EncryptionContextSubset" => out.encryption_context_subset = Some(pairs),
            "EncryptionContextEquals" => out.encryption_context_equals = Some(pairs),
            other => {
                return Err(CliError::bad(
                    FLAG,
                    format!(
                        "'{other}' is not a constraint: use EncryptionContextSubset or EncryptionContextEquals"
                    ),
                ));
            }
        }
        rest = after.trim_start_matches(',').trim_start();
    }
    Ok(out)
}

pub fn create(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: CreateGrantArgs,
) -> Result<(), CliError> {
    let req = CreateGrantRequest {
        key: key_ref(&a.key_id)?,
        grantee_principal: a.grantee_principal,
        retiring_principal: a.retiring_principal,
        operations: a.operations,
        constraints: a.constraints.as_deref().map(constraints).transpose()?,
        name: a.name,
    };
    let c = &c.with_grant_tokens(a.grant_tokens);
    if a.dry_run {
        return Err(kms.create_grant_dry_run(c, &req).into());
    }
    cfg.print(&kms.create_grant(c, &req)?, "CreateGrant")
}

pub fn list(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ListGrantsArgs,
) -> Result<(), CliError> {
    let req = ListGrantsRequest {
        key: key_ref(&a.key_id)?,
        grant_id: a.grant_id,
        grantee_principal: a.grantee_principal,
        limit: a.limit,
        marker: a.marker,
    };
    cfg.print(&kms.list_grants(c, &req)?, "ListGrants")
}

pub fn list_retirable(
    cfg: &Config,
    kms: &EmbeddedKms,
    c: &Caller,
    a: ListRetirableGrantsArgs,
) -> Result<(), CliError> {
    let r = kms.list_retirable_grants(c, &a.retiring_principal, a.limit, a.marker.as_deref())?;
    cfg.print(&r, "ListRetirableGrants")
}

pub fn retire(kms: &EmbeddedKms, c: &Caller, a: RetireGrantArgs) -> Result<(), CliError> {
    let req = RetireGrantRequest {
        grant_token: a.grant_token,
        key: a.key_id.as_deref().map(key_ref).transpose()?,
        grant_id: a.grant_id,
    };
    if a.dry_run {
        return Err(kms.retire_grant_dry_run(c, &req).into());
    }
    Ok(kms.retire_grant(c, &req)?)
}

pub fn revoke(kms: &EmbeddedKms, c: &Caller, a: RevokeGrantArgs) -> Result<(), CliError> {
    let key = key_ref(&a.key_id)?;
    if a.dry_run {
        return Err(kms.revoke_grant_dry_run(c, &key, &a.grant_id).into());
    }
    Ok(kms.revoke_grant(c, &key, &a.grant_id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_forms() {
        let a = constraints("EncryptionContextSubset={cryptvol:lineage=vol-1,b=2}").unwrap();
        let b = constraints(r#"{"EncryptionContextSubset":{"b":"2","cryptvol:lineage":"vol-1"}}"#)
            .unwrap();
        assert_eq!(a, b);
        let e = constraints("EncryptionContextEquals={a=1}").unwrap();
        assert_eq!(e.encryption_context_equals.unwrap()["a"], "1");
        for bad in [
            "Subset={a=1}",
            "EncryptionContextSubset={a}",
            "x",
            "EncryptionContextSubset={a=1",
            "{\"Other\":{}}",
        ] {
            assert!(
                matches!(
                    constraints(bad),
                    Err(CliError::BadArgument {
                        flag: "--constraints",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
