//! Starting the redis store as a node: connect (checking Redis's
//! persistence), read the drops and the event stream's newest events,
//! then run the node's background work: the expiry sweep, the drops'
//! log tail, the event stream's reads and moves, and webhook deliveries.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{Options, RedisStore, DROPS_TAIL_EVERY};
use crate::config::{Config, RedisDurability};
use crate::datadir::DataDir;
use crate::store::{supervised, Node, NodeStop, Store};

/// The redis store, started.
pub struct RedisNode {
    store: Arc<RedisStore>,
    /// Tells the periodic tasks to end.
    closing: tokio::sync::watch::Sender<bool>,
    /// Tasks that end when `closing` says so.
    ending: Vec<tokio::task::JoinHandle<()>>,
    /// Tasks that are stopped.
    aborted: Vec<tokio::task::JoinHandle<()>>,
    /// Held (locked) until the node stops.
    data_dir: DataDir,
}

/// Connects to Redis and starts the node's background work.
pub async fn start(config: &Config, data_dir: DataDir) -> anyhow::Result<RedisNode> {
    let options = Options {
        redis: config.store.redis.clone(),
        tunables: crate::engine::Tunables::from(&config.engine_options(0)),
        retention_ms: config.holds.retention_ms,
        idempotency_ttl_ms: config.idempotency.ttl_ms,
        idempotency_keys_max: config.idempotency.keys_max,
        answer_bytes_max: config.idempotency.answer_bytes_max,
        drops: config.drops_options(),
        events: config.events_options(),
    };
    let store = Arc::new(
        RedisStore::connect(options)
            .await
            .context("cannot start on the redis store")?,
    );
    let stats = store.stats();
    crate::log_line!(
        "stampede: redis store at {} ({}; durability {}), node {}",
        stats["url"].as_str().unwrap_or(""),
        store.persistence(),
        stats["durability"].as_str().unwrap_or(""),
        stats["node_epoch"]
    );
    if config.store.redis.durability == RedisDurability::Relaxed {
        crate::log_line!(
            "stampede: warning: store.redis.durability = \"relaxed\": a 2xx may not be on Redis's disk ({})",
            store.persistence()
        );
    }
    // The drops: this node's book, read from the drops' log in Redis
    // before the first request.
    match store.drops_start().await {
        Ok(n) if n > 0 => crate::log_line!("stampede: {n} drops read from Redis"),
        Ok(_) => {}
        Err(e) => anyhow::bail!("cannot read the drops from Redis: {e}"),
    }
    // The event feed: the stream's newest events, then what it gains,
    // every events.flush_interval_ms (on a cluster, moving the slots'
    // events into it first).
    let hub = store
        .events_start(config.events_options())
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the event stream from Redis: {e}"))?;
    let (closing, _) = tokio::sync::watch::channel(false);
    // Each task ends only when the node stops or the feed closes (the
    // server is stopping); any other end stops the process.
    let expected: Arc<dyn Fn() -> bool + Send + Sync> = {
        let (hub, closing) = (hub.clone(), closing.subscribe());
        Arc::new(move || hub.is_closed() || *closing.borrow())
    };
    let mut aborted = vec![supervised("the event pump", expected.clone(), {
        let hub = hub.clone();
        async move { hub.pump(|_| async { true }).await }
    })];
    let mut ending = vec![every(
        Duration::from_millis(config.events.flush_interval_ms.max(1)),
        &closing,
        &expected,
        "the event mover",
        "reading the event stream",
        {
            let (store, hub) = (store.clone(), hub.clone());
            move || {
                let (store, hub) = (store.clone(), hub.clone());
                async move { store.events_tick(&hub).await }
            }
        },
    )];
    if !config.webhooks.is_empty() {
        // Webhooks: a consumer group per endpoint on the event stream.
        let endpoints = config
            .webhook_endpoints()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let outbox = Arc::new(crate::events::webhooks::Outbox::new(
            config.webhook_options(),
            endpoints,
            Arc::new(crate::clock::SystemClock),
        ));
        aborted.push(supervised(
            "the webhook sender",
            expected.clone(),
            outbox.clone().run(hub.watch_closed()),
        ));
        let min_idle_ms = (2 * config.events.webhook_timeout_ms).max(1_000);
        let (store, closed) = (store.clone(), closing.subscribe());
        // A reader that cannot start says so and leaves this node
        // delivering nothing (an end the node lives with); a panic stops it.
        aborted.push(supervised(
            "the webhook reader",
            Arc::new(|| true),
            async move {
                if let Err(e) = store.webhooks_run(outbox, min_idle_ms, closed).await {
                    crate::log_line!(
                        "stampede: webhooks could not start: {e}; none are delivered by this node"
                    );
                }
            },
        ));
    }
    ending.push(every(
        DROPS_TAIL_EVERY,
        &closing,
        &expected,
        "the drops' log reader",
        "reading the drops' log",
        {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move { store.drops_tick().await }
            }
        },
    ));
    ending.push(every(
        Duration::from_millis(config.holds.sweep_interval_ms),
        &closing,
        &expected,
        "the sweeper",
        "the expiry sweep",
        {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move { store.sweep().await }
            }
        },
    ));
    Ok(RedisNode {
        store,
        closing,
        ending,
        aborted,
        data_dir,
    })
}

impl Node for RedisNode {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn stop(self: Box<Self>) -> NodeStop {
        Box::pin(async move {
            let _ = self.closing.send(true);
            for task in self.ending {
                let _ = task.await;
            }
            for task in self.aborted {
                task.abort();
            }
            self.store.close().await;
            drop(self.data_dir);
            Ok(())
        })
    }
}

/// Runs `turn` every `period` until `closing`, supervised as `name`; says
/// once when it starts failing (`what` failed) and once when it works
/// again.
fn every<T, E, F, Fut>(
    period: Duration,
    closing: &tokio::sync::watch::Sender<bool>,
    expected: &Arc<dyn Fn() -> bool + Send + Sync>,
    name: &'static str,
    what: &'static str,
    turn: F,
) -> tokio::task::JoinHandle<()>
where
    E: std::fmt::Display,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>> + Send,
{
    let mut closed = closing.subscribe();
    supervised(name, expected.clone(), async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = closed.wait_for(|&c| c) => return,
            }
            match turn().await {
                Ok(_) if failing => {
                    crate::log_line!("stampede: {what} works again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    crate::log_line!(
                        "stampede: {what} failed: {e}; trying again every {} ms",
                        period.as_millis()
                    );
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}
