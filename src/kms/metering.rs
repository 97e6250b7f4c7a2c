//! Metering: how many requests each key served, per month and operation, and what that
//! would cost at AWS list prices (`cryptvol kms usage`).
//!
//! Counting happens in memory on the hot path (one atomic add on a counter the thread
//! keeps at hand: no lock, no allocation) and is merged into `<region>/usage.json`
//! under a lock once a second and when the KMS is dropped, so a KMS call costs no extra
//! file write. A crash loses at most the last second of counts; the audit trail still
//! has every call.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The counters of one meter: one atomic per (month, key, operation), made once under
/// the meter's lock, then counted into without it (each thread keeps the counters it
/// used last in [`SLOTS`]).
type Counters = HashMap<(String, String, String), Arc<AtomicU64>>;

/// Meters live in one process; a thread's cached counters name theirs by this number.
static NEXT_METER: AtomicU64 = AtomicU64::new(1);

/// How many counters a thread keeps at hand (a server thread serves a few keys and
/// operations at a time; a miss costs one lock).
const SLOTS_PER_THREAD: usize = 8;

/// A counter a thread used: its meter, month (as unix-second bounds), key, operation.
struct Slot {
    meter: u64,
    from: i64,
    until: i64,
    key: String,
    operation: String,
    count: Arc<AtomicU64>,
}

thread_local! {
    static SLOTS: std::cell::RefCell<Vec<Slot>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct Meter {
    id: u64,
    file: PathBuf,
    lock: PathBuf,
    counters: Mutex<Counters>,
    /// When the counts are next merged into the file: nanoseconds after `born`.
    next_flush: AtomicU64,
    born: Instant,
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
            id: NEXT_METER.fetch_add(1, Ordering::Relaxed),
            file: dir.usage_file(),
            lock: dir.usage_lock(),
            counters: Mutex::new(Counters::new()),
            next_flush: AtomicU64::new(FLUSH_EVERY.as_nanos() as u64),
            born: Instant::now(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.file.clone()
    }

    /// Counts one request in `month` (`YYYY-MM`); merges into the file at most once a
    /// second.
    pub fn record(&self, month: &str, key: &str, operation: &str) {
        match month_bounds(month) {
            Ok((from, _)) => self.record_at(from, key, operation),
            Err(_) => {
                // Not a month we can bound: counted through the lock.
                self.counter(month, key, operation)
                    .fetch_add(1, Ordering::Relaxed);
                self.flush_if_due();
            }
        }
    }

    /// Counts one request made at `t` (unix seconds): the hot path of every KMS call,
    /// one atomic add on a counter this thread has at hand (no lock, no allocation);
    /// merges into the file at most once a second.
    pub fn record_at(&self, t: i64, key: &str, operation: &str) {
        let counted = SLOTS.with(|slots| {
            let Ok(slots) = slots.try_borrow() else {
                return false;
            };
            let hit = slots.iter().find(|s| {
                s.meter == self.id
                    && s.from <= t
                    && t < s.until
                    && s.key == key
                    && s.operation == operation
            });
            hit.map(|s| s.count.fetch_add(1, Ordering::Relaxed))
                .is_some()
        });
        if !counted {
            let month = month_of(t);
            let count = self.counter(&month, key, operation);
            count.fetch_add(1, Ordering::Relaxed);
            if let Ok((from, until)) = month_bounds(&month) {
                SLOTS.with(|slots| {
                    if let Ok(mut slots) = slots.try_borrow_mut() {
                        if slots.len() >= SLOTS_PER_THREAD {
                            slots.remove(0);
                        }
                        slots.push(Slot {
                            meter: self.id,
                            from,
                            until,
                            key: key.to_string(),
                            operation: operation.to_string(),
                            count,
                        });
                    }
                });
            }
        }
        self.flush_if_due();
    }

    /// The counter of (month, key, operation), made if it is new.
    fn counter(&self, month: &str, key: &str, operation: &str) -> Arc<AtomicU64> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.entry((month.to_string(), key.to_string(), operation.to_string()))
            .or_default()
            .clone()
    }

    /// Merges into the file if a second has passed since the last merge (one thread
    /// does it; the others go on counting).
    fn flush_if_due(&self) {
        let now = self.born.elapsed().as_nanos() as u64;
        let due = self.next_flush.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now + FLUSH_EVERY.as_nanos() as u64;
        if self
            .next_flush
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && let Err(e) = self.flush()
        {
            tracing::warn!("metering: {e}");
        }
    }

    /// Takes the counts so far (each counter back to zero; counters nobody counts into
    /// any more are dropped).
    fn take(&self) -> Counts {
        let mut taken = Counts::new();
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|(month, key, op), count| {
            let n = count.swap(0, Ordering::Relaxed);
            if n > 0 {
                *taken
                    .entry(month.clone())
                    .or_default()
                    .entry(key.clone())
                    .or_default()
                    .entry(op.clone())
                    .or_default() += n;
            }
            // Held by a thread's slots (or counted into since the swap): keep it.
            n > 0 || Arc::strong_count(count) > 1
        });
        taken
    }

    /// Puts counts back (a merge that failed keeps them for the next try).
    fn give_back(&self, counts: &Counts) {
        for (month, keys) in counts {
            for (key, ops) in keys {
                for (op, n) in ops {
                    self.counter(month, key, op)
                        .fetch_add(*n, Ordering::Relaxed);
                }
            }
        }
    }

    /// Merges the counts so far into the usage file.
    pub fn flush(&self) -> Result<()> {
        let taken = self.take();
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
            self.give_back(&taken);
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
    fn threads_counting_at_once_lose_nothing_across_flushes_and_months() {
        let d = tempfile::tempdir().unwrap();
        let meter = Arc::new(Meter::new(&test_region(d.path())));
        let (nov, dec) = (
            month_bounds("2026-11").unwrap(),
            month_bounds("2026-12").unwrap(),
        );
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let meter = meter.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000i64 {
                        // The last second of November, then December.
                        let when = if i < 1_000 { nov.1 - 1 } else { dec.0 };
                        let key = if t % 2 == 0 { "k1" } else { "k2" };
                        meter.record_at(when, key, "Decrypt");
                        if i % 500 == 0 {
                            meter.flush().unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        meter.flush().unwrap();
        let f = meter.load().unwrap();
        for month in ["2026-11", "2026-12"] {
            for key in ["k1", "k2"] {
                assert_eq!(f.months[month][key]["Decrypt"], 2_000, "{month} {key}");
            }
        }
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
