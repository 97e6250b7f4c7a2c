//! Harness for the tests that use real FUSE, loop and kernel mounts: one capability check
//! ([`needs!`]), a guard ([`VolEnv`]) whose `Drop` undoes every attach,
//! mount, loop device, tmpfs and daemon a test left behind (even when it panicked), and
//! small I/O helpers (a seeded xorshift, positional read/write, O_DIRECT buffers).
//!
//! Everything lives under the test's own temp dir; the region daemon is per data dir, so
//! tests run in parallel without sharing anything.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use cryptvol::sys::mountinfo::{self, MountEntry};

use super::{Env, Out, str_field};

/// The kernel's switch for FUSE over io_uring.
pub use cryptvol::daemon::fuse_ring::ENABLE_KNOB as FUSE_RING_KNOB;

/// Set to 1 (CI does) to make a missing capability a test failure instead of a skip.
pub const REQUIRE_ENV: &str = "CRYPTVOL_REQUIRE_MOUNT";

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// The default chunk size of a volume (`--chunk-size 1M`).
pub const CHUNK: u64 = MIB;
pub const BLOCK: u64 = 4096;

/// What a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// /dev/fuse usable, and either root or fusermount3 (what `attach` needs).
    Fuse,
    /// Effective uid 0.
    Root,
    /// Loop devices: root, /dev/loop-control and losetup (what `mount` needs).
    Loop,
    /// A program on PATH (or in /sbin, /usr/sbin): mkfs.ext4, mkfs.xfs, fio, ...
    Tool(&'static str),
    /// FUSE over io_uring: a kernel built with it (its `fuse.enable_uring` switch) and root
    /// to turn it on.
    FuseRing,
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The full path of `tool` if it is installed.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn missing(need: Need) -> Option<String> {
    match need {
        Need::Fuse => {
            if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/fuse") {
                return Some(format!("/dev/fuse cannot be opened ({e})"));
            }
            if !is_root() && which("fusermount3").is_none() {
                return Some("not root and fusermount3 is not installed".into());
            }
            None
        }
        Need::Root => (!is_root()).then(|| "not running as root".to_string()),
        Need::Loop => {
            if !is_root() {
                Some("loop devices need root".into())
            } else if !Path::new("/dev/loop-control").exists() {
                Some("/dev/loop-control does not exist".into())
            } else if which("losetup").is_none() {
                Some("losetup is not installed (util-linux)".into())
            } else {
                None
            }
        }
        Need::Tool(t) => which(t).is_none().then(|| format!("{t} is not installed")),
        Need::FuseRing => {
            if !Path::new(FUSE_RING_KNOB).exists() {
                Some(format!(
                    "the kernel has no FUSE over io_uring ({FUSE_RING_KNOB})"
                ))
            } else {
                (!is_root()).then(|| "turning FUSE over io_uring on needs root".to_string())
            }
        }
    }
}

/// The first line of a test that needs root, FUSE, a loop device or a tool, naming what it
/// needs (the [`Need`] variants): `needs!(Fuse, Loop, Tool("mkfs.ext4"));`. When this
/// machine lacks any of them the test returns there (a skip, with a note on stderr) or,
/// with `CRYPTVOL_REQUIRE_MOUNT=1` (CI), fails naming what is missing.
#[macro_export]
macro_rules! needs {
    ($($need:ident $(($arg:expr))?),+ $(,)?) => {
        if !$crate::common::mount::require_mount_support(&[
            $($crate::common::mount::Need::$need $(($arg))?),+
        ]) {
            return;
        }
    };
}

/// What [`needs!`] checks: true if this machine has everything in `needs`. If not: with
/// `CRYPTVOL_REQUIRE_MOUNT=1` the test fails here with the reason; without it this prints a
/// note and returns false.
#[track_caller]
pub fn require_mount_support(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| missing(*n)).collect();
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_ENV}=1 but this machine cannot run the test: {why}");
    }
    eprintln!("note: skipping (set {REQUIRE_ENV}=1 to make this a failure): {why}");
    false
}

// ---- the kernel's view ------------------------------------------------------------------

/// Every mount this process sees, from the crate's own parser of /proc/self/mountinfo.
pub fn mounts() -> Vec<MountEntry> {
    mountinfo::read().expect("read /proc/self/mountinfo")
}

/// Mounts whose mount point is `prefix` or below it.
pub fn mounts_under(prefix: &Path) -> Vec<MountEntry> {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(prefix))
        .collect()
}

/// The topmost mount at `dir` (canonicalized when it resolves).
pub fn mount_at(dir: &Path) -> Option<MountEntry> {
    mountinfo::find_in(&mounts(), &canon(dir))
}

pub fn is_mount_point(dir: &Path) -> bool {
    mount_at(dir).is_some()
}

/// The canonical path when it resolves, else the path as given (a dead FUSE mount does not).
pub fn canon(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Loop devices and their backing files (`losetup --list --json`: its raw output would
/// escape a space in a path as `\x20`).
pub fn loop_devices() -> Vec<(String, PathBuf)> {
    let Ok(out) = Command::new(which("losetup").unwrap_or_else(|| "losetup".into()))
        .args(["--list", "--json", "--output", "NAME,BACK-FILE"])
        .output()
    else {
        return vec![];
    };
    // No loop device at all: empty output, not `{"loopdevices": []}`.
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["loopdevices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let dev = d["name"].as_str()?;
            // losetup appends " (deleted)" when the backing file is gone.
            let back = d["back-file"].as_str()?.trim_end_matches(" (deleted)");
            Some((dev.to_string(), PathBuf::from(back)))
        })
        .collect()
}

/// Loop devices whose backing file is under `prefix`.
pub fn loops_under(prefix: &Path) -> Vec<(String, PathBuf)> {
    loop_devices()
        .into_iter()
        .filter(|(_, b)| b.starts_with(prefix))
        .collect()
}

/// True if `pid` exists and is not a zombie (an exited daemon whose parent, gone, cannot
/// reap it stays a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
        Err(_) => false,
    }
}

/// The resident memory of `pid` (VmRSS, KiB); panics if the process is gone.
pub fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}: has it exited?"))
}

/// Live `cryptvol ... daemon` processes serving `data_dir`.
pub fn daemons_of(data_dir: &Path) -> Vec<i32> {
    let want = data_dir.as_os_str().as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            args.iter().any(|a| *a == b"daemon")
                && args.contains(&want)
                && args.first().is_some_and(|a| a.ends_with(b"cryptvol"))
                && process_alive(*pid)
        })
        .collect()
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a system tool; returns (success, stdout + stderr).
pub fn sh(tool: &str, args: &[&str]) -> (bool, String) {
    let prog = which(tool).unwrap_or_else(|| tool.into());
    match Command::new(&prog).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {tool}: {e}")),
    }
}

/// Runs a system tool that must succeed; returns its output.
#[track_caller]
pub fn sh_ok(tool: &str, args: &[&str]) -> String {
    let (ok, out) = sh(tool, args);
    assert!(ok, "`{tool} {}` failed: {out}", args.join(" "));
    out
}

fn umount_lazy(dir: &Path) {
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    if is_mount_point(dir) {
        let d = dir.to_string_lossy();
        let _ = sh("fusermount3", &["-u", "-z", &d]);
    }
}

// ---- the guard ------------------------------------------------------------------------

/// A test's data dir (an [`Env`]) plus everything the test attached or mounted; dropping it
/// tears all of that down: `cryptvol unmount`/`detach` first, then, for whatever is left,
/// `umount -l`, a detach of the loop devices re-checked per device (`loops`),
/// SIGTERM/SIGKILL of the data dir's daemons, and finally any mount (tmpfs included) under
/// the test's temp dir.
pub struct VolEnv {
    pub env: Env,
    attached: RefCell<Vec<PathBuf>>,
    mounted: RefCell<Vec<PathBuf>>,
    tmpfs: RefCell<Vec<PathBuf>>,
}

impl std::ops::Deref for VolEnv {
    type Target = Env;
    fn deref(&self) -> &Env {
        &self.env
    }
}

impl Default for VolEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl VolEnv {
    /// A fresh, initialised data dir.
    pub fn new() -> VolEnv {
        let v = VolEnv::uninit();
        v.ok(&["init"]);
        v
    }

    /// A fresh temp dir; the data dir is not initialised.
    pub fn uninit() -> VolEnv {
        VolEnv {
            env: Env::new(),
            attached: RefCell::new(vec![]),
            mounted: RefCell::new(vec![]),
            tmpfs: RefCell::new(vec![]),
        }
    }

    /// Points the data dir somewhere else under the temp dir (e.g. on a small tmpfs).
    pub fn set_data_dir(&mut self, dir: PathBuf) {
        assert!(
            dir.starts_with(self.env.scratch()),
            "the data dir must stay under the test's temp dir"
        );
        self.env.data = dir;
    }

    pub fn region(&self) -> PathBuf {
        self.region_dir(super::DEFAULT_REGION)
    }

    pub fn pool_dir(&self) -> PathBuf {
        self.region().join("pool")
    }

    /// The pool's data file of 1 MiB chunks (the default chunk size).
    pub fn pool_data_file(&self) -> PathBuf {
        self.pool_dir().join("data-1024k.pool")
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.region().join("logs/daemon.log")).unwrap_or_default()
    }

    /// A new empty directory under the temp dir (outside the data dir).
    #[track_caller]
    pub fn dir(&self, name: &str) -> PathBuf {
        let d = self.scratch().join(name);
        std::fs::create_dir_all(&d).expect("create dir");
        d.canonicalize().expect("canonical dir")
    }

    /// `volume create ARGS`; returns the volume id.
    #[track_caller]
    pub fn create(&self, args: &[&str]) -> String {
        let mut a = vec!["volume", "create"];
        a.extend_from_slice(args);
        let v = self.json(&a);
        let id = str_field(&v, "VolumeId");
        assert!(
            id.starts_with("vol-") && id.len() == 21,
            "not a volume id: {id}"
        );
        id
    }

    #[track_caller]
    pub fn describe_vol(&self, vol: &str) -> Value {
        self.json(&["volume", "describe", vol])
    }

    #[track_caller]
    pub fn allocated(&self, vol: &str) -> u64 {
        self.describe_vol(vol)["AllocatedBytes"]
            .as_u64()
            .expect("AllocatedBytes")
    }

    #[track_caller]
    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// The daemon pid as `status --query DaemonPid --output text` prints it.
    #[track_caller]
    pub fn daemon_pid(&self) -> Option<i32> {
        let out = self.ok(&["status", "--query", "DaemonPid", "--output", "text"]);
        let t = out.trim();
        if t == "None" || t.is_empty() {
            None
        } else {
            Some(
                t.parse()
                    .unwrap_or_else(|_| panic!("DaemonPid is not a pid: {t:?}")),
            )
        }
    }

    /// Runs `attach VOL DIR EXTRA...` (remembering DIR for cleanup, whatever happens).
    pub fn attach_run(&self, vol: &str, dir: &Path, extra: &[&str]) -> Out {
        self.attach_run_env(vol, dir, extra, &[])
    }

    /// [`Self::attach_run`] with extra environment variables (the daemon it starts keeps
    /// them).
    pub fn attach_run_env(
        &self,
        vol: &str,
        dir: &Path,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Out {
        self.attached.borrow_mut().push(dir.to_path_buf());
        let d = dir.to_string_lossy();
        let mut a = vec!["attach", vol, &d];
        a.extend_from_slice(extra);
        self.run_env(&a, envs)
    }

    /// `cryptvol pool check` of `region` (online through its daemon, or offline) is clean:
    /// every slot counted as many times as maps point at it, nothing leaked or owned twice.
    #[track_caller]
    pub fn assert_pool_clean(&self, region: &str) {
        let out = self.run(&["--region", region, "pool", "check"]);
        assert_eq!(
            out.code, 0,
            "pool check of {region} after this test: {}\n{}",
            out.stderr, out.stdout
        );
    }

    /// Attaches and checks the result; returns DIR/volume.
    #[track_caller]
    pub fn attach(&self, vol: &str, dir: &Path, extra: &[&str]) -> PathBuf {
        let v = self.attach_run(vol, dir, extra).ok().json();
        let file = canon(dir).join("volume");
        if vol.starts_with("vol-") {
            assert_eq!(str_field(&v, "VolumeId"), vol, "{v:#}");
        }
        assert_eq!(PathBuf::from(str_field(&v, "File")), file, "{v:#}");
        // `attach` returns only when the mount is there.
        let m =
            mount_at(dir).unwrap_or_else(|| panic!("attach returned but {dir:?} is not mounted"));
        assert!(
            m.fs_type == "fuse" || m.fs_type.starts_with("fuse."),
            "{dir:?} is a {} mount, not FUSE",
            m.fs_type
        );
        assert!(file.exists(), "{file:?} is missing after attach");
        file
    }

    /// `detach DIR`, which must succeed and leave no mount at DIR.
    #[track_caller]
    pub fn detach(&self, dir: &Path) {
        let d = dir.to_string_lossy();
        self.run(&["detach", &d]).ok();
        assert!(
            !is_mount_point(dir),
            "{dir:?} is still a mount point after detach"
        );
        assert!(
            !dir.join("volume").exists(),
            "{dir:?}/volume still exists after detach"
        );
    }

    /// Runs `mount VOL DIR --fs FS EXTRA...` (remembering DIR for cleanup).
    pub fn mount_run(&self, vol: &str, dir: &Path, fs: &str, extra: &[&str]) -> Out {
        self.mounted.borrow_mut().push(dir.to_path_buf());
        let d = dir.to_string_lossy();
        let mut a = vec!["mount", vol, &d, "--fs", fs];
        a.extend_from_slice(extra);
        self.run(&a)
    }

    /// Mounts and checks the result; returns the printed mount record.
    #[track_caller]
    pub fn mount(&self, vol: &str, dir: &Path, fs: &str) -> Value {
        let v = self.mount_run(vol, dir, fs, &[]).ok().json();
        let m =
            mount_at(dir).unwrap_or_else(|| panic!("mount returned but {dir:?} is not mounted"));
        assert_eq!(m.fs_type, fs, "{dir:?} holds {} instead of {fs}", m.fs_type);
        v
    }

    #[track_caller]
    pub fn unmount(&self, dir: &Path) {
        let d = dir.to_string_lossy();
        self.run(&["unmount", &d]).ok();
        assert!(
            !is_mount_point(dir),
            "{dir:?} is still a mount point after unmount"
        );
    }

    /// Mounts a tmpfs of `size` (e.g. "64M") on `dir`; unmounted by the guard.
    #[track_caller]
    pub fn mount_tmpfs(&self, dir: &Path, size: &str) {
        self.tmpfs.borrow_mut().push(dir.to_path_buf());
        let d = dir.to_string_lossy();
        sh_ok(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
                &d,
            ],
        );
    }

    /// Waits (up to `timeout`) until no daemon serves this data dir.
    pub fn wait_no_daemon(&self, timeout: Duration) -> bool {
        wait_until(timeout, || daemons_of(&self.data).is_empty())
    }

    /// Runs the binary without any check (for cleanup, which must never panic).
    fn quiet(&self, args: &[&str]) {
        let mut c = self.cmd();
        c.arg("--data-dir").arg(&self.data).args(args);
        let _ = c.output();
    }

    fn cleanup(&self) {
        // Canonical, as the kernel names mount points and loop backing files.
        let root = canon(self.scratch());
        // 1. What the test mounted or attached, the way a user would undo it.
        for d in self.mounted.borrow().iter().rev() {
            if is_mount_point(d) || !records_empty(self) {
                self.quiet(&["unmount", &d.to_string_lossy()]);
            }
            if is_mount_point(d) {
                umount_lazy(d);
            }
        }
        for d in self.attached.borrow().iter().rev() {
            if is_mount_point(d) {
                self.quiet(&["detach", &d.to_string_lossy()]);
            }
            if is_mount_point(d) {
                umount_lazy(d);
            }
        }
        // 2. Kernel filesystems on loop devices, then the loop devices, under the temp dir.
        let mut left: Vec<MountEntry> = mounts_under(&root)
            .into_iter()
            .filter(|m| !m.fs_type.starts_with("fuse") && m.fs_type != "tmpfs")
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in left {
            umount_lazy(&m.mount_point);
        }
        // The listing only names candidates: each is detached only if, re-checked while
        // held open, its backing file is still under our directory (see `loops`).
        detach_our_loops(&root);
        // 3. The data dir's daemons: SIGTERM (flush and unmount), then SIGKILL.
        let mut pids = daemons_of(&self.data);
        if !pids.is_empty() {
            for p in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            wait_until(Duration::from_secs(5), || {
                pids.iter().all(|p| !process_alive(*p))
            });
            pids.retain(|p| process_alive(*p));
            for p in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            wait_until(Duration::from_secs(5), || {
                pids.iter().all(|p| !process_alive(*p))
            });
        }
        // 4. Anything still mounted under the temp dir (dead FUSE mounts, tmpfs), deepest
        //    first, and loop devices freed by now.
        let mut left = mounts_under(&root);
        left.sort_by_key(|m| std::cmp::Reverse(m.mount_point.as_os_str().len()));
        for m in left {
            umount_lazy(&m.mount_point);
        }
        detach_our_loops(&root);
        for d in self.tmpfs.borrow().iter() {
            if is_mount_point(d) {
                umount_lazy(d);
            }
        }
    }
}

/// Detaches the loop devices backed by files under `root`, and only those: a device the
/// listing names but that another test has bound since is left alone.
fn detach_our_loops(root: &Path) {
    let candidates: Vec<String> = loops_under(root).into_iter().map(|(d, _)| d).collect();
    for (dev, what) in super::loops::detach_all_under(&candidates, root) {
        if let super::loops::Detach::Failed(e) = what {
            eprintln!("warning: cannot detach {dev}: {e}");
        }
    }
}

/// True if the region holds no `mount` records (nothing for `unmount` to undo).
pub fn records_empty(v: &VolEnv) -> bool {
    std::fs::read_dir(v.region().join("run/mounts")).map_or(true, |mut rd| rd.next().is_none())
}

impl Drop for VolEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.daemon_log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- last lines of the daemon log ---\n{}", tail.join("\n"));
        }
        // `cleanup` checks nothing and never panics on purpose: this also runs while a
        // failed test unwinds, where a second panic would abort the test binary. Should
        // one slip through in a passing test, keep the rest of the run going.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cleanup()));
        if r.is_err() {
            eprintln!("warning: cleanup of {:?} panicked", self.scratch());
        }
    }
}

// ---- I/O helpers ----------------------------------------------------------------------

/// xorshift64*: tiny, seeded, good enough to pick offsets and fill buffers.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The seed of this run: `CRYPTVOL_TEST_SEED` if set, else `default`. Printed, so a
    /// failure can be replayed.
    pub fn from_env(default: u64) -> Rng {
        let seed = std::env::var("CRYPTVOL_TEST_SEED")
            .ok()
            .and_then(|s| {
                let s = s.trim();
                s.strip_prefix("0x")
                    .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
            })
            .unwrap_or(default);
        eprintln!("seed: {seed:#x} (replay with CRYPTVOL_TEST_SEED={seed:#x})");
        Rng::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform-enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// In `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// Opens an attached volume file for reading and writing.
#[track_caller]
pub fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path:?}: {e}"))
}

/// Opens with O_DIRECT (buffers, offsets and lengths must be 4 KiB-aligned).
#[track_caller]
pub fn open_direct(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {path:?} with O_DIRECT: {e}"))
}

#[track_caller]
pub fn pwrite(f: &File, off: u64, data: &[u8]) {
    f.write_all_at(data, off)
        .unwrap_or_else(|e| panic!("pwrite {} bytes at {off}: {e}", data.len()));
}

#[track_caller]
pub fn pread(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0; len];
    f.read_exact_at(&mut b, off)
        .unwrap_or_else(|e| panic!("pread {len} bytes at {off}: {e}"));
    b
}

/// Asserts `got == want`, reporting the first differing byte (not megabytes of hex).
#[track_caller]
pub fn assert_bytes(what: &str, base: u64, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i + 16).min(got.len());
        panic!(
            "{what}: first difference at byte {} (offset {}): got {:02x?}, want {:02x?}",
            i,
            base + i as u64,
            &got[i..end],
            &want[i..end]
        );
    }
}

#[track_caller]
pub fn assert_zeros(what: &str, base: u64, got: &[u8]) {
    if let Some(i) = got.iter().position(|b| *b != 0) {
        panic!(
            "{what}: expected zeros, byte {i} (offset {}) is {:#04x}",
            base + i as u64,
            got[i]
        );
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        assert!(len > 0 && len.is_multiple_of(BLOCK as usize));
        let layout = std::alloc::Layout::from_size_align(len, BLOCK as usize).expect("layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "allocation failed");
        AlignedBuf { ptr, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points at len initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, BLOCK as usize).expect("layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// Runs fio with JSON output; asserts success and that it wrote `bytes`. Returns the job.
#[track_caller]
pub fn fio(cwd: &Path, args: &[&str], bytes: u64) -> Value {
    let mut all = vec!["--output-format=json", "--verify_state_save=0"];
    all.extend_from_slice(args);
    let out = std::process::Command::new(which("fio").expect("fio"))
        .args(&all)
        .current_dir(cwd)
        .output()
        .expect("run fio");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fio {} failed ({}): {}\n{}",
        args.join(" "),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    // fio may print notes before the JSON.
    let json_start = stdout.find('{').expect("fio JSON");
    let v: Value = serde_json::from_str(&stdout[json_start..]).expect("fio JSON");
    let job = v["jobs"][0].clone();
    assert_eq!(job["error"], 0, "{job:#}");
    if bytes > 0 {
        assert_eq!(job["write"]["io_bytes"], bytes, "bytes written by fio");
    }
    job
}

/// Bytes a file takes on disk (`st_blocks * 512`: holes excluded); 0 if it does not exist.
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// True if `needle` occurs in the file (read in 1 MiB pieces with overlap).
pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let piece = MIB as usize;
    let mut buf = vec![0u8; piece + needle.len()];
    let mut off = 0u64;
    let mut carry = 0usize;
    loop {
        let n = match f.read_at(&mut buf[carry..carry + piece], off) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(_) => return false,
        };
        off += n as u64;
        let have = carry + n;
        if buf[..have].windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        carry = (needle.len() - 1).min(have);
        buf.copy_within(have - carry..have, 0);
    }
}

// ---- FUSE over io_uring -----------------------------------------------------------------

/// The names of the threads of process `pid` (`/proc/PID/task/*/comm`).
pub fn thread_names(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The daemon's threads that serve ring queues (`fuse-ring-Q.T`).
pub fn ring_threads(pid: i32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|c| c.starts_with("fuse-ring"))
        .count()
}

/// A fresh data dir whose attaches and mounts ask for FUSE over io_uring
/// (`CRYPTVOL_FUSE_TRANSPORT=uring`), whatever transport the test runner chose for the
/// rest of the suite (CI runs the volume tests a second time with `classic`).
pub fn ring_env() -> VolEnv {
    let v = VolEnv::new();
    v.set_env("CRYPTVOL_FUSE_TRANSPORT", "uring");
    v
}

/// `status`'s `FuseTransport` for the volume attached at `dir`.
pub fn transport(v: &VolEnv, dir: &Path) -> String {
    let st = v.status();
    let dir = canon(dir);
    st["Volumes"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["AttachedAt"].as_str() == Some(dir.to_str().unwrap_or_default()))
        })
        .and_then(|e| e["FuseTransport"].as_str())
        .unwrap_or_else(|| panic!("no FuseTransport for {dir:?} in {st:#}"))
        .to_string()
}
