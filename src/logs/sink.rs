//! Where the service's log lines go: gathered in memory and written to stdout by one background
//! thread in batches, so that a request never waits for the terminal or a pipe, and so that under
//! load one `write` carries hundreds of lines.
//!
//! `tracing-appender`'s non-blocking writer, used before, sends every line over a channel and
//! wakes its thread for it; at tens of thousands of requests a second that wake-up cost more than
//! the rest of the access log together. Here a line is one short lock and a copy; the writer
//! thread is woken at most twice a batch (when a batch starts, and if it fills up early).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait before it is written (it is written sooner once a batch fills up).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// A batch this large is written at once.
const BATCH_BYTES: usize = 64 * 1024;
/// Most bytes held while the output is slower than the logging; lines beyond are dropped and
/// counted, so a blocked pipe cannot make the service run out of memory.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    dropped_lines: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock leaves only bytes behind: keep using them.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The writer that `tracing-subscriber` formats lines into (a [`MakeWriter`]).
#[derive(Clone)]
pub struct LogSink {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`. `on_dropped` is called from that thread with the number
/// of lines dropped since the last batch, so it can say so in the service's own log format.
pub fn start(
    out: impl Write + Send + 'static,
    on_dropped: impl Fn(u64) + Send + 'static,
) -> std::io::Result<(LogSink, FlushGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending { bytes: Vec::with_capacity(BATCH_BYTES), closed: false }),
        wake: Condvar::new(),
        dropped_lines: AtomicU64::new(0),
    });
    let writer_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_batches(&writer_shared, out, on_dropped))?;
    Ok((LogSink { shared: Arc::clone(&shared) }, FlushGuard { shared, thread: Some(thread) }))
}

/// The writer thread: writes what is there as soon as there is something, then lets the next
/// batch gather for up to [`FLUSH_INTERVAL`] (less if it fills up), until closed and empty. A
/// line after a quiet spell is written at once, any other within [`FLUSH_INTERVAL`]; under
/// load, one write every interval carries them all.
fn write_batches(shared: &Shared, mut out: impl Write, on_dropped: impl Fn(u64)) {
    let mut spare = Vec::with_capacity(BATCH_BYTES);
    loop {
        let mut pending = shared.lock();
        while pending.bytes.is_empty() && !pending.closed {
            pending = shared.wake.wait(pending).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if pending.bytes.is_empty() && pending.closed {
            return;
        }
        let mut batch = std::mem::replace(&mut pending.bytes, std::mem::take(&mut spare));
        drop(pending);
        // Nowhere to report a failing stdout; the lines are lost, the service goes on.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > 4 * BATCH_BYTES {
            batch.shrink_to(BATCH_BYTES);
        }
        spare = batch;
        let dropped = shared.dropped_lines.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            on_dropped(dropped);
        }
        let pending = shared.lock();
        let _ = shared.wake.wait_timeout_while(pending, FLUSH_INTERVAL, |p| p.bytes.len() < BATCH_BYTES && !p.closed);
    }
}

impl LogSink {
    /// Queues one formatted line (or several). Never fails: when [`MAX_PENDING_BYTES`] are
    /// waiting, the line is dropped and counted.
    pub fn write_line(&self, line: &[u8]) {
        let mut pending = self.shared.lock();
        let before = pending.bytes.len();
        if before + line.len() > MAX_PENDING_BYTES {
            self.shared.dropped_lines.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.bytes.extend_from_slice(line);
        let after = pending.bytes.len();
        drop(pending);
        // Wake the writer when a batch starts (it waits for one) and when one fills up.
        if before == 0 || (before < BATCH_BYTES && after >= BATCH_BYTES) {
            self.shared.wake.notify_one();
        }
    }
}

impl std::io::Write for LogSink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.write_line(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LogSink;

    fn make_writer(&'a self) -> LogSink {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An output the tests can read back; also a `MakeWriter` for `tracing-subscriber`.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn ignore_drops(_: u64) {}

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_drops() {
        let out = Captured::default();
        let (sink, guard) = start(out.clone(), ignore_drops).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut sink = sink.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        sink.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 20_000);
        for t in 0..4 {
            let own: Vec<usize> = text
                .lines()
                .filter_map(|l| l.split_once(' ').filter(|(w, _)| *w == t.to_string()))
                .map(|(_, i)| i.parse().unwrap())
                .collect();
            assert_eq!(own, (0..5_000).collect::<Vec<_>>(), "thread {t}'s lines in order");
        }
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let out = Captured::default();
        let (mut sink, _guard) = start(out.clone(), ignore_drops).unwrap();
        sink.write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
    }

    /// An output that blocks until the test lets it go.
    struct Blocked(Arc<Mutex<()>>, Captured);

    impl Write for Blocked {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let _gate = self.0.lock().unwrap();
            self.1.write(bytes)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_costs_dropped_lines_not_memory_and_says_so() {
        let gate = Arc::new(Mutex::new(()));
        let closed = gate.lock().unwrap();
        let out = Captured::default();
        let reported = Arc::new(AtomicU64::new(0));
        let on_dropped = {
            let reported = Arc::clone(&reported);
            move |n| _ = reported.fetch_add(n, Ordering::Relaxed)
        };
        let (mut sink, guard) = start(Blocked(Arc::clone(&gate), out.clone()), on_dropped).unwrap();
        sink.write_all(b"first\n").unwrap();
        std::thread::sleep(FLUSH_INTERVAL * 3); // the writer is now stuck writing "first"
        let line = vec![b'x'; 1023].into_iter().chain([b'\n']).collect::<Vec<u8>>();
        let sent = MAX_PENDING_BYTES / line.len() + 10;
        for _ in 0..sent {
            sink.write_all(&line).unwrap();
        }
        drop(closed);
        drop(guard);
        let text = out.text();
        assert!(text.starts_with("first\n"));
        let written = text.lines().count() - 1;
        assert!(written < sent, "some lines were dropped");
        assert_eq!(reported.load(Ordering::Relaxed), (sent - written) as u64, "every dropped line is reported");
    }
}
