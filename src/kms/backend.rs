//! `KeyBackend`: the only way the volume and snapshot layers reach keys. Envelope
//! encryption needs four things from a KMS: make a data key, unwrap it, rewrap it under
//! another key (snapshot copy), and describe a key. The embedded keystore implements it
//! now; a client of the AWS KMS protocol (remote cryptvol server or AWS KMS) will too.
//!
//! Contract: every method is one KMS request (one audit event, one metered call); plaintext
//! data keys come back in zeroizing `SecretBytes`; errors are `AwsError` with their AWS
//! names. Implementations are shared across threads.

use super::api::{DecryptResponse, GenerateDataKeyResponse, KeyMetadata, ReEncryptResponse};
use super::context::EncryptionContext;
use super::ids::KeyRef;
use crate::aws::error::Result;

/// How many bytes of data key to make: AES_256 (32), AES_128 (16), or a byte count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeySpec {
    Aes256,
    Aes128,
    Bytes(usize),
}

impl DataKeySpec {
    pub const MAX_BYTES: usize = 1024;

    pub fn len(self) -> usize {
        match self {
            DataKeySpec::Aes256 => 32,
            DataKeySpec::Aes128 => 16,
            DataKeySpec::Bytes(n) => n,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// AWS's `KeySpec` values, as the API, the AWS CLI and `cryptvol kms` spell them.
    pub const AWS_NAMES: [&'static str; 2] = ["AES_256", "AES_128"];

    /// The `KeySpec` value of a named size; `None` for a byte count (`NumberOfBytes`).
    pub fn aws_name(self) -> Option<&'static str> {
        match self {
            DataKeySpec::Aes256 => Some("AES_256"),
            DataKeySpec::Aes128 => Some("AES_128"),
            DataKeySpec::Bytes(_) => None,
        }
    }

    /// The size a `KeySpec` value names; `None` for any other text (names are case-sensitive).
    pub fn from_aws_name(name: &str) -> Option<Self> {
        [DataKeySpec::Aes256, DataKeySpec::Aes128]
            .into_iter()
            .find(|s| s.aws_name() == Some(name))
    }
}

pub trait KeyBackend: Send + Sync {
    /// A fresh data key, in plaintext and wrapped under `key` with `context` bound.
    fn generate_data_key(
        &self,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse>;

    /// Unwraps a blob; the key is found from the blob itself.
    fn decrypt(&self, blob: &[u8], context: &EncryptionContext) -> Result<DecryptResponse>;

    /// Moves a blob to `destination` (and a new context) without exposing the plaintext.
    fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination: &KeyRef,
        destination_context: &EncryptionContext,
    ) -> Result<ReEncryptResponse>;

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata>;

    /// The URL of a remote KMS, which a volume header records so that its key is found
    /// there again; `None` (the default) for this data dir's own KMS.
    fn endpoint(&self) -> Option<&str> {
        None
    }

    /// Attach: a volume's data key. A backend with a volume service (the embedded KMS)
    /// decrypts through the volume's grant when the caller may attach `volume`
    /// (`ec2:AttachVolume`), as EBS does; otherwise, and by default, as the caller.
    fn decrypt_for_volume(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<DecryptResponse> {
        let _ = volume;
        self.decrypt(blob, context)
    }

    /// Volume create: a grant that lets the volume service decrypt the data keys bound to
    /// `context` under `key`, named after `volume` and retired with it. Returns the grant
    /// id; `None` (the default) where the backend has no volume service (a remote KMS).
    fn grant_volume_service(
        &self,
        key: &str,
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<Option<String>> {
        let _ = (key, context, volume);
        Ok(None)
    }

    /// Volume delete: retires the grants [`Self::grant_volume_service`] made for `volume`.
    fn retire_volume_service_grant(&self, key: &str, volume: &str) -> Result<()> {
        let _ = (key, volume);
        Ok(())
    }
}

/// A boxed backend is a backend (the CLI picks embedded or remote at run time).
impl<T: KeyBackend + ?Sized> KeyBackend for Box<T> {
    fn generate_data_key(
        &self,
        key: &KeyRef,
        spec: DataKeySpec,
        context: &EncryptionContext,
    ) -> Result<GenerateDataKeyResponse> {
        (**self).generate_data_key(key, spec, context)
    }

    fn decrypt(&self, blob: &[u8], context: &EncryptionContext) -> Result<DecryptResponse> {
        (**self).decrypt(blob, context)
    }

    fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        destination: &KeyRef,
        destination_context: &EncryptionContext,
    ) -> Result<ReEncryptResponse> {
        (**self).re_encrypt(blob, source_context, destination, destination_context)
    }

    fn describe_key(&self, key: &KeyRef) -> Result<KeyMetadata> {
        (**self).describe_key(key)
    }

    fn endpoint(&self) -> Option<&str> {
        (**self).endpoint()
    }

    fn decrypt_for_volume(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<DecryptResponse> {
        (**self).decrypt_for_volume(blob, context, volume)
    }

    fn grant_volume_service(
        &self,
        key: &str,
        context: &EncryptionContext,
        volume: &str,
    ) -> Result<Option<String>> {
        (**self).grant_volume_service(key, context, volume)
    }

    fn retire_volume_service_grant(&self, key: &str, volume: &str) -> Result<()> {
        (**self).retire_volume_service_grant(key, volume)
    }
}

#[cfg(test)]
mod tests {
    use super::DataKeySpec;

    #[test]
    fn aws_names_round_trip() {
        for name in DataKeySpec::AWS_NAMES {
            let spec = DataKeySpec::from_aws_name(name).expect(name);
            assert_eq!(spec.aws_name(), Some(name));
        }
        assert_eq!(
            DataKeySpec::from_aws_name("AES_256").map(DataKeySpec::len),
            Some(32)
        );
        assert_eq!(
            DataKeySpec::from_aws_name("AES_128").map(DataKeySpec::len),
            Some(16)
        );
        assert_eq!(DataKeySpec::from_aws_name("aes_256"), None);
        assert_eq!(DataKeySpec::from_aws_name("AES_512"), None);
        assert_eq!(DataKeySpec::Bytes(32).aws_name(), None);
    }
}
