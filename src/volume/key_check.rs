//! The key check of a KMS-keyed volume: a 32-byte digest of its data key, kept in the
//! volume header (as LUKS keeps a digest of its volume key), so that a data key a KMS
//! answers with is refused, before any block is read or written, unless it is the one the
//! header was made with. Without it a faulty or hostile KMS endpoint could hand back any
//! 64 bytes, and the volume would attach, read garbage and write new data under a key the
//! endpoint knows.
//!
//! The check is keyed BLAKE3 over the volume's lineage id (the id the KMS encryption
//! context binds the key to), under a key derived from the data key with its own context
//! string (`CTX_DATA_KEY_CHECK`). It tells nothing of the data key or of the XTS key:
//! both are other outputs of BLAKE3 under other context strings, BLAKE3 is one-way, and
//! finding a data key that matches a check means searching 2^512 keys (2^256 check keys).
//! Binding the lineage makes the checks of two volumes of different lineages differ even
//! under the same data key, and keeps a restored volume's check (it shares its snapshot's
//! key and lineage) valid as it is copied into the restored header.

use zeroize::Zeroize;

use super::error::{Result, VolumeError};
use super::header::{KeySource, VolumeHeader};
use crate::crypto::SecretBytes;
use crate::crypto::kdf::CTX_DATA_KEY_CHECK;

/// Length of a key check.
pub const CHECK_LEN: usize = 32;

/// The check of `data_key` made for `lineage`.
pub fn compute(data_key: &SecretBytes, lineage: &str) -> [u8; CHECK_LEN] {
    let mut k = blake3::derive_key(CTX_DATA_KEY_CHECK, data_key.expose());
    let check = blake3::keyed_hash(&k, lineage.as_bytes());
    k.zeroize();
    *check.as_bytes()
}

/// Whether `data_key` matches `check` for `lineage`, compared in constant time
/// (`blake3::Hash`'s equality is).
pub fn matches(data_key: &SecretBytes, lineage: &str, check: &[u8; CHECK_LEN]) -> bool {
    blake3::Hash::from_bytes(compute(data_key, lineage)) == blake3::Hash::from_bytes(*check)
}

/// Refuses `data_key` for `h` when `h` has a key check and the key does not match it.
/// A header without one (written before key checks, or a customer key, whose own
/// verifier was checked already) passes: its key is not checked.
pub fn verify(h: &VolumeHeader, data_key: &SecretBytes) -> Result<()> {
    let KeySource::Kms {
        key_arn,
        endpoint,
        check: Some(check),
        ..
    } = &h.key
    else {
        return Ok(());
    };
    if matches(data_key, &h.lineage, check) {
        return Ok(());
    }
    Err(VolumeError::WrongDataKey {
        what: if h.lineage == h.id.as_str() {
            format!("volume {}", h.id)
        } else {
            format!("volume {} (data key of {})", h.id, h.lineage)
        },
        key_arn: key_arn.clone(),
        kms: endpoint
            .clone()
            .unwrap_or_else(|| "of this data dir".to_string()),
    })
}

/// Whether `h` has a key check (`volume describe`'s `KeyCheck`): a customer key always
/// has its verifier; a KMS key has one in headers of format 3 made with a new data key.
pub fn has_check(h: &VolumeHeader) -> bool {
    match &h.key {
        KeySource::Kms { check, .. } => check.is_some(),
        KeySource::Customer { .. } => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Region;
    use crate::volume::ids::VolumeId;

    fn kms_header(check: Option<[u8; 32]>) -> VolumeHeader {
        VolumeHeader {
            id: VolumeId::parse("vol-0123456789abcdef0").unwrap(),
            lineage: "vol-0123456789abcdef0".into(),
            region: Region::parse("local-1").unwrap(),
            name: "db".into(),
            size: 1 << 30,
            chunk_shift: 20,
            created: 0,
            key: KeySource::Kms {
                key_arn: "arn:aws:kms:local-1:123456789012:key/k".into(),
                wrapped: vec![7; 40],
                endpoint: Some("http://127.0.0.1:9/".into()),
                check,
            },
            integrity: false,
        }
    }

    #[test]
    fn deterministic_and_bound_to_key_and_lineage() {
        let k = SecretBytes::new((0..64).collect());
        let a = compute(&k, "vol-0123456789abcdef0");
        assert_eq!(a, compute(&k, "vol-0123456789abcdef0"));
        assert_ne!(a, compute(&k, "vol-0123456789abcdef1"));
        assert_ne!(
            a,
            compute(&SecretBytes::random(64), "vol-0123456789abcdef0")
        );
        assert!(matches(&k, "vol-0123456789abcdef0", &a));
        assert!(!matches(&k, "snap-0123456789abcdef0", &a));
        // Not the XTS key nor any other derivation of the same data key.
        let mut xts = [0u8; 64];
        crate::crypto::kdf::derive_into(
            crate::crypto::kdf::CTX_VOLUME_XTS,
            &[k.expose()],
            &mut xts,
        );
        assert_ne!(&a[..], &xts[..32]);
        assert_ne!(&a[..], &xts[32..]);
        // A fixed value: the check is part of the on-disk format (docs/formats.md).
        let hex: String = a.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, FIXED_CHECK);
    }

    /// `compute(bytes 0..63, "vol-0123456789abcdef0")`.
    const FIXED_CHECK: &str = "94ed22dc182e2229fb354fdafe4c7b4ddc1699375cf8e60b5922eb0c3d35e59e";

    #[test]
    fn verify_refuses_a_wrong_key_and_names_the_volume_and_key() {
        let k = SecretBytes::random(64);
        let h = kms_header(Some(compute(&k, "vol-0123456789abcdef0")));
        verify(&h, &k).unwrap();
        let wrong = SecretBytes::random(64);
        let e = verify(&h, &wrong).unwrap_err();
        assert!(matches!(e, VolumeError::WrongDataKey { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("vol-0123456789abcdef0"), "{msg}");
        assert!(
            msg.contains("arn:aws:kms:local-1:123456789012:key/k"),
            "{msg}"
        );
        assert!(msg.contains("http://127.0.0.1:9/"), "{msg}");
        assert_eq!(e.kind(), crate::volume::error::ErrorKind::WrongDataKey);
        // A restored volume shares its snapshot's lineage: named with it.
        let mut r = h.clone();
        r.id = VolumeId::parse("vol-0000000000000000a").unwrap();
        r.lineage = "snap-0123456789abcdef0".into();
        let e = verify(&r, &k).unwrap_err();
        assert!(
            e.to_string()
                .contains("vol-0000000000000000a (data key of snap-0123456789abcdef0)"),
            "{e}"
        );
        // No check (an older header): not checked.
        verify(&kms_header(None), &wrong).unwrap();
        assert!(!has_check(&kms_header(None)));
        assert!(has_check(&h));
    }
}
