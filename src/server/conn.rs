//! One connection, from its TLS handshake to its close, under the server's timeouts:
//!
//! - TLS handshake: `--tls-handshake-timeout`;
//! - request head: `--header-timeout` (hyper's HTTP/1 header read timeout; it runs from
//!   the moment the connection is ready for a request, so a client that trickles a header
//!   byte at a time is cut off, and so is a keep-alive connection that sends nothing);
//! - request body: `--body-timeout` (in `listener::respond`);
//! - idle: `--idle-timeout` without a request in flight closes the connection gracefully
//!   (HTTP/2: GOAWAY); a connection that does not finish closing within a grace period,
//!   or when the server stops, is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::body::Activity;
use super::http::State;
use super::listener::respond;

/// Streams one HTTP/2 connection may have open at once: with the connection cap and the
/// body limit, this bounds the requests in flight.
const MAX_STREAMS: u32 = 32;
/// How long a connection asked to close (idle) may take to do so.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long requests in flight may take to finish once the server stops.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub tls_handshake: Duration,
    pub header: Duration,
    pub body: Duration,
    pub idle: Duration,
}

/// Serves one accepted connection (after its TLS handshake, if any) until it closes, it
/// idles out, or the server stops (`stop` turns true).
pub async fn serve<I>(
    io: I,
    state: Arc<State>,
    peer: SocketAddr,
    tls: bool,
    timeouts: Timeouts,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let seen = activity.clone();
    let svc = hyper::service::service_fn(move |req| {
        let in_flight = seen.begin();
        let state = state.clone();
        async move {
            Ok::<_, Infallible>(respond(state, req, peer, tls, in_flight, timeouts.body).await)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let mut deadline: Option<Instant> = None;
    loop {
        let idle_check = Instant::now() + timeouts.idle.saturating_sub(activity.idle_for());
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(idle_check), if deadline.is_none() => {
                if activity.idle_for() >= timeouts.idle {
                    conn.as_mut().graceful_shutdown();
                    deadline = Some(Instant::now() + CLOSE_GRACE);
                }
            }
            _ = stop.changed(), if deadline.is_none() => {
                conn.as_mut().graceful_shutdown();
                deadline = Some(Instant::now() + STOP_GRACE);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => return,
        }
    }
}

/// A TLS handshake within its timeout, then [`serve`]; a failed or slow handshake is the
/// client's problem: the connection is closed.
pub async fn serve_tls(
    stream: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
    peer: SocketAddr,
    timeouts: Timeouts,
    stop: watch::Receiver<bool>,
) {
    if let Ok(Ok(tls_stream)) =
        tokio::time::timeout(timeouts.tls_handshake, acceptor.accept(stream)).await
    {
        serve(tls_stream, state, peer, true, timeouts, stop).await;
    }
}
