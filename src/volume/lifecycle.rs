//! Making a volume's header (with its data key from the KMS or a customer key) and
//! getting the data key back at attach: the only places the volume layer talks to a
//! `KeyBackend`, once per create and once per attach (envelope encryption), plus the
//! volume service's grant, made with a volume and retired with it (as EBS's).

use super::error::{Result, VolumeError};
use super::header::{KeySource, VolumeHeader};
use super::ids::VolumeId;
use super::keys::{self, DATA_KEY_LEN};
use crate::aws::Region;
use crate::crypto::SecretBytes;
use crate::kms::{DataKeySpec, EncryptionContext, KeyBackend, KeyRef};

/// The encryption context key that binds a data key to the volume it was made for.
pub const LINEAGE_CONTEXT_KEY: &str = "cryptvol:lineage";

/// The managed key volumes use when no `--kms-key` is given.
pub const DEFAULT_KMS_KEY: &str = "alias/aws/ebs";

pub enum KeyChoice {
    Kms(KeyRef),
    Customer(SecretBytes),
}

pub struct NewVolume {
    pub size: u64,
    pub name: String,
    pub chunk_shift: u8,
    pub key: KeyChoice,
    /// Authenticate every block (`volume::integrity`).
    pub integrity: bool,
}

pub fn lineage_context(lineage: &str) -> EncryptionContext {
    EncryptionContext::single(LINEAGE_CONTEXT_KEY, lineage)
}

/// A header for a new volume; with a KMS key this makes its data key (one
/// GenerateDataKey call). Nothing is stored yet.
pub fn new_header(
    region: &Region,
    kms: Option<&dyn KeyBackend>,
    spec: NewVolume,
    now: i64,
) -> Result<VolumeHeader> {
    VolumeHeader::validate_size(spec.size)?;
    if !(super::header::MIN_CHUNK_SHIFT..=super::header::MAX_CHUNK_SHIFT)
        .contains(&spec.chunk_shift)
    {
        return Err(VolumeError::invalid(
            "chunk size",
            "use a power of two from 64K to 64M (default 1M)",
        ));
    }
    super::header::check_name(&spec.name)?;
    let id = VolumeId::random();
    let key = match spec.key {
        KeyChoice::Kms(r) => {
            let kms = kms.ok_or_else(|| VolumeError::invalid("key", "no KMS available"))?;
            let dk = kms.generate_data_key(
                &r,
                DataKeySpec::Bytes(DATA_KEY_LEN),
                &lineage_context(id.as_str()),
            )?;
            KeySource::Kms {
                key_arn: dk.key_id.clone(),
                wrapped: dk.ciphertext_blob.clone(),
                endpoint: kms.endpoint().map(String::from),
                check: Some(super::key_check::compute(&dk.plaintext, id.as_str())),
            }
        }
        KeyChoice::Customer(ck) => {
            let (salt, verifier) = keys::new_customer_verifier(&ck)?;
            KeySource::Customer { salt, verifier }
        }
    };
    Ok(VolumeHeader {
        lineage: id.to_string(),
        id,
        region: region.clone(),
        name: spec.name,
        size: spec.size,
        chunk_shift: spec.chunk_shift,
        created: now,
        key,
        integrity: spec.integrity,
    })
}

/// The volume's data key: one KMS Decrypt as the caller, or a check of the customer key
/// (snapshot copy and restore read a snapshot's key this way). A KMS data key is checked
/// against the header's key check, when it has one, before it is returned.
pub fn data_key(
    h: &VolumeHeader,
    kms: Option<&dyn KeyBackend>,
    customer_key: Option<&SecretBytes>,
) -> Result<SecretBytes> {
    unwrap(h, kms, customer_key, false)
}

/// Attach: as [`data_key`], but a KMS-keyed volume's key is unwrapped by the volume
/// service through the volume's grant when the caller may attach it
/// ([`KeyBackend::decrypt_for_volume`]).
pub fn attach_data_key(
    h: &VolumeHeader,
    kms: Option<&dyn KeyBackend>,
    customer_key: Option<&SecretBytes>,
) -> Result<SecretBytes> {
    unwrap(h, kms, customer_key, true)
}

fn unwrap(
    h: &VolumeHeader,
    kms: Option<&dyn KeyBackend>,
    customer_key: Option<&SecretBytes>,
    attach: bool,
) -> Result<SecretBytes> {
    match &h.key {
        KeySource::Kms { wrapped, .. } => {
            let kms = kms.ok_or_else(|| VolumeError::invalid("key", "no KMS available"))?;
            let context = lineage_context(&h.lineage);
            let out = if attach {
                kms.decrypt_for_volume(wrapped, &context, h.id.as_str())?
            } else {
                kms.decrypt(wrapped, &context)?
            };
            super::key_check::verify(h, &out.plaintext)?;
            Ok(out.plaintext)
        }
        KeySource::Customer { salt, verifier } => {
            let ck = customer_key.ok_or_else(|| VolumeError::CustomerKeyRequired {
                id: h.id.to_string(),
            })?;
            keys::customer_data_key(ck, salt, verifier, h.id.as_str())
        }
    }
}

/// Volume create (or restore): lets the volume service decrypt `h`'s data key through a
/// grant named after the volume, so that a user allowed `ec2:AttachVolume` attaches it
/// without `kms:Decrypt` on the key. Nothing for a customer-keyed volume.
pub fn grant_volume_service(h: &VolumeHeader, kms: Option<&dyn KeyBackend>) -> Result<()> {
    if let (KeySource::Kms { key_arn, .. }, Some(kms)) = (&h.key, kms) {
        kms.grant_volume_service(key_arn, &lineage_context(&h.lineage), h.id.as_str())?;
    }
    Ok(())
}

/// Volume delete (or a create that failed after its grant): retires the volume's grant.
pub fn retire_volume_service_grant(h: &VolumeHeader, kms: Option<&dyn KeyBackend>) -> Result<()> {
    if let (KeySource::Kms { key_arn, .. }, Some(kms)) = (&h.key, kms) {
        kms.retire_volume_service_grant(key_arn, h.id.as_str())?;
    }
    Ok(())
}

/// Makes the volume service's grant for `h`, then `store`s the volume; a volume that is
/// not stored leaves no grant behind.
pub fn with_volume_grant<E, F>(
    h: &VolumeHeader,
    kms: Option<&dyn KeyBackend>,
    store: F,
) -> std::result::Result<(), E>
where
    E: From<VolumeError>,
    F: FnOnce() -> std::result::Result<(), E>,
{
    grant_volume_service(h, kms)?;
    store().inspect_err(|_| {
        let _ = retire_volume_service_grant(h, kms);
    })
}
