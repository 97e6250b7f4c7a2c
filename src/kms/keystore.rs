//! The region keystore file (`keystore.cvks`): a fixed header and an AES-256-GCM-sealed
//! JSON body (docs/formats.md, "Keystore file"), plus the in-memory form that holds each
//! CMK version's material unsealed (zeroized on drop).
//!
//! Writes go through `fsio::write_atomic`; serialising writers is the caller's job
//! (`EmbeddedKms` holds the region lock around read-modify-write).

use std::collections::HashMap;
use std::path::Path;

use super::ids::KeyId;
use super::model::{KeyVersion, KeystoreBody};
use crate::aws::error::{AwsError, Result};
use crate::aws::ids::Region;
use crate::crypto::{self, Key256, NONCE_LEN, TAG_LEN, kdf};
use crate::sys::fsio;

pub const MAGIC: [u8; 8] = *b"CVKSTORE";
pub const FORMAT_V1: u16 = 1;

const OFF_FORMAT: usize = MAGIC.len();
const OFF_RESERVED: usize = OFF_FORMAT + 2;
const OFF_GENERATION: usize = OFF_RESERVED + 2;
const OFF_NONCE: usize = OFF_GENERATION + 8;
const OFF_BODY_LEN: usize = OFF_NONCE + NONCE_LEN;
/// Header size; the header is the AAD of the body.
pub const HEADER_LEN: usize = OFF_BODY_LEN + 4;

/// A loaded keystore: the body plus unsealed version material.
pub struct Keystore {
    pub body: KeystoreBody,
    /// Incremented on every write; lets a reader see that the file changed.
    pub generation: u64,
    materials: HashMap<(KeyId, u32), Key256>,
    /// The unsealed `body.derivation_key`, if the root was ever rotated.
    derivation: Option<Key256>,
    /// The unsealed `body.audit_chain_keys` (epochs 1, 2, ...).
    audit_successors: Vec<Key256>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystore")
            .field("region", &self.body.region)
            .field("keys", &self.body.keys.len())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// AAD that binds a sealed version to its key and number: "cmk-version" || id || number.
fn version_aad(id: &KeyId, number: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(11 + 16 + 4);
    aad.extend_from_slice(b"cmk-version");
    aad.extend_from_slice(id.as_bytes());
    aad.extend_from_slice(&number.to_le_bytes());
    aad
}

/// AAD of an audit chain successor key: "region-audit-chain-key" || region name || epoch
/// (u32 LE), so keys cannot be moved between regions or epochs.
fn audit_key_aad(region: &Region, epoch: u32) -> Vec<u8> {
    [
        b"region-audit-chain-key".as_slice(),
        region.as_str().as_bytes(),
        &epoch.to_le_bytes(),
    ]
    .concat()
}

/// AAD of the sealed derivation key: "region-derivation-key" || region name.
fn derivation_aad(region: &Region) -> Vec<u8> {
    [
        b"region-derivation-key".as_slice(),
        region.as_str().as_bytes(),
    ]
    .concat()
}

impl Keystore {
    pub fn new(body: KeystoreBody) -> Self {
        Keystore {
            body,
            generation: 0,
            materials: HashMap::new(),
            derivation: None,
            audit_successors: Vec::new(),
        }
    }

    /// The keys of the region's audit chain: epoch 0 derived from the derivation key, then
    /// one successor per root-key rotation.
    pub fn audit_chain_keys(&self, root: &Key256) -> crate::audit::ChainKeys {
        let first = kdf::derive(
            kdf::CTX_AUDIT_CHAIN,
            &self.derivation_key(root),
            self.body.region.as_str().as_bytes(),
        );
        crate::audit::ChainKeys::new(first, self.audit_successors.iter().cloned())
    }

    /// Material of one version, if the key and version exist.
    pub fn material(&self, id: &KeyId, number: u32) -> Option<&Key256> {
        self.materials.get(&(*id, number))
    }

    /// Makes a new version of key `id` from fresh random material, sealed under `root`.
    /// The caller appends the returned record to the key.
    pub fn new_version(
        &mut self,
        root: &Key256,
        id: &KeyId,
        number: u32,
        created: i64,
        origin: super::model::VersionOrigin,
    ) -> KeyVersion {
        let material = Key256::generate();
        let seal_key = kdf::derive(kdf::CTX_KEY_VERSION_SEAL, root, b"");
        let sealed =
            crypto::aead::seal_secret(&seal_key, &version_aad(id, number), material.expose());
        self.materials.insert((*id, number), material);
        KeyVersion {
            number,
            created,
            origin,
            sealed,
            material_id: Some(hex::encode(crate::crypto::random::array::<32>())),
            token_object: None,
        }
    }

    /// A version whose material is the AES key object `object` (its `CKA_ID`) in a custom
    /// key store's token: nothing to seal or keep here.
    pub fn token_version(
        number: u32,
        created: i64,
        origin: super::model::VersionOrigin,
        object: &[u8],
    ) -> KeyVersion {
        KeyVersion {
            number,
            created,
            origin,
            sealed: Vec::new(),
            material_id: Some(hex::encode(crate::crypto::random::array::<32>())),
            token_object: Some(hex::encode(object)),
        }
    }

    /// The key the region's audit chain, grant tokens, paging markers and legacy material
    /// ids are derived from: the region's first root key, which stays the same across
    /// root-key rotations so that those stay valid (docs/security.md says what that costs).
    pub fn derivation_key(&self, root: &Key256) -> Key256 {
        self.derivation.clone().unwrap_or_else(|| root.clone())
    }

    /// Re-seals everything sealed under `old` (every version's material and the derivation
    /// key) under `new`, for a root-key rotation; the next [`Keystore::save`] with `new`
    /// writes it. Material ids are already filled in the body, so they are kept as they are.
    pub fn reseal(&mut self, old: &Key256, new: &Key256) {
        let derivation = self.derivation_key(old);
        let region = self.body.region.clone();
        self.body.derivation_key = Some(super::model::SealedSecret(crypto::aead::seal_secret(
            &kdf::derive(kdf::CTX_DERIVATION_KEY_SEAL, new, b""),
            &derivation_aad(&region),
            derivation.expose(),
        )));
        self.derivation = Some(derivation);
        // The audit chain gets a successor: whoever kept the old root cannot extend the
        // chain after the rotation. The earlier keys stay, sealed anew, to verify the past.
        self.audit_successors.push(Key256::generate());
        let audit_seal = kdf::derive(kdf::CTX_AUDIT_CHAIN_KEY_SEAL, new, b"");
        self.body.audit_chain_keys = (1u32..)
            .zip(&self.audit_successors)
            .map(|(epoch, k)| {
                super::model::SealedSecret(crypto::aead::seal_secret(
                    &audit_seal,
                    &audit_key_aad(&region, epoch),
                    k.expose(),
                ))
            })
            .collect();
        let version_key = kdf::derive(kdf::CTX_KEY_VERSION_SEAL, new, b"");
        for (id, key) in self.body.keys.iter_mut() {
            for v in key.versions.iter_mut() {
                if let Some(m) = self.materials.get(&(*id, v.number)) {
                    v.sealed = crypto::aead::seal_secret(
                        &version_key,
                        &version_aad(id, v.number),
                        m.expose(),
                    );
                }
            }
        }
    }

    /// Drops (and so zeroizes) all material of key `id`: crypto-shredding.
    pub fn destroy_material(&mut self, id: &KeyId) {
        self.materials.retain(|(k, _), _| k != id);
    }

    /// Reads and opens the keystore of `region` at `path`.
    pub fn load(path: &Path, root: &Key256, region: &Region) -> Result<Keystore> {
        let bytes = std::fs::read(path).map_err(|e| AwsError::io("cannot read", path, e))?;
        if bytes.len() >= HEADER_LEN && bytes[..MAGIC.len()] == MAGIC {
            let format = u16::from_le_bytes([bytes[OFF_FORMAT], bytes[OFF_FORMAT + 1]]);
            if format > FORMAT_V1 {
                return Err(AwsError::NewerFormat {
                    what: format!("the keystore {}", path.display()),
                    found: format.into(),
                    newest: FORMAT_V1.into(),
                });
            }
        }
        Self::decode(&bytes, root, region).map_err(|what| AwsError::Corrupt {
            path: path.to_path_buf(),
            what,
        })
    }

    fn decode(
        bytes: &[u8],
        root: &Key256,
        region: &Region,
    ) -> std::result::Result<Keystore, String> {
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(format!("{} bytes is too short for a keystore", bytes.len()));
        }
        if bytes[..MAGIC.len()] != MAGIC {
            return Err("not a cryptvol keystore (bad magic)".into());
        }
        let format = u16::from_le_bytes([bytes[OFF_FORMAT], bytes[OFF_FORMAT + 1]]);
        if format != FORMAT_V1 {
            return Err(format!(
                "keystore format {format} is not one cryptvol ever wrote"
            ));
        }
        if bytes[OFF_RESERVED..OFF_GENERATION] != [0, 0] {
            return Err("reserved bytes 10..12 are not zero".into());
        }
        let generation =
            u64::from_le_bytes(bytes[OFF_GENERATION..OFF_NONCE].try_into().expect("8"));
        let nonce: [u8; NONCE_LEN] = bytes[OFF_NONCE..OFF_BODY_LEN].try_into().expect("12");
        let body_len =
            u32::from_le_bytes(bytes[OFF_BODY_LEN..HEADER_LEN].try_into().expect("4")) as usize;
        if bytes.len() != HEADER_LEN + body_len + TAG_LEN {
            return Err(format!(
                "length {} does not match the header's body length {body_len} (truncated?)",
                bytes.len()
            ));
        }
        let (header, rest) = bytes.split_at(HEADER_LEN);
        let (ct, tag) = rest.split_at(body_len);
        let seal_key = kdf::derive(kdf::CTX_KEYSTORE_SEAL, root, b"");
        let mut plain = crypto::SecretBytes::new(ct.to_vec());
        crypto::aead::open_in_place(
            &seal_key,
            &nonce,
            header,
            plain.expose_mut(),
            tag.try_into().expect("16"),
        )
        .map_err(|_| "the seal does not verify: the file was altered".to_string())?;
        let mut body: KeystoreBody = serde_json::from_slice(plain.expose())
            .map_err(|e| format!("the body is not a valid keystore: {e}"))?;
        if &body.region != region {
            return Err(format!(
                "it belongs to region {}, not {region}",
                body.region
            ));
        }
        let derivation = match &body.derivation_key {
            None => None,
            Some(sealed) => {
                let k = crypto::aead::open_secret(
                    &kdf::derive(kdf::CTX_DERIVATION_KEY_SEAL, root, b""),
                    &derivation_aad(region),
                    &sealed.0,
                )
                .map_err(|_| "the derivation key does not unseal".to_string())?;
                Some(
                    Key256::from_slice(k.expose())
                        .ok_or_else(|| "the derivation key is not 32 bytes".to_string())?,
                )
            }
        };
        let audit_seal = kdf::derive(kdf::CTX_AUDIT_CHAIN_KEY_SEAL, root, b"");
        let audit_successors = (1u32..)
            .zip(&body.audit_chain_keys)
            .map(|(epoch, sealed)| {
                crypto::aead::open_secret(&audit_seal, &audit_key_aad(region, epoch), &sealed.0)
                    .ok()
                    .and_then(|k| Key256::from_slice(k.expose()))
                    .ok_or_else(|| format!("audit chain key {epoch} does not unseal"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        fill_material_ids(&mut body, derivation.as_ref().unwrap_or(root));
        let version_key = kdf::derive(kdf::CTX_KEY_VERSION_SEAL, root, b"");
        let mut materials = HashMap::new();
        for (id, key) in &body.keys {
            if key.versions.is_empty() || &key.id != id {
                return Err(format!("key {id} has no versions or a mismatched id"));
            }
            if let Some(store) = &key.custom_key_store_id
                && !body.custom_key_stores.contains_key(store)
            {
                return Err(format!(
                    "key {id} is in custom key store {store}, which does not exist"
                ));
            }
            for v in &key.versions {
                if let Some(object) = &v.token_object {
                    // The material is in the token; a sealed part would be a contradiction.
                    if !v.sealed.is_empty() || key.custom_key_store_id.is_none() {
                        return Err(format!(
                            "key {id} version {} names a token object but is not a custom key store key",
                            v.number
                        ));
                    }
                    // A version names its own object and no other: one naming another
                    // key's object would use that material, and its key's deletion would
                    // shred the other key's object in the token.
                    if *object != hex::encode(token_object_id(id, v.number)) {
                        return Err(format!(
                            "key {id} version {} names token object {object}, not its own",
                            v.number
                        ));
                    }
                    continue;
                }
                let m =
                    crypto::aead::open_secret(&version_key, &version_aad(id, v.number), &v.sealed)
                        .map_err(|_| format!("key {id} version {} does not unseal", v.number))?;
                let m = Key256::from_slice(m.expose())
                    .ok_or_else(|| format!("key {id} version {} is not 32 bytes", v.number))?;
                materials.insert((*id, v.number), m);
            }
        }
        // Objects waiting to be destroyed are those of deleted keys: one of a live key
        // would be shredded at the store's next connection.
        for store in body.custom_key_stores.values() {
            for object in &store.objects_to_destroy {
                let live = hex::decode(object)
                    .ok()
                    .filter(|b| b.len() == 20)
                    .is_some_and(|b| {
                        let k = KeyId::from_bytes(b[..16].try_into().expect("20 bytes"));
                        body.keys.contains_key(&k)
                    });
                if live {
                    return Err(format!(
                        "custom key store {} lists object {object} of a live key for destruction",
                        store.id
                    ));
                }
            }
        }
        Ok(Keystore {
            body,
            generation,
            materials,
            derivation,
            audit_successors,
        })
    }

    fn encode(&self, root: &Key256, generation: u64) -> Vec<u8> {
        // Key material is sealed in the body, but a custom key store's PIN is in it in the
        // clear (the whole body is sealed below): the buffer is zeroized when dropped.
        let body = zeroize::Zeroizing::new(
            serde_json::to_vec(&self.body).expect("keystore body serialises"),
        );
        let nonce: [u8; NONCE_LEN] = crypto::random::array();
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_V1.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_LEN);
        out.extend_from_slice(&body);
        let seal_key = kdf::derive(kdf::CTX_KEYSTORE_SEAL, root, b"");
        let (header, ct) = out.split_at_mut(HEADER_LEN);
        let tag = crypto::aead::seal_in_place(&seal_key, &nonce, header, ct);
        out.extend_from_slice(&tag);
        out
    }

    /// Writes the keystore atomically and durably (mode 0600), bumping its generation.
    pub fn save(&mut self, path: &Path, root: &Key256) -> Result<()> {
        let next = self.generation + 1;
        let bytes = self.encode(root, next);
        fsio::write_atomic(path, &bytes, fsio::PRIVATE_FILE)
            .map_err(|e| AwsError::io("cannot write", path, e))?;
        self.generation = next;
        Ok(())
    }
}

/// The `CKA_ID` of version `number` of key `id` in its custom key store's token: the key
/// id's 16 bytes, then the number (big-endian).
pub fn token_object_id(id: &KeyId, number: u32) -> Vec<u8> {
    let mut out = id.as_bytes().to_vec();
    out.extend_from_slice(&number.to_be_bytes());
    out
}

/// Gives every version written before `material_id` was kept a stable one: a keyed hash
/// (blake3 derive_key) of the root key, the key id and the version number. It depends on
/// nothing of the material, so it reveals nothing about it, and it stays the same at every
/// load until the next write stores it.
fn fill_material_ids(body: &mut KeystoreBody, root: &Key256) {
    for (id, key) in body.keys.iter_mut() {
        for v in key.versions.iter_mut().filter(|v| v.material_id.is_none()) {
            let mut out = [0u8; 32];
            kdf::derive_into(
                kdf::CTX_KEY_MATERIAL_ID,
                &[root.expose(), id.as_bytes(), &v.number.to_le_bytes()],
                &mut out,
            );
            v.material_id = Some(hex::encode(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::ids::AccountId;
    use crate::kms::model::*;

    fn store_with_key(root: &Key256) -> (Keystore, KeyId) {
        let region = Region::parse("local-1").unwrap();
        let mut ks = Keystore::new(KeystoreBody::empty(region, AccountId::random()));
        let id = KeyId::random();
        let v = ks.new_version(root, &id, 1, 0, VersionOrigin::Initial);
        ks.body.keys.insert(
            id,
            KeyRecord {
                id,
                description: "d".into(),
                created: 0,
                state: KeyState::Enabled,
                manager: KeyManager::Customer,
                deletion_date: None,
                pending_window_days: None,
                tags: Default::default(),
                rotation: Rotation::default(),
                policy: None,
                policy_principals: Default::default(),
                versions: vec![v],
                custom_key_store_id: None,
            },
        );
        (ks, id)
    }

    #[test]
    fn save_load_roundtrip_keeps_material() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keystore.cvks");
        let root = Key256::generate();
        let (mut ks, id) = store_with_key(&root);
        ks.save(&p, &root).unwrap();
        let back = Keystore::load(&p, &root, &ks.body.region).unwrap();
        assert_eq!(back.generation, 1);
        assert_eq!(
            back.material(&id, 1).unwrap().expose(),
            ks.material(&id, 1).unwrap().expose()
        );
        // No version material in the clear on disk.
        let raw = std::fs::read(&p).unwrap();
        let m = ks.material(&id, 1).unwrap().expose();
        assert!(!raw.windows(32).any(|w| w == m));
    }

    #[test]
    fn material_ids_are_64_hex_random_per_version_and_legacy_ones_are_stable() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keystore.cvks");
        let root = Key256::generate();
        let (mut ks, id) = store_with_key(&root);
        let v2 = ks.new_version(&root, &id, 2, 1, VersionOrigin::OnDemand);
        ks.body.keys.get_mut(&id).unwrap().versions.push(v2);
        let ids: Vec<String> = ks.body.keys[&id]
            .versions
            .iter()
            .map(|v| v.material_id().to_string())
            .collect();
        for m in &ids {
            assert_eq!(m.len(), 64, "{m}");
            assert!(
                m.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
        assert_ne!(ids[0], ids[1]);
        // Nothing of the material: not its bytes, not its hex.
        let m = hex::encode(ks.material(&id, 1).unwrap().expose());
        assert_ne!(ids[0], m);
        // A keystore from before the field: the id is derived, the same at every load.
        for v in &mut ks.body.keys.get_mut(&id).unwrap().versions {
            v.material_id = None;
        }
        ks.save(&p, &root).unwrap();
        let a = Keystore::load(&p, &root, &ks.body.region).unwrap();
        let b = Keystore::load(&p, &root, &ks.body.region).unwrap();
        let first = a.body.keys[&id].versions[0].material_id().to_string();
        assert_eq!(first.len(), 64);
        assert_eq!(first, b.body.keys[&id].versions[0].material_id());
        assert_ne!(first, a.body.keys[&id].versions[1].material_id());
        assert_ne!(first, m);
    }

    #[test]
    fn tampering_wrong_root_and_wrong_region_are_corruption() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keystore.cvks");
        let root = Key256::generate();
        let (mut ks, _) = store_with_key(&root);
        ks.save(&p, &root).unwrap();
        let region = ks.body.region.clone();
        let good = std::fs::read(&p).unwrap();
        for i in [0, 10, 13, HEADER_LEN - 1, HEADER_LEN + 3, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&p, &bad).unwrap();
            assert!(
                matches!(
                    Keystore::load(&p, &root, &region),
                    Err(AwsError::Corrupt { .. })
                ),
                "byte {i}"
            );
        }
        std::fs::write(&p, &good[..good.len() - 5]).unwrap();
        assert!(matches!(
            Keystore::load(&p, &root, &region),
            Err(AwsError::Corrupt { .. })
        ));
        // Reserved bytes are checked before the seal; a newer version is not damage.
        let mut bad = good.clone();
        bad[OFF_RESERVED + 1] = 1;
        std::fs::write(&p, &bad).unwrap();
        let e = Keystore::load(&p, &root, &region).unwrap_err();
        assert!(
            e.to_string().contains("reserved bytes 10..12 are not zero"),
            "{e}"
        );
        let mut newer = good.clone();
        newer[OFF_FORMAT] = 2;
        std::fs::write(&p, &newer).unwrap();
        let e = Keystore::load(&p, &root, &region).unwrap_err();
        assert!(
            matches!(
                e,
                AwsError::NewerFormat {
                    found: 2,
                    newest: 1,
                    ..
                }
            ),
            "{e}"
        );
        std::fs::write(&p, &good).unwrap();
        assert!(Keystore::load(&p, &Key256::generate(), &region).is_err());
        let other = Region::parse("other-1").unwrap();
        assert!(matches!(
            Keystore::load(&p, &root, &other),
            Err(AwsError::Corrupt { .. })
        ));
    }
}

#[cfg(test)]
mod worked_sizes {
    use super::*;
    use crate::aws::ids::AccountId;

    /// docs/formats.md: an empty keystore of region local-1 is 52 + 89 = 141 bytes.
    #[test]
    fn empty_keystore_is_141_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keystore.cvks");
        let root = Key256::generate();
        let body = KeystoreBody::empty(
            Region::parse("local-1").unwrap(),
            AccountId::parse("123456789012").unwrap(),
        );
        Keystore::new(body).save(&p, &root).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 141);
        assert_eq!(HEADER_LEN + TAG_LEN, 52);
    }
}
