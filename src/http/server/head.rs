//! `HeadLimit`: the socket as hyper sees it, with the request head (request line plus
//! headers) bounded by `HTTP_MAX_HEADER_BYTES` and the connection's idle/busy state kept for
//! the connection cap.
//!
//! hyper can only bound a head through its read buffer (8 KiB at least, about 400 KiB by
//! default) and then answers with an empty body. Counting the head's bytes as they pass keeps
//! every connection's buffer near the limit, and lets the answer be the API's JSON with its
//! common headers: `431 {"error":"request header fields too large"}`, or `414 {"error":"uri
//! too long"}` when the request line alone is over the limit. The connection is closed after
//! that answer; hyper sees the end of the stream.
//!
//! A head ends at the first empty line. Its bytes are counted from the first byte after a
//! response started (or the connection opened) until that empty line; a body is never
//! counted. An informational `1xx` (`100 Continue`) is not a response start.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conns::Slot;

enum Phase {
    /// Reading a request head.
    Head {
        /// Bytes of this head so far (leading empty lines included).
        seen: usize,
        /// Line ends in a row since the last other byte (`\r` ignored).
        newlines: u8,
        /// Whether the request line has ended.
        line_done: bool,
        /// Whether anything but empty lines has arrived.
        started: bool,
    },
    /// The head has ended: body bytes (or a pipelined request) pass uncounted until the
    /// response starts.
    Body,
    /// Writing the refusal, then shutting the socket down.
    Refusing { answer: Vec<u8>, written: usize },
    /// Refused, or taken for eviction: hyper sees the end of the stream.
    Closed,
}

const NEW_HEAD: Phase = Phase::Head {
    seen: 0,
    newlines: 0,
    line_done: false,
    started: false,
};

pub(super) struct HeadLimit<S> {
    inner: S,
    limit: usize,
    phase: Phase,
    /// A response has started since the current head began: the next read is the
    /// connection waiting, idle, for its next request.
    responded: bool,
    slot: Slot,
}

impl<S> HeadLimit<S> {
    pub(super) fn new(inner: S, limit: usize, slot: Slot) -> Self {
        Self {
            inner,
            limit,
            phase: NEW_HEAD,
            responded: false,
            slot,
        }
    }

    fn note_write(&mut self, first: &[u8]) {
        let informational = first.starts_with(b"HTTP/1.1 1") || first.starts_with(b"HTTP/1.0 1");
        if !informational
            && !first.is_empty()
            && !matches!(self.phase, Phase::Refusing { .. } | Phase::Closed)
        {
            self.phase = NEW_HEAD;
            self.responded = true;
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> HeadLimit<S> {
    /// Drives the refusal; `Ready` once the socket is shut (or failed), as the end of stream.
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
        match this.phase {
            Phase::Refusing { .. } => {
                ready!(this.poll_refuse(cx));
                return Poll::Ready(Ok(()));
            }
            Phase::Closed => return Poll::Ready(Ok(())),
            Phase::Head { started: false, .. } if this.responded => {
                this.responded = false;
                this.slot.set_idle();
            }
            _ => {}
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let Phase::Head {
            mut seen,
            mut newlines,
            mut line_done,
            mut started,
        } = this.phase
        else {
            return Poll::Ready(Ok(()));
        };
        let mut ended = false;
        let mut over = false;
        for &b in &buf.filled()[before..] {
            seen += 1;
            match b {
                b'\n' if started => {
                    line_done = true;
                    newlines += 1;
                    if newlines == 2 {
                        ended = true;
                        break;
                    }
                }
                b'\r' | b'\n' => {}
                _ => {
                    if !started {
                        started = true;
                        if !this.slot.set_busy() {
                            // Chosen to make room for a new connection while it was idle.
                            this.phase = Phase::Closed;
                            break;
                        }
                    }
                    newlines = 0;
                }
            }
            if seen > this.limit {
                over = true;
                break;
            }
        }
        if matches!(this.phase, Phase::Closed) {
            buf.set_filled(before);
            return Poll::Ready(Ok(()));
        }
        this.phase = if ended {
            Phase::Body
        } else {
            Phase::Head {
                seen,
                newlines,
                line_done,
                started,
            }
        };
        if !over {
            return Poll::Ready(Ok(()));
        }
        // Nothing of this head reaches hyper; it sees the end of the stream instead.
        buf.set_filled(before);
        let (status, error) = if line_done {
            (
                "431 Request Header Fields Too Large",
                "request header fields too large",
            )
        } else {
            ("414 URI Too Long", "uri too long")
        };
        tracing::debug!(
            limit = this.limit,
            status,
            "request head over HTTP_MAX_HEADER_BYTES"
        );
        this.phase = Phase::Refusing {
            answer: refusal(status, error),
            written: 0,
        };
        ready!(this.poll_refuse(cx));
        Poll::Ready(Ok(()))
    }
}

/// The whole refusal: status line, the common headers of SPEC 2, `Connection: close`, and
/// the JSON body.
fn refusal(status: &str, error: &str) -> Vec<u8> {
    let body = format!("{{\"error\":\"{error}\"}}");
    let request_id = crate::http::new_id().simple();
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-request-id: req-{request_id}\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\npragma: no-cache\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadLimit<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
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
