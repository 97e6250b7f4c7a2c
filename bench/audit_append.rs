//! Audit trail appends per second, in process, one thread: what every KMS call pays to be
//! recorded (flock, fstat, one `write(2)` of the line, the keyed BLAKE3 link).
//!
//! Run: `cargo bench --bench audit_append` (`BENCH_SECS=0.5` for a short run). Prints the
//! machine, then appends/s with the default 16 MiB files (rotation and seals included),
//! with one file (no rotation), through `append_encoded` (the KMS's path: the event
//! already serialized), and the cost of serializing the event alone. Each figure is the
//! median of three time-based rounds, each in a fresh directory (a round writes a few
//! hundred MB at most, removed after it).

#[path = "common/machine.rs"]
mod machine;

use std::path::Path;
use std::time::{Duration, Instant};

use cryptvol::audit::{AuditLog, ChainKeys, DEFAULT_MAX_FILE_BYTES};
use cryptvol::crypto::Key256;
use serde_json::{Value, json};

/// 2026-11-29T01:00:00Z: one day, so files rotate on size only.
const NOW: i64 = 1_795_910_400 + 3600;
const ROUNDS: usize = 3;

/// The filesystem type that holds `dir` (the topmost mount that contains it).
fn fs_of(dir: &Path) -> String {
    let mounts = cryptvol::sys::mountinfo::read().unwrap_or_default();
    mounts
        .iter()
        .filter(|m| dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .map(|m| format!("{} on {}", m.fs_type, m.source.to_string_lossy()))
        .unwrap_or_else(|| "?".into())
}

/// A Decrypt event shaped like the ones the KMS records (about 900 bytes of JSON).
fn event() -> Value {
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": "AIDAEXAMPLEPRINCIPAL1",
            "arn": "arn:aws:iam::111122223333:user/bench",
            "accountId": "111122223333",
            "accessKeyId": "AKIAEXAMPLEACCESSKEY",
            "userName": "bench"
        },
        "eventTime": "2026-11-29T01:00:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": "local-1",
        "sourceIPAddress": "127.0.0.1",
        "userAgent": "cryptvol/0.1.0",
        "requestParameters": {
            "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
            "encryptionContext": {"cryptvol:lineage": "vol-0123456789abcdef0"}
        },
        "responseElements": null,
        "requestID": "6f1c0d2e-8a4b-4c3d-9e2f-0123456789ab",
        "eventID": "0b1e6a7c-5d4f-4e3a-8b2c-9876543210fe",
        "readOnly": true,
        "resources": [{
            "accountId": "111122223333",
            "type": "AWS::KMS::Key",
            "ARN": "arn:aws:kms:local-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        }],
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management"
    })
}

/// Median ops/s of `ROUNDS` rounds of `round` long; `make` gives each round its state.
fn measure<S>(
    name: &str,
    round: Duration,
    mut make: impl FnMut() -> S,
    mut op: impl FnMut(&S),
) -> f64 {
    let mut rates = vec![];
    for _ in 0..ROUNDS {
        let state = make();
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < round {
            for _ in 0..1_000 {
                op(&state);
            }
            n += 1_000;
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(|a, b| a.partial_cmp(b).expect("finite rates"));
    let median = rates[ROUNDS / 2];
    println!(
        "{name:<40} median {median:>10.0}/s  ({:.2} µs each; rounds {})",
        1e6 / median,
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    median
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let round = Duration::from_secs_f64(secs);
    let e = event();
    let line = serde_json::to_vec(&e).expect("serialize");
    let tmp = std::env::temp_dir();
    println!(
        "CPU: {}; cores allowed: {}; kernel {}; temp dir {} ({})",
        machine::cpu(),
        machine::cores_allowed(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        tmp.display(),
        fs_of(&tmp)
    );
    println!(
        "load average before the run: {} (other busy processes lower every figure)",
        machine::load_average()
    );
    println!(
        "event of {} bytes of JSON; median of {ROUNDS} rounds of {secs} s; no fsync (as the KMS)",
        line.len()
    );

    // Each round's log lives in its own temp dir, removed when the round's state drops.
    let log = |max: u64| {
        move || {
            let d = tempfile::tempdir().expect("temp dir");
            let log = AuditLog::new(
                d.path().join("audit"),
                ChainKeys::single(Key256::from_bytes([0x42; 32])),
            )
            .with_max_file_bytes(max);
            (d, log)
        }
    };
    let rotating = measure(
        "append, 16 MiB files (rotation, seals)",
        round,
        log(DEFAULT_MAX_FILE_BYTES),
        |(_, l)| {
            l.append(&e, NOW).expect("append");
        },
    );
    let one = measure("append, one file", round, log(u64::MAX), |(_, l)| {
        l.append(&e, NOW).expect("append");
    });
    let encoded = measure(
        "append_encoded, 16 MiB files",
        round,
        log(DEFAULT_MAX_FILE_BYTES),
        |(_, l)| {
            l.append_encoded(line.clone(), NOW).expect("append");
        },
    );
    let ser = measure(
        "serialize the event only",
        round,
        || (),
        |()| {
            std::hint::black_box(serde_json::to_vec(&e).expect("serialize"));
        },
    );
    println!();
    println!(
        "| append, 16 MiB files /s | append, one file /s | append_encoded /s | serialize only /s |"
    );
    println!("|--:|--:|--:|--:|");
    println!("| {rotating:.0} | {one:.0} | {encoded:.0} | {ser:.0} |");
}
