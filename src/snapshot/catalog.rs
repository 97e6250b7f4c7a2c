//! The typed pool catalog: every operation a command can ask of a region's pool, written
//! once. Two implementations, in the daemon layer: `PoolOwner` (this process owns the
//! pool: the CLI when no daemon runs, or the daemon itself) and `Client` (the region
//! daemon owns it; each call is one typed request on its control socket);
//! `daemon::catalog::open` picks the right one.

use super::reencrypt::{CopyJob, CopyStats};
use super::{PendingCopy, SnapshotRecord};
use crate::crypto::SecretBytes;
use crate::volume::check::{CheckReport, RepairReport};
use crate::volume::error::{Result, VolumeError};
use crate::volume::ids::SlotNo;
use crate::volume::remote::RemoteChunk;
use crate::volume::{VerifyReport, VolumeHeader, VolumeId};

/// What a copy job reports while it runs; returning false cancels it.
pub type Progress<'a> = &'a (dyn Fn(u64) -> bool + Sync);

pub trait Catalog {
    /// True when the region daemon owns the pool (volumes are attached).
    fn is_daemon(&self) -> bool;

    fn list_volumes(&self) -> Result<Vec<VolumeHeader>>;
    fn get_volume(&self, id: &VolumeId) -> Result<Option<VolumeHeader>>;
    /// Stores a new volume; fails if its id or name is taken.
    fn create_volume(&self, h: &VolumeHeader) -> Result<()>;
    /// Grows a volume (attached or not); returns the new header.
    fn resize_volume(&self, id: &VolumeId, size: u64) -> Result<VolumeHeader>;
    /// Deletes a detached volume and frees what only it used.
    fn delete_volume(&self, id: &VolumeId) -> Result<()>;
    fn allocated_bytes(&self, id: &VolumeId) -> Result<u64>;
    /// Where the volume is attached, if it is.
    fn attached_at(&self, id: &VolumeId) -> Result<Option<std::path::PathBuf>>;

    fn create_snapshot(&self, volume: &VolumeId, rec: &SnapshotRecord) -> Result<()>;
    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>>;
    fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>>;
    /// Refused while a copy holds a lease on it.
    fn delete_snapshot(&self, id: &str) -> Result<()>;
    /// A new volume sharing every slot of the snapshot (copy-on-write restore).
    fn restore_volume(&self, snapshot: &str, h: &VolumeHeader) -> Result<()>;
    /// The committed map of a volume, snapshot or copy in progress.
    fn load_map(&self, owner: &str) -> Result<Vec<(u64, SlotNo)>>;

    /// A durable claim that a copy reads `snapshot` (see `Pool::take_lease`).
    fn take_lease(&self, snapshot: &str, holder: &str) -> Result<()>;
    fn release_lease(&self, snapshot: &str, holder: &str) -> Result<()>;
    /// The holders of leases on `snapshot` (`<region>/<copy id>`).
    fn leases(&self, snapshot: &str) -> Result<Vec<String>>;
    /// Copies in progress: (destination id, record).
    fn pending(&self) -> Result<Vec<(String, PendingCopy)>>;
    /// Records a new copy in progress, before its source is leased and its first chunk
    /// copied: a lease then always belongs to a copy that is (or was) in progress.
    fn begin_copy(&self, owner: &str, pending: &PendingCopy) -> Result<()>;
    /// Abandons a copy in progress (a running one is cancelled first).
    fn abandon_pending(&self, owner: &str) -> Result<()>;
    /// Runs or resumes a copy where the pool is owned; `progress` returning false cancels.
    fn run_copy(&self, job: CopyJob, progress: Progress) -> Result<CopyStats>;

    /// A new volume whose listed chunks live in the object store (lazy restore), in one
    /// transaction; its id and name must be free. Reads fetch them on first use. `root`:
    /// an authenticated volume's first root (`roots` row), over its chunks' records.
    fn restore_remote_volume(
        &self,
        h: &VolumeHeader,
        chunks: Vec<(u64, RemoteChunk)>,
        root: Option<Vec<u8>>,
    ) -> Result<()>;
    /// Bytes of a volume still in the object store (0 once hydrated).
    fn remote_bytes(&self, id: &VolumeId) -> Result<u64>;
    /// The committed chunks of a volume or snapshot that live in the object store.
    fn load_remote(&self, owner: &str) -> Result<Vec<(u64, RemoteChunk)>>;
    /// Fetches every chunk of a volume still in the object store (attached or not),
    /// committing as it goes (an interrupted run resumes); `progress` gets bytes and
    /// returning false stops it. Returns the bytes fetched by this run.
    fn hydrate_volume(&self, id: &VolumeId, progress: Progress) -> Result<u64>;

    /// The slot record of every chunk an authenticated owner maps (encoded).
    fn load_records(&self, owner: &str, shift: u8) -> Result<Vec<(u64, Vec<u8>)>>;
    /// The tweak domain of every chunk `owner` maps whose slot is not in domain 0.
    fn load_domains(&self, owner: &str, shift: u8) -> Result<Vec<(u64, u64)>>;
    /// `volume verify`: checks every block of an authenticated volume and its root, with
    /// its data key (attached or not).
    fn verify_volume(&self, id: &VolumeId, data_key: &SecretBytes) -> Result<VerifyReport>;
    /// Blocks of an authenticated volume that failed their check when read.
    fn integrity_errors(&self, id: &VolumeId) -> Result<u64>;

    /// `pool check`: the invariants of the committed metadata (online too).
    fn check_pool(&self) -> Result<CheckReport>;
    /// `pool check --repair`: only with nothing attached and no copy running.
    fn repair_pool(&self) -> Result<RepairReport>;

    /// A volume by id or by name.
    fn find(&self, id_or_name: &str, region: &str) -> Result<VolumeHeader> {
        let found = match VolumeId::parse(id_or_name) {
            Some(id) => self.get_volume(&id)?,
            None => self
                .list_volumes()?
                .into_iter()
                .find(|h| h.name == id_or_name),
        };
        found.ok_or_else(|| VolumeError::NotFound {
            name: id_or_name.to_string(),
            region: region.to_string(),
        })
    }

    /// A snapshot by id, or a clear "not found".
    fn snapshot(&self, id: &str, region: &str) -> Result<SnapshotRecord> {
        self.get_snapshot(id)?.ok_or_else(|| VolumeError::NotFound {
            name: format!("snapshot {id}"),
            region: region.to_string(),
        })
    }

    /// Refuses a volume name another volume of the region has (an empty name is no name).
    /// Checked before any key or grant is made, so that a refusal changes nothing; the
    /// pool's owner checks again, atomically, when the volume is stored.
    fn refuse_taken_name(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Ok(());
        }
        match self.list_volumes()?.into_iter().find(|o| o.name == name) {
            Some(o) => Err(VolumeError::NameTaken {
                name: name.to_string(),
                id: o.id.to_string(),
            }),
            None => Ok(()),
        }
    }
}
