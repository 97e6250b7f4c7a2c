//! When a secret's next rotation is due, from its RotationRules as AWS takes them:
//! `AutomaticallyAfterDays` (1 to 1000), or a `ScheduleExpression` `rate(N days)` (1 to
//! 1000), `rate(N hours)` (4 to 23), or `cron(minutes hours day-of-month month
//! day-of-week year)` in UTC with `*`, `?`, numbers, `a-b`, `a,b`, `x/step`, and the
//! names JAN..DEC and SUN..SAT (day-of-week 1 = Sunday); `?` in exactly one of the day
//! fields; no two rotations less than four hours apart. `L`, `W` and `#` are refused.
//! Also the RotationRules of a request (`Duration`: `Nh`, 1 to 24).

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

use super::errors::{invalid_parameter, validation};
use super::model::RotationRules;
use super::request::Request;
use crate::aws::AwsError;
use crate::kms::model::DAY;

/// Checks `rules` and says when the rotation after one at `from` is due.
pub fn next_due(rules: &RotationRules, from: i64) -> Result<Option<i64>, AwsError> {
    match (
        rules.automatically_after_days,
        rules.schedule_expression.as_deref(),
    ) {
        (Some(_), Some(_)) => Err(invalid_parameter(
            "give either AutomaticallyAfterDays or ScheduleExpression in RotationRules, not both",
        )),
        (Some(days), None) => {
            if !(1..=1000).contains(&days) {
                return Err(validation(
                    "RotationRules.AutomaticallyAfterDays",
                    format!("must be between 1 and 1000, not {days}"),
                ));
            }
            Ok(Some(from + days as i64 * DAY))
        }
        (None, Some(expr)) => expression_next(expr, from).map(Some),
        (None, None) => Ok(None),
    }
}

fn expression_next(expr: &str, from: i64) -> Result<i64, AwsError> {
    let bad = |why: &str| {
        validation(
            "RotationRules.ScheduleExpression",
            format!("'{expr}': {why}"),
        )
    };
    if let Some(inner) = expr.strip_prefix("rate(").and_then(|s| s.strip_suffix(')')) {
        let (n, unit) = inner
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("use rate(N days) or rate(N hours)"))?;
        let n: i64 = n.parse().map_err(|_| bad("N must be a whole number"))?;
        return match unit.trim() {
            "day" | "days" if (1..=1000).contains(&n) => Ok(from + n * DAY),
            "hour" | "hours" if (4..=23).contains(&n) => Ok(from + n * 3600),
            "day" | "days" => Err(bad("days must be 1 to 1000")),
            "hour" | "hours" => Err(bad("hours must be 4 to 23")),
            _ => Err(bad("the unit is days or hours")),
        };
    }
    if let Some(inner) = expr.strip_prefix("cron(").and_then(|s| s.strip_suffix(')')) {
        let cron = Cron::parse(inner).map_err(|e| bad(&e))?;
        let next = cron
            .next_after(from)
            .ok_or_else(|| bad("it names no time in the next five years"))?;
        // AWS rotates a secret at most every four hours.
        let mut t = next;
        for _ in 0..48 {
            match cron.next_after(t) {
                Some(n) if n - t < 4 * 3600 => {
                    return Err(bad("it rotates more often than every four hours"));
                }
                Some(n) => t = n,
                None => break,
            }
        }
        return Ok(next);
    }
    Err(bad("use rate(...) or cron(...)"))
}

/// One cron field: the allowed values, or any.
#[derive(Debug)]
struct Field(Option<Vec<u32>>);

impl Field {
    fn matches(&self, v: u32) -> bool {
        self.0.as_ref().is_none_or(|set| set.contains(&v))
    }
}

#[derive(Debug)]
struct Cron {
    minutes: Field,
    hours: Field,
    day_of_month: Field,
    month: Field,
    day_of_week: Field,
    year: Field,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<Field, String> {
    if text == "*" || text == "?" {
        return Ok(Field(None));
    }
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(min + i as u32);
        }
        let v: u32 = s.parse().map_err(|_| {
            format!(
                "{name} field '{s}' is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })?;
        if v < min || v > max {
            return Err(format!("{name} {v} is outside {min}..{max}"));
        }
        Ok(v)
    };
    let mut set = Vec::new();
    for part in text.split(',') {
        let special = part.split(['-', '/']).any(|atom| {
            atom.contains(['L', 'W', '#', 'l', 'w'])
                && !names.iter().any(|n| n.eq_ignore_ascii_case(atom))
        });
        if special || part.contains('#') {
            return Err(format!("'{part}': L, W and # are not supported"));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("step '{s}' is not a number"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (value(a)?, value(b)?),
                None if part.contains('/') => (value(r)?, max),
                None => (value(r)?, value(r)?),
            },
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is empty"));
        }
        set.extend((lo..=hi).step_by(step as usize));
    }
    set.sort_unstable();
    set.dedup();
    Ok(Field(Some(set)))
}

impl Cron {
    fn parse(text: &str) -> Result<Cron, String> {
        let f: Vec<&str> = text.split_whitespace().collect();
        if f.len() != 6 {
            return Err(
                "cron() takes six fields: minutes hours day-of-month month day-of-week year".into(),
            );
        }
        if (f[2] == "?") == (f[4] == "?") {
            return Err("give ? in exactly one of day-of-month and day-of-week".into());
        }
        Ok(Cron {
            minutes: field(f[0], "minutes", 0, 59, &[])?,
            hours: field(f[1], "hours", 0, 23, &[])?,
            day_of_month: field(f[2], "day-of-month", 1, 31, &[])?,
            month: field(f[3], "month", 1, 12, MONTHS)?,
            day_of_week: field(f[4], "day-of-week", 1, 7, DAYS)?,
            year: field(f[5], "year", 1970, 2199, &[])?,
        })
    }

    /// The first minute strictly after `from` that the expression names, within 5 years.
    fn next_after(&self, from: i64) -> Option<i64> {
        let first_day = from.div_euclid(DAY);
        for day in first_day..first_day + 5 * 366 {
            let start = day * DAY;
            let date = TimeZone::UTC.to_datetime(Timestamp::from_second(start).ok()?);
            let dow = date.weekday().to_sunday_one_offset() as u32;
            if !(self.year.matches(date.year() as u32)
                && self.month.matches(date.month() as u32)
                && self.day_of_month.matches(date.day() as u32)
                && self.day_of_week.matches(dow))
            {
                continue;
            }
            for h in 0..24 {
                if !self.hours.matches(h) {
                    continue;
                }
                for m in 0..60 {
                    let t = start + h as i64 * 3600 + m as i64 * 60;
                    if t > from && self.minutes.matches(m) {
                        return Some(t);
                    }
                }
            }
        }
        None
    }
}

/// The `RotationRules` of a request, checked against the schedule from `now`.
pub fn rules_of(r: &Request, now: i64) -> Result<Option<RotationRules>, AwsError> {
    let Some(v) = r.get("RotationRules") else {
        return Ok(None);
    };
    let o = v
        .as_object()
        .ok_or_else(|| validation("RotationRules", "must be an object"))?;
    for k in o.keys() {
        if !["AutomaticallyAfterDays", "Duration", "ScheduleExpression"].contains(&k.as_str()) {
            return Err(validation("RotationRules", format!("unknown member {k}")));
        }
    }
    let days = match o.get("AutomaticallyAfterDays") {
        None | Some(Value::Null) => None,
        Some(d) => Some(
            d.as_u64()
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| {
                    validation(
                        "RotationRules.AutomaticallyAfterDays",
                        "must be a whole number",
                    )
                })?,
        ),
    };
    let text = |k: &str| -> Result<Option<String>, AwsError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(validation(
                &format!("RotationRules.{k}"),
                "must be a string",
            )),
        }
    };
    let rules = RotationRules {
        automatically_after_days: days,
        duration: text("Duration")?,
        schedule_expression: text("ScheduleExpression")?,
    };
    if let Some(d) = &rules.duration {
        check_duration(d, &rules, now)?;
    }
    next_due(&rules, now)?;
    Ok(Some(rules))
}

/// A rotation window, `Nh` with N from 1 to 24 (AWS's form), no longer than the time
/// between two rotations of the schedule (which `next_due` gives, for any expression).
fn check_duration(d: &str, rules: &RotationRules, now: i64) -> Result<(), AwsError> {
    let hours = d
        .strip_suffix('h')
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| (1..=24).contains(n))
        .ok_or_else(|| {
            validation(
                "RotationRules.Duration",
                format!("'{d}' must be a number of hours from 1 to 24 followed by h, e.g. 3h"),
            )
        })?;
    let first = next_due(rules, now)?;
    let second = first.map(|t| next_due(rules, t)).transpose()?.flatten();
    if let (Some(a), Some(b)) = (first, second)
        && hours * 3600 > b - a
    {
        return Err(validation(
            "RotationRules.Duration",
            format!(
                "a window of {hours} h would run into the next rotation, {} h later",
                (b - a) / 3600
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(expr: &str) -> RotationRules {
        RotationRules {
            schedule_expression: Some(expr.into()),
            ..Default::default()
        }
    }

    // 2026-12-03T13:37:00Z, a Thursday.
    const NOW: i64 = 1_796_305_020;

    #[test]
    fn days_and_rates_add_their_period() {
        let r = RotationRules {
            automatically_after_days: Some(30),
            ..Default::default()
        };
        assert_eq!(next_due(&r, NOW).unwrap(), Some(NOW + 30 * DAY));
        assert_eq!(
            next_due(&rules("rate(10 days)"), NOW).unwrap(),
            Some(NOW + 10 * DAY)
        );
        assert_eq!(
            next_due(&rules("rate(4 hours)"), NOW).unwrap(),
            Some(NOW + 4 * 3600)
        );
        assert!(next_due(&rules("rate(2 hours)"), NOW).is_err());
        assert!(next_due(&rules("rate(0 days)"), NOW).is_err());
    }

    #[test]
    fn cron_finds_the_next_named_minute() {
        let t = TimeZone::UTC.to_datetime(Timestamp::from_second(NOW).unwrap());
        assert_eq!((t.year(), t.month(), t.day(), t.hour()), (2026, 12, 3, 13));
        // Every day at 16:00 → today 16:00.
        let day = NOW - NOW.rem_euclid(DAY);
        assert_eq!(
            next_due(&rules("cron(0 16 * * ? *)"), NOW).unwrap(),
            Some(day + 16 * 3600)
        );
        // At 10:00 → tomorrow.
        assert_eq!(
            next_due(&rules("cron(0 10 * * ? *)"), NOW).unwrap(),
            Some(day + DAY + 10 * 3600)
        );
        // Sundays (1) at 00:00 → 2026-12-06.
        assert_eq!(
            next_due(&rules("cron(0 0 ? * SUN *)"), NOW).unwrap(),
            Some(day + 3 * DAY)
        );
        assert_eq!(
            next_due(&rules("cron(0 0 ? * 1 *)"), NOW).unwrap(),
            Some(day + 3 * DAY)
        );
        // The first of each month at 08:30 → 2027-01-01.
        let jan1 = Timestamp::from_second(day + 29 * DAY + 8 * 3600 + 1800).unwrap();
        assert_eq!(
            next_due(&rules("cron(30 8 1 * ? *)"), NOW).unwrap(),
            Some(jan1.as_second())
        );
        // Every 4 hours from 02:30 → 14:30; every 15 minutes is too often.
        assert_eq!(
            next_due(&rules("cron(30 2/4 * * ? *)"), NOW).unwrap(),
            Some(day + 14 * 3600 + 30 * 60)
        );
        assert!(next_due(&rules("cron(0/15 * * * ? *)"), NOW).is_err());
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for bad in [
            "cron(0 16 * * ?)",
            "cron(0 25 * * ? *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 ? * 2#1 *)",
            "cron(0 0 1 1 ? 1999)",
            "rate(5 weeks)",
            "every day",
        ] {
            let e = next_due(&rules(bad), NOW).unwrap_err();
            assert_eq!(e.aws_code(), "InvalidParameterException", "{bad}");
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        let both = RotationRules {
            automatically_after_days: Some(1),
            schedule_expression: Some("rate(1 days)".into()),
            duration: None,
        };
        assert!(next_due(&both, NOW).is_err());
    }
}
