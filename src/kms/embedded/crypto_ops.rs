//! The cryptographic operations: Encrypt, Decrypt, ReEncrypt, GenerateDataKey and
//! GenerateDataKeyWithoutPlaintext, and the audit records of each (their dry runs share
//! them). Ciphertext blobs name their region, key and key version (`kms::blob`).

use super::{EmbeddedKms, MAX_PLAINTEXT, grants};
use crate::aws::error::{AwsError, Result};
use crate::crypto::SecretBytes;
use crate::iam::caller::Caller;
use crate::kms::api::*;
use crate::kms::backend::DataKeySpec;
use crate::kms::blob;
use crate::kms::context::EncryptionContext;
use crate::kms::event::Call;
use crate::kms::ids::{KeyId, KeyRef};
use crate::kms::keystore::Keystore;
use crate::kms::model::*;
impl EmbeddedKms {
    /// Seals under the current version of `k`: in process, or inside the token of its
    /// custom key store.
    fn seal_under(
        &self,
        ks: &Keystore,
        k: &KeyRecord,
        ctx: &EncryptionContext,
        plaintext: &[u8],
        operation: &str,
    ) -> Result<Vec<u8>> {
        if k.custom_key_store_id.is_some() {
            return self.seal_in_store(ks, k, ctx, plaintext, operation);
        }
        let v = k.current_version();
        let material = ks
            .material(&k.id, v.number)
            .expect("loaded keystores hold every version");
        Ok(blob::seal(
            &self.dir.region,
            &k.id,
            v.number,
            material,
            ctx,
            plaintext,
        ))
    }

    pub fn encrypt(
        &self,
        caller: &Caller,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EncryptResponse> {
        let mut call = Self::encrypt_call(r, ctx);
        let out = self.encrypt_inner(caller, &mut call, r, plaintext, ctx);
        self.finish(caller, call, out)
    }

    /// The audit record of an Encrypt call (also its dry run's).
    pub(super) fn encrypt_call(r: &KeyRef, ctx: &EncryptionContext) -> Call {
        Call::new("Encrypt", true)
            .param("keyId", r.to_string())
            .context("encryptionContext", ctx)
            .param("encryptionAlgorithm", SYMMETRIC_DEFAULT)
    }

    /// The audit record of a Decrypt call (also its dry run's).
    pub(super) fn decrypt_call(key: Option<&KeyRef>, ctx: &EncryptionContext) -> Call {
        Call::new("Decrypt", true)
            .key_param(key)
            .context("encryptionContext", ctx)
            .param("encryptionAlgorithm", SYMMETRIC_DEFAULT)
    }

    /// The audit record of a ReEncrypt call (also its dry run's).
    pub(super) fn re_encrypt_call(
        source_key: Option<&KeyRef>,
        source_ctx: &EncryptionContext,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Call {
        let call = Call::new("ReEncrypt", true)
            .param("destinationKeyId", destination.to_string())
            .context("sourceEncryptionContext", source_ctx)
            .context("destinationEncryptionContext", destination_ctx)
            .param("sourceEncryptionAlgorithm", SYMMETRIC_DEFAULT)
            .param("destinationEncryptionAlgorithm", SYMMETRIC_DEFAULT);
        match source_key {
            Some(s) => call.param("sourceKeyId", s.to_string()),
            None => call,
        }
    }

    pub(super) fn encrypt_inner(
        &self,
        caller: &Caller,
        call: &mut Call,
        r: &KeyRef,
        plaintext: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<EncryptResponse> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(AwsError::validation(
                "Plaintext",
                format!(
                    "{} bytes: Encrypt takes 1 to {MAX_PLAINTEXT} bytes; encrypt larger data locally under a data key from generate-data-key",
                    plaintext.len()
                ),
            ));
        }
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let k = self.resolve_authorized(ks, r, caller, call, "kms:Encrypt", Some(ctx))?;
            self.require_enabled(k, "Encrypt")?;
            Ok(EncryptResponse {
                ciphertext_blob: self.seal_under(ks, k, ctx, plaintext, "Encrypt")?,
                key_id: self.arn(&k.id),
                encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    /// Opens a blob for `action`; `expected` (the caller's `--key-id`) must be the key the
    /// blob names.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_blob(
        &self,
        ks: &Keystore,
        caller: &Caller,
        call: &mut Call,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        expected: Option<&KeyRef>,
        action: &str,
    ) -> Result<(KeyId, SecretBytes)> {
        let operation = action.trim_start_matches("kms:");
        let parsed = blob::parse(blob_bytes).map_err(|e| AwsError::InvalidCiphertext {
            reason: e.to_string(),
        })?;
        let h = &parsed.header;
        if h.region != self.dir.region {
            return Err(AwsError::BlobFromOtherRegion {
                blob_region: h.region.to_string(),
                here: self.dir.region.to_string(),
            });
        }
        let k = self.existing(ks, &h.key_id)?;
        call.resource(&self.arn(&k.id));
        self.authorize_key(
            ks,
            caller,
            call,
            action,
            k,
            grants::GrantUse::Context(ctx),
            &[],
        )?;
        if let Some(exp) = expected {
            let want = self.resolve(ks, exp)?;
            if want != h.key_id {
                return Err(AwsError::IncorrectKey {
                    expected: self.arn(&want),
                    actual: self.arn(&h.key_id),
                });
            }
        }
        self.require_enabled(k, operation)?;
        let no_version = || AwsError::InvalidCiphertext {
            reason: format!(
                "names version {} of key {}, which that key does not have",
                h.key_version,
                self.arn(&k.id)
            ),
        };
        if k.custom_key_store_id.is_some() {
            let v = k
                .versions
                .iter()
                .find(|v| v.number == h.key_version)
                .ok_or_else(no_version)?;
            let plain = self.open_in_store(ks, k, v, &parsed, ctx, operation)?;
            return Ok((k.id, plain));
        }
        let material = ks.material(&k.id, h.key_version).ok_or_else(no_version)?;
        let plain = parsed.open(material, ctx).map_err(|_| AwsError::InvalidCiphertext {
            reason: format!(
                "does not authenticate under key {}: it was altered, or the encryption context differs from the one it was encrypted with",
                self.arn(&k.id)
            ),
        })?;
        Ok((k.id, plain))
    }

    pub fn decrypt(
        &self,
        caller: &Caller,
        blob_bytes: &[u8],
        ctx: &EncryptionContext,
        key: Option<&KeyRef>,
    ) -> Result<DecryptResponse> {
        let mut call = Self::decrypt_call(key, ctx);
        let out = self.read(|ks, _| {
            let (id, plaintext) =
                self.open_blob(ks, caller, &mut call, blob_bytes, ctx, key, "kms:Decrypt")?;
            Ok(DecryptResponse {
                key_id: self.arn(&id),
                plaintext,
                encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        });
        self.finish(caller, call, out)
    }

    pub fn re_encrypt(
        &self,
        caller: &Caller,
        blob_bytes: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        let mut call = Self::re_encrypt_call(source_key, source_ctx, destination, destination_ctx);
        let out = self.re_encrypt_inner(
            caller,
            &mut call,
            blob_bytes,
            source_ctx,
            source_key,
            destination,
            destination_ctx,
        );
        self.finish(caller, call, out)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn re_encrypt_inner(
        &self,
        caller: &Caller,
        call: &mut Call,
        blob_bytes: &[u8],
        source_ctx: &EncryptionContext,
        source_key: Option<&KeyRef>,
        destination: &KeyRef,
        destination_ctx: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        // Check the source before creating a managed destination key, so a bad blob
        // changes nothing.
        self.read(|ks, _| {
            self.open_blob(
                ks,
                caller,
                call,
                blob_bytes,
                source_ctx,
                source_key,
                "kms:ReEncryptFrom",
            )
            .map(|_| ())
        })?;
        self.ensure_managed(destination)?;
        self.read(|ks, _| {
            let (src, plain) = self.open_blob(
                ks,
                caller,
                call,
                blob_bytes,
                source_ctx,
                source_key,
                "kms:ReEncryptFrom",
            )?;
            let k = self.resolve_authorized(
                ks,
                destination,
                caller,
                call,
                "kms:ReEncryptTo",
                Some(destination_ctx),
            )?;
            self.require_enabled(k, "ReEncrypt")?;
            Ok(ReEncryptResponse {
                ciphertext_blob: self.seal_under(
                    ks,
                    k,
                    destination_ctx,
                    plain.expose(),
                    "ReEncrypt",
                )?,
                source_key_id: self.arn(&src),
                key_id: self.arn(&k.id),
                source_encryption_algorithm: SYMMETRIC_DEFAULT,
                destination_encryption_algorithm: SYMMETRIC_DEFAULT,
            })
        })
    }

    pub(super) fn data_key(
        &self,
        caller: &Caller,
        call: &mut Call,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<(KeyId, SecretBytes, Vec<u8>)> {
        let n = spec.len();
        if n == 0 || n > DataKeySpec::MAX_BYTES {
            return Err(AwsError::validation(
                "NumberOfBytes",
                format!("{n} is outside 1..{}", DataKeySpec::MAX_BYTES),
            ));
        }
        let action = format!("kms:{}", call.name);
        self.ensure_managed(r)?;
        self.read(|ks, _| {
            let k = self.resolve_authorized(ks, r, caller, call, &action, Some(ctx))?;
            self.require_enabled(k, call.name)?;
            if k.custom_key_store_id.is_some() {
                let plaintext = SecretBytes::random(n);
                let blob = self.seal_under(ks, k, ctx, plaintext.expose(), call.name)?;
                return Ok((k.id, plaintext, blob));
            }
            // In process: the key, the salt and the nonce from one random read.
            let v = k.current_version();
            let material = ks
                .material(&k.id, v.number)
                .expect("loaded keystores hold every version");
            let (plaintext, blob) =
                blob::seal_new_key(&self.dir.region, &k.id, v.number, material, ctx, n);
            Ok((k.id, plaintext, blob))
        })
    }

    pub(super) fn data_key_call(
        name: &'static str,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Call {
        let call = Call::new(name, true)
            .param("keyId", r.to_string())
            .context("encryptionContext", ctx);
        match spec.aws_name() {
            Some(name) => call.param("keySpec", name),
            None => call.param("numberOfBytes", spec.len()),
        }
    }

    pub fn generate_data_key(
        &self,
        caller: &Caller,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        let mut call = Self::data_key_call("GenerateDataKey", r, spec, ctx);
        let out = self.data_key(caller, &mut call, r, spec, ctx).map(
            |(id, plaintext, ciphertext_blob)| GenerateDataKeyResponse {
                ciphertext_blob,
                plaintext,
                key_id: self.arn(&id),
            },
        );
        self.finish(caller, call, out)
    }

    pub fn generate_data_key_without_plaintext(
        &self,
        caller: &Caller,
        r: &KeyRef,
        spec: DataKeySpec,
        ctx: &EncryptionContext,
    ) -> Result<GenerateDataKeyWithoutPlaintextResponse> {
        let mut call = Self::data_key_call("GenerateDataKeyWithoutPlaintext", r, spec, ctx);
        let out = self.data_key(caller, &mut call, r, spec, ctx).map(
            |(id, _plaintext, ciphertext_blob)| GenerateDataKeyWithoutPlaintextResponse {
                ciphertext_blob,
                key_id: self.arn(&id),
            },
        );
        self.finish(caller, call, out)
    }
}
