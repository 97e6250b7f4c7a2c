//! Request quotas, as AWS KMS applies them: the cryptographic operations of an account in
//! a region share one quota (AWS's default is 5,500 to 100,000 requests per second by
//! region); each management operation has its own. Here the quotas are per access key and
//! region, and a request over quota gets AWS's `ThrottlingException` ("Rate exceeded").
//!
//! Each quota is a token bucket holding one second of requests, kept as GCRA (the
//! "theoretical arrival time" of the next request in one atomic word): a check is one
//! compare-and-swap, without a lock. The buckets sit in a map sharded by hash behind
//! read-write locks, taken for writing only when an access key first uses an operation
//! class in a region. Buckets are made only for verified access keys, initialized regions
//! and known operations, so the map stays as small as iam.json.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// AWS's cryptographic operations: they share one quota.
pub const CRYPTOGRAPHIC_OPERATIONS: &[&str] = &[
    "Decrypt",
    "DeriveSharedSecret",
    "Encrypt",
    "GenerateDataKey",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateMac",
    "GenerateRandom",
    "ReEncrypt",
    "Sign",
    "Verify",
    "VerifyMac",
];

/// Operations with a quota of their own at the cryptographic rate rather than the
/// management one: reading a secret's value is a data-plane call, as a Decrypt (AWS's
/// GetSecretValue quota is thousands per second too). Named by their quota class
/// (`secrets::rate_class`).
pub const READ_OPERATIONS: &[&str] = &["secretsmanager.GetSecretValue"];

/// AWS's message for every throttled request.
pub const RATE_EXCEEDED: &str = "Rate exceeded";

/// One token bucket (GCRA): `rate` requests per second, bursts of up to `rate`.
pub struct Bucket {
    /// Nanoseconds after the limiter's start at which the bucket is full again.
    tat: AtomicU64,
    interval: u64,
    tolerance: u64,
}

impl Bucket {
    pub fn new(rate_per_sec: u32) -> Bucket {
        let interval = 1_000_000_000 / u64::from(rate_per_sec.max(1));
        Bucket {
            tat: AtomicU64::new(0),
            interval: interval.max(1),
            tolerance: interval.max(1) * u64::from(rate_per_sec.max(1) - 1),
        }
    }

    /// Takes a token at `now` (ns); false when the bucket is empty.
    pub fn take(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance {
                return false;
            }
            match self.tat.compare_exchange_weak(
                tat,
                start + self.interval,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

const SHARDS: usize = 16;

pub struct RateLimiter {
    crypto_rate: u32,
    management_rate: u32,
    start: Instant,
    hasher: RandomState,
    shards: [RwLock<HashMap<String, Arc<Bucket>>>; SHARDS],
}

impl RateLimiter {
    pub fn new(crypto_rate: u32, management_rate: u32) -> RateLimiter {
        RateLimiter {
            crypto_rate,
            management_rate,
            start: Instant::now(),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| RwLock::new(HashMap::new())),
        }
    }

    /// Nanoseconds since the limiter started (the buckets' clock).
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Counts one request of `operation` (a KMS operation, or another service's quota
    /// class such as `secretsmanager.GetSecretValue`) by `access_key_id` in `region`;
    /// false: throttle it.
    pub fn allow(&self, access_key_id: &str, region: &str, operation: &str) -> bool {
        let crypto = CRYPTOGRAPHIC_OPERATIONS.contains(&operation);
        let class = if crypto { "crypto" } else { operation };
        let key = format!("{access_key_id}\n{region}\n{class}");
        let shard = &self.shards[(self.hasher.hash_one(&key) as usize) % SHARDS];
        let now = self.now();
        if let Ok(map) = shard.read()
            && let Some(b) = map.get(&key)
        {
            return b.take(now);
        }
        let rate = if crypto || READ_OPERATIONS.contains(&operation) {
            self.crypto_rate
        } else {
            self.management_rate
        };
        // A poisoned shard only means a panic elsewhere while inserting; the map is whole.
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        map.entry(key)
            .or_insert_with(|| Arc::new(Bucket::new(rate)))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills() {
        let b = Bucket::new(3);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        // A third of a second later, one more.
        assert!(b.take(333_333_334));
        assert!(!b.take(333_333_334));
        // Idle for long: a full burst again, never more.
        let later = 10_000_000_000;
        assert!(b.take(later) && b.take(later) && b.take(later));
        assert!(!b.take(later));
    }

    #[test]
    fn cryptographic_operations_share_a_quota_and_keys_do_not() {
        let l = RateLimiter::new(2, 1);
        assert!(l.allow("AKIA1", "r-1", "Encrypt"));
        assert!(l.allow("AKIA1", "r-1", "Decrypt"));
        assert!(!l.allow("AKIA1", "r-1", "GenerateDataKey"));
        // Another key, another region: their own quotas.
        assert!(l.allow("AKIA2", "r-1", "Decrypt"));
        assert!(l.allow("AKIA1", "r-2", "Decrypt"));
        // Management operations: one quota each.
        assert!(l.allow("AKIA1", "r-1", "ListKeys"));
        assert!(!l.allow("AKIA1", "r-1", "ListKeys"));
        assert!(l.allow("AKIA1", "r-1", "DescribeKey"));
        // Secrets Manager's: their own quotas, apart from KMS's of the same name; reading a
        // value at the cryptographic rate, without taking from KMS's cryptographic quota.
        assert!(l.allow("AKIA1", "r-1", "TagResource"));
        assert!(!l.allow("AKIA1", "r-1", "TagResource"));
        assert!(l.allow("AKIA1", "r-1", "secretsmanager.TagResource"));
        assert!(!l.allow("AKIA1", "r-1", "secretsmanager.TagResource"));
        assert!(l.allow("AKIA1", "r-1", "secretsmanager.GetSecretValue"));
        assert!(l.allow("AKIA1", "r-1", "secretsmanager.GetSecretValue"));
        assert!(!l.allow("AKIA1", "r-1", "secretsmanager.GetSecretValue"));
        assert!(!l.allow("AKIA1", "r-1", "Decrypt"));
    }
}
