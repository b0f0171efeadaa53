//! Where the state lives: `[store]` and `[store.redis]` (read by
//! `crate::config`, which checks their ranges).

use serde::{Deserialize, Serialize};

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
