//! The `stampede` binary: a thin command line over the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

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
    let data_dir = DataDir::open(&args.data_dir).context("cannot open the data directory")?;
    let engine = Arc::new(Engine::new(
        config.engine_options(data_dir.epoch()),
        Arc::new(SystemClock),
    ));
    eprintln!(
        "stampede: engine ready ({} shards, epoch {}, data in {})",
        engine.shard_count(),
        data_dir.epoch(),
        data_dir.path().display()
    );
    anyhow::bail!(
        "the HTTP API is not built yet: config, data dir and engine are ready, \
         but there is nothing to serve {} with",
        config.server.listen
    )
}
