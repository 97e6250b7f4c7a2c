//! Copies of authenticated (`--integrity`) snapshots: `snapshot copy --kms-key` and
//! `volume create --from-snapshot --kms-key` check every source block against its tag
//! before they decrypt it, and give the copy tags of its own under its new key (it verifies
//! clean, and reads the source's data). A source block changed in the pool stops the copy
//! (exit 25) and leaves no copy behind.
//!
//! Needs FUSE (attach); without it the tests skip, unless `CRYPTVOL_REQUIRE_MOUNT=1` (CI).

mod common;

use std::os::unix::fs::FileExt;

use common::mount::*;
use common::pool_peek;
use common::str_field;

const BLOCK: u64 = 4096;
/// Written blocks: two in the first chunk, one in the fourth.
const BLOCKS: [u64; 3] = [2, 3, 3 * 256 + 9];

fn pattern(block: u64) -> Vec<u8> {
    (0..BLOCK)
        .map(|i| (i as u8) ^ (block as u8).wrapping_mul(31) ^ 0x5c)
        .collect()
}

/// An integrity volume with `BLOCKS` written, and a snapshot of it. Each block is written
/// twice with an fsync between, so its data lies in its slot's second half (the pool's
/// alternate file): a copy that read only the first half would find the older data.
fn source(v: &VolEnv) -> (String, String) {
    let vol = v.create(&["--size", "64M", "--integrity", "--name", "src"]);
    let dir = v.dir("src");
    v.attach(&vol, &dir, &[]);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("volume"))
        .unwrap();
    for b in BLOCKS {
        f.write_all_at(&pattern(b ^ 0xff), b * BLOCK).unwrap();
    }
    f.sync_all().unwrap();
    for b in BLOCKS {
        f.write_all_at(&pattern(b), b * BLOCK).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    v.detach(&dir);
    let snap = str_field(&v.json(&["snapshot", "create", &vol]), "SnapshotId");
    (vol, snap)
}

/// Attaches `vol` and checks every written block reads back.
fn assert_reads_source(v: &VolEnv, vol: &str, name: &str) {
    let dir = v.dir(name);
    v.attach(vol, &dir, &[]);
    let f = std::fs::File::open(dir.join("volume")).unwrap();
    for b in BLOCKS {
        let mut got = vec![0u8; BLOCK as usize];
        f.read_exact_at(&mut got, b * BLOCK).unwrap();
        assert!(
            got == pattern(b),
            "{name}: block {b} differs from the source"
        );
    }
    drop(f);
    v.detach(&dir);
}

fn assert_verifies(v: &VolEnv, vol: &str) {
    let r = v.json(&["volume", "verify", vol, "--output", "json"]);
    assert_eq!(r["BadBlocks"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["RootOk"], true, "{r:#}");
}

#[test]
fn copies_and_rekeyed_restores_of_an_authenticated_snapshot_are_authenticated_and_verify() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (_vol, snap) = source(&v);
    let key = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "KeyId");

    let rekeyed = v.create(&["--from-snapshot", &snap, "--kms-key", &key, "--name", "rk"]);
    assert_eq!(v.describe_vol(&rekeyed)["Integrity"], true);
    assert_verifies(&v, &rekeyed);
    assert_reads_source(&v, &rekeyed, "rk");

    let copy = str_field(
        &v.json(&["snapshot", "copy", &snap, "--kms-key", &key]),
        "SnapshotId",
    );
    let from_copy = v.create(&["--from-snapshot", &copy, "--name", "fc"]);
    assert_eq!(v.describe_vol(&from_copy)["Integrity"], true);
    assert_verifies(&v, &from_copy);
    assert_reads_source(&v, &from_copy, "fc");
    // The copy's tags are its own: its blocks are another key's ciphertext.
    assert_ne!(
        pool_peek::read_ct(&v, &from_copy, BLOCKS[0]),
        pool_peek::read_ct(&v, &snap, BLOCKS[0])
    );
}

#[test]
fn a_tampered_source_block_stops_the_copy_and_leaves_nothing() {
    needs!(Fuse);
    let v = VolEnv::new();
    let (_vol, snap) = source(&v);
    let key = str_field(&v.json(&["kms", "create-key"])["KeyMetadata"], "KeyId");
    pool_peek::assert_pool_idle(&v);
    pool_peek::flip_bit(&v, &snap, BLOCKS[2], 77);
    let before = v.json(&["snapshot", "list", "--output", "json"]);

    let out = v.run(&["snapshot", "copy", &snap, "--kms-key", &key]);
    assert_eq!(
        out.code, 25,
        "stdout {:?} stderr {:?}",
        out.stdout, out.stderr
    );
    let err = out.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&BLOCKS[2].to_string()),
        "names the block: {err}"
    );

    let out = v.run(&[
        "volume",
        "create",
        "--from-snapshot",
        &snap,
        "--kms-key",
        &key,
    ]);
    assert_eq!(
        out.code, 25,
        "stdout {:?} stderr {:?}",
        out.stdout, out.stderr
    );
    let after = v.json(&["snapshot", "list", "--output", "json"]);
    assert_eq!(before, after, "no copy is left");
    let vols = v.json(&["volume", "list", "--output", "json"]);
    assert_eq!(
        vols["Volumes"].as_array().map(|a| a.len()),
        Some(1),
        "no volume is left: {vols:#}"
    );
}
