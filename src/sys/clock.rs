//! Where the KMS gets the time. Rotation and deletion windows are days long, so tests move
//! the clock instead of waiting: in-process tests with `Clock::Skewed`, CLI tests with the
//! `CRYPTVOL_TEST_CLOCK_SKEW_SECS` variable, which debug builds honour and release builds
//! ignore (a release binary cannot be talked into deleting a key early).

/// Seconds since the Unix epoch, as every record of cryptvol stores time.
pub type UnixTime = i64;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    System,
    /// The system time moved by this many seconds.
    Skewed(i64),
}

pub const SKEW_ENV: &str = "CRYPTVOL_TEST_CLOCK_SKEW_SECS";

impl Clock {
    /// The system clock, skewed by `CRYPTVOL_TEST_CLOCK_SKEW_SECS` in debug builds.
    pub fn from_env() -> Clock {
        if cfg!(debug_assertions)
            && let Some(skew) = std::env::var(SKEW_ENV).ok().and_then(|s| s.parse().ok())
        {
            return Clock::Skewed(skew);
        }
        Clock::System
    }

    /// Nanoseconds since the Unix epoch: for ordering things made within one second.
    pub fn now_nanos(self) -> i64 {
        let sys = jiff::Timestamp::now().as_nanosecond() as i64;
        match self {
            Clock::System => sys,
            Clock::Skewed(s) => sys + s * 1_000_000_000,
        }
    }

    pub fn now(self) -> UnixTime {
        let sys = jiff::Timestamp::now().as_second();
        match self {
            Clock::System => sys,
            Clock::Skewed(s) => sys + s,
        }
    }
}

/// RFC 3339 in UTC, for messages.
pub fn format_time(t: UnixTime) -> String {
    jiff::Timestamp::from_second(t)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| t.to_string())
}
