//! Volume commands given bad input or used in the wrong state: each fails with one
//! `cryptvol: ` line on stderr and its documented exit code (3 not found, 4 wrong state,
//! 6 invalid value, 7 wrong key, 9 already exists), and changes nothing: no volume
//! created, resized or deleted, no daemon left running.
//!
//! Tests that attach need FUSE; without it they skip, unless `CRYPTVOL_REQUIRE_MOUNT=1`.

mod common;

use std::time::{Duration, Instant};

use common::mount::*;
use common::*;
use serde_json::Value;

const UNKNOWN_ID: &str = "vol-0123456789abcdef0";

/// The files under the data dir but the pool's redb file, whose header every open of the
/// pool commits (a read-only or refused command's too); see [`DirState::files_only`].
fn files(v: &VolEnv) -> DirState {
    DirState::of(&v.data, &[dir_state::POOL_META]).files_only()
}

fn volumes(v: &VolEnv) -> Value {
    v.json(&["volume", "list"])["Volumes"].clone()
}

/// Runs `cmd`, which must fail with `code`; checks the one-line error, that the volumes
/// (and other files) are as before, and that no daemon was left running. Returns the line.
#[track_caller]
fn refused(v: &VolEnv, args: &[&str], code: i32) -> String {
    let (files_before, vols_before) = (files(v), volumes(v));
    let daemons_before = daemons_of(&v.data);
    let line = v.run(args).fails(code);
    assert_eq!(
        volumes(v),
        vols_before,
        "`cryptvol {}` failed but changed the volumes",
        args.join(" ")
    );
    files(v).assert_unchanged_since(&files_before, &format!("`cryptvol {}`", args.join(" ")));
    if daemons_before.is_empty() {
        assert!(
            v.wait_no_daemon(Duration::from_secs(5)),
            "`cryptvol {}` failed but left a region daemon running",
            args.join(" ")
        );
    }
    line
}

#[test]
fn unknown_volume_is_not_found() {
    let v = VolEnv::new();
    v.create(&["--size", "64M", "--name", "real"]);
    let dir = v.dir("m");
    let d = dir.to_string_lossy().to_string();
    for name in [UNKNOWN_ID, "nosuch"] {
        for args in [
            vec!["volume", "describe", name],
            vec!["volume", "resize", name, "--size", "1G"],
            vec!["volume", "delete", name, "--yes"],
            vec!["attach", name, &d],
            vec!["mount", name, &d],
        ] {
            let line = refused(&v, &args, 3);
            assert!(line.contains(name), "{line}");
            assert!(line.contains("volume list"), "no hint in: {line}");
        }
    }
    assert!(!is_mount_point(&dir));
    // Nothing attached there: detach is "not found" too.
    let line = refused(&v, &["detach", &d], 3);
    assert!(line.contains(&d), "{line}");
}

#[test]
fn attach_to_a_missing_dir_fails_and_leaves_no_daemon() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M"]);
    let missing = v.path("no/such/dir");
    let not_dir = v.file(b"a file, not a directory");
    for target in [&missing, &not_dir] {
        let t = target.to_string_lossy().to_string();
        let out = v.attach_run(&vol, target, &[]);
        assert_ne!(out.code, 0, "attach to {t} succeeded");
        assert!(
            out.code != 1 && out.code != 2,
            "attach to {t}: exit {} (internal or usage error)",
            out.code
        );
        assert_one_error_line(&out.args.join(" "), &out.stderr);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        let line = out.stderr.trim_end().to_string();
        assert!(line.contains(&t), "the error does not name {t}: {line}");
        assert!(!missing.exists(), "attach created {missing:?}");
        let st = v.status();
        assert_eq!(st["Volumes"], serde_json::json!([]), "{st:#}");
        // The daemon started for this attach must not stay behind.
        let start = Instant::now();
        let gone = v.wait_no_daemon(Duration::from_secs(5));
        assert!(
            gone,
            "a region daemon ({:?}) still runs {:?} after the failed attach to {t}",
            daemons_of(&v.data),
            start.elapsed()
        );
    }
    assert_eq!(v.describe_vol(&vol)["State"], "available");
}

#[test]
fn delete_is_refused_while_attached_and_names_stay_unique() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M", "--name", "db"]);
    let dir = v.dir("m");
    let f = v.attach("db", &dir, &[]);
    for target in [vol.as_str(), "db"] {
        let line = v.run(&["volume", "delete", target, "--yes"]).fails(4);
        assert!(line.contains(&vol), "{line}");
        assert!(line.contains("detach"), "no hint in: {line}");
    }
    // With the daemon owning the pool, names are still unique (exit 9).
    let line = v
        .run(&["volume", "create", "--size", "64M", "--name", "db"])
        .fails(9);
    assert!(line.contains("db"), "{line}");
    assert_eq!(volumes(&v).as_array().unwrap().len(), 1);
    let file = open_rw(&f);
    pwrite(&file, 0, b"still here");
    assert_eq!(pread(&file, 0, 10), b"still here");
    drop(file);
    v.detach(&dir);
    let out = v.json(&["volume", "delete", "db", "--yes"]);
    assert_eq!(out["VolumeId"], vol.as_str(), "{out:#}");
    assert_eq!(out["Deleted"], true, "{out:#}");
    assert_eq!(volumes(&v), serde_json::json!([]));
    refused(&v, &["volume", "describe", &vol], 3);
    // The name is free again.
    v.create(&["--size", "64M", "--name", "db"]);
}

#[test]
fn delete_without_yes_off_a_terminal_is_refused() {
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M"]);
    let line = refused(&v, &["volume", "delete", &vol], 6);
    assert!(line.contains("--yes"), "{line}");
    assert_eq!(v.describe_vol(&vol)["VolumeId"], vol.as_str());
}

#[test]
fn duplicate_or_malformed_names_are_refused() {
    let v = VolEnv::new();
    let first = v.create(&["--size", "64M", "--name", "db"]);
    let line = refused(
        &v,
        &["volume", "create", "--size", "128M", "--name", "db"],
        9,
    );
    assert!(line.contains("db") && line.contains(&first), "{line}");
    for bad in ["vol-0123456789abcdef0", "a/b", &"n".repeat(129)] {
        refused(&v, &["volume", "create", "--size", "64M", "--name", bad], 6);
    }
}

#[test]
fn invalid_sizes_are_refused() {
    let v = VolEnv::new();
    for size in [
        "",
        "abc",
        "G",
        "10X",
        "1.5G",
        "0",
        "4095",
        "1000",
        "-1G",
        "99999999999T",
        "65T",
    ] {
        let arg = format!("--size={size}");
        let line = refused(&v, &["volume", "create", &arg], 6);
        assert!(line.contains("size"), "{size:?}: {line}");
    }
    for chunk in ["3M", "32K", "128M", "lots"] {
        refused(
            &v,
            &["volume", "create", "--size", "1G", "--chunk-size", chunk],
            6,
        );
    }
    assert_eq!(volumes(&v), serde_json::json!([]));

    let vol = v.create(&["--size", "1G"]);
    for size in ["512M", "1073737728", "abc", "0", "65T"] {
        let arg = format!("--size={size}");
        refused(&v, &["volume", "resize", &vol, &arg], 6);
    }
    let line = refused(&v, &["volume", "resize", &vol, "--size", "512M"], 6);
    assert!(line.contains("smaller"), "{line}");
    assert_eq!(v.describe_vol(&vol)["SizeBytes"], GIB);
    // Growing works offline.
    let out = v.json(&["volume", "resize", &vol, "--size", "2G"]);
    assert_eq!(out["SizeBytes"], 2 * GIB, "{out:#}");
    assert_eq!(v.describe_vol(&vol)["SizeBytes"], 2 * GIB);
}

#[test]
fn resize_grows_the_attached_file() {
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "64M"]);
    let dir = v.dir("m");
    let path = v.attach(&vol, &dir, &[]);
    let f = open_rw(&path);
    pwrite(&f, 64 * MIB - 6, b"at end");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * MIB);

    refused(&v, &["volume", "resize", &vol, "--size", "32M"], 6);
    let out = v.json(&["volume", "resize", &vol, "--size", "128M"]);
    assert_eq!(out["SizeBytes"], 128 * MIB, "{out:#}");
    assert_eq!(v.describe_vol(&vol)["SizeBytes"], 128 * MIB);
    // The kernel caches attributes for up to a second.
    let grown = wait_until(Duration::from_secs(3), || {
        std::fs::metadata(&path).is_ok_and(|m| m.len() == 128 * MIB)
    });
    assert!(
        grown,
        "DIR/volume is {} bytes 3 s after resize to 128M",
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
    );
    let st = v.status();
    assert_eq!(st["Volumes"][0]["Size"], 128 * MIB, "{st:#}");
    // The new space is usable at once, and the old data is still there.
    assert_zeros(
        "the grown part",
        64 * MIB,
        &pread(&f, 64 * MIB, MIB as usize),
    );
    pwrite(&f, 100 * MIB + 3, b"in the new part");
    pwrite(&f, 128 * MIB - 4, b"last");
    assert_eq!(pread(&f, 100 * MIB + 3, 15), b"in the new part");
    assert_eq!(pread(&f, 64 * MIB - 6, 6), b"at end");
    f.sync_all().expect("fsync");
    drop(f);
    v.detach(&dir);

    let path = v.attach(&vol, &dir, &[]);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 128 * MIB);
    let f = open_rw(&path);
    assert_eq!(pread(&f, 100 * MIB + 3, 15), b"in the new part");
    assert_eq!(pread(&f, 128 * MIB - 4, 4), b"last");
    drop(f);
    v.detach(&dir);
}

/// The control socket is typed and versioned: garbage, an unknown op, another protocol
/// version, an over-long line and a stalled client each get one error (or are dropped),
/// and the daemon keeps serving its volume.
#[test]
fn control_socket_refuses_bad_requests_and_keeps_serving() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    needs!(Fuse);
    let v = VolEnv::new();
    let vol = v.create(&["--size", "16M"]);
    let dir = v.dir("m");
    let file = v.attach(&vol, &dir, &[]);
    pwrite(&open_rw(&file), 0, b"still here");
    let sock = v.region().join("run/daemon.sock");
    let ask = |bytes: &[u8]| -> String {
        let mut s = UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut line = String::new();
        let _ = BufReader::new(&s).read_line(&mut line);
        line
    };
    let r = ask(b"this is not json\n");
    assert!(r.contains("\"Err\"") && r.contains("malformed"), "{r}");
    let r = ask(b"{\"v\":4,\"request\":{\"op\":\"format_disk\"}}\n");
    assert!(r.contains("\"Err\"") && r.contains("malformed"), "{r}");
    let r = ask(b"{\"v\":1,\"request\":{\"op\":\"ping\"}}\n");
    assert!(r.contains("\"Err\"") && r.contains("protocol"), "{r}");
    let r = ask(b"{\"v\":4,\"request\":{\"op\":\"ping\"}");
    assert!(r.contains("\"Err\"") && r.contains("incomplete"), "{r}");
    // A header that does not decode is refused by its type, not stored.
    let r = ask(b"{\"v\":4,\"request\":{\"op\":\"create_volume\",\"header\":\"AAAA\"}}\n");
    assert!(r.contains("\"Err\""), "{r}");
    // 80 MiB without a newline: refused after the limit, not buffered whole.
    let big = vec![b'x'; 80 << 20];
    let r = ask(&big);
    assert!(r.contains("\"Err\"") && r.contains("longer than"), "{r}");
    // Still serving.
    assert_eq!(pread(&open_rw(&file), 0, 10), b"still here");
    let st = v.status();
    assert_eq!(st["Volumes"].as_array().unwrap().len(), 1, "{st:#}");
    v.detach(&dir);
    v.assert_pool_clean("local-1");
}
