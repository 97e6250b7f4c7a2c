//! Detaching a test's own loop devices without touching another test's.
//!
//! Loop devices are one machine-wide namespace shared by every test running at once. A
//! listing (`losetup --list`) is stale the moment it is read: the device it names may be
//! released and bound again by another test's `losetup --find` before `losetup --detach
//! /dev/loopN` runs, which would then tear the filesystem from under that test. So the
//! clean-up takes a listing only as a list of candidates and decides per device while it
//! holds the device open:
//!
//! 1. open `/dev/loopN` (read-only is enough for `LOOP_CLR_FD`);
//! 2. read the backing file of exactly that device (`/sys/dev/block/MAJ:MIN/loop/
//!    backing_file`, from the open descriptor's `st_rdev`, not from the name);
//! 3. only if it lies under the test's own directory, `LOOP_CLR_FD` on that descriptor.
//!
//! Why holding the descriptor closes the race: the kernel never unbinds a loop device that
//! someone has open. A `LOOP_CLR_FD` by anyone only marks it "autoclear" and the unbinding
//! happens at the last close; a new binding (`LOOP_SET_FD`/`LOOP_CONFIGURE`) needs an
//! unbound device, and the device itself cannot be removed (`LOOP_CTL_REMOVE`) while open.
//! So a binding seen in step 2 is the one step 3 clears. A device that was free at step 1
//! and bound by another test after it shows that test's file in step 2 (or none), and is
//! left alone.
//!
//! What remains: for the microseconds this holds another test's device open (one that
//! was rebound between the listing and step 1), that test's own detach of it completes
//! only at our close (the kernel defers it, as for any other opener such as udev or
//! blkid); its device is never detached by us. The clear itself is also deferred while a
//! filesystem still holds the device (a lazy unmount that is not finished): the kernel
//! then unbinds it when the filesystem lets go, as `losetup --detach` does.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `LOOP_CLR_FD` from linux/loop.h (`_IO('L', 0x01)`); libc does not export it.
const LOOP_CLR_FD: u64 = 0x4C01;

/// The backing file of the loop device `rdev` (a block device number), as the kernel
/// names it; None if the device is not bound (no `loop/backing_file`) or is not a loop.
pub fn backing_file_of_rdev(rdev: u64) -> Option<PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let s = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .ok()?;
    let s = s.strip_suffix('\n').unwrap_or(&s);
    // The kernel appends " (deleted)" when the file has been unlinked.
    let s = s.strip_suffix(" (deleted)").unwrap_or(s);
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Why [`detach_if_under`] did or did not detach a device.
#[derive(Debug, PartialEq, Eq)]
pub enum Detach {
    /// Cleared (or marked to be cleared when its last user lets go); its file was this.
    Detached(PathBuf),
    /// Bound to a file outside the directory: another test's device, left alone.
    NotOurs(PathBuf),
    /// Not bound (any more), gone, or not a loop device.
    Unbound,
    /// The ioctl failed for another reason (errno text).
    Failed(String),
}

/// Detaches `dev` (e.g. "/dev/loop3") only if, while this holds it open, its backing file
/// lies under `root`. See the module comment for why this cannot detach another test's
/// device even when `dev` came from an outdated listing.
pub fn detach_if_under(dev: &Path, root: &Path) -> Detach {
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(dev)
    else {
        return Detach::Unbound;
    };
    let Ok(meta) = f.metadata() else {
        return Detach::Unbound;
    };
    if !meta.file_type().is_block_device() {
        return Detach::Unbound;
    }
    let Some(back) = backing_file_of_rdev(meta.rdev()) else {
        return Detach::Unbound;
    };
    if !back.starts_with(root) {
        return Detach::NotOurs(back);
    }
    // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is open for this call.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _, 0) };
    if r == 0 {
        return Detach::Detached(back);
    }
    match std::io::Error::last_os_error() {
        e if e.raw_os_error() == Some(libc::ENXIO) => Detach::Unbound,
        e => Detach::Failed(e.to_string()),
    }
}

/// Detaches every loop device whose backing file lies under `root`, each re-checked as
/// [`detach_if_under`] does; `candidates` (a listing, possibly outdated) only says which
/// devices to look at. Returns what happened to each.
pub fn detach_all_under(candidates: &[String], root: &Path) -> Vec<(String, Detach)> {
    candidates
        .iter()
        .map(|d| (d.clone(), detach_if_under(Path::new(d), root)))
        .collect()
}
