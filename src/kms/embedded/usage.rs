//! `kms usage`: a month's metered requests per key and operation, priced at AWS list
//! prices (src/kms/metering.rs has the prices and why counts are batched).

use serde::Serialize;

use super::EmbeddedKms;
use crate::aws::error::Result;
use crate::kms::metering::{self, NO_KEY, USD_PER_10K_REQUESTS, USD_PER_CUSTOMER_KEY_MONTH};
use crate::kms::model::KeyManager;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyUsage {
    /// A key ARN, or `-` for requests that name no key (ListKeys, CreateKey refused…).
    pub key_id: String,
    pub key_manager: &'static str,
    pub requests: std::collections::BTreeMap<String, u64>,
    pub request_count: u64,
    /// The share of the month the key existed (customer keys are billed by it).
    pub key_months: f64,
    #[serde(skip)]
    key_cost: f64,
    #[serde(rename = "KeyCostUSD")]
    pub key_cost_usd: String,
    #[serde(rename = "RequestCostUSD")]
    pub request_cost_usd: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageReport {
    pub month: String,
    pub keys: Vec<KeyUsage>,
    pub total_requests: u64,
    #[serde(rename = "KeyCostUSD")]
    pub key_cost_usd: String,
    #[serde(rename = "RequestCostUSD")]
    pub request_cost_usd: String,
    #[serde(rename = "EstimatedCostUSD")]
    pub estimated_cost_usd: String,
    pub prices: serde_json::Value,
}

/// Dollars as AWS's billing tools show amounts: a decimal string (here to a millionth,
/// since one request costs 0.000003 USD).
fn usd(x: f64) -> String {
    format!("{x:.6}")
}

impl EmbeddedKms {
    /// The usage report for `month` (`YYYY-MM`; None: the current month).
    pub fn usage(&self, month: Option<&str>) -> Result<UsageReport> {
        let month = match month {
            Some(m) => m.to_string(),
            None => metering::month_of(self.clock.now()),
        };
        let (start, end) = metering::month_bounds(&month)?;
        self.meter.flush()?;
        let counts = self.meter.load()?.months.remove(&month).unwrap_or_default();
        let lifetimes = self.read(|ks, _| {
            let mut v: Vec<(String, KeyManager, i64, Option<i64>)> = ks
                .body
                .keys
                .values()
                .map(|k| (self.arn(&k.id), k.manager, k.created, None))
                .collect();
            v.extend(ks.body.deleted_keys.iter().map(|(id, d)| {
                (
                    self.arn(id),
                    KeyManager::Customer,
                    d.created.unwrap_or(d.deleted),
                    Some(d.deleted),
                )
            }));
            Ok(v)
        })?;
        let month_secs = (end - start) as f64;
        let mut keys = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (arn, manager, created, deleted) in lifetimes {
            let from = created.max(start);
            let to = deleted
                .unwrap_or(i64::MAX)
                .min(end)
                .min(self.clock.now().max(start));
            let key_months = if to > from {
                (to - from) as f64 / month_secs
            } else {
                0.0
            };
            let requests = counts.get(&arn).cloned().unwrap_or_default();
            if key_months == 0.0 && requests.is_empty() {
                continue;
            }
            seen.insert(arn.clone());
            keys.push(row(arn, manager, key_months, requests));
        }
        for (arn, requests) in counts {
            if !seen.contains(&arn) {
                let manager = if arn == NO_KEY {
                    KeyManager::Aws
                } else {
                    KeyManager::Customer
                };
                keys.push(row(arn, manager, 0.0, requests));
            }
        }
        let total_requests = keys.iter().map(|k| k.request_count).sum();
        let key_cost: f64 = keys.iter().map(|k| k.key_cost).sum();
        let request_cost = total_requests as f64 * USD_PER_10K_REQUESTS / 10_000.0;
        Ok(UsageReport {
            month,
            keys,
            total_requests,
            key_cost_usd: usd(key_cost),
            request_cost_usd: usd(request_cost),
            estimated_cost_usd: usd(key_cost + request_cost),
            prices: serde_json::json!({
                "CustomerKeyMonthUSD": USD_PER_CUSTOMER_KEY_MONTH,
                "AwsManagedKeyMonthUSD": 0.0,
                "Per10000RequestsUSD": USD_PER_10K_REQUESTS,
            }),
        })
    }
}

fn row(
    arn: String,
    manager: KeyManager,
    key_months: f64,
    requests: std::collections::BTreeMap<String, u64>,
) -> KeyUsage {
    let request_count = requests.values().sum();
    let customer = manager == KeyManager::Customer && arn != NO_KEY;
    let key_cost = if customer {
        key_months * USD_PER_CUSTOMER_KEY_MONTH
    } else {
        0.0
    };
    KeyUsage {
        key_manager: if arn == NO_KEY {
            "-"
        } else if customer {
            "CUSTOMER"
        } else {
            "AWS"
        },
        key_id: arn,
        requests,
        request_count,
        key_months: (key_months * 10_000.0).round() / 10_000.0,
        key_cost,
        key_cost_usd: usd(key_cost),
        request_cost_usd: usd(request_count as f64 * USD_PER_10K_REQUESTS / 10_000.0),
    }
}
