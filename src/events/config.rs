//! The event feed's config sections, `[events]` and `[[webhooks]]` (read
//! by `crate::config`, which checks their ranges and endpoints).

use serde::{Deserialize, Serialize};

/// `[events]`: the event feed (contract, "Events").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Events kept for subscribers resuming with `Last-Event-ID`.
    pub retained_max: usize,
    /// Streams at once; beyond, 503 `not_ready` with `Retry-After`.
    pub subscribers_max: usize,
    /// A subscriber further behind than this many events (a slow reader)
    /// is sent `reset` and dropped; it may resume.
    pub subscriber_lag_max: usize,
    /// A comment line (`: keep-alive`) after this long without an event.
    pub keepalive_ms: u64,
    /// Streams are woken at most this often: each writes what came since
    /// in one piece (an event waits up to this long; at 1,000 streams a
    /// write per event would cost more than the reservations).
    pub flush_interval_ms: u64,
    /// A webhook delivery is retried for up to this long after its event.
    pub webhook_retry_max_ms: u64,
    /// The first retry's backoff ceiling; it doubles each attempt (full
    /// jitter: the wait is uniform from 0 to the ceiling, at most 1 h).
    pub webhook_retry_base_ms: u64,
    /// One delivery attempt's time limit.
    pub webhook_timeout_ms: u64,
    /// Events kept per endpoint still to deliver; beyond, the oldest goes
    /// (counted in `stampede_webhook_deliveries_total{outcome="dropped"}`).
    pub webhook_outbox_max: usize,
    /// Deliveries in flight per endpoint.
    pub webhook_concurrency: usize,
    /// Event types a stream may read without a key (only `stock.out`,
    /// `stock.back` and `drop.opened`: hold events carry customer ids).
    pub public_types: Vec<String>,
}

/// One `[[webhooks]]` endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://HOST:PORT/PATH` (https is not supported: use a relay).
    pub url: String,
    /// The signing secret: `whsec_` + base64 (Standard Webhooks), or the
    /// key's bytes as they are; at least 16 bytes of key.
    pub secret: String,
    /// Event types to send; empty or absent: all.
    #[serde(default)]
    pub types: Vec<String>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            retained_max: 100_000,
            subscribers_max: 1024,
            subscriber_lag_max: 10_000,
            keepalive_ms: 15_000,
            flush_interval_ms: 50,
            webhook_retry_max_ms: 86_400_000,
            webhook_retry_base_ms: 1_000,
            webhook_timeout_ms: 5_000,
            webhook_outbox_max: 100_000,
            webhook_concurrency: 4,
            public_types: Vec::new(),
        }
    }
}
