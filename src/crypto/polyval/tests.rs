use super::Polyval;

fn hex16(s: &str) -> [u8; 16] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// RFC 8452, Appendix A: POLYVAL(H, X_1, X_2).
#[test]
fn rfc8452_appendix_a_vector() {
    let h = hex16("25629347589242761d31f826ba4b757b");
    let x =
        hex::decode("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362").unwrap();
    let want = hex16("f7a3b47b846119fae5b7866cf5e5b77e");
    for p in [Polyval::new(&h), Polyval::with_crate(&h)] {
        assert_eq!(p.hash(&[&x]), want, "{}", p.backend_name());
        // The same input split differently gives the same hash.
        assert_eq!(p.hash(&[&x[..16], &x[16..]]), want, "{}", p.backend_name());
    }
}

/// RFC 8452, Appendix C.1, the second AES-128-GCM-SIV vector: H is its record
/// authentication key, the input the 8-byte plaintext padded to a block and then the
/// length block (no AAD, 64 bits of plaintext).
#[test]
fn rfc8452_gcm_siv_polyval_vector() {
    let h = hex16("d9b360279694941ac5dbc6987ada7377");
    let input =
        hex::decode("0100000000000000000000000000000000000000000000004000000000000000").unwrap();
    let want = hex16("eb93b7740962c5e49d2a90a7dc5cec74");
    for p in [Polyval::new(&h), Polyval::with_crate(&h)] {
        assert_eq!(p.hash(&[&input]), want, "{}", p.backend_name());
    }
}

/// The wide backends (512- and 256-bit) against the crate: random keys, every length from 0
/// to 40 blocks (whole groups of 8 and 16 and what is left), the
/// MAC's own shape (4 KiB then 32 bytes) and longer, inputs split at random block boundaries
/// (so parts of odd length too).
#[test]
fn the_fast_backend_matches_the_crate() {
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let fast_seen = Polyval::new(&[1; 16]).backend_name();
    for round in 0..200 {
        let mut h = [0u8; 16];
        h.iter_mut().for_each(|b| *b = next() as u8);
        let (fast, reference) = (Polyval::new(&h), Polyval::with_crate(&h));
        #[cfg(target_arch = "x86_64")]
        let narrow = Polyval::with_256(&h);
        // The MAC's shape, the direct path's limit and one past it (the chained path), and
        // short inputs of every length.
        let blocks = match round % 4 {
            0 => 258,
            1 => [257, 259, 300, 600][round / 4 % 4],
            _ => round % 41,
        };
        let data: Vec<u8> = (0..blocks * 16).map(|_| next() as u8).collect();
        let cut = if blocks == 0 {
            0
        } else {
            (next() as usize % blocks) * 16
        };
        let parts: [&[u8]; 2] = [&data[..cut], &data[cut..]];
        let want = reference.hash(&[&data]);
        assert_eq!(fast.hash(&parts), want, "{blocks} blocks cut at {cut}");
        assert_eq!(fast.hash(&[&data]), want, "{blocks} blocks");
        #[cfg(target_arch = "x86_64")]
        if let Some(n) = &narrow {
            assert_eq!(
                n.hash(&parts),
                want,
                "256-bit: {blocks} blocks cut at {cut}"
            );
        }
    }
    // On this project's machines the wide backend is the one under test.
    if std::env::var_os("CRYPTVOL_REQUIRE_MOUNT").is_some() && is_x86_feature_detected_all() {
        let want = if is_x86_feature_detected!("avx512f") {
            "vpclmulqdq-512"
        } else {
            "vpclmulqdq"
        };
        assert_eq!(fast_seen, want);
    }
}

#[cfg(target_arch = "x86_64")]
fn is_x86_feature_detected_all() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("pclmulqdq")
        && is_x86_feature_detected!("vpclmulqdq")
}

#[cfg(not(target_arch = "x86_64"))]
fn is_x86_feature_detected_all() -> bool {
    false
}

#[test]
#[should_panic(expected = "whole 16-byte blocks")]
fn a_partial_block_is_a_callers_bug() {
    Polyval::new(&[7; 16]).hash(&[&[0u8; 20]]);
}
