//! Checking a log: every line's hash and link, the seq order across files, each digest's
//! hash, contents and link to the previous digest. Tampering is reported as the first
//! [`Problem`] in seq order, never as an error; errors are for a directory that cannot be
//! listed.

use std::fs;
use std::path::Path;

use serde::Serialize;

use super::chain::{self, GENESIS, Hash};
use super::digest::Digest;
use super::error::{Result, io};
use super::keys::ChainKeys;
use super::names::{self, Entry};

/// The outcome of [`AuditLog::verify`](super::AuditLog::verify).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VerifyReport {
    /// True when no problem was found.
    pub valid: bool,
    /// Log files present.
    pub files: usize,
    /// Log files present that have a digest.
    pub sealed_files: usize,
    /// Events checked and found intact before the first problem (all of them if valid).
    pub events: u64,
    /// Seq of the last intact event before the first problem (0 if none).
    pub last_seq: u64,
    pub problem: Option<Problem>,
}

/// The first thing found wrong, in seq order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Problem {
    pub kind: ProblemKind,
    /// The event the problem is about (the first missing one for `Removed`).
    pub seq: Option<u64>,
    /// The log or digest file it was found in.
    pub file: String,
    /// 1-based line of `file`, when the problem is on a line.
    pub line: Option<u64>,
    /// The CloudTrail `eventID` of event `seq`, when it is there and readable.
    pub event_id: Option<String>,
    /// A sentence for the user.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ProblemKind {
    /// An event's bytes or its link to the previous event changed.
    Altered,
    /// Events or a whole log file are missing.
    Removed,
    /// Events are present but not in seq order.
    Reordered,
    /// The active file ends in an incomplete line (a write cut short).
    Truncated,
    /// A digest is altered, missing, or does not match its log file or the digest before it.
    DigestMismatch,
    /// A file or line cannot be read as an audit event or digest.
    Unreadable,
    /// An event is under a chain key the region does not have, or under an older one than
    /// the event before it; or no event is under the newest chain key (events logged after
    /// a root-key rotation were removed).
    ChainKey,
}

/// Checks the log in `dir` with the chain `keys`.
pub(super) fn verify(dir: &Path, keys: &ChainKeys) -> Result<VerifyReport> {
    let entries = match names::list(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("list", dir)(e)),
    };
    let mut v = Verifier {
        keys,
        epoch: 0,
        expected: 1,
        prev: GENESIS,
        prev_digest: None,
        events: 0,
    };
    let problem = entries
        .iter()
        .enumerate()
        .find_map(|(i, e)| {
            let is_newest = i + 1 == entries.len();
            v.check_entry(dir, e, is_newest)
        })
        .or_else(|| v.newest_key_unused(&entries));
    Ok(VerifyReport {
        valid: problem.is_none(),
        files: entries.iter().filter(|e| e.has_log).count(),
        sealed_files: entries.iter().filter(|e| e.has_log && e.has_digest).count(),
        events: v.events,
        last_seq: v.expected - 1,
        problem,
    })
}

/// The chain as verified so far.
struct Verifier<'k> {
    keys: &'k ChainKeys,
    /// Chain key epoch of event `expected - 1` (0 before the first).
    epoch: u32,
    /// Seq the next event must have.
    expected: u64,
    /// Hash of event `expected - 1`.
    prev: Hash,
    /// `digestHash` of the last sealed file checked.
    prev_digest: Option<String>,
    events: u64,
}

fn problem(
    kind: ProblemKind,
    seq: Option<u64>,
    file: &str,
    line: Option<u64>,
    message: String,
) -> Problem {
    Problem {
        kind,
        seq,
        file: file.to_owned(),
        line,
        event_id: None,
        message,
    }
}

/// "event 5" or "events 5..9".
fn events_range(first: u64, last: u64) -> String {
    if first == last {
        format!("event {first} is")
    } else {
        format!("events {first}..{last} are")
    }
}

impl Verifier<'_> {
    /// Every root-key rotation logs its end under the key it made, so a log whose last
    /// event is under an older key lost events from its end (or the rotation was killed
    /// between its commit and that event: then the next event logged fixes it).
    fn newest_key_unused(&self, entries: &[Entry]) -> Option<Problem> {
        let newest = self.keys.latest_epoch();
        if self.epoch >= newest {
            return None;
        }
        let file = entries.last().map_or("", |e| e.log_name.as_str());
        Some(problem(
            ProblemKind::ChainKey,
            Some(self.expected),
            file,
            None,
            format!(
                "the region has audit chain key {newest} (made by a root-key rotation) but the log ends at event {} under key {}: events logged after the rotation were removed, or the rotation was killed before it logged its end (then the next KMS command logs under the new key and this goes away)",
                self.expected - 1,
                self.epoch
            ),
        ))
    }

    fn check_entry(&mut self, dir: &Path, e: &Entry, is_newest: bool) -> Option<Problem> {
        let digest_name = e.digest_name();
        if !e.has_log {
            return Some(self.removed_file(dir, e, &digest_name));
        }
        let name = e.log_name.as_str();
        if e.first_seq > self.expected {
            return Some(problem(
                ProblemKind::Removed,
                Some(self.expected),
                name,
                None,
                format!(
                    "{} missing: the next log file {name} starts at event {} (a log file and its digest, or the end of the previous file, were removed)",
                    events_range(self.expected, e.first_seq - 1),
                    e.first_seq
                ),
            ));
        }
        if e.first_seq < self.expected {
            return Some(problem(
                ProblemKind::Reordered,
                Some(e.first_seq),
                name,
                None,
                format!(
                    "log file {name} is named for event {} but the files before it already reach event {} (a log file was copied or renamed)",
                    e.first_seq,
                    self.expected - 1
                ),
            ));
        }
        let bytes = match fs::read(dir.join(name)) {
            Ok(b) => b,
            Err(err) => {
                return Some(problem(
                    ProblemKind::Unreadable,
                    Some(self.expected),
                    name,
                    None,
                    format!("log file {name} cannot be read: {err}"),
                ));
            }
        };
        let (complete, torn) = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => (&bytes[..=i], &bytes[i + 1..]),
            None => (&bytes[..0], &bytes[..]),
        };
        let lines: Vec<&[u8]> = complete
            .split(|&b| b == b'\n')
            .take(complete.iter().filter(|&&b| b == b'\n').count())
            .collect();
        if let Some(p) = self.check_lines(name, &lines) {
            return Some(p);
        }
        if e.has_digest {
            // A torn tail in a sealed file is left to the digest, which says what is missing.
            return self.check_digest(dir, e, &digest_name, &bytes);
        }
        if !torn.is_empty() {
            return Some(problem(
                ProblemKind::Truncated,
                Some(self.expected),
                name,
                Some(lines.len() as u64 + 1),
                format!(
                    "line {} of {name} is incomplete (a write was cut short, e.g. by a crash): the next append removes it",
                    lines.len() + 1
                ),
            ));
        }
        if !is_newest {
            return Some(problem(
                ProblemKind::DigestMismatch,
                None,
                &digest_name,
                None,
                format!(
                    "the digest of {name} is missing: {digest_name} was removed (later log files exist, so {name} was sealed)"
                ),
            ));
        }
        None
    }

    /// A digest whose log file is gone.
    fn removed_file(&self, dir: &Path, e: &Entry, digest_name: &str) -> Problem {
        let last = fs::read(dir.join(digest_name))
            .ok()
            .and_then(|b| Digest::parse(&b).ok())
            .map(|d| d.body.last_seq);
        let first = self.expected.min(e.first_seq);
        let what = match last {
            Some(last) if last >= first => events_range(first, last),
            _ => format!("events from {first} are"),
        };
        problem(
            ProblemKind::Removed,
            Some(first),
            &e.log_name,
            None,
            format!(
                "{what} missing: log file {} was removed (its digest remains)",
                e.log_name
            ),
        )
    }

    fn check_lines(&mut self, name: &str, lines: &[&[u8]]) -> Option<Problem> {
        for (i, raw) in lines.iter().enumerate() {
            let line_no = i as u64 + 1;
            let at = format!("line {line_no} of {name}");
            let l = match chain::parse_line(raw) {
                Ok(l) => l,
                Err(why) => {
                    return Some(problem(
                        ProblemKind::Unreadable,
                        Some(self.expected),
                        name,
                        Some(line_no),
                        format!("{at} is not an audit event: {why}"),
                    ));
                }
            };
            let want = self.expected;
            if l.seq > want {
                let later = lines[i + 1..]
                    .iter()
                    .filter_map(|r| chain::parse_line(r).ok())
                    .find(|x| x.seq == want);
                let p = match later {
                    Some(x) => {
                        let mut p = problem(
                            ProblemKind::Reordered,
                            Some(want),
                            name,
                            Some(line_no),
                            format!(
                                "event {want} is out of order: {at} holds event {} and event {want} comes later (events were reordered)",
                                l.seq
                            ),
                        );
                        p.event_id = x.event_id();
                        p
                    }
                    None => problem(
                        ProblemKind::Removed,
                        Some(want),
                        name,
                        Some(line_no),
                        format!(
                            "{} missing: {at} holds event {} ({} removed)",
                            events_range(want, l.seq - 1),
                            l.seq,
                            if l.seq - want == 1 {
                                "an event was"
                            } else {
                                "events were"
                            }
                        ),
                    ),
                };
                return Some(p);
            }
            if l.seq < want {
                return Some(problem(
                    ProblemKind::Reordered,
                    Some(l.seq),
                    name,
                    Some(line_no),
                    format!(
                        "{at} holds event {} again after event {} (an event was copied or moved)",
                        l.seq,
                        want - 1
                    ),
                ));
            }
            // A problem on this line, naming its eventID when it has one.
            let on_line = |kind: ProblemKind, message: &dyn Fn(&str) -> String| {
                let event_id = l.event_id();
                let id = event_id
                    .as_ref()
                    .map_or(String::new(), |id| format!("eventID {id}, "));
                let mut p = problem(kind, Some(want), name, Some(line_no), message(&id));
                p.event_id = event_id;
                p
            };
            let Some(key) = self.keys.get(l.epoch) else {
                return Some(on_line(ProblemKind::ChainKey, &|id| {
                    format!(
                        "event {want} ({id}{at}) is under audit chain key {}, which this region does not have (its newest is {}): the line was altered, or the keystore is older than the log",
                        l.epoch,
                        self.keys.latest_epoch()
                    )
                }));
            };
            if l.epoch < self.epoch {
                return Some(on_line(ProblemKind::ChainKey, &|id| {
                    format!(
                        "event {want} ({id}{at}) is under audit chain key {} after events under key {}: the chain never goes back to a key a root-key rotation replaced (someone holding the old root key wrote it)",
                        l.epoch, self.epoch
                    )
                }));
            }
            if chain::event_hash(key, l.epoch, l.seq, &l.prev, l.head) != l.hash {
                return Some(on_line(ProblemKind::Altered, &|id| {
                    format!(
                        "event {want} ({id}{at}) was altered: its hash does not match its contents"
                    )
                }));
            }
            if l.prev != self.prev {
                return Some(on_line(ProblemKind::Altered, &|id| {
                    format!(
                        "event {want} ({id}{at}) does not link to event {}: the chain is broken (an event before it was replaced, or the log was restarted)",
                        want.saturating_sub(1)
                    )
                }));
            }
            self.prev = l.hash;
            self.epoch = l.epoch;
            self.expected += 1;
            self.events += 1;
        }
        None
    }

    /// Checks a sealed file's digest against the file's bytes and the chain so far.
    fn check_digest(
        &mut self,
        dir: &Path,
        e: &Entry,
        digest_name: &str,
        bytes: &[u8],
    ) -> Option<Problem> {
        let name = e.log_name.as_str();
        let mismatch = |message: String| {
            Some(problem(
                ProblemKind::DigestMismatch,
                None,
                digest_name,
                None,
                message,
            ))
        };
        let d = match fs::read(dir.join(digest_name))
            .map_err(|e| e.to_string())
            .and_then(|b| Digest::parse(&b))
        {
            Ok(d) => d,
            Err(why) => return mismatch(format!("digest {digest_name} cannot be read: {why}")),
        };
        let authentic = self
            .keys
            .get(self.epoch)
            .is_some_and(|key| d.is_authentic(key));
        if !authentic {
            return mismatch(format!(
                "digest {digest_name} was altered (or made with another key): its digestHash does not match its contents"
            ));
        }
        let b = &d.body;
        if b.log_file != name || b.first_seq != e.first_seq {
            return mismatch(format!(
                "digest {digest_name} describes {} from event {}, not {name} (digests were swapped or renamed)",
                b.log_file, b.first_seq
            ));
        }
        if b.previous_digest_hash != self.prev_digest {
            return mismatch(format!(
                "digest {digest_name} does not link to the digest of the log file before {name} (a digest was removed or replaced)"
            ));
        }
        let last_found = self.expected - 1;
        if b.last_seq > last_found {
            return Some(problem(
                ProblemKind::Removed,
                Some(self.expected),
                name,
                None,
                format!(
                    "{} missing: {name} ends at event {last_found} but its digest says it was sealed at event {} (events were removed from the end of the file)",
                    events_range(self.expected, b.last_seq),
                    b.last_seq
                ),
            ));
        }
        if b.last_seq < last_found {
            return mismatch(format!(
                "{name} holds events {}..{last_found} after event {}, where it was sealed (events were added after sealing)",
                b.last_seq + 1,
                b.last_seq
            ));
        }
        if b.last_seq
            .checked_sub(b.first_seq)
            .and_then(|n| n.checked_add(1))
            != Some(b.event_count)
            || chain::parse_hex(b.last_event_hash.as_bytes()) != Some(self.prev)
        {
            return mismatch(format!(
                "digest {digest_name} does not describe the events of {name} (its eventCount or lastEventHash differs)"
            ));
        }
        if b.log_file_blake3 != blake3::hash(bytes).to_hex().as_str() {
            return mismatch(format!(
                "{name} changed after it was sealed: its bytes do not match logFileBlake3 in {digest_name} although every event verifies (bytes were added or changed between events)"
            ));
        }
        self.prev_digest = Some(d.digest_hash);
        None
    }
}
