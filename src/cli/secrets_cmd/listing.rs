//! `list-secrets`, and the paging of Secrets Manager's list commands.
//!
//! As the AWS CLI pages: by default every page is fetched (`--page-size` items per
//! request) and one merged list printed; `--max-items N` stops after N items and prints
//! `NextToken`, which `--starting-token` continues from. `--max-results` or
//! `--next-token` make exactly one request and print that page as the API answers it.

use serde_json::Value;

use super::shorthand::{either, filters};
use super::values::{Request, Scrubbed};
use super::{Session, show};
use crate::cli::exit::CliError;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct PageArgs {
    /// One request of at most N items (1..100); prints NextToken if there are more
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          conflicts_with_all = ["page_size", "max_items", "starting_token"])]
    max_results: Option<i64>,
    /// One request, continuing from the NextToken of an earlier page
    #[arg(long, value_name = "TOKEN",
          conflicts_with_all = ["page_size", "max_items", "starting_token"])]
    next_token: Option<String>,
    /// Items per request while fetching every page
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    page_size: Option<i64>,
    /// Print at most N items in all, then NextToken
    #[arg(long, value_name = "N")]
    max_items: Option<usize>,
    /// Continue from the NextToken of an earlier --max-items listing
    #[arg(long, value_name = "TOKEN")]
    starting_token: Option<String>,
}

/// The most items Secrets Manager returns in one page.
const MAX_PAGE: usize = 100;

impl PageArgs {
    /// Runs list `operation` with `request` (its other members) and prints one page or
    /// all of them, merged under `field`; the first page's other members are kept.
    pub fn run(
        self,
        s: &Session<'_>,
        operation: &'static str,
        request: Request,
        field: &str,
    ) -> Result<(), CliError> {
        let request = request.done()?;
        let page = |max: Option<i64>, token: Option<String>| {
            let mut r = request.0.clone();
            if let Some(m) = max {
                r["MaxResults"] = m.into();
            }
            if let Some(t) = token {
                r["NextToken"] = t.into();
            }
            let r = Scrubbed(r);
            s.call(operation, &r.0)
        };
        if self.max_results.is_some() || self.next_token.is_some() {
            let answer = page(self.max_results, self.next_token)?;
            return show::print(s.cfg, answer, operation);
        }
        if self.max_items == Some(0) {
            return Err(CliError::bad("--max-items", "give at least 1"));
        }
        let mut merged: Option<Scrubbed> = None;
        let mut items: Vec<Value> = Vec::new();
        let mut token = self.starting_token;
        let mut next = None;
        loop {
            let room = self.max_items.map(|m| m - items.len());
            // Never fetch past --max-items, so that the page's NextToken is where the
            // printed list ends.
            let max = match (self.page_size, room) {
                (Some(p), Some(r)) => Some(p.min(r as i64)),
                (None, Some(r)) => Some(r.min(MAX_PAGE) as i64),
                (p, None) => p,
            };
            let mut answer = page(max, token.take())?;
            if let Some(a) = answer.0.get_mut(field).and_then(Value::as_array_mut) {
                items.append(a);
            }
            let t = answer
                .0
                .get("NextToken")
                .and_then(Value::as_str)
                .map(String::from);
            merged.get_or_insert(answer);
            match t {
                Some(t) if self.max_items.is_some_and(|m| items.len() >= m) => {
                    next = Some(t);
                    break;
                }
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut merged = merged.unwrap_or_default();
        if let Value::Object(m) = &mut merged.0 {
            m.remove("NextToken");
            m.insert(field.to_string(), Value::Array(items));
            if let Some(t) = next {
                m.insert("NextToken".to_string(), t.into());
            }
        }
        show::print(s.cfg, merged, operation)
    }
}

#[derive(Debug, clap::Args)]
pub struct ListSecretsArgs {
    /// Also list secrets scheduled for deletion
    #[arg(long, overrides_with = "no_include_planned_deletion")]
    include_planned_deletion: bool,
    #[arg(long, overrides_with = "include_planned_deletion")]
    no_include_planned_deletion: bool,
    /// Key=K,Values=V1,V2 per filter (space-separated; K: name, description, tag-key,
    /// tag-value, primary-region, owning-service or all; !V negates), or a JSON list
    #[arg(long, num_args = 1.., value_name = "Key=K,Values=V")]
    filters: Vec<String>,
    /// asc or desc [default: asc]
    #[arg(long, value_name = "ORDER")]
    sort_order: Option<String>,
    /// created-date (the default), name, last-changed-date or last-accessed-date
    #[arg(long, value_name = "FIELD")]
    sort_by: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

pub fn list_secrets(s: &Session<'_>, a: ListSecretsArgs) -> Result<(), CliError> {
    let filters = filters(&a.filters)?;
    let r = Request::new()
        .opt(
            "IncludePlannedDeletion",
            either(a.include_planned_deletion, a.no_include_planned_deletion),
        )
        .opt("SortOrder", a.sort_order)
        .opt("SortBy", a.sort_by);
    let r = if filters.is_empty() {
        r
    } else {
        r.set("Filters", filters)
    };
    a.page.run(s, "ListSecrets", r, "SecretList")
}
