//! The config file: TOML with the contract's sections, every one optional.
//!
//! Unknown keys and out-of-range values stop start-up with one line that
//! names the key (`holds.max_ttl_ms: must be ...`). Every limit the server
//! enforces has a key here; `configs/default.toml` lists them all with
//! their defaults.

//! Each module owns its section's struct (`engine::config`,
//! `wal::config`, `admission::config`, `idempotency::config`,
//! `drops::config`, `events::config`, `store::config`), re-exported here
//! under the section's name. The HTTP layer's sections (`[server]`,
//! `[admin]`, `[auth]`, `[limits]`) are this module's own: the API sits
//! above it and reads the whole config. Loading is `load.rs`, the ranges
//! `validate.rs`, what a reload may change `reload.rs`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::engine;

mod load;
mod reload;
mod validate;

pub use crate::admission::config::Admission;
pub use crate::drops::config::Drops;
pub use crate::engine::config::{Engine, Holds};
pub use crate::events::config::{Events, Webhook};
pub use crate::idempotency::config::Idempotency;
pub use crate::payments::config::{Gateway as PaymentGateway, Payments, Scheme as PaymentScheme};
pub use crate::store::config::{Redis, RedisDurability, Store, StoreKind};
pub use crate::wal::config::Wal;
pub use crate::wal::Durability;
pub use reload::{changed_keys, reloadable};

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
    pub payments: Payments,
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
    /// Origins (`https://shop.example`, or `*`) sent CORS headers on
    /// `GET /v1/skus/{sku}` and `GET /v1/events`, their preflights
    /// answered.
    pub cors_origins: Vec<String>,
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
            cors_origins: Vec::new(),
        }
    }
}

/// `[limits]`: request and batch bounds.
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
                    validate::check_key(var, k)?;
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

impl Config {
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

#[cfg(test)]
mod shipped_configs {
    use super::*;
    use std::path::Path;

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
    use std::path::Path;

    #[test]
    fn flash_sale_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/flash-sale.toml");
        let c = Config::from_file(&path).unwrap();
        assert_eq!((c.engine.shards, c.holds.default_ttl_ms), (64, 300_000));
    }
}
