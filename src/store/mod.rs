//! The store boundary: every SKU, reservation and batch operation the API
//! makes goes through one [`Store`], which answers only once the change is
//! durable as configured. [`EmbeddedStore`] is the in-process engine plus
//! the local log; a store on Redis implements the same trait.
//!
//! # What sits above the boundary, and what below
//!
//! Above (in the API, shared by every store, per node): admission (the
//! concurrency limit, queue and deadline protect this node's CPU and
//! connections), rate limits (per node, like admission), request parsing,
//! the answer-size bound of a keyed request, problem documents.
//!
//! Below (each store's own, because they must see the state exactly):
//! the sold-out fast path ([`Store::is_sold_out`]: only the store knows
//! when a SKU sold out; a store that cannot tell cheaply answers false
//! and the normal path decides), waitlists (`wait_ms`: the line must be
//! served in the same critical section that gives stock back, so it lives
//! with the stock), and idempotency keys (a key's answer must be as
//! durable as the change and, across nodes, shared: the embedded store
//! logs it in the same log, in the same group as the change).
//!
//! # Durability scopes
//!
//! A change made with [`Scope::Now`] returns once it is durable. One made
//! with [`Scope::Deferred`] returns at once and notes what it must wait
//! for in the [`Pending`]; the caller makes all of them durable with one
//! [`Store::flush`] (a batch: one log commit for all its ops; a keyed
//! request: its change and its stored answer in one wait).

pub mod config;
pub mod embedded;
pub mod redis;
#[doc(hidden)] // public for the tests that drive a script by hand
pub mod slots;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use embedded::EmbeddedStore;

use crate::engine::payments::{Settle, Settled};
use crate::engine::{self, HoldId, Reservation, ReserveRequest, SkuView};
use crate::idempotency::{Begin, Stored};

/// A store started with the background work that keeps it (sweeps,
/// checkpoints, event reads, deliveries), as [`start`] returns it.
pub trait Node: Send {
    /// What the API serves from.
    fn store(&self) -> Arc<dyn Store>;

    /// Stops the background work and makes what is kept durable.
    fn stop(self: Box<Self>) -> NodeStop;
}

/// Spawns `work`, background work of a node that must not end while the
/// node runs: if it panics, or returns while `expected_end` says no, the
/// process stops naming `what` ([`crate::output::fatal`]). Aborting the
/// handle returned aborts the work.
pub fn supervised(
    what: &'static str,
    expected_end: Arc<dyn Fn() -> bool + Send + Sync>,
    work: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    /// Aborts the work when the watcher is aborted (or dropped).
    struct AbortOnDrop(tokio::task::AbortHandle);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let task = tokio::spawn(work);
    let guard = AbortOnDrop(task.abort_handle());
    tokio::spawn(async move {
        let _guard = guard;
        match task.await {
            Err(e) if e.is_cancelled() => {}
            Err(e) if e.is_panic() => {
                crate::output::fatal(what, &crate::output::panic_text(&*e.into_panic()))
            }
            _ if expected_end() => {}
            _ => crate::output::fatal(what, "it ended"),
        }
    })
}

/// What [`Node::stop`] returns.
pub type NodeStop = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Starts the store `config.store.kind` names: the embedded store
/// recovers its log from `data_dir`; the redis store connects and reads
/// what it needs from Redis. `data_dir` stays locked until the node
/// stops.
pub async fn start(
    config: &crate::config::Config,
    data_dir: crate::datadir::DataDir,
    mode: crate::wal::RecoveryMode,
) -> anyhow::Result<Box<dyn Node>> {
    Ok(match config.store.kind {
        crate::config::StoreKind::Embedded => {
            Box::new(embedded::start(config, data_dir, mode).await?)
        }
        crate::config::StoreKind::Redis => Box::new(redis::start(config, data_dir).await?),
    })
}

/// What a store operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Why a store operation gave no answer of its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused by the rules (sold out, unknown SKU, hold not active...):
    /// nothing changed.
    #[error(transparent)]
    Refused(#[from] engine::Error),
    /// A waitlist was dropped without an answer (the store is stopping);
    /// nothing was held.
    #[error("the waitlist ended without an answer (the server is stopping); nothing was held")]
    WaitlistEnded,
    /// The change was made but could not be made durable: it is not
    /// acknowledged (and may or may not survive a crash).
    #[error("the change may not be durable: {0}")]
    NotDurable(String),
    /// A keyed answer could not be kept (over `idempotency.answer_bytes_max`);
    /// the change stands, unacknowledged.
    #[error("{0}; the request may have changed something: read before retrying")]
    AnswerNotKept(String),
    /// Refused by a drop's rules (not admitted, say): nothing changed.
    #[error(transparent)]
    Drop(#[from] crate::drops::Error),
    /// The redis store: a SKU is gated by this drop, which the node could
    /// not find in its book even after reading the drops' log (nothing
    /// was held).
    #[error("a SKU is gated by drop {0}, which this node does not know yet; nothing was held: try again")]
    GatedBy(String),
}

/// When a change counts as done: see the module docs.
#[derive(Clone, Copy)]
pub enum Scope<'a> {
    Now,
    Deferred(&'a Pending),
}

/// What deferred changes wait for, made durable by [`Store::flush`].
#[derive(Debug, Default)]
pub struct Pending {
    /// The embedded store: the highest LSN a deferred change needs.
    lsn: AtomicU64,
    /// The redis store on a cluster: per hash slot, the due time a batch's
    /// run lowered `P:due` to before sending its reservations (see
    /// [`Store::before_run`]).
    due_lowered: parking_lot::Mutex<Vec<(u16, u64)>>,
    /// A keyed request's seed (`Begin::Seeded`), and how many ids each
    /// op's content has drawn from it.
    seed: Option<Arc<str>>,
    /// The request takes over from a first one under its key
    /// (`Begin::Resumed`).
    resumed: bool,
    drawn: parking_lot::Mutex<Vec<(u64, u32)>>,
}

impl Pending {
    pub fn new() -> Pending {
        Pending::default()
    }

    /// For a keyed request whose ids come from `seed`
    /// ([`crate::idempotency::Begin::Seeded`]).
    pub fn seeded(seed: Arc<str>) -> Pending {
        Pending {
            seed: Some(seed),
            ..Pending::default()
        }
    }

    /// A keyed request that takes over from a first one under its key,
    /// which may have made its changes ([`crate::idempotency::Begin::Resumed`]).
    pub fn resumed(seed: Arc<str>) -> Pending {
        Pending {
            seed: Some(seed),
            resumed: true,
            ..Pending::default()
        }
    }

    /// Whether the request takes over from a first one (see `resumed`).
    pub(crate) fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// The seed, for a keyed request that has one.
    pub(crate) fn seed(&self) -> Option<&str> {
        self.seed.as_deref()
    }

    /// A 62-bit number drawn from the seed for an op whose content
    /// (kind and every field that makes it what it is) is `content`: the
    /// same seed and content give the same numbers in the same order, so
    /// a request run again under its key draws the ids it drew the first
    /// time, whatever order its ops run in (two equal ops of one batch
    /// draw the same two, in either order: they are interchangeable).
    /// `None` without a seed.
    pub(crate) fn draw(&self, content: &str) -> Option<u64> {
        use sha2::{Digest, Sha256};
        let seed = self.seed.as_deref()?;
        let which = {
            let digest = Sha256::new()
                .chain_update(seed.as_bytes())
                .chain_update([0])
                .chain_update(content.as_bytes())
                .finalize();
            u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
        };
        let nth = {
            let mut drawn = self.drawn.lock();
            match drawn.iter_mut().find(|(c, _)| *c == which) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    drawn.push((which, 0));
                    0
                }
            }
        };
        let digest = Sha256::new()
            .chain_update(which.to_le_bytes())
            .chain_update(nth.to_le_bytes())
            .chain_update(seed.as_bytes())
            .finalize();
        Some(u64::from_le_bytes(digest[..8].try_into().unwrap_or_default()) >> 2)
    }

    pub(crate) fn note_lsn(&self, lsn: u64) {
        self.lsn.fetch_max(lsn, Ordering::Relaxed);
    }

    pub(crate) fn lsn(&self) -> u64 {
        self.lsn.load(Ordering::Relaxed)
    }

    pub(crate) fn note_due(&self, slot: u16, at_ms: u64) {
        let mut lowered = self.due_lowered.lock();
        match lowered.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, at)) => *at = (*at).min(at_ms),
            None => lowered.push((slot, at_ms)),
        }
    }

    /// Whether `slot`'s due time was lowered to `at_ms` or earlier.
    pub(crate) fn due_at_or_before(&self, slot: u16, at_ms: u64) -> bool {
        self.due_lowered
            .lock()
            .iter()
            .any(|&(s, at)| s == slot && at <= at_ms)
    }
}

/// Drops (contract, "Drops: a fair opening"): each store keeps its book,
/// its log of changes and its gate (the embedded store in its log, the
/// redis store in the drops' log in Redis). Each answers once what it
/// shows is durable, or defers that into `scope`.
pub trait Drops: Send + Sync {
    /// Creates (`true`) or changes a drop.
    fn drop_put<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
        spec: crate::drops::Spec,
    ) -> StoreFuture<'a, (bool, crate::drops::DropView)>;

    fn drop_view<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
    ) -> StoreFuture<'a, crate::drops::DropView>;

    /// Joins a drop's line (`true`: new).
    fn drop_join<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
        customer: &'a str,
    ) -> StoreFuture<'a, (bool, crate::drops::line::EntryView)>;

    fn drop_entry<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
        customer: &'a str,
    ) -> StoreFuture<'a, crate::drops::line::EntryView>;

    /// Whether a drop gates any of `skus`, known without a round trip (a
    /// gated SKU skips the sold-out fast path: the gate answers first).
    fn gates_any(&self, skus: &mut dyn Iterator<Item = &str>) -> bool;
}

/// What `/payment` asks, with the bounds of `[payments]`.
#[derive(Debug, Clone, Copy)]
pub struct PaymentRequest<'a> {
    pub gateway: &'a str,
    pub payment_ref: &'a str,
    pub pending_ttl_ms: u64,
    pub pending_max_ms: u64,
}

/// Payments (contract v1.2, "Payments"): a hold's pending payment, and
/// the gateway events settled against holds, each applied once, the
/// event ids shared by every node of the store. The rules (expiry, the
/// outcome table) are `engine::payments`'; each store keeps them where its
/// state lives.
pub trait Payments: Send + Sync {
    /// `POST /v1/reservations/{id}/payment`.
    fn payment<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        req: PaymentRequest<'a>,
    ) -> StoreFuture<'a, Reservation>;

    /// Settles a verified gateway event once; answers once the outcome is
    /// durable (a repeat: once the first outcome is).
    fn settle<'a>(&'a self, event: Settle<'a>) -> StoreFuture<'a, Settled>;

    /// Active holds with a payment pending (the status page), if the store
    /// can count them cheaply.
    fn pending_payments(&self) -> Option<usize>;
}

/// What operators and the event feed see of a store.
pub trait Health: Send + Sync {
    /// `Err(why)`: the store takes no changes now (`/readyz` answers 503).
    fn ready(&self) -> Result<(), String>;

    /// The store's part of `/v1/stats`.
    fn stats(&self) -> Stats;

    /// The store's series for `/metrics` (Prometheus text).
    fn render_metrics(&self, out: &mut String);

    /// The event feed the store fills (`GET /v1/events`), once it runs.
    fn events(&self) -> Option<&Arc<crate::events::Hub>>;
}

/// A store's part of `/v1/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Top-level fields, an object (`store`, `shards`, `log`,
    /// `idempotency_keys`, `hot_skus`, `recent_operations`, `drops`,
    /// `webhooks`).
    pub fields: serde_json::Value,
    /// What an operator should look at now, one sentence each.
    pub warnings: Vec<String>,
    /// Requests waiting in SKU waitlists, where the store counts them.
    pub waitlisted: Option<usize>,
    /// The engine's shard count, where there is one.
    pub shards: Option<usize>,
}

/// The operations the API needs of wherever the state lives.
pub trait Store: Drops + Health + Payments + Send + Sync {
    /// Sets a SKU's stock (creating it: `true`).
    fn set_stock<'a>(
        &'a self,
        scope: Scope<'a>,
        sku: &'a str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> StoreFuture<'a, (bool, SkuView)>;

    fn adjust_stock<'a>(
        &'a self,
        scope: Scope<'a>,
        sku: &'a str,
        delta: i64,
    ) -> StoreFuture<'a, SkuView>;

    fn sku<'a>(&'a self, sku: &'a str) -> StoreFuture<'a, SkuView>;

    /// Places a hold; with `wait_ms > 0`, a one-SKU request short only
    /// because other holds have the stock waits up to that long in the
    /// SKU's line, calling `waiting` once when it starts to wait (the API
    /// gives its admission place back then).
    fn reserve<'a>(
        &'a self,
        scope: Scope<'a>,
        req: &'a ReserveRequest<'a>,
        wait_ms: u64,
        waiting: &'a (dyn Fn() + Sync),
    ) -> StoreFuture<'a, Reservation>;

    fn get(&self, id: HoldId) -> StoreFuture<'_, Reservation>;

    fn confirm<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        order_ref: Option<&'a str>,
    ) -> StoreFuture<'a, Reservation>;

    fn release<'a>(&'a self, scope: Scope<'a>, id: HoldId) -> StoreFuture<'a, Reservation>;

    fn extend<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        ttl_ms: u64,
    ) -> StoreFuture<'a, Reservation>;

    /// Makes every change deferred into `pending` durable.
    fn flush<'a>(&'a self, pending: &'a Pending) -> StoreFuture<'a, ()>;

    /// Whether `sku` is sold out, known without a lock or a round trip;
    /// false when the store cannot tell cheaply.
    fn is_sold_out(&self, sku: &str) -> bool;

    /// The store's clock (ms since the epoch).
    fn now_ms(&self) -> u64;

    /// Idempotency keys: what a request with `key` should do. A replay is
    /// answered once the first answer is durable.
    fn key_begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u128,
        now_ms: u64,
    ) -> StoreFuture<'a, Begin>;

    /// Keeps the answer under `key` (its change's durability comes with
    /// it, in `scope`). Over `idempotency.answer_bytes_max`: not kept.
    fn key_complete<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        fingerprint: u128,
        stored: Stored,
    ) -> StoreFuture<'a, ()>;

    /// The first request with `key` ended without an answer worth keeping.
    fn key_abandon(&self, key: &str);

    /// Largest answer a key keeps.
    fn answer_bytes_max(&self) -> usize;

    /// New TTL bounds, item limits and waitlist length (a config reload).
    fn retune(&self, tunables: engine::Tunables);

    /// Whether deferred changes (a batch's ops) may be started before the
    /// one before them has answered: a store whose changes in one
    /// `Pending` are applied in the order they were started (the redis
    /// store: one connection per `Pending`, a pipeline) says yes; the
    /// embedded store makes each change when called and gains nothing.
    fn pipelines(&self) -> bool {
        false
    }

    /// Whether a reservation of these SKUs may join a pipelined run (see
    /// [`Store::pipelines`]): some take several awaited steps and must run
    /// on their own.
    fn pipelines_reserve(&self, skus: &[&str]) -> bool {
        let _ = skus;
        self.pipelines()
    }

    /// Whether an operation on hold `id` may join a pipelined run.
    fn pipelines_act(&self, id: &str) -> bool {
        let _ = id;
        self.pipelines()
    }

    /// Called once before a pipelined run is sent, with each reservation's
    /// SKUs and `ttl_ms`: what must be written before any of the run's
    /// changes is written here (the redis store on a cluster lowers the
    /// slots' due times).
    fn before_run<'a>(
        &'a self,
        pending: &'a Pending,
        reservations: Vec<(Vec<&'a str>, Option<u64>)>,
    ) -> StoreFuture<'a, ()> {
        let _ = (pending, reservations);
        Box::pin(async { Ok(()) })
    }
}
