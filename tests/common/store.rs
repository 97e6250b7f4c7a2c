//! A snapshot store in moto's S3 for the archive tests: a region that archives into it,
//! volumes written through FUSE, and waiting for an archive to complete.

use std::time::Duration;

use serde_json::Value;

use super::moto::MotoServer;
use super::mount::*;
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
