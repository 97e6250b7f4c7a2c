//! The key check of a KMS-keyed volume: a KMS endpoint that answers Decrypt with another
//! data key than the volume's is refused at attach and at a restore that reads the
//! snapshot's key, before any block is read, with exit 24 and one line naming the volume,
//! the KMS key and the endpoint. The KMS is a real `cryptvol kms serve` of another data
//! dir, reached over HTTP through a proxy (in this test) that, when told to, replaces the
//! `Plaintext` of Decrypt answers with other bytes: what a faulty or hostile endpoint does.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::mount::*;
use common::server::KmsServer;
use common::*;
use serde_json::Value;

/// The data key the lying proxy hands out instead of the real one.
fn forged_key() -> Vec<u8> {
    pattern(64, 77)
}

/// An HTTP/1.1 proxy on 127.0.0.1 in front of `upstream` (`127.0.0.1:PORT`). Requests are
/// forwarded byte for byte (the SigV4 signature still holds: the Host is the proxy's, as
/// the client signed it); while `lie` is set, the `Plaintext` of a Decrypt answer is
/// replaced with [`forged_key`]. `forged` counts the answers it changed.
struct LyingProxy {
    endpoint: String,
    lie: Arc<AtomicBool>,
    forged: Arc<AtomicU64>,
}

impl LyingProxy {
    fn start(upstream: &str) -> LyingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let lie = Arc::new(AtomicBool::new(false));
        let forged = Arc::new(AtomicU64::new(0));
        let (l, f, up) = (lie.clone(), forged.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (l, f, up) = (l.clone(), f.clone(), up.clone());
                std::thread::spawn(move || serve_one(conn, &up, &l, &f));
            }
        });
        LyingProxy {
            endpoint,
            lie,
            forged,
        }
    }

    fn lie(&self, on: bool) {
        self.lie.store(on, Ordering::SeqCst);
    }

    fn forged(&self) -> u64 {
        self.forged.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP/1.1 message head (lines up to the empty one) and its body of
/// `Content-Length` bytes (0 when there is none).
fn read_message(r: &mut impl BufRead) -> Option<(Vec<String>, Vec<u8>)> {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        head.push(line);
    }
    let len = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((head, body))
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One request per client connection, forwarded on a connection of its own that the
/// upstream closes after its answer; the answer goes back with `connection: close`.
fn serve_one(client: TcpStream, upstream: &str, lie: &AtomicBool, forged: &AtomicU64) {
    let mut from_client = BufReader::new(client.try_clone().unwrap());
    let Some((head, body)) = read_message(&mut from_client) else {
        return;
    };
    let is_decrypt = header(&head, "x-amz-target") == Some("TrentService.Decrypt");
    let mut up = TcpStream::connect(upstream).unwrap();
    let mut req = String::new();
    for l in head
        .iter()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
    {
        req.push_str(l);
        req.push_str("\r\n");
    }
    // Not a signed header: the signature does not cover it.
    req.push_str("connection: close\r\n\r\n");
    up.write_all(req.as_bytes()).unwrap();
    up.write_all(&body).unwrap();
    let (rhead, mut rbody) = read_message(&mut BufReader::new(up)).expect("upstream answer");
    assert!(
        header(&rhead, "transfer-encoding").is_none(),
        "the proxy reads Content-Length answers only: {rhead:?}"
    );
    if is_decrypt && lie.load(Ordering::SeqCst) && rhead[0].contains(" 200 ") {
        let mut v: Value = serde_json::from_slice(&rbody).unwrap();
        assert!(v["Plaintext"].is_string(), "{v}");
        v["Plaintext"] = Value::String(b64(&forged_key()));
        rbody = serde_json::to_vec(&v).unwrap();
        forged.fetch_add(1, Ordering::SeqCst);
    }
    let mut out = String::new();
    for l in rhead.iter().filter(|l| {
        let l = l.to_ascii_lowercase();
        !l.starts_with("content-length:") && !l.starts_with("connection:")
    }) {
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        rbody.len()
    ));
    let mut client = client;
    let _ = client.write_all(out.as_bytes());
    let _ = client.write_all(&rbody);
}

/// A refusal of the lying KMS: exit 24, one line naming what, the key and the endpoint,
/// and never the forged key.
#[track_caller]
fn assert_refused(cmd: &str, out: &Out, what: &str, key: &str, endpoint: &str) {
    assert_eq!(out.code, 24, "`{cmd}`: {}", out.stderr);
    assert_one_error_line(cmd, &out.stderr);
    for s in [what, key, endpoint, "--kms-endpoint"] {
        assert!(
            out.stderr.contains(s),
            "`{cmd}` does not name {s}: {}",
            out.stderr
        );
    }
    assert_no_secret(cmd, out.stderr.as_bytes(), &forged_key());
    assert_no_secret(cmd, out.stdout.as_bytes(), &forged_key());
}

#[test]
fn a_kms_that_returns_another_data_key_is_refused_at_attach_and_restore() {
    needs!(Fuse);
    // The key server: its own data dir, a user with an access key and a key for her.
    let kms_side = Env::init();
    let user = common::server::KeyUser::new(&kms_side, "vols");
    let key = user.key.clone();
    let server = KmsServer::start(&kms_side);
    let proxy = LyingProxy::start(&server.addr);
    let endpoint = proxy.endpoint.clone();

    let v = VolEnv::new();
    user.export(&v, &endpoint);
    let vol = v.create(&["--size", "64M", "--kms-key", &key]);
    assert_eq!(v.describe_vol(&vol)["KeyCheck"], true);
    let dir = v.dir("a");

    // The endpoint lies: attach is refused before anything is mounted.
    proxy.lie(true);
    let out = v.attach_run(&vol, &dir, &[]);
    assert_refused("attach", &out, &vol, &key, &endpoint);
    assert_eq!(
        proxy.forged(),
        1,
        "the proxy did not answer the attach's Decrypt"
    );
    assert!(!is_mount_point(&dir));

    // An honest answer attaches, and data written then reads back.
    proxy.lie(false);
    let file = v.attach(&vol, &dir, &[]);
    let data = pattern(1 << 20, 5);
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&data, 8192).unwrap();
    f.sync_all().unwrap();
    drop(f);
    v.detach(&dir);
    let snap = str_field(
        &v.json(&["snapshot", "create", &vol, "--description", "s"]),
        "SnapshotId",
    );

    // A restore under a new key reads the snapshot's key: refused, nothing made.
    proxy.lie(true);
    let before = v.json(&["volume", "list"]);
    let out = v.run(&[
        "volume",
        "create",
        "--from-snapshot",
        &snap,
        "--name",
        "rekeyed",
        "--kms-key",
        &key,
    ]);
    assert_refused(
        "volume create --from-snapshot --kms-key",
        &out,
        &vol,
        &key,
        &endpoint,
    );
    assert_eq!(
        v.json(&["volume", "list"]),
        before,
        "a refused restore left a volume"
    );

    // A restore that keeps the snapshot's key needs no Decrypt; its attach is checked.
    let restored = v.create(&["--from-snapshot", &snap, "--name", "same-key"]);
    assert_eq!(v.describe_vol(&restored)["KeyCheck"], true);
    let out = v.attach_run(&restored, &dir, &[]);
    assert_refused("attach (restored)", &out, &restored, &key, &endpoint);
    assert!(!is_mount_point(&dir));

    // Honest again: both restores work and hold the data.
    proxy.lie(false);
    let rekeyed = v.create(&[
        "--from-snapshot",
        &snap,
        "--name",
        "rekeyed",
        "--kms-key",
        &key,
    ]);
    assert_eq!(v.describe_vol(&rekeyed)["KeyCheck"], true);
    for r in [&restored, &rekeyed] {
        let file = v.attach(r, &dir, &[]);
        let mut back = vec![0u8; data.len()];
        std::fs::File::open(&file)
            .unwrap()
            .read_exact_at(&mut back, 8192)
            .unwrap();
        assert!(back == data, "restored volume {r} does not hold the data");
        v.detach(&dir);
    }
    // The rekeyed volume's own key is checked too.
    proxy.lie(true);
    let out = v.attach_run(&rekeyed, &dir, &[]);
    assert_refused("attach (rekeyed)", &out, &rekeyed, &key, &endpoint);
    server.stop();
}
