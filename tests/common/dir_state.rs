//! The one check that a command changed nothing under a data dir: [`DirState::of`] takes
//! every directory and file below it (mode and bytes) before the command, again after,
//! and [`DirState::assert_unchanged_since`] names the first difference.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What every KMS call adds, failed or not: the audit trail and the usage counts (their
/// own tests check those).
pub const CALL_RECORDS: &[&str] = &["audit", "usage.json"];

/// The pool's redb file, whose header every open of the pool commits, even a read-only
/// command's or a refused one's.
pub const POOL_META: &str = "pool/meta.redb";

/// Every directory, file and symlink under a dir, with its mode and (for a file) its bytes
/// or (for a symlink) its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirState(BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>);

impl DirState {
    /// Everything under `dir` except what a command may touch without changing anything:
    /// lock files (created on demand, always empty) and `logs` directories (a daemon
    /// still stopping may write there); and, besides, every entry whose path ends with
    /// one of `skip` (a name, or a tail such as [`POOL_META`]; a skipped directory is
    /// skipped whole).
    pub fn of(dir: &Path, skip: &[&str]) -> DirState {
        let mut out = BTreeMap::new();
        walk(dir, skip, &mut out);
        DirState(out)
    }

    /// The same without its directories: for the volume commands, which open (and so
    /// create) the region's pool, `pool/` and its meta.redb, before they check their
    /// arguments, so that a refused one on a region without a pool leaves them behind.
    pub fn files_only(mut self) -> DirState {
        self.0.retain(|_, (_, bytes)| bytes.is_some());
        self
    }

    /// Fails, naming `what` and the path, if anything appeared, vanished, or changed its
    /// mode or bytes between `before` and `self`.
    #[track_caller]
    pub fn assert_unchanged_since(&self, before: &DirState, what: &str) {
        let names = |s: &DirState| s.0.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(self),
            names(before),
            "{what} failed but changed the set of files in the data dir"
        );
        for (p, (mode, bytes)) in &before.0 {
            let (mode2, bytes2) = &self.0[p];
            assert_eq!(mode, mode2, "{what} failed but changed the mode of {p:?}");
            // Not assert_eq: the bytes may be a keystore or a pool, too long to print.
            assert!(
                bytes == bytes2,
                "{what} failed but changed the content of {p:?}"
            );
        }
    }
}

fn walk(dir: &Path, skip: &[&str], out: &mut BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.expect("dir entry").path();
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".lock")
            || (name == "logs" && m.is_dir())
            || skip.iter().any(|s| p.ends_with(s))
        {
            continue;
        }
        // The mode with its type bits: a file replaced by a directory is a change.
        let mode = m.permissions().mode();
        if m.is_dir() {
            out.insert(p.clone(), (mode, None));
            walk(&p, skip, out);
        } else if m.is_symlink() {
            let target = std::fs::read_link(&p).map(|t| t.into_os_string().into_encoded_bytes());
            out.insert(p, (mode, Some(target.unwrap_or_default())));
        } else if m.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| format!("<{e}>").into_bytes());
            out.insert(p, (mode, Some(bytes)));
        }
        // Sockets: a region daemon's control socket comes and goes with the daemon.
    }
}
