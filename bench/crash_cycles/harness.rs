//! The kill -9 crash harness: one implementation, run by `bench/crash-cycles` (through the
//! `crash_cycles` bench target, release build, 100 cycles by default) and by
//! `tests/crash_cycles.rs` (the debug build, 20 cycles, in CI).
//!
//! One cycle:
//! 1. the writer volumes (every other one authenticated, `--integrity`) are attached (after
//!    a crash: re-attached, which clears the dead FUSE mount the killed daemon left);
//! 2. one writer per volume writes stamped 4 KiB blocks (block number, generation,
//!    blake3) at random blocks of `DIR/volume` with O_DIRECT, fsyncs after a random
//!    number of writes, and appends every write it issues and every fsync that was
//!    acknowledged (with the (block, generation) pairs it covers) to a log on the real
//!    disk, outside the volume;
//! 3. meanwhile one thread runs snapshot operations back to back (create, delete,
//!    restore, rekey restore, copy within the region, copy to a second region), some of
//!    them kill -9'd mid-way;
//! 4. after a random time the region daemon (`cryptvol status` → DaemonPid) is kill -9'd;
//! 5. `pool check` on the crashed pools, offline; then the volumes are re-attached and
//!    every logged block read back: it must hold its last fsynced generation or a later
//!    one the writer issued (never an older one, zeros, or garbage);
//! 6. every interrupted operation is classified by what it left, and re-run when re-running
//!    is the documented recovery (copies and rekey restores); snapshots and the products of
//!    operations are restored and read back against what the log says they must hold;
//!    every volume of both regions is attached once; `pool check` again, online; old
//!    objects are deleted.
//!
//! It drives the CLI as a user would and kills processes from outside: no test hook of the
//! product is used. The report counts fsynced bytes lost, volumes that would not attach,
//! leaked and double-owned slots, and what each interrupted operation left; `Report::ok`
//! is false if any of them is not zero or anything else went wrong (`failures`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BLOCK: u64 = 4096;
const MAGIC: &[u8; 8] = b"CVCRASH1";
/// A command still running after this long is wedged: killed and reported.
const CLI_TIMEOUT: Duration = Duration::from_secs(180);
/// How many snapshots of each writer volume are kept from one cycle to the next.
const KEEP_SNAPSHOTS: usize = 3;
/// The second region (cross-region copies).
pub const REGION_B: &str = "eu-2";
const REGION_A: &str = "local-1";

/// What to run. [`Config::new`] has the defaults of `bench/crash-cycles`.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cryptvol binary under test.
    pub cryptvol: PathBuf,
    /// Its data dir (created and initialised by the harness).
    pub data_dir: PathBuf,
    /// Scratch space outside the data dir: mount points and the writers' logs.
    pub work: PathBuf,
    pub cycles: u32,
    pub seed: u64,
    /// Writer volumes.
    pub volumes: usize,
    pub volume_mib: u64,
    /// Blocks each writer writes to, spread over the whole volume.
    pub blocks: usize,
    /// How long writers and operations run before the daemon is killed (ms, inclusive).
    pub window_ms: (u64, u64),
    /// Chance (percent) that an operation's own process is kill -9'd mid-way.
    pub cli_kill_pct: u64,
    /// Read back the products of operations that completed every N cycles (interrupted
    /// ones are always read back).
    pub verify_completed_every: u32,
    /// Where daemon and writer logs are copied when something fails.
    pub evidence_dir: Option<PathBuf>,
    /// One progress line per cycle on stderr.
    pub progress: bool,
}

impl Config {
    pub fn new(cryptvol: PathBuf, data_dir: PathBuf, work: PathBuf) -> Config {
        Config {
            cryptvol,
            data_dir,
            work,
            cycles: 100,
            seed: 0xc4a5_0000_0000_0001,
            volumes: 2,
            volume_mib: 64,
            blocks: 512,
            window_ms: (300, 2500),
            cli_kill_pct: 25,
            verify_completed_every: 1,
            evidence_dir: None,
            progress: true,
        }
    }
}

// ---- small pieces ------------------------------------------------------------------------

/// xorshift64*: seeded, tiny.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A child generator for `what` (cycles, threads), independent of the draws so far.
    fn derive(seed: u64, a: u64, b: u64) -> Rng {
        let mut r = Rng::new(
            seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f),
        );
        r.next_u64();
        r
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One 4 KiB block, aligned for O_DIRECT.
#[repr(C, align(4096))]
struct Page([u8; BLOCK as usize]);

fn page() -> Box<Page> {
    Box::new(Page([0; BLOCK as usize]))
}

/// Fills `buf` with the stamp of (`tag`, `block`, `generation`): magic, the three numbers,
/// filler derived from them, and the blake3 of everything before it in the last 32 bytes.
pub fn stamp(buf: &mut [u8], tag: u64, block: u64, generation: u64) {
    let n = buf.len();
    buf[0..8].copy_from_slice(MAGIC);
    buf[8..16].copy_from_slice(&tag.to_le_bytes());
    buf[16..24].copy_from_slice(&block.to_le_bytes());
    buf[24..32].copy_from_slice(&generation.to_le_bytes());
    let mut r = Rng::derive(tag, block, generation);
    for c in buf[32..n - 32].chunks_mut(8) {
        let v = r.next_u64().to_le_bytes();
        c.copy_from_slice(&v[..c.len()]);
    }
    let h = blake3::hash(&buf[..n - 32]);
    buf[n - 32..].copy_from_slice(h.as_bytes());
}

/// What a block holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never written (or written and never made durable).
    Zero,
    /// A valid stamp of this block with this generation.
    Gen(u64),
    /// Anything else: a torn, foreign or misplaced block.
    Garbage(String),
}

impl Seen {
    fn generation(&self) -> Option<u64> {
        match self {
            Seen::Zero => Some(0),
            Seen::Gen(g) => Some(*g),
            Seen::Garbage(_) => None,
        }
    }
}

pub fn decode(buf: &[u8], tag: u64, block: u64) -> Seen {
    let n = buf.len();
    if buf.iter().all(|b| *b == 0) {
        return Seen::Zero;
    }
    if &buf[0..8] != MAGIC {
        return Seen::Garbage(format!("no stamp (first bytes {:02x?})", &buf[..8]));
    }
    if blake3::hash(&buf[..n - 32]).as_bytes() != &buf[n - 32..] {
        return Seen::Garbage("checksum mismatch (torn or altered block)".into());
    }
    let u = |r: std::ops::Range<usize>| u64::from_le_bytes(buf[r].try_into().expect("8 bytes"));
    let (t, b, g) = (u(8..16), u(16..24), u(24..32));
    if t != tag {
        return Seen::Garbage(format!("the stamp of another volume (tag {t:#x})"));
    }
    if b != block {
        return Seen::Garbage(format!("the stamp of block {b} (generation {g})"));
    }
    Seen::Gen(g)
}

fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X") | None
        ),
        Err(_) => false,
    }
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
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

fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Live `cryptvol … daemon` processes of `data_dir`.
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

/// Mount points at or below `prefix`, deepest first (the crate's parser of
/// /proc/self/mountinfo).
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = cryptvol::sys::mountinfo::read()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(prefix))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    v
}

/// Loop devices whose backing file is under `prefix` (`losetup --list --json`: its raw
/// output would escape a space in a path as `\x20`).
pub fn loops_under(prefix: &Path) -> Vec<String> {
    let Ok(out) = Command::new("losetup")
        .args(["--list", "--json", "--output", "NAME,BACK-FILE"])
        .output()
    else {
        return vec![];
    };
    // No loop device at all: empty output.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["loopdevices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let back = d["back-file"].as_str()?.trim_end_matches(" (deleted)");
            Path::new(back)
                .starts_with(prefix)
                .then(|| d["name"].as_str().map(str::to_owned))
                .flatten()
        })
        .collect()
}

// ---- running the CLI ------------------------------------------------------------------------

/// One run of the binary.
#[derive(Debug, Clone)]
pub struct Run {
    pub args: Vec<String>,
    pub code: Option<i32>,
    /// Ended by a signal (the harness's kill -9, or a crash).
    pub signal: Option<i32>,
    /// Still running after `CLI_TIMEOUT`.
    pub wedged: bool,
    pub stdout: String,
    pub stderr: String,
    pub ended: Instant,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    pub fn exit(&self) -> String {
        match (self.code, self.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(9)) => "killed (SIGKILL)".into(),
            (None, Some(s)) => format!("signal {s}"),
            (None, None) => "did not run".into(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "`cryptvol {}`: {}{}{}",
            self.args.join(" "),
            self.exit(),
            if self.wedged { " (wedged: killed)" } else { "" },
            match self.stderr.trim() {
                "" => String::new(),
                e => format!(": {}", e.lines().take(3).collect::<Vec<_>>().join(" | ")),
            }
        )
    }

    /// A panic, an internal error or a damaged file: never acceptable.
    fn is_bug(&self) -> bool {
        self.wedged
            || self.stderr.contains("panicked")
            || matches!(self.code, Some(1 | 12 | 101))
            || matches!(self.signal, Some(s) if s != 9)
    }
}

/// Runs the binary on one data dir, with a scrubbed environment.
#[derive(Debug, Clone)]
pub struct Cli {
    bin: PathBuf,
    data: PathBuf,
}

impl Cli {
    pub fn new(bin: &Path, data: &Path) -> Cli {
        Cli {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_opts(args, None)
    }

    /// Runs `args`; `kill_after`: kill -9 the process if it is still running by then.
    pub fn run_opts(&self, args: &[&str], kill_after: Option<Duration>) -> Run {
        let started = Instant::now();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir").arg(&self.data).args(args);
        for v in [
            "CRYPTVOL_REGION",
            "CRYPTVOL_DATA_DIR",
            "CRYPTVOL_PASSPHRASE_FILE",
            "CRYPTVOL_PROFILE",
            "CRYPTVOL_KMS_ENDPOINT",
            "CRYPTVOL_TEST_CLOCK_SKEW_SECS",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut run = Run {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: None,
            signal: None,
            wedged: false,
            stdout: String::new(),
            stderr: String::new(),
            ended: started,
        };
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                run.stderr = format!("cannot run {}: {e}", self.bin.display());
                run.ended = Instant::now();
                return run;
            }
        };
        let reader = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = vec![];
                let _ = r.read_to_end(&mut v);
                String::from_utf8_lossy(&v).into_owned()
            })
        };
        let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
        let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
        let mut sent_kill = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(_) => break None,
            }
            let el = started.elapsed();
            if !sent_kill && kill_after.is_some_and(|k| el >= k) {
                let _ = child.kill();
                sent_kill = true;
            }
            if !sent_kill && el >= CLI_TIMEOUT {
                let _ = child.kill();
                sent_kill = true;
                run.wedged = true;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        run.ended = Instant::now();
        if let Some(s) = status {
            run.code = s.code();
            run.signal = s.signal();
        }
        run.stdout = out.join().unwrap_or_default();
        run.stderr = err.join().unwrap_or_default();
        run
    }
}

// ---- the writers ----------------------------------------------------------------------------

/// A writer volume: what was issued and acknowledged, and the log on the real disk.
#[derive(Debug)]
struct WriterVol {
    name: String,
    id: String,
    tag: u64,
    dir: PathBuf,
    blocks: Vec<u64>,
    next_gen: u64,
    /// Acknowledged fsyncs so far (in memory, for the bounds of snapshots).
    fsynced: HashMap<u64, u64>,
    log: File,
    log_path: PathBuf,
    /// The model read back from the log (what verification trusts), and where reading
    /// stopped.
    parsed: LogModel,
    parsed_to: u64,
}

#[derive(Debug, Default, Clone)]
struct LogModel {
    issued: HashMap<u64, BTreeSet<u64>>,
    fsynced: HashMap<u64, u64>,
    writes: u64,
    fsyncs: u64,
    fsynced_bytes: u64,
}

impl WriterVol {
    /// Reads the log lines appended since the last call.
    fn refresh(&mut self) -> std::io::Result<()> {
        let mut f = File::open(&self.log_path)?;
        f.seek(SeekFrom::Start(self.parsed_to))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        // Only whole lines.
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..whole].lines() {
            let mut it = line.split_whitespace();
            match it.next() {
                Some("W") => {
                    let b: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
                    let g: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    self.parsed.issued.entry(b).or_default().insert(g);
                    self.parsed.writes += 1;
                }
                Some("F") => {
                    self.parsed.fsyncs += 1;
                    for pair in it {
                        if let Some((b, g)) = pair.split_once(':')
                            && let (Ok(b), Ok(g)) = (b.parse::<u64>(), g.parse::<u64>())
                        {
                            let e = self.parsed.fsynced.entry(b).or_insert(0);
                            *e = (*e).max(g);
                            self.parsed.fsynced_bytes += BLOCK;
                        }
                    }
                }
                _ => {}
            }
        }
        self.parsed_to += whole as u64;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct WriterResult {
    writes: u64,
    fsyncs: u64,
    /// The first I/O error and when it came.
    error: Option<(Instant, String)>,
}

/// Writes stamped blocks until `stop` or the first error (the daemon's death).
fn writer(vol: &Mutex<WriterVol>, mut rng: Rng, stop: &AtomicBool) -> WriterResult {
    let mut res = WriterResult::default();
    let (path, tag) = {
        let v = lock(vol);
        (v.dir.join("volume"), v.tag)
    };
    let f = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            res.error = Some((Instant::now(), format!("open {}: {e}", path.display())));
            return res;
        }
    };
    let mut buf = page();
    let mut batch: Vec<(u64, u64)> = vec![];
    while !stop.load(Ordering::Acquire) {
        let n = rng.range(1, 48);
        for _ in 0..n {
            let (b, g) = {
                let mut v = lock(vol);
                let b = v.blocks[rng.below(v.blocks.len() as u64) as usize];
                let g = v.next_gen;
                v.next_gen += 1;
                // Logged before it is issued: the verifier must know every generation that
                // may be on the volume.
                let _ = writeln!(v.log, "W {b} {g}");
                (b, g)
            };
            stamp(&mut buf.0, tag, b, g);
            if let Err(e) = f.write_all_at(&buf.0, b * BLOCK) {
                res.error = Some((Instant::now(), format!("write block {b}: {e}")));
                return res;
            }
            res.writes += 1;
            batch.push((b, g));
        }
        if let Err(e) = f.sync_all() {
            res.error = Some((Instant::now(), format!("fsync: {e}")));
            return res;
        }
        res.fsyncs += 1;
        // Acknowledged: these (block, generation) pairs are durable from now on.
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        for (b, g) in batch.drain(..) {
            last.insert(b, g);
        }
        let mut v = lock(vol);
        let mut line = String::from("F");
        for (b, g) in &last {
            line.push_str(&format!(" {b}:{g}"));
            let e = v.fsynced.entry(*b).or_insert(0);
            *e = (*e).max(*g);
        }
        line.push('\n');
        let _ = v.log.write_all(line.as_bytes());
    }
    res
}

// ---- snapshot operations -------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Create,
    Delete,
    Restore,
    Rekey,
    CopyLocal,
    CopyRemote,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Create => "snapshot create",
            OpKind::Delete => "snapshot delete",
            OpKind::Restore => "restore (same key)",
            OpKind::Rekey => "rekey restore",
            OpKind::CopyLocal => "snapshot copy (same region, new key)",
            OpKind::CopyRemote => "snapshot copy (to eu-2)",
        }
    }
}

/// A snapshot of a writer volume that the harness knows about.
#[derive(Debug, Clone)]
struct KnownSnap {
    id: String,
    vol: usize,
    /// Acknowledged fsyncs when it was asked for: it holds at least these.
    floor: Arc<HashMap<u64, u64>>,
    /// Generations at or past this were issued after it completed: it holds none of them.
    ceiling: u64,
    /// What it holds, once read back (it never changes).
    content: Option<Vec<Seen>>,
}

#[derive(Debug)]
struct OpRecord {
    kind: OpKind,
    tag: String,
    /// The source snapshot (all but create).
    snap: Option<String>,
    /// The writer volume the snapshot is (or will be) of.
    vol: usize,
    floor: Arc<HashMap<u64, u64>>,
    /// `next_gen` of the volume when the command returned.
    ceiling: u64,
    run: Run,
}

struct OpsInput<'a> {
    cli: &'a Cli,
    cfg: &'a Config,
    cycle: u32,
    rng: Rng,
    snaps: Vec<(String, usize)>,
    vols: &'a [Arc<Mutex<WriterVol>>],
    live: &'a [bool],
    key2: &'a str,
    stop: &'a AtomicBool,
}

/// Runs snapshot operations back to back until `stop`.
fn ops_thread(mut inp: OpsInput) -> Vec<OpRecord> {
    let mut out = vec![];
    let mut n = 0u32;
    let live: Vec<usize> = (0..inp.vols.len()).filter(|i| inp.live[*i]).collect();
    if live.is_empty() {
        return out;
    }
    while !inp.stop.load(Ordering::Acquire) {
        n += 1;
        let tag_n = format!("c{}-o{n}", inp.cycle);
        let pick = inp.rng.below(100);
        let kind = if inp.snaps.is_empty() || pick < 28 {
            OpKind::Create
        } else if pick < 42 {
            OpKind::Delete
        } else if pick < 56 {
            OpKind::Restore
        } else if pick < 70 {
            OpKind::Rekey
        } else if pick < 85 {
            OpKind::CopyLocal
        } else {
            OpKind::CopyRemote
        };
        let kill_after = (inp.rng.below(100) < inp.cfg.cli_kill_pct)
            .then(|| Duration::from_millis(inp.rng.range(5, 600)));
        let (snap, vol) = if kind == OpKind::Create {
            (None, live[inp.rng.below(live.len() as u64) as usize])
        } else {
            let (s, v) = inp.snaps[inp.rng.below(inp.snaps.len() as u64) as usize].clone();
            (Some(s), v)
        };
        let s = snap.clone().unwrap_or_default();
        let tag = match kind {
            OpKind::Create => format!("cc-{tag_n}"),
            OpKind::Delete => s.clone(),
            OpKind::Restore => format!("rs-{tag_n}"),
            OpKind::Rekey => format!("rk-{tag_n}"),
            OpKind::CopyLocal => format!("cl-{tag_n}"),
            OpKind::CopyRemote => format!("cr-{tag_n}"),
        };
        let vol_name = lock(&inp.vols[vol]).name.clone();
        let args: Vec<String> = match kind {
            OpKind::Create => vec![
                "snapshot".into(),
                "create".into(),
                vol_name,
                "--description".into(),
                tag.clone(),
            ],
            OpKind::Delete => vec!["snapshot".into(), "delete".into(), s.clone()],
            OpKind::Restore => vec![
                "volume".into(),
                "create".into(),
                "--from-snapshot".into(),
                s.clone(),
                "--name".into(),
                tag.clone(),
            ],
            OpKind::Rekey => vec![
                "volume".into(),
                "create".into(),
                "--from-snapshot".into(),
                s.clone(),
                "--kms-key".into(),
                inp.key2.to_string(),
                "--name".into(),
                tag.clone(),
            ],
            OpKind::CopyLocal => vec![
                "snapshot".into(),
                "copy".into(),
                s.clone(),
                "--kms-key".into(),
                inp.key2.to_string(),
                "--description".into(),
                tag.clone(),
            ],
            OpKind::CopyRemote => vec![
                "snapshot".into(),
                "copy".into(),
                s.clone(),
                "--destination-region".into(),
                REGION_B.into(),
                "--description".into(),
                tag.clone(),
            ],
        };
        let floor = Arc::new(lock(&inp.vols[vol]).fsynced.clone());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = inp.cli.run_opts(&argv, kill_after);
        let ceiling = lock(&inp.vols[vol]).next_gen;
        if run.ok() {
            match kind {
                OpKind::Create => {
                    if let Some(id) = run
                        .json()
                        .and_then(|j| j["SnapshotId"].as_str().map(str::to_string))
                    {
                        inp.snaps.push((id, vol));
                    }
                }
                OpKind::Delete => inp.snaps.retain(|(id, _)| *id != s),
                _ => {}
            }
        } else if kind == OpKind::Delete && run.signal == Some(9) {
            // A killed delete may have happened: no later operation of this cycle may
            // count on the snapshot (the cycle's end classifies what it left).
            inp.snaps.retain(|(id, _)| *id != s);
        }
        out.push(OpRecord {
            kind,
            tag,
            snap,
            vol,
            floor,
            ceiling,
            run,
        });
    }
    out
}

// ---- the report -----------------------------------------------------------------------------

/// An operation interrupted by a kill, and what it left.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub cycle: u32,
    pub op: &'static str,
    /// "daemon kill" or "CLI kill".
    pub by: &'static str,
    pub exit: String,
    pub found: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub cycles: u32,
    pub seed: u64,
    pub seconds: f64,
    pub writes: u64,
    pub fsyncs: u64,
    pub fsynced_bytes: u64,
    pub blocks_verified: u64,
    pub fsynced_bytes_lost: u64,
    pub garbage_blocks: u64,
    pub snapshot_reads: u64,
    pub snapshot_bytes_lost: u64,
    pub snapshots_changed: u64,
    pub products_verified: u64,
    pub products_mismatched: u64,
    pub attach_checks: u64,
    pub volumes_not_attaching: u64,
    pub pool_checks: u64,
    pub pools_damaged: u64,
    pub leaked_slots: u64,
    pub double_owned_slots: u64,
    pub other_pool_problems: u64,
    pub daemon_kills: u64,
    pub cli_kills: u64,
    pub ops: u64,
    pub ops_completed: u64,
    pub ops_refused: u64,
    pub refusals: BTreeMap<String, u64>,
    pub interrupted: Vec<Interrupted>,
    /// Stale leases `pool check` reported (a copy's lease left by a kill between the copy's
    /// finish and its release): a leftover, released by the next `snapshot delete` of the
    /// source or by `pool check --repair`; they must never make a snapshot undeletable.
    pub leaked_leases: u64,
    /// Snapshots `snapshot delete` refused ("in use") when it was their turn to go.
    pub undeletable_snapshots: u64,
    pub leftovers: Vec<String>,
    pub failures: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.fsynced_bytes_lost == 0
            && self.garbage_blocks == 0
            && self.snapshot_bytes_lost == 0
            && self.snapshots_changed == 0
            && self.products_mismatched == 0
            && self.volumes_not_attaching == 0
            && self.pools_damaged == 0
            && self.leaked_slots == 0
            && self.double_owned_slots == 0
            && self.other_pool_problems == 0
            && self.undeletable_snapshots == 0
            && self.leftovers.is_empty()
            && self.failures.is_empty()
    }

    fn fail(&mut self, cycle: u32, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[crash-cycles] FAILURE in cycle {cycle}: {what}");
        self.failures.push(format!("cycle {cycle}: {what}"));
    }

    /// Interrupted operations counted by (operation, by, state found).
    pub fn interrupted_summary(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for i in &self.interrupted {
            *m.entry(format!("{} [{}]: {}", i.op, i.by, state_class(&i.found)))
                .or_insert(0) += 1;
        }
        m
    }

    pub fn to_json(&self, cfg: &Config) -> Value {
        json!({
            "ok": self.ok(),
            "cycles": self.cycles,
            "seed": format!("{:#x}", self.seed),
            "seconds": (self.seconds * 10.0).round() / 10.0,
            "config": {
                "cryptvol": cfg.cryptvol.display().to_string(),
                "volumes": cfg.volumes,
                "volume_mib": cfg.volume_mib,
                "blocks_per_volume": cfg.blocks,
                "window_ms": [cfg.window_ms.0, cfg.window_ms.1],
                "cli_kill_pct": cfg.cli_kill_pct,
                "verify_completed_every": cfg.verify_completed_every,
            },
            "writes": self.writes,
            "fsyncs": self.fsyncs,
            "fsynced_bytes": self.fsynced_bytes,
            "blocks_verified": self.blocks_verified,
            "fsynced_bytes_lost": self.fsynced_bytes_lost,
            "garbage_blocks": self.garbage_blocks,
            "snapshot_reads": self.snapshot_reads,
            "snapshot_bytes_lost": self.snapshot_bytes_lost,
            "snapshots_changed": self.snapshots_changed,
            "products_verified": self.products_verified,
            "products_mismatched": self.products_mismatched,
            "attach_checks": self.attach_checks,
            "volumes_not_attaching": self.volumes_not_attaching,
            "pool_checks": self.pool_checks,
            "pools_damaged": self.pools_damaged,
            "leaked_slots": self.leaked_slots,
            "double_owned_slots": self.double_owned_slots,
            "other_pool_problems": self.other_pool_problems,
            "leaked_leases": self.leaked_leases,
            "undeletable_snapshots": self.undeletable_snapshots,
            "daemon_kills": self.daemon_kills,
            "cli_kills": self.cli_kills,
            "snapshot_ops": {
                "started": self.ops,
                "completed": self.ops_completed,
                "refused": self.ops_refused,
                "refusals": self.refusals,
                "interrupted": self.interrupted.len(),
                "interrupted_by_state": self.interrupted_summary(),
            },
            "interrupted": self.interrupted.iter().map(|i| json!({
                "cycle": i.cycle, "op": i.op, "by": i.by, "exit": i.exit, "found": i.found,
            })).collect::<Vec<_>>(),
            "leftovers": self.leftovers,
            "failures": self.failures,
        })
    }

    /// The human summary printed at the end.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<34} {v}\n"));
        line("cycles", format!("{} (seed {:#x})", self.cycles, self.seed));
        line("time", format!("{:.1} s", self.seconds));
        line(
            "writes / fsyncs",
            format!(
                "{} / {} ({:.1} MiB fsynced)",
                self.writes,
                self.fsyncs,
                self.fsynced_bytes as f64 / 1048576.0
            ),
        );
        line("blocks read back", self.blocks_verified.to_string());
        line("fsynced bytes lost", self.fsynced_bytes_lost.to_string());
        line("garbage blocks", self.garbage_blocks.to_string());
        line(
            "snapshot read-backs / bytes lost",
            format!(
                "{} / {} (changed: {})",
                self.snapshot_reads, self.snapshot_bytes_lost, self.snapshots_changed
            ),
        );
        line(
            "products read back / mismatched",
            format!("{} / {}", self.products_verified, self.products_mismatched),
        );
        line(
            "volumes that would not attach",
            format!(
                "{} (of {} attaches)",
                self.volumes_not_attaching, self.attach_checks
            ),
        );
        line(
            "pool checks / damaged",
            format!("{} / {}", self.pool_checks, self.pools_damaged),
        );
        line(
            "leaked / double-owned slots",
            format!(
                "{} / {} (other problems: {})",
                self.leaked_slots, self.double_owned_slots, self.other_pool_problems
            ),
        );
        line(
            "stale leases seen (released later) / undeletable snapshots",
            format!("{} / {}", self.leaked_leases, self.undeletable_snapshots),
        );
        line(
            "kills (daemon / CLI)",
            format!("{} / {}", self.daemon_kills, self.cli_kills),
        );
        line(
            "snapshot ops",
            format!(
                "{} started, {} completed, {} refused, {} interrupted",
                self.ops,
                self.ops_completed,
                self.ops_refused,
                self.interrupted.len()
            ),
        );
        for (k, n) in self.interrupted_summary() {
            s.push_str(&format!("    {n:>4}  {k}\n"));
        }
        for (k, n) in &self.refusals {
            s.push_str(&format!("    {n:>4}  refused: {k}\n"));
        }
        if !self.leftovers.is_empty() {
            s.push_str(&format!("  leftovers: {}\n", self.leftovers.join("; ")));
        }
        for f in self.failures.iter().take(20) {
            s.push_str(&format!("  FAILURE {f}\n"));
        }
        if self.failures.len() > 20 {
            s.push_str(&format!(
                "  … and {} more failures\n",
                self.failures.len() - 20
            ));
        }
        s.push_str(if self.ok() {
            "  result: OK\n"
        } else {
            "  result: FAILED\n"
        });
        s
    }
}

/// The class of a found state (the text before any detail in parentheses).
fn state_class(found: &str) -> String {
    found.split(" (").next().unwrap_or(found).to_string()
}

// ---- the harness ----------------------------------------------------------------------------

struct Harness<'a> {
    cfg: &'a Config,
    cli: Cli,
    key2: String,
    vols: Vec<Arc<Mutex<WriterVol>>>,
    /// Writer volumes attached now (served by the current daemon).
    attached: Vec<bool>,
    snaps: Vec<KnownSnap>,
    /// Snapshots found undeletable (a leaked lease): reported once, then left alone.
    undeletable: BTreeSet<String>,
    report: Report,
    scratch_n: u64,
    evidence_saved: u32,
}

/// Runs the whole harness: setup, `cfg.cycles` cycles, teardown. Never panics on what it
/// finds: everything goes into the report.
pub fn run(cfg: &Config) -> Report {
    let t0 = Instant::now();
    let mut h = Harness {
        cfg,
        cli: Cli::new(&cfg.cryptvol, &cfg.data_dir),
        key2: String::new(),
        vols: vec![],
        attached: vec![],
        snaps: vec![],
        undeletable: BTreeSet::new(),
        report: Report {
            seed: cfg.seed,
            ..Report::default()
        },
        scratch_n: 0,
        evidence_saved: 0,
    };
    if let Err(e) = h.setup() {
        h.report.fail(0, format!("setup: {e}"));
    } else {
        for c in 1..=cfg.cycles {
            let tc = Instant::now();
            let before = (h.report.failures.len(), h.report.interrupted.len());
            let kill_ms = h.cycle(c);
            h.report.cycles = c;
            if cfg.progress {
                let new: Vec<String> = h.report.interrupted[before.1..]
                    .iter()
                    .map(|i| format!("{} [{}] → {}", i.op, i.by, i.found))
                    .collect();
                eprintln!(
                    "[crash-cycles {c}/{}] killed the daemon at {kill_ms} ms; {:.1} s; interrupted: {}{}",
                    cfg.cycles,
                    tc.elapsed().as_secs_f64(),
                    if new.is_empty() {
                        "none".into()
                    } else {
                        new.join("; ")
                    },
                    if h.report.failures.len() > before.0 {
                        format!("; {} FAILURES", h.report.failures.len() - before.0)
                    } else {
                        String::new()
                    }
                );
            }
            if h.report.failures.len() > 200 {
                h.report.fail(c, "too many failures: stopping early");
                break;
            }
        }
    }
    h.teardown();
    h.report.seconds = t0.elapsed().as_secs_f64();
    h.report
}

impl Harness<'_> {
    fn mnt(&self, name: &str) -> PathBuf {
        self.cfg.work.join("mnt").join(name)
    }

    fn setup(&mut self) -> Result<(), String> {
        for d in [self.cfg.work.join("mnt"), self.cfg.work.join("logs")] {
            std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        for r in [REGION_A, REGION_B] {
            let run = self.cli.run(&["--region", r, "init"]);
            if !run.ok() {
                return Err(run.line());
            }
        }
        let k = self
            .cli
            .run(&["kms", "create-key", "--description", "crash-cycles rekey"]);
        self.key2 = k
            .json()
            .and_then(|j| j["KeyMetadata"]["KeyId"].as_str().map(str::to_string))
            .ok_or_else(|| k.line())?;
        let size = format!("{}M", self.cfg.volume_mib);
        let nblocks = self.cfg.volume_mib * (1 << 20) / BLOCK;
        for i in 0..self.cfg.volumes {
            let name = format!("w{i}");
            // Every other writer volume is authenticated: its fsyncs go to the pool's tag
            // journal, which the kill -9 must not lose either.
            let mut args = vec!["volume", "create", "--size", &size, "--name", &name];
            if i % 2 == 1 {
                args.push("--integrity");
            }
            let run = self.cli.run(&args);
            let id = run
                .json()
                .and_then(|j| j["VolumeId"].as_str().map(str::to_string))
                .ok_or_else(|| run.line())?;
            // Blocks spread over the whole volume: every chunk, several per chunk.
            let mut rng = Rng::derive(self.cfg.seed, 0xb10c, i as u64);
            let mut set = BTreeSet::new();
            while set.len() < self.cfg.blocks.min(nblocks as usize) {
                set.insert(rng.below(nblocks));
            }
            let dir = self.mnt(&name);
            std::fs::create_dir_all(&dir).map_err(|e| format!("{e}"))?;
            let log_path = self.cfg.work.join("logs").join(format!("{name}.log"));
            let log = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(|e| format!("{}: {e}", log_path.display()))?;
            self.vols.push(Arc::new(Mutex::new(WriterVol {
                tag: u64::from_le_bytes(
                    blake3::hash(id.as_bytes()).as_bytes()[..8]
                        .try_into()
                        .expect("8 bytes"),
                ),
                name,
                id,
                dir,
                blocks: set.into_iter().collect(),
                next_gen: 1,
                fsynced: HashMap::new(),
                log,
                log_path,
                parsed: LogModel::default(),
                parsed_to: 0,
            })));
            self.attached.push(false);
        }
        Ok(())
    }

    /// `attach`, retried while the daemon is busy starting or stopping (exit 16).
    fn attach(&mut self, region: &str, vol: &str, dir: &Path) -> Result<(), String> {
        let d = dir.to_string_lossy().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.cli.run(&["--region", region, "attach", vol, &d]);
            if r.ok() {
                return Ok(());
            }
            if r.code == Some(16) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            return Err(r.line());
        }
    }

    fn detach(&mut self, cycle: u32, dir: &Path) {
        let d = dir.to_string_lossy().to_string();
        let r = self.cli.run(&["detach", &d]);
        if !r.ok() {
            self.report.fail(cycle, format!("detach: {}", r.line()));
        }
    }

    /// A command that must succeed; its failure is recorded.
    fn must(&mut self, cycle: u32, args: &[&str]) -> Option<Run> {
        let r = self.cli.run(args);
        if r.ok() {
            Some(r)
        } else {
            self.report.fail(cycle, r.line());
            None
        }
    }

    fn daemon_pid(&self) -> Option<i32> {
        let r = self
            .cli
            .run(&["status", "--query", "DaemonPid", "--output", "text"]);
        r.stdout.trim().parse().ok()
    }

    /// One cycle; returns when the daemon was killed (ms into the window).
    fn cycle(&mut self, c: u32) -> u64 {
        let mut rng = Rng::derive(self.cfg.seed, 0xc1c1e, c as u64);
        // 1. Attach (or reuse) the writer volumes.
        for i in 0..self.vols.len() {
            if self.attached[i] {
                continue;
            }
            let (name, dir) = {
                let v = lock(&self.vols[i]);
                (v.name.clone(), v.dir.clone())
            };
            self.report.attach_checks += 1;
            match self.attach(REGION_A, &name, &dir) {
                Ok(()) => self.attached[i] = true,
                Err(e) => {
                    self.report.volumes_not_attaching += 1;
                    self.report
                        .fail(c, format!("writer volume {name} would not attach: {e}"));
                }
            }
        }
        let Some(pid) = self.daemon_pid() else {
            self.report.fail(c, "no daemon pid in `cryptvol status`");
            return 0;
        };

        // 2-4. Writers and operations, then kill -9 the daemon.
        let window = rng.range(self.cfg.window_ms.0, self.cfg.window_ms.1);
        let stop = AtomicBool::new(false);
        let live = self.attached.clone();
        let snaps: Vec<(String, usize)> =
            self.snaps.iter().map(|s| (s.id.clone(), s.vol)).collect();
        let ops_rng = Rng::derive(self.cfg.seed, 0x0b5, c as u64);
        let (kill_at, writers, ops) = std::thread::scope(|sc| {
            let ws: Vec<_> = (0..self.vols.len())
                .filter(|i| live[*i])
                .map(|i| {
                    let v = self.vols[i].clone();
                    let r = Rng::derive(self.cfg.seed, c as u64, 0x1000 + i as u64);
                    let stop = &stop;
                    sc.spawn(move || writer(&v, r, stop))
                })
                .collect();
            let inp = OpsInput {
                cli: &self.cli,
                cfg: self.cfg,
                cycle: c,
                rng: ops_rng,
                snaps,
                vols: &self.vols,
                live: &live,
                key2: &self.key2,
                stop: &stop,
            };
            let ops = sc.spawn(move || ops_thread(inp));
            std::thread::sleep(Duration::from_millis(window));
            // No operation starts after this; the ones running meet the kill.
            stop.store(true, Ordering::Release);
            let kill_at = Instant::now();
            kill9(pid);
            let ws: Vec<WriterResult> = ws
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect();
            let ops = ops.join().unwrap_or_default();
            (kill_at, ws, ops)
        });
        self.report.daemon_kills += 1;
        if !wait_until(Duration::from_secs(10), || !process_alive(pid)) {
            self.report.fail(
                c,
                format!("the daemon (pid {pid}) survived kill -9 for 10 s"),
            );
        }
        self.attached.iter_mut().for_each(|a| *a = false);
        for (i, w) in writers.iter().enumerate() {
            self.report.writes += w.writes;
            self.report.fsyncs += w.fsyncs;
            match &w.error {
                Some((t, e)) if *t < kill_at => {
                    self.report
                        .fail(c, format!("writer {i} failed before the kill: {e}"));
                }
                _ => {}
            }
        }

        // 5. The crashed pools, offline (no daemon runs now).
        self.pool_check(c, REGION_A, "after the kill, offline");
        self.pool_check(c, REGION_B, "after the kill, offline");

        // Re-attach (clears the dead mounts) and read every logged block back.
        for i in 0..self.vols.len() {
            let (name, dir) = {
                let v = lock(&self.vols[i]);
                (v.name.clone(), v.dir.clone())
            };
            self.report.attach_checks += 1;
            match self.attach(REGION_A, &name, &dir) {
                Ok(()) => self.attached[i] = true,
                Err(e) => {
                    self.report.volumes_not_attaching += 1;
                    self.report.fail(
                        c,
                        format!("writer volume {name} would not re-attach after the kill: {e}"),
                    );
                }
            }
        }
        for i in 0..self.vols.len() {
            if self.attached[i] {
                self.verify_writer_volume(c, i);
            }
        }
        self.report.fsynced_bytes = self.vols.iter().map(|v| lock(v).parsed.fsynced_bytes).sum();

        // 6. What the operations left.
        self.settle_ops(c, kill_at, ops);
        self.attach_every_volume(c);
        let check = self.pool_check(c, REGION_A, "after recovery, online");
        self.count_leases(check);
        self.prune(c);
        window
    }

    /// `pool check` of `region`; problems are counted (and repaired offline, so that the
    /// next cycles start from a clean pool).
    fn pool_check(&mut self, c: u32, region: &str, when: &str) -> Option<Value> {
        let r = self.cli.run(&["--region", region, "pool", "check"]);
        self.report.pool_checks += 1;
        match r.code {
            Some(0) => {}
            Some(21)
                if r.json().is_some_and(|j| {
                    j["Problems"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().all(|p| p["Kind"] == "stale-lease"))
                }) =>
            {
                // Only leftovers of a killed copy: counted by `count_leases`.
            }
            Some(21) => {
                self.report.pools_damaged += 1;
                let j = r.json().unwrap_or(Value::Null);
                let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
                for p in j["Problems"].as_array().into_iter().flatten() {
                    let kind = p["Kind"].as_str().unwrap_or("?").to_string();
                    let n = match (p["Slot"].as_u64(), p["LastSlot"].as_u64()) {
                        (Some(a), Some(b)) if b >= a => b - a + 1,
                        _ => 1,
                    };
                    match kind.as_str() {
                        "leaked-slot" | "leaked-reference" => self.report.leaked_slots += n,
                        "double-owner" => self.report.double_owned_slots += n,
                        _ => self.report.other_pool_problems += n,
                    }
                    *kinds.entry(kind).or_insert(0) += n;
                }
                self.report.fail(
                    c,
                    format!(
                        "pool check of {region} ({when}) found damage {kinds:?}: {}",
                        r.stderr.trim()
                    ),
                );
                self.save_evidence(c, &format!("pool-{region}"), &r.stdout);
                if when.contains("offline") {
                    let rep = self
                        .cli
                        .run(&["--region", region, "pool", "check", "--repair"]);
                    if !rep.ok() {
                        self.report.fail(c, format!("repair: {}", rep.line()));
                    }
                }
            }
            _ => self
                .report
                .fail(c, format!("pool check of {region} ({when}): {}", r.line())),
        }
        r.json()
    }

    /// Leases on snapshots of this region once every interrupted copy has been finished
    /// and nothing runs: each one belongs to a copy that is over, and keeps its source from
    /// ever being deleted. New ones are pinned on this cycle's interrupted copies that
    /// were found complete.
    fn count_leases(&mut self, check: Option<Value>) {
        let Some(j) = check else {
            return;
        };
        let stale = j["Problems"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["Kind"] == "stale-lease").count() as u64)
            .unwrap_or(0);
        self.report.leaked_leases = self.report.leaked_leases.max(stale);
    }

    /// Copies the daemon logs, the writer logs and `extra` to the evidence dir.
    fn save_evidence(&mut self, c: u32, what: &str, extra: &str) {
        let Some(dir) = self.cfg.evidence_dir.clone() else {
            return;
        };
        if self.evidence_saved >= 5 {
            return;
        }
        self.evidence_saved += 1;
        let d = dir.join(format!("cycle{c}-{what}"));
        if std::fs::create_dir_all(&d).is_err() {
            return;
        }
        let _ = std::fs::write(d.join("report.txt"), extra);
        for r in [REGION_A, REGION_B] {
            let log = self
                .cfg
                .data_dir
                .join(format!("regions/{r}/logs/daemon.log"));
            let _ = std::fs::copy(&log, d.join(format!("daemon-{r}.log")));
            let meta = self
                .cfg
                .data_dir
                .join(format!("regions/{r}/pool/meta.redb"));
            let _ = std::fs::copy(&meta, d.join(format!("meta-{r}.redb")));
        }
        for v in &self.vols {
            let v = lock(v);
            let _ = std::fs::copy(&v.log_path, d.join(format!("{}.log", v.name)));
        }
        eprintln!("[crash-cycles] evidence saved in {}", d.display());
    }

    /// Reads every logged block of writer volume `i` and judges it against the log.
    fn verify_writer_volume(&mut self, c: u32, i: usize) {
        let vol = self.vols[i].clone();
        let mut v = lock(&vol);
        if let Err(e) = v.refresh() {
            self.report
                .fail(c, format!("reading the log of {}: {e}", v.name));
            return;
        }
        let content = match read_blocks(&v.dir.join("volume"), &v.blocks, v.tag) {
            Ok(x) => x,
            Err(e) => {
                self.report.fail(c, format!("reading {} back: {e}", v.name));
                return;
            }
        };
        let mut bad = vec![];
        for (b, seen) in v.blocks.iter().zip(&content) {
            self.report.blocks_verified += 1;
            let floor = v.parsed.fsynced.get(b).copied().unwrap_or(0);
            let issued = v.parsed.issued.get(b);
            let verdict = judge(seen, floor, u64::MAX, issued);
            if let Some((lost, why)) = verdict {
                if lost {
                    self.report.fsynced_bytes_lost += BLOCK;
                }
                if matches!(seen, Seen::Garbage(_)) || why.contains("never issued") {
                    self.report.garbage_blocks += 1;
                }
                bad.push(format!("block {b}: {why}"));
            }
        }
        let name = v.name.clone();
        drop(v);
        if !bad.is_empty() {
            let n = bad.len();
            bad.truncate(5);
            self.report.fail(
                c,
                format!(
                    "writer volume {name}: {n} blocks wrong after the kill: {}",
                    bad.join("; ")
                ),
            );
            self.save_evidence(c, &format!("volume-{name}"), &bad.join("\n"));
        }
    }

    /// Attaches `vol` (in `region`) at a fresh directory, reads `blocks`, detaches.
    fn read_volume(
        &mut self,
        c: u32,
        region: &str,
        vol: &str,
        blocks: &[u64],
        tag: u64,
    ) -> Option<Vec<Seen>> {
        self.scratch_n += 1;
        let dir = self.mnt(&format!("chk{}", self.scratch_n));
        let _ = std::fs::create_dir_all(&dir);
        self.report.attach_checks += 1;
        if let Err(e) = self.attach(region, vol, &dir) {
            self.report.volumes_not_attaching += 1;
            self.report
                .fail(c, format!("volume {vol} ({region}) would not attach: {e}"));
            return None;
        }
        let r = read_blocks(&dir.join("volume"), blocks, tag);
        self.detach(c, &dir);
        let _ = std::fs::remove_dir(&dir);
        match r {
            Ok(x) => Some(x),
            Err(e) => {
                self.report
                    .fail(c, format!("reading volume {vol} ({region}): {e}"));
                None
            }
        }
    }

    /// A same-key restore of `snap` (in `region`), read back, then deleted.
    fn read_snapshot(&mut self, c: u32, region: &str, snap: &str, vol: usize) -> Option<Vec<Seen>> {
        self.scratch_n += 1;
        let name = format!("chk-{}", self.scratch_n);
        let r = self.cli.run(&[
            "--region",
            region,
            "volume",
            "create",
            "--from-snapshot",
            snap,
            "--name",
            &name,
        ]);
        if !r.ok() {
            // Deleted by a later operation of the window: nothing to read.
            if r.code == Some(3) && !r.is_bug() {
                self.snaps.retain(|s| s.id != snap);
            } else {
                self.report.fail(c, r.line());
            }
            return None;
        }
        let id = r.json()?["VolumeId"].as_str()?.to_string();
        let (blocks, tag) = {
            let v = lock(&self.vols[vol]);
            (v.blocks.clone(), v.tag)
        };
        let content = self.read_volume(c, region, &id, &blocks, tag);
        self.must(c, &["--region", region, "volume", "delete", &id, "--yes"]);
        self.report.snapshot_reads += 1;
        content
    }

    /// The content of a known snapshot (read once; later reads must be equal).
    fn snapshot_content(&mut self, c: u32, snap: &str) -> Option<Vec<Seen>> {
        let k = self.snaps.iter().position(|s| s.id == snap)?;
        if let Some(x) = &self.snaps[k].content {
            return Some(x.clone());
        }
        let vol = self.snaps[k].vol;
        let content = self.read_snapshot(c, REGION_A, snap, vol)?;
        let (floor, ceiling) = (self.snaps[k].floor.clone(), self.snaps[k].ceiling);
        self.judge_snapshot(c, snap, vol, &content, &floor, ceiling);
        self.snaps[k].content = Some(content.clone());
        Some(content)
    }

    /// A snapshot holds at least what was fsynced when it was asked for, and nothing
    /// issued after it completed.
    fn judge_snapshot(
        &mut self,
        c: u32,
        snap: &str,
        vol: usize,
        content: &[Seen],
        floor: &HashMap<u64, u64>,
        ceiling: u64,
    ) {
        let v = self.vols[vol].clone();
        let mut v = lock(&v);
        let _ = v.refresh();
        let mut bad = vec![];
        for (b, seen) in v.blocks.iter().zip(content) {
            let f = floor.get(b).copied().unwrap_or(0);
            if let Some((lost, why)) = judge(seen, f, ceiling, v.parsed.issued.get(b)) {
                if lost {
                    self.report.snapshot_bytes_lost += BLOCK;
                }
                bad.push(format!("block {b}: {why}"));
            }
        }
        drop(v);
        if !bad.is_empty() {
            let n = bad.len();
            bad.truncate(5);
            self.report.fail(
                c,
                format!("snapshot {snap}: {n} blocks wrong: {}", bad.join("; ")),
            );
        }
    }

    /// Reads a product (a restored volume, or a snapshot copy restored) and compares it
    /// with the source snapshot's content.
    fn check_product(&mut self, c: u32, what: &str, got: Option<Vec<Seen>>, src: &str, vol: usize) {
        let Some(got) = got else { return };
        self.report.products_verified += 1;
        match self.snapshot_content(c, src) {
            Some(want) if want == got => {}
            Some(want) => {
                self.report.products_mismatched += 1;
                let v = lock(&self.vols[vol]).blocks.clone();
                let diffs: Vec<String> = v
                    .iter()
                    .zip(want.iter().zip(&got))
                    .filter(|(_, (a, b))| a != b)
                    .take(5)
                    .map(|(b, (a, g))| format!("block {b}: source {a:?}, {what} {g:?}"))
                    .collect();
                self.report.fail(
                    c,
                    format!("{what} of {src} differs from it: {}", diffs.join("; ")),
                );
            }
            // The source is gone (deleted by a later operation): every block must at least
            // be a valid stamp that was issued.
            None => {
                let v = self.vols[vol].clone();
                let v = lock(&v);
                let bad: Vec<String> = v
                    .blocks
                    .iter()
                    .zip(&got)
                    .filter_map(|(b, s)| {
                        judge(s, 0, u64::MAX, v.parsed.issued.get(b))
                            .map(|(_, w)| format!("block {b}: {w}"))
                    })
                    .take(5)
                    .collect();
                drop(v);
                if !bad.is_empty() {
                    self.report.products_mismatched += 1;
                    self.report
                        .fail(c, format!("{what} of {src}: {}", bad.join("; ")));
                }
            }
        }
    }

    fn list(&mut self, c: u32, region: &str, what: &str) -> Vec<Value> {
        let (args, field): (Vec<&str>, &str) = match what {
            "snapshots" => (vec!["--region", region, "snapshot", "list"], "Snapshots"),
            _ => (vec!["--region", region, "volume", "list"], "Volumes"),
        };
        match self.must(c, &args).and_then(|r| r.json()) {
            Some(j) => j[field].as_array().cloned().unwrap_or_default(),
            None => vec![],
        }
    }

    fn snapshots_described(&mut self, c: u32, region: &str, desc: &str) -> Vec<String> {
        self.list(c, region, "snapshots")
            .iter()
            .filter(|s| s["Description"] == desc)
            .filter_map(|s| s["SnapshotId"].as_str().map(str::to_string))
            .collect()
    }

    fn volumes_named(&mut self, c: u32, region: &str, name: &str) -> Vec<String> {
        self.list(c, region, "volumes")
            .iter()
            .filter(|v| v["Name"] == name)
            .filter_map(|v| v["VolumeId"].as_str().map(str::to_string))
            .collect()
    }

    /// Classifies every operation of the window, re-runs the interrupted copies and rekey
    /// restores, reads back what they made, and deletes their products.
    fn settle_ops(&mut self, c: u32, kill_at: Instant, ops: Vec<OpRecord>) {
        let verify_completed = self.cfg.verify_completed_every > 0
            && c.is_multiple_of(self.cfg.verify_completed_every);
        // Snapshots as they are now, to learn of creates that completed.
        for op in &ops {
            self.report.ops += 1;
            let by = if op.run.signal == Some(9) && !op.run.wedged {
                self.report.cli_kills += 1;
                Some("CLI kill")
            } else if op.run.ended >= kill_at && !op.run.ok() {
                Some("daemon kill")
            } else {
                None
            };
            if op.run.is_bug() {
                self.report
                    .fail(c, format!("{}: {}", op.kind.name(), op.run.line()));
            }
            match by {
                None if op.run.ok() => {
                    self.report.ops_completed += 1;
                    self.completed(c, op, verify_completed);
                }
                None => {
                    // A refusal: only "in use" deletes are expected here.
                    let in_use = op.kind == OpKind::Delete
                        && op.run.code == Some(4)
                        && op.run.stderr.contains("in use");
                    self.report.ops_refused += 1;
                    let key = format!("{} {}", op.kind.name(), op.run.exit());
                    *self.report.refusals.entry(key).or_insert(0) += 1;
                    if !in_use {
                        self.report
                            .fail(c, format!("unexpected refusal: {}", op.run.line()));
                    }
                }
                Some(by) => {
                    if by == "daemon kill"
                        && !matches!(op.run.code, Some(3 | 4 | 11 | 16))
                        && !op.run.is_bug()
                    {
                        self.report.fail(
                            c,
                            format!(
                                "interrupted by the daemon's death with an undocumented exit: {}",
                                op.run.line()
                            ),
                        );
                    }
                    let found = self.interrupted(c, op);
                    self.report.interrupted.push(Interrupted {
                        cycle: c,
                        op: op.kind.name(),
                        by,
                        exit: op.run.exit(),
                        found,
                    });
                }
            }
        }
    }

    /// A completed operation: remember its snapshot, or read back and delete its product.
    fn completed(&mut self, c: u32, op: &OpRecord, verify: bool) {
        let j = op.run.json().unwrap_or(Value::Null);
        let src = op.snap.clone().unwrap_or_default();
        match op.kind {
            OpKind::Create => {
                let Some(id) = j["SnapshotId"].as_str() else {
                    self.report
                        .fail(c, format!("no SnapshotId: {}", op.run.stdout));
                    return;
                };
                self.snaps.push(KnownSnap {
                    id: id.to_string(),
                    vol: op.vol,
                    floor: op.floor.clone(),
                    ceiling: op.ceiling,
                    content: None,
                });
                if verify {
                    self.snapshot_content(c, id);
                }
            }
            OpKind::Delete => self.snaps.retain(|s| s.id != src),
            OpKind::Restore | OpKind::Rekey => {
                let Some(id) = j["VolumeId"].as_str().map(str::to_string) else {
                    self.report
                        .fail(c, format!("no VolumeId: {}", op.run.stdout));
                    return;
                };
                if verify {
                    let got = self.read_product_volume(c, REGION_A, &id, op.vol);
                    self.check_product(c, op.kind.name(), got, &src, op.vol);
                }
                // Attached once in any case (`attach_every_volume`), then deleted by `prune`.
            }
            OpKind::CopyLocal | OpKind::CopyRemote => {
                let region = if op.kind == OpKind::CopyLocal {
                    REGION_A
                } else {
                    REGION_B
                };
                let Some(id) = j["SnapshotId"].as_str().map(str::to_string) else {
                    self.report
                        .fail(c, format!("no SnapshotId: {}", op.run.stdout));
                    return;
                };
                if verify {
                    let got = self.read_snapshot(c, region, &id, op.vol);
                    self.check_product(c, op.kind.name(), got, &src, op.vol);
                }
            }
        }
    }

    fn read_product_volume(
        &mut self,
        c: u32,
        region: &str,
        id: &str,
        vol: usize,
    ) -> Option<Vec<Seen>> {
        let (blocks, tag) = {
            let v = lock(&self.vols[vol]);
            (v.blocks.clone(), v.tag)
        };
        self.read_volume(c, region, id, &blocks, tag)
    }

    /// What an interrupted operation left, re-running it where that is the recovery.
    fn interrupted(&mut self, c: u32, op: &OpRecord) -> String {
        let src = op.snap.clone().unwrap_or_default();
        match op.kind {
            OpKind::Create => {
                let found = self.snapshots_described(c, REGION_A, &op.tag);
                match found.as_slice() {
                    [] => "absent".into(),
                    [id] => {
                        // Complete as far as the floor goes: it may have been taken at any
                        // moment before the kill.
                        self.snaps.push(KnownSnap {
                            id: id.clone(),
                            vol: op.vol,
                            floor: op.floor.clone(),
                            ceiling: u64::MAX,
                            content: None,
                        });
                        match self.snapshot_content(c, id) {
                            Some(_) => "present (read back: holds every write fsynced before it was asked for)".into(),
                            None => "present (could not be read back)".into(),
                        }
                    }
                    more => {
                        self.report.fail(
                            c,
                            format!("one create made {} snapshots: {more:?}", more.len()),
                        );
                        format!("present {} times", more.len())
                    }
                }
            }
            OpKind::Delete => {
                let listed = self
                    .list(c, REGION_A, "snapshots")
                    .iter()
                    .any(|s| s["SnapshotId"] == src.as_str());
                if listed {
                    "still present".into()
                } else {
                    self.snaps.retain(|s| s.id != src);
                    "deleted".into()
                }
            }
            OpKind::Restore => {
                let found = self.volumes_named(c, REGION_A, &op.tag);
                match found.as_slice() {
                    [] => "absent".into(),
                    [id] => {
                        let id = id.clone();
                        let got = self.read_product_volume(c, REGION_A, &id, op.vol);
                        self.check_product(c, op.kind.name(), got, &src, op.vol);
                        "present".into()
                    }
                    more => {
                        self.report
                            .fail(c, format!("one restore made {} volumes", more.len()));
                        format!("present {} times", more.len())
                    }
                }
            }
            OpKind::Rekey => {
                let found = self.volumes_named(c, REGION_A, &op.tag);
                let (state, id) = match found.as_slice() {
                    [] => {
                        // The documented recovery: run it again (a pending restore is
                        // abandoned and started over).
                        let args: Vec<&str> = op.run.args.iter().map(String::as_str).collect();
                        let r = self.cli.run(&args);
                        // As for copies below: killed before it leased its source, the
                        // restore did not keep that snapshot, and a later delete of it may
                        // have run; the re-run then says the source is gone.
                        if r.code == Some(3) && r.stderr.contains("does not exist") {
                            return "absent; its source was deleted before it leased it, re-run refused (exit 3)".into();
                        }
                        if r.is_bug() || !r.ok() {
                            self.report.fail(
                                c,
                                format!("re-run of an interrupted rekey restore: {}", r.line()),
                            );
                            return format!("absent; re-run failed ({})", r.exit());
                        }
                        let id = r
                            .json()
                            .and_then(|j| j["VolumeId"].as_str().map(str::to_string));
                        ("absent; re-run completed it", id)
                    }
                    [id] => ("complete", Some(id.clone())),
                    more => {
                        self.report
                            .fail(c, format!("one rekey restore made {} volumes", more.len()));
                        return format!("present {} times", more.len());
                    }
                };
                if let Some(id) = id {
                    let got = self.read_product_volume(c, REGION_A, &id, op.vol);
                    self.check_product(c, op.kind.name(), got, &src, op.vol);
                }
                state.to_string()
            }
            OpKind::CopyLocal | OpKind::CopyRemote => {
                let region = if op.kind == OpKind::CopyLocal {
                    REGION_A
                } else {
                    REGION_B
                };
                let found = self.snapshots_described(c, region, &op.tag);
                let (state, id) = match found.as_slice() {
                    [] => {
                        let args: Vec<&str> = op.run.args.iter().map(String::as_str).collect();
                        let r = self.cli.run(&args);
                        // Killed before it leased its source, the copy did not keep that
                        // snapshot: a later delete of it may have run (the operations go on
                        // after a kill). Its re-run then says the source is gone.
                        if r.code == Some(3) && r.stderr.contains("does not exist") {
                            return "not visible; its source was deleted before it leased it, re-run refused (exit 3)".into();
                        }
                        if r.is_bug() || !r.ok() {
                            self.report
                                .fail(c, format!("re-run of an interrupted copy: {}", r.line()));
                            return format!("not visible; re-run failed ({})", r.exit());
                        }
                        let j = r.json().unwrap_or(Value::Null);
                        let resumed = j["ChunksResumed"].as_u64().unwrap_or(0);
                        let copied = j["ChunksCopied"].as_u64().unwrap_or(0);
                        let after = self.snapshots_described(c, region, &op.tag);
                        if after.len() != 1 {
                            self.report.fail(c, format!("after the re-run of copy {}: {} snapshots with its description", op.tag, after.len()));
                        }
                        let state = if resumed > 0 {
                            format!(
                                "not visible; re-run resumed it ({resumed} chunks kept, {copied} copied)"
                            )
                        } else {
                            format!(
                                "not visible; re-run copied it from the start ({copied} chunks)"
                            )
                        };
                        (state, j["SnapshotId"].as_str().map(str::to_string))
                    }
                    [id] => ("complete".to_string(), Some(id.clone())),
                    more => {
                        self.report
                            .fail(c, format!("one copy made {} snapshots", more.len()));
                        return format!("present {} times", more.len());
                    }
                };
                if let Some(id) = id {
                    let got = self.read_snapshot(c, region, &id, op.vol);
                    self.check_product(c, op.kind.name(), got, &src, op.vol);
                }
                state
            }
        }
    }

    /// Every volume of both regions that is not attached gets attached once, and detached.
    fn attach_every_volume(&mut self, c: u32) {
        for region in [REGION_A, REGION_B] {
            for v in self.list(c, region, "volumes") {
                if v["State"] == "in-use" {
                    continue;
                }
                let Some(id) = v["VolumeId"].as_str().map(str::to_string) else {
                    continue;
                };
                self.scratch_n += 1;
                let dir = self.mnt(&format!("att{}", self.scratch_n));
                let _ = std::fs::create_dir_all(&dir);
                self.report.attach_checks += 1;
                match self.attach(region, &id, &dir) {
                    Ok(()) => self.detach(c, &dir),
                    Err(e) => {
                        self.report.volumes_not_attaching += 1;
                        self.report
                            .fail(c, format!("volume {id} ({region}) would not attach: {e}"));
                    }
                }
                let _ = std::fs::remove_dir(&dir);
            }
        }
    }

    /// Deletes the products of operations (every volume but the writers', every copy) and
    /// all but the newest snapshots of each writer volume. A snapshot that stays "in use"
    /// once every copy of it has been finished has a lease nothing will ever release.
    fn prune(&mut self, c: u32) {
        let writer_ids: Vec<String> = self.vols.iter().map(|v| lock(v).id.clone()).collect();
        for region in [REGION_A, REGION_B] {
            for v in self.list(c, region, "volumes") {
                let id = v["VolumeId"].as_str().unwrap_or_default().to_string();
                if region == REGION_A && writer_ids.contains(&id) {
                    continue;
                }
                self.must(c, &["--region", region, "volume", "delete", &id, "--yes"]);
            }
        }
        for s in self.list(c, REGION_B, "snapshots") {
            let id = s["SnapshotId"].as_str().unwrap_or_default().to_string();
            self.must(c, &["--region", REGION_B, "snapshot", "delete", &id]);
        }
        // Local snapshots: copies go; of the writers' own, the newest KEEP_SNAPSHOTS stay.
        let listed = self.list(c, REGION_A, "snapshots");
        let mut keep: HashMap<usize, usize> = HashMap::new();
        let mut to_delete = vec![];
        for s in listed.iter().rev() {
            let id = s["SnapshotId"].as_str().unwrap_or_default().to_string();
            let known = self.snaps.iter().position(|k| k.id == id);
            match known {
                Some(k) => {
                    let n = keep.entry(self.snaps[k].vol).or_insert(0);
                    *n += 1;
                    if *n > KEEP_SNAPSHOTS {
                        to_delete.push(id);
                    }
                }
                None => to_delete.push(id),
            }
        }
        for id in to_delete {
            if self.undeletable.contains(&id) {
                continue;
            }
            // Before it goes, a snapshot read earlier must still read the same.
            if let Some(k) = self.snaps.iter().position(|s| s.id == id)
                && let Some(before) = self.snaps[k].content.clone()
            {
                let vol = self.snaps[k].vol;
                if let Some(now) = self.read_snapshot(c, REGION_A, &id, vol)
                    && now != before
                {
                    self.report.snapshots_changed += 1;
                    self.report
                        .fail(c, format!("snapshot {id} changed since it was first read"));
                }
            }
            let r = self.cli.run(&["snapshot", "delete", &id]);
            if r.ok() {
                self.snaps.retain(|s| s.id != id);
            } else if r.code == Some(4) && r.stderr.contains("in use") {
                // Nothing runs now: a lease that still blocks the delete was not released
                // as stale.
                self.undeletable.insert(id.clone());
                self.report.undeletable_snapshots += 1;
                self.report
                    .fail(c, format!("snapshot {id} cannot be deleted: {}", r.line()));
            } else {
                self.report.fail(c, r.line());
            }
        }
    }

    /// Detaches everything, checks both pools once more, and makes sure that no daemon,
    /// mount or loop device is left.
    fn teardown(&mut self) {
        let c = self.report.cycles;
        // The snapshots that are left read as they did when first read (across every kill
        // since).
        let kept: Vec<(String, usize, Vec<Seen>)> = self
            .snaps
            .iter()
            .filter_map(|s| Some((s.id.clone(), s.vol, s.content.clone()?)))
            .collect();
        for (id, vol, before) in kept {
            if let Some(now) = self.read_snapshot(c, REGION_A, &id, vol)
                && now != before
            {
                self.report.snapshots_changed += 1;
                self.report
                    .fail(c, format!("snapshot {id} changed since it was first read"));
            }
        }
        for i in 0..self.vols.len() {
            if self.attached[i] {
                let dir = lock(&self.vols[i]).dir.clone();
                self.detach(c, &dir);
                self.attached[i] = false;
            }
        }
        wait_until(Duration::from_secs(10), || {
            daemons_of(&self.cfg.data_dir).is_empty()
        });
        if !self.vols.is_empty() {
            self.pool_check(c, REGION_A, "at the end, offline");
            self.pool_check(c, REGION_B, "at the end, offline");
        }
        let daemons = daemons_of(&self.cfg.data_dir);
        if !daemons.is_empty() {
            self.report.leftovers.push(format!("daemons {daemons:?}"));
            daemons.iter().for_each(|p| kill9(*p));
        }
        for m in mounts_under(&self.cfg.work) {
            self.report.leftovers.push(format!("mount {}", m.display()));
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for l in loops_under(&self.cfg.work)
            .into_iter()
            .chain(loops_under(&self.cfg.data_dir))
        {
            self.report.leftovers.push(format!("loop device {l}"));
            let _ = Command::new("losetup").args(["--detach", &l]).status();
        }
    }
}

/// Judges one block: `floor` is the generation fsynced before (0: none), `ceiling` the first
/// generation that must not be there, `issued` every generation written to it. Returns
/// None when it is right, else (fsynced data lost?, why).
pub fn judge(
    seen: &Seen,
    floor: u64,
    ceiling: u64,
    issued: Option<&BTreeSet<u64>>,
) -> Option<(bool, String)> {
    match seen {
        Seen::Garbage(why) => Some((
            floor > 0,
            format!("garbage: {why} (fsynced generation {floor})"),
        )),
        s => {
            let g = s.generation().unwrap_or(0);
            if g > 0 && !issued.is_some_and(|i| i.contains(&g)) {
                Some((floor > 0, format!("generation {g} was never issued for it")))
            } else if g < floor {
                Some((
                    true,
                    if g == 0 {
                        format!("reads zeros, but generation {floor} was fsynced")
                    } else {
                        format!("holds generation {g}, older than the fsynced {floor}")
                    },
                ))
            } else if g >= ceiling {
                Some((
                    false,
                    format!("holds generation {g}, written after it completed"),
                ))
            } else {
                None
            }
        }
    }
}

/// Reads `blocks` of a volume file with O_DIRECT.
fn read_blocks(path: &Path, blocks: &[u64], tag: u64) -> Result<Vec<Seen>, String> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut buf = page();
    blocks
        .iter()
        .map(|b| {
            f.read_exact_at(&mut buf.0, b * BLOCK)
                .map_err(|e| format!("read block {b} of {}: {e}", path.display()))?;
            Ok(decode(&buf.0, tag, *b))
        })
        .collect()
}
