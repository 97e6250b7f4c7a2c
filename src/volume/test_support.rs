//! What the volume layer's unit tests (and the daemon's owner tests) build on: a fixed XTS
//! key, a customer-key volume header, and a region directory in a temp dir.

use crate::aws::Region;
use crate::crypto::xts::Xts;
use crate::datadir::RegionDir;
use crate::volume::header::{KeySource, VolumeHeader};
use crate::volume::ids::VolumeId;

/// The chunk size most tests use: 64 KiB, so a few MiB cross many chunks.
pub const SHIFT: u8 = 16;

/// An XTS instance under a fixed key (bytes 0, 1, 2, ...).
pub fn xts() -> Xts {
    let mut k = [0u8; 64];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    Xts::new(&k).unwrap()
}

/// A new volume of `size` bytes in chunks of `1 << shift`, under a customer key.
pub fn header_with_shift(size: u64, shift: u8) -> VolumeHeader {
    VolumeHeader {
        id: VolumeId::random(),
        lineage: "vol-00000000000000000".into(),
        region: Region::parse("test-1").unwrap(),
        name: String::new(),
        size,
        chunk_shift: shift,
        created: 0,
        key: KeySource::Customer {
            salt: [0; 16],
            verifier: [0; 32],
        },
        integrity: false,
    }
}

/// [`header_with_shift`] with the usual [`SHIFT`].
pub fn header(size: u64) -> VolumeHeader {
    header_with_shift(size, SHIFT)
}

/// Region `test-1` of a data dir in `d`, its directory made.
pub fn region(d: &tempfile::TempDir) -> RegionDir {
    let r = RegionDir::new(d.path(), &Region::parse("test-1").unwrap());
    std::fs::create_dir_all(&r.path).unwrap();
    r
}

/// The integrity keys of the authenticated volumes of the unit tests (one fixed data key).
pub fn integrity_keys() -> std::sync::Arc<crate::volume::integrity::IntegrityKeys> {
    std::sync::Arc::new(crate::volume::integrity::IntegrityKeys::from_data_key(
        &crate::crypto::SecretBytes::new((0..64u8).map(|i| i ^ 0xa5).collect()),
    ))
}

/// A new authenticated volume that is its own lineage (tweak domain 0), in `SHIFT` chunks.
pub fn auth_header(size: u64) -> VolumeHeader {
    let mut h = header_with_shift(size, SHIFT);
    h.lineage = h.id.to_string();
    h.integrity = true;
    h
}

/// Opens an authenticated volume with [`integrity_keys`], refusing a rolled-back pool.
pub fn open_auth(
    pool: &std::sync::Arc<crate::volume::Pool>,
    h: &VolumeHeader,
) -> crate::volume::error::Result<crate::volume::OpenVolume> {
    crate::volume::OpenVolume::open_authenticated(
        pool.clone(),
        h,
        xts(),
        integrity_keys(),
        crate::volume::pool::Rollback::Refuse,
    )
}
