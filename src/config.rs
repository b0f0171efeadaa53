//! The config file: TOML with the contract's sections, every one optional.
//!
//! Unknown keys and out-of-range values stop start-up with one line that
//! names the key (`holds.max_ttl_ms: must be ...`). Every limit the server
//! enforces has a key here; `configs/default.toml` lists them all with
//! their defaults.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::{self, SHARDS_MAX, STOCK_MAX};
pub use crate::wal::Durability;

/// A config problem, already phrased as the one line the operator sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub engine: Engine,
    pub holds: Holds,
    pub wal: Wal,
    pub admission: Admission,
    pub limits: Limits,
    pub idempotency: Idempotency,
    pub auth: Auth,
    pub admin: Admin,
    pub store: Store,
    pub drops: Drops,
    pub events: Events,
    /// `[[webhooks]]`: endpoints that get the events as signed POSTs.
    pub webhooks: Vec<Webhook>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    pub listen: SocketAddr,
    /// Most connections open at once; further clients wait to be accepted.
    pub connections_max: usize,
    /// Longest a client may take to send a request's headers.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight for this long is
    /// closed (HTTP/2: GOAWAY).
    pub idle_timeout_ms: u64,
    /// Longest a request may take from its headers to its answer (503
    /// `request_timeout` after that; a change may or may not have been made).
    pub request_timeout_ms: u64,
    /// Count every answered request by route, status and latency for
    /// `/metrics`. `false` only to measure what the counting costs.
    pub metrics: bool,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            connections_max: 10_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            metrics: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Engine {
    /// Lock shards, a power of two up to 4096; default from the core count.
    pub shards: usize,
    /// Most SKUs the engine keeps.
    pub skus_max: usize,
}

impl Default for Engine {
    fn default() -> Self {
        let defaults = engine::Options::default();
        Engine {
            shards: defaults.shards,
            skus_max: defaults.skus_max,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Holds {
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub sweep_interval_ms: u64,
    /// How long an ended hold stays readable before it is purged.
    pub retention_ms: u64,
    /// Most holds, active and retained, the engine keeps.
    pub retained_max: usize,
}

impl Default for Holds {
    fn default() -> Self {
        let defaults = engine::Options::default();
        Holds {
            default_ttl_ms: defaults.default_ttl_ms,
            max_ttl_ms: defaults.max_ttl_ms,
            sweep_interval_ms: 100,
            retention_ms: defaults.retention_ms,
            retained_max: defaults.retained_max,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wal {
    pub durability: Durability,
    pub segment_bytes_max: u64,
    /// A checkpoint is taken once the log has grown this much since the
    /// last one, so restarts stay short and old segments are deleted.
    pub checkpoint_after_bytes: u64,
}

impl Default for Wal {
    fn default() -> Self {
        Wal {
            durability: Durability::Fsync,
            segment_bytes_max: 64 << 20,
            checkpoint_after_bytes: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    /// Longest a request may wait for admission (then 503 `queue_timeout`)
    /// or in a SKU's waitlist.
    pub max_wait_ms: u64,
    /// Most requests on the engine-and-log path at once.
    pub concurrency_max: usize,
    /// Most requests waiting for a place on the path (then 429 `queue_full`).
    pub queue_max: usize,
    /// Most requests in one SKU's waitlist (`wait_ms`; then 429 `queue_full`).
    pub waitlist_max: usize,
    /// Requests a second per API key on the engine routes; 0 is no limit.
    pub key_rate_per_s: f64,
    /// Requests a key may make at once after a quiet spell.
    pub key_burst: u32,
    /// Reservations a second per `customer_id`; 0 is no limit.
    pub customer_rate_per_s: f64,
    /// Reservations a customer may make at once after a quiet spell.
    pub customer_burst: u32,
    /// Most keys (or customers) each limiter tracks at once; past it, idle
    /// ones are dropped, and if all are active a newcomer goes untracked.
    pub rate_keys_max: usize,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            max_wait_ms: 5000,
            concurrency_max: 1024,
            queue_max: 10_000,
            waitlist_max: 10_000,
            key_rate_per_s: 0.0,
            key_burst: 1000,
            customer_rate_per_s: 0.0,
            customer_burst: 10,
            rate_keys_max: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_items: usize,
    pub max_qty_per_item: u32,
    pub max_batch_ops: usize,
    pub max_batch_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 65_536,
            max_items: 64,
            max_qty_per_item: 1000,
            max_batch_ops: 1000,
            max_batch_body_bytes: 1_048_576,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Idempotency {
    pub ttl_ms: u64,
    /// Most keys kept; expired ones are dropped first when it is reached.
    pub keys_max: usize,
    /// Largest answer kept for a key. A keyed request whose answer could
    /// be larger (a long `/v1/batch`) is refused before it runs (413
    /// `answer_too_large`), since its answer could not be replayed.
    pub answer_bytes_max: usize,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            ttl_ms: 86_400_000,
            keys_max: 1_000_000,
            answer_bytes_max: 1_000_000,
        }
    }
}

/// `[drops]`: bounds on drops (contract, "Drops").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drops {
    /// Entrants one drop takes; a join beyond is 429 `queue_full`.
    pub entrants_max: usize,
    /// Drops kept (for the life of the data directory).
    pub drops_max: usize,
}

impl Default for Drops {
    fn default() -> Self {
        Drops {
            entrants_max: 1_000_000,
            drops_max: 1_000,
        }
    }
}

/// `[events]`: the event feed (contract, "Events").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Events {
    /// Events kept for subscribers resuming with `Last-Event-ID`.
    pub retained_max: usize,
    /// Streams at once; beyond, 503 `not_ready` with `Retry-After`.
    pub subscribers_max: usize,
    /// A subscriber further behind than this many events (a slow reader)
    /// is sent `reset` and dropped; it may resume.
    pub subscriber_lag_max: usize,
    /// A comment line (`: keep-alive`) after this long without an event.
    pub keepalive_ms: u64,
    /// Streams are woken at most this often: each writes what came since
    /// in one piece (an event waits up to this long; at 1,000 streams a
    /// write per event would cost more than the reservations).
    pub flush_interval_ms: u64,
    /// A webhook delivery is retried for up to this long after its event.
    pub webhook_retry_max_ms: u64,
    /// The first retry's backoff ceiling; it doubles each attempt (full
    /// jitter: the wait is uniform from 0 to the ceiling, at most 1 h).
    pub webhook_retry_base_ms: u64,
    /// One delivery attempt's time limit.
    pub webhook_timeout_ms: u64,
    /// Events kept per endpoint still to deliver; beyond, the oldest goes
    /// (counted in `stampede_webhook_deliveries_total{outcome="dropped"}`).
    pub webhook_outbox_max: usize,
    /// Deliveries in flight per endpoint.
    pub webhook_concurrency: usize,
}

/// One `[[webhooks]]` endpoint.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://HOST:PORT/PATH` (https is not supported: use a relay).
    pub url: String,
    /// The signing secret: `whsec_` + base64 (Standard Webhooks), or the
    /// key's bytes as they are; at least 16 bytes of key.
    pub secret: String,
    /// Event types to send; empty or absent: all.
    #[serde(default)]
    pub types: Vec<String>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            retained_max: 100_000,
            subscribers_max: 1024,
            subscriber_lag_max: 10_000,
            keepalive_ms: 15_000,
            flush_interval_ms: 50,
            webhook_retry_max_ms: 86_400_000,
            webhook_retry_base_ms: 1_000,
            webhook_timeout_ms: 5_000,
            webhook_outbox_max: 100_000,
            webhook_concurrency: 4,
        }
    }
}

/// `[store]`: where the state lives.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    pub kind: StoreKind,
    pub redis: Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The in-process engine and the local log.
    #[default]
    Embedded,
    /// Redis: any number of stampede nodes share the state.
    Redis,
}

/// `[store.redis]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Redis {
    /// `redis://HOST:PORT` (required with `kind = "redis"`).
    pub url: String,
    pub durability: RedisDurability,
    /// Replicas that must have each change (`WAIT`) before it is answered.
    pub wait_replicas: u32,
    /// Connections to Redis per node.
    pub pool_size: usize,
    /// A command with no reply in this long fails (503; the change may
    /// have been made).
    pub command_timeout_ms: u64,
    /// Longest a connection attempt may take.
    pub connect_timeout_ms: u64,
    /// A connection with a command unanswered this long is dropped and
    /// made again (a hung node is noticed).
    pub unresponsive_timeout_ms: u64,
    /// Longest pause between attempts to reconnect (they never stop).
    pub reconnect_max_delay_ms: u64,
    /// Every key starts with this: several deployments (or test servers)
    /// can share one Redis.
    pub key_prefix: String,
    /// Hot SKUs spread over stock buckets: SKU -> number of buckets
    /// (2 to 64), each its own key `P:{sku#i}` in its own hash slot, so
    /// one SKU's reservations spread over several Redis shards. Such a SKU
    /// has no per-customer limit and no exact sold-out moment.
    pub buckets: std::collections::BTreeMap<String, u32>,
}

impl Default for Redis {
    fn default() -> Self {
        Redis {
            url: String::new(),
            durability: RedisDurability::Fsync,
            wait_replicas: 0,
            pool_size: 4,
            command_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            unresponsive_timeout_ms: 5_000,
            reconnect_max_delay_ms: 2_000,
            key_prefix: "sp".to_owned(),
            buckets: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisDurability {
    /// Start only if every primary runs `appendonly yes` and `appendfsync
    /// always`: a 2xx is on the primary's disk.
    #[default]
    Fsync,
    /// Any persistence; said at start and in `/v1/stats`.
    Relaxed,
}

/// `[admin]`: the operators' listener (status page, `/metrics`,
/// `/v1/stats`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// `""` turns it off. Anything but a loopback address needs an admin
    /// key on every request.
    pub listen: String,
}

/// Where the admin listener listens unless told otherwise.
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9090";

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: ADMIN_LISTEN_DEFAULT.to_owned(),
        }
    }
}

impl Admin {
    /// The address to listen on; `None` when turned off.
    pub fn addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        self.listen.parse().map(Some).map_err(|_| {
            ConfigError(format!(
                "admin.listen: must be an address with a port (127.0.0.1:9090) or \"\" (off), got {:?}",
                self.listen
            ))
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    pub admin_keys: Vec<String>,
    pub storefront_keys: Vec<String>,
}

impl Auth {
    /// Adds the comma-separated keys of `STAMPEDE_ADMIN_KEYS` and
    /// `STAMPEDE_STOREFRONT_KEYS`, validated like the file's.
    pub fn add_from_env(&mut self) -> Result<(), ConfigError> {
        for (var, keys) in [
            ("STAMPEDE_ADMIN_KEYS", &mut self.admin_keys),
            ("STAMPEDE_STOREFRONT_KEYS", &mut self.storefront_keys),
        ] {
            if let Ok(value) = std::env::var(var) {
                for k in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    check_key(var, k)?;
                    keys.push(k.to_owned());
                }
            }
        }
        Ok(())
    }

    /// No keys at all: the server runs open (loopback only).
    pub fn is_open(&self) -> bool {
        self.admin_keys.is_empty() && self.storefront_keys.is_empty()
    }
}

fn check_key(name: &str, k: &str) -> Result<(), ConfigError> {
    check(
        name,
        k.len() >= 16 && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_graphic()),
        "each key must be 16 to 256 printable ASCII characters".to_owned(),
    )
}

const DAY_MS: u64 = 86_400_000;

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().message().replace('\n', " ");
            let message = message.trim();
            if path == "." || path.is_empty() {
                ConfigError(message.to_owned())
            } else {
                ConfigError(format!("{path}: {message}"))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every range; the first violation is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let shards = self.engine.shards;
        check(
            "engine.shards",
            shards.is_power_of_two() && shards <= SHARDS_MAX,
            format!("must be a power of two from 1 to {SHARDS_MAX}, got {shards}"),
        )?;
        in_range(
            "engine.skus_max",
            self.engine.skus_max as u64,
            shards as u64,
            1 << 32,
        )?;
        in_range(
            "server.connections_max",
            self.server.connections_max as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "server.header_read_timeout_ms",
            self.server.header_read_timeout_ms,
            100,
            600_000,
        )?;
        in_range(
            "server.idle_timeout_ms",
            self.server.idle_timeout_ms,
            100,
            3_600_000,
        )?;
        in_range(
            "server.request_timeout_ms",
            self.server.request_timeout_ms,
            100,
            600_000,
        )?;
        in_range("holds.max_ttl_ms", self.holds.max_ttl_ms, 1, 30 * DAY_MS)?;
        in_range(
            "holds.default_ttl_ms",
            self.holds.default_ttl_ms,
            1,
            self.holds.max_ttl_ms,
        )?;
        in_range(
            "holds.sweep_interval_ms",
            self.holds.sweep_interval_ms,
            1,
            60_000,
        )?;
        in_range(
            "holds.retention_ms",
            self.holds.retention_ms,
            0,
            30 * DAY_MS,
        )?;
        in_range(
            "holds.retained_max",
            self.holds.retained_max as u64,
            shards as u64,
            1 << 32,
        )?;
        in_range(
            "wal.segment_bytes_max",
            self.wal.segment_bytes_max,
            1 << 16,
            1 << 32,
        )?;
        in_range(
            "wal.checkpoint_after_bytes",
            self.wal.checkpoint_after_bytes,
            1 << 20,
            1 << 40,
        )?;
        in_range(
            "admission.max_wait_ms",
            self.admission.max_wait_ms,
            0,
            600_000,
        )?;
        in_range(
            "admission.concurrency_max",
            self.admission.concurrency_max as u64,
            1,
            1_000_000,
        )?;
        in_range(
            "admission.queue_max",
            self.admission.queue_max as u64,
            0,
            10_000_000,
        )?;
        in_range(
            "admission.waitlist_max",
            self.admission.waitlist_max as u64,
            0,
            10_000_000,
        )?;
        for (key, rate) in [
            ("admission.key_rate_per_s", self.admission.key_rate_per_s),
            (
                "admission.customer_rate_per_s",
                self.admission.customer_rate_per_s,
            ),
        ] {
            check(
                key,
                (0.0..=10_000_000.0).contains(&rate),
                format!("must be 0 (no limit) to 10000000, got {rate}"),
            )?;
        }
        in_range(
            "admission.key_burst",
            u64::from(self.admission.key_burst),
            1,
            10_000_000,
        )?;
        in_range(
            "admission.customer_burst",
            u64::from(self.admission.customer_burst),
            1,
            10_000_000,
        )?;
        in_range(
            "admission.rate_keys_max",
            self.admission.rate_keys_max as u64,
            64,
            100_000_000,
        )?;
        in_range(
            "limits.max_body_bytes",
            self.limits.max_body_bytes as u64,
            256,
            16 << 20,
        )?;
        in_range("limits.max_items", self.limits.max_items as u64, 1, 1024)?;
        in_range(
            "limits.max_qty_per_item",
            u64::from(self.limits.max_qty_per_item),
            1,
            STOCK_MAX.min(u64::from(u32::MAX)),
        )?;
        in_range(
            "limits.max_batch_ops",
            self.limits.max_batch_ops as u64,
            1,
            100_000,
        )?;
        in_range(
            "limits.max_batch_body_bytes",
            self.limits.max_batch_body_bytes as u64,
            256,
            256 << 20,
        )?;
        in_range(
            "idempotency.ttl_ms",
            self.idempotency.ttl_ms,
            1,
            30 * DAY_MS,
        )?;
        in_range(
            "idempotency.keys_max",
            self.idempotency.keys_max as u64,
            1,
            100_000_000,
        )?;
        // At least what any single request can answer (64 items of
        // 128-byte SKUs come to about 11 KB), at most what a log record holds.
        in_range(
            "idempotency.answer_bytes_max",
            self.idempotency.answer_bytes_max as u64,
            65_536,
            crate::idempotency::ANSWER_BYTES_MAX_LIMIT as u64,
        )?;
        self.admin.addr()?;
        in_range(
            "drops.entrants_max",
            self.drops.entrants_max as u64,
            1,
            10_000_000,
        )?;
        in_range("drops.drops_max", self.drops.drops_max as u64, 1, 100_000)?;
        in_range(
            "events.retained_max",
            self.events.retained_max as u64,
            1,
            10_000_000,
        )?;
        in_range(
            "events.subscribers_max",
            self.events.subscribers_max as u64,
            0,
            100_000,
        )?;
        in_range(
            "events.subscriber_lag_max",
            self.events.subscriber_lag_max as u64,
            1,
            10_000_000,
        )?;
        in_range("events.keepalive_ms", self.events.keepalive_ms, 100, 15_000)?;
        in_range(
            "events.flush_interval_ms",
            self.events.flush_interval_ms,
            1,
            1_000,
        )?;
        let e = &self.events;
        in_range(
            "events.webhook_retry_max_ms",
            e.webhook_retry_max_ms,
            1,
            7 * 86_400_000,
        )?;
        in_range(
            "events.webhook_retry_base_ms",
            e.webhook_retry_base_ms,
            1,
            3_600_000,
        )?;
        in_range(
            "events.webhook_timeout_ms",
            e.webhook_timeout_ms,
            10,
            600_000,
        )?;
        in_range(
            "events.webhook_outbox_max",
            e.webhook_outbox_max as u64,
            1,
            10_000_000,
        )?;
        in_range(
            "events.webhook_concurrency",
            e.webhook_concurrency as u64,
            1,
            256,
        )?;
        check(
            "webhooks",
            self.webhooks.len() <= 16,
            format!("at most 16 endpoints, got {}", self.webhooks.len()),
        )?;
        self.webhook_endpoints()?;
        if self.store.kind == StoreKind::Redis {
            let r = &self.store.redis;
            check(
                "store.redis.url",
                r.url.starts_with("redis://") || r.url.starts_with("redis-cluster://"),
                format!(
                    "must be redis://HOST:PORT or redis-cluster://HOST:PORT[,HOST:PORT...] with store.kind = \"redis\", got {:?}",
                    r.url
                ),
            )?;
            in_range(
                "store.redis.wait_replicas",
                u64::from(r.wait_replicas),
                0,
                16,
            )?;
            in_range("store.redis.pool_size", r.pool_size as u64, 1, 256)?;
            in_range(
                "store.redis.command_timeout_ms",
                r.command_timeout_ms,
                10,
                600_000,
            )?;
            in_range(
                "store.redis.connect_timeout_ms",
                r.connect_timeout_ms,
                10,
                600_000,
            )?;
            in_range(
                "store.redis.unresponsive_timeout_ms",
                r.unresponsive_timeout_ms,
                100,
                600_000,
            )?;
            in_range(
                "store.redis.reconnect_max_delay_ms",
                r.reconnect_max_delay_ms,
                10,
                600_000,
            )?;
            check(
                "store.redis.key_prefix",
                !r.key_prefix.is_empty()
                    && r.key_prefix.len() <= 64
                    && r.key_prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'),
                "must be 1 to 64 characters of [A-Za-z0-9_.-]".to_owned(),
            )?;
            check(
                "store.redis.buckets",
                r.buckets.len() <= 1024,
                format!("at most 1024 bucketed SKUs, got {}", r.buckets.len()),
            )?;
            for (sku, &n) in &r.buckets {
                check(
                    "store.redis.buckets",
                    crate::engine::is_valid_ident(sku),
                    format!("{sku:?} is not a SKU name (1 to 128 bytes of [A-Za-z0-9._:-])"),
                )?;
                in_range(&format!("store.redis.buckets.{sku}"), u64::from(n), 2, 64)?;
            }
        }
        for (key, keys) in [
            ("auth.admin_keys", &self.auth.admin_keys),
            ("auth.storefront_keys", &self.auth.storefront_keys),
        ] {
            for k in keys {
                check_key(key, k)?;
            }
        }
        Ok(())
    }

    /// The `[[webhooks]]` endpoints, checked.
    pub fn webhook_endpoints(&self) -> Result<Vec<crate::events::webhooks::Endpoint>, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        self.webhooks
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let e = crate::events::webhooks::Endpoint::new(&w.url, &w.secret, &w.types)
                    .map_err(|why| ConfigError(format!("webhooks[{i}]: {why}")))?;
                if !seen.insert(w.url.clone()) {
                    return Err(ConfigError(format!(
                        "webhooks[{i}].url: {} is listed twice",
                        w.url
                    )));
                }
                Ok(e)
            })
            .collect()
    }

    /// Webhook delivery settings from this config.
    pub fn webhook_options(&self) -> crate::events::webhooks::Options {
        let e = &self.events;
        crate::events::webhooks::Options {
            retry_max_ms: e.webhook_retry_max_ms,
            retry_base_ms: e.webhook_retry_base_ms,
            timeout_ms: e.webhook_timeout_ms,
            outbox_max: e.webhook_outbox_max,
            concurrency: e.webhook_concurrency,
        }
    }

    /// The event feed's bounds from this config.
    pub fn events_options(&self) -> crate::events::Options {
        crate::events::Options {
            retained_max: self.events.retained_max,
            subscribers_max: self.events.subscribers_max,
            flush_interval: std::time::Duration::from_millis(self.events.flush_interval_ms),
        }
    }

    /// The drops' bounds from this config.
    pub fn drops_options(&self) -> crate::drops::Options {
        crate::drops::Options {
            drops_max: self.drops.drops_max,
            entrants_max: self.drops.entrants_max,
            skus_max: self.limits.max_items,
        }
    }

    /// The engine's settings from this config; `epoch` comes from the data
    /// directory.
    pub fn engine_options(&self, epoch: u32) -> engine::Options {
        engine::Options {
            shards: self.engine.shards,
            default_ttl_ms: self.holds.default_ttl_ms,
            max_ttl_ms: self.holds.max_ttl_ms,
            retention_ms: self.holds.retention_ms,
            retained_max: self.holds.retained_max,
            skus_max: self.engine.skus_max,
            max_items: self.limits.max_items,
            max_qty_per_item: self.limits.max_qty_per_item,
            epoch,
            waitlist_max: self.admission.waitlist_max,
        }
    }
}

/// The keys (`section.key`) whose values differ between `a` and `b`, in
/// file order.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, av) in a {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match b.get(k) {
                        Some(bv) => walk(&key, av, bv, out),
                        None => out.push(key),
                    }
                }
            }
            _ if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let to_value = |c: &Config| serde_json::to_value(c).expect("the config serializes");
    let mut out = Vec::new();
    walk("", &to_value(a), &to_value(b), &mut out);
    out
}

/// Whether a running server takes a new value of `key` on SIGHUP:
/// `[admission]` (with the rate limits), `[limits]`, the `[holds]` TTL
/// bounds and the `[auth]` keys. Everything else needs a restart.
pub fn reloadable(key: &str) -> bool {
    key.starts_with("admission.")
        || key.starts_with("limits.")
        || key.starts_with("auth.")
        || key == "holds.default_ttl_ms"
        || key == "holds.max_ttl_ms"
}

fn check(key: &str, ok: bool, message: String) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError(format!("{key}: {message}")))
    }
}

fn in_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    check(
        key,
        (min..=max).contains(&value),
        format!("must be {min} to {max}, got {value}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.holds.default_ttl_ms, 600_000);
        assert_eq!(c.holds.max_ttl_ms, 3_600_000);
        assert_eq!(c.holds.sweep_interval_ms, 100);
        assert_eq!(c.wal.durability, Durability::Fsync);
        assert_eq!(c.admission.max_wait_ms, 5000);
        assert_eq!(c.limits.max_body_bytes, 65_536);
        assert_eq!(c.limits.max_items, 64);
        assert_eq!(c.limits.max_qty_per_item, 1000);
        assert_eq!(c.limits.max_batch_ops, 1000);
        assert_eq!(c.limits.max_batch_body_bytes, 1_048_576);
        assert_eq!(c.idempotency.ttl_ms, 86_400_000);
        assert!(c.engine.shards.is_power_of_two());
    }

    #[test]
    fn sections_and_keys_are_read() {
        let c = Config::from_toml(
            "[engine]\nshards = 16\n[holds]\ndefault_ttl_ms = 1000\n[wal]\ndurability = \"os\"\n",
        )
        .unwrap();
        assert_eq!(c.engine.shards, 16);
        assert_eq!(c.holds.default_ttl_ms, 1000);
        assert_eq!(c.wal.durability, Durability::Os);
    }

    #[test]
    fn unknown_key_is_named_on_one_line() {
        let e = Config::from_toml("[holds]\ndefault_tll_ms = 5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("holds.default_tll_ms: unknown field `default_tll_ms`"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = Config::from_toml("[sever]\nlisten = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `sever`"), "{e}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        for (toml, key) in [
            ("[engine]\nshards = 3\n", "engine.shards"),
            ("[engine]\nshards = 8192\n", "engine.shards"),
            ("[holds]\nmax_ttl_ms = 0\n", "holds.max_ttl_ms"),
            (
                "[holds]\ndefault_ttl_ms = 4000000\n",
                "holds.default_ttl_ms",
            ),
            ("[limits]\nmax_items = 0\n", "limits.max_items"),
            ("[auth]\nadmin_keys = [\"short\"]\n", "auth.admin_keys"),
        ] {
            let e = Config::from_toml(toml).unwrap_err().to_string();
            assert!(e.starts_with(key), "{toml:?} gave {e}");
        }
        let e = Config::from_toml("[wal]\ndurability = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("wal.durability"), "{e}");
        let e = Config::from_toml("[engine]\nshards = -1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("engine.shards"), "{e}");
    }
}

#[cfg(test)]
mod reload {
    use super::*;

    #[test]
    fn changed_keys_are_named_and_sorted_into_reloadable_or_not() {
        let a = Config::default();
        assert!(changed_keys(&a, &a).is_empty());
        let b = Config::from_toml(
            "[limits]\nmax_items = 3\n[engine]\nshards = 2\n[auth]\nadmin_keys = [\"0123456789abcdef\"]\n",
        )
        .unwrap();
        let changed = changed_keys(&a, &b);
        let mut expected = vec!["auth.admin_keys", "limits.max_items"];
        if a.engine.shards != 2 {
            expected.push("engine.shards");
        }
        let mut got: Vec<&str> = changed.iter().map(String::as_str).collect();
        got.sort_unstable();
        expected.sort_unstable();
        assert_eq!(got, expected);
        assert!(reloadable("limits.max_items") && reloadable("auth.admin_keys"));
        assert!(reloadable("admission.key_rate_per_s") && reloadable("holds.max_ttl_ms"));
        assert!(!reloadable("engine.shards") && !reloadable("holds.retention_ms"));
        assert!(!reloadable("server.listen") && !reloadable("wal.durability"));
        assert!(!reloadable("admin.listen"));
    }
}

#[cfg(test)]
mod shipped_configs {
    use super::*;

    /// configs/default.toml documents every key with its default: it must
    /// parse, and equal the built-in defaults.
    #[test]
    fn default_toml_is_the_built_in_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/default.toml");
        let file = Config::from_file(&path).unwrap();
        let built_in = Config::default();
        assert_eq!(format!("{file:?}"), format!("{built_in:?}"));
    }
}

#[cfg(test)]
mod flash_sale_config {
    use super::*;

    #[test]
    fn flash_sale_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/flash-sale.toml");
        let c = Config::from_file(&path).unwrap();
        assert_eq!((c.engine.shards, c.holds.default_ttl_ms), (64, 300_000));
    }
}
