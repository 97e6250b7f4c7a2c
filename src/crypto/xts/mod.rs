//! AES-256-XTS (IEEE 1619-2007, NIST SP 800-38E) over 4096-byte data units: the block engine
//! under every volume. One data unit is one volume block; its tweak is the block address as a
//! 128-bit little-endian integer, encrypted with the tweak key K2. Ciphertext size equals
//! plaintext size; there is no ciphertext stealing because a unit is always whole blocks.
//!
//! This module owns the cipher and nothing about where units live: callers (the volume layer)
//! pass the unit number and a buffer. It never allocates in the hot path.
//!
//! Backends, chosen once in [`Xts::new`] by run-time CPU detection (no build flags needed):
//! - [`XtsBackend::Vaes512`]: x86_64 with VAES, VPCLMULQDQ and AVX-512F/BW; 4 AES blocks per
//!   register, 16 blocks in flight, tweaks advanced in vector registers (`x86.rs`).
//! - [`XtsBackend::Vaes256`]: x86_64 with VAES, VPCLMULQDQ and AVX2 (no AVX-512): the same
//!   scheme with 2 blocks per register.
//! - [`XtsBackend::AesCrate`]: everywhere else; scalar tweaks fed 64 blocks at a time to the
//!   `aes` crate's `encrypt_blocks`/`decrypt_blocks` (which use AES-NI, VAES or ARMv8 AES at run
//!   time, or a constant-time software AES) (`portable.rs`).
//!
//! All three give identical output; the tests check each against the `xts-mode` crate and the
//! IEEE 1619 vectors. All `unsafe` of this module lives in `x86.rs`.

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use std::fmt;

/// One XTS data unit: one volume block, in bytes.
pub const DATA_UNIT: usize = 4096;

/// The AES block size; every unit is a whole number of blocks.
const BLOCK: usize = 16;

/// The key was refused, or the requested backend cannot run here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XtsKeyError {
    /// K1 == K2. IEEE 1619-2018 and FIPS 140-3 (IG C.I) require the data key and the tweak key
    /// of an XTS key to differ; a key with equal halves is a broken key source, not bad luck.
    #[error("XTS key refused: the data key and the tweak key (the two 32-byte halves) are equal")]
    EqualHalves,
    /// [`Xts::with_backend`] asked for a backend this CPU or target does not support.
    #[error("XTS backend {0} is not available on this CPU")]
    BackendUnavailable(XtsBackend),
}

/// Which implementation encrypts; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XtsBackend {
    /// x86_64 VAES + VPCLMULQDQ + AVX-512F/BW, 512-bit registers.
    Vaes512,
    /// x86_64 VAES + VPCLMULQDQ + AVX2, 256-bit registers.
    Vaes256,
    /// Portable: the `aes` crate's batch block functions with a scalar tweak loop.
    AesCrate,
}

impl XtsBackend {
    /// Every backend, fastest first.
    pub const ALL: [XtsBackend; 3] = [
        XtsBackend::Vaes512,
        XtsBackend::Vaes256,
        XtsBackend::AesCrate,
    ];

    /// Whether this backend can run on this machine (checked at run time, cached by std).
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            XtsBackend::Vaes512 => x86::Isa::Avx512.is_detected(),
            #[cfg(target_arch = "x86_64")]
            XtsBackend::Vaes256 => x86::Isa::Avx2.is_detected(),
            #[cfg(not(target_arch = "x86_64"))]
            XtsBackend::Vaes512 | XtsBackend::Vaes256 => false,
            XtsBackend::AesCrate => true,
        }
    }

    /// The fastest backend available here.
    pub fn best() -> XtsBackend {
        XtsBackend::ALL
            .into_iter()
            .find(|b| b.is_available())
            .unwrap_or(XtsBackend::AesCrate)
    }

    /// A short stable name for logs and benchmark tables.
    pub fn name(self) -> &'static str {
        match self {
            XtsBackend::Vaes512 => "vaes512",
            XtsBackend::Vaes256 => "vaes256",
            XtsBackend::AesCrate => "aes-crate",
        }
    }
}

impl fmt::Display for XtsBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An AES-256-XTS key, expanded for one backend: both key schedules (data key K1, tweak key
/// K2), zeroized on drop. Cheap to share between threads (`Send + Sync`, all methods `&self`);
/// `Clone` copies the schedules. `Debug` shows the backend only.
#[derive(Clone)]
pub struct Xts {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    #[cfg(target_arch = "x86_64")]
    X86(x86::Engine),
    Portable(portable::Engine),
}

/// Which way the blocks go; the tweak schedule is the same both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Encrypt,
    Decrypt,
}

impl Xts {
    /// Expands `key` (64 bytes: the first 32 are the data key K1, the last 32 the tweak key
    /// K2) for the fastest backend on this CPU.
    ///
    /// Refuses a key whose halves are equal ([`XtsKeyError::EqualHalves`]).
    pub fn new(key: &[u8; 64]) -> Result<Xts, XtsKeyError> {
        Xts::with_backend(key, XtsBackend::best())
    }

    /// As [`Xts::new`], with a chosen backend: for tests and benchmarks that compare backends.
    /// Fails with [`XtsKeyError::BackendUnavailable`] if `backend` cannot run here.
    pub fn with_backend(key: &[u8; 64], backend: XtsBackend) -> Result<Xts, XtsKeyError> {
        let (k1, k2) = split_key(key);
        if halves_equal(k1, k2) {
            return Err(XtsKeyError::EqualHalves);
        }
        let engine = match backend {
            #[cfg(target_arch = "x86_64")]
            XtsBackend::Vaes512 => x86::Engine::new(k1, k2, x86::Isa::Avx512).map(Engine::X86),
            #[cfg(target_arch = "x86_64")]
            XtsBackend::Vaes256 => x86::Engine::new(k1, k2, x86::Isa::Avx2).map(Engine::X86),
            #[cfg(not(target_arch = "x86_64"))]
            XtsBackend::Vaes512 | XtsBackend::Vaes256 => None,
            XtsBackend::AesCrate => Some(Engine::Portable(portable::Engine::new(k1, k2))),
        };
        engine
            .map(|engine| Xts { engine })
            .ok_or(XtsKeyError::BackendUnavailable(backend))
    }

    /// The backend this key was expanded for.
    pub fn backend(&self) -> XtsBackend {
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::X86(e) => match e.isa() {
                x86::Isa::Avx512 => XtsBackend::Vaes512,
                x86::Isa::Avx2 => XtsBackend::Vaes256,
            },
            Engine::Portable(_) => XtsBackend::AesCrate,
        }
    }

    /// Encrypts `buf` in place. `buf` holds consecutive data units; unit `i` of `buf` is
    /// encrypted with tweak `first_unit + i`, taken as a 128-bit little-endian integer (so the
    /// sum never wraps, even past `u64::MAX`).
    ///
    /// # Panics
    /// If `buf.len()` is not a multiple of [`DATA_UNIT`]: that is a caller bug (the volume
    /// layer only hands over whole blocks), not a data error. An empty `buf` is a no-op.
    pub fn encrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        assert_whole_units(buf);
        self.crypt(Direction::Encrypt, u128::from(first_unit), buf, DATA_UNIT);
    }

    /// Decrypts `buf` in place; the inverse of [`Xts::encrypt_units`] with the same
    /// `first_unit`.
    ///
    /// # Panics
    /// If `buf.len()` is not a multiple of [`DATA_UNIT`] (caller bug).
    pub fn decrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        assert_whole_units(buf);
        self.crypt(Direction::Decrypt, u128::from(first_unit), buf, DATA_UNIT);
    }

    /// As [`Xts::encrypt_units`] with a full 128-bit first tweak: an authenticated volume's
    /// tweak carries its domain in the high 64 bits (`volume::integrity::tweak`).
    pub fn encrypt_units_at(&self, first_unit: u128, buf: &mut [u8]) {
        assert_whole_units(buf);
        self.crypt(Direction::Encrypt, first_unit, buf, DATA_UNIT);
    }

    /// The inverse of [`Xts::encrypt_units_at`].
    pub fn decrypt_units_at(&self, first_unit: u128, buf: &mut [u8]) {
        assert_whole_units(buf);
        self.crypt(Direction::Decrypt, first_unit, buf, DATA_UNIT);
    }

    /// The engine behind both public calls, for any unit length that is a non-zero multiple of
    /// 16 bytes (the IEEE vectors use 512-byte units). `buf.len()` must be a multiple of
    /// `unit_len`.
    fn crypt(&self, dir: Direction, first_unit: u128, buf: &mut [u8], unit_len: usize) {
        assert!(
            unit_len > 0 && unit_len.is_multiple_of(BLOCK) && buf.len().is_multiple_of(unit_len),
            "XTS: unit length {unit_len} and buffer length {} must be whole blocks and units",
            buf.len()
        );
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::X86(e) => e.crypt(dir, first_unit, buf, unit_len),
            Engine::Portable(e) => e.crypt(dir, first_unit, buf, unit_len),
        }
    }
}

impl fmt::Debug for Xts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xts")
            .field("backend", &format_args!("{}", self.backend()))
            .field("keys", &format_args!("<redacted>"))
            .finish()
    }
}

fn assert_whole_units(buf: &[u8]) {
    assert!(
        buf.len().is_multiple_of(DATA_UNIT),
        "XTS buffer of {} bytes is not a whole number of {DATA_UNIT}-byte units",
        buf.len()
    );
}

fn split_key(key: &[u8; 64]) -> (&[u8; 32], &[u8; 32]) {
    let (k1, k2) = key.split_at(32);
    (
        k1.try_into().expect("32-byte half"),
        k2.try_into().expect("32-byte half"),
    )
}

/// Compares the halves without an early exit, so the time taken says nothing about where
/// two key halves first differ.
fn halves_equal(k1: &[u8; 32], k2: &[u8; 32]) -> bool {
    let diff = k1.iter().zip(k2).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// Multiplies a tweak by the primitive element α (x) in GF(2^128), IEEE 1619 §5.2: the tweak
/// is a little-endian 128-bit integer; shift left one bit and fold the carry back with the
/// polynomial x^128 + x^7 + x^2 + x + 1 (0x87). Branch-free.
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    (t << 1) ^ ((t >> 127) * 0x87)
}
