//! In-process KMS throughput: GenerateDataKey and Decrypt per second on one core.
//!
//! Run: `taskset -c 0 cargo bench --bench kms_ops` (bench/run-kms does this and prints
//! a markdown row for docs/benchmarks.md). Target: at least 100,000/s each.

use std::time::{Duration, Instant};

use cryptvol::iam::Caller;
use cryptvol::iam::Identity;
use cryptvol::kms::{CreateKeyRequest, DataKeySpec, EmbeddedKms, EncryptionContext, KeyRef};
use cryptvol::sys::clock::Clock;

fn measure(name: &str, min_time: Duration, mut op: impl FnMut()) -> f64 {
    // Warm up caches and the branch predictor.
    for _ in 0..2_000 {
        op();
    }
    let mut best = 0f64;
    // Three timed rounds; report the median.
    let mut rates = vec![];
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < min_time {
            for _ in 0..1_000 {
                op();
            }
            n += 1_000;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        rates.push(rate);
        best = best.max(rate);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = rates[1];
    println!("{name:<32} median {median:>10.0} ops/s   best {best:>10.0} ops/s");
    median
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let reg = cryptvol::aws::Region::parse("bench-1").unwrap();
    let out = cryptvol::kms::init::init(dir.path(), &reg, None, 0).expect("init");
    let mut no_pass = || unreachable!("key-file region");
    let kms = EmbeddedKms::open_region(dir.path(), &out.config.region, &mut no_pass, Clock::System)
        .expect("open");
    let caller = Caller::local(Identity::root(kms.account().clone()));
    let meta = kms
        .create_key(
            &caller,
            &CreateKeyRequest {
                description: "bench".into(),
                ..Default::default()
            },
        )
        .expect("create key");
    let key = KeyRef::parse(&meta.key_id).unwrap();
    let ctx = EncryptionContext::single("cryptvol:lineage", "vol-0123456789abcdef0");
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let t = Duration::from_secs_f64(secs);

    let gdk = measure("GenerateDataKey (64 B, context)", t, || {
        let r = kms
            .generate_data_key(&caller, &key, DataKeySpec::Bytes(64), &ctx)
            .unwrap();
        std::hint::black_box(r);
    });
    let blob = kms
        .generate_data_key(&caller, &key, DataKeySpec::Bytes(64), &ctx)
        .unwrap()
        .ciphertext_blob;
    let dec = measure("Decrypt (64 B, context)", t, || {
        let r = kms.decrypt(&caller, &blob, &ctx, None).unwrap();
        std::hint::black_box(r);
    });
    println!();
    println!("| GenerateDataKey ops/s | Decrypt ops/s |");
    println!("|--:|--:|");
    println!("| {gdk:.0} | {dec:.0} |");
}
