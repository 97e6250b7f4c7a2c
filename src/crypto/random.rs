//! The one place cryptvol asks the operating system for random bytes.

/// Fills `buf` from the kernel's CSPRNG (getrandom(2)).
///
/// Failure here means the kernel cannot give randomness at all; no key, nonce or id may be
/// made without it, so this aborts the operation by panicking rather than returning weak
/// bytes. On Linux ≥ 3.17 it does not fail once the pool is initialised.
pub fn fill(buf: &mut [u8]) {
    getrandom::fill(buf).expect("the kernel's random source (getrandom) failed");
}

/// A random array of `N` bytes (nonces, salts).
pub fn array<const N: usize>() -> [u8; N] {
    let mut a = [0u8; N];
    fill(&mut a);
    a
}
