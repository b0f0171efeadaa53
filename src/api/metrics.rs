//! Request figures kept as striped atomics (no lock, and no cache line all
//! cores fight over), gathered into Prometheus text when scraped. Labels
//! are bounded: routes and status codes from fixed lists, never a SKU or a
//! customer.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::server::Core;

/// Route labels, in the order of `Route::index` (`src/api/mod.rs`); the
/// last is every path that matched no route.
pub const ROUTES: [&str; 11] = [
    "healthz",
    "readyz",
    "sku",
    "sku_adjust",
    "reservations",
    "reservation",
    "reservation_action",
    "batch",
    "metrics",
    "stats",
    "other",
];

/// Status codes counted one by one; anything else is counted as "other".
const STATUSES: [u16; 15] = [
    200, 201, 400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 429, 500, 503,
];
const STATUS_OTHER: usize = STATUSES.len();

/// Latency bucket upper bounds in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES.len()],
    /// Per route: one count per bucket, then +Inf.
    latency: [[AtomicU64; BUCKETS.len() + 1]; ROUTES.len()],
    latency_sum_us: [AtomicU64; ROUTES.len()],
}

#[derive(Default)]
pub struct Metrics {
    stripes: [Stripe; STRIPES],
}

fn stripe_index() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static MINE: Cell<usize> = const { Cell::new(usize::MAX) });
    MINE.with(|m| {
        if m.get() == usize::MAX {
            m.set(NEXT.fetch_add(1, Relaxed) % STRIPES);
        }
        m.get()
    })
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(&self, route: usize, status: u16, took: Duration) {
        let s = &self.stripes[stripe_index()];
        let status = STATUSES
            .iter()
            .position(|&c| c == status)
            .unwrap_or(STATUS_OTHER);
        s.requests[route][status].fetch_add(1, Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        s.latency[route][bucket].fetch_add(1, Relaxed);
        s.latency_sum_us[route].fetch_add(took.as_micros() as u64, Relaxed);
    }

    fn sum(&self, f: impl Fn(&Stripe) -> u64) -> u64 {
        self.stripes.iter().map(f).sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, core: Option<&Core>) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP stampede_http_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE stampede_http_requests_total counter");
        for (r, route) in ROUTES.iter().enumerate() {
            for i in 0..=STATUS_OTHER {
                let n = self.sum(|s| s.requests[r][i].load(Relaxed));
                if n > 0 {
                    let status = STATUSES.get(i).map_or("other".to_owned(), u16::to_string);
                    let _ = writeln!(
                        out,
                        "stampede_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP stampede_http_request_duration_seconds Time to answer, by route."
        );
        let _ = writeln!(
            out,
            "# TYPE stampede_http_request_duration_seconds histogram"
        );
        for (r, route) in ROUTES.iter().enumerate() {
            let counts: Vec<u64> = (0..=BUCKETS.len())
                .map(|b| self.sum(|s| s.latency[r][b].load(Relaxed)))
                .collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let mut cumulative = 0;
            for (b, le) in BUCKETS.iter().enumerate() {
                cumulative += counts[b];
                let _ = writeln!(out, "stampede_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "stampede_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {total}");
            let sum_s = self.sum(|s| s.latency_sum_us[r].load(Relaxed)) as f64 / 1e6;
            let _ = writeln!(
                out,
                "stampede_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum_s}"
            );
            let _ = writeln!(
                out,
                "stampede_http_request_duration_seconds_count{{route=\"{route}\"}} {total}"
            );
        }
        if let Some(core) = core {
            let stats = core.wal.stats();
            let gauges = [
                (
                    "stampede_active_holds",
                    "gauge",
                    "Holds held now (not ended).",
                    core.engine.active_holds() as f64,
                ),
                (
                    "stampede_idempotency_keys",
                    "gauge",
                    "Idempotency keys kept.",
                    core.idempotency.len() as f64,
                ),
                (
                    "stampede_wal_groups_total",
                    "counter",
                    "Log groups written (one write and one sync each).",
                    stats.groups as f64,
                ),
                (
                    "stampede_wal_records_total",
                    "counter",
                    "Log records written.",
                    stats.records as f64,
                ),
                (
                    "stampede_wal_bytes_total",
                    "counter",
                    "Log bytes written.",
                    stats.bytes as f64,
                ),
                (
                    "stampede_wal_sync_seconds_total",
                    "counter",
                    "Time spent writing and syncing log groups.",
                    stats.sync_time.as_secs_f64(),
                ),
                (
                    "stampede_wal_failed",
                    "gauge",
                    "1 once the log cannot be written.",
                    f64::from(u8::from(core.wal.is_failed())),
                ),
            ];
            for (name, kind, help, value) in gauges {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_buckets_add_up_across_stripes() {
        let m = Metrics::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        m.record(4, 201, Duration::from_micros(300));
                    }
                    m.record(4, 999, Duration::from_secs(5));
                });
            }
        });
        let text = m.render(None);
        assert!(
            text.contains(
                "stampede_http_requests_total{route=\"reservations\",status=\"201\"} 400"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "stampede_http_requests_total{route=\"reservations\",status=\"other\"} 4"
            ),
            "{text}"
        );
        assert!(text.contains("stampede_http_request_duration_seconds_bucket{route=\"reservations\",le=\"0.0005\"} 400"), "{text}");
        assert!(
            text.contains(
                "stampede_http_request_duration_seconds_count{route=\"reservations\"} 404"
            ),
            "{text}"
        );
    }
}
