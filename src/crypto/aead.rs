//! AES-256-GCM with detached nonce and tag, the only AEAD cryptvol uses for sealing keys,
//! keystores and KMS ciphertext blobs. Callers own the layout of nonce, ciphertext and tag
//! in their formats (see docs/formats.md); this module only seals and opens.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit};

use super::secret::{Key256, SecretBytes};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// Authentication failed: wrong key, wrong associated data, or altered bytes. GCM cannot
/// tell these apart, and callers must not guess; they report what they were opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct OpenError;

fn cipher(key: &Key256) -> Aes256Gcm {
    Aes256Gcm::new(key.expose().into())
}

/// Encrypts `buf` in place and returns the tag.
pub fn seal_in_place(
    key: &Key256,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> [u8; TAG_LEN] {
    let tag = cipher(key)
        .encrypt_inout_detached(nonce.into(), aad, buf.into())
        // Only fails for plaintexts over 64 GiB, which no caller builds.
        .expect("AES-GCM input within limits");
    tag.into()
}

/// Decrypts `buf` in place if the tag verifies; on failure `buf` is zeroed so no unverified
/// plaintext survives.
pub fn open_in_place(
    key: &Key256,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), OpenError> {
    let res = cipher(key).decrypt_inout_detached(nonce.into(), aad, buf.into(), tag.into());
    if res.is_err() {
        zeroize::Zeroize::zeroize(buf);
        return Err(OpenError);
    }
    Ok(())
}

/// Seals a secret into `nonce || ciphertext || tag` with a fresh random nonce.
pub fn seal_secret(key: &Key256, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = super::random::array();
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let tag = seal_in_place(key, &nonce, aad, &mut out[NONCE_LEN..]);
    out.extend_from_slice(&tag);
    out
}

/// Opens what [`seal_secret`] made.
pub fn open_secret(key: &Key256, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes, OpenError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(OpenError);
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = SecretBytes::new(ct.to_vec());
    open_in_place(
        key,
        nonce.try_into().expect("split at NONCE_LEN"),
        aad,
        buf.expose_mut(),
        tag.try_into().expect("split at TAG_LEN"),
    )?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_and_aad_binding() {
        let k = Key256::generate();
        let sealed = seal_secret(&k, b"aad", b"secret");
        assert_eq!(
            open_secret(&k, b"aad", &sealed).unwrap().expose(),
            b"secret"
        );
        assert_eq!(open_secret(&k, b"other", &sealed), Err(OpenError));
        assert_eq!(
            open_secret(&Key256::generate(), b"aad", &sealed),
            Err(OpenError)
        );
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert_eq!(open_secret(&k, b"aad", &t), Err(OpenError), "byte {i}");
        }
        assert_eq!(open_secret(&k, b"aad", &sealed[..20]), Err(OpenError));
    }

    /// NIST GCM test vector (gcmEncryptExtIV256.rsp, Count 0 with 128-bit PT, from
    /// McGrew & Viega's "The Galois/Counter Mode of Operation", test case 14):
    /// K = 0^256, IV = 0^96, P = 0^128.
    #[test]
    fn known_answer_test_case_14() {
        let k = Key256::from_bytes([0u8; 32]);
        let mut buf = [0u8; 16];
        let tag = seal_in_place(&k, &[0u8; 12], b"", &mut buf);
        assert_eq!(hex::encode(buf), "cea7403d4d606b6e074ec5d3baf39d18");
        assert_eq!(hex::encode(tag), "d0d1c8a799996bf0265b98b5d48ab919");
    }
}
