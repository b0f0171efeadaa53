//! Admission: a concurrency limit on the engine-and-log path with a bounded
//! first-in-first-out queue behind it and a deadline per request.
//!
//! - At most `admission.concurrency_max` requests run on the path at once
//!   (a tokio semaphore, which hands permits out in arrival order).
//! - At most `admission.queue_max` wait behind them; one more is shed at
//!   once (429 `queue_full`).
//! - A request that waits longer than `admission.max_wait_ms` is shed
//!   (503 `queue_timeout`); it never ran, so nothing changed.
//! - Both carry `Retry-After`: the queue's length over the drain rate
//!   measured over the last second or more (not a constant).
//!
//! The sold-out fast path answers before admission (see the API), so a
//! flash sale's losers never queue behind its winners.

pub mod config;
pub mod rate;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Upper bounds (seconds) of the queue-wait histogram's buckets.
pub const WAIT_BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// Why a request was turned away, with the seconds to tell it to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    QueueFull { retry_after_s: u64 },
    QueueTimeout { retry_after_s: u64 },
}

/// Counters, all monotonic except `running` and `queued`.
#[derive(Debug, Default)]
pub struct Counters {
    pub admitted: AtomicU64,
    pub shed_queue_full: AtomicU64,
    pub shed_queue_timeout: AtomicU64,
    pub sold_out_fast: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Queue wait of admitted requests: one count per bucket of
    /// `WAIT_BUCKETS`, then the overflow bucket; and the sum in µs.
    pub wait_buckets: [AtomicU64; WAIT_BUCKETS.len() + 1],
    pub wait_sum_us: AtomicU64,
}

pub struct Admission {
    permits: Arc<Semaphore>,
    /// These three change on a config reload ([`Admission::retune`]).
    concurrency_max: AtomicUsize,
    queued: AtomicUsize,
    queue_max: AtomicUsize,
    max_wait_ms: AtomicU64,
    /// Permits still to be taken out of circulation after
    /// `concurrency_max` was lowered below the number in use: each ticket
    /// dropped while this is above 0 forgets its permit instead.
    debt: Arc<AtomicUsize>,
    /// Serializes reloads.
    retuning: Mutex<()>,
    completed: Arc<AtomicU64>,
    drain: Mutex<Drain>,
    pub counters: Counters,
}

/// The measured drain rate: completions per second over the last window.
struct Drain {
    since: Instant,
    completed_then: u64,
    per_second: f64,
}

/// A request's place on the path; given back on drop.
pub struct Ticket {
    completed: Arc<AtomicU64>,
    debt: Arc<AtomicUsize>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.completed.fetch_add(1, Relaxed);
        if self.debt.load(Relaxed) > 0
            && self
                .debt
                .fetch_update(Relaxed, Relaxed, |d| d.checked_sub(1))
                .is_ok()
        {
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
    }
}

impl Admission {
    pub fn new(concurrency_max: usize, queue_max: usize, max_wait_ms: u64) -> Admission {
        Admission {
            permits: Arc::new(Semaphore::new(concurrency_max)),
            concurrency_max: AtomicUsize::new(concurrency_max),
            queued: AtomicUsize::new(0),
            queue_max: AtomicUsize::new(queue_max),
            max_wait_ms: AtomicU64::new(max_wait_ms),
            debt: Arc::default(),
            retuning: Mutex::new(()),
            completed: Arc::default(),
            drain: Mutex::new(Drain {
                since: Instant::now(),
                completed_then: 0,
                per_second: 0.0,
            }),
            counters: Counters::default(),
        }
    }

    /// Waits for a place on the path, first come first served, for at most
    /// `admission.max_wait_ms`; or sheds the request.
    pub async fn admit(&self) -> Result<Ticket, Shed> {
        let started = Instant::now();
        // Nobody waiting and a permit free: straight in.
        if self.queued.load(Relaxed) == 0 {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Ok(self.ticket(permit, started));
            }
        }
        if self.queued.fetch_add(1, Relaxed) >= self.queue_max.load(Relaxed) {
            self.queued.fetch_sub(1, Relaxed);
            self.counters.shed_queue_full.fetch_add(1, Relaxed);
            return Err(Shed::QueueFull {
                retry_after_s: self.retry_after_s(),
            });
        }
        let max_wait = Duration::from_millis(self.max_wait_ms.load(Relaxed));
        let waited = tokio::time::timeout(max_wait, self.permits.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Relaxed);
        match waited {
            Ok(Ok(permit)) => Ok(self.ticket(permit, started)),
            Ok(Err(_closed)) => unreachable!("the semaphore is never closed"),
            Err(_elapsed) => {
                self.counters.shed_queue_timeout.fetch_add(1, Relaxed);
                Err(Shed::QueueTimeout {
                    retry_after_s: self.retry_after_s(),
                })
            }
        }
    }

    fn ticket(&self, permit: OwnedSemaphorePermit, started: Instant) -> Ticket {
        let waited = started.elapsed();
        let c = &self.counters;
        c.admitted.fetch_add(1, Relaxed);
        let secs = waited.as_secs_f64();
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(WAIT_BUCKETS.len());
        c.wait_buckets[bucket].fetch_add(1, Relaxed);
        c.wait_sum_us
            .fetch_add(waited.as_micros().min(u64::MAX as u128) as u64, Relaxed);
        Ticket {
            completed: self.completed.clone(),
            debt: self.debt.clone(),
            permit: Some(permit),
        }
    }

    /// New limits from a config reload. Raising `concurrency_max` lets
    /// waiting requests in at once; lowering it takes free permits away now
    /// and the rest as running requests finish (none is cut short).
    /// Requests already waiting keep the `max_wait_ms` they started with.
    pub fn retune(&self, concurrency_max: usize, queue_max: usize, max_wait_ms: u64) {
        let _one_at_a_time = self.retuning.lock();
        let old = self.concurrency_max.swap(concurrency_max, Relaxed);
        if concurrency_max > old {
            let more = concurrency_max - old;
            // Cancel what a lowering still owes before adding permits.
            let owed = self
                .debt
                .fetch_update(Relaxed, Relaxed, |d| Some(d - d.min(more)))
                .unwrap_or_else(|d| d);
            self.permits.add_permits(more - owed.min(more));
        } else if concurrency_max < old {
            let fewer = old - concurrency_max;
            let taken = self.permits.forget_permits(fewer);
            self.debt.fetch_add(fewer - taken, Relaxed);
        }
        self.queue_max.store(queue_max, Relaxed);
        self.max_wait_ms.store(max_wait_ms, Relaxed);
    }

    /// Seconds until the queue as it stands has drained at the measured
    /// rate: at least 1, at most 60.
    pub fn retry_after_s(&self) -> u64 {
        let rate = self.drain_rate();
        let backlog = (self.queued.load(Relaxed) + self.running()) as f64;
        if rate <= 0.0 {
            return 1;
        }
        ((backlog / rate).ceil() as u64).clamp(1, 60)
    }

    /// Completions per second, re-measured when a second or more has passed
    /// since the last measurement.
    pub fn drain_rate(&self) -> f64 {
        let mut d = self.drain.lock();
        let elapsed = d.since.elapsed();
        if elapsed >= Duration::from_secs(1) {
            let now = self.completed.load(Relaxed);
            d.per_second = (now - d.completed_then) as f64 / elapsed.as_secs_f64();
            d.completed_then = now;
            d.since = Instant::now();
        }
        d.per_second
    }

    /// Requests waiting for a place.
    pub fn queued(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Requests on the path now.
    pub fn running(&self) -> usize {
        (self.concurrency_max.load(Relaxed) + self.debt.load(Relaxed))
            .saturating_sub(self.permits.available_permits())
    }

    pub fn concurrency_max(&self) -> usize {
        self.concurrency_max.load(Relaxed)
    }

    pub fn queue_max(&self) -> usize {
        self.queue_max.load(Relaxed)
    }

    /// Prometheus text for `/metrics`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let c = &self.counters;
        let gauges = [
            (
                "stampede_admission_queue_depth",
                "Requests waiting for admission.",
                self.queued() as u64,
            ),
            (
                "stampede_admission_running",
                "Requests on the engine-and-log path.",
                self.running() as u64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP stampede_admission_admitted_total Requests admitted to the engine-and-log path.\n\
             # TYPE stampede_admission_admitted_total counter\n\
             stampede_admission_admitted_total {}",
            c.admitted.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP stampede_admission_shed_total Requests answered without running, by reason.\n\
             # TYPE stampede_admission_shed_total counter"
        );
        for (reason, n) in [
            ("queue_full", &c.shed_queue_full),
            ("queue_timeout", &c.shed_queue_timeout),
            ("sold_out", &c.sold_out_fast),
            ("rate_limited", &c.rate_limited),
        ] {
            let _ = writeln!(
                out,
                "stampede_admission_shed_total{{reason=\"{reason}\"}} {}",
                n.load(Relaxed)
            );
        }
        let name = "stampede_admission_queue_wait_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time admitted requests waited for admission.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (i, bound) in WAIT_BUCKETS.iter().enumerate() {
            cumulative += c.wait_buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += c.wait_buckets[WAIT_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}\n{name}_count {cumulative}",
            c.wait_sum_us.load(Relaxed) as f64 / 1e6
        );
    }

    /// The `admission` member of `/v1/stats`.
    pub fn stats(&self) -> serde_json::Value {
        let c = &self.counters;
        serde_json::json!({
            "concurrency_max": self.concurrency_max(),
            "running": self.running(),
            "queue_max": self.queue_max(),
            "queued": self.queued(),
            "admitted": c.admitted.load(Relaxed),
            "shed": {
                "queue_full": c.shed_queue_full.load(Relaxed),
                "queue_timeout": c.shed_queue_timeout.load(Relaxed),
                "sold_out": c.sold_out_fast.load(Relaxed),
                "rate_limited": c.rate_limited.load(Relaxed),
            },
            "drain_per_second": self.drain_rate(),
            "queue_wait_seconds_sum": c.wait_sum_us.load(Relaxed) as f64 / 1e6,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn retune_lowers_and_raises_the_limits_without_cutting_requests_short() {
        rt().block_on(async {
            let a = Admission::new(3, 0, 1000);
            let t1 = a.admit().await.unwrap();
            let t2 = a.admit().await.unwrap();
            // Lowered to 1 with 2 running: one free permit goes now, one
            // more when a running request ends.
            a.retune(1, 1, 1000);
            assert_eq!((a.concurrency_max(), a.queue_max(), a.running()), (1, 1, 2));
            drop(t1);
            assert_eq!(a.running(), 1);
            let waiting = a.admit();
            let mut waiting = std::pin::pin!(waiting);
            assert!(
                futures_poll(&mut waiting).is_none(),
                "1 running = the new limit"
            );
            // The queue took the new queue_max: one waits, the next is shed.
            assert!(matches!(a.admit().await, Err(Shed::QueueFull { .. })));
            drop(t2);
            let t3 = waiting.await.unwrap();
            assert_eq!(a.running(), 1);
            // Raised to 2: one more gets in at once.
            a.retune(2, 0, 1000);
            let _t4 = a.admit().await.unwrap();
            assert_eq!(a.running(), 2);
            assert!(matches!(a.admit().await, Err(Shed::QueueFull { .. })));
            drop(t3);
            // Lowered below what runs, then raised back before it was
            // paid: the debt is cancelled, not added on top.
            let a = Admission::new(2, 0, 1000);
            let (_u1, _u2) = (a.admit().await.unwrap(), a.admit().await.unwrap());
            a.retune(1, 0, 1000);
            a.retune(2, 0, 1000);
            assert_eq!(a.running(), 2);
            assert_eq!(a.permits.available_permits(), 0);
        });
    }

    #[test]
    fn admits_up_to_the_limit_then_queues_then_sheds() {
        rt().block_on(async {
            let a = Admission::new(2, 1, 1000);
            let t1 = a.admit().await.unwrap();
            let _t2 = a.admit().await.unwrap();
            assert_eq!(a.running(), 2);
            // The third waits in the queue; a fourth finds it full.
            let third = a.admit();
            let mut third = std::pin::pin!(third);
            assert!(futures_poll(&mut third).is_none());
            assert_eq!(a.queued(), 1);
            assert!(matches!(a.admit().await, Err(Shed::QueueFull { .. })));
            // A place frees: the queued one gets it.
            drop(t1);
            assert!(third.await.is_ok());
            assert_eq!(a.counters.admitted.load(Relaxed), 3);
            assert_eq!(a.counters.shed_queue_full.load(Relaxed), 1);
        });
    }

    #[test]
    fn a_request_that_waits_past_the_deadline_is_shed_and_leaves_the_queue() {
        rt().block_on(async {
            let a = Admission::new(1, 10, 300);
            let _held = a.admit().await.unwrap();
            let started = tokio::time::Instant::now();
            let r = a.admit().await;
            assert!(matches!(r, Err(Shed::QueueTimeout { retry_after_s }) if retry_after_s >= 1));
            assert_eq!(started.elapsed(), Duration::from_millis(300));
            assert_eq!(a.queued(), 0);
            assert_eq!(a.counters.shed_queue_timeout.load(Relaxed), 1);
        });
    }

    #[test]
    fn the_queue_is_first_in_first_out() {
        rt().block_on(async {
            let a = std::sync::Arc::new(Admission::new(1, 10, 10_000));
            let first = a.admit().await.unwrap();
            let order = std::sync::Arc::new(Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for i in 0..5 {
                let (a, order) = (a.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    let _t = a.admit().await.unwrap();
                    order.lock().push(i);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }));
                // Each arrives after the previous one queued.
                tokio::task::yield_now().await;
            }
            drop(first);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
        });
    }

    #[test]
    fn retry_after_follows_the_measured_drain_rate() {
        let a = Admission::new(1, 1000, 1000);
        // Nothing measured yet: the floor.
        assert_eq!(a.retry_after_s(), 1);
        {
            let mut d = a.drain.lock();
            d.since -= Duration::from_secs(2);
        }
        // 10 completions over ~2 s: 5 a second; a backlog of 50 is ~10 s.
        a.completed.store(10, Relaxed);
        a.queued.store(50, Relaxed);
        let s = a.retry_after_s();
        assert!((9..=11).contains(&s), "{s}");
    }

    /// Polls once; `Some` if ready.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
