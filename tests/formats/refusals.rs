//! Damaged and newer files: a copy of the fixture with one byte changed is refused with
//! the specific error, "damaged" (exit 12) naming the file or record, or for a format
//! version above the one this cryptvol reads, "upgrade cryptvol" (exit 13), never
//! "damaged". Reserved bytes that are not zero are damage.

use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, TableDefinition};

use super::common::mount::VolEnv;
use super::common::{assert_one_error_line, fileb};
use super::doc_pool::{META, REFS, SNAPSHOTS, VOLUMES};
use super::{FIXTURE, fixture, ids};

const DAMAGED: i32 = 12;
const NEWER: i32 = 13;

fn region(v: &VolEnv) -> PathBuf {
    v.data.join("regions/local-1")
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Changes one row of a `&str → bytes` table of the pool; `reseal` recomputes the blake3
/// checksum at the end, as a writer would have.
fn edit_record(
    v: &VolEnv,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    reseal: bool,
    f: impl FnOnce(&mut Vec<u8>),
) {
    let db = redb::Database::open(region(v).join("pool/meta.redb")).unwrap();
    let mut b = {
        let r = db.begin_read().unwrap();
        let t = r.open_table(table).unwrap();
        t.get(key).unwrap().expect("the row").value().to_vec()
    };
    f(&mut b);
    if reseal {
        let n = b.len() - 32;
        let sum = *blake3::hash(&b[..n]).as_bytes();
        b[n..].copy_from_slice(&sum);
    }
    let w = db.begin_write().unwrap();
    w.open_table(table)
        .unwrap()
        .insert(key, b.as_slice())
        .unwrap();
    w.commit().unwrap();
}

/// A command that reads the pool: redb rewrites its file header whenever a database is
/// opened, so `meta.redb` changes even when nothing is written; the error contract is
/// checked without the unchanged-data-dir check of `Env::fail`.
#[track_caller]
fn pool_fail(v: &VolEnv, args: &[&str], code: i32) -> String {
    v.run(args).fails(code)
}

/// A command that prints its report and then fails with one error line.
#[track_caller]
fn report_fail(v: &VolEnv, args: &[&str], code: i32) -> String {
    let out = v.run(args);
    assert_eq!(out.code, code, "{out:?}");
    assert_one_error_line(&args.join(" "), &out.stderr);
    out.stderr.trim_end().to_string()
}

#[track_caller]
fn says(line: &str, parts: &[&str]) {
    for p in parts {
        assert!(line.contains(p), "{p:?} is not in: {line}");
    }
}

#[track_caller]
fn says_newer(line: &str, what: &str) {
    says(
        line,
        &[
            what,
            "was written by a newer cryptvol (format version 2; this one reads 1): upgrade cryptvol",
        ],
    );
    assert!(
        !line.contains("damaged") && !line.contains("corrupt"),
        "{line}"
    );
}

#[test]
fn keystore_damaged_reserved_and_newer() {
    let v = fixture();
    let ks = region(&v).join("keystore.cvks");
    let good = std::fs::read(&ks).unwrap();
    let list = ["kms", "list-keys"];

    edit(&ks, |b| {
        let n = b.len();
        b[n - 20] ^= 1;
    });
    says(
        &v.fail(&list, DAMAGED),
        &["keystore.cvks is damaged", "altered"],
    );

    std::fs::write(&ks, &good).unwrap();
    edit(&ks, |b| b[11] = 1);
    says(
        &v.fail(&list, DAMAGED),
        &[
            "keystore.cvks is damaged",
            "reserved bytes 10..12 are not zero",
        ],
    );

    std::fs::write(&ks, &good).unwrap();
    edit(&ks, |b| b[8] = 2);
    says_newer(&v.fail(&list, NEWER), "keystore.cvks");

    std::fs::write(&ks, &good).unwrap();
    v.ok(&list);
}

#[test]
fn blob_damaged_and_newer() {
    let v = fixture();
    let good = std::fs::read(format!("{FIXTURE}/blob.bin")).unwrap();
    let decrypt = |b: &[u8]| {
        let p = v.file(b);
        let args = [
            "kms",
            "decrypt",
            "--ciphertext-blob",
            &fileb(&p),
            "--encryption-context",
            "purpose=fixture-v1",
        ]
        .map(String::from);
        v.run(&args.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    };
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 17] ^= 1; // the last ciphertext byte
    let line = decrypt(&bad).fails(5);
    says(&line, &["InvalidCiphertextException", "altered"]);

    let mut newer = good.clone();
    newer[3] = 2;
    // The KMS answers InvalidCiphertextException (exit 5), as AWS would; the line says why.
    let line = decrypt(&newer).fails(5);
    says_newer(&line, "the ciphertext blob");
    assert_eq!(decrypt(&good).code, 0);
}

#[test]
fn volume_header_damaged_reserved_and_newer() {
    let (v, ids) = (fixture(), ids());
    let describe = ["volume", "describe", ids.volume.as_str()];

    // A byte of the name changed: the checksum no longer matches.
    edit_record(&v, VOLUMES, &ids.volume, false, |b| b[80] ^= 0x20);
    says(
        &pool_fail(&v, &describe, DAMAGED),
        &[
            &format!("the volume header of {} is damaged", ids.volume),
            "checksum",
        ],
    );
    edit_record(&v, VOLUMES, &ids.volume, false, |b| b[80] ^= 0x20);
    v.ok(&describe);

    // A reserved byte set, with a checksum that matches: still refused.
    edit_record(&v, VOLUMES, &ids.volume, true, |b| b[13] = 1);
    says(
        &pool_fail(&v, &describe, DAMAGED),
        &[&ids.volume, "damaged", "reserved bytes 12..16 are not zero"],
    );
    edit_record(&v, VOLUMES, &ids.volume, true, |b| b[13] = 0);
    v.ok(&describe);

    // Formats 3 and 4 are today's; 5 is newer.
    edit_record(&v, VOLUMES, &ids.volume, false, |b| b[8] = 5);
    says(
        &pool_fail(&v, &describe, NEWER),
        &[
            &format!("the volume header of {}", ids.volume),
            "was written by a newer cryptvol (format version 5; this one reads 1–4): upgrade cryptvol",
        ],
    );
}

#[test]
fn snapshot_record_damaged_and_newer() {
    let (v, ids) = (fixture(), ids());
    let describe = ["snapshot", "describe", ids.snapshot.as_str()];
    edit_record(&v, SNAPSHOTS, &ids.snapshot, false, |b| b[40] ^= 1);
    says(
        &pool_fail(&v, &describe, DAMAGED),
        &[
            &format!("the snapshot record of {} is damaged", ids.snapshot),
            "checksum",
        ],
    );
    edit_record(&v, SNAPSHOTS, &ids.snapshot, false, |b| b[40] ^= 1);
    v.ok(&describe);
    edit_record(&v, SNAPSHOTS, &ids.snapshot, false, |b| b[8] = 2);
    says_newer(
        &pool_fail(&v, &describe, NEWER),
        &format!("the snapshot record of {}", ids.snapshot),
    );
    // A listing cannot name the record, but says the same.
    says_newer(
        &pool_fail(&v, &["snapshot", "list"], NEWER),
        "snapshot record",
    );
}

#[test]
fn pool_damaged_and_newer() {
    let v = fixture();
    let path = region(&v).join("pool/meta.redb");
    {
        let db = redb::Database::open(&path).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(REFS)
            .unwrap()
            .insert((16u8, 0u64), 7u32)
            .unwrap();
        w.commit().unwrap();
    }
    let line = report_fail(&v, &["pool", "check"], 21);
    says(&line, &["the pool is damaged", "leaked-reference"]);
    {
        let db = redb::Database::open(&path).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(META).unwrap().insert("format", 2u64).unwrap();
        w.commit().unwrap();
    }
    says_newer(&pool_fail(&v, &["volume", "list"], NEWER), "meta.redb");
    says_newer(&pool_fail(&v, &["pool", "check"], NEWER), "meta.redb");
}

#[test]
fn json_files_damaged_and_newer() {
    let v = fixture();
    let data = v.data.clone();
    let cases: [(PathBuf, &[&str]); 3] = [
        (
            data.join("regions/local-1/region.json"),
            &["kms", "list-keys"],
        ),
        (data.join("iam.json"), &["iam", "list-users"]),
        (data.join("regions/local-1/usage.json"), &["kms", "usage"]),
    ];
    for (path, args) in cases {
        let good = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // A byte changed: a brace becomes a letter.
        edit(&path, |b| b[0] = b'x');
        says(&v.fail(args, DAMAGED), &[&name, "damaged"]);
        // A newer version, with a field this cryptvol does not know.
        let mut j: serde_json::Value = serde_json::from_slice(&good).unwrap();
        j["format"] = 2.into();
        j["added_in_format_2"] = true.into();
        std::fs::write(&path, serde_json::to_vec(&j).unwrap()).unwrap();
        says_newer(&v.fail(args, NEWER), &name);
        std::fs::write(&path, &good).unwrap();
        v.ok(args);
    }
}

#[test]
fn audit_trail_damaged_and_newer_digest() {
    let v = fixture();
    let dir = region(&v).join("audit");
    let log = dir.join("20261201-000000000001.jsonl");
    let digest = dir.join("20261201-000000000001.digest.json");
    assert!(log.exists() && digest.exists(), "the fixture's sealed log");
    let good = std::fs::read(&log).unwrap();
    // "CreateKey" → "CreateKez" in the first event.
    let at = good.windows(9).position(|w| w == b"CreateKey").unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    edit(&log, |b| b[at + 8] = b'z');
    let line = report_fail(&v, &["audit", "verify"], 19);
    says(
        &line,
        &[
            "the audit trail fails verification",
            "20261201-000000000001.jsonl",
        ],
    );
    std::fs::write(&log, &good).unwrap();
    std::fs::set_permissions(&log, std::os::unix::fs::PermissionsExt::from_mode(0o400)).unwrap();
    v.ok(&["audit", "verify"]);

    let d = std::fs::read_to_string(&digest).unwrap();
    std::fs::write(
        &digest,
        d.replace("\"digestVersion\":1", "\"digestVersion\":2"),
    )
    .unwrap();
    let line = report_fail(&v, &["audit", "verify"], 19);
    says(&line, &["digestVersion is 2", "upgrade cryptvol"]);
}
