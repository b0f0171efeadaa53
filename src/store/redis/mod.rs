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

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use fred::prelude::*;
use smallvec::SmallVec;

mod drops;
mod events;
pub mod scripts;
mod webhooks;
use super::slots;
use super::{Error, Pending, Scope, Store, StoreFuture};
use crate::config::{Redis as RedisConfig, RedisDurability};
use crate::engine::{
    self, check_order_ref, check_reservation, check_sku, check_stock, Fill, HoldId, ItemRequest,
    ItemView, Reservation, ReserveRequest, SkuView, Status, TunableCells, Tunables, STOCK_MAX,
};
use crate::idempotency::{Begin, Stored};
pub use drops::{DropLog, TAIL_EVERY as DROPS_TAIL_EVERY};
pub use events::OPENED_MARK_MS;
use scripts::{Scripts, Tells};

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
}

/// Why the redis store would not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store.redis.url: {0}")]
    Url(String),
    #[error("cannot reach Redis at {url}: {error}")]
    Connect { url: String, error: String },
    #[error("store.redis.durability = \"fsync\" needs Redis with {setting}, and it runs {found:?}: set it (CONFIG SET {setting_name} {want}) or choose durability = \"relaxed\"")]
    Persistence {
        setting: &'static str,
        setting_name: &'static str,
        want: &'static str,
        found: String,
    },
    #[error("Redis: {0}")]
    Redis(String),
}

impl StartError {
    /// The same refusal, naming the cluster node it is about.
    fn on_node(self, node: &str) -> StartError {
        match self {
            StartError::Persistence {
                setting,
                setting_name,
                want,
                found,
            } => StartError::Persistence {
                setting,
                setting_name,
                want,
                found: format!("{found} on {node}"),
            },
            StartError::Redis(e) => StartError::Redis(format!("{node}: {e}")),
            other => other,
        }
    }
}

/// `redis-cluster://[USER:PASS@]HOST:PORT[,HOST:PORT...]` (the contract's
/// form) as fred reads it: the first seed node in the authority, the
/// others as `node=` parameters.
/// This node's start number: `INCR P:epoch`, and with
/// `store.redis.wait_replicas` the replicas must have it before the node
/// starts (`WAIT`), as every change must.
async fn take_epoch(
    pool: &Pool,
    prefix: &str,
    r: &RedisConfig,
    clustered: bool,
) -> Result<u32, StartError> {
    let key = format!("{prefix}:epoch");
    let client = pool.next();
    let epoch: i64 = client
        .incr(key.as_str())
        .await
        .map_err(|e| StartError::Redis(e.to_string()))?;
    if r.wait_replicas > 0 {
        let timeout = (r.command_timeout_ms * 3 / 4).max(1) as i64;
        let replicas = i64::from(r.wait_replicas);
        let owner = clustered
            .then(|| client.cached_cluster_state())
            .flatten()
            .and_then(|state| state.get_server(slots::slot(&key)).cloned());
        let acked: i64 = match owner {
            Some(server) => {
                client
                    .with_cluster_node(server)
                    .wait(replicas, timeout)
                    .await
            }
            None => client.wait(replicas, timeout).await,
        }
        .map_err(|e| StartError::Redis(e.to_string()))?;
        if acked < replicas {
            return Err(StartError::Redis(format!(
                "{key}: only {acked} of store.redis.wait_replicas = {replicas} replicas have this node's start number within {timeout} ms"
            )));
        }
    }
    u32::try_from(epoch).map_err(|_| StartError::Redis(format!("{key} is past 2^32: {epoch}")))
}

/// Where a node's hold and operation counters start: at random (62 bits),
/// so that two nodes given the same start number (`P:epoch` rolled back
/// by a failover that lost the `INCR`, or by a restore) still never hand
/// out the same hold id, adjust marker or key token: their counters
/// would have to come within the holds each makes of each other, about
/// one chance in 2^62 / (holds made) per such pair.
fn random_start() -> Result<u64, StartError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StartError::Redis(format!("no random start for the hold counter: {e}")))?;
    Ok(u64::from_le_bytes(bytes) >> 2)
}

fn cluster_url(url: &str) -> Result<String, StartError> {
    let rest = &url["redis-cluster://".len()..];
    let (auth, hosts) = match rest.rfind('@') {
        Some(at) => (&rest[..=at], &rest[at + 1..]),
        None => ("", rest),
    };
    let mut seeds = hosts.split(',').map(str::trim);
    let first = seeds.next().filter(|h| !h.is_empty()).ok_or_else(|| {
        StartError::Url("redis-cluster:// needs at least one HOST:PORT seed node".into())
    })?;
    let mut out = format!("redis-cluster://{auth}{first}");
    for (i, seed) in seeds.enumerate() {
        if seed.is_empty() || seed.contains(['/', '?', '&', '@']) {
            return Err(StartError::Url(format!(
                "redis-cluster:// seed node {} is not HOST:PORT: {seed:?}",
                i + 2
            )));
        }
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str("node=");
        out.push_str(seed);
    }
    Ok(out)
}

impl RedisStore {
    /// Connects (pool size, timeouts and reconnect policy set explicitly),
    /// checks persistence against `durability`, loads the scripts and takes
    /// this node's start number.
    pub async fn connect(options: Options) -> Result<RedisStore, StartError> {
        let r = &options.redis;
        let clustered = r.url.starts_with("redis-cluster://");
        let url = if clustered {
            cluster_url(&r.url)?
        } else {
            r.url.clone()
        };
        let config = Config::from_url(&url).map_err(|e| StartError::Url(e.to_string()))?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(r.connect_timeout_ms);
                c.internal_command_timeout = Duration::from_millis(r.command_timeout_ms);
                c.max_command_attempts = 3;
                // Redirections are followed by `RedisStore::eval`, not by
                // the client (see there).
                if clustered {
                    c.max_redirections = 0;
                }
                c.unresponsive = fred::types::config::UnresponsiveConfig {
                    max_timeout: Some(Duration::from_millis(r.unresponsive_timeout_ms)),
                    interval: Duration::from_millis((r.unresponsive_timeout_ms / 4).max(50)),
                };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_millis(r.command_timeout_ms);
            })
            // Never give up reconnecting (a server must come back when
            // Redis does), but never wait long between tries either.
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                50,
                u32::try_from(r.reconnect_max_delay_ms).unwrap_or(u32::MAX),
                2,
            ));
        let pool = builder
            .build_pool(r.pool_size)
            .map_err(|e| StartError::Url(e.to_string()))?;
        let connect = |e: fred::error::Error| StartError::Connect {
            url: r.url.clone(),
            error: e.to_string(),
        };
        // init() would retry forever under the policy: bound the first try.
        let connected = tokio::time::timeout(
            Duration::from_millis(r.connect_timeout_ms.saturating_mul(2)),
            pool.init(),
        )
        .await;
        match connected {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(connect(e)),
            Err(_) => {
                let _ = pool.quit().await;
                return Err(StartError::Connect {
                    url: r.url.clone(),
                    error: format!("no connection within {} ms", r.connect_timeout_ms * 2),
                });
            }
        }
        let persistence = if clustered {
            // Every primary: a change is answered by the one that owns its
            // slot, so each must keep the promise.
            let client = pool.next();
            let primaries = client
                .cached_cluster_state()
                .map(|state| state.unique_primary_nodes())
                .unwrap_or_default();
            if primaries.is_empty() {
                return Err(StartError::Redis("the cluster lists no primary".into()));
            }
            let mut found = Vec::new();
            for server in primaries {
                let on = client.with_cluster_node(server.clone());
                let said = check_persistence(&on, r.durability)
                    .await
                    .map_err(|e| e.on_node(&server.to_string()))?;
                found.push(format!("{server}: {said}"));
            }
            found.join("; ")
        } else {
            check_persistence(pool.next(), r.durability).await?
        };
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .load(pool.next())
                .await
                .map_err(|e| StartError::Redis(e.to_string()))?;
        }
        let prefix = r.key_prefix.clone();
        // The first layout kept every hold under P:h:ID and one P:expiry;
        // this one keeps them per slot and would not see those holds.
        let exists = |key: String| async {
            pool.next()
                .exists::<i64, _>(key)
                .await
                .map(|n| n > 0)
                .map_err(|e| StartError::Redis(e.to_string()))
        };
        if exists(format!("{prefix}:expiry")).await? {
            return Err(StartError::Redis(format!(
                "{prefix}:expiry exists: this Redis holds data of the redis store's first layout (holds under {prefix}:h:ID), which this version does not read; let those holds end, then delete {prefix}:expiry and {prefix}:h:*, or choose another store.redis.key_prefix"
            )));
        }
        // A bucketed SKU's stock lives in its buckets only: stock already in
        // its one key would be invisible.
        for sku in r.buckets.keys() {
            if exists(format!("{prefix}:{{{sku}}}")).await? {
                return Err(StartError::Redis(format!(
                    "store.redis.buckets names {sku}, whose stock is in one key ({prefix}:{{{sku}}}): let its holds end and delete the key first, or leave it out of store.redis.buckets"
                )));
            }
        }
        let epoch = take_epoch(&pool, &prefix, r, clustered).await?;
        let drops = options.drops;
        let argv_prefix = format!("{prefix}|{}", options.events.retained_max.max(1));
        let store = RedisStore {
            pool,
            scripts,
            argv_prefix,
            events_read: tokio::sync::Mutex::new((0, 0)),
            events_to_move: (0..slots::SLOTS / 64).map(|_| AtomicU64::new(0)).collect(),
            events_scan_next: AtomicU64::new(u64::from(epoch)),
            due_scan_next: AtomicU64::new(u64::from(epoch)),
            events_moved: parking_lot::Mutex::new(std::collections::HashMap::new()),
            outbox: std::sync::OnceLock::new(),
            prefix,
            tunables: TunableCells::new(options.tunables),
            options,
            epoch,
            next_hold: AtomicU64::new(random_start()?),
            next_op: AtomicU64::new(random_start()?),
            next_bucket: AtomicU64::new(0),
            hold_skus: Default::default(),
            lease_tokens: Default::default(),
            sweeps_done: AtomicU64::new(0),
            persistence,
            clustered,
            drops: DropLog::new(drops),
            due_owed: parking_lot::Mutex::new(std::collections::HashMap::new()),
            due_down_until: AtomicU64::new(0),
            replica_counts: parking_lot::Mutex::new((0, std::collections::HashMap::new())),
            clock_offsets: parking_lot::Mutex::new(std::collections::BTreeMap::new()),
        };
        store.look_at_primaries(true).await;
        Ok(store)
    }

    /// What `/v1/stats` says of this store.
    pub fn stats(&self) -> serde_json::Value {
        let r = &self.options.redis;
        serde_json::json!({
            "kind": "redis",
            "url": redact(&r.url),
            "durability": match r.durability {
                RedisDurability::Fsync => "fsync",
                RedisDurability::Relaxed => "relaxed",
            },
            "wait_replicas": r.wait_replicas,
            "due_owed": self.due_owed.lock().len(),
            "replicas_online": self.replica_counts.lock().1.clone(),
            "clock_offsets_ms": self.clock_offsets.lock().clone(),
            "persistence": self.persistence,
            "node_epoch": self.epoch,
            "sweeps": self.sweeps_done.load(Relaxed),
        })
    }

    /// What start-up found about persistence (said on stderr too).
    pub fn persistence(&self) -> &str {
        &self.persistence
    }

    /// Expires the holds whose time is up, in batches, until none is due;
    /// returns how many. Every node runs this every
    /// `holds.sweep_interval_ms`: it takes the slots whose due time has
    /// come (Redis's clock) from `P:due`, sweeps `SWEEP_SLOTS` of them at
    /// a time, and sets each slot's due time to its earliest expiry left.
    pub async fn sweep(&self) -> Result<u64, Error> {
        self.pay_due_owed().await;
        self.look_at_primaries(false).await;
        let scanned = match self.clustered {
            true => self.due_scan().await,
            false => Ok(()),
        };
        let mut total = 0;
        loop {
            let due: Vec<Value> = self
                .run(
                    Scope::Now,
                    &self.scripts.due_list,
                    vec![self.key("due")],
                    vec![self.argv_prefix.clone(), DUE_BATCH.to_string()],
                )
                .await?;
            let due = scored(Value::Array(due))?;
            let full = due.len() == DUE_BATCH as usize;
            for chunk in due.chunks(SWEEP_SLOTS) {
                let swept = futures_util::future::join_all(
                    chunk
                        .iter()
                        .map(|&(slot, seen)| async move { self.sweep_slot(slot, seen).await }),
                )
                .await;
                for n in swept {
                    total += n?;
                }
            }
            if !full {
                self.sweeps_done.fetch_add(1, Relaxed);
                return scanned.map(|()| total);
            }
        }
    }

    /// On a cluster, `P:due` is in another slot than the holds it points
    /// at, and a failover of its primary can lose its last writes: a
    /// slot whose entry was lost would be swept only once a reservation
    /// there lowered it again. Each sweep looks at the next
    /// [`DUE_SCAN_SLOTS`] slots' expiry indexes and todos, and gives a
    /// slot with something overdue its due time again.
    async fn due_scan(&self) -> Result<(), Error> {
        let share = slots::share(&self.due_scan_next, DUE_SCAN_SLOTS);
        let peeks = futures_util::future::join_all(share.iter().map(|&slot| {
            self.run(
                Scope::Now,
                &self.scripts.due_peek,
                vec![self.expiry_key(slot), self.todo_key(slot)],
                vec![self.argv_prefix.clone()],
            )
        }))
        .await;
        let late = self.now_ms().saturating_sub(DUE_SCAN_LATE_MS);
        let grace = self.saga_grace_ms();
        let mut lowers = Vec::new();
        for (&slot, peek) in share.iter().zip(peeks) {
            let peek = peek?;
            let at = |i: usize| {
                peek.get(i)
                    .and_then(Value::as_i64)
                    .and_then(|t| u64::try_from(t).ok())
            };
            let due = [at(0), at(1).map(|t| t.saturating_add(grace))]
                .into_iter()
                .flatten()
                .min();
            if let Some(due) = due.filter(|&due| due <= late) {
                lowers.push(self.due_at_most(slot, due));
            }
        }
        for lowered in futures_util::future::join_all(lowers).await {
            lowered?;
        }
        Ok(())
    }

    /// Sweeps one slot until nothing there is due, then sets its due time
    /// (unless a reservation lowered it meanwhile).
    async fn sweep_slot(&self, slot: u16, seen: u64) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.sweep,
                    vec![self.expiry_key(slot), self.todo_key(slot)],
                    vec![
                        self.argv_prefix.clone(),
                        SWEEP_BATCH.to_string(),
                        self.retention(),
                        slots::tag(slot).to_owned(),
                    ],
                )
                .await?;
            total += int(&reply, 0)?;
            if int(&reply, 1)? == 0 {
                let mut earliest = reply.get(2).and_then(Value::as_i64).unwrap_or(-1);
                // Sagas to finish: holds across slots that just expired, or
                // a saga whose node died. Until the todo is empty the slot
                // stays due within the grace.
                let todo_first = reply.get(4).and_then(Value::as_i64).unwrap_or(-1);
                if todo_first >= 0 {
                    // Another node finishing it: look again soon; else what
                    // is left are sagas still within their grace.
                    let again = if self.finish_todo(slot).await? {
                        todo_first.saturating_add(self.saga_grace_ms() as i64)
                    } else {
                        self.now_ms().saturating_add(LEASE_RETRY_MS) as i64
                    };
                    earliest = if earliest < 0 {
                        again
                    } else {
                        earliest.min(again)
                    };
                }
                self.run(
                    Scope::Now,
                    &self.scripts.due_settle,
                    vec![self.key("due")],
                    vec![
                        self.argv_prefix.clone(),
                        slot.to_string(),
                        seen.to_string(),
                        earliest.to_string(),
                    ],
                )
                .await?;
                return Ok(total);
            }
        }
    }

    /// Stops the connections.
    pub async fn close(&self) {
        let _ = self.pool.quit().await;
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    fn sku_key(&self, sku: &str) -> String {
        format!("{}:{{{sku}}}", self.prefix)
    }

    fn tally_key(&self, sku: &str) -> String {
        format!("{}:{{{sku}}}:c", self.prefix)
    }

    /// A hold's record, in its slot (the id carries the slot).
    fn hold_key(&self, id: HoldId) -> String {
        format!(
            "{}:{{{}}}:h:{}",
            self.prefix,
            slots::tag(id.shard),
            id.text().as_str()
        )
    }

    /// A slot's expiry index.
    fn expiry_key(&self, slot: u16) -> String {
        format!("{}:{{{}}}:x", self.prefix, slots::tag(slot))
    }

    fn idem_key(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
    }

    /// The set of live idempotency keys `idem_key` counts among, and how
    /// many it may hold. One server: one set, `idempotency.keys_max`. A
    /// cluster: the set of the key's own slot (a script reaches one
    /// slot), `keys_max / 16384 × 2 + 8` each, room for the slots' uneven
    /// shares, so the whole is at most about twice `keys_max`.
    fn idem_live(&self, idem_key: &str) -> (String, usize) {
        let max = self.options.idempotency_keys_max;
        if self.clustered {
            let tag = slots::tag(slots::slot(idem_key));
            let per_slot = max.div_ceil(slots::SLOTS) * 2 + 8;
            (format!("{}:{{{tag}}}:kl", self.prefix), per_slot)
        } else {
            (format!("{}:kl", self.prefix), max)
        }
    }

    fn retention(&self) -> String {
        // PEXPIRE 0 would delete at once; an ended hold stays readable at
        // least a moment, as the embedded store's until the next purge.
        self.options.retention_ms.max(1).to_string()
    }

    /// A name for one change no other node or start uses: what a command
    /// sent again after a reconnect is recognised by.
    fn op_id(&self) -> String {
        format!("{}-{}", self.epoch, self.next_op.fetch_add(1, Relaxed))
    }

    /// A new hold id whose record lives in `slot`; `saga` marks a hold
    /// across slots (its ending must be settled SKU by SKU).
    fn next_id(&self, slot: u16, saga: bool, draw: Option<Draw>) -> HoldId {
        let (epoch, n) = match draw {
            Some(d) => (d.epoch, d.n),
            None => (self.epoch, self.next_hold.fetch_add(1, Relaxed)),
        };
        let high = (n >> 32) as u32 & !SAGA_BIT | if saga { SAGA_BIT } else { 0 };
        HoldId::from_parts(epoch, slot, high, n as u32)
    }

    /// For a keyed request (a seeded `Pending`): the number its op whose
    /// content is `content` draws, with the start number of the node that
    /// first took the key (the seed is that node's token, `EPOCH-N`), so
    /// that any node running it again makes the same id.
    fn draw(&self, scope: Scope<'_>, content: impl FnOnce() -> String) -> Option<Draw> {
        let Scope::Deferred(pending) = scope else {
            return None;
        };
        let epoch = pending.seed()?.split('-').next()?.parse().ok()?;
        Some(Draw {
            epoch,
            n: pending.draw(&content())?,
            resumed: pending.is_resumed(),
        })
    }

    /// An adjust's operation id: drawn from a keyed request's seed, or
    /// this node's next.
    fn adjust_op(&self, scope: Scope<'_>, sku: &str, delta: i64) -> String {
        match self.draw(scope, || format!("adjust {sku} {delta}")) {
            Some(d) => format!("{}-k{:x}", d.epoch, d.n),
            None => self.op_id(),
        }
    }

    /// The slot a reservation's hold lives in (its first SKU's), and
    /// whether its SKUs span slots on a cluster (then it is a saga).
    fn home_slot(&self, req: &ReserveRequest<'_>) -> (u16, bool) {
        // Validated: a reservation has at least one item.
        let home = req.items.first().map_or(0, |i| slots::slot(i.sku));
        let across = self.clustered && req.items.iter().any(|i| slots::slot(i.sku) != home);
        (home, across)
    }

    /// A slot's list of sagas to finish.
    fn todo_key(&self, slot: u16) -> String {
        format!("{}:{{{}}}:todo", self.prefix, slots::tag(slot))
    }

    /// The keys a saga's step on one SKU touches: the SKU's hash, its
    /// tally, the saga's marker on it.
    fn saga_keys(&self, sku: &str, id: HoldId) -> Vec<String> {
        vec![
            self.sku_key(sku),
            self.tally_key(sku),
            self.marker_key(sku, id),
        ]
    }

    /// A saga's marker on one SKU.
    fn marker_key(&self, sku: &str, id: HoldId) -> String {
        format!("{}:{{{sku}}}:r:{}", self.prefix, id.text().as_str())
    }

    /// How long a saga may run before any node undoes it as abandoned:
    /// far past what a live node takes (a few commands, each bounded by
    /// the command timeout).
    fn saga_grace_ms(&self) -> u64 {
        self.options
            .redis
            .command_timeout_ms
            .saturating_mul(4)
            .max(5_000)
    }

    /// How long a saga's marker is kept: as long as its hold can live,
    /// plus its retention and the grace.
    fn marker_ms(&self) -> u64 {
        self.tally_ms().saturating_add(self.saga_grace_ms())
    }

    fn tally_ms(&self) -> u64 {
        self.tunables
            .load()
            .max_ttl_ms
            .saturating_add(self.options.retention_ms)
            .max(1)
    }

    /// Lowers `slot`'s due time to `at_ms` for a change on the request
    /// path, which must not depend on `P:due`'s primary: a lowering that
    /// fails, or takes over [`DUE_LOWER_WAIT`], is owed instead and paid
    /// by the next sweeps (and should this node die first, the look
    /// through every slot, `due_scan`, finds the overdue slot: its holds
    /// are then swept up to a round late). For a second after a failure
    /// lowerings are owed at once, not tried.
    async fn lower_due(&self, slot: u16, at_ms: u64) {
        let now = self.now_ms();
        if now >= self.due_down_until.load(Relaxed) {
            match tokio::time::timeout(DUE_LOWER_WAIT, self.due_at_most(slot, at_ms)).await {
                Ok(Ok(())) => return,
                _ => self
                    .due_down_until
                    .store(now.saturating_add(DUE_DOWN_MS), Relaxed),
            }
        }
        self.owe_due(slot, at_ms);
    }

    fn owe_due(&self, slot: u16, at_ms: u64) {
        let mut owed = self.due_owed.lock();
        let at = owed.entry(slot).or_insert(at_ms);
        *at = (*at).min(at_ms);
    }

    /// Pays the owed lowerings (at the start of each sweep); what still
    /// fails stays owed.
    async fn pay_due_owed(&self) {
        let owed: Vec<(u16, u64)> = self.due_owed.lock().drain().collect();
        if owed.is_empty() {
            return;
        }
        let paid = futures_util::future::join_all(
            owed.iter().map(|&(slot, at)| self.due_at_most(slot, at)),
        )
        .await;
        let mut failed = false;
        for (result, (slot, at)) in paid.into_iter().zip(owed) {
            if result.is_err() {
                failed = true;
                self.owe_due(slot, at);
            }
        }
        if !failed {
            self.due_down_until.store(0, Relaxed);
        }
    }

    /// Lowers `slot`'s due time to `at_ms` (never raises it; a slot
    /// already due is moved 1 ms earlier, so that a sweep under way fails
    /// its compare-and-set: `DUE_LOWER`). Not waited for on replicas: a
    /// lost lowering is found again by the cluster's look through every
    /// slot (`due_scan`).
    async fn due_at_most(&self, slot: u16, at_ms: u64) -> Result<(), Error> {
        let _: Value = self
            .eval(
                self.pool.next(),
                &self.scripts.due_lower,
                vec![self.key("due")],
                vec![
                    self.argv_prefix.clone(),
                    slot.to_string(),
                    at_ms.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The connection for a change in `scope`: every change deferred into
    /// one `Pending` (a batch) goes on the same connection, so Redis runs
    /// them in the order they were sent (a pipeline: see
    /// [`Store::pipelines`]); others take the pool's next.
    fn client(&self, scope: Scope<'_>) -> &Client {
        match scope {
            Scope::Deferred(pending) => {
                let clients = self.pool.clients();
                let at = (pending as *const Pending as usize) / std::mem::align_of::<Pending>();
                &clients[at % clients.len()]
            }
            Scope::Now => self.pool.next(),
        }
    }

    /// One script on one connection, then `WAIT` for the replicas on that
    /// same connection when asked to (a change is answered only once
    /// `wait_replicas` replicas have it).
    ///
    /// On a cluster every key a script touches is in its KEYS (see
    /// `declared` in `scripts`): the script's event stream is added
    /// here, and a script that answers `{'need', key, ...}` (keys it found
    /// by reading, having written nothing) runs again with them. A slot
    /// that is migrating answers `TRYAGAIN` until every declared key is on
    /// one node: nothing ran, so the script is tried again a few times.
    async fn run(
        &self,
        scope: Scope<'_>,
        script: &fred::types::scripts::Script,
        mut keys: Vec<String>,
        mut args: Vec<String>,
    ) -> Result<Vec<Value>, Error> {
        let client = self.client(scope);
        let keys_slot = keys.first().map(|k| slots::slot(k));
        // On a cluster a script that tells events writes them to its own
        // slot's stream, moved into the event stream after (see
        // `store::redis::events`).
        let tells = match (self.clustered, keys_slot) {
            (true, Some(slot)) => match self.scripts.tells(script) {
                Tells::Never => None,
                tells => {
                    if let Some(first) = args.first_mut() {
                        first.push('|');
                        first.push_str(slots::tag(slot));
                    }
                    keys.push(self.slot_events_key(slot));
                    Some((slot, tells))
                }
            },
            _ => None,
        };
        if self.clustered {
            if let Some(first) = args.first_mut() {
                first.push('!');
            }
        }
        let reply = self.eval(client, script, keys, args).await;
        if let Some((slot, tells)) = tells {
            // A script that failed may have run all the same.
            let told = match (&reply, tells) {
                (Ok(Value::Array(a)), Tells::AsAnswered) => a.get(7) == Some(&Value::Integer(1)),
                _ => true,
            };
            if told {
                self.events_to_move(slot);
            }
        }
        let reply: Value = reply.map_err(unavailable)?;
        let replicas = match self.clustered && self.scripts.is_saga_step(script) {
            true => self.saga_replicas(keys_slot),
            false => self.options.redis.wait_replicas,
        };
        self.replicated_on(client, keys_slot, replicas).await?;
        Ok(reply.into_array())
    }

    /// A script, once; on a Redis Cluster (see `run`) again with the keys
    /// it said it needs, and again while its slot moves: after `TRYAGAIN`,
    /// and after a redirection, which the client does not follow itself
    /// (`max_redirections` 0: fred 10 answers an `ASK` by sending `ASKING`
    /// and reading the next reply on a connection that may have other
    /// commands in flight, which takes their reply for its own and leaves
    /// the connection's replies one behind; seen as requests timing out
    /// for good after a reshard). A `MOVED` has the client re-read the
    /// cluster's map first, so the next try goes to the new owner.
    pub(super) async fn eval<A>(
        &self,
        client: &Client,
        script: &fred::types::scripts::Script,
        mut keys: Vec<String>,
        args: Vec<A>,
    ) -> Result<Value, fred::error::Error>
    where
        A: Into<Value> + Clone + Send,
    {
        if !self.clustered {
            return script.evalsha_with_reload(client, keys, args).await;
        }
        let mut rounds = 0;
        let mut tries = 0;
        loop {
            let reply = script
                .evalsha_with_reload(client, keys.clone(), args.clone())
                .await;
            match &reply {
                Err(e) if slot_moving(e) && tries < TRYAGAIN_TRIES => {
                    tries += 1;
                    tokio::time::sleep(TRYAGAIN_PAUSE).await;
                }
                Ok(Value::Array(a))
                    if a.first().and_then(Value::as_str).as_deref() == Some("need") =>
                {
                    rounds += 1;
                    if rounds > NEED_ROUNDS {
                        return Err(fred::error::Error::new(
                            fred::error::ErrorKind::Unknown,
                            format!("a script still needed keys after {NEED_ROUNDS} rounds"),
                        ));
                    }
                    keys.extend(a[1..].iter().filter_map(Value::as_string));
                }
                _ => return reply,
            }
        }
    }

    /// How many replicas a saga's step waits for: every replica the
    /// primary that ran it has (at the last count, `look_at_primaries`), and
    /// at least `wait_replicas`. A saga's record and its SKUs' markers are
    /// on different primaries: a failover that lost one half and kept the
    /// other could sell a unit twice or leave `held` stuck, so no step is
    /// answered before the replica that would take over has it.
    fn saga_replicas(&self, slot: Option<u16>) -> u32 {
        let counted = self
            .owner(&slot)
            .and_then(|server| {
                self.replica_counts
                    .lock()
                    .1
                    .get(&server.to_string())
                    .copied()
            })
            .unwrap_or(0);
        counted.max(self.options.redis.wait_replicas)
    }

    /// Looks at each primary: its clock (`read_clocks`) and its replicas online (`INFO
    /// replication`), at most every [`REPLICAS_COUNT_MS`] (each sweep asks;
    /// and once at start). A primary that does not answer keeps its last
    /// count.
    async fn look_at_primaries(&self, force: bool) {
        if !self.clustered {
            return;
        }
        let now = self.now_ms();
        {
            let mut counts = self.replica_counts.lock();
            if !force && now < counts.0.saturating_add(REPLICAS_COUNT_MS) {
                return;
            }
            counts.0 = now;
        }
        let client = self.pool.next();
        let Some(state) = client.cached_cluster_state() else {
            return;
        };
        let primaries = state.unique_primary_nodes();
        let infos = futures_util::future::join_all(primaries.iter().map(|server| async move {
            client
                .with_cluster_node(server.clone())
                .info::<String>(Some(fred::types::InfoKind::Replication))
                .await
        }))
        .await;
        self.read_clocks(client, &primaries).await;
        let mut counts = self.replica_counts.lock();
        for (server, info) in primaries.iter().zip(infos) {
            if let Ok(info) = info {
                let online = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                    .count();
                counts.1.insert(
                    server.to_string(),
                    u32::try_from(online).unwrap_or(u32::MAX),
                );
            }
        }
    }

    /// Reads each primary's clock (`TIME`) against this node's, the reply
    /// taken as read halfway through the round trip; says once on stderr
    /// when one is more than [`CLOCK_WARN_MS`] apart (holds there end that
    /// much early or late as this node's clock sees it; the sweep looks
    /// at `P:due` on another primary's clock).
    async fn read_clocks(&self, client: &Client, primaries: &[fred::types::config::Server]) {
        let reads = futures_util::future::join_all(primaries.iter().map(|server| async move {
            let before = self.now_ms();
            let time: Result<Vec<String>, _> = client
                .with_cluster_node(server.clone())
                .custom(
                    fred::types::CustomCommand::new_static(
                        "TIME",
                        fred::types::ClusterHash::Random,
                        false,
                    ),
                    Vec::<Value>::new(),
                )
                .await;
            let after = self.now_ms();
            let time = time.ok()?;
            let secs: i64 = time.first()?.parse().ok()?;
            let micros: i64 = time.get(1)?.parse().ok()?;
            let mid = i64::try_from(before / 2 + after / 2).ok()?;
            Some(secs * 1000 + micros / 1000 - mid)
        }))
        .await;
        let mut offsets = self.clock_offsets.lock();
        for (server, offset) in primaries.iter().zip(reads) {
            let Some(offset) = offset else { continue };
            let name = server.to_string();
            let was = offsets.insert(name.clone(), offset);
            if offset.abs() > CLOCK_WARN_MS && was.is_none_or(|w| w.abs() <= CLOCK_WARN_MS) {
                crate::log_line!(
                    "stampede: warning: Redis primary {name}'s clock is {offset} ms from this node's: its holds end that much {} than this node's clock says",
                    if offset > 0 { "earlier" } else { "later" }
                );
            }
        }
    }

    /// With `store.redis.wait_replicas`: `WAIT` on `client` (the
    /// connection a change was just sent on) at the primary that owns
    /// `slot`, and a shortfall is an error (the change may have been made).
    async fn replicated(&self, client: &Client, keys_slot: Option<u16>) -> Result<(), Error> {
        self.replicated_on(client, keys_slot, self.options.redis.wait_replicas)
            .await
    }

    /// [`RedisStore::replicated`] for `replicas` replicas.
    async fn replicated_on(
        &self,
        client: &Client,
        keys_slot: Option<u16>,
        replicas: u32,
    ) -> Result<(), Error> {
        if replicas > 0 {
            // Inside the command timeout, so that Redis's own answer (how
            // many replicas have it) comes back before fred gives up.
            let timeout = (self.options.redis.command_timeout_ms * 3 / 4).max(1);
            let acked: i64 = match self.owner(&keys_slot) {
                Some(server) => client
                    .with_cluster_node(server)
                    .wait(i64::from(replicas), timeout as i64)
                    .await
                    .map_err(unavailable)?,
                None => client
                    .wait(i64::from(replicas), timeout as i64)
                    .await
                    .map_err(unavailable)?,
            };
            if acked < i64::from(replicas) {
                let wanted = match replicas == self.options.redis.wait_replicas {
                    true => format!("store.redis.wait_replicas = {replicas}"),
                    false => format!("the {replicas} (each step of a hold across slots waits for every replica of its primary)"),
                };
                return Err(Error::NotDurable(format!(
                    "only {acked} of {wanted} replicas have the change within {timeout} ms; it may have been made: retry with the same Idempotency-Key"
                )));
            }
        }
        Ok(())
    }

    /// On Redis Cluster, the primary that owns `slot` (where a change in
    /// it ran, and where `WAIT` must go).
    fn owner(&self, slot: &Option<u16>) -> Option<fred::types::config::Server> {
        if !self.clustered {
            return None;
        }
        let state = self.pool.next().cached_cluster_state()?;
        state.get_server((*slot)?).cloned()
    }

    /// A hold script's answer: the reservation, or the refusal its code
    /// names.
    fn reservation(&self, id: HoldId, reply: &[Value]) -> Result<Reservation, Error> {
        match int(reply, 0)? {
            0 => Ok(view(id, reply)?),
            4 => Err(engine::Error::HoldNotFound.into()),
            5 => Err(engine::Error::HoldNotActive {
                status: status(&text(reply, 1))?,
            }
            .into()),
            6 => Err(engine::Error::HoldExpired {
                expired_at_ms: int(reply, 1)?,
            }
            .into()),
            code => Err(bad_reply(format!("hold script code {code}"))),
        }
    }

    async fn hold_op(
        &self,
        scope: Scope<'_>,
        script: &fred::types::scripts::Script,
        id: HoldId,
        args: Vec<String>,
    ) -> Result<Reservation, Error> {
        let saga = id.slot & SAGA_BIT != 0;
        if saga {
            // Should this node die between the end and the settling, the
            // slot is swept (and its todo finished) within the grace.
            self.lower_due(id.shard, self.now_ms().saturating_add(self.saga_grace_ms()))
                .await;
        }
        let mut all = vec![self.argv_prefix.clone(), id.text().as_str().to_owned()];
        all.extend(args);
        let mut keys = vec![
            self.hold_key(id),
            self.expiry_key(id.shard),
            self.todo_key(id.shard),
        ];
        if self.clustered && !saga {
            if let Some(skus) = self.hold_skus.lock().get(&id) {
                for sku in skus.iter() {
                    keys.push(self.sku_key(sku));
                    keys.push(self.tally_key(sku));
                }
            }
        }
        let reply = self.run(scope, script, keys, all).await?;
        let reservation = self.reservation(id, &reply)?;
        if self.clustered && reservation.status != Status::Held {
            self.hold_skus.lock().remove(&id);
        }
        if reply.get(7).and_then(Value::as_i64) == Some(1) {
            // The keys' names (a bucket's, not its SKU's) from the record.
            let items = parse_items(&text(&reply, 6))?;
            self.settle_saga(id, &reservation, &items).await?;
        }
        Ok(reservation)
    }

    /// Settles each SKU of an ended hold across slots, then takes it off
    /// its slot's todo.
    async fn settle_saga(
        &self,
        id: HoldId,
        r: &Reservation,
        items: &[(String, u32)],
    ) -> Result<(), Error> {
        let to = match r.status {
            Status::Confirmed => "c",
            Status::Released => "r",
            _ => "e",
        };
        self.settle_items(id, &r.customer_id, items, to).await
    }

    async fn settle_items(
        &self,
        id: HoldId,
        customer: &str,
        items: &[(String, u32)],
        to: &str,
    ) -> Result<(), Error> {
        for (sku, _) in items {
            let settled = self
                .run(
                    Scope::Now,
                    &self.scripts.saga_settle,
                    self.saga_keys(sku, id),
                    vec![
                        self.argv_prefix.clone(),
                        customer.to_owned(),
                        to.to_owned(),
                        self.marker_ms().to_string(),
                    ],
                )
                .await?;
            if int(&settled, 0)? == 10 {
                // Fenced sagas are never committed (SAGA_FENCE): a bug.
                return Err(bad_reply(format!(
                    "hold {} ended, but its units of {sku} were undone",
                    id.text().as_str()
                )));
            }
        }
        self.run(
            Scope::Now,
            &self.scripts.todo_done,
            vec![self.todo_key(id.shard)],
            vec![self.argv_prefix.clone(), id.text().as_str().to_owned()],
        )
        .await?;
        Ok(())
    }

    /// A hold across slots (Redis Cluster): the saga. Its record first
    /// (pending), then each SKU in SKU order, each idempotent by its
    /// marker; on a refusal the taken SKUs are undone in reverse and every
    /// SKU tombstoned, then the record aborted; else committed.
    ///
    /// Run again under the same id (a command sent again, a request taking
    /// over under its key): a record that is a hold already answers its
    /// view; one undone answers [`SAGA_UNDONE`] when `resumed` (the caller
    /// tries the next id of its chain), else 503.
    async fn reserve_saga(
        &self,
        req: &ReserveRequest<'_>,
        id: HoldId,
        ttl_ms: u64,
        passed: &str,
        resumed: bool,
    ) -> Result<Reservation, Error> {
        let slot = id.shard;
        let fill = match req.fill {
            Fill::All => "a",
            Fill::Partial => "p",
        };
        let requested: Vec<String> = req
            .items
            .iter()
            .map(|i| format!("{} {}", i.sku, i.qty))
            .collect();
        // Should this node die mid-saga, the slot is swept within the grace
        // and the saga undone.
        self.lower_due(slot, self.now_ms().saturating_add(self.saga_grace_ms()))
            .await;
        let begun = self
            .run(
                Scope::Now,
                &self.scripts.saga_begin,
                vec![self.hold_key(id), self.todo_key(slot)],
                vec![
                    self.argv_prefix.clone(),
                    id.text().as_str().to_owned(),
                    req.customer_id.to_owned(),
                    ttl_ms.to_string(),
                    fill.to_owned(),
                    requested.join(" "),
                    self.retention(),
                ],
            )
            .await?;
        if int(&begun, 0)? == 1 {
            match text(&begun, 1).as_str() {
                // Still pending: its steps are each idempotent, run on.
                "p" => {}
                "u" | "x" if resumed => return Err(Error::NotDurable(SAGA_UNDONE.into())),
                "u" | "x" => return Err(Error::NotDurable(
                    "the reservation ran past its grace and was undone; nothing is held: try again"
                        .into(),
                )),
                _ => return Store::get(self, id).await,
            }
        }
        let mut order: Vec<usize> = (0..req.items.len()).collect();
        order.sort_by_key(|&i| req.items[i].sku);
        let mut grants = vec![0u32; req.items.len()];
        let mut refusal: Option<Error> = None;
        for &i in &order {
            let item = req.items[i];
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.saga_take,
                    {
                        let mut keys = self.saga_keys(item.sku, id);
                        keys.push(self.gate_key(item.sku));
                        keys
                    },
                    vec![
                        self.argv_prefix.clone(),
                        req.customer_id.to_owned(),
                        item.qty.to_string(),
                        fill.to_owned(),
                        self.marker_ms().to_string(),
                        passed.to_owned(),
                        item.sku.to_owned(),
                    ],
                )
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    self.undo_saga(id, req.customer_id, &requested_items(req))
                        .await;
                    return Err(e);
                }
            };
            let code = int(&reply, 0)?;
            if code == 0 {
                grants[i] = int(&reply, 1)? as u32;
                continue;
            }
            let err = match code {
                7 => Error::NotDurable(
                    "the reservation ran past its grace and was undone; nothing is held: try again"
                        .into(),
                ),
                _ => {
                    // The same refusal shape as the one-slot script's,
                    // naming item i.
                    let mut shaped =
                        vec![Value::Integer(code as i64), Value::Integer(i as i64 + 1)];
                    shaped.extend(reply.into_iter().skip(1));
                    match Self::reserve_answer(req, id, &shaped) {
                        Err(e) => e,
                        Ok(_) => bad_reply("a refusal read as a hold".into()),
                    }
                }
            };
            if req.fill == Fill::All || code == 7 {
                self.undo_saga(id, req.customer_id, &requested_items(req))
                    .await;
                return Err(err);
            }
            refusal.get_or_insert(err);
        }
        if grants.iter().all(|&g| g == 0) {
            self.undo_saga(id, req.customer_id, &requested_items(req))
                .await;
            return Err(refusal.unwrap_or_else(|| bad_reply("nothing granted, no refusal".into())));
        }
        let granted: Vec<String> = req
            .items
            .iter()
            .zip(&grants)
            .filter(|(_, &g)| g > 0)
            .map(|(i, g)| format!("{} {g}", i.sku))
            .collect();
        let reply = self
            .run(
                Scope::Now,
                &self.scripts.saga_commit,
                vec![
                    self.hold_key(id),
                    self.todo_key(slot),
                    self.expiry_key(slot),
                ],
                vec![
                    self.argv_prefix.clone(),
                    id.text().as_str().to_owned(),
                    granted.join(" "),
                ],
            )
            .await?;
        if int(&reply, 0)? == 8 {
            self.undo_saga(id, req.customer_id, &requested_items(req))
                .await;
            return Err(Error::NotDurable(
                "the reservation ran past its grace and was undone; nothing is held: try again"
                    .into(),
            ));
        }
        view(id, &reply)
    }

    /// Undoes a saga: fences its record (`SAGA_FENCE`: from then on it
    /// cannot commit; a saga already committed is left alone), then
    /// every SKU in reverse SKU order (tombstoning those
    /// never taken), then aborts its record. Best effort: what fails here
    /// is finished by the sweep of the hold's slot after the grace.
    async fn undo_saga(&self, id: HoldId, customer: &str, items: &[(String, u32)]) {
        // The fence first: from here the saga cannot commit; if it already
        // did, it is a hold and nothing is undone.
        let fenced = self
            .run(
                Scope::Now,
                &self.scripts.saga_fence,
                vec![self.hold_key(id)],
                vec![self.argv_prefix.clone()],
            )
            .await;
        match fenced {
            // A garbled answer undoes nothing (the safe side).
            Ok(reply) if int(&reply, 0).ok() == Some(0) => {}
            _ => return,
        }
        let mut skus: Vec<&str> = items.iter().map(|(s, _)| s.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        for sku in skus.into_iter().rev() {
            let undone = self
                .run(
                    Scope::Now,
                    &self.scripts.saga_undo,
                    self.saga_keys(sku, id),
                    vec![
                        self.argv_prefix.clone(),
                        customer.to_owned(),
                        self.marker_ms().to_string(),
                    ],
                )
                .await;
            if undone.is_err() {
                return;
            }
        }
        let _ = self
            .run(
                Scope::Now,
                &self.scripts.saga_abort,
                vec![self.hold_key(id), self.todo_key(id.shard)],
                vec![
                    self.argv_prefix.clone(),
                    id.text().as_str().to_owned(),
                    self.retention(),
                ],
            )
            .await;
    }

    /// Finishes what a slot's todo lists, under a lease (so nodes do not
    /// all do it at once; it lapses by itself if this node dies): sagas
    /// past their grace are undone, ended holds across slots settled.
    /// False if another node holds the lease.
    async fn finish_todo(&self, slot: u16) -> Result<bool, Error> {
        let Some(lease) = self.lease_take(slot).await? else {
            return Ok(false);
        };
        let finished = self.finish_todo_leased(slot).await;
        let _ = self.lease_free(&lease).await;
        finished.map(|()| true)
    }

    /// Takes slot `slot`'s recovery lease (one node at a time finishes a
    /// slot's todo) for the saga grace; `None`: another node holds it.
    pub async fn lease_take(&self, slot: u16) -> Result<Option<Lease>, Error> {
        let key = format!("{}:{{{}}}:lease", self.prefix, slots::tag(slot));
        let token = format!(
            "{}-{}",
            self.epoch,
            self.lease_tokens
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let taken: Option<String> = self
            .pool
            .next()
            .set(
                key.clone(),
                token.clone(),
                Some(Expiration::PX(self.saga_grace_ms() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(taken.map(|_| Lease { key, token }))
    }

    /// Frees `lease` if it is still ours: once it expired another node may
    /// have taken it, and deleting that one would let a third in beside
    /// it. Returns whether it was freed.
    pub async fn lease_free(&self, lease: &Lease) -> Result<bool, Error> {
        let reply = self
            .eval(
                self.pool.next(),
                &self.scripts.lease_free,
                vec![lease.key.clone()],
                vec![self.argv_prefix.clone(), lease.token.clone()],
            )
            .await
            .map_err(unavailable)?;
        Ok(int(&reply.into_array(), 0)? == 1)
    }

    async fn finish_todo_leased(&self, slot: u16) -> Result<(), Error> {
        let listed = self
            .run(
                Scope::Now,
                &self.scripts.todo_list,
                vec![self.todo_key(slot)],
                vec![
                    self.argv_prefix.clone(),
                    SWEEP_BATCH.to_string(),
                    self.saga_grace_ms().to_string(),
                    slots::tag(slot).to_owned(),
                ],
            )
            .await?;
        for entry in listed.chunks(4) {
            let [id, status, customer, items] = entry else {
                return Err(bad_reply(format!("todo entry {entry:?}")));
            };
            let text = |v: &Value| v.as_string().unwrap_or_default();
            let id: HoldId = text(id)
                .parse()
                .map_err(|_| bad_reply(format!("todo id {id:?}")))?;
            let items = parse_items(&text(items))?;
            match text(status).as_str() {
                "p" => self.undo_saga(id, &text(customer), &items).await,
                to @ ("c" | "r" | "e") => {
                    self.settle_items(id, &text(customer), &items, to).await?
                }
                other => return Err(bad_reply(format!("todo status {other:?}"))),
            }
        }
        Ok(())
    }

    /// One try at a reservation, under a fresh id in its home slot. On
    /// one Redis server the script lowers the slot's due time itself. On a
    /// cluster `P:due` is in another slot, so the node lowers it before
    /// the script (so a node dying right after the script leaves no hold
    /// that nobody sweeps; the estimate is a second early, for clocks
    /// apart) and after it, to the hold's expiry (so a sweep that ran in
    /// between cannot have lost it).
    async fn reserve_once(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        passed: &str,
        draw: Option<Draw>,
    ) -> Result<Reservation, Error> {
        let most = req
            .items
            .iter()
            .filter_map(|i| self.buckets_of(i.sku))
            .max()
            .unwrap_or(0);
        if most == 0 {
            return self.reserve_plain(scope, req, ttl_ms, passed, draw).await;
        }
        // Each try names one bucket of every bucketed SKU; a try refused
        // for stock moves every such SKU to its next bucket, until each
        // bucket has been tried once. A keyed request starts where its
        // seed says, so run again it tries the buckets in the same order.
        let first = match draw {
            Some(d) => d.n,
            None => self.next_bucket.fetch_add(1, Relaxed),
        };
        let names_of = |attempt: u64| -> Vec<String> {
            req.items
                .iter()
                .map(|i| match self.buckets_of(i.sku) {
                    Some(n) => bucket_name(i.sku, first.wrapping_add(attempt) % u64::from(n)),
                    None => i.sku.to_owned(),
                })
                .collect()
        };
        // Taking over from a first request under the key, which may have
        // held in a later bucket than one that has stock now: its hold is
        // looked for under each try's id first.
        if let Some(draw) = draw {
            if draw.resumed {
                for attempt in 0..u64::from(most) {
                    let names = names_of(attempt);
                    let items = named_items(req, &names);
                    let (slot, across) = self.home_slot(&ReserveRequest {
                        items: &items,
                        ..*req
                    });
                    let id = self.next_id(slot, across, Some(draw));
                    match Store::get(self, id).await {
                        Err(Error::Refused(engine::Error::HoldNotFound)) => {}
                        found => return found,
                    }
                }
            }
        }
        let mut last = None;
        for attempt in 0..u64::from(most) {
            let names = names_of(attempt);
            let items = named_items(req, &names);
            let one = ReserveRequest {
                items: &items,
                ..*req
            };
            match self.reserve_plain(scope, &one, ttl_ms, passed, draw).await {
                Err(Error::Refused(engine::Error::InsufficientStock {
                    sku,
                    requested,
                    available,
                })) if self.buckets_of(&sku).is_some() => {
                    last = Some(engine::Error::InsufficientStock {
                        sku,
                        requested,
                        available,
                    });
                }
                other => return other,
            }
        }
        // The refusal names the SKU; `available` is what its last bucket
        // had (the buckets are not read at one instant).
        match last {
            Some(engine::Error::InsufficientStock {
                sku,
                requested,
                available,
            }) => Err(engine::Error::InsufficientStock {
                sku: unbucketed(&sku).to_owned(),
                requested,
                available,
            }
            .into()),
            _ => Err(bad_reply("no bucket tried".into())),
        }
    }

    /// The buckets of `sku` (the SKU itself or one of its buckets' names),
    /// if it is spread over stock buckets.
    fn buckets_of(&self, sku: &str) -> Option<u32> {
        self.options.redis.buckets.get(unbucketed(sku)).copied()
    }

    async fn reserve_plain(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        passed: &str,
        draw: Option<Draw>,
    ) -> Result<Reservation, Error> {
        let (slot, across) = self.home_slot(req);
        let id = self.next_id(slot, across, draw);
        if across {
            // A request taking over under its key whose first try was
            // undone walks the chain of ids its seed gives (`generation`).
            let Some(draw) = draw.filter(|d| d.resumed) else {
                return self.reserve_saga(req, id, ttl_ms, passed, false).await;
            };
            for generation in 0..SAGA_GENERATIONS {
                let id = self.next_id(slot, true, Some(draw.generation(generation)));
                match self.reserve_saga(req, id, ttl_ms, passed, true).await {
                    Err(Error::NotDurable(why)) if why == SAGA_UNDONE => continue,
                    other => return other,
                }
            }
            return Err(Error::NotDurable(format!(
                "{SAGA_GENERATIONS} tries under this key were undone; retry with a new key"
            )));
        }
        if !self.clustered {
            return self.reserve_script(scope, req, id, ttl_ms, passed).await;
        }
        let estimate = self.now_ms().saturating_add(ttl_ms).saturating_sub(1_000);
        let lowered = matches!(scope, Scope::Deferred(p) if p.due_at_or_before(slot, estimate));
        if !lowered {
            self.lower_due(slot, estimate).await;
        }
        let reservation = self.reserve_script(scope, req, id, ttl_ms, passed).await?;
        if reservation.status == Status::Held {
            self.lower_due(slot, reservation.expires_at_ms).await;
        }
        Ok(reservation)
    }

    async fn reserve_script(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        id: HoldId,
        ttl_ms: u64,
        passed: &str,
    ) -> Result<Reservation, Error> {
        let n = req.items.len();
        let mut keys = Vec::with_capacity(3 * n + 4);
        keys.extend(req.items.iter().map(|i| self.sku_key(i.sku)));
        keys.extend(req.items.iter().map(|i| self.tally_key(i.sku)));
        keys.push(self.hold_key(id));
        keys.push(self.expiry_key(id.shard));
        if !self.clustered {
            keys.push(self.key("due"));
        }
        keys.extend(req.items.iter().map(|i| self.gate_key(i.sku)));
        let mut args = Vec::with_capacity(6 + 2 * n);
        args.push(self.argv_prefix.clone());
        args.push(id.text().as_str().to_owned());
        args.push(req.customer_id.to_owned());
        args.push(ttl_ms.to_string());
        args.push(match req.fill {
            Fill::All => "a".to_owned(),
            Fill::Partial => "p".to_owned(),
        });
        args.push(n.to_string());
        args.extend(req.items.iter().map(|i| i.qty.to_string()));
        args.extend(req.items.iter().map(|i| i.sku.to_owned()));
        args.push(self.tally_ms().to_string());
        args.push(if self.clustered {
            String::new()
        } else {
            id.shard.to_string()
        });
        args.push(passed.to_owned());
        let reply = self.run(scope, &self.scripts.reserve, keys, args).await?;
        let reservation = Self::reserve_answer(req, id, &reply)?;
        if self.clustered {
            let mut skus = self.hold_skus.lock();
            if skus.len() >= HOLD_SKUS_MAX {
                skus.clear();
            }
            skus.insert(id, req.items.iter().map(|i| i.sku.to_owned()).collect());
        }
        Ok(reservation)
    }

    /// The reserve script's answer: the hold, or the refusal its code
    /// names (`{code, item index, ...}`).
    fn reserve_answer(
        req: &ReserveRequest<'_>,
        id: HoldId,
        reply: &[Value],
    ) -> Result<Reservation, Error> {
        let reply = reply.to_vec();
        let item = |i: u64| {
            req.items
                .get((i as usize).wrapping_sub(1))
                .ok_or_else(|| bad_reply(format!("item index {i}")))
        };
        match int(&reply, 0)? {
            0 => Ok(view(id, &reply)?),
            1 => Err(engine::Error::UnknownSku {
                sku: unbucketed(item(int(&reply, 1)?)?.sku).to_owned(),
            }
            .into()),
            2 => {
                let it = item(int(&reply, 1)?)?;
                Err(engine::Error::InsufficientStock {
                    sku: it.sku.to_owned(),
                    requested: u64::from(it.qty),
                    available: int(&reply, 2)?,
                }
                .into())
            }
            3 => Err(engine::Error::CustomerLimitExceeded {
                sku: unbucketed(item(int(&reply, 1)?)?.sku).to_owned(),
                limit: int(&reply, 2)?,
                current: int(&reply, 3)?,
            }
            .into()),
            9 => Err(Error::GatedBy(text(&reply, 2))),
            code => Err(bad_reply(format!("reserve code {code}"))),
        }
    }

    /// `wait_ms`: asks again every [`WAIT_POLL`] while the refusal is
    /// stock that holds have (they may give it back), until the deadline.
    async fn reserve_waiting(
        &self,
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        wait_ms: u64,
        waiting: &(dyn Fn() + Sync),
        passed: &str,
        draw: Option<Draw>,
    ) -> Result<Reservation, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut told = false;
        loop {
            // A new id each try: a refused try left nothing under the old.
            // A keyed request keeps its drawn id (one SKU: one slot, never
            // a saga; a refused try left nothing under it).
            let result = self
                .reserve_once(Scope::Now, req, ttl_ms, passed, draw)
                .await;
            let short = matches!(
                &result,
                Err(Error::Refused(engine::Error::InsufficientStock { .. }))
            ) && req.items.len() == 1;
            if !short || tokio::time::Instant::now() + WAIT_POLL > deadline {
                return result;
            }
            // Only worth waiting if holds have the stock (not sold out).
            let view = self.sku_view(req.items[0].sku).await?;
            if view.stock.saturating_sub(view.sold) < u64::from(req.items[0].qty) {
                return result;
            }
            if !told {
                waiting();
                told = true;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }

    /// [`Store::adjust_stock`] as operation `op`: run twice (a command
    /// sent again), the delta lands once.
    #[doc(hidden)]
    pub async fn adjust_once(
        &self,
        scope: Scope<'_>,
        sku: &str,
        delta: i64,
        op: &str,
    ) -> Result<SkuView, Error> {
        let reply = self
            .run(
                scope,
                &self.scripts.adjust,
                vec![
                    self.sku_key(sku),
                    format!("{}:{{{sku}}}:a:{op}", self.prefix),
                ],
                vec![
                    self.argv_prefix.clone(),
                    delta.to_string(),
                    STOCK_MAX.to_string(),
                    ADJUST_MARK_MS.to_string(),
                ],
            )
            .await?;
        match reply.first().and_then(Value::as_i64) {
            Some(0) => sku_view(
                sku,
                int(&reply, 1)?,
                int(&reply, 2)?,
                int(&reply, 3)?,
                int(&reply, 4)?,
            ),
            Some(-1) => Err(engine::Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: int(&reply, 1)?,
            }
            .into()),
            Some(-2) => Err(engine::Error::UnknownSku {
                sku: sku.to_owned(),
            }
            .into()),
            Some(-3) => Err(engine::Error::invalid(
                "delta",
                format!(
                    "stock would be {}, above the largest stock {STOCK_MAX}",
                    int(&reply, 1)?
                ),
            )
            .into()),
            other => Err(bad_reply(format!("adjust code {other:?}"))),
        }
    }

    /// [`Store::key_begin`] for the request named `token`: sent twice,
    /// the second finds its own token and is fresh too, not "in use".
    #[doc(hidden)]
    pub async fn key_begin_as(
        &self,
        key: &str,
        fingerprint: u128,
        token: &str,
    ) -> Result<Begin, Error> {
        let idem_key = self.idem_key(key);
        let (live, live_max) = self.idem_live(&idem_key);
        let client = self.pool.next();
        let reply: Value = self
            .eval(
                client,
                &self.scripts.key_begin,
                vec![idem_key.clone(), live],
                vec![
                    self.argv_prefix.clone(),
                    format!("{fingerprint:032x}"),
                    KEY_IN_FLIGHT_MS.to_string(),
                    token.to_owned(),
                    self.options
                        .idempotency_ttl_ms
                        .max(KEY_IN_FLIGHT_MS)
                        .to_string(),
                    live_max.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        let reply = reply.into_array();
        // The claim is on the replicas before the change is made (on a
        // cluster they are on different primaries: a failover must not
        // lose the seed and keep the change). If not, nothing was run:
        // the next request under the key may take over at once.
        if let Err(e) = self.replicated(client, Some(slots::slot(&idem_key))).await {
            if int(&reply, 0)? == 0 {
                self.key_abandon(key);
            }
            return Err(e);
        }
        Ok(match int(&reply, 0)? {
            // The key's seed is its first request's token: another is a
            // takeover from that first request.
            0 => match text(&reply, 1) {
                seed if seed == token => Begin::Seeded(seed.into()),
                seed => Begin::Resumed(seed.into()),
            },
            1 => {
                let status =
                    u16::try_from(int(&reply, 1)?).map_err(|_| bad_reply("key status".into()))?;
                let location = text(&reply, 2);
                let body = reply
                    .get(3)
                    .and_then(Value::as_bytes)
                    .map(Bytes::copy_from_slice)
                    .unwrap_or_default();
                Begin::Replay(
                    Arc::new(Stored {
                        status,
                        location: (!location.is_empty()).then_some(location),
                        body,
                        stored_at_ms: int(&reply, 4)?,
                    }),
                    0,
                )
            }
            2 => Begin::InUse,
            3 => Begin::Reused,
            4 => Begin::Full,
            code => return Err(bad_reply(format!("key code {code}"))),
        })
    }

    /// Each bucket's (stock, held, sold), `None` for one not made yet,
    /// read one after another (not at one instant).
    async fn read_buckets(&self, sku: &str, n: u32) -> Result<Vec<Option<(u64, u64, u64)>>, Error> {
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..u64::from(n) {
            let v: Vec<Option<String>> = self
                .pool
                .next()
                .hmget(
                    self.sku_key(&bucket_name(sku, i)),
                    vec!["stock", "held", "sold"],
                )
                .await
                .map_err(unavailable)?;
            let num = |j: usize| {
                v.get(j)
                    .and_then(|x| x.as_deref())
                    .and_then(|x| x.parse().ok())
            };
            out.push(match (num(0), num(1), num(2)) {
                (Some(a), Some(b), Some(c)) => Some((a, b, c)),
                _ => None,
            });
        }
        Ok(out)
    }

    /// `PUT /v1/skus/{sku}` for a SKU spread over `n` buckets: what is not
    /// held or sold is shared out evenly; each bucket is set by the
    /// set-stock script, which refuses a stock below what that bucket has
    /// committed, in which case (a reservation came in between) it is all
    /// read and shared again.
    async fn set_stock_buckets(
        &self,
        sku: &str,
        n: u32,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> Result<(bool, SkuView), Error> {
        if customer_limit.is_some_and(|l| l > 0) {
            return Err(engine::Error::invalid(
                "customer_limit",
                format!(
                    "sku {sku} is spread over {n} stock buckets (store.redis.buckets): a per-customer limit needs its tallies in one place, which buckets give up"
                ),
            )
            .into());
        }
        for _ in 0..BUCKET_TRIES {
            let buckets = self.read_buckets(sku, n).await?;
            let committed: Vec<u64> = buckets
                .iter()
                .map(|b| b.map_or(0, |(_, held, sold)| held + sold))
                .collect();
            let total: u64 = committed.iter().sum();
            if stock < total {
                return Err(engine::Error::StockBelowCommitted {
                    sku: sku.to_owned(),
                    committed: total,
                }
                .into());
            }
            let free = stock - total;
            let mut raced = false;
            for (i, c) in committed.iter().enumerate() {
                let i = i as u64;
                let share = free / u64::from(n) + u64::from(i < free % u64::from(n));
                let reply = self
                    .run(
                        Scope::Now,
                        &self.scripts.set_stock,
                        vec![self.sku_key(&bucket_name(sku, i))],
                        vec![
                            self.argv_prefix.clone(),
                            (c + share).to_string(),
                            String::new(),
                        ],
                    )
                    .await?;
                if reply.first().and_then(Value::as_i64) == Some(-1) {
                    raced = true;
                    break;
                }
            }
            if !raced {
                let created = buckets.iter().all(Option::is_none);
                return Ok((created, self.sku_view(sku).await?));
            }
        }
        Err(Error::NotDurable(format!(
            "sku {sku}: reservations kept changing its buckets while the stock was shared out ({BUCKET_TRIES} tries); some buckets may have the new stock: send it again"
        )))
    }

    /// `POST /v1/skus/{sku}/adjust` for a SKU spread over `n` buckets. A
    /// rise goes to one bucket; a cut takes what each bucket has available
    /// (each step the adjust script, idempotent by `op` and bucket), and
    /// if the buckets together have not enough, the steps taken are given
    /// back and the cut refused.
    async fn adjust_buckets(
        &self,
        sku: &str,
        n: u32,
        delta: i64,
        op: &str,
    ) -> Result<SkuView, Error> {
        if delta >= 0 {
            let i = self.next_bucket.fetch_add(1, Relaxed) % u64::from(n);
            self.adjust_once(Scope::Now, &bucket_name(sku, i), delta, op)
                .await
                .map_err(|e| match e {
                    Error::Refused(engine::Error::UnknownSku { .. }) => engine::Error::UnknownSku {
                        sku: sku.to_owned(),
                    }
                    .into(),
                    other => other,
                })?;
            return self.sku_view(sku).await;
        }
        let mut need = delta.unsigned_abs();
        let mut taken: Vec<(u64, u64)> = Vec::new();
        for _ in 0..BUCKET_TRIES {
            let buckets = self.read_buckets(sku, n).await?;
            if buckets.iter().all(Option::is_none) {
                return Err(engine::Error::UnknownSku {
                    sku: sku.to_owned(),
                }
                .into());
            }
            for (i, b) in buckets.iter().enumerate() {
                let Some((stock, held, sold)) = *b else {
                    continue;
                };
                let take = stock.saturating_sub(held + sold).min(need);
                if take == 0 {
                    continue;
                }
                let step = format!("{op}.{i}.{}", taken.len());
                let done = self
                    .adjust_once(
                        Scope::Now,
                        &bucket_name(sku, i as u64),
                        -(take as i64),
                        &step,
                    )
                    .await;
                match done {
                    Ok(_) => {
                        taken.push((i as u64, take));
                        need -= take;
                    }
                    // Reserved in between: read again next round.
                    Err(Error::Refused(engine::Error::StockBelowCommitted { .. })) => {}
                    Err(e) => return Err(e),
                }
                if need == 0 {
                    return self.sku_view(sku).await;
                }
            }
        }
        for (k, &(i, take)) in taken.iter().enumerate() {
            self.adjust_once(
                Scope::Now,
                &bucket_name(sku, i),
                take as i64,
                &format!("{op}.undo.{k}"),
            )
            .await?;
        }
        let view = self.sku_view(sku).await?;
        Err(engine::Error::StockBelowCommitted {
            sku: sku.to_owned(),
            committed: view.held + view.sold,
        }
        .into())
    }

    async fn sku_view(&self, sku: &str) -> Result<SkuView, Error> {
        if let Some(n) = self.buckets_of(sku) {
            let buckets = self.read_buckets(sku, n).await?;
            if buckets.iter().all(Option::is_none) {
                return Err(engine::Error::UnknownSku {
                    sku: sku.to_owned(),
                }
                .into());
            }
            let (mut stock, mut held, mut sold) = (0, 0, 0);
            for b in buckets.iter().flatten() {
                stock += b.0;
                held += b.1;
                sold += b.2;
            }
            return sku_view(sku, stock, held, sold, 0);
        }
        let v: Vec<Option<String>> = self
            .pool
            .next()
            .hmget(self.sku_key(sku), vec!["stock", "held", "sold", "limit"])
            .await
            .map_err(unavailable)?;
        let num = |i: usize| -> Result<u64, Error> {
            v.get(i)
                .and_then(|x| x.as_deref())
                .ok_or_else(|| {
                    engine::Error::UnknownSku {
                        sku: sku.to_owned(),
                    }
                    .into()
                })
                .and_then(|s| s.parse().map_err(|_| bad_reply(format!("{sku}: {s:?}"))))
        };
        sku_view(sku, num(0)?, num(1)?, num(2)?, num(3)?)
    }
}

fn sku_view(sku: &str, stock: u64, held: u64, sold: u64, limit: u64) -> Result<SkuView, Error> {
    Ok(SkuView {
        sku: CompactString::from(sku),
        stock,
        available: stock.saturating_sub(held + sold),
        held,
        sold,
        customer_limit: limit,
    })
}

/// Reads `appendonly` and `appendfsync`; with `fsync` durability both
/// must promise a reply is on disk.
async fn check_persistence<C: ConfigInterface + Sync>(
    client: &C,
    durability: RedisDurability,
) -> Result<String, StartError> {
    let get = |name: &'static str| async move {
        let v: Vec<String> = client
            .config_get(name)
            .await
            .map_err(|e| StartError::Redis(format!("CONFIG GET {name}: {e}")))?;
        Ok::<_, StartError>(v.get(1).cloned().unwrap_or_default())
    };
    let appendonly = get("appendonly").await?;
    let appendfsync = get("appendfsync").await?;
    let found = format!("appendonly {appendonly}, appendfsync {appendfsync}");
    if durability == RedisDurability::Fsync {
        if appendonly != "yes" {
            return Err(StartError::Persistence {
                setting: "appendonly yes",
                setting_name: "appendonly",
                want: "yes",
                found: format!("appendonly {appendonly}"),
            });
        }
        if appendfsync != "always" {
            return Err(StartError::Persistence {
                setting: "appendfsync always",
                setting_name: "appendfsync",
                want: "always",
                found: format!("appendfsync {appendfsync}"),
            });
        }
    }
    Ok(found)
}

/// The key name of bucket `i` of `sku` (`#` is never in a SKU's name).
/// `req`'s items under other names (each SKU's bucket), in order.
fn named_items<'a>(req: &ReserveRequest<'_>, names: &'a [String]) -> Vec<ItemRequest<'a>> {
    req.items
        .iter()
        .zip(names)
        .map(|(i, name)| ItemRequest {
            sku: name,
            qty: i.qty,
        })
        .collect()
}

fn bucket_name(sku: &str, i: u64) -> String {
    format!("{sku}#{i}")
}

/// The SKU a bucket's name belongs to (a name without `#` is its own).
fn unbucketed(name: &str) -> &str {
    name.split_once('#').map_or(name, |(sku, _)| sku)
}

/// A saga's items as its record writes them: `sku qty sku qty ...`.
fn parse_items(text: &str) -> Result<Vec<(String, u32)>, Error> {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .chunks(2)
        .map(|pair| match pair {
            [sku, qty] => qty
                .parse()
                .map(|q| ((*sku).to_owned(), q))
                .map_err(|_| bad_reply(format!("saga item {pair:?}"))),
            _ => Err(bad_reply(format!("saga items {text:?}"))),
        })
        .collect()
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

/// A `ZRANGEBYSCORE ... WITHSCORES` answer of slots: flat (RESP2) or in
/// pairs (RESP3).
fn scored(reply: Value) -> Result<Vec<(u16, u64)>, Error> {
    let mut flat = Vec::new();
    for v in reply.into_array() {
        match v {
            Value::Array(pair) => flat.extend(pair),
            v => flat.push(v),
        }
    }
    flat.chunks(2)
        .map(|pair| {
            let slot = pair
                .first()
                .and_then(|v| v.as_string())
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|&s| usize::from(s) < slots::SLOTS);
            let score = pair.get(1).and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_string().and_then(|s| s.parse().ok()))
            });
            match (slot, score) {
                (Some(slot), Some(score)) if score >= 0.0 => Ok((slot, score as u64)),
                _ => Err(bad_reply(format!("P:due entry {pair:?}"))),
            }
        })
        .collect()
}

/// The URL without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Whether a command was refused, having done nothing, because its slot
/// is moving between primaries (Redis Cluster): `TRYAGAIN`, or a
/// redirection (`ASK`, `MOVED`) the client was told not to follow.
fn slot_moving(e: &fred::error::Error) -> bool {
    e.details().starts_with("TRYAGAIN")
        || (*e.kind() == fred::error::ErrorKind::Routing
            && e.details().starts_with("Too many redirections"))
}

fn unavailable(e: fred::error::Error) -> Error {
    Error::NotDurable(format!(
        "Redis did not answer: {e}; the change may have been made"
    ))
}

fn bad_reply(what: String) -> Error {
    Error::NotDurable(format!("an unexpected reply from Redis ({what})"))
}

/// A slot's recovery lease, as taken ([`RedisStore::lease_take`]).
pub struct Lease {
    key: String,
    token: String,
}

/// Field `i` of a script's reply, a count or a code: missing, garbled or
/// negative is an error, never a number.
fn int(reply: &[Value], i: usize) -> Result<u64, Error> {
    let v = reply
        .get(i)
        .ok_or_else(|| bad_reply(format!("field {i} missing from {reply:?}")))?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| bad_reply(format!("field {i} is not a count: {v:?}")))
}

fn text(reply: &[Value], i: usize) -> String {
    reply.get(i).and_then(|v| v.as_string()).unwrap_or_default()
}

fn status(s: &str) -> Result<Status, Error> {
    Ok(match s {
        "held" => Status::Held,
        "confirmed" => Status::Confirmed,
        "released" => Status::Released,
        "expired" => Status::Expired,
        other => return Err(bad_reply(format!("status {other:?}"))),
    })
}

/// `{0, status, customer, created, expires, order_ref, items}`.
fn view(id: HoldId, reply: &[Value]) -> Result<Reservation, Error> {
    let items_text = text(reply, 6);
    let mut items: SmallVec<[ItemView; 1]> = SmallVec::new();
    let mut words = items_text.split(' ').filter(|w| !w.is_empty());
    while let (Some(sku), Some(qty)) = (words.next(), words.next()) {
        items.push(ItemView {
            sku: CompactString::from(unbucketed(sku)),
            qty: qty
                .parse()
                .map_err(|_| bad_reply(format!("item qty {qty:?}")))?,
        });
    }
    let order_ref = text(reply, 5);
    Ok(Reservation {
        id,
        status: status(&text(reply, 1))?,
        customer_id: CompactString::from(text(reply, 2)),
        items,
        created_at_ms: int(reply, 3)?,
        expires_at_ms: int(reply, 4)?,
        order_ref: (!order_ref.is_empty()).then(|| CompactString::from(order_ref)),
    })
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
            let estimate = self.now_ms().saturating_add(ttl_ms).saturating_sub(1_000);
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

    fn now_ms(&self) -> u64 {
        use crate::clock::Clock;
        crate::clock::SystemClock.now_ms()
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
