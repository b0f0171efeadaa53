//! The server's background threads: the expiry sweeper and the
//! checkpointer, each a [`Periodic`] thread (synchronous work, kept off
//! the async workers), and the rule that decides when a checkpoint is due.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::drops::DropBook;
use crate::store::embedded::Core;

/// A thread of its own running `tick` every `interval_ms` until stopped.
pub struct Periodic {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Periodic {
    pub fn start(
        name: &str,
        interval_ms: u64,
        mut tick: impl FnMut() + Send + 'static,
    ) -> std::io::Result<Periodic> {
        let (stop, stopped) = mpsc::channel::<()>();
        let interval = Duration::from_millis(interval_ms);
        let what = format!("the thread {name}");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Wakes on the interval, or at once when stopped. A tick
                // that panics (a bug) stops the process, naming the
                // thread: a server whose sweeper is gone never expires a
                // hold again.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    let ticked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut tick));
                    if let Err(payload) = ticked {
                        crate::output::fatal(&what, &crate::output::panic_text(&*payload));
                    }
                }
            })?;
        Ok(Periodic { stop, thread })
    }

    /// Stops the thread (a tick in progress finishes first).
    pub fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

/// When to checkpoint: each time the log has grown by
/// `wal.checkpoint_after_bytes` since the last one.
#[derive(Debug, Clone)]
pub struct CheckpointPolicy {
    threshold_bytes: u64,
    logged_at_last: u64,
}

impl CheckpointPolicy {
    /// `logged_bytes`: what the log has written so far.
    pub fn new(threshold_bytes: u64, logged_bytes: u64) -> CheckpointPolicy {
        CheckpointPolicy {
            threshold_bytes,
            logged_at_last: logged_bytes,
        }
    }

    /// Whether a checkpoint is due now that the log has written
    /// `logged_bytes`; if so, counts from here on.
    pub fn due(&mut self, logged_bytes: u64) -> bool {
        if logged_bytes.saturating_sub(self.logged_at_last) < self.threshold_bytes {
            return false;
        }
        self.logged_at_last = logged_bytes;
        true
    }
}

/// Takes a checkpoint and says what happened on stderr (a failed one is
/// not fatal: the log goes on without it, and the next may succeed).
pub fn checkpoint(core: &Core) {
    match core.checkpoint() {
        Ok(c) => {
            crate::log_line!(
            "stampede: checkpoint at lsn {} ({} bytes, shards locked {:?}, {} old files removed)",
            c.lsn, c.image_bytes, c.stall, c.files_removed
        )
        }
        Err(e) => crate::log_line!("stampede: checkpoint failed: {e}"),
    }
}

/// The checkpointer: checks once a second whether a checkpoint is due.
pub fn start_checkpointer(
    core: std::sync::Arc<Core>,
    threshold_bytes: u64,
) -> std::io::Result<Periodic> {
    let mut policy = CheckpointPolicy::new(threshold_bytes, core.wal.stats().bytes);
    Periodic::start("stampede-checkpointer", 1000, move || {
        crate::fault::inject("checkpointer");
        if policy.due(core.wal.stats().bytes) {
            checkpoint(&core);
        }
    })
}

/// Opens each drop at its `opens_at_ms` (the shuffle, and the record that
/// reveals the seed), sleeping until the next opening or until a drop is
/// created or changed. Requests that touch a drop open it themselves if
/// they come first, so the opening is never a tick late.
pub async fn open_drops(drops: std::sync::Arc<DropBook>) {
    loop {
        let book = drops.clone();
        // The shuffle of a large pre-queue is CPU work: off the workers.
        let next = tokio::task::spawn_blocking(move || book.open_due()).await;
        let wait = match next {
            Ok(Ok(Some(at_ms))) => Duration::from_millis(at_ms.saturating_sub(drops.now_ms())),
            Ok(Ok(None)) => Duration::from_secs(3600),
            Ok(Err(e)) => {
                crate::log_line!("stampede: a drop could not be opened: {e}; trying again in 1 s");
                Duration::from_secs(1)
            }
            Err(e) => {
                crate::log_line!("stampede: the drop opener failed: {e}; trying again in 1 s");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = drops.changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_due_each_time_the_log_grew_by_the_threshold() {
        let mut policy = CheckpointPolicy::new(100, 40);
        assert!(!policy.due(40));
        assert!(!policy.due(139));
        assert!(policy.due(140));
        assert!(!policy.due(200), "counted from the last checkpoint");
        assert!(policy.due(1_000));
    }

    #[test]
    fn a_periodic_thread_ticks_until_stopped() {
        let (ticked, ticks) = mpsc::channel();
        let periodic = Periodic::start("test-periodic", 1, move || {
            let _ = ticked.send(());
        })
        .unwrap();
        for _ in 0..3 {
            ticks.recv_timeout(Duration::from_secs(10)).expect("a tick");
        }
        periodic.stop();
        // Stopped: the sender inside the thread is gone with it.
        while ticks.try_recv().is_ok() {}
        assert!(ticks.recv_timeout(Duration::from_secs(1)).is_err());
    }
}
