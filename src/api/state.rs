//! What the handlers share ([`AppState`]: the store once started, the
//! metrics, admission) and what SIGHUP may change ([`Settings`], one
//! snapshot per request; [`AppState::reload`]).

use std::sync::Arc;

use crate::admission::rate::RateLimiter;
use crate::config::Limits;
use crate::store::Store;

use super::metrics;
use super::request::Keys;

/// What the handlers share. The store arrives once it has started (the
/// log replayed, or Redis reached); until then the server answers health
/// checks and `/readyz` says 503.
pub struct AppState {
    /// What every operation, the event feed and the store's figures go
    /// through.
    pub(super) store: std::sync::OnceLock<Arc<dyn Store>>,
    pub(super) metrics: metrics::Metrics,
    /// What SIGHUP may change: every request reads one snapshot when it
    /// starts, and a reload swaps it whole (see [`AppState::reload`]).
    pub(super) settings: arc_swap::ArcSwap<Settings>,
    /// The config the running settings came from, to tell what a reload
    /// changes.
    pub(super) running: parking_lot::Mutex<crate::config::Config>,
    pub(super) server: crate::config::Server,
    pub(super) admission: crate::admission::Admission,
    pub(super) started: std::time::Instant,
    pub(super) events_config: crate::config::Events,
    /// The kinds a stream may read without a key (`events.public_types`).
    pub(super) public_kinds: crate::events::Kinds,
    /// Browsers' origins (`server.cors_origins`).
    pub(super) cors: super::cors::Cors,
    /// What the payment webhooks answered.
    pub(super) payment_tally: super::payments::Tally,
}

/// A rate limiter's settings: per second, burst, keys kept.
type LimiterSpec = (f64, u32, usize);

/// The settings a request reads, one snapshot per request.
pub struct Settings {
    pub(super) keys: Keys,
    pub(super) limits: Limits,
    pub(super) max_wait_ms: u64,
    /// Per API key and per `customer_id` (reservations); `None` is no limit.
    pub(super) key_limit: Option<Arc<RateLimiter>>,
    pub(super) customer_limit: Option<Arc<RateLimiter>>,
    /// `[payments]`: the gateways and their secrets (rotated by a reload).
    pub(super) payments: crate::payments::Payments,
}

impl Settings {
    /// From `config`; rate limiters whose settings did not change are kept
    /// from `old` (with their buckets).
    fn new(
        config: &crate::config::Config,
        old: Option<(&Settings, &crate::config::Admission)>,
    ) -> Settings {
        let a = &config.admission;
        // (rate, burst, keys) of the key and customer limiters: one that
        // did not change is kept, with its buckets.
        let key = (a.key_rate_per_s, a.key_burst, a.rate_keys_max);
        let customer = (a.customer_rate_per_s, a.customer_burst, a.rate_keys_max);
        let reuse =
            |spec: LimiterSpec, was: Option<(LimiterSpec, &Option<Arc<RateLimiter>>)>| match was {
                Some((old, limiter)) if old == spec => limiter.clone(),
                _ => limiter(spec.0, spec.1, spec.2),
            };
        Settings {
            keys: Keys {
                admin: config.auth.admin_keys.clone(),
                storefront: config.auth.storefront_keys.clone(),
            },
            limits: config.limits.clone(),
            payments: config.payments.clone(),
            max_wait_ms: a.max_wait_ms,
            key_limit: reuse(
                key,
                old.map(|(s, o)| {
                    (
                        (o.key_rate_per_s, o.key_burst, o.rate_keys_max),
                        &s.key_limit,
                    )
                }),
            ),
            customer_limit: reuse(
                customer,
                old.map(|(s, o)| {
                    let spec = (o.customer_rate_per_s, o.customer_burst, o.rate_keys_max);
                    (spec, &s.customer_limit)
                }),
            ),
        }
    }
}

impl AppState {
    /// From the config; keys are the file's plus the environment's.
    pub fn new(config: &crate::config::Config) -> AppState {
        AppState {
            store: std::sync::OnceLock::new(),
            metrics: metrics::Metrics::default(),
            settings: arc_swap::ArcSwap::from_pointee(Settings::new(config, None)),
            running: parking_lot::Mutex::new(config.clone()),
            server: config.server.clone(),
            admission: crate::admission::Admission::new(
                config.admission.concurrency_max,
                config.admission.queue_max,
                config.admission.max_wait_ms,
            ),
            started: std::time::Instant::now(),
            events_config: config.events.clone(),
            public_kinds: crate::events::Kinds::parse(&config.events.public_types.join(","))
                .unwrap_or(crate::events::Kinds(0)),
            cors: super::cors::Cors::new(&config.server.cors_origins),
            payment_tally: Default::default(),
        }
    }

    /// The event feed, once the store runs.
    pub fn events(&self) -> Option<&Arc<crate::events::Hub>> {
        self.store().and_then(|s| s.events())
    }

    /// Hands over the started store; the server is ready from now on.
    pub fn set_store(&self, store: Arc<dyn Store>) {
        // A reload while it started changed the running config, not yet
        // the store's part of it.
        store.retune(engine_tunables(&self.running.lock()));
        if self.store.set(store).is_err() {
            panic!("bug: the store is set once");
        }
    }

    /// The store, once there is one (the log replayed, or Redis reached).
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.get()
    }

    /// Applies a re-read config (SIGHUP): `[admission]`, `[limits]`, the
    /// `[holds]` TTL bounds, rate limits and keys change at once; requests
    /// in flight keep the snapshot they started with. Anything else
    /// changed refuses the whole reload, naming the key, and the running
    /// settings stay. Returns the keys that changed.
    pub fn reload(&self, config: &crate::config::Config) -> Result<Vec<String>, String> {
        let mut running = self.running.lock();
        let changed = crate::config::changed_keys(&running, config);
        if let Some(key) = changed.iter().find(|k| !crate::config::reloadable(k)) {
            return Err(format!(
                "{key} changed, which needs a restart; the running settings stay"
            ));
        }
        if changed.is_empty() {
            return Ok(changed);
        }
        let settings = Settings::new(config, Some((&self.settings.load(), &running.admission)));
        let a = &config.admission;
        self.admission
            .retune(a.concurrency_max, a.queue_max, a.max_wait_ms);
        if let Some(store) = self.store() {
            store.retune(engine_tunables(config));
        }
        self.settings.store(Arc::new(settings));
        *running = config.clone();
        Ok(changed)
    }
}

/// The engine's part of what a reload may change.
fn engine_tunables(config: &crate::config::Config) -> crate::engine::Tunables {
    crate::engine::Tunables {
        default_ttl_ms: config.holds.default_ttl_ms,
        max_ttl_ms: config.holds.max_ttl_ms,
        max_items: config.limits.max_items,
        max_qty_per_item: config.limits.max_qty_per_item,
        waitlist_max: config.admission.waitlist_max,
    }
}

fn limiter(per_second: f64, burst: u32, keys_max: usize) -> Option<Arc<RateLimiter>> {
    (per_second > 0.0).then(|| Arc::new(RateLimiter::new(per_second, burst, keys_max)))
}
