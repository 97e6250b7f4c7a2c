//! Request and response bodies in zeroizing memory. A KMS body may carry a plaintext
//! (Encrypt's input, Decrypt's and GenerateDataKey's output), so every copy the server
//! itself makes lives in a buffer that is wiped when dropped, and a buffer that must grow
//! copies into a new one and wipes the old (no reallocation leaves a copy behind):
//!
//! - the request body is gathered frame by frame into a [`Zeroizing`] `Vec` sized from its
//!   `Content-Length` (bounded by the limit), within the body timeout, and counted
//!   against a server-wide budget of buffered bytes so that many slow or large bodies
//!   cannot grow memory without bound;
//! - the JSON values parsed from it and made for the response have their strings wiped
//!   ([`zeroize_strings`]) once the answer is serialized;
//! - the response is serialized into a zeroizing buffer ([`ZeroizingWriter`]) and handed
//!   to hyper as its own body type ([`ZBody`], whose chunk [`ZBuf`] is a `bytes::Buf`
//!   over that buffer), so hyper writes it from our memory and drops it, wiped, once sent.
//!
//! What is out of reach: hyper's connection read buffer (the request's bytes as they came
//! off the socket; reused for the next request and freed, not wiped), h2's write buffer
//! (HTTP/2 copies DATA frames under 256 bytes into it) and rustls's buffers under TLS.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Buf;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::{Zeroize, Zeroizing};

/// A `Write` into zeroizing memory: growing copies into a new buffer and wipes the old.
pub struct ZeroizingWriter(pub Zeroizing<Vec<u8>>);

impl ZeroizingWriter {
    pub fn with_capacity(n: usize) -> ZeroizingWriter {
        ZeroizingWriter(Zeroizing::new(Vec::with_capacity(n)))
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        let need = self.0.len() + bytes.len();
        if need > self.0.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(need.max(2 * self.0.capacity())));
            bigger.extend_from_slice(&self.0);
            // The old buffer is wiped as it drops here.
            self.0 = bigger;
        }
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for ZeroizingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Wipes every string (and object key) of a JSON value in place.
pub fn zeroize_strings(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        Value::Object(m) => {
            for (_, item) in m.iter_mut() {
                zeroize_strings(item);
            }
            // Keys are member names (ours or the client's), never secrets; the map frees them.
        }
        _ => {}
    }
}

/// A response chunk: our zeroizing buffer, as hyper's `Buf`.
pub struct ZBuf {
    bytes: Zeroizing<Vec<u8>>,
    at: usize,
}

impl Buf for ZBuf {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn chunk(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    fn advance(&mut self, n: usize) {
        self.at = (self.at + n).min(self.bytes.len());
    }
}

/// Tracks the requests of one connection, for its idle timeout: how many are in flight
/// and when the last one ended.
#[derive(Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Milliseconds since [`epoch`] at which the last response was dropped (sent).
    last_done_ms: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        let a = Activity::default();
        a.last_done_ms.store(now_ms(), Ordering::Relaxed);
        Arc::new(a)
    }

    /// Counts a request in; the guard counts it out when its response is dropped.
    pub fn begin(self: &Arc<Activity>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// How long the connection has had no request in flight (zero while one is).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = self.last_done_ms.load(Ordering::Relaxed);
        Duration::from_millis(now_ms().saturating_sub(last))
    }
}

pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_done_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A whole response body in zeroizing memory.
pub struct ZBody {
    chunk: Option<ZBuf>,
    len: u64,
    _in_flight: Option<InFlight>,
}

impl ZBody {
    pub fn new(bytes: Zeroizing<Vec<u8>>, in_flight: Option<InFlight>) -> ZBody {
        ZBody {
            len: bytes.len() as u64,
            chunk: (!bytes.is_empty()).then_some(ZBuf { bytes, at: 0 }),
            _in_flight: in_flight,
        }
    }
}

impl Body for ZBody {
    type Data = ZBuf;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<ZBuf>, Infallible>>> {
        Poll::Ready(self.chunk.take().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunk.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(if self.chunk.is_some() { self.len } else { 0 })
    }
}

/// Why a request body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// The server-wide budget of request-body bytes held in memory at once.
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }
}

/// A request body and its share of the budget (returned when dropped).
pub struct RequestBody {
    pub bytes: Zeroizing<Vec<u8>>,
    _budget: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
impl RequestBody {
    /// A body outside any budget (the handler's tests).
    pub fn unbudgeted(bytes: Vec<u8>) -> RequestBody {
        RequestBody {
            bytes: Zeroizing::new(bytes),
            _budget: None,
        }
    }
}

/// Reads a whole body, at most `limit` bytes, within `timeout` (waiting for budget
/// counts against it too).
pub async fn collect(
    mut body: Incoming,
    limit: usize,
    budget: &BodyBudget,
    timeout: Duration,
) -> Result<RequestBody, BodyError> {
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let expected = usize::try_from(hint.exact().unwrap_or(0)).unwrap_or(limit);
    let read = async {
        // Reserved up to 64 KiB only: a declared length is a promise, not yet memory to hold.
        let mut out = ZeroizingWriter::with_capacity(expected.min(limit).min(64 * 1024));
        let mut held: Option<OwnedSemaphorePermit> = None;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(frame) = frame else {
                return Err(BodyError::Broken);
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            if out.0.len() + data.len() > limit {
                return Err(BodyError::TooLarge);
            }
            let n = u32::try_from(data.len()).map_err(|_| BodyError::TooLarge)?;
            if n > 0 {
                let permit = budget
                    .0
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .map_err(|_| BodyError::Broken)?;
                match &mut held {
                    Some(h) => h.merge(permit),
                    None => held = Some(permit),
                }
            }
            out.extend(&data);
        }
        Ok(RequestBody {
            bytes: out.0,
            _budget: held,
        })
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_writer_grows_and_keeps_every_byte() {
        let mut w = ZeroizingWriter::with_capacity(1);
        for i in 0..1000u32 {
            w.write_all(&i.to_le_bytes()).unwrap();
        }
        assert_eq!(w.0.len(), 4000);
        assert_eq!(&w.0[4..8], &1u32.to_le_bytes());
    }

    #[test]
    fn strings_are_wiped_in_place() {
        let mut v = serde_json::json!({"Plaintext": "c2VjcmV0", "A": [{"B": "x"}], "N": 1});
        zeroize_strings(&mut v);
        assert_eq!(v["Plaintext"], "");
        assert_eq!(v["A"][0]["B"], "");
        assert_eq!(v["N"], 1);
    }

    #[test]
    fn a_zbuf_is_a_buf() {
        let mut b = ZBuf {
            bytes: Zeroizing::new(b"hello".to_vec()),
            at: 0,
        };
        b.advance(2);
        assert_eq!(b.chunk(), b"llo");
        assert_eq!(b.remaining(), 3);
        b.advance(10);
        assert_eq!(b.remaining(), 0);
    }
}
