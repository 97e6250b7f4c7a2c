//! ListSecrets: every secret the caller may list, filtered (`Filters`: name, description,
//! tag-key, tag-value, primary-region, owning-service, all; values are prefixes,
//! case-sensitive except for description and all (each word of the value), `!` negates; several values of one key: any; several keys: all), sorted by
//! creation (or `SortBy`: name, last-changed-date, last-accessed-date), in pages (`MaxResults`, `NextToken`). Also the paging of version lists.

use serde_json::{Value, json};

use super::errors::validation;
use super::lifecycle::metadata;
use super::model::SecretRecord;
use super::request::Request;
use super::{Call, SecretsManager};
use crate::aws::AwsError;

const TOKEN_PREFIX: &str = "cvsm-page-v2:";
const FILTER_KEYS: &[&str] = &[
    "description",
    "name",
    "tag-key",
    "tag-value",
    "primary-region",
    "owning-service",
    "all",
];

/// One page of `items` (in the order they are listed, each with a sort key that grows,
/// or with `descending` falls, along that order): the items after the one a `token` of
/// the same listing (`kind`) ended on, at most `max` (default 100). The token names that
/// item's key, not an offset, so an item removed between pages makes none skipped.
pub fn page(
    kind: &str,
    descending: bool,
    items: Vec<(String, Value)>,
    max: Option<i64>,
    token: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), AwsError> {
    let invalid = || {
        AwsError::Secrets {
        code: "InvalidNextTokenException",
        message: "The NextToken value is not valid: give the NextToken the previous page of this same listing returned".into(),
    }
    };
    let after = match token {
        None => None,
        Some(t) => {
            let text = crate::aws::b64::decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid)?;
            let rest = text.strip_prefix(TOKEN_PREFIX).ok_or_else(invalid)?;
            let (token_kind, key) = rest.split_once('\n').ok_or_else(invalid)?;
            if token_kind != kind {
                return Err(invalid());
            }
            Some(key.to_string())
        }
    };
    let max = max.unwrap_or(100) as usize;
    let start = match &after {
        None => 0,
        Some(a) => items
            .iter()
            .position(|(k, _)| if descending { k < a } else { k > a })
            .unwrap_or(items.len()),
    };
    let end = start.saturating_add(max).min(items.len());
    let next = (end < items.len() && end > start).then(|| {
        crate::aws::b64::encode(format!("{TOKEN_PREFIX}{kind}\n{}", items[end - 1].0).as_bytes())
    });
    let out = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|(_, v)| v)
        .collect();
    Ok((out, next))
}

/// A time as a sort key: fixed width, so keys compare as the times do.
pub fn time_key(t: i64) -> String {
    format!("{:020}", (t as i128 - i64::MIN as i128) as u64)
}

struct Filter {
    key: String,
    values: Vec<String>,
}

fn filters_of(r: &Request) -> Result<Vec<Filter>, AwsError> {
    let Some(v) = r.get("Filters") else {
        return Ok(Vec::new());
    };
    let items = v
        .as_array()
        .ok_or_else(|| validation("Filters", "must be a list of {Key, Values}"))?;
    items
        .iter()
        .map(|f| {
            let key = f["Key"]
                .as_str()
                .ok_or_else(|| validation("Filters", "each filter needs a Key"))?;
            if !FILTER_KEYS.contains(&key) {
                return Err(validation(
                    "Filters",
                    format!(
                        "unknown filter key '{key}': use one of {}",
                        FILTER_KEYS.join(", ")
                    ),
                ));
            }
            let values = f["Values"]
                .as_array()
                .ok_or_else(|| {
                    validation("Filters", format!("filter {key} needs a list of Values"))
                })?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| validation("Filters", "Values must be strings"))?;
            if values.is_empty() || values.len() > 10 {
                return Err(validation(
                    "Filters",
                    format!("filter {key} takes 1 to 10 Values"),
                ));
            }
            Ok(Filter {
                key: key.to_string(),
                values,
            })
        })
        .collect()
}

/// Whether `s` passes filter `f` in `region`.
fn passes(s: &SecretRecord, f: &Filter, region: &str) -> bool {
    let fields = |key: &str| -> Vec<&str> {
        match key {
            "name" => vec![s.name.as_str()],
            "description" => s.description.as_deref().into_iter().collect(),
            "tag-key" => s.tags.iter().map(|t| t.key.as_str()).collect(),
            "tag-value" => s.tags.iter().map(|t| t.value.as_str()).collect(),
            "primary-region" => vec![region],
            "owning-service" => vec![],
            _ => Vec::new(),
        }
    };
    let candidates: Vec<&str> = if f.key == "all" {
        [
            "name",
            "description",
            "tag-key",
            "tag-value",
            "primary-region",
        ]
        .iter()
        .flat_map(|k| fields(k))
        .collect()
    } else {
        fields(&f.key)
    };
    let (negated, positive): (Vec<&String>, Vec<&String>) =
        f.values.iter().partition(|v| v.starts_with('!'));
    // As AWS documents them: description and all ignore case; all matches each word of
    // the value against any attribute; the others are case-sensitive prefixes.
    let fold = f.key == "description" || f.key == "all";
    let hit = |value: &str| {
        let words: Vec<String> = if f.key == "all" {
            value.split_whitespace().map(str::to_lowercase).collect()
        } else if fold {
            vec![value.to_lowercase()]
        } else {
            vec![value.to_string()]
        };
        // `all` matches a word at the start of any word of any attribute.
        let targets: Vec<String> = if f.key == "all" {
            candidates
                .iter()
                .flat_map(|c| {
                    std::iter::once(c.to_lowercase())
                        .chain(c.split_whitespace().map(str::to_lowercase))
                })
                .collect()
        } else if fold {
            candidates.iter().map(|c| c.to_lowercase()).collect()
        } else {
            candidates.iter().map(|c| c.to_string()).collect()
        };
        !words.is_empty()
            && words
                .iter()
                .all(|w| targets.iter().any(|t| t.starts_with(w.as_str())))
    };
    let positive_ok = positive.is_empty() || positive.iter().any(|v| hit(v));
    let negated_ok = negated.iter().all(|v| !hit(&v[1..]));
    positive_ok && negated_ok
}

impl SecretsManager {
    pub(super) fn list_secrets(&self, c: &Call, r: &Request) -> Result<Value, AwsError> {
        let max = r.int("MaxResults", 1, 100)?;
        let token = r.str("NextToken")?;
        let include_deleted = r.bool("IncludePlannedDeletion")?.unwrap_or(false);
        let filters = filters_of(r)?;
        let descending = match r.str("SortOrder")? {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(validation(
                    "SortOrder",
                    format!("'{other}' is not asc or desc"),
                ));
            }
        };
        self.authorized_account(c, "secretsmanager:ListSecrets")?;
        let body = self.load()?;
        let region = self.kms.region().as_str();
        let secrets: Vec<&SecretRecord> = body
            .secrets
            .values()
            .filter(|s| include_deleted || s.deletion.is_none())
            .filter(|s| filters.iter().all(|f| passes(s, f, region)))
            .collect();
        let sort_by = r.str("SortBy")?.unwrap_or("created-date");
        let key = |s: &SecretRecord| -> Result<String, AwsError> {
            let time = |t: i64| format!("{}\u{0}{}", time_key(t), s.name);
            Ok(match sort_by {
                "created-date" => time(s.created),
                "name" => s.name.clone(),
                "last-changed-date" => time(s.last_changed),
                "last-accessed-date" => time(s.last_accessed.unwrap_or(i64::MIN)),
                other => {
                    return Err(validation(
                        "SortBy",
                        format!(
                            "'{other}' is not one of created-date, last-accessed-date, last-changed-date, name"
                        ),
                    ));
                }
            })
        };
        let mut keyed = secrets
            .into_iter()
            .map(|s| Ok((key(s)?, s)))
            .collect::<Result<Vec<_>, AwsError>>()?;
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        if descending {
            keyed.reverse();
        }
        let items = keyed
            .into_iter()
            .map(|(k, s)| (k, metadata(s, "SecretVersionsToStages", region)))
            .collect();
        let kind = format!("secrets {sort_by} {descending} {include_deleted}");
        let (items, next) = page(&kind, descending, items, max, token)?;
        let mut out = json!({ "SecretList": items });
        if let Some(n) = next {
            out["NextToken"] = n.into();
        }
        Ok(out)
    }
}
