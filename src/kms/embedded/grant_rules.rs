//! The rules of grants, apart from their storage: what a grant lets its grantee do
//! ([`allows`]), how principals and constraints compare, and the validation of
//! CreateGrant's inputs and of grant ids, as AWS and botocore's model define them.

use std::collections::BTreeMap;

use super::{
    CRYPTOGRAPHIC, DEFAULT_LIMIT, GRANTABLE, GrantConstraintsInput, GrantListEntry, GrantUse,
    ListGrantsResponse, MAX_CONSTRAINT_PAIRS, MAX_CONSTRAINT_VALUE, OTHER_KEY_TYPES,
    SYMMETRIC_ONLY_IN_AWS,
};
use crate::aws::error::{AwsError, Result};
use crate::iam::caller::Caller;
use crate::kms::context::EncryptionContext;
use crate::kms::model::{GrantConstraint, GrantRecord};

// ---- the rules of a grant ----------------------------------------------------------------

/// Whether grant `g` lets `caller` perform `operation` as `usage` describes.
pub(crate) fn allows(g: &GrantRecord, caller: &Caller, operation: &str, usage: &GrantUse) -> bool {
    if !g.operations.iter().any(|o| o == operation)
        || !is_principal(caller, &g.grantee, g.grantee_id.as_deref())
    {
        return false;
    }
    match usage {
        GrantUse::Context(ctx) => constraint_holds(g.constraint.as_ref(), ctx),
        GrantUse::NoContext => true,
        // AWS: a grant can only give what it has, under constraints at least as strict.
        GrantUse::NewGrant {
            operations,
            constraint,
        } => {
            operations.iter().all(|o| g.operations.contains(o))
                && at_least_as_strict(*constraint, g.constraint.as_ref())
        }
    }
}

/// A user or role ARN with its path dropped: IAM matches principals by name.
pub(crate) fn canonical(p: &str) -> String {
    for kind in [":user/", ":role/"] {
        if p.starts_with("arn:aws:iam::")
            && let Some(i) = p.find(kind)
        {
            let name = p.rsplit('/').next().unwrap_or("");
            return format!("{}{name}", &p[..i + kind.len()]);
        }
    }
    p.to_string()
}

/// Whether `caller` is the principal `p` names (and, when `bound` is given, the same
/// user or role as when the grant was made).
pub(crate) fn is_principal(caller: &Caller, p: &str, bound: Option<&str>) -> bool {
    let id = &caller.identity;
    let p = canonical(p);
    (id.principal_arn() == p || id.arn() == p) && bound.is_none_or(|b| id.unique_id() == Some(b))
}

// Constraint keys compare case-insensitively, values exactly (AWS's rule).

/// Whether every pair of `a` has a pair in `b` with the same key (in any case) and the
/// same value. Pairs are compared one by one rather than through a case-folded map, so
/// that two keys differing only by case are two pairs, never one hiding the other.
fn all_matched(a: &[(&str, &str)], b: &[(&str, &str)]) -> bool {
    a.iter().all(|(ak, av)| {
        let ak = ak.to_lowercase();
        b.iter().any(|(bk, bv)| bv == av && bk.to_lowercase() == ak)
    })
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

pub(crate) fn constraint_holds(c: Option<&GrantConstraint>, ctx: &EncryptionContext) -> bool {
    let have: Vec<(&str, &str)> = ctx.iter().collect();
    match c {
        None => true,
        Some(GrantConstraint::EncryptionContextSubset(want)) => all_matched(&pairs(want), &have),
        // Equal: each side's pairs all found in the other, so an extra pair in the request
        // (even one whose key differs from a constrained key only by case) fails.
        Some(GrantConstraint::EncryptionContextEquals(want)) => {
            let want = pairs(want);
            all_matched(&want, &have) && all_matched(&have, &want)
        }
    }
}

/// Whether a new grant's constraint is as strict as its parent's or stricter: every
/// context the child's allows, the parent's allows too.
pub(crate) fn at_least_as_strict(
    child: Option<&GrantConstraint>,
    parent: Option<&GrantConstraint>,
) -> bool {
    use GrantConstraint::*;
    match (parent, child) {
        (None, _) => true,
        (Some(_), None) => false,
        // A context holding all the child's pairs holds all the parent's.
        (Some(EncryptionContextSubset(p)), Some(EncryptionContextSubset(c)))
        | (Some(EncryptionContextSubset(p)), Some(EncryptionContextEquals(c))) => {
            all_matched(&pairs(p), &pairs(c))
        }
        // Each pair of either matches a pair of the other, so a context equal to the
        // child's is equal to the parent's.
        (Some(EncryptionContextEquals(p)), Some(EncryptionContextEquals(c))) => {
            let (p, c) = (pairs(p), pairs(c));
            all_matched(&p, &c) && all_matched(&c, &p)
        }
        (Some(EncryptionContextEquals(_)), Some(EncryptionContextSubset(_))) => false,
    }
}

// ---- validation ----------------------------------------------------------------------------

/// A caller's value as an error message quotes it: control characters escaped (a newline
/// must not split the one error line) and long values cut, with their length.
pub(crate) fn shown(v: &str) -> String {
    const MAX: usize = 80;
    let n = v.chars().count();
    let head: String = v
        .chars()
        .take(MAX)
        .collect::<String>()
        .escape_debug()
        .collect();
    if n > MAX {
        format!("{head}… ({n} characters)")
    } else {
        head
    }
}

pub(crate) fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn is_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// `ec2.amazonaws.com`, `ec2.us-east-1.amazonaws.com`: lowercase DNS labels.
pub(crate) fn is_service_principal(s: &str) -> bool {
    let Some(head) = s.strip_suffix(".amazonaws.com") else {
        return false;
    };
    !head.is_empty()
        && head.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A principal a grant may name: an IAM root, user or role ARN, an assumed-role session
/// ARN, or an AWS service principal (botocore's `PrincipalIdType` first).
pub(crate) fn check_principal(field: &str, p: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(AwsError::validation(
            field,
            format!(
                "'{}' {why}: use arn:aws:iam::ACCOUNT:root|user/NAME|role/NAME, arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION, or a service principal such as ec2.REGION.amazonaws.com",
                shown(p)
            ),
        ))
    };
    let word = |c: char| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c);
    if p.is_empty() || p.len() > 256 || !p.chars().all(word) {
        return bad("must be 1 to 256 characters of letters, digits and _+=,.@:/-");
    }
    if let Some(rest) = p.strip_prefix("arn:aws:iam::") {
        let ok = rest.split_once(':').is_some_and(|(acct, res)| {
            is_account(acct)
                && (res == "root"
                    || ["user/", "role/"].iter().any(|k| {
                        res.strip_prefix(k)
                            .is_some_and(|path| path.split('/').all(is_name))
                    }))
        });
        return if ok {
            Ok(())
        } else {
            bad("is not a principal")
        };
    }
    if let Some(rest) = p.strip_prefix("arn:aws:sts::") {
        let ok = rest.split_once(':').is_some_and(|(acct, res)| {
            let parts: Vec<&str> = res.split('/').collect();
            is_account(acct)
                && matches!(parts.as_slice(), ["assumed-role", role, session] if is_name(role) && is_name(session))
        });
        return if ok {
            Ok(())
        } else {
            bad("is not a principal")
        };
    }
    if is_service_principal(p) {
        return Ok(());
    }
    bad("is not a principal")
}

/// Operations: at least one, each AWS's name of an operation valid for a symmetric key.
pub(crate) fn check_operations(ops: &[String]) -> Result<Vec<String>> {
    if ops.is_empty() {
        return Err(AwsError::validation(
            "Operations",
            format!("name at least one of {}", GRANTABLE.join(", ")),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for op in ops {
        if OTHER_KEY_TYPES.contains(&op.as_str()) {
            return Err(AwsError::validation(
                "Operations",
                format!(
                    "{op} is not valid for a SYMMETRIC_DEFAULT key: use {}",
                    GRANTABLE.join(", ")
                ),
            ));
        }
        if !GRANTABLE.contains(&op.as_str()) && !SYMMETRIC_ONLY_IN_AWS.contains(&op.as_str()) {
            return Err(AwsError::validation(
                "Operations",
                format!(
                    "'{}' is not a grant operation: use {} (names are case-sensitive)",
                    shown(op),
                    GRANTABLE.join(", ")
                ),
            ));
        }
        if !out.contains(op) {
            out.push(op.clone());
        }
    }
    Ok(out)
}

pub(crate) fn check_constraints(
    c: Option<&GrantConstraintsInput>,
    ops: &[String],
) -> Result<Option<GrantConstraint>> {
    let Some(c) = c else { return Ok(None) };
    let subset = c
        .encryption_context_subset
        .clone()
        .filter(|m| !m.is_empty());
    // An empty Subset constrains nothing; an empty Equals allows only an empty context,
    // so it is kept rather than dropped (dropping it would leave the grant unconstrained).
    let equals = c.encryption_context_equals.clone();
    let (kind, pairs) = match (subset, equals) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(AwsError::validation(
                "Constraints",
                "give one of EncryptionContextSubset or EncryptionContextEquals, not both",
            ));
        }
        (Some(m), None) => ("EncryptionContextSubset", m),
        (None, Some(m)) => ("EncryptionContextEquals", m),
    };
    if pairs.len() > MAX_CONSTRAINT_PAIRS {
        return Err(AwsError::validation(
            "Constraints",
            format!(
                "{kind} has {} pairs; a constraint holds at most {MAX_CONSTRAINT_PAIRS}",
                pairs.len()
            ),
        ));
    }
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, v)| k.is_empty() || v.chars().count() > MAX_CONSTRAINT_VALUE)
    {
        return Err(AwsError::validation(
            "Constraints",
            format!(
                "{kind} pair '{}': keys must not be empty and values are at most {MAX_CONSTRAINT_VALUE} characters",
                shown(k)
            ),
        ));
    }
    if !ops
        .iter()
        .any(|o| CRYPTOGRAPHIC.contains(&o.as_str()) || o == "CreateGrant")
    {
        return Err(AwsError::validation(
            "Constraints",
            format!(
                "an encryption context constraint applies only to cryptographic operations ({}) or CreateGrant; this grant has none",
                CRYPTOGRAPHIC.join(", ")
            ),
        ));
    }
    Ok(Some(if kind == "EncryptionContextSubset" {
        GrantConstraint::EncryptionContextSubset(pairs)
    } else {
        GrantConstraint::EncryptionContextEquals(pairs)
    }))
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = (1..=256).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":/_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AwsError::validation(
            "Name",
            format!(
                "'{}' must be 1 to 256 characters of letters, digits and :/_-",
                shown(name)
            ),
        ))
    }
}

/// A grant id is 64 hexadecimal digits (botocore allows up to 128 characters).
pub(crate) fn check_grant_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 {
        return Err(AwsError::validation(
            "GrantId",
            format!("{} characters is outside 1..128", id.len()),
        ));
    }
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AwsError::InvalidGrantId {
            message: format!(
                "'{}' is not a grant id (64 hexadecimal digits, as CreateGrant and ListGrants return)",
                shown(id)
            ),
        });
    }
    Ok(())
}

pub(crate) fn constraint_type(c: &GrantConstraint) -> &'static str {
    match c {
        GrantConstraint::EncryptionContextSubset(_) => "EncryptionContextSubset",
        GrantConstraint::EncryptionContextEquals(_) => "EncryptionContextEquals",
    }
}

/// `kms:GrantIsForAWSResource`: the call came through an AWS service.
pub(crate) fn for_aws_resource(caller: &Caller) -> &'static str {
    if caller.via_service.is_some() {
        "true"
    } else {
        "false"
    }
}

/// Cuts one page of entries sorted by their sort key; the marker is the sort key of the
/// first entry of the next page, so retiring grants between pages skips nothing. Markers
/// are authenticated: `open` turns one into its sort key (InvalidMarkerException for one
/// this KMS did not give for this listing), `seal` makes one.
pub(crate) fn page(
    mut items: Vec<(String, GrantListEntry)>,
    limit: Option<usize>,
    marker: Option<&str>,
    open: impl FnOnce(&str) -> Result<String>,
    seal: impl FnOnce(&str) -> String,
) -> Result<ListGrantsResponse> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=1000).contains(&limit) {
        return Err(AwsError::validation(
            "Limit",
            format!("{limit} is outside 1..1000"),
        ));
    }
    if let Some(m) = marker
        && (m.is_empty() || m.len() > 1024)
    {
        return Err(AwsError::validation(
            "Marker",
            "give the NextMarker of the previous page",
        ));
    }
    let cursor = marker.map(open).transpose()?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let start = cursor
        .as_deref()
        .map_or(0, |m| items.partition_point(|(k, _)| k.as_str() < m));
    let rest = items.split_off(start);
    let truncated = rest.len() > limit;
    let next_marker = truncated.then(|| seal(&rest[limit].0));
    Ok(ListGrantsResponse {
        grants: rest.into_iter().take(limit).map(|(_, e)| e).collect(),
        next_marker,
        truncated,
    })
}
