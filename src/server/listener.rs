//! Sockets: TCP (and TLS with rustls) connections served by hyper (HTTP/1.1 and HTTP/2)
//! up to the connection cap, request bodies read up to the limit within the body
//! timeout, and a clean stop on SIGTERM or SIGINT: stop accepting, let requests in flight
//! finish (10 s at most) and a run of due secret rotations (`rotations`) too, then drop
//! the KMS so that pending usage counts are written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::ServeArgs;
use super::body::{self, BodyError, InFlight, ZBody};
use super::conn::{self, STOP_GRACE, Timeouts};
use super::http::{Answer, Received, State};
use super::limits::{self, ConnLimit};
use crate::aws::AwsError;

fn io_error(action: &'static str, what: &str, e: std::io::Error) -> AwsError {
    AwsError::io(action, what, e)
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, AwsError> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| AwsError::io("cannot read", p, e));
    let cert_pem = read(cert)?;
    let key_pem = zeroize::Zeroizing::new(read(key)?);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| AwsError::validation("--tls-cert", pem_problem(cert, &e)))?;
    if certs.is_empty() {
        return Err(AwsError::validation(
            "--tls-cert",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let message = match e {
            pem::Error::NoItemsFound => format!("{} holds no PEM private key", key.display()),
            e => pem_problem(key, &e),
        };
        AwsError::validation("--tls-key", message)
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| AwsError::validation("--tls-cert/--tls-key", e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// What is wrong in the PEM file at `path`, with the markers as text (the PEM error's own
/// message shows them as lists of bytes).
fn pem_problem(path: &std::path::Path, e: &pem::Error) -> String {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let problem = match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("section end {:?} missing", text(end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("illegal section start: {:?}", text(line))
        }
        pem::Error::Base64Decode(e) => e.clone(),
        e => e.to_string(),
    };
    format!("{}: {problem}", path.display())
}

/// Reads the body (up to the limit, within the body timeout) and answers on the blocking
/// pool. `in_flight` counts the request until its response has been sent.
pub async fn respond(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    in_flight: InFlight,
    body_timeout: Duration,
) -> Response<ZBody> {
    let request_id = crate::kms::event::fast_uuid();
    let (head, incoming) = req.into_parts();
    let body = body::collect(incoming, state.max_body, &state.body_budget, body_timeout).await;
    let mut headers: Vec<(String, String)> = head
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    // HTTP/2 carries the host as :authority, which SigV4 signs as `host`.
    if !head.headers.contains_key("host")
        && let Some(a) = head.uri.authority()
    {
        headers.push(("host".to_string(), a.to_string()));
    }
    let close = body.is_err();
    let received = Received {
        method: head.method.as_str().to_string(),
        path: head.uri.path().to_string(),
        query: head.uri.query().unwrap_or("").to_string(),
        headers,
        body,
        peer,
        tls,
        request_id: request_id.clone(),
    };
    let st = state.clone();
    let answer = if st.runs_inline(&received) {
        // A cryptographic operation of an open region without custom key stores: tens of
        // microseconds of CPU and one audit append, answered on this worker. Handing it
        // to the blocking pool cost two thread wake-ups per request, which on a VM cost
        // more than the operation (docs/benchmarks.md, "KMS server over loopback").
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| st.handle(received)))
            .map_err(|_| ())
    } else {
        tokio::task::spawn_blocking(move || st.handle(received))
            .await
            .map_err(|_| ())
    };
    let answer = answer.unwrap_or_else(|()| {
        eprintln!("kms serve: request {request_id}: the handler panicked");
        Answer::error(
            500,
            "KMSInternalException",
            crate::aws::error::INTERNAL_REMOTE_MESSAGE,
        )
    });
    let mut response = Response::builder()
        .status(answer.status)
        .header("content-type", answer.content_type)
        .header("x-amzn-requestid", request_id.as_str());
    if close {
        // The body was not read to its end: this connection cannot carry another request.
        response = response.header("connection", "close");
    }
    response
        .body(ZBody::new(answer.body, Some(in_flight)))
        .expect("a valid response")
}

/// What a body error answers.
pub fn body_error_answer(e: BodyError, max_body: usize, timeout: Duration) -> Answer {
    match e {
        BodyError::TooLarge => Answer::error(
            413,
            "ValidationException",
            &format!("the request body is over the {max_body}-byte limit"),
        ),
        BodyError::TimedOut => Answer::error(
            408,
            "RequestTimeoutException",
            &format!(
                "the request body was not received within {} seconds",
                timeout.as_secs()
            ),
        ),
        BodyError::Broken => Answer::error(
            400,
            "SerializationException",
            "the request body could not be read",
        ),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Logs to stderr at most once per `every`.
struct Throttled {
    last: Option<Instant>,
    every: Duration,
}

impl Throttled {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

pub fn run(state: State, args: &ServeArgs) -> Result<(), AwsError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        _ => None,
    };
    let timeouts = Timeouts {
        tls_handshake: Duration::from_secs(args.tls_handshake_timeout),
        header: Duration::from_secs(args.header_timeout),
        body: Duration::from_secs(args.body_timeout),
        idle: Duration::from_secs(args.idle_timeout),
    };
    let limit = ConnLimit::new(limits::fit_descriptor_limit(args.max_connections as usize));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the runtime for", "kms serve", e))?;
    let state = Arc::new(state);
    let rotations = state.clone();
    let served = rt.block_on(async move {
        let listener = TcpListener::bind(&args.listen)
            .await
            .map_err(|e| io_error("cannot listen on", &args.listen, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| io_error("cannot read the address of", &args.listen, e))?;
        // One line on stdout, so that scripts (and tests) learn the port of `:0`.
        println!(
            "{}",
            serde_json::json!({
                "Listening": local.to_string(),
                "Endpoint": format!("{}://{local}", if tls.is_some() { "https" } else { "http" }),
            })
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        // The home region's due secret rotations start now (others' when opened).
        let st = state.clone();
        tokio::task::spawn_blocking(move || {
            let home = st.refusals.home_region().to_string();
            if let Err(e) = st.secrets(&home) {
                eprintln!("kms serve: no due secret rotations in {home}: {e}");
            }
        });
        let stop = shutdown_signal();
        tokio::pin!(stop);
        let mut accept_log = Throttled {
            last: None,
            every: Duration::from_secs(10),
        };
        let mut refusal_log = Throttled {
            last: None,
            every: Duration::from_secs(10),
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors or memory: wait instead of spinning.
                            if accept_log.due() {
                                eprintln!("kms serve: cannot accept a connection: {e}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(slot) = limit.admit() else {
                        limit.refuse(stream, tls.is_none());
                        if refusal_log.due() {
                            eprintln!(
                                "kms serve: at the limit of {} connections ({} refused so far)",
                                limit.max(),
                                limit.refused_total()
                            );
                        }
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let stop = stop_rx.clone();
                    match &tls {
                        None => {
                            tokio::spawn(async move {
                                let _slot = slot;
                                conn::serve(stream, state, peer, false, timeouts, stop).await;
                            });
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let _slot = slot;
                                conn::serve_tls(stream, acceptor, state, peer, timeouts, stop)
                                    .await;
                            });
                        }
                    }
                }
                _ = &mut stop => break,
            }
        }
        drop(listener);
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), limit.drained()).await;
        Ok::<(), AwsError>(())
    });
    // A rotation in progress finishes before the regions are dropped.
    rotations.rotations.stop();
    drop(rotations);
    served?;
    // Dropping the state drops every region's KMS, which writes pending usage counts.
    drop(rt);
    Ok(())
}
