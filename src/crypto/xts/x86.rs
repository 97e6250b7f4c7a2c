//! The x86_64 XTS backends: AES-NI for key expansion and the per-unit tweak, then VAES over
//! 512-bit (AVX-512) or 256-bit (AVX2) registers for the data, with the tweaks of each data
//! unit kept and advanced in vector registers (carry-less multiply by a power of α).
//!
//! The only `unsafe` of the XTS engine is here: raw-pointer loads and stores inside a unit,
//! and calls into `#[target_feature]` functions, which are sound only because an [`Engine`]
//! can be built only after std's run-time detection confirmed its [`Isa`].
//!
//! Per 16-byte block j of a unit with encrypted tweak T: C = E_K1(P ^ T·α^j) ^ T·α^j. Two
//! identities save work: the first XOR folds into one three-way XOR with round key 0
//! (`vpternlogq`), and the last XOR folds into the final round, since AESENCLAST(x, k ^ t) =
//! AESENCLAST(x, k) ^ t (the final round ends with the round-key XOR; same for AESDECLAST).
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::{BLOCK, Direction};

/// AES-256 round keys: 14 rounds plus the initial whitening key.
const ROUNDS: usize = 15;

/// The reduction constant of GF(2^128) in the low 64 bits of each 128-bit lane:
/// x^128 = x^7 + x^2 + x + 1.
const GF_POLY: i64 = 0x87;

/// Blocks per loop iteration in both widths: 4 registers of 4 blocks (512-bit) or 8 of 2
/// (256-bit). VAES has a latency of several cycles, so several independent registers must be
/// in flight to keep the AES units busy; with 4 of them the 15 round keys, blocks and tweaks
/// of the 512-bit loop still fit the 32 AVX-512 registers without spilling (checked in the
/// generated code). A 32-block stride spills and measured slower on Zen 4 (bench/xts.rs:
/// about 11 GB/s against 13 GB/s).
const STRIDE: usize = 16;

/// Tweaks advance by α^STRIDE = α^16 per iteration: a shift by two whole bytes per 128-bit
/// lane, whose carried-out 16 bits are folded back with one carry-less multiply by 0x87.
const STEP_BYTES: i32 = (STRIDE / 8) as i32;

/// Registers per iteration.
const V512: usize = STRIDE / 4;
const V256: usize = STRIDE / 2;

/// The instruction-set level a key was expanded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX-512F/BW + VAES + VPCLMULQDQ (+ AES-NI for the key schedule and tweak).
    Avx512,
    /// AVX2 + VAES + VPCLMULQDQ (+ AES-NI).
    Avx2,
}

impl Isa {
    pub(super) fn is_detected(self) -> bool {
        let common = is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("vaes")
            && is_x86_feature_detected!("vpclmulqdq");
        common
            && match self {
                Isa::Avx512 => {
                    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
                }
                Isa::Avx2 => is_x86_feature_detected!("avx2"),
            }
    }
}

/// Expanded keys: K1 for encryption and (inverse-mixed) for decryption, K2 for tweaks.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Keys {
    enc: [__m128i; ROUNDS],
    dec: [__m128i; ROUNDS],
    tweak: [__m128i; ROUNDS],
}

/// Keys plus the detected instruction set. Invariant: `isa.is_detected()` held when this was
/// built; every `unsafe` call below relies on it.
#[derive(Clone)]
pub(super) struct Engine {
    keys: Keys,
    isa: Isa,
}

impl Engine {
    /// `None` if this CPU lacks `isa`.
    pub(super) fn new(k1: &[u8; 32], k2: &[u8; 32], isa: Isa) -> Option<Engine> {
        if !isa.is_detected() {
            return None;
        }
        // SAFETY: AES-NI, the only feature `expand_keys` enables, is part of every `Isa`, and
        // `isa` was just detected.
        let keys = unsafe { expand_keys(k1, k2) };
        Some(Engine { keys, isa })
    }

    pub(super) fn isa(&self) -> Isa {
        self.isa
    }

    pub(super) fn crypt(&self, dir: Direction, first_unit: u128, buf: &mut [u8], unit_len: usize) {
        let keys = &self.keys;
        match (self.isa, dir) {
            // SAFETY: `self.isa` was detected on this CPU when `self` was built (type
            // invariant), which covers every feature the callee enables.
            (Isa::Avx512, Direction::Encrypt) => unsafe {
                units_512::<false>(&keys.enc, &keys.tweak, first_unit, buf, unit_len)
            },
            // SAFETY: as above.
            (Isa::Avx512, Direction::Decrypt) => unsafe {
                units_512::<true>(&keys.dec, &keys.tweak, first_unit, buf, unit_len)
            },
            // SAFETY: as above.
            (Isa::Avx2, Direction::Encrypt) => unsafe {
                units_256::<false>(&keys.enc, &keys.tweak, first_unit, buf, unit_len)
            },
            // SAFETY: as above.
            (Isa::Avx2, Direction::Decrypt) => unsafe {
                units_256::<true>(&keys.dec, &keys.tweak, first_unit, buf, unit_len)
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Key schedule (AES-NI), FIPS 197 §5.2 for Nk = 8, in the form of Intel's AES-NI white paper.

#[target_feature(enable = "aes")]
fn expand_keys(k1: &[u8; 32], k2: &[u8; 32]) -> Keys {
    let enc = expand_256(k1);
    let mut dec = [_mm_setzero_si128(); ROUNDS];
    // The equivalent inverse cipher (FIPS 197 §5.3.5): reversed keys, InvMixColumns on the
    // inner ones.
    dec[0] = enc[ROUNDS - 1];
    for r in 1..ROUNDS - 1 {
        dec[r] = _mm_aesimc_si128(enc[ROUNDS - 1 - r]);
    }
    dec[ROUNDS - 1] = enc[0];
    Keys {
        enc,
        dec,
        tweak: expand_256(k2),
    }
}

#[target_feature(enable = "aes")]
fn load_key_half(bytes: &[u8]) -> __m128i {
    let lo = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let hi = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    _mm_set_epi64x(hi as i64, lo as i64)
}

#[target_feature(enable = "aes")]
fn expand_256(key: &[u8; 32]) -> [__m128i; ROUNDS] {
    let mut rk = [load_key_half(&key[..16]); ROUNDS];
    rk[1] = load_key_half(&key[16..]);
    (rk[2], rk[3]) = next_pair::<0x01>(rk[0], rk[1]);
    (rk[4], rk[5]) = next_pair::<0x02>(rk[2], rk[3]);
    (rk[6], rk[7]) = next_pair::<0x04>(rk[4], rk[5]);
    (rk[8], rk[9]) = next_pair::<0x08>(rk[6], rk[7]);
    (rk[10], rk[11]) = next_pair::<0x10>(rk[8], rk[9]);
    (rk[12], rk[13]) = next_pair::<0x20>(rk[10], rk[11]);
    rk[14] = expand_a(rk[12], _mm_aeskeygenassist_si128::<0x40>(rk[13]));
    rk
}

/// The next two round keys from the previous two, with round constant `RCON`.
#[target_feature(enable = "aes")]
fn next_pair<const RCON: i32>(a: __m128i, b: __m128i) -> (__m128i, __m128i) {
    let a = expand_a(a, _mm_aeskeygenassist_si128::<RCON>(b));
    (a, expand_b(a, b))
}

/// Prefix-XOR of the four words of `x` (w0, w0^w1, w0^w1^w2, ...).
#[target_feature(enable = "aes")]
fn prefix_xor(x: __m128i) -> __m128i {
    let x = _mm_xor_si128(x, _mm_slli_si128::<4>(x));
    _mm_xor_si128(x, _mm_slli_si128::<8>(x))
}

/// Even round key: RotWord/SubWord/Rcon of the previous odd key's last word.
#[target_feature(enable = "aes")]
fn expand_a(a: __m128i, assist: __m128i) -> __m128i {
    _mm_xor_si128(prefix_xor(a), _mm_shuffle_epi32::<0xff>(assist))
}

/// Odd round key: SubWord (no rotation, no Rcon) of the new even key's last word.
#[target_feature(enable = "aes")]
fn expand_b(a: __m128i, b: __m128i) -> __m128i {
    let assist = _mm_aeskeygenassist_si128::<0x00>(a);
    _mm_xor_si128(prefix_xor(b), _mm_shuffle_epi32::<0xaa>(assist))
}

// ---------------------------------------------------------------------------------------------
// Per-unit tweak, shared by both widths.

/// T = E_K2(unit number as a 128-bit little-endian integer).
#[target_feature(enable = "aes")]
fn unit_tweak(k2: &[__m128i; ROUNDS], unit: u128) -> __m128i {
    let mut t = _mm_set_epi64x((unit >> 64) as u64 as i64, unit as u64 as i64);
    t = _mm_xor_si128(t, k2[0]);
    for k in &k2[1..ROUNDS - 1] {
        t = _mm_aesenc_si128(t, *k);
    }
    _mm_aesenclast_si128(t, k2[ROUNDS - 1])
}

// ---------------------------------------------------------------------------------------------
// 512-bit path: 4 blocks per register.

/// The tweaks of a unit's first 16 blocks: lane j of register v holds T·α^(4v+j). All lanes
/// are computed at once from T (variable shifts), not one after the other, so the first
/// blocks of a unit wait only for the AES of T.
#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes")]
fn first_tweaks_512(t: __m128i, poly: __m512i) -> [__m512i; V512] {
    let t = _mm512_broadcast_i32x4(t);
    core::array::from_fn(|v| {
        let e = 4 * v as i64;
        let n = _mm512_set_epi64(e + 3, e + 3, e + 2, e + 2, e + 1, e + 1, e, e);
        // Per 128-bit lane: shift left by n bits (n < 64) across the two qwords, then fold
        // the n bits shifted out of the top back in with 0x87.
        let out = _mm512_srlv_epi64(t, _mm512_sub_epi64(_mm512_set1_epi64(64), n));
        let shifted = _mm512_xor_si512(_mm512_sllv_epi64(t, n), _mm512_bslli_epi128::<8>(out));
        let fold = _mm512_clmulepi64_epi128::<0x00>(_mm512_bsrli_epi128::<8>(out), poly);
        _mm512_xor_si512(shifted, fold)
    })
}

/// The AES rounds after the first key XOR, round by round across `N` registers (so each
/// round key is read once per round and the N chains interleave); the last round's key is
/// XORed with each register's tweak, which finishes XTS's output XOR for free.
#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes")]
fn rounds_512<const DECRYPT: bool, const N: usize>(
    x: &mut [__m512i; N],
    rk: &[__m512i; ROUNDS],
    tw: &[__m512i],
) {
    for k in &rk[1..ROUNDS - 1] {
        for xv in x.iter_mut() {
            *xv = if DECRYPT {
                _mm512_aesdec_epi128(*xv, *k)
            } else {
                _mm512_aesenc_epi128(*xv, *k)
            };
        }
    }
    for (xv, t) in x.iter_mut().zip(tw) {
        let last = _mm512_xor_si512(rk[ROUNDS - 1], *t);
        *xv = if DECRYPT {
            _mm512_aesdeclast_epi128(*xv, last)
        } else {
            _mm512_aesenclast_epi128(*xv, last)
        };
    }
}

/// Encrypts (or, with `DECRYPT` and the decryption schedule, decrypts) whole units of
/// `unit_len` bytes in place.
#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes")]
fn units_512<const DECRYPT: bool>(
    k1: &[__m128i; ROUNDS],
    k2: &[__m128i; ROUNDS],
    first_unit: u128,
    buf: &mut [u8],
    unit_len: usize,
) {
    let mut rk: [__m512i; ROUNDS] = k1.map(|k| _mm512_broadcast_i32x4(k));
    let poly = _mm512_set_epi64(0, GF_POLY, 0, GF_POLY, 0, GF_POLY, 0, GF_POLY);
    let blocks_per_unit = unit_len / BLOCK;

    for (i, unit) in buf.chunks_exact_mut(unit_len).enumerate() {
        let mut tw = first_tweaks_512(unit_tweak(k2, first_unit + i as u128), poly);
        let p = unit.as_mut_ptr();
        let mut done = 0;

        while blocks_per_unit - done >= STRIDE {
            let mut x = [_mm512_setzero_si512(); V512];
            for (v, xv) in x.iter_mut().enumerate() {
                // SAFETY: blocks done..done+16 lie inside `unit` (loop condition), so these
                // 64 bytes are in bounds; unaligned loads are allowed.
                let d = unsafe { _mm512_loadu_si512(p.add((done + 4 * v) * BLOCK).cast()) };
                *xv = _mm512_ternarylogic_epi64::<0x96>(d, tw[v], rk[0]);
            }
            rounds_512::<DECRYPT, V512>(&mut x, &rk, &tw);
            for (v, xv) in x.iter().enumerate() {
                // SAFETY: same 64 bytes as the load above; `unit` is borrowed mutably.
                unsafe { _mm512_storeu_si512(p.add((done + 4 * v) * BLOCK).cast(), *xv) };
            }
            for t in &mut tw {
                *t = mul_alpha_step_512(*t, poly);
            }
            done += STRIDE;
        }

        // Fewer than 16 blocks left (only for units that are not a multiple of 256 bytes,
        // i.e. never for DATA_UNIT): tw[0..] already hold the next tweaks in order.
        let mut v = 0;
        while done < blocks_per_unit {
            let n = (blocks_per_unit - done).min(4);
            let mask = ((1u32 << (2 * n)) - 1) as __mmask8;
            // SAFETY: the mask covers only the n remaining blocks (2n qwords) of `unit`;
            // masked-off lanes are not accessed, so nothing outside `unit` is touched.
            let d = unsafe { _mm512_maskz_loadu_epi64(mask, p.add(done * BLOCK).cast()) };
            let mut x = [_mm512_ternarylogic_epi64::<0x96>(d, tw[v], rk[0])];
            rounds_512::<DECRYPT, 1>(&mut x, &rk, &tw[v..]);
            // SAFETY: as for the load.
            unsafe { _mm512_mask_storeu_epi64(p.add(done * BLOCK).cast(), mask, x[0]) };
            done += n;
            v += 1;
        }
    }
    // Best effort: clear the broadcast round keys this call spilled to the stack.
    rk.zeroize();
}

/// Multiplies each 128-bit lane by α^16: shift left two bytes and fold the 16 bits shifted
/// out back in with x^128 = 0x87.
#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes")]
fn mul_alpha_step_512(t: __m512i, poly: __m512i) -> __m512i {
    let carry = _mm512_bsrli_epi128::<{ 16 - STEP_BYTES }>(t);
    let fold = _mm512_clmulepi64_epi128::<0x00>(carry, poly);
    _mm512_xor_si512(_mm512_bslli_epi128::<STEP_BYTES>(t), fold)
}

// ---------------------------------------------------------------------------------------------
// 256-bit path: 2 blocks per register, for VAES CPUs without AVX-512 (Zen 3, Alder Lake).

/// As [`first_tweaks_512`]: lane j of register v holds T·α^(2v+j).
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
fn first_tweaks_256(t: __m128i, poly: __m256i) -> [__m256i; V256] {
    let t = _mm256_broadcastsi128_si256(t);
    core::array::from_fn(|v| {
        let e = 2 * v as i64;
        let n = _mm256_set_epi64x(e + 1, e + 1, e, e);
        let out = _mm256_srlv_epi64(t, _mm256_sub_epi64(_mm256_set1_epi64x(64), n));
        let shifted = _mm256_xor_si256(_mm256_sllv_epi64(t, n), _mm256_bslli_epi128::<8>(out));
        let fold = _mm256_clmulepi64_epi128::<0x00>(_mm256_bsrli_epi128::<8>(out), poly);
        _mm256_xor_si256(shifted, fold)
    })
}

/// As [`rounds_512`], two blocks per register. With only 16 vector registers under AVX2 the
/// round keys stay on the stack and are read as memory operands of VAESENC, which costs load
/// bandwidth but no extra instructions.
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
fn rounds_256<const DECRYPT: bool, const N: usize>(
    x: &mut [__m256i; N],
    rk: &[__m256i; ROUNDS],
    tw: &[__m256i],
) {
    for k in &rk[1..ROUNDS - 1] {
        for xv in x.iter_mut() {
            *xv = if DECRYPT {
                _mm256_aesdec_epi128(*xv, *k)
            } else {
                _mm256_aesenc_epi128(*xv, *k)
            };
        }
    }
    for (xv, t) in x.iter_mut().zip(tw) {
        let last = _mm256_xor_si256(rk[ROUNDS - 1], *t);
        *xv = if DECRYPT {
            _mm256_aesdeclast_epi128(*xv, last)
        } else {
            _mm256_aesenclast_epi128(*xv, last)
        };
    }
}

#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
fn units_256<const DECRYPT: bool>(
    k1: &[__m128i; ROUNDS],
    k2: &[__m128i; ROUNDS],
    first_unit: u128,
    buf: &mut [u8],
    unit_len: usize,
) {
    let mut rk: [__m256i; ROUNDS] = k1.map(|k| _mm256_broadcastsi128_si256(k));
    let poly = _mm256_set_epi64x(0, GF_POLY, 0, GF_POLY);
    let blocks_per_unit = unit_len / BLOCK;

    for (i, unit) in buf.chunks_exact_mut(unit_len).enumerate() {
        let mut tw = first_tweaks_256(unit_tweak(k2, first_unit + i as u128), poly);
        let p = unit.as_mut_ptr();
        let mut done = 0;

        while blocks_per_unit - done >= STRIDE {
            let mut x = [_mm256_setzero_si256(); V256];
            for (v, xv) in x.iter_mut().enumerate() {
                // SAFETY: blocks done..done+16 lie inside `unit` (loop condition), so these
                // 32 bytes are in bounds; unaligned loads are allowed.
                let d = unsafe { _mm256_loadu_si256(p.add((done + 2 * v) * BLOCK).cast()) };
                *xv = _mm256_xor_si256(_mm256_xor_si256(d, tw[v]), rk[0]);
            }
            rounds_256::<DECRYPT, V256>(&mut x, &rk, &tw);
            for (v, xv) in x.iter().enumerate() {
                // SAFETY: same 32 bytes as the load above; `unit` is borrowed mutably.
                unsafe { _mm256_storeu_si256(p.add((done + 2 * v) * BLOCK).cast(), *xv) };
            }
            for t in &mut tw {
                *t = mul_alpha_step_256(*t, poly);
            }
            done += STRIDE;
        }

        // Fewer than 16 blocks left (never for DATA_UNIT): pairs, then one single block.
        let mut v = 0;
        while blocks_per_unit - done >= 2 {
            // SAFETY: two whole blocks remain in `unit` at this offset.
            let d = unsafe { _mm256_loadu_si256(p.add(done * BLOCK).cast()) };
            let mut x = [_mm256_xor_si256(_mm256_xor_si256(d, tw[v]), rk[0])];
            rounds_256::<DECRYPT, 1>(&mut x, &rk, &tw[v..]);
            // SAFETY: as for the load.
            unsafe { _mm256_storeu_si256(p.add(done * BLOCK).cast(), x[0]) };
            done += 2;
            v += 1;
        }
        if done < blocks_per_unit {
            let t = _mm256_castsi256_si128(tw[v]);
            // SAFETY: one whole block remains in `unit` at this offset.
            let d = unsafe { _mm_loadu_si128(p.add(done * BLOCK).cast()) };
            let mut x = _mm_xor_si128(_mm_xor_si128(d, t), k1[0]);
            for k in &k1[1..ROUNDS - 1] {
                x = if DECRYPT {
                    _mm_aesdec_si128(x, *k)
                } else {
                    _mm_aesenc_si128(x, *k)
                };
            }
            let last = _mm_xor_si128(k1[ROUNDS - 1], t);
            x = if DECRYPT {
                _mm_aesdeclast_si128(x, last)
            } else {
                _mm_aesenclast_si128(x, last)
            };
            // SAFETY: as for the load.
            unsafe { _mm_storeu_si128(p.add(done * BLOCK).cast(), x) };
        }
    }
    // Best effort: clear the broadcast round keys this call spilled to the stack.
    rk.zeroize();
}

/// Multiplies each 128-bit lane by α^16, as [`mul_alpha_step_512`].
#[target_feature(enable = "avx2,vaes,vpclmulqdq,aes")]
fn mul_alpha_step_256(t: __m256i, poly: __m256i) -> __m256i {
    let carry = _mm256_bsrli_epi128::<{ 16 - STEP_BYTES }>(t);
    let fold = _mm256_clmulepi64_epi128::<0x00>(carry, poly);
    _mm256_xor_si256(_mm256_bslli_epi128::<STEP_BYTES>(t), fold)
}
