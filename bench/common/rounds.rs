//! One time-based round of a throughput micro-benchmark, shared by bench/xts.rs and
//! bench/block_mac.rs.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// GB/s (10^9 bytes per second, as openssl's "1000s of bytes") of `op` over `buf` in one
/// round of `round`, after a warm-up of an eighth of it (caches and clocks settle). `op`
/// gets the number of the call (0 in the warm-up); the clock is read every 4 calls.
pub fn round_gbps(buf: &mut [u8], round: Duration, op: &mut dyn FnMut(u64, &mut [u8])) -> f64 {
    let warm = Instant::now();
    while warm.elapsed() < round / 8 {
        op(0, buf);
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < round {
        for _ in 0..4 {
            op(calls, black_box(&mut *buf));
            calls += 1;
        }
    }
    (calls as usize * buf.len()) as f64 / start.elapsed().as_secs_f64() / 1e9
}
