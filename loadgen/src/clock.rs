//! Waiting for the next arrival.
//!
//! tokio's timer wheel has millisecond slots: `sleep_until(t)` wakes at the
//! first millisecond tick at or after `t`, so a send can start up to a
//! millisecond after its intended time before any work is done, and that
//! shows in every latency measured from the intended time. On Linux a wait
//! of at least [`PRECISE_FROM`] is made on a timerfd in the runtime's own
//! epoll instead: a wake-up to the microsecond on the same thread, with no
//! extra thread, for two system calls. A shorter wait (only at tens of
//! thousands of arrivals a second, when the thread is busy anyway) yields
//! to the other tasks until the time comes: it spins for at most that
//! long. Elsewhere, or without a timerfd, tokio's timer.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Waits at least this long go to the timerfd.
pub const PRECISE_FROM: Duration = Duration::from_micros(20);

pub struct ArrivalClock {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl ArrivalClock {
    /// Must be called inside a tokio runtime with I/O enabled.
    pub fn new() -> ArrivalClock {
        ArrivalClock {
            #[cfg(target_os = "linux")]
            fd: linux::timerfd().ok(),
        }
    }

    /// Whether waits of [`PRECISE_FROM`] or more are to the microsecond.
    pub fn precise(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.fd.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Returns at `deadline` (at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(fd) = &self.fd {
            if deadline - now >= PRECISE_FROM {
                if linux::wait(fd, deadline).await.is_ok() {
                    return;
                }
            } else {
                return yield_until(deadline).await;
            }
        }
        tokio::time::sleep_until(deadline).await;
    }
}

/// A wait shorter than the cost of arming a timer: lets the other tasks
/// run, and looks again.
async fn yield_until(deadline: Instant) {
    while Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
}

impl Default for ArrivalClock {
    fn default() -> Self {
        ArrivalClock::new()
    }
}

/// Many waiters on one precise clock (the shoppers' think times): a task
/// waits on its own [`ArrivalClock`] for the earliest deadline and wakes
/// every waiter whose time has come. A waiter costs a heap entry and a
/// oneshot, not a descriptor.
pub struct Timers {
    state: Mutex<TimerState>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct TimerState {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

struct Entry {
    at: Instant,
    seq: u64,
    tx: tokio::sync::oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Timers {
    /// Starts the timer task (inside a tokio runtime with I/O and time).
    pub fn start() -> Arc<Timers> {
        let timers = Arc::new(Timers {
            state: Mutex::new(TimerState::default()),
            changed: tokio::sync::Notify::new(),
        });
        tokio::spawn(timers.clone().run());
        timers
    }

    /// Returns at `deadline` (at once if it has passed).
    pub async fn sleep_until(&self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        if deadline - now < PRECISE_FROM {
            return yield_until(deadline).await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Queued (and whether it is now the earliest), or None: closed.
        let queued = {
            let mut st = self.state.lock();
            if st.closed {
                None
            } else {
                st.seq += 1;
                let seq = st.seq;
                st.heap.push(Reverse(Entry {
                    at: deadline,
                    seq,
                    tx,
                }));
                Some(st.heap.peek().is_some_and(|Reverse(e)| e.seq == seq))
            }
        };
        match queued {
            Some(true) => self.changed.notify_one(),
            Some(false) => {}
            None => return tokio::time::sleep_until(deadline).await,
        }
        if rx.await.is_err() {
            // The timer task is gone: tokio's timer, to the millisecond.
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Wakes every waiter now and ends the timer task.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        while let Some(Reverse(e)) = st.heap.pop() {
            let _ = e.tx.send(());
        }
        drop(st);
        self.changed.notify_one();
    }

    async fn run(self: Arc<Self>) {
        let clock = ArrivalClock::new();
        loop {
            let next = {
                let mut st = self.state.lock();
                if st.closed {
                    return;
                }
                let now = Instant::now();
                while st.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
                    let Reverse(e) = st.heap.pop().expect("peeked");
                    let _ = e.tx.send(());
                }
                st.heap.peek().map(|Reverse(e)| e.at)
            };
            match next {
                None => self.changed.notified().await,
                Some(at) => {
                    tokio::select! {
                        _ = clock.sleep_until(at) => {}
                        _ = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    pub fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: a plain system call; the descriptor is checked, then owned.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the
        // same descriptor until the AsyncFd drops it.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Arms the timer for `deadline` (one shot) and waits for it.
    pub async fn wait(fd: &AsyncFd<OwnedFd>, deadline: tokio::time::Instant) -> io::Result<()> {
        let after = deadline.saturating_duration_since(tokio::time::Instant::now());
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                // An all-zero it_value would disarm it.
                tv_nsec: after.subsec_nanos().max(1) as libc::c_long,
            },
        };
        // SAFETY: a valid timerfd and itimerspec; the old value is not asked.
        let r = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = fd.readable().await?;
            let mut expirations = [0u8; 8];
            let read = guard.try_io(|inner| {
                // SAFETY: reads at most 8 bytes into an 8-byte buffer.
                let n = unsafe {
                    libc::read(
                        inner.as_raw_fd(),
                        expirations.as_mut_ptr().cast(),
                        expirations.len(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => {
                    // One shot: nothing more to read until it is armed
                    // again, so the next wait need not find that out by a
                    // read that would block.
                    guard.clear_ready();
                    result?;
                    // An expiration left from a wait given up before it
                    // fired (Timers drops its wait when an earlier deadline
                    // comes): the timer armed above is still to come.
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(());
                    }
                }
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_on_the_timerfd_until_the_deadline_never_before() {
        let clock = ArrivalClock::new();
        assert!(clock.precise(), "timerfd available on Linux");
        let started = Instant::now();
        for i in 0..50u64 {
            let deadline = Instant::now() + Duration::from_micros(20 + 37 * i);
            clock.sleep_until(deadline).await;
            let now = Instant::now();
            assert!(now >= deadline, "woke {:?} early", deadline - now);
        }
        // 46 ms of waits: a timer armed in the wrong unit (ms for µs) would
        // take tens of seconds. Not a precision check (too noisy to assert).
        assert!(started.elapsed() < Duration::from_secs(5));
        // How precise it is, against tokio's millisecond timer, is measured
        // by scripts/loadgen-bench.sh (latency and late sends at low
        // rates), not asserted here.
    }

    #[tokio::test]
    async fn timers_wake_every_waiter_at_its_deadline_never_before() {
        let timers = Timers::start();
        let started = Instant::now();
        let woke = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = tokio::task::JoinSet::new();
        // Later deadlines registered first: each earlier one must re-arm.
        for i in (0..40u64).rev() {
            let (timers, woke) = (timers.clone(), woke.clone());
            let at = started + Duration::from_micros(500 + 250 * i);
            tasks.spawn(async move {
                timers.sleep_until(at).await;
                let now = Instant::now();
                assert!(now >= at, "waiter {i} woke {:?} early", at - now);
                woke.lock().push(i);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        assert_eq!(woke.lock().len(), 40);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// On tokio's paused clock: after close, a waiter gets tokio's timer
    /// (auto-advanced here, so no real time passes).
    #[tokio::test(start_paused = true)]
    async fn after_close_a_waiter_falls_back_to_tokios_timer() {
        let timers = Timers::start();
        timers.close();
        let at = Instant::now() + Duration::from_millis(2);
        timers.sleep_until(at).await;
        assert!(Instant::now() >= at);
    }

    #[tokio::test]
    async fn a_deadline_past_returns_at_once() {
        let clock = ArrivalClock::new();
        let past = clock.sleep_until(Instant::now() - Duration::from_secs(1));
        let mut past = std::pin::pin!(past);
        let ready = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::future::Future::poll(past.as_mut(), cx).is_ready())
        })
        .await;
        assert!(ready);
    }
}
