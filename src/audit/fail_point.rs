//! Test-only hooks in the write of a group commit (`writer::write_out`), per audit
//! directory: hold a write until the test releases it (so that other callers queue up
//! behind its leader), count writes, and tear a write (half the lines' bytes reach the
//! file, then the write fails) to show that no caller of a failed write gets a result.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use super::error::{AuditError, Result};

#[derive(Default)]
struct Hooks {
    /// Writes into the directory wait while it is held.
    held: bool,
    /// A writer is waiting in a held write.
    waiting: bool,
    /// Writes that reached the file (or were torn) so far.
    writes: u32,
    /// Tear the write number `n` (0-based count of writes).
    tear_at: Option<u32>,
}

static HOOKS: Mutex<Option<HashMap<PathBuf, Hooks>>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

fn with<T>(dir: &Path, f: impl FnOnce(&mut Hooks) -> T) -> T {
    let mut g = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_default()
        .entry(dir.to_path_buf())
        .or_default())
}

/// Makes the next writes into `dir` wait until [`release`].
pub(crate) fn hold(dir: &Path) {
    with(dir, |h| h.held = true);
}

/// Lets held writes into `dir` go on.
pub(crate) fn release(dir: &Path) {
    with(dir, |h| h.held = false);
    CHANGED.notify_all();
}

/// Waits until a write into `dir` is waiting in a hold.
pub(crate) fn wait_for_held_writer(dir: &Path) {
    let mut g = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    while !g
        .get_or_insert_default()
        .get(dir)
        .is_some_and(|h| h.waiting)
    {
        g = CHANGED.wait(g).unwrap_or_else(|p| p.into_inner());
    }
}

/// How many writes into `dir` were made so far.
pub(crate) fn writes(dir: &Path) -> u32 {
    with(dir, |h| h.writes)
}

/// Tears the write number `n` into `dir` (counted from 0 as [`writes`] counts).
pub(crate) fn tear_write(dir: &Path, n: u32) {
    with(dir, |h| h.tear_at = Some(n));
}

/// Called by `write_out` before it writes `out` to `file` (at `path`, in the audit dir).
pub(super) fn before_write(path: &Path, file: &mut std::fs::File, out: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a log file is in its directory");
    let mut g = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let h = g
            .get_or_insert_default()
            .entry(dir.to_path_buf())
            .or_default();
        if !h.held {
            h.waiting = false;
            break;
        }
        if !h.waiting {
            h.waiting = true;
            CHANGED.notify_all();
        }
        g = CHANGED.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    let h = g
        .get_or_insert_default()
        .entry(dir.to_path_buf())
        .or_default();
    let n = h.writes;
    h.writes += 1;
    if h.tear_at == Some(n) {
        let _ = file.write_all(&out[..out.len() / 2]);
        return Err(AuditError::Io {
            action: "append to audit log",
            path: path.to_path_buf(),
            source: std::io::Error::other("write torn by a test"),
        });
    }
    Ok(())
}
