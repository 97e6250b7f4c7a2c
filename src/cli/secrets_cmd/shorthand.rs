//! The AWS CLI's two spellings of structured flags: JSON, or its shorthand
//! (`Key=a,Value=b`). `--tags` and `--filters` take one item per word (or a JSON list);
//! `--rotation-rules` takes one structure.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::cli::exit::CliError;

/// `--tags`: each word `Key=K,Value=V`, a JSON object or a JSON list of them.
pub fn tags(words: &[String]) -> Result<Vec<Value>, CliError> {
    items("--tags", words, &["Key", "Value"], |m| {
        let key = m.get("Key").ok_or("a tag needs Key=")?;
        let value = m.get("Value").cloned().unwrap_or_default();
        Ok(json!({ "Key": key, "Value": value }))
    })
}

/// `--filters`: each word `Key=K,Values=a,b` (`!a` negates), a JSON object or a JSON list.
pub fn filters(words: &[String]) -> Result<Vec<Value>, CliError> {
    items("--filters", words, &["Key", "Values"], |m| {
        let key = m.get("Key").ok_or("a filter needs Key=")?;
        let values = m.get("Values").ok_or("a filter needs Values=")?;
        let values = values.strip_prefix('[').unwrap_or(values);
        let values = values.strip_suffix(']').unwrap_or(values);
        let values: Vec<&str> = values.split(',').map(unquote).collect();
        Ok(json!({ "Key": key, "Values": values }))
    })
}

/// `--rotation-rules`: JSON, or `AutomaticallyAfterDays=N` / `ScheduleExpression=E`, with
/// `Duration=D` (`ScheduleExpression=cron(0 16 1,15 * ? *)` keeps its commas).
pub fn rotation_rules(text: &str) -> Result<Value, CliError> {
    const FLAG: &str = "--rotation-rules";
    let text = text.trim();
    if text.starts_with('{') {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| CliError::bad(FLAG, format!("not a JSON object: {e}")))?;
        return match v {
            Value::Object(_) => Ok(v),
            _ => Err(CliError::bad(FLAG, "not a JSON object")),
        };
    }
    const MEMBERS: &[&str] = &["AutomaticallyAfterDays", "Duration", "ScheduleExpression"];
    let mut rules = Map::new();
    for (k, v) in pairs(text, MEMBERS).map_err(|m| CliError::bad(FLAG, m))? {
        let v = if k == "AutomaticallyAfterDays" {
            let n: i64 = v.parse().map_err(|_| {
                CliError::bad(
                    FLAG,
                    format!("AutomaticallyAfterDays={v} is not a number of days"),
                )
            })?;
            Value::from(n)
        } else {
            Value::from(v)
        };
        rules.insert(k, v);
    }
    Ok(Value::Object(rules))
}

/// Items of a list flag: a JSON list or object per word, else shorthand `A=x,B=y` made
/// into an item by `make`.
fn items(
    flag: &'static str,
    words: &[String],
    members: &[&str],
    make: impl Fn(&BTreeMap<String, String>) -> Result<Value, &'static str>,
) -> Result<Vec<Value>, CliError> {
    let mut out = Vec::new();
    for w in words {
        let w = w.trim();
        if w.starts_with('[') || w.starts_with('{') {
            let v: Value = serde_json::from_str(w)
                .map_err(|e| CliError::bad(flag, format!("not JSON: {e}")))?;
            match v {
                Value::Array(a) => out.extend(a),
                o @ Value::Object(_) => out.push(o),
                _ => return Err(CliError::bad(flag, "give a JSON list or object")),
            }
            continue;
        }
        let m: BTreeMap<String, String> = pairs(w, members)
            .map_err(|m| CliError::bad(flag, m))?
            .into_iter()
            .collect();
        out.push(make(&m).map_err(|m| CliError::bad(flag, format!("'{w}': {m}")))?);
    }
    Ok(out)
}

/// `A=x,B=y` with the keys `members`; a comma not followed by one of them stays in the
/// value (`Values=a,b`, `cron(0 16 1,15 * ? *)`). Values may be quoted.
fn pairs(text: &str, members: &[&str]) -> Result<Vec<(String, String)>, String> {
    let key_at = |s: &str| {
        members
            .iter()
            .find(|m| s.strip_prefix(**m).is_some_and(|r| r.starts_with('=')))
            .copied()
    };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    loop {
        let Some(key) = key_at(rest) else {
            return Err(format!(
                "'{text}' is not {}",
                members
                    .iter()
                    .map(|m| format!("{m}=…"))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        };
        if out.iter().any(|(k, _)| k == key) {
            return Err(format!("{key} is given twice in '{text}'"));
        }
        let after = &rest[key.len() + 1..];
        // The value ends at the first `,Member=`.
        let end = after
            .match_indices(',')
            .map(|(i, _)| i)
            .find(|i| key_at(&after[i + 1..]).is_some());
        let value = &after[..end.unwrap_or(after.len())];
        out.push((key.to_string(), unquote(value).to_string()));
        match end {
            Some(i) => rest = &after[i + 1..],
            None => return Ok(out),
        }
    }
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// A `--flag` / `--no-flag` pair: `Some(true)`, `Some(false)`, or `None` when neither
/// was given (the service's default).
pub fn either(yes: bool, no: bool) -> Option<bool> {
    match (yes, no) {
        (true, _) => Some(true),
        (false, true) => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tag_forms() {
        let t = tags(&words(&["Key=a,Value=b", "Key=c,Value=d,e"])).unwrap();
        assert_eq!(
            t,
            vec![
                json!({"Key":"a","Value":"b"}),
                json!({"Key":"c","Value":"d,e"})
            ]
        );
        let j = tags(&words(&[
            r#"[{"Key":"a","Value":"b"},{"Key":"c","Value":"d"}]"#,
        ]))
        .unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j[1], json!({"Key":"c","Value":"d"}));
        assert!(matches!(
            tags(&words(&["a=b"])),
            Err(CliError::BadArgument { flag: "--tags", .. })
        ));
        assert!(tags(&words(&["Value=b"])).is_err());
    }

    #[test]
    fn filter_forms() {
        let f = filters(&words(&[
            "Key=name,Values=db,!app",
            "Key=tag-key,Values=[team]",
        ]))
        .unwrap();
        assert_eq!(
            f,
            vec![
                json!({"Key":"name","Values":["db","!app"]}),
                json!({"Key":"tag-key","Values":["team"]})
            ]
        );
        let j = filters(&words(&[r#"[{"Key":"description","Values":["x"]}]"#])).unwrap();
        assert_eq!(j, vec![json!({"Key":"description","Values":["x"]})]);
        assert!(filters(&words(&["Key=name"])).is_err());
    }

    #[test]
    fn rotation_rule_forms() {
        assert_eq!(
            rotation_rules("AutomaticallyAfterDays=30").unwrap(),
            json!({"AutomaticallyAfterDays": 30})
        );
        assert_eq!(
            rotation_rules("ScheduleExpression=cron(0 16 1,15 * ? *),Duration=2h").unwrap(),
            json!({"ScheduleExpression": "cron(0 16 1,15 * ? *)", "Duration": "2h"})
        );
        assert_eq!(
            rotation_rules(r#"{"ScheduleExpression": "rate(10 days)"}"#).unwrap(),
            json!({"ScheduleExpression": "rate(10 days)"})
        );
        assert!(rotation_rules("AutomaticallyAfterDays=soon").is_err());
        assert!(rotation_rules("Every=3").is_err());
        assert!(rotation_rules("[1]").is_err());
    }

    #[test]
    fn flag_pairs() {
        assert_eq!(either(true, false), Some(true));
        assert_eq!(either(false, true), Some(false));
        assert_eq!(either(false, false), None);
    }
}
