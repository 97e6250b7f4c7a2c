//! Reading the events back (for lookup and filtering): each line's event object without the
//! chain member, with its seq. No hash is checked here; that is `verify`'s job.
//!
//! Takes no lock: appends are single writes and files are only ever added, so the one thing
//! a reader can meet mid-write is an incomplete last line of the newest file, which is
//! skipped (it is not an event yet; if a crash left it, the next append removes it).

use std::fs;
use std::path::Path;

use super::chain;
use super::error::{AuditError, Result, io};
use super::names;

pub(super) fn read_events(dir: &Path) -> Result<Vec<(u64, serde_json::Value)>> {
    let entries = match names::list(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.has_log) {
        let path = dir.join(&e.log_name);
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        // After the last '\n' comes "" or a torn line.
        let torn = lines.pop().filter(|t| !t.is_empty());
        if torn.is_some() && (i + 1 < entries.len() || e.has_digest) {
            return Err(AuditError::Corrupt {
                path,
                message: format!(
                    "line {} is incomplete in a file that is not the one being written: run verify to see what changed",
                    lines.len() + 1
                ),
            });
        }
        for (n, line) in lines.iter().enumerate() {
            let bad = |why: String| AuditError::Corrupt {
                path: path.clone(),
                message: format!(
                    "line {} is not an audit event ({why}): run verify to see what changed",
                    n + 1
                ),
            };
            let l = chain::parse_line(line).map_err(|why| bad(why.to_owned()))?;
            let event = serde_json::from_slice(&l.event_bytes()).map_err(|e| bad(e.to_string()))?;
            out.push((l.seq, event));
        }
    }
    out.sort_by_key(|(seq, _)| *seq);
    Ok(out)
}
