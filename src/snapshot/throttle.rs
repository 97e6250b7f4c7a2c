//! `--max-bandwidth` for long transfers (copies, archives): a worker about to move a
//! chunk ahead of the allowed pace sleeps until the pace catches up, over the whole run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Throttle {
    bytes_per_sec: Option<u64>,
    start: Instant,
    taken: AtomicU64,
}

impl Throttle {
    /// None (or 0): unlimited.
    pub fn new(bytes_per_sec: Option<u64>) -> Throttle {
        Throttle {
            bytes_per_sec: bytes_per_sec.filter(|r| *r > 0),
            start: Instant::now(),
            taken: AtomicU64::new(0),
        }
    }

    /// How long to wait before moving `n` more bytes (zero when within the pace).
    pub fn delay(&self, n: u64) -> Duration {
        let Some(rate) = self.bytes_per_sec else {
            return Duration::ZERO;
        };
        let before = self.taken.fetch_add(n, Ordering::AcqRel);
        let due = Duration::from_secs_f64(before as f64 / rate as f64);
        due.saturating_sub(self.start.elapsed())
    }

    /// Blocks until `n` more bytes may move.
    pub fn take(&self, n: u64) {
        let wait = self.delay(n);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}
