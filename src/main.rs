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
use stampede::server::{start_core, WAL_DIR};
use stampede::wal::{self, DiskStorage, RecoveryMode};

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
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Print every record, one a line: lsn, file@offset, what changed.
    /// Read-only; safe on a stopped server's data dir.
    Inspect {
        /// The data directory (or its wal/ directory).
        dir: PathBuf,
        /// Only records that name this SKU (its stock changes and the
        /// holds created on it).
        #[arg(long)]
        sku: Option<String>,
        /// Only records of this reservation id (r_...).
        #[arg(long)]
        hold: Option<String>,
    },
    /// Check every record's CRC and sequence, and every checkpoint's CRC;
    /// exits 1 naming the first bad file and offset, 0 if all is sound.
    /// Read-only.
    Verify {
        /// The data directory (or its wal/ directory).
        dir: PathBuf,
    },
}

/// `--recovery`: what start-up does about a damaged log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RecoveryArg {
    /// Cut a torn tail (a crash mid-write); refuse any other damage.
    Strict,
    /// Also cut the log at the first damage anywhere, dropping what follows.
    TruncateCorrupt,
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
    /// What to do about a damaged log at start-up.
    #[arg(long, value_enum, default_value = "strict")]
    recovery: RecoveryArg,
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
        Command::Wal(command) => wal_command(command),
    }
}

/// The log directory named by `dir`: the data dir's `wal/`, or `dir` itself.
fn wal_dir(dir: &std::path::Path) -> anyhow::Result<DiskStorage> {
    let inner = dir.join(WAL_DIR);
    let path = if inner.is_dir() {
        inner
    } else {
        dir.to_owned()
    };
    anyhow::ensure!(path.is_dir(), "{} is not a directory", path.display());
    Ok(DiskStorage::new(path)?)
}

fn wal_command(command: WalCommand) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let (dir, filter_sku, filter_hold, print) = match command {
        WalCommand::Inspect { dir, sku, hold } => {
            let hold = match hold {
                Some(h) => Some(
                    h.parse::<stampede::engine::HoldId>()
                        .with_context(|| format!("--hold {h}"))?,
                ),
                None => None,
            };
            (dir, sku, hold, true)
        }
        WalCommand::Verify { dir } => (dir, None, None, false),
    };
    let storage = wal_dir(&dir)?;
    let mut damaged_snapshot = false;
    for (file, lsn, sound) in wal::snapshot::check_all(&storage)? {
        if sound {
            eprintln!("{file}: checkpoint at lsn {lsn}, checksum sound");
        } else {
            eprintln!("{file}: checkpoint at lsn {lsn} fails its checksum");
            damaged_snapshot = true;
        }
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let end = wal::read_log(&storage, None, |file, offset, lsn, record| {
        let wanted = filter_sku.as_deref().is_none_or(|s| record.names_sku(s))
            && filter_hold.is_none_or(|h| record.hold_id() == Some(h));
        if print && wanted {
            // A closed stdout (| head) ends the listing, not the program.
            let _ = writeln!(
                out,
                "{lsn} {file}@{offset} {}",
                wal::inspect::describe(record)
            );
        }
        Ok(())
    })?;
    drop(out);
    eprintln!(
        "{} records in {} segments, next lsn {}",
        end.records, end.segments, end.next_lsn
    );
    match end.damage {
        None if damaged_snapshot => Ok(ExitCode::FAILURE),
        None => Ok(ExitCode::SUCCESS),
        Some(d) if d.torn => {
            eprintln!(
                "{}: torn write at offset {} ({}): start-up will cut these unacknowledged bytes",
                d.file, d.offset, d.what
            );
            Ok(ExitCode::FAILURE)
        }
        Some(d) => {
            eprintln!(
                "{}: damaged at offset {} ({}): start-up will refuse this log (see serve --recovery)",
                d.file, d.offset, d.what
            );
            Ok(ExitCode::FAILURE)
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
        let bound = listener.local_addr()?;
        // Outside programs wait for this exact line (contract, "Running it").
        println!("listening on {bound}");
        std::io::Write::flush(&mut std::io::stdout())?;
        // Serve health checks (readyz: 503) while the log is replayed.
        let state = Arc::new(AppState::new(&config));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(stampede::api::serve(listener, state.clone(), async {
            tokio::select! {
                () = shutdown_signal() => {}
                _ = stopped => {}
            }
        }));
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
        eprintln!(
            "stampede: recovered {} records from {} segments in {:?}; {} shards, epoch {}, data in {}",
            core.report.records,
            core.report.segments,
            started.elapsed(),
            core.engine.shard_count(),
            data_dir.epoch(),
            data_dir.path().display()
        );
        let sweeper = {
            let engine = core.engine.clone();
            Periodic::start("stampede-sweeper", config.holds.sweep_interval_ms, move || {
                engine.sweep();
            })
        };
        let checkpointer = {
            let core = core.clone();
            let threshold = config.wal.checkpoint_after_bytes;
            let mut logged_at_last = core.wal.stats().bytes;
            Periodic::start("stampede-checkpointer", 1000, move || {
                let logged = core.wal.stats().bytes;
                if logged - logged_at_last >= threshold {
                    logged_at_last = logged;
                    checkpoint(&core);
                }
            })
        };
        state.set_core(core.clone());
        // A second line for programs that start the server: it is ready
        // (the log is replayed; /readyz answers 200 from now on).
        println!("ready");
        std::io::Write::flush(&mut std::io::stdout())?;
        server.await.context("the server task failed")?;
        sweeper.stop();
        checkpointer.stop();
        // A checkpoint at shutdown makes the next start replay nothing.
        checkpoint(&core);
        core.wal.close().context("could not make the log durable at shutdown")?;
        eprintln!("stampede: stopped");
        drop(data_dir);
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

fn checkpoint(core: &stampede::server::Core) {
    match core.checkpoint() {
        Ok(c) => eprintln!(
            "stampede: checkpoint at lsn {} ({} bytes, shards locked {:?}, {} old files removed)",
            c.lsn, c.image_bytes, c.stall, c.files_removed
        ),
        // The log goes on without it; the next one may succeed.
        Err(e) => eprintln!("stampede: checkpoint failed: {e}"),
    }
}

/// A thread of its own running `tick` every `interval_ms` until stopped:
/// the expiry sweeper and the checkpointer. Synchronous work, so it stays
/// off the async workers.
struct Periodic {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Periodic {
    fn start(name: &str, interval_ms: u64, mut tick: impl FnMut() + Send + 'static) -> Periodic {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let interval = std::time::Duration::from_millis(interval_ms);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Wakes on the interval, or at once when stopped.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    tick();
                }
            })
            .expect("spawn a periodic thread");
        Periodic { stop, thread }
    }

    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
