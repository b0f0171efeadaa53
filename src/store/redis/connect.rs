//! Connecting: the pool, the persistence check, the node's start number.

use super::*;

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
pub(super) async fn take_epoch(
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
pub(super) fn random_start() -> Result<u64, StartError> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| StartError::Redis(format!("no random start for the hold counter: {e}")))?;
    Ok(u64::from_le_bytes(bytes) >> 2)
}

pub(super) fn cluster_url(url: &str) -> Result<String, StartError> {
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

/// Reads `appendonly` and `appendfsync`; with `fsync` durability both
/// must promise a reply is on disk.
pub(super) async fn check_persistence<C: ConfigInterface + Sync>(
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

/// The URL without a password.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
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
            hub: std::sync::OnceLock::new(),
            bucket_halt: std::sync::atomic::AtomicUsize::new(usize::MAX),
            buckets_checked_at: AtomicU64::new(0),
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
            clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
            clock_looked_at: AtomicU64::new(0),
        };
        store.look_at_clock(true).await;
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
            "clock_offset_ms": self.clock_offset_ms.load(Relaxed),
            "persistence": self.persistence,
            "node_epoch": self.epoch,
            "sweeps": self.sweeps_done.load(Relaxed),
        })
    }

    /// What start-up found about persistence (said on stderr too).
    pub fn persistence(&self) -> &str {
        &self.persistence
    }

    /// Stops the connections.
    pub async fn close(&self) {
        let _ = self.pool.quit().await;
    }
}
