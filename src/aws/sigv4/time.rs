//! The request's date: `x-amz-date` (or `Date`, or a presigned `X-Amz-Date`) in and out of
//! the ISO 8601 basic format, and the window of time a signature is good for.

use std::time::{SystemTime, UNIX_EPOCH};

use super::canonical::header_value;
use super::parse::Mode;
use super::{AuthError, MAX_CLOCK_SKEW_SECS, NO_DATE, incomplete, invalid, shorten};

/// `YYYYMMDDTHHMMSSZ`, the ISO 8601 basic format of `x-amz-date`.
const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The request's date from `x-amz-date`, else `Date`, which must be signed; in the basic
/// format, which is what the string to sign carries whatever the header's format.
pub(super) fn header_date(
    headers: &[(String, String)],
    is_signed: &dyn Fn(&str) -> bool,
) -> Result<String, AuthError> {
    let (name, value) = match header_value(headers, "x-amz-date") {
        Some(value) => ("x-amz-date", value),
        None => match header_value(headers, "date") {
            Some(value) => ("date", value),
            None => return Err(incomplete(NO_DATE)),
        },
    };
    if !is_signed(name) {
        return Err(incomplete(format!(
            "Header '{name}' must be signed: it is missing from SignedHeaders."
        )));
    }
    if name == "x-amz-date" {
        return Ok(value);
    }
    parse_http_date(&value).map(format_amz_date).ok_or_else(|| {
        incomplete(format!(
            "Date header must be an HTTP date or YYYYMMDD'T'HHMMSS'Z', got '{}'.",
            shorten(&value)
        ))
    })
}

/// The clock check: 5 minutes either way for a signed header; for a presigned request, not
/// in the future by more than that and not past `X-Amz-Expires`.
pub(super) fn check_time(
    amz_date: &str,
    signed_at: i64,
    now: i64,
    mode: &Mode,
    max_presigned_age: i64,
) -> Result<(), AuthError> {
    let future_limit = now.saturating_add(MAX_CLOCK_SKEW_SECS);
    if signed_at > future_limit {
        return Err(invalid(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format_amz_date(future_limit),
            format_amz_date(now)
        )));
    }
    match mode {
        Mode::Header => {
            let past_limit = now.saturating_sub(MAX_CLOCK_SKEW_SECS);
            if signed_at < past_limit {
                return Err(invalid(format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                    format_amz_date(past_limit),
                    format_amz_date(now)
                )));
            }
        }
        Mode::Query { expires, .. } => {
            if now > signed_at.saturating_add(*expires) {
                return Err(invalid(format!(
                    "Request has expired: signed at {amz_date} for {expires} seconds, now {}.",
                    format_amz_date(now)
                )));
            }
            let past_limit = now.saturating_sub(max_presigned_age);
            if signed_at < past_limit {
                return Err(invalid(format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - {} s): a \
                     presigned request lives at most {max_presigned_age} seconds here.",
                    format_amz_date(past_limit),
                    format_amz_date(now),
                    max_presigned_age
                )));
            }
        }
    }
    Ok(())
}

pub(super) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `YYYYMMDDTHHMMSSZ`; times outside years 1970–9999 are clamped to them.
pub(super) fn format_amz_date(unix: i64) -> String {
    let max = jiff::Timestamp::MAX.as_second();
    jiff::Timestamp::from_second(unix.clamp(0, max))
        .map(|t| t.strftime(AMZ_DATE_FORMAT).to_string())
        .unwrap_or_else(|_| "99991231T235959Z".to_owned())
}

/// `YYYYMMDDTHHMMSSZ` to unix seconds; `None` unless exactly that shape and a real time.
pub(super) fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        b.get(range)?.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let small = |v: i64| i8::try_from(v).ok();
    let datetime = jiff::civil::DateTime::new(
        i16::try_from(digits(0..4)?).ok()?,
        small(digits(4..6)?)?,
        small(digits(6..8)?)?,
        small(digits(9..11)?)?,
        small(digits(11..13)?)?,
        small(digits(13..15)?)?,
        0,
    )
    .ok()?;
    let zoned = datetime.to_zoned_datetime(jiff::tz::TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_second())
}

/// A `Date` header: the basic format, or an HTTP date (`Sun, 30 Aug 2015 12:36:00 GMT`).
pub(super) fn parse_http_date(text: &str) -> Option<i64> {
    parse_amz_date(text).or_else(|| {
        jiff::fmt::rfc2822::parse(text)
            .ok()
            .map(|z| z.timestamp().as_second())
    })
}
