//! `attach --foreground` of an authenticated volume whose whole pool was put back to an
//! earlier copy (a rollback): refused with exit 26 naming the volume and
//! `--accept-rollback`; with that flag the attach serves in the foreground process, which
//! stays up and reads the old data; once it is stopped (SIGTERM, as Ctrl-C), the anchor has
//! moved and a plain attach needs no flag.
//!
//! Needs FUSE; without it the test skips, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which
//! makes it fail.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use common::mount::*;
use common::pool_peek;

/// Exit code of attach of a volume whose pool is older than its anchor.
const EXIT_ROLLED_BACK: i32 = 26;
/// The volume block the test writes and reads (in the first chunk).
const BLOCK_NO: u64 = 5;

fn data(seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(BLOCK as usize)
}

/// Attaches (in the background daemon), writes `bytes` to block `BLOCK_NO`, fsyncs,
/// detaches.
#[track_caller]
fn write_attached(v: &VolEnv, vol: &str, dir: &Path, bytes: &[u8]) {
    let file = v.attach(vol, dir, &[]);
    let f = open_rw(&file);
    pwrite(&f, BLOCK_NO * BLOCK, bytes);
    f.sync_all().expect("fsync the volume");
    drop(f);
    v.detach(dir);
}

#[track_caller]
fn read_block(dir: &Path) -> Vec<u8> {
    let f = File::open(dir.join("volume")).expect("open DIR/volume");
    pread(&f, BLOCK_NO * BLOCK, BLOCK as usize)
}

/// `cryptvol attach VOL DIR --foreground EXTRA...` running as a child of the test, its
/// stderr in a file. Dropping it stops the process (SIGTERM, then SIGKILL) if it still
/// runs, so a failed test leaves no server behind; the guard's clean-up then clears the
/// mount.
struct Foreground {
    child: Child,
    stderr: PathBuf,
}

impl Foreground {
    #[track_caller]
    fn start(v: &VolEnv, vol: &str, dir: &Path, extra: &[&str]) -> Foreground {
        let stderr = v.scratch().join("foreground.stderr");
        let mut c = Command::new(env!("CARGO_BIN_EXE_cryptvol"));
        // As the harness runs the binary: nothing from the runner's environment.
        for var in [
            "CRYPTVOL_REGION",
            "CRYPTVOL_DATA_DIR",
            "CRYPTVOL_PASSPHRASE_FILE",
            common::SKEW_ENV,
        ] {
            c.env_remove(var);
        }
        c.env("NO_COLOR", "1")
            .current_dir(v.scratch())
            .arg("--data-dir")
            .arg(&v.data)
            .args(["attach", vol])
            .arg(dir)
            .arg("--foreground")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr).expect("create the stderr file"));
        let child = c.spawn().expect("start cryptvol attach --foreground");
        Foreground { child, stderr }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status if the process has ended.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .expect("wait for the foreground attach")
    }

    /// Waits until DIR is a FUSE mount while the process still runs; fails the test if the
    /// process ends first (with its stderr) or the mount does not appear.
    #[track_caller]
    fn wait_mounted(&mut self, dir: &Path) {
        let mut ended = None;
        let up = wait_until(Duration::from_secs(30), || {
            ended = self.exited();
            ended.is_none()
                && mount_at(dir).is_some_and(|m| m.fs_type.starts_with("fuse"))
                && dir.join("volume").exists()
        });
        if let Some(st) = ended {
            panic!(
                "the foreground attach ended ({st}) instead of serving: {}",
                self.stderr()
            );
        }
        assert!(
            up,
            "{dir:?} is not mounted 30 s after the foreground attach started: {}",
            self.stderr()
        );
    }

    /// SIGTERM (what Ctrl-C does) and waits for the exit.
    #[track_caller]
    fn stop(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let mut st = None;
        wait_until(Duration::from_secs(30), || {
            st = self.exited();
            st.is_some()
        });
        st.unwrap_or_else(|| {
            panic!(
                "the foreground attach still runs 30 s after SIGTERM: {}",
                self.stderr()
            )
        })
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = nix::unistd::Pid::from_raw(self.pid());
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if !wait_until(Duration::from_secs(5), || {
                matches!(self.child.try_wait(), Ok(Some(_)))
            }) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

#[test]
fn foreground_attach_of_a_rolled_back_pool_needs_accept_rollback_and_moves_the_anchor() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--integrity", "--name", "fg-vol"]);
    assert_eq!(v.describe_vol(&vol)["Integrity"], true);
    let dir = v.dir("fg");
    let (d_old, d_new) = (data(31), data(32));

    // Written, the pool copied aside, written again, the old pool put back.
    write_attached(&v, &vol, &dir, &d_old);
    let aside = v.scratch().join("pool-aside");
    pool_peek::save_pool(&v, &aside);
    write_attached(&v, &vol, &dir, &d_new);
    pool_peek::put_pool_back(&v, &aside);

    // Without the flag: refused before anything is served.
    let line = v
        .attach_run(&vol, &dir, &["--foreground"])
        .fails(EXIT_ROLLED_BACK);
    assert!(line.contains(&vol), "the refusal names no volume: {line}");
    assert!(line.contains("rolled back"), "{line}");
    assert!(line.contains("--accept-rollback"), "{line}");
    assert!(
        !is_mount_point(&dir),
        "{dir:?} is mounted after the refusal"
    );

    // With it: served by this process, which stays up, and reads the old data.
    let mut fg = Foreground::start(&v, &vol, &dir, &["--accept-rollback"]);
    fg.wait_mounted(&dir);
    assert_bytes(
        "block 5 after --accept-rollback",
        BLOCK_NO * BLOCK,
        &read_block(&dir),
        &d_old,
    );
    assert_eq!(
        v.daemon_pid(),
        Some(fg.pid()),
        "the region is not served by the foreground process"
    );
    assert!(
        fg.exited().is_none(),
        "the foreground attach ended while attached: {}",
        fg.stderr()
    );
    let st = fg.stop();
    assert!(
        st.success(),
        "the foreground attach ended with {st} on SIGTERM: {}",
        fg.stderr()
    );
    assert!(
        !is_mount_point(&dir),
        "{dir:?} is still mounted after the foreground attach ended"
    );

    // The anchor moved to the accepted pool: a plain attach needs no flag.
    let file = v.attach(&vol, &dir, &[]);
    assert_eq!(file, dir.join("volume"));
    assert_bytes(
        "block 5 of the accepted pool",
        BLOCK_NO * BLOCK,
        &read_block(&dir),
        &d_old,
    );
    v.detach(&dir);
    v.ok(&["volume", "verify", &vol]);
}
