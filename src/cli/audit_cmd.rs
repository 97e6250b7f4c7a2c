//! `cryptvol audit ...`: the region's audit trail (the CloudTrail of cryptvol): check
//! that no event was altered, removed or reordered, look events up, seal the log file.

use clap::Subcommand;
use serde_json::Value;

use super::Config;
use super::exit::CliError;
use super::output::OutputFormat;
use crate::iam::IdentityStore;
use crate::kms::KeyRef;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain and the digests; names the first altered, removed or reordered event
    Verify,
    /// Find events (all filters must match)
    Lookup {
        /// Key id, key ARN or alias
        #[arg(long)]
        key: Option<String>,
        /// An operation, e.g. Decrypt
        #[arg(long)]
        event_name: Option<String>,
        /// A caller: ARN, user name, role name or `root`
        #[arg(long)]
        principal: Option<String>,
        /// From this time: RFC 3339, YYYY-MM-DD or Unix seconds
        #[arg(long)]
        start: Option<String>,
        /// Up to this time (inclusive)
        #[arg(long)]
        end: Option<String>,
        /// At most this many events (the latest)
        #[arg(long)]
        max_results: Option<usize>,
    },
    /// Seal the current log file with a digest now (it is sealed daily and at 16 MiB)
    Seal,
}

/// A time flag as CloudTrail's `eventTime` text, which sorts as time does.
fn event_time_bound(flag: &'static str, v: &str, end: bool) -> Result<String, CliError> {
    let bad = || {
        CliError::bad(
            flag,
            format!(
                "'{v}' is not a time: use RFC 3339 (2026-11-29T10:00:00Z), YYYY-MM-DD or Unix seconds"
            ),
        )
    };
    let ts = if v.bytes().all(|b| b.is_ascii_digit()) && !v.is_empty() {
        jiff::Timestamp::from_second(v.parse().map_err(|_| bad())?).map_err(|_| bad())?
    } else if v.len() == 10 {
        let day: jiff::Timestamp = format!("{v}T00:00:00Z").parse().map_err(|_| bad())?;
        if end {
            // A whole day: up to its last second.
            day.checked_add(jiff::SignedDuration::from_secs(86_399))
                .map_err(|_| bad())?
        } else {
            day
        }
    } else {
        v.parse().map_err(|_| bad())?
    };
    Ok(crate::kms::event::event_time(ts.as_nanosecond() as i64))
}

fn principal_matches(e: &Value, p: &str) -> bool {
    let id = &e["userIdentity"];
    let arn = id["arn"].as_str().unwrap_or("");
    let issuer = id["sessionContext"]["sessionIssuer"]["arn"]
        .as_str()
        .unwrap_or("");
    arn == p
        || issuer == p
        || id["userName"].as_str() == Some(p)
        || id["sessionContext"]["sessionIssuer"]["userName"].as_str() == Some(p)
        || (p == "root" && id["type"] == "Root")
        // An AWS service acting for a user is found under that user too.
        || id["onBehalfOf"]["arn"].as_str() == Some(p)
        || id["onBehalfOf"]["userName"].as_str() == Some(p)
}

fn key_matches(e: &Value, arn: &str) -> bool {
    e["resources"]
        .as_array()
        .is_some_and(|rs| rs.iter().any(|r| r["ARN"].as_str() == Some(arn)))
}

/// One line per event for people (`--output table`).
fn summary(e: &Value) -> Value {
    serde_json::json!({
        "EventTime": e["eventTime"],
        "EventName": e["eventName"],
        "Caller": e["userIdentity"]["arn"].as_str().or(e["userIdentity"]["invokedBy"].as_str()),
        "Via": e["userIdentity"]["invokedBy"],
        "Key": e["resources"][0]["ARN"],
        "Error": e["errorCode"],
    })
}

pub fn run(cfg: &Config, cmd: AuditCommand) -> Result<(), CliError> {
    let kms = cfg.kms()?;
    let store = IdentityStore::new(&cfg.data_dir, kms.account().clone());
    let me = store.resolve_profile(cfg.profile.as_deref())?;
    let audit_err = |e: crate::audit::AuditError| CliError::Audit(e.to_string());
    match cmd {
        AuditCommand::Verify => {
            store.authorize(&me, "cloudtrail:LookupEvents", "*")?;
            let report = kms.audit_log().verify().map_err(audit_err)?;
            cfg.print(&report, "Audit log")?;
            match report.problem {
                Some(p) if !report.valid => Err(CliError::AuditTampered(p.message)),
                _ => Ok(()),
            }
        }
        AuditCommand::Seal => {
            store.authorize(&me, "cloudtrail:UpdateTrail", "*")?;
            let sealed = kms.audit_log().seal(cfg.clock.now()).map_err(audit_err)?;
            cfg.print(&serde_json::json!({ "Sealed": sealed }), "Seal")
        }
        AuditCommand::Lookup {
            key,
            event_name,
            principal,
            start,
            end,
            max_results,
        } => {
            store.authorize(&me, "cloudtrail:LookupEvents", "*")?;
            let key_arn = key
                .map(|k| -> Result<String, CliError> {
                    let r = KeyRef::parse(&k)?;
                    // A deleted key still has its events: fall back to the ARN form.
                    Ok(kms.resolve_key_arn(&r).unwrap_or_else(|_| match &r {
                        KeyRef::Id(id) => crate::kms::ids::key_arn(kms.region(), kms.account(), id),
                        other => other.to_string(),
                    }))
                })
                .transpose()?;
            let start = start
                .map(|s| event_time_bound("--start", &s, false))
                .transpose()?;
            let end = end
                .map(|s| event_time_bound("--end", &s, true))
                .transpose()?;
            let mut events: Vec<Value> = kms
                .audit_log()
                .events()
                .map_err(audit_err)?
                .into_iter()
                .map(|(_, e)| e)
                .filter(|e| {
                    let t = e["eventTime"].as_str().unwrap_or("");
                    key_arn.as_deref().is_none_or(|a| key_matches(e, a))
                        && event_name.as_deref().is_none_or(|n| e["eventName"] == n)
                        && principal.as_deref().is_none_or(|p| principal_matches(e, p))
                        && start.as_deref().is_none_or(|s| t >= s)
                        && end.as_deref().is_none_or(|x| t <= x)
                })
                .collect();
            if let Some(n) = max_results {
                let skip = events.len().saturating_sub(n);
                events.drain(..skip);
            }
            if cfg.output == OutputFormat::Table {
                let rows: Vec<Value> = events.iter().map(summary).collect();
                cfg.print(&serde_json::json!({ "Events": rows }), "Events")
            } else {
                cfg.print(&serde_json::json!({ "Events": events }), "Events")
            }
        }
    }
}
