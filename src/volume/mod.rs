//! Encrypted block volumes: ids and units, the volume header, volume keys, the region's
//! thin pool, and block I/O (AES-256-XTS per 4 KiB block, tweak = block number).
//! Reaches keys only through `kms::KeyBackend`; knows nothing of FUSE or the CLI.

pub mod aligned;
pub mod anchor;
pub mod block_io;
pub mod check;
pub mod error;
pub mod header;
pub mod ids;
pub mod integrity;
pub mod key_check;
pub mod keys;
pub mod lifecycle;
pub mod pool;
pub mod record;
pub mod remote;
pub mod storage;
pub mod tables;
#[cfg(test)]
pub(crate) mod test_support;

pub use block_io::{OpenVolume, VerifyReport};
pub use error::VolumeError;
pub use header::{KeySource, VolumeHeader};
pub use ids::{BLOCK_SIZE, VolumeId};
pub use pool::Pool;
