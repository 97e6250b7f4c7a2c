//! Archives keep what a chunk's ciphertext needs besides its bytes (moto's S3): the tweak
//! domain each chunk was written in, and an authenticated volume's block tags. An
//! authenticated volume's snapshot (blocks in both halves of its slots) archives, restores
//! lazily on another data dir, reads back and verifies; a plain volume restored from a
//! snapshot (its writes in its own domain) archives and restores exactly; a manifest of
//! format 1, as cryptvol wrote before domains, still restores.
//!
//! Needs FUSE and moto's server from the test venv; without them the tests skip unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` or `CI=true`.

mod common;

use std::path::Path;

use common::mount::*;
use common::store::*;
use common::str_field;
use serde_json::Value;

fn read_at(file: &Path, off: u64, len: usize) -> Vec<u8> {
    let f = std::fs::File::open(file).expect("open the volume");
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, off).expect("read the volume");
    buf
}

/// `volume verify VOL` is clean: no bad block and the root checks; returns the report.
#[track_caller]
fn assert_verifies(v: &VolEnv, envs: &[(&str, &str)], vol: &str, what: &str) -> Value {
    let r = v
        .run_env(&["volume", "verify", vol, "--output", "json"], envs)
        .ok()
        .json();
    assert_eq!(r["BadBlocks"], serde_json::json!([]), "{what}: {r:#}");
    assert_eq!(r["RootOk"], true, "{what}: {r:#}");
    r
}

/// Writes through one attachment: each write of `rounds` is fsynced before the next
/// (an overwrite after a commit goes into the block's other half).
fn write_rounds(v: &VolEnv, vol: &str, rounds: &[&[(u64, &[u8])]]) {
    let dir = v.dir(&format!("w-{vol}"));
    let file = v.attach(vol, &dir, &[]);
    let f = open_rw(&file);
    for writes in rounds {
        for (off, data) in *writes {
            pwrite(&f, *off, data);
        }
        f.sync_all().expect("fsync the volume");
    }
    drop(f);
    v.detach(&dir);
}

#[test]
fn an_authenticated_snapshot_with_blocks_in_both_halves_restores_lazily_and_verifies() {
    needs!(Fuse);
    let Some(s) = Store::new("tags") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let vol = a.create(&["--size", "16M", "--kms-key", &k.key, "--integrity"]);
    let mut rng = Rng::new(71);
    let mut want = rng.bytes(4 * MIB as usize);
    // Then, after a commit, 1.5 MiB across chunks 0 and 1 again: those blocks go into
    // their slots' second halves; and a block of chunk 3 alone.
    let over = rng.bytes(3 * MIB as usize / 2);
    let last = rng.bytes(4096);
    let (o1, o2) = (MIB / 2, 3 * MIB + 8192);
    write_rounds(&a, &vol, &[&[(0, &want)], &[(o1, &over), (o2, &last)]]);
    want[o1 as usize..][..over.len()].copy_from_slice(&over);
    want[o2 as usize..][..4096].copy_from_slice(&last);
    let alt = a.pool_dir().join("data-1024k.alt");
    assert!(
        disk_bytes(&alt) >= 3 * MIB / 2,
        "the overwrite did not go into the second halves ({} bytes of {alt:?} on disk)",
        disk_bytes(&alt)
    );

    // `snapshot create` archives an authenticated volume's snapshot too.
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    let done = wait_completed(&a, &s, &snap);
    assert_eq!(done["Archive"]["Chunks"], 4, "{done:#}");
    // Each object holds its chunk assembled: no object holds the first half alone.
    for (key, size) in s.chunk_objects() {
        assert_eq!(size, MIB, "{key}");
    }

    // Another data dir restores it lazily: the root already covers the chunks still in
    // the store.
    let b = machine(&s);
    let env = k.env();
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &snap], &env)
        .ok()
        .json();
    let rvol = str_field(&v, "VolumeId");
    assert_eq!(v["Integrity"], true, "{v:#}");
    assert_eq!(v["RemoteBytes"], 4 * MIB, "{v:#}");
    assert_verifies(&b, &env, &rvol, "a lazy restore before any fetch");
    // A snapshot of it archives from its remote rows: their records go into its manifest.
    let bs = str_field(
        &b.run_env(&["snapshot", "create", &rvol], &env).ok().json(),
        "SnapshotId",
    );
    let bd = wait_completed(&b, &s, &bs);
    assert_eq!(bd["Archive"]["ChunksUploaded"], 0, "{bd:#}");
    let original = want.clone();

    k.export();
    let dir = b.dir("m");
    let file = b.attach(&rvol, &dir, &[]);
    // Chunk 0 discarded whole while still in the store: it leaves the map and the root
    // (the next attach checks that root).
    {
        use nix::fcntl::{FallocateFlags, fallocate};
        let f = open_rw(&file);
        let punch = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        fallocate(&f, punch, 0, MIB as i64).expect("punch chunk 0");
        f.sync_all().unwrap();
        want[..MIB as usize].fill(0);
    }
    // One block of chunk 1 first (a partial fetch), then everything.
    let got = read_at(&file, MIB + 4096, 4096);
    assert_bytes(
        "one block",
        MIB + 4096,
        &got,
        &want[(MIB + 4096) as usize..][..4096],
    );
    let got = read_at(&file, 0, 4 * MIB as usize);
    assert_bytes("the restored volume", 0, &got, &want);
    // The clone writes in its own domain on top of fetched chunks.
    let f = open_rw(&file);
    let mine = rng.bytes(8192);
    pwrite(&f, 2 * MIB + 4096, &mine);
    f.sync_all().unwrap();
    drop(f);
    want[(2 * MIB + 4096) as usize..][..8192].copy_from_slice(&mine);
    assert_bytes(
        "after a write",
        0,
        &read_at(&file, 0, 4 * MIB as usize),
        &want,
    );
    b.detach(&dir);
    // Attached again, a fetched chunk it never wrote is no longer shared with anything:
    // a write still goes into a copy in the volume's own domain, never in place.
    let file = b.attach(&rvol, &dir, &[]);
    let f = open_rw(&file);
    let again = rng.bytes(4096);
    pwrite(&f, 3 * MIB + 16384, &again);
    f.sync_all().unwrap();
    drop(f);
    want[(3 * MIB + 16384) as usize..][..4096].copy_from_slice(&again);
    assert_bytes(
        "after a write once attached again",
        0,
        &read_at(&file, 0, 4 * MIB as usize),
        &want,
    );
    b.detach(&dir);
    let d = b.describe_vol(&rvol);
    assert_eq!(d["RemoteBytes"], 0, "{d:#}");
    assert_eq!(d["IntegrityErrors"], 0, "{d:#}");
    let r = assert_verifies(&b, &env, &rvol, "the fetched volume");
    assert_eq!(r["BlocksChecked"], 3 * 256, "{r:#}");
    let out = b.run(&["pool", "check"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);

    // A third data dir restores B's snapshot (archived from remote rows) and reads what
    // A wrote.
    let c = machine(&s);
    let v = c
        .run_env(&["volume", "create", "--from-snapshot", &bs], &env)
        .ok()
        .json();
    let cvol = str_field(&v, "VolumeId");
    let h = c.run_env(&["volume", "hydrate", &cvol], &env).ok().json();
    assert_eq!(h["RemoteBytes"], 0, "{h:#}");
    assert_verifies(&c, &env, &cvol, "a restore of the lazy volume's snapshot");
    let dir = c.dir("m");
    let file = c.attach(&cvol, &dir, &[]);
    assert_bytes(
        "the lazy volume's snapshot",
        0,
        &read_at(&file, 0, 4 * MIB as usize),
        &original,
    );
    c.detach(&dir);
}

#[test]
fn a_plain_restored_volumes_snapshot_keeps_its_domains_through_the_archive() {
    needs!(Fuse);
    let Some(s) = Store::new("domains") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let vol = a.create(&["--size", "16M", "--kms-key", &k.key]);
    let mut rng = Rng::new(72);
    let mut want = rng.bytes(4 * MIB as usize);
    write_volume(&a, &vol, &[(0, &want)]);
    let s1 = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &s1);
    // A clone here writes in its own tweak domain: a whole new chunk, and a block of a
    // chunk it shares with the snapshot (copied into its domain).
    let clone = a.create(&["--from-snapshot", &s1]);
    let whole = rng.bytes(MIB as usize);
    let block = rng.bytes(4096);
    write_volume(&a, &clone, &[(5 * MIB, &whole), (MIB + 12288, &block)]);
    want.resize(6 * MIB as usize, 0);
    want[5 * MIB as usize..].copy_from_slice(&whole);
    want[(MIB + 12288) as usize..][..4096].copy_from_slice(&block);
    let s2 = str_field(&snapshot_create(&a, &s, &clone, &[]), "SnapshotId");
    let done = wait_completed(&a, &s, &s2);
    assert_eq!(done["Archive"]["Chunks"], 5, "{done:#}");
    // The chunks the clone did not write are the same objects as the first archive's.
    assert_eq!(done["Archive"]["ChunksUploaded"], 2, "{done:#}");

    let b = machine(&s);
    let env = k.env();
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &s2], &env)
        .ok()
        .json();
    let rvol = str_field(&v, "VolumeId");
    k.export();
    let dir = b.dir("m");
    let file = b.attach(&rvol, &dir, &[]);
    let got = read_at(&file, 0, 6 * MIB as usize);
    assert_bytes("the restored clone", 0, &got, &want);
    b.detach(&dir);
    // Hydrated and attached again: the fetched slots kept their domain.
    let h = b.run_env(&["volume", "hydrate", &rvol], &env).ok().json();
    assert_eq!(h["RemoteBytes"], 0, "{h:#}");
    let file = b.attach(&rvol, &dir, &[]);
    assert_bytes(
        "after a reattach",
        0,
        &read_at(&file, 0, 6 * MIB as usize),
        &want,
    );
    b.detach(&dir);
}

/// A manifest of format 1 (re-sealed with the format 1 writer under the snapshot's own
/// key: a customer-provided one, which the test holds) still restores.
#[test]
fn a_format_1_manifest_still_restores() {
    use cryptvol::crypto::SecretBytes;
    use cryptvol::snapshot::archive::manifest;

    needs!(Fuse);
    let Some(s) = Store::new("v1") else {
        return;
    };
    let a = machine(&s);
    let ck = [0x5au8; 32];
    let kf = a.file(&ck);
    let kf = kf.to_string_lossy();
    let vol = a.create(&["--size", "16M", "--customer-key-file", &kf]);
    let want = Rng::new(73).bytes(3 * MIB as usize);
    let dir = a.dir("w");
    let file = a.attach(&vol, &dir, &["--customer-key-file", &kf]);
    let f = open_rw(&file);
    pwrite(&f, MIB, &want);
    f.sync_all().unwrap();
    drop(f);
    a.detach(&dir);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    let out = json(
        &a,
        &s,
        &["snapshot", "archive", &snap, "--customer-key-file", &kf],
    );
    assert_eq!(out["State"], "completed", "{out:#}");

    let key = manifest_key(&s, &snap);
    let v2 = s.moto.get_object(BUCKET, &key);
    assert_eq!(u16::from_le_bytes([v2[12], v2[13]]), manifest::FORMAT_V2);
    let head = manifest::read_header(&v2).unwrap();
    let dk = cryptvol::volume::lifecycle::data_key(
        &head.volume,
        None,
        Some(&SecretBytes::new(ck.to_vec())),
    )
    .unwrap();
    let (h, entries) = manifest::open(&v2, &snap, &dk).unwrap();
    assert!(entries.iter().all(|e| e.domain == 0 && e.record.is_none()));
    let v1 = manifest::seal_v1(&h, &entries, &dk);
    assert_eq!(u16::from_le_bytes([v1[12], v1[13]]), manifest::FORMAT_V1);
    s.moto.put_object(BUCKET, &key, &v1);

    let b = machine(&s);
    let v = json(
        &b,
        &s,
        &[
            "volume",
            "create",
            "--from-snapshot",
            &snap,
            "--customer-key-file",
            &kf,
        ],
    );
    let rvol = str_field(&v, "VolumeId");
    assert_eq!(v["RemoteBytes"], 3 * MIB, "{v:#}");
    // The region daemon the attach starts reads the store with the store's credentials.
    // SAFETY: nextest runs each test in its own process; nothing else reads the
    // environment concurrently here.
    unsafe {
        for (k, v) in s.env() {
            std::env::set_var(k, v);
        }
    }
    let dir = b.dir("m");
    let file = b.attach(&rvol, &dir, &["--customer-key-file", &kf]);
    assert_bytes(
        "a restore from a format 1 manifest",
        MIB,
        &read_at(&file, MIB, want.len()),
        &want,
    );
    b.detach(&dir);
}

/// Another data dir with its own store (prefix `dst`) and KMS served, a user of its own
/// with a key and an access key: where a copy is pushed.
struct Other {
    v: VolEnv,
    url: String,
    key: String,
    id: String,
    secret: String,
    kms: common::server::KmsServer,
}

impl Other {
    fn new(s: &Store) -> Other {
        let url = format!("s3://{BUCKET}/dst");
        let v = VolEnv::uninit();
        json(
            &v,
            s,
            &[
                "init",
                "--snapshot-store",
                &url,
                "--s3-endpoint",
                &s.moto.endpoint,
            ],
        );
        let user = v.create_user("pusher");
        let key = str_field(
            &v.json(&["kms", "create-key", "--user", &user])["KeyMetadata"],
            "Arn",
        );
        let ak = v.json(&["iam", "create-access-key", "--user-name", "pusher"]);
        let (id, secret) = (
            str_field(&ak["AccessKey"], "AccessKeyId"),
            str_field(&ak["AccessKey"], "SecretAccessKey"),
        );
        v.add_secret(secret.as_bytes());
        let kms = common::server::KmsServer::start(&v);
        Other {
            v,
            url,
            key,
            id,
            secret,
            kms,
        }
    }

    fn creds(&self) -> [(&str, &str); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
    }

    /// `snapshot copy SNAP` run on `a`, pushed into this data dir's store under its key.
    fn push(&self, a: &VolEnv, s: &Store, snap: &str) -> common::Out {
        a.run_env(
            &[
                "snapshot",
                "copy",
                snap,
                "--destination-region",
                "local-1",
                "--destination-snapshot-store",
                &self.url,
                "--destination-s3-endpoint",
                &s.moto.endpoint,
                "--destination-kms-endpoint",
                &self.kms.endpoint,
                "--kms-key",
                &self.key,
            ],
            &self.creds(),
        )
    }
}

/// A copy of an authenticated snapshot pushed into another data dir's store, under that
/// data dir's key: every block of the source checked against its tag, decrypted in its
/// domain, and given a new tag under the new key; restored there, it reads back and
/// verifies.
#[test]
fn a_copy_of_an_authenticated_snapshot_into_another_store_gets_tags_under_its_key() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "16M", "--integrity"]);
    let mut rng = Rng::new(74);
    let mut want = rng.bytes(3 * MIB as usize);
    let over = rng.bytes(MIB as usize);
    write_rounds(&a, &vol, &[&[(0, &want)], &[(MIB / 2, &over)]]);
    want[(MIB / 2) as usize..][..over.len()].copy_from_slice(&over);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &snap);

    let o = Other::new(&s);
    let copied = o.push(&a, &s, &snap).ok().json();
    assert_eq!(copied["State"], "completed", "{copied:#}");
    let new = str_field(&copied, "SnapshotId");

    // B restores it with its own credentials (its key's KMS is the one the copy names).
    let (b, creds) = (&o.v, o.creds());
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &new], &creds)
        .ok()
        .json();
    let bvol = str_field(&v, "VolumeId");
    assert_eq!(v["Integrity"], true, "{v:#}");
    assert_eq!(v["RemoteBytes"], 3 * MIB, "{v:#}");
    let h = b.run_env(&["volume", "hydrate", &bvol], &creds).ok().json();
    assert_eq!(h["RemoteBytes"], 0, "{h:#}");
    let r = assert_verifies(b, &creds, &bvol, "the copy, restored");
    assert_eq!(r["BlocksChecked"], 3 * 256, "{r:#}");
    // SAFETY: nextest runs each test in its own process; nothing else reads the
    // environment concurrently here.
    unsafe {
        for (k, v) in creds {
            std::env::set_var(k, v);
        }
    }
    let dir = b.dir("m");
    let file = b.attach(&bvol, &dir, &[]);
    assert_bytes(
        "the copy, restored",
        0,
        &read_at(&file, 0, want.len()),
        &want,
    );
    b.detach(&dir);
}

/// A block whose ciphertext no longer matches its tag (changed in the pool before the
/// archive read it: the archive carries ciphertext and tags as they are) stops a copy
/// before it re-encrypts that block: exit 25, naming the snapshot and the chunk, and the
/// destination gets no snapshot.
#[test]
fn a_source_block_that_fails_its_tag_stops_a_copy_with_exit_25() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "16M", "--integrity"]);
    let data = Rng::new(75).bytes(2 * MIB as usize);
    write_rounds(&a, &vol, &[&[(0, &data)]]);
    common::pool_peek::flip_bit(&a, &vol, 256 + 44, 1000);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &snap);

    let o = Other::new(&s);
    let err = o.push(&a, &s, &snap).fails(25);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&snap) && err.contains("chunk 1") && err.contains("block 300"),
        "{err}"
    );
    // It says what to do about a source snapshot, not about a volume.
    assert!(
        err.contains("copy another snapshot") && !err.contains("restore it from a snapshot"),
        "{err}"
    );
    let manifests = s.moto.objects(BUCKET, "dst/snapshots/");
    assert!(manifests.is_empty(), "{manifests:?}");
}
