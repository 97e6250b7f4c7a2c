//! Snapshots: point-in-time, read-only copies of a volume's map that share its pool slots
//! (so they are instant and incremental), and restore into new copy-on-write volumes.
//! The record format is in docs/formats.md, "Snapshot record". The pool does the
//! sharing (`Pool::create_snapshot`, `restore_volume`, `delete_snapshot`); this layer
//! decides what a snapshot remembers and what restore makes of it.

use std::collections::HashSet;

pub mod archive;
pub mod catalog;
pub mod reencrypt;
pub mod store;
pub mod throttle;
pub mod transfer;

use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::{SlotNo, SnapshotId, VolumeId};
use crate::volume::{VolumeHeader, header, record};

pub const MAGIC: [u8; 8] = *b"CVSNAPSH";
pub const FORMAT_V1: u16 = 1;

/// What a snapshot remembers: its id and description, when it was taken, and the source
/// volume's header at that moment (size, chunk size, key, lineage), which is all a
/// restore needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    pub id: SnapshotId,
    pub description: String,
    /// Nanoseconds since the Unix epoch: orders snapshots taken within one second.
    pub created_ns: i64,
    pub volume: VolumeHeader,
}

impl SnapshotRecord {
    pub fn new(volume: &VolumeHeader, description: &str, now_ns: i64) -> Result<SnapshotRecord> {
        if description.len() > 255 {
            return Err(VolumeError::invalid(
                "description",
                "at most 255 characters, as EBS",
            ));
        }
        Ok(SnapshotRecord {
            id: SnapshotId::random(),
            description: description.to_string(),
            created_ns: now_ns,
            volume: volume.clone(),
        })
    }

    /// `magic ‖ u16 version ‖ i64 created (ns) ‖ (u16 len ‖ id) ‖ (u16 len ‖ description) ‖
    /// (u16 len ‖ volume header) ‖ blake3`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = record::begin(&MAGIC, FORMAT_V1);
        out.extend_from_slice(&self.created_ns.to_le_bytes());
        record::push_field(&mut out, self.id.as_str().as_bytes());
        record::push_field(&mut out, self.description.as_bytes());
        record::push_field(&mut out, &self.volume.encode());
        record::seal(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<SnapshotRecord> {
        let mut r = record::Reader::open(bytes, &MAGIC, FORMAT_V1, 8, "snapshot record")?;
        let created_ns = i64::from_le_bytes(r.fixed(8)?.try_into().expect("8"));
        let id = SnapshotId::parse(&r.text()?).ok_or_else(|| r.corrupt("bad snapshot id"))?;
        let description = r.text()?;
        let volume = VolumeHeader::decode(r.field()?)?;
        r.finish()?;
        Ok(SnapshotRecord {
            id,
            description,
            created_ns,
            volume,
        })
    }

    /// Creation time in whole seconds.
    pub fn created(&self) -> i64 {
        self.created_ns.div_euclid(1_000_000_000)
    }

    pub fn restored_header(&self, name: &str, size: Option<u64>, now: i64) -> Result<VolumeHeader> {
        let size = size.unwrap_or(self.volume.size);
        VolumeHeader::validate_size(size)?;
        if size < self.volume.size {
            return Err(VolumeError::invalid(
                "size",
                format!(
                    "{size} bytes is smaller than the snapshot ({} bytes)",
                    self.volume.size
                ),
            ));
        }
        header::check_name(name)?;
        Ok(VolumeHeader {
            id: VolumeId::random(),
            name: name.to_string(),
            size,
            created: now,
            ..self.volume.clone()
        })
    }
}

crate::serde_as_binary_record!(SnapshotRecord);

/// Space accounting of a snapshot against the one before it (of the same volume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapshotUsage {
    /// Bytes of written chunks the snapshot holds.
    pub data_bytes: u64,
    /// Of those, bytes whose slots the previous snapshot also holds (not stored twice).
    pub shared_with_previous_bytes: u64,
    /// Bytes this snapshot added to the pool relative to the previous one: the changed data.
    pub unique_bytes: u64,
}

pub fn usage(
    map: &[(u64, SlotNo)],
    previous: Option<&[(u64, SlotNo)]>,
    chunk: u64,
) -> SnapshotUsage {
    let prev: HashSet<SlotNo> = previous.unwrap_or(&[]).iter().map(|(_, s)| *s).collect();
    let shared = map.iter().filter(|(_, s)| prev.contains(s)).count() as u64;
    SnapshotUsage {
        data_bytes: map.len() as u64 * chunk,
        shared_with_previous_bytes: shared * chunk,
        unique_bytes: (map.len() as u64 - shared) * chunk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Region;
    use crate::volume::KeySource;

    fn vol() -> VolumeHeader {
        VolumeHeader {
            id: VolumeId::random(),
            lineage: "vol-0123456789abcdef0".into(),
            region: Region::parse("local-1").unwrap(),
            name: "db".into(),
            size: 1 << 30,
            chunk_shift: 20,
            created: 5,
            key: KeySource::Customer {
                salt: [1; 16],
                verifier: [2; 32],
            },
            integrity: false,
        }
    }

    /// The exact framing of docs/formats.md, "Snapshot record": magic, version, creation
    /// time in ns, then id, description and the volume header, each `u16 length ‖ bytes`,
    /// then blake3. A newer version says "upgrade cryptvol".
    #[test]
    fn exact_bytes_and_newer_version() {
        let r = SnapshotRecord {
            id: SnapshotId::parse("snap-0123456789abcdef0").unwrap(),
            description: "d".into(),
            created_ns: 1_795_000_000_123_456_789,
            volume: vol(),
        };
        let b = r.encode();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&b[..18]), "4356534e415053480100154d2f63fd1ee918");
        assert_eq!(&b[18..20], &[22, 0]);
        assert_eq!(&b[20..42], b"snap-0123456789abcdef0");
        assert_eq!(&b[42..45], &[1, 0, b'd']);
        let h = r.volume.encode();
        assert_eq!(b[45..47], (h.len() as u16).to_le_bytes());
        assert_eq!(&b[47..47 + h.len()], h.as_slice());
        assert_eq!(b.len(), 47 + h.len() + 32);
        assert_eq!(
            &b[b.len() - 32..],
            blake3::hash(&b[..b.len() - 32]).as_bytes()
        );

        let mut t = b.clone();
        t[8] = 2;
        let e = SnapshotRecord::decode(&t).unwrap_err();
        assert!(
            matches!(e, VolumeError::NewerFormat { found: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().ends_with("upgrade cryptvol"), "{e}");
    }

    #[test]
    fn record_roundtrip_and_every_byte_checked() {
        let r = SnapshotRecord::new(&vol(), "nightly", 99).unwrap();
        let b = r.encode();
        assert_eq!(SnapshotRecord::decode(&b).unwrap(), r);
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 4;
            // A flip in the version field reads as a newer version (not damage: the
            // version is checked before the checksum); any other byte is damage.
            let refused = SnapshotRecord::decode(&t);
            assert!(
                matches!(refused, Err(VolumeError::Corrupt { .. }))
                    || matches!(refused, Err(VolumeError::NewerFormat { .. }))
                        && (8..10).contains(&i),
                "byte {i}: {refused:?}"
            );
        }
    }

    #[test]
    fn restore_keeps_key_and_lineage_and_refuses_shrinking() {
        let r = SnapshotRecord::new(&vol(), "", 1).unwrap();
        let h = r.restored_header("copy", None, 7).unwrap();
        assert_ne!(h.id, r.volume.id);
        assert_eq!(h.lineage, r.volume.lineage);
        assert_eq!(h.key, r.volume.key);
        assert_eq!(h.name, "copy");
        assert!(matches!(
            r.restored_header("", Some(1 << 20), 7),
            Err(VolumeError::InvalidArgument { what, .. }) if what == "size"
        ));
        assert_eq!(
            r.restored_header("", Some(2 << 30), 7).unwrap().size,
            2 << 30
        );
    }

    #[test]
    fn usage_counts_shared_and_unique_chunks() {
        let prev = [(0, SlotNo(1)), (1, SlotNo(2)), (2, SlotNo(3))];
        let now = [
            (0, SlotNo(1)),
            (1, SlotNo(9)),
            (2, SlotNo(3)),
            (3, SlotNo(10)),
        ];
        let u = usage(&now, Some(&prev), 1 << 20);
        assert_eq!(u.data_bytes, 4 << 20);
        assert_eq!(u.shared_with_previous_bytes, 2 << 20);
        assert_eq!(u.unique_bytes, 2 << 20);
        assert_eq!(usage(&now, None, 1 << 20).unique_bytes, 4 << 20);
    }
}

/// A copy in progress, kept in the destination pool's `pending` table until it finishes:
/// enough to resume it (the destination's wrapped data key is in `target`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingCopy {
    /// `volume create --from-snapshot --kms-key`: `header` is the new volume's (base64).
    Restore {
        source_snapshot: String,
        header: String,
    },
    /// `snapshot copy`: `record` is the new snapshot's (base64).
    Copy {
        source_region: String,
        source_snapshot: String,
        record: String,
    },
}

impl PendingCopy {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("serialises")
    }

    pub fn decode(b: &[u8]) -> Result<PendingCopy> {
        serde_json::from_slice(b).map_err(|e| VolumeError::Corrupt {
            what: "pending copy record".into(),
            detail: e.to_string(),
        })
    }
}

impl PendingCopy {
    /// The snapshot this copy reads, if it lives in `region` (then its lease is in the
    /// same pool as the copy).
    pub fn source_in(&self, region: &str) -> Option<&str> {
        match self {
            PendingCopy::Restore {
                source_snapshot, ..
            } => Some(source_snapshot),
            PendingCopy::Copy {
                source_region,
                source_snapshot,
                ..
            } => (source_region == region).then_some(source_snapshot),
        }
    }
}

/// [`SnapshotOwners`] for the pool of `region`, which also knows which lease holders
/// (`<region>/<copy id>`) are copies into that same pool.
pub struct RegionOwners<'a>(pub &'a str);

impl crate::volume::check::OwnerRecords for RegionOwners<'_> {
    fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)> {
        SnapshotOwners.snapshot(record)
    }

    fn pending(&self, record: &[u8]) -> Result<(u8, u64)> {
        SnapshotOwners.pending(record)
    }

    fn local_holder(&self, holder: &str) -> bool {
        holder
            .strip_prefix(self.0)
            .is_some_and(|rest| rest.starts_with('/'))
    }

    fn snapshot_authenticated(&self, record: &[u8]) -> Option<bool> {
        SnapshotOwners.snapshot_authenticated(record)
    }

    fn pending_authenticated(&self, record: &[u8]) -> Option<bool> {
        SnapshotOwners.pending_authenticated(record)
    }
}

/// How the pool checker (`volume::check`) reads the records this layer owns: snapshot
/// records and copies in progress, as (chunk shift, size in bytes) of their maps.
pub struct SnapshotOwners;

impl SnapshotOwners {
    /// The header of the object a `pending` row will become.
    fn pending_header(record: &[u8]) -> Result<VolumeHeader> {
        let b64 = |s: &str| {
            crate::aws::b64::decode(s).map_err(|e| VolumeError::Corrupt {
                what: "pending copy record".into(),
                detail: e.to_string(),
            })
        };
        match PendingCopy::decode(record)? {
            PendingCopy::Restore { header, .. } => VolumeHeader::decode(&b64(&header)?),
            PendingCopy::Copy { record, .. } => Ok(SnapshotRecord::decode(&b64(&record)?)?.volume),
        }
    }
}

impl crate::volume::check::OwnerRecords for SnapshotOwners {
    fn snapshot(&self, record: &[u8]) -> Result<(u8, u64)> {
        let r = SnapshotRecord::decode(record)?;
        Ok((r.volume.chunk_shift, r.volume.size))
    }

    fn pending(&self, record: &[u8]) -> Result<(u8, u64)> {
        let h = Self::pending_header(record)?;
        Ok((h.chunk_shift, h.size))
    }

    fn snapshot_authenticated(&self, record: &[u8]) -> Option<bool> {
        SnapshotRecord::decode(record)
            .ok()
            .map(|r| r.volume.integrity)
    }

    /// A copy of an authenticated snapshot writes a record for every slot it fills
    /// (`reencrypt`), so its rows are checked as the finished object's will be.
    fn pending_authenticated(&self, record: &[u8]) -> Option<bool> {
        Self::pending_header(record).ok().map(|h| h.integrity)
    }
}
