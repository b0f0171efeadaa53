//! Engine throughput: reserve+confirm and reserve+release, 1 and 2 threads,
//! on three workloads, beside the naive single-lock baseline in the same
//! run. One criterion "element" is one reserve plus its confirm/release.
//!
//!   cargo bench --bench engine            all of it (about 3 minutes)
//!   cargo bench --bench engine -- hot     one workload

mod support;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use smallvec::SmallVec;
use stampede::engine::ItemRequest;
use support::{customer_names, sku_name, sku_names, Naive, Rng, Target, Workload, SKU_NAME_LEN};

/// Every this many pairs a thread runs the upkeep (the engine's sweep),
/// as the server's sweeper would about every 100 ms at these rates.
const UPKEEP_EVERY: u64 = 16_384;

#[derive(Clone, Copy)]
enum Finish {
    Confirm,
    Release,
}

fn run<T: Target>(
    target: &T,
    workload: Workload,
    finish: Finish,
    threads: usize,
    iters: u64,
) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let customers = customer_names(t);
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
                let mut picked = Vec::with_capacity(4);
                let mut bufs = [[0u8; SKU_NAME_LEN]; 4];
                for i in 0..per_thread {
                    workload.pick(&mut rng, &mut picked);
                    let mut items: SmallVec<[ItemRequest; 4]> = SmallVec::new();
                    for (buf, &s) in bufs.iter_mut().zip(&picked) {
                        items.push(ItemRequest {
                            sku: sku_name(s, buf),
                            qty: 1,
                        });
                    }
                    let customer = &customers[i as usize % customers.len()];
                    let id = target.reserve(customer, &items);
                    match finish {
                        Finish::Confirm => target.confirm(id),
                        Finish::Release => target.release(id),
                    }
                    if i % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
                        target.upkeep();
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let names = sku_names();
    for (finish, label) in [
        (Finish::Confirm, "reserve_confirm"),
        (Finish::Release, "reserve_release"),
    ] {
        let mut group = c.benchmark_group(label);
        group.throughput(Throughput::Elements(1));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        for workload in [Workload::Uniform, Workload::Hot, Workload::Multi4] {
            for threads in [1, 2] {
                let param = format!("{}/{}t", workload.name(), threads);
                let engine = support::engine(&names);
                group.bench_function(BenchmarkId::new("stampede", &param), |b| {
                    b.iter_custom(|iters| run(&engine, workload, finish, threads, iters))
                });
                drop(engine);
                let naive = Naive::new(&names);
                group.bench_function(BenchmarkId::new("naive_global_mutex", &param), |b| {
                    b.iter_custom(|iters| run(&naive, workload, finish, threads, iters))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
