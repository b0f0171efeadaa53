//! Admission's config section, `[admission]` (read by `crate::config`,
//! which checks its ranges).

use serde::{Deserialize, Serialize};

/// `[admission]`: the concurrency limit, queue, waitlists and rate limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    /// Longest a request may wait for admission (then 503 `queue_timeout`)
    /// or in a SKU's waitlist.
    pub max_wait_ms: u64,
    /// Most requests on the engine-and-log path at once.
    pub concurrency_max: usize,
    /// Most requests waiting for a place on the path (then 429 `queue_full`).
    pub queue_max: usize,
    /// Most requests in one SKU's waitlist (`wait_ms`; then 429 `queue_full`).
    pub waitlist_max: usize,
    /// Requests a second per API key on the engine routes; 0 is no limit.
    pub key_rate_per_s: f64,
    /// Requests a key may make at once after a quiet spell.
    pub key_burst: u32,
    /// Reservations a second per `customer_id`; 0 is no limit.
    pub customer_rate_per_s: f64,
    /// Reservations a customer may make at once after a quiet spell.
    pub customer_burst: u32,
    /// Most keys (or customers) each limiter tracks at once; past it, idle
    /// ones are dropped, and if all are active a newcomer goes untracked.
    pub rate_keys_max: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_wait_ms: 5000,
            concurrency_max: 1024,
            queue_max: 10_000,
            waitlist_max: 10_000,
            key_rate_per_s: 0.0,
            key_burst: 1000,
            customer_rate_per_s: 0.0,
            customer_burst: 10,
            rate_keys_max: 1_000_000,
        }
    }
}
