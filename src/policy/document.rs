//! Reading a policy document: JSON text in, a validated [`Policy`] of typed statements out.
//!
//! Validation is strict, as AWS's is, so that a typo (`"allow"`, `kms:Decryptt`, an unknown
//! field) is refused when the policy is written instead of silently granting nothing later.
//! Every error names the offending element with a JSON-ish path. Deciding requests is
//! [`super::evaluate`]'s job, not this file's.

use serde_json::{Map, Value};

use super::actions::names_known_kms_action;
use super::condition::{ConditionTest, parse_condition};
use super::principal::{INVALID_AWS_PRINCIPAL, PrincipalEntry};
use super::wildcard::has_wildcard;
use super::{MAX_POLICY_BYTES, PolicyError, PolicyKind};

const VERSIONS: &[&str] = &["2012-10-17", "2008-10-17"];
const TOP_LEVEL_FIELDS: &[&str] = &["Version", "Id", "Statement"];
const STATEMENT_FIELDS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

/// A parsed, validated key or identity policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(crate) statements: Vec<Statement>,
}

impl Policy {
    /// Whether any statement has a Condition: if none has, evaluation never reads the
    /// request's condition keys, and a caller may skip gathering them.
    pub fn has_conditions(&self) -> bool {
        self.statements.iter().any(|s| !s.condition.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

/// `Action` vs `NotAction` (and likewise for Principal and Resource).
#[derive(Debug, Clone)]
pub(crate) enum Scope<T> {
    /// The element lists what the statement applies to.
    Listed(Vec<T>),
    /// The `Not…` element lists what it does not apply to.
    AllExcept(Vec<T>),
}

impl<T> Scope<T> {
    fn entries(&self) -> &[T] {
        match self {
            Self::Listed(v) | Self::AllExcept(v) => v,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub(crate) effect: Effect,
    /// `None` in identity policies: they apply to whoever they are attached to.
    pub(crate) principal: Option<Scope<PrincipalEntry>>,
    /// Action patterns as written; matched case-insensitively.
    pub(crate) action: Scope<String>,
    /// Resource patterns; a key policy without one means `"*"` (this key).
    pub(crate) resource: Scope<String>,
    pub(crate) condition: Vec<ConditionTest>,
}

impl Policy {
    /// Parses and validates; errors name the bad field with a JSON-ish path.
    pub fn parse(text: &str, kind: PolicyKind) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError::at(
                "policy",
                format!(
                    "is {} bytes: a policy may be at most {MAX_POLICY_BYTES} bytes",
                    text.len()
                ),
            ));
        }
        let document: Value = serde_json::from_str(text)
            .map_err(|e| PolicyError::at("policy", format!("invalid JSON: {e}")))?;
        let Value::Object(fields) = document else {
            return Err(PolicyError::at(
                "policy",
                "must be a JSON object with Version and Statement",
            ));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str()))
        {
            return Err(PolicyError::at(
                unknown,
                format!("unknown top-level field '{unknown}': use Version, Id and Statement"),
            ));
        }
        match fields.get("Version") {
            None => {}
            Some(Value::String(v)) if VERSIONS.contains(&v.as_str()) => {}
            Some(other) => {
                return Err(PolicyError::at(
                    "Version",
                    format!("unsupported Version {other}: use \"2012-10-17\""),
                ));
            }
        }
        if let Some(id) = fields.get("Id").filter(|v| !v.is_string()) {
            return Err(PolicyError::at("Id", format!("must be a string, not {id}")));
        }
        let statements: Vec<(String, &Value)> = match fields.get("Statement") {
            None => {
                return Err(PolicyError::at(
                    "Statement",
                    "missing: a policy needs at least one statement",
                ));
            }
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(PolicyError::at(
                    "Statement",
                    "is empty: a policy needs at least one statement",
                ));
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("Statement[{i}]"), s))
                .collect(),
            Some(single @ Value::Object(_)) => vec![("Statement".to_string(), single)],
            Some(_) => {
                return Err(PolicyError::at(
                    "Statement",
                    "must be a statement object or an array of them",
                ));
            }
        };

        let mut sids: Vec<&str> = Vec::new();
        let mut parsed = Vec::with_capacity(statements.len());
        for (path, value) in statements {
            let Value::Object(fields) = value else {
                return Err(PolicyError::at(&path, "a statement must be an object"));
            };
            if let Some(sid) = fields.get("Sid") {
                let Value::String(sid) = sid else {
                    return Err(PolicyError::at(format!("{path}.Sid"), "must be a string"));
                };
                if sids.contains(&sid.as_str()) {
                    return Err(PolicyError::at(
                        format!("{path}.Sid"),
                        format!("duplicate Sid '{sid}': statement ids must be unique"),
                    ));
                }
                sids.push(sid);
            }
            parsed.push(parse_statement(fields, &path, kind)?);
        }
        Ok(Policy { statements: parsed })
    }

    /// Every principal ARN named in Principal/NotPrincipal `"AWS"`, so the caller can check
    /// that those users and roles exist. A bare account id becomes
    /// `arn:aws:iam::ACCT:root`, a user or role ARN loses its path
    /// (`user/team/alice` → `user/alice`, the form callers are identified by), and a role
    /// session names its role. `"*"` and service principals are left out; no duplicates.
    pub fn principal_arns(&self) -> Vec<String> {
        let mut arns: Vec<String> = Vec::new();
        let entries = self
            .statements
            .iter()
            .filter_map(|s| s.principal.as_ref())
            .flat_map(Scope::entries);
        for arn in entries.filter_map(PrincipalEntry::identity_arn) {
            if !arns.contains(&arn) {
                arns.push(arn);
            }
        }
        arns
    }
}

fn parse_statement(
    fields: &Map<String, Value>,
    path: &str,
    kind: PolicyKind,
) -> Result<Statement, PolicyError> {
    if let Some(unknown) = fields
        .keys()
        .find(|k| !STATEMENT_FIELDS.contains(&k.as_str()))
    {
        return Err(PolicyError::at(
            format!("{path}.{unknown}"),
            format!(
                "unknown statement field '{unknown}': use {}",
                STATEMENT_FIELDS.join(", ")
            ),
        ));
    }
    let effect = match fields.get("Effect") {
        None => {
            return Err(PolicyError::at(
                format!("{path}.Effect"),
                "missing: use \"Allow\" or \"Deny\"",
            ));
        }
        Some(Value::String(e)) if e == "Allow" => Effect::Allow,
        Some(Value::String(e)) if e == "Deny" => Effect::Deny,
        Some(Value::String(e)) => {
            return Err(PolicyError::at(
                format!("{path}.Effect"),
                format!("unknown Effect '{e}': use \"Allow\" or \"Deny\""),
            ));
        }
        Some(other) => {
            return Err(PolicyError::at(
                format!("{path}.Effect"),
                format!("unknown Effect {other}: use \"Allow\" or \"Deny\""),
            ));
        }
    };

    let principal = match (kind, pick_one(fields, path, "Principal", "NotPrincipal")?) {
        (PolicyKind::Identity, Some((name, _))) => {
            return Err(PolicyError::at(
                format!("{path}.{name}"),
                "an identity policy names no Principal; it applies to the user or role it is attached to",
            ));
        }
        (PolicyKind::Identity, None) => None,
        (PolicyKind::Key | PolicyKind::Trust | PolicyKind::Secret, None) => {
            return Err(PolicyError::at(
                format!("{path}.Principal"),
                "missing: a key policy statement must name a Principal (e.g. {\"AWS\": \"arn:aws:iam::ACCOUNT:root\"})",
            ));
        }
        (PolicyKind::Key | PolicyKind::Trust | PolicyKind::Secret, Some((name, value))) => {
            let entries = parse_principal(value, &format!("{path}.{name}"))?;
            Some(scope(name == "Principal", entries))
        }
    };

    let action = match pick_one(fields, path, "Action", "NotAction")? {
        None => {
            return Err(PolicyError::at(
                format!("{path}.Action"),
                "missing: name the actions, e.g. \"kms:Decrypt\" or \"kms:*\"",
            ));
        }
        Some((name, value)) => {
            let mut patterns = Vec::new();
            for (item_path, pattern) in string_list(value, &format!("{path}.{name}"))? {
                check_action(pattern, kind).map_err(|m| PolicyError::at(&item_path, m))?;
                patterns.push(pattern.to_string());
            }
            scope(name == "Action", patterns)
        }
    };

    let resource = match pick_one(fields, path, "Resource", "NotResource")? {
        None if kind != PolicyKind::Identity => Scope::Listed(vec!["*".to_string()]),
        None => {
            return Err(PolicyError::at(
                format!("{path}.Resource"),
                "missing: an identity policy statement must name a Resource, e.g. \"*\" or \"arn:aws:kms:*:*:key/*\"",
            ));
        }
        Some((name, value)) => {
            let mut patterns = Vec::new();
            for (item_path, pattern) in string_list(value, &format!("{path}.{name}"))? {
                if pattern != "*" && !pattern.starts_with("arn:") {
                    return Err(PolicyError::at(
                        &item_path,
                        format!("'{pattern}' is not a resource: use \"*\" or an ARN (arn:...)"),
                    ));
                }
                patterns.push(pattern.to_string());
            }
            scope(name == "Resource", patterns)
        }
    };

    let condition = match fields.get("Condition") {
        None => Vec::new(),
        Some(value) => parse_condition(value, &format!("{path}.Condition"))?,
    };

    Ok(Statement {
        effect,
        principal,
        action,
        resource,
        condition,
    })
}

fn scope<T>(listed: bool, entries: Vec<T>) -> Scope<T> {
    if listed {
        Scope::Listed(entries)
    } else {
        Scope::AllExcept(entries)
    }
}

/// The one present element of a `X`/`NotX` pair, refusing both.
fn pick_one<'v>(
    fields: &'v Map<String, Value>,
    path: &str,
    positive: &'static str,
    negative: &'static str,
) -> Result<Option<(&'static str, &'v Value)>, PolicyError> {
    match (fields.get(positive), fields.get(negative)) {
        (Some(_), Some(_)) => Err(PolicyError::at(
            format!("{path}.{negative}"),
            format!("a statement has either {positive} or {negative}, not both"),
        )),
        (Some(v), None) => Ok(Some((positive, v))),
        (None, Some(v)) => Ok(Some((negative, v))),
        (None, None) => Ok(None),
    }
}

/// A string or non-empty array of strings, each with its own path.
fn string_list<'v>(value: &'v Value, path: &str) -> Result<Vec<(String, &'v str)>, PolicyError> {
    match value {
        Value::String(s) => Ok(vec![(path.to_string(), s.as_str())]),
        Value::Array(items) if items.is_empty() => Err(PolicyError::at(
            path,
            "is empty: give a string or a non-empty array of strings",
        )),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok((format!("{path}[{i}]"), s.as_str())),
                other => Err(PolicyError::at(
                    format!("{path}[{i}]"),
                    format!("must be a string, not {other}"),
                )),
            })
            .collect(),
        other => Err(PolicyError::at(
            path,
            format!("must be a string or an array of strings, not {other}"),
        )),
    }
}

fn parse_principal(value: &Value, path: &str) -> Result<Vec<PrincipalEntry>, PolicyError> {
    let types = match value {
        Value::String(s) if s == "*" => return Ok(vec![PrincipalEntry::Anyone]),
        Value::Object(types) if !types.is_empty() => types,
        _ => {
            return Err(PolicyError::at(
                path,
                "must be \"*\" or an object such as {\"AWS\": \"arn:aws:iam::ACCOUNT:root\"}",
            ));
        }
    };
    let mut entries = Vec::new();
    for (kind, values) in types {
        let kind_path = format!("{path}.{kind}");
        let parse: fn(&str) -> Option<PrincipalEntry> = match kind.as_str() {
            "AWS" => PrincipalEntry::parse_aws,
            "Service" => PrincipalEntry::parse_service,
            _ => {
                return Err(PolicyError::at(
                    &kind_path,
                    format!("unsupported principal type {kind}: use \"AWS\""),
                ));
            }
        };
        for (item_path, text) in string_list(values, &kind_path)? {
            let entry = parse(text).ok_or_else(|| {
                let accepted = if kind == "AWS" {
                    INVALID_AWS_PRINCIPAL
                } else {
                    "use a service name such as \"ec2.amazonaws.com\""
                };
                PolicyError::at(
                    &item_path,
                    format!("'{text}' is not a valid principal: {accepted}"),
                )
            })?;
            entries.push(entry);
        }
    }
    Ok(entries)
}

fn check_action(pattern: &str, kind: PolicyKind) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    let malformed = || {
        format!(
            "'{pattern}' is not an action: use \"service:Action\", e.g. \"kms:Decrypt\", or \"*\""
        )
    };
    let (service, name) = pattern.split_once(':').ok_or_else(malformed)?;
    let service_ok = !service.is_empty()
        && service
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '*' || c == '?');
    if !service_ok || !name_ok {
        return Err(malformed());
    }
    if kind == PolicyKind::Trust {
        // A trust policy says who may become the role: only sts: actions mean anything.
        return if service.eq_ignore_ascii_case("sts") {
            Ok(())
        } else {
            Err(format!(
                "'{pattern}': a trust policy controls only sts: actions, e.g. \"sts:AssumeRole\""
            ))
        };
    }
    if kind == PolicyKind::Secret {
        // A secret's resource policy governs the secret: only secretsmanager: actions.
        return if !service.eq_ignore_ascii_case("secretsmanager") {
            Err(format!(
                "'{pattern}': a secret's resource policy controls only secretsmanager: actions, e.g. \"secretsmanager:GetSecretValue\""
            ))
        } else if super::actions::names_known_secrets_action(pattern) {
            Ok(())
        } else {
            Err(format!("'{pattern}' is not a Secrets Manager action"))
        };
    }
    if service.eq_ignore_ascii_case("kms") {
        if names_known_kms_action(pattern) {
            Ok(())
        } else if has_wildcard(pattern) {
            Err(format!("'{pattern}' matches no KMS action"))
        } else {
            Err(format!("'{pattern}' is not a KMS action"))
        }
    } else if kind == PolicyKind::Key {
        Err(format!(
            "'{pattern}': a key policy controls only kms: actions"
        ))
    } else {
        Ok(())
    }
}
