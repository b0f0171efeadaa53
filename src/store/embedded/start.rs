//! Starting the embedded store as a node: recover the log (off the async
//! workers), then run its background work (the expiry sweeper, the
//! checkpointer, the drop opener, webhook deliveries and the event
//! pump); stopping it takes a last checkpoint and closes the log.

use std::sync::Arc;

use anyhow::Context;

use super::background::{self, Periodic};
use super::{start_core, Core, EmbeddedStore};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::store::{supervised, Node, NodeStop, Store};
use crate::wal::RecoveryMode;

/// The embedded store, started.
pub struct EmbeddedNode {
    core: Arc<Core>,
    store: Arc<EmbeddedStore>,
    sweeper: Periodic,
    checkpointer: Periodic,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Held (locked) until the node stops.
    data_dir: DataDir,
}

/// Recovers the log in `data_dir` and starts the background work.
pub async fn start(
    config: &Config,
    data_dir: DataDir,
    mode: RecoveryMode,
) -> anyhow::Result<EmbeddedNode> {
    let started = std::time::Instant::now();
    let (core, data_dir) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let core = start_core(&config, &data_dir, mode, Arc::new(SystemClock));
            (core, data_dir)
        })
        .await
        .context("recovery panicked")?
    };
    let core = Arc::new(core.context("cannot recover the log")?);
    crate::log_line!(
        "stampede: recovered {} records from {} segments in {:?}; {} shards, epoch {}, clock {}, data in {}",
        core.report.records,
        core.report.segments,
        started.elapsed(),
        core.engine.shard_count(),
        data_dir.epoch(),
        crate::clock::source(),
        data_dir.path().display()
    );
    let sweeper = {
        let engine = core.engine.clone();
        Periodic::start(
            "stampede-sweeper",
            config.holds.sweep_interval_ms,
            move || {
                crate::fault::inject("sweeper");
                engine.sweep();
            },
        )
        .context("cannot start the sweeper")?
    };
    let checkpointer =
        background::start_checkpointer(core.clone(), config.wal.checkpoint_after_bytes)
            .context("cannot start the checkpointer")?;
    let hub = core.events.clone();
    // Each task ends only when the node stops (aborted) or the feed
    // closes (the server is stopping); any other end stops the process.
    let ends_with_feed: Arc<dyn Fn() -> bool + Send + Sync> = {
        let hub = hub.clone();
        Arc::new(move || hub.is_closed())
    };
    let tasks = vec![
        supervised(
            "the drop opener",
            ends_with_feed.clone(),
            background::open_drops(core.drops.clone()),
        ),
        supervised(
            "the webhook sender",
            ends_with_feed.clone(),
            core.outbox.clone().run(hub.watch_closed()),
        ),
        {
            let (hub, wal) = (hub.clone(), core.wal.clone());
            // It also ends when the log fails (read-only: nothing more
            // becomes durable).
            let ends: Arc<dyn Fn() -> bool + Send + Sync> = {
                let wal = wal.clone();
                Arc::new(move || ends_with_feed() || wal.is_failed())
            };
            supervised("the event pump", ends, async move {
                hub.pump(|lsn| {
                    let wal = wal.clone();
                    async move { wal.wait_durable_async(lsn).await.is_ok() }
                })
                .await
            })
        },
    ];
    Ok(EmbeddedNode {
        store: Arc::new(EmbeddedStore::new(core.clone())),
        core,
        sweeper,
        checkpointer,
        tasks,
        data_dir,
    })
}

impl Node for EmbeddedNode {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    fn stop(self: Box<Self>) -> NodeStop {
        let EmbeddedNode {
            core,
            sweeper,
            checkpointer,
            tasks,
            data_dir,
            ..
        } = *self;
        Box::pin(async move {
            for task in &tasks {
                task.abort();
            }
            tokio::task::spawn_blocking(move || {
                sweeper.stop();
                checkpointer.stop();
                // A checkpoint at shutdown makes the next start replay
                // nothing.
                background::checkpoint(&core);
                core.wal
                    .close()
                    .context("could not make the log durable at shutdown")?;
                drop(data_dir);
                Ok(())
            })
            .await
            .context("stopping the store panicked")?
        })
    }
}
