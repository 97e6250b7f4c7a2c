//! The tag journal's format and replay rules on the simulated disk.

use std::sync::Arc;

use super::*;
use crate::volume::storage::sim::{CrashMode, FaultKind, SimDisk};

/// The pool number the entries of these tests are written for.
const POOL: u64 = 0x5eed_0001;

fn entry(n: u8) -> Entry {
    Entry {
        seq: 0,
        generation: Some(100 + u64::from(n)),
        records: vec![
            ((20, u64::from(n)), vec![n; 40]),
            ((16, 7), vec![n ^ 0xff; 9]),
        ],
        roots: vec![(format!("vol-{n}"), vec![n; 48])],
        // Odd entries carry blocks (a written range and a hole), even ones follow a sync.
        data_synced: n.is_multiple_of(2),
        blocks: if !n.is_multiple_of(2) {
            vec![
                Block {
                    shift: 20,
                    half: 1,
                    off: u64::from(n) << 20,
                    content: Content::Bytes(vec![n; 8192]),
                },
                Block {
                    shift: 16,
                    half: 0,
                    off: 7 << 16,
                    content: Content::Punched(4096),
                },
            ]
        } else {
            vec![]
        },
    }
}

fn store(disk: &SimDisk) -> Arc<dyn BlockStore> {
    Arc::new(disk.file("tags.journal").unwrap())
}

/// Appends entries `ns` and returns them as written (with their numbers).
fn append_all(j: &mut Journal, ns: &[u8]) -> Vec<Entry> {
    ns.iter()
        .map(|n| {
            let mut e = entry(*n);
            assert!(j.append(&mut e).unwrap().is_some(), "entry {n} fits");
            e
        })
        .collect()
}

#[test]
fn entries_replay_in_order_with_their_content() {
    let disk = SimDisk::new();
    let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
    let written = append_all(&mut j, &[1, 2, 3]);
    assert_eq!(written.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(replay(store(&disk).as_ref(), 0, POOL).unwrap(), written);
    // Synced: a crash that drops everything volatile keeps them.
    let after = disk.after_crash(CrashMode::DropVolatile, 1);
    assert_eq!(replay(store(&after).as_ref(), 0, POOL).unwrap(), written);
}

#[test]
fn a_fold_starts_over_and_older_entries_are_never_replayed() {
    let disk = SimDisk::new();
    let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
    append_all(&mut j, &[1, 2, 3]);
    assert_eq!(j.to_fold(), Some(3));
    j.folded(3);
    assert_eq!(j.to_fold(), None);
    // Entry 4 lands at the start, over entry 1; entries 2 and 3 lie behind it.
    let four = append_all(&mut j, &[4]);
    assert_eq!(four[0].seq, 4);
    assert_eq!(replay(store(&disk).as_ref(), 3, POOL).unwrap(), four);
    // Everything folded: nothing to replay.
    assert!(replay(store(&disk).as_ref(), 4, POOL).unwrap().is_empty());
}

#[test]
fn replay_stops_at_a_torn_entry() {
    let disk = SimDisk::new();
    let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
    let written = append_all(&mut j, &[1, 2, 3]);
    // Damage one byte of entry 2's payload: its checksum fails, and entry 3 behind it is
    // not applied either (it would skip 2).
    let s = store(&disk);
    let at = written[0].encode(POOL).len() as u64 + HEAD as u64 + 20;
    let mut b = [0u8; 1];
    s.read_at(&mut b, at).unwrap();
    s.write_at(&[b[0] ^ 1], at).unwrap();
    assert_eq!(replay(s.as_ref(), 0, POOL).unwrap(), written[..1]);
}

#[test]
fn an_entry_in_flight_at_a_crash_is_all_or_nothing() {
    // Crash at the sync of entry 2 in every mode: entry 1 stays, entry 2 is whole or gone.
    for mode in [
        CrashMode::DropVolatile,
        CrashMode::KeepVolatile,
        CrashMode::KeepRandomSubset,
        CrashMode::TornWrites,
    ] {
        for seed in 0..20 {
            let disk = SimDisk::new();
            let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
            let one = append_all(&mut j, &[1]);
            // The next sync is entry 2's.
            disk.arm_crash_at_sync(disk.sync_count() + 1);
            assert!(j.append(&mut entry(2)).is_err());
            let got = replay(store(&disk.after_crash(mode, seed)).as_ref(), 0, POOL).unwrap();
            assert_eq!(got[..1], one[..], "{mode:?} seed {seed}");
            assert!(got.len() <= 2, "{mode:?} seed {seed}");
            if got.len() == 2 {
                let mut two = entry(2);
                two.seq = 2;
                assert_eq!(got[1], two, "{mode:?} seed {seed}");
            }
        }
    }
}

#[test]
fn an_entry_that_does_not_fit_is_refused_without_writing() {
    let disk = SimDisk::new();
    let one = entry(1).encode(POOL).len() as u64;
    let mut j = Journal::new(store(&disk), 2 * one, 0, POOL);
    let written = append_all(&mut j, &[1, 2]);
    assert_eq!(j.append(&mut entry(3)).unwrap(), None);
    // Its number was not used: the next entry after a fold is 3.
    assert_eq!(j.to_fold(), Some(2));
    assert_eq!(replay(store(&disk).as_ref(), 0, POOL).unwrap(), written);
}

#[test]
fn a_failed_append_makes_the_journal_unusable_until_a_fold_stores_its_number() {
    let disk = SimDisk::new();
    let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
    append_all(&mut j, &[1]);
    disk.fail_at(disk.op_count() + 1, FaultKind::Eio);
    assert!(j.append(&mut entry(2)).is_err());
    assert!(!j.usable());
    // The failed entry's number must be stored as folded, so that it is never replayed.
    assert_eq!(j.to_fold(), Some(2));
    j.folded(2);
    assert!(j.usable());
    let three = append_all(&mut j, &[3]);
    assert_eq!(three[0].seq, 3);
    assert_eq!(replay(store(&disk).as_ref(), 2, POOL).unwrap(), three);
}

#[test]
fn a_valid_checksum_over_a_payload_that_does_not_parse_is_an_error() {
    let disk = SimDisk::new();
    let s = store(&disk);
    // A head and checksum over 5 bytes that are no payload.
    let payload = [1u8, 2, 3, 4, 5];
    let mut head = [0u8; HEAD];
    head[..8].copy_from_slice(MAGIC);
    head[8..16].copy_from_slice(&1u64.to_le_bytes());
    head[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let sum = checksum(&head[..24], POOL, &payload);
    head[24..].copy_from_slice(&sum);
    s.write_at(&head, 0).unwrap();
    s.write_at(&payload, HEAD as u64).unwrap();
    let e = replay(s.as_ref(), 0, POOL).unwrap_err().to_string();
    assert!(e.contains("tag journal") && e.contains("entry 1"), "{e}");
}

#[test]
fn the_layout_writes_zeros_to_the_capacity_once() {
    let disk = SimDisk::new();
    let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
    append_all(&mut j, &[1]);
    assert_eq!(store(&disk).len().unwrap(), 64 << 10);
    // Zeros are no entry.
    assert!(replay(store(&disk).as_ref(), 1, POOL).unwrap().is_empty());
}

/// `e` (data synced, no blocks) as version 1 wrote it: no flags byte, no block count.
fn encode_v1(e: &Entry, pool: u64) -> Vec<u8> {
    assert!(e.data_synced && e.blocks.is_empty());
    let v2 = e.encode(pool);
    let len = u32::from_le_bytes(v2[16..20].try_into().unwrap()) as usize;
    let p2 = &v2[HEAD..HEAD + len];
    let mut payload = p2[..8].to_vec();
    payload.extend_from_slice(&p2[9..len - 4]);
    let mut out = vec![0u8; HEAD];
    out[..8].copy_from_slice(entry::MAGIC_V1);
    out[8..16].copy_from_slice(&e.seq.to_le_bytes());
    out[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let sum = checksum(&out[..24], pool, &payload);
    out[24..HEAD].copy_from_slice(&sum);
    out.extend_from_slice(&payload);
    out.resize(padded(out.len()) as usize, 0);
    out
}

/// A pool's journal written by the version before blocks rode in entries still replays
/// (an upgrade right after a crash keeps the fsyncs acknowledged before it), and entries
/// of both versions replay in one run.
#[test]
fn version_1_entries_still_replay() {
    let disk = SimDisk::new();
    let s = store(&disk);
    let mut one = entry(2);
    one.seq = 1;
    let bytes = encode_v1(&one, POOL);
    s.write_at(&bytes, 0).unwrap();
    let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
    // The writer does not know of entry 1: place entry 2 behind it as it would have.
    j.pos = bytes.len() as u64;
    j.next_seq = 2;
    j.laid_out = true;
    let mut two = entry(3);
    j.append(&mut two).unwrap().unwrap();
    assert_eq!(replay(s.as_ref(), 0, POOL).unwrap(), vec![one, two]);
}

/// Entries whose checksum holds but whose blocks make no sense are damage: replay refuses
/// them with the journal named, rather than writing where they point.
#[test]
fn blocks_that_make_no_sense_are_an_error_not_a_write() {
    type Damage = Box<dyn Fn(&mut Entry)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("half 2", Box::new(|e| e.blocks[0].half = 2)),
        ("chunk size 2^70", Box::new(|e| e.blocks[0].shift = 70)),
        (
            "past 2^52 bytes",
            Box::new(|e| e.blocks[0].off = u64::MAX - 10),
        ),
        ("blocks after a sync", Box::new(|e| e.data_synced = true)),
    ];
    for (what, damage) in cases {
        let disk = SimDisk::new();
        let mut j = Journal::new(store(&disk), 64 << 10, 0, POOL);
        let mut e = entry(1);
        damage(&mut e);
        j.append(&mut e).unwrap().unwrap();
        let err = replay(store(&disk).as_ref(), 0, POOL)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tag journal") && err.contains("entry 1"),
            "{what}: {err}"
        );
    }
}
