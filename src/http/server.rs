//! The connection-level server: an accept loop over TCP (and rustls), hyper's HTTP/1
//! connection with a header-read timer, per-socket read/write timeouts, and graceful
//! shutdown.
//!
//! How the `HTTP_*_TIMEOUT_MS` variables map onto this server:
//! - `HTTP_READ_HEADER_TIMEOUT_MS`: hyper's `header_read_timeout`; it also bounds the TLS
//!   handshake. hyper runs this timer while a keep-alive connection waits for its next
//!   request too, so idle keep-alive connections close after at most this long.
//! - `HTTP_READ_TIMEOUT_MS`: bounds reading the request body (headers are bounded above).
//! - `HTTP_WRITE_TIMEOUT_MS`: any single socket write that cannot progress for this long
//!   fails the connection.
//! - `HTTP_IDLE_TIMEOUT_MS`: any single socket read that waits this long closes the
//!   connection (hyper has no separate keep-alive idle timer, hyperium/hyper#2355).
//! - `HTTP_SHUTDOWN_TIMEOUT_MS`: how long in-flight requests may take after SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::ConnInfo;

/// Timeouts applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read_header: Duration,
    pub write: Duration,
    pub idle: Duration,
    pub shutdown: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting (the
/// listener is closed, so new connections are refused), lets in-flight requests finish
/// for up to `timeouts.shutdown`, and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let router = router.clone();
                let tls = tls.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    handle(stream, peer, tls, router, timeouts, watcher).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for in-flight requests");
    // Connections still in their TLS handshake are waited for too (bounded by the
    // handshake timeout).
    if tokio::time::timeout(timeouts.shutdown, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = timeouts.shutdown.as_millis() as u64,
            "shutdown grace period over; closing remaining connections"
        );
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    timeouts: Timeouts,
    watcher: Watcher,
) {
    match tls {
        None => {
            serve_conn(
                stream,
                ConnInfo { peer, tls: false },
                router,
                timeouts,
                watcher,
            )
            .await
        }
        Some(acceptor) => {
            match tokio::time::timeout(timeouts.read_header, acceptor.accept(stream)).await {
                Ok(Ok(tls_stream)) => {
                    serve_conn(
                        tls_stream,
                        ConnInfo { peer, tls: true },
                        router,
                        timeouts,
                        watcher,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve_conn<S>(
    stream: S,
    conn: ConnInfo,
    router: Router,
    timeouts: Timeouts,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut io = TimeoutStream::new(stream);
    io.set_read_timeout(Some(timeouts.idle));
    io.set_write_timeout(Some(timeouts.write));
    let io = TokioIo::new(Box::pin(io));
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(conn);
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.read_header)
        .keep_alive(true)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}
