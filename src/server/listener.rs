//! Sockets: TCP (and TLS with rustls) connections served by hyper (HTTP/1.1 and HTTP/2),
//! request bodies read up to the limit, and a clean stop on SIGTERM or SIGINT: stop
//! accepting, let requests in flight finish (10 s at most), then drop the KMS so that
//! pending usage counts are written.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::ServeArgs;
use super::http::{Answer, JSON_11, State};
use crate::kms::KmsError;
use crate::kms::sigv4::RequestParts;

fn io_error(action: &'static str, what: &str, e: std::io::Error) -> KmsError {
    KmsError::io(action, what, e)
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsAcceptor, KmsError> {
    let read =
        |p: &std::path::Path| std::fs::read(p).map_err(|e| KmsError::io("cannot read", p, e));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| KmsError::validation("--tls-cert", format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(KmsError::validation(
            "--tls-cert",
            format!("{} holds no PEM certificate", cert.display()),
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| KmsError::validation("--tls-key", format!("{}: {e}", key.display())))?
        .ok_or_else(|| {
            KmsError::validation(
                "--tls-key",
                format!("{} holds no PEM private key", key.display()),
            )
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| KmsError::validation("--tls-cert/--tls-key", e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Reads the body (up to the limit) and answers on the blocking pool.
async fn respond(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
) -> Response<Full<Bytes>> {
    let (head, body) = req.into_parts();
    let answer = match Limited::new(body, state.max_body).collect().await {
        Ok(b) => {
            let body = b.to_bytes();
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
            let method = head.method.as_str().to_string();
            let path = head.uri.path().to_string();
            let query = head.uri.query().unwrap_or("").to_string();
            let st = state.clone();
            tokio::task::spawn_blocking(move || {
                let parts = RequestParts {
                    method: &method,
                    path: &path,
                    query: &query,
                    headers: &headers,
                    body: &body,
                };
                st.handle(&parts, peer, tls)
            })
            .await
            .unwrap_or_else(|_| {
                Answer::error(500, "KMSInternalException", "the request handler failed")
            })
        }
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Answer::error(
                413,
                "ValidationException",
                &format!("the request body is over the {}-byte limit", state.max_body),
            )
        }
        Err(_) => Answer::error(
            400,
            "SerializationException",
            "the request body could not be read",
        ),
    };
    Response::builder()
        .status(answer.status)
        .header("content-type", JSON_11)
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(answer.body)))
        .expect("a valid response")
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

pub fn run(state: State, args: &ServeArgs) -> Result<(), KmsError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls_config(c, k)?),
        _ => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| io_error("cannot start the runtime for", "kms serve", e))?;
    let state = Arc::new(state);
    rt.block_on(async move {
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
        let graceful = GracefulShutdown::new();
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let is_tls = tls.is_some();
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(respond(state, req, peer, is_tls).await) }
                    });
                    match &tls {
                        None => {
                            let conn = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .into_owned();
                            tokio::spawn(graceful.watch(conn));
                        }
                        Some(acceptor) => {
                            let acceptor = acceptor.clone();
                            let watcher = graceful.watcher();
                            tokio::spawn(async move {
                                // A failed handshake is the client's problem, not ours.
                                let Ok(tls_stream) = acceptor.accept(stream).await else { return };
                                let conn = auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(tls_stream), svc)
                                    .into_owned();
                                let _ = watcher.watch(conn).await;
                            });
                        }
                    }
                }
                _ = &mut stop => break,
            }
        }
        drop(listener);
        let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
        Ok::<(), KmsError>(())
    })?;
    // Dropping the state drops every region's KMS, which writes pending usage counts.
    drop(rt);
    Ok(())
}
