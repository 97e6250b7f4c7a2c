//! The pool files of the fixture, byte by byte as docs/formats.md describes them: the
//! `meta.redb` tables, the volume header, the snapshot record, and the data file's slots,
//! decrypted here with AES-256-XTS (no FUSE, no cryptvol code) to the known contents.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use super::doc_kms::files;
use super::reader::*;
use super::{ids, snapshot_content, volume_content};

// The tables of "Thin pool".
pub const VOLUMES: TableDefinition<&str, &[u8]> = TableDefinition::new("volumes");
pub const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub const MAPS: TableDefinition<(&str, u64), u64> = TableDefinition::new("maps");
pub const REFS: TableDefinition<(u8, u64), u32> = TableDefinition::new("refcounts");
pub const FREE: TableDefinition<(u8, u64), ()> = TableDefinition::new("free");

/// The parsed fields of a volume header.
pub struct Header {
    pub kind: u8,
    pub chunk_shift: u8,
    pub size: u64,
    pub id: String,
    pub lineage: String,
    pub key_arn: String,
    pub material: Vec<u8>,
}

pub fn parse_header(b: &[u8]) -> Header {
    let r = parse_record(b, b"CVVOLHDR", 22, 6);
    assert_eq!(&r.fixed[2..6], &[0; 4], "reserved bytes 12..16");
    let created = le64(r.fixed, 14) as i64;
    assert!(
        created > 1_700_000_000,
        "creation time in Unix seconds: {created}"
    );
    let text = |i: usize| String::from_utf8(r.fields[i].to_vec()).unwrap();
    assert_eq!(text(2), REGION);
    Header {
        kind: r.fixed[0],
        chunk_shift: r.fixed[1],
        size: le64(r.fixed, 6),
        id: text(0),
        lineage: text(1),
        key_arn: text(4),
        material: r.fields[5].to_vec(),
    }
}

struct Pool {
    volumes: BTreeMap<String, Vec<u8>>,
    snapshots: BTreeMap<String, Vec<u8>>,
    meta: BTreeMap<String, u64>,
    maps: BTreeMap<String, BTreeMap<u64, u64>>,
    refs: BTreeMap<(u8, u64), u32>,
    free: Vec<(u8, u64)>,
}

fn read_pool(path: &std::path::Path) -> Pool {
    let db = redb::Database::open(path).expect("meta.redb opens");
    let r = db.begin_read().unwrap();
    let kv = |t: TableDefinition<&str, &[u8]>| -> BTreeMap<String, Vec<u8>> {
        r.open_table(t)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_string(), v.value().to_vec())
            })
            .collect()
    };
    let mut maps: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
    for e in r.open_table(MAPS).unwrap().iter().unwrap() {
        let (k, v) = e.unwrap();
        let (owner, chunk) = k.value();
        maps.entry(owner.to_string())
            .or_default()
            .insert(chunk, v.value());
    }
    Pool {
        volumes: kv(VOLUMES),
        snapshots: kv(SNAPSHOTS),
        meta: r
            .open_table(META)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_string(), v.value())
            })
            .collect(),
        maps,
        refs: r
            .open_table(REFS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value(), v.value())
            })
            .collect(),
        free: r
            .open_table(FREE)
            .unwrap()
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value())
            .collect(),
    }
}

/// The 64-byte data key in a header's KMS blob, opened with the lineage context.
fn data_key(f: &Files, h: &Header) -> Vec<u8> {
    let blob = parse_blob(&h.material);
    let key_id = h.key_arn.rsplit('/').next().unwrap();
    assert_eq!(blob.key_id, uuid_bytes(key_id));
    let m = f.version_material(key_id, blob.key_version);
    let dek = open_blob(&blob, &m, &[("cryptvol:lineage", &h.lineage)])
        .expect("the wrapped data key opens with the lineage context");
    assert_eq!(dek.len(), 64);
    dek
}

#[test]
fn doc_pool_tables_headers_records_and_slots() {
    let (_g, f) = files();
    let ids = ids();
    let pool_dir = f.region().join("pool");
    let p = read_pool(&pool_dir.join("meta.redb"));

    // meta: format 1, one chunk size (shift 16) with 3 slots handed out.
    assert_eq!(p.meta.get("format"), Some(&1));
    assert_eq!(p.meta.get("hwm/16"), Some(&3), "{:?}", p.meta);
    assert!(
        p.meta
            .keys()
            .all(|k| k == "format" || k == "commit" || k.starts_with("hwm/"))
    );

    // The volume header.
    assert_eq!(p.volumes.keys().collect::<Vec<_>>(), [&ids.volume]);
    let h = parse_header(&p.volumes[&ids.volume]);
    assert_eq!(h.kind, 1, "a KMS data key");
    assert_eq!(h.chunk_shift, 16, "64 KiB chunks");
    assert_eq!(h.size, 128 << 10);
    assert_eq!(h.id, ids.volume);
    assert_eq!(h.lineage, ids.volume, "a new volume is its own lineage");
    assert!(
        h.key_arn.ends_with(&format!(":key/{}", ids.key_id)),
        "{}",
        h.key_arn
    );
    let raw = &p.volumes[&ids.volume];
    let name_at = 32 + 2 + 21 + 2 + 21 + 2 + 7;
    assert_eq!(le16(raw, name_at) as usize, "fixture-v1".len());
    assert_eq!(&raw[name_at + 2..name_at + 12], b"fixture-v1");
    // 32 fixed + six u16-prefixed fields + 32 checksum.
    let fields = 21 + 21 + 7 + 10 + h.key_arn.len() + h.material.len();
    assert_eq!(raw.len(), 32 + 6 * 2 + fields + 32);

    // The snapshot record, and the volume header it embeds.
    assert_eq!(p.snapshots.keys().collect::<Vec<_>>(), [&ids.snapshot]);
    let s = &p.snapshots[&ids.snapshot];
    let r = parse_record(s, b"CVSNAPSH", 8, 3);
    let created_ns = le64(r.fixed, 0) as i64;
    assert!(
        created_ns > 1_700_000_000 * 1_000_000_000,
        "nanoseconds: {created_ns}"
    );
    assert_eq!(r.fields[0], ids.snapshot.as_bytes());
    assert_eq!(r.fields[1], b"fixture v1");
    let sh = parse_header(r.fields[2]);
    assert_eq!(
        (sh.id.as_str(), sh.size, sh.chunk_shift),
        (ids.volume.as_str(), h.size, 16)
    );
    assert_eq!(
        sh.material, h.material,
        "a snapshot in place keeps the volume's data key"
    );

    // maps, refcounts, free: chunk 0 shared, chunk 1 copied on write.
    let vmap = &p.maps[&ids.volume];
    let smap = &p.maps[&ids.snapshot];
    assert_eq!(p.maps.len(), 2);
    assert_eq!(vmap.len(), 2);
    assert_eq!(smap.len(), 2);
    assert_eq!(vmap[&0], smap[&0], "the unchanged chunk is shared");
    assert_ne!(vmap[&1], smap[&1], "the changed chunk was copied");
    let mut want: BTreeMap<(u8, u64), u32> = BTreeMap::new();
    for m in p.maps.values() {
        for s in m.values() {
            *want.entry((16, *s)).or_default() += 1;
        }
    }
    assert_eq!(p.refs, want, "refcounts = map rows per slot");
    assert!(p.free.is_empty(), "{:?}", p.free);

    // The data file: slot s at s·64 KiB, XTS with the volume block number as tweak.
    let data = pool_dir.join("data-64k.pool");
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 3 << 16);
    let x = xts(&data_key(&f, &h));
    let vol = read_volume(&data, 1 << 16, h.size, vmap, &x);
    assert!(
        vol == volume_content(),
        "the volume decrypts to its known content"
    );
    let snap = read_volume(&data, 1 << 16, h.size, smap, &x);
    assert!(
        snap == snapshot_content(),
        "the snapshot decrypts to its known content"
    );
    // The tweak is the block's number in the volume: a wrong one gives other bytes.
    let mut block = std::fs::read(&data).unwrap()[(vmap[&0] << 16) as usize..][..4096].to_vec();
    x.decrypt_area(&mut block, 4096, 1, xts_mode::get_tweak_default);
    assert_ne!(block, snapshot_content()[..4096]);
}
