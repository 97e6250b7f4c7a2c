//! How a CLI command reaches a region's volumes: through the region daemon when one runs
//! (it owns the pool while volumes are attached), else by opening the pool itself. Both
//! paths run the same `Pool` methods, the daemon's on the far side of the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::{Client, Request};
use crate::kms::b64;
use crate::kms::region::RegionDir;
use crate::snapshot::SnapshotRecord;
use crate::snapshot::reencrypt::{CopyJob, CopyStats, run_job};
use crate::volume::error::Result;
use crate::volume::ids::SlotNo;
use crate::volume::{Pool, VolumeError, VolumeHeader, VolumeId};

pub enum PoolAccess {
    Local(Arc<Pool>),
    Daemon(Client),
}

fn header_from(v: serde_json::Value) -> Result<VolumeHeader> {
    let s = v.as_str().ok_or_else(|| VolumeError::Corrupt {
        what: "daemon response".into(),
        detail: "expected a header".into(),
    })?;
    let bytes = b64::decode(s).map_err(|e| VolumeError::Corrupt {
        what: "daemon response".into(),
        detail: e.to_string(),
    })?;
    VolumeHeader::decode(&bytes)
}

impl PoolAccess {
    /// The daemon if it runs, else the pool itself. A daemon that is starting or stopping
    /// holds the pool for a moment: retry for a few seconds before giving up.
    pub fn open(region: &RegionDir) -> Result<PoolAccess> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = Client::connect(region) {
                return Ok(PoolAccess::Daemon(c));
            }
            match Pool::open(region) {
                Ok(p) => return Ok(PoolAccess::Local(Arc::new(p))),
                Err(VolumeError::PoolBusy { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn is_daemon(&self) -> bool {
        matches!(self, PoolAccess::Daemon(_))
    }

    pub fn list_volumes(&self) -> Result<Vec<VolumeHeader>> {
        match self {
            PoolAccess::Local(p) => p.list_volumes(),
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::ListVolumes)?;
                v.as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(header_from)
                    .collect()
            }
        }
    }

    pub fn get_volume(&self, id: &VolumeId) -> Result<Option<VolumeHeader>> {
        match self {
            PoolAccess::Local(p) => p.get_volume(id),
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::GetVolume { volume: id.clone() })?;
                if v.is_null() {
                    Ok(None)
                } else {
                    header_from(v).map(Some)
                }
            }
        }
    }

    /// A volume by id or by name.
    pub fn find(&self, id_or_name: &str, region: &str) -> Result<VolumeHeader> {
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

    pub fn create_volume(&self, h: &VolumeHeader) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.create_volume(h),
            PoolAccess::Daemon(c) => c
                .call(&Request::CreateVolume {
                    header: b64::encode(&h.encode()),
                })
                .map(|_| ()),
        }
    }

    pub fn update_volume(&self, h: &VolumeHeader) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.update_volume(h),
            PoolAccess::Daemon(c) => c
                .call(&Request::UpdateVolume {
                    header: b64::encode(&h.encode()),
                })
                .map(|_| ()),
        }
    }

    pub fn delete_volume(&self, h: &VolumeHeader) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.delete_volume(h),
            PoolAccess::Daemon(c) => c
                .call(&Request::DeleteVolume {
                    volume: h.id.clone(),
                })
                .map(|_| ()),
        }
    }

    pub fn allocated_bytes(&self, h: &VolumeHeader) -> Result<u64> {
        match self {
            PoolAccess::Local(p) => p.allocated_bytes(h),
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::AllocatedBytes {
                    volume: h.id.clone(),
                })?;
                Ok(v.as_u64().unwrap_or(0))
            }
        }
    }

    // ---- snapshots --------------------------------------------------------------------

    pub fn create_snapshot(&self, vol: &VolumeHeader, rec: &SnapshotRecord) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.create_snapshot(vol, rec.id.as_str(), &rec.encode()),
            PoolAccess::Daemon(c) => c
                .call(&Request::CreateSnapshot {
                    volume: vol.id.clone(),
                    record: b64::encode(&rec.encode()),
                })
                .map(|_| ()),
        }
    }

    pub fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        let raw: Vec<Vec<u8>> = match self {
            PoolAccess::Local(p) => p.list_snapshots()?,
            PoolAccess::Daemon(c) => c
                .call(&Request::ListSnapshots)?
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|v| bytes_from(&v))
                .collect::<Result<_>>()?,
        };
        raw.iter().map(|b| SnapshotRecord::decode(b)).collect()
    }

    pub fn get_snapshot(&self, id: &str, region: &str) -> Result<SnapshotRecord> {
        let raw = match self {
            PoolAccess::Local(p) => p.get_snapshot(id)?,
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::GetSnapshot {
                    snapshot: id.to_string(),
                })?;
                if v.is_null() {
                    None
                } else {
                    Some(bytes_from(&v)?)
                }
            }
        };
        let raw = raw.ok_or_else(|| VolumeError::NotFound {
            name: format!("snapshot {id}"),
            region: region.to_string(),
        })?;
        SnapshotRecord::decode(&raw)
    }

    pub fn delete_snapshot(&self, rec: &SnapshotRecord) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.delete_snapshot(rec.id.as_str(), rec.volume.chunk_shift),
            PoolAccess::Daemon(c) => c
                .call(&Request::DeleteSnapshot {
                    snapshot: rec.id.to_string(),
                })
                .map(|_| ()),
        }
    }

    pub fn restore_volume(&self, rec: &SnapshotRecord, h: &VolumeHeader) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.restore_volume(rec.id.as_str(), h),
            PoolAccess::Daemon(c) => c
                .call(&Request::RestoreVolume {
                    snapshot: rec.id.to_string(),
                    header: b64::encode(&h.encode()),
                })
                .map(|_| ()),
        }
    }

    pub fn load_map(&self, owner: &str) -> Result<Vec<(u64, SlotNo)>> {
        match self {
            PoolAccess::Local(p) => p.load_map(owner),
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::LoadMap {
                    owner: owner.to_string(),
                })?;
                let rows: Vec<(u64, u64)> =
                    serde_json::from_value(v).map_err(|e| VolumeError::Corrupt {
                        what: "daemon response".into(),
                        detail: e.to_string(),
                    })?;
                Ok(rows.into_iter().map(|(c, s)| (c, SlotNo(s))).collect())
            }
        }
    }

    /// Copies in progress in this pool: (owner, record).
    pub fn pending(&self) -> Result<Vec<(String, Vec<u8>)>> {
        match self {
            PoolAccess::Local(p) => p.pending(),
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::ListPending)?;
                let rows: Vec<(String, String)> =
                    serde_json::from_value(v).map_err(|e| VolumeError::Corrupt {
                        what: "daemon response".into(),
                        detail: e.to_string(),
                    })?;
                rows.into_iter()
                    .map(|(o, b)| bytes_from(&serde_json::Value::String(b)).map(|b| (o, b)))
                    .collect()
            }
        }
    }

    pub fn abandon_pending(&self, owner: &str, chunk_shift: u8) -> Result<()> {
        match self {
            PoolAccess::Local(p) => p.abandon_pending(owner, chunk_shift),
            PoolAccess::Daemon(c) => c
                .call(&Request::AbandonPending {
                    owner: owner.to_string(),
                    chunk_shift,
                })
                .map(|_| ()),
        }
    }

    /// Runs a copy job wherever the pool is owned: here (with `progress`) or in the daemon.
    pub fn run_copy(&self, job: CopyJob, progress: &(dyn Fn(u64) + Sync)) -> Result<CopyStats> {
        match self {
            PoolAccess::Local(p) => run_job(p, &job, progress),
            PoolAccess::Daemon(c) => {
                let v = c.call(&Request::RunCopy { job })?;
                serde_json::from_value(v).map_err(|e| VolumeError::Corrupt {
                    what: "daemon response".into(),
                    detail: e.to_string(),
                })
            }
        }
    }
}

fn bytes_from(v: &serde_json::Value) -> Result<Vec<u8>> {
    let s = v.as_str().ok_or_else(|| VolumeError::Corrupt {
        what: "daemon response".into(),
        detail: "expected base64".into(),
    })?;
    b64::decode(s).map_err(|e| VolumeError::Corrupt {
        what: "daemon response".into(),
        detail: e.to_string(),
    })
}
