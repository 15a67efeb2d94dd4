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
//!   connection (hyper has no separate keep-alive idle timer, hyperium/hyper#2355) —
//!   except while a response that is meant to last (`GET /events`) is being written: it
//!   holds a [`Streaming`] guard, and the client says nothing meanwhile.
//! - `HTTP_SHUTDOWN_TIMEOUT_MS`: how long in-flight requests may take after SIGTERM.
//!
//! And the limits (SPEC 10):
//! - `HTTP_MAX_HEADER_BYTES`: the request line plus headers (`head`); hyper's own buffer is
//!   capped near it as well, so memory per connection is bounded by it.
//! - `HTTP_MAX_CONNECTIONS`: open client connections (`conns`); at the cap idle ones make
//!   room first.
//! - The open-file soft limit is raised to the hard limit at start
//!   ([`raise_open_file_limit`]), and accept failures are logged at most once a second.
//!   When `accept` fails for lack of descriptors (a hard limit below the cap), the
//!   longest-idle connection is closed to make room, as at the cap.

mod conns;
mod head;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use self::conns::{ConnTable, Slot};
use self::head::HeadLimit;
use super::ConnInfo;

/// Timeouts applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub read_header: Duration,
    pub write: Duration,
    pub idle: Duration,
    pub shutdown: Duration,
}

/// Size limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `HTTP_MAX_HEADER_BYTES`: request line plus headers.
    pub max_header_bytes: usize,
    /// `HTTP_MAX_CONNECTIONS`: open client connections.
    pub max_connections: usize,
}

/// hyper's read buffer may not be set below this.
const HYPER_MIN_BUF: usize = 8192;

/// Raises the soft open-file limit to the hard limit, so the connection cap, not the
/// kernel's default soft limit (often 1024), decides how many clients fit. Returns the old
/// and new soft limits when it changed something.
pub fn raise_open_file_limit() -> Option<(u64, u64)> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (current, maximum) = (limit.current?, limit.maximum?);
    if current >= maximum {
        return None;
    }
    match setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        },
    ) {
        Ok(()) => Some((current, maximum)),
        Err(e) => {
            tracing::warn!(soft = current, hard = maximum, error = %e, "cannot raise the open-file limit");
            None
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting (the
/// listener is closed, so new connections are refused), lets in-flight requests finish
/// for up to `timeouts.shutdown`, and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    timeouts: Timeouts,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let table = ConnTable::new(limits.max_connections);
    // Tells connections that have no request yet (not in hyper's hands) to close.
    let stopping = watch::Sender::new(false);
    let mut accept_failures = OncePerSecond::default();
    let mut refused_at_cap = OncePerSecond::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors below HTTP_MAX_CONNECTIONS: the longest-idle
                        // connection makes room, as at the cap; the one waiting in the
                        // backlog is accepted once its descriptor is closed.
                        let evicted = out_of_descriptors(&e) && table.evict_longest_idle();
                        if let Some(count) = accept_failures.note() {
                            tracing::warn!(error = %e, count, evicted_idle = evicted, "accept failed");
                        }
                        // Back off instead of spinning; briefly when a connection is closing.
                        let pause = if evicted { 5 } else { 50 };
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        continue;
                    }
                };
                let Some(slot) = table.admit() else {
                    // At the cap with every connection busy: closed at once (dropped).
                    if let Some(count) = refused_at_cap.note() {
                        tracing::warn!(
                            max_connections = limits.max_connections,
                            count,
                            "connection closed at once: HTTP_MAX_CONNECTIONS reached and none idle"
                        );
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let tls = tls.clone();
                let context = ConnContext {
                    router: router.clone(),
                    timeouts,
                    limits,
                    slot,
                    watcher: graceful.watcher(),
                    stopping: stopping.subscribe(),
                };
                tokio::spawn(async move {
                    handle(stream, peer, tls, context).await;
                });
            }
        }
    }
    drop(listener);
    stopping.send_replace(true);
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

/// Whether `accept` failed for lack of file descriptors (the process's or the system's).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

/// A log line at most once a second, with the number of events since the last one.
#[derive(Default)]
struct OncePerSecond {
    last_line: Option<std::time::Instant>,
    since_last_line: u64,
}

impl OncePerSecond {
    /// `Some(count)` when a line is due now.
    fn note(&mut self) -> Option<u64> {
        self.since_last_line += 1;
        if self
            .last_line
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        self.last_line = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.since_last_line))
    }
}

/// What serving one connection needs besides its stream.
struct ConnContext {
    router: Router,
    timeouts: Timeouts,
    limits: Limits,
    slot: Slot,
    watcher: Watcher,
    /// Becomes `true` when the server stops accepting.
    stopping: watch::Receiver<bool>,
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    mut context: ConnContext,
) {
    let eviction = context.slot.eviction();
    let timeouts = context.timeouts;
    let work = async move {
        match tls {
            None => {
                // The head waits in the kernel until it is complete (or over the limit).
                let mut stop = context.stopping.clone();
                let limit = context.limits.max_header_bytes;
                tokio::select! {
                    waited = tokio::time::timeout(
                        timeouts.read_header,
                        head::wait_in_kernel(&stream, limit, &mut context.slot),
                    ) => match waited {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(_) => {
                            tracing::debug!(%peer, "request head not complete within the header timeout");
                            return;
                        }
                    },
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                serve_conn(stream, ConnInfo { peer, tls: false }, context).await;
            }
            Some(acceptor) => {
                match tokio::time::timeout(timeouts.read_header, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        serve_conn(tls_stream, ConnInfo { peer, tls: true }, context).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = eviction.chosen() => {
            tracing::debug!(%peer, "idle connection closed to make room (HTTP_MAX_CONNECTIONS)");
        }
    }
}

async fn serve_conn<S>(stream: S, conn: ConnInfo, context: ConnContext)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let ConnContext {
        router,
        timeouts,
        limits,
        slot,
        watcher,
        mut stopping,
    } = context;
    let mut io = TimeoutStream::new(stream);
    io.set_read_timeout(Some(timeouts.idle));
    io.set_write_timeout(Some(timeouts.write));
    let streaming = Streaming::default();
    let io = IdleGate {
        inner: Box::pin(io),
        idle: timeouts.idle,
        streaming: streaming.clone(),
        lifted: false,
    };
    let mut io = HeadLimit::new(io, limits.max_header_bytes, slot);
    // hyper (and its 8 KiB read buffer) takes over once the first head is complete; until
    // then the header-read timeout is ours, and a shutdown closes the connection, which has
    // no request yet.
    tokio::select! {
        first = tokio::time::timeout(timeouts.read_header, io.first_head()) => match first {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                tracing::debug!(peer = %conn.peer, "request head not complete within the header timeout");
                return;
            }
        },
        _ = stopping.wait_for(|stop| *stop) => return,
    }
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(conn);
        req.extensions_mut().insert(streaming.clone());
        router.clone().oneshot(req.map(axum::body::Body::new))
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.read_header)
        // A backstop: `HeadLimit` answers first; this caps what a pipelined head could add.
        .max_buf_size((2 * limits.max_header_bytes).max(HYPER_MIN_BUF))
        .keep_alive(true)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
}

/// Handed to every request: a handler whose response lasts (an event stream) holds
/// [`Streaming::hold`]'s guard while it writes, which lifts the connection's idle read
/// timeout meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Streaming(Arc<AtomicBool>);

/// Lifts the idle read timeout until dropped.
#[derive(Debug)]
pub struct StreamingGuard(Arc<AtomicBool>);

impl Streaming {
    pub fn hold(&self) -> StreamingGuard {
        self.0.store(true, Ordering::Release);
        StreamingGuard(self.0.clone())
    }
}

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The connection's stream with the idle read timeout lifted while a [`StreamingGuard`]
/// is held. The timer of a read already waiting still fires once; the read it wakes finds
/// the guard and goes on waiting without a timeout.
struct IdleGate<S> {
    inner: Pin<Box<TimeoutStream<S>>>,
    idle: Duration,
    streaming: Streaming,
    /// Whether the timeout is lifted now.
    lifted: bool,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> tokio::io::AsyncRead for IdleGate<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let lift = self.streaming.0.load(Ordering::Acquire);
        if lift != self.lifted {
            let timeout = (!lift).then_some(self.idle);
            self.inner.as_mut().set_read_timeout_pinned(timeout);
            self.lifted = lift;
        }
        self.inner.as_mut().poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite> tokio::io::AsyncWrite for IdleGate<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
