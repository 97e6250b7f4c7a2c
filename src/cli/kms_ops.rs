//! The `kms` commands' paging flags (the commands themselves are in `kms_cmd/`).
//!
//! Paging works as the AWS CLI's: by default a list command fetches every page
//! (`--page-size` items per request) and prints one merged list (`Truncated` false);
//! `--max-items N` stops after N items and prints `NextToken` (and `Truncated` true),
//! which `--starting-token` continues from. With
//! `--limit` or `--marker` it makes exactly one request and prints that page as the API
//! answers it, `Truncated` and `NextMarker` included.

use serde_json::Value;

use super::exit::CliError;
use crate::aws::AwsError;
use crate::kms::embedded::Paging;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct PageArgs {
    /// One request of at most N items (1..1000); prints Truncated and NextMarker
    #[arg(long, value_name = "N", conflicts_with_all = ["page_size", "max_items", "starting_token"])]
    pub limit: Option<i64>,
    /// One request starting after this NextMarker of an earlier page
    #[arg(long, value_name = "MARKER", conflicts_with_all = ["page_size", "max_items", "starting_token"])]
    pub marker: Option<String>,
    /// Items per request while fetching every page
    #[arg(long, value_name = "N")]
    pub page_size: Option<i64>,
    /// Print at most N items in all, then NextToken
    #[arg(long, value_name = "N")]
    pub max_items: Option<usize>,
    /// Continue from the NextToken of an earlier --max-items listing
    #[arg(long, value_name = "TOKEN")]
    pub starting_token: Option<String>,
}

impl PageArgs {
    /// Runs a list operation: one page (`--limit`/`--marker`) or all of them, merged
    /// under `field`.
    pub fn run(
        &self,
        field: &str,
        mut fetch: impl FnMut(&Paging) -> Result<Value, AwsError>,
    ) -> Result<Value, CliError> {
        if self.limit.is_some() || self.marker.is_some() {
            return Ok(fetch(&Paging {
                limit: self.limit,
                marker: self.marker.clone(),
            })?);
        }
        if self.max_items == Some(0) {
            return Err(CliError::bad("--max-items", "give at least 1"));
        }
        let mut items = Vec::new();
        let mut marker = self.starting_token.clone();
        loop {
            let room = self.max_items.map(|m| m - items.len());
            // Never fetch past --max-items, so that the page's NextMarker is where the
            // printed list ends.
            let limit = match (self.page_size, room) {
                (Some(p), Some(r)) => Some(p.min(r as i64)),
                (None, Some(r)) => Some(r.min(1000) as i64),
                (p, None) => p,
            };
            let page = fetch(&Paging {
                limit,
                marker: marker.take(),
            })?;
            if let Some(a) = page[field].as_array() {
                items.extend(a.iter().cloned());
            }
            let next = page["NextMarker"].as_str().map(String::from);
            match next {
                None => break,
                Some(m) if self.max_items.is_some_and(|max| items.len() >= max) => {
                    return Ok(
                        serde_json::json!({ field: items, "Truncated": true, "NextToken": m }),
                    );
                }
                Some(m) => marker = Some(m),
            }
        }
        Ok(serde_json::json!({ field: items, "Truncated": false }))
    }
}
