//! Findings of the hostile review of the storage core and the region daemon: hostile
//! input on the control socket, and races between commands through the daemon. Each
//! test names the finding it pins down (now fixed) or what held up.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::*;
use serde_json::Value;

/// A region daemon started directly (`cryptvol daemon`), killed when dropped.
struct Daemon {
    child: Child,
    sock: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(v: &VolEnv) -> Daemon {
    let child = Command::new(assert_cmd::cargo::cargo_bin("cryptvol"))
        .arg("--data-dir")
        .arg(&v.data)
        .args(["--region", common::DEFAULT_REGION, "daemon"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let sock = v.region().join("run/daemon.sock");
    assert!(
        wait_until(Duration::from_secs(15), || UnixStream::connect(&sock)
            .is_ok()),
        "the daemon did not listen"
    );
    Daemon { child, sock }
}

/// Sends `line` (no newline added) and returns the reply lines until the connection ends.
fn raw(sock: &Path, line: &[u8]) -> Vec<Value> {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(line).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = vec![];
    for l in BufReader::new(&s).lines() {
        let l = l.expect("read reply");
        out.push(serde_json::from_str(&l).unwrap_or_else(|e| panic!("reply {l:?}: {e}")));
    }
    out
}

fn err_of(reply: &[Value]) -> (String, String) {
    let e = &reply.last().expect("a reply")["done"]["Err"];
    (
        e["kind"].as_str().unwrap_or("").to_string(),
        e["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Runs the binary on `data`: (exit code, stderr). Usable from any thread.
fn cli(data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("cryptvol"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("CRYPTVOL_REGION")
        .env_remove("CRYPTVOL_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run cryptvol");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// What held up: malformed JSON, an unknown op and a wrong version are each refused with
/// one final error line; a client that sends half a line and stalls does not hold up the
/// other clients.
#[test]
fn attack_control_socket_bad_input_is_refused_cleanly() {
    let v = VolEnv::new();
    let d = start_daemon(&v);
    let (k, m) = err_of(&raw(&d.sock, b"{not json\n"));
    assert_eq!(k, "invalid", "{m}");
    let (k, m) = err_of(&raw(&d.sock, b"{\"v\":4,\"request\":{\"op\":\"rm_rf\"}}\n"));
    assert_eq!(k, "invalid", "{m}");
    let (k, m) = err_of(&raw(&d.sock, b"{\"v\":2,\"request\":{\"op\":\"ping\"}}\n"));
    assert_eq!(k, "busy", "{m}");
    assert!(m.contains("protocol"), "{m}");
    // Unknown fields of an op with fields are refused (deny_unknown_fields). (An op
    // without fields, `ping` or `status`, ignores them: serde's internally tagged unit
    // variants do; see finding 6.)
    let (k, m) = err_of(&raw(
        &d.sock,
        b"{\"v\":4,\"request\":{\"op\":\"get_volume\",\"volume\":\"vol-00000000000000000\",\"x\":1}}\n",
    ));
    assert_eq!(k, "invalid", "{m}");
    // Resize to a hostile size of a volume that does not exist / with a negative size.
    let (k, _) = err_of(&raw(
        &d.sock,
        b"{\"v\":4,\"request\":{\"op\":\"resize_volume\",\"volume\":\"vol-00000000000000000\",\"size\":18446744073709551615}}\n",
    ));
    assert_eq!(k, "not_found");
    let (k, _) = err_of(&raw(
        &d.sock,
        b"{\"v\":4,\"request\":{\"op\":\"resize_volume\",\"volume\":\"vol-00000000000000000\",\"size\":-1}}\n",
    ));
    assert_eq!(k, "invalid");
    // A stalled half line does not block a ping.
    let mut stalled = UnixStream::connect(&d.sock).unwrap();
    stalled.write_all(b"{\"v\":4,\"requ").unwrap();
    let pong = raw(&d.sock, b"{\"v\":4,\"request\":{\"op\":\"ping\"}}\n");
    assert!(pong[0]["done"]["Ok"].is_u64(), "{pong:?}");
    drop(stalled);
}

/// The version is checked only after the whole request parsed as a current-protocol
/// `Request`: a newer client whose request has an op (or a field) the current protocol does not
/// know gets "invalid control request: malformed: unknown variant ..." instead of the
/// documented `busy` refusal that says to detach everything and retry.
#[test]
fn attack_control_newer_protocol_gets_the_version_refusal() {
    let v = VolEnv::new();
    let d = start_daemon(&v);
    let (k, m) = err_of(&raw(
        &d.sock,
        b"{\"v\":5,\"request\":{\"op\":\"attach_many\",\"volumes\":[]}}\n",
    ));
    assert_eq!(
        k, "busy",
        "a protocol-5 request must get the version refusal: {m}"
    );
    assert!(m.contains("protocol"), "{m}");
}

/// The daemon read a request line with no limit on its size and no timeout:
/// one same-user client that sent a long line without a newline made the daemon buffer
/// all of it (and a client that never sent kept a thread forever). Now a line is bounded
/// (64 MiB: a copy job carries its source's map, about 20 bytes per chunk) and refused
/// past it; the daemon then drops the connection.
#[test]
fn attack_control_line_without_newline_is_buffered_without_limit() {
    let v = VolEnv::new();
    let d = start_daemon(&v);
    let pid = d.child.id();
    let before = vm_rss_kib(pid);
    let mut s = UnixStream::connect(&d.sock).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let piece = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    for _ in 0..96 {
        if s.write_all(&piece).is_err() {
            break;
        }
        sent += piece.len();
    }
    // Let it read what is buffered.
    std::thread::sleep(Duration::from_millis(500));
    let grown_mib = vm_rss_kib(pid).saturating_sub(before) / 1024;
    let mut rest = vec![];
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = s.read_to_end(&mut rest);
    assert!(
        grown_mib < 80,
        "the daemon grew by {grown_mib} MiB reading one {} MiB request line (bound: 64 MiB)",
        sent >> 20
    );
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        answer.contains("longer than"),
        "the over-long line is refused: {answer}"
    );
}

/// The last detach decided "nothing attached any more, stop" from the
/// sessions table while an attach of another volume that started before it could still
/// be mounting: that attach was answered `Ok` and then lost when the daemon exited. Now
/// requests in flight are counted under the lock that decides to stop. A timing sweep:
/// it passes whatever order the two commands meet in, and fails if an acknowledged attach
/// is lost.
#[test]
fn attack_attach_racing_the_last_detach_is_not_lost() {
    needs!(Fuse);
    let v = VolEnv::new();
    let a = v.create(&["--size", "64M", "--name", "a"]);
    let b = v.create(&["--size", "64M", "--name", "b"]);
    let da = v.dir("a");
    let db = v.dir("b");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut rounds = 0;
    while Instant::now() < deadline && rounds < 10 {
        rounds += 1;
        v.attach(&a, &da, &[]);
        let data = v.data.clone();
        let (det, att) = std::thread::scope(|s| {
            // The attach spends a while in its key unwrap before it reaches the daemon:
            // sweep the detach's start across that time so the two meet in the daemon.
            let det = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(rounds * 40));
                cli(&data, &["detach", da.to_str().unwrap()])
            });
            let att = s.spawn(|| cli(&data, &["attach", &b, db.to_str().unwrap()]));
            (det.join().unwrap(), att.join().unwrap())
        });
        assert_eq!(det.0, 0, "detach: {}", det.1);
        if att.0 == 0 {
            // Acknowledged: it must be attached now, and stay so.
            std::thread::sleep(Duration::from_millis(300));
            let st = v.status();
            let listed = st["Volumes"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|e| e["VolumeId"] == b.as_str()));
            assert!(
                listed && is_mount_point(&db) && db.join("volume").exists(),
                "round {rounds}: `attach` of {b} succeeded, yet it is not attached: {st:#}"
            );
            v.detach(&db);
        }
        assert!(v.wait_no_daemon(Duration::from_secs(10)));
    }
}
