//! POLYVAL over 512-bit VPCLMULQDQ (four blocks per instruction, where the CPU has
//! AVX-512) or 256-bit (two).
//!
//! The multiplication is the crate's R/F method ("Efficient GHASH Implementation Using
//! CLMUL", eprint 2025/2171, as `polyval` 0.7 does it over 128 bits): with a key power
//! H = [H1:H0] kept beside D = swap(H) ⊕ H0·P1, the product of a block M = [M1:M0] is the
//! pair R = M0·D1 ⊕ M1·H1, F = M0·D0 ⊕ M1·H0 (four carry-less multiplies), and
//! dot(M, H) = R ⊕ F1 ⊕ x⁶⁴·F0 ⊕ P1·F0 (one more). R and F are linear in M, so the pairs of 8
//! blocks, each multiplied by its own power of H, are summed first and reduced once:
//! S ← dot(S ⊕ X1, H⁸) ⊕ dot(X2, H⁷) ⊕ … ⊕ dot(X8, H¹). Each 256-bit register carries two
//! blocks, and VPCLMULQDQ multiplies both lanes with the same selector.
//!
//! Over 512 bits the same sum runs over groups of 16 blocks, four per register and powers
//! H¹⁶..H¹: twice the multiplies per instruction, and the loop is bound by exactly that.
//!
//! Tried: with H¹..H²⁵⁸ kept, a 4 KiB block and the MAC's trailer need no chain at all
//! (every product summed unreduced, one reduction), but it measured no faster: the loop is
//! bound by the multiplier's throughput (four VPCLMULQDQ per pair of blocks) either way.
//!
//! The only `unsafe` here: unaligned loads from the caller's slices (in bounds by
//! construction) and calls into `#[target_feature]` functions, which are sound because a
//! [`Powers`] exists only once std's run-time detection found the features.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// P1 = x⁶³ + x⁶² + x⁵⁷, the reduction constant of POLYVAL's field in this method.
const P1: i64 = 0xC200000000000000_u64 as i64;

/// Blocks per reduction: over 256 bits and over 512.
const AGG: usize = 8;
const AGG512: usize = 16;

/// The powers H¹..H¹⁶ of the key and their D forms, little-endian bytes, highest first:
/// `h[AGG512 - k]` = H^k under dot. Descending, so that one 32- or 64-byte load gives the
/// powers of consecutive blocks (the earlier block takes the higher power) in the order the
/// lanes want them. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(super) struct Powers {
    h: [[u8; 16]; AGG512],
    d: [[u8; 16]; AGG512],
    /// The CPU has AVX-512 (F) with VPCLMULQDQ: hash 16 blocks per reduction.
    #[zeroize(skip)]
    wide512: bool,
}

impl Powers {
    /// H^k and its D form.
    fn power(&self, k: usize) -> (&[u8; 16], &[u8; 16]) {
        (&self.h[AGG512 - k], &self.d[AGG512 - k])
    }
}

impl Powers {
    /// `None` when the CPU lacks AVX2, PCLMULQDQ or VPCLMULQDQ.
    pub(super) fn new(key: &[u8; 16]) -> Option<Powers> {
        let detected = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("pclmulqdq")
            && is_x86_feature_detected!("vpclmulqdq");
        if !detected {
            return None;
        }
        // SAFETY: the features `expand` needs were detected just above.
        let mut p = unsafe { expand(key) };
        p.wide512 = is_x86_feature_detected!("avx512f");
        Some(p)
    }

    /// The 256-bit backend even where AVX-512 is there (tests compare both with the crate).
    #[cfg(test)]
    pub(super) fn new_256(key: &[u8; 16]) -> Option<Powers> {
        Powers::new(key).map(|mut p| {
            p.wide512 = false;
            p
        })
    }

    pub(super) fn is_512(&self) -> bool {
        self.wide512
    }

    pub(super) fn hash(&self, parts: &[&[u8]]) -> [u8; 16] {
        if self.wide512 {
            // SAFETY: `wide512` is set only after detecting AVX-512F, and a `Powers` is only
            // built after detecting AVX2, PCLMULQDQ and VPCLMULQDQ.
            unsafe { hash_parts_512(self, parts) }
        } else {
            // SAFETY: a `Powers` is only built after detecting the features it needs.
            unsafe { hash_parts(self, parts) }
        }
    }
}

#[target_feature(enable = "sse2")]
fn load(b: &[u8; 16]) -> __m128i {
    // SAFETY: 16 readable bytes; loadu has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "sse2")]
fn store(v: __m128i) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: 16 writable bytes; storeu has no alignment requirement.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) };
    out
}

/// D = swap(H) ⊕ H0·P1.
#[target_feature(enable = "pclmulqdq")]
fn d_of(h: __m128i) -> __m128i {
    let p = _mm_set_epi64x(P1, 0);
    _mm_xor_si128(_mm_shuffle_epi32(h, 0x4e), _mm_clmulepi64_si128(h, p, 0x10))
}

/// dot(R/F pair) = R ⊕ F1 ⊕ x⁶⁴·F0 ⊕ P1·F0.
#[target_feature(enable = "pclmulqdq")]
fn reduce(r: __m128i, f: __m128i) -> __m128i {
    let p = _mm_set_epi64x(0, P1);
    let x = _mm_xor_si128(r, _mm_srli_si128(f, 8));
    let x = _mm_xor_si128(x, _mm_slli_si128(f, 8));
    _mm_xor_si128(x, _mm_clmulepi64_si128(f, p, 0x00))
}

/// dot(m, h), with `d` the D form of `h`.
#[target_feature(enable = "pclmulqdq")]
fn dot(m: __m128i, h: __m128i, d: __m128i) -> __m128i {
    let (r, f) = rf1(m, h, d);
    reduce(r, f)
}

#[target_feature(enable = "pclmulqdq")]
fn expand(key: &[u8; 16]) -> Powers {
    let h1 = load(key);
    let d1 = d_of(h1);
    let mut p = Powers {
        h: [[0; 16]; AGG512],
        d: [[0; 16]; AGG512],
        wide512: false,
    };
    let mut hk = h1;
    for k in 1..=AGG512 {
        if k > 1 {
            hk = dot(hk, h1, d1);
        }
        p.h[AGG512 - k] = store(hk);
        p.d[AGG512 - k] = store(d_of(hk));
    }
    p
}

/// The R/F pair of one block (`dot` without its reduction).
#[target_feature(enable = "pclmulqdq")]
fn rf1(m: __m128i, h: __m128i, d: __m128i) -> (__m128i, __m128i) {
    let r = _mm_xor_si128(
        _mm_clmulepi64_si128(m, d, 0x10),
        _mm_clmulepi64_si128(m, h, 0x11),
    );
    let f = _mm_xor_si128(
        _mm_clmulepi64_si128(m, d, 0x00),
        _mm_clmulepi64_si128(m, h, 0x01),
    );
    (r, f)
}

/// The R/F pair of two blocks at once, lane by lane.
#[target_feature(enable = "avx2,vpclmulqdq")]
fn rf2(m: __m256i, h: __m256i, d: __m256i) -> (__m256i, __m256i) {
    let r = _mm256_xor_si256(
        _mm256_clmulepi64_epi128(m, d, 0x10),
        _mm256_clmulepi64_epi128(m, h, 0x11),
    );
    let f = _mm256_xor_si256(
        _mm256_clmulepi64_epi128(m, d, 0x00),
        _mm256_clmulepi64_epi128(m, h, 0x01),
    );
    (r, f)
}

#[target_feature(enable = "avx2,vpclmulqdq")]
fn fold(v: __m256i) -> __m128i {
    _mm_xor_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1))
}

/// Groups of 8 blocks, each reduced before the next.
#[target_feature(enable = "avx2,pclmulqdq,vpclmulqdq")]
fn hash_parts(p: &Powers, parts: &[&[u8]]) -> [u8; 16] {
    // Register j holds blocks 2j (low lane) and 2j+1 (high lane) of a group of 8; block i
    // is multiplied by H^(8-i).
    let pair = |t: &[[u8; 16]; AGG512], j: usize| {
        // H^8..H^1 are the last eight entries.
        let at = &t[AGG512 - AGG + 2 * j..AGG512 - AGG + 2 * j + 2];
        // SAFETY: `at` is two adjacent 16-byte entries, 32 readable bytes.
        unsafe { _mm256_loadu_si256(at.as_ptr().cast()) }
    };
    let kh = [pair(&p.h, 0), pair(&p.h, 1), pair(&p.h, 2), pair(&p.h, 3)];
    let kd = [pair(&p.d, 0), pair(&p.d, 1), pair(&p.d, 2), pair(&p.d, 3)];
    let (h1, d1) = p.power(1);
    let (h1, d1) = (load(h1), load(d1));
    let mut acc = _mm_setzero_si128();
    for part in parts {
        let mut groups = part.chunks_exact(16 * AGG);
        for g in &mut groups {
            let at = |j: usize| {
                // SAFETY: `g` is 128 bytes; 32 bytes from 32·j (j < 4) are inside it.
                unsafe { _mm256_loadu_si256(g.as_ptr().add(32 * j).cast()) }
            };
            let m0 = _mm256_xor_si256(at(0), _mm256_set_m128i(_mm_setzero_si128(), acc));
            let (r0, f0) = rf2(m0, kh[0], kd[0]);
            let (r1, f1) = rf2(at(1), kh[1], kd[1]);
            let (r2, f2) = rf2(at(2), kh[2], kd[2]);
            let (r3, f3) = rf2(at(3), kh[3], kd[3]);
            let r = _mm256_xor_si256(_mm256_xor_si256(r0, r1), _mm256_xor_si256(r2, r3));
            let f = _mm256_xor_si256(_mm256_xor_si256(f0, f1), _mm256_xor_si256(f2, f3));
            acc = reduce(fold(r), fold(f));
        }
        for b in groups.remainder().chunks_exact(16) {
            let b: &[u8; 16] = b.try_into().expect("16 bytes");
            acc = dot(_mm_xor_si128(acc, load(b)), h1, d1);
        }
    }
    store(acc)
}

/// The R/F pair of four blocks at once, lane by lane.
#[target_feature(enable = "avx512f,vpclmulqdq")]
fn rf4(m: __m512i, h: __m512i, d: __m512i) -> (__m512i, __m512i) {
    let r = _mm512_xor_si512(
        _mm512_clmulepi64_epi128(m, d, 0x10),
        _mm512_clmulepi64_epi128(m, h, 0x11),
    );
    let f = _mm512_xor_si512(
        _mm512_clmulepi64_epi128(m, d, 0x00),
        _mm512_clmulepi64_epi128(m, h, 0x01),
    );
    (r, f)
}

/// The four 128-bit lanes of `v`, added.
#[target_feature(enable = "avx512f")]
fn fold4(v: __m512i) -> __m128i {
    let lo = _mm512_castsi512_si256(v);
    let hi = _mm512_extracti64x4_epi64(v, 1);
    let x = _mm256_xor_si256(lo, hi);
    _mm_xor_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1))
}

/// Groups of 16 blocks, each reduced before the next; what is left, block by block.
#[target_feature(enable = "avx512f,avx2,pclmulqdq,vpclmulqdq")]
fn hash_parts_512(p: &Powers, parts: &[&[u8]]) -> [u8; 16] {
    // Register j holds blocks 4j..4j+3 of a group of 16; block i is multiplied by H^(16-i).
    let quad = |t: &[[u8; 16]; AGG512], j: usize| {
        let at = &t[4 * j..4 * j + 4];
        // SAFETY: `at` is four adjacent 16-byte entries, 64 readable bytes.
        unsafe { _mm512_loadu_si512(at.as_ptr().cast()) }
    };
    let kh = [quad(&p.h, 0), quad(&p.h, 1), quad(&p.h, 2), quad(&p.h, 3)];
    let kd = [quad(&p.d, 0), quad(&p.d, 1), quad(&p.d, 2), quad(&p.d, 3)];
    let (h1, d1) = p.power(1);
    let (h1, d1) = (load(h1), load(d1));
    let mut acc = _mm_setzero_si128();
    for part in parts {
        let mut groups = part.chunks_exact(16 * AGG512);
        for g in &mut groups {
            let at = |j: usize| {
                // SAFETY: `g` is 256 bytes; 64 bytes from 64·j (j < 4) are inside it.
                unsafe { _mm512_loadu_si512(g.as_ptr().add(64 * j).cast()) }
            };
            let m0 = _mm512_xor_si512(at(0), _mm512_zextsi128_si512(acc));
            let (r0, f0) = rf4(m0, kh[0], kd[0]);
            let (r1, f1) = rf4(at(1), kh[1], kd[1]);
            let (r2, f2) = rf4(at(2), kh[2], kd[2]);
            let (r3, f3) = rf4(at(3), kh[3], kd[3]);
            let r = _mm512_xor_si512(_mm512_xor_si512(r0, r1), _mm512_xor_si512(r2, r3));
            let f = _mm512_xor_si512(_mm512_xor_si512(f0, f1), _mm512_xor_si512(f2, f3));
            acc = reduce(fold4(r), fold4(f));
        }
        for b in groups.remainder().chunks_exact(16) {
            let b: &[u8; 16] = b.try_into().expect("16 bytes");
            acc = dot(_mm_xor_si128(acc, load(b)), h1, d1);
        }
    }
    store(acc)
}
