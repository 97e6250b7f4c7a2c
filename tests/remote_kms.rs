//! The remote key backend (`--kms-endpoint`): a volume whose CMK lives in a `cryptvol kms serve` of
//! another data dir (another machine, as far as either side knows) is created with one
//! GenerateDataKey and attached with one Decrypt over SigV4-signed HTTP; with the server
//! down, attach names the endpoint that failed; an attached volume keeps working without
//! it; and the server's audit trail shows the calls as the access key's user.

mod common;

use std::io::BufRead;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};

use common::mount::*;
use common::*;
use serde_json::Value;

/// A running `kms serve`, stopped with SIGTERM on drop.
struct Server {
    child: Option<Child>,
    endpoint: String,
}

impl Server {
    fn start(data: &std::path::Path, listen: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cryptvol"))
            .arg("--data-dir")
            .arg(data)
            .args(["kms", "serve", "--listen", listen])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kms serve");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("kms serve printed {line:?}: {e}"));
        Server {
            endpoint: str_field(&v, "Endpoint"),
            child: Some(child),
        }
    }

    /// SIGTERM; the server must exit 0.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            let st = c.wait().unwrap();
            assert!(st.success(), "kms serve exited with {st:?} after SIGTERM");
        }
    }

    fn port(&self) -> String {
        self.endpoint.rsplit(':').next().unwrap().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_volume_keyed_by_a_remote_kms_attaches_through_it_and_survives_its_absence() {
    needs!(Fuse);
    // The key server: its own data dir, a user with an access key and a key for her.
    let kms_side = Env::init();
    let user = common::server::KeyUser::new(&kms_side, "vols");
    let (key, id) = (user.key.clone(), user.id.clone());
    let mut server = Server::start(&kms_side.data, "127.0.0.1:0");
    let endpoint = server.endpoint.clone();

    // The volume side: another data dir, which has never seen that key.
    let v = VolEnv::new();
    user.export(&v, &endpoint);
    // SAFETY: as in `export`.
    unsafe {
        // An http:// endpoint has no TLS: the CA bundle is not read (a missing one is no
        // error, and a system bundle is not parsed at every command).
        std::env::set_var("AWS_CA_BUNDLE", v.scratch().join("missing.pem"));
    }
    let vol = v.create(&["--size", "64M", "--kms-key", &key]);
    assert_eq!(str_field(&v.describe_vol(&vol), "KmsKeyId"), key);
    let dir = v.dir("a");
    let file = v.attach(&vol, &dir, &[]);
    let data = pattern(1 << 20, 9);
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&data, 4096).unwrap();
    f.sync_all().unwrap();
    drop(f);
    v.detach(&dir);

    // The server saw one GenerateDataKey and one Decrypt, as user vols with that key.
    let events = kms_side.json(&["audit", "lookup", "--principal", "vols"]);
    let evs = events["Events"].as_array().unwrap();
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GenerateDataKey", "Decrypt"], "{events:#}");
    for e in evs {
        assert_eq!(e["userIdentity"]["accessKeyId"], id.as_str(), "{e:#}");
        assert_eq!(e["sourceIPAddress"], "127.0.0.1", "{e:#}");
        assert_eq!(
            e["requestParameters"]["encryptionContext"]["cryptvol:lineage"],
            vol.as_str()
        );
    }

    // Server down: attach says which endpoint failed (exit 20) and mounts nothing.
    let port = server.port();
    server.stop();
    let out = v.attach_run(&vol, &dir, &[]);
    assert_eq!(out.code, 20, "{}", out.stderr);
    assert_one_error_line("attach", &out.stderr);
    assert!(out.stderr.contains(&endpoint), "{}", out.stderr);
    assert!(!is_mount_point(&dir));

    // Back up (same port): attach, and the data is there.
    let mut server = Server::start(&kms_side.data, &format!("127.0.0.1:{port}"));
    let file = v.attach(&vol, &dir, &[]);
    // With the server gone again, the attached volume keeps working: the data key is
    // in the daemon, and block I/O needs no KMS.
    server.stop();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let mut back = vec![0u8; data.len()];
    f.read_exact_at(&mut back, 4096).unwrap();
    assert!(
        back == data,
        "the data read back through the remote key differs"
    );
    f.write_all_at(&data[..4096], 8 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    v.detach(&dir);

    // Without the flag, attach goes to the endpoint the volume header records (not the
    // local KMS, which does not know the key): the server is down, so exit 20 names it.
    unsafe {
        std::env::remove_var("CRYPTVOL_KMS_ENDPOINT");
    }
    let out = v.attach_run(&vol, &dir, &[]);
    assert_eq!(out.code, 20, "{}", out.stderr);
    assert_one_error_line("attach", &out.stderr);
    assert!(out.stderr.contains(&endpoint), "{}", out.stderr);
    assert!(!is_mount_point(&dir));
}

#[test]
fn remote_errors_keep_their_aws_names_and_exit_codes() {
    let kms_side = Env::init();
    kms_side.ok(&["iam", "create-user", "--user-name", "nobody"]);
    let ak = kms_side.json(&["iam", "create-access-key", "--user-name", "nobody"]);
    let id = str_field(&ak["AccessKey"], "AccessKeyId");
    let secret = str_field(&ak["AccessKey"], "SecretAccessKey");
    let key = str_field(&kms_side.json(&["kms", "create-key"])["KeyMetadata"], "Arn");
    let server = Server::start(&kms_side.data, "127.0.0.1:0");

    let client = Env::init();
    let env = |secret: &str| {
        vec![
            ("AWS_ACCESS_KEY_ID".to_string(), id.clone()),
            ("AWS_SECRET_ACCESS_KEY".to_string(), secret.to_string()),
            ("CRYPTVOL_KMS_ENDPOINT".to_string(), server.endpoint.clone()),
        ]
    };
    let run = |secret: &str, args: &[&str]| {
        let e = env(secret);
        let pairs: Vec<(&str, &str)> = e.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        client.run_env(args, &pairs)
    };
    // The user has no identity policy: the default key policy delegates to IAM → denied.
    let out = run(
        &secret,
        &["volume", "create", "--size", "16M", "--kms-key", &key],
    );
    assert_eq!(out.code, 18, "{}", out.stderr);
    assert!(
        out.stderr.contains("AccessDeniedException"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&server.endpoint), "{}", out.stderr);
    // A wrong secret: the signature does not verify.
    let out = run(
        "wrong-secret-wrong-secret-wrong-secret00",
        &["volume", "create", "--size", "16M", "--kms-key", &key],
    );
    assert_eq!(out.code, 7, "{}", out.stderr);
    assert!(
        out.stderr.contains("InvalidSignatureException"),
        "{}",
        out.stderr
    );
    // Without --kms-key the remote default key is not assumed.
    let out = run(&secret, &["volume", "create", "--size", "16M"]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(out.stderr.contains("--kms-key"), "{}", out.stderr);
    // No volume was made by any of these.
    assert_eq!(
        client.json(&["volume", "list"])["Volumes"],
        serde_json::json!([])
    );
}
