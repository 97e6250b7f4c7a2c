//! Printing results: `--output json` (the AWS CLI's shape, times as RFC 3339), `text`
//! (tab-separated, for scripts) and `table` (aligned, for people), and `--query PATH`
//! (`A.B`, `A[].B`) to pick a field as the AWS CLI's JMESPath does for simple paths.

use std::io::Write;

use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

use super::exit::CliError;
use crate::kms::api::TIME_FIELDS;
use crate::sys::clock::format_time;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Text,
    Table,
}

/// Renders Unix-time fields as RFC 3339 strings, recursively.
fn render_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if TIME_FIELDS.contains(&k.as_str())
                    && let Some(t) = val.as_i64()
                {
                    *val = Value::String(format_time(t));
                } else {
                    render_times(val);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(render_times),
        _ => {}
    }
}

/// `A.B.C` and `A[].B` paths.
pub fn query(v: &Value, path: &str) -> Result<Value, CliError> {
    let mut cur = vec![v.clone()];
    let mut projected = false;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, project) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        let mut next = vec![];
        for c in &cur {
            // As JMESPath (and the AWS CLI): a missing field is null, not an error, so a
            // query typo can never make a command that already changed state look failed.
            let field = c.get(name).unwrap_or(&Value::Null);
            if project {
                next.extend(field.as_array().cloned().unwrap_or_default());
            } else {
                next.push(field.clone());
            }
        }
        projected |= project;
        cur = next;
    }
    Ok(if projected {
        Value::Array(cur)
    } else {
        cur.pop().unwrap_or(Value::Null)
    })
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn text_lines(v: &Value, label: Option<&str>, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let scalars: Vec<String> = map
                .values()
                .filter(|x| !x.is_object() && !x.is_array())
                .map(scalar)
                .collect();
            if !scalars.is_empty() {
                let mut line = label.map(|l| vec![l.to_uppercase()]).unwrap_or_default();
                line.extend(scalars);
                out.push(line.join("\t"));
            }
            for (k, x) in map.iter().filter(|(_, x)| x.is_object() || x.is_array()) {
                text_lines(x, Some(k), out);
            }
        }
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            let mut line = label.map(|l| vec![l.to_uppercase()]).unwrap_or_default();
            line.extend(items.iter().map(scalar));
            out.push(line.join("\t"));
        }
        Value::Array(items) => items.iter().for_each(|i| text_lines(i, label, out)),
        other => out.push(scalar(other)),
    }
}

fn table_lines(v: &Value, title: &str, out: &mut Vec<String>) {
    fn push_table(
        title: &str,
        header: Option<Vec<String>>,
        rows: Vec<Vec<String>>,
        out: &mut Vec<String>,
    ) {
        let ncol = header
            .as_ref()
            .map(|h| h.len())
            .or(rows.first().map(|r| r.len()))
            .unwrap_or(1);
        let mut widths = vec![0usize; ncol];
        for r in header.iter().chain(rows.iter()) {
            for (i, c) in r.iter().enumerate().take(ncol) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let inner: usize = widths.iter().sum::<usize>() + 3 * ncol - 1;
        let inner = inner.max(title.chars().count() + 2);
        let bar = format!("+{}+", "-".repeat(inner));
        let row = |cells: &Vec<String>| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                s.push_str(&format!(" {c:<w$} |"));
            }
            s
        };
        out.push(bar.clone());
        out.push(format!("|{:^inner$}|", title));
        out.push(bar.clone());
        if let Some(h) = &header {
            out.push(row(h));
            out.push(bar.clone());
        }
        for r in &rows {
            out.push(row(r));
        }
        out.push(bar);
    }
    match v {
        Value::Object(map) => {
            let rows: Vec<Vec<String>> = map
                .iter()
                .filter(|(_, x)| !x.is_object() && !x.is_array())
                .map(|(k, x)| vec![k.clone(), scalar(x)])
                .collect();
            if !rows.is_empty() {
                push_table(title, None, rows, out);
            }
            for (k, x) in map.iter().filter(|(_, x)| x.is_object() || x.is_array()) {
                table_lines(x, k, out);
            }
        }
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            let mut cols: Vec<String> = vec![];
            for i in items {
                for (k, x) in i.as_object().expect("checked") {
                    if !x.is_object() && !x.is_array() && !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            let rows = items
                .iter()
                .map(|i| {
                    cols.iter()
                        .map(|c| i.get(c).map(scalar).unwrap_or_default())
                        .collect()
                })
                .collect();
            push_table(title, Some(cols), rows, out);
        }
        Value::Array(items) => {
            let rows = items.iter().map(|i| vec![scalar(i)]).collect();
            push_table(title, None, rows, out);
        }
        other => push_table(title, None, vec![vec![scalar(other)]], out),
    }
}

/// Prints `result` to stdout. The rendered text may hold a plaintext the user asked for,
/// so it lives in zeroizing buffers.
pub fn print<T: Serialize>(
    result: &T,
    format: OutputFormat,
    query_path: Option<&str>,
    title: &str,
) -> Result<(), CliError> {
    let mut v = serde_json::to_value(result).expect("results serialise");
    render_times(&mut v);
    if let Some(q) = query_path {
        v = query(&v, q)?;
    }
    let rendered: Zeroizing<String> = Zeroizing::new(match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&v).expect("serialises");
            s.push('\n');
            s
        }
        OutputFormat::Text => {
            let mut lines = vec![];
            text_lines(&v, None, &mut lines);
            lines.into_iter().map(|l| l + "\n").collect()
        }
        OutputFormat::Table => {
            let mut lines = vec![];
            table_lines(&v, title, &mut lines);
            lines.into_iter().map(|l| l + "\n").collect()
        }
    });
    zeroize_value(v);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(rendered.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|source| CliError::OutputFile {
            path: "standard output".into(),
            source,
        })
}

/// Clears the strings of a JSON value (which may hold a base64 plaintext) before freeing.
fn zeroize_value(v: Value) {
    match v {
        Value::String(s) => drop(Zeroizing::new(s)),
        Value::Array(items) => items.into_iter().for_each(zeroize_value),
        Value::Object(map) => map.into_iter().for_each(|(_, x)| zeroize_value(x)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_paths() {
        let v = json!({"KeyMetadata": {"KeyId": "k"}, "Keys": [{"KeyId": "a"}, {"KeyId": "b"}]});
        assert_eq!(query(&v, "KeyMetadata.KeyId").unwrap(), json!("k"));
        assert_eq!(query(&v, "Keys[].KeyId").unwrap(), json!(["a", "b"]));
        assert_eq!(query(&v, "Nope").unwrap(), Value::Null);
    }

    #[test]
    fn times_render_as_rfc3339() {
        let mut v = json!({"KeyMetadata": {"CreationDate": 0, "Other": 5}});
        render_times(&mut v);
        assert_eq!(
            v["KeyMetadata"]["CreationDate"],
            json!("1970-01-01T00:00:00Z")
        );
        assert_eq!(v["KeyMetadata"]["Other"], json!(5));
    }

    #[test]
    fn text_and_table_shapes() {
        let v = json!({"Keys": [{"KeyId": "a", "KeyArn": "x"}, {"KeyId": "b", "KeyArn": "y"}], "Truncated": false});
        let mut lines = vec![];
        text_lines(&v, None, &mut lines);
        assert_eq!(lines, vec!["false", "KEYS\tx\ta", "KEYS\ty\tb"]);
        let mut t = vec![];
        table_lines(&v, "ListKeys", &mut t);
        assert!(
            t.iter()
                .any(|l| l.contains("KeyArn") && l.contains("KeyId")),
            "{t:#?}"
        );
        assert!(
            t.iter().any(|l| l.contains("| y ") && l.contains("| b ")),
            "{t:#?}"
        );
    }
}
