//! Request figures kept as striped atomics (no lock, and no cache line all
//! cores fight over), gathered into Prometheus text when scraped. Labels
//! are bounded: routes and status codes from fixed lists, never a SKU or a
//! customer.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::prometheus::histogram_series;

/// Route labels, in the order of `Route::index` (`src/api/mod.rs`); the
/// last is every path that matched no route.
pub const ROUTES: [&str; 16] = [
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
    "drop",
    "drop_entries",
    "drop_entry",
    "payment_webhook",
    "events",
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

/// `stampede_reservations_total{outcome}`: a reservation's outcome is
/// `held`, `replayed` (an idempotent repeat), or the problem code that
/// refused it; a code not listed counts as `other`.
pub const OUTCOMES: [&str; 14] = [
    "held",
    "replayed",
    "insufficient_stock",
    "customer_limit_exceeded",
    "unknown_sku",
    "invalid_request",
    "hold_table_full",
    "rate_limited",
    "queue_full",
    "queue_timeout",
    "waitlist_ended",
    "storage_unavailable",
    "request_timeout",
    "other",
];

/// The outcome index of a reservation's answer: 201 is `held` (or
/// `replayed`, an idempotent repeat), anything else the code of its
/// problem document.
pub fn outcome_of_response<B>(resp: &hyper::Response<B>) -> usize {
    if resp.status() == hyper::StatusCode::CREATED {
        return match resp.headers().contains_key("idempotent-replayed") {
            true => 1,
            false => 0,
        };
    }
    resp.extensions()
        .get::<super::problem::ProblemCode>()
        .map_or(OUTCOMES.len() - 1, |c| outcome_of(c.0))
}

/// The outcome index of a refusal's problem code.
pub fn outcome_of(code: &str) -> usize {
    OUTCOMES[2..OUTCOMES.len() - 1]
        .iter()
        .position(|&c| c == code)
        .map_or(OUTCOMES.len() - 1, |i| i + 2)
}

const STRIPES: usize = 8;

#[repr(align(128))]
#[derive(Default)]
struct Stripe {
    requests: [[AtomicU64; STATUSES.len() + 1]; ROUTES.len()],
    /// Per route: one count per bucket, then +Inf.
    latency: [[AtomicU64; BUCKETS.len() + 1]; ROUTES.len()],
    latency_sum_us: [AtomicU64; ROUTES.len()],
    reservations: [AtomicU64; OUTCOMES.len()],
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

    /// Counts one reservation's outcome (an index into [`OUTCOMES`]).
    pub fn record_reservation(&self, outcome: usize) {
        self.stripes[stripe_index()].reservations[outcome].fetch_add(1, Relaxed);
    }

    fn sum(&self, f: impl Fn(&Stripe) -> u64) -> u64 {
        self.stripes.iter().map(f).sum()
    }

    /// Reservations so far by outcome (`/v1/stats`, the status page).
    pub fn reservations(&self) -> serde_json::Map<String, serde_json::Value> {
        OUTCOMES
            .iter()
            .enumerate()
            .map(|(i, o)| {
                (
                    (*o).to_owned(),
                    self.sum(|s| s.reservations[i].load(Relaxed)).into(),
                )
            })
            .collect()
    }

    /// Requests answered so far by status class (`2xx`, `4xx`, `5xx`,
    /// `other`) and in all (`total`).
    pub fn requests(&self) -> serde_json::Value {
        let mut by_class = [0u64; 4];
        for s in &self.stripes {
            for route in &s.requests {
                for (i, n) in route.iter().enumerate() {
                    let class = match STATUSES.get(i) {
                        Some(200..=299) => 0,
                        Some(400..=499) => 1,
                        Some(500..=599) => 2,
                        _ => 3,
                    };
                    by_class[class] += n.load(Relaxed);
                }
            }
        }
        serde_json::json!({
            "total": by_class.iter().sum::<u64>(),
            "2xx": by_class[0],
            "4xx": by_class[1],
            "5xx": by_class[2],
            "other": by_class[3],
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP stampede_build_info The running build.\n# TYPE stampede_build_info gauge\n\
             stampede_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        let _ = writeln!(
            out,
            "# HELP stampede_log_lines_dropped_total Lines for stdout or stderr that were dropped: the destination was closed, failed, or too slow (a full pipe nobody reads).\n\
             # TYPE stampede_log_lines_dropped_total counter\nstampede_log_lines_dropped_total {}",
            crate::output::dropped()
        );
        let _ = writeln!(
            out,
            "# HELP stampede_reservations_total Reservations (single and batch ops) by outcome: held, replayed, or the code that refused them.\n\
             # TYPE stampede_reservations_total counter"
        );
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let n = self.sum(|s| s.reservations[i].load(Relaxed));
            let _ = writeln!(
                out,
                "stampede_reservations_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
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
            let sum_s = self.sum(|s| s.latency_sum_us[r].load(Relaxed)) as f64 / 1e6;
            histogram_series(
                &mut out,
                "stampede_http_request_duration_seconds",
                &format!("route=\"{route}\","),
                &BUCKETS,
                &counts,
                total,
                sum_s,
            );
        }
        process_metrics(&mut out);
        out
    }
}

/// The process's CPU time, memory and open files, from `/proc/self`
/// (Linux; nothing elsewhere), under the usual `process_*` names.
fn process_metrics(out: &mut String) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command (which may hold spaces) in parentheses.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
    // USER_HZ, the unit of utime and stime, is 100 on Linux (an ABI
    // constant, whatever the kernel's own tick).
    const TICKS_PER_S: f64 = 100.0;
    // utime and stime are fields 14 and 15 of stat: 12 and 13 after the
    // command, counted from the state (field 3) as 0.
    if let (Some(utime), Some(stime)) = (field(11), field(12)) {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time spent.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}",
            (utime + stime) as f64 / TICKS_PER_S
        );
    }
    // Resident memory in kB from status (no page size to assume).
    let rss_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        });
    if let Some(kb) = rss_kb {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory.\n\
             # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
            kb * 1024
        );
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Open file descriptors.\n\
             # TYPE process_open_fds gauge\nprocess_open_fds {}",
            dir.count()
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<u64>().ok())
        });
    if let Some(max) = max_fds {
        let _ = writeln!(
            out,
            "# HELP process_max_fds Most file descriptors the process may open.\n\
             # TYPE process_max_fds gauge\nprocess_max_fds {max}"
        );
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
        let text = m.render();
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
