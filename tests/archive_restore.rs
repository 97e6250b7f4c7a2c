//! Restoring archived snapshots from the object store (moto's S3): on another "machine"
//! (a data dir of another user, who cannot read the first one's, sharing nothing with it
//! but the store and the first one's `kms serve`), lazily: the volume attaches at once,
//! reads fetch chunks on first use, `volume hydrate` fetches the rest; a copy into that
//! machine's store re-encrypts every chunk under its own key; and every edit, swap or
//! truncation of a chunk object or a manifest is detected (an error, never data).
//!
//! Needs FUSE and moto's server from the test venv; without them the tests skip unless
//! `CRYPTVOL_REQUIRE_MOUNT=1` or `CI=true`.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::mount::*;
use common::store::*;
use common::{Out, str_field};
use serde_json::Value;

/// A second machine: its own data dir, and its own mount namespace in which the first
/// machine's data dir is hidden under an empty tmpfs. Every command (and so the region
/// daemon it starts, and its FUSE mounts) runs in that namespace (`nsenter`).
struct OtherMachine {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    holder: Child,
    envs: Vec<(String, String)>,
}

impl OtherMachine {
    fn new(hide: &Path, envs: &[(&str, &str)]) -> OtherMachine {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        std::fs::create_dir(root.join("mnt")).unwrap();
        // The namespace lives as long as this process (and whatever is started in it).
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg("mount -t tmpfs -o size=1m,mode=0700 hidden \"$1\" && echo ready && exec sleep 3600")
            .arg("sh")
            .arg(hide)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare a mount namespace");
        let mut line = String::new();
        std::io::BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "could not make the second machine's namespace"
        );
        OtherMachine {
            _tmp: tmp,
            root,
            holder,
            envs: envs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `program ARGS` inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg("-t")
            .arg(self.holder.id().to_string())
            .args(["-m", "--", program])
            .env_remove("CRYPTVOL_DATA_DIR")
            .env_remove("CRYPTVOL_REGION")
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let o = self
            .command(env!("CARGO_BIN_EXE_cryptvol"))
            .arg("--data-dir")
            .arg(self.data())
            .args(args)
            .output()
            .expect("run cryptvol in the second machine's namespace");
        Out {
            args: args.iter().map(|s| s.to_string()).collect(),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        self.run(args).ok().json()
    }

    /// `dd` of `len` bytes at `off` of `file`, in the namespace.
    fn read(&self, file: &Path, off: u64, len: u64) -> Result<Vec<u8>, String> {
        let o = self
            .command("dd")
            .arg(format!("if={}", file.display()))
            .args(["bs=4096", "iflag=skip_bytes,count_bytes", "status=none"])
            .arg(format!("skip={off}"))
            .arg(format!("count={len}"))
            .output()
            .expect("run dd");
        if o.status.success() {
            Ok(o.stdout)
        } else {
            Err(String::from_utf8_lossy(&o.stderr).into_owned())
        }
    }

    fn is_mounted(&self, dir: &Path) -> bool {
        self.command("mountpoint")
            .arg("-q")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for OtherMachine {
    fn drop(&mut self) {
        let mnt = self.root.join("mnt");
        if self.is_mounted(&mnt) {
            let _ = self.run(&["detach", &mnt.to_string_lossy()]);
        }
        if self.is_mounted(&mnt) {
            let _ = self.command("umount").arg("-l").arg(&mnt).status();
        }
        for pid in daemons_of(&self.data()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn another_machine_restores_lazily_reads_what_was_written_and_hydrates_the_rest() {
    needs!(Fuse);
    let Some(s) = Store::new("machines") else {
        return;
    };
    // Machine A: a region archiving into the store, a user with a key of its own, and
    // A's KMS served to the network.
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (key, id, secret) = (k.key.clone(), k.id.clone(), k.secret.clone());
    let vol = a.create(&["--size", "64M", "--kms-key", &key]);
    let mut rng = Rng::new(11);
    let data = rng.bytes(8 * MIB as usize);
    write_volume(&a, &vol, &[(3 * MIB, &data)]);
    // And 8 MiB that fio writes with checksums, at 32 MiB.
    needs!(Tool("fio"));
    let dir = a.dir("fio-a");
    let file = a.attach(&vol, &dir, &[]);
    let job = fio_job(&file, false);
    fio(
        &dir,
        &job.iter().map(String::as_str).collect::<Vec<_>>(),
        8 * MIB,
    );
    a.detach(&dir);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");
    wait_completed(&a, &s, &snap);
    let server = &k.server;

    // Machine B: A's data dir does not exist for it.
    let b = OtherMachine::new(
        a.scratch(),
        &[
            ("AWS_ACCESS_KEY_ID", &id),
            ("AWS_SECRET_ACCESS_KEY", &secret),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ],
    );
    let peek = b.command("ls").arg(&a.data).output().unwrap();
    assert!(
        !peek.status.success(),
        "machine B can see machine A's data dir"
    );
    let mut init = vec!["init"];
    let f = s.flags();
    init.extend(f.iter().map(String::as_str));
    b.json(&init);
    let listed = b.json(&[
        "snapshot",
        "list",
        "--snapshot-store",
        &s.url,
        "--s3-endpoint",
        &s.moto.endpoint,
    ]);
    assert_eq!(
        listed["Snapshots"][0]["SnapshotId"],
        snap.as_str(),
        "{listed:#}"
    );

    let restored = b.json(&[
        "--kms-endpoint",
        &server.endpoint,
        "volume",
        "create",
        "--from-snapshot",
        &snap,
        "--name",
        "copy",
    ]);
    let rvol = str_field(&restored, "VolumeId");
    assert_eq!(restored["RemoteBytes"], 16 * MIB, "{restored:#}");
    assert_eq!(
        restored["AllocatedBytes"], 0,
        "nothing fetched yet: {restored:#}"
    );

    // Attach at once (the header remembers the KMS endpoint: no flag), read one block.
    let mnt = b.root.join("mnt");
    b.run(&["attach", "copy", &mnt.to_string_lossy()]).ok();
    let file = mnt.join("volume");
    let got = b
        .read(&file, 5 * MIB, 4096)
        .expect("read the restored volume");
    assert_bytes(
        "first read",
        5 * MIB,
        &got,
        &data[2 * MIB as usize..][..4096],
    );
    let d = b.json(&["volume", "describe", &rvol]);
    assert_eq!(
        d["RemoteBytes"],
        15 * MIB,
        "one chunk fetched by that read: {d:#}"
    );
    // fio verifies what it wrote on A, reading through B's lazy fetches.
    let o = b
        .command("fio")
        .args(fio_job(&file, true))
        .arg("--output-format=json")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fio --verify_only on B: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let d = b.json(&["volume", "describe", &rvol]);
    assert_eq!(d["RemoteBytes"], 7 * MIB, "fio's 8 chunks fetched: {d:#}");
    // Unwritten chunks read as zeros, with no fetch.
    let zeros = b.read(&file, 40 * MIB, 4096).unwrap();
    assert!(zeros.iter().all(|&x| x == 0));

    // Hydrate the rest while attached; then everything reads back as written.
    let h = b.json(&["volume", "hydrate", &rvol]);
    assert_eq!(h["RemoteBytes"], 0, "{h:#}");
    assert_eq!(h["BytesFetched"], 7 * MIB, "{h:#}");
    let all = b.read(&file, 3 * MIB, 8 * MIB).unwrap();
    assert_bytes("hydrated volume", 3 * MIB, &all, &data);
    b.run(&["detach", &mnt.to_string_lossy()]).ok();
    let out = b.run(&["pool", "check"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

/// fio writing 8 MiB with crc32c checksums at 32 MiB of `file`, or (`verify`) checking
/// them without writing.
fn fio_job(file: &Path, verify: bool) -> Vec<String> {
    let mut v: Vec<String> = [
        "--name=archived",
        "--rw=write",
        "--bs=64k",
        "--offset=32M",
        "--size=8M",
        "--direct=1",
        "--ioengine=psync",
        "--verify=crc32c",
        "--verify_state_save=0",
        "--randseed=7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!("--filename={}", file.display()));
    v.push(if verify {
        "--verify_only".into()
    } else {
        "--do_verify=0".into()
    });
    v
}

#[test]
fn an_edited_swapped_or_truncated_manifest_refuses_the_restore() {
    needs!(Fuse);
    let Some(s) = Store::new("manifests") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, _) = archived(&a, &s, &k, 21);
    let (_, other, _) = archived(&a, &s, &k, 22);
    let original = s.moto.get_object(BUCKET, &manifest_key(&s, &snap));
    let mut edited = original.clone();
    let at = edited.len() - 40;
    edited[at] ^= 1;
    let swapped = s.moto.get_object(BUCKET, &manifest_key(&s, &other));
    let truncated = original[..original.len() - 56].to_vec();
    // Another data dir restores (from the same store, with A's KMS).
    let b = machine(&s);
    let env = k.env();
    for (what, bytes, says) in [
        ("edited", &edited, "does not authenticate"),
        ("swapped", &swapped, "stored as"),
        ("truncated", &truncated, "truncated"),
    ] {
        s.moto.put_object(BUCKET, &manifest_key(&s, &snap), bytes);
        let before = b.snapshot();
        let err = b
            .run_env(&["volume", "create", "--from-snapshot", &snap], &env)
            .fails(12);
        assert!(err.contains(&snap) && err.contains(says), "{what}: {err}");
        b.snapshot().assert_unchanged_since(&before, what);
    }
    // The original restores.
    s.moto
        .put_object(BUCKET, &manifest_key(&s, &snap), &original);
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &snap], &env)
        .ok()
        .json();
    assert_eq!(v["RemoteBytes"], 4 * MIB, "{v:#}");
}

#[test]
fn an_edited_or_truncated_chunk_object_is_an_error_never_data() {
    needs!(Fuse);
    let Some(s) = Store::new("chunks") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, data) = archived(&a, &s, &k, 31);
    let b = machine(&s);
    let env = k.env();
    let v = b
        .run_env(&["volume", "create", "--from-snapshot", &snap], &env)
        .ok()
        .json();
    let vol = str_field(&v, "VolumeId");
    // Which object holds which chunk is sealed in the manifest; damage three of the four:
    // one edited, one truncated, one replaced by the bytes of the fourth (swapped).
    let objects = s.chunk_objects();
    assert_eq!(objects.len(), 4);
    let fourth = s.moto.get_object(BUCKET, &objects[3].0);
    let mut damaged = std::collections::HashSet::new();
    for (i, (key, _)) in objects.iter().take(3).enumerate() {
        let mut bytes = s.moto.get_object(BUCKET, key);
        match i {
            0 => bytes[100] ^= 0x80,
            1 => bytes.truncate(bytes.len() / 2),
            _ => bytes = fourth.clone(),
        }
        s.moto.put_object(BUCKET, key, &bytes);
        damaged.insert(key.rsplit('/').next().unwrap().to_string());
    }
    let dir = b.dir("m");
    // The attach helper runs with the test's environment.
    k.export();
    let file = b.attach(&vol, &dir, &[]);
    let f = open_rw(&file);
    let (mut good, mut bad) = (0, 0);
    for c in 0..4u64 {
        let mut buf = vec![0u8; 4096];
        match std::os::unix::fs::FileExt::read_at(&f, &mut buf, c * MIB) {
            Ok(4096) => {
                assert_bytes(
                    "an intact chunk",
                    c * MIB,
                    &buf,
                    &data[(c * MIB) as usize..][..4096],
                );
                good += 1;
            }
            Ok(n) => panic!("short read of {n} bytes from chunk {c}"),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "chunk {c}: {e}");
                bad += 1;
            }
        }
    }
    assert_eq!((good, bad), (1, 3));
    drop(f);
    b.detach(&dir);
    // hydrate says which object is damaged, and why.
    let err = b.run_env(&["volume", "hydrate", &vol], &env).fails(12);
    assert!(
        damaged.iter().any(|d| err.contains(d.as_str())) && err.contains("damaged"),
        "{err}"
    );
    assert!(
        b.daemon_log().contains("damaged"),
        "the daemon logs the damaged chunks:\n{}",
        b.daemon_log()
    );
}

#[test]
fn a_copy_into_another_machines_store_reencrypts_every_chunk_under_its_key() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let k = RemoteKey::new(&a);
    let (_, snap, data) = archived(&a, &s, &k, 41);

    // Machine B archives into its own prefix, with its own KMS; A's data dir is hidden.
    let dst_url = format!("s3://{BUCKET}/dst");
    let b = OtherMachine::new(
        a.scratch(),
        &[
            ("AWS_ACCESS_KEY_ID", &k.id),
            ("AWS_SECRET_ACCESS_KEY", &k.secret),
        ],
    );
    b.json(&[
        "init",
        "--snapshot-store",
        &dst_url,
        "--s3-endpoint",
        &s.moto.endpoint,
    ]);
    let copied = b.json(&[
        "snapshot",
        "copy",
        &snap,
        "--source-snapshot-store",
        &s.url,
        "--source-s3-endpoint",
        &s.moto.endpoint,
        "--source-kms-endpoint",
        &k.server.endpoint,
    ]);
    assert_eq!(copied["State"], "completed", "{copied:#}");
    assert_eq!(copied["Chunks"], 4, "{copied:#}");
    let new = str_field(&copied, "SnapshotId");
    assert_ne!(new, snap);

    assert_reencrypted(&s, "dst", 4);
    // B's snapshot names B's key and restores (lazily) with B's KMS alone.
    let listed = b.json(&[
        "snapshot",
        "list",
        "--snapshot-store",
        &dst_url,
        "--s3-endpoint",
        &s.moto.endpoint,
    ]);
    let shown = &listed["Snapshots"][0];
    assert_eq!(shown["SnapshotId"], new.as_str(), "{listed:#}");
    assert_ne!(shown["KmsKeyId"], k.key.as_str(), "{listed:#}");
    let v = b.json(&[
        "volume",
        "create",
        "--from-snapshot",
        &new,
        "--name",
        "copied",
    ]);
    assert_eq!(v["RemoteBytes"], 4 * MIB, "{v:#}");
    let mnt = b.root.join("mnt");
    b.run(&["attach", "copied", &mnt.to_string_lossy()]).ok();
    let got = b.read(&mnt.join("volume"), 0, 4 * MIB).unwrap();
    assert_bytes("the copy, restored on B", 0, &got, &data);
    b.run(&["detach", &mnt.to_string_lossy()]).ok();
}

/// `snapshot copy --destination-region R --destination-snapshot-store …` run on the source
/// machine, of a snapshot whose archive is still pending: the copy waits for (or finishes)
/// the archive, then re-encrypts every chunk under a new data key from R's KMS (another
/// machine's `kms serve`, reached only through its endpoint) into R's store; R's machine
/// restores it with its own KMS alone, and sees R in the manifest.
#[test]
fn a_copy_pushed_from_the_source_machine_lands_in_the_other_machines_store_under_its_key() {
    needs!(Fuse);
    let Some(s) = Store::new("src") else {
        return;
    };
    let a = machine(&s);
    let vol = a.create(&["--size", "16M"]);
    let data = Rng::new(43).bytes(4 * MIB as usize);
    write_volume(&a, &vol, &[(0, &data)]);
    let snap = str_field(&snapshot_create(&a, &s, &vol, &[]), "SnapshotId");

    // Machine B: region eu-west-1 archiving into its own prefix, its KMS served, a user
    // of B's with a key of B's and an access key; A's data dir is hidden from it.
    let dst_url = format!("s3://{BUCKET}/dst");
    let mut b = OtherMachine::new(a.scratch(), &s.env());
    let bj = |b: &OtherMachine, args: &[&str]| {
        let mut all = vec!["--region", "eu-west-1"];
        all.extend_from_slice(args);
        b.json(&all)
    };
    bj(
        &b,
        &[
            "init",
            "--snapshot-store",
            &dst_url,
            "--s3-endpoint",
            &s.moto.endpoint,
        ],
    );
    bj(&b, &["iam", "create-user", "--user-name", "pusher"]);
    let acct: Value =
        serde_json::from_slice(&std::fs::read(b.data().join("account.json")).unwrap()).unwrap();
    let user = format!(
        "arn:aws:iam::{}:user/pusher",
        str_field(&acct, "account_id")
    );
    let b_key = str_field(
        &bj(&b, &["kms", "create-key", "--user", &user])["KeyMetadata"],
        "Arn",
    );
    assert!(b_key.contains(":eu-west-1:"), "{b_key}");
    let ak = bj(&b, &["iam", "create-access-key", "--user-name", "pusher"]);
    let (id, secret) = (
        str_field(&ak["AccessKey"], "AccessKeyId"),
        str_field(&ak["AccessKey"], "SecretAccessKey"),
    );
    let mut serve = b.command(env!("CARGO_BIN_EXE_cryptvol"));
    serve.arg("--data-dir").arg(b.data());
    let b_kms = common::server::KmsServer::spawn(serve, &[], b.root.join("serve.stderr"));
    // From now on B calls its own KMS with its own key (moto's S3 takes any).
    b.envs.retain(|(k, _)| !k.starts_with("AWS_"));
    b.envs.push(("AWS_ACCESS_KEY_ID".into(), id.clone()));
    b.envs
        .push(("AWS_SECRET_ACCESS_KEY".into(), secret.clone()));

    // On A, with B's credentials (the store, moto, takes any).
    let b_creds = [
        ("AWS_ACCESS_KEY_ID", id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
    ];
    let copied = a
        .run_env(
            &[
                "snapshot",
                "copy",
                &snap,
                "--destination-region",
                "eu-west-1",
                "--destination-snapshot-store",
                &dst_url,
                "--destination-s3-endpoint",
                &s.moto.endpoint,
                "--destination-kms-endpoint",
                &b_kms.endpoint,
                "--kms-key",
                &b_key,
            ],
            &b_creds,
        )
        .ok()
        .json();
    assert_eq!(copied["State"], "completed", "{copied:#}");
    assert_eq!(copied["Chunks"], 4, "{copied:#}");
    let new = str_field(&copied, "SnapshotId");
    assert_ne!(new, snap);
    // The source's own archive was finished first, and is A's alone.
    assert_eq!(describe(&a, &s, &snap)["State"], "completed");
    assert_eq!(s.chunk_objects().len(), 4);

    assert_reencrypted(&s, "dst", 4);
    // A's region shows no snapshot of B's: the copy's job is kept apart.
    let a_list = json(&a, &s, &["snapshot", "list"]);
    assert_eq!(
        a_list["Snapshots"].as_array().unwrap().len(),
        1,
        "{a_list:#}"
    );

    // B lists it under B's key and region, and restores it lazily.
    let listed = bj(
        &b,
        &[
            "snapshot",
            "list",
            "--snapshot-store",
            &dst_url,
            "--s3-endpoint",
            &s.moto.endpoint,
        ],
    );
    let shown = &listed["Snapshots"][0];
    assert_eq!(shown["SnapshotId"], new.as_str(), "{listed:#}");
    assert_eq!(shown["KmsKeyId"], b_key.as_str(), "{listed:#}");
    assert_eq!(shown["Region"], "eu-west-1", "{listed:#}");
    let v = bj(
        &b,
        &[
            "volume",
            "create",
            "--from-snapshot",
            &new,
            "--name",
            "pushed",
        ],
    );
    assert_eq!(v["RemoteBytes"], 4 * MIB, "{v:#}");
    let mnt = b.root.join("mnt");
    b.run(&[
        "--region",
        "eu-west-1",
        "attach",
        "pushed",
        &mnt.to_string_lossy(),
    ])
    .ok();
    let got = b.read(&mnt.join("volume"), 0, 4 * MIB).unwrap();
    assert_bytes("the pushed copy, restored on B", 0, &got, &data);
    b.run(&["--region", "eu-west-1", "detach", &mnt.to_string_lossy()])
        .ok();
    drop(b_kms);
}

/// `n` chunk objects under `prefix/chunks/`, each new ciphertext: none equals one of the
/// source store's.
#[track_caller]
fn assert_reencrypted(s: &Store, prefix: &str, n: usize) {
    let src: std::collections::HashSet<Vec<u8>> = s
        .chunk_objects()
        .iter()
        .map(|(key, _)| s.moto.get_object(BUCKET, key))
        .collect();
    let dst = s.moto.objects(BUCKET, &format!("{prefix}/chunks/"));
    assert_eq!(dst.len(), n, "{dst:?}");
    for (key, _) in &dst {
        assert!(
            !src.contains(&s.moto.get_object(BUCKET, key)),
            "{key} was not re-encrypted"
        );
    }
}
