//! Authenticated volumes (`volume create --integrity`) against an attacker who can write
//! the pool's files: each tampering is done directly in the pool while nothing runs, and
//! must be detected the next time the volume is used.
//!
//! What it checks, each on `attach` (reads of DIR/volume) and through ext4 on `mount`
//! (reads of a file whose volume block `filefrag` names):
//! - a flipped bit, an all-zero block, a block moved over another, an older ciphertext of
//!   the same block put back, and a block swapped between a volume and its clone each read
//!   as EIO (the other blocks still read back); `volume verify` exits 25 naming exactly the
//!   bad block; `IntegrityErrors` counts the bad reads; the daemon log names volume and block;
//! - the whole pool put back to an earlier copy: attach / mount refused with exit 26 ("rolled
//!   back", naming `--accept-rollback`), which then attaches and reads the old data;
//! - untampered volumes, their snapshots' restores and later writes to both read back and
//!   verify clean (no false positives), and a never-written block reads zeros whatever
//!   bytes its place in the pool holds.
//!
//! Needs FUSE (and for `mount`: root, loop devices, mkfs.ext4, filefrag); without them the
//! tests skip, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI), which makes them fail.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use common::mount::*;
use common::pool_peek::{self, BLOCKS_PER_CHUNK};
use common::{Out, str_field};

/// Exit code of `volume verify` when a block fails its MAC.
const EXIT_BAD_BLOCKS: i32 = 25;
/// Exit code of attach / mount of a volume whose pool is older than its anchor.
const EXIT_ROLLED_BACK: i32 = 26;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `attach`: item i is volume block `ATTACH_BLOCKS[i]` of DIR/volume.
    Attach,
    /// `mount --fs ext4`: item i is the one-block file `f<i>`.
    Mount,
}

/// Volume blocks of the items on `attach`: two neighbours and one in another chunk.
const ATTACH_BLOCKS: [u64; 3] = [5, 6, 3 * BLOCKS_PER_CHUNK + 17];

/// A volume attached or mounted; items are 4 KiB blocks of data the test writes and reads.
struct Opened<'a> {
    v: &'a VolEnv,
    mode: Mode,
    dir: PathBuf,
}

impl<'a> Opened<'a> {
    fn dir_of(v: &VolEnv, vol: &str, mode: Mode) -> PathBuf {
        v.dir(&format!("{mode:?}-{vol}").to_lowercase())
    }

    /// Runs attach or mount with `extra` flags, without checking the outcome.
    fn try_open(v: &VolEnv, vol: &str, mode: Mode, extra: &[&str]) -> Out {
        let dir = Self::dir_of(v, vol, mode);
        match mode {
            Mode::Attach => v.attach_run(vol, &dir, extra),
            Mode::Mount => v.mount_run(vol, &dir, "ext4", extra),
        }
    }

    #[track_caller]
    fn open_with(v: &'a VolEnv, vol: &str, mode: Mode, extra: &[&str]) -> Opened<'a> {
        let dir = Self::dir_of(v, vol, mode);
        match mode {
            Mode::Attach => {
                v.attach(vol, &dir, extra);
            }
            Mode::Mount => {
                v.mount_run(vol, &dir, "ext4", extra).ok();
                let m = mount_at(&dir).unwrap_or_else(|| panic!("{dir:?} is not mounted"));
                assert_eq!(m.fs_type, "ext4", "{dir:?}");
            }
        }
        Opened { v, mode, dir }
    }

    #[track_caller]
    fn open(v: &'a VolEnv, vol: &str, mode: Mode) -> Opened<'a> {
        Self::open_with(v, vol, mode, &[])
    }

    fn item_path(&self, item: usize) -> PathBuf {
        match self.mode {
            Mode::Attach => self.dir.join("volume"),
            Mode::Mount => self.dir.join(format!("f{item}")),
        }
    }

    /// Writes 4 KiB to the item in place, fsyncs; returns the volume block it lives in.
    #[track_caller]
    fn write(&self, item: usize, data: &[u8]) -> u64 {
        assert_eq!(data.len(), BLOCK as usize);
        let path = self.item_path(item);
        let f = OpenOptions::new()
            .write(true)
            .create(self.mode == Mode::Mount)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        let (off, block) = match self.mode {
            Mode::Attach => (ATTACH_BLOCKS[item] * BLOCK, ATTACH_BLOCKS[item]),
            Mode::Mount => (0, 0),
        };
        pwrite(&f, off, data);
        f.sync_all().expect("fsync");
        match self.mode {
            Mode::Attach => block,
            Mode::Mount => volume_block_of(&path),
        }
    }

    /// Reads the item's 4 KiB.
    fn read(&self, item: usize) -> std::io::Result<Vec<u8>> {
        let path = self.item_path(item);
        match self.mode {
            Mode::Attach => {
                // O_DIRECT: exactly this block is asked of the daemon, no readahead.
                let f = open_direct(&path);
                let mut b = AlignedBuf::new(BLOCK as usize);
                f.read_exact_at(b.as_mut_slice(), ATTACH_BLOCKS[item] * BLOCK)?;
                Ok(b.as_slice().to_vec())
            }
            Mode::Mount => std::fs::read(&path),
        }
    }

    #[track_caller]
    fn read_ok(&self, item: usize, want: &[u8], what: &str) {
        let got = self
            .read(item)
            .unwrap_or_else(|e| panic!("{what}: item {item} ({:?}): {e}", self.mode));
        assert_bytes(what, 0, &got, want);
    }

    #[track_caller]
    fn read_eio(&self, item: usize, what: &str) {
        match self.read(item) {
            Ok(b) => panic!(
                "{what}: item {item} ({:?}) read {} bytes (all zero: {}) instead of EIO",
                self.mode,
                b.len(),
                b.iter().all(|x| *x == 0)
            ),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{what}: {e}"),
        }
    }

    #[track_caller]
    fn close(self) {
        match self.mode {
            Mode::Attach => self.v.detach(&self.dir),
            Mode::Mount => self.v.unmount(&self.dir),
        }
    }
}

/// The volume block (4 KiB) holding the first block of `file` on a mounted ext4, from
/// `filefrag -v` (whose physical offsets count filesystem blocks).
#[track_caller]
fn volume_block_of(file: &std::path::Path) -> u64 {
    let out = sh_ok("filefrag", &["-v", &file.to_string_lossy()]);
    let bs: u64 = out
        .split(" blocks of ")
        .nth(1)
        .or_else(|| out.split(" block of ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no block size in filefrag output: {out}"));
    let phys: u64 = out
        .lines()
        .find(|l| l.trim_start().starts_with("0:"))
        .and_then(|l| l.split(':').nth(2))
        .and_then(|s| s.split("..").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no first extent in filefrag output: {out}"));
    let byte = phys * bs;
    assert_eq!(
        byte % BLOCK,
        0,
        "{file:?} does not start on a 4 KiB block: {out}"
    );
    byte / BLOCK
}

// ---- helpers ------------------------------------------------------------------------------

fn data(seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(BLOCK as usize)
}

/// A 64 MiB integrity volume named `name`; checks that describe says so.
#[track_caller]
fn new_volume(v: &VolEnv, name: &str) -> String {
    let vol = v.create(&["--size", "64M", "--integrity", "--name", name]);
    let d = v.describe_vol(&vol);
    assert_eq!(d["Integrity"], true, "a new --integrity volume: {d:#}");
    assert_eq!(d["IntegrityErrors"], 0, "a new --integrity volume: {d:#}");
    vol
}

#[track_caller]
fn integrity_errors(v: &VolEnv, vol: &str) -> u64 {
    let d = v.json(&["volume", "describe", vol, "--output", "json"]);
    d["IntegrityErrors"]
        .as_u64()
        .unwrap_or_else(|| panic!("no IntegrityErrors count in {d:#}"))
}

/// `snapshot create VOL` then `volume create --from-snapshot`; returns the clone's id.
#[track_caller]
fn clone_of(v: &VolEnv, vol: &str, name: &str) -> String {
    let s = v.json(&["snapshot", "create", vol]);
    let snap = str_field(&s, "SnapshotId");
    let clone = v.create(&["--from-snapshot", &snap, "--name", name]);
    let d = v.describe_vol(&clone);
    assert_eq!(
        d["Integrity"], true,
        "a restore of an integrity volume: {d:#}"
    );
    clone
}

/// True if a line of `text` names `vol` and has `block` as a separate number.
fn names_block(text: &str, vol: &str, block: u64) -> bool {
    let b = block.to_string();
    text.lines().any(|l| {
        l.contains(vol)
            && l.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|w| w == b)
    })
}

/// `volume verify VOL` is clean: exit 0, no bad block, the root checks.
#[track_caller]
fn assert_verifies(v: &VolEnv, vol: &str, what: &str) {
    let r = v.json(&["volume", "verify", vol, "--output", "json"]);
    assert_eq!(r["VolumeId"], vol, "{what}: {r:#}");
    assert_eq!(r["BadBlocks"], serde_json::json!([]), "{what}: {r:#}");
    assert_eq!(r["RootOk"], true, "{what}: {r:#}");
    assert!(
        r["BlocksChecked"].as_u64().is_some_and(|n| n > 0),
        "{what}: {r:#}"
    );
}

/// `volume verify VOL` finds exactly `bad`: exit 25, a line per bad block naming the
/// volume and the block, and the JSON report listing them.
#[track_caller]
fn assert_bad_blocks(v: &VolEnv, vol: &str, bad: &[u64], what: &str) {
    let out = v.run(&["volume", "verify", vol]);
    assert_eq!(
        out.code, EXIT_BAD_BLOCKS,
        "{what}: volume verify: stdout {:?} stderr {:?}",
        out.stdout, out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let text = format!("{}\n{}", out.stderr, out.stdout);
    for b in bad {
        assert!(
            names_block(&text, vol, *b),
            "{what}: volume verify names no bad block {b} of {vol}: {text}"
        );
    }
    let out = v.run(&["volume", "verify", vol, "--output", "json"]);
    assert_eq!(out.code, EXIT_BAD_BLOCKS, "{what}: {}", out.stderr);
    let r = out.json();
    assert_eq!(r["VolumeId"], vol, "{what}: {r:#}");
    assert_eq!(r["BadBlocks"], serde_json::json!(bad), "{what}: {r:#}");
    assert!(r["RootOk"].is_boolean(), "{what}: {r:#}");
}

/// After a bad read: the count grew and the daemon log names the volume and the block.
#[track_caller]
fn assert_reported(v: &VolEnv, vol: &str, block: u64, what: &str) {
    assert!(
        integrity_errors(v, vol) > 0,
        "{what}: IntegrityErrors of {vol} is still 0 after a bad read"
    );
    let log = v.daemon_log();
    assert!(
        names_block(&log, vol, block),
        "{what}: the daemon log names no bad block {block} of {vol}"
    );
}

/// One #[test] per mode for a test body taking the mode.
macro_rules! on_attach_and_mount {
    ($body:ident, $attach:ident, $mount:ident) => {
        #[test]
        fn $attach() {
            needs!(Fuse);
            $body(Mode::Attach);
        }
        #[test]
        fn $mount() {
            needs!(Fuse, Root, Loop, Tool("mkfs.ext4"), Tool("filefrag"));
            $body(Mode::Mount);
        }
    };
}

// ---- 1. one flipped bit -------------------------------------------------------------------

fn flipped_bit(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "flip");
    let (d0, d1) = (data(1), data(2));
    let o = Opened::open(&v, &vol, mode);
    let a = o.write(0, &d0);
    o.write(1, &d1);
    o.close();

    pool_peek::flip_bit(&v, &vol, a, 12_345);

    let o = Opened::open(&v, &vol, mode);
    o.read_eio(0, "a block with one bit flipped");
    o.read_ok(1, &d1, "the untouched block next to it");
    o.close();
    assert_reported(&v, &vol, a, "one bit flipped");
    assert_bad_blocks(&v, &vol, &[a], "one bit flipped");
}
on_attach_and_mount!(flipped_bit, flipped_bit_attach, flipped_bit_mount);

// ---- 2. a zeroed block --------------------------------------------------------------------

fn zeroed_block(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "zero");
    let (d0, d1) = (data(3), data(4));
    let o = Opened::open(&v, &vol, mode);
    let a = o.write(0, &d0);
    o.write(1, &d1);
    o.close();

    assert!(
        pool_peek::read_ct(&v, &vol, a).iter().any(|b| *b != 0),
        "the written block's ciphertext is already all zeros"
    );
    pool_peek::write_ct(&v, &vol, a, &[0; BLOCK as usize]);

    let o = Opened::open(&v, &vol, mode);
    o.read_eio(0, "a block whose ciphertext was zeroed");
    o.read_ok(1, &d1, "the untouched block");
    o.close();
    assert_reported(&v, &vol, a, "zeroed block");
    assert_bad_blocks(&v, &vol, &[a], "zeroed block");
}
on_attach_and_mount!(zeroed_block, zeroed_block_attach, zeroed_block_mount);

// ---- 3. a block moved over another --------------------------------------------------------

fn moved_block(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "move");
    let (d0, d1) = (data(5), data(6));
    let o = Opened::open(&v, &vol, mode);
    let x = o.write(0, &d0);
    let y = o.write(1, &d1);
    o.close();
    assert_ne!(x, y);

    let ct = pool_peek::read_ct(&v, &vol, x);
    pool_peek::write_ct(&v, &vol, y, &ct);

    let o = Opened::open(&v, &vol, mode);
    o.read_eio(1, "block Y holding block X's ciphertext");
    o.read_ok(0, &d0, "block X itself");
    o.close();
    assert_reported(&v, &vol, y, "moved block");
    assert_bad_blocks(&v, &vol, &[y], "moved block");
}
on_attach_and_mount!(moved_block, moved_block_attach, moved_block_mount);

// ---- 4. an older ciphertext of the same block put back ------------------------------------

fn replayed_block(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "replay");
    let o = Opened::open(&v, &vol, mode);
    let a = o.write(0, &data(7));
    o.close();
    let old = pool_peek::read_ct(&v, &vol, a);

    let o = Opened::open(&v, &vol, mode);
    let d_new = data(8);
    assert_eq!(o.write(0, &d_new), a, "the rewrite moved the block");
    o.close();
    assert_ne!(
        pool_peek::read_ct(&v, &vol, a),
        old,
        "the rewrite changed nothing"
    );
    pool_peek::write_ct(&v, &vol, a, &old);

    let o = Opened::open(&v, &vol, mode);
    o.read_eio(0, "a block holding its own older ciphertext");
    o.close();
    assert_reported(&v, &vol, a, "replayed block");
    assert_bad_blocks(&v, &vol, &[a], "replayed block");
}
on_attach_and_mount!(replayed_block, replayed_block_attach, replayed_block_mount);

// ---- 5. a block swapped between a volume and its clone ------------------------------------

fn swapped_with_clone(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "orig");
    let o = Opened::open(&v, &vol, mode);
    let a = o.write(0, &data(9));
    o.close();
    let clone = clone_of(&v, &vol, "clone");

    for (id, seed) in [(&vol, 10), (&clone, 11)] {
        let o = Opened::open(&v, id, mode);
        assert_eq!(
            o.write(0, &data(seed)),
            a,
            "{id}: the rewrite moved the block"
        );
        o.close();
    }
    let (ct_v, ct_c) = (
        pool_peek::read_ct(&v, &vol, a),
        pool_peek::read_ct(&v, &clone, a),
    );
    assert_ne!(ct_v, ct_c, "volume and clone hold the same ciphertext");
    pool_peek::write_ct(&v, &vol, a, &ct_c);
    pool_peek::write_ct(&v, &clone, a, &ct_v);

    for id in [&vol, &clone] {
        let o = Opened::open(&v, id, mode);
        o.read_eio(0, &format!("{id}: the other volume's ciphertext"));
        o.close();
        assert_reported(&v, id, a, "swapped with the clone");
        assert_bad_blocks(&v, id, &[a], "swapped with the clone");
    }
}
on_attach_and_mount!(
    swapped_with_clone,
    swapped_with_clone_attach,
    swapped_with_clone_mount
);

// ---- 6. the whole pool rolled back --------------------------------------------------------

fn pool_rolled_back(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "rb-vol");
    let (d_old, d_new) = (data(12), data(13));
    let o = Opened::open(&v, &vol, mode);
    o.write(0, &d_old);
    o.close();
    let aside = v.scratch().join("pool-aside");
    pool_peek::save_pool(&v, &aside);

    let o = Opened::open(&v, &vol, mode);
    o.write(0, &d_new);
    o.close();
    pool_peek::put_pool_back(&v, &aside);

    let dir = Opened::dir_of(&v, &vol, mode);
    let line = Opened::try_open(&v, &vol, mode, &[]).fails(EXIT_ROLLED_BACK);
    assert!(line.contains("rolled back"), "{line}");
    assert!(line.contains("--accept-rollback"), "{line}");
    assert!(
        line.contains(&vol) || line.contains("rb-vol"),
        "the refusal names no volume: {line}"
    );
    assert!(
        !is_mount_point(&dir),
        "{dir:?} is mounted after the refusal"
    );
    // verify checks the root against the anchor too.
    let out = v.run(&["volume", "verify", &vol, "--output", "json"]);
    assert_ne!(out.code, 0, "verify of a rolled-back pool: {}", out.stdout);
    let r = out.json();
    assert_eq!(r["RootOk"], false, "verify of a rolled-back pool: {r:#}");

    let o = Opened::open_with(&v, &vol, mode, &["--accept-rollback"]);
    o.read_ok(0, &d_old, "the rolled-back pool after --accept-rollback");
    o.close();
    // Accepting re-anchors: the next attach needs no flag.
    let o = Opened::open(&v, &vol, mode);
    o.read_ok(0, &d_old, "the accepted pool");
    o.close();
    assert_verifies(&v, &vol, "the accepted pool");
}
on_attach_and_mount!(
    pool_rolled_back,
    pool_rolled_back_attach,
    pool_rolled_back_mount
);

// ---- 7. nothing tampered: no false positive -----------------------------------------------

fn untampered(mode: Mode) {
    let v = VolEnv::new();
    let vol = new_volume(&v, "clean");
    let want: Vec<Vec<u8>> = (0..3).map(|i| data(20 + i)).collect();
    let o = Opened::open(&v, &vol, mode);
    for (i, d) in want.iter().enumerate() {
        o.write(i, d);
    }
    o.close();

    let o = Opened::open(&v, &vol, mode);
    for (i, d) in want.iter().enumerate() {
        o.read_ok(i, d, "untampered");
    }
    if mode == Mode::Attach {
        let f = open_direct(&o.dir.join("volume"));
        for off in [7 * BLOCK, 40 * MIB] {
            let mut b = AlignedBuf::new(BLOCK as usize);
            f.read_exact_at(b.as_mut_slice(), off).expect("read a hole");
            assert_zeros("a never-written block", off, b.as_slice());
        }
    }
    o.close();
    assert_verifies(&v, &vol, "untampered");
    assert_eq!(integrity_errors(&v, &vol), 0, "untampered");
    let db = pool_peek::open_meta(&v);
    for slot in pool_peek::slots_of(&db, &vol) {
        let rec = pool_peek::auth_record(&db, slot).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            rec.is_some_and(|r| !r.is_empty()),
            "slot {slot} of {vol} has no slot_auth row"
        );
    }
    drop(db);

    // A restore, then different writes to each of the two.
    let clone = clone_of(&v, &vol, "clean-clone");
    let o = Opened::open(&v, &clone, mode);
    for (i, d) in want.iter().enumerate() {
        o.read_ok(i, d, "the restore");
    }
    let c1 = data(30);
    o.write(1, &c1);
    o.close();
    let v2 = data(31);
    let o = Opened::open(&v, &vol, mode);
    o.write(2, &v2);
    o.close();

    let o = Opened::open(&v, &vol, mode);
    for (i, d) in [&want[0], &want[1], &v2].into_iter().enumerate() {
        o.read_ok(i, d, "the volume after its restore's writes");
    }
    o.close();
    let o = Opened::open(&v, &clone, mode);
    for (i, d) in [&want[0], &c1, &want[2]].into_iter().enumerate() {
        o.read_ok(i, d, "the restore after its own writes");
    }
    o.close();
    for id in [&vol, &clone] {
        assert_verifies(&v, id, "after snapshot, restore and writes");
        assert_eq!(integrity_errors(&v, id), 0, "{id}");
    }
}
on_attach_and_mount!(untampered, untampered_attach, untampered_mount);

/// A hole (a block of a chunk that was never written) reads zeros and verifies clean,
/// whatever bytes lie at its place in the pool's data file.
#[test]
fn a_hole_reads_zeros_whatever_its_bytes() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = new_volume(&v, "hole");
    let d0 = data(40);
    let o = Opened::open(&v, &vol, Mode::Attach);
    o.write(0, &d0);
    o.close();
    // Block 9 shares block 5's chunk, so it has a place in the data file.
    let hole = 9;
    pool_peek::write_ct(&v, &vol, hole, &data(41));

    let o = Opened::open(&v, &vol, Mode::Attach);
    let f = open_direct(&o.dir.join("volume"));
    let mut b = AlignedBuf::new(BLOCK as usize);
    f.read_exact_at(b.as_mut_slice(), hole * BLOCK)
        .expect("read of a never-written block");
    assert_zeros(
        "a never-written block with garbage in the pool",
        0,
        b.as_slice(),
    );
    o.read_ok(0, &d0, "the written block of the same chunk");
    drop(f);
    o.close();
    assert_verifies(&v, &vol, "a hole with garbage bytes");
    assert_eq!(integrity_errors(&v, &vol), 0);
}

// ---- the harness itself, on a plain volume ------------------------------------------------

/// The tampering reaches the right bytes: on a plain (unauthenticated) volume a bit flipped
/// in the pool garbles exactly the 16-byte XTS block that holds it and nothing else.
fn harness_reaches_the_block(mode: Mode) {
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "plain"]);
    let (d0, d1) = (data(50), data(51));
    let o = Opened::open(&v, &vol, mode);
    let a = o.write(0, &d0);
    o.write(1, &d1);
    o.close();

    // Bit 100 is in byte 12: the first AES block of the 4 KiB.
    pool_peek::flip_bit(&v, &vol, a, 100);

    let o = Opened::open(&v, &vol, mode);
    let got = o.read(0).expect("a plain volume reads tampered blocks");
    assert_ne!(&got[..16], &d0[..16], "the flipped bit changed nothing");
    assert_bytes("the rest of the tampered block", 16, &got[16..], &d0[16..]);
    o.read_ok(1, &d1, "the untouched block");
    o.close();
}
on_attach_and_mount!(
    harness_reaches_the_block,
    harness_reaches_the_block_attach,
    harness_reaches_the_block_mount
);
