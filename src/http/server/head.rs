//! `HeadLimit`: the socket as hyper sees it, with the request head (request line plus
//! headers) bounded by `HTTP_MAX_HEADER_BYTES` and the connection's idle/busy state kept for
//! the connection cap.
//!
//! Why not hyper's own bound: hyper can only bound a head through its read buffer (8 KiB at
//! least, about 400 KiB by default), which grows by doubling while an incomplete head sits in
//! it, and it answers with an empty body. Here a head that does not arrive in one read is
//! held in a buffer of exactly the bytes received, outside hyper, and handed over only once
//! complete; a fresh connection does not reach hyper (and its 8 KiB buffer) at all before
//! its first head is complete ([`HeadLimit::first_head`]). So memory per connection follows
//! the bytes a client actually sent, and a head over the limit is answered with the API's
//! JSON and common headers: `431 {"error":"request header fields too large"}`, or `414
//! {"error":"uri too long"}` when the request line alone is over the limit; then the
//! connection is closed (hyper sees the end of the stream).
//!
//! A head ends at the first empty line. Its bytes are counted from the first byte after a
//! response started (or the connection opened) until that empty line; a body is never
//! counted. An informational `1xx` (`100 Continue`) is not a response start.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conns::Slot;

/// Bytes read at a time while a head is held outside hyper.
const CHUNK: usize = 2048;

/// Waits, holding no memory of its own, until the kernel's receive queue of a fresh plain
/// TCP connection holds a complete request head, more than `limit` bytes, or the end of the
/// stream: it peeks at the queue (into a per-thread scratch buffer) each time data arrives,
/// and reads nothing. So a connection whose head trickles in, or never ends, costs the
/// process nothing for it until there is something to act on.
///
/// The connection is busy from its first byte on (it is no longer idle). `false` when it
/// was chosen to make room first, and must close.
pub(super) async fn wait_in_kernel(
    stream: &tokio::net::TcpStream,
    limit: usize,
    slot: &mut Slot,
) -> bool {
    use std::cell::RefCell;
    use tokio::io::Interest;
    thread_local! {
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let mut last = 0;
    loop {
        if stream.readable().await.is_err() {
            return true;
        }
        let peeked = stream.try_io(Interest::READABLE, || {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                if scratch.len() < limit + 1 {
                    scratch.resize(limit + 1, 0);
                }
                let window = &mut scratch[..=limit];
                let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
                let (n, _) = rustix::net::recv(stream, &mut *window, flags)?;
                if n != 0 && n == last {
                    // Nothing new since the last look: clear the readiness, wait for more.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok((n, n == 0 || n > limit || head_ends(&window[..n])))
            })
        });
        if let Ok((n, _)) = peeked
            && n > 0
            && last == 0
            && !slot.set_busy()
        {
            return false;
        }
        match peeked {
            Ok((_, true)) => return true,
            Ok((n, false)) => last = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return true,
        }
    }
}

/// Whether `bytes` hold the empty line that ends a head (leading empty lines aside).
fn head_ends(bytes: &[u8]) -> bool {
    let mut scan = Scan::default();
    for &b in bytes {
        match b {
            b'\n' if scan.started => {
                scan.newlines += 1;
                if scan.newlines == 2 {
                    return true;
                }
            }
            b'\r' | b'\n' => {}
            _ => {
                scan.started = true;
                scan.newlines = 0;
            }
        }
    }
    false
}

/// Where the current head stands.
#[derive(Clone, Copy, Default)]
struct Scan {
    /// Bytes of this head so far (leading empty lines included).
    seen: usize,
    /// Line ends in a row since the last other byte (`\r` ignored).
    newlines: u8,
    /// Whether the request line has ended.
    line_done: bool,
    /// Whether anything but empty lines has arrived.
    started: bool,
}

enum Phase {
    /// Reading a request head.
    Head(Scan),
    /// The head has ended: body bytes (or a pipelined request) pass uncounted until the
    /// response starts.
    Body,
    /// Writing the refusal, then shutting the socket down.
    Refusing { answer: Vec<u8>, written: usize },
    /// Refused, or taken for eviction: hyper sees the end of the stream.
    Closed,
}

/// What scanning some bytes of a head found.
enum Scanned {
    /// The head goes on.
    More,
    /// The head ended; this many of the bytes belong to it.
    Ended,
    /// Over the limit; `true` when the request line had ended.
    Over(bool),
    /// The connection was chosen to make room before this request began.
    Evicted,
}

pub(super) struct HeadLimit<S> {
    inner: S,
    limit: usize,
    phase: Phase,
    /// A response has started since the current head began: the next read is the
    /// connection waiting, idle, for its next request.
    responded: bool,
    /// Bytes read from the socket and not yet handed to hyper (a head that did not arrive
    /// in one read, and whatever followed it in the read that completed it).
    held: Vec<u8>,
    held_from: usize,
    slot: Slot,
}

impl<S> HeadLimit<S> {
    pub(super) fn new(inner: S, limit: usize, slot: Slot) -> Self {
        Self {
            inner,
            limit,
            phase: Phase::Head(Scan::default()),
            responded: false,
            held: Vec::new(),
            held_from: 0,
            slot,
        }
    }

    fn note_write(&mut self, first: &[u8]) {
        let informational = first.starts_with(b"HTTP/1.1 1") || first.starts_with(b"HTTP/1.0 1");
        if !informational && !first.is_empty() && matches!(self.phase, Phase::Head(_) | Phase::Body)
        {
            self.phase = Phase::Head(Scan::default());
            self.responded = true;
        }
    }

    /// Scans `bytes` of the current head.
    fn scan(&mut self, bytes: &[u8]) -> Scanned {
        let Phase::Head(scan) = &mut self.phase else {
            return Scanned::Ended;
        };
        for &b in bytes {
            scan.seen += 1;
            match b {
                b'\n' if scan.started => {
                    scan.line_done = true;
                    scan.newlines += 1;
                    if scan.newlines == 2 {
                        self.phase = Phase::Body;
                        return Scanned::Ended;
                    }
                }
                b'\r' | b'\n' => {}
                _ => {
                    if !scan.started {
                        scan.started = true;
                        if !self.slot.set_busy() {
                            return Scanned::Evicted;
                        }
                    }
                    scan.newlines = 0;
                }
            }
            if scan.seen > self.limit {
                return Scanned::Over(scan.line_done);
            }
        }
        Scanned::More
    }

    fn refuse(&mut self, line_done: bool) {
        let (status, error) = if line_done {
            (
                "431 Request Header Fields Too Large",
                "request header fields too large",
            )
        } else {
            ("414 URI Too Long", "uri too long")
        };
        tracing::debug!(
            limit = self.limit,
            status,
            "request head over HTTP_MAX_HEADER_BYTES"
        );
        self.held = Vec::new();
        self.phase = Phase::Refusing {
            answer: refusal(status, error),
            written: 0,
        };
    }

    /// Hands held bytes to hyper; `true` when there were any.
    fn release(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        if self.held_from >= self.held.len() {
            return false;
        }
        let n = buf.remaining().min(self.held.len() - self.held_from);
        buf.put_slice(&self.held[self.held_from..self.held_from + n]);
        self.held_from += n;
        if self.held_from == self.held.len() {
            // Freed, not kept: most heads arrive in one read and never need it.
            self.held = Vec::new();
            self.held_from = 0;
        }
        true
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> HeadLimit<S> {
    /// Reads until the first request head is complete, holding it here; `false` when the
    /// connection ended (closed by the client, refused, or chosen to make room) first.
    /// The server calls this before it hands the connection to hyper.
    pub(super) async fn first_head(&mut self) -> bool {
        std::future::poll_fn(|cx| self.poll_hold_head(cx)).await
    }

    /// Reads into `held` until the current head ends (`true`) or the stream does (`false`).
    fn poll_hold_head(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            match self.phase {
                Phase::Head(_) => {}
                Phase::Body => return Poll::Ready(true),
                Phase::Refusing { .. } | Phase::Closed => {
                    ready!(self.poll_refuse(cx));
                    return Poll::Ready(false);
                }
            }
            let mut chunk = [0u8; CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut read)) {
                Ok(()) if read.filled().is_empty() => return Poll::Ready(false),
                Ok(()) => {}
                Err(_) => return Poll::Ready(false),
            }
            let bytes = read.filled();
            match self.scan(bytes) {
                Scanned::Evicted => {
                    self.phase = Phase::Closed;
                    return Poll::Ready(false);
                }
                Scanned::Over(line_done) => self.refuse(line_done),
                Scanned::More | Scanned::Ended => {
                    self.held.reserve_exact(bytes.len());
                    self.held.extend_from_slice(bytes);
                }
            }
        }
    }

    /// Drives the refusal; `Ready` once the socket is shut (or failed).
    fn poll_refuse(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Phase::Refusing { answer, written } = &mut self.phase {
            while *written < answer.len() {
                match ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..])) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => *written += n,
                }
            }
            // A peer that never reads is bounded by the write timeout underneath.
            let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
            self.phase = Phase::Closed;
        }
        Poll::Ready(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadLimit<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.release(buf) {
            return Poll::Ready(Ok(()));
        }
        match this.phase {
            Phase::Body => return Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::Refusing { .. } | Phase::Closed => {
                ready!(this.poll_refuse(cx));
                return Poll::Ready(Ok(()));
            }
            Phase::Head(Scan { started, .. }) => {
                if !started && this.responded {
                    this.responded = false;
                    this.slot.set_idle();
                }
            }
        }
        // Most heads arrive whole in one read: straight into hyper's buffer.
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let scanned = this.scan(&buf.filled()[before..]);
        match scanned {
            Scanned::Ended => return Poll::Ready(Ok(())),
            Scanned::More if buf.filled().len() == before => return Poll::Ready(Ok(())),
            Scanned::More => {
                // An incomplete head: taken back out of hyper's buffer and held here, so
                // that hyper's buffer does not grow while it trickles in.
                this.held = buf.filled()[before..].to_vec();
            }
            Scanned::Over(line_done) => this.refuse(line_done),
            Scanned::Evicted => this.phase = Phase::Closed,
        }
        buf.set_filled(before);
        if ready!(this.poll_hold_head(cx)) || !this.held.is_empty() {
            // Complete, or the client closed mid-head: hyper gets what there is, then the end.
            this.release(buf);
        }
        Poll::Ready(Ok(()))
    }
}

/// The whole refusal: status line, the common headers of SPEC 2, `Connection: close`, and
/// the JSON body.
fn refusal(status: &str, error: &str) -> Vec<u8> {
    let body = format!("{{\"error\":\"{error}\"}}");
    let request_id = crate::shared::new_id().simple();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-request-id: req-{request_id}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\npragma: no-cache\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// hyper's own answer to a request it cannot parse (a header line without a colon, a
/// bad request line, an unsupported version): a bare status line with `content-length: 0`
/// and none of the API's headers. Every answer of the API has a `content-type`, so an
/// error status without one is hyper's. Returns the API's JSON answer to send instead.
fn replacement_for_hypers_own(head: &[u8]) -> Option<Vec<u8>> {
    if !(head.starts_with(b"HTTP/1.1 4") || head.starts_with(b"HTTP/1.1 5")) {
        return None;
    }
    let text = std::str::from_utf8(head.get(..head.len().min(512))?).ok()?;
    let status_line = text.split("\r\n").next()?;
    let code: u16 = status_line
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()?;
    let lower = text.to_ascii_lowercase();
    if code < 400
        || lower.contains("\r\ncontent-type:")
        || !lower.contains("\r\ncontent-length: 0\r\n")
    {
        return None;
    }
    let status = http::StatusCode::from_u16(code).ok()?;
    let reason = status.canonical_reason().unwrap_or("Error");
    let error = match code {
        400 => "invalid request".to_owned(),
        _ => reason.to_ascii_lowercase(),
    };
    tracing::debug!(
        status = code,
        "request hyper could not parse; answered with the API's JSON"
    );
    Some(refusal(&format!("{code} {reason}"), &error))
}

impl<S: AsyncRead + AsyncWrite + Unpin> HeadLimit<S> {
    /// Writes `first` (the start of a response) unless it is hyper's own error answer,
    /// which is replaced by the API's ([`replacement_for_hypers_own`]) and the connection
    /// closed; to hyper the write looks done either way.
    fn poll_answer(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        len: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        if !matches!(self.phase, Phase::Refusing { .. }) {
            let answer = replacement_for_hypers_own(first)?;
            self.held = Vec::new();
            self.phase = Phase::Refusing { answer, written: 0 };
        }
        Some(self.poll_refuse(cx).map(|()| Ok(len)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(done) = this.poll_answer(cx, buf, buf.len()) {
            return done;
        }
        this.note_write(buf);
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            let len = bufs.iter().map(|b| b.len()).sum();
            if let Some(done) = this.poll_answer(cx, first, len) {
                return done;
            }
            this.note_write(first);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
