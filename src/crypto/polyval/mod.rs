//! POLYVAL (RFC 8452), the universal hash of the block MAC (`volume::integrity`), keyed once
//! and then hashing 4 KiB blocks on the write and read paths of authenticated volumes.
//!
//! Why our own: the `polyval` crate (0.7) multiplies 128 bits at a time, 4 blocks per
//! reduction. Zen 4 and recent Xeons have VPCLMULQDQ: `x86` does 8 blocks per reduction,
//! two per instruction, about twice the crate's speed (bench/block_mac.rs), or with AVX-512
//! 16 blocks per reduction, four per instruction. Elsewhere, and on an x86 CPU without VPCLMULQDQ or AVX2, the crate
//! does the work. Both give the same output: the tests check ours against the crate on
//! random keys and lengths and against RFC 8452's vectors.
//!
//! POLYVAL(H, X_1..X_n) = S_n, with S_0 = 0 and S_j = dot(S_{j-1} ⊕ X_j, H), where
//! dot(a, b) = a·b·x⁻¹²⁸ in GF(2¹²⁸) modulo x¹²⁸ + x¹²⁷ + x¹²⁶ + x¹²¹ + 1.

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

use polyval::universal_hash::UniversalHash;

/// A POLYVAL key (the hash key H, expanded); zeroized on drop.
pub struct Polyval {
    backend: Backend,
}

// One per volume's keys, hashed from in place: the size is no concern, an indirection would be.
#[allow(clippy::large_enum_variant)]
enum Backend {
    #[cfg(target_arch = "x86_64")]
    Wide(x86::Powers),
    /// The crate, keyed; cloned for each hash.
    Crate(polyval::Polyval),
}

impl Polyval {
    /// Keys POLYVAL with `h`, on the fastest backend this CPU runs.
    pub fn new(h: &[u8; 16]) -> Polyval {
        #[cfg(target_arch = "x86_64")]
        if let Some(p) = x86::Powers::new(h) {
            return Polyval {
                backend: Backend::Wide(p),
            };
        }
        Polyval::with_crate(h)
    }

    /// The 256-bit backend even on a CPU with AVX-512 (so that tests cover both); `None`
    /// without VPCLMULQDQ.
    #[cfg(all(test, target_arch = "x86_64"))]
    pub fn with_256(h: &[u8; 16]) -> Option<Polyval> {
        x86::Powers::new_256(h).map(|p| Polyval {
            backend: Backend::Wide(p),
        })
    }

    /// Keys POLYVAL on the `polyval` crate whatever the CPU (the reference in tests).
    pub fn with_crate(h: &[u8; 16]) -> Polyval {
        Polyval {
            backend: Backend::Crate(polyval::Polyval::new(&polyval::Key::from(*h))),
        }
    }

    /// POLYVAL over the concatenation of `parts`, each a whole number of 16-byte blocks.
    ///
    /// # Panics
    /// If a part is not a multiple of 16 bytes (a caller's bug: the MAC's inputs are 4 KiB
    /// blocks and a 32-byte trailer).
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 16] {
        assert!(
            parts.iter().all(|p| p.len() % 16 == 0),
            "POLYVAL input in whole 16-byte blocks"
        );
        match &self.backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Wide(p) => p.hash(parts),
            Backend::Crate(c) => {
                let mut c = c.clone();
                for part in parts {
                    c.update_padded(part);
                }
                c.finalize().into()
            }
        }
    }

    /// Which backend hashes: "vpclmulqdq-512", "vpclmulqdq" (256-bit) or "polyval-crate"
    /// (for benchmarks and logs).
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            #[cfg(target_arch = "x86_64")]
            Backend::Wide(p) if p.is_512() => "vpclmulqdq-512",
            Backend::Wide(_) => "vpclmulqdq",
            Backend::Crate(_) => "polyval-crate",
        }
    }
}
