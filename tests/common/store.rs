//! A snapshot store in moto's S3 for the archive tests: a region that archives into it,
//! volumes written through FUSE, and waiting for an archive to complete.

use std::time::Duration;

use serde_json::Value;

use super::moto::MotoServer;
use super::mount::*;
use super::server::{KeyUser, KmsServer};
use super::str_field;
use super::{Env, Out};

pub const BUCKET: &str = "cryptvol-snapshots";

/// A region with a snapshot store in moto, and the flags that name that store.
pub struct Store {
    pub moto: MotoServer,
    pub url: String,
}

impl Store {
    pub fn new(prefix: &str) -> Option<Store> {
        let moto = MotoServer::start()?;
        moto.create_bucket(BUCKET);
        Some(Store {
            url: format!("s3://{BUCKET}/{prefix}"),
            moto,
        })
    }

    pub fn flags(&self) -> Vec<String> {
        vec![
            "--snapshot-store".into(),
            self.url.clone(),
            "--s3-endpoint".into(),
            self.moto.endpoint.clone(),
        ]
    }

    pub fn env(&self) -> Vec<(&'static str, &'static str)> {
        MotoServer::credentials().to_vec()
    }

    /// Keys (with sizes) of the chunk objects in the store.
    pub fn chunk_objects(&self) -> Vec<(String, u64)> {
        let prefix = self.url.trim_start_matches(&format!("s3://{BUCKET}/"));
        self.moto.objects(BUCKET, &format!("{prefix}/chunks/"))
    }
}

/// Runs cryptvol in `env` with the store's credentials.
#[track_caller]
pub fn run(env: &Env, s: &Store, args: &[&str]) -> Out {
    env.run_env(args, &s.env())
}

#[track_caller]
pub fn json(env: &Env, s: &Store, args: &[&str]) -> Value {
    run(env, s, args).ok().json()
}

/// A data dir whose region archives into `s`.
pub fn machine(s: &Store) -> VolEnv {
    let v = VolEnv::uninit();
    let mut a = vec!["init"];
    let f = s.flags();
    a.extend(f.iter().map(String::as_str));
    json(&v, s, &a);
    v
}

/// Writes `data` at `off` of the volume through a FUSE attachment, and detaches.
pub fn write_volume(v: &VolEnv, vol: &str, writes: &[(u64, &[u8])]) {
    let dir = v.dir(&format!("mnt-{vol}"));
    let file = v.attach(vol, &dir, &[]);
    let f = open_rw(&file);
    for (off, data) in writes {
        pwrite(&f, *off, data);
    }
    f.sync_all().expect("fsync the volume");
    drop(f);
    v.detach(&dir);
}

pub fn describe(v: &VolEnv, s: &Store, snap: &str) -> Value {
    json(v, s, &["snapshot", "describe", snap])
}

/// Waits until the snapshot's archive completes; returns its description.
#[track_caller]
pub fn wait_completed(v: &VolEnv, s: &Store, snap: &str) -> Value {
    let mut last = Value::Null;
    let done = wait_until(Duration::from_secs(120), || {
        last = describe(v, s, snap);
        last["State"] == "completed"
    });
    let log = std::fs::read_to_string(v.region().join(format!("logs/archive-{snap}.log")))
        .unwrap_or_default();
    assert!(
        done,
        "the archive of {snap} did not complete: {last:#}\n{log}"
    );
    assert_eq!(last["Progress"], "100%", "{last:#}");
    last
}

pub fn snapshot_create(v: &VolEnv, s: &Store, vol: &str, extra: &[&str]) -> Value {
    let mut a = vec!["snapshot", "create", vol];
    a.extend_from_slice(extra);
    json(v, s, &a)
}

/// A key of machine A usable from another data dir through A's `kms serve`.
pub struct RemoteKey {
    pub key: String,
    pub id: String,
    pub secret: String,
    pub server: KmsServer,
}

impl RemoteKey {
    pub fn new(a: &VolEnv) -> RemoteKey {
        let u = KeyUser::new(a, "restorer");
        RemoteKey {
            key: u.key,
            id: u.id,
            secret: u.secret,
            server: KmsServer::start(a),
        }
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
            ("CRYPTVOL_KMS_ENDPOINT", self.server.endpoint.as_str()),
        ]
    }

    /// Makes this process's environment (and so the daemons its attaches start) the
    /// restoring machine's.
    pub fn export(&self) {
        // SAFETY: nextest runs each test in its own process; nothing else reads the
        // environment concurrently here.
        unsafe {
            for (k, v) in self.env() {
                std::env::set_var(k, v);
            }
        }
    }
}

/// A volume of 4 written chunks under `k`'s key, snapshotted and archived; returns
/// (volume, snapshot, the data at offset 0).
pub fn archived(a: &VolEnv, s: &Store, k: &RemoteKey, seed: u64) -> (String, String, Vec<u8>) {
    let vol = a.create(&["--size", "16M", "--kms-key", &k.key]);
    let data = Rng::new(seed).bytes(4 * MIB as usize);
    write_volume(a, &vol, &[(0, &data)]);
    let snap = str_field(&snapshot_create(a, s, &vol, &[]), "SnapshotId");
    wait_completed(a, s, &snap);
    (vol, snap, data)
}

/// The store's prefix inside the bucket.
pub fn prefix(s: &Store) -> String {
    s.url
        .trim_start_matches(&format!("s3://{BUCKET}/"))
        .to_string()
}

/// The key (in the bucket) of a snapshot's manifest.
pub fn manifest_key(s: &Store, snap: &str) -> String {
    format!("{}/snapshots/{snap}.manifest", prefix(s))
}
