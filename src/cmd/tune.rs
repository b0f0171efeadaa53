//! `stampede tune`: a scenario's SKU mix through the engine at several
//! shard counts, and the count to use (the work is `stampede::tune`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct TuneArgs {
    /// A load-generator scenario file (configs/scenarios/*.toml).
    #[arg(long, value_name = "FILE")]
    pub scenario: PathBuf,
    /// Shard counts to try, powers of two.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64"
    )]
    pub shards: Vec<usize>,
    /// Seconds to run each count.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Threads driving the engine (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn tune(args: TuneArgs) -> anyhow::Result<ExitCode> {
    let scenario = stampede::tune::Scenario::load(&args.scenario)?;
    for &s in &args.shards {
        anyhow::ensure!(
            s.is_power_of_two() && s <= stampede::engine::SHARDS_MAX,
            "--shards: {s} is not a power of two from 1 to {}",
            stampede::engine::SHARDS_MAX
        );
    }
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds <= 600.0,
        "--seconds must be above 0 and at most 600"
    );
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!((1..=256).contains(&threads), "--threads must be 1 to 256");
    stampede::log_line!(
        "tune: scenario {:?}: {} SKUs ({:?}), {} threads, {} s per shard count",
        scenario.name,
        scenario.catalog.skus,
        scenario.catalog.popularity,
        threads,
        args.seconds
    );
    let report = stampede::tune::run(
        &scenario,
        &args.shards,
        threads,
        std::time::Duration::from_secs_f64(args.seconds),
        |row| {
            stampede::log_line!(
                "tune: {} shards: {:.0} pairs/s",
                row.shards,
                row.pairs_per_s
            )
        },
    );
    write!(std::io::stdout().lock(), "{report}")?;
    Ok(ExitCode::SUCCESS)
}
