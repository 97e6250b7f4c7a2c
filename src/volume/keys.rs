//! A volume's keys: from its 64-byte data key (from the KMS, or derived from a
//! customer-provided key) to the AES-256-XTS engine that encrypts its blocks.
//! The data key exists only here, in zeroizing memory, for the time it takes to derive.

use zeroize::Zeroizing;

use super::error::{Result, VolumeError};
use crate::crypto::kdf::{self, CTX_CUSTOMER_DEK, CTX_CUSTOMER_VERIFIER, CTX_VOLUME_XTS};
use crate::crypto::xts::Xts;
use crate::crypto::{SecretBytes, random};

/// Length of a volume data key, as asked of GenerateDataKey.
pub const DATA_KEY_LEN: usize = 64;

/// The XTS engine of a volume from its data key.
pub fn xts_from_data_key(data_key: &SecretBytes) -> Result<Xts> {
    if data_key.len() != DATA_KEY_LEN {
        return Err(VolumeError::Corrupt {
            what: "volume data key".into(),
            detail: format!("{} bytes instead of {DATA_KEY_LEN}", data_key.len()),
        });
    }
    let mut k = Zeroizing::new([0u8; 64]);
    kdf::derive_into(CTX_VOLUME_XTS, &[data_key.expose()], &mut k[..]);
    // Equal halves would need a blake3 collision; treat it as corruption all the same.
    Xts::new(&k).map_err(|e| VolumeError::Corrupt {
        what: "volume data key".into(),
        detail: e.to_string(),
    })
}

/// Everything an open volume derives from its data key: the XTS engine, and the keys of
/// its block tags (used only if the volume is authenticated).
#[derive(Clone)]
pub struct VolumeKeys {
    pub xts: Xts,
    pub integrity: std::sync::Arc<super::integrity::IntegrityKeys>,
}

impl VolumeKeys {
    pub fn from_data_key(data_key: &SecretBytes) -> Result<VolumeKeys> {
        Ok(VolumeKeys {
            xts: xts_from_data_key(data_key)?,
            integrity: std::sync::Arc::new(super::integrity::IntegrityKeys::from_data_key(
                data_key,
            )),
        })
    }
}

/// Checks the length of a customer-provided key: 32 or 64 bytes.
pub fn check_customer_key(key: &SecretBytes) -> Result<()> {
    if key.len() == 32 || key.len() == 64 {
        Ok(())
    } else {
        Err(VolumeError::invalid(
            "customer key",
            format!(
                "{} bytes: a customer key is 32 or 64 random bytes (e.g. `head -c 32 /dev/urandom > key`)",
                key.len()
            ),
        ))
    }
}

/// A fresh salt and the verifier of `key` under it.
pub fn new_customer_verifier(key: &SecretBytes) -> Result<([u8; 16], [u8; 32])> {
    check_customer_key(key)?;
    let salt: [u8; 16] = random::array();
    Ok((salt, customer_verifier(key, &salt)))
}

pub fn customer_verifier(key: &SecretBytes, salt: &[u8; 16]) -> [u8; 32] {
    let mut v = [0u8; 32];
    kdf::derive_into(CTX_CUSTOMER_VERIFIER, &[key.expose(), salt], &mut v);
    v
}

/// The data key of a customer-key volume, after checking the key against the verifier in
/// constant time.
pub fn customer_data_key(
    key: &SecretBytes,
    salt: &[u8; 16],
    verifier: &[u8; 32],
    volume: &str,
) -> Result<SecretBytes> {
    check_customer_key(key)?;
    let got = customer_verifier(key, salt);
    if !constant_time_eq(&got, verifier) {
        return Err(VolumeError::WrongCustomerKey {
            id: volume.to_string(),
        });
    }
    let mut dk = SecretBytes::new(vec![0u8; DATA_KEY_LEN]);
    kdf::derive_into(CTX_CUSTOMER_DEK, &[key.expose(), salt], dk.expose_mut());
    Ok(dk)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_key_verifies_and_derives() {
        let key = SecretBytes::random(32);
        let (salt, ver) = new_customer_verifier(&key).unwrap();
        let a = customer_data_key(&key, &salt, &ver, "vol-x").unwrap();
        let b = customer_data_key(&key, &salt, &ver, "vol-x").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let wrong = SecretBytes::random(32);
        assert!(matches!(
            customer_data_key(&wrong, &salt, &ver, "vol-x"),
            Err(VolumeError::WrongCustomerKey { .. })
        ));
        assert!(matches!(
            check_customer_key(&SecretBytes::random(16)),
            Err(VolumeError::InvalidArgument { what, .. }) if what == "customer key"
        ));
        assert!(xts_from_data_key(&a).is_ok());
        assert!(matches!(
            xts_from_data_key(&SecretBytes::random(32)),
            Err(VolumeError::Corrupt { what, .. }) if what == "volume data key"
        ));
    }
}
