//! The config's ranges: every limit the server enforces is checked here,
//! the first violation named as `section.key: must be ...`.

use super::{Config, ConfigError, StoreKind};
use crate::engine::{SHARDS_MAX, STOCK_MAX};

const DAY_MS: u64 = 86_400_000;

impl Config {
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
        self.validate_payments()?;
        self.validate_browsers()?;
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
}

impl Config {
    /// `server.cors_origins`: `*`, or `http(s)://host[:port]` with no path
    /// (as a browser sends `Origin`), at most 64; `events.public_types`:
    /// only the types that carry no customer data.
    fn validate_browsers(&self) -> Result<(), ConfigError> {
        let origins = &self.server.cors_origins;
        check(
            "server.cors_origins",
            origins.len() <= 64,
            format!("at most 64 origins, got {}", origins.len()),
        )?;
        for o in origins {
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .unwrap_or("");
            let ok = o == "*"
                || (!host.is_empty()
                    && host.len() <= 253
                    && host
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)));
            check(
                "server.cors_origins",
                ok,
                format!("{o:?} is not an origin: \"*\" or http(s)://HOST[:PORT], no path or trailing slash"),
            )?;
        }
        for t in &self.events.public_types {
            check(
                "events.public_types",
                crate::events::PUBLIC_KINDS
                    .iter()
                    .any(|k| k.as_str() == t),
                format!(
                    "{t:?} cannot be public: only stock.out, stock.back and drop.opened may be (hold events carry customer ids)"
                ),
            )?;
        }
        Ok(())
    }

    /// `[payments]` and its gateways: names unique identifiers, at least
    /// one secret each (a Standard Webhooks `whsec_` secret must be
    /// base64), a tolerance of 1 s to a day.
    fn validate_payments(&self) -> Result<(), ConfigError> {
        let p = &self.payments;
        in_range("payments.pending_max_ms", p.pending_max_ms, 1, 30 * DAY_MS)?;
        in_range(
            "payments.pending_ttl_ms",
            p.pending_ttl_ms,
            1,
            p.pending_max_ms,
        )?;
        in_range("payments.dedupe_ms", p.dedupe_ms, 1_000, 30 * DAY_MS)?;
        check(
            "payments.gateways",
            p.gateways.len() <= 16,
            format!("at most 16 gateways, got {}", p.gateways.len()),
        )?;
        for (i, g) in p.gateways.iter().enumerate() {
            let key = |k: &str| format!("payments.gateways[{i}].{k}");
            check(
                &key("name"),
                crate::engine::is_valid_ident(&g.name),
                format!(
                    "{:?} is not a name (1 to 128 bytes of [A-Za-z0-9._:-])",
                    g.name
                ),
            )?;
            check(
                &key("name"),
                !p.gateways[..i].iter().any(|h| h.name == g.name),
                format!("{} is listed twice", g.name),
            )?;
            check(
                &key("secrets"),
                (1..=8).contains(&g.secrets.len()),
                format!("1 to 8 secrets, got {}", g.secrets.len()),
            )?;
            for s in &g.secrets {
                let standard_ok = g.scheme != crate::payments::Scheme::Standard
                    || crate::payments::signature::standard_key(s).is_some_and(|k| !k.is_empty());
                check(
                    &key("secrets"),
                    (8..=256).contains(&s.len()) && standard_ok,
                    "each secret must be 8 to 256 bytes (a standard scheme's whsec_ secret: base64 after the prefix)".to_owned(),
                )?;
            }
            in_range(&key("tolerance_s"), g.tolerance_s, 1, 86_400)?;
        }
        Ok(())
    }
}

pub(super) fn check_key(name: &str, k: &str) -> Result<(), ConfigError> {
    check(
        name,
        k.len() >= 16 && k.len() <= 256 && k.bytes().all(|b| b.is_ascii_graphic()),
        "each key must be 16 to 256 printable ASCII characters".to_owned(),
    )
}

pub(super) fn check(key: &str, ok: bool, message: String) -> Result<(), ConfigError> {
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
