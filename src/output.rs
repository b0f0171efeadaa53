//! The server's lines on stdout and stderr, written so that a dead or
//! stuck destination can neither panic nor block the server.
//!
//! `eprintln!` panics when stderr is a closed pipe (EPIPE), and blocks
//! the calling thread when it is a full pipe nobody reads. Either one,
//! on the shutdown path or in the sweeper, is a server that will not
//! stop or stops working. So every line goes through here instead
//! ([`log_line!`](crate::log_line) for stderr, [`out_line!`](crate::out_line)
//! for stdout): it is queued (at most [`QUEUE_LINES`]) and written by one
//! thread of its own. A line that finds the queue full, or whose write
//! fails, is dropped and counted ([`dropped`], the metric
//! `stampede_log_lines_dropped_total`). The writer threads may block on a
//! full pipe; nothing else waits for them, except [`flush`], which waits a
//! bounded time.
//!
//! Each stream has its own queue and thread (a stuck stderr does not hold
//! back stdout's `ready`): lines keep their order within a stream.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Lines queued and not yet written, at most; past that a line is
/// dropped (the destination is slower than the server, or stuck).
pub const QUEUE_LINES: usize = 4096;

/// Which stream a line goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout = 0,
    Stderr = 1,
}

struct Writer {
    queue: SyncSender<String>,
    /// Lines handed to the queue so far.
    queued: AtomicU64,
    /// Lines the writer is done with (written or failed), and its signal.
    done: Mutex<u64>,
    wrote: Condvar,
}

/// One writer (a queue and a thread) per stream: a stuck stderr must not
/// hold back the `ready` line on stdout.
static WRITERS: [OnceLock<Option<Writer>>; 2] = [OnceLock::new(), OnceLock::new()];
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The writer of `stream`, started on first use; `None` if its thread
/// could not be started (then every line is dropped and counted).
fn writer(stream: Stream) -> Option<&'static Writer> {
    let slot = &WRITERS[stream as usize];
    slot.get_or_init(|| {
        let (queue, lines) = mpsc::sync_channel::<String>(QUEUE_LINES);
        let spawned = std::thread::Builder::new()
            .name(format!("stampede-{stream:?}").to_lowercase())
            .spawn(move || {
                for line in lines {
                    if write(stream, &line).is_err() {
                        DROPPED.fetch_add(1, Relaxed);
                    }
                    if let Some(Some(w)) = slot.get() {
                        *w.done.lock() += 1;
                        w.wrote.notify_all();
                    }
                }
            });
        spawned.ok().map(|_| Writer {
            queue,
            queued: AtomicU64::new(0),
            done: Mutex::new(0),
            wrote: Condvar::new(),
        })
    })
    .as_ref()
}

fn write(stream: Stream, line: &str) -> std::io::Result<()> {
    match stream {
        Stream::Stdout => write_line(&mut std::io::stdout().lock(), line),
        Stream::Stderr => write_line(&mut std::io::stderr().lock(), line),
    }
}

/// Writes `line` and its newline in one `write` (stdout and stderr are
/// often one pipe: written in two, stderr's line and its newline let
/// stdout's `ready` in between, and a reader waiting for the line `ready`
/// never saw it). One write of up to `PIPE_BUF` (4 KiB) bytes reaches a
/// pipe whole.
fn write_line(out: &mut impl Write, line: &str) -> std::io::Result<()> {
    let mut whole = Vec::with_capacity(line.len() + 1);
    whole.extend_from_slice(line.as_bytes());
    whole.push(b'\n');
    out.write_all(&whole)?;
    out.flush()
}

/// Queues `line` (a newline is added) for `stream`; never blocks, never
/// panics. A line that cannot be queued is dropped and counted.
pub fn line(stream: Stream, line: String) {
    let Some(w) = writer(stream) else {
        DROPPED.fetch_add(1, Relaxed);
        return;
    };
    match w.queue.try_send(line) {
        Ok(()) => {
            w.queued.fetch_add(1, Relaxed);
        }
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// Lines dropped so far: the queue was full (the destination is stuck or
/// slow), or the write failed (a closed pipe, a full disk).
pub fn dropped() -> u64 {
    DROPPED.load(Relaxed)
}

/// Waits until every line queued before this call is written (or has
/// failed), on both streams, for at most `within` in all. Whether it got
/// there.
pub fn flush(within: Duration) -> bool {
    let deadline = Instant::now() + within;
    [Stream::Stdout, Stream::Stderr]
        .into_iter()
        .all(|stream| flush_until(stream, deadline))
}

fn flush_until(stream: Stream, deadline: Instant) -> bool {
    let Some(Some(w)) = WRITERS[stream as usize].get() else {
        return true;
    };
    let target = w.queued.load(Relaxed);
    let mut done = w.done.lock();
    while *done < target {
        if w.wrote.wait_until(&mut done, deadline).timed_out() {
            return *done >= target;
        }
    }
    true
}

/// Panics print through the writer too: the default hook writes to
/// stderr itself, and would block on a full pipe. The message is the
/// default's (with a backtrace when `RUST_BACKTRACE` asks for one); the
/// hook waits up to 200 ms for it to be written.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("<unnamed>");
        let mut text = format!("thread '{name}' {info}");
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            text += &format!("\nstack backtrace:\n{trace}");
        }
        line(Stream::Stderr, text);
        flush(Duration::from_millis(200));
    }));
}

/// Background work that must never end ended (it panicked, or returned):
/// says so on stderr, naming it, and stops the process (exit status 70).
/// Nothing is lost: every acknowledged change is in the log (or Redis), and
/// the next start replays it; a process that went on would serve with
/// holds never swept, a log never written, or events never moved.
pub fn fatal(what: &str, why: &str) -> ! {
    line(
        Stream::Stderr,
        format!("stampede: {what} stopped unexpectedly ({why}); exiting: a restart recovers every acknowledged change"),
    );
    flush(Duration::from_millis(500));
    std::process::exit(FATAL_EXIT)
}

/// The exit status of [`fatal`] (EX_SOFTWARE).
pub const FATAL_EXIT: i32 = 70;

/// A panic's message, from its payload.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => format!("panicked: {s}"),
        (None, Some(s)) => format!("panicked: {s}"),
        (None, None) => "panicked".to_owned(),
    }
}

/// A line on stderr through [`output`](crate::output): never panics,
/// never blocks; dropped and counted if it cannot be written.
#[macro_export]
macro_rules! log_line {
    ($($arg:tt)*) => {
        $crate::output::line($crate::output::Stream::Stderr, ::std::format!($($arg)*))
    };
}

/// A line on stdout through [`output`](crate::output) (`listening on`,
/// `ready`): never panics, never blocks.
#[macro_export]
macro_rules! out_line {
    ($($arg:tt)*) => {
        $crate::output::line($crate::output::Stream::Stdout, ::std::format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_waits_for_the_lines_queued_before_it() {
        for i in 0..10 {
            line(Stream::Stderr, format!("output test line {i}"));
        }
        assert!(flush(Duration::from_secs(10)));
        let w = writer(Stream::Stderr).unwrap();
        assert!(*w.done.lock() >= 10);
    }

    #[test]
    fn a_line_and_its_newline_go_out_in_one_write() {
        /// Records each `write` it is given, as a destination that takes
        /// whatever it is handed (a pipe, for up to 4 KiB) does.
        #[derive(Default)]
        struct Writes(Vec<Vec<u8>>);
        impl Write for Writes {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.push(buf.to_vec());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut out = Writes::default();
        write_line(&mut out, "stampede: recovered 0 records").unwrap();
        write_line(&mut out, "ready").unwrap();
        // Another stream's line can land only between whole lines.
        assert_eq!(
            out.0,
            vec![
                b"stampede: recovered 0 records\n".to_vec(),
                b"ready\n".to_vec()
            ]
        );
    }
}
