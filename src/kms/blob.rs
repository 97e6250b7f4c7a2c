//! The KMS ciphertext blob: what Encrypt and GenerateDataKey return and Decrypt takes.
//! Self-describing, so Decrypt finds the region, key and key version without being told.
//! Byte layout in docs/formats.md, "KMS ciphertext blob"; this module is its only reader
//! and writer.
//!
//! Each blob is sealed with its own AES-256-GCM key, derived from the CMK version material
//! and a random 16-byte salt (`kdf::CTX_BLOB_KEY`), so no GCM key ever sees more than one
//! nonce and a CMK version can seal any number of blobs, as AWS KMS does with HKDF.

use super::context::EncryptionContext;
use super::ids::KeyId;
use crate::aws::ids::Region;
use crate::crypto::{self, Key256, NONCE_LEN, OpenError, SecretBytes, TAG_LEN, kdf};
use crate::hsm::{HsmError, ObjectRef, Token};

pub const MAGIC: [u8; 3] = *b"CVK";
pub const FORMAT_V1: u8 = 1;
pub const SALT_LEN: usize = 16;

// Offsets of the fixed-size fields that follow the region name; each is the previous
// field's offset plus its size, so code and docs/formats.md cannot drift apart.
const OFF_REGION_LEN: usize = MAGIC.len() + 1;
const OFF_REGION: usize = OFF_REGION_LEN + 1;
const KEY_ID_LEN: usize = 16;
const VERSION_LEN: usize = 4;
/// Bytes after the region name and before the ciphertext: key id, version, salt, nonce.
const FIXED_AFTER_REGION: usize = KEY_ID_LEN + VERSION_LEN + SALT_LEN + NONCE_LEN;

/// The readable part of a blob: everything but the ciphertext and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobHeader {
    pub region: Region,
    pub key_id: KeyId,
    pub key_version: u32,
    pub salt: [u8; SALT_LEN],
    pub nonce: [u8; NONCE_LEN],
}

/// A parsed blob that has not been authenticated yet.
#[derive(Debug)]
pub struct ParsedBlob<'a> {
    pub header: BlobHeader,
    /// Bytes authenticated as AAD (magic through nonce), before the context is appended.
    header_bytes: &'a [u8],
    ciphertext: &'a [u8],
    tag: [u8; TAG_LEN],
}

/// Why a byte string is not a blob. Kept apart from authentication failure so that the
/// user hears "this is not a cryptvol blob" rather than "wrong context".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobFormatError {
    #[error("is too short to be a cryptvol KMS ciphertext ({0} bytes)")]
    TooShort(usize),
    #[error("is not a cryptvol KMS ciphertext (bad magic)")]
    BadMagic,
    #[error(
        "was written by a newer cryptvol (format version {0}; this one reads {FORMAT_V1}): upgrade cryptvol"
    )]
    NewerVersion(u8),
    #[error("has format version {0}, which no cryptvol writes (damaged)")]
    UnknownVersion(u8),
    #[error("has a malformed region name")]
    BadRegion,
}

/// Smallest possible blob: 1-byte region, no plaintext.
pub const MIN_LEN: usize = OFF_REGION + 1 + FIXED_AFTER_REGION + TAG_LEN;

/// Length of a blob for a region name of `region_len` bytes and `plaintext_len` bytes.
pub fn blob_len(region_len: usize, plaintext_len: usize) -> usize {
    OFF_REGION + region_len + FIXED_AFTER_REGION + plaintext_len + TAG_LEN
}

/// Seals `plaintext` under CMK version material `material`.
pub fn seal(
    region: &Region,
    key_id: &KeyId,
    key_version: u32,
    material: &Key256,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Vec<u8> {
    let (salt, nonce) = fresh_salt_nonce();
    seal_with(
        region,
        key_id,
        key_version,
        material,
        context,
        plaintext,
        salt,
        nonce,
    )
}

/// A new data key of `len` random bytes, sealed under `material` (GenerateDataKey): the
/// key, the blob's salt and its nonce come from one read of the kernel's random source
/// instead of three, into zeroizing memory.
pub fn seal_new_key(
    region: &Region,
    key_id: &KeyId,
    key_version: u32,
    material: &Key256,
    context: &EncryptionContext,
    len: usize,
) -> (SecretBytes, Vec<u8>) {
    let mut drawn = SecretBytes::new(vec![0u8; len + SALT_LEN + NONCE_LEN]);
    crypto::random::fill(drawn.expose_mut());
    let tail = &drawn.expose()[len..];
    let salt: [u8; SALT_LEN] = tail[..SALT_LEN].try_into().expect("salt");
    let nonce: [u8; NONCE_LEN] = tail[SALT_LEN..].try_into().expect("nonce");
    // Salt and nonce are no secret (the blob carries them): cut them off the key.
    drawn.expose_mut().truncate(len);
    let blob = seal_with(
        region,
        key_id,
        key_version,
        material,
        context,
        drawn.expose(),
        salt,
        nonce,
    );
    (drawn, blob)
}

#[allow(clippy::too_many_arguments)]
fn seal_with(
    region: &Region,
    key_id: &KeyId,
    key_version: u32,
    material: &Key256,
    context: &EncryptionContext,
    plaintext: &[u8],
    salt: [u8; SALT_LEN],
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let (mut out, aad) = start(
        region,
        key_id,
        key_version,
        context,
        plaintext.len(),
        &salt,
        &nonce,
    );
    let header_len = out.len();
    out.extend_from_slice(plaintext);
    let key = kdf::derive(kdf::CTX_BLOB_KEY, material, &salt);
    let tag = crypto::aead::seal_in_place(&key, &nonce, &aad, &mut out[header_len..]);
    out.extend_from_slice(&tag);
    out
}

/// Seals `plaintext` with AES-256-GCM run inside a token, under the key object `object`
/// that is the CMK version's material (a key in a custom key store). The layout is the
/// same as [`seal`]'s; the salt is random and authenticated but derives nothing, since
/// the token's key is used directly (docs/formats.md, docs/security.md).
#[allow(clippy::too_many_arguments)]
pub fn seal_in_token(
    region: &Region,
    key_id: &KeyId,
    key_version: u32,
    token: &Token,
    object: &ObjectRef,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, HsmError> {
    let (salt, nonce) = fresh_salt_nonce();
    let (mut out, aad) = start(
        region,
        key_id,
        key_version,
        context,
        plaintext.len(),
        &salt,
        &nonce,
    );
    let sealed = token.encrypt_gcm(object, &nonce, &aad, plaintext)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// A new blob's random salt and nonce, from one read of the kernel's random source.
fn fresh_salt_nonce() -> ([u8; SALT_LEN], [u8; NONCE_LEN]) {
    let drawn: [u8; SALT_LEN + NONCE_LEN] = crypto::random::array();
    (
        drawn[..SALT_LEN].try_into().expect("salt"),
        drawn[SALT_LEN..].try_into().expect("nonce"),
    )
}

/// The header of a new blob with its salt and nonce, and its AAD: header then context.
fn start(
    region: &Region,
    key_id: &KeyId,
    key_version: u32,
    context: &EncryptionContext,
    plaintext_len: usize,
    salt: &[u8; SALT_LEN],
    nonce: &[u8; NONCE_LEN],
) -> (Vec<u8>, Vec<u8>) {
    let r = region.as_str().as_bytes();
    let mut out = Vec::with_capacity(blob_len(r.len(), plaintext_len));
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_V1);
    out.push(r.len() as u8);
    out.extend_from_slice(r);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&key_version.to_le_bytes());
    out.extend_from_slice(salt);
    out.extend_from_slice(nonce);
    let mut aad = Vec::with_capacity(out.len() + 64);
    aad.extend_from_slice(&out);
    context.encode_into(&mut aad);
    (out, aad)
}

/// Whether `blob` is another KMS's ciphertext (AWS KMS's own, say) rather than a
/// damaged cryptvol one: long enough to be a blob, but without cryptvol's magic. No
/// cryptvol KMS opens it; its key lives in the remote KMS that made it.
pub fn is_foreign(blob: &[u8]) -> bool {
    blob.len() >= MIN_LEN && blob[..MAGIC.len()] != MAGIC
}

/// Reads the header without any key. Does not authenticate anything.
pub fn parse(blob: &[u8]) -> Result<ParsedBlob<'_>, BlobFormatError> {
    if blob.len() < MIN_LEN {
        return Err(BlobFormatError::TooShort(blob.len()));
    }
    if blob[..MAGIC.len()] != MAGIC {
        return Err(BlobFormatError::BadMagic);
    }
    let version = blob[MAGIC.len()];
    if version > FORMAT_V1 {
        return Err(BlobFormatError::NewerVersion(version));
    }
    if version != FORMAT_V1 {
        return Err(BlobFormatError::UnknownVersion(version));
    }
    let rlen = blob[OFF_REGION_LEN] as usize;
    if rlen == 0 || rlen > Region::MAX_LEN {
        return Err(BlobFormatError::BadRegion);
    }
    let header_len = OFF_REGION + rlen + FIXED_AFTER_REGION;
    if blob.len() < header_len + TAG_LEN {
        return Err(BlobFormatError::TooShort(blob.len()));
    }
    let region = std::str::from_utf8(&blob[OFF_REGION..OFF_REGION + rlen])
        .ok()
        .and_then(|s| Region::parse(s).ok())
        .ok_or(BlobFormatError::BadRegion)?;
    let mut p = OFF_REGION + rlen;
    let mut take = |n: usize| {
        let s = &blob[p..p + n];
        p += n;
        s
    };
    let key_id = KeyId::from_bytes(take(KEY_ID_LEN).try_into().expect("16 bytes"));
    let key_version = u32::from_le_bytes(take(VERSION_LEN).try_into().expect("4 bytes"));
    let salt = take(SALT_LEN).try_into().expect("salt");
    let nonce = take(NONCE_LEN).try_into().expect("nonce");
    let (ciphertext, tag) = blob[header_len..].split_at(blob.len() - header_len - TAG_LEN);
    Ok(ParsedBlob {
        header: BlobHeader {
            region,
            key_id,
            key_version,
            salt,
            nonce,
        },
        header_bytes: &blob[..header_len],
        ciphertext,
        tag: tag.try_into().expect("tag"),
    })
}

impl ParsedBlob<'_> {
    pub fn plaintext_len(&self) -> usize {
        self.ciphertext.len()
    }

    /// Authenticates and decrypts with the material of the version the header names.
    pub fn open(
        &self,
        material: &Key256,
        context: &EncryptionContext,
    ) -> Result<SecretBytes, OpenError> {
        let mut aad = Vec::with_capacity(self.header_bytes.len() + 64);
        aad.extend_from_slice(self.header_bytes);
        context.encode_into(&mut aad);
        let key = kdf::derive(kdf::CTX_BLOB_KEY, material, &self.header.salt);
        let mut buf = SecretBytes::new(self.ciphertext.to_vec());
        crypto::aead::open_in_place(&key, &self.header.nonce, &aad, buf.expose_mut(), &self.tag)?;
        Ok(buf)
    }

    /// Authenticates and decrypts inside the token holding the version's key object
    /// (what [`seal_in_token`] made).
    pub fn open_in_token(
        &self,
        token: &Token,
        object: &ObjectRef,
        context: &EncryptionContext,
    ) -> Result<SecretBytes, HsmError> {
        let mut aad = Vec::with_capacity(self.header_bytes.len() + 64);
        aad.extend_from_slice(self.header_bytes);
        context.encode_into(&mut aad);
        let mut sealed = Vec::with_capacity(self.ciphertext.len() + TAG_LEN);
        sealed.extend_from_slice(self.ciphertext);
        sealed.extend_from_slice(&self.tag);
        token.decrypt_gcm(object, &self.header.nonce, &aad, &sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture() -> (Region, KeyId, Key256, EncryptionContext) {
        (
            Region::parse("local-1").unwrap(),
            KeyId::random(),
            Key256::generate(),
            EncryptionContext::single("cryptvol:lineage", "vol-0123456789abcdef0"),
        )
    }

    #[test]
    fn roundtrip_and_layout() {
        let (r, id, m, ctx) = fixture();
        let blob = seal(&r, &id, 3, &m, &ctx, &[9u8; 64]);
        assert!(!is_foreign(&blob));
        // 3 magic + 1 version + 1 region len + 7 region + 16 id + 4 version + 16 salt
        // + 12 nonce + 64 ciphertext + 16 tag (docs/formats.md worked size).
        assert_eq!(blob.len(), 140);
        assert_eq!(blob.len(), blob_len(7, 64));
        assert_eq!(&blob[..5], b"CVK\x01\x07");
        let p = parse(&blob).unwrap();
        assert_eq!(p.header.key_id, id);
        assert_eq!(p.header.key_version, 3);
        assert_eq!(p.header.region, r);
        assert_eq!(p.open(&m, &ctx).unwrap().expose(), &[9u8; 64]);
        assert!(p.open(&m, &EncryptionContext::new()).is_err());
        assert!(p.open(&Key256::generate(), &ctx).is_err());
    }

    /// A new data key opens from its blob; keys, salts and nonces differ between calls,
    /// and the key is not the salt and nonce drawn with it.
    #[test]
    fn a_new_key_opens_and_is_fresh() {
        let (r, id, m, ctx) = fixture();
        let (k1, b1) = seal_new_key(&r, &id, 2, &m, &ctx, 64);
        let (k2, b2) = seal_new_key(&r, &id, 2, &m, &ctx, 64);
        assert_eq!(k1.len(), 64);
        assert_eq!(b1.len(), blob_len(7, 64));
        let (p1, p2) = (parse(&b1).unwrap(), parse(&b2).unwrap());
        assert_eq!(p1.open(&m, &ctx).unwrap(), k1);
        assert_eq!(p2.open(&m, &ctx).unwrap(), k2);
        assert_ne!(k1, k2);
        assert_ne!(p1.header.salt, p2.header.salt);
        assert_ne!(p1.header.nonce, p2.header.nonce);
        assert!(!k1.expose().windows(SALT_LEN).any(|w| w == p1.header.salt));
    }

    #[test]
    fn format_errors_are_named() {
        assert_eq!(parse(b"short").unwrap_err(), BlobFormatError::TooShort(5));
        let (r, id, m, ctx) = fixture();
        let mut blob = seal(&r, &id, 1, &m, &ctx, b"x");
        blob[0] = b'X';
        assert_eq!(parse(&blob).unwrap_err(), BlobFormatError::BadMagic);
        assert!(is_foreign(&blob));
        assert!(
            !is_foreign(&blob[..MIN_LEN - 1]),
            "too short to be anyone's blob"
        );
        blob[0] = b'C';
        blob[3] = 9;
        assert_eq!(parse(&blob).unwrap_err(), BlobFormatError::NewerVersion(9));
        blob[3] = 0;
        assert_eq!(
            parse(&blob).unwrap_err(),
            BlobFormatError::UnknownVersion(0)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any single-byte change of a blob makes it fail to parse or to open.
        #[test]
        fn any_byte_change_of_the_blob_fails(
            plaintext in proptest::collection::vec(any::<u8>(), 1..200),
            pos in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let (r, id, m, ctx) = fixture();
            let mut blob = seal(&r, &id, 1, &m, &ctx, &plaintext);
            let i = pos.index(blob.len());
            blob[i] ^= flip;
            let opened = parse(&blob).ok().and_then(|p| p.open(&m, &ctx).ok());
            prop_assert!(opened.is_none(), "byte {} changed, blob still opened", i);
        }

        /// Any single-byte change of any key or value of the context makes open fail.
        #[test]
        fn any_byte_change_of_the_context_fails(
            k in "[a-z:]{1,20}", v in "[a-z0-9-]{0,30}",
            which in any::<bool>(), pos in any::<prop::sample::Index>(), flip in 1u8..=127,
        ) {
            let (r, id, m, _) = fixture();
            let ctx = EncryptionContext::single(&k, &v);
            let blob = seal(&r, &id, 1, &m, &ctx, b"data key");
            let (mut k2, mut v2) = (k.clone().into_bytes(), v.clone().into_bytes());
            let target = if which || v2.is_empty() { &mut k2 } else { &mut v2 };
            let i = pos.index(target.len());
            target[i] ^= flip;
            let (k2, v2) = (String::from_utf8(k2).unwrap(), String::from_utf8(v2).unwrap());
            let changed = EncryptionContext::single(&k2, &v2);
            prop_assert!(parse(&blob).unwrap().open(&m, &changed).is_err());
        }
    }
}
