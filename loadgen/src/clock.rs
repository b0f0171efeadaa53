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

use std::time::Duration;

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
                if linux::wait(fd, deadline - now).await.is_ok() {
                    return;
                }
            } else {
                // Less than the cost of arming a timer: let the other
                // tasks run, and look again.
                while Instant::now() < deadline {
                    tokio::task::yield_now().await;
                }
                return;
            }
        }
        tokio::time::sleep_until(deadline).await;
    }
}

impl Default for ArrivalClock {
    fn default() -> Self {
        ArrivalClock::new()
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

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

    /// Arms the timer `after` from now (one shot) and waits for it.
    pub async fn wait(fd: &AsyncFd<OwnedFd>, after: Duration) -> io::Result<()> {
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
                    return result;
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
