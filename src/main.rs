//! The `stampede` binary: a thin command line over the library.

// Every line goes through `stampede::output` (never panics, never blocks).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::io::Write as _;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stampede::background::{self, Periodic};

use stampede::api::AppState;
use stampede::clock::SystemClock;
use stampede::config::Config;
use stampede::datadir::DataDir;
use stampede::server::start_core;
use stampede::wal::RecoveryMode;

#[path = "cmd/drop_verify.rs"]
mod drop_verify;
#[path = "cmd/tune.rs"]
mod tune;
#[path = "cmd/wal.rs"]
mod wal;

use drop_verify::{drop_verify, DropCommand};
use tune::{tune, TuneArgs};
use wal::{wal_command, WalCommand};

/// stampede: flash-sale inventory holds that never oversell.
///
/// It decides who gets a soft hold on scarce stock, keeps that decision
/// durable, and turns holds into sales or gives the stock back when they
/// expire.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (defaults: 127.0.0.1:8080, data in ./data).
    Serve(ServeArgs),
    /// Check a config file and print the settings it results in.
    CheckConfig {
        /// The TOML config file to check.
        config: PathBuf,
    },
    /// Read the write-ahead log (the audit trail) or check it.
    #[command(subcommand)]
    Wal(WalCommand),
    /// How many shards a sale needs: runs a scenario's SKU mix (its
    /// [catalog] and [flow]) through the engine in process at each shard
    /// count, prints throughput, lock wait and per-shard imbalance, then
    /// the count it recommends and why. Engine only (no log, no HTTP).
    Tune(TuneArgs),
    /// Drops: check a drop's pre-queue order from its revealed seed.
    #[command(subcommand)]
    Drop(DropCommand),
}

/// `--recovery`: what start-up does about a damaged log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecoveryArg {
    /// Cut a torn tail (a crash mid-write); refuse any other damage.
    Strict,
    /// Also cut the log at the first damage anywhere, dropping what follows.
    TruncateCorrupt,
}

#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// TOML config file with the sections [server], [engine], [holds],
    /// [wal], [admission], [limits], [idempotency], [auth]; every key is
    /// optional. See configs/default.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on; overrides server.listen. Port 0 picks a free
    /// port, printed as `listening on ADDR`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// The operators' listener (status page, /metrics, /v1/stats);
    /// overrides admin.listen. "" turns it off; port 0 picks a free port,
    /// printed on stderr as `stampede: admin page on http://ADDR/`.
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<String>,
    /// Directory for the log and the start epoch; created if missing and
    /// locked against a second server.
    #[arg(long, value_name = "DIR", default_value = "data")]
    data_dir: PathBuf,
    /// What to do about a damaged log at start-up.
    #[arg(long, value_enum, default_value = "strict")]
    recovery: RecoveryArg,
}

/// How long the last lines get to reach stdout and stderr at exit: a
/// destination that is stuck (a full pipe nobody reads) must not keep the
/// process from ending.
const OUTPUT_FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_millis(500);

fn main() -> ExitCode {
    stampede::output::install_panic_hook();
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            stampede::log_line!("stampede: {e:#}");
            ExitCode::FAILURE
        }
    };
    stampede::output::flush(OUTPUT_FLUSH_AT_EXIT);
    code
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { config } => {
            let config = Config::from_file(&config)?;
            writeln!(std::io::stdout().lock(), "{config:#?}")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wal(command) => wal_command(command),
        Command::Tune(args) => tune(args),
        Command::Drop(DropCommand::Verify {
            seed,
            entrants,
            seed_sha256,
        }) => drop_verify(&seed, &entrants, seed_sha256.as_deref()),
    }
}

/// The config `serve` runs with: the file (or the defaults), the command
/// line's overrides, and the environment's keys; checked as a whole. Read
/// at start and again on SIGHUP.
fn load_config(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(admin) = &args.admin_listen {
        config.admin.listen = admin.clone();
        config.admin.addr().context("--admin-listen")?;
    }
    config.auth.add_from_env()?;
    if config.auth.is_open() && !config.server.listen.ip().is_loopback() {
        anyhow::bail!(
            "no auth keys are configured, and an open server may only listen on a loopback \
             address, not {}: add keys under [auth] (admin_keys, storefront_keys) or in \
             STAMPEDE_ADMIN_KEYS / STAMPEDE_STOREFRONT_KEYS",
            config.server.listen
        );
    }
    if let Some(admin) = config.admin.addr()? {
        if !admin.ip().is_loopback() && config.auth.admin_keys.is_empty() {
            anyhow::bail!(
                "admin.listen: {admin} is not a loopback address, so every request to it needs \
                 an admin key, and none is configured: add one under [auth] admin_keys or in \
                 STAMPEDE_ADMIN_KEYS"
            );
        }
    }
    Ok(config)
}

/// Binds the admin listener. The default address being taken (another
/// server on this machine) is a warning; an address the operator chose
/// must be free.
async fn bind_admin(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = config.admin.addr()? else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if config.admin.listen == stampede::config::ADMIN_LISTEN_DEFAULT => {
            stampede::log_line!(
                "stampede: warning: the admin listener's default address {addr} is not free \
                 ({e}); running without it (set admin.listen or --admin-listen)"
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("admin.listen: cannot listen on {addr}")),
    }
}

/// Re-reads the config on SIGHUP and applies what may change while
/// running; one line on stderr says what happened.
fn reload(state: &AppState, args: &ServeArgs) {
    let file = match &args.config {
        Some(path) => path.display().to_string(),
        None => {
            stampede::log_line!("stampede: SIGHUP: started without --config, nothing to re-read");
            return;
        }
    };
    let config = match load_config(args) {
        Ok(config) => config,
        Err(e) => {
            stampede::log_line!("stampede: reload refused: {e:#}; the running settings stay");
            return;
        }
    };
    match state.reload(&config) {
        Ok(changed) if changed.is_empty() => {
            stampede::log_line!("stampede: reloaded {file}: nothing changed")
        }
        Ok(changed) => stampede::log_line!("stampede: reloaded {file}: {}", changed.join(", ")),
        Err(e) => stampede::log_line!("stampede: reload refused: {e}"),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args)?;
    let data_dir = DataDir::open(&args.data_dir).context("cannot open the data directory")?;
    let mode = match args.recovery {
        RecoveryArg::Strict => RecoveryMode::Strict,
        RecoveryArg::TruncateCorrupt => RecoveryMode::TruncateCorrupt,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stampede-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let admin = bind_admin(&config).await?;
        let bound = listener.local_addr()?;
        // Outside programs wait for this exact line (contract, "Running it").
        stampede::out_line!("listening on {bound}");
        // Serve health checks (readyz: 503) while the log is replayed.
        let state = Arc::new(AppState::new(&config));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        // One shutdown for both listeners: the signal, or a failed start.
        let (closing, _) = tokio::sync::watch::channel(false);
        let closed = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|&c| c).await;
        };
        {
            let closing = closing.clone();
            let state = state.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shutdown_signal() => {}
                    _ = stopped => {}
                }
                // Event streams never end on their own: end them first.
                if let Some(hub) = state.events() {
                    hub.close();
                }
                let _ = closing.send(true);
            });
        }
        let server = tokio::spawn(stampede::api::serve(
            listener,
            state.clone(),
            closed(closing.subscribe()),
        ));
        let admin = match admin {
            Some(admin) => {
                let addr = admin.local_addr()?;
                let key_required = !addr.ip().is_loopback();
                stampede::log_line!(
                    "stampede: admin page on http://{addr}/ (/metrics, /v1/stats){}",
                    if key_required { "; an admin key is required" } else { "" }
                );
                Some(tokio::spawn(stampede::api::serve_admin(
                    admin,
                    state.clone(),
                    key_required,
                    closed(closing.subscribe()),
                )))
            }
            None => None,
        };
        let reloader = {
            use tokio::signal::unix::{signal, SignalKind};
            let mut hangup =
                signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
            let state = state.clone();
            let args = args.clone();
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    let state = state.clone();
                    let args = args.clone();
                    // Reading the file is blocking work.
                    let _ = tokio::task::spawn_blocking(move || reload(&state, &args)).await;
                }
            })
        };
        if config.store.kind == stampede::config::StoreKind::Redis {
            let served = serve_on_redis(&config, &state, server, admin, &closing).await;
            reloader.abort();
            drop(data_dir);
            if let Err(e) = served {
                let _ = stop.send(());
                return Err(e);
            }
            stampede::log_line!("stampede: stopped");
            return Ok(ExitCode::SUCCESS);
        }
        let started = std::time::Instant::now();
        let recovered = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                let core = start_core(&config, &data_dir, mode, Arc::new(SystemClock));
                (core, data_dir)
            })
            .await
            .context("recovery panicked")?
        };
        let (core, data_dir) = recovered;
        let core = match core {
            Ok(core) => Arc::new(core),
            Err(e) => {
                let _ = stop.send(());
                let _ = server.await;
                return Err(anyhow::Error::new(e).context("cannot recover the log"));
            }
        };
        stampede::log_line!(
            "stampede: recovered {} records from {} segments in {:?}; {} shards, epoch {}, clock {}, data in {}",
            core.report.records,
            core.report.segments,
            started.elapsed(),
            core.engine.shard_count(),
            data_dir.epoch(),
            stampede::clock::source(),
            data_dir.path().display()
        );
        let sweeper = {
            let engine = core.engine.clone();
            Periodic::start("stampede-sweeper", config.holds.sweep_interval_ms, move || {
                engine.sweep();
            })
            .context("cannot start the sweeper")?
        };
        let checkpointer =
            background::start_checkpointer(core.clone(), config.wal.checkpoint_after_bytes)
                .context("cannot start the checkpointer")?;
        let opener = tokio::spawn(background::open_drops(core.drops.clone()));
        let hub = core.events.clone();
        let deliverer = tokio::spawn(core.outbox.clone().run(hub.watch_closed()));
        let pump = {
            let (hub, wal) = (hub.clone(), core.wal.clone());
            tokio::spawn(async move {
                hub.pump(|lsn| {
                    let wal = wal.clone();
                    async move { wal.wait_durable_async(lsn).await.is_ok() }
                })
                .await
            })
        };
        state.set_events(hub);
        state.set_core(core.clone());
        // A second line for programs that start the server: it is ready
        // (the log is replayed; /readyz answers 200 from now on).
        stampede::out_line!("ready");
        server.await.context("the server task failed")?;
        if let Some(admin) = admin {
            admin.await.context("the admin listener failed")?;
        }
        reloader.abort();
        opener.abort();
        pump.abort();
        deliverer.abort();
        sweeper.stop();
        checkpointer.stop();
        // A checkpoint at shutdown makes the next start replay nothing.
        background::checkpoint(&core);
        core.wal.close().context("could not make the log durable at shutdown")?;
        stampede::log_line!("stampede: stopped");
        drop(data_dir);
        Ok(ExitCode::SUCCESS)
    })
}

/// The node on the redis store: connects (checking Redis's persistence),
/// sweeps expired holds every `holds.sweep_interval_ms`, serves until the
/// shutdown signal.
async fn serve_on_redis(
    config: &Config,
    state: &Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
    admin: Option<tokio::task::JoinHandle<()>>,
    closing: &tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<()> {
    use stampede::store::redis::{Options, RedisStore};
    let options = Options {
        redis: config.store.redis.clone(),
        tunables: stampede::engine::Tunables::from(&config.engine_options(0)),
        retention_ms: config.holds.retention_ms,
        idempotency_ttl_ms: config.idempotency.ttl_ms,
        idempotency_keys_max: config.idempotency.keys_max,
        answer_bytes_max: config.idempotency.answer_bytes_max,
        drops: config.drops_options(),
        events: config.events_options(),
    };
    let store = match RedisStore::connect(options).await {
        Ok(store) => Arc::new(store),
        Err(e) => {
            let _ = closing.send(true);
            let _ = server.await;
            return Err(anyhow::Error::new(e).context("cannot start on the redis store"));
        }
    };
    let stats = store.stats();
    stampede::log_line!(
        "stampede: redis store at {} ({}; durability {}), node {}",
        stats["url"].as_str().unwrap_or(""),
        store.persistence(),
        stats["durability"].as_str().unwrap_or(""),
        stats["node_epoch"]
    );
    if config.store.redis.durability == stampede::config::RedisDurability::Relaxed {
        stampede::log_line!(
            "stampede: warning: store.redis.durability = \"relaxed\": a 2xx may not be on Redis's disk ({})",
            store.persistence()
        );
    }
    // The drops: this node's book, read from the drops' log in Redis
    // before the first request.
    match store.drops_start().await {
        Ok(n) if n > 0 => stampede::log_line!("stampede: {n} drops read from Redis"),
        Ok(_) => {}
        Err(e) => {
            let _ = closing.send(true);
            let _ = server.await;
            return Err(anyhow::anyhow!("cannot read the drops from Redis: {e}"));
        }
    }
    // The event feed: the stream's newest events, then what it gains,
    // every events.flush_interval_ms (on a cluster, moving the slots'
    // events into it first).
    let mut events_tasks = Vec::new();
    {
        let hub = match store.events_start(config.events_options()).await {
            Ok(hub) => hub,
            Err(e) => {
                let _ = closing.send(true);
                let _ = server.await;
                return Err(anyhow::anyhow!(
                    "cannot read the event stream from Redis: {e}"
                ));
            }
        };
        events_tasks.push(tokio::spawn({
            let hub = hub.clone();
            async move { hub.pump(|_| async { true }).await }
        }));
        events_tasks.push(every(
            std::time::Duration::from_millis(config.events.flush_interval_ms.max(1)),
            closing,
            "reading the event stream",
            {
                let (store, hub) = (store.clone(), hub.clone());
                move || {
                    let (store, hub) = (store.clone(), hub.clone());
                    async move { store.events_tick(&hub).await }
                }
            },
        ));
        if !config.webhooks.is_empty() {
            // Webhooks: a consumer group per endpoint on the event stream.
            let endpoints = config
                .webhook_endpoints()
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let outbox = Arc::new(stampede::events::webhooks::Outbox::new(
                config.webhook_options(),
                endpoints,
                Arc::new(stampede::clock::SystemClock),
            ));
            events_tasks.push(tokio::spawn(outbox.clone().run(hub.watch_closed())));
            let min_idle_ms = (2 * config.events.webhook_timeout_ms).max(1_000);
            let (store, closed) = (store.clone(), closing.subscribe());
            events_tasks.push(tokio::spawn(async move {
                if let Err(e) = store.webhooks_run(outbox, min_idle_ms, closed).await {
                    stampede::log_line!(
                        "stampede: webhooks could not start: {e}; none are delivered by this node"
                    );
                }
            }));
        }
        state.set_events(hub);
    }
    state.set_redis(store.clone());
    let drops_tail = every(
        stampede::store::redis::DROPS_TAIL_EVERY,
        closing,
        "reading the drops' log",
        {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move { store.drops_tick().await }
            }
        },
    );
    let sweeper = every(
        std::time::Duration::from_millis(config.holds.sweep_interval_ms),
        closing,
        "the expiry sweep",
        {
            let store = store.clone();
            move || {
                let store = store.clone();
                async move { store.sweep().await }
            }
        },
    );
    stampede::out_line!("ready");
    server.await.context("the server task failed")?;
    if let Some(admin) = admin {
        admin.await.context("the admin listener failed")?;
    }
    let _ = sweeper.await;
    let _ = drops_tail.await;
    for task in events_tasks {
        task.abort();
    }
    store.close().await;
    Ok(())
}

/// Runs `turn` every `period` until `closing`; says once when it starts
/// failing (`what` failed) and once when it works again.
fn every<T, E, F, Fut>(
    period: std::time::Duration,
    closing: &tokio::sync::watch::Sender<bool>,
    what: &'static str,
    turn: F,
) -> tokio::task::JoinHandle<()>
where
    E: std::fmt::Display,
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, E>> + Send,
{
    let mut closed = closing.subscribe();
    tokio::spawn(async move {
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
                    stampede::log_line!("stampede: {what} works again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    stampede::log_line!(
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

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stampede::log_line!(
        "stampede: shutting down: no new connections, finishing requests in flight"
    );
}
