//! The chunk fetcher of lazily restored volumes: reads chunk objects from the region's
//! snapshot store. The pool checks each object's blake3 (`volume::remote::fetch_checked`);
//! this only reports what the store answered.

use super::super::store::{SnapshotStore, StoreError};
use crate::volume::error::{ErrorKind, VolumeError};
use crate::volume::remote::{ChunkFetcher, RemoteChunk};

pub struct StoreFetcher {
    store: SnapshotStore,
}

impl StoreFetcher {
    pub fn new(store: SnapshotStore) -> StoreFetcher {
        StoreFetcher { store }
    }
}

impl ChunkFetcher for StoreFetcher {
    fn fetch(&self, chunk: &RemoteChunk, buf: &mut [u8]) -> Result<(), VolumeError> {
        let got = self.store.get(&chunk.object).map_err(|e| match e {
            StoreError::Config { .. } | StoreError::Request { .. } => VolumeError::Remote {
                kind: ErrorKind::Io,
                message: e.to_string(),
            },
        })?;
        let Some(f) = got else {
            return Err(VolumeError::Corrupt {
                what: format!("object {} of {}", chunk.object, self.store.config().url),
                detail: "it is missing".into(),
            });
        };
        if f.bytes.len() != buf.len() {
            return Err(VolumeError::Corrupt {
                what: format!("object {} of {}", chunk.object, self.store.config().url),
                detail: format!("it holds {} bytes, not {}", f.bytes.len(), buf.len()),
            });
        }
        buf.copy_from_slice(&f.bytes);
        Ok(())
    }
}
