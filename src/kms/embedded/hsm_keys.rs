//! Keys in custom key stores: reaching a store's token from this process, and the work on
//! key material that runs inside it (make a version, seal, open, destroy).
//!
//! A version of such a key is an AES-256 object in the token whose `CKA_ID` is the key
//! id's 16 bytes followed by the version number (big-endian), labelled
//! `cryptvol:<key id>:v<number>`; the keystore records the id (`KeyVersion::token_object`).
//!
//! Each process connects to a store's token on first use and keeps the connection until
//! the store's `epoch` changes (another process disconnected, reconnected or changed the
//! password), so a disconnect anywhere takes effect everywhere at the next call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::EmbeddedKms;
use crate::aws::error::{AwsError, Result};
use crate::crypto::SecretBytes;
use crate::kms::blob::{self, ParsedBlob};
use crate::kms::context::EncryptionContext;
use crate::kms::hsm::{HsmError, KeyUse, ObjectRef, Token};
use crate::kms::ids::KeyId;
use crate::kms::keystore::Keystore;
use crate::kms::model::*;

/// Store id → (the store's epoch when connected, the token).
#[derive(Default)]
pub(super) struct TokenCache(Mutex<HashMap<String, (u64, Arc<Token>)>>);

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, Arc<Token>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets store `id`'s token. Its sessions close when the last call using them ends;
    /// PKCS#11 logs the process out of the token when its last session there closes. No
    /// explicit logout: another region's store on the same token (one process serves many
    /// regions) keeps its own sessions, and with them the login.
    pub(super) fn drop_store(&self, id: &str) {
        self.lock().remove(id);
    }
}

/// The `CKA_ID` of version `number` of key `id`.
pub fn object_id(id: &KeyId, number: u32) -> Vec<u8> {
    let mut out = id.as_bytes().to_vec();
    out.extend_from_slice(&number.to_be_bytes());
    out
}

fn object_of(k: &KeyRecord, v: &KeyVersion) -> Result<ObjectRef> {
    v.token_object
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .map(ObjectRef::Id)
        .ok_or_else(|| AwsError::Unsupported {
            message: format!(
                "version {} of key {} has no token object recorded (damaged keystore)",
                v.number, k.id
            ),
        })
}

impl EmbeddedKms {
    /// The token of store `s`, connecting and logging in on first use in this process.
    pub(super) fn store_token(
        &self,
        s: &CustomKeyStoreRecord,
    ) -> std::result::Result<Arc<Token>, HsmError> {
        {
            let mut cache = self.tokens.lock();
            match cache.get(&s.id) {
                Some((epoch, t)) if *epoch == s.epoch => return Ok(t.clone()),
                Some(_) => {
                    // Connected before a disconnect or a password change: close those
                    // sessions first (and with the last of them, the old login).
                    cache.remove(&s.id);
                }
                None => {}
            }
        }
        let t = Arc::new(Token::connect(&s.token, &s.password.auth_pin())?);
        self.tokens
            .lock()
            .insert(s.id.clone(), (s.epoch, t.clone()));
        Ok(t)
    }

    /// The store of key `k` (which must be in one).
    fn store_of<'a>(&self, ks: &'a Keystore, k: &KeyRecord) -> Result<&'a CustomKeyStoreRecord> {
        let id = k.custom_key_store_id.as_deref().unwrap_or_default();
        ks.body
            .custom_key_stores
            .get(id)
            .ok_or_else(|| AwsError::CustomKeyStoreNotFound { id: id.to_string() })
    }

    /// For `operation` on key `k`: its store's token, or AWS's KMSInvalidStateException
    /// when the store is disconnected or its token cannot be reached.
    pub(super) fn key_token(
        &self,
        ks: &Keystore,
        k: &KeyRecord,
        operation: &str,
    ) -> Result<Arc<Token>> {
        let s = self.store_of(ks, k)?;
        if s.connection == StoreConnection::Disconnected {
            return Err(AwsError::InvalidState {
                key_arn: self.arn(&k.id),
                state: format!("in custom key store {}, which is disconnected", s.id),
                operation: operation.to_string(),
                hint: format!(
                    ": connect it with `cryptvol kms connect-custom-key-store --custom-key-store-id {}`",
                    s.id
                ),
            });
        }
        self.store_token(s)
            .map_err(|e| self.unavailable(k, &s.id, &e))
    }

    fn unavailable(&self, k: &KeyRecord, store: &str, e: &HsmError) -> AwsError {
        AwsError::KeyStoreUnavailable {
            key_arn: self.arn(&k.id),
            store: store.to_string(),
            problem: e.to_string(),
        }
    }

    /// Seals `plaintext` under the current version of `k`, a key in a custom key store.
    pub(super) fn seal_in_store(
        &self,
        ks: &Keystore,
        k: &KeyRecord,
        ctx: &EncryptionContext,
        plaintext: &[u8],
        operation: &str,
    ) -> Result<Vec<u8>> {
        let token = self.key_token(ks, k, operation)?;
        let v = k.current_version();
        let object = object_of(k, v)?;
        blob::seal_in_token(
            &self.dir.region,
            &k.id,
            v.number,
            &token,
            &object,
            ctx,
            plaintext,
        )
        .map_err(|e| self.unavailable(k, k.custom_key_store_id.as_deref().unwrap_or(""), &e))
    }

    /// Opens a blob made under version `v` of `k`, a key in a custom key store.
    pub(super) fn open_in_store(
        &self,
        ks: &Keystore,
        k: &KeyRecord,
        v: &KeyVersion,
        parsed: &ParsedBlob<'_>,
        ctx: &EncryptionContext,
        operation: &str,
    ) -> Result<SecretBytes> {
        let token = self.key_token(ks, k, operation)?;
        let object = object_of(k, v)?;
        parsed.open_in_token(&token, &object, ctx).map_err(|e| match e {
            HsmError::AuthenticationFailed { .. } => AwsError::InvalidCiphertext {
                reason: format!(
                    "does not authenticate under key {}: it was altered, or the encryption context differs from the one it was encrypted with",
                    self.arn(&k.id)
                ),
            },
            e => self.unavailable(k, k.custom_key_store_id.as_deref().unwrap_or(""), &e),
        })
    }

    /// Generates version `number` of key `id` inside store `store`'s token.
    pub(super) fn new_token_version(
        &self,
        store: &CustomKeyStoreRecord,
        id: &KeyId,
        number: u32,
        now: UnixTime,
        origin: VersionOrigin,
    ) -> Result<KeyVersion> {
        let invalid = |e: HsmError| AwsError::CustomKeyStore {
            code: "CustomKeyStoreInvalidStateException",
            message: format!(
                "custom key store {} cannot make a key in its token: {e}",
                store.id
            ),
        };
        let token = self.store_token(store).map_err(invalid)?;
        let object = object_id(id, number);
        token
            .generate_aes256(&object, &format!("cryptvol:{id}:v{number}"), KeyUse::Cmk)
            .map_err(invalid)?;
        Ok(Keystore::token_version(number, now, origin, &object))
    }

    /// Destroys the token objects of a deleted key of store `store` (crypto-shredding in
    /// the token). Objects the token could not destroy now are kept in the store's
    /// `objects_to_destroy`, for the next connection.
    pub(super) fn destroy_token_objects(
        &self,
        store: &mut CustomKeyStoreRecord,
        objects: Vec<String>,
    ) {
        let token = match store.connection {
            StoreConnection::Connected => self.store_token(store).ok(),
            StoreConnection::Disconnected => None,
        };
        for hex_id in objects {
            let done = match (&token, hex::decode(&hex_id)) {
                (Some(t), Ok(id)) => t.destroy(&ObjectRef::Id(id)).is_ok(),
                (_, Err(_)) => true,
                (None, _) => false,
            };
            if !done && !store.objects_to_destroy.contains(&hex_id) {
                store.objects_to_destroy.push(hex_id);
            }
        }
    }
}
