//! The local record of each archive job: `<region>/archive/<snap>.json` (its state and
//! progress, rewritten atomically as it goes) and `<snap>.lock` (flock'ed by the process
//! that runs it). A job whose lock is free and whose state is pending was interrupted:
//! running it again resumes it.
//!
//! Copies between stores keep their jobs apart, in `<region>/archive/copies/<dest>/`
//! ([`CopyJobs`]): they are resumed by re-running the copy, never by the region's
//! archiver, and a copy's snapshot is never taken for one of the region's own.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datadir::RegionDir;
use crate::sys::fsio::{self, FileLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveState {
    Pending,
    Completed,
    Error,
}

impl ArchiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            ArchiveState::Pending => "pending",
            ArchiveState::Completed => "completed",
            ArchiveState::Error => "error",
        }
    }
}

/// What `snapshot describe` shows of an archive, and what a resumed run starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ArchiveStatus {
    pub snapshot_id: String,
    pub volume_id: String,
    pub state: ArchiveState,
    /// 0..=100, as EBS's `Progress`.
    pub progress: u8,
    /// Written chunks of the snapshot.
    pub chunks: u64,
    /// Of those, chunks whose bytes the store already held (unchanged since an earlier
    /// archived snapshot of the lineage).
    pub chunks_reused: u64,
    /// Chunk objects uploaded by this snapshot's archive (all runs).
    pub chunks_uploaded: u64,
    pub bytes_uploaded: u64,
    /// The volume's previous archived snapshot, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `--max-bandwidth` of the job, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Why the last run stopped, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Nanoseconds since the epoch when the job started (orders a volume's archives).
    pub started_ns: i64,
    /// The process that runs (or last ran) the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl ArchiveStatus {
    pub fn new(snapshot: &str, volume: &str, max_bandwidth: Option<u64>, now_ns: i64) -> Self {
        ArchiveStatus {
            snapshot_id: snapshot.to_string(),
            volume_id: volume.to_string(),
            state: ArchiveState::Pending,
            progress: 0,
            chunks: 0,
            chunks_reused: 0,
            chunks_uploaded: 0,
            bytes_uploaded: 0,
            parent: None,
            max_bandwidth,
            error: None,
            started_ns: now_ns,
            pid: None,
        }
    }
}

/// A directory of jobs: the region's archives, or one destination's copies.
pub trait JobDir {
    fn jobs_dir(&self) -> PathBuf;
}

impl JobDir for RegionDir {
    fn jobs_dir(&self) -> PathBuf {
        self.archive_dir()
    }
}

/// The jobs of copies from this region's machine into one destination (a region and its
/// store): `<region>/archive/copies/<dest region>-<hash of the store>/`. Their spools and
/// copy records live there too.
pub struct CopyJobs(PathBuf);

impl CopyJobs {
    pub fn new(
        dir: &RegionDir,
        destination: &crate::aws::Region,
        store: &crate::snapshot::store::StoreConfig,
    ) -> CopyJobs {
        // The same s3://B/P behind two endpoints is two stores.
        let mut h = blake3::Hasher::new();
        h.update(store.url.as_bytes());
        h.update(b"\0");
        h.update(store.endpoint.as_deref().unwrap_or("").as_bytes());
        let tag = h.finalize().to_hex();
        CopyJobs(
            dir.archive_dir()
                .join("copies")
                .join(format!("{destination}-{}", &tag[..12])),
        )
    }
}

impl JobDir for CopyJobs {
    fn jobs_dir(&self) -> PathBuf {
        self.0.clone()
    }
}

fn status_path(dir: &impl JobDir, snapshot: &str) -> PathBuf {
    dir.jobs_dir().join(format!("{snapshot}.json"))
}

fn lock_path(dir: &impl JobDir, snapshot: &str) -> PathBuf {
    dir.jobs_dir().join(format!("{snapshot}.lock"))
}

fn io_error(what: &'static str, path: &Path, e: std::io::Error) -> crate::volume::VolumeError {
    crate::volume::VolumeError::io(what, path, e)
}

pub fn read(dir: &impl JobDir, snapshot: &str) -> Option<ArchiveStatus> {
    let bytes = std::fs::read(status_path(dir, snapshot)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write(dir: &impl JobDir, s: &ArchiveStatus) -> Result<(), crate::volume::VolumeError> {
    let d = dir.jobs_dir();
    fsio::create_private_dir(&d).map_err(|e| io_error("cannot create", &d, e))?;
    let p = status_path(dir, &s.snapshot_id);
    let bytes = serde_json::to_vec_pretty(s).expect("status serializes");
    fsio::write_atomic(&p, &bytes, fsio::PRIVATE_FILE).map_err(|e| io_error("cannot write", &p, e))
}

/// Forgets a job (its snapshot was deleted).
pub fn remove(dir: &impl JobDir, snapshot: &str) {
    let _ = std::fs::remove_file(status_path(dir, snapshot));
    let _ = std::fs::remove_file(lock_path(dir, snapshot));
}

/// Every job of the region.
pub fn list(dir: &impl JobDir) -> Vec<ArchiveStatus> {
    let Ok(rd) = std::fs::read_dir(dir.jobs_dir()) else {
        return Vec::new();
    };
    let mut out: Vec<ArchiveStatus> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            read(dir, name.strip_suffix(".json")?)
        })
        .collect();
    out.sort_by_key(|s| (s.started_ns, s.snapshot_id.clone()));
    out
}

/// The job's lock if no process runs it, else None.
pub fn try_lock(
    dir: &impl JobDir,
    snapshot: &str,
) -> Result<Option<FileLock>, crate::volume::VolumeError> {
    let d = dir.jobs_dir();
    fsio::create_private_dir(&d).map_err(|e| io_error("cannot create", &d, e))?;
    let p = lock_path(dir, snapshot);
    if let Some(lock) = handed_over(&p) {
        return Ok(Some(lock));
    }
    FileLock::try_exclusive(&p).map_err(|e| io_error("cannot lock", &p, e))
}

/// The job's lock, taken by the process that started this one and given as our stdin
/// (`cryptvol snapshot create` starting the archiver). Handed over rather than taken
/// again by the child, so that the job never looks interrupted between the two: a
/// `snapshot describe` in that window would start a second archiver (with its own
/// environment, which may lack the credentials the first had), and the first would find
/// the job busy.
fn handed_over(path: &Path) -> Option<FileLock> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned().ok()?);
    let (ours, lock) = (stdin.metadata().ok()?, std::fs::metadata(path).ok()?);
    if (ours.dev(), ours.ino()) != (lock.dev(), lock.ino()) {
        return None;
    }
    FileLock::adopt(stdin).ok().flatten()
}

/// The job's lock, waiting for a process that holds it.
pub fn lock(dir: &impl JobDir, snapshot: &str) -> Result<FileLock, crate::volume::VolumeError> {
    let d = dir.jobs_dir();
    fsio::create_private_dir(&d).map_err(|e| io_error("cannot create", &d, e))?;
    let p = lock_path(dir, snapshot);
    FileLock::exclusive(&p).map_err(|e| io_error("cannot lock", &p, e))
}

/// True when a process runs the job now.
pub fn is_running(dir: &impl JobDir, snapshot: &str) -> bool {
    lock_path(dir, snapshot).exists() && matches!(try_lock(dir, snapshot), Ok(None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Region;
    use crate::snapshot::store::StoreConfig;

    /// Copies into two destinations never share a job dir: not two regions, and not the
    /// same `s3://B/P` behind two endpoints (two different stores).
    #[test]
    fn copy_jobs_are_one_dir_per_destination_region_and_store() {
        let dir = RegionDir::new(
            std::path::Path::new("/d"),
            &Region::parse("here-1").unwrap(),
        );
        let eu = Region::parse("eu-1").unwrap();
        let us = Region::parse("us-1").unwrap();
        let at = |e: &str| StoreConfig::new("s3://bucket/p", Some(e), None).unwrap();
        let a = CopyJobs::new(&dir, &eu, &at("http://a:9000")).jobs_dir();
        assert_eq!(a, CopyJobs::new(&dir, &eu, &at("http://a:9000")).jobs_dir());
        assert_ne!(a, CopyJobs::new(&dir, &eu, &at("http://b:9000")).jobs_dir());
        assert_ne!(a, CopyJobs::new(&dir, &us, &at("http://a:9000")).jobs_dir());
        assert!(a.starts_with(dir.archive_dir().join("copies")), "{a:?}");
        // Apart from the region's own jobs: a listing of those never sees a copy's.
        assert_ne!(a.parent(), Some(dir.jobs_dir().as_path()));
    }
}
