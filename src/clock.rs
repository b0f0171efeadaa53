//! Time, injected.
//!
//! The engine never reads the system clock itself: it asks a [`Clock`]. The
//! server passes [`SystemClock`]; tests pass a [`ManualClock`] and jump it,
//! so expiry is tested without sleeping.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            // Not as_millis(): its u128 division shows in profiles.
            .map(|d| d.as_secs() * 1000 + u64::from(d.subsec_millis()))
            // A clock before 1970 is a misconfigured machine; time 0 keeps
            // holds expiring (late) rather than panicking the server.
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to. For tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            now_ms: AtomicU64::new(start_ms),
        }
    }

    /// Moves time forward by `delta_ms`.
    pub fn advance(&self, delta_ms: u64) {
        self.now_ms.fetch_add(delta_ms, Ordering::SeqCst);
    }

    pub fn set(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}
