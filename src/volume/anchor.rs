//! The anchor of an authenticated volume: the latest root its pool committed (generation
//! and accumulator), kept outside the pool, in `<region>/anchors/<volume id>`, so that
//! someone who can write the pool (a restored backup of it, a disk swapped under it) cannot
//! roll the anchor back with it. Sealed with AES-256-GCM under a key derived from the
//! volume's data key, with the volume id as associated data: it cannot be forged or moved
//! to another volume without that key. Written after every commit that changes the volume
//! (write to a temporary file, fsync, rename), so it never runs ahead of the pool; after a
//! crash it may lag by one commit, which attach accepts (a pool newer than its anchor).

use std::path::{Path, PathBuf};

use super::error::{Result, VolumeError};
use super::integrity::{IntegrityKeys, Root};
use crate::crypto::aead;
use crate::sys::fsio;

const MAGIC: &[u8; 8] = b"CVANCHR1";
const PLAIN_LEN: usize = 40;

/// One volume's anchor file.
#[derive(Debug, Clone)]
pub struct Anchor {
    path: PathBuf,
    volume: String,
}

impl Anchor {
    pub fn new(dir: &Path, volume: &str) -> Anchor {
        Anchor {
            path: dir.join(volume),
            volume: volume.to_string(),
        }
    }

    fn aad(&self) -> Vec<u8> {
        let mut a = b"cryptvol volume anchor v1\0".to_vec();
        a.extend_from_slice(self.volume.as_bytes());
        a
    }

    /// The anchored root, or `None` if the volume was never anchored here.
    pub fn load(&self, keys: &IntegrityKeys) -> Result<Option<Root>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io("cannot read", &self.path, e)),
        };
        let tampered = |detail: &str| VolumeError::Tampered {
            volume: self.volume.clone(),
            detail: format!("its anchor {} {detail}", self.path.display()),
        };
        let sealed = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| tampered("is not an anchor file"))?;
        let plain = aead::open_secret(&keys.anchor_key(), &self.aad(), sealed)
            .map_err(|_| tampered("does not open under the volume's key"))?;
        let p = plain.expose();
        if p.len() != PLAIN_LEN {
            return Err(tampered("has the wrong length"));
        }
        Ok(Some(Root {
            generation: u64::from_le_bytes(p[..8].try_into().expect("8")),
            acc: p[8..40].try_into().expect("32"),
        }))
    }

    /// Anchors `root` durably.
    pub fn store(&self, keys: &IntegrityKeys, root: &Root) -> Result<()> {
        let mut plain = [0u8; PLAIN_LEN];
        plain[..8].copy_from_slice(&root.generation.to_le_bytes());
        plain[8..].copy_from_slice(&root.acc);
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&aead::seal_secret(&keys.anchor_key(), &self.aad(), &plain));
        if let Some(dir) = self.path.parent() {
            fsio::create_private_dir(dir).map_err(|e| VolumeError::io("cannot create", dir, e))?;
        }
        fsio::write_atomic(&self.path, &out, fsio::PRIVATE_FILE)
            .map_err(|e| VolumeError::io("cannot write", &self.path, e))
    }

    /// Forgets the anchor (the volume was deleted).
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io("cannot remove", &self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretBytes;

    #[test]
    fn an_anchor_reads_back_and_refuses_another_key_volume_or_any_changed_byte() {
        let dir = tempfile::tempdir().unwrap();
        let keys = IntegrityKeys::from_data_key(&SecretBytes::random(64));
        let a = Anchor::new(dir.path(), "vol-0123456789abcdef0");
        assert_eq!(a.load(&keys).unwrap(), None);
        let root = Root {
            generation: 7,
            acc: [5; 32],
        };
        a.store(&keys, &root).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root));
        let other = IntegrityKeys::from_data_key(&SecretBytes::random(64));
        assert!(matches!(a.load(&other), Err(VolumeError::Tampered { .. })));
        // Moved to another volume's name: refused (the id is associated data).
        let b = Anchor::new(dir.path(), "vol-0123456789abcdef1");
        std::fs::copy(
            dir.path().join("vol-0123456789abcdef0"),
            dir.path().join("vol-0123456789abcdef1"),
        )
        .unwrap();
        assert!(matches!(b.load(&keys), Err(VolumeError::Tampered { .. })));
        let bytes = std::fs::read(dir.path().join("vol-0123456789abcdef0")).unwrap();
        for i in 0..bytes.len() {
            let mut x = bytes.clone();
            x[i] ^= 1;
            std::fs::write(dir.path().join("vol-0123456789abcdef0"), &x).unwrap();
            assert!(a.load(&keys).is_err(), "byte {i}");
        }
        a.remove().unwrap();
        assert_eq!(a.load(&keys).unwrap(), None);
    }
}
