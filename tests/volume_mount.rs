//! `cryptvol mount`: a kernel filesystem (ext4, xfs) on a loop device over the attached
//! volume. Files survive unmount and mount, fio's crc32c verification passes inside the
//! filesystem, `unmount` leaves no mount, loop device or daemon behind, and a failed
//! `mount` or `unmount` does not disturb anything else.
//!
//! Needs root, FUSE, loop devices and mkfs; without them the tests skip, unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes them fail.

mod common;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mount::*;
use serde_json::Value;

/// Checks a fresh mount record and the loop device behind it; returns (attach file, device).
#[track_caller]
fn check_mounted(v: &VolEnv, rec: &Value, vol: &str, dir: &Path, fs: &str) -> (PathBuf, String) {
    assert_eq!(rec["VolumeId"], vol, "{rec:#}");
    assert_eq!(rec["Dir"], dir.to_string_lossy().as_ref(), "{rec:#}");
    assert_eq!(rec["Fs"], fs, "{rec:#}");
    let dev = rec["LoopDevice"]
        .as_str()
        .unwrap_or_else(|| panic!("no LoopDevice in {rec:#}"))
        .to_string();
    assert!(dev.starts_with("/dev/loop"), "{rec:#}");
    let attach_dir = PathBuf::from(rec["AttachDir"].as_str().expect("AttachDir"));
    assert!(
        attach_dir.starts_with(&v.data),
        "the private attach dir {attach_dir:?} is outside the data dir"
    );
    let file = attach_dir.join("volume");
    assert!(
        is_mount_point(&attach_dir),
        "{attach_dir:?} is not attached"
    );
    // The loop device: backed by the attached file, direct I/O, 4096-byte sectors.
    let out = sh_ok(
        "losetup",
        &[
            "--list",
            "--noheadings",
            "--raw",
            "--output",
            "NAME,DIO,LOG-SEC,BACK-FILE",
            &dev,
        ],
    );
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f.first(), Some(&dev.as_str()), "{out}");
    assert_eq!(
        f.get(1),
        Some(&"1"),
        "loop device without direct I/O: {out}"
    );
    assert_eq!(f.get(2), Some(&"4096"), "loop device sector size: {out}");
    assert_eq!(f.get(3).map(PathBuf::from), Some(file.clone()), "{out}");
    // Requests of at most 256 KiB, so that the daemon's threads share large writes.
    let name = dev.trim_start_matches("/dev/");
    let kb = std::fs::read_to_string(format!("/sys/block/{name}/queue/max_sectors_kb")).unwrap();
    assert_eq!(kb.trim(), "256", "max_sectors_kb of {dev}");
    let m = mount_at(dir).expect("mounted");
    assert_eq!(
        m.source_str(),
        Some(dev.as_str()),
        "{dir:?} is not mounted from {dev}"
    );
    // status joins the attachment and the mount.
    let st = v.status();
    let e = st["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["VolumeId"] == vol)
        .unwrap_or_else(|| panic!("status does not list {vol}: {st:#}"))
        .clone();
    assert_eq!(e["MountedAt"], dir.to_string_lossy().as_ref(), "{st:#}");
    assert_eq!(
        e["AttachedAt"],
        attach_dir.to_string_lossy().as_ref(),
        "{st:#}"
    );
    assert_eq!(e["LoopDevice"], dev.as_str(), "{st:#}");
    (file, dev)
}

/// After `unmount`: no mount at `dir` or under the data dir, no loop device over the
/// volume, nothing in `status`, no mount record, and the daemon gone.
#[track_caller]
fn assert_clean(v: &VolEnv, dir: &Path, file: &Path) {
    assert!(!is_mount_point(dir), "{dir:?} is still mounted");
    let left = mounts_under(&v.data);
    assert!(left.is_empty(), "mounts left under the data dir: {left:?}");
    let (_, out) = sh("losetup", &["--associated", &file.to_string_lossy()]);
    assert!(
        out.trim().is_empty(),
        "loop devices left over {file:?}: {out}"
    );
    let loops = loops_under(v.scratch());
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
    assert!(
        records_empty(v),
        "mount records left in {:?}",
        v.region().join("run/mounts")
    );
    assert!(
        v.wait_no_daemon(Duration::from_secs(10)),
        "the region daemon still runs 10 s after unmount"
    );
    let st = v.status();
    assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {path:?}: {e}"));
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

#[track_caller]
fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {path:?}: {e}"))
}

#[test]
fn ext4_files_survive_unmount_and_mount_and_unmount_leaves_nothing() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.ext4"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "1G", "--name", "home"]);
    let dir = v.dir("home");
    let rec = v.mount("home", &dir, "ext4");
    let (file, _) = check_mounted(&v, &rec, &vol, &dir, "ext4");
    let found = sh_ok(
        "blkid",
        &["-p", "-o", "value", "-s", "TYPE", &file.to_string_lossy()],
    );
    assert_eq!(found.trim(), "ext4");

    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0008);
    let big = rng.bytes(20 * MIB as usize + 12345);
    let text = b"cryptvol: an encrypted directory\n".to_vec();
    std::fs::create_dir(dir.join("docs")).unwrap();
    write_synced(&dir.join("big.bin"), &big);
    write_synced(&dir.join("docs/readme.txt"), &text);
    sync_dir(&dir.join("docs"));
    sync_dir(&dir);
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);

    // Mounted again: the same filesystem (no second mkfs), the same bytes.
    let rec = v.mount(&vol, &dir, "ext4");
    check_mounted(&v, &rec, &vol, &dir, "ext4");
    assert_bytes("big.bin", 0, &read(&dir.join("big.bin")), &big);
    assert_eq!(read(&dir.join("docs/readme.txt")), text);

    // fio's own verification on a file inside the filesystem.
    let d = format!("--directory={}", dir.display());
    let j = fio(
        v.scratch(),
        &[
            "--name=ext4",
            &d,
            "--size=64M",
            "--rw=randwrite",
            "--bs=4k",
            "--direct=1",
            "--ioengine=libaio",
            "--iodepth=16",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
        ],
        64 * MIB,
    );
    assert!(
        j["read"]["io_bytes"].as_u64() >= Some(64 * MIB),
        "fio did not verify: {j:#}"
    );
    assert_bytes("big.bin after fio", 0, &read(&dir.join("big.bin")), &big);
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);

    // The filesystem is clean: fsck the volume through a plain attach.
    if which("fsck.ext4").is_some() {
        let raw = v.dir("raw");
        let f = v.attach(&vol, &raw, &[]);
        sh_ok("fsck.ext4", &["-n", "-f", &f.to_string_lossy()]);
        v.detach(&raw);
    }

    // The wrong --fs is refused, and the failed mount leaves nothing behind.
    let line = v.mount_run(&vol, &dir, "xfs", &[]).fails(6);
    assert!(line.contains("ext4"), "{line}");
    assert_clean(&v, &dir, &file);
    // And the volume still mounts.
    v.mount(&vol, &dir, "ext4");
    assert_eq!(read(&dir.join("docs/readme.txt")), text);
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);
}

#[test]
fn xfs_files_survive_unmount_and_mount() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.xfs"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "512M"]);
    let dir = v.dir("x");
    let rec = v.mount(&vol, &dir, "xfs");
    let (file, _) = check_mounted(&v, &rec, &vol, &dir, "xfs");
    let mut rng = Rng::from_env(0x00c0_ffee_5eed_0009);
    let big = rng.bytes(8 * MIB as usize + 1);
    write_synced(&dir.join("a.bin"), &big);
    write_synced(&dir.join("b.txt"), b"xfs on cryptvol\n");
    sync_dir(&dir);
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);
    let rec = v.mount(&vol, &dir, "xfs");
    check_mounted(&v, &rec, &vol, &dir, "xfs");
    assert_bytes("a.bin", 0, &read(&dir.join("a.bin")), &big);
    assert_eq!(read(&dir.join("b.txt")), b"xfs on cryptvol\n");
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);
}

#[test]
fn unmount_refuses_what_cryptvol_did_not_mount() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.ext4"));
    let v = VolEnv::new();
    // A plain directory, and a missing one: not found (exit 3).
    let plain = v.dir("plain");
    for d in [plain.clone(), v.path("missing")] {
        let line = v.run(&["unmount", &d.to_string_lossy()]).fails(3);
        assert!(line.contains("status"), "{line}");
    }
    // Somebody else's mount: exit 3, and it stays mounted.
    let other = v.dir("other");
    v.mount_tmpfs(&other, "1M");
    std::fs::write(other.join("keep"), b"mine").unwrap();
    v.run(&["unmount", &other.to_string_lossy()]).fails(3);
    assert!(
        is_mount_point(&other),
        "unmount took down a tmpfs it did not mount"
    );
    assert_eq!(read(&other.join("keep")), b"mine");
    // An attached (not mounted) volume: `unmount` is not `detach`.
    let vol = v.create(&["--size", "64M"]);
    let att = v.dir("att");
    let f = v.attach(&vol, &att, &[]);
    v.run(&["unmount", &att.to_string_lossy()]).fails(3);
    assert!(is_mount_point(&att), "unmount detached an attached volume");
    let data = open_rw(&f);
    pwrite(&data, 0, b"alive");
    assert_eq!(pread(&data, 0, 5), b"alive");
    drop(data);
    v.detach(&att);
    // `mount` on a directory that already is a mount point: refused (exit 6), untouched.
    v.mount_run(&vol, &other, "ext4", &[]).fails(6);
    assert_eq!(mount_at(&other).map(|m| m.fs_type), Some("tmpfs".into()));
    assert_eq!(read(&other.join("keep")), b"mine");
    assert!(loops_under(v.scratch()).is_empty());
}

#[test]
fn a_second_mount_of_a_mounted_volume_fails_without_harming_the_first() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.ext4"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "512M"]);
    let (d1, d2) = (v.dir("one"), v.dir("two"));
    let rec = v.mount(&vol, &d1, "ext4");
    let (file, _) = check_mounted(&v, &rec, &vol, &d1, "ext4");
    write_synced(&d1.join("f"), b"first mount");

    let line = v.mount_run(&vol, &d2, "ext4", &[]).fails(4);
    assert!(line.contains(&vol), "{line}");
    assert!(
        !is_mount_point(&d2),
        "the refused mount left {d2:?} mounted"
    );
    // The first mount is intact: mounted, writable, listed, and `unmount` still works.
    assert!(is_mount_point(&d1));
    write_synced(&d1.join("g"), b"still writable");
    assert_eq!(read(&d1.join("f")), b"first mount");
    check_mounted(&v, &rec, &vol, &d1, "ext4");
    v.unmount(&d1);
    assert_clean(&v, &d1, &file);
    let rec = v.mount(&vol, &d2, "ext4");
    check_mounted(&v, &rec, &vol, &d2, "ext4");
    assert_eq!(read(&d2.join("g")), b"still writable");
    v.unmount(&d2);
    assert_clean(&v, &d2, &file);
}

#[test]
fn unmount_after_a_daemon_crash_cleans_up_and_the_volume_mounts_again() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.ext4"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "512M"]);
    let dir = v.dir("fs");
    let rec = v.mount(&vol, &dir, "ext4");
    let (file, _) = check_mounted(&v, &rec, &vol, &dir, "ext4");
    write_synced(&dir.join("kept"), b"fsynced before the crash");
    sync_dir(&dir);

    let pid = v.daemon_pid().expect("a daemon serves the mounted volume");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9 the daemon");
    assert!(
        wait_until(Duration::from_secs(10), || !process_alive(pid)),
        "daemon {pid} survived SIGKILL"
    );
    // docs/cli.md: `unmount` undoes every step still in place, even after a crash.
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);
    let rec = v.mount(&vol, &dir, "ext4");
    check_mounted(&v, &rec, &vol, &dir, "ext4");
    assert_eq!(read(&dir.join("kept")), b"fsynced before the crash");
    v.unmount(&dir);
    assert_clean(&v, &dir, &file);
    v.assert_pool_clean("local-1");
}

/// The kernel writes ' ', '\t' and '\n' in /proc/self/mountinfo as octal escapes: `mount`
/// must still see that such a directory is a mount point, and `unmount` must undo it.
#[test]
fn mount_paths_with_spaces_are_found_by_mount_and_unmount() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.ext4"));
    let v = VolEnv::new();
    let vol = v.create(&["--size", "256M"]);
    let other = v.create(&["--size", "256M"]);
    for (i, name) in ["my data", "tab\tand\nnewline"].into_iter().enumerate() {
        let dir = v.dir(name);
        let rec = v.mount(&vol, &dir, "ext4");
        let (file, _) = check_mounted(&v, &rec, &vol, &dir, "ext4");
        if i == 0 {
            write_synced(&dir.join("f"), b"kept across mounts");
            sync_dir(&dir);
        } else {
            assert_eq!(read(&dir.join("f")), b"kept across mounts");
        }
        // Another mount on it is refused (exit 6) and the first stays as it was. (The
        // message names the directory as it is: with its newline, it is not one line.)
        let out = v.mount_run(&other, &dir, "ext4", &[]);
        assert_eq!(out.code, 6, "{out:?}");
        assert!(out.stderr.contains("already a mount point"), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        check_mounted(&v, &rec, &vol, &dir, "ext4");
        assert_eq!(read(&dir.join("f")), b"kept across mounts");
        v.unmount(&dir);
        assert_clean(&v, &dir, &file);
    }
}

/// A volume mounted with `--region R` is unmounted without `--region` (or with another
/// one): its record is found in R, and the detach goes to R's daemon.
#[test]
fn unmount_across_regions_finds_the_record_of_the_mount() {
    needs!(Fuse, Root, Loop, Tool("blkid"), Tool("mkfs.ext4"));
    let v = VolEnv::new();
    let region = "eu-2";
    v.ok(&["--region", region, "init"]);
    let vol = v.json(&["--region", region, "volume", "create", "--size", "256M"])["VolumeId"]
        .as_str()
        .expect("VolumeId")
        .to_string();
    let dir = v.dir("in eu-2");
    for (i, unmount_region) in [None, Some(common::DEFAULT_REGION)].into_iter().enumerate() {
        let rec = v
            .mount_run(&vol, &dir, "ext4", &["--region", region])
            .ok()
            .json();
        assert_eq!(mount_at(&dir).map(|m| m.fs_type), Some("ext4".into()));
        if i == 0 {
            write_synced(&dir.join("f"), b"from eu-2");
            sync_dir(&dir);
        } else {
            assert_eq!(read(&dir.join("f")), b"from eu-2");
            // The attachment under the mount names its region.
            let attach_dir = PathBuf::from(rec["AttachDir"].as_str().expect("AttachDir"));
            assert_eq!(
                mount_at(&attach_dir).and_then(|m| m.source_str().map(str::to_owned)),
                Some(format!("cryptvol:{region}/{vol}"))
            );
        }
        let d = dir.to_string_lossy();
        match unmount_region {
            None => v.run(&["unmount", &d]).ok(),
            Some(r) => v.run(&["--region", r, "unmount", &d]).ok(),
        };
        assert!(!is_mount_point(&dir), "{dir:?} is still mounted");
        let left = mounts_under(&v.data);
        assert!(left.is_empty(), "mounts left under the data dir: {left:?}");
        let loops = loops_under(v.scratch());
        assert!(loops.is_empty(), "loop devices left: {loops:?}");
        let records = v.region_dir(region).join("run/mounts");
        assert!(
            std::fs::read_dir(&records).map_or(true, |mut rd| rd.next().is_none()),
            "mount records left in {records:?}"
        );
        assert!(
            v.wait_no_daemon(Duration::from_secs(10)),
            "a region daemon still runs 10 s after unmount"
        );
        let st = v.json(&["--region", region, "status"]);
        assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
        let d = v.json(&["--region", region, "volume", "describe", &vol]);
        assert_eq!(d["State"], "available", "{d:#}");
    }
    v.ok(&["--region", region, "volume", "delete", &vol, "--yes"]);
}
