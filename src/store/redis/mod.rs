//! The redis store (`store.kind = "redis"`): the state lives in Redis, so
//! any number of stampede nodes serve the same SKUs and holds. Every
//! change is one server-side script (`scripts.rs`, the Lua in `scripts/`): checks first,
//! then writes, Redis `TIME` as the clock, idempotent by hold id.
//!
//! What this node keeps: nothing of the state. Its hold ids are
//! `r_` + the node's start number (`INCR P:epoch`, unique across nodes and
//! restarts) + the hold's hash slot + a counter that starts at random (so
//! a start number repeated by a failover that lost its `INCR` repeats no
//! id): a hold's record lives in
//! the slot of its first SKU, so the id alone finds it, on one server or
//! on a cluster. Admission and rate limits stay per node (above
//! the store). `wait_ms` polls (every [`WAIT_POLL`]) instead of a
//! first-come-first-served line: a line shared by nodes would need its own
//! protocol; the sold-out fast path answers false (the store cannot tell
//! without a round trip).
//!
//! Durability: with `store.redis.durability = "fsync"` start-up refuses a
//! Redis without `appendonly yes` and `appendfsync always`, so a reply
//! means the change is on Redis's disk; `wait_replicas > 0` adds a `WAIT`
//! on the same connection after each change.
//!
//! Expiry: each slot keeps its held holds by expiry (`P:{T}:x`), and
//! `P:due` keeps, per slot, a time at or before its earliest expiry. Every
//! node takes the due slots from it every `holds.sweep_interval_ms`,
//! sweeps them (64 at a time, pipelined) and sets each one's due time to
//! what is left, unless a reservation lowered it meanwhile.
//!
//! Stock buckets (`store.redis.buckets`): a hot SKU's stock in several
//! keys `P:{sku#i}`, each in its own slot; see `RedisStore::reserve_once`
//! and ARCHITECTURE.md.
//!
//! Redis Cluster (`redis-cluster://HOST:PORT,...`): the same keys and
//! scripts, every primary's persistence checked at start (the refusal
//! names the node), `WAIT` sent to the primary that made the change. A
//! hold whose SKUs are in different slots is a saga (`RedisStore::reserve_saga`,
//! the scripts' `SAGA_*`; ARCHITECTURE.md tells the protocol). A batch's
//! run is pipelined there once `before_run` has lowered its slots' due
//! times; sagas and bucketed SKUs run on their own.
//!
//! The files, by job: `connect` (pool, persistence check, start number),
//! `keys` (every key name and id), `run` (a script's run: declared keys,
//! redirects, `WAIT`, clocks), `reply` (replies read, every field
//! checked), `reserve`, `saga`, `buckets`, `sweep` (expiry and a slot's
//! todo under its lease), `idempotency`, `drops`, `events`, `webhooks`;
//! `scripts` loads the Lua in `scripts/*.lua`. This file: the store's
//! state, its bounds, and the [`Store`] it implements.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use fred::prelude::*;
use smallvec::SmallVec;

mod buckets;
use buckets::{bucket_name, named_items, unbucketed};
mod connect;
mod drops;
mod events;
mod health;
mod idempotency;
mod journal;
mod keys;
mod payments;
mod reply;
mod reserve;
mod run;
mod saga;
pub mod scripts;
mod start;
mod sweep;
mod webhooks;
use super::slots;
use super::{Error, Pending, Scope, Store, StoreFuture};
use crate::config::{Redis as RedisConfig, RedisDurability};
use crate::engine::{
    self, check_order_ref, check_reservation, check_sku, check_stock, Fill, HoldId, ItemRequest,
    ItemView, Reservation, ReserveRequest, SkuView, Status, TunableCells, Tunables, STOCK_MAX,
};
use crate::idempotency::{Begin, Stored};
pub use connect::StartError;
pub use drops::{DropLog, TAIL_EVERY as DROPS_TAIL_EVERY};
pub use events::OPENED_MARK_MS;
use reply::*;
use scripts::{Scripts, Tells};
pub use start::{start, RedisNode};
pub use sweep::Lease;

/// How often a reservation with `wait_ms` asks again.
pub const WAIT_POLL: Duration = Duration::from_millis(20);
/// Holds expired per sweep script call.
const SWEEP_BATCH: u32 = 256;
/// How often a script is tried again on a Redis Cluster while its slot
/// migrates (`TRYAGAIN`: nothing ran), and how long between tries.
const TRYAGAIN_TRIES: u32 = 20;
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(25);
/// At most how many times a script is run again with the keys it found it
/// needs (the sweep needs two: its due holds, then their SKUs; a third
/// when more holds fell due meanwhile).
const NEED_ROUNDS: u32 = 4;
/// At most how many holds' SKU names a node keeps (`hold_skus`).
const HOLD_SKUS_MAX: usize = 65_536;
/// How many ids of its chain a keyed hold across slots tries, each begun
/// and undone by an earlier request under the key (see `Draw::generation`).
const SAGA_GENERATIONS: u64 = 8;
/// What `reserve_saga` answers, for a request taking over under its key,
/// when the id it was given was begun and undone.
const SAGA_UNDONE: &str = "this try was undone";
/// How soon a slot whose todo another node is finishing is looked at
/// again.
const LEASE_RETRY_MS: u64 = 200;
/// Rounds a bucketed SKU's stock change makes before it gives up on
/// reservations racing it.
const BUCKET_TRIES: usize = 8;

/// How much earlier than this node's clock says a hold expires `P:due` is
/// lowered before the script (see `due_estimate`).
const DUE_ESTIMATE_EARLY_MS: u64 = 1_000;
/// In a hold id's counter: a hold across slots (a saga).
const SAGA_BIT: u32 = 1 << 31;
/// Due slots read from `P:due` at a time.
const DUE_BATCH: i64 = 1_024;
/// Slots swept at once (their scripts pipelined).
const SWEEP_SLOTS: usize = 64;
/// On a cluster, slots whose expiry index each sweep looks at, in turn,
/// for a `P:due` entry a failover lost (at the default 100 ms sweep, all
/// slots in about 51 s).
const DUE_SCAN_SLOTS: u64 = 32;
/// How late a hold (or a todo entry past its grace) is before that look
/// gives its slot a due time again: past a sweep that should have taken
/// it.
const DUE_SCAN_LATE_MS: u64 = 1_000;
/// The longest a reservation waits for its slot's due time to be lowered
/// in `P:due` before owing it (`lower_due`): a lowering is one small
/// script, well under a millisecond when `P:due`'s primary is well.
const DUE_LOWER_WAIT: Duration = Duration::from_millis(250);
/// A primary's clock this far from the node's is said on stderr.
const CLOCK_WARN_MS: i64 = 1_000;

/// How often the node measures its clock against Redis's (one `TIME`).
const CLOCK_LOOK_MS: u64 = 1_000;
/// How often the replicas of each primary are counted (for the waits of a
/// hold across slots, `saga_replicas`).
const REPLICAS_COUNT_MS: u64 = 5_000;
/// For how long after a failed lowering `P:due` counts as unreachable.
const DUE_DOWN_MS: u64 = 1_000;
/// How long a first request under an idempotency key runs before another
/// may take over from it (its node may have died; the key keeps its seed,
/// so the one taking over makes the same changes): past any request's
/// timeout.
const KEY_IN_FLIGHT_MS: u64 = 120_000;
/// How long an applied adjust is remembered: past any resend.
const ADJUST_MARK_MS: u64 = 600_000;

/// What the redis store needs from the config.
#[derive(Debug, Clone)]
pub struct Options {
    pub redis: RedisConfig,
    pub tunables: Tunables,
    pub retention_ms: u64,
    pub idempotency_ttl_ms: u64,
    /// `idempotency.keys_max`: exact on one server; on a cluster each slot
    /// counts its own (see [`RedisStore::idem_live`]).
    pub idempotency_keys_max: usize,
    pub answer_bytes_max: usize,
    /// The `[drops]` bounds (the same on every node).
    pub drops: crate::drops::Options,
    /// The `[events]` bounds.
    pub events: crate::events::Options,
}

pub struct RedisStore {
    pool: Pool,
    scripts: Scripts,
    prefix: String,
    /// Every script's first argument: the prefix, `|` and how many events
    /// an event stream keeps (see the scripts' prelude and
    /// `store::redis::events`; on a cluster a script that tells events gets
    /// `|` and its slot's tag after it, in `run`).
    argv_prefix: String,
    options: Options,
    tunables: TunableCells,
    /// This node's start number: the `epoch` of its hold ids.
    epoch: u32,
    next_hold: AtomicU64,
    /// Numbers this node's adjusts and keyed requests (see `op_id`).
    next_op: AtomicU64,
    /// Picks the first bucket a reservation of a bucketed SKU tries.
    next_bucket: AtomicU64,
    /// On a cluster: the SKU keys' names of holds this node made, so that
    /// a confirm, release or extend through this node declares them at
    /// once (see `declared` in the scripts) instead of learning them from
    /// a first run. At most [`HOLD_SKUS_MAX`], emptied when full; an
    /// ended hold's entry is dropped.
    hold_skus: parking_lot::Mutex<std::collections::HashMap<HoldId, Box<[String]>>>,
    /// Numbers the recovery leases this node takes (each lease's token).
    lease_tokens: std::sync::atomic::AtomicU64,
    /// How many sweeps this node has finished (`/v1/stats` `store.sweeps`).
    sweeps_done: AtomicU64,
    /// What start-up found about Redis's persistence, for `/v1/stats`.
    persistence: String,
    /// On Redis Cluster (`redis-cluster://`).
    clustered: bool,
    /// The drops, in step with every node's through Redis.
    drops: DropLog,
    /// The event stream's last entry read into this node's hub.
    events_read: tokio::sync::Mutex<(u64, u64)>,
    /// Tests: bucket steps left before a change across stock buckets
    /// halts (`usize::MAX`: never); see `halt_bucket_steps_after`.
    bucket_halt: std::sync::atomic::AtomicUsize,
    /// When the sweep last looked at the buckets' journal (ms).
    buckets_checked_at: AtomicU64,
    /// The event feed this node fills from the stream, once it starts.
    hub: std::sync::OnceLock<Arc<crate::events::Hub>>,
    /// On a cluster: the slots whose event streams may hold events this
    /// node's scripts told and no node has moved yet (a bit per slot).
    events_to_move: Box<[AtomicU64]>,
    /// On a cluster: the next slot the look for a dead node's events
    /// starts at (`store::redis::events`).
    events_scan_next: AtomicU64,
    /// On a cluster: the next slot the look for lost `P:due` entries
    /// starts at (`due_scan`).
    due_scan_next: AtomicU64,
    /// On a cluster: per slot, the last id of its events this node saw
    /// moved (its stream is trimmed to past it at its next read).
    events_moved: parking_lot::Mutex<std::collections::HashMap<u16, (u64, u64)>>,
    /// The webhook deliveries, when `[[webhooks]]` are set (one server).
    outbox: std::sync::OnceLock<Arc<crate::events::webhooks::Outbox>>,
    /// Due times a reservation, extend or saga could not lower in `P:due`
    /// (its primary down or slow): slot -> the earliest owed, paid by the
    /// next sweeps (`lower_due`, `pay_due_owed`). At most one a slot.
    due_owed: parking_lot::Mutex<std::collections::HashMap<u16, u64>>,
    /// Until when (`now_ms`) `P:due` counts as unreachable after a
    /// lowering failed: lowerings are owed at once, not tried.
    due_down_until: AtomicU64,
    /// On a cluster: when the replicas were last counted, and each
    /// primary's (`host:port`) replicas online (`look_at_primaries`).
    replica_counts: parking_lot::Mutex<(u64, std::collections::HashMap<String, u32>)>,
    /// On a cluster: each primary's clock (`TIME`) less this node's, in
    /// ms, at the last look (`look_at_primaries`): expiry is decided on the
    /// clock of the primary that holds the hold, and a sweep looks at
    /// `P:due` on its own primary's clock.
    clock_offsets: parking_lot::Mutex<std::collections::BTreeMap<String, i64>>,
    /// The clock every due time is judged by (`TIME` on the primary that
    /// holds `P:due`, whose scripts compare due times with it) less this
    /// node's, in ms, measured at start and every [`CLOCK_LOOK_MS`]
    /// (`look_at_clock`): this node's time for Redis ([`Store::now_ms`])
    /// is its own clock plus this, so a node whose clock is off still
    /// lowers due times and writes leases on Redis's clock.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    /// When (this node's clock) the offset was last measured.
    clock_looked_at: AtomicU64,
}

/// A number drawn from a keyed request's seed, and the start number of
/// the node that took the key first: what a hold id or an adjust's
/// operation id is made of ([`RedisStore::draw`]).
#[derive(Debug, Clone, Copy)]
struct Draw {
    epoch: u32,
    n: u64,
    /// The request takes over from a first one under its key
    /// ([`Pending::resumed`]).
    resumed: bool,
}

impl Draw {
    /// The `generation`th id of a chain drawn from this one: a hold across
    /// slots that a first request under the key began and that was undone
    /// (refused, or abandoned past its grace) is tried again under the
    /// next, so that every request under the key walks the same chain.
    fn generation(self, generation: u64) -> Draw {
        Draw {
            n: self
                .n
                .wrapping_add(generation.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                & ((1 << 62) - 1),
            ..self
        }
    }
}

/// What makes a reservation the one it is, for [`RedisStore::draw`].
fn reserve_content(req: &ReserveRequest<'_>, ttl_ms: u64, wait_ms: u64) -> String {
    let mut out = format!(
        "reserve {} {ttl_ms} {wait_ms} {:?}",
        req.customer_id, req.fill
    );
    for item in req.items {
        out += &format!(" {} {}", item.sku, item.qty);
    }
    out
}

fn requested_items(req: &ReserveRequest<'_>) -> Vec<(String, u32)> {
    req.items
        .iter()
        .map(|i| (i.sku.to_owned(), i.qty))
        .collect()
}

impl Store for RedisStore {
    fn set_stock<'a>(
        &'a self,
        scope: Scope<'a>,
        sku: &'a str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> StoreFuture<'a, (bool, SkuView)> {
        Box::pin(async move {
            check_sku(sku)?;
            check_stock("stock", stock)?;
            if let Some(limit) = customer_limit {
                check_stock("customer_limit", limit)?;
            }
            if let Some(n) = self.buckets_of(sku) {
                return self.set_stock_buckets(sku, n, stock, customer_limit).await;
            }
            let reply = self
                .run(
                    scope,
                    &self.scripts.set_stock,
                    vec![self.sku_key(sku)],
                    vec![
                        self.argv_prefix.clone(),
                        stock.to_string(),
                        customer_limit.map_or(String::new(), |l| l.to_string()),
                    ],
                )
                .await?;
            if reply.first().and_then(Value::as_i64) == Some(-1) {
                return Err(engine::Error::StockBelowCommitted {
                    sku: sku.to_owned(),
                    committed: int(&reply, 1)?,
                }
                .into());
            }
            let view = sku_view(
                sku,
                int(&reply, 1)?,
                int(&reply, 2)?,
                int(&reply, 3)?,
                int(&reply, 4)?,
            )?;
            Ok((int(&reply, 0)? == 1, view))
        })
    }

    fn adjust_stock<'a>(
        &'a self,
        scope: Scope<'a>,
        sku: &'a str,
        delta: i64,
    ) -> StoreFuture<'a, SkuView> {
        Box::pin(async move {
            check_sku(sku)?;
            if let Some(n) = self.buckets_of(sku) {
                return self
                    .adjust_buckets(sku, n, delta, &self.adjust_op(scope, sku, delta))
                    .await;
            }
            self.adjust_once(scope, sku, delta, &self.adjust_op(scope, sku, delta))
                .await
        })
    }

    fn sku<'a>(&'a self, sku: &'a str) -> StoreFuture<'a, SkuView> {
        Box::pin(async move {
            check_sku(sku)?;
            self.sku_view(sku).await
        })
    }

    fn reserve<'a>(
        &'a self,
        scope: Scope<'a>,
        req: &'a ReserveRequest<'a>,
        wait_ms: u64,
        waiting: &'a (dyn Fn() + Sync),
    ) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            let ttl_ms = check_reservation(req, &self.tunables.load())?;
            let draw = self.draw(scope, || reserve_content(req, ttl_ms, wait_ms));
            // A drop's SKUs are for its admitted entrants: this node's
            // book first; a SKU whose drop this node has not read yet is
            // refused by the script, and asked again once it has.
            let mut passed = self.drops_gate(req, None).await?;
            let mut tries = 0;
            loop {
                let result = if wait_ms == 0 {
                    self.reserve_once(scope, req, ttl_ms, &passed, draw).await
                } else {
                    self.reserve_waiting(req, ttl_ms, wait_ms, waiting, &passed, draw)
                        .await
                };
                match result {
                    Err(Error::GatedBy(drop)) if tries < 2 => {
                        tries += 1;
                        passed = self.drops_gate(req, Some(&drop)).await?;
                    }
                    other => return other,
                }
            }
        })
    }

    fn get(&self, id: HoldId) -> StoreFuture<'_, Reservation> {
        Box::pin(async move {
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.get,
                    vec![self.hold_key(id)],
                    vec![self.argv_prefix.clone()],
                )
                .await?;
            self.reservation(id, &reply)
        })
    }

    fn confirm<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        order_ref: Option<&'a str>,
    ) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            if let Some(r) = order_ref {
                check_order_ref(r)?;
            }
            self.hold_op(
                scope,
                &self.scripts.confirm,
                id,
                vec![order_ref.unwrap_or("").to_owned(), self.retention()],
            )
            .await
        })
    }

    fn release<'a>(&'a self, scope: Scope<'a>, id: HoldId) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            self.hold_op(scope, &self.scripts.release, id, vec![self.retention()])
                .await
        })
    }

    fn extend<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        ttl_ms: u64,
    ) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            if ttl_ms == 0 {
                return Err(engine::Error::invalid("ttl_ms", "must be at least 1").into());
            }
            let max_ttl = self.tunables.load().max_ttl_ms;
            // A shorter hold must be swept at its new expiry, not at the
            // old one: its slot's due time is lowered before (so a node
            // dying right after the script leaves no hold swept late; the
            // estimate is a second early, for clocks apart) and after, to
            // the new expiry.
            let estimate = self.due_estimate(ttl_ms);
            self.lower_due(id.shard, estimate).await;
            let reservation = self
                .hold_op(
                    scope,
                    &self.scripts.extend,
                    id,
                    vec![
                        ttl_ms.to_string(),
                        max_ttl.to_string(),
                        self.tally_ms().to_string(),
                    ],
                )
                .await?;
            if reservation.status == Status::Held && reservation.expires_at_ms < estimate {
                self.lower_due(id.shard, reservation.expires_at_ms).await;
            }
            Ok(reservation)
        })
    }

    fn flush<'a>(&'a self, _pending: &'a Pending) -> StoreFuture<'a, ()> {
        // Each change was durable (and on its replicas) when answered.
        Box::pin(std::future::ready(Ok(())))
    }

    fn is_sold_out(&self, _sku: &str) -> bool {
        false
    }

    /// Redis's clock, as this node reads it: its own plus the offset last
    /// measured (`clock_offset_ms`).
    fn now_ms(&self) -> u64 {
        use crate::clock::Clock;
        let own = crate::clock::SystemClock.now_ms();
        own.saturating_add_signed(self.clock_offset_ms.load(Relaxed))
    }

    fn key_begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u128,
        _now_ms: u64,
    ) -> StoreFuture<'a, Begin> {
        Box::pin(async move { self.key_begin_as(key, fingerprint, &self.op_id()).await })
    }

    fn key_complete<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        fingerprint: u128,
        stored: Stored,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if stored.body.len() > self.options.answer_bytes_max {
                return Err(Error::AnswerNotKept(format!(
                    "the answer ({} bytes) is over idempotency.answer_bytes_max ({})",
                    stored.body.len(),
                    self.options.answer_bytes_max
                )));
            }
            let client = self.client(scope);
            let args: Vec<Value> = vec![
                self.argv_prefix.clone().into(),
                format!("{fingerprint:032x}").into(),
                stored.status.to_string().into(),
                stored.location.clone().unwrap_or_default().into(),
                Value::Bytes(stored.body.clone()),
                stored.stored_at_ms.to_string().into(),
                self.options.idempotency_ttl_ms.to_string().into(),
            ];
            let idem_key = self.idem_key(key);
            let (live, _) = self.idem_live(&idem_key);
            let reply: Value = self
                .eval(
                    client,
                    &self.scripts.key_complete,
                    vec![idem_key, live],
                    args,
                )
                .await
                .map_err(unavailable)?;
            if int(&reply.into_array(), 0)? != 0 {
                return Err(Error::AnswerNotKept(
                    "the key was taken by another request while this one ran".into(),
                ));
            }
            // The answer is acknowledged as every change is: on the
            // replicas too.
            let key = self.idem_key(key);
            self.replicated(client, Some(slots::slot(&key))).await
        })
    }

    fn key_abandon(&self, key: &str) {
        // Not awaited by the caller: the key would otherwise stay "in
        // use" until KEY_IN_FLIGHT_MS. It is not given back (its change
        // may have been made): the next request under it takes over.
        let client = self.pool.next().clone();
        let script = self.scripts.key_abandon.clone();
        let keys = vec![self.idem_key(key)];
        let prefix = self.argv_prefix.clone();
        tokio::spawn(async move {
            let _: Result<Value, _> = script
                .evalsha_with_reload(&client, keys, vec![prefix])
                .await;
        });
    }

    fn answer_bytes_max(&self) -> usize {
        self.options.answer_bytes_max
    }

    fn retune(&self, tunables: Tunables) {
        self.tunables.store(tunables);
    }

    fn pipelines(&self) -> bool {
        true
    }

    /// On a cluster: a one-slot reservation of SKUs without buckets (its
    /// due time lowered by `before_run`, it is one script); a saga or a
    /// bucketed SKU takes several awaited steps.
    fn pipelines_reserve(&self, skus: &[&str]) -> bool {
        if !self.clustered {
            return true;
        }
        let Some(first) = skus.first() else {
            return true;
        };
        let home = slots::slot(first);
        skus.iter()
            .all(|s| self.buckets_of(s).is_none() && slots::slot(s) == home)
    }

    /// On a cluster: not a hold across slots (its end is settled after).
    fn pipelines_act(&self, id: &str) -> bool {
        !self.clustered || id.parse::<HoldId>().is_ok_and(|id| id.slot & SAGA_BIT == 0)
    }

    fn before_run<'a>(
        &'a self,
        pending: &'a Pending,
        reservations: Vec<(Vec<&'a str>, Option<u64>)>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if !self.clustered {
                return Ok(());
            }
            let tunables = self.tunables.load();
            let now = self.now_ms();
            let mut lowest: Vec<(u16, u64)> = Vec::new();
            for (skus, ttl_ms) in reservations {
                let Some(first) = skus.first() else { continue };
                let slot = slots::slot(first);
                let ttl = ttl_ms
                    .unwrap_or(tunables.default_ttl_ms)
                    .min(tunables.max_ttl_ms);
                let at = now.saturating_add(ttl).saturating_sub(1_000);
                match lowest.iter_mut().find(|(s, _)| *s == slot) {
                    Some((_, a)) => *a = (*a).min(at),
                    None => lowest.push((slot, at)),
                }
            }
            let lowered = futures_util::future::join_all(
                lowest.iter().map(|&(slot, at)| self.due_at_most(slot, at)),
            )
            .await;
            for (result, &(slot, at)) in lowered.into_iter().zip(&lowest) {
                result?;
                pending.note_due(slot, at);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::connect::redact;
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            redact("redis://:secret@10.0.0.1:6379"),
            "redis://***@10.0.0.1:6379"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_missing_or_garbled_count_is_an_error_never_a_number() {
        let reply = [
            Value::Integer(7),
            Value::from("12"),
            Value::from("twelve"),
            Value::Integer(-1),
            Value::Null,
        ];
        assert_eq!(int(&reply, 0).unwrap(), 7);
        assert_eq!(int(&reply, 1).unwrap(), 12);
        for i in [2, 3, 4, 5] {
            let e = int(&reply, i).expect_err("not a count");
            assert!(e.to_string().contains("unexpected reply"), "{e}");
        }
        // A hold's fields: a garbled expiry is not a hold that expired at 0.
        let hold = [
            Value::from("0"),
            Value::from("held"),
            Value::from("c-1"),
            Value::from("1000"),
            Value::from("soon"),
            Value::from(""),
            Value::from("a 1"),
        ];
        assert!(view(HoldId::from_parts(1, 0, 0, 0), &hold).is_err());
    }
}
