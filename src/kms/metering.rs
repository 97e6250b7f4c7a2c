//! Metering: how many requests each key served, per month and operation, and what that
//! would cost at AWS list prices (`cryptvol kms usage`).
//!
//! Counting happens in memory on the hot path and is merged into `<region>/usage.json`
//! under a lock once a second and when the KMS is dropped, so a KMS call costs no extra
//! file write. A crash loses at most the last second of counts; the audit trail still
//! has every call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::aws::error::{AwsError, Result};
use crate::datadir::RegionDir;
use crate::sys::fsio::{self, FileLock};

const FORMAT_V1: u32 = 1;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// AWS KMS list prices (us-east-1, 2026): a customer managed key costs 1 USD a month,
/// AWS managed keys nothing; requests cost 0.03 USD per 10,000. The free tier is ignored.
pub const USD_PER_CUSTOMER_KEY_MONTH: f64 = 1.0;
pub const USD_PER_10K_REQUESTS: f64 = 0.03;

/// The key column for calls that name no key (CreateKey before it exists, ListKeys…).
pub const NO_KEY: &str = "-";

/// month (`YYYY-MM`) → key ARN (or `-`) → operation → requests.
pub type Counts = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageFile {
    pub format: u32,
    #[serde(default)]
    pub months: Counts,
}

struct Pending {
    counts: Counts,
    last_flush: Instant,
}

pub struct Meter {
    file: PathBuf,
    lock: PathBuf,
    pending: Mutex<Pending>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").field("file", &self.file).finish()
    }
}

impl Meter {
    /// A meter for the region `dir` (its usage file and lock).
    pub fn new(dir: &RegionDir) -> Meter {
        Meter {
            file: dir.usage_file(),
            lock: dir.usage_lock(),
            pending: Mutex::new(Pending {
                counts: Counts::new(),
                last_flush: Instant::now(),
            }),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.file.clone()
    }

    /// Counts one request; merges into the file at most once a second.
    pub fn record(&self, month: &str, key: &str, operation: &str) {
        let due = {
            let Ok(mut p) = self.pending.lock() else {
                return;
            };
            // The common case (a key and operation seen before) allocates nothing.
            match p
                .counts
                .get_mut(month)
                .and_then(|m| m.get_mut(key))
                .and_then(|k| k.get_mut(operation))
            {
                Some(n) => *n += 1,
                None => {
                    *p.counts
                        .entry(month.to_string())
                        .or_default()
                        .entry(key.to_string())
                        .or_default()
                        .entry(operation.to_string())
                        .or_default() += 1
                }
            }
            p.last_flush.elapsed() >= FLUSH_EVERY
        };
        if due && let Err(e) = self.flush() {
            tracing::warn!("metering: {e}");
        }
    }

    /// Merges the counts so far into the usage file.
    pub fn flush(&self) -> Result<()> {
        let taken = {
            let mut p = self.pending.lock().map_err(|_| AwsError::Unsupported {
                message: "metering lock poisoned; restart the process".into(),
            })?;
            p.last_flush = Instant::now();
            std::mem::take(&mut p.counts)
        };
        if taken.is_empty() {
            return Ok(());
        }
        let lock = self.lock.clone();
        let merged = FileLock::exclusive(&lock)
            .map_err(|e| AwsError::io("cannot lock", &lock, e))
            .and_then(|_l| {
                let mut file = self.load()?;
                add(&mut file.months, &taken);
                let path = self.path();
                let bytes = serde_json::to_vec_pretty(&file).expect("usage serialises");
                fsio::write_atomic(&path, &bytes, fsio::PRIVATE_FILE)
                    .map_err(|e| AwsError::io("cannot write", &path, e))
            });
        if merged.is_err() {
            // Keep the counts for the next try rather than lose them.
            if let Ok(mut p) = self.pending.lock() {
                add(&mut p.counts, &taken);
            }
        }
        merged
    }

    /// The persisted counts (without what is still pending in memory).
    pub fn load(&self) -> Result<UsageFile> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(b) => {
                if let Some(v) = crate::format_version::json_version(&b, "format")
                    && v > u64::from(FORMAT_V1)
                {
                    return Err(AwsError::NewerFormat {
                        what: format!("the usage file {}", path.display()),
                        found: v,
                        newest: FORMAT_V1.into(),
                    });
                }
                let f: UsageFile = serde_json::from_slice(&b).map_err(|e| AwsError::Corrupt {
                    path: path.clone(),
                    what: format!("not a cryptvol usage file: {e}"),
                })?;
                if f.format != FORMAT_V1 {
                    return Err(AwsError::Corrupt {
                        path,
                        what: format!("usage file format {} is unknown", f.format),
                    });
                }
                Ok(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UsageFile {
                format: FORMAT_V1,
                months: Counts::new(),
            }),
            Err(e) => Err(AwsError::io("cannot read", &path, e)),
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("metering: counts of this process were not saved: {e}");
        }
    }
}

fn add(into: &mut Counts, from: &Counts) {
    for (month, keys) in from {
        let m = into.entry(month.clone()).or_default();
        for (key, ops) in keys {
            let k = m.entry(key.clone()).or_default();
            for (op, n) in ops {
                *k.entry(op.clone()).or_default() += n;
            }
        }
    }
}

/// `YYYY-MM` (UTC) of a unix time (formatted once per second per thread: every KMS call
/// is metered).
pub fn month_of(t: i64) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.0 != t {
            *last = (
                t,
                jiff::Timestamp::from_second(t)
                    .map(|ts| ts.strftime("%Y-%m").to_string())
                    .unwrap_or_else(|_| "0000-00".into()),
            );
        }
        last.1.clone()
    })
}

/// The start and end (exclusive) of a `YYYY-MM` month in unix seconds.
pub fn month_bounds(month: &str) -> Result<(i64, i64)> {
    let bad = || {
        AwsError::validation(
            "--month",
            format!("'{month}' is not a month: use YYYY-MM, e.g. 2026-11"),
        )
    };
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y.to_string().len() != 4 || !(1..=12).contains(&m) {
        return Err(bad());
    }
    let start = days_from_civil(y as i64, m as i64) * 86_400;
    let end = if m == 12 {
        days_from_civil(y as i64 + 1, 1)
    } else {
        days_from_civil(y as i64, m as i64 + 1)
    } * 86_400;
    Ok((start, end))
}

/// Days since 1970-01-01 of the first day of a month (Howard Hinnant's civil algorithm).
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region directory that is `dir` itself (the meter's files directly in it).
    fn test_region(dir: &std::path::Path) -> RegionDir {
        RegionDir {
            data_dir: dir.to_path_buf(),
            region: crate::aws::Region::parse("local-1").unwrap(),
            path: dir.to_path_buf(),
        }
    }

    #[test]
    fn counts_merge_across_meters_and_survive_drop() {
        let d = tempfile::tempdir().unwrap();
        {
            let a = Meter::new(&test_region(d.path()));
            a.record("2026-11", "k1", "Decrypt");
            a.record("2026-11", "k1", "Decrypt");
            a.record("2026-12", "k2", "Encrypt");
        }
        let b = Meter::new(&test_region(d.path()));
        b.record("2026-11", "k1", "Decrypt");
        b.flush().unwrap();
        let f = b.load().unwrap();
        assert_eq!(f.months["2026-11"]["k1"]["Decrypt"], 3);
        assert_eq!(f.months["2026-12"]["k2"]["Encrypt"], 1);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(b.path()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn months_parse_and_bound() {
        let (s, e) = month_bounds("2026-02").unwrap();
        assert_eq!(e - s, 28 * 86_400);
        assert_eq!(month_of(s), "2026-02");
        assert_eq!(month_of(e), "2026-03");
        for bad in ["2026", "2026-13", "26-01", "x-y", "2026-00"] {
            assert!(
                matches!(
                    month_bounds(bad),
                    Err(AwsError::Validation { field, .. }) if field == "--month"
                ),
                "{bad}"
            );
        }
    }
}
