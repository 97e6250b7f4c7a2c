//! The Condition element: its operators (`StringEquals`, `NumericLessThan`, `Null`, with
//! `IfExists` and `ForAnyValue:`/`ForAllValues:`), validation of the values they compare
//! against, and whether a request's [`ConditionValues`] satisfy them.
//!
//! Semantics follow AWS IAM: operators AND together, keys within an operator AND together,
//! a key's policy values OR together, and negated operators hold when the request value
//! matches none of them.

use serde_json::Value;

use super::PolicyError;
use super::request::{ConditionValues, normalize_key};
use super::wildcard::{Case, glob_match};

/// What a base operator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    String,
    StringIgnoreCase,
    StringLike,
    Bool,
    Numeric(NumericOp),
    Null,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumericOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `ForAnyValue:` / `ForAllValues:`, for multi-valued keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    AnyValue,
    AllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Operator {
    compare: Compare,
    /// `…NotEquals`, `StringNotLike`: holds when nothing matches.
    negated: bool,
    if_exists: bool,
    qualifier: Option<SetQualifier>,
}

/// Base operator names and what they mean (negated or not).
const OPERATORS: &[(&str, Compare, bool)] = &[
    ("StringEquals", Compare::String, false),
    ("StringNotEquals", Compare::String, true),
    ("StringEqualsIgnoreCase", Compare::StringIgnoreCase, false),
    ("StringNotEqualsIgnoreCase", Compare::StringIgnoreCase, true),
    ("StringLike", Compare::StringLike, false),
    ("StringNotLike", Compare::StringLike, true),
    ("Bool", Compare::Bool, false),
    ("NumericEquals", Compare::Numeric(NumericOp::Eq), false),
    ("NumericNotEquals", Compare::Numeric(NumericOp::Eq), true),
    ("NumericLessThan", Compare::Numeric(NumericOp::Lt), false),
    (
        "NumericLessThanEquals",
        Compare::Numeric(NumericOp::Le),
        false,
    ),
    ("NumericGreaterThan", Compare::Numeric(NumericOp::Gt), false),
    (
        "NumericGreaterThanEquals",
        Compare::Numeric(NumericOp::Ge),
        false,
    ),
    ("Null", Compare::Null, false),
];

impl Operator {
    fn parse(name: &str) -> Result<Self, String> {
        let unknown = || {
            let known: Vec<&str> = OPERATORS.iter().map(|(n, _, _)| *n).collect();
            format!(
                "unknown condition operator '{name}': use one of {} (optionally with IfExists, ForAnyValue: or ForAllValues:)",
                known.join(", ")
            )
        };
        let (qualifier, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
            (Some(SetQualifier::AnyValue), rest)
        } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
            (Some(SetQualifier::AllValues), rest)
        } else {
            (None, name)
        };
        let (if_exists, base) = match rest.strip_suffix("IfExists") {
            Some(base) => (true, base),
            None => (false, rest),
        };
        let &(_, compare, negated) = OPERATORS
            .iter()
            .find(|(n, _, _)| *n == base)
            .ok_or_else(unknown)?;
        if compare == Compare::Null && if_exists {
            return Err(format!(
                "'{name}': Null already tests whether the key exists; use \"Null\""
            ));
        }
        Ok(Self {
            compare,
            negated,
            if_exists,
            qualifier,
        })
    }
}

/// One `Operator: {Key: values}` pair.
#[derive(Debug, Clone)]
pub(crate) struct ConditionTest {
    operator: Operator,
    /// Normalised as [`ConditionValues`] stores keys.
    key: String,
    values: Vec<String>,
}

/// Parses a statement's Condition element; `path` is e.g. `Statement[0].Condition`.
pub(crate) fn parse_condition(
    value: &Value,
    path: &str,
) -> Result<Vec<ConditionTest>, PolicyError> {
    let Value::Object(operators) = value else {
        return Err(PolicyError::at(
            path,
            "must be an object of {\"Operator\": {\"prefix:key\": value}}",
        ));
    };
    let mut tests = Vec::new();
    for (op_name, keys) in operators {
        let op_path = format!("{path}.{op_name}");
        let operator = Operator::parse(op_name).map_err(|m| PolicyError::at(&op_path, m))?;
        let Value::Object(keys) = keys else {
            return Err(PolicyError::at(
                &op_path,
                "must be an object of {\"prefix:key\": value or [values]}",
            ));
        };
        if keys.is_empty() {
            return Err(PolicyError::at(&op_path, "names no condition keys"));
        }
        for (key, values) in keys {
            let key_path = format!("{op_path}.{key}");
            if !is_condition_key(key) {
                return Err(PolicyError::at(
                    &key_path,
                    format!(
                        "'{key}' is not a condition key: use \"prefix:name\", e.g. \"kms:ViaService\""
                    ),
                ));
            }
            let values = parse_values(values, &key_path, operator.compare)?;
            tests.push(ConditionTest {
                operator,
                key: normalize_key(key),
                values,
            });
        }
    }
    Ok(tests)
}

fn is_condition_key(key: &str) -> bool {
    match key.split_once(':') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !name.is_empty()
        }
        None => false,
    }
}

/// Reads a value or array of values as strings, checking they suit the operator.
fn parse_values(value: &Value, path: &str, compare: Compare) -> Result<Vec<String>, PolicyError> {
    let items: Vec<(String, &Value)> = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(PolicyError::at(path, "needs at least one value"));
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{path}[{i}]"), v))
            .collect(),
        single => vec![(path.to_string(), single)],
    };
    items
        .into_iter()
        .map(|(item_path, item)| {
            let text = match item {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(PolicyError::at(
                        &item_path,
                        "a condition value must be a string, number or boolean",
                    ));
                }
            };
            check_value(&text, compare).map_err(|m| PolicyError::at(&item_path, m))
        })
        .collect()
}

fn check_value(text: &str, compare: Compare) -> Result<String, String> {
    match compare {
        Compare::Numeric(_) => match parse_number(text) {
            Some(_) => Ok(text.to_string()),
            None => Err(format!(
                "'{text}' is not a number: Numeric operators compare numbers"
            )),
        },
        Compare::Bool | Compare::Null => {
            let lower = text.to_ascii_lowercase();
            if lower == "true" || lower == "false" {
                Ok(lower)
            } else {
                Err(format!("'{text}' is not a boolean: use true or false"))
            }
        }
        Compare::String | Compare::StringIgnoreCase | Compare::StringLike => Ok(text.to_string()),
    }
}

/// A finite number; Rust would otherwise accept "NaN" and "inf".
fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

impl ConditionTest {
    /// Whether the request satisfies this one operator-and-key test.
    pub(crate) fn holds(&self, request: &ConditionValues) -> bool {
        let op = self.operator;
        // An empty multi-valued key (no encryption context) counts as absent.
        let present = request.get(&self.key).filter(|v| !v.is_empty());
        if op.compare == Compare::Null {
            let missing = present.is_none();
            return self.values.iter().any(|v| (v == "true") == missing);
        }
        let Some(request_values) = present else {
            return match op.qualifier {
                _ if op.if_exists => true,
                Some(SetQualifier::AllValues) => true,
                Some(SetQualifier::AnyValue) => false,
                None => op.negated,
            };
        };
        match op.qualifier {
            Some(SetQualifier::AllValues) => request_values.iter().all(|r| self.satisfied_by(r)),
            Some(SetQualifier::AnyValue) => request_values.iter().any(|r| self.satisfied_by(r)),
            // Unqualified: positive operators want some value to match, negated ones want
            // no value to match any policy value.
            None if op.negated => request_values.iter().all(|r| self.satisfied_by(r)),
            None => request_values.iter().any(|r| self.satisfied_by(r)),
        }
    }

    /// Whether one request value satisfies the operator against the policy values.
    fn satisfied_by(&self, request_value: &str) -> bool {
        let compare = self.operator.compare;
        let any_match = self
            .values
            .iter()
            .any(|policy_value| matches(compare, request_value, policy_value));
        if self.operator.negated {
            // An unparsable number satisfies nothing, not even a negated operator.
            let comparable =
                !matches!(compare, Compare::Numeric(_)) || parse_number(request_value).is_some();
            comparable && !any_match
        } else {
            any_match
        }
    }
}

/// The un-negated comparison of one request value with one policy value.
fn matches(compare: Compare, request: &str, policy: &str) -> bool {
    match compare {
        Compare::String => request == policy,
        Compare::StringIgnoreCase => request.eq_ignore_ascii_case(policy),
        Compare::StringLike => glob_match(policy, request, Case::Sensitive),
        Compare::Bool => request.eq_ignore_ascii_case(policy),
        Compare::Numeric(op) => match (parse_number(request), parse_number(policy)) {
            (Some(r), Some(p)) => match op {
                NumericOp::Eq => r == p,
                NumericOp::Lt => r < p,
                NumericOp::Le => r <= p,
                NumericOp::Gt => r > p,
                NumericOp::Ge => r >= p,
            },
            _ => false,
        },
        // Null is decided on presence alone, before any value comparison.
        Compare::Null => false,
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn tests_of(json: &str) -> Vec<ConditionTest> {
        let value: Value = serde_json::from_str(json).expect("test JSON");
        parse_condition(&value, "Condition").expect("valid condition")
    }

    fn holds(json: &str, request: &ConditionValues) -> bool {
        tests_of(json).iter().all(|t| t.holds(request))
    }

    #[test]
    fn operator_names() {
        assert!(Operator::parse("ForAllValues:StringLikeIfExists").is_ok());
        let refused = |name: &str| Operator::parse(name).map(|_| ()).unwrap_err();
        assert!(refused("NullIfExists").contains("use \"Null\""));
        for name in ["StringEqualz", "stringequals", "ForSomeValues:StringEquals"] {
            let e = refused(name);
            assert!(
                e.starts_with(&format!("unknown condition operator '{name}'")),
                "{e}"
            );
        }
    }

    #[test]
    fn value_checks() {
        // Each with where it is refused and why.
        let bad = [
            (
                r#"{"NumericLessThan": {"aws:x": "ten"}}"#,
                "Condition.NumericLessThan.aws:x",
                "is not a number",
            ),
            (
                r#"{"NumericLessThan": {"aws:x": "NaN"}}"#,
                "Condition.NumericLessThan.aws:x",
                "is not a number",
            ),
            (
                r#"{"NumericLessThan": {"aws:x": true}}"#,
                "Condition.NumericLessThan.aws:x",
                "is not a number",
            ),
            (
                r#"{"Bool": {"aws:SecureTransport": "yes"}}"#,
                "Condition.Bool.aws:SecureTransport",
                "is not a boolean",
            ),
            (
                r#"{"Null": {"aws:x": 1}}"#,
                "Condition.Null.aws:x",
                "is not a boolean",
            ),
            (
                r#"{"StringEquals": {"aws:x": []}}"#,
                "Condition.StringEquals.aws:x",
                "needs at least one value",
            ),
            (
                r#"{"StringEquals": {"aws:x": null}}"#,
                "Condition.StringEquals.aws:x",
                "must be a string, number or boolean",
            ),
            (
                r#"{"StringEquals": {"aws:x": {"a": "b"}}}"#,
                "Condition.StringEquals.aws:x",
                "must be a string, number or boolean",
            ),
            (
                r#"{"StringEquals": {"nokey": "b"}}"#,
                "Condition.StringEquals.nokey",
                "is not a condition key",
            ),
            (
                r#"{"StringEquals": {":name": "b"}}"#,
                "Condition.StringEquals.:name",
                "is not a condition key",
            ),
            (
                r#"{"StringEquals": {}}"#,
                "Condition.StringEquals",
                "names no condition keys",
            ),
            (
                r#"{"StringEquals": "x"}"#,
                "Condition.StringEquals",
                "must be an object",
            ),
            (r#"[]"#, "Condition", "must be an object"),
        ];
        for (json, path, why) in bad {
            let value: Value = serde_json::from_str(json).expect("test JSON");
            let e = parse_condition(&value, "Condition")
                .map(|_| ())
                .unwrap_err();
            assert!(e.path == path && e.message.contains(why), "{json}: {e:?}");
        }
        let ok = tests_of(r#"{"NumericEquals": {"aws:x": [1, "2.5"]}, "Bool": {"aws:y": true}}"#);
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn numeric_and_unparsable_request_values() {
        let mut request = ConditionValues::new();
        request.set("aws:n", "abc");
        assert!(!holds(r#"{"NumericLessThan": {"aws:n": 5}}"#, &request));
        assert!(!holds(r#"{"NumericNotEquals": {"aws:n": 5}}"#, &request));
        request.set("aws:n", "4");
        assert!(holds(r#"{"NumericLessThan": {"aws:n": 5}}"#, &request));
        assert!(holds(r#"{"NumericNotEquals": {"aws:n": 5}}"#, &request));
        assert!(holds(
            r#"{"NumericGreaterThanEquals": {"aws:n": "4.0"}}"#,
            &request
        ));
    }

    #[test]
    fn keys_and_operators_and_together() {
        let mut request = ConditionValues::new();
        request.set("aws:a", "1");
        request.set("aws:b", "2");
        assert!(holds(
            r#"{"StringEquals": {"aws:a": "1", "aws:b": ["9", "2"]}}"#,
            &request
        ));
        assert!(!holds(
            r#"{"StringEquals": {"aws:a": "1", "aws:b": "9"}}"#,
            &request
        ));
        assert!(!holds(
            r#"{"StringEquals": {"aws:a": "1"}, "StringNotEquals": {"aws:b": "2"}}"#,
            &request
        ));
    }

    #[test]
    fn unqualified_negation_over_multiple_values() {
        let mut request = ConditionValues::new();
        request.set_multi("kms:EncryptionContextKeys", vec!["a".into(), "b".into()]);
        assert!(!holds(
            r#"{"StringNotEquals": {"kms:EncryptionContextKeys": "b"}}"#,
            &request
        ));
        assert!(holds(
            r#"{"StringNotEquals": {"kms:EncryptionContextKeys": "c"}}"#,
            &request
        ));
        assert!(holds(
            r#"{"ForAnyValue:StringNotEquals": {"kms:EncryptionContextKeys": "b"}}"#,
            &request
        ));
    }
}
