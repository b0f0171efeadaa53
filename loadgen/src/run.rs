//! The run: an open model. Shoppers arrive at the times the schedule fixed
//! in advance, whatever the target does; every latency is measured from
//! the time the request was meant to be sent (so a stalled target shows in
//! the latencies of everything scheduled during the stall: coordinated
//! omission corrected). Sends that start late and arrivals dropped (too
//! many in flight) are counted and reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::scenario::{Popularity, Scenario};
use crate::schedule::Schedule;
use crate::target::{Answer, Op, OpKind, Target};

/// A send that starts more than this after its intended time is late.
const LATE: Duration = Duration::from_millis(1);

/// Latency histograms in microseconds, up to 10 minutes, 3 digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")
}

/// One second of the run.
#[derive(Debug, Clone)]
pub struct Second {
    /// Requests meant to be sent this second (by intended time).
    pub offered: u64,
    /// Requests sent this second.
    pub sent: u64,
    /// Answers by status (0: no answer) and problem code, by intended time.
    pub statuses: BTreeMap<u16, u64>,
    pub codes: BTreeMap<String, u64>,
    pub latency: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            offered: 0,
            sent: 0,
            statuses: BTreeMap::new(),
            codes: BTreeMap::new(),
            latency: histogram(),
        }
    }
}

/// Everything measured.
pub struct Stats {
    pub by_op: BTreeMap<OpKind, Histogram<u64>>,
    pub by_phase: Vec<Histogram<u64>>,
    pub statuses: BTreeMap<(OpKind, u16), u64>,
    /// Latency by operation and status (0: no answer).
    pub by_status: BTreeMap<(OpKind, u16), Histogram<u64>>,
    pub codes: BTreeMap<String, u64>,
    pub seconds: Vec<Second>,
    /// Units confirmed (200 seen) per SKU, for the audit.
    pub confirmed: BTreeMap<String, u64>,
    /// Payment webhooks answered 200, by `outcome` (`[flow.payment]`).
    pub payments: BTreeMap<String, u64>,
}

impl Stats {
    fn new(phases: usize) -> Stats {
        Stats {
            by_op: OpKind::ALL.iter().map(|&k| (k, histogram())).collect(),
            by_phase: (0..phases).map(|_| histogram()).collect(),
            statuses: BTreeMap::new(),
            by_status: BTreeMap::new(),
            codes: BTreeMap::new(),
            seconds: Vec::new(),
            confirmed: BTreeMap::new(),
            payments: BTreeMap::new(),
        }
    }

    fn second(&mut self, s: usize) -> &mut Second {
        if self.seconds.len() <= s {
            self.seconds.resize_with(s + 1, Second::default);
        }
        &mut self.seconds[s]
    }
}

/// Counters the progress line reads while the run goes on.
pub struct Live {
    /// Shoppers that arrived on schedule (each makes one or more requests).
    pub arrivals: AtomicU64,
    pub sent: AtomicU64,
    pub late: AtomicU64,
    pub dropped: AtomicU64,
    pub completed: AtomicU64,
    pub errors: AtomicU64,
    pub in_flight: AtomicUsize,
    /// Latencies since the progress line last looked (it resets them).
    pub window: Mutex<Histogram<u64>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            arrivals: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            late: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            window: Mutex::new(histogram()),
        }
    }
}

pub struct Outcome {
    pub stats: Stats,
    pub live: Arc<Live>,
    pub elapsed: Duration,
}

/// A small fast generator (xorshift64*), seeded per shopper so a run is
/// the same every time for the same scenario.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks SKUs by the catalog's popularity.
pub struct Picker {
    names: Vec<String>,
    /// Zipf: the cumulative weights, for a binary search.
    cdf: Vec<f64>,
    popularity: Popularity,
}

impl Picker {
    pub fn new(s: &Scenario) -> Picker {
        let c = &s.catalog;
        let names = (0..c.skus).map(|n| format!("{}{n:06}", c.prefix)).collect();
        let mut cdf = Vec::new();
        if c.popularity == Popularity::Zipf {
            let mut sum = 0.0;
            for k in 1..=c.skus {
                sum += 1.0 / (k as f64).powf(c.zipf_exponent);
                cdf.push(sum);
            }
            for w in &mut cdf {
                *w /= sum;
            }
        }
        Picker {
            names,
            cdf,
            popularity: c.popularity,
        }
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn pick(&self, rng: &mut Rng) -> &str {
        let i = match self.popularity {
            Popularity::Hot => 0,
            Popularity::Uniform => (rng.next_u64() % self.names.len() as u64) as usize,
            Popularity::Zipf => {
                let u = rng.unit();
                self.cdf
                    .partition_point(|&w| w < u)
                    .min(self.names.len() - 1)
            }
        };
        &self.names[i]
    }
}

struct Shared {
    scenario: Scenario,
    target: Target,
    picker: Picker,
    stats: Mutex<Stats>,
    live: Arc<Live>,
    start: Instant,
    /// Part of every Idempotency-Key, so two runs never share a key.
    run_id: u64,
    schedule: Schedule,
    /// The shoppers' think times.
    timers: Arc<crate::clock::Timers>,
    connections: tokio::sync::Semaphore,
}

/// Sets every SKU's stock (before the clock starts), 32 at a time.
pub async fn set_up(scenario: &Scenario, target: &Target) -> anyhow::Result<()> {
    let picker = Picker::new(scenario);
    let c = &scenario.catalog;
    for chunk in picker.names().chunks(32) {
        let calls = chunk.iter().map(|name| async move {
            (
                name,
                target.set_stock(name, c.stock, c.customer_limit).await,
            )
        });
        for (name, result) in join_all(calls).await {
            result.map_err(|e| anyhow::anyhow!("setting up {name}: {e}"))?;
        }
    }
    Ok(())
}

/// Runs futures concurrently on this task, answers in order.
pub(crate) async fn join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}

/// Runs the scenario against the target; `live` is updated as it goes.
pub async fn run(scenario: Scenario, target: Target, live: Arc<Live>) -> (Outcome, Target) {
    let schedule = Schedule::new(&scenario.phases);
    let shared = Arc::new(Shared {
        picker: Picker::new(&scenario),
        stats: Mutex::new(Stats::new(scenario.phases.len())),
        connections: tokio::sync::Semaphore::new(scenario.client.connections),
        live: live.clone(),
        start: Instant::now(),
        run_id: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        schedule,
        timers: crate::clock::Timers::start(),
        target,
        scenario,
    });
    let in_flight_max = shared.scenario.client.in_flight_max;
    // Shoppers are plain tasks (a JoinSet's bookkeeping showed in
    // profiles); each one's guard counts it out, even if it panics, and
    // the last one out wakes the wait below.
    let all_done = Arc::new(tokio::sync::Notify::new());
    let clock = crate::clock::ArrivalClock::new();
    for (n, (t, phase)) in shared.schedule.arrivals().enumerate() {
        let intended = shared.start + Duration::from_secs_f64(t);
        clock.sleep_until(intended).await;
        live.arrivals.fetch_add(1, Relaxed);
        if live.in_flight.load(Relaxed) >= in_flight_max {
            live.dropped.fetch_add(1, Relaxed);
            shared.stats.lock().second(t as usize).offered += 1;
            continue;
        }
        live.in_flight.fetch_add(1, Relaxed);
        let guard = InFlight {
            shared: Some(shared.clone()),
            done: all_done.clone(),
        };
        tokio::spawn(async move {
            let shared = guard.shared.as_deref().expect("set until dropped");
            shopper(shared, n as u64, intended, phase).await;
        });
    }
    loop {
        let notified = all_done.notified();
        if live.in_flight.load(Relaxed) == 0 {
            break;
        }
        notified.await;
    }
    let elapsed = shared.start.elapsed();
    shared.timers.close();
    let shared = Arc::into_inner(shared).unwrap_or_else(|| panic!("every shopper has ended"));
    (
        Outcome {
            stats: shared.stats.into_inner(),
            live,
            elapsed,
        },
        shared.target,
    )
}

/// A shopper in flight: counted out when dropped (ended or panicked),
/// after letting go of the run's shared state, so that the last one out
/// leaves the runner its sole owner.
struct InFlight {
    shared: Option<Arc<Shared>>,
    done: Arc<tokio::sync::Notify>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let live = shared.live.clone();
        drop(shared);
        if live.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.done.notify_one();
        }
    }
}

/// One shopper: maybe browse, reserve, then confirm, release or walk away.
async fn shopper(shared: &Shared, n: u64, arrived: Instant, phase: usize) {
    let s = &shared.scenario;
    let mut rng = Rng::new(n + 1);
    let sku = shared.picker.pick(&mut rng).to_owned();
    let customer = format!("c-{}", rng.next_u64() % s.customers.count);
    let mut intended = arrived;
    if rng.unit() < s.flow.browse {
        request(shared, Op::Browse { sku: sku.clone() }, intended, phase).await;
        intended = Instant::now();
    }
    // Behind a drop, a shopper not admitted yet tries again a few times.
    let (retries, retry_ms) = s.drop.as_ref().map_or((0, 0), |d| (d.retries, d.retry_ms));
    let mut attempt = 0;
    let answer = loop {
        let answer = request(
            shared,
            Op::Reserve {
                customer: customer.clone(),
                sku: sku.clone(),
                qty: s.flow.qty,
                ttl_ms: s.flow.ttl_ms,
                wait_ms: s.flow.wait_ms,
                key: format!("lg-{:x}-{n}-r{attempt}", shared.run_id),
            },
            intended,
            phase,
        )
        .await;
        if attempt == retries || answer.code.as_deref() != Some("not_admitted") {
            break answer;
        }
        attempt += 1;
        intended = Instant::now() + Duration::from_millis(retry_ms);
        shared.timers.sleep_until(intended).await;
    };
    let (201, Some(id)) = (answer.status, answer.id) else {
        return;
    };
    let choice = rng.unit();
    if choice < s.flow.confirm {
        if let Some(p) = s.flow.payment.as_ref().filter(|p| rng.unit() < p.share) {
            let succeeded = rng.unit() >= p.fail;
            return checkout(shared, p, n, id, sku, succeeded, phase).await;
        }
    }
    let op = if choice < s.flow.confirm {
        Op::Confirm {
            id,
            key: format!("lg-{:x}-{n}-c", shared.run_id),
        }
    } else if choice < s.flow.confirm + s.flow.release {
        Op::Release {
            id,
            key: format!("lg-{:x}-{n}-x", shared.run_id),
        }
    } else {
        return; // walks away: the hold expires
    };
    let next = Instant::now() + Duration::from_millis(s.flow.think_ms);
    // To the microsecond (tokio's timer would add up to a millisecond of
    // its own to the follow-up's latency).
    shared.timers.sleep_until(next).await;
    let confirming = matches!(op, Op::Confirm { .. });
    let answer = request(shared, op, next, phase).await;
    if confirming && answer.status == 200 {
        *shared.stats.lock().confirmed.entry(sku).or_default() += u64::from(s.flow.qty);
    }
}

/// A shopper who pays at the gateway: `/payment` after thinking, then the
/// gateway's signed webhook `webhook_ms` later. What the webhook answered
/// is counted by outcome; a confirmation (on time or late) counts for the
/// audit like a direct one.
async fn checkout(
    shared: &Shared,
    p: &crate::scenario::FlowPayment,
    n: u64,
    id: String,
    sku: String,
    succeeded: bool,
    phase: usize,
) {
    let s = &shared.scenario;
    let payment_ref = format!("pi_{:x}_{n}", shared.run_id);
    let next = Instant::now() + Duration::from_millis(s.flow.think_ms);
    shared.timers.sleep_until(next).await;
    let op = Op::Payment {
        id: id.clone(),
        gateway: p.gateway.clone(),
        payment_ref: payment_ref.clone(),
        key: format!("lg-{:x}-{n}-p", shared.run_id),
    };
    if request(shared, op, next, phase).await.status != 200 {
        return;
    }
    let next = Instant::now() + Duration::from_millis(p.webhook_ms);
    shared.timers.sleep_until(next).await;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let event_id = format!("evt_{:x}_{n}", shared.run_id);
    let (body, headers) =
        match crate::gateway::webhook(p, &event_id, &id, &payment_ref, succeeded, now_s) {
            Ok(signed) => signed,
            Err(e) => {
                shared.live.errors.fetch_add(1, Relaxed);
                eprintln!("stampede-loadgen: {e}");
                return;
            }
        };
    let op = Op::Webhook {
        gateway: p.gateway.clone(),
        body,
        headers,
    };
    let answer = request(shared, op, next, phase).await;
    if let (200, Some(outcome)) = (answer.status, answer.outcome) {
        let mut stats = shared.stats.lock();
        if outcome == "confirmed" || outcome == "confirmed_late" {
            *stats.confirmed.entry(sku).or_default() += u64::from(s.flow.qty);
        }
        *stats.payments.entry(outcome).or_default() += 1;
    }
}

/// Sends one request meant for `intended` (retrying once on a timeout with
/// the same Idempotency-Key) and records it.
async fn request(shared: &Shared, op: Op, intended: Instant, phase: usize) -> Answer {
    let live = &shared.live;
    let permit = shared.connections.acquire().await.expect("never closed");
    let sent_at = Instant::now();
    if sent_at.duration_since(intended) > LATE {
        live.late.fetch_add(1, Relaxed);
    }
    live.sent.fetch_add(1, Relaxed);
    // Boxed: only the shoppers holding a connection carry the exchange's
    // state (kilobytes); the many waiting for one stay small, which keeps
    // an overloaded run's memory (and page faults) down.
    let answer = Box::pin(exchange(shared, &op)).await;
    drop(permit);
    let done = Instant::now();
    let latency_us = done.duration_since(intended).as_micros().max(1) as u64;
    live.completed.fetch_add(1, Relaxed);
    let _ = live.window.lock().record(latency_us);
    if answer.status == 0 || answer.status >= 500 {
        live.errors.fetch_add(1, Relaxed);
    }
    let t_intended = intended.duration_since(shared.start).as_secs() as usize;
    let t_sent = sent_at.duration_since(shared.start).as_secs() as usize;
    let kind = op.kind();
    let mut stats = shared.stats.lock();
    let _ = stats
        .by_op
        .get_mut(&kind)
        .expect("every kind")
        .record(latency_us);
    let _ = stats.by_phase[phase].record(latency_us);
    *stats.statuses.entry((kind, answer.status)).or_default() += 1;
    let _ = stats
        .by_status
        .entry((kind, answer.status))
        .or_insert_with(histogram)
        .record(latency_us);
    if let Some(code) = &answer.code {
        *stats.codes.entry(code.clone()).or_default() += 1;
    }
    let second = stats.second(t_intended);
    second.offered += 1;
    *second.statuses.entry(answer.status).or_default() += 1;
    if let Some(code) = &answer.code {
        *second.codes.entry(code.clone()).or_default() += 1;
    }
    let _ = second.latency.record(latency_us);
    stats.second(t_sent).sent += 1;
    answer
}

/// The request and its retries on a timeout (same Idempotency-Key).
async fn exchange(shared: &Shared, op: &Op) -> Answer {
    let client = &shared.scenario.client;
    let timeout = Duration::from_millis(client.timeout_ms);
    let mut answer = Answer::default();
    for _ in 0..=client.retries {
        match tokio::time::timeout(timeout, shared.target.call(op)).await {
            Ok(Ok(a)) => {
                answer = a;
                break;
            }
            Ok(Err(e)) => {
                answer = Answer {
                    status: 0,
                    code: Some(format!("transport: {}", short(&e))),
                    ..Answer::default()
                };
                break;
            }
            Err(_) => {
                answer = Answer {
                    status: 0,
                    code: Some("timeout".into()),
                    ..Answer::default()
                }
            }
        }
    }
    answer
}

fn short(e: &str) -> String {
    e.chars().take(60).collect()
}

/// What the audit found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Audit {
    pub skus: usize,
    /// SKUs with held + sold > stock.
    pub oversold: Vec<String>,
    /// SKUs where the server's sold count is below the confirmations the
    /// clients saw (a lost sale).
    pub lost_sales: Vec<String>,
    /// Units sold that no client saw confirmed (answers lost to timeouts).
    pub sold_unseen: u64,
    pub sold: u64,
    pub confirmed_seen: u64,
    pub errors: Vec<String>,
    /// Not done (`--no-audit`): nothing was read back.
    pub skipped: bool,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.oversold.is_empty() && self.lost_sales.is_empty() && self.errors.is_empty()
    }
}

/// Reads every SKU back: oversells, and sold against what clients saw.
pub async fn audit(scenario: &Scenario, target: &Target, stats: &Stats) -> Audit {
    let picker = Picker::new(scenario);
    let mut audit = Audit::default();
    for name in picker.names() {
        audit.skus += 1;
        let f = match target.figures(name).await {
            Ok(f) => f,
            Err(e) => {
                audit.errors.push(e);
                continue;
            }
        };
        if f.held + f.sold > f.stock {
            audit.oversold.push(format!(
                "{name}: held {} + sold {} > stock {}",
                f.held, f.sold, f.stock
            ));
        }
        let seen = stats.confirmed.get(name).copied().unwrap_or(0);
        if f.sold < seen {
            audit.lost_sales.push(format!(
                "{name}: sold {} < confirmations seen {seen}",
                f.sold
            ));
        }
        audit.sold += f.sold;
        audit.confirmed_seen += seen;
        audit.sold_unseen += f.sold.saturating_sub(seen);
    }
    audit
}
