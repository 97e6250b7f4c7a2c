//! The region's Secrets Manager store: one file, `secrets/store.cvsm`, sealed with
//! AES-256-GCM under a key the region's KMS derives for it, so names, tags and policies
//! are private and no byte of it can be changed unnoticed (docs/formats.md). The values
//! inside are sealed once more, each under its own KMS data key (`envelope.rs`).
//!
//! Lock discipline as the keystore's: every change is a read-modify-write under
//! `secrets/store.lock` (flock), written atomically (temp file, fsync, rename, fsync the
//! directory), so a crash leaves the old store or the new one. Readers need no lock.
//! Secrets whose recovery window has ended are dropped on every read and write.

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::model::StoreBody;
use crate::aws::AwsError;
use crate::crypto::Key256;
use crate::crypto::aead;
use crate::sys::clock::UnixTime;
use crate::sys::fsio::{self, FileLock};

const MAGIC: &[u8; 8] = b"CVSM\x00\x00\x00\x01";

pub struct Store {
    dir: PathBuf,
    key: Key256,
    /// Associated data of the seal: the magic and the region, so a store cannot be moved
    /// to another region's directory.
    aad: Vec<u8>,
}

impl Store {
    pub fn new(dir: PathBuf, key: Key256, region: &str) -> Store {
        let mut aad = MAGIC.to_vec();
        aad.extend_from_slice(region.as_bytes());
        Store { dir, key, aad }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("store.cvsm")
    }

    /// The store as it is now (empty if none was written), without expired secrets.
    pub fn load(&self, now: UnixTime) -> Result<StoreBody, AwsError> {
        let path = self.path();
        let missing = || {
            AwsError::Corrupt {
            path: path.clone(),
            what: "is missing, though this region had a Secrets Manager store (secrets/store.lock): restore it from a backup, or remove store.lock to start with no secrets".into(),
        }
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // The lock file is made after the first store (`create_empty`): without it,
            // there never was one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.lock_path().exists() => {
                return Ok(StoreBody::default());
            }
            // The lock file is there, so the store was made before it: perhaps just after
            // our read. Read again; missing now, it is lost.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(AwsError::io("read", &path, e)),
            },
            Err(e) => return Err(AwsError::io("read", &path, e)),
        };
        let corrupt = |what: &str| AwsError::Corrupt {
            path: path.clone(),
            what: what.to_string(),
        };
        let sealed = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt("not a cryptvol Secrets Manager store (bad magic)"))?;
        let plain = aead::open_secret(&self.key, &self.aad, sealed).map_err(|_| {
            corrupt("does not authenticate under this region's key: it was altered or belongs to another region")
        })?;
        let mut body: StoreBody = serde_json::from_slice(plain.expose())
            .map_err(|e| corrupt(&format!("its content does not parse: {e}")))?;
        purge_expired(&mut body, now);
        Ok(body)
    }

    /// Applies `change` to the store under its lock and writes the result, unless
    /// `change` fails (then nothing is written).
    pub fn mutate<T>(
        &self,
        now: UnixTime,
        change: impl FnOnce(&mut StoreBody) -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        fsio::create_private_dir(&self.dir).map_err(|e| AwsError::io("create", &self.dir, e))?;
        let lock_path = self.lock_path();
        if !lock_path.exists() {
            self.create_empty()?;
        }
        let _lock =
            FileLock::exclusive(&lock_path).map_err(|e| AwsError::io("lock", &lock_path, e))?;
        self.remove_stale_copies();
        let mut body = self.load(now)?;
        let out = change(&mut body)?;
        self.write(&body)?;
        Ok(out)
    }

    /// Makes the first, empty store, before the lock file exists: a reader (who takes no
    /// lock) that finds the lock file without the store takes the store for lost, so the
    /// store must never be missing once the lock file is there. (It was written just after
    /// the lock file was made, and a reader in between failed with "is missing".) Of two
    /// first writers one creates it; the other finds it made.
    fn create_empty(&self) -> Result<(), AwsError> {
        let path = self.path();
        match fsio::create_atomic(&path, &self.seal(&StoreBody::default()), 0o600) {
            Ok(()) => Ok(()),
            // Made by another first writer (whose clean-up may even have taken our temp file).
            Err(_) if path.exists() => Ok(()),
            Err(e) => Err(AwsError::io("write", &path, e)),
        }
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("store.lock")
    }

    /// Removes the temporary copies a writer killed mid-write left (under the lock no
    /// writer is running): each is a whole sealed store, versions since deleted included.
    fn remove_stale_copies(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(".store.cvsm.tmp-")
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    fn write(&self, body: &StoreBody) -> Result<(), AwsError> {
        let path = self.path();
        fsio::write_atomic(&path, &self.seal(body), 0o600)
            .map_err(|e| AwsError::io("write", &path, e))
    }

    /// The file's bytes for `body`: the magic, then the sealed JSON.
    fn seal(&self, body: &StoreBody) -> Vec<u8> {
        let plain = Zeroizing::new(serde_json::to_vec(body).expect("the store serializes"));
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&aead::seal_secret(&self.key, &self.aad, &plain));
        bytes
    }
}

/// Drops the secrets whose recovery window has ended: they no longer exist.
fn purge_expired(body: &mut StoreBody, now: UnixTime) {
    body.secrets
        .retain(|_, s| s.deletion.is_none_or(|d| d.date > now));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader (lock-free) while the region's first change is written: it sees no store
    /// or the new one, never "is missing" (the lock file was made before the store, and a
    /// reader in between took the store for lost: seen as a flake of the lifecycle race
    /// test). Each round is a fresh directory, so every first write has its window.
    #[test]
    fn a_reader_during_the_first_write_never_finds_the_store_missing() {
        for round in 0..40 {
            let d = tempfile::tempdir().unwrap();
            let dir = d.path().join("secrets");
            let key = Key256::generate();
            let writer = Store::new(dir.clone(), key.clone(), "test-1");
            let reader = Store::new(dir, key, "test-1");
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|s| {
                s.spawn(|| {
                    writer.mutate(0, |_| Ok(())).unwrap();
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                });
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    if let Err(e) = reader.load(0) {
                        panic!("round {round}: a reader during the first write: {e}");
                    }
                }
            });
            reader.load(0).unwrap();
        }
    }
}
