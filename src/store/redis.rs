//! The redis store (`store.kind = "redis"`): the state lives in Redis, so
//! any number of stampede nodes serve the same SKUs and holds. Every
//! change is one server-side script (`redis_scripts.rs`): checks first,
//! then writes, Redis `TIME` as the clock, idempotent by hold id.
//!
//! What this node keeps: nothing of the state. Its hold ids are
//! `r_` + the node's start number (`INCR P:epoch`, unique across nodes and
//! restarts) + a counter. Admission and rate limits stay per node (above
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
//! Scope: one Redis server (`redis://`). On Redis Cluster
//! (`redis-cluster://`) a multi-SKU hold spans slots and needs a saga;
//! start-up refuses that URL until it is built.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compact_str::CompactString;
use fred::prelude::*;
use smallvec::SmallVec;

use super::redis_scripts::Scripts;
use super::{Error, Pending, Scope, Store, StoreFuture};
use crate::config::{Redis as RedisConfig, RedisDurability};
use crate::engine::{
    self, check_order_ref, check_reservation, check_sku, check_stock, Fill, HoldId, ItemView,
    Reservation, ReserveRequest, SkuView, Status, TunableCells, Tunables, STOCK_MAX,
};
use crate::idempotency::{Begin, Stored};

/// How often a reservation with `wait_ms` asks again.
pub const WAIT_POLL: Duration = Duration::from_millis(20);
/// Holds expired per sweep script call.
const SWEEP_BATCH: u32 = 256;
/// How long an unfinished first request keeps its idempotency key (its
/// node may have died): past any request's timeout.
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
    pub answer_bytes_max: usize,
}

pub struct RedisStore {
    pool: Pool,
    scripts: Scripts,
    prefix: String,
    options: Options,
    tunables: TunableCells,
    /// This node's start number: the `epoch` of its hold ids.
    epoch: u32,
    next_hold: AtomicU64,
    /// Numbers this node's adjusts and keyed requests (see `op_id`).
    next_op: AtomicU64,
    /// What start-up found about Redis's persistence, for `/v1/stats`.
    persistence: String,
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

impl RedisStore {
    /// Connects (pool size, timeouts and reconnect policy set explicitly),
    /// checks persistence against `durability`, loads the scripts and takes
    /// this node's start number.
    pub async fn connect(options: Options) -> Result<RedisStore, StartError> {
        let r = &options.redis;
        if r.url.starts_with("redis-cluster://") {
            return Err(StartError::Url(
                "Redis Cluster is not supported yet (multi-SKU holds across slots need the saga); use redis://HOST:PORT".into(),
            ));
        }
        let config = Config::from_url(&r.url).map_err(|e| StartError::Url(e.to_string()))?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_millis(r.connect_timeout_ms);
                c.internal_command_timeout = Duration::from_millis(r.command_timeout_ms);
                c.max_command_attempts = 3;
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
        let persistence = check_persistence(pool.next(), r.durability).await?;
        let scripts = Scripts::new();
        for script in scripts.all() {
            script
                .load(pool.next())
                .await
                .map_err(|e| StartError::Redis(e.to_string()))?;
        }
        let prefix = r.key_prefix.clone();
        let epoch: i64 = pool
            .next()
            .incr(format!("{prefix}:epoch"))
            .await
            .map_err(|e| StartError::Redis(e.to_string()))?;
        let epoch = u32::try_from(epoch)
            .map_err(|_| StartError::Redis(format!("{prefix}:epoch is past 2^32: {epoch}")))?;
        Ok(RedisStore {
            pool,
            scripts,
            prefix,
            tunables: TunableCells::new(options.tunables),
            options,
            epoch,
            next_hold: AtomicU64::new(0),
            next_op: AtomicU64::new(0),
            persistence,
        })
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
            "persistence": self.persistence,
            "node_epoch": self.epoch,
        })
    }

    /// What start-up found about persistence (said on stderr too).
    pub fn persistence(&self) -> &str {
        &self.persistence
    }

    /// Expires the holds whose time is up, in batches, until none is due;
    /// returns how many. Every node runs this every
    /// `holds.sweep_interval_ms`.
    pub async fn sweep(&self) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let reply: Vec<Value> = self
                .run(
                    Scope::Now,
                    &self.scripts.sweep,
                    vec![self.key("expiry")],
                    vec![
                        self.prefix.clone(),
                        SWEEP_BATCH.to_string(),
                        self.retention(),
                    ],
                )
                .await?;
            total += int(&reply, 0);
            if int(&reply, 1) == 0 {
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

    fn hold_key(&self, id: &str) -> String {
        format!("{}:h:{id}", self.prefix)
    }

    fn idem_key(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
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

    fn next_id(&self) -> HoldId {
        let n = self.next_hold.fetch_add(1, Relaxed);
        HoldId::from_parts(self.epoch, 0, (n >> 32) as u32, n as u32)
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
    async fn run(
        &self,
        scope: Scope<'_>,
        script: &fred::types::scripts::Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<Value>, Error> {
        let client = self.client(scope);
        let reply: Value = script
            .evalsha_with_reload(client, keys, args)
            .await
            .map_err(unavailable)?;
        let replicas = self.options.redis.wait_replicas;
        if replicas > 0 {
            // Inside the command timeout, so that Redis's own answer (how
            // many replicas have it) comes back before fred gives up.
            let timeout = (self.options.redis.command_timeout_ms * 3 / 4).max(1);
            let acked: i64 = client
                .wait(i64::from(replicas), timeout as i64)
                .await
                .map_err(unavailable)?;
            if acked < i64::from(replicas) {
                return Err(Error::NotDurable(format!(
                    "only {acked} of store.redis.wait_replicas = {replicas} replicas have the change within {timeout} ms; it may have been made: retry with the same Idempotency-Key"
                )));
            }
        }
        Ok(reply.into_array())
    }

    /// A hold script's answer: the reservation, or the refusal its code
    /// names.
    fn reservation(&self, id: HoldId, reply: &[Value]) -> Result<Reservation, Error> {
        match int(reply, 0) as i64 {
            0 => Ok(view(id, reply)?),
            4 => Err(engine::Error::HoldNotFound.into()),
            5 => Err(engine::Error::HoldNotActive {
                status: status(&text(reply, 1))?,
            }
            .into()),
            6 => Err(engine::Error::HoldExpired {
                expired_at_ms: int(reply, 1),
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
        let text = id.text();
        let mut all = vec![self.prefix.clone(), text.as_str().to_owned()];
        all.extend(args);
        let reply = self
            .run(
                scope,
                script,
                vec![self.hold_key(text.as_str()), self.key("expiry")],
                all,
            )
            .await?;
        self.reservation(id, &reply)
    }

    async fn reserve_once(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        id: HoldId,
        ttl_ms: u64,
    ) -> Result<Reservation, Error> {
        let n = req.items.len();
        let mut keys = Vec::with_capacity(2 * n + 2);
        keys.extend(req.items.iter().map(|i| self.sku_key(i.sku)));
        keys.extend(req.items.iter().map(|i| self.tally_key(i.sku)));
        let text = id.text();
        keys.push(self.hold_key(text.as_str()));
        keys.push(self.key("expiry"));
        let mut args = Vec::with_capacity(6 + 2 * n);
        args.push(self.prefix.clone());
        args.push(text.as_str().to_owned());
        args.push(req.customer_id.to_owned());
        args.push(ttl_ms.to_string());
        args.push(match req.fill {
            Fill::All => "a".to_owned(),
            Fill::Partial => "p".to_owned(),
        });
        args.push(n.to_string());
        args.extend(req.items.iter().map(|i| i.qty.to_string()));
        args.extend(req.items.iter().map(|i| i.sku.to_owned()));
        let tally_ms = self
            .tunables
            .load()
            .max_ttl_ms
            .saturating_add(self.options.retention_ms)
            .max(1);
        args.push(tally_ms.to_string());
        let reply = self.run(scope, &self.scripts.reserve, keys, args).await?;
        let item = |i: u64| {
            req.items
                .get((i as usize).wrapping_sub(1))
                .ok_or_else(|| bad_reply(format!("item index {i}")))
        };
        match int(&reply, 0) {
            0 => Ok(view(id, &reply)?),
            1 => Err(engine::Error::UnknownSku {
                sku: item(int(&reply, 1))?.sku.to_owned(),
            }
            .into()),
            2 => {
                let it = item(int(&reply, 1))?;
                Err(engine::Error::InsufficientStock {
                    sku: it.sku.to_owned(),
                    requested: u64::from(it.qty),
                    available: int(&reply, 2),
                }
                .into())
            }
            3 => Err(engine::Error::CustomerLimitExceeded {
                sku: item(int(&reply, 1))?.sku.to_owned(),
                limit: int(&reply, 2),
                current: int(&reply, 3),
            }
            .into()),
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
    ) -> Result<Reservation, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut told = false;
        loop {
            // A new id each try: a refused try left nothing under the old.
            let result = self
                .reserve_once(Scope::Now, req, self.next_id(), ttl_ms)
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
                    self.prefix.clone(),
                    delta.to_string(),
                    STOCK_MAX.to_string(),
                    ADJUST_MARK_MS.to_string(),
                ],
            )
            .await?;
        match reply.first().and_then(Value::as_i64) {
            Some(0) => sku_view(
                sku,
                int(&reply, 1),
                int(&reply, 2),
                int(&reply, 3),
                int(&reply, 4),
            ),
            Some(-1) => Err(engine::Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: int(&reply, 1),
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
                    int(&reply, 1)
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
        let reply = self
            .run(
                Scope::Now,
                &self.scripts.key_begin,
                vec![self.idem_key(key)],
                vec![
                    self.prefix.clone(),
                    format!("{fingerprint:032x}"),
                    KEY_IN_FLIGHT_MS.to_string(),
                    token.to_owned(),
                ],
            )
            .await?;
        Ok(match int(&reply, 0) {
            0 => Begin::Fresh,
            1 => {
                let status =
                    u16::try_from(int(&reply, 1)).map_err(|_| bad_reply("key status".into()))?;
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
                        stored_at_ms: int(&reply, 4),
                    }),
                    0,
                )
            }
            2 => Begin::InUse,
            3 => Begin::Reused,
            code => return Err(bad_reply(format!("key code {code}"))),
        })
    }

    async fn sku_view(&self, sku: &str) -> Result<SkuView, Error> {
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
async fn check_persistence(
    client: &Client,
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

/// The URL without a password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

fn unavailable(e: fred::error::Error) -> Error {
    Error::NotDurable(format!(
        "Redis did not answer: {e}; the change may have been made"
    ))
}

fn bad_reply(what: String) -> Error {
    Error::NotDurable(format!("an unexpected reply from Redis ({what})"))
}

fn int(reply: &[Value], i: usize) -> u64 {
    reply
        .get(i)
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .map_or(0, |n| n.max(0) as u64)
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
            sku: CompactString::from(sku),
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
        created_at_ms: int(reply, 3),
        expires_at_ms: int(reply, 4),
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
            let reply = self
                .run(
                    scope,
                    &self.scripts.set_stock,
                    vec![self.sku_key(sku)],
                    vec![
                        self.prefix.clone(),
                        stock.to_string(),
                        customer_limit.map_or(String::new(), |l| l.to_string()),
                    ],
                )
                .await?;
            if reply.first().and_then(Value::as_i64) == Some(-1) {
                return Err(engine::Error::StockBelowCommitted {
                    sku: sku.to_owned(),
                    committed: int(&reply, 1),
                }
                .into());
            }
            let view = sku_view(
                sku,
                int(&reply, 1),
                int(&reply, 2),
                int(&reply, 3),
                int(&reply, 4),
            )?;
            Ok((int(&reply, 0) == 1, view))
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
            self.adjust_once(scope, sku, delta, &self.op_id()).await
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
            if wait_ms == 0 {
                self.reserve_once(scope, req, self.next_id(), ttl_ms).await
            } else {
                self.reserve_waiting(req, ttl_ms, wait_ms, waiting).await
            }
        })
    }

    fn get(&self, id: HoldId) -> StoreFuture<'_, Reservation> {
        Box::pin(async move {
            let text = id.text();
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.get,
                    vec![self.hold_key(text.as_str())],
                    vec![self.prefix.clone()],
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
            self.hold_op(
                scope,
                &self.scripts.extend,
                id,
                vec![ttl_ms.to_string(), max_ttl.to_string()],
            )
            .await
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
        _scope: Scope<'a>,
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
            let client = self.pool.next();
            let args: Vec<Value> = vec![
                self.prefix.clone().into(),
                format!("{fingerprint:032x}").into(),
                stored.status.to_string().into(),
                stored.location.clone().unwrap_or_default().into(),
                Value::Bytes(stored.body.clone()),
                stored.stored_at_ms.to_string().into(),
                self.options.idempotency_ttl_ms.to_string().into(),
            ];
            let reply: Value = self
                .scripts
                .key_complete
                .evalsha_with_reload(client, vec![self.idem_key(key)], args)
                .await
                .map_err(unavailable)?;
            if int(&reply.into_array(), 0) != 0 {
                return Err(Error::AnswerNotKept(
                    "the key was taken by another request while this one ran".into(),
                ));
            }
            Ok(())
        })
    }

    fn key_abandon(&self, key: &str) {
        // Not awaited by the caller: the key would otherwise stay "in
        // use" until KEY_IN_FLIGHT_MS.
        let client = self.pool.next().clone();
        let script = self.scripts.key_abandon.clone();
        let keys = vec![self.idem_key(key)];
        let prefix = self.prefix.clone();
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
}
