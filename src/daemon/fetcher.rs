//! Where the pool's owner gets its [`ChunkFetcher`] from: the one place that builds it
//! from a region's config (the region's snapshot store). Without one, reading a chunk of a
//! lazily restored volume is an error that says how to configure the store.

use std::sync::Arc;

use crate::datadir::RegionDir;
use crate::snapshot::archive::{self, fetch::StoreFetcher};
use crate::volume::error::VolumeError;
use crate::volume::remote::{ChunkFetcher, RemoteChunk};

/// The fetcher of `dir`'s snapshot store, or `None` if the region has none configured.
pub fn for_region(dir: &RegionDir) -> Result<Option<Arc<dyn ChunkFetcher>>, VolumeError> {
    let Some(cfg) = archive::load_config(dir)? else {
        return Ok(None);
    };
    // A store that cannot be opened now (no credentials) is reported at the first fetch,
    // not at the pool's opening: volumes with no remote chunk must keep working.
    match archive::open_store(&cfg, None) {
        Ok(store) => Ok(Some(Arc::new(StoreFetcher::new(store)))),
        Err(e) => Ok(Some(Arc::new(Unavailable(e.to_string())))),
    }
}

/// The fetcher of a store that could not be opened: every fetch says why.
struct Unavailable(String);

impl ChunkFetcher for Unavailable {
    fn fetch(&self, _: &RemoteChunk, _: &mut [u8]) -> Result<(), VolumeError> {
        Err(VolumeError::Remote {
            kind: crate::volume::error::ErrorKind::Io,
            message: self.0.clone(),
        })
    }
}
