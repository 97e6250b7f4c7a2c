//! Format compatibility: today's cryptvol opens and reads the data dir an earlier version
//! wrote (tests/fixtures/v1/, made by tests/fixtures/make-v1.sh), every file of it parses
//! byte for byte as docs/formats.md describes (an independent reader in
//! formats/reader.rs), and damaged or newer files are refused with the right error.
//!
//! Each test works on its own copy of the fixture; the committed files are never touched.

mod common;

#[path = "formats/doc_integrity.rs"]
mod doc_integrity;
#[path = "formats/doc_kms.rs"]
mod doc_kms;
#[path = "formats/doc_pool.rs"]
mod doc_pool;
#[path = "formats/doc_wire.rs"]
mod doc_wire;
#[path = "formats/reader.rs"]
mod reader;
#[path = "formats/refusals.rs"]
mod refusals;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::mount::VolEnv;
use common::{fileb, str_field};
use serde_json::Value;

pub const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1");

/// What fixture.json says the fixture holds.
pub struct Ids {
    pub key_id: String,
    pub alias: String,
    pub volume: String,
    pub snapshot: String,
    pub user: String,
    pub access_key_id: String,
    pub plaintext: String,
}

pub fn ids() -> Ids {
    let v: Value =
        serde_json::from_slice(&std::fs::read(format!("{FIXTURE}/fixture.json")).unwrap()).unwrap();
    let s = |k: &str| str_field(&v, k);
    assert_eq!(
        v["blob_context"],
        serde_json::json!({"purpose": "fixture-v1"})
    );
    Ids {
        key_id: s("key_id"),
        alias: s("alias"),
        volume: s("volume_id"),
        snapshot: s("snapshot_id"),
        user: s("user"),
        access_key_id: s("access_key_id"),
        plaintext: s("blob_plaintext"),
    }
}

/// A temp dir holding a copy of the fixture's data dir, with the modes cryptvol gave its
/// files (git keeps none): 0700 directories, 0600 files, 0644 for the two public JSON
/// files, 0400 for a sealed audit log (one with a digest).
pub fn fixture() -> VolEnv {
    let v = VolEnv::uninit();
    copy_dir(&Path::new(FIXTURE).join("data"), &v.data);
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
            continue;
        }
        std::fs::copy(&src, &dst).unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let sealed =
            name.ends_with(".jsonl") && from.join(name.replace(".jsonl", ".digest.json")).exists();
        let mode = if sealed {
            0o400
        } else if name == "account.json" || name == "region.json" {
            0o644
        } else {
            0o600
        };
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

/// `LINE\n` repeated, cut at `len` bytes (what `yes LINE | head -c len` wrote).
fn repeated(line: &str, len: usize) -> Vec<u8> {
    format!("{line}\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

pub const VOLUME_SIZE: usize = 128 << 10;

/// The volume as the snapshot holds it: 96 KiB of text, then zeros.
pub fn snapshot_content() -> Vec<u8> {
    let mut v = repeated("cryptvol fixture v1 snapshot", 96 << 10);
    v.resize(VOLUME_SIZE, 0);
    v
}

/// The volume now: the snapshot's content with the block at 80 KiB rewritten.
pub fn volume_content() -> Vec<u8> {
    let mut v = snapshot_content();
    v[80 << 10..84 << 10].copy_from_slice(&repeated("cryptvol fixture v1 volume", 4096));
    v
}

#[test]
fn v1_keys_aliases_and_blob_still_work() {
    let (v, ids) = (fixture(), ids());
    let meta = v.json(&["kms", "describe-key", "--key-id", &ids.alias])["KeyMetadata"].clone();
    assert_eq!(meta["KeyId"], ids.key_id.as_str());
    assert_eq!(meta["KeyState"], "Enabled");
    assert_eq!(meta["Description"], "format fixture v1");
    let aliases = v.json(&["kms", "list-aliases"]);
    assert!(
        aliases["Aliases"].as_array().unwrap().iter().any(
            |a| a["AliasName"] == ids.alias.as_str() && a["TargetKeyId"] == ids.key_id.as_str()
        ),
        "{aliases:#}"
    );
    let blob = Path::new(FIXTURE).join("blob.bin");
    let out = v.path("plain.out");
    v.ok(&[
        "kms",
        "decrypt",
        "--ciphertext-blob",
        &fileb(&blob),
        "--encryption-context",
        "purpose=fixture-v1",
        "--plaintext-out",
        &out.to_string_lossy(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), ids.plaintext.as_bytes());
    // The wrong context must fail: the blob is really checked.
    v.fail(
        &[
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &fileb(&blob),
            "--encryption-context",
            "purpose=other",
        ],
        5,
    );
    // And a new blob made today still opens.
    let b = v.encrypt(&ids.alias, b"today", Some("a=b"));
    assert_eq!(v.decrypt(&b, Some("a=b")), b"today");
}

#[test]
fn v1_identities_and_usage_are_read() {
    let (v, ids) = (fixture(), ids());
    let keys = v.json(&["iam", "list-access-keys", "--user-name", &ids.user]);
    let list = keys["AccessKeyMetadata"]
        .as_array()
        .expect("AccessKeyMetadata");
    assert_eq!(list.len(), 1, "{keys:#}");
    assert_eq!(list[0]["AccessKeyId"], ids.access_key_id.as_str());
    assert_eq!(list[0]["Status"], "Active");
    let usage = v.json(&["kms", "usage", "--month", "2026-12"]);
    let k = &usage["Keys"][0];
    assert!(
        k["KeyId"].as_str().unwrap().ends_with(&ids.key_id),
        "{usage:#}"
    );
    assert_eq!(k["Requests"]["Encrypt"], 1, "{usage:#}");
    assert_eq!(k["Requests"]["CreateKey"], 1, "{usage:#}");
}

#[test]
fn v1_audit_trail_verifies_and_is_searchable() {
    let v = fixture();
    let report = v.json(&["audit", "verify"]);
    assert_eq!(report["Valid"], true, "{report:#}");
    let enc = v.lookup(&["--event-name", "Encrypt"]);
    assert_eq!(enc.len(), 1, "{enc:?}");
    assert_eq!(
        enc[0]["requestParameters"]["encryptionContext"]["purpose"],
        "fixture-v1"
    );
    // Appending today continues the old chain.
    v.ok(&["kms", "list-keys"]);
    assert_eq!(v.json(&["audit", "verify"])["Valid"], true);
}

#[test]
fn v1_pool_checks_clean() {
    let v = fixture();
    let r = v.json(&["pool", "check"]);
    assert_eq!(r["Clean"], true, "{r:#}");
    assert_eq!(r["Volumes"], 1);
    assert_eq!(r["Snapshots"], 1);
    assert_eq!(r["ChunkSizes"][0]["ChunkSize"], 65536);
    assert_eq!(r["ChunkSizes"][0]["SlotsInUse"], 3);
}

#[test]
fn v1_volume_and_snapshot_read_back_byte_for_byte() {
    needs!(Fuse);
    let (v, ids) = (fixture(), ids());
    let d = v.describe_vol(&ids.volume);
    assert_eq!(d["SizeBytes"], VOLUME_SIZE as u64, "{d:#}");
    let dir = v.dir("vol");
    let file = v.attach(&ids.volume, &dir, &[]);
    assert!(
        std::fs::read(&file).unwrap() == volume_content(),
        "the volume's content changed"
    );
    v.detach(&dir);
    // The snapshot, through a copy-on-write restore of it.
    let restored = v.create(&["--from-snapshot", &ids.snapshot, "--name", "restored"]);
    let dir = v.dir("snap");
    let file = v.attach(&restored, &dir, &[]);
    assert!(
        std::fs::read(&file).unwrap() == snapshot_content(),
        "the snapshot's content changed"
    );
    v.detach(&dir);
    v.assert_pool_clean(reader::REGION);
}

/// A header written today is format 2 (seven fields, the last the KMS endpoint: empty for
/// this data dir's KMS), byte for byte as docs/formats.md says; the fixture's format-1
/// header beside it still reads, and a resize rewrites it as format 2 with the same key.
#[test]
fn v3_volume_header_beside_a_v1_one() {
    use redb::{ReadableDatabase, TableDefinition};
    const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
    let (v, ids) = (fixture(), ids());
    let today = v.create(&[
        "--size",
        "128K",
        "--chunk-size",
        "64K",
        "--name",
        "today",
        "--kms-key",
        &ids.alias,
    ]);
    let rows = || -> std::collections::BTreeMap<String, Vec<u8>> {
        let db = redb::Database::open(v.data.join("regions/local-1/pool/meta.redb")).unwrap();
        let r = db.begin_read().unwrap();
        let t = r.open_table(VOLUMES).unwrap();
        [&ids.volume, &today]
            .into_iter()
            .map(|k| {
                (
                    k.clone(),
                    t.get(k.as_str()).unwrap().unwrap().value().to_vec(),
                )
            })
            .collect()
    };
    let before = rows();
    let old = reader::parse_record(&before[&ids.volume], b"CVVOLHDR", 22, 6);
    let new = reader::parse_record_version(&before[&today], b"CVVOLHDR", 3, 22, 8);
    assert_eq!(new.fixed[0], 1, "a KMS data key");
    assert_eq!(new.fields[0], today.as_bytes());
    assert_eq!(new.fields[3], b"today");
    assert!(new.fields[4].ends_with(ids.key_id.as_bytes()));
    assert_eq!(new.fields[6], b"", "this data dir's KMS: no endpoint");
    assert_eq!(&new.fixed[2..6], &[0; 4]);
    // The key check, computed as "Volume header" says from the data key in the blob.
    let files = reader::Files {
        data: v.data.clone(),
    };
    let blob = reader::parse_blob(new.fields[5]);
    let material = files.version_material(&ids.key_id, blob.key_version);
    let dek = reader::open_blob(&blob, &material, &[("cryptvol:lineage", &today)])
        .expect("the data key opens with the lineage context");
    let check_key = reader::derive(reader::CTX_DATA_KEY_CHECK, &[&dek]);
    assert_eq!(
        new.fields[7],
        blake3::keyed_hash(&check_key, today.as_bytes()).as_bytes(),
        "the key check"
    );
    assert_eq!(v.describe_vol(&today)["KeyCheck"], true);
    // The v1 volume reads (describe; it has no key check), and a resize writes its header
    // as format 3 with everything else unchanged and still no key check.
    assert_eq!(v.describe_vol(&ids.volume)["SizeBytes"], VOLUME_SIZE as u64);
    assert_eq!(v.describe_vol(&ids.volume)["KeyCheck"], false);
    v.ok(&["volume", "resize", &ids.volume, "--size", "256K"]);
    let after = rows();
    let resized = reader::parse_record_version(&after[&ids.volume], b"CVVOLHDR", 3, 22, 8);
    assert_eq!(resized.fields[..6], old.fields[..6]);
    assert_eq!(resized.fields[6], b"");
    assert_eq!(
        resized.fields[7], b"",
        "an old volume stays without a key check"
    );
    assert_eq!(reader::le64(resized.fixed, 6), 256 << 10);
    v.assert_pool_clean(reader::REGION);
}
