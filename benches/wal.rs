//! Durable reservations: the engine with the log on the real disk, every
//! reservation acknowledged only once fdatasync covers it.
//!
//!   cargo bench --bench wal            (about 40 s; writes under target/)
//!
//! Prints, in one run:
//! - fsync per operation: one thread, reserve then wait, so every
//!   reservation pays its own fdatasync (the baseline);
//! - group commit: T threads each put B reservations in flight, then wait
//!   once for the log; the writer syncs whatever is queued as one group;
//! - for each: reservations/s, commit latency p50/p99/max (from the
//!   reservation's start to its acknowledgement), average group size;
//! - replay rate: the whole log read back into a fresh engine.
//!
//! `WAL_BENCH_SECS` sets the seconds per configuration (default 5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use stampede::clock::SystemClock;
use stampede::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest, STOCK_MAX};
use stampede::wal::{self, recover, DiskStorage, Durability, RecoveryMode, Wal};

const SKUS: usize = 100_000;

fn sku_name(i: usize) -> String {
    format!("sku-{i:06}")
}

struct Setup {
    engine: Arc<Engine>,
    wal: Arc<Wal>,
    dir: std::path::PathBuf,
}

fn setup(tag: &str) -> Setup {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("wal-bench-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    let storage = Arc::new(DiskStorage::new(&dir).unwrap());
    let mut engine = Engine::new(
        Options {
            retained_max: 1 << 26,
            ..Options::default()
        },
        Arc::new(SystemClock),
    );
    let report = recover(storage.as_ref(), RecoveryMode::Strict, None, |r| {
        engine.replay_frame(r)
    })
    .unwrap();
    let wal = Arc::new(
        Wal::open(
            storage,
            wal::Options {
                durability: Durability::Fsync,
                segment_bytes_max: 256 << 20,
            },
            &report,
        )
        .unwrap(),
    );
    engine.attach_journal(wal.clone());
    for i in 0..SKUS {
        engine.set_stock(&sku_name(i), STOCK_MAX, None).unwrap();
    }
    wal.sync().unwrap();
    Setup {
        engine: Arc::new(engine),
        wal,
        dir,
    }
}

struct Outcome {
    reservations: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    group_size: f64,
}

/// `threads` threads, each with `in_flight` reservations outstanding per
/// wait, for `secs`.
fn run(s: &Setup, threads: usize, in_flight: usize, secs: Duration) -> Outcome {
    let before = s.wal.stats();
    let start = Instant::now();
    let histograms: Vec<Histogram<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                    let customer = format!("bench-{t}");
                    let mut started = Vec::with_capacity(in_flight);
                    while start.elapsed() < secs {
                        started.clear();
                        for _ in 0..in_flight {
                            x ^= x >> 12;
                            x ^= x << 25;
                            x ^= x >> 27;
                            let sku = sku_name(
                                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % SKUS as u64) as usize,
                            );
                            let items = [ItemRequest { sku: &sku, qty: 1 }];
                            let t0 = Instant::now();
                            s.engine
                                .reserve(&ReserveRequest {
                                    customer_id: &customer,
                                    items: &items,
                                    ttl_ms: None,
                                    fill: Fill::All,
                                })
                                .unwrap();
                            started.push(t0);
                        }
                        s.wal.sync().unwrap();
                        let done = Instant::now();
                        for t0 in &started {
                            h.record((done - *t0).as_micros().max(1) as u64).unwrap();
                        }
                    }
                    h
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for h in &histograms {
        latency_us.add(h).unwrap();
    }
    let after = s.wal.stats();
    let records = after.records - before.records;
    let groups = after.groups - before.groups;
    Outcome {
        reservations: latency_us.len(),
        elapsed,
        latency_us,
        group_size: records as f64 / groups.max(1) as f64,
    }
}

fn print(label: &str, o: &Outcome) {
    println!(
        "{label:<44} {:>12.0} {:>9} {:>9} {:>9} {:>9.1}",
        o.reservations as f64 / o.elapsed.as_secs_f64(),
        o.latency_us.value_at_quantile(0.50),
        o.latency_us.value_at_quantile(0.99),
        o.latency_us.max(),
        o.group_size
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = Duration::from_secs(
        std::env::var("WAL_BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    println!(
        "{:<44} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "durable reservations (fdatasync)", "per second", "p50 us", "p99 us", "max us", "group"
    );
    let s = setup("baseline");
    print(
        "fsync per operation (1 thread, 1 in flight)",
        &run(&s, 1, 1, secs),
    );
    drop(s);
    let s = setup("group");
    for (threads, in_flight) in [(2, 64), (4, 128), (4, 512)] {
        let o = run(&s, threads, in_flight, secs);
        print(
            &format!("group commit ({threads} threads x {in_flight} in flight)"),
            &o,
        );
    }
    // Replay: everything this run logged, into a fresh engine.
    s.wal.close().unwrap();
    let dir = s.dir.clone();
    drop(s);
    let storage = DiskStorage::new(&dir).unwrap();
    let engine = Engine::new(
        Options {
            retained_max: 1 << 26,
            ..Options::default()
        },
        Arc::new(SystemClock),
    );
    let start = Instant::now();
    let report = recover(&storage, RecoveryMode::Strict, None, |f| {
        engine.replay_frame(f)
    })
    .unwrap();
    let elapsed = start.elapsed();
    let bytes: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    println!(
        "replay: {} records ({} MiB) in {:.2} s = {:.0} records/s",
        report.records,
        bytes >> 20,
        elapsed.as_secs_f64(),
        report.records as f64 / elapsed.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    restart();
}

fn open_at(dir: &std::path::Path, durability: Durability) -> stampede::store::embedded::Core {
    let engine = Engine::new(
        Options {
            retention_ms: 0,
            retained_max: 1 << 26,
            ..Options::default()
        },
        Arc::new(SystemClock),
    );
    stampede::store::embedded::open_core(
        Arc::new(DiskStorage::new(dir).unwrap()),
        engine,
        stampede::store::embedded::Owners::new(
            stampede::idempotency::IdempotencyStore::new(86_400_000, 1_000_000, 1 << 20),
            Arc::new(SystemClock),
        ),
        RecoveryMode::Strict,
        wal::Options {
            durability,
            segment_bytes_max: 64 << 20,
        },
    )
    .unwrap()
}

/// Restart over 10M records: full replay (the baseline) against starting
/// from a checkpoint plus the records after it, same log, same run.
fn restart() {
    const PAIRS: u64 = 5_000_000;
    const TAIL: u64 = 50_000;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wal-bench-restart");
    let _ = std::fs::remove_dir_all(&dir);
    let fill = |core: &stampede::store::embedded::Core, pairs: u64| {
        for i in 0..pairs {
            let sku = sku_name((i % SKUS as u64) as usize);
            let items = [ItemRequest { sku: &sku, qty: 1 }];
            let customer = format!("c-{}", i % 1000);
            let r = core
                .engine
                .reserve(&ReserveRequest {
                    customer_id: &customer,
                    items: &items,
                    ttl_ms: None,
                    fill: Fill::All,
                })
                .unwrap();
            core.engine.release(r.id).unwrap();
            if i % 65_536 == 0 {
                core.engine.sweep(); // purge ended holds (retention 0)
            }
        }
        core.wal.sync().unwrap();
    };
    // Writing the log is not what is measured: durability "os" fills it fast;
    // the bytes are the same.
    let core = open_at(&dir, Durability::Os);
    for i in 0..SKUS {
        core.engine
            .set_stock(
                &sku_name(i),
                STOCK_MAX,
                Some(if i % 2 == 0 { 0 } else { 10_000_000 }),
            )
            .unwrap();
    }
    fill(&core, PAIRS);
    core.wal.close().unwrap();
    drop(core);
    let start = Instant::now();
    let core = open_at(&dir, Durability::Os);
    let full = start.elapsed();
    let records = core.report.records;
    let cp = core.checkpoint().unwrap();
    fill(&core, TAIL);
    core.wal.close().unwrap();
    drop(core);
    let start = Instant::now();
    let core = open_at(&dir, Durability::Os);
    let from_checkpoint = start.elapsed();
    println!(
        "restart over {records} records: full replay {:.2} s; from a checkpoint ({} KiB image, shards locked {:?}) \
         plus {} records: {:.3} s",
        full.as_secs_f64(),
        cp.image_bytes >> 10,
        cp.stall,
        core.report.records,
        from_checkpoint.as_secs_f64()
    );
    drop(core);
    let _ = std::fs::remove_dir_all(&dir);
}
