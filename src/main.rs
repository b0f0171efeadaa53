//! The `stampede` binary: a thin command line over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use stampede::api::AppState;
use stampede::clock::SystemClock;
use stampede::config::Config;
use stampede::datadir::DataDir;
use stampede::engine::Engine;

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
}

#[derive(Debug, clap::Args)]
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
    /// Directory for the log and the start epoch; created if missing and
    /// locked against a second server.
    #[arg(long, value_name = "DIR", default_value = "data")]
    data_dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("stampede: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { config } => {
            let config = Config::from_file(&config)?;
            println!("{config:#?}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
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
    let data_dir = DataDir::open(&args.data_dir).context("cannot open the data directory")?;
    let engine = Arc::new(Engine::new(
        config.engine_options(data_dir.epoch()),
        Arc::new(SystemClock),
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stampede-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let bound = listener.local_addr()?;
        // Outside programs wait for this exact line (contract, "Running it").
        println!("listening on {bound}");
        std::io::Write::flush(&mut std::io::stdout())?;
        eprintln!(
            "stampede: {} shards, epoch {}, data in {}",
            engine.shard_count(),
            data_dir.epoch(),
            data_dir.path().display()
        );
        let sweeper = Sweeper::start(engine.clone(), config.holds.sweep_interval_ms);
        let state = Arc::new(AppState {
            engine: engine.clone(),
        });
        stampede::api::serve(listener, state, shutdown_signal()).await;
        sweeper.stop();
        eprintln!("stampede: stopped");
        Ok(ExitCode::SUCCESS)
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
    eprintln!("stampede: shutting down: no new connections, finishing requests in flight");
}

/// The expiry sweeper: a thread of its own (a sweep is synchronous work and
/// must not hold up the async workers), ticking every
/// `holds.sweep_interval_ms` until stopped.
struct Sweeper {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Sweeper {
    fn start(engine: Arc<Engine>, interval_ms: u64) -> Sweeper {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let interval = std::time::Duration::from_millis(interval_ms);
        let thread = std::thread::Builder::new()
            .name("stampede-sweeper".into())
            .spawn(move || {
                // Wakes on the interval, or at once when stopped.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    engine.sweep();
                }
            })
            .expect("spawn the sweeper thread");
        Sweeper { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
