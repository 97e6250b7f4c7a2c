//! Cryptographic primitives, and nothing else: zeroizing key types, AES-256-GCM sealing,
//! key derivation (blake3 contexts, Argon2id) and the system random source.
//!
//! This layer knows no file, no key id and no policy. Everything above it (kms, volume)
//! gets keys and ciphertext from here and decides what they mean.

pub mod aead;
pub mod hardening;
pub mod kdf;
pub mod random;
pub mod secret;
pub mod xts;

pub use aead::{NONCE_LEN, OpenError, TAG_LEN};
pub use secret::{Key256, SecretBytes};
