//! Chunks of a volume that still live in an object store (lazy restore, as EBS restores a
//! volume from a snapshot in S3): the pool records them in its `remote` table instead of
//! the map, and the first read or write of one fetches it, checks it, and stores its
//! ciphertext in a fresh slot as is (the object holds the chunk's XTS ciphertext under the
//! volume's own data key and tweaks, so no key is needed to store it).
//!
//! A (owner, chunk) is in the map, or remote, or neither (unwritten: reads zeros), never
//! both. The object store itself is behind [`ChunkFetcher`]; the region daemon builds one
//! from the region's config (`daemon::fetcher`).

use super::error::{Result, VolumeError};

/// One chunk of a volume that lives in the object store: the object's key (relative to
/// the store's prefix), the blake3 of its bytes (the chunk's XTS ciphertext, as the pool
/// would hold it: same data key, tweaks `domain << 64 | block`), its length in bytes
/// (= the chunk size), the tweak domain its blocks were encrypted in, and for an
/// authenticated volume its slot record (encoded, every block in the slot's first half:
/// the object holds the chunk assembled), which the fetched slot gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChunk {
    pub object: String,
    pub blake3: [u8; 32],
    pub len: u32,
    pub domain: u64,
    pub record: Option<Vec<u8>>,
}

/// Fetches chunk objects: the lead implements it over S3.
pub trait ChunkFetcher: Send + Sync {
    /// Fills `buf` (exactly `chunk.len` bytes) with the object's bytes. The pool checks
    /// blake3 itself; the fetcher reports a missing object or an I/O failure.
    fn fetch(&self, chunk: &RemoteChunk, buf: &mut [u8]) -> Result<(), VolumeError>;
}

/// Version byte of an encoded [`RemoteChunk`] (docs/formats.md, "Thin pool", `remote`):
/// a chunk in domain 0 without a record.
pub const REMOTE_ROW_V1: u8 = 1;
/// A chunk with a tweak domain and an optional slot record.
pub const REMOTE_ROW_V2: u8 = 2;
/// Bytes a version 2 row adds after the length: domain (8), record length (4).
const V2_EXTRA: usize = 8 + 4;
/// Longest object key accepted (S3's limit).
pub const MAX_OBJECT_KEY: usize = 1024;
/// Bytes before the object key: version, blake3, length.
const FIXED: usize = 1 + 32 + 4;

/// The fix every damaged-object error names.
pub const DAMAGED_FIX: &str = "the snapshot in the object store is damaged or was changed: restore the volume from another snapshot (or restore the object)";

impl RemoteChunk {
    /// The `remote` table's value: version 1 (domain 0, no record), blake3 (32 bytes),
    /// length (u32 LE), object key (UTF-8, the rest); or version 2, which puts the domain
    /// (u64 LE), the record's length (u32 LE, 0: none) and the record between the length
    /// and the object key.
    pub fn encode(&self) -> Vec<u8> {
        let v2 = self.domain != 0 || self.record.is_some();
        let rec = self.record.as_deref().unwrap_or(&[]);
        let mut out = Vec::with_capacity(FIXED + V2_EXTRA + rec.len() + self.object.len());
        out.push(if v2 { REMOTE_ROW_V2 } else { REMOTE_ROW_V1 });
        out.extend_from_slice(&self.blake3);
        out.extend_from_slice(&self.len.to_le_bytes());
        if v2 {
            out.extend_from_slice(&self.domain.to_le_bytes());
            out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
            out.extend_from_slice(rec);
        }
        out.extend_from_slice(self.object.as_bytes());
        out
    }

    /// Decodes a `remote` value; `what` names the row in errors.
    pub fn decode(b: &[u8], what: &str) -> Result<RemoteChunk> {
        let corrupt = |detail: &str| VolumeError::Corrupt {
            what: what.to_string(),
            detail: format!("{detail}: run `cryptvol pool check`"),
        };
        let v2 = match b.first() {
            None => return Err(corrupt("the remote chunk row is empty")),
            Some(&REMOTE_ROW_V1) => false,
            Some(&REMOTE_ROW_V2) => true,
            Some(&v) => {
                return Err(VolumeError::NewerFormat {
                    what: what.to_string(),
                    found: v as u64,
                    newest: REMOTE_ROW_V2 as u64,
                });
            }
        };
        if b.len() <= FIXED {
            return Err(corrupt("the remote chunk row is too short"));
        }
        let blake3: [u8; 32] = b[1..33].try_into().expect("32 bytes");
        let len = u32::from_le_bytes(b[33..37].try_into().expect("4 bytes"));
        let (domain, record, key) = if v2 {
            let extra = b
                .get(FIXED..FIXED + V2_EXTRA)
                .ok_or_else(|| corrupt("the remote chunk row is too short"))?;
            let domain = u64::from_le_bytes(extra[..8].try_into().expect("8 bytes"));
            let rec_len = u32::from_le_bytes(extra[8..].try_into().expect("4 bytes")) as usize;
            let start = FIXED + V2_EXTRA;
            let rec = b
                .get(start..start + rec_len)
                .ok_or_else(|| corrupt("the remote chunk row's record is truncated"))?;
            let record = (rec_len > 0).then(|| rec.to_vec());
            (domain, record, &b[start + rec_len..])
        } else {
            (0, None, &b[FIXED..])
        };
        if key.is_empty() {
            return Err(corrupt("the remote chunk row is too short"));
        }
        let object = std::str::from_utf8(key)
            .map_err(|_| corrupt("the object key is not UTF-8"))?
            .to_string();
        Ok(RemoteChunk {
            object,
            blake3,
            len,
            domain,
            record,
        })
    }

    /// Checks a chunk before it is recorded: its length is the chunk size and its key is
    /// 1 to [`MAX_OBJECT_KEY`] bytes.
    pub fn validate(&self, chunk_size: u64) -> Result<()> {
        if self.len as u64 != chunk_size {
            return Err(VolumeError::invalid(
                "remote chunk",
                format!(
                    "object {} is {} bytes, but the volume's chunks are {chunk_size}",
                    self.object, self.len
                ),
            ));
        }
        if self.object.is_empty() || self.object.len() > MAX_OBJECT_KEY {
            return Err(VolumeError::invalid(
                "remote chunk",
                format!(
                    "object key {:?} must be 1 to {MAX_OBJECT_KEY} bytes",
                    self.object
                ),
            ));
        }
        Ok(())
    }
}

/// Where a fetch is for, to name it in errors: the owner (a volume), its region.
#[derive(Debug, Clone, Copy)]
pub struct FetchFor<'a> {
    pub owner: &'a str,
    pub region: &'a str,
}

/// Fetches `rc` (chunk `chunk` of `at.owner`) into `buf` (its length) and checks its blake3:
/// a wrong length, a mismatch or a fetch that fails is an error naming the volume, the
/// chunk and the object, never data.
pub fn fetch_checked(
    fetcher: Option<&dyn ChunkFetcher>,
    at: FetchFor,
    chunk: u64,
    rc: &RemoteChunk,
    buf: &mut [u8],
) -> Result<()> {
    let Some(fetcher) = fetcher else {
        return Err(VolumeError::NoSnapshotStore {
            volume: at.owner.to_string(),
            region: at.region.to_string(),
        });
    };
    let fail = |kind: super::error::ErrorKind, detail: String| VolumeError::RemoteChunk {
        owner: at.owner.to_string(),
        chunk,
        object: rc.object.clone(),
        kind,
        detail,
    };
    if buf.len() != rc.len as usize {
        return Err(fail(
            super::error::ErrorKind::Corrupt,
            format!(
                "its row says {} bytes, the chunk is {}: {DAMAGED_FIX}",
                rc.len,
                buf.len()
            ),
        ));
    }
    // A fetcher that fills only part of the buffer leaves zeros, which the hash catches.
    buf.fill(0);
    if let Err(e) = fetcher.fetch(rc, buf) {
        let detail = match e.kind() {
            // A wrong length or an unreadable object: the store's copy is not ours.
            super::error::ErrorKind::Corrupt => format!("{e}: {DAMAGED_FIX}"),
            _ => e.to_string(),
        };
        return Err(fail(e.kind(), detail));
    }
    if blake3::hash(buf).as_bytes() != &rc.blake3 {
        return Err(fail(
            super::error::ErrorKind::Corrupt,
            format!("its bytes do not match their blake3: {DAMAGED_FIX}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod test_fetcher {
    //! A fetcher over a directory (one file per object), for unit tests: the real S3
    //! fetcher is proven by the integration tests of the object store.

    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug)]
    pub struct DirFetcher {
        pub dir: PathBuf,
        /// Fetches per object key.
        pub calls: Mutex<HashMap<String, u32>>,
        /// Sleep in each fetch (widens the window of concurrent readers).
        pub delay: std::time::Duration,
    }

    impl DirFetcher {
        pub fn new(dir: PathBuf) -> DirFetcher {
            DirFetcher {
                dir,
                calls: Mutex::new(HashMap::new()),
                delay: std::time::Duration::ZERO,
            }
        }

        pub fn calls(&self, object: &str) -> u32 {
            self.calls.lock().unwrap().get(object).copied().unwrap_or(0)
        }

        pub fn total_calls(&self) -> u32 {
            self.calls.lock().unwrap().values().sum()
        }

        /// Stores `bytes` as `object` and returns its row.
        pub fn put(&self, object: &str, bytes: &[u8]) -> RemoteChunk {
            std::fs::write(self.dir.join(object), bytes).unwrap();
            RemoteChunk {
                object: object.to_string(),
                blake3: *blake3::hash(bytes).as_bytes(),
                len: bytes.len() as u32,
                domain: 0,
                record: None,
            }
        }
    }

    impl ChunkFetcher for DirFetcher {
        fn fetch(&self, chunk: &RemoteChunk, buf: &mut [u8]) -> Result<()> {
            *self
                .calls
                .lock()
                .unwrap()
                .entry(chunk.object.clone())
                .or_insert(0) += 1;
            std::thread::sleep(self.delay);
            let path = self.dir.join(&chunk.object);
            let bytes =
                std::fs::read(&path).map_err(|e| VolumeError::io("cannot read", &path, e))?;
            if bytes.len() != buf.len() {
                return Err(VolumeError::Corrupt {
                    what: format!("object {}", chunk.object),
                    detail: format!("{} bytes, expected {}", bytes.len(), buf.len()),
                });
            }
            buf.copy_from_slice(&bytes);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_refuse_damage() {
        let rc = RemoteChunk {
            object: "snap-1/chunks/000007".into(),
            blake3: [7; 32],
            len: 1 << 20,
            domain: 0,
            record: None,
        };
        let b = rc.encode();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..33], &[7; 32]);
        assert_eq!(&b[33..37], &(1u32 << 20).to_le_bytes());
        assert_eq!(&b[37..], rc.object.as_bytes());
        assert_eq!(RemoteChunk::decode(&b, "row").unwrap(), rc);
        let mut newer = b.clone();
        newer[0] = 3;
        assert!(matches!(
            RemoteChunk::decode(&newer, "row"),
            Err(VolumeError::NewerFormat { .. })
        ));
        assert!(matches!(
            RemoteChunk::decode(&b[..37], "row"),
            Err(VolumeError::Corrupt { .. })
        ));
        assert!(RemoteChunk::decode(&[], "row").is_err());
        assert!(rc.validate(1 << 20).is_ok());
        assert!(rc.validate(1 << 16).is_err());
    }

    #[test]
    fn version_2_rows_carry_a_domain_and_a_record() {
        let rc = RemoteChunk {
            object: "chunks/vol-1/ab-01".into(),
            blake3: [3; 32],
            len: 1 << 16,
            domain: 0x1234,
            record: Some(vec![5; 40]),
        };
        let b = rc.encode();
        assert_eq!(b[0], 2);
        assert_eq!(&b[37..45], &0x1234u64.to_le_bytes());
        assert_eq!(&b[45..49], &40u32.to_le_bytes());
        assert_eq!(&b[49..89], &[5; 40]);
        assert_eq!(&b[89..], rc.object.as_bytes());
        assert_eq!(RemoteChunk::decode(&b, "row").unwrap(), rc);
        // A domain alone, no record.
        let plain = RemoteChunk {
            record: None,
            ..rc.clone()
        };
        assert_eq!(RemoteChunk::decode(&plain.encode(), "row").unwrap(), plain);
        // A record longer than the row, or no object key after it.
        assert!(RemoteChunk::decode(&b[..60], "row").is_err());
        assert!(RemoteChunk::decode(&b[..89], "row").is_err());
    }
}
