//! Concurrency stress on real FUSE mounts: the one-owner-per-volume rules of
//! src/daemon/owner.rs under load, for about 45 s (`CRYPTVOL_STRESS_SECS` changes it).
//!
//! Three volumes run fio with `--verify=crc32c` (random 4 KiB reads and writes with
//! O_DIRECT, fsync every 32 writes, every write read back and checked during the run and
//! again at its end) while other threads, with seeded choices, loop on the same volumes and
//! on others:
//! - snapshots: `snapshot create` of the volumes under fio; each snapshot restored at once
//!   (same key), attached, hashed and deleted; older snapshots restored and hashed again
//!   before `snapshot delete`;
//! - copies: rekey restores (`--kms-key`), `snapshot copy` within the region (`--kms-key`)
//!   and to a second region, each restored and hashed against its source, with a
//!   `snapshot delete` of the source fired while the copy runs (refused "in use", exit 4,
//!   once the copy holds its lease);
//! - spares: attach, write, fsync, read back, snapshot and detach of two spare volumes, with
//!   the refusals that must come: a second attach, deleting an attached volume (exit 4),
//!   detaching a volume whose file is open (exit 4);
//! - checks: `pool check` online, `status`, lists.
//!
//! Every command must end with exit 0 or the documented refusal named at its call, never a
//! panic, exit 1 or exit 12. Afterwards: fio's verify passed on all three; every snapshot
//! still there hashes as it did when it was taken; no stray volume or snapshot is left;
//! `pool check` is clean online and, after everything is detached, offline in both regions;
//! no daemon, mount or loop device is left. No timing is asserted.
//!
//! Needs FUSE and fio; without them it skips, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which
//! makes it fail. `CRYPTVOL_TEST_SEED` replays a run's choices.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::mount::*;
use common::{Out, str_field};

const FIO_VOLUMES: usize = 3;
const VOLUME_SIZE: &str = "32M";
const FIO_SIZE: &str = "24M";
const SPARES: usize = 2;
const SPARE_SIZE: u64 = 8 * MIB;
/// Snapshots of each fio volume kept while the stress runs (older ones are deleted).
const KEEP: usize = 2;
/// A command still running after this long is wedged.
const CLI_TIMEOUT: Duration = Duration::from_secs(180);
const REGION_B: &str = "eu-2";

fn stress_secs() -> u64 {
    std::env::var("CRYPTVOL_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45)
}

/// A snapshot of a volume under fio and the blake3 of the volume it restores to.
#[derive(Debug, Clone)]
struct Snap {
    id: String,
    vol: String,
    hash: blake3::Hash,
}

/// What the threads share: the CLI, the snapshots, the failures and outcome counts.
struct Shared {
    bin: PathBuf,
    data: PathBuf,
    scratch: PathBuf,
    key2: String,
    fio_vols: Vec<String>,
    deadline: Instant,
    stop: AtomicBool,
    names: AtomicU64,
    snaps: Mutex<Vec<Snap>>,
    failures: Mutex<Vec<String>>,
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Shared {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Acquire) && Instant::now() < self.deadline
    }

    fn fail(&self, what: String) {
        eprintln!("STRESS FAILURE: {what}");
        self.failures.lock().unwrap().push(what);
        // One failure is enough to look at; the others stop soon.
        self.stop.store(true, Ordering::Release);
    }

    fn unique(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.names.fetch_add(1, Ordering::AcqRel))
    }

    fn dir(&self, name: &str) -> PathBuf {
        let d = self.scratch.join("mnt").join(name);
        std::fs::create_dir_all(&d).expect("create dir");
        d.canonicalize().expect("canonical dir")
    }

    /// `cryptvol --data-dir D ARGS` with a timeout; a wedged command is killed.
    fn run(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir").arg(&self.data).args(args);
        for v in [
            "CRYPTVOL_REGION",
            "CRYPTVOL_DATA_DIR",
            "CRYPTVOL_PASSPHRASE_FILE",
            "CRYPTVOL_TEST_CLOCK_SKEW_SECS",
            "CRYPTVOL_TEST_COPY_DELAY_MS",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let args_v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = cmd.spawn().expect("run cryptvol");
        let pipe = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = vec![];
                let _ = r.read_to_end(&mut v);
                String::from_utf8_lossy(&v).into_owned()
            })
        };
        let out = pipe(Box::new(child.stdout.take().unwrap()));
        let err = pipe(Box::new(child.stderr.take().unwrap()));
        let start = Instant::now();
        let mut wedged = false;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > CLI_TIMEOUT && !wedged {
                wedged = true;
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let o = Out {
            args: args_v,
            code: status.code().unwrap_or(-1),
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        };
        if wedged {
            self.fail(format!(
                "`cryptvol {}` still ran after {CLI_TIMEOUT:?} (wedged)",
                o.args.join(" ")
            ));
        }
        o
    }

    /// Checks a command's outcome: exit 0, or one of `refusals` (code and a word its
    /// message must contain) with the one-line error contract. Anything else (a panic,
    /// exit 1, exit 12, an undocumented code) is a failure. Counts the outcome under
    /// `what`. Returns whether it succeeded.
    fn check(&self, what: &str, o: &Out, refusals: &[(i32, &str)]) -> bool {
        let key = if o.code == 0 {
            format!("{what}: ok")
        } else {
            format!("{what}: exit {}", o.code)
        };
        *self.outcomes.lock().unwrap().entry(key).or_insert(0) += 1;
        let cmd = format!("`cryptvol {}`", o.args.join(" "));
        if o.stderr.contains("panicked") {
            self.fail(format!("{cmd} panicked: {}", o.stderr));
            return false;
        }
        if o.code == 0 {
            return true;
        }
        let line = o.stderr.trim_end();
        let one_line =
            o.stderr.ends_with('\n') && line.lines().count() == 1 && line.starts_with("cryptvol: ");
        match refusals.iter().find(|(c, _)| *c == o.code) {
            Some((_, word)) if one_line && line.contains(word) => {}
            _ => self.fail(format!(
                "{cmd} ({what}): exit {}, allowed 0 or {refusals:?}: {:?}",
                o.code, o.stderr
            )),
        }
        false
    }

    /// A command that must succeed; returns its JSON.
    fn ok(&self, what: &str, args: &[&str]) -> Option<serde_json::Value> {
        let o = self.run(args);
        if self.check(what, &o, &[]) {
            if o.stdout.trim().is_empty() {
                return Some(serde_json::Value::Null);
            }
            serde_json::from_str(&o.stdout)
                .map_err(|e| self.fail(format!("{what}: not JSON ({e}): {:?}", o.stdout)))
                .ok()
        } else {
            None
        }
    }

    fn attach(&self, region: &str, vol: &str, dir: &Path) -> bool {
        let d = dir.to_string_lossy();
        self.ok("attach", &["--region", region, "attach", vol, &d])
            .is_some()
    }

    /// Detaches a volume whose file this test has just closed. A detach refused "in use"
    /// then is retried (up to 5 s), and who held the file is recorded: a child that another
    /// thread was spawning (between fork and exec it holds a copy of every fd, ours
    /// included) is this test's doing; a file held by nobody would be the daemon's.
    fn detach(&self, dir: &Path) -> bool {
        let d = dir.to_string_lossy().to_string();
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let o = self.run(&["detach", &d]);
            if o.code == 4 && o.stderr.contains("in use") && Instant::now() < end {
                let held = holders(&dir.join("volume"));
                let by = if held.is_empty() {
                    "nobody".to_string()
                } else {
                    held.join(", ")
                };
                *self
                    .outcomes
                    .lock()
                    .unwrap()
                    .entry(format!(
                        "detach: in use just after close, held by {by}; retried"
                    ))
                    .or_insert(0) += 1;
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return self.check("detach", &o, &[]);
        }
    }

    /// Attaches `vol`, hashes the whole file, detaches.
    fn hash_volume(&self, region: &str, vol: &str) -> Option<blake3::Hash> {
        let dir = self.dir(&self.unique("h"));
        if !self.attach(region, vol, &dir) {
            return None;
        }
        let h = hash_file(&dir.join("volume"));
        self.detach(&dir);
        let _ = std::fs::remove_dir(&dir);
        h.map_err(|e| self.fail(format!("hashing {vol}: {e}"))).ok()
    }

    /// Restores `snap` (same key) in `region`, hashes the restored volume, deletes it.
    /// None if the snapshot is gone (deleted by another thread: exit 3 is then allowed).
    fn restore_and_hash(
        &self,
        region: &str,
        snap: &str,
        may_be_gone: bool,
    ) -> Option<blake3::Hash> {
        let name = self.unique("r");
        let o = self.run(&[
            "--region",
            region,
            "volume",
            "create",
            "--from-snapshot",
            snap,
            "--name",
            &name,
        ]);
        let refusals: &[(i32, &str)] = if may_be_gone {
            &[(3, "does not exist")]
        } else {
            &[]
        };
        if !self.check("restore (same key)", &o, refusals) {
            return None;
        }
        let h = self.hash_volume(region, &name);
        self.ok(
            "volume delete (restored)",
            &["--region", region, "volume", "delete", &name, "--yes"],
        );
        h
    }
}

/// The processes (other than this one) with `path` open: "pid comm".
fn holders(path: &Path) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = e.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let held = std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == path));
        if held {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let who = if pid == me { "this test" } else { comm.trim() };
            out.push(format!("{pid} {who}"));
        }
    }
    out
}

fn hash_file(path: &Path) -> Result<blake3::Hash, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("open {path:?}: {e}"))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut off = 0;
    loop {
        let n = f
            .read_at(&mut buf, off)
            .map_err(|e| format!("read {path:?} at {off}: {e}"))?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
        off += n as u64;
    }
}

/// Kills the fio processes if the test ends early (they would keep the mounts busy).
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---- the threads --------------------------------------------------------------------------

/// Snapshots of the volumes under fio: taken, restored and hashed at once; the oldest
/// beyond KEEP restored and hashed again, then deleted.
fn snapshotter(s: &Shared, mut rng: Rng) {
    let mut i = 0usize;
    while s.running() {
        let vol = s.fio_vols[i % s.fio_vols.len()].clone();
        i += 1;
        let desc = format!("stress {i}");
        let Some(j) = s.ok(
            "snapshot create (volume under fio)",
            &["snapshot", "create", &vol, "--description", &desc],
        ) else {
            return;
        };
        let id = str_field(&j, "SnapshotId");
        // Only a copier's racing delete can remove it this early.
        let Some(hash) = s.restore_and_hash("local-1", &id, true) else {
            continue;
        };
        s.snaps.lock().unwrap().push(Snap {
            id,
            vol: vol.clone(),
            hash,
        });
        // The oldest snapshot of this volume beyond KEEP (skipped now and then, so that
        // some live long enough to be copied while they are deleted).
        let old = {
            let snaps = s.snaps.lock().unwrap();
            let mine: Vec<&Snap> = snaps.iter().filter(|x| x.vol == vol).collect();
            (mine.len() > KEEP && rng.below(4) != 0).then(|| mine[0].clone())
        };
        let Some(old) = old else { continue };
        match s.restore_and_hash("local-1", &old.id, true) {
            Some(h) if h != old.hash => s.fail(format!(
                "snapshot {} changed: it restored to {} when taken, to {h} now",
                old.id, old.hash
            )),
            _ => {}
        }
        let o = s.run(&["snapshot", "delete", &old.id]);
        // In use: a copy holds its lease. Gone: a copier's racing delete won.
        if s.check(
            "snapshot delete (old)",
            &o,
            &[(4, "in use"), (3, "does not exist")],
        ) || o.code == 3
        {
            s.snaps.lock().unwrap().retain(|x| x.id != old.id);
        }
    }
}

/// Rekey restores and copies (same region and cross-region) of the snapshots, each
/// hashed against its source; during each copy a `snapshot delete` of its source.
fn copier(s: &Shared, mut rng: Rng) {
    let mut n = 0u64;
    while s.running() {
        let pick = {
            let snaps = s.snaps.lock().unwrap();
            (!snaps.is_empty()).then(|| snaps[rng.below(snaps.len() as u64) as usize].clone())
        };
        let Some(src) = pick else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        n += 1;
        match n % 3 {
            0 => {
                let name = s.unique("rk");
                let o = s.run(&[
                    "volume",
                    "create",
                    "--from-snapshot",
                    &src.id,
                    "--kms-key",
                    &s.key2,
                    "--name",
                    &name,
                ]);
                if !s.check("rekey restore", &o, &[(3, "does not exist")]) {
                    continue;
                }
                if let Some(h) = s.hash_volume("local-1", &name)
                    && h != src.hash
                {
                    s.fail(format!(
                        "rekey restore of {} hashes {h}, the snapshot {}",
                        src.id, src.hash
                    ));
                }
                s.ok(
                    "volume delete (rekeyed)",
                    &["volume", "delete", &name, "--yes"],
                );
            }
            k => {
                let remote = k == 2;
                let region = if remote { REGION_B } else { "local-1" };
                let desc = s.unique("copy ");
                let mut args = vec!["snapshot", "copy", src.id.as_str(), "--description", &desc];
                if remote {
                    args.extend(["--destination-region", REGION_B]);
                } else {
                    args.extend(["--kms-key", s.key2.as_str()]);
                }
                let delay = Duration::from_millis(rng.range(20, 400));
                let (copy, del) = std::thread::scope(|sc| {
                    let copy = sc.spawn(|| s.run(&args));
                    std::thread::sleep(delay);
                    let del = s.run(&["snapshot", "delete", &src.id]);
                    (copy.join().unwrap(), del)
                });
                // The delete is refused while the copy holds its lease; before the lease
                // (or after the copy) it goes through, and the copy then finds nothing
                // (exit 3) or has finished.
                let deleted = s.check(
                    "snapshot delete (being copied)",
                    &del,
                    &[(4, "in use"), (3, "does not exist")],
                );
                if deleted || del.code == 3 {
                    s.snaps.lock().unwrap().retain(|x| x.id != src.id);
                }
                let what = if remote {
                    "snapshot copy (to eu-2)"
                } else {
                    "snapshot copy (same region)"
                };
                if !s.check(what, &copy, &[(3, "does not exist")]) {
                    continue;
                }
                let Ok(j) = serde_json::from_str::<serde_json::Value>(&copy.stdout) else {
                    s.fail(format!("{what}: not JSON: {:?}", copy.stdout));
                    continue;
                };
                let id = str_field(&j, "SnapshotId");
                match s.restore_and_hash(region, &id, false) {
                    Some(h) if h != src.hash => s.fail(format!(
                        "copy {id} of {} restores to {h}, the source to {}",
                        src.id, src.hash
                    )),
                    _ => {}
                }
                s.ok(
                    "snapshot delete (copy)",
                    &["--region", region, "snapshot", "delete", &id],
                );
            }
        }
    }
}

/// Attach, write, check, snapshot and detach of the spare volumes, with the refusals.
fn spares(s: &Shared, spares: &[String], mut rng: Rng) {
    // What each spare must hold: every byte written and fsynced so far.
    let mut model: Vec<Vec<u8>> = vec![vec![0; SPARE_SIZE as usize]; spares.len()];
    let dirs: Vec<PathBuf> = (0..spares.len())
        .map(|i| s.dir(&format!("spare{i}")))
        .collect();
    let other = s.dir("spare-other");
    let mut k = 0usize;
    while s.running() {
        let j = k % spares.len();
        k += 1;
        let (vol, dir) = (&spares[j], &dirs[j]);
        if !s.attach("local-1", vol, dir) {
            return;
        }
        let path = dir.join("volume");
        let f = open_rw(&path);
        let got = pread(&f, 0, SPARE_SIZE as usize);
        if let Some(i) = got.iter().zip(&model[j]).position(|(a, b)| a != b) {
            s.fail(format!(
                "spare {vol}: byte {i} changed across detach/attach: {:#04x}, written {:#04x}",
                got[i], model[j][i]
            ));
        }
        // Unaligned, across blocks (read-modify-write at both ends).
        let off = rng.below(SPARE_SIZE / BLOCK - 17) * BLOCK + rng.below(BLOCK);
        let len = rng.range(1, 64 * KIB) as usize;
        let data = rng.bytes(len);
        pwrite(&f, off, &data);
        f.sync_all().expect("fsync a spare");
        model[j][off as usize..off as usize + len].copy_from_slice(&data);

        // What must be refused while it is attached and open.
        let d = dir.to_string_lossy().to_string();
        let o = other.to_string_lossy().to_string();
        let fio_vol = &s.fio_vols[k % s.fio_vols.len()];
        for (what, args, code, word) in [
            (
                "attach (already attached)",
                vec!["attach", vol.as_str(), o.as_str()],
                4,
                "attached",
            ),
            (
                "attach (volume under fio)",
                vec!["attach", fio_vol.as_str(), o.as_str()],
                4,
                "attached",
            ),
            (
                "volume delete (attached spare)",
                vec!["volume", "delete", vol.as_str(), "--yes"],
                4,
                "attached",
            ),
            (
                "volume delete (volume under fio)",
                vec!["volume", "delete", fio_vol.as_str(), "--yes"],
                4,
                "attached",
            ),
            (
                "detach (file open)",
                vec!["detach", d.as_str()],
                4,
                "in use",
            ),
        ] {
            let out = s.run(&args);
            if out.code != code {
                s.fail(format!(
                    "{what}: expected exit {code}, got {}: {}",
                    out.code, out.stderr
                ));
            } else {
                s.check(what, &out, &[(code, word)]);
            }
        }
        let snap = s.ok("snapshot create (spare)", &["snapshot", "create", vol]);
        drop(f);
        if !s.detach(dir) {
            return;
        }
        if let Some(j) = snap {
            let id = str_field(&j, "SnapshotId");
            s.ok("snapshot delete (spare)", &["snapshot", "delete", &id]);
        }
    }
}

/// Read-only commands and the online pool check, every couple of seconds.
fn checker(s: &Shared) {
    while s.running() {
        if let Some(j) = s.ok("pool check (online)", &["pool", "check"])
            && j["Clean"] != true
        {
            s.fail(format!("online pool check not clean: {j:#}"));
        }
        s.ok("status", &["status"]);
        s.ok("volume list", &["volume", "list"]);
        s.ok("snapshot list", &["snapshot", "list"]);
        let end = Instant::now() + Duration::from_secs(2);
        while s.running() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ---- the test -----------------------------------------------------------------------------

#[test]
fn concurrent_snapshots_copies_and_attaches_under_fio_keep_data_and_pool_intact() {
    needs!(Fuse, Tool("fio"));
    let t0 = Instant::now();
    let secs = stress_secs();
    let mut rng = Rng::from_env(0x57e5_5000_0000_0001);
    let v = VolEnv::new();
    v.ok(&["--region", REGION_B, "init"]);
    let key2 = v.create_key();
    let mut fio_vols = vec![];
    let mut fio_files = vec![];
    let mut fio_dirs = vec![];
    for i in 0..FIO_VOLUMES {
        let name = format!("fio{i}");
        v.create(&["--size", VOLUME_SIZE, "--name", &name]);
        let d = v.dir(&name);
        fio_files.push(v.attach(&name, &d, &[]));
        fio_dirs.push(d);
        fio_vols.push(name);
    }
    let spare_vols: Vec<String> = (0..SPARES)
        .map(|i| {
            let name = format!("spare{i}");
            v.create(&["--size", &format!("{}M", SPARE_SIZE / MIB), "--name", &name]);
            name
        })
        .collect();

    // fio: random reads and writes with verification, for the whole stress.
    let fio_bin = which("fio").expect("fio");
    let out_dir = v.scratch().join("fio");
    std::fs::create_dir_all(&out_dir).unwrap();
    let mut fio = Children(vec![]);
    for (i, file) in fio_files.iter().enumerate() {
        let seed = rng.next_u64() % 1_000_000_007;
        let child = Command::new(&fio_bin)
            .args([
                &format!("--name=stress{i}"),
                &format!("--filename={}", file.display()),
                &format!("--size={FIO_SIZE}"),
                "--rw=randrw",
                "--bs=4k",
                "--direct=1",
                "--ioengine=psync",
                "--fsync=32",
                "--time_based",
                &format!("--runtime={secs}"),
                "--verify=crc32c",
                "--verify_backlog=128",
                "--verify_fatal=1",
                "--verify_state_save=0",
                &format!("--randseed={seed}"),
                "--output-format=json",
                &format!(
                    "--output={}",
                    out_dir.join(format!("fio{i}.json")).display()
                ),
            ])
            .current_dir(&out_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(out_dir.join(format!("fio{i}.err"))).expect("fio stderr"))
            .spawn()
            .expect("start fio");
        fio.0.push(child);
    }

    let shared = Shared {
        bin: PathBuf::from(env!("CARGO_BIN_EXE_cryptvol")),
        data: v.data.clone(),
        scratch: v.scratch().to_path_buf(),
        key2,
        fio_vols: fio_vols.clone(),
        deadline: Instant::now() + Duration::from_secs(secs),
        stop: AtomicBool::new(false),
        names: AtomicU64::new(0),
        snaps: Mutex::new(vec![]),
        failures: Mutex::new(vec![]),
        outcomes: Mutex::new(BTreeMap::new()),
    };
    let s = &shared;
    let (r1, r2, r3) = (
        Rng::new(rng.next_u64()),
        Rng::new(rng.next_u64()),
        Rng::new(rng.next_u64()),
    );
    let spare_ref = &spare_vols;
    std::thread::scope(|sc| {
        sc.spawn(move || snapshotter(s, r1));
        sc.spawn(move || copier(s, r2));
        sc.spawn(move || spares(s, spare_ref, r3));
        sc.spawn(move || checker(s));
    });
    let stress_done = t0.elapsed();

    // fio ends at its runtime, then verifies what it wrote once more.
    let deadline = Instant::now() + Duration::from_secs(300);
    for (i, c) in fio.0.iter_mut().enumerate() {
        let status = loop {
            if let Some(st) = c.try_wait().expect("wait fio") {
                break st;
            }
            if Instant::now() > deadline {
                shared.fail(format!("fio {i} did not end"));
                let _ = c.kill();
                break c.wait().expect("wait fio");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let err = std::fs::read_to_string(out_dir.join(format!("fio{i}.err"))).unwrap_or_default();
        let json =
            std::fs::read_to_string(out_dir.join(format!("fio{i}.json"))).unwrap_or_default();
        if !status.success() {
            shared.fail(format!("fio on {} failed ({status}): {err}", fio_vols[i]));
            continue;
        }
        let start = json.find('{').unwrap_or(0);
        match serde_json::from_str::<serde_json::Value>(&json[start..]) {
            Ok(j) => {
                let job = &j["jobs"][0];
                if job["error"] != 0
                    || job["write"]["io_bytes"].as_u64().unwrap_or(0) == 0
                    || job["read"]["io_bytes"].as_u64().unwrap_or(0) == 0
                {
                    shared.fail(format!("fio on {}: {job:#}", fio_vols[i]));
                } else {
                    eprintln!(
                        "fio {}: {} MiB written, {} MiB read (verify included), error 0",
                        fio_vols[i],
                        job["write"]["io_bytes"].as_u64().unwrap() >> 20,
                        job["read"]["io_bytes"].as_u64().unwrap() >> 20
                    );
                }
            }
            Err(e) => shared.fail(format!("fio {i} JSON: {e}: {json:?} {err}")),
        }
    }
    drop(fio);

    // Every snapshot left hashes as it did when it was taken.
    let snaps = shared.snaps.lock().unwrap().clone();
    for sn in &snaps {
        match shared.restore_and_hash("local-1", &sn.id, false) {
            Some(h) if h != sn.hash => shared.fail(format!(
                "snapshot {} of {} changed: {} when taken, {h} at the end",
                sn.id, sn.vol, sn.hash
            )),
            Some(_) => {}
            None => shared.fail(format!(
                "snapshot {} could not be restored at the end",
                sn.id
            )),
        }
    }

    // Nothing stray: the volumes and snapshots are exactly the ones the test keeps.
    let mut vols: Vec<String> = v.json(&["volume", "list"])["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| str_field(x, "Name"))
        .collect();
    vols.sort();
    let mut want: Vec<String> = fio_vols.iter().chain(&spare_vols).cloned().collect();
    want.sort();
    let mut snap_ids: Vec<String> = v.json(&["snapshot", "list"])["Snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| str_field(x, "SnapshotId"))
        .collect();
    snap_ids.sort();
    let mut want_snaps: Vec<String> = snaps.iter().map(|x| x.id.clone()).collect();
    want_snaps.sort();
    let b_vols = v.json(&["--region", REGION_B, "volume", "list"])["Volumes"].clone();
    let b_snaps = v.json(&["--region", REGION_B, "snapshot", "list"])["Snapshots"].clone();

    // The pool online (fio volumes still attached), then offline after the last detach.
    let online = shared.run(&["pool", "check"]);
    shared.check("pool check (online, at the end)", &online, &[]);
    for d in &fio_dirs {
        v.detach(d);
    }
    let no_daemon = v.wait_no_daemon(Duration::from_secs(15));
    let offline_a = shared.run(&["pool", "check"]);
    shared.check("pool check (offline, at the end)", &offline_a, &[]);
    let offline_b = shared.run(&["--region", REGION_B, "pool", "check"]);
    shared.check("pool check (offline, eu-2, at the end)", &offline_b, &[]);

    let logs: String = ["local-1", REGION_B]
        .iter()
        .map(|r| {
            std::fs::read_to_string(v.region_dir(r).join("logs/daemon.log")).unwrap_or_default()
        })
        .collect();
    let elapsed = t0.elapsed();
    eprintln!(
        "stress: {:.1} s of stress, {:.1} s in all; outcomes:",
        stress_done.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    for (k, n) in shared.outcomes.lock().unwrap().iter() {
        eprintln!("  {n:>5}  {k}");
    }
    let failures = shared.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(vols, want, "volumes left in local-1");
    assert_eq!(snap_ids, want_snaps, "snapshots left in local-1");
    assert_eq!(b_vols, serde_json::json!([]), "volumes left in eu-2");
    assert_eq!(b_snaps, serde_json::json!([]), "snapshots left in eu-2");
    assert!(!logs.contains("panicked"), "a daemon panicked:\n{logs}");
    assert!(no_daemon, "a daemon still runs after the last detach");
    assert!(
        daemons_of(&v.data).is_empty(),
        "daemons left: {:?}",
        daemons_of(&v.data)
    );
    let mounts = mounts_under(v.scratch());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let loops = loops_under(v.scratch());
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
    let outcomes = shared.outcomes.lock().unwrap();
    let count = |k: &str| outcomes.get(k).copied().unwrap_or(0);
    assert!(
        count("snapshot create (volume under fio): ok") > 0,
        "no snapshot was taken"
    );
    assert!(count("attach: ok") > 0, "nothing was attached");
}
