//! [`Session`]: the KMS as a [`KeyBackend`] for one caller acting through the volume
//! service, which is how the volume and snapshot layers use it.

use super::EmbeddedKms;
use crate::aws::error::Result;
use crate::iam::caller::Caller;
use crate::kms::api::KeyMetadata;
use crate::kms::api::*;
use crate::kms::backend::{DataKeySpec, KeyBackend};
use crate::kms::context::EncryptionContext;
use crate::kms::ids::KeyRef;
/// The KMS as a [`KeyBackend`] for one caller: the volume and snapshot layers' view,
/// with every call made through the volume service (`kms:ViaService`). `K` is the KMS
/// owned (a CLI command) or borrowed (a server serving many callers).
pub struct Session<K> {
    kms: K,
    caller: Caller,
}

impl<K: std::borrow::Borrow<EmbeddedKms>> Session<K> {
    /// `caller` acting through the volume service of the KMS's region.
    pub fn for_volumes(kms: K, caller: &Caller) -> Session<K> {
        Session {
            caller: caller.via_volumes(kms.borrow().region()),
            kms,
        }
    }

    pub fn kms(&self) -> &EmbeddedKms {
        self.kms.borrow()
    }

    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

impl<K: std::borrow::Borrow<EmbeddedKms> + Send + Sync> KeyBackend for Session<K> {
    fn generate_data_key(
        &self,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        self.kms()
            .generate_data_key(&self.caller, key, spec, context)
    }

    fn decrypt(&self, blob: &[u8], context: &EncryptionContext) -> Result<DecryptResponse> {
        self.kms().decrypt(&self.caller, blob, context, None)
    }

    fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination: &KeyRef,
        destination_context: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        self.kms().re_encrypt(
            &self.caller,
            blob,
            source_context,
            None,
            destination,
            destination_context,
        )
    }

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata> {
        self.kms().describe_key(&self.caller, key)
    }

    fn decrypt_for_volume(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<DecryptResponse> {
        self.decrypt_volume_key(blob, context, volume)
    }

    fn grant_volume_service(
        &self,
        key: &str,
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<Option<String>> {
        self.make_volume_grant(key, context, volume)
    }

    fn retire_volume_service_grant(&self, key: &str, volume: &str) -> Result<()> {
        self.retire_volume_grant(key, volume)
    }
}
