//! Where the pool's owner gets its [`ChunkFetcher`] from: the one place that builds it
//! from a region's config (the region's snapshot store). Without one, reading a chunk of a
//! lazily restored volume is an error that says how to configure the store.
//!
//! The store's client (credentials, an HTTP client that loads the system's CA
//! certificates, a private I/O runtime) is built on the first fetch, not when the pool is
//! opened: every command that opens the pool without a daemon (most of them) would
//! otherwise build one it never uses, and the daemon would build it before it answers its
//! first request. The daemon builds it ahead in the background instead ([`warm`]).

use std::sync::{Arc, Mutex};

use crate::datadir::RegionDir;
use crate::snapshot::archive::{self, fetch::StoreFetcher};
use crate::snapshot::store::StoreConfig;
use crate::volume::error::{ErrorKind, VolumeError};
use crate::volume::remote::{ChunkFetcher, RemoteChunk};

/// The fetcher of `dir`'s snapshot store, or `None` if the region has none configured.
/// Nothing is connected yet: the store is opened at the first fetch (or by [`warm`]).
pub fn for_region(dir: &RegionDir) -> Result<Option<Arc<dyn ChunkFetcher>>, VolumeError> {
    Ok(for_region_lazy(dir)?.map(|f| f as Arc<dyn ChunkFetcher>))
}

/// As [`for_region`], typed, for the daemon to [`warm`] it.
pub fn for_region_lazy(dir: &RegionDir) -> Result<Option<Arc<LazyFetcher>>, VolumeError> {
    Ok(archive::load_config(dir)?.map(|cfg| {
        Arc::new(LazyFetcher {
            cfg,
            store: Mutex::new(None),
        })
    }))
}

/// Opens the store now, so that the first read of a remote chunk does not wait for it; a
/// store that cannot be opened is left to the first fetch to report (and retry).
pub fn warm(f: &LazyFetcher) {
    let _ = f.store();
}

/// A store fetcher opened on first use. A store that cannot be opened (no credentials)
/// fails that fetch with the reason and is tried again at the next one: volumes with no
/// remote chunk must keep working, and credentials fixed later are picked up.
pub struct LazyFetcher {
    cfg: StoreConfig,
    store: Mutex<Option<Arc<StoreFetcher>>>,
}

impl LazyFetcher {
    fn store(&self) -> Result<Arc<StoreFetcher>, VolumeError> {
        // Held while opening: concurrent first reads wait for one client, not build one
        // each.
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = archive::open_store(&self.cfg, None).map_err(|e| VolumeError::Remote {
            kind: ErrorKind::Io,
            message: e.to_string(),
        })?;
        let s = Arc::new(StoreFetcher::new(s));
        *slot = Some(s.clone());
        Ok(s)
    }

    /// True once the store's client is built.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl ChunkFetcher for LazyFetcher {
    fn fetch(&self, chunk: &RemoteChunk, buf: &mut [u8]) -> Result<(), VolumeError> {
        self.store()?.fetch(chunk, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Region;

    #[test]
    fn the_store_is_opened_at_the_first_fetch_not_with_the_pool() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RegionDir::new(tmp.path(), &Region::parse("local-1").unwrap());
        std::fs::create_dir_all(&dir.path).unwrap();
        assert!(
            for_region_lazy(&dir).unwrap().is_none(),
            "no store, no fetcher"
        );
        // Nothing listens on the discard port: the fetch fails, the opening did not.
        let cfg = StoreConfig::new("s3://bucket/p", Some("http://127.0.0.1:9"), None).unwrap();
        archive::save_config(&dir, &cfg).unwrap();
        let f = for_region_lazy(&dir)
            .unwrap()
            .expect("a fetcher for the store");
        assert!(!f.is_open(), "the client is built at the first fetch");
        let chunk = RemoteChunk {
            object: "chunks/l/x".into(),
            blake3: [0; 32],
            len: 4096,
            domain: 0,
            record: None,
        };
        match f.fetch(&chunk, &mut [0u8; 4096]) {
            Err(VolumeError::Remote {
                kind: ErrorKind::Io,
                message,
            }) => assert!(!message.is_empty()),
            other => panic!("expected an I/O error from the store, got {other:?}"),
        }
    }
}
