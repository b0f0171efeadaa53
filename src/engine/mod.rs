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

mod error;
mod expiry;
mod id;
mod shard;
mod snapshot;
mod waitlist;

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};

use compact_str::CompactString;

use smallvec::SmallVec;

use crate::clock::Clock;
use crate::sync::{Mutex, MutexGuard, RwLock};
use crate::wal::{Journal, Record};

pub use error::Error;
pub use id::{is_valid_ident, HoldId, ParseHoldIdError, IDENT_LEN_MAX};
pub use shard::STOCK_MAX;
use shard::{HeldItem, Hold, Shard, SkuRef, SkuState};
use waitlist::Waiting;
pub use waitlist::{OnDone, Placed, WaitTicket};

/// Most shards an engine may have (`engine.shards`).
pub const SHARDS_MAX: usize = 4096;

/// How many expired holds the sweeper ends, or ended holds it purges, per
/// shard lock acquisition, so a burst never holds one shard for long.
const SWEEP_BATCH: usize = 256;

/// The life of a hold. `Held` is the only active state; the other three
/// are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Held,
    Confirmed,
    Released,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
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

/// Four shards per core, rounded up to a power of two: enough that two
/// cores rarely want the same shard for unrelated SKUs.
pub fn default_shards() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * 4).next_power_of_two().min(SHARDS_MAX)
}

/// A shard on its own cache lines, so two cores working on neighbouring
/// shards do not bounce one line between them.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

pub struct Engine {
    shards: Box<[Padded]>,
    shard_mask: usize,
    holds_per_shard_max: usize,
    skus_per_shard_max: usize,
    options: Options,
    clock: Arc<dyn Clock>,
    /// Where every change is recorded before it is made; `None` while the
    /// log is replayed into the engine, and for an engine without a log.
    journal: Option<Arc<dyn Journal>>,
    /// Per shard, the SKUs that are sold out (`sold == stock`: nothing
    /// available, nothing held), readable without the shard's lock. Changed
    /// only under the shard's lock, in the same critical section that
    /// changes `stock` or `sold`, so a reader that sees a SKU here saw a
    /// state that was current: never a false "sold out".
    sold_out: Box<[RwLock<hashbrown::HashSet<CompactString>>]>,
    /// Requests in all waitlists, and the next waiter's id.
    waiting: std::sync::atomic::AtomicUsize,
    next_waiter: std::sync::atomic::AtomicU64,
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

/// The locks one change holds: shard indices ascending, each with its guard.
struct Locked<'a> {
    indices: SmallVec<[u16; 4]>,
    guards: SmallVec<[MutexGuard<'a, Shard>; 4]>,
}

impl<'a> Locked<'a> {
    fn shard(&self, index: u16) -> &Shard {
        let pos = self.position(index);
        &self.guards[pos]
    }

    fn shard_mut(&mut self, index: u16) -> &mut Shard {
        let pos = self.position(index);
        &mut self.guards[pos]
    }

    fn position(&self, index: u16) -> usize {
        self.indices
            .iter()
            .position(|&i| i == index)
            .expect("bug: shard used without its lock")
    }

    fn home(&mut self) -> &mut Shard {
        &mut self.guards[0]
    }

    /// Locks the shards of `slot`'s items that are not locked yet. They are
    /// all above the home shard, so ascending order is kept.
    fn lock_items_of(&mut self, engine: &'a Engine, slot: u32) {
        let items = &self.guards[0].hold(slot).items;
        if items.iter().all(|i| self.indices.contains(&i.sku.shard)) {
            return;
        }
        let mut more: SmallVec<[u16; 4]> = self.guards[0]
            .hold(slot)
            .items
            .iter()
            .map(|i| i.sku.shard)
            .filter(|s| !self.indices.contains(s))
            .collect();
        more.sort_unstable();
        more.dedup();
        debug_assert!(more
            .first()
            .is_none_or(|&s| s > *self.indices.last().expect("home locked")));
        for s in more {
            self.guards.push(engine.shards[usize::from(s)].0.lock());
            self.indices.push(s);
        }
    }

    /// Drops every lock but the home shard's.
    fn keep_home_only(&mut self) {
        self.guards.truncate(1);
        self.indices.truncate(1);
    }
}

/// One item of a reservation, from validation to commit.
struct Line<'r> {
    sku: &'r str,
    hash: u64,
    shard: u16,
    qty: u32,
    /// The SKU's index in its shard, once found under the lock.
    index: u32,
    /// Units to hold (0 for an item a partial fill skips).
    grant: u32,
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
            .map(|i| Padded(Mutex::new(Shard::new(i as u16))))
            .collect();
        Engine {
            shards,
            shard_mask: options.shards - 1,
            holds_per_shard_max: (options.retained_max / options.shards).min(u32::MAX as usize),
            skus_per_shard_max: (options.skus_max / options.shards).min(u32::MAX as usize),
            sold_out: (0..options.shards)
                .map(|_| RwLock::new(hashbrown::HashSet::new()))
                .collect(),
            options,
            clock,
            journal: None,
            waiting: Default::default(),
            next_waiter: Default::default(),
        }
    }

    /// From now on every change is appended to `journal` before it is made
    /// (attach after replaying the log).
    pub fn attach_journal(&mut self, journal: Arc<dyn Journal>) {
        self.journal = Some(journal);
    }

    /// Appends the record `make` builds, if there is a journal. Called with
    /// the change's locks held and before the change is made, so a log that
    /// cannot be written leaves the state untouched.
    /// Returns the record's LSN (0 without a journal).
    fn log<'r>(&self, make: impl FnOnce() -> Record<'r>) -> Result<u64, Error> {
        match &self.journal {
            None => Ok(0),
            Some(journal) => journal
                .append(&make())
                .map_err(|e| Error::StorageUnavailable {
                    reason: e.to_string(),
                }),
        }
    }

    /// The LSN an answer that changed nothing waits on: call it with the
    /// locks of what the answer read held.
    fn seen_lsn(&self) -> u64 {
        self.journal.as_ref().map_or(0, |j| j.appended_lsn())
    }

    /// The one sequence for every change of a SKU's stock or limit: log
    /// the record, make the change (`change` returns the SKU's index, for
    /// a SKU it creates), update the sold-out set, then serve the SKU's
    /// waitlist from what is available now, or close it if it sold out.
    /// Returns the SKU's view as the change left it (before any waiter was
    /// served) and the record's LSN. Changes nothing if the log refuses.
    fn commit_stock_change(
        &self,
        locked: &mut Locked<'_>,
        shard: u16,
        record: Record<'_>,
        now_ms: u64,
        change: impl FnOnce(&mut Shard) -> u32,
    ) -> Result<(SkuView, u64), Error> {
        let lsn = self.log(|| record)?;
        let index = change(locked.shard_mut(shard));
        let state = locked.shard(shard).sku(index);
        self.note_sold_out(shard, &state.name, state);
        let view = sku_view(state);
        self.stock_changed(locked, shard, index, now_ms);
        Ok((view, lsn))
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

    /// Records whether `state` is sold out. Call with the SKU's shard
    /// locked, after changing its `stock` or `sold`.
    fn note_sold_out(&self, shard: u16, sku: &str, state: &SkuState) {
        let sold_out = state.sold >= state.stock;
        let set = &self.sold_out[usize::from(shard)];
        if set.read().contains(sku) != sold_out {
            let mut set = set.write();
            if sold_out {
                set.insert(CompactString::from(sku));
            } else {
                set.remove(sku);
            }
        }
    }

    /// Whether `sku` is sold out (nothing available and nothing held),
    /// without taking its shard's lock: the fast path that answers a
    /// flash sale's losers without queueing them behind the winners.
    pub fn is_sold_out(&self, sku: &str) -> bool {
        let shard = self.shard_of(sku_hash(sku));
        self.sold_out[usize::from(shard)].read().contains(sku)
    }

    fn lock_one(&self, index: u16) -> Locked<'_> {
        Locked {
            indices: one(index),
            guards: one(self.shards[usize::from(index)].0.lock()),
        }
    }

    /// Locks `indices` (sorted, distinct) in ascending order.
    fn lock_sorted(&self, indices: SmallVec<[u16; 4]>) -> Locked<'_> {
        debug_assert!(indices.windows(2).all(|w| w[0] < w[1]));
        let mut guards = SmallVec::new();
        for &i in &indices {
            guards.push(self.shards[usize::from(i)].0.lock());
        }
        Locked { indices, guards }
    }

    // ---- SKUs ----------------------------------------------------------

    /// Sets a SKU's stock, creating the SKU if new (`customer_limit` then
    /// defaults to 0, no limit; an existing SKU keeps its limit unless one
    /// is given). Returns whether it was created.
    pub fn set_stock(
        &self,
        sku: &str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> Result<(bool, SkuView), Error> {
        self.set_stock_logged(sku, stock, customer_limit)
            .map(|l| l.value)
    }

    /// [`Engine::set_stock`] with the LSN to wait on.
    pub fn set_stock_logged(
        &self,
        sku: &str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> Result<Logged<(bool, SkuView)>, Error> {
        self.set_stock_at(sku, stock, customer_limit, self.clock.now_ms())
    }

    /// [`Engine::set_stock`] at a given time (the clock, or a replayed
    /// record's).
    fn set_stock_at(
        &self,
        sku: &str,
        stock: u64,
        customer_limit: Option<u64>,
        now_ms: u64,
    ) -> Result<Logged<(bool, SkuView)>, Error> {
        check_ident("sku", sku)?;
        check_stock_value("stock", stock)?;
        if let Some(limit) = customer_limit {
            check_stock_value("customer_limit", limit)?;
        }
        let hash = sku_hash(sku);
        let home = self.shard_of(hash);
        let mut locked = self.lock_one(home);
        let shard = locked.home();
        match shard.find_sku(hash, sku) {
            Some(index) => {
                let state = shard.sku_mut(index);
                if stock < state.committed() {
                    return Err(Error::StockBelowCommitted {
                        sku: sku.to_owned(),
                        committed: state.committed(),
                    });
                }
                let limit = customer_limit.unwrap_or(state.customer_limit);
                if state.customer_limit == 0 && limit > 0 && state.committed() > 0 {
                    // Units are already held or sold with nobody counting
                    // them per customer: count them from the holds.
                    drop(locked);
                    return self
                        .set_stock_and_introduce_limit(sku, hash, home, stock, limit, now_ms);
                }
                let record = Record::SkuSet {
                    sku,
                    stock,
                    customer_limit: limit,
                    at_ms: now_ms,
                };
                let (view, lsn) =
                    self.commit_stock_change(&mut locked, home, record, now_ms, |shard| {
                        let state = shard.sku_mut(index);
                        let removing_limit = limit == 0 && state.customer_limit > 0;
                        state.stock = stock;
                        state.customer_limit = limit;
                        if removing_limit {
                            state.untallied_sold = 0;
                            shard.remove_tallies(index);
                        }
                        index
                    })?;
                Ok(Logged {
                    value: (false, view),
                    lsn,
                })
            }
            None => {
                if shard.sku_count() >= self.skus_per_shard_max {
                    return Err(Error::invalid(
                        "sku",
                        format!(
                            "the SKU table is full ({} SKUs per shard; raise engine.skus_max)",
                            self.skus_per_shard_max
                        ),
                    ));
                }
                let customer_limit = customer_limit.unwrap_or(0);
                let record = Record::SkuSet {
                    sku,
                    stock,
                    customer_limit,
                    at_ms: now_ms,
                };
                let (view, lsn) =
                    self.commit_stock_change(&mut locked, home, record, now_ms, |shard| {
                        let state = SkuState {
                            name: CompactString::from(sku),
                            stock,
                            held: 0,
                            sold: 0,
                            customer_limit,
                            untallied_sold: 0,
                        };
                        shard.insert_sku(hash, state, sku_hash)
                    })?;
                Ok(Logged {
                    value: (true, view),
                    lsn,
                })
            }
        }
    }

    /// The slow path of [`Engine::set_stock`]: a limit set on a SKU that has
    /// units held or sold. Every hold of the SKU lives in a shard at or below
    /// the SKU's own (a hold's home is its lowest shard), so locking shards
    /// `0..=home` in order sees them all; the retained ones (active, and
    /// confirmed ones not yet purged) are tallied per customer. Units sold
    /// through holds already purged (or due for purge at `now_ms`, so that a
    /// replay of the log, which purges nothing, counts the same) cannot be
    /// attributed and are counted as `untallied_sold`: a limit set late
    /// applies to the sales still retained.
    fn set_stock_and_introduce_limit(
        &self,
        sku: &str,
        hash: u64,
        home: u16,
        stock: u64,
        limit: u64,
        now_ms: u64,
    ) -> Result<Logged<(bool, SkuView)>, Error> {
        let mut locked = self.lock_sorted((0..=home).collect());
        let index = locked
            .shard(home)
            .find_sku(hash, sku)
            .expect("SKUs are never removed");
        let state = locked.shard(home).sku(index);
        if stock < state.committed() {
            return Err(Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: state.committed(),
            });
        }
        // Counted before the record is logged (reading changes nothing);
        // empty if another admin call introduced a limit in between, so
        // that tallies exist already.
        let mut counted: Vec<(CompactString, u64, bool)> = Vec::new();
        let tallied_already = state.customer_limit > 0;
        if !tallied_already {
            let target = SkuRef { shard: home, index };
            for shard in &locked.guards {
                let due: Vec<u32> = shard.due_for_purge(now_ms).collect();
                for (slot, hold) in shard.holds_iter() {
                    let retained = hold.status == Status::Held
                        || (hold.status == Status::Confirmed && !due.contains(&slot));
                    if retained {
                        let confirmed = hold.status == Status::Confirmed;
                        for item in hold.items.iter().filter(|i| i.sku == target) {
                            counted.push((hold.customer.clone(), u64::from(item.qty), confirmed));
                        }
                    }
                }
            }
        }
        let record = Record::SkuSet {
            sku,
            stock,
            customer_limit: limit,
            at_ms: now_ms,
        };
        let (view, lsn) = self.commit_stock_change(&mut locked, home, record, now_ms, |shard| {
            if !tallied_already {
                let retained_sold: u64 = counted.iter().filter(|c| c.2).map(|c| c.1).sum();
                for (customer, units, _) in &counted {
                    shard.add_tally(customer_hash(customer), index, customer, *units);
                }
                let state = shard.sku_mut(index);
                state.untallied_sold = state
                    .sold
                    .checked_sub(retained_sold)
                    .expect("invariant: sold covers the confirmed holds retained");
            }
            let state = shard.sku_mut(index);
            state.stock = stock;
            state.customer_limit = limit;
            index
        })?;
        Ok(Logged {
            value: (false, view),
            lsn,
        })
    }

    /// Adds `delta` (signed) to a SKU's stock.
    pub fn adjust_stock(&self, sku: &str, delta: i64) -> Result<SkuView, Error> {
        self.adjust_stock_logged(sku, delta).map(|l| l.value)
    }

    /// [`Engine::adjust_stock`] with the LSN to wait on.
    pub fn adjust_stock_logged(&self, sku: &str, delta: i64) -> Result<Logged<SkuView>, Error> {
        check_ident("sku", sku)?;
        let now_ms = self.clock.now_ms();
        let hash = sku_hash(sku);
        let mut locked = self.lock_one(self.shard_of(hash));
        let shard = locked.home();
        let index = shard.find_sku(hash, sku).ok_or_else(|| Error::UnknownSku {
            sku: sku.to_owned(),
        })?;
        let state = shard.sku_mut(index);
        let new_stock = i128::from(state.stock) + i128::from(delta);
        if new_stock < i128::from(state.committed()) {
            return Err(Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: state.committed(),
            });
        }
        if new_stock > i128::from(STOCK_MAX) {
            return Err(Error::invalid(
                "delta",
                format!("stock would be {new_stock}, above the largest stock {STOCK_MAX}"),
            ));
        }
        let record = Record::SkuSet {
            sku,
            stock: new_stock as u64,
            customer_limit: state.customer_limit,
            at_ms: now_ms,
        };
        let (value, lsn) =
            self.commit_stock_change(&mut locked, self.shard_of(hash), record, now_ms, |shard| {
                shard.sku_mut(index).stock = new_stock as u64;
                index
            })?;
        Ok(Logged { value, lsn })
    }

    pub fn sku(&self, sku: &str) -> Result<SkuView, Error> {
        check_ident("sku", sku)?;
        let hash = sku_hash(sku);
        let locked = self.lock_one(self.shard_of(hash));
        let shard = locked.shard(self.shard_of(hash));
        let index = shard.find_sku(hash, sku).ok_or_else(|| Error::UnknownSku {
            sku: sku.to_owned(),
        })?;
        Ok(sku_view(shard.sku(index)))
    }

    // ---- holds ---------------------------------------------------------

    /// Places a soft hold on the request's items: all or nothing (or as
    /// much as possible with [`Fill::Partial`]), atomically across shards,
    /// with customer limits enforced under the same locks.
    pub fn reserve(&self, req: &ReserveRequest<'_>) -> Result<Reservation, Error> {
        self.reserve_logged(req).map(|l| l.value)
    }

    /// [`Engine::reserve`] with the LSN to wait on.
    pub fn reserve_logged(&self, req: &ReserveRequest<'_>) -> Result<Logged<Reservation>, Error> {
        let placed = self.reserve_inner(req, None)?;
        match placed.value {
            Placed::Held(r) => Ok(Logged {
                value: r,
                lsn: placed.lsn,
            }),
            Placed::Waiting(_) => unreachable!("no waiter, no waiting"),
        }
    }

    /// [`Engine::reserve`], or, for a single-SKU request refused only
    /// because other holds have the stock, a place at the end of that SKU's
    /// first-come-first-served waitlist. Stock given back (release, expiry,
    /// restock) goes to the head of the line, under the SKU's lock, before
    /// any later request can take it; `on_done` is then called (under that
    /// lock: it must not block) with the reservation made for the waiter,
    /// or with the refusal that ended its wait. A waiter that gives up calls
    /// [`Engine::leave_waitlist`].
    pub fn reserve_or_wait(
        &self,
        req: &ReserveRequest<'_>,
        on_done: OnDone,
    ) -> Result<Placed, Error> {
        self.reserve_or_wait_logged(req, on_done).map(|l| l.value)
    }

    /// [`Engine::reserve_or_wait`] with the LSN to wait on when held at
    /// once (a waiter served later gets its own through `on_done`).
    pub fn reserve_or_wait_logged(
        &self,
        req: &ReserveRequest<'_>,
        on_done: OnDone,
    ) -> Result<Logged<Placed>, Error> {
        self.reserve_inner(req, Some(on_done))
    }

    fn reserve_inner(
        &self,
        req: &ReserveRequest<'_>,
        waiter: Option<OnDone>,
    ) -> Result<Logged<Placed>, Error> {
        check_ident("customer_id", req.customer_id)?;
        let ttl_ms = match req.ttl_ms {
            None => self.options.default_ttl_ms,
            Some(0) => return Err(Error::invalid("ttl_ms", "must be at least 1")),
            Some(ttl) => ttl.min(self.options.max_ttl_ms),
        };
        let mut lines = self.plan(req.items)?;
        // The sold-out fast path is the caller's ([`Engine::is_sold_out`],
        // checked by the API before admission): checking here too would put
        // a shared read lock per item on every reservation's path.
        let mut shard_ids: SmallVec<[u16; 4]> = SmallVec::new();
        for line in &lines {
            shard_ids.push(line.shard);
        }
        if shard_ids.len() > 1 {
            shard_ids.sort_unstable();
            shard_ids.dedup();
        }
        let home = shard_ids[0];
        let now_ms = self.clock.now_ms();
        let mut locked = self.lock_sorted(shard_ids);
        // Find every SKU, then decide every item, before changing anything.
        for line in lines.iter_mut() {
            line.index = locked
                .shard(line.shard)
                .find_sku(line.hash, line.sku)
                .ok_or_else(|| Error::UnknownSku {
                    sku: line.sku.to_owned(),
                })?;
        }
        let placed = self.place(
            &mut locked,
            home,
            req.customer_id,
            req.fill,
            &mut lines,
            ttl_ms,
            now_ms,
            true,
        );
        let (id, expires_at_ms, lsn) = match placed {
            Ok(placed) => placed,
            Err(err) => {
                return self
                    .refuse_or_wait(&mut locked, &lines, req, ttl_ms, err, waiter)
                    .map(|value| Logged { value, lsn: 0 })
            }
        };
        drop(locked);
        // The answer is made from the request, after the locks are gone.
        let held = Placed::Held(Reservation {
            id,
            status: Status::Held,
            customer_id: CompactString::from(req.customer_id),
            items: {
                let mut items = SmallVec::new();
                for l in lines.iter().filter(|l| l.grant > 0) {
                    items.push(ItemView {
                        sku: CompactString::from(l.sku),
                        qty: l.grant,
                    });
                }
                items
            },
            created_at_ms: now_ms,
            expires_at_ms,
            order_ref: None,
        });
        Ok(Logged { value: held, lsn })
    }

    /// Decides every item of a reservation whose SKUs are found and locked,
    /// then logs and makes the hold; returns its id, expiry and LSN. Changes
    /// nothing when it refuses. `respect_waitlists`: a SKU with a waitlist
    /// has nothing available for this request (the line is served first);
    /// false only when serving the head of that line.
    #[allow(clippy::too_many_arguments)]
    fn place(
        &self,
        locked: &mut Locked<'_>,
        home: u16,
        customer_id: &str,
        fill: Fill,
        lines: &mut [Line<'_>],
        ttl_ms: u64,
        now_ms: u64,
        respect_waitlists: bool,
    ) -> Result<(HoldId, u64, u64), Error> {
        // Hashed only if some item has a customer limit: unlimited SKUs keep
        // no per-customer state at all.
        let mut customer_hash_memo: Option<u64> = None;
        let mut customer_hash_once =
            || *customer_hash_memo.get_or_insert_with(|| customer_hash(customer_id));
        let mut first_refusal: Option<Error> = None;
        for line in lines.iter_mut() {
            let shard = locked.shard(line.shard);
            let state = shard.sku(line.index);
            let available = if respect_waitlists && shard.waitlists.has(line.index) {
                0
            } else {
                state.available()
            };
            let (current, limit_room) = match state.customer_limit {
                0 => (0, u64::MAX),
                limit => {
                    let current = shard.tally(customer_hash_once(), line.index, customer_id);
                    (current, limit.saturating_sub(current))
                }
            };
            let qty = u64::from(line.qty);
            let refusal = if qty > available {
                Some(Error::InsufficientStock {
                    sku: line.sku.to_owned(),
                    requested: qty,
                    available,
                })
            } else if qty > limit_room {
                Some(Error::CustomerLimitExceeded {
                    sku: line.sku.to_owned(),
                    limit: state.customer_limit,
                    current,
                })
            } else {
                None
            };
            line.grant = match (fill, refusal) {
                (_, None) => line.qty,
                (Fill::All, Some(err)) => return Err(err),
                (Fill::Partial, Some(err)) => {
                    first_refusal.get_or_insert(err);
                    // Fits in u32: at most qty.
                    qty.min(available).min(limit_room) as u32
                }
            };
        }
        if let Some(err) = first_refusal {
            if lines.iter().all(|l| l.grant == 0) {
                return Err(err);
            }
        }
        if locked.shard(home).holds_len() >= self.holds_per_shard_max {
            return Err(Error::HoldCapacity {
                limit: self.holds_per_shard_max,
            });
        }

        // Log, then commit.
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let id = locked.shard(home).next_id(self.options.epoch);
        let lsn = self.log(|| Record::HoldCreated {
            id,
            customer: customer_id,
            items: lines
                .iter()
                .filter(|l| l.grant > 0)
                .map(|l| (l.sku, l.grant))
                .collect(),
            created_at_ms: now_ms,
            expires_at_ms,
        })?;
        let customer = CompactString::from(customer_id);
        let mut items: SmallVec<[HeldItem; 1]> = SmallVec::new();
        for line in lines.iter().filter(|l| l.grant > 0) {
            let sku = SkuRef {
                shard: line.shard,
                index: line.index,
            };
            let shard = locked.shard_mut(sku.shard);
            let state = shard.sku_mut(sku.index);
            state.held += u64::from(line.grant);
            if state.customer_limit > 0 {
                shard.add_tally(
                    customer_hash_once(),
                    sku.index,
                    &customer,
                    u64::from(line.grant),
                );
            }
            items.push(HeldItem {
                sku,
                qty: line.grant,
            });
        }
        let hold = Hold {
            epoch: self.options.epoch,
            status: Status::Held,
            customer,
            items,
            created_at_ms: now_ms,
            expires_at_ms,
            order_ref: None,
        };
        let inserted = locked.shard_mut(home).insert_hold(hold);
        assert_eq!(inserted, id, "bug: the logged id is the id inserted");
        Ok((id, expires_at_ms, lsn))
    }

    /// A refused reservation: the refusal, or a place in the SKU's waitlist
    /// when it asked to wait, names one SKU, and is short only because
    /// other holds have the stock (they may give it back).
    fn refuse_or_wait(
        &self,
        locked: &mut Locked<'_>,
        lines: &[Line<'_>],
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        err: Error,
        waiter: Option<OnDone>,
    ) -> Result<Placed, Error> {
        let (Some(on_done), [line]) = (waiter, lines) else {
            return Err(err);
        };
        let Error::InsufficientStock { .. } = err else {
            return Err(err);
        };
        let shard = locked.shard_mut(line.shard);
        let state = shard.sku(line.index);
        if u64::from(line.qty) > state.stock - state.sold {
            return Err(err);
        }
        if shard.waitlists.len(line.index) >= self.options.waitlist_max {
            return Err(Error::WaitlistFull {
                sku: line.sku.to_owned(),
                limit: self.options.waitlist_max,
            });
        }
        let id = self
            .next_waiter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shard.waitlists.join(
            line.index,
            Waiting {
                id,
                customer: CompactString::from(req.customer_id),
                qty: line.qty,
                ttl_ms,
                fill: req.fill,
                on_done,
            },
        );
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Placed::Waiting(WaitTicket {
            sku: CompactString::from(line.sku),
            id,
        }))
    }

    /// Serves the SKU's waitlist from its head while the head's request
    /// fits what is available; called, with the SKU's shard locked, after
    /// stock comes back or grows. Each waiter served gets its reservation
    /// (or the refusal that ends its wait: its customer limit, a full hold
    /// table, the log) through its `on_done`.
    fn serve_waitlist(&self, locked: &mut Locked<'_>, shard_index: u16, sku: u32, now_ms: u64) {
        loop {
            let shard = locked.shard_mut(shard_index);
            let state = shard.sku(sku);
            let available = state.available();
            let Some(head) = shard.waitlists.head(sku) else {
                return;
            };
            let fits = match head.fill {
                Fill::All => u64::from(head.qty) <= available,
                Fill::Partial => available > 0,
            };
            if !fits {
                return;
            }
            let name = state.name.clone();
            let waiter = shard.waitlists.pop_head(sku).expect("the head was there");
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut lines = [Line {
                sku: &name,
                hash: sku_hash(&name),
                shard: shard_index,
                qty: waiter.qty,
                index: sku,
                grant: 0,
            }];
            let result = self
                .place(
                    locked,
                    shard_index,
                    &waiter.customer,
                    waiter.fill,
                    &mut lines,
                    waiter.ttl_ms,
                    now_ms,
                    false,
                )
                .map(|(id, expires_at_ms, lsn)| Logged {
                    value: Reservation {
                        id,
                        status: Status::Held,
                        customer_id: waiter.customer.clone(),
                        items: one(ItemView {
                            sku: name.clone(),
                            qty: lines[0].grant,
                        }),
                        created_at_ms: now_ms,
                        expires_at_ms,
                        order_ref: None,
                    },
                    lsn,
                });
            (waiter.on_done)(result);
        }
    }

    /// After a SKU's stock was set or adjusted: its waitlist is served from
    /// what is available now, or closed if it sold out.
    fn stock_changed(&self, locked: &mut Locked<'_>, shard: u16, sku: u32, now_ms: u64) {
        let state = locked.shard(shard).sku(sku);
        if state.sold >= state.stock {
            self.close_waitlist(locked.shard_mut(shard), sku);
        } else {
            self.serve_waitlist(locked, shard, sku, now_ms);
        }
    }

    /// Ends the wait of every waiter of a SKU that can no longer be served
    /// (it sold out): each is told `insufficient_stock`.
    fn close_waitlist(&self, shard: &mut Shard, sku: u32) {
        while let Some(waiter) = shard.waitlists.pop_head(sku) {
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            (waiter.on_done)(Err(Error::InsufficientStock {
                sku: shard.sku(sku).name.to_string(),
                requested: u64::from(waiter.qty),
                available: 0,
            }));
        }
    }

    /// Takes a waiter out of its SKU's line (it gave up). `true` if it was
    /// still waiting; `false` if it had already been served, whose
    /// `on_done` has then been called.
    pub fn leave_waitlist(&self, ticket: &WaitTicket) -> bool {
        let hash = sku_hash(&ticket.sku);
        let index = self.shard_of(hash);
        let mut locked = self.lock_one(index);
        let Some(sku) = locked.home().find_sku(hash, &ticket.sku) else {
            return false;
        };
        let Some(was_head) = locked.home().waitlists.leave(sku, ticket.id) else {
            return false;
        };
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if was_head {
            // The next in line may fit what the head could not use.
            let now_ms = self.clock.now_ms();
            self.serve_waitlist(&mut locked, index, sku, now_ms);
        }
        true
    }

    /// Requests waiting in all waitlists.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Validates a reservation's items and works out their shards.
    fn plan<'r>(&self, items: &[ItemRequest<'r>]) -> Result<SmallVec<[Line<'r>; 4]>, Error> {
        if items.is_empty() || items.len() > self.options.max_items {
            return Err(Error::invalid(
                "items",
                format!(
                    "must hold 1 to {} items, got {}",
                    self.options.max_items,
                    items.len()
                ),
            ));
        }
        let mut plan: SmallVec<[Line<'r>; 4]> = SmallVec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if !is_valid_ident(item.sku) {
                return Err(Error::invalid(format!("items[{i}].sku"), IDENT_RULE));
            }
            if item.qty == 0 || item.qty > self.options.max_qty_per_item {
                return Err(Error::invalid(
                    format!("items[{i}].qty"),
                    format!(
                        "must be 1 to {}, got {}",
                        self.options.max_qty_per_item, item.qty
                    ),
                ));
            }
            let hash = sku_hash(item.sku);
            if plan.iter().any(|p| p.hash == hash && p.sku == item.sku) {
                return Err(Error::invalid(
                    format!("items[{i}].sku"),
                    format!("duplicate sku {}; list each sku once", item.sku),
                ));
            }
            plan.push(Line {
                sku: item.sku,
                hash,
                shard: self.shard_of(hash),
                qty: item.qty,
                index: 0,
                grant: 0,
            });
        }
        Ok(plan)
    }

    /// Locks a hold's home shard and finds the hold.
    fn lock_hold(&self, id: HoldId) -> Result<(Locked<'_>, u32), Error> {
        if id.shard() >= self.shards.len() {
            return Err(Error::HoldNotFound);
        }
        let locked = self.lock_one(id.shard);
        let slot = locked
            .shard(id.shard)
            .hold_slot(id)
            .ok_or(Error::HoldNotFound)?;
        Ok((locked, slot))
    }

    /// The reservation as it stands. A hold past its expiry that the sweeper
    /// has not reached yet already shows as `expired`.
    pub fn get(&self, id: HoldId) -> Result<Reservation, Error> {
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        locked.lock_items_of(self, slot);
        Ok(view(&locked, slot, now_ms))
    }

    /// The answer to an operation on a hold that changed nothing, with the
    /// LSN that covers what it shows. Every shard of the hold is locked.
    fn unchanged(&self, locked: &Locked<'_>, slot: u32, now_ms: u64) -> Logged<Reservation> {
        Logged {
            value: view(locked, slot, now_ms),
            lsn: self.seen_lsn(),
        }
    }

    /// Turns a hold into a sale. Confirming a confirmed hold answers it
    /// again (the first `order_ref` stands); at or after its expiry a
    /// confirm fails, swept or not.
    pub fn confirm(&self, id: HoldId, order_ref: Option<&str>) -> Result<Reservation, Error> {
        self.confirm_logged(id, order_ref).map(|l| l.value)
    }

    /// [`Engine::confirm`] with the LSN to wait on.
    pub fn confirm_logged(
        &self,
        id: HoldId,
        order_ref: Option<&str>,
    ) -> Result<Logged<Reservation>, Error> {
        if let Some(r) = order_ref {
            check_ident("order_ref", r)?;
        }
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        match hold.status {
            Status::Held if now_ms < hold.expires_at_ms => {}
            Status::Held | Status::Expired => {
                return Err(Error::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                })
            }
            Status::Confirmed => {
                locked.lock_items_of(self, slot);
                return Ok(self.unchanged(&locked, slot, now_ms));
            }
            Status::Released => {
                return Err(Error::HoldNotActive {
                    status: Status::Released,
                })
            }
        }
        locked.lock_items_of(self, slot);
        let lsn = self.log(|| Record::HoldConfirmed {
            id,
            order_ref,
            at_ms: now_ms,
        })?;
        self.end(
            &mut locked,
            slot,
            Status::Confirmed,
            order_ref.map(CompactString::from),
            now_ms,
        );
        Ok(Logged {
            value: view(&locked, slot, now_ms),
            lsn,
        })
    }

    /// Gives a hold's stock back. Releasing an ended hold that was not
    /// confirmed changes nothing; a hold past its expiry ends as `expired`.
    pub fn release(&self, id: HoldId) -> Result<Reservation, Error> {
        self.release_logged(id).map(|l| l.value)
    }

    /// [`Engine::release`] with the LSN to wait on.
    pub fn release_logged(&self, id: HoldId) -> Result<Logged<Reservation>, Error> {
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        let to = match hold.status {
            Status::Held if now_ms < hold.expires_at_ms => Status::Released,
            Status::Held => Status::Expired,
            Status::Released | Status::Expired => {
                locked.lock_items_of(self, slot);
                return Ok(self.unchanged(&locked, slot, now_ms));
            }
            Status::Confirmed => {
                return Err(Error::HoldNotActive {
                    status: Status::Confirmed,
                })
            }
        };
        locked.lock_items_of(self, slot);
        let lsn = self.log(|| match to {
            Status::Released => Record::HoldReleased { id, at_ms: now_ms },
            _ => Record::HoldExpired { id, at_ms: now_ms },
        })?;
        self.end(&mut locked, slot, to, None, now_ms);
        Ok(Logged {
            value: view(&locked, slot, now_ms),
            lsn,
        })
    }

    /// Sets `expires_at_ms = now + ttl_ms`, capped at `holds.max_ttl_ms`
    /// after creation.
    pub fn extend(&self, id: HoldId, ttl_ms: u64) -> Result<Reservation, Error> {
        self.extend_logged(id, ttl_ms).map(|l| l.value)
    }

    /// [`Engine::extend`] with the LSN to wait on.
    pub fn extend_logged(&self, id: HoldId, ttl_ms: u64) -> Result<Logged<Reservation>, Error> {
        if ttl_ms == 0 {
            return Err(Error::invalid("ttl_ms", "must be at least 1"));
        }
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        match hold.status {
            Status::Held if now_ms < hold.expires_at_ms => {}
            Status::Held | Status::Expired => {
                return Err(Error::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                })
            }
            status @ (Status::Confirmed | Status::Released) => {
                return Err(Error::HoldNotActive { status })
            }
        }
        let cap = hold.created_at_ms.saturating_add(self.options.max_ttl_ms);
        let expires_at_ms = now_ms.saturating_add(ttl_ms).min(cap);
        let lsn = self.log(|| Record::HoldExtended {
            id,
            expires_at_ms,
            at_ms: now_ms,
        })?;
        locked.home().set_expiry(slot, expires_at_ms);
        locked.lock_items_of(self, slot);
        Ok(Logged {
            value: view(&locked, slot, now_ms),
            lsn,
        })
    }

    /// Ends an active hold: moves its units out of `held` (into `sold` on
    /// confirm, back to available otherwise). All its shards are locked.
    fn end(
        &self,
        locked: &mut Locked<'_>,
        slot: u32,
        to: Status,
        order_ref: Option<CompactString>,
        now_ms: u64,
    ) {
        let home = locked.indices[0];
        let hold = locked.shard(home).hold(slot);
        let items: SmallVec<[HeldItem; 4]> = SmallVec::from_slice(&hold.items);
        let customer = hold.customer.clone();
        for item in &items {
            let shard = locked.shard_mut(item.sku.shard);
            let qty = u64::from(item.qty);
            let state = shard.sku_mut(item.sku.index);
            state.held = state
                .held
                .checked_sub(qty)
                .expect("invariant: held covers active holds");
            if to == Status::Confirmed {
                // Held units become owned: the customer's tally is unchanged.
                state.sold += qty;
                if state.sold >= state.stock {
                    let state = shard.sku(item.sku.index);
                    self.note_sold_out(item.sku.shard, &state.name, state);
                    // Nothing can come back: nobody in line can be served.
                    self.close_waitlist(shard, item.sku.index);
                }
            } else if state.customer_limit > 0 {
                shard.sub_tally(customer_hash(&customer), item.sku.index, &customer, qty);
            }
        }
        let purge_at_ms = now_ms.saturating_add(self.options.retention_ms);
        locked
            .shard_mut(home)
            .end_hold(slot, to, order_ref, purge_at_ms);
        if to != Status::Confirmed {
            // Stock came back: the head of each SKU's line gets it first.
            for item in &items {
                self.serve_waitlist(locked, item.sku.shard, item.sku.index, now_ms);
            }
        }
    }

    /// Expires every active hold whose `expires_at_ms` has come, and purges
    /// ended holds past their retention. The server calls it every
    /// `holds.sweep_interval_ms`; tests call it after jumping the clock.
    pub fn sweep(&self) -> SweepStats {
        let now_ms = self.clock.now_ms();
        let mut stats = SweepStats::default();
        for index in 0..self.shards.len() as u16 {
            // Batches, dropping the lock between them so requests get a turn.
            loop {
                let mut locked = self.lock_one(index);
                let due = locked.home().expired_slots(now_ms, SWEEP_BATCH);
                for &slot in &due {
                    locked.lock_items_of(self, slot);
                    let id = locked.home().hold_id(slot);
                    if self
                        .log(|| Record::HoldExpired { id, at_ms: now_ms })
                        .is_err()
                    {
                        // The log is read-only: nothing more can change.
                        return stats;
                    }
                    self.end(&mut locked, slot, Status::Expired, None, now_ms);
                    locked.keep_home_only();
                    stats.expired += 1;
                }
                if due.len() < SWEEP_BATCH {
                    break;
                }
            }
            stats.purged += self.purge_shard(index, now_ms);
        }
        stats
    }

    /// Frees every ended hold whose retention is over at `now_ms`, without
    /// expiring anything (purging changes no stock and is not logged).
    /// Replay calls it with the records' time, so a long log does not keep
    /// every ended hold in memory until the first sweep.
    pub fn purge(&self, now_ms: u64) -> usize {
        (0..self.shards.len() as u16)
            .map(|i| self.purge_shard(i, now_ms))
            .sum()
    }

    fn purge_shard(&self, index: u16, now_ms: u64) -> usize {
        let mut total = 0;
        loop {
            let purged = self.lock_one(index).home().purge(now_ms, SWEEP_BATCH);
            total += purged;
            if purged < SWEEP_BATCH {
                return total;
            }
        }
    }

    // ---- replay ----------------------------------------------------------

    /// Applies one record read back from the log, at the time it records.
    /// The journal must not be attached yet. An error means the log
    /// contradicts itself (or was written with another `engine.shards`).
    pub fn apply(&self, record: &Record<'_>) -> Result<(), String> {
        assert!(
            self.journal.is_none(),
            "bug: replay with a journal attached"
        );
        match record {
            Record::SkuSet {
                sku,
                stock,
                customer_limit,
                at_ms,
            } => self
                .set_stock_at(sku, *stock, Some(*customer_limit), *at_ms)
                .map(drop)
                .map_err(|e| e.to_string()),
            Record::HoldCreated {
                id,
                customer,
                items,
                created_at_ms,
                expires_at_ms,
            } => self.replay_created(*id, customer, items, *created_at_ms, *expires_at_ms),
            Record::HoldConfirmed {
                id,
                order_ref,
                at_ms,
            } => self.replay_end(*id, Status::Confirmed, *order_ref, *at_ms),
            Record::HoldReleased { id, at_ms } => {
                self.replay_end(*id, Status::Released, None, *at_ms)
            }
            Record::HoldExpired { id, at_ms } => {
                self.replay_end(*id, Status::Expired, None, *at_ms)
            }
            // Not the engine's: the API's key store takes these.
            Record::IdempotencyStored { .. } => Ok(()),
            Record::HoldExtended {
                id, expires_at_ms, ..
            } => {
                let (mut locked, slot) =
                    self.lock_hold(*id).map_err(|_| format!("no hold {id}"))?;
                if locked.home().hold(slot).status != Status::Held {
                    return Err(format!("hold {id} is extended but not active"));
                }
                locked.home().set_expiry(slot, *expires_at_ms);
                Ok(())
            }
        }
    }

    fn replay_created(
        &self,
        id: HoldId,
        customer: &str,
        items: &[(&str, u32)],
        created_at_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), String> {
        check_replayed_items(id, customer, items.iter().copied())?;
        let mut lines: SmallVec<[(u16, u64, &str, u32); 4]> = SmallVec::new();
        for &(sku, qty) in items {
            let hash = sku_hash(sku);
            lines.push((self.shard_of(hash), hash, sku, qty));
        }
        let mut shard_ids: SmallVec<[u16; 4]> = lines.iter().map(|l| l.0).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        if shard_ids.first() != Some(&id.shard) {
            return Err(format!(
                "hold {id} was stored in shard {}, but with engine.shards = {} its items map to shard {:?}: \
                 start with the engine.shards the data directory was written with",
                id.shard,
                self.shards.len(),
                shard_ids.first()
            ));
        }
        self.check_slot(id)?;
        let mut locked = self.lock_sorted(shard_ids);
        if !locked.home().can_place(id) {
            return Err(format!("hold {id}: its slot holds an active hold"));
        }
        let mut held: SmallVec<[HeldItem; 1]> = SmallVec::new();
        for &(shard, hash, sku, qty) in &lines {
            let index = locked
                .shard(shard)
                .find_sku(hash, sku)
                .ok_or_else(|| format!("hold {id} names sku {sku}, never set"))?;
            if locked.shard(shard).sku(index).available() < u64::from(qty) {
                return Err(format!("hold {id} holds more of {sku} than is available"));
            }
            held.push(HeldItem {
                sku: SkuRef { shard, index },
                qty,
            });
        }
        let customer = CompactString::from(customer);
        for item in &held {
            let shard = locked.shard_mut(item.sku.shard);
            let state = shard.sku_mut(item.sku.index);
            state.held += u64::from(item.qty);
            if state.customer_limit > 0 {
                shard.add_tally(
                    customer_hash(&customer),
                    item.sku.index,
                    &customer,
                    u64::from(item.qty),
                );
            }
        }
        let hold = Hold {
            epoch: id.epoch,
            status: Status::Held,
            customer,
            items: held,
            created_at_ms,
            expires_at_ms,
            order_ref: None,
        };
        locked.home().insert_hold_at(id, hold);
        Ok(())
    }

    fn replay_end(
        &self,
        id: HoldId,
        to: Status,
        order_ref: Option<&str>,
        at_ms: u64,
    ) -> Result<(), String> {
        let (mut locked, slot) = self.lock_hold(id).map_err(|_| format!("no hold {id}"))?;
        if locked.home().hold(slot).status != Status::Held {
            return Err(format!("hold {id} ends as {to} but is not active"));
        }
        locked.lock_items_of(self, slot);
        self.end(
            &mut locked,
            slot,
            to,
            order_ref.map(CompactString::from),
            at_ms,
        );
        Ok(())
    }

    /// A slot a logged or checkpointed hold names must be one this engine
    /// could have given out: past the shard's share of `holds.retained_max`
    /// it is damage (and would ask for a slab of that size).
    fn check_slot(&self, id: HoldId) -> Result<(), String> {
        if id.slot as usize >= self.holds_per_shard_max {
            return Err(format!(
                "hold {id}: slot {} is past the {} holds a shard may have (holds.retained_max)",
                id.slot, self.holds_per_shard_max
            ));
        }
        Ok(())
    }

    /// Ends a replay: slots left empty become free for new holds.
    pub fn finish_replay(&self) {
        for shard in self.shards.iter() {
            shard.0.lock().rebuild_free_slots();
        }
    }

    /// Active holds (held, not yet ended) in the whole engine.
    pub fn active_holds(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().active_holds()).sum()
    }

    /// Per-shard figures for `/v1/stats`, one shard lock at a time.
    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.0.lock();
                ShardStats {
                    skus: shard.sku_count(),
                    active_holds: shard.active_holds(),
                    retained_holds: shard.holds_len(),
                }
            })
            .collect()
    }

    /// Checks every invariant across all shards; panics on a violation.
    /// Takes every shard lock (in order): for tests and debugging, not for
    /// the request path.
    pub fn check_invariants(&self) {
        let all: SmallVec<[u16; 4]> = (0..self.shards.len() as u16).collect();
        let locked = self.lock_sorted(all);
        let mut held_by_holds: Vec<Vec<u64>> = Vec::with_capacity(locked.guards.len());
        for shard in &locked.guards {
            shard.check_local();
            held_by_holds.push(vec![0; shard.sku_count()]);
        }
        for shard in &locked.guards {
            for (_, hold) in shard.holds_iter() {
                if hold.status == Status::Held {
                    for item in &hold.items {
                        held_by_holds[usize::from(item.sku.shard)][item.sku.index as usize] +=
                            u64::from(item.qty);
                    }
                }
            }
        }
        let mut waiting = 0;
        for (s, shard) in locked.guards.iter().enumerate() {
            let tallies = shard.tally_sums();
            for (index, sku) in shard.skus_iter() {
                assert_eq!(
                    sku.held, held_by_holds[s][index as usize],
                    "invariant: sku {} held = units of its active holds",
                    sku.name
                );
                let expected = if sku.customer_limit == 0 {
                    0
                } else {
                    sku.committed() - sku.untallied_sold
                };
                assert_eq!(
                    tallies[index as usize], expected,
                    "invariant: sku {} customer tallies = held + sold - untallied sold (limited SKUs only)",
                    sku.name
                );
                if let Some(head) = shard.waitlists.head(index) {
                    let fits = match head.fill {
                        Fill::All => u64::from(head.qty) <= sku.available(),
                        Fill::Partial => sku.available() > 0,
                    };
                    assert!(
                        !fits,
                        "invariant: sku {}: the head of its waitlist is not left waiting for stock that is available",
                        sku.name
                    );
                    waiting += shard.waitlists.len(index);
                }
                assert_eq!(
                    self.sold_out[s].read().contains(sku.name.as_str()),
                    sku.sold >= sku.stock,
                    "invariant: sku {} is in the sold-out set exactly when sold = stock",
                    sku.name
                );
            }
            assert!(
                self.sold_out[s].read().len() <= shard.sku_count(),
                "invariant: the sold-out set names only known SKUs"
            );
        }
        assert_eq!(
            waiting,
            self.waiting(),
            "invariant: the waiting count is the waitlists' length"
        );
    }
}

/// The items of a hold read back from the log or a checkpoint must be
/// what a live reservation could have made: at least one, each SKU once
/// with a quantity of at least 1, the customer a valid identifier.
/// Anything else is damage, refused before it reaches a shard (whose
/// invariants assume it).
fn check_replayed_items<'a>(
    id: HoldId,
    customer: &str,
    items: impl Iterator<Item = (&'a str, u32)> + Clone,
) -> Result<(), String> {
    if !is_valid_ident(customer) {
        return Err(format!(
            "hold {id}: customer {customer:?} is not an identifier"
        ));
    }
    let mut n = 0;
    for (i, (sku, qty)) in items.clone().enumerate() {
        n += 1;
        if qty == 0 || !is_valid_ident(sku) {
            return Err(format!("hold {id}: item {sku:?} x {qty} cannot be held"));
        }
        if items.clone().take(i).any(|(other, _)| other == sku) {
            return Err(format!("hold {id}: sku {sku} twice"));
        }
    }
    if n == 0 {
        return Err(format!("hold {id} holds nothing"));
    }
    Ok(())
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

fn check_stock_value(field: &str, value: u64) -> Result<(), Error> {
    if value <= STOCK_MAX {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be 0 to {STOCK_MAX}, got {value}"),
        ))
    }
}

fn sku_view(state: &SkuState) -> SkuView {
    SkuView {
        sku: state.name.clone(),
        stock: state.stock,
        available: state.available(),
        held: state.held,
        sold: state.sold,
        customer_limit: state.customer_limit,
    }
}

/// The contract's view of the hold in `slot` of the home shard; every shard
/// of its items is locked.
fn view(locked: &Locked<'_>, slot: u32, now_ms: u64) -> Reservation {
    let home = locked.shard(locked.indices[0]);
    let hold = home.hold(slot);
    let status = match hold.status {
        Status::Held if now_ms >= hold.expires_at_ms => Status::Expired,
        status => status,
    };
    Reservation {
        id: home.hold_id(slot),
        status,
        customer_id: hold.customer.clone(),
        items: {
            let mut items = SmallVec::new();
            for i in &hold.items {
                items.push(ItemView {
                    sku: locked.shard(i.sku.shard).sku(i.sku.index).name.clone(),
                    qty: i.qty,
                });
            }
            items
        },
        created_at_ms: hold.created_at_ms,
        expires_at_ms: hold.expires_at_ms,
        order_ref: hold.order_ref.clone(),
    }
}
