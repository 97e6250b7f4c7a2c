//! The chunk fetcher of lazily restored volumes: reads chunk objects from the region's
//! snapshot store. The pool checks each object's blake3 (`volume::remote::fetch_checked`);
//! this only reports what the store answered.

use super::super::store::{Bounded, SnapshotStore, StoreError};
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
        // A bigger object than the chunk is refused from its headers, never read.
        let got = self
            .store
            .get_at_most(&chunk.object, buf.len() as u64)
            .map_err(|e| match e {
                StoreError::Config { .. } | StoreError::Request { .. } => VolumeError::Remote {
                    kind: ErrorKind::Io,
                    message: e.to_string(),
                },
            })?;
        let damaged = |detail: String| VolumeError::Corrupt {
            what: format!("object {} of {}", chunk.object, self.store.config().url),
            detail,
        };
        let f = match got {
            None => return Err(damaged("it is missing".into())),
            Some(Bounded::TooLarge(size)) => {
                return Err(damaged(format!("it holds {size} bytes, not {}", buf.len())));
            }
            Some(Bounded::Fetched(f)) => f,
        };
        if f.bytes.len() != buf.len() {
            return Err(damaged(format!(
                "it holds {} bytes, not {}",
                f.bytes.len(),
                buf.len()
            )));
        }
        buf.copy_from_slice(&f.bytes);
        Ok(())
    }
}
