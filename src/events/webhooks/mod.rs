//! Webhooks (contract, "Events"): each `[[webhooks]]` endpoint gets the
//! events of its `types` as POSTs signed per Standard Webhooks 1.0, out of
//! a durable outbox, retried with exponential backoff and full jitter for
//! up to `events.webhook_retry_max_ms`; a 410 answer disables the endpoint
//! until restart.
//!
//! # Durable
//!
//! An event some endpoint wants is appended to the log as an outbox record
//! (kind 11) under the locks of its change, and the change's answer waits
//! for that record too: nothing acknowledged is missing from the outbox
//! after a crash. Each delivery's end (delivered, or given up) is a record
//! (kind 12); replay rebuilds what is still to deliver, and a checkpoint
//! writes it as those same records. Delivery is at least once: a delivery
//! whose end record a crash took is sent again, with the same
//! `webhook-id` (the event id), which receivers dedupe on.
//!
//! # Signing
//!
//! `webhook-id` (the event id), `webhook-timestamp` (seconds), and
//! `webhook-signature: v1,<base64 of HMAC-SHA256(key, "id.timestamp.body")>`;
//! the key is the secret's bytes, or for a `whsec_...` secret the base64
//! after the prefix, as Standard Webhooks writes secrets. The body is
//! `{"type", "timestamp" (RFC 3339), "data"}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

use super::{Kind, Kinds};
use crate::wal::{self, Journal, Wal};

pub use crate::wal::kinds::{OUTBOX_DONE as DONE_KIND, OUTBOX_QUEUED as QUEUED_KIND};
pub use record::OutboxRecord;

mod record;

/// One endpoint, from `[[webhooks]]`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    /// `host:port` to connect to, and the request target.
    authority: String,
    path: String,
    key: Vec<u8>,
    pub kinds: Kinds,
}

impl Endpoint {
    /// From a config entry; the error names what is wrong.
    pub fn new(url: &str, secret: &str, types: &[String]) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                "https is not supported: deliver to an http:// endpoint (a relay on this host)"
                    .to_owned()
            } else {
                format!("must be an http:// URL, got {url:?}")
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let uri: hyper::Uri = format!("http://{authority}{path}")
            .parse()
            .map_err(|e| format!("not a URL ({e}): {url:?}"))?;
        let host = uri.host().unwrap_or("");
        if host.is_empty() || url.len() > 255 {
            return Err(format!("needs a host, in at most 255 bytes: {url:?}"));
        }
        let authority = match uri.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => format!("{host}:80"),
        };
        let key = match secret.strip_prefix("whsec_") {
            Some(b64) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "a whsec_ secret is base64 after the prefix".to_owned())?,
            None => secret.as_bytes().to_vec(),
        };
        if key.len() < 16 {
            return Err("a secret needs at least 16 bytes of key".to_owned());
        }
        let kinds = if types.is_empty() {
            Kinds::ALL
        } else {
            Kinds::parse(&types.join(",")).map_err(|t| format!("unknown event type {t:?}"))?
        };
        Ok(Endpoint {
            url: url.to_owned(),
            authority,
            path: path.to_owned(),
            key,
            kinds,
        })
    }

    /// `v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>`.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    }
}

/// Retry and bounds, from `[events]`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub retry_max_ms: u64,
    pub retry_base_ms: u64,
    pub timeout_ms: u64,
    pub outbox_max: usize,
    pub concurrency: usize,
}

/// An event still to deliver to one endpoint.
#[derive(Debug, Clone)]
struct Pending {
    kind: Kind,
    at_ms: u64,
    data: Bytes,
    attempts: u32,
    next_at_ms: u64,
    in_flight: bool,
}

/// Per-endpoint delivery counts (`/metrics`, `/v1/stats`).
#[derive(Debug, Default)]
pub struct Counts {
    pub delivered: AtomicU64,
    /// Attempts that failed (and were retried or given up).
    pub failed: AtomicU64,
    pub gave_up: AtomicU64,
    /// Events dropped because the endpoint's outbox was full (the redis
    /// store: trimmed from the event stream before the endpoint's group
    /// read them).
    pub dropped: AtomicU64,
}

struct EndpointState {
    endpoint: Endpoint,
    pending: Mutex<BTreeMap<u64, Pending>>,
    disabled: AtomicBool,
    counts: Counts,
    wake: tokio::sync::Notify,
}

/// What `/v1/stats` shows of one endpoint.
#[derive(Debug, serde::Serialize)]
pub struct EndpointStats {
    pub url: String,
    pub types: Vec<&'static str>,
    pub pending: usize,
    pub delivered: u64,
    pub failed: u64,
    pub gave_up: u64,
    pub dropped: u64,
    pub disabled: bool,
}

/// What the redis store is told of deliveries (it keeps the outbox in
/// Redis: see `store::redis::webhooks`).
#[derive(Debug, PartialEq, Eq)]
pub enum Settled {
    /// Endpoint `index` is done with event `id` (delivered or given up).
    Done(usize, u64),
    /// Endpoint `index` answered 410.
    Gone(usize),
}

pub struct Outbox {
    options: Options,
    endpoints: Vec<EndpointState>,
    wal: OnceLock<Arc<Wal>>,
    /// The redis store: where ends of deliveries go (instead of the log).
    settled: OnceLock<tokio::sync::mpsc::UnboundedSender<Settled>>,
    clock: Arc<dyn crate::clock::Clock>,
    /// Full jitter's randomness (xorshift, seeded from the OS).
    rng: Mutex<u64>,
}

impl Outbox {
    pub fn new(
        options: Options,
        endpoints: Vec<Endpoint>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Outbox {
        let mut seed = [0u8; 8];
        let _ = getrandom::getrandom(&mut seed);
        Outbox {
            options,
            endpoints: endpoints
                .into_iter()
                .map(|endpoint| EndpointState {
                    endpoint,
                    pending: Mutex::new(BTreeMap::new()),
                    disabled: AtomicBool::new(false),
                    counts: Counts::default(),
                    wake: tokio::sync::Notify::new(),
                })
                .collect(),
            wal: OnceLock::new(),
            settled: OnceLock::new(),
            clock,
            rng: Mutex::new(u64::from_le_bytes(seed) | 1),
        }
    }

    pub fn attach_wal(&self, wal: Arc<Wal>) {
        let _ = self.wal.set(wal);
    }

    /// The redis store: from now on each delivery's end, and each 410, is
    /// sent to `tx`.
    pub fn attach_settled(&self, tx: tokio::sync::mpsc::UnboundedSender<Settled>) {
        let _ = self.settled.set(tx);
    }

    /// The endpoints, in `[[webhooks]]` order.
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().map(|e| &e.endpoint)
    }

    /// How many more events endpoint `index` can take now.
    pub fn room(&self, index: usize) -> usize {
        self.endpoints.get(index).map_or(0, |e| {
            self.options
                .outbox_max
                .saturating_sub(e.pending.lock().len())
        })
    }

    /// The events endpoint `index` still has to deliver.
    pub fn pending_ids(&self, index: usize) -> Vec<u64> {
        self.endpoints
            .get(index)
            .map_or_else(Vec::new, |e| e.pending.lock().keys().copied().collect())
    }

    /// Event `id` for endpoint `index` alone (the redis store reads each
    /// endpoint's events from Redis); ignored if it already has it.
    pub fn offer(&self, index: usize, id: u64, kind: Kind, at_ms: u64, data: Bytes) {
        let Some(e) = self.endpoints.get(index) else {
            return;
        };
        e.pending.lock().entry(id).or_insert(Pending {
            kind,
            at_ms,
            data,
            attempts: 0,
            next_at_ms: 0,
            in_flight: false,
        });
        e.wake.notify_one();
    }

    /// Disables endpoint `index` (another node had a 410 from it).
    pub fn disable(&self, index: usize) {
        if let Some(e) = self.endpoints.get(index) {
            e.disabled.store(true, Relaxed);
        }
    }

    /// `n` events endpoint `index` will never get (the redis store: the
    /// event stream no longer held them when its group read on).
    pub fn count_dropped(&self, index: usize, n: u64) {
        if let Some(e) = self.endpoints.get(index) {
            e.counts.dropped.fetch_add(n, Relaxed);
        }
    }

    /// A delivery's end: logged, or told to the redis store.
    fn done(&self, index: usize, id: u64, gave_up: bool) {
        let url = &self.endpoints[index].endpoint.url;
        self.append(&OutboxRecord::Done { id, url, gave_up });
        if let Some(tx) = self.settled.get() {
            let _ = tx.send(Settled::Done(index, id));
        }
    }

    /// Whether any endpoint wants `kind`.
    pub fn wants(&self, kind: Kind) -> bool {
        self.endpoints.iter().any(|e| e.endpoint.kinds.has(kind))
    }

    fn append(&self, record: &OutboxRecord<'_>) -> u64 {
        match self.wal.get() {
            // A log that cannot be written fails the change itself too
            // (its record came first); nothing to add here.
            Some(wal) => wal.append(record).unwrap_or(0),
            None => 0,
        }
    }

    /// Takes event `id` for every endpoint that wants it: logs it and
    /// returns the record's LSN (called under the change's locks).
    pub fn queue(&self, id: u64, kind: Kind, at_ms: u64, data: &[u8]) -> u64 {
        let lsn = self.append(&OutboxRecord::Queued {
            id,
            kind,
            at_ms,
            data,
        });
        self.add(id, kind, at_ms, Bytes::copy_from_slice(data));
        lsn
    }

    fn add(&self, id: u64, kind: Kind, at_ms: u64, data: Bytes) {
        for e in &self.endpoints {
            if !e.endpoint.kinds.has(kind) {
                continue;
            }
            let mut pending = e.pending.lock();
            if pending.len() >= self.options.outbox_max {
                // Bounded memory: the oldest goes, counted.
                if pending.pop_first().is_some() {
                    e.counts.dropped.fetch_add(1, Relaxed);
                }
            }
            pending.insert(
                id,
                Pending {
                    kind,
                    at_ms,
                    data: data.clone(),
                    attempts: 0,
                    next_at_ms: 0,
                    in_flight: false,
                },
            );
            drop(pending);
            e.wake.notify_one();
        }
    }

    /// Replay: one outbox record (decoded by [`crate::records`]).
    pub fn replay(&self, record: OutboxRecord<'_>) -> Result<(), String> {
        match record {
            OutboxRecord::Queued {
                id,
                kind,
                at_ms,
                data,
            } => self.add(id, kind, at_ms, Bytes::copy_from_slice(data)),
            OutboxRecord::Done { id, url, .. } => {
                for e in self.endpoints.iter().filter(|e| e.endpoint.url == url) {
                    e.pending.lock().remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Runs `f` with every endpoint's outbox locked and returns its result
    /// with the outbox's image: each pending event as a queued record, then
    /// a done record for each endpoint that wants it but has it no more.
    pub fn with_locked<R>(&self, f: impl FnOnce() -> R) -> (R, Vec<u8>) {
        let locked: Vec<_> = self.endpoints.iter().map(|e| e.pending.lock()).collect();
        let r = f();
        let mut events: BTreeMap<u64, &Pending> = BTreeMap::new();
        for pending in &locked {
            for (id, p) in pending.iter() {
                events.entry(*id).or_insert(p);
            }
        }
        let mut out = Vec::new();
        let mut frame = |record: &OutboxRecord<'_>| {
            wal::record::frame(record, 0, &mut out).expect("bug: an outbox record encodes");
        };
        for (id, p) in &events {
            frame(&OutboxRecord::Queued {
                id: *id,
                kind: p.kind,
                at_ms: p.at_ms,
                data: &p.data,
            });
            for (e, pending) in self.endpoints.iter().zip(&locked) {
                if e.endpoint.kinds.has(p.kind) && !pending.contains_key(id) {
                    frame(&OutboxRecord::Done {
                        id: *id,
                        url: &e.endpoint.url,
                        gave_up: false,
                    });
                }
            }
        }
        (r, out)
    }

    pub fn stats(&self) -> Vec<EndpointStats> {
        self.endpoints
            .iter()
            .map(|e| EndpointStats {
                url: e.endpoint.url.clone(),
                types: Kind::ALL
                    .into_iter()
                    .filter(|k| e.endpoint.kinds.has(*k))
                    .map(Kind::as_str)
                    .collect(),
                pending: e.pending.lock().len(),
                delivered: e.counts.delivered.load(Relaxed),
                failed: e.counts.failed.load(Relaxed),
                gave_up: e.counts.gave_up.load(Relaxed),
                dropped: e.counts.dropped.load(Relaxed),
                disabled: e.disabled.load(Relaxed),
            })
            .collect()
    }

    /// Prometheus lines (endpoints by index: no URL in a label).
    pub fn render(&self, out: &mut String) {
        if self.endpoints.is_empty() {
            return;
        }
        out.push_str(
            "# HELP stampede_webhook_deliveries_total Webhook delivery attempts by endpoint (its index in [[webhooks]]) and outcome.\n\
             # TYPE stampede_webhook_deliveries_total counter\n",
        );
        for (i, e) in self.endpoints.iter().enumerate() {
            for (outcome, n) in [
                ("delivered", &e.counts.delivered),
                ("failed", &e.counts.failed),
                ("gave_up", &e.counts.gave_up),
                ("dropped", &e.counts.dropped),
            ] {
                out.push_str(&format!(
                    "stampede_webhook_deliveries_total{{endpoint=\"{i}\",outcome=\"{outcome}\"}} {}\n",
                    n.load(Relaxed)
                ));
            }
        }
        let mut gauge = |name: &str, help: &str, value: &dyn Fn(&EndpointState) -> u64| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (i, e) in self.endpoints.iter().enumerate() {
                out.push_str(&format!("{name}{{endpoint=\"{i}\"}} {}\n", value(e)));
            }
        };
        gauge(
            "stampede_webhook_pending",
            "Events still to deliver, by endpoint.",
            &|e| e.pending.lock().len() as u64,
        );
        gauge(
            "stampede_webhook_disabled",
            "1 once an endpoint answered 410 (until restart).",
            &|e| u64::from(e.disabled.load(Relaxed)),
        );
    }

    fn random(&self) -> u64 {
        let mut x = self.rng.lock();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Full jitter: uniform in [0, min(cap, base × 2^attempts)].
    fn backoff_ms(&self, attempts: u32) -> u64 {
        let cap = self.options.retry_max_ms.min(3_600_000);
        let ceiling = self
            .options
            .retry_base_ms
            .saturating_mul(1u64 << attempts.min(40))
            .min(cap);
        self.random() % (ceiling + 1)
    }

    /// Delivers to every endpoint until `closed` is raised; one task per
    /// endpoint, at most `events.webhook_concurrency` POSTs in flight each.
    pub async fn run(self: Arc<Self>, mut closed: tokio::sync::watch::Receiver<bool>) {
        if self.endpoints.is_empty() {
            let _ = closed.wait_for(|&c| c).await;
            return;
        }
        let tasks: Vec<_> = (0..self.endpoints.len())
            .map(|i| tokio::spawn(self.clone().deliver(i, closed.clone())))
            .collect();
        for t in tasks {
            // An endpoint's sender that panicked (a bug) takes the run
            // down with it, so that its supervisor sees it.
            if let Err(e) = t.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }

    async fn deliver(
        self: Arc<Self>,
        index: usize,
        mut closed: tokio::sync::watch::Receiver<bool>,
    ) {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut in_flight = 0usize;
        loop {
            crate::fault::inject("webhook-sender");
            let e = &self.endpoints[index];
            let now = self.clock.now_ms();
            let mut next_due: Option<u64> = None;
            if !e.disabled.load(Relaxed) {
                let mut due = Vec::new();
                {
                    let mut pending = e.pending.lock();
                    for (id, p) in pending.iter_mut() {
                        if p.in_flight {
                            continue;
                        }
                        if p.next_at_ms <= now {
                            if in_flight + due.len() < self.options.concurrency {
                                p.in_flight = true;
                                due.push((*id, p.kind, p.at_ms, p.data.clone()));
                            }
                        } else {
                            next_due = Some(next_due.map_or(p.next_at_ms, |n| n.min(p.next_at_ms)));
                        }
                    }
                }
                for (id, kind, at_ms, data) in due {
                    in_flight += 1;
                    let (outbox, done) = (self.clone(), done_tx.clone());
                    tokio::spawn(async move {
                        outbox.attempt(index, id, kind, at_ms, &data).await;
                        let _ = done.send(());
                    });
                }
            }
            let sleep = next_due.map_or(Duration::from_secs(3600), |at| {
                Duration::from_millis(at.saturating_sub(now))
            });
            tokio::select! {
                () = e.wake.notified() => {}
                Some(()) = done_rx.recv() => in_flight -= 1,
                () = tokio::time::sleep(sleep) => {}
                _ = closed.wait_for(|c| *c) => return,
            }
        }
    }

    /// One POST of event `id` to endpoint `index`, and what follows from
    /// its answer.
    async fn attempt(&self, index: usize, id: u64, kind: Kind, at_ms: u64, data: &[u8]) {
        let e = &self.endpoints[index];
        let body = format!(
            r#"{{"type":"{}","timestamp":"{}","data":{}}}"#,
            kind.as_str(),
            rfc3339(at_ms),
            String::from_utf8_lossy(data)
        );
        let now = self.clock.now_ms();
        let msg_id = id.to_string();
        let timestamp = now / 1000;
        let signature = e.endpoint.signature(&msg_id, timestamp, body.as_bytes());
        let status = tokio::time::timeout(
            Duration::from_millis(self.options.timeout_ms),
            post(&e.endpoint, &msg_id, timestamp, &signature, body),
        )
        .await
        .unwrap_or(None);
        let mut pending = e.pending.lock();
        match status {
            Some(200..=299) => {
                pending.remove(&id);
                drop(pending);
                e.counts.delivered.fetch_add(1, Relaxed);
                self.done(index, id, false);
            }
            Some(410) => {
                if let Some(p) = pending.get_mut(&id) {
                    p.in_flight = false;
                }
                drop(pending);
                e.counts.failed.fetch_add(1, Relaxed);
                if let Some(tx) = self.settled.get() {
                    let _ = tx.send(Settled::Gone(index));
                }
                if !e.disabled.swap(true, Relaxed) {
                    crate::log_line!(
                        "stampede: webhook {} answered 410 Gone: disabled until restart",
                        e.endpoint.url
                    );
                }
            }
            _ => {
                e.counts.failed.fetch_add(1, Relaxed);
                let give_up = now.saturating_sub(at_ms) >= self.options.retry_max_ms;
                if give_up {
                    pending.remove(&id);
                    drop(pending);
                    e.counts.gave_up.fetch_add(1, Relaxed);
                    self.done(index, id, true);
                } else if let Some(p) = pending.get_mut(&id) {
                    p.attempts += 1;
                    p.next_at_ms = now + self.backoff_ms(p.attempts);
                    p.in_flight = false;
                }
            }
        }
    }
}

/// POSTs `body` to `endpoint` on a connection of its own; the status, or
/// `None` if no answer came.
async fn post(
    endpoint: &Endpoint,
    msg_id: &str,
    timestamp: u64,
    signature: &str,
    body: String,
) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(&endpoint.path)
        .header(hyper::header::HOST, &endpoint.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    Some(resp.status().as_u16())
}

/// `2026-11-30T03:25:00.123Z` from milliseconds since the epoch.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests;
