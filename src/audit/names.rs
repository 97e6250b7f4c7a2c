//! File names in an audit directory (`YYYYMMDD-<first seq>.jsonl` and its
//! `.digest.json`), UTC day numbers, and listing the directory in chain order.
//! Names only: nothing here opens a file.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

pub(super) const LOG_SUFFIX: &str = ".jsonl";
pub(super) const DIGEST_SUFFIX: &str = ".digest.json";
pub(super) const LOCK_FILE: &str = ".lock";

const SECS_PER_DAY: i64 = 86_400;

/// The UTC day (days since 1970-01-01) that `now` (unix seconds) falls in.
pub(super) fn day_of(now: i64) -> i64 {
    now.div_euclid(SECS_PER_DAY)
}

/// The log file name for events from `first_seq` on, written on `day`; `None` if the day's
/// year does not fit in four digits.
pub(super) fn log_name(day: i64, first_seq: u64) -> Option<String> {
    let (y, m, d) = civil_from_days(day);
    (0..=9999)
        .contains(&y)
        .then(|| format!("{y:04}{m:02}{d:02}-{first_seq:012}{LOG_SUFFIX}"))
}

/// The digest (seal) file name of a log file name.
pub(super) fn digest_name(log_name: &str) -> String {
    let stem = log_name.strip_suffix(LOG_SUFFIX).unwrap_or(log_name);
    format!("{stem}{DIGEST_SUFFIX}")
}

/// The day and first seq a stem (`YYYYMMDD-NNNNNNNNNNNN`) names; `None` if it is not one.
fn parse_stem(stem: &str) -> Option<(i64, u64)> {
    let (date, seq) = stem.split_once('-')?;
    if date.len() != 8
        || seq.len() < 12
        || !(date.bytes().chain(seq.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let y: i64 = date[..4].parse().ok()?;
    let m: u32 = date[4..6].parse().ok()?;
    let d: u32 = date[6..].parse().ok()?;
    let day = days_from_civil(y, m, d);
    // A real date maps back to itself; 20261131 does not.
    (civil_from_days(day) == (y, m, d)).then_some(())?;
    Some((day, seq.parse().ok()?))
}

/// One stem found in the directory: its log file, its digest, or both.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// The log file's name (whether or not the file is present).
    pub log_name: String,
    pub day: i64,
    pub first_seq: u64,
    pub has_log: bool,
    pub has_digest: bool,
}

impl Entry {
    pub fn digest_name(&self) -> String {
        digest_name(&self.log_name)
    }
}

/// The directory's log and digest files, in order of first seq (then day). Other files (the
/// lock, temporary files of an interrupted atomic write) are ignored.
pub(super) fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut found: BTreeMap<(u64, i64), Entry> = BTreeMap::new();
    for dirent in std::fs::read_dir(dir)? {
        let name = dirent?.file_name();
        let Some(name) = name.to_str() else { continue };
        let (stem, is_log) = if let Some(s) = name.strip_suffix(DIGEST_SUFFIX) {
            (s, false)
        } else if let Some(s) = name.strip_suffix(LOG_SUFFIX) {
            (s, true)
        } else {
            continue;
        };
        let Some((day, first_seq)) = parse_stem(stem) else {
            continue;
        };
        let e = found.entry((first_seq, day)).or_insert_with(|| Entry {
            log_name: format!("{stem}{LOG_SUFFIX}"),
            day,
            first_seq,
            has_log: false,
            has_digest: false,
        });
        if is_log {
            e.has_log = true;
        } else {
            e.has_digest = true;
        }
    }
    Ok(found.into_values().collect())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_match_jiff() {
        for secs in [
            0i64,
            86_399,
            86_400,
            951_782_400,
            1_764_374_400,
            4_102_444_800,
        ] {
            // "YYYY-MM-DDThh:mm:ssZ"
            let text = jiff::Timestamp::from_second(secs).unwrap().to_string();
            let want = (
                text[..4].parse().unwrap(),
                text[5..7].parse().unwrap(),
                text[8..10].parse().unwrap(),
            );
            assert_eq!(civil_from_days(day_of(secs)), want, "{secs}");
            assert_eq!(days_from_civil(want.0, want.1, want.2), day_of(secs));
        }
    }

    #[test]
    fn names_round_trip() {
        // 2026-11-29
        let day = day_of(1_795_910_400);
        let name = log_name(day, 1).unwrap();
        assert_eq!(name, "20261129-000000000001.jsonl");
        assert_eq!(digest_name(&name), "20261129-000000000001.digest.json");
        assert_eq!(parse_stem("20261129-000000000001"), Some((day, 1)));
        assert_eq!(parse_stem("20261131-000000000001"), None);
        assert_eq!(parse_stem("2026113-000000000001"), None);
        assert_eq!(parse_stem("20261129-00001"), None);
        assert_eq!(log_name(day_of(-80_000_000_000), 1), None);
    }

    #[test]
    fn listing_pairs_logs_and_digests_in_seq_order() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "20261130-000000000041.jsonl",
            "20261129-000000000001.jsonl",
            "20261129-000000000001.digest.json",
            "20261129-000000000009.digest.json",
            ".lock",
            ".20261129-000000000009.digest.json.tmp-1-ab",
            "notes.txt",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        let l = list(d.path()).unwrap();
        let got: Vec<_> = l
            .iter()
            .map(|e| (e.first_seq, e.has_log, e.has_digest))
            .collect();
        assert_eq!(got, [(1, true, true), (9, false, true), (41, true, false)]);
    }
}
