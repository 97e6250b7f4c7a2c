//! Chunks of an open volume that still live in the object store (lazy restore): the first
//! read or partial write of one fetches the whole chunk, once however many threads ask
//! (a per-chunk in-flight lock), checks its blake3, and stores its ciphertext in a fresh
//! slot as is (same key, same tweaks); the map row, the slot's count and the removal of
//! the `remote` row are recorded as one change (`Pool::remap_remote`), committed with the
//! data synced first. Then the chunk is an ordinary one.

use std::sync::{Arc, Mutex};

use super::{Entry, OpenVolume};
use crate::volume::error::{Result, VolumeError};
use crate::volume::remote::{FetchFor, RemoteChunk};

/// Where a chunk's data is.
enum State {
    Local(Entry),
    Remote(RemoteChunk),
    Unwritten,
}

impl OpenVolume {
    /// The chunk's state, read from the map and the remote set together.
    fn state(&self, chunk: u64) -> State {
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = m.get(&chunk) {
            return State::Local(*e);
        }
        let r = self.remote.read().unwrap_or_else(|p| p.into_inner());
        match r.get(&chunk) {
            Some(rc) => State::Remote(rc.clone()),
            None => State::Unwritten,
        }
    }

    pub(super) fn is_remote(&self, chunk: u64) -> bool {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&chunk)
    }

    /// The chunk's slot, fetching it first if it is remote; `None`: never written. Call
    /// with the chunk's stripe held (for reading or writing): no write or discard of it
    /// runs meanwhile, and concurrent readers of it wait for one fetch.
    pub(super) fn resolve(&self, chunk: u64) -> Result<Option<Entry>> {
        match self.state(chunk) {
            State::Local(e) => return Ok(Some(e)),
            State::Unwritten => return Ok(None),
            State::Remote(_) => {}
        }
        let one = self
            .fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(chunk)
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let r = {
            let _only_me = one.lock().unwrap_or_else(|p| p.into_inner());
            // Another reader may have fetched it while we waited.
            match self.state(chunk) {
                State::Local(e) => Ok(Some(e)),
                State::Unwritten => Ok(None),
                State::Remote(rc) => self.fetch_chunk(chunk, &rc),
            }
        };
        self.fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&chunk);
        r
    }

    fn fetch_chunk(&self, chunk: u64, rc: &RemoteChunk) -> Result<Option<Entry>> {
        let at = FetchFor {
            owner: self.id.as_str(),
            region: &self.region,
        };
        // An authenticated volume's chunk comes with its slot record (checked before
        // anything is fetched); a plain one's with its domain alone.
        let record = self
            .pool
            .fetched_record(self.shift, at, chunk, rc, self.auth.is_some())
            .inspect_err(|e| tracing::error!("{e}"))?;
        let new = self
            .pool
            .fetch_remote(self.shift, at, chunk, rc)
            .inspect_err(|e| {
                tracing::error!("{e}");
            })?;
        // The slot's record first, then its map row with its domain (one change, in
        // `set_entry`): a commit between the two only records the record early. The
        // fetched chunk stays in the domain it was written in; every read of an
        // authenticated one checks its tags as usual. A chunk of another domain than this
        // volume's is never written in place (`own_slot` copies it into this volume's
        // domain first, as a slot shared with a snapshot), so this volume and the one
        // that wrote the archived chunk never share a key and tweak.
        if let Some(rec) = record {
            self.new_record(new.0, rec);
        }
        self.set_entry(chunk, Some((new, rc.domain)), None);
        Ok(Some(Entry {
            slot: new.0,
            shared: false,
            domain: rc.domain,
        }))
    }

    /// Bytes of this volume still in the object store.
    pub fn remote_bytes(&self) -> u64 {
        self.remote.read().unwrap_or_else(|p| p.into_inner()).len() as u64 * self.chunk_size()
    }

    /// Fetches up to `batch` chunks still in the object store, alongside the volume's I/O
    /// (each under its chunk's lock, as a read would), then commits, so an interrupted
    /// hydrate keeps what it fetched. `progress` gets the bytes of each chunk and returns
    /// false to stop. Returns the bytes fetched and whether chunks remain.
    pub fn hydrate(
        &self,
        batch: usize,
        progress: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<(u64, bool)> {
        let mut todo: Vec<u64> = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect();
        todo.sort_unstable();
        let more = todo.len() > batch.max(1);
        todo.truncate(batch.max(1));
        let mut done = 0u64;
        for chunk in todo {
            let fetched = {
                let _g = self.stripe(chunk).read().unwrap_or_else(|p| p.into_inner());
                // A reader may have fetched it, or a write or discard replaced it, since.
                if self.is_remote(chunk) {
                    self.resolve(chunk).map(|_| true)
                } else {
                    Ok(false)
                }
            };
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    let _ = self.pool.commit();
                    return Err(e);
                }
            };
            if fetched {
                done += self.chunk_size();
                if !progress(self.chunk_size()) {
                    self.pool.commit()?;
                    return Err(VolumeError::Cancelled {
                        what: format!("the hydrate of {}", self.id),
                    });
                }
            }
        }
        self.pool.commit()?;
        Ok((done, more))
    }
}
