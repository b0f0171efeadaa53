//! The reservation engine: SKUs, soft holds, expiry. Synchronous, no I/O,
//! never `.await`s.
//!
//! # Layout
//!
//! SKUs are spread over a power-of-two number of [`Shard`]s by a fixed hash
//! of the SKU name; each shard is plain data behind its own mutex
//! (`src/sync.rs`). No reservation path takes a global lock.
//!
//! A hold lives in its *home* shard: the lowest-numbered shard among its
//! items' shards. Its [`HoldId`] names that shard and the slot in it, so
//! confirm, release, extend and get go straight to one lock.
//!
//! # Lock order (the one rule that rules out deadlock)
//!
//! Shard locks are only ever taken in ascending shard index. Reserve sorts
//! the shards of its items and locks them in order. An operation on a hold
//! locks the home shard first; every other shard of the hold has a higher
//! index (home is the lowest), so locking them next keeps the order. The
//! sweeper does the same from each home shard.
//!
//! All locks a change needs are held for the whole change, so no reader
//! ever sees half a hold: a reader of any of a hold's SKUs needs one of the
//! locks the writer holds.
//!
//! # Invariants (checked by [`Engine::check_invariants`])
//!
//! - `held + sold <= stock` for every SKU, at every instant;
//! - a SKU's `held` is the sum of its units over active holds;
//! - a SKU with a customer limit has per-customer tallies that sum to
//!   `held + sold - untallied_sold` (sales made before the limit was set
//!   whose holds were already purged); a SKU without a limit has none;
//! - every active hold is in its home's expiry index exactly once.

mod change;
pub mod config;
mod error;
mod events;
mod expiry;
mod holds;
mod hot;
mod id;
mod invariants;
mod lock;
pub mod payments;
mod replay;
mod reserve;
mod shard;
mod snapshot;
mod stock;
mod sweep;
mod waitlist;

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use compact_str::CompactString;

use smallvec::SmallVec;

use crate::clock::Clock;
use crate::sync::{Mutex, MutexGuard, RwLock};
use crate::wal::Journal;

pub use change::Change;
pub use error::Error;
pub use events::{Event, EventSink};
pub use id::{is_valid_ident, HoldId, HoldIdText, ParseHoldIdError, IDENT_LEN_MAX};
use lock::Locked;
use replay::check_replayed_items;
use reserve::Line;
pub use reserve::{check_order_ref, check_reservation, check_sku, check_stock};
pub use shard::STOCK_MAX;
use shard::{HeldItem, Hold, Shard, SkuRef, SkuState};
use waitlist::Waiting;
pub use waitlist::{OnDone, Placed, WaitTicket};

/// Most shards an engine may have (`engine.shards`).
pub const SHARDS_MAX: usize = 4096;

/// How many expired holds the sweeper ends, or ended holds it purges, per
/// shard lock acquisition, so a burst never holds one shard for long.
const SWEEP_BATCH: usize = 256;

/// The life of a hold. `Held` and `PendingPayment` are active; the other
/// three are final. Inside the engine a pending payment is a `Held` hold
/// with its [`Payment`] recorded: every rule of an active hold applies to
/// it (confirm, release, expiry), and only the view ([`Reservation`]) and
/// extend tell it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Held,
    PendingPayment,
    Confirmed,
    Released,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::PendingPayment => "pending_payment",
            Status::Confirmed => "confirmed",
            Status::Released => "released",
            Status::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a reservation treats items that are short.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fill {
    /// Every item is held in full, or nothing is.
    #[default]
    All,
    /// Each item holds as much of its `qty` as it can; only when nothing at
    /// all can be held is the answer an error.
    Partial,
}

#[derive(Debug, Clone, Copy)]
pub struct ItemRequest<'a> {
    pub sku: &'a str,
    pub qty: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    pub customer_id: &'a str,
    pub items: &'a [ItemRequest<'a>],
    /// `None` for `holds.default_ttl_ms`; capped at `holds.max_ttl_ms`.
    pub ttl_ms: Option<u64>,
    pub fill: Fill,
}

/// One SKU's figures, as the contract shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuView {
    pub sku: CompactString,
    pub stock: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
    pub customer_limit: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemView {
    pub sku: CompactString,
    pub qty: u32,
}

/// A reservation, as the contract shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: HoldId,
    pub status: Status,
    pub customer_id: CompactString,
    pub items: SmallVec<[ItemView; 1]>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub order_ref: Option<CompactString>,
    /// The payment recorded by `/payment`, if any.
    pub payment: Option<Box<Payment>>,
}

/// A hold's payment at a gateway (contract v1.2, `payment`): recorded by
/// `/payment`, kept when the hold ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub gateway: CompactString,
    pub payment_ref: CompactString,
    pub since_ms: u64,
}

/// What a change answers, with the LSN to wait on before acknowledging
/// it: its own record's, which covers everything it read (that was
/// appended under the locks it held); for an answer that changed nothing
/// (an idempotent repeat), the last LSN appended while it held the locks
/// of what it read. 0 without a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged<T> {
    pub value: T,
    pub lsn: u64,
}

/// One shard's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardStats {
    pub skus: usize,
    pub active_holds: usize,
    /// Active plus ended holds not yet purged.
    pub retained_holds: usize,
    /// Lock acquisitions since start (operations on this shard).
    pub operations: u64,
    /// Time spent waiting for this shard's lock while another held it.
    pub lock_wait: std::time::Duration,
}

/// What one [`Engine::sweep`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepStats {
    pub expired: usize,
    pub purged: usize,
}

/// Engine settings. `crate::config` builds these from the config file and
/// has already validated them; [`Engine::new`] asserts the same bounds.
#[derive(Debug, Clone)]
pub struct Options {
    /// Number of lock shards: a power of two in `1..=SHARDS_MAX`.
    pub shards: usize,
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    /// How long an ended hold stays readable (and confirm stays
    /// idempotent) before its slot is purged.
    pub retention_ms: u64,
    /// Most holds (active + retained) in the whole engine; each shard may
    /// hold its even share.
    pub retained_max: usize,
    /// Most SKUs in the whole engine; each shard may hold its even share.
    pub skus_max: usize,
    pub max_items: usize,
    pub max_qty_per_item: u32,
    /// Unique per start of a data directory; part of every hold id.
    pub epoch: u32,
    /// Most requests waiting in one SKU's waitlist.
    pub waitlist_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: default_shards(),
            default_ttl_ms: 600_000,
            max_ttl_ms: 3_600_000,
            retention_ms: 3_600_000,
            retained_max: 10_000_000,
            skus_max: 10_000_000,
            max_items: 64,
            max_qty_per_item: 1000,
            epoch: 0,
            waitlist_max: 10_000,
        }
    }
}

/// The engine settings a config reload may change (SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunables {
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub max_items: usize,
    pub max_qty_per_item: u32,
    pub waitlist_max: usize,
}

/// [`Tunables`] as atomics: a reserve reads them with plain loads (an
/// `ArcSwap` snapshot cost ~60 instructions a pair, +2.3%, callgrind).
/// Each check reads each value once, old or new: the values are
/// independent bounds (a reserve uses `default_ttl_ms` or caps at
/// `max_ttl_ms`, never both), so a call racing a reload sees, per bound,
/// the settings before it or after it.
#[derive(Debug)]
pub(crate) struct TunableCells {
    default_ttl_ms: std::sync::atomic::AtomicU64,
    max_ttl_ms: std::sync::atomic::AtomicU64,
    max_items: std::sync::atomic::AtomicUsize,
    max_qty_per_item: std::sync::atomic::AtomicU32,
    waitlist_max: std::sync::atomic::AtomicUsize,
}

impl TunableCells {
    pub(crate) fn new(t: Tunables) -> TunableCells {
        TunableCells {
            default_ttl_ms: t.default_ttl_ms.into(),
            max_ttl_ms: t.max_ttl_ms.into(),
            max_items: t.max_items.into(),
            max_qty_per_item: t.max_qty_per_item.into(),
            waitlist_max: t.waitlist_max.into(),
        }
    }

    pub(crate) fn store(&self, t: Tunables) {
        use std::sync::atomic::Ordering::Relaxed;
        self.default_ttl_ms.store(t.default_ttl_ms, Relaxed);
        self.max_ttl_ms.store(t.max_ttl_ms, Relaxed);
        self.max_items.store(t.max_items, Relaxed);
        self.max_qty_per_item.store(t.max_qty_per_item, Relaxed);
        self.waitlist_max.store(t.waitlist_max, Relaxed);
    }

    #[inline]
    pub(crate) fn load(&self) -> Tunables {
        use std::sync::atomic::Ordering::Relaxed;
        Tunables {
            default_ttl_ms: self.default_ttl_ms.load(Relaxed),
            max_ttl_ms: self.max_ttl_ms.load(Relaxed),
            max_items: self.max_items.load(Relaxed),
            max_qty_per_item: self.max_qty_per_item.load(Relaxed),
            waitlist_max: self.waitlist_max.load(Relaxed),
        }
    }
}

impl From<&Options> for Tunables {
    fn from(o: &Options) -> Tunables {
        Tunables {
            default_ttl_ms: o.default_ttl_ms,
            max_ttl_ms: o.max_ttl_ms,
            max_items: o.max_items,
            max_qty_per_item: o.max_qty_per_item,
            waitlist_max: o.waitlist_max,
        }
    }
}

/// Four shards per core, rounded up to a power of two: enough that two
/// cores rarely want the same shard for unrelated SKUs.
pub fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 4).next_power_of_two().min(SHARDS_MAX)
}

/// A shard on its own cache lines, so two cores working on neighbouring
/// shards do not bounce one line between them. Its counters are read
/// without the lock (relaxed atomics, gathered when scraped).
#[repr(align(128))]
struct Padded(Mutex<Shard>, ShardCounters);

/// What a shard counts for the operators, readable without its lock.
#[derive(Default)]
struct ShardCounters {
    /// Lock acquisitions: one per operation (a multi-shard operation
    /// counts once in each shard it locks).
    operations: std::sync::atomic::AtomicU64,
    /// Nanoseconds spent waiting for the lock when it was held.
    lock_wait_ns: std::sync::atomic::AtomicU64,
}

pub struct Engine {
    shards: Box<[Padded]>,
    shard_mask: usize,
    holds_per_shard_max: usize,
    skus_per_shard_max: usize,
    options: Options,
    /// The part of `options` a config reload may change; see
    /// [`Engine::retune`].
    tunables: TunableCells,
    clock: Arc<dyn Clock>,
    /// Where every change is recorded before it is made; `None` while the
    /// log is replayed into the engine, and for an engine without a log.
    journal: Option<Arc<dyn Journal>>,
    /// Who is told of stock running out and coming back and of holds
    /// confirmed or expired (the event feed); set once, after replay.
    events: OnceLock<Arc<dyn EventSink>>,
    /// Per shard, the SKUs that are sold out (`sold == stock`: nothing
    /// available, nothing held), readable without the shard's lock. Changed
    /// only under the shard's lock, in the same critical section that
    /// changes `stock` or `sold`, so a reader that sees a SKU here saw a
    /// state that was current: never a false "sold out".
    sold_out: Box<[RwLock<hashbrown::HashSet<CompactString>>]>,
    /// Requests in all waitlists, and the next waiter's id.
    waiting: std::sync::atomic::AtomicUsize,
    next_waiter: std::sync::atomic::AtomicU64,
    /// Settled gateway events and payment references (`payments.rs`);
    /// taken before any shard lock.
    payments: Mutex<payments::Book>,
    /// While the log is replayed: the LSN of the record being applied,
    /// which the events it tells again carry (their ids are made from it).
    replay_lsn: std::sync::atomic::AtomicU64,
    /// Active holds with a payment recorded (`/payment`): counted when one
    /// is recorded and when such a hold ends, so the status page reads it
    /// without a scan.
    pending_payments: std::sync::atomic::AtomicUsize,
}

/// The SKU hash: fixed, so a SKU's shard (and so a hold's home) is the same
/// in every process over the same data, which log replay relies on.
fn sku_hash(name: &str) -> u64 {
    const SEED: u64 = 0x5354_414d_5045_4445; // "STAMPEDE"
    foldhash::fast::FixedState::with_seed(SEED).hash_one(name)
}

/// The customer hash: random per process (customer ids come from the
/// public), shared by every shard so a customer is hashed once per call.
pub(crate) fn customer_hash(customer: &str) -> u64 {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one(customer)
}

impl Engine {
    /// Builds an empty engine. Panics if `options` break the bounds that
    /// `crate::config` validates (a bug in the caller).
    pub fn new(options: Options, clock: Arc<dyn Clock>) -> Engine {
        assert!(
            options.shards.is_power_of_two() && options.shards <= SHARDS_MAX,
            "engine.shards must be a power of two in 1..={SHARDS_MAX}"
        );
        assert!(options.default_ttl_ms >= 1 && options.default_ttl_ms <= options.max_ttl_ms);
        assert!(options.max_items >= 1 && options.max_qty_per_item >= 1);
        assert!(options.retained_max >= options.shards && options.skus_max >= options.shards);
        let shards = (0..options.shards)
            .map(|i| Padded(Mutex::new(Shard::new(i as u16)), ShardCounters::default()))
            .collect();
        Engine {
            shards,
            shard_mask: options.shards - 1,
            holds_per_shard_max: (options.retained_max / options.shards).min(u32::MAX as usize),
            skus_per_shard_max: (options.skus_max / options.shards).min(u32::MAX as usize),
            sold_out: (0..options.shards)
                .map(|_| RwLock::new(hashbrown::HashSet::new()))
                .collect(),
            tunables: TunableCells::new(Tunables::from(&options)),
            options,
            clock,
            journal: None,
            events: OnceLock::new(),
            waiting: Default::default(),
            next_waiter: Default::default(),
            payments: Mutex::new(payments::Book::default()),
            replay_lsn: Default::default(),
            pending_payments: Default::default(),
        }
    }

    /// Takes new TTL bounds, item limits and waitlist length (a config
    /// reload). Calls already running keep the values they read; holds
    /// already placed keep their expiry. Panics on bounds `crate::config`
    /// validates (a bug in the caller).
    pub fn retune(&self, tunables: Tunables) {
        assert!(tunables.default_ttl_ms >= 1 && tunables.default_ttl_ms <= tunables.max_ttl_ms);
        assert!(tunables.max_items >= 1 && tunables.max_qty_per_item >= 1);
        self.tunables.store(tunables);
    }

    /// The settings a reload may change, as they are now.
    pub fn tunables(&self) -> Tunables {
        self.tunables.load()
    }

    /// From now on every change is appended to `journal` before it is made
    /// (attach after replaying the log).
    pub fn attach_journal(&mut self, journal: Arc<dyn Journal>) {
        self.journal = Some(journal);
    }

    /// From now on `sink` is told what happens (attach after replay; once).
    pub fn attach_events(&self, sink: Arc<dyn EventSink>) {
        let _ = self.events.set(sink);
    }

    /// The event sink, if one is attached.
    #[inline]
    fn events(&self) -> Option<&dyn EventSink> {
        self.events.get().map(|s| &**s)
    }

    /// Appends the record `make` builds, if there is a journal. Called with
    /// the change's locks held and before the change is made, so a log that
    /// cannot be written leaves the state untouched.
    /// Returns the record's LSN (0 without a journal).
    fn log<'r>(&self, make: impl FnOnce() -> Change<'r>) -> Result<u64, Error> {
        match &self.journal {
            // Replay (the record's own LSN), or an engine without a log (0).
            None => Ok(self.replay_lsn()),
            Some(journal) => journal
                .append(&make())
                .map_err(|e| Error::StorageUnavailable {
                    reason: e.to_string(),
                }),
        }
    }

    /// Replay: the LSN of the record about to be applied, for the events
    /// it tells again (the hub's ids are made from it).
    pub fn set_replay_lsn(&self, lsn: u64) {
        self.replay_lsn
            .store(lsn, std::sync::atomic::Ordering::Relaxed);
    }

    fn replay_lsn(&self) -> u64 {
        self.replay_lsn.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The LSN an answer that changed nothing waits on: call it with the
    /// locks of what the answer read held.
    fn seen_lsn(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.appended_lsn())
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The shard a SKU lives in. High hash bits, so they do not overlap the
    /// low bits the shard's own table uses.
    fn shard_of(&self, hash: u64) -> u16 {
        ((hash >> 32) as usize & self.shard_mask) as u16
    }

    /// The shard a SKU lives (or would live) in. For operators and tests:
    /// which SKUs share a lock.
    pub fn shard_of_sku(&self, sku: &str) -> usize {
        usize::from(self.shard_of(sku_hash(sku)))
    }
}

/// A small vector of one element, without `FromIterator`'s generic path.
fn one<A: smallvec::Array>(item: A::Item) -> SmallVec<A> {
    let mut v = SmallVec::new();
    v.push(item);
    v
}

const IDENT_RULE: &str = "must be 1 to 128 bytes of [A-Za-z0-9._:-]";

fn check_ident(field: &str, value: &str) -> Result<(), Error> {
    if is_valid_ident(value) {
        Ok(())
    } else {
        Err(Error::invalid(field, IDENT_RULE))
    }
}
