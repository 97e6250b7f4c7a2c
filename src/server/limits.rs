//! The cap on open connections, and what a client over it gets: a short HTTP 503 with an
//! AWS-shaped JSON error, written by a task of its own with a bounded life, or — when even
//! those tasks are at their own small cap, or under TLS, where no plain text can be
//! written — a prompt close. Nothing about a refused connection is kept, so a flood of
//! connections costs at most `max + REFUSING` descriptors and tasks.
//!
//! The descriptor limit (RLIMIT_NOFILE) is raised to what the cap needs when the hard
//! limit allows; otherwise the cap is lowered to fit, and the server says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Connections being refused at once (each for at most [`REFUSE_FOR`]); beyond this a
/// connection over the cap is closed without a word.
pub const REFUSING: usize = 64;
/// Descriptors kept for everything but connections: the listener, keystores, audit
/// files, locks, iam.json, the runtime's own.
const RESERVED_FDS: u64 = 128;
/// How long a refusal may take: writing the 503 and reading what the client already sent
/// (closing with unread bytes would reset the connection and could lose the 503).
const REFUSE_FOR: Duration = Duration::from_secs(1);

pub struct ConnLimit {
    max: usize,
    open: AtomicUsize,
    refusing: AtomicUsize,
    refused_total: AtomicUsize,
    drained: Notify,
}

/// One admitted connection; frees its place when dropped.
pub struct Slot(Arc<ConnLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

struct Refusing(Arc<ConnLimit>);

impl Drop for Refusing {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnLimit {
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            max,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            refused_total: AtomicUsize::new(0),
            drained: Notify::new(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for one more connection, if there is one.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        take(&self.open, self.max).then(|| Slot(self.clone()))
    }

    /// How many connections were refused since the start.
    pub fn refused_total(&self) -> usize {
        self.refused_total.load(Ordering::Relaxed)
    }

    /// Refuses a connection over the cap: a 503 over plain HTTP when a refusing task is
    /// free, else (and always under TLS) a close.
    pub fn refuse(self: &Arc<Self>, stream: TcpStream, plain_http: bool) {
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        if !plain_http || !take(&self.refusing, REFUSING) {
            return; // dropping the stream closes it
        }
        let guard = Refusing(self.clone());
        let response = busy_response(self.max);
        tokio::spawn(async move {
            let _guard = guard;
            let _ = tokio::time::timeout(REFUSE_FOR, answer_busy(stream, response)).await;
        });
    }

    /// Waits until every admitted connection has ended.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Increments `n` if it is below `max`.
fn take(n: &AtomicUsize, max: usize) -> bool {
    n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        (v < max).then_some(v + 1)
    })
    .is_ok()
}

/// The body of the 503: AWS's JSON error shape.
pub fn busy_body(max: usize) -> String {
    serde_json::json!({
        "__type": "ServiceUnavailableException",
        "message": format!(
            "The KMS is at its limit of {max} open connections. Retry later."
        ),
    })
    .to_string()
}

fn busy_response(max: usize) -> Vec<u8> {
    let body = busy_body(max);
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\nx-amzn-requestid: {}\r\n\r\n{body}",
        super::http::JSON_11,
        body.len(),
        crate::kms::event::fast_uuid(),
    )
    .into_bytes()
}

async fn answer_busy(mut stream: TcpStream, response: Vec<u8>) {
    if stream.write_all(&response).await.is_err() {
        return;
    }
    let _ = stream.shutdown().await;
    // Read (and drop) what the client sent until it closes, so that the close is clean.
    let mut sink = [0u8; 4096];
    let mut left = 64 * 1024usize;
    while left > 0 {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Raises RLIMIT_NOFILE for `max_connections`; returns the cap that fits (lower than asked
/// when the hard limit is too low, with a warning on stderr).
pub fn fit_descriptor_limit(max_connections: usize) -> usize {
    let need = max_connections as u64 + REFUSING as u64 + RESERVED_FDS;
    let Ok((have, hard)) = crate::sys::process::raise_open_files(need) else {
        return max_connections;
    };
    if have >= need {
        return max_connections;
    }
    let fits = usize::try_from(have.saturating_sub(REFUSING as u64 + RESERVED_FDS))
        .unwrap_or(0)
        .max(1);
    eprintln!(
        "kms serve: the open-file limit (RLIMIT_NOFILE, hard {hard}) allows {fits} connections, \
         not {max_connections}: serving at most {fits} (raise it with `ulimit -n` or LimitNOFILE=)"
    );
    fits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_and_freed() {
        let l = ConnLimit::new(2);
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert!(l.admit().is_none());
        drop(a);
        assert!(l.admit().is_some());
    }

    #[test]
    fn the_busy_body_is_an_aws_error() {
        let v: serde_json::Value = serde_json::from_str(&busy_body(7)).unwrap();
        assert_eq!(v["__type"], "ServiceUnavailableException");
        assert!(v["message"].as_str().unwrap().contains("limit of 7"));
    }
}
