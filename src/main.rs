//! The `stampede` binary: a thin command line over the library.

// Every line goes through `stampede::output` (never panics, never blocks).
#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use stampede::config::Config;
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

/// `stampede serve`: the library serves whichever store the config names.
fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args)?;
    stampede::serve::run(stampede::serve::Serve {
        config,
        data_dir: args.data_dir.clone(),
        recovery: match args.recovery {
            RecoveryArg::Strict => RecoveryMode::Strict,
            RecoveryArg::TruncateCorrupt => RecoveryMode::TruncateCorrupt,
        },
        config_file: args.config.clone(),
        reread: Box::new(move || load_config(&args)),
    })?;
    Ok(ExitCode::SUCCESS)
}
