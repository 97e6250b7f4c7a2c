//! Block MAC throughput of authenticated volumes on 4096-byte blocks, beside the XTS engine
//! the same blocks go through: POLYVAL-AES (every new slot record), POLYVAL alone on our
//! backend and on the `polyval` crate's, keyed BLAKE3 (older records), and our default XTS
//! engine, one block per call as the block path calls them.
//!
//! Run pinned to one core: `taskset -c 0 cargo bench --bench block_mac`. Three rounds per
//! contestant, in turn; each figure is the median. `BENCH_SECS` sets one round (default 1 s).

#[path = "common/machine.rs"]
mod machine;
#[path = "common/rounds.rs"]
mod rounds;

use std::hint::black_box;
use std::time::Duration;

use cryptvol::crypto::SecretBytes;
use cryptvol::crypto::polyval::Polyval;
use cryptvol::crypto::xts::{DATA_UNIT, Xts};
use cryptvol::volume::integrity::{IntegrityKeys, MacAlg};

/// 1 MiB: 256 blocks, as one FUSE request of the largest size.
const BUF: usize = 1 << 20;
const ROUNDS: usize = 3;

/// One contestant: what it does to a 1 MiB buffer of blocks, given the call's number.
type Op<'a> = Box<dyn FnMut(u64, &mut [u8]) + 'a>;

fn main() {
    let round = Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1.0),
    );
    println!(
        "cpu: {} | cores allowed: {} | load: {}",
        machine::cpu(),
        machine::cores_allowed(),
        machine::load_average()
    );
    let key = SecretBytes::new((0..64u8).collect());
    let keys = IntegrityKeys::from_data_key(&key);
    let xts = Xts::new(key.expose().try_into().expect("64 bytes")).expect("an XTS key");
    let keys = &keys;
    let mac = |alg: MacAlg| {
        move |call: u64, b: &mut [u8]| {
            for (i, block) in b.chunks_exact(DATA_UNIT).enumerate() {
                black_box(keys.block_mac(alg, 3, call * 256 + i as u64, call + 1, block));
            }
        }
    };
    let (ours, reference) = (Polyval::new(&[5; 16]), Polyval::with_crate(&[5; 16]));
    let ours_name = format!("POLYVAL alone, ours ({})", ours.backend_name());
    let polyval = |p: &'static Polyval| {
        move |_: u64, b: &mut [u8]| {
            for block in b.chunks_exact(DATA_UNIT) {
                black_box(p.hash(&[block]));
            }
        }
    };
    let (ours, reference): (&'static Polyval, &'static Polyval) =
        (Box::leak(Box::new(ours)), Box::leak(Box::new(reference)));
    let mut contestants: Vec<(&str, Op)> = vec![
        ("POLYVAL-AES block MAC", Box::new(mac(MacAlg::PolyvalAes))),
        (ours_name.as_str(), Box::new(polyval(ours))),
        (
            "POLYVAL alone, polyval crate 0.7",
            Box::new(polyval(reference)),
        ),
        ("keyed BLAKE3 block MAC", Box::new(mac(MacAlg::Blake3))),
        (
            "XTS encrypt (default engine), 1 block per call",
            Box::new(|call: u64, b: &mut [u8]| {
                for (i, unit) in b.chunks_exact_mut(DATA_UNIT).enumerate() {
                    xts.encrypt_units(call * 256 + i as u64, unit);
                }
            }),
        ),
    ];
    let mut buf: Vec<u8> = (0..BUF).map(|i| (i * 31 + 7) as u8).collect();
    let mut results = vec![vec![]; contestants.len()];
    for _ in 0..ROUNDS {
        for ((_, op), r) in contestants.iter_mut().zip(results.iter_mut()) {
            r.push(rounds::round_gbps(&mut buf, round, op.as_mut()));
        }
    }
    println!();
    println!("| 4 KiB blocks | GB/s (median of {ROUNDS}) |");
    println!("|---|--:|");
    for ((name, _), mut r) in contestants.iter().zip(results) {
        r.sort_by(f64::total_cmp);
        println!("| {name} | {:.2} |", r[r.len() / 2]);
    }
}
