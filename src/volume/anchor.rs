//! The anchor of an authenticated volume: the latest root its pool committed (generation
//! and accumulator), kept outside the pool, in `<region>/anchors/<volume id>`, so that
//! someone who can write the pool (a restored backup of it, a disk swapped under it) cannot
//! roll the anchor back with it. Sealed with AES-256-GCM under a key derived from the
//! volume's data key, with the volume id as associated data: it cannot be forged or moved
//! to another volume without that key.
//!
//! It is written after every durable commit that changed the volume, so it must cost
//! little. The file holds two sealed records, each in its own 4 KiB page (byte layout:
//! docs/formats.md). A store overwrites in place, without fsync or rename, the record with
//! the older generation (or one that does not open); a load takes the newer record that
//! opens. A crash can tear only the page being written, so the other record still holds
//! the previous anchor: one record that does not open beside one that does is a torn write,
//! not tampering. (Two stores in a row may both be in the page cache at a power loss; each
//! 68-byte record lies within one disk sector, which a drive writes whole or not at all, so
//! each page then holds its old or its new record, the newer of which the pool has.) Only
//! creating the file, replacing the first format, and moving the anchor back (which only
//! `--accept-rollback` does; commits store in order, under the pool's commit lock) write a
//! whole new file durably (temporary file, fsync, rename, fsync of the directory), so a
//! volume's first anchor is on disk before its attach reports success.
//!
//! Why the lag is safe: a store runs only after its commit is durable, so whatever reaches
//! the disk, and whenever, is never newer than the pool: the anchor never runs ahead. It
//! may lag: a store calls `sync_data` when the last sync is at least `SYNC_INTERVAL` (1 s)
//! old, so an isolated commit is synced at once and a stream of commits once a second; the
//! last stores of a burst reach the disk with the kernel's writeback
//! (`vm.dirty_expire_centisecs`, 30 s by default) or when the volume is closed (the
//! anchor's last clone syncs when dropped). Only a power loss or a kernel crash exposes the
//! lag (a process crash loses nothing: the page cache holds the stores): the attach after
//! it finds the pool newer than its anchor, accepts it and re-anchors, and a rollback to a
//! state inside the lag is not detected.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::error::{Result, VolumeError};
use super::integrity::{IntegrityKeys, Root};
use crate::crypto::aead;
use crate::sys::fsio;

/// The current format: a header page and two record pages.
const MAGIC: &[u8; 8] = b"CVANCHR2";
/// The first format (one record, replaced whole on every store): still read, and replaced
/// with the current one at the next store.
const MAGIC_V1: &[u8; 8] = b"CVANCHR1";
const PAGE: usize = 4096;
const FILE_LEN: usize = 3 * PAGE;
const PLAIN_LEN: usize = 40;
const SEALED_LEN: usize = aead::NONCE_LEN + PLAIN_LEN + aead::TAG_LEN;
/// A store syncs the file when its last sync is at least this old.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// One volume's anchor file. Clones share the sync clock (and serialise their stores).
#[derive(Debug, Clone)]
pub struct Anchor {
    path: PathBuf,
    volume: String,
    writer: Arc<Mutex<Writer>>,
}

/// When in-place stores were synced, shared by an anchor's clones.
#[derive(Debug)]
struct Writer {
    path: PathBuf,
    last_sync: Option<Instant>,
    /// A store since the last sync.
    unsynced: bool,
}

impl Drop for Writer {
    /// The volume is closed: make the last stores durable.
    fn drop(&mut self) {
        if self.unsynced
            && let Err(e) = File::open(&self.path).and_then(|f| f.sync_data())
        {
            tracing::warn!("cannot sync the anchor {}: {e}", self.path.display());
        }
    }
}

/// The two records of a current-format file; at least one opened.
type Slots = [Option<Root>; 2];

/// What an anchor file holds.
enum Stored {
    /// The first format's one record.
    V1(Root),
    V2(Slots),
}

fn newest(slots: &Slots) -> Option<Root> {
    slots.iter().flatten().max_by_key(|r| r.generation).copied()
}

/// The whole content of `f`, up to one byte more than a current-format file.
fn read_all_at(f: &File) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; FILE_LEN + 1];
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

impl Anchor {
    pub fn new(dir: &Path, volume: &str) -> Anchor {
        let path = dir.join(volume);
        Anchor {
            writer: Arc::new(Mutex::new(Writer {
                path: path.clone(),
                last_sync: None,
                unsynced: false,
            })),
            path,
            volume: volume.to_string(),
        }
    }

    fn aad_v1(&self) -> Vec<u8> {
        let mut a = b"cryptvol volume anchor v1\0".to_vec();
        a.extend_from_slice(self.volume.as_bytes());
        a
    }

    /// Record `slot`'s associated data: a record cannot move to the other slot either.
    fn aad(&self, slot: usize) -> Vec<u8> {
        let mut a = b"cryptvol volume anchor v2\0".to_vec();
        a.push(slot as u8);
        a.extend_from_slice(self.volume.as_bytes());
        a
    }

    fn tampered(&self, detail: &str) -> VolumeError {
        VolumeError::Tampered {
            volume: self.volume.clone(),
            detail: format!("its anchor {} {detail}", self.path.display()),
        }
    }

    fn open_record(keys: &IntegrityKeys, aad: &[u8], sealed: &[u8]) -> Option<Root> {
        let plain = aead::open_secret(&keys.anchor_key(), aad, sealed).ok()?;
        let p = plain.expose();
        (p.len() == PLAIN_LEN).then(|| Root {
            generation: u64::from_le_bytes(p[..8].try_into().expect("8")),
            acc: p[8..40].try_into().expect("32"),
        })
    }

    /// Record page `slot` (0 or 1): the sealed record, then zeros.
    fn seal_page(&self, keys: &IntegrityKeys, slot: usize, root: &Root) -> Vec<u8> {
        let mut plain = [0u8; PLAIN_LEN];
        plain[..8].copy_from_slice(&root.generation.to_le_bytes());
        plain[8..].copy_from_slice(&root.acc);
        let mut page = aead::seal_secret(&keys.anchor_key(), &self.aad(slot), &plain);
        page.resize(PAGE, 0);
        page
    }

    fn open_page(&self, keys: &IntegrityKeys, slot: usize, page: &[u8]) -> Option<Root> {
        if page[SEALED_LEN..].iter().any(|&b| b != 0) {
            return None;
        }
        Self::open_record(keys, &self.aad(slot), &page[..SEALED_LEN])
    }

    /// What the file holds: `Tampered` if no record opens or the header is wrong.
    fn parse(&self, keys: &IntegrityKeys, bytes: &[u8]) -> Result<Stored> {
        if let Some(sealed) = bytes.strip_prefix(MAGIC_V1) {
            return Self::open_record(keys, &self.aad_v1(), sealed)
                .map(Stored::V1)
                .ok_or_else(|| self.tampered("does not open under the volume's key"));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(self.tampered("is not an anchor file"));
        }
        if bytes.len() != FILE_LEN {
            return Err(self.tampered("has the wrong length"));
        }
        if bytes[MAGIC.len()..PAGE].iter().any(|&b| b != 0) {
            return Err(self.tampered("has a changed header"));
        }
        let slots = [0, 1].map(|i| self.open_page(keys, i, &bytes[(i + 1) * PAGE..][..PAGE]));
        if slots == [None, None] {
            return Err(self.tampered("does not open under the volume's key"));
        }
        Ok(Stored::V2(slots))
    }

    /// The anchored root, or `None` if the volume was never anchored here.
    pub fn load(&self, keys: &IntegrityKeys) -> Result<Option<Root>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(VolumeError::io("cannot read", &self.path, e)),
        };
        Ok(Some(match self.parse(keys, &bytes)? {
            Stored::V1(root) => root,
            Stored::V2(slots) => {
                if slots.contains(&None) {
                    tracing::warn!(
                        "anchor {}: one of its two records does not open (a write torn by a crash); using the other",
                        self.path.display()
                    );
                }
                newest(&slots).expect("one record opens")
            }
        }))
    }

    /// Anchors `root`: in place if it is newer than the anchored root (see the module
    /// doc for when that is durable); nothing if it is the anchored root; as a whole new
    /// file, durably, if there is none yet, it has the first format or does not open, or
    /// `root` is older or another root of the same generation (an accepted rollback).
    pub fn store(&self, keys: &IntegrityKeys, root: &Root) -> Result<()> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // Opened per store (a few microseconds): never a handle of a replaced file.
        let file = match OpenOptions::new().read(true).write(true).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.write_new(&mut w, keys, root);
            }
            Err(e) => return Err(VolumeError::io("cannot open", &self.path, e)),
        };
        let bytes =
            read_all_at(&file).map_err(|e| VolumeError::io("cannot read", &self.path, e))?;
        // The first format, or a file that does not open: replaced whole (as before).
        let Ok(Stored::V2(slots)) = self.parse(keys, &bytes) else {
            return self.write_new(&mut w, keys, root);
        };
        let anchored = newest(&slots).expect("one record opens");
        if anchored == *root {
            return Ok(());
        }
        if root.generation <= anchored.generation {
            return self.write_new(&mut w, keys, root);
        }
        // Over the record that does not open, else over the older one.
        let slot = match slots {
            [None, _] => 0,
            [_, None] => 1,
            [Some(a), Some(b)] => usize::from(a.generation > b.generation),
        };
        let io = |e| VolumeError::io("cannot write", &self.path, e);
        file.write_all_at(
            &self.seal_page(keys, slot, root),
            ((slot + 1) * PAGE) as u64,
        )
        .map_err(io)?;
        let now = Instant::now();
        if w.last_sync
            .is_none_or(|t| now.duration_since(t) >= SYNC_INTERVAL)
        {
            file.sync_data().map_err(io)?;
            w.last_sync = Some(now);
            w.unsynced = false;
        } else {
            w.unsynced = true;
        }
        Ok(())
    }

    /// Both records hold `root`; written durably (temporary file, fsync, rename).
    fn write_new(&self, w: &mut Writer, keys: &IntegrityKeys, root: &Root) -> Result<()> {
        let mut out = vec![0u8; FILE_LEN];
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        for i in 0..2 {
            out[(i + 1) * PAGE..][..PAGE].copy_from_slice(&self.seal_page(keys, i, root));
        }
        if let Some(dir) = self.path.parent() {
            fsio::create_private_dir(dir).map_err(|e| VolumeError::io("cannot create", dir, e))?;
        }
        fsio::write_atomic(&self.path, &out, fsio::PRIVATE_FILE)
            .map_err(|e| VolumeError::io("cannot write", &self.path, e))?;
        w.last_sync = Some(Instant::now());
        w.unsynced = false;
        Ok(())
    }

    /// Forgets the anchor (the volume was deleted).
    pub fn remove(&self) -> Result<()> {
        self.writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unsynced = false;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(VolumeError::io("cannot remove", &self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SecretBytes;
    use std::os::unix::fs::MetadataExt;

    const VOL: &str = "vol-0123456789abcdef0";

    fn new_keys() -> IntegrityKeys {
        IntegrityKeys::from_data_key(&SecretBytes::random(64))
    }

    fn root(generation: u64) -> Root {
        Root {
            generation,
            acc: [generation as u8; 32],
        }
    }

    /// Puts `bytes` in `path` in place (much faster than a truncating write in the loops
    /// over every byte).
    fn put(path: &Path, bytes: &[u8]) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, 0).unwrap();
        f.set_len(bytes.len() as u64).unwrap();
    }

    fn is_tampered(r: Result<Option<Root>>) -> bool {
        matches!(r, Err(VolumeError::Tampered { .. }))
    }

    /// The record page (0 or 1) that differs between two versions of the file.
    fn changed_page(before: &[u8], after: &[u8]) -> usize {
        let pages: Vec<usize> = (0..2)
            .filter(|i| before[(i + 1) * PAGE..][..PAGE] != after[(i + 1) * PAGE..][..PAGE])
            .collect();
        assert_eq!(pages.len(), 1, "a store rewrote {pages:?}");
        assert_eq!(before[..PAGE], after[..PAGE], "a store rewrote the header");
        pages[0]
    }

    #[test]
    fn an_anchor_reads_back_and_refuses_another_key_volume_or_a_change_that_leaves_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VOL);
        let keys = new_keys();
        let a = Anchor::new(dir.path(), VOL);
        assert_eq!(a.load(&keys).unwrap(), None);
        a.store(&keys, &root(7)).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root(7)));
        a.store(&keys, &root(8)).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root(8)));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        assert_eq!(&bytes[..8], b"CVANCHR2");

        assert!(is_tampered(a.load(&new_keys())), "another key");
        // Moved to another volume's name: refused (the id is associated data).
        let b = Anchor::new(dir.path(), "vol-0123456789abcdef1");
        std::fs::copy(&path, dir.path().join("vol-0123456789abcdef1")).unwrap();
        assert!(is_tampered(b.load(&keys)), "another volume");

        let load_with = |x: &[u8]| {
            put(&path, x);
            a.load(&keys)
        };
        for i in 0..PAGE {
            let mut x = bytes.clone();
            x[i] ^= 1;
            assert!(is_tampered(load_with(&x)), "header byte {i}");
            // The same byte of both records: neither opens.
            let mut x = bytes.clone();
            x[PAGE + i] ^= 1;
            x[2 * PAGE + i] ^= 1;
            assert!(is_tampered(load_with(&x)), "byte {i} of both records");
        }
        // The records swapped: each slot is associated data of its record.
        let mut x = bytes.clone();
        x[PAGE..].rotate_left(PAGE);
        assert!(is_tampered(load_with(&x)), "records swapped");
        assert!(is_tampered(load_with(&bytes[..FILE_LEN - 1])), "truncated");
        assert!(
            is_tampered(load_with(&[&bytes[..], &[0]].concat())),
            "extended"
        );
        assert!(is_tampered(load_with(b"")), "empty");

        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root(8)));
        a.remove().unwrap();
        assert_eq!(a.load(&keys).unwrap(), None);
    }

    #[test]
    fn one_torn_record_falls_back_to_the_other_and_the_next_store_overwrites_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VOL);
        let keys = new_keys();
        let a = Anchor::new(dir.path(), VOL);
        a.store(&keys, &root(7)).unwrap();
        a.store(&keys, &root(8)).unwrap();
        let before = std::fs::read(&path).unwrap();
        a.store(&keys, &root(9)).unwrap();
        let after = std::fs::read(&path).unwrap();
        // 9 went over 7's record, not over 8's.
        let new = changed_page(&before, &after);
        let (new_at, old_at) = ((new + 1) * PAGE, (2 - new) * PAGE);
        let load_with = |x: &[u8]| {
            put(&path, x);
            a.load(&keys).unwrap()
        };
        // Any changed byte of one record: the other one is read.
        for i in 0..PAGE {
            let mut x = after.clone();
            x[new_at + i] ^= 0x80;
            assert_eq!(load_with(&x), Some(root(8)), "byte {i} of the newer record");
            let mut x = after.clone();
            x[old_at + i] ^= 0x80;
            assert_eq!(load_with(&x), Some(root(9)), "byte {i} of the older record");
        }
        // A page of garbage, and a record written half: the older generation.
        let mut x = after.clone();
        let garbage: [u8; PAGE] = crate::crypto::random::array();
        x[new_at..][..PAGE].copy_from_slice(&garbage);
        assert_eq!(load_with(&x), Some(root(8)), "a page of garbage");
        let mut half = before.clone();
        half[new_at..][..SEALED_LEN / 2].copy_from_slice(&after[new_at..][..SEALED_LEN / 2]);
        assert_eq!(load_with(&half), Some(root(8)), "a record written half");

        // The next store (another handle, as after a restart) fills the torn slot and
        // leaves 8's record alone.
        std::fs::write(&path, &x).unwrap();
        let a2 = Anchor::new(dir.path(), VOL);
        a2.store(&keys, &root(10)).unwrap();
        assert_eq!(a2.load(&keys).unwrap(), Some(root(10)));
        let mut y = std::fs::read(&path).unwrap();
        assert_eq!(y[old_at..][..PAGE], after[old_at..][..PAGE], "8's record");
        y[new_at] ^= 1;
        assert_eq!(load_with(&y), Some(root(8)));
    }

    #[test]
    fn a_store_moves_the_anchor_forward_in_place_and_never_back_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VOL);
        let keys = new_keys();
        let a = Anchor::new(dir.path(), VOL);
        a.store(&keys, &root(7)).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();
        // Both records of a new file hold its root.
        let first = std::fs::read(&path).unwrap();
        for page in [PAGE, 2 * PAGE] {
            let mut x = first.clone();
            x[page] ^= 1;
            std::fs::write(&path, &x).unwrap();
            assert_eq!(a.load(&keys).unwrap(), Some(root(7)), "page {page} changed");
        }
        std::fs::write(&path, &first).unwrap();

        let mut last = first;
        for g in 8..12 {
            a.clone().store(&keys, &root(g)).unwrap();
            let now = std::fs::read(&path).unwrap();
            changed_page(&last, &now);
            last = now;
            assert_eq!(a.load(&keys).unwrap(), Some(root(g)));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino, "not in place");

        // The anchored root again: nothing is written.
        a.store(&keys, &root(11)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), last);
        assert_eq!(a.load(&keys).unwrap(), Some(root(11)));

        // An older root (or the same generation with other data), which only an accepted
        // rollback stores, never goes into a record slot beside the newer one: it replaces
        // the whole file, both records, durably.
        for back in [
            root(9),
            Root {
                generation: 9,
                acc: [0xee; 32],
            },
        ] {
            let ino = std::fs::metadata(&path).unwrap().ino();
            a.store(&keys, &back).unwrap();
            assert_ne!(std::fs::metadata(&path).unwrap().ino(), ino, "in place");
            assert_eq!(a.load(&keys).unwrap(), Some(back));
            let x = std::fs::read(&path).unwrap();
            for page in [PAGE, 2 * PAGE] {
                let mut y = x.clone();
                y[page] ^= 1;
                std::fs::write(&path, &y).unwrap();
                assert_eq!(a.load(&keys).unwrap(), Some(back), "page {page} changed");
            }
            std::fs::write(&path, &x).unwrap();
        }
        // Forward again, in place from the new file.
        a.store(&keys, &root(10)).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root(10)));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temp left"
        );
    }

    #[test]
    fn a_first_format_anchor_is_read_and_replaced_at_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(VOL);
        let keys = new_keys();
        let a = Anchor::new(dir.path(), VOL);
        let mut plain = [0u8; PLAIN_LEN];
        plain[..8].copy_from_slice(&7u64.to_le_bytes());
        plain[8..].copy_from_slice(&root(7).acc);
        let mut v1 = b"CVANCHR1".to_vec();
        v1.extend_from_slice(&aead::seal_secret(
            &keys.anchor_key(),
            b"cryptvol volume anchor v1\0vol-0123456789abcdef0",
            &plain,
        ));
        assert_eq!(v1.len(), 76);
        std::fs::write(&path, &v1).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root(7)));
        for i in 0..v1.len() {
            let mut x = v1.clone();
            x[i] ^= 1;
            std::fs::write(&path, &x).unwrap();
            assert!(
                is_tampered(a.load(&keys)),
                "byte {i} of a first-format anchor"
            );
        }
        std::fs::write(&path, &v1).unwrap();
        assert!(is_tampered(a.load(&new_keys())), "another key");

        a.store(&keys, &root(8)).unwrap();
        let now = std::fs::read(&path).unwrap();
        assert_eq!(&now[..8], b"CVANCHR2");
        assert_eq!(now.len(), FILE_LEN);
        assert_eq!(a.load(&keys).unwrap(), Some(root(8)));
        a.store(&keys, &root(9)).unwrap();
        assert_eq!(a.load(&keys).unwrap(), Some(root(9)));
    }
}
