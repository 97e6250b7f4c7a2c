//! Chunks in the object store (lazy restore): the pool's `remote` rows, the volume made of
//! them, the fetch of one into a fresh slot, and hydrating a detached volume.
//!
//! A fetched chunk follows the writers' protocol (`alloc`): its ciphertext goes into a
//! reserved slot, then its map row, its slot's count and the removal of its `remote` row
//! are recorded as one change, and the next commit syncs the data before it writes them in
//! one transaction. After a crash before that commit the chunk is simply remote again (and
//! its reservation free).

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::{Pool, Reserved, lock};
use crate::volume::error::{Result, VolumeError};
use crate::volume::header::VolumeHeader;
use crate::volume::integrity::SlotRecord;
use crate::volume::remote::{ChunkFetcher, FetchFor, RemoteChunk, fetch_checked};
use crate::volume::tables::{REMOTE, ROOTS};

/// A hydrate commits after this many chunks (what is fetched stays) and lets other
/// operations on the volume in between.
pub const HYDRATE_BATCH: usize = 8;

impl Pool {
    /// Sets the fetcher reads of remote chunks go through (the pool's owner, at open).
    pub fn set_fetcher(&self, fetcher: Option<Arc<dyn ChunkFetcher>>) {
        *self.fetcher.write().unwrap_or_else(|p| p.into_inner()) = fetcher;
    }

    pub fn fetcher(&self) -> Option<Arc<dyn ChunkFetcher>> {
        self.fetcher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new volume whose listed chunks live in the object store, in one transaction
    /// (its id and name must be free, as for [`Pool::create_volume`]). Every chunk must be
    /// inside the volume, listed once, and of its chunk size.
    pub fn restore_remote_volume(
        &self,
        h: &VolumeHeader,
        chunks: &[(u64, RemoteChunk)],
    ) -> Result<()> {
        self.restore_remote_authenticated(h, chunks, None)
    }

    /// [`Pool::restore_remote_volume`] with, for an authenticated volume, its first root
    /// (the `roots` row over its chunks' records, made by who holds its key): such a
    /// volume needs it and a record for every chunk, a plain one takes neither.
    pub fn restore_remote_authenticated(
        &self,
        h: &VolumeHeader,
        chunks: &[(u64, RemoteChunk)],
        root: Option<&[u8]>,
    ) -> Result<()> {
        let count = h.size.div_ceil(h.chunk_size());
        let mut seen = std::collections::HashSet::new();
        if h.integrity != root.is_some() {
            return Err(VolumeError::invalid(
                "remote volume",
                format!(
                    "{} {}: its first root must come with it exactly when it is authenticated",
                    h.id,
                    if h.integrity {
                        "is authenticated but has no root"
                    } else {
                        "is not authenticated but has a root"
                    }
                ),
            ));
        }
        for (c, rc) in chunks {
            rc.validate(h.chunk_size())?;
            if h.integrity != rc.record.is_some() {
                return Err(VolumeError::invalid(
                    "remote chunk",
                    format!(
                        "chunk {c} (object {}) of volume {} {} a slot record",
                        rc.object,
                        h.id,
                        if h.integrity { "lacks" } else { "has" }
                    ),
                ));
            }
            if *c >= count {
                return Err(VolumeError::invalid(
                    "remote chunk",
                    format!(
                        "chunk {c} (object {}) is past the end of volume {} ({count} chunks)",
                        rc.object, h.id
                    ),
                ));
            }
            if !seen.insert(*c) {
                return Err(VolumeError::invalid(
                    "remote chunk",
                    format!("chunk {c} of volume {} is listed twice", h.id),
                ));
            }
        }
        self.add_volume(h, None, chunks, root)
    }

    /// The committed `remote` rows of a volume or snapshot: chunk → object.
    pub fn load_remote(&self, owner: &str) -> Result<Vec<(u64, RemoteChunk)>> {
        read_remote(&self.db()?.begin_read()?, owner)
    }

    /// Bytes of a volume's (or snapshot's) committed map still in the object store.
    pub fn remote_bytes(&self, owner: &str) -> Result<u64> {
        Ok(self
            .load_remote(owner)?
            .iter()
            .map(|(_, rc)| rc.len as u64)
            .sum())
    }

    /// Fetches remote chunk `chunk` of `at.owner` into a fresh slot, checked (see
    /// `remote::fetch_checked`), ciphertext as is. The caller records it with
    /// [`Pool::remap_remote`]; on error nothing is reserved.
    pub fn fetch_remote(
        &self,
        shift: u8,
        at: FetchFor,
        chunk: u64,
        rc: &RemoteChunk,
    ) -> Result<Reserved> {
        let fetcher = self.fetcher();
        let mut buf = vec![0u8; 1usize << shift];
        fetch_checked(fetcher.as_deref(), at, chunk, rc, &mut buf)?;
        let df = self.data_file(shift)?;
        let new = self.reserve(shift)?;
        // Holes stay holes: an all-zero block is an unwritten one in the pool too.
        let r = (|| -> Result<()> {
            let base = df.slot_offset(new.0);
            for (i, b) in buf.chunks(crate::volume::BLOCK_SIZE as usize).enumerate() {
                if !crate::volume::block_io::is_zero(b) {
                    df.write_at(b, base + (i * b.len()) as u64)?;
                }
            }
            Ok(())
        })();
        if let Err(e) = r {
            self.unreserve(shift, new);
            return Err(e);
        }
        Ok(new)
    }

    /// The slot record a fetched chunk gets: the one its row carries, which an
    /// authenticated volume's row must have and a plain one's must not, checked to decode
    /// for the chunk size and to name the row's domain. Checked before anything is fetched.
    pub fn fetched_record(
        &self,
        shift: u8,
        at: FetchFor,
        chunk: u64,
        rc: &RemoteChunk,
        authenticated: bool,
    ) -> Result<Option<SlotRecord>> {
        let bytes = match (&rc.record, authenticated) {
            (None, false) => return Ok(None),
            (Some(b), true) => b,
            (_, authenticated) => {
                return Err(VolumeError::Tampered {
                    volume: at.owner.to_string(),
                    detail: format!(
                        "its remote chunk {chunk} {} a slot record",
                        if authenticated { "lacks" } else { "has" }
                    ),
                });
            }
        };
        let rec = SlotRecord::decode(bytes, 1usize << (shift - 12)).map_err(|e| {
            VolumeError::Tampered {
                volume: at.owner.to_string(),
                detail: format!("the record of its remote chunk {chunk}: {e}"),
            }
        })?;
        if rec.domain != rc.domain || !rec.all_in_first_half() {
            return Err(VolumeError::Tampered {
                volume: at.owner.to_string(),
                detail: format!(
                    "the record of its remote chunk {chunk} does not match the chunk's row"
                ),
            });
        }
        Ok(Some(rec))
    }

    /// Records, as one change, that `(owner, chunk)` is no longer remote: it maps to `new`
    /// (a filled reservation: a fetch, or a write of the whole chunk), or to nothing (a
    /// discard). Both land in the same commit.
    /// `domain`: as for [`Pool::remap`].
    pub fn remap_remote(
        &self,
        shift: u8,
        owner: &str,
        chunk: u64,
        new: Option<Reserved>,
        domain: u64,
    ) {
        let mut st = lock(&self.state);
        if let Some(n) = new {
            st.dirty.domains.insert((shift, n.0.0), domain);
        }
        // A discard records the chunk unmapped too (there is no map row to remove): the
        // commit then takes the chunk's leaf out of an authenticated owner's root.
        st.dirty
            .maps
            .insert((owner.to_string(), chunk), new.map(|n| n.0.0));
        if let Some(n) = new {
            *st.dirty.refs.entry((shift, n.0.0)).or_insert(0) += 1;
        }
        st.dirty.remote_drops.insert((owner.to_string(), chunk));
    }

    /// Fetches every remote chunk of detached volume `h` (the caller holds its lock, so
    /// nothing else reads or writes it), `batch` at most, committing as it goes; returns
    /// the bytes fetched and whether any remain. `progress` gets the bytes of each chunk
    /// and returns false to stop (what was fetched stays).
    pub fn hydrate_detached(
        &self,
        h: &VolumeHeader,
        batch: usize,
        progress: &(dyn Fn(u64) -> bool + Sync),
    ) -> Result<(u64, bool)> {
        let todo = self.load_remote(h.id.as_str())?;
        let at = FetchFor {
            owner: h.id.as_str(),
            region: h.region.as_str(),
        };
        let mut done = 0u64;
        let mut cancelled = false;
        for (chunk, rc) in todo.iter().take(batch) {
            let r = self
                .fetched_record(h.chunk_shift, at, *chunk, rc, h.integrity)
                .and_then(|rec| {
                    let new = self.fetch_remote(h.chunk_shift, at, *chunk, rc)?;
                    Ok((new, rec))
                });
            match r {
                Ok((new, rec)) => {
                    // The slot's record first, then its map row and domain (as one
                    // change): a commit between the two only records the record early.
                    let domain = match rec {
                        Some(rec) => {
                            self.record_dirty(
                                h.chunk_shift,
                                new.0,
                                &Arc::new(std::sync::Mutex::new(rec)),
                            );
                            0
                        }
                        None => rc.domain,
                    };
                    self.remap_remote(h.chunk_shift, h.id.as_str(), *chunk, Some(new), domain);
                    done += rc.len as u64;
                    if !progress(rc.len as u64) {
                        cancelled = true;
                        break;
                    }
                }
                Err(e) => {
                    // Keep what was fetched.
                    let _ = self.commit();
                    return Err(e);
                }
            }
        }
        self.commit()?;
        if cancelled {
            return Err(VolumeError::Cancelled {
                what: format!("the hydrate of {}", h.id),
            });
        }
        Ok((done, todo.len() > batch))
    }
}

/// Gives `to` the same `remote` rows as `from` (a snapshot, a restore): no fetch.
pub(super) fn clone_remote(w: &WriteTransaction, from: &str, to: &str) -> Result<()> {
    let mut t = w.open_table(REMOTE)?;
    let rows: Vec<(u64, Vec<u8>)> = t
        .range((from, 0)..=(from, u64::MAX))?
        .map(|item| item.map(|(k, v)| (k.value().1, v.value().to_vec())))
        .collect::<std::result::Result<_, _>>()?;
    for (chunk, v) in rows {
        t.insert((to, chunk), v.as_slice())?;
    }
    Ok(())
}

/// Removes `owner`'s `remote` rows (a delete).
pub(super) fn drop_remote(w: &WriteTransaction, owner: &str) -> Result<()> {
    let mut t = w.open_table(REMOTE)?;
    let chunks: Vec<u64> = t
        .range((owner, 0)..=(owner, u64::MAX))?
        .map(|item| item.map(|(k, _)| k.value().1))
        .collect::<std::result::Result<_, _>>()?;
    for c in chunks {
        t.remove((owner, c))?;
    }
    Ok(())
}

/// Stores a new volume's `remote` rows and, for an authenticated one, its first root (in
/// the transaction that stores its header).
pub(super) fn insert_remote(
    w: &WriteTransaction,
    owner: &str,
    chunks: &[(u64, RemoteChunk)],
    root: Option<&[u8]>,
) -> Result<()> {
    if let Some(r) = root {
        w.open_table(ROOTS)?.insert(owner, r)?;
    }
    if chunks.is_empty() {
        return Ok(());
    }
    let mut t = w.open_table(REMOTE)?;
    for (c, rc) in chunks {
        t.insert((owner, *c), rc.encode().as_slice())?;
    }
    Ok(())
}

/// The record each `remote` row of `owner` carries (None: a plain volume's row), in chunk
/// order: an authenticated owner's root covers them.
pub(super) fn remote_records(
    r: &redb::ReadTransaction,
    owner: &str,
) -> Result<Vec<(u64, Option<Vec<u8>>)>> {
    Ok(read_remote(r, owner)?
        .into_iter()
        .map(|(c, rc)| (c, rc.record))
        .collect())
}

/// The `remote` rows of `owner` in one read transaction, in chunk order.
fn read_remote(r: &redb::ReadTransaction, owner: &str) -> Result<Vec<(u64, RemoteChunk)>> {
    let Some(t) = super::read_table(r, REMOTE)? else {
        return Ok(vec![]);
    };
    let mut out = vec![];
    for item in t.range((owner, 0)..=(owner, u64::MAX))? {
        let (k, v) = item?;
        let chunk = k.value().1;
        let what = format!("remote row of {owner} chunk {chunk}");
        out.push((chunk, RemoteChunk::decode(v.value(), &what)?));
    }
    Ok(out)
}
