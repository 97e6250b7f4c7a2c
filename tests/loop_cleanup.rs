//! The test harness's clean-up of loop devices (tests/common/loops.rs): it detaches the
//! devices backed by files under the test's own directory and never another test's, even
//! when the listing it started from has gone out of date (a device released and bound
//! again by a test running beside it).
//!
//! Needs root and loop devices; without them the tests skip, unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes them fail.

mod common;

use std::path::{Path, PathBuf};

use common::loops::{self, Detach};
use common::mount::*;

/// A file of `len` bytes bound to a free loop device, detached (by its own check) when
/// dropped, so a failing test leaves nothing behind.
struct Bound {
    dev: String,
    file: PathBuf,
}

impl Bound {
    #[track_caller]
    fn new(file: PathBuf) -> Bound {
        std::fs::write(&file, vec![0u8; MIB as usize]).expect("write the backing file");
        let dev = sh_ok("losetup", &["--find", "--show", &file.to_string_lossy()])
            .trim()
            .to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        Bound { dev, file }
    }

    /// The backing file the kernel names for this device now, if any.
    fn backing(&self) -> Option<PathBuf> {
        backing_of(&self.dev)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        let dir = self
            .file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let _ = loops::detach_if_under(Path::new(&self.dev), &dir);
    }
}

fn backing_of(dev: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(dev).ok()?.rdev();
    loops::backing_file_of_rdev(rdev)
}

/// Two test directories, "ours" and "theirs", each with a bound loop device. A listing
/// that has gone stale names their device as backed by our file (the device was ours, was
/// released and `losetup --find` gave it to them). Detaching by that listing's name
/// (`losetup --detach`) would pull their device from under them; the re-checked detach
/// leaves it bound to their file and detaches only ours.
#[test]
fn a_stale_listing_never_detaches_another_tests_device() {
    needs!(Loop);
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    let ours_root = canon(ours.path());
    let mine = Bound::new(ours_root.join("mine.img"));
    let other = Bound::new(canon(theirs.path()).join("other.img"));
    assert_eq!(mine.backing().as_deref(), Some(mine.file.as_path()));
    assert_eq!(other.backing().as_deref(), Some(other.file.as_path()));

    // The stale listing: both devices, as if both were backed under our directory.
    let listed = vec![other.dev.clone(), mine.dev.clone()];
    let got = loops::detach_all_under(&listed, &ours_root);

    assert_eq!(
        other.backing().as_deref(),
        Some(other.file.as_path()),
        "the other test's device lost its file"
    );
    assert_eq!(
        got[0],
        (other.dev.clone(), Detach::NotOurs(other.file.clone())),
        "{got:?}"
    );
    assert_eq!(
        got[1],
        (mine.dev.clone(), Detach::Detached(mine.file.clone())),
        "{got:?}"
    );
    assert!(
        wait_until(std::time::Duration::from_secs(5), || mine
            .backing()
            .is_none()),
        "{} is still bound to {:?} after the detach",
        mine.dev,
        mine.backing()
    );
    // A second pass over the same (now doubly stale) listing changes nothing.
    let again = loops::detach_all_under(&listed, &ours_root);
    assert!(matches!(again[0].1, Detach::NotOurs(_)), "{again:?}");
    // Ours is free now (or already someone else's).
    assert!(
        matches!(again[1].1, Detach::Unbound | Detach::NotOurs(_)),
        "{again:?}"
    );
    assert_eq!(other.backing().as_deref(), Some(other.file.as_path()));
}

/// The guard's `Drop` detaches a loop device left bound to a file under its temp dir, and
/// leaves one bound to a file elsewhere (another test's) alone.
#[test]
fn the_guard_detaches_its_own_loop_devices_only() {
    needs!(Loop);
    let theirs = tempfile::tempdir().expect("tempdir");
    let other = Bound::new(canon(theirs.path()).join("other.img"));
    let v = VolEnv::uninit();
    let left = Bound::new(v.dir("loops").join("left.img"));
    let left_dev = left.dev.clone();
    // The test "forgot" it: only the guard will detach it.
    std::mem::forget(left);
    assert!(backing_of(&left_dev).is_some());
    drop(v);
    assert!(
        wait_until(std::time::Duration::from_secs(5), || {
            backing_of(&left_dev).is_none_or(|b| !b.to_string_lossy().contains("left.img"))
        }),
        "{left_dev} is still bound to {:?} after the guard's clean-up",
        backing_of(&left_dev)
    );
    assert_eq!(
        other.backing().as_deref(),
        Some(other.file.as_path()),
        "the guard detached a device that was not its own"
    );
}
