//! AES-256-XTS throughput on 4096-byte data units, side by side with peers in the same run:
//! our engine (the backend `Xts::new` picks, and every other backend this CPU can run), the
//! plain `xts-mode` crate, and `openssl speed -evp aes-256-xts -bytes 4096`.
//!
//! Run pinned to one core, so openssl (a child process) inherits the same core:
//! `taskset -c 0 cargo bench --bench xts`. All contestants run in turn, three rounds, and each
//! figure is the median of its rounds. `BENCH_SECS` sets one timed round of our engines and
//! xts-mode (default 1 s); `OPENSSL_SECS` one openssl run per direction (default 3 s).
//! Requirement: the portable build reaches at least 0.9x openssl.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/rounds.rs"]
mod rounds;

use std::process::Command;
use std::time::Duration;

use aes::Aes256;
use aes::cipher::{Array, KeyInit};
use cryptvol::crypto::xts::{DATA_UNIT, Xts, XtsBackend};
use xts_mode::{Xts128, get_tweak_default};

/// 1 MiB = 256 units per call, as one FUSE request of the largest size.
const BUF: usize = 1 << 20;

/// Timed rounds per contestant; figures are medians.
const ROUNDS: usize = 3;

fn secs(var: &str, default: f64) -> f64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `openssl speed` for one direction: GB/s from its 4096-byte column (in 1000s of bytes/s).
fn openssl(decrypt: bool, seconds: u32) -> Result<f64, String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["speed", "-evp", "aes-256-xts", "-bytes", "4096", "-seconds"])
        .arg(seconds.to_string());
    if decrypt {
        cmd.arg("-decrypt");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if !out.status.success() {
        return Err(format!("openssl speed failed: {}", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("AES-256-XTS"))
        .ok_or("no AES-256-XTS line in openssl speed output")?;
    let field = line.split_whitespace().last().unwrap_or_default();
    let kb: f64 = field
        .trim_end_matches('k')
        .parse()
        .map_err(|_| format!("unexpected openssl speed field {field:?}"))?;
    Ok(kb * 1000.0 / 1e9)
}

fn main() {
    let round = Duration::from_secs_f64(secs("BENCH_SECS", 1.0));
    let openssl_secs = secs("OPENSSL_SECS", 3.0).max(1.0) as u32;

    let mut key = [0u8; 64];
    for (i, b) in key.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(1);
    }
    let best = Xts::new(&key).expect("valid key");

    println!(
        "CPU: {}; cores allowed: {}; buffer {} KiB = {} units of {DATA_UNIT} B; \
         median of {ROUNDS} interleaved rounds of {:.1} s",
        machine::cpu(),
        machine::cores_allowed(),
        BUF / 1024,
        BUF / DATA_UNIT,
        round.as_secs_f64()
    );
    println!(
        "load average before the run: {} (other busy processes skew every column)",
        machine::load_average()
    );
    println!("cryptvol picks backend: {}", best.backend());

    // Every contestant runs once per round, round-robin, so load from other processes on the
    // machine hits all of them alike; each figure is the median of ROUNDS rounds.
    type Op<'a> = Box<dyn FnMut(u64, &mut [u8]) + 'a>;
    let engines: Vec<Xts> = XtsBackend::ALL
        .into_iter()
        .filter_map(|b| Xts::with_backend(&key, b).ok())
        .collect();
    for b in XtsBackend::ALL.into_iter().filter(|b| !b.is_available()) {
        println!("(backend {b} not available on this CPU)");
    }
    let k1: [u8; 32] = key[..32].try_into().expect("32 bytes");
    let k2: [u8; 32] = key[32..].try_into().expect("32 bytes");
    let reference = Xts128::<Aes256>::new(Aes256::new(&Array(k1)), Aes256::new(&Array(k2)));

    let mut contestants: Vec<(String, Op<'_>, Op<'_>)> = Vec::new();
    for xts in &engines {
        let backend = xts.backend();
        let label = if backend == best.backend() {
            format!("cryptvol {backend} (default)")
        } else {
            format!("cryptvol {backend}")
        };
        contestants.push((
            label,
            Box::new(move |u, b| xts.encrypt_units(u, b)),
            Box::new(move |u, b| xts.decrypt_units(u, b)),
        ));
    }
    // The volume layer's random 4 KiB I/O: one unit per call, so per-call setup shows.
    let default_engine = engines
        .iter()
        .find(|x| x.backend() == best.backend())
        .expect("the default backend is available");
    contestants.push((
        format!(
            "cryptvol {} (default), 1 unit per call",
            default_engine.backend()
        ),
        Box::new(move |u, b| {
            for (j, unit) in (u..).zip(b.chunks_exact_mut(DATA_UNIT)) {
                default_engine.encrypt_units(j, unit);
            }
        }),
        Box::new(move |u, b| {
            for (j, unit) in (u..).zip(b.chunks_exact_mut(DATA_UNIT)) {
                default_engine.decrypt_units(j, unit);
            }
        }),
    ));
    let r = &reference;
    contestants.push((
        "xts-mode 0.6 (Xts128<Aes256>)".into(),
        Box::new(move |u, b| r.encrypt_area(b, DATA_UNIT, u.into(), get_tweak_default)),
        Box::new(move |u, b| r.decrypt_area(b, DATA_UNIT, u.into(), get_tweak_default)),
    ));

    let mut buf = vec![0u8; BUF];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (i * 31 + 7) as u8;
    }
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(vec![], vec![]); contestants.len()];
    let mut ossl_results: (Vec<f64>, Vec<f64>) = (vec![], vec![]);
    let mut ossl_error = None;
    for _ in 0..ROUNDS {
        for ((_, enc, dec), (re, rd)) in contestants.iter_mut().zip(results.iter_mut()) {
            // Each call's first unit number: a fresh 1 MiB of units, past 2^32 so that
            // the tweak's high bytes are not all zero.
            let units = (buf.len() / DATA_UNIT) as u64;
            re.push(rounds::round_gbps(&mut buf, round, &mut |c, b| {
                enc(c * units + (1 << 33), b)
            }));
            rd.push(rounds::round_gbps(&mut buf, round, &mut |c, b| {
                dec(c * units + (1 << 33), b)
            }));
        }
        if ossl_error.is_none() {
            match (openssl(false, openssl_secs), openssl(true, openssl_secs)) {
                (Ok(e), Ok(d)) => {
                    ossl_results.0.push(e);
                    ossl_results.1.push(d);
                }
                (Err(e), _) | (_, Err(e)) => ossl_error = Some(e),
            }
        }
    }

    let mut rows: Vec<(String, f64, f64)> = contestants
        .iter()
        .zip(results)
        .map(|((name, ..), (e, d))| (name.clone(), median(e), median(d)))
        .collect();
    let ossl = match ossl_error {
        None => {
            let (e, d) = (median(ossl_results.0), median(ossl_results.1));
            rows.push((
                format!("openssl speed -evp aes-256-xts -bytes 4096 -seconds {openssl_secs}"),
                e,
                d,
            ));
            Some((e, d))
        }
        Some(e) => {
            println!("note: openssl column skipped: {e}");
            None
        }
    };

    println!();
    println!("| engine | encrypt GB/s | decrypt GB/s | enc / openssl | dec / openssl |");
    println!("|---|--:|--:|--:|--:|");
    for (name, enc, dec) in &rows {
        let (re, rd) = match ossl {
            Some((oe, od)) => (format!("{:.2}x", enc / oe), format!("{:.2}x", dec / od)),
            None => ("n/a".into(), "n/a".into()),
        };
        println!("| {name} | {enc:.2} | {dec:.2} | {re} | {rd} |");
    }
    if let Some((oe, od)) = ossl {
        let (_, enc, dec) = rows
            .iter()
            .find(|(n, ..)| n.ends_with("(default)"))
            .expect("default backend row");
        let worst = (enc / oe).min(dec / od);
        println!();
        println!(
            "default backend vs openssl: {worst:.2}x (requirement >= 0.90x: {})",
            if worst >= 0.9 { "met" } else { "NOT met" }
        );
        println!(
            "(openssl divides by CPU user time, cryptvol and xts-mode by wall-clock time; \
             the difference favours openssl slightly)"
        );
    }
}
