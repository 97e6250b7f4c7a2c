//! Printing a Secrets Manager answer: its times (epoch seconds on the wire) as RFC 3339,
//! as the `kms` commands print theirs, through the same printer; an empty answer
//! (tag-resource, untag-resource) prints nothing, as the AWS CLI's.

use serde_json::Value;

use super::values::Scrubbed;
use crate::cli::Config;
use crate::cli::exit::CliError;
use crate::sys::clock::format_time;

/// Secrets Manager's time members.
const TIME_FIELDS: &[&str] = &[
    "CreatedDate",
    "LastChangedDate",
    "LastAccessedDate",
    "LastRotatedDate",
    "NextRotationDate",
    "DeletedDate",
    "DeletionDate",
];

pub fn print(cfg: &Config, mut answer: Scrubbed, title: &str) -> Result<(), CliError> {
    let empty = match &answer.0 {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    if empty {
        return Ok(());
    }
    render_times(&mut answer.0);
    cfg.print(&answer.0, title)
}

fn render_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                match val.as_f64() {
                    Some(t) if TIME_FIELDS.contains(&k.as_str()) => {
                        *val = Value::String(format_time(t.floor() as i64));
                    }
                    _ => render_times(val),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(render_times),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_render_as_rfc3339() {
        let mut v = json!({
            "CreatedDate": 0,
            "SecretList": [{"LastChangedDate": 86400.5, "Name": "n"}],
            "Versions": [{"CreatedDate": 60}],
            "Other": 5
        });
        render_times(&mut v);
        assert_eq!(
            v,
            json!({
                "CreatedDate": "1970-01-01T00:00:00Z",
                "SecretList": [{"LastChangedDate": "1970-01-02T00:00:00Z", "Name": "n"}],
                "Versions": [{"CreatedDate": "1970-01-01T00:01:00Z"}],
                "Other": 5
            })
        );
    }
}
