//! Tweak domains of plain volumes (`pool::domains`): a volume restored from a snapshot
//! shares its source's data key, so it writes in its own domain; the two never encrypt
//! different data under the same key and tweak, and each reads the other's shared slots
//! in the domain they were written in, across reopen.

use super::*;
use crate::volume::header::VolumeHeader;
use crate::volume::ids::SnapshotId;
use crate::volume::test_support::*;

fn lineage_header(size: u64) -> VolumeHeader {
    let mut h = header_with_shift(size, SHIFT);
    h.lineage = h.id.to_string();
    h
}

fn raw_block(pool: &Pool, owner: &str, block: u64) -> Vec<u8> {
    let per_chunk = (1u64 << SHIFT) / BLOCK_SIZE;
    let slot = pool
        .load_map(owner)
        .unwrap()
        .into_iter()
        .find(|(c, _)| *c == block / per_chunk)
        .expect("mapped")
        .1;
    let df = pool.data_file(SHIFT).unwrap();
    let mut b = vec![0u8; BS];
    df.read_at(
        &mut b,
        df.slot_offset(slot) + (block % per_chunk) * BLOCK_SIZE,
    )
    .unwrap();
    b
}

/// Before domains, a restored volume wrote with the same key and tweaks as its source:
/// the same plaintext in the same block gave the same ciphertext in both (and different
/// plaintexts leaked their relation). Now the ciphertexts differ, and both read back.
#[test]
fn a_restored_volume_and_its_source_never_share_key_and_tweak() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let src = lineage_header(4 << 20);
    pool.create_volume(&src).unwrap();
    let s = OpenVolume::open(pool.clone(), &src, xts()).unwrap();
    s.write(0, &[0x11; 8192]).unwrap();
    s.flush().unwrap();
    let snap = SnapshotId::random();
    {
        let _quiet = s.quiesce();
        pool.create_snapshot(&src, &snap, b"snapshot record")
            .unwrap();
        s.mark_all_shared();
    }
    let mut clone = header_with_shift(4 << 20, SHIFT);
    clone.lineage = src.lineage.clone();
    pool.restore_volume(&snap, &clone).unwrap();
    let c = OpenVolume::open(pool.clone(), &clone, xts()).unwrap();
    // The same plaintext into block 5 of both (a chunk both share until written), and
    // block 1 of the clone only (its copy of chunk 0 re-encrypts block 0 into its domain).
    s.write(5 * BLOCK_SIZE, &[0x22; BS]).unwrap();
    c.write(5 * BLOCK_SIZE, &[0x22; BS]).unwrap();
    c.write(BLOCK_SIZE, &[0x33; BS]).unwrap();
    s.flush().unwrap();
    c.flush().unwrap();
    let (a, b) = (
        raw_block(&pool, src.id.as_str(), 5),
        raw_block(&pool, clone.id.as_str(), 5),
    );
    assert_ne!(a, b, "the same plaintext, block and key: another tweak");
    assert_ne!(
        raw_block(&pool, src.id.as_str(), 0),
        raw_block(&pool, clone.id.as_str(), 0),
        "the block the clone kept from the source was re-encrypted into its domain"
    );
    drop((s, c));
    // Reopened: each slot is read in the domain it was written in.
    let s = OpenVolume::open(pool.clone(), &src, xts()).unwrap();
    let c = OpenVolume::open(pool.clone(), &clone, xts()).unwrap();
    let mut got = vec![0u8; 6 * BS];
    s.read(0, &mut got).unwrap();
    assert_eq!(&got[..2 * BS], &[0x11; 2 * BS][..]);
    assert_eq!(&got[5 * BS..], &[0x22; BS][..]);
    c.read(0, &mut got).unwrap();
    assert_eq!(&got[..BS], &[0x11; BS][..]);
    assert_eq!(&got[BS..2 * BS], &[0x33; BS][..]);
    assert_eq!(&got[5 * BS..], &[0x22; BS][..]);
    // A snapshot of the clone, restored again: a third domain reading the clone's slots.
    let snap2 = SnapshotId::random();
    {
        let _quiet = c.quiesce();
        pool.create_snapshot(&clone, &snap2, b"snapshot record")
            .unwrap();
        c.mark_all_shared();
    }
    let mut third = header_with_shift(4 << 20, SHIFT);
    third.lineage = src.lineage.clone();
    pool.restore_volume(&snap2, &third).unwrap();
    let t = OpenVolume::open(pool.clone(), &third, xts()).unwrap();
    t.read(0, &mut got).unwrap();
    assert_eq!(&got[BS..2 * BS], &[0x33; BS][..]);
    t.write(2 * BLOCK_SIZE, &[0x44; BS]).unwrap();
    t.read(0, &mut got).unwrap();
    assert_eq!(&got[..BS], &[0x11; BS][..], "kept from the clone's domain");
    assert_eq!(&got[2 * BS..3 * BS], &[0x44; BS][..]);
}

/// A slot freed by a restored volume and reused by its source: no domain of the slot's
/// earlier life survives (a stale one would make the source read garbage).
#[test]
fn a_reused_slot_is_read_in_its_new_volumes_domain() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let src = lineage_header(4 << 20);
    pool.create_volume(&src).unwrap();
    let mut clone = header_with_shift(4 << 20, SHIFT);
    clone.lineage = src.lineage.clone();
    pool.create_volume(&clone).unwrap();
    let c = OpenVolume::open(pool.clone(), &clone, xts()).unwrap();
    c.write(0, &[0x55; BS]).unwrap();
    c.flush().unwrap();
    let slot = pool.load_map(clone.id.as_str()).unwrap()[0].1;
    assert!(
        !pool
            .load_domains(clone.id.as_str(), SHIFT)
            .unwrap()
            .is_empty()
    );
    c.discard(0, 1 << SHIFT).unwrap();
    c.flush().unwrap();
    let s = OpenVolume::open(pool.clone(), &src, xts()).unwrap();
    s.write(0, &[0x66; BS]).unwrap();
    s.flush().unwrap();
    assert_eq!(pool.load_map(src.id.as_str()).unwrap()[0].1, slot, "reused");
    drop(s);
    let s = OpenVolume::open(pool.clone(), &src, xts()).unwrap();
    let mut got = vec![0u8; BS];
    s.read(0, &mut got).unwrap();
    assert_eq!(got, vec![0x66; BS]);
}

/// A `slot_domain` row left for a free slot (a checker's repair frees slots without
/// dropping it): the lineage's own volume (domain 0) that reuses the slot must read it in
/// domain 0, so mapping the slot clears the row in the same commit.
#[test]
fn a_stale_domain_row_of_a_reused_slot_is_cleared_when_it_is_mapped() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = lineage_header(4 << 20);
    let slot = {
        let pool = Arc::new(Pool::open(&r).unwrap());
        pool.create_volume(&h).unwrap();
        let v = OpenVolume::open(pool.clone(), &h, xts()).unwrap();
        v.write(0, &[0x77; BS]).unwrap();
        v.flush().unwrap();
        let slot = pool.load_map(h.id.as_str()).unwrap()[0].1;
        v.discard(0, 1 << SHIFT).unwrap();
        v.flush().unwrap();
        slot
    };
    {
        let db = redb::Database::open(r.pool_dir().join("meta.redb")).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(crate::volume::tables::SLOT_DOMAIN)
            .unwrap()
            .insert((SHIFT, slot.0), 12345u64)
            .unwrap();
        w.commit().unwrap();
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = OpenVolume::open(pool.clone(), &h, xts()).unwrap();
    v.write(0, &[0x88; BS]).unwrap();
    v.flush().unwrap();
    assert_eq!(pool.load_map(h.id.as_str()).unwrap()[0].1, slot, "reused");
    assert!(pool.load_domains(h.id.as_str(), SHIFT).unwrap().is_empty());
    drop(v);
    let v = OpenVolume::open(pool.clone(), &h, xts()).unwrap();
    let mut got = vec![0u8; BS];
    v.read(0, &mut got).unwrap();
    assert_eq!(got, vec![0x88; BS]);
}

/// A slot of another domain that the clone alone maps (its source and the snapshot are
/// deleted, so nothing shares it): the clone's write must not go in place under the
/// source's tweaks; it copies the chunk into its own domain first.
#[test]
fn a_clone_never_writes_in_place_into_a_slot_of_another_domain() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let src = lineage_header(4 << 20);
    pool.create_volume(&src).unwrap();
    let s = OpenVolume::open(pool.clone(), &src, xts()).unwrap();
    s.write(0, &[0x11; 2 * BS]).unwrap();
    s.flush().unwrap();
    let snap = SnapshotId::random();
    {
        let _quiet = s.quiesce();
        pool.create_snapshot(&src, &snap, b"snapshot record")
            .unwrap();
    }
    drop(s);
    let mut clone = header_with_shift(4 << 20, SHIFT);
    clone.lineage = src.lineage.clone();
    pool.restore_volume(&snap, &clone).unwrap();
    pool.delete_snapshot(&snap, SHIFT).unwrap();
    pool.delete_volume(&src).unwrap();
    let source_slot = pool.load_map(clone.id.as_str()).unwrap()[0].1;
    assert_eq!(
        pool.refcount(SHIFT, source_slot).unwrap(),
        1,
        "the clone's alone"
    );
    let c = OpenVolume::open(pool.clone(), &clone, xts()).unwrap();
    c.write(BLOCK_SIZE, &[0x22; BS]).unwrap();
    c.flush().unwrap();
    assert_ne!(
        pool.load_map(clone.id.as_str()).unwrap()[0].1,
        source_slot,
        "copied into a slot of the clone's domain"
    );
    let mut in_source_domain = vec![0x22u8; BS];
    xts().encrypt_units_at(crate::volume::integrity::tweak(0, 1), &mut in_source_domain);
    let mut in_clone_domain = vec![0x22u8; BS];
    let domain = crate::volume::integrity::domain_of(&clone);
    xts().encrypt_units_at(
        crate::volume::integrity::tweak(domain, 1),
        &mut in_clone_domain,
    );
    let raw = raw_block(&pool, clone.id.as_str(), 1);
    assert_ne!(raw, in_source_domain, "not under the source's tweak");
    assert_eq!(raw, in_clone_domain, "under the clone's own tweak");
    let mut got = vec![0u8; 2 * BS];
    c.read(0, &mut got).unwrap();
    assert_eq!(&got[..BS], &[0x11; BS][..], "the kept block, re-encrypted");
    assert_eq!(&got[BS..], &[0x22; BS][..]);
}
