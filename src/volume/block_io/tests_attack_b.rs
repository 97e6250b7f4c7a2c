//! Attacks on the halves rule of authenticated volumes (`integrity::SlotRecord`,
//! `integrity::Moves`): writes that land while a commit is in flight, injected I/O faults
//! in commits, record-cache eviction while moves are pending, crashes in every mode of the
//! simulated disk, hostile halves maps and MAC bytes, and how much an open volume keeps
//! per record as commits go by.

use std::io;
use std::path::{Path, PathBuf};

use super::*;
use crate::volume::header::VolumeHeader;
use crate::volume::integrity::{RECORD_HEAD, RECORD_VERSION_HALVES};
use crate::volume::storage::{BlockStore, CrashMode, FaultKind, PoolStorage, SimDisk, SimStorage};
use crate::volume::tables::SLOT_AUTH;
use crate::volume::test_support::*;
use redb::ReadableTable;

const DIR: &str = "/sim/pool";

/// Blocks per chunk at `SHIFT`.
const PER_CHUNK: u64 = (1 << SHIFT) / BLOCK_SIZE;

/// A block saying which block it is and which write made it.
fn stamp(block: u64, seq: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(BS);
    let mut x = block.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq;
    while b.len() < BS {
        b.extend_from_slice(&block.to_le_bytes());
        b.extend_from_slice(&seq.to_le_bytes());
        x = x.rotate_left(13).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ seq;
        b.extend_from_slice(&x.to_le_bytes());
        b.extend_from_slice(&(!x).to_le_bytes());
    }
    b.truncate(BS);
    b
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Hook = Arc<dyn Fn() + Send + Sync>;

/// The simulated disk with a hook called before every data-file sync (inside a commit,
/// after its take: the moment a commit is in flight).
#[derive(Clone, Debug)]
struct SyncHooked {
    inner: SimStorage,
    hook: Arc<Mutex<Option<HookBox>>>,
}

struct HookBox(Hook);
impl std::fmt::Debug for HookBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hook")
    }
}

#[derive(Debug)]
struct SyncHookedFile {
    inner: Arc<dyn BlockStore>,
    hook: Arc<Mutex<Option<HookBox>>>,
}

impl PoolStorage for SyncHooked {
    fn dir(&self) -> &Path {
        self.inner.dir()
    }
    fn data(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        Ok(Arc::new(SyncHookedFile {
            inner: self.inner.data(chunk_shift)?,
            hook: self.hook.clone(),
        }))
    }
    fn alt(&self, chunk_shift: u8) -> io::Result<Arc<dyn BlockStore>> {
        Ok(Arc::new(SyncHookedFile {
            inner: self.inner.alt(chunk_shift)?,
            hook: self.hook.clone(),
        }))
    }
    /// The journal is not hooked (the hooks watch the data files).
    fn journal(&self) -> io::Result<Arc<dyn BlockStore>> {
        self.inner.journal()
    }
    fn has_journal(&self) -> bool {
        self.inner.has_journal()
    }
    fn journal_capacity(&self) -> u64 {
        self.inner.journal_capacity()
    }
    fn open_metadata(
        &self,
        latch: &crate::volume::storage::SyncLatch,
    ) -> std::result::Result<redb::Database, redb::DatabaseError> {
        self.inner.open_metadata(latch)
    }

    fn drop_cache(&self) {
        self.inner.drop_cache()
    }
    fn metadata_path(&self) -> PathBuf {
        self.inner.metadata_path()
    }
}

impl BlockStore for SyncHookedFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.inner.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> io::Result<()> {
        self.inner.write_at(buf, off)
    }
    fn punch(&self, off: u64, len: u64) -> io::Result<()> {
        self.inner.punch(off, len)
    }
    fn sync_data(&self) -> io::Result<()> {
        let h = self.hook.lock().unwrap().take();
        if let Some(h) = h {
            (h.0)();
        }
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// What each block may read as: every value written to it (with whether its write
/// failed), and from which one on (the last one a successful flush covered) it may be.
#[derive(Default)]
struct Model {
    hist: Vec<Vec<(Vec<u8>, bool)>>,
    durable: Vec<usize>,
}

impl Model {
    fn new(blocks: usize) -> Model {
        Model {
            hist: vec![vec![(vec![0u8; BS], false)]; blocks],
            durable: vec![0; blocks],
        }
    }
    fn acked(&self) -> Vec<usize> {
        self.hist.iter().map(|h| h.len() - 1).collect()
    }
    /// A write that succeeded, or one that failed: it may or may not have reached the
    /// block, even once a later flush succeeds, so the value before it is recorded again
    /// after it and both stay allowed.
    fn push(&mut self, b: usize, v: Vec<u8>, ok: bool) {
        let h = &mut self.hist[b];
        if ok {
            h.push((v, false));
        } else {
            let old = h.last().unwrap().0.clone();
            h.push((v, true));
            h.push((old, false));
        }
    }
    fn allowed(&self, b: usize) -> Vec<&Vec<u8>> {
        let mut j = self.durable[b];
        while j > 0 && self.hist[b][j - 1].1 {
            j -= 1;
        }
        self.hist[b][j..].iter().map(|(v, _)| v).collect()
    }
}

/// One operation on the volume, recorded in the model whatever its result (a failed
/// write may or may not have reached the disk).
fn apply(v: &OpenVolume, m: &Mutex<Model>, rng: &mut Rng, blocks: u64, seq: &mut u64) -> bool {
    // Mostly the first chunks: their blocks move between halves again and again.
    let hot = 3 * PER_CHUNK;
    let b = if rng.below(4) == 0 {
        rng.below(blocks)
    } else {
        rng.below(hot)
    };
    let n = (1 + rng.below(3)).min(blocks - b);
    let chunk_end = (b / PER_CHUNK + 1) * PER_CHUNK;
    let n = n.min(chunk_end - b);
    *seq += 1;
    if rng.below(6) == 0 {
        // A partial-chunk discard of whole blocks.
        let r = v.discard(b * BLOCK_SIZE, n * BLOCK_SIZE);
        let mut m = m.lock().unwrap();
        for i in b..b + n {
            m.push(i as usize, vec![0u8; BS], r.is_ok());
        }
        r.is_ok()
    } else {
        let mut data = Vec::with_capacity((n as usize) * BS);
        for i in b..b + n {
            data.extend_from_slice(&stamp(i, *seq));
        }
        let r = v.write(b * BLOCK_SIZE, &data);
        let mut m = m.lock().unwrap();
        for i in b..b + n {
            m.push(i as usize, stamp(i, *seq), r.is_ok());
        }
        r.is_ok()
    }
}

/// A pool on a fresh simulated disk (its creation outside the crash window).
fn sim_pool(disk: &SimDisk) -> (Arc<Pool>, SyncHooked) {
    let st = SyncHooked {
        inner: SimStorage::new(DIR, disk.clone()),
        hook: Arc::new(Mutex::new(None)),
    };
    (
        Arc::new(Pool::open_storage(Arc::new(st.clone())).unwrap()),
        st,
    )
}

/// Checks every block after a crash: readable (no EIO), one of the values written to it
/// from the last flushed one on, and `verify` clean.
fn check_after(disk: &SimDisk, h: &VolumeHeader, m: &Model, what: &str) {
    let pool = Arc::new(Pool::open_storage(Arc::new(SimStorage::new(DIR, disk.clone()))).unwrap());
    let v = open_auth(&pool, h).unwrap_or_else(|e| panic!("{what}: attach after the crash: {e}"));
    for (i, hist) in m.hist.iter().enumerate() {
        let mut got = vec![0u8; BS];
        v.read(i as u64 * BLOCK_SIZE, &mut got)
            .unwrap_or_else(|e| panic!("{what}: block {i} unreadable after the crash: {e}"));
        let allowed = m.allowed(i);
        assert!(
            allowed.iter().any(|a| **a == got),
            "{what}: block {i} reads a value never written to it since its last flushed write \
             (head {:02x?}, {} values allowed, {} written)",
            &got[..24],
            allowed.len(),
            hist.len()
        );
    }
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{what}: {rep:?}");
}

/// The claimed invariant, attacked where the single-threaded crash properties do not go:
/// writes and discards that land inside a commit (after its take, before its data sync:
/// blocks whose move the commit carries must be copied, not overwritten), record-cache
/// eviction (more mapped chunks than the unit tests' cache of 64 records) while moves are
/// pending, an injected EIO/ENOSPC somewhere in the run followed by more writes and
/// flushes, then a crash (at a sync point or at the end) in every mode of the simulated
/// disk. Every block must read as a value written to it, never an error, every flushed
/// write must survive, and the root must match.
#[test]
fn writes_inside_commits_faults_and_crashes_leave_every_block_a_written_value() {
    let chunks = 72u64;
    let blocks = chunks * PER_CHUNK;
    let template = SimDisk::new();
    drop(Pool::open_storage(Arc::new(SimStorage::new(DIR, template.clone()))).unwrap());
    let h = auth_header(chunks << SHIFT);
    let runs: u64 = std::env::var("ATTACK_B_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48);
    for seed in 0..runs {
        let mut rng = Rng(seed.wrapping_mul(0x51_7cc1_b727_220a) ^ 0xabcdef);
        let disk = template.after_crash(CrashMode::KeepVolatile, 0);
        let (pool, st) = sim_pool(&disk);
        pool.create_volume(&h).unwrap();
        let v = Arc::new(open_auth(&pool, &h).unwrap());
        let model = Arc::new(Mutex::new(Model::new(blocks as usize)));
        let mut seq = 0u64;
        // Every chunk mapped and flushed: more records than the cache keeps.
        for c in 0..chunks {
            seq += 1;
            let b = c * PER_CHUNK + c % PER_CHUNK;
            v.write(b * BLOCK_SIZE, &stamp(b, seq)).unwrap();
            model.lock().unwrap().push(b as usize, stamp(b, seq), true);
        }
        v.flush().unwrap();
        {
            let mut m = model.lock().unwrap();
            m.durable = m.acked();
        }
        let base = disk.sync_count();
        match rng.below(3) {
            0 => disk.arm_crash_at_sync(base + 1 + rng.below(40)),
            1 => {
                let kind = if rng.below(2) == 0 {
                    FaultKind::Eio
                } else {
                    FaultKind::NoSpace
                };
                disk.fail_at(disk.op_count() + 1 + rng.below(300), kind);
            }
            _ => {}
        }
        let steps = 40 + rng.below(40);
        for _ in 0..steps {
            if disk.is_crashed() {
                break;
            }
            if rng.below(4) == 0 {
                // A flush, with writes (and reads of every chunk, which evict records)
                // arriving while its commit is in flight.
                let inside = rng.below(4);
                let ev = rng.below(2) == 0;
                let hook_seed = rng.next();
                let (hv, hm) = (v.clone(), model.clone());
                let hseq = seq + 1_000_000 * (1 + seq);
                *st.hook.lock().unwrap() = Some(HookBox(Arc::new(move || {
                    let mut r = Rng(hook_seed);
                    let mut s = hseq;
                    if ev {
                        let mut b = vec![0u8; BS];
                        for c in (3..chunks).rev() {
                            let _ = hv.read(c * (1 << SHIFT), &mut b);
                        }
                    }
                    for _ in 0..inside {
                        apply(&hv, &hm, &mut r, blocks, &mut s);
                    }
                })));
                let acked = model.lock().unwrap().acked();
                let r = v.flush();
                st.hook.lock().unwrap().take();
                if r.is_ok() {
                    model.lock().unwrap().durable = acked;
                }
            } else {
                apply(&v, &model, &mut rng, blocks, &mut seq);
            }
        }
        // Without an armed crash, one more flush and then more unflushed writes.
        if !disk.is_crashed() {
            disk.clear_faults();
            let acked = model.lock().unwrap().acked();
            if v.flush().is_ok() {
                model.lock().unwrap().durable = acked;
            }
            for _ in 0..8 {
                apply(&v, &model, &mut rng, blocks, &mut seq);
            }
            disk.crash_now();
        }
        drop(v);
        drop(pool);
        let m = model.lock().unwrap();
        for (i, mode) in [
            CrashMode::DropVolatile,
            CrashMode::KeepVolatile,
            CrashMode::KeepRandomSubset,
            CrashMode::TornWrites,
        ]
        .into_iter()
        .enumerate()
        {
            let after = disk.after_crash(mode, seed * 7 + i as u64);
            check_after(&after, &h, &m, &format!("seed {seed}, {mode:?}"));
        }
    }
}

/// An open volume keeps, per record, the blocks each epoch placed "until that epoch is
/// durable" (`integrity::Moves`); nothing ever forgets a durable epoch (`Moves::prune`
/// has no caller), so a hot record grows by one bitmap per commit that wrote it, and
/// every write scans all of them, for as long as the volume is attached (a database
/// fsyncing a few times a second writes one chunk hundreds of thousands of times a day).
#[test]
fn a_hot_records_moves_stay_bounded_across_commits() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let h = auth_header(1 << SHIFT);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    for i in 0..300u64 {
        v.write(0, &stamp(0, i)).unwrap();
        v.flush().unwrap();
    }
    let slot = v.entry(0).unwrap().slot;
    let rec = v.record(slot).unwrap();
    let moves = format!("{:?}", rec.lock().unwrap().moves);
    // Each epoch the record keeps prints as `(epoch, [bitmap])`.
    let epochs = moves.matches("[").count().saturating_sub(1);
    assert!(
        epochs <= 4,
        "after 300 durable commits the record still holds {epochs} epochs of moves"
    );
    assert_eq!(read(&v, 0), stamp(0, 299));
}

fn read(v: &OpenVolume, b: u64) -> Vec<u8> {
    let mut out = vec![0u8; BS];
    v.read(b * BLOCK_SIZE, &mut out).unwrap();
    out
}

/// Rewrites the committed record of the slot chunk 0 maps (a pool file edited offline).
fn edit_record(r: &crate::datadir::RegionDir, h: &VolumeHeader, f: impl FnOnce(&mut Vec<u8>)) {
    let pool = Pool::open(r).unwrap();
    let slot = pool.load_map(h.id.as_str()).unwrap()[0].1;
    let db = pool.db().unwrap();
    let w = db.begin_write().unwrap();
    {
        let mut t = w.open_table(SLOT_AUTH).unwrap();
        let mut rec = t.get((SHIFT, slot.0)).unwrap().unwrap().value().to_vec();
        f(&mut rec);
        t.insert((SHIFT, slot.0), rec.as_slice()).unwrap();
    }
    w.commit().unwrap();
}

/// A volume whose chunk 0 has blocks in both halves, committed and closed.
fn volume_with_halves(r: &crate::datadir::RegionDir) -> VolumeHeader {
    let pool = Arc::new(Pool::open(r).unwrap());
    let h = auth_header(4 << SHIFT);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    for b in 0..4 {
        v.write(b * BLOCK_SIZE, &stamp(b, 1)).unwrap();
    }
    v.flush().unwrap();
    v.write(BLOCK_SIZE, &stamp(1, 2)).unwrap();
    v.flush().unwrap();
    let slot = v.entry(0).unwrap().slot;
    assert_eq!(v.record(slot).unwrap().lock().unwrap().half(1), 1);
    h
}

/// Hostile records of a slot with halves: a flipped bit in the halves map (block 2 said to
/// be in the empty second half, block 1 back in the first), the MAC byte turned from
/// POLYVAL-AES to BLAKE3, and a version-2 record whose map is all zeros. The root covers
/// each record byte for byte: every one must be refused at attach as tampering, never read
/// as zeros or as the other half's bytes.
#[test]
fn hostile_halves_maps_and_mac_bytes_are_refused_at_attach() {
    type Edit = Box<dyn FnOnce(&mut Vec<u8>)>;
    let map = RECORD_HEAD;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "block 2 moved to the empty half",
            Box::new(move |r| r[map] ^= 1 << 2),
        ),
        ("block 1 moved back", Box::new(move |r| r[map] ^= 1 << 1)),
        ("MAC byte 1 -> 0", Box::new(|r| r[1] = 0)),
        (
            "version 2 with an all-zero map",
            Box::new(move |r| {
                assert_eq!(r[0], RECORD_VERSION_HALVES);
                for b in &mut r[map..map + (PER_CHUNK as usize).div_ceil(8)] {
                    *b = 0;
                }
            }),
        ),
    ];
    for (what, edit) in edits {
        let d = tempfile::tempdir().unwrap();
        let r = region(&d);
        let h = volume_with_halves(&r);
        edit_record(&r, &h, edit);
        let pool = Arc::new(Pool::open(&r).unwrap());
        match open_auth(&pool, &h) {
            Err(VolumeError::Tampered { .. }) => {}
            Err(e) => panic!("{what}: refused, but not as tampering: {e}"),
            Ok(v) => {
                let mut b = vec![0u8; 4 * BS];
                let read = v.read(0, &mut b);
                panic!("{what}: attached; reading chunk 0 gave {read:?}");
            }
        }
    }
}

/// A record whose MAC byte says BLAKE3 (a record from before POLYVAL-AES) is still
/// verified with BLAKE3, and a copy-on-write in the same domain keeps the old MAC for the
/// tags it carries unchanged while new blocks of the copy get tags the record's MAC checks.
#[test]
fn a_blake3_record_with_halves_keeps_verifying_through_moves_and_copies() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let h = auth_header(4 << SHIFT);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    for b in 0..4 {
        v.write(b * BLOCK_SIZE, &stamp(b, 1)).unwrap();
    }
    // Turn the fresh record into a BLAKE3 one before any tag is made, as an old pool's.
    let slot = v.entry(0).unwrap().slot;
    {
        let rec = v.record(slot).unwrap();
        let mut rec = rec.lock().unwrap();
        let k = integrity_keys();
        rec.mac = crate::volume::integrity::MacAlg::Blake3;
        let mut ct = vec![0u8; BS];
        for b in 0..4usize {
            v.data
                .read_at(&mut ct, v.data.slot_offset(slot) + (b * BS) as u64)
                .unwrap();
            let g = rec.tags[b].generation;
            rec.tags[b].mac = k.block_mac(rec.mac, 0, b as u64, g, &ct);
        }
    }
    v.flush().unwrap();
    // Move block 1 into the other half, then a snapshot forces a copy of the chunk.
    v.write(BLOCK_SIZE, &stamp(1, 2)).unwrap();
    v.flush().unwrap();
    let snap = crate::volume::ids::SnapshotId::random();
    {
        let _q = v.quiesce();
        pool.create_snapshot(&h, &snap, b"snap").unwrap();
        v.mark_all_shared();
    }
    v.write(2 * BLOCK_SIZE, &stamp(2, 3)).unwrap();
    assert_ne!(v.entry(0).unwrap().slot, slot, "copied");
    v.flush().unwrap();
    let want = [stamp(0, 1), stamp(1, 2), stamp(2, 3), stamp(3, 1)];
    for (b, w) in want.iter().enumerate() {
        assert_eq!(&read(&v, b as u64), w, "block {b}");
    }
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
    drop(v);
    let v = open_auth(&pool, &h).unwrap();
    for (b, w) in want.iter().enumerate() {
        assert_eq!(&read(&v, b as u64), w, "block {b} after reopen");
    }
}

/// Discards of blocks in either half, then overwrites, each across commits, in every
/// order, then a reopen: every block reads its last value, verify is clean, and a crash
/// (the pool dropped without a flush) after more of the same reads the flushed values.
#[test]
fn discards_in_either_half_then_overwrites_survive_commits_and_reopen() {
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let h = auth_header(2 << SHIFT);
    let mut last: Vec<Vec<u8>> = vec![vec![0u8; BS]; 2 * PER_CHUNK as usize];
    let mut rng = Rng(77);
    {
        let pool = Arc::new(Pool::open(&r).unwrap());
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        for step in 0..400u64 {
            let b = rng.below(2 * PER_CHUNK);
            let n = (1 + rng.below(4)).min(PER_CHUNK - b % PER_CHUNK);
            match rng.below(5) {
                0 => v.flush().unwrap(),
                1 => {
                    v.discard(b * BLOCK_SIZE, n * BLOCK_SIZE).unwrap();
                    for i in b..b + n {
                        last[i as usize] = vec![0u8; BS];
                    }
                }
                2 => {
                    // A discard with sub-block edges.
                    let off = b * BLOCK_SIZE + 100;
                    let len = n * BLOCK_SIZE - 100;
                    v.discard(off, len).unwrap();
                    for i in b..b + n {
                        let s = if i == b { 100 } else { 0 };
                        last[i as usize][s..].fill(0);
                    }
                }
                _ => {
                    let mut data = vec![];
                    for i in b..b + n {
                        data.extend_from_slice(&stamp(i, step));
                        last[i as usize] = stamp(i, step);
                    }
                    v.write(b * BLOCK_SIZE, &data).unwrap();
                }
            }
        }
        v.flush().unwrap();
        for (i, w) in last.iter().enumerate() {
            assert_eq!(&read(&v, i as u64), w, "block {i}");
        }
        let rep = v.verify().unwrap();
        assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
    }
    let pool = Arc::new(Pool::open(&r).unwrap());
    let v = open_auth(&pool, &h).unwrap();
    for (i, w) in last.iter().enumerate() {
        assert_eq!(&read(&v, i as u64), w, "block {i} after reopen");
    }
}

/// Writer threads on the same chunks (one block range each), a thread flushing without
/// pause, one verifying, and snapshots taken as the daemon takes them, on one
/// authenticated volume with more chunks than the record cache keeps: every flush and
/// verify succeeds, no read fails, every snapshot restores to what was acknowledged before
/// it, and after a reopen every block holds its last write.
#[test]
fn writers_flushes_verifies_and_snapshots_race_without_a_bad_block() {
    use std::sync::atomic::AtomicBool;
    let d = tempfile::tempdir().unwrap();
    let r = region(&d);
    let pool = Arc::new(Pool::open(&r).unwrap());
    let chunks = 80u64;
    let h = auth_header(chunks << SHIFT);
    pool.create_volume(&h).unwrap();
    let v = Arc::new(open_auth(&pool, &h).unwrap());
    let threads = 4u64;
    let per = chunks * PER_CHUNK / threads;
    // done[b]: the last write to b that returned; started[b]: the last one begun.
    let done: Arc<Vec<AtomicU64>> =
        Arc::new((0..threads * per).map(|_| AtomicU64::new(0)).collect());
    let started: Arc<Vec<AtomicU64>> =
        Arc::new((0..threads * per).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = vec![];
    for t in 0..threads {
        let (v, done, started, stop) = (v.clone(), done.clone(), started.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            let mut rng = Rng(t + 1);
            let mut seq = 0;
            while !stop.load(Ordering::Acquire) {
                seq += 1;
                // Interleaved: thread t owns blocks t, t + threads, ... (same chunks).
                let b = (rng.below(per) * threads + t) % (threads * per);
                started[b as usize].store(seq, Ordering::Release);
                v.write(b * BLOCK_SIZE, &stamp(b, seq)).unwrap();
                done[b as usize].store(seq, Ordering::Release);
                if seq >= 3000 {
                    break;
                }
            }
        }));
    }
    let flusher = {
        let (v, stop) = (v.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                v.flush().unwrap();
            }
        })
    };
    let verifier = {
        let (v, stop) = (v.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let rep = v.verify().unwrap();
                assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
            }
        })
    };
    let mut snaps = vec![];
    for _ in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let id = crate::volume::ids::SnapshotId::random();
        let _q = v.quiesce();
        pool.create_snapshot(&h, &id, b"snap").unwrap();
        v.mark_all_shared();
        let window: Vec<(u64, u64)> = (0..threads * per)
            .map(|b| {
                (
                    done[b as usize].load(Ordering::Acquire),
                    started[b as usize].load(Ordering::Acquire),
                )
            })
            .collect();
        snaps.push((id, window));
    }
    for h in hs {
        h.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    flusher.join().unwrap();
    verifier.join().unwrap();
    v.flush().unwrap();
    let last: Vec<u64> = done.iter().map(|a| a.load(Ordering::Acquire)).collect();
    let seq_of = |b: u64, got: &[u8]| -> u64 {
        if got.iter().all(|&x| x == 0) {
            return 0;
        }
        let s = u64::from_le_bytes(got[8..16].try_into().unwrap());
        assert_eq!(got, stamp(b, s).as_slice(), "block {b} is torn or foreign");
        s
    };
    for (b, want) in last.iter().enumerate() {
        assert_eq!(seq_of(b as u64, &read(&v, b as u64)), *want, "block {b}");
    }
    drop(v);
    let v = open_auth(&pool, &h).unwrap();
    for (b, want) in last.iter().enumerate() {
        assert_eq!(
            seq_of(b as u64, &read(&v, b as u64)),
            *want,
            "block {b} after reopen"
        );
    }
    let rep = v.verify().unwrap();
    assert!(rep.root_ok && rep.bad_blocks.is_empty(), "{rep:?}");
    for (i, (snap, window)) in snaps.iter().enumerate() {
        let mut c = auth_header(h.size);
        c.lineage = h.lineage.clone();
        pool.restore_volume(snap, &c).unwrap();
        let cv = open_auth(&pool, &c).unwrap();
        for (b, (lo, hi)) in window.iter().enumerate() {
            let s = seq_of(b as u64, &read(&cv, b as u64));
            assert!(
                *lo <= s && s <= *hi,
                "snapshot {i}, block {b}: holds write {s}, acknowledged {lo}, begun {hi}"
            );
        }
        let rep = cv.verify().unwrap();
        assert!(
            rep.root_ok && rep.bad_blocks.is_empty(),
            "snapshot {i}: {rep:?}"
        );
    }
}

/// A commit with a backlog above the unit tests' pre-sync threshold (64 KiB) syncs its data
/// twice, before and after its take. A crash at each sync point of such a flush, with
/// writes arriving during every sync (before the take: placed in this epoch, in place or
/// flipped; after it: into copies), in every crash mode: every block reads a value written
/// to it since its last flushed one, every flushed write survives, and the root matches.
#[test]
fn a_crash_at_each_sync_of_a_presynced_commit_with_writes_during_each_sync() {
    let chunks = 8u64;
    let blocks = chunks * PER_CHUNK;
    let template = SimDisk::new();
    let h = auth_header(chunks << SHIFT);
    {
        let (pool, _) = sim_pool(&template);
        pool.create_volume(&h).unwrap();
        let v = open_auth(&pool, &h).unwrap();
        for b in 0..blocks {
            v.write(b * BLOCK_SIZE, &stamp(b, 1)).unwrap();
        }
        v.flush().unwrap();
    }
    let mut n = 1;
    loop {
        let disk = template.after_crash(CrashMode::DropVolatile, 0);
        let (pool, st) = sim_pool(&disk);
        let v = Arc::new(open_auth(&pool, &h).unwrap());
        let model = Arc::new(Mutex::new(Model::new(blocks as usize)));
        {
            let mut m = model.lock().unwrap();
            for b in 0..blocks {
                m.push(b as usize, stamp(b, 1), true);
            }
            m.durable = m.acked();
        }
        // A backlog of every block moved to its other half: 512 KiB.
        for b in 0..blocks {
            let r = v.write(b * BLOCK_SIZE, &stamp(b, 2));
            model
                .lock()
                .unwrap()
                .push(b as usize, stamp(b, 2), r.is_ok());
        }
        // At every data sync: a write to a block of the backlog, and one to a block the
        // hook wrote before.
        let cell: Arc<Mutex<Option<Hook>>> = Arc::new(Mutex::new(None));
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let hook: Hook = {
            let (hv, hm, hst, hcell, hcount) = (
                v.clone(),
                model.clone(),
                st.clone(),
                cell.clone(),
                count.clone(),
            );
            Arc::new(move || {
                let i = hcount.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                for b in [(i * 5) % blocks, 0] {
                    let val = stamp(b, 1000 + i);
                    let r = hv.write(b * BLOCK_SIZE, &val);
                    hm.lock().unwrap().push(b as usize, val, r.is_ok());
                }
                let again = hcell.lock().unwrap().clone();
                *hst.hook.lock().unwrap() = again.map(HookBox);
            })
        };
        *cell.lock().unwrap() = Some(hook.clone());
        *st.hook.lock().unwrap() = Some(HookBox(hook));
        disk.arm_crash_at_sync(disk.sync_count() + n);
        let acked = model.lock().unwrap().acked();
        let r = v.flush();
        cell.lock().unwrap().take();
        st.hook.lock().unwrap().take();
        if r.is_ok() {
            model.lock().unwrap().durable = acked;
        }
        let past_the_end = !disk.is_crashed();
        if past_the_end {
            disk.crash_now();
        }
        drop(v);
        drop(pool);
        let m = model.lock().unwrap();
        for (i, mode) in CrashMode::ALL.into_iter().enumerate() {
            let after = disk.after_crash(mode, n * 7 + i as u64);
            check_after(&after, &h, &m, &format!("crash at sync {n}, {mode:?}"));
        }
        if past_the_end {
            assert!(n > 3, "a pre-synced commit syncs more than twice");
            break;
        }
        n += 1;
    }
}

/// A pre-sync (the commit's sync ahead of its take) that fails takes nothing: the flush
/// reports the error and a crash then finds the last flushed values. No later flush is
/// acknowledged (Linux may have dropped the pages whose writeback failed, and a retried
/// sync would say Ok without them: `storage::latch`), however often it is tried, until
/// the pool is opened again; then the volume reads a state no older than the last
/// acknowledged flush, and new writes are flushed as usual.
#[test]
fn a_failed_presync_reports_the_error_and_no_later_flush_is_acknowledged() {
    let chunks = 8u64;
    let blocks = chunks * PER_CHUNK;
    let disk = SimDisk::new();
    let h = auth_header(chunks << SHIFT);
    let (pool, _) = sim_pool(&disk);
    pool.create_volume(&h).unwrap();
    let v = open_auth(&pool, &h).unwrap();
    let mut m = Model::new(blocks as usize);
    for seq in 1..=2 {
        for b in 0..blocks {
            v.write(b * BLOCK_SIZE, &stamp(b, seq)).unwrap();
            m.push(b as usize, stamp(b, seq), true);
        }
        if seq == 1 {
            v.flush().unwrap();
            m.durable = m.acked();
        }
    }
    disk.fail_at(disk.op_count() + 1, FaultKind::Eio);
    assert!(v.flush().is_err(), "the failed sync is reported");
    disk.clear_faults();
    for attempt in 0..3 {
        let syncs = disk.sync_count();
        let e = v
            .flush()
            .expect_err("a flush after a failed sync")
            .to_string();
        assert!(
            e.contains("an earlier sync of /sim/pool/") && e.contains("attach again"),
            "attempt {attempt}: the refusal names the first failure and the way out: {e}"
        );
        assert_eq!(disk.sync_count(), syncs, "a refused flush syncs nothing");
    }
    for mode in CrashMode::ALL {
        check_after(&disk.after_crash(mode, 1), &h, &m, &format!("{mode:?}"));
    }
    drop(v);
    drop(pool);
    // The owner restarts (no crash): the pool opens, the volume reads no older than the
    // last acknowledged flush, and flushes work again.
    let disk = disk.restarted();
    check_after(&disk, &h, &m, "after a restart");
    let (pool, _) = sim_pool(&disk);
    let v = open_auth(&pool, &h).unwrap();
    for b in 0..blocks {
        v.write(b * BLOCK_SIZE, &stamp(b, 3)).unwrap();
        m.push(b as usize, stamp(b, 3), true);
    }
    v.flush().unwrap();
    m.durable = m.acked();
    drop(v);
    drop(pool);
    for mode in CrashMode::ALL {
        check_after(
            &disk.after_crash(mode, 2),
            &h,
            &m,
            &format!("after {mode:?}"),
        );
    }
}
