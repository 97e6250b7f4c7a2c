//! Crashes and injected faults: arming them, and the disk that survives a crash.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use super::SECTOR;
use super::disk::{DiskState, SimDisk};
use super::image::{FileState, Image, Op};
/// What survives a crash, see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only what was synced.
    DropVolatile,
    /// Everything, as if every dirty page had been written back.
    KeepVolatile,
    /// Each operation not yet synced is kept or dropped independently.
    KeepRandomSubset,
    /// Like `KeepRandomSubset`, and a kept write may keep only some of its 512-byte sectors.
    TornWrites,
}

impl CrashMode {
    pub const ALL: [CrashMode; 4] = [
        CrashMode::DropVolatile,
        CrashMode::KeepVolatile,
        CrashMode::KeepRandomSubset,
        CrashMode::TornWrites,
    ];
}

/// An injected I/O error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// EIO.
    Eio,
    /// ENOSPC.
    NoSpace,
}

impl FaultKind {
    pub(super) fn error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            FaultKind::Eio => libc::EIO,
            FaultKind::NoSpace => libc::ENOSPC,
        })
    }
}

/// What a failed sync leaves on the disk of the writes it covered (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailedSync {
    /// Each operation it covered reached the disk whole or not at all, chosen by the
    /// disk's own seeded PRNG: a writeback that failed part way.
    #[default]
    WritesSome,
    /// None of them: the worst case for the writes a failed sync covered.
    WritesNothing,
}

/// A seeded PRNG (splitmix64): crash outcomes are reproducible from their seed.
#[derive(Default)]
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn coin(&mut self) -> bool {
        self.next() >> 63 == 1
    }
}

impl SimDisk {
    /// Kills the machine at the `n`-th `sync_data` call over all files (counted from 1 on
    /// this disk, see [`Self::sync_count`]): that call fails with EIO without taking effect
    /// and every later call fails too.
    pub fn arm_crash_at_sync(&self, n: u64) {
        self.lock().crash_at_sync = Some(n);
    }

    /// Kills the machine now.
    pub fn crash_now(&self) {
        self.lock().dead = true;
    }

    /// Whether the machine is dead (crashed).
    pub fn is_crashed(&self) -> bool {
        self.lock().dead
    }

    /// `sync_data` calls so far, the one that crashed the machine included; calls failed by
    /// an injected fault and calls on a dead machine are not counted.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// I/O calls (reads, writes, punches, syncs, length changes) so far, the failed ones
    /// included; `len` and calls on a dead machine are not counted. The next call is
    /// `op_count() + 1`.
    pub fn op_count(&self) -> u64 {
        self.lock().ops
    }

    /// Fails the `n`-th I/O call (counted from 1, see [`Self::op_count`]) once with `kind`.
    pub fn fail_at(&self, n: u64, kind: FaultKind) {
        self.lock().faults.insert(n, kind);
    }

    /// What a failed sync leaves on the disk from now on (default
    /// [`FailedSync::WritesSome`]).
    pub fn set_failed_sync(&self, what: FailedSync) {
        self.lock().failed_sync = what;
    }

    /// Fails the `n`-th `sync_data` call (counted as [`Self::sync_count`] counts, which
    /// does not count this failed one) once with `kind`.
    pub fn fail_sync(&self, n: u64, kind: FaultKind) {
        self.lock().fail_sync = Some((n, kind));
    }

    /// Fails once, with `kind`, the directory sync that makes the entry of the file
    /// `name` durable when the pool creates it: the pool's open of that file gets the
    /// error, marked as a failed sync ([`crate::volume::storage::latch::OpenSyncFailed`]),
    /// as `FileStorage` marks it.
    pub fn fail_create(&self, name: &str, kind: FaultKind) {
        self.lock().fail_create = Some((name.to_string(), kind));
    }

    /// Fails every I/O call from the `n`-th on with `kind` (the disk died, the machine
    /// did not).
    pub fn fail_from(&self, n: u64, kind: FaultKind) {
        self.lock().fail_from = Some((n, kind));
    }

    /// Clears the injected faults (not a crash).
    pub fn clear_faults(&self) {
        let mut st = self.lock();
        st.faults.clear();
        st.fail_from = None;
        st.fail_sync = None;
        st.fail_create = None;
    }

    /// A new disk holding what survived a crash of this one (frozen, or the current state
    /// if it did not crash), according to `mode`; `seed` chooses the random outcomes.
    /// Nothing is open on the new disk and no crash or fault is armed on it.
    pub fn after_crash(&self, mode: CrashMode, seed: u64) -> SimDisk {
        let st = self.lock();
        let mut rng = SplitMix64(seed);
        let mut files = BTreeMap::new();
        for (name, file) in &st.files {
            let mut image = file.durable.clone();
            for op in &file.volatile {
                let keep = match mode {
                    CrashMode::DropVolatile => false,
                    CrashMode::KeepVolatile => true,
                    CrashMode::KeepRandomSubset | CrashMode::TornWrites => rng.coin(),
                };
                if !keep {
                    continue;
                }
                match op {
                    Op::Write { off, data } if mode == CrashMode::TornWrites && rng.coin() => {
                        torn_write(&mut image, data, *off, &mut rng)
                    }
                    op => image.apply(op),
                }
            }
            files.insert(name.clone(), FileState::from_image(image));
        }
        SimDisk {
            state: Arc::new(Mutex::new(DiskState {
                files,
                ..DiskState::default()
            })),
        }
    }
}

/// Applies the sectors of a write that the PRNG keeps; the length grows to the end of the
/// write (the size is metadata, journaled apart from the data: the dropped sectors read as
/// their old contents, zeros past the old end).
fn torn_write(image: &mut Image, data: &[u8], off: u64, rng: &mut SplitMix64) {
    let end = off + data.len() as u64;
    let mut at = off;
    while at < end {
        let next = (at / SECTOR + 1) * SECTOR;
        let piece_end = next.min(end);
        if rng.coin() {
            let from = (at - off) as usize;
            let to = (piece_end - off) as usize;
            image.write(&data[from..to], at);
        }
        at = piece_end;
    }
    image.len = image.len.max(end);
}
