//! The simulated disk: its files, and every I/O call through one gate that counts it and
//! applies the armed crash and the injected faults.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::crash::{FailedSync, FaultKind, SplitMix64};
use super::image::{FileState, Op, PAGE};
use crate::volume::storage::BlockStore;
use crate::volume::storage::latch::OpenSyncFailed;
pub(super) fn eio() -> io::Error {
    FaultKind::Eio.error()
}

pub(super) fn einval(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// `off + len`, or EINVAL when it does not fit (a file offset is at most `i64::MAX`).
pub(super) fn end_of(off: u64, len: u64) -> io::Result<u64> {
    off.checked_add(len)
        .filter(|&end| end <= i64::MAX as u64)
        .ok_or_else(|| einval("offset out of range"))
}

/// The kind of an I/O call, for the counters.
#[derive(PartialEq, Eq)]
pub(super) enum Call {
    Read,
    Write,
    Punch,
    Sync,
    SetLen,
}

#[derive(Default)]
pub(super) struct DiskState {
    pub(super) files: BTreeMap<String, FileState>,
    /// I/O calls so far (see `SimDisk::op_count`).
    pub(super) ops: u64,
    /// Sync calls so far (see `SimDisk::sync_count`).
    pub(super) syncs: u64,
    pub(super) crash_at_sync: Option<u64>,
    /// The machine is dead: every call fails with EIO, nothing changes any more.
    pub(super) dead: bool,
    /// One-shot faults by op index.
    pub(super) faults: BTreeMap<u64, FaultKind>,
    /// Every call from this op index on fails.
    pub(super) fail_from: Option<(u64, FaultKind)>,
    /// One-shot fault of the n-th sync (as `syncs` will count it).
    pub(super) fail_sync: Option<(u64, FaultKind)>,
    /// What a failed sync leaves on the disk, and the PRNG that chooses it.
    pub(super) failed_sync: FailedSync,
    /// One-shot fault of the directory sync that makes a new file's entry durable, by
    /// file name (see `SimDisk::fail_create`).
    pub(super) fail_create: Option<(String, FaultKind)>,
    pub(super) rng: SplitMix64,
    /// Files held by a live redb database.
    pub(super) held: BTreeSet<String>,
}

/// A handle to a simulated disk; clones share the disk.
#[derive(Clone, Default)]
pub struct SimDisk {
    pub(super) state: Arc<Mutex<DiskState>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimDisk")
            .field("files", &st.files.keys().collect::<Vec<_>>())
            .field("ops", &st.ops)
            .field("syncs", &st.syncs)
            .field("dead", &st.dead)
            .finish()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle to the file `name`, created empty if it does not exist. Fails with EIO once
    /// the machine is dead.
    pub fn file(&self, name: &str) -> io::Result<SimFile> {
        self.file_at(name, PathBuf::from(name))
    }

    pub(super) fn file_at(&self, name: &str, path: PathBuf) -> io::Result<SimFile> {
        let mut st = self.lock();
        if st.dead {
            return Err(eio());
        }
        if !st.files.contains_key(name)
            && let Some((_, kind)) = st.fail_create.take_if(|(n, _)| n == name)
        {
            // The file is created, but the sync of its directory entry fails.
            st.files.entry(name.to_string()).or_default();
            return Err(OpenSyncFailed::wrap(kind.error()));
        }
        st.files.entry(name.to_string()).or_default();
        Ok(SimFile {
            disk: self.clone(),
            name: name.to_string(),
            path,
        })
    }

    /// Drops every file's clean cached pages: reads then see what the disk holds (the
    /// durable image with the writes not yet synced, which are dirty pages and stay); what
    /// a failed sync left readable is gone. `PoolStorage::drop_cache` of `SimStorage`.
    pub fn drop_cache(&self) {
        for f in self.lock().files.values_mut() {
            f.drop_cache();
        }
    }

    /// The disk as the next process finds it after this one exited (no crash): the same
    /// files with their page cache (what was written and not synced is still pending),
    /// fresh handles, nothing held, no fault armed.
    pub fn restarted(&self) -> SimDisk {
        let st = self.lock();
        SimDisk {
            state: Arc::new(Mutex::new(DiskState {
                files: st
                    .files
                    .iter()
                    .map(|(n, f)| (n.clone(), f.clone()))
                    .collect(),
                ..DiskState::default()
            })),
        }
    }

    /// The names of the files on the disk.
    pub fn file_names(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// Runs one I/O call on file `name`: the dead check, the op counter, the injected
    /// faults and the armed crash, then `f`.
    pub(super) fn io<R>(
        &self,
        name: &str,
        call: Call,
        f: impl FnOnce(&mut FileState) -> io::Result<R>,
    ) -> io::Result<R> {
        let mut st = self.lock();
        if st.dead {
            return Err(eio());
        }
        st.ops += 1;
        let n = st.ops;
        let nth_sync = (call == Call::Sync)
            .then(|| st.fail_sync.filter(|(at, _)| *at == st.syncs + 1))
            .flatten();
        if nth_sync.is_some() {
            st.fail_sync = None;
        }
        let fault = st
            .faults
            .remove(&n)
            .or(st
                .fail_from
                .and_then(|(from, kind)| (n >= from).then_some(kind)))
            .or(nth_sync.map(|(_, kind)| kind));
        if let Some(kind) = fault {
            // A failed sync is Linux's: the writeback of the file's dirty pages failed part
            // way and they are marked clean, so what was written since the last sync stays
            // readable, is on the disk only as far as that writeback got, and no later
            // sync writes it. Any other failed call applies nothing.
            if call == Call::Sync {
                let some = st.failed_sync == FailedSync::WritesSome;
                let DiskState { files, rng, .. } = &mut *st;
                if let Some(file) = files.get_mut(name) {
                    file.sync_failed(|| some && rng.coin());
                }
            }
            return Err(kind.error());
        }
        if call == Call::Sync {
            st.syncs += 1;
            if st.crash_at_sync == Some(st.syncs) {
                st.dead = true;
                return Err(eio());
            }
        }
        let file = st
            .files
            .get_mut(name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        f(file)
    }

    pub(super) fn len_of(&self, name: &str) -> io::Result<u64> {
        let st = self.lock();
        if st.dead {
            return Err(eio());
        }
        st.files
            .get(name)
            .map(|f| f.live.len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

/// A handle to one file of a [`SimDisk`]; a [`BlockStore`].
#[derive(Clone)]
pub struct SimFile {
    pub(super) disk: SimDisk,
    pub(super) name: String,
    pub(super) path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile").field("path", &self.path).finish()
    }
}

impl SimFile {
    /// Sets the length: growth reads as zeros (volatile until `sync_data`).
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        end_of(len, 0)?;
        self.disk.io(&self.name, Call::SetLen, |f| {
            f.push(Op::SetLen(len));
            Ok(())
        })
    }

    /// The length only a crash with `DropVolatile` would leave.
    pub fn durable_len(&self) -> u64 {
        let st = self.disk.lock();
        st.files.get(&self.name).map_or(0, |f| f.durable.len)
    }
}

impl BlockStore for SimFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        end_of(off, buf.len() as u64)?;
        self.disk.io(&self.name, Call::Read, |f| {
            f.live.read(buf, off);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        end_of(off, buf.len() as u64)?;
        self.disk.io(&self.name, Call::Write, |f| {
            if !buf.is_empty() {
                f.push(Op::Write {
                    off,
                    data: buf.to_vec(),
                });
            }
            Ok(())
        })
    }

    fn write_direct(&self, buf: &[u8], off: u64) -> io::Result<()> {
        if !off.is_multiple_of(PAGE) || !(buf.len() as u64).is_multiple_of(PAGE) {
            return Err(einval(
                "write_direct: offset or length not a multiple of 4 KiB",
            ));
        }
        self.write_at(buf, off)
    }

    fn punch(&self, off: u64, len: u64) -> io::Result<()> {
        let end = end_of(off, len)?;
        self.disk.io(&self.name, Call::Punch, |f| {
            if len > 0 {
                f.push(Op::Punch { off, end });
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.disk.io(&self.name, Call::Sync, |f| {
            f.sync();
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.disk.len_of(&self.name)
    }

    fn path(&self) -> &Path {
        &self.path
    }
}
