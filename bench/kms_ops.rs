//! In-process KMS throughput: GenerateDataKey and Decrypt per second on one core, on an
//! embedded key and, in the same run, on a key in a custom key store (AWS_CLOUDHSM) whose
//! material lives in a SoftHSM2 token made by the bench (bench/common/softhsm.rs).
//!
//! Run: `taskset -c 0 cargo bench --bench kms_ops` (bench/run does this and puts the
//! table's rows into docs/benchmarks.md). Target: at least 100,000/s each on the embedded
//! key; none for the token's key, whose figures are reported as measured.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/softhsm.rs"]
mod softhsm;

use std::process::Command;
use std::time::{Duration, Instant};

use cryptvol::iam::Caller;
use cryptvol::iam::Identity;
use cryptvol::kms::embedded::CreateCustomKeyStoreRequest;
use cryptvol::kms::model::StorePassword;
use cryptvol::kms::{CreateKeyRequest, DataKeySpec, EmbeddedKms, EncryptionContext, KeyRef};
use cryptvol::sys::clock::Clock;

/// Set in the process that measures: the URI of the bench's token (see `main`).
const TOKEN_ENV: &str = "CRYPTVOL_BENCH_TOKEN_URI";

fn measure(name: &str, min_time: Duration, mut op: impl FnMut()) -> f64 {
    // Warm up caches and the branch predictor.
    for _ in 0..2_000 {
        op();
    }
    let mut best = 0f64;
    // Three timed rounds; report the median (wall clock), and the median per CPU-second
    // of this thread (the time it waited for the core left out).
    let mut rates = vec![];
    let mut cpu_rates = vec![];
    for _ in 0..3 {
        let start = Instant::now();
        let cpu_start = machine::thread_cpu_ns();
        let mut n = 0u64;
        while start.elapsed() < min_time {
            for _ in 0..1_000 {
                op();
            }
            n += 1_000;
        }
        let rate = n as f64 / start.elapsed().as_secs_f64();
        let cpu = machine::thread_cpu_ns().saturating_sub(cpu_start);
        cpu_rates.push(n as f64 / (cpu.max(1) as f64 / 1e9));
        rates.push(rate);
        best = best.max(rate);
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    cpu_rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = rates[1];
    let per_cpu = cpu_rates[1];
    println!(
        "{name:<48} median {median:>10.0} ops/s   best {best:>10.0} ops/s   per CPU-s {per_cpu:>10.0}"
    );
    median
}

/// (GenerateDataKey ops/s, Decrypt ops/s) on `key`.
fn gdk_and_decrypt(
    kms: &EmbeddedKms,
    caller: &Caller,
    key: &KeyRef,
    what: &str,
    t: Duration,
) -> (f64, f64) {
    let ctx = EncryptionContext::single("cryptvol:lineage", "vol-0123456789abcdef0");
    let gdk = measure(
        &format!("GenerateDataKey (64 B, context), {what}"),
        t,
        || {
            let r = kms
                .generate_data_key(caller, key, DataKeySpec::Bytes(64), &ctx)
                .unwrap();
            std::hint::black_box(r);
        },
    );
    let blob = kms
        .generate_data_key(caller, key, DataKeySpec::Bytes(64), &ctx)
        .unwrap()
        .ciphertext_blob;
    let dec = measure(&format!("Decrypt (64 B, context), {what}"), t, || {
        let r = kms.decrypt(caller, &blob, &ctx, None).unwrap();
        std::hint::black_box(r);
    });
    (gdk, dec)
}

fn main() {
    // SoftHSM2 reads SOFTHSM2_CONF when a process first loads it, and changing this
    // process's environment would take `unsafe`: so the bench makes its token, then runs
    // itself again with SOFTHSM2_CONF naming it (the CPU affinity of `taskset` carries over).
    let Some(uri) = std::env::var(TOKEN_ENV).ok() else {
        let token = softhsm::BenchToken::make();
        let status = Command::new(std::env::current_exe().expect("the bench's own path"))
            .args(std::env::args_os().skip(1))
            .env("SOFTHSM2_CONF", &token.conf)
            .env(TOKEN_ENV, &token.uri)
            .status()
            .expect("run the bench with its token");
        drop(token);
        std::process::exit(status.code().unwrap_or(1));
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let reg = cryptvol::aws::Region::parse("bench-1").unwrap();
    let out = cryptvol::kms::init::init(dir.path(), &reg, None, 0).expect("init");
    let mut no_pass = || unreachable!("key-file region");
    let kms = EmbeddedKms::open_region(dir.path(), &out.config.region, &mut no_pass, Clock::System)
        .expect("open");
    let caller = Caller::local(Identity::root(kms.account().clone()));
    let create = |req: CreateKeyRequest| {
        let meta = kms.create_key(&caller, &req).expect("create key");
        KeyRef::parse(&meta.key_id).unwrap()
    };
    let key = create(CreateKeyRequest {
        description: "bench".into(),
        ..Default::default()
    });
    let store = kms
        .create_custom_key_store(
            &caller,
            &CreateCustomKeyStoreRequest {
                name: "bench".into(),
                cluster: Some(uri.clone()),
                password: Some(StorePassword::new(softhsm::USER_PIN.into())),
                ..Default::default()
            },
        )
        .expect("create the custom key store");
    kms.connect_custom_key_store(&caller, &store)
        .expect("connect the custom key store");
    let hsm_key = create(CreateKeyRequest {
        description: "bench, in the token".into(),
        origin: Some("AWS_CLOUDHSM".into()),
        custom_key_store_id: Some(store),
        ..Default::default()
    });
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let t = Duration::from_secs_f64(secs);
    let token = format!("{} token ({uri})", softhsm::version());
    println!(
        "CPU: {}; cores allowed: {}; median of 3 rounds of {secs} s after 2,000 calls of warm-up",
        machine::cpu(),
        machine::cores_allowed(),
    );
    println!(
        "load average before the run: {} (other busy processes lower every figure)",
        machine::load_average()
    );
    println!("custom key store: {token}");

    let (gdk, dec) = gdk_and_decrypt(&kms, &caller, &key, "embedded key", t);
    let (hsm_gdk, hsm_dec) = gdk_and_decrypt(&kms, &caller, &hsm_key, "key in the token", t);
    println!();
    println!("| key | GenerateDataKey ops/s | Decrypt ops/s |");
    println!("|---|--:|--:|");
    println!("| embedded | {gdk:.0} | {dec:.0} |");
    println!(
        "| custom key store ({}) | {hsm_gdk:.0} | {hsm_dec:.0} |",
        softhsm::version()
    );
}
