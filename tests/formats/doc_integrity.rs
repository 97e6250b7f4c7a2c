//! An authenticated volume's files, byte by byte as docs/formats.md ("Volume header" format
//! 4, "Authenticated volumes") describes them, recomputed here from the data key with no
//! cryptvol code: the header's flag, the slot record (domain, generations, MACs, holes),
//! the root row (accumulator and tag) and the sealed anchor outside the pool.

use redb::{ReadableDatabase, TableDefinition};
use xts_mode::get_tweak_default;

use super::common::mount::VolEnv;
use super::common::pool_peek;
use super::doc_pool::{MAPS, VOLUMES};
use super::reader::*;
use super::{fixture, ids};

const SLOT_AUTH: TableDefinition<(u8, u64), &[u8]> = TableDefinition::new("slot_auth");
const ROOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("roots");
const CTX_BLOCK_MAC_POLYVAL: &str = "cryptvol 2026-12-02 volume block mac polyval-aes v1";
const CTX_ROOT: &str = "cryptvol 2026-12-02 volume integrity root v1";
const CTX_ANCHOR: &str = "cryptvol 2026-12-02 volume anchor seal v1";

/// AES-256(K, POLYVAL(H, ct ‖ domain ‖ block ‖ generation ‖ 8·len(ct))), with H ‖ K the
/// first 48 bytes of blake3's derive_key XOF of the data key (docs/formats.md, "Block MAC").
fn polyval_aes(dek: &[u8], ct: &[u8], domain: u64, block: u64, generation: u64) -> [u8; 16] {
    use aes::cipher::{BlockCipherEncrypt, KeyInit};
    use polyval::universal_hash::UniversalHash;
    let mut keys = [0u8; 48];
    let mut h = blake3::Hasher::new_derive_key(CTX_BLOCK_MAC_POLYVAL);
    h.update(dek);
    h.finalize_xof().fill(&mut keys);
    let hash_key: [u8; 16] = keys[..16].try_into().unwrap();
    let mut p = polyval::Polyval::new(&hash_key.into());
    let mut msg = ct.to_vec();
    for x in [domain, block, generation, ct.len() as u64 * 8] {
        msg.extend_from_slice(&x.to_le_bytes());
    }
    assert_eq!(msg.len() % 16, 0, "whole POLYVAL blocks, no padding");
    p.update_padded(&msg);
    let s: [u8; 16] = p.finalize().into();
    let aes_key: [u8; 32] = keys[16..].try_into().unwrap();
    let mut b = aes::Block::from(s);
    aes::Aes256::new(&aes_key.into()).encrypt_block(&mut b);
    b.into()
}

fn keyed(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

#[test]
fn v4_authenticated_volume_header_records_root_and_anchor() {
    crate::needs!(Fuse);
    let (v, ids): (VolEnv, _) = (fixture(), ids());
    let vol = v.create(&[
        "--size",
        "256K",
        "--chunk-size",
        "64K",
        "--integrity",
        "--name",
        "auth",
        "--kms-key",
        &ids.alias,
    ]);
    // Block 1 written twice: the second write lands after a commit, in the slot's second
    // half (the alternate file), and the record becomes version 2.
    let dir = v.dir("auth");
    let file = v.attach(&vol, &dir, &[]);
    let plain: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    for _ in 0..2 {
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &plain, 4096).unwrap();
        f.sync_all().unwrap();
    }
    v.detach(&dir);
    pool_peek::assert_pool_idle(&v);

    let db = pool_peek::open_meta(&v);
    let r = db.begin_read().unwrap();
    let header = r
        .open_table(VOLUMES)
        .unwrap()
        .get(vol.as_str())
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    let h = parse_record_version(&header, b"CVVOLHDR", 4, 22, 8);
    assert_eq!(h.fixed[2], 1, "byte 12: flags, bit 0 = authenticated");
    assert_eq!(&h.fixed[3..6], &[0; 3], "bytes 13..16 reserved");
    let files = Files {
        data: v.data.clone(),
    };
    let blob = parse_blob(h.fields[5]);
    let material = files.version_material(&ids.key_id, blob.key_version);
    let dek = open_blob(&blob, &material, &[("cryptvol:lineage", &vol)]).expect("the data key");

    // The map: one chunk (0), and its slot's record.
    let maps: Vec<(u64, u64)> = r
        .open_table(MAPS)
        .unwrap()
        .range((vol.as_str(), 0)..=(vol.as_str(), u64::MAX))
        .unwrap()
        .map(|i| {
            let (k, s) = i.unwrap();
            (k.value().1, s.value())
        })
        .collect();
    assert_eq!(maps.len(), 1, "{maps:?}");
    let (chunk, slot) = maps[0];
    assert_eq!(chunk, 0);
    let rec = r
        .open_table(SLOT_AUTH)
        .unwrap()
        .get((16u8, slot))
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(
        rec.len(),
        16 + 2 + 16 * 24,
        "16 bytes + a halves map of 16 bits + 16 blocks × 24"
    );
    assert_eq!(rec[0], 2, "record version 2: a halves map");
    assert_eq!(rec[1], 1, "MAC algorithm 1: POLYVAL-AES");
    assert_eq!(&rec[2..8], &[0; 6]);
    assert_eq!(
        le64(&rec, 8),
        0,
        "the lineage's own volume writes in domain 0"
    );
    assert_eq!(
        &rec[16..18],
        &[0b10, 0],
        "only block 1 lies in the second half (bit 1 of the first byte)"
    );
    let tags = 18;
    let tag = |b: usize| {
        (
            le64(&rec, tags + b * 24),
            &rec[tags + b * 24 + 8..tags + b * 24 + 24],
        )
    };
    for b in [0, 2, 15] {
        assert_eq!(tag(b).0, 0, "block {b} never written: a hole");
    }
    let (generation, mac) = tag(1);
    assert!(generation > 0);
    // The MAC of the ciphertext in the slot, and the ciphertext decrypts to what was written.
    let data = std::fs::read(v.data.join("regions/local-1/pool/data-64k.alt")).unwrap();
    let at = (slot * 65536 + 4096) as usize;
    let ct = data[at..at + 4096].to_vec();
    assert_eq!(
        mac,
        &polyval_aes(&dek, &ct, 0, 1, generation)[..],
        "MAC = AES-256(POLYVAL(ciphertext, domain, block, generation, bit length))"
    );
    let mut p = ct.clone();
    xts(&dek).decrypt_area(&mut p, 4096, 1, get_tweak_default);
    assert!(p == plain, "tweak of domain 0 = the block number");

    // The root: XOR of one leaf, and its tag.
    let root = r
        .open_table(ROOTS)
        .unwrap()
        .get(vol.as_str())
        .unwrap()
        .unwrap()
        .value()
        .to_vec();
    assert_eq!(root.len(), 72);
    let root_key = derive(CTX_ROOT, &[&dek]);
    let leaf = keyed(&root_key, &[b"leaf", &chunk.to_le_bytes(), &rec]);
    assert_eq!(
        &root[8..40],
        &leaf,
        "accumulator of a one-chunk volume = its leaf"
    );
    assert_eq!(
        &root[40..72],
        &keyed(&root_key, &[b"root", &root[..8], &root[8..40]]),
        "tag over generation and accumulator"
    );
    // The anchor: sealed under the anchor key, bound to the volume id, the same root.
    let anchor = std::fs::read(v.data.join("regions/local-1/anchors").join(&vol)).unwrap();
    assert_eq!(&anchor[..8], b"CVANCHR2");
    assert_eq!(anchor.len(), 3 * 4096);
    assert!(anchor[8..4096].iter().all(|&b| b == 0), "header padding");
    // Two records, each bound to its slot; the newer one is the root (the other one is
    // the same or an older root: stores after the first overwrite the older record).
    let mut records = vec![];
    for slot in 0..2u8 {
        let page = &anchor[(slot as usize + 1) * 4096..][..4096];
        assert!(page[68..].iter().all(|&b| b == 0), "record {slot} padding");
        let mut aad = b"cryptvol volume anchor v2\0".to_vec();
        aad.push(slot);
        aad.extend_from_slice(vol.as_bytes());
        let body = open_sealed(&derive(CTX_ANCHOR, &[&dek]), &aad, &page[..68])
            .expect("anchor record opens");
        assert_eq!(body.len(), 40);
        records.push(body);
    }
    records.sort_by_key(|b| le64(b, 0));
    assert_eq!(
        &records[1][..],
        &root[..40],
        "anchor = generation and accumulator of the root"
    );
    assert!(le64(&records[0], 0) <= le64(&root, 0));
}
