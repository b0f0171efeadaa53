//! `stampede-loadgen`: rehearse a flash sale against stampede.
//!
//!   stampede-loadgen --scenario configs/scenarios/spike.toml \
//!       --target http://127.0.0.1:8080 [--key KEY] [--out DIR]

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

// Each request allocates its task, request, strings and answer; glibc's
// malloc was an eighth of the profile of a single-threaded run.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use loadgen::run::{self, Live};
use loadgen::scenario::Scenario;
use loadgen::target::Target;

/// Drives a scenario (phases of arrival rates, a catalog, shoppers' flows)
/// against a target on an open model: shoppers arrive on a schedule fixed
/// in advance, latency is measured from each request's intended send time,
/// and late or dropped sends are reported. After the run every SKU is read
/// back: an oversell (held + sold > stock) or a lost sale exits 1.
#[derive(Parser)]
#[command(name = "stampede-loadgen", version)]
struct Args {
    /// A scenario file (see configs/scenarios/).
    #[arg(long, required_unless_present = "chart_from")]
    scenario: Option<PathBuf>,
    /// http://HOST:PORT (a stampede server; http://A,B,... for several
    /// nodes sharing one redis store, taken in turn), redis://HOST:PORT (the same
    /// flow as Lua scripts on a Redis server: the usual design), or inproc
    /// (the engine in this process: the ceiling without HTTP and the log).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Bearer key (an admin key if the run sets up stock). Also
    /// STAMPEDE_LOADGEN_KEY.
    #[arg(long, env = "STAMPEDE_LOADGEN_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Write results.json and the chart (chart.svg, chart.png: offered vs
    /// achieved rate, outcome mix, latency percentiles per second) here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run nothing: redraw the chart of a saved results.json into --out
    /// (default: the file's directory).
    #[arg(long, value_name = "RESULTS_JSON", conflicts_with = "scenario")]
    chart_from: Option<PathBuf>,
    /// Runtime threads sending the load (1: one thread does all of it).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Do not set stock before the run (the SKUs exist already).
    #[arg(long)]
    no_setup: bool,
    /// Do not read the SKUs back after the run (for a target that is not
    /// stampede, such as the trivial handler of the self-benchmark).
    #[arg(long)]
    no_audit: bool,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    match real_main() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("stampede-loadgen: {e:#}");
            std::process::exit(2);
        }
    }
}

fn real_main() -> anyhow::Result<bool> {
    let args = Args::parse();
    if let Some(file) = &args.chart_from {
        return redraw(file, args.out.as_deref());
    }
    let scenario = Scenario::load(args.scenario.as_deref().expect("clap requires it"))?;
    anyhow::ensure!(
        scenario.flow.payment.is_none() || args.target.starts_with("http://"),
        "[flow.payment] needs an http:// target (stampede): the gateway's webhooks go to its API"
    );
    anyhow::ensure!(args.threads >= 1, "--threads must be at least 1");
    let runtime = match args.threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
    .enable_all()
    .build()?;
    runtime.block_on(async {
        let target = Target::connect(&args.target, args.key.clone(), scenario.client.http2).await?;
        if !args.no_setup {
            eprintln!(
                "setting up {} SKUs with stock {}...",
                scenario.catalog.skus, scenario.catalog.stock
            );
            run::set_up(&scenario, &target).await?;
        }
        let prequeue = match &scenario.drop {
            Some(d) => {
                eprintln!(
                    "drop {}: {} customers join the pre-queue ({} at a time); it opens in {} s...",
                    d.name, scenario.customers.count, d.join_connections, d.prequeue_s
                );
                let p = loadgen::drop::fill_prequeue(&scenario, &target).await?;
                eprintln!(
                    "drop {}: {} joined ({} refused) in {:.2} s: {:.0} joins/s; waiting for the opening",
                    d.name,
                    p.joined,
                    p.refused,
                    p.elapsed.as_secs_f64(),
                    p.joined as f64 / p.elapsed.as_secs_f64().max(1e-9)
                );
                loadgen::drop::wait_for_opening(&p).await;
                Some(p)
            }
            None => None,
        };
        let live = Arc::new(Live::default());
        let progress = (!args.quiet).then(|| progress_line(live.clone(), scenario.duration_s()));
        let (outcome, target) = run::run(scenario.clone(), target, live).await;
        if let Some((bar, task)) = progress {
            task.abort();
            bar.finish_and_clear();
        }
        let audit = if args.no_audit {
            run::Audit {
                skipped: true,
                ..Default::default()
            }
        } else {
            run::audit(&scenario, &target, &outcome.stats).await
        };
        let mut results = loadgen::report::results(&scenario, &args.target, &outcome, &audit);
        if let Some(p) = &prequeue {
            results["drop"] = loadgen::drop::summary(&scenario, &target, p).await;
        }
        print!("{}", loadgen::report::text(&results));
        if let Some(dir) = &args.out {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let path = dir.join("results.json");
            std::fs::write(&path, serde_json::to_vec_pretty(&results)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("results: {}", path.display());
            // The results are on disk whatever happens to the chart.
            match loadgen::chart::write(&results, dir) {
                Ok(paths) => {
                    for p in paths {
                        println!("chart: {}", p.display());
                    }
                }
                Err(e) => eprintln!("stampede-loadgen: chart not drawn: {e:#}"),
            }
        }
        if !audit.passed() {
            eprintln!("stampede-loadgen: AUDIT FAILED");
            for line in audit
                .oversold
                .iter()
                .chain(&audit.lost_sales)
                .chain(&audit.errors)
            {
                eprintln!("  {line}");
            }
        }
        Ok(audit.passed())
    })
}

/// `--chart-from`: the chart of a saved results.json.
fn redraw(file: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<bool> {
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let results: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", file.display()))?;
    let dir = match out {
        Some(dir) => dir.to_owned(),
        None => match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        },
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for p in loadgen::chart::write(&results, &dir)? {
        println!("chart: {}", p.display());
    }
    Ok(true)
}

/// A progress line, refreshed each second: rate, errors and p99 so far.
fn progress_line(
    live: Arc<Live>,
    planned_s: f64,
) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new((planned_s * 1000.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let completed = live.completed.load(Relaxed);
            let p99_ms = {
                let mut window = live.window.lock();
                let p99 = window.value_at_quantile(0.99) as f64 / 1000.0;
                window.reset();
                p99
            };
            b.set_position(started.elapsed().as_millis() as u64);
            b.set_message(format!(
                "{}/s done, p99 {p99_ms:.1} ms, {} sent, {} in flight, {} late, {} dropped, {} errors",
                completed - last,
                live.sent.load(Relaxed),
                live.in_flight.load(Relaxed),
                live.late.load(Relaxed),
                live.dropped.load(Relaxed),
                live.errors.load(Relaxed),
            ));
            last = completed;
        }
    });
    (bar, task)
}
