//! `stampede tune`: how many shards a sale needs. Runs a scenario's SKU
//! mix (its `[catalog]`: how many SKUs, uniform or Zipf popularity; its
//! `[flow]`: how many holds are confirmed) through the engine in process,
//! once per shard count, and reports throughput, time spent waiting for
//! shard locks, and how unevenly the shards were loaded; then the count it
//! recommends and why.
//!
//! Only the engine runs (no log, no HTTP): the figures are the core's
//! ceiling for that mix, and what shards change. The scenario file is the
//! load generator's (`configs/scenarios/*.toml`), read and checked by the
//! one scenario crate both use (`stampede-scenario`); the sections this
//! command does not use (phases, client, drop) are checked and ignored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::SystemClock;
use crate::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest, STOCK_MAX};

pub use stampede_scenario::{Popularity, Scenario};

/// Cumulative popularity of each SKU of the scenario's catalog (the last
/// is 1.0). A `hot` catalog: every shopper wants the first SKU.
fn cdf(scenario: &Scenario) -> Vec<f64> {
    let catalog = &scenario.catalog;
    let n = catalog.skus;
    let weights: Vec<f64> = match catalog.popularity {
        Popularity::Uniform => vec![1.0; n],
        Popularity::Zipf => (1..=n)
            .map(|k| 1.0 / (k as f64).powf(catalog.zipf_exponent))
            .collect(),
        Popularity::Hot => (0..n).map(|k| if k == 0 { 1.0 } else { 0.0 }).collect(),
    };
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// One shard count's run.
#[derive(Debug, Clone)]
pub struct Row {
    pub shards: usize,
    /// Reserve plus confirm-or-release pairs a second, all threads.
    pub pairs_per_s: f64,
    /// Time threads spent waiting for shard locks, as a share of the run's
    /// thread time.
    pub lock_wait_share: f64,
    /// The busiest shard's operations over the mean shard's (1.0 = even).
    pub imbalance: f64,
}

/// What `tune` found.
#[derive(Debug, Clone)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Share of all operations taken by the most popular SKU.
    pub top_sku_share: f64,
    pub recommended: usize,
    pub why: String,
}

/// Runs the scenario's mix for `duration` on `threads` threads at each
/// shard count; `progress` hears each row as it is measured.
pub fn run(
    scenario: &Scenario,
    shards: &[usize],
    threads: usize,
    duration: Duration,
    mut progress: impl FnMut(&Row),
) -> Report {
    let cdf = cdf(scenario);
    let names: Vec<String> = (0..scenario.catalog.skus)
        .map(|i| format!("sku-{i:06}"))
        .collect();
    let mut rows = Vec::new();
    for &count in shards {
        let row = run_one(scenario, &cdf, &names, count, threads, duration);
        progress(&row);
        rows.push(row);
    }
    let top_sku_share = cdf.first().copied().unwrap_or(1.0);
    let (recommended, why) = recommend(&rows, top_sku_share);
    Report {
        rows,
        top_sku_share,
        recommended,
        why,
    }
}

fn run_one(
    scenario: &Scenario,
    cdf: &[f64],
    names: &[String],
    shards: usize,
    threads: usize,
    duration: Duration,
) -> Row {
    let engine = Engine::new(
        Options {
            shards,
            // Ended holds go at the next sweep: memory stays flat.
            retention_ms: 0,
            ..Options::default()
        },
        Arc::new(SystemClock),
    );
    for name in names {
        engine
            .set_stock(name, STOCK_MAX, Some(0))
            .expect("a valid SKU and stock");
    }
    let before = engine.shard_stats();
    let started = Instant::now();
    let pairs: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let engine = &engine;
                scope.spawn(move || {
                    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let mut next = move || {
                        rng ^= rng >> 12;
                        rng ^= rng << 25;
                        rng ^= rng >> 27;
                        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
                    };
                    let customer = format!("tune-{t}");
                    let mut done = 0u64;
                    while started.elapsed() < duration {
                        for _ in 0..256 {
                            let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
                            let sku = cdf.partition_point(|&c| c < u).min(names.len() - 1);
                            let items = [ItemRequest {
                                sku: &names[sku],
                                qty: 1,
                            }];
                            // Stock is STOCK_MAX and ended holds are
                            // purged at the sweep, so a refusal (the hold
                            // table full between sweeps) is rare; it is
                            // skipped, not counted as a pair.
                            let Ok(hold) = engine.reserve(&ReserveRequest {
                                customer_id: &customer,
                                items: &items,
                                ttl_ms: None,
                                fill: Fill::All,
                            }) else {
                                continue;
                            };
                            let confirm = ((next() >> 11) as f64 / (1u64 << 53) as f64)
                                < scenario.flow.confirm;
                            let _ = match confirm {
                                true => engine.confirm(hold.id, None),
                                false => engine.release(hold.id),
                            };
                            done += 1;
                        }
                        if done % 16_384 < 256 {
                            engine.sweep();
                        }
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a tune thread"))
            .sum()
    });
    let elapsed = started.elapsed();
    let after = engine.shard_stats();
    let ops: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.operations - b.operations)
        .collect();
    let wait: Duration = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.lock_wait.saturating_sub(b.lock_wait))
        .sum();
    let mean = ops.iter().sum::<u64>() as f64 / ops.len().max(1) as f64;
    let max = ops.iter().copied().max().unwrap_or(0) as f64;
    Row {
        shards,
        pairs_per_s: pairs as f64 / elapsed.as_secs_f64(),
        lock_wait_share: wait.as_secs_f64() / (elapsed.as_secs_f64() * threads as f64),
        imbalance: if mean > 0.0 { max / mean } else { 1.0 },
    }
}

/// The fewest shards within 5% of the best throughput: more shards cost
/// memory and scans (sweeps, stats) and buy nothing past that point.
fn recommend(rows: &[Row], top_sku_share: f64) -> (usize, String) {
    let Some(best) = rows
        .iter()
        .map(|r| r.pairs_per_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
    else {
        return (0, "no shard counts were run".into());
    };
    let pick = rows
        .iter()
        .filter(|r| r.pairs_per_s >= 0.95 * best)
        .min_by_key(|r| r.shards)
        .expect("the best row passes");
    let mut why = format!(
        "{} shard(s) reach {:.0}% of the best throughput measured ({:.2}M pairs/s); more add memory and sweep work and buy nothing here",
        pick.shards,
        100.0 * pick.pairs_per_s / best,
        best / 1e6
    );
    if top_sku_share >= 0.2 {
        why.push_str(&format!(
            ". One SKU takes {:.0}% of operations: it is one lock whatever the shard count, so more shards will not help it (see stock buckets on the redis store)",
            100.0 * top_sku_share
        ));
    }
    (pick.shards, why)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:>7}  {:>14}  {:>14}  {:>10}",
            "shards", "pairs/s", "lock wait", "imbalance"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:>7}  {:>14.0}  {:>13.1}%  {:>9.2}x",
                r.shards,
                r.pairs_per_s,
                100.0 * r.lock_wait_share,
                r.imbalance
            )?;
        }
        writeln!(f, "recommended: engine.shards = {}", self.recommended)?;
        writeln!(f, "why: {}", self.why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(figures: &[(usize, f64)]) -> Vec<Row> {
        figures
            .iter()
            .map(|&(shards, pairs_per_s)| Row {
                shards,
                pairs_per_s,
                lock_wait_share: 0.0,
                imbalance: 1.0,
            })
            .collect()
    }

    #[test]
    fn recommends_the_fewest_shards_near_the_best() {
        let (n, why) = recommend(
            &rows(&[(1, 1e6), (4, 1.9e6), (16, 2e6), (64, 1.98e6)]),
            0.01,
        );
        assert_eq!(n, 4, "{why}");
        assert!(!why.contains("One SKU"), "{why}");
    }

    #[test]
    fn a_dominant_sku_is_named_as_the_limit() {
        let (_, why) = recommend(&rows(&[(1, 1e6), (8, 1e6)]), 0.6);
        assert!(why.contains("One SKU takes 60% of operations"), "{why}");
    }

    fn catalog(popularity: &str) -> Scenario {
        Scenario::parse(&format!(
            "name = \"t\"\n[[phases]]\nname = \"p\"\nduration_s = 1\nrate = 1\n\
             [catalog]\nskus = 20\npopularity = \"{popularity}\"\nzipf_exponent = 1.2\n"
        ))
        .unwrap()
    }

    #[test]
    fn zipf_puts_the_most_weight_on_the_first_sku() {
        let cdf = cdf(&catalog("zipf"));
        assert!((cdf[19] - 1.0).abs() < 1e-9);
        assert!(cdf[0] > 0.25 && cdf[0] < 0.35, "{}", cdf[0]);
    }

    #[test]
    fn a_hot_catalog_sends_everyone_to_the_first_sku() {
        let hot = cdf(&catalog("hot"));
        assert!(hot.iter().all(|&c| (c - 1.0).abs() < 1e-12), "{hot:?}");
        let uniform = cdf(&catalog("uniform"));
        assert!((uniform[0] - 0.05).abs() < 1e-9);
    }
}
