//! Key derivation: blake3 `derive_key` with fixed, named context strings, and Argon2id for
//! passphrases. A context string names exactly one use of a key; changing one makes every
//! key derived under it different, so they are part of the on-disk format (docs/formats.md).

use argon2::{Algorithm, Argon2, Params, Version};

use super::secret::{Key256, SecretBytes};

/// Root key → key that seals the region keystore file.
pub const CTX_KEYSTORE_SEAL: &str = "cryptvol 2026-11-29 region keystore seal v1";
/// Root key → key that seals each CMK version's material inside the keystore.
pub const CTX_KEY_VERSION_SEAL: &str = "cryptvol 2026-11-29 cmk version seal v1";
/// Root key → 16-byte check value kept in region.json to tell a wrong passphrase from a
/// damaged keystore.
pub const CTX_ROOT_KEY_CHECK: &str = "cryptvol 2026-11-29 root key check v1";
/// CMK version material + per-blob salt → the AES-256-GCM key of one ciphertext blob.
pub const CTX_BLOB_KEY: &str = "cryptvol 2026-11-29 kms blob message key v1";

/// Root key ‖ region name → the key of the region's audit hash chain (keyed blake3), so
/// only a holder of the root key can forge or re-chain events.
pub const CTX_AUDIT_CHAIN: &str = "cryptvol 2026-11-29 audit trail chain v1";

/// Volume data key (64 B) → the 64-byte AES-256-XTS key (K1 ‖ K2) of its blocks.
pub const CTX_VOLUME_XTS: &str = "cryptvol 2026-11-29 volume aes-256-xts key v1";
/// Customer-provided key ‖ salt → the volume's 64-byte data key.
pub const CTX_CUSTOMER_DEK: &str = "cryptvol 2026-11-29 customer key to data key v1";
/// Customer-provided key ‖ salt → 32-byte verifier kept in the volume header.
pub const CTX_CUSTOMER_VERIFIER: &str = "cryptvol 2026-11-29 customer key verifier v1";
/// Volume data key → the key of the key check kept in the volume header
/// (`volume::key_check`): keyed blake3 of the volume's lineage id.
pub const CTX_DATA_KEY_CHECK: &str = "cryptvol 2026-12-02 volume data key check v1";
/// Root key ‖ region name → the key that authenticates the grant tokens a region issues.
pub const CTX_GRANT_TOKEN: &str = "cryptvol 2026-11-29 kms grant token v1";

/// Root key ‖ key id ‖ version number → the `KeyMaterialId` of a key version
/// written before random ids were stored (src/kms/keystore.rs).
pub const CTX_KEY_MATERIAL_ID: &str = "cryptvol 2026-11-29 key material id v1";
/// Root key → the key that seals a rotated region's derivation key (its first root key)
/// inside the keystore (src/kms/keystore.rs, `derivation_key`).
pub const CTX_DERIVATION_KEY_SEAL: &str = "cryptvol 2026-12-03 region derivation key seal v1";
/// Root key → the key that seals the audit chain's successor keys (one per root-key
/// rotation) inside the keystore (src/kms/keystore.rs, `audit_chain_keys`).
pub const CTX_AUDIT_CHAIN_KEY_SEAL: &str = "cryptvol 2026-12-03 audit chain key seal v1";
/// Root key ‖ region name → the key that authenticates list paging markers.
/// The seal of a region's Secrets Manager store (secrets/store.cvsm).
pub const CTX_SECRETS_STORE_SEAL: &str = "cryptvol 2026-12-03 secrets manager store seal v1";
/// A secret version's value digest (idempotent requests compare values by it).
pub const CTX_SECRET_VALUE_DIGEST: &str = "cryptvol 2026-12-03 secret value digest v1";
pub const CTX_LIST_MARKER: &str = "cryptvol 2026-11-29 list paging marker v1";
/// An authenticated volume's keys, from its data key: the per-block MAC key, the key of the
/// root over its MAC records, the key its anchor is sealed under.
pub const CTX_BLOCK_MAC: &str = "cryptvol 2026-12-02 volume block mac v1";
/// The keys of the POLYVAL-AES block MAC (48 bytes: POLYVAL key, then AES-256 key).
pub const CTX_BLOCK_MAC_POLYVAL: &str = "cryptvol 2026-12-02 volume block mac polyval-aes v1";
pub const CTX_INTEGRITY_ROOT: &str = "cryptvol 2026-12-02 volume integrity root v1";
pub const CTX_ANCHOR_SEAL: &str = "cryptvol 2026-12-02 volume anchor seal v1";
/// A volume's XTS tweak domain, from its id (volume::integrity::domain_of).
pub const CTX_TWEAK_DOMAIN: &str = "cryptvol 2026-12-02 volume tweak domain v1";

/// The key an archived snapshot's chunk list is sealed under, from its data key.
pub const CTX_SNAPSHOT_MANIFEST: &str = "cryptvol 2026-12-01 snapshot manifest key v1";

/// `blake3::derive_key(context, input)` stretched to `out.len()` bytes (blake3's XOF):
/// for keys that are not 32 bytes, such as the 64-byte XTS key.
pub fn derive_into(context: &str, input: &[&[u8]], out: &mut [u8]) {
    let mut h = blake3::Hasher::new_derive_key(context);
    for part in input {
        h.update(part);
    }
    h.finalize_xof().fill(out);
}

/// `blake3::derive_key(context, key || extra)`: a subkey bound to one purpose and, through
/// `extra`, to one object (for example a blob's random salt).
pub fn derive(context: &str, key: &Key256, extra: &[u8]) -> Key256 {
    let mut h = blake3::Hasher::new_derive_key(context);
    h.update(key.expose());
    h.update(extra);
    let mut out = [0u8; 32];
    h.finalize_xof().fill(&mut out);
    let k = Key256::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    k
}

/// Argon2id cost parameters, stored beside the salt so a region opens with the costs it was
/// made with even after the defaults change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Argon2Cost {
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Argon2Cost {
    /// 64 MiB, 3 passes, 1 lane: about 0.2 s on this machine kind, OWASP's second
    /// recommended setting; costs an attacker the same memory per guess.
    pub const DEFAULT: Argon2Cost = Argon2Cost {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
}

#[derive(Debug, thiserror::Error)]
#[error("invalid Argon2id parameters: {0}")]
pub struct KdfError(String);

/// Stretches a passphrase into a 256-bit key.
pub fn passphrase_key(
    passphrase: &SecretBytes,
    salt: &[u8],
    cost: Argon2Cost,
) -> Result<Key256, KdfError> {
    let params = Params::new(cost.m_cost_kib, cost.t_cost, cost.p_cost, Some(32))
        .map_err(|e| KdfError(e.to_string()))?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(passphrase.expose(), salt, &mut out)
        .map_err(|e| KdfError(e.to_string()))?;
    let k = Key256::from_bytes(out);
    zeroize::Zeroize::zeroize(&mut out);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_separate_keys() {
        let root = Key256::from_bytes([7u8; 32]);
        let a = derive(CTX_KEYSTORE_SEAL, &root, b"");
        let b = derive(CTX_KEY_VERSION_SEAL, &root, b"");
        let c = derive(CTX_BLOB_KEY, &root, b"salt");
        let d = derive(CTX_BLOB_KEY, &root, b"salu");
        assert_ne!(a.expose(), b.expose());
        assert_ne!(c.expose(), d.expose());
        assert_eq!(
            derive(CTX_KEYSTORE_SEAL, &root, b"").expose(),
            a.expose(),
            "derivation is deterministic"
        );
    }

    #[test]
    fn passphrase_key_depends_on_passphrase_and_salt() {
        let cheap = Argon2Cost {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let p1 = SecretBytes::new(b"correct horse".to_vec());
        let p2 = SecretBytes::new(b"correct horsf".to_vec());
        let salt = [1u8; 16];
        let k1 = passphrase_key(&p1, &salt, cheap).unwrap();
        assert_eq!(
            k1.expose(),
            passphrase_key(&p1, &salt, cheap).unwrap().expose()
        );
        assert_ne!(
            k1.expose(),
            passphrase_key(&p2, &salt, cheap).unwrap().expose()
        );
        assert_ne!(
            k1.expose(),
            passphrase_key(&p1, &[2u8; 16], cheap).unwrap().expose()
        );
    }
}
