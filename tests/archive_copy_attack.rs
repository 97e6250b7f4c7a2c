//! Attacks on copies between machines' snapshot stores (moto's S3): a copy pushed from the
//! source's machine (`--destination-region R --destination-snapshot-store …`) or pulled at
//! the destination (`--source-snapshot-store …`) killed at each phase and run again, run
//! twice at once, aimed at destinations that cannot take it, and deleted at the
//! destination afterwards.
//!
//! Machine B is another data dir (its region eu-west-1 archives into another prefix of the
//! same moto, its KMS served by `kms serve` to a user of its own); the source machine A
//! reaches it only through that store and that endpoint.
//!
//! Needs FUSE and moto's server from the test venv; without them the tests skip unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` or `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::mount::*;
use common::server::KmsServer;
use common::store::*;
use common::{Env, Out, assert_one_error_line, str_field};
use serde_json::Value;

const DST_REGION: &str = "eu-west-1";

/// Machine B: region eu-west-1 archiving into `s3://BUCKET/<prefix>`, a user `pusher` with
/// a key of B's and an access key, B's KMS served.
struct Dest {
    env: Env,
    url: String,
    prefix: String,
    key: String,
    /// A key of B's that `pusher` may not use.
    other_key: String,
    id: String,
    secret: String,
    kms: KmsServer,
}

impl Dest {
    fn new(s: &Store, prefix: &str) -> Dest {
        let env = Env::new();
        let url = format!("s3://{BUCKET}/{prefix}");
        env.json_env(
            &[
                "--region",
                DST_REGION,
                "init",
                "--snapshot-store",
                &url,
                "--s3-endpoint",
                &s.moto.endpoint,
            ],
            &s.env(),
        );
        let user = env.create_user("pusher");
        let b = |args: &[&str]| {
            let mut all = vec!["--region", DST_REGION];
            all.extend_from_slice(args);
            env.json(&all)
        };
        let key = str_field(
            &b(&["kms", "create-key", "--user", &user])["KeyMetadata"],
            "Arn",
        );
        let other_key = str_field(&b(&["kms", "create-key"])["KeyMetadata"], "Arn");
        let ak = b(&["iam", "create-access-key", "--user-name", "pusher"]);
        let id = str_field(&ak["AccessKey"], "AccessKeyId");
        let secret = str_field(&ak["AccessKey"], "SecretAccessKey");
        env.add_secret(secret.as_bytes());
        let kms = KmsServer::start(&env);
        Dest {
            env,
            url,
            prefix: prefix.to_string(),
            key,
            other_key,
            id,
            secret,
            kms,
        }
    }

    fn creds(&self) -> Vec<(&str, &str)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
        ]
    }

    /// `snapshot copy SNAP` pushed into B, with `extra` flags.
    fn push_args(&self, s: &Store, snap: &str, extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "--output",
            "json",
            "snapshot",
            "copy",
            snap,
            "--destination-region",
            DST_REGION,
            "--destination-snapshot-store",
            &self.url,
            "--destination-s3-endpoint",
            &s.moto.endpoint,
            "--destination-kms-endpoint",
            &self.kms.endpoint,
            "--kms-key",
            &self.key,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        v.extend(extra.iter().map(|a| a.to_string()));
        v
    }

    /// cryptvol in B's region, with B's credentials.
    fn run(&self, args: &[&str]) -> Out {
        let mut all = vec!["--region", DST_REGION];
        all.extend_from_slice(args);
        self.env.run_env(&all, &self.creds())
    }

    /// B's store's objects (keys inside the prefix).
    fn objects(&self, s: &Store) -> Vec<String> {
        let p = format!("{}/", self.prefix);
        let mut v: Vec<String> = s
            .moto
            .objects(BUCKET, &p)
            .into_iter()
            .map(|(k, _)| k.trim_start_matches(&p).to_string())
            .collect();
        v.sort();
        v
    }

    fn manifests(&self, s: &Store) -> Vec<String> {
        self.objects(s)
            .into_iter()
            .filter(|k| k.starts_with("snapshots/"))
            .collect()
    }
}

/// A file's path and bytes, as a run left it.
type File = (PathBuf, Vec<u8>);

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `cryptvol --data-dir D ARGS` started in the background (to be killed).
fn spawn(env: &Env, args: &[String], envs: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cryptvol"))
        .env_remove("CRYPTVOL_REGION")
        .env_remove("CRYPTVOL_DATA_DIR")
        .envs(envs.iter().copied())
        .arg("--data-dir")
        .arg(&env.data)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cryptvol")
}

fn kill9(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// A's directory of copies into B (its only one).
fn copies_dir(a: &VolEnv) -> Option<PathBuf> {
    let rd = std::fs::read_dir(a.region().join("archive/copies")).ok()?;
    rd.filter_map(Result::ok).map(|e| e.path()).next()
}

fn read_json(p: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(p).ok()?).ok()
}

/// A volume of 8 written chunks of A's, snapshotted and archived.
fn archived8(a: &VolEnv, s: &Store, key: Option<&str>) -> String {
    let mut args = vec!["--size", "16M"];
    if let Some(k) = key {
        args.extend(["--kms-key", k]);
    }
    let vol = a.create(&args);
    let data = Rng::new(7).bytes(8 * MIB as usize);
    write_volume(a, &vol, &[(0, &data)]);
    let snap = str_field(&snapshot_create(a, s, &vol, &[]), "SnapshotId");
    wait_completed(a, s, &snap);
    snap
}

/// Kills a push of `snap` into `b` once `phase` holds, then runs it again to its end;
/// returns the new snapshot.
fn kill_then_resume(
    a: &VolEnv,
    s: &Store,
    b: &Dest,
    snap: &str,
    phase: &dyn Fn(&Path, &Value) -> bool,
    what: &str,
) -> Value {
    let slow = b.push_args(s, snap, &["--max-bandwidth", "1M"]);
    let child = spawn(a, &slow, &b.creds());
    let record = |d: &Path| read_json(&d.join(format!("copy-{snap}.json")));
    let mut seen = None;
    let hit = wait_until(Duration::from_secs(60), || {
        match copies_dir(a).and_then(|d| Some((record(&d)?, d))) {
            Some((r, d)) if phase(&d, &r) => {
                seen = Some(r);
                true
            }
            _ => false,
        }
    });
    kill9(child);
    assert!(hit, "the copy never reached {what}");
    let seen = seen.unwrap();
    let out = a
        .run_env(&strs(&b.push_args(s, snap, &[])), &b.creds())
        .ok()
        .json();
    assert_eq!(out["State"], "completed", "{what}: {out:#}");
    assert_eq!(
        out["SnapshotId"], seen["SnapshotId"],
        "{what}: the re-run made another snapshot"
    );
    out
}

#[test]
fn a_push_killed_at_each_phase_resumes_to_one_snapshot_that_a_delete_frees_whole() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let snap = archived8(&a, &s, None);
    let b = Dest::new(&s, "dst");
    let src_before = s.chunk_objects();

    // Killed while re-encrypting into the spool.
    let respooling = |d: &Path, r: &Value| {
        r["Spooled"] == false
            && std::fs::metadata(d.join(format!("{}.spool", str_field(r, "SnapshotId"))))
                .is_ok_and(|m| m.len() > 0)
    };
    let c1 = kill_then_resume(&a, &s, &b, &snap, &respooling, "the respool");
    // Killed while uploading: the destination counts the copy's references, and holds
    // some of its objects but no manifest.
    let uploading = |_: &Path, r: &Value| {
        r["Spooled"] == true
            && b.objects(&s).iter().any(|k| k.starts_with("chunks/"))
            && b.manifests(&s).len() == 1
    };
    let c2 = kill_then_resume(&a, &s, &b, &snap, &uploading, "the upload");
    assert_eq!(b.manifests(&s).len(), 2);

    // Killed after the upload: the manifest is written and the record not yet removed
    // (a run killed in that window left the record, with or without its spool, as the
    // run wrote them; they are put back as they were).
    for keep_spool in [true, false] {
        let child = spawn(
            &a,
            &b.push_args(&s, &snap, &["--max-bandwidth", "2M"]),
            &b.creds(),
        );
        let mut saved: Option<(PathBuf, Vec<u8>, Option<File>)> = None;
        let done = wait_until(Duration::from_secs(60), || {
            let Some(d) = copies_dir(&a) else {
                return false;
            };
            let rp = d.join(format!("copy-{snap}.json"));
            if let Some(r) = read_json(&rp)
                && r["Spooled"] == true
                && saved.is_none()
            {
                let sp = d.join(format!("{}.spool", str_field(&r, "SnapshotId")));
                let spool = std::fs::read(&sp).ok().map(|b| (sp, b));
                saved = Some((rp.clone(), std::fs::read(&rp).unwrap(), spool));
            }
            saved.is_some() && !rp.exists()
        });
        let mut child = child;
        assert!(child.wait().unwrap().success());
        assert!(done, "the copy did not finish");
        let (rp, rec, spool) = saved.expect("the record was seen spooled");
        std::fs::write(&rp, &rec).unwrap();
        if keep_spool {
            let (sp, bytes) = spool.expect("the spool was read");
            std::fs::write(sp, bytes).unwrap();
        }
        let id: Value = serde_json::from_slice(&rec).unwrap();
        let manifests = b.manifests(&s);
        let out = a
            .run_env(&strs(&b.push_args(&s, &snap, &[])), &b.creds())
            .ok()
            .json();
        assert_eq!(out["State"], "completed", "{out:#}");
        assert_eq!(out["SnapshotId"], id["SnapshotId"], "{out:#}");
        assert_eq!(b.manifests(&s), manifests, "the re-run added a snapshot");
        let d = copies_dir(&a).unwrap();
        assert!(
            !rp.exists()
                && !d
                    .join(format!("{}.spool", str_field(&id, "SnapshotId")))
                    .exists(),
            "the re-run left its record or spool"
        );
    }

    // Four copies, each whole: B lists them, each with 8 chunks of its own.
    let listed = b
        .run(&[
            "snapshot",
            "list",
            "--snapshot-store",
            &b.url,
            "--s3-endpoint",
            &s.moto.endpoint,
        ])
        .ok()
        .json();
    let shown = listed["Snapshots"].as_array().unwrap();
    assert_eq!(shown.len(), 4, "{listed:#}");
    for sh in shown {
        assert_eq!(sh["Chunks"], 8, "{listed:#}");
        assert_eq!(sh["KmsKeyId"], b.key.as_str(), "{listed:#}");
        assert_eq!(sh["Region"], DST_REGION, "{listed:#}");
        assert!(
            sh["Description"].as_str().unwrap().contains(&snap),
            "{listed:#}"
        );
    }
    let chunks = |b: &Dest| {
        b.objects(&s)
            .into_iter()
            .filter(|k| k.starts_with("chunks/"))
            .count()
    };
    assert_eq!(chunks(&b), 4 * 8);
    // A's copies directory holds no spool nor record any more.
    let left: Vec<String> = std::fs::read_dir(copies_dir(&a).unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".spool") || (n.starts_with("copy-") && n.ends_with(".json")))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Deleting each copy at B frees exactly its objects; the source is untouched.
    let mut n = 4;
    for c in [&c1, &c2] {
        let out = b
            .run(&["snapshot", "delete", &str_field(c, "SnapshotId")])
            .ok()
            .json();
        assert_eq!(out["Store"]["ObjectsDeleted"], 8, "{out:#}");
        n -= 1;
        assert_eq!(chunks(&b), n * 8);
    }
    for sh in shown {
        let id = str_field(sh, "SnapshotId");
        if id != str_field(&c1, "SnapshotId") && id != str_field(&c2, "SnapshotId") {
            b.run(&["snapshot", "delete", &id]).ok();
        }
    }
    let left: Vec<String> = b
        .objects(&s)
        .into_iter()
        .filter(|k| !k.starts_with("index/"))
        .collect();
    assert!(left.is_empty(), "B's store still holds {left:?}");
    assert_eq!(s.chunk_objects(), src_before, "the source changed");
}

#[test]
fn two_copies_of_one_snapshot_at_once() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let snap = archived8(&a, &s, Some(&k.key));
    let b = Dest::new(&s, "dst");
    let b2 = Dest::new(&s, "dst2");

    // The same destination: the second is refused while the first runs.
    let mut first = spawn(
        &a,
        &b.push_args(&s, &snap, &["--max-bandwidth", "2M"]),
        &b.creds(),
    );
    assert!(wait_until(Duration::from_secs(30), || copies_dir(&a)
        .is_some_and(|d| d.join(format!("copy-{snap}.json")).exists())));
    let err = a
        .run_env(&strs(&b.push_args(&s, &snap, &[])), &b.creds())
        .fails(16);
    assert_one_error_line("the second copy", &format!("{err}\n"));
    // The line is about the copy and its destination, not the source's archive.
    assert!(err.contains("being copied into"), "{err}");
    // Another destination at the same time, and a pull into B's store from B.
    let other = a
        .run_env(&strs(&b2.push_args(&s, &snap, &[])), &b2.creds())
        .ok()
        .json();
    // B pulls the same snapshot into its store (B's own KMS, A's through its endpoint
    // with the credentials A gave B) while A's push into it runs.
    let pulled = b
        .env
        .run_env(
            &[
                "--region",
                DST_REGION,
                "--output",
                "json",
                "snapshot",
                "copy",
                &snap,
                "--source-snapshot-store",
                &s.url,
                "--source-s3-endpoint",
                &s.moto.endpoint,
                "--source-kms-endpoint",
                &k.server.endpoint,
            ],
            &[
                ("AWS_ACCESS_KEY_ID", k.id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", k.secret.as_str()),
            ],
        )
        .ok()
        .json();
    assert!(first.wait().unwrap().success());
    assert_eq!(other["State"], "completed", "{other:#}");
    assert_eq!(pulled["State"], "completed", "{pulled:#}");
    // Three snapshots, none half: two in B's store (the push and the pull), one in B2's.
    assert_eq!(b.manifests(&s).len(), 2);
    assert_eq!(b2.manifests(&s).len(), 1);
    assert_ne!(b.manifests(&s), b2.manifests(&s));
}

/// A push into B with the destination's flags as given.
fn push_to(
    snap: &str,
    region: &str,
    url: &str,
    s3: &str,
    kms: &str,
    key: Option<&str>,
) -> Vec<String> {
    let mut v: Vec<String> = [
        "--output",
        "json",
        "snapshot",
        "copy",
        snap,
        "--destination-region",
        region,
        "--destination-snapshot-store",
        url,
        "--destination-s3-endpoint",
        s3,
        "--destination-kms-endpoint",
        kms,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if let Some(k) = key {
        v.extend(["--kms-key".to_string(), k.to_string()]);
    }
    v
}

/// Only lock files (of runs that ended) in A's directories of copies: no record, no
/// spool, no job of a copy that never started.
fn only_locks_left(a: &VolEnv, what: &str) {
    let Ok(rd) = std::fs::read_dir(a.region().join("archive/copies")) else {
        return;
    };
    for d in rd.filter_map(Result::ok) {
        for e in std::fs::read_dir(d.path()).unwrap().filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".lock"),
                "{what} left {name} in {}",
                d.path().display()
            );
        }
    }
}

#[test]
fn a_push_to_a_destination_that_cannot_take_it_fails_before_it_spools_or_writes_anything() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let snap = archived8(&a, &s, None);
    let b = Dest::new(&s, "dst");
    a.add_secret(b.secret.as_bytes());
    let (m, k) = (s.moto.endpoint.clone(), b.kms.endpoint.clone());
    let no_snap = "snap-0123456789abcdef0".to_string();
    let wrong_region = b.key.replace(DST_REGION, "eu-west-2");
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<String>, i32, &str)> = vec![
        ("a key the destination does not have",
         push_to(&snap, DST_REGION, &b.url, &m, &k, Some("alias/nope")), 3, "alias/nope"),
        ("a key the destination's user may not use",
         push_to(&snap, DST_REGION, &b.url, &m, &k, Some(&b.other_key)), 18, "not authorized"),
        ("an unreachable destination KMS",
         push_to(&snap, DST_REGION, &b.url, &m, "http://127.0.0.1:1", Some(&b.key)), 20, "127.0.0.1:1"),
        ("an unreachable destination store",
         push_to(&snap, DST_REGION, &b.url, "http://127.0.0.1:1", &k, Some(&b.key)), 23, "no answer"),
        ("a destination bucket that does not exist",
         push_to(&snap, DST_REGION, "s3://no-such-bucket/x", &m, &k, Some(&b.key)), 23, "no-such-bucket"),
        ("a key ARN of another region than --destination-region",
         push_to(&snap, "eu-west-2", &b.url, &m, &k, Some(&b.key)), 6, "eu-west-2"),
        ("a key ARN of another region than --destination-region",
         push_to(&snap, DST_REGION, &b.url, &m, &k, Some(&wrong_region)), 6, "eu-west-2"),
        ("a snapshot neither in the pool nor in the store",
         push_to(&no_snap, DST_REGION, &b.url, &m, &k, Some(&b.key)), 3, &no_snap),
    ];
    for (what, args, code, names) in cases {
        let err = a.run_env(&strs(&args), &b.creds()).fails(code);
        assert_one_error_line(what, &format!("{err}\n"));
        assert!(err.contains(names), "{what}: {err}");
        only_locks_left(&a, what);
        assert!(
            b.objects(&s).is_empty(),
            "{what}: B's store holds {:?}",
            b.objects(&s)
        );
    }
    // The destination that can take it still does, and the source is as it was.
    let out = a
        .run_env(&strs(&b.push_args(&s, &snap, &[])), &b.creds())
        .ok()
        .json();
    assert_eq!(out["State"], "completed", "{out:#}");
    assert_eq!(b.manifests(&s).len(), 1);
}

/// A snapshot of a volume with a customer-provided key cannot be copied between stores
/// (the copy needs its data key from a KMS): the push says so and what to do instead,
/// and does not start an archive of it that could never complete (the snapshot would
/// show `pending` for ever, and every `snapshot list` would start an archiver again).
#[test]
fn a_push_of_a_customer_key_snapshot_is_refused_and_starts_no_archive() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let b = Dest::new(&s, "dst");
    let kf = a.file(&[7u8; 32]);
    let vol = a.create(&[
        "--size",
        "16M",
        "--customer-key-file",
        &kf.to_string_lossy(),
    ]);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    let err = a
        .run_env(&strs(&b.push_args(&s, &snap, &[])), &b.creds())
        .fails(6);
    assert_one_error_line("push of a customer-key snapshot", &format!("{err}\n"));
    assert!(err.contains("customer-provided key"), "{err}");
    assert!(
        !err.contains("snapshot archive"),
        "the advice cannot help a copy: {err}"
    );
    let job = a.region().join(format!("archive/{snap}.json"));
    assert!(
        !job.exists(),
        "an archive job was started: {}",
        job.display()
    );
    let d = describe(&a, &s, &snap);
    assert_eq!(d["State"], "completed", "{d:#}");
    assert!(d.get("Archive").is_none(), "{d:#}");
    assert!(b.objects(&s).is_empty());
}
