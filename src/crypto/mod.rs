//! Cryptographic primitives, and nothing else: zeroizing key types, AES-256-GCM sealing,
//! the AES-256-XTS block engine, key derivation (blake3 contexts, Argon2id), the system
//! random source, and keeping keys out of swap and core dumps.
//!
//! This layer knows no file, no key id and no policy. Everything above it (kms, volume)
//! gets keys and ciphertext from here and decides what they mean.

pub mod aead;
pub mod hardening;
pub mod kdf;
pub mod polyval;
pub mod random;
pub mod secret;
pub mod xts;

pub use aead::{NONCE_LEN, OpenError, TAG_LEN};
pub use secret::{Key256, SecretBytes};
