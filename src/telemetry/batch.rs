//! The log writer: formatted lines are appended to a shared buffer, and a background thread
//! writes whatever has gathered with one `write(2)`.
//!
//! Why not `tracing-appender`'s non-blocking writer: its channel makes the writer thread
//! spin with `sched_yield` before it sleeps and wakes it for nearly every line, which cost
//! about 8 % of the server's CPU under `make bench` (one audit line per request). Here a
//! logging call takes a mutex, copies its line and, at most, wakes a writer that was asleep;
//! the writer then lets lines gather for up to [`LINGER`] (or until [`BATCH`] bytes wait).
//!
//! Nothing is dropped: when [`LIMIT`] bytes wait, logging calls wait for the writer. After
//! the guard is dropped (or if the thread cannot be started) lines go straight to the sink.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines gather after the first one: the longest a line waits on
/// a quiet server.
const LINGER: Duration = Duration::from_millis(2);
/// Waiting bytes that make the writer write at once.
const BATCH: usize = 32 * 1024;
/// Waiting bytes beyond which logging calls wait for the writer.
const LIMIT: usize = 1024 * 1024;

struct State {
    buf: Vec<u8>,
    /// The writer sleeps until the first line arrives (a logging call must wake it).
    writer_asleep: bool,
    /// The guard was dropped: the writer writes what is left and stops.
    closed: bool,
}

struct Shared<W> {
    state: Mutex<State>,
    /// Wakes the writer: first line, a full batch, or close.
    wake: Condvar,
    /// Wakes logging calls that wait for room.
    room: Condvar,
    /// Written by the writer thread, and by logging calls once it has stopped.
    sink: Mutex<W>,
    limit: usize,
}

impl<W> Shared<W> {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the buffer usable: keep logging.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` handed to the subscriber.
pub struct BatchWriter<W>(Arc<Shared<W>>);

/// Dropping it writes out what is queued and stops the thread.
pub struct BatchGuard<W: Write + Send + 'static> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread for `sink`.
pub fn spawn<W: Write + Send + 'static>(sink: W) -> (BatchWriter<W>, BatchGuard<W>) {
    spawn_with_limit(sink, LIMIT)
}

fn spawn_with_limit<W: Write + Send + 'static>(
    sink: W,
    limit: usize,
) -> (BatchWriter<W>, BatchGuard<W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buf: Vec::with_capacity(BATCH),
            writer_asleep: false,
            closed: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
        sink: Mutex::new(sink),
        limit,
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".to_owned())
        .spawn(move || run(&worker));
    let thread = match thread {
        Ok(handle) => Some(handle),
        Err(_) => {
            // No thread: every logging call writes for itself.
            shared.state().closed = true;
            None
        }
    };
    (BatchWriter(shared.clone()), BatchGuard { shared, thread })
}

/// Marks the writer gone however `run` ends (a panic included), so that logging calls
/// write for themselves instead of waiting for room that would never come.
struct Stopped<'a, W>(&'a Shared<W>);

impl<W> Drop for Stopped<'_, W> {
    fn drop(&mut self) {
        self.0.state().closed = true;
        self.0.room.notify_all();
    }
}

fn run<W: Write>(shared: &Shared<W>) {
    let _stopped = Stopped(shared);
    let mut out = Vec::with_capacity(BATCH);
    loop {
        let mut state = shared.state();
        while state.buf.is_empty() && !state.closed {
            state.writer_asleep = true;
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.writer_asleep = false;
        if !state.closed && state.buf.len() < BATCH {
            state = shared
                .wake
                .wait_timeout_while(state, LINGER, |s| s.buf.len() < BATCH && !s.closed)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if state.buf.is_empty() && state.closed {
            return;
        }
        std::mem::swap(&mut state.buf, &mut out);
        let was_full = out.len() >= shared.limit;
        drop(state);
        if was_full {
            shared.room.notify_all();
        }
        write_out(shared, &out);
        out.clear();
        // Give back what a burst made the buffer grow to.
        out.shrink_to(BATCH);
    }
}

fn write_out<W: Write>(shared: &Shared<W>, bytes: &[u8]) {
    let mut sink = shared.sink.lock().unwrap_or_else(PoisonError::into_inner);
    // Nowhere to report a failing stderr: the line is lost, the server goes on.
    let _ = sink.write_all(bytes);
    let _ = sink.flush();
}

/// One logging call's handle (the subscriber writes each formatted line with one call).
pub struct LineWriter<'a, W>(&'a Shared<W>);

impl<W: Write> Write for LineWriter<'_, W> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = self.0;
        let mut state = shared.state();
        while state.buf.len() >= shared.limit && !state.closed {
            state = shared
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            drop(state);
            write_out(shared, line);
            return Ok(line.len());
        }
        let before = state.buf.len();
        state.buf.extend_from_slice(line);
        let wake = if state.writer_asleep {
            state.writer_asleep = false;
            true
        } else {
            before < BATCH && state.buf.len() >= BATCH
        };
        drop(state);
        if wake {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for BatchWriter<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

impl<W: Write + Send + 'static> Drop for BatchGuard<W> {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        // The writer writes what is left and stops; its exit wakes any logging call waiting
        // for room (see `Stopped`).
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::mpsc;

    /// A sink the test can read, and can hold shut to make the writer fall behind.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    /// A sink whose first write panics, as a broken writer thread would.
    #[derive(Clone, Default)]
    struct PanicsOnce {
        inner: Sink,
        panicked: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for PanicsOnce {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self
                .panicked
                .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                panic!("sink failure for the test");
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log<W: Write + Send + 'static>(writer: &BatchWriter<W>, line: &str) {
        writer.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn a_single_line_on_a_quiet_writer_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone());
        log(&writer, "one\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.text().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line never arrived"
            );
            std::thread::yield_now();
        }
        assert_eq!(sink.text(), "one\n");
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_order_per_thread() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone());
        let writer = Arc::new(writer);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        log(
                            &writer,
                            &format!("thread {t} line {i} {}\n", "x".repeat(i % 97)),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = sink.text();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let parts: Vec<_> = line.split(' ').collect();
            let (t, i): (usize, usize) = (parts[1].parse().unwrap(), parts[3].parse().unwrap());
            assert_eq!(i, next[t], "thread {t}: line out of order or missing");
            assert_eq!(parts.get(4).copied().unwrap_or(""), "x".repeat(i % 97));
            next[t] += 1;
        }
        assert_eq!(next, [5000; 4]);
    }

    #[test]
    fn a_full_buffer_makes_logging_wait_instead_of_dropping_lines() {
        let sink = Sink::default();
        let (writer, guard) = spawn_with_limit(sink.clone(), 64);
        // Hold the sink shut: the writer takes one batch and blocks on it.
        let gate = sink.gate.lock().unwrap();
        let (done_tx, done_rx) = mpsc::channel();
        let producer = std::thread::spawn(move || {
            for i in 0..100 {
                log(&writer, &format!("line {i:03} of a slow sink\n"));
            }
            done_tx.send(()).unwrap();
            writer
        });
        // 100 lines of 25 bytes do not fit in 64 bytes: the producer must be waiting.
        assert!(
            done_rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "the producer finished although the writer could not write"
        );
        drop(gate);
        done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let writer = producer.join().unwrap();
        drop(guard);
        let expected: String = (0..100)
            .map(|i| format!("line {i:03} of a slow sink\n"))
            .collect();
        assert_eq!(sink.text(), expected);
        // After the guard is gone, lines are written directly.
        log(&writer, "after close\n");
        assert!(sink.text().ends_with("after close\n"));
    }

    #[test]
    fn if_the_writer_thread_dies_logging_goes_on_without_waiting_for_it() {
        let sink = PanicsOnce::default();
        let (writer, mut guard) = spawn_with_limit(sink.clone(), 64);
        log(&writer, "lost with the writer\n");
        let thread = guard.thread.take().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer did not stop"
            );
            std::thread::yield_now();
        }
        // Far more than the limit: with nobody to make room, these would wait forever.
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for i in 0..50 {
                log(&writer, &format!("line {i:02} after the writer died\n"));
            }
            let _ = done_tx.send(());
        });
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("logging waited for a writer that is gone");
        let expected: String = (0..50)
            .map(|i| format!("line {i:02} after the writer died\n"))
            .collect();
        assert_eq!(sink.inner.text(), expected);
        assert!(thread.join().is_err());
    }
}
