//! Bytes of memory per active hold at 1M holds, beside the naive baseline,
//! in one run. Not a timing: it prints a table and exits.
//!
//!   cargo bench --bench memory
//!
//! Counted two ways: bytes requested from the allocator (exact, what the
//! data structures ask for) and the growth of the resident set (what the
//! machine pays, allocator overhead included). 1M holds of one unit each,
//! by 1M distinct customers (`cust-0000001`...), over 100k SKUs drawn
//! uniformly; once with no customer limits and once with a limit on every
//! SKU (which adds a per-customer tally per hold).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use stampede::engine::{Engine, ItemRequest, STOCK_MAX};
use support::{sku_name, sku_names, Naive, Rng, Target, SKUS, SKU_NAME_LEN};

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size, Ordering::Relaxed);
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const HOLDS: usize = 1_000_000;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Places `HOLDS` holds and returns (allocated bytes, RSS bytes) per hold.
fn measure<T: Target>(target: &T) -> (f64, f64) {
    let mut rng = Rng(42);
    let mut buf = [0u8; SKU_NAME_LEN];
    let mut ids = Vec::with_capacity(HOLDS);
    let (heap0, rss0) = (ALLOCATED.load(Ordering::Relaxed), rss_bytes());
    let ids_bytes = HOLDS * std::mem::size_of::<T::Id>();
    for i in 0..HOLDS {
        let customer = format!("cust-{i:07}");
        let sku = sku_name(rng.below(SKUS), &mut buf);
        ids.push(target.reserve(&customer, &[ItemRequest { sku, qty: 1 }]));
    }
    let heap = ALLOCATED.load(Ordering::Relaxed) - heap0 - ids_bytes;
    let rss = rss_bytes().saturating_sub(rss0).saturating_sub(ids_bytes);
    std::hint::black_box(&ids);
    (heap as f64 / HOLDS as f64, rss as f64 / HOLDS as f64)
}

const CASES: [&str; 3] = ["limits_0", "limits_2", "naive"];

/// Each case runs in a fresh child process, so the resident-set growth of
/// one is not hidden by memory another freed.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` asks every bench target.
    }
    if let Some(case) = args.iter().find_map(|a| a.strip_prefix("--case=")) {
        return run_case(case);
    }
    println!("bytes per active hold at {HOLDS} holds, 100k SKUs, 1M distinct customers");
    println!("{:<44} {:>12} {:>12}", "target", "allocated", "rss growth");
    let exe = std::env::current_exe().expect("own path");
    for case in CASES {
        let status = std::process::Command::new(&exe)
            .arg(format!("--case={case}"))
            .status()
            .expect("run a case");
        assert!(status.success(), "case {case} failed");
    }
}

fn run_case(case: &str) {
    let names = sku_names();
    let (label, heap, rss) = match case {
        "naive" => {
            let naive = Naive::new(&names);
            let (heap, rss) = measure(&naive);
            ("naive global mutex (baseline)", heap, rss)
        }
        _ => {
            let limit = if case == "limits_2" { 2 } else { 0 };
            let engine = support::engine(&names);
            for n in &names {
                engine.set_stock(n, STOCK_MAX, Some(limit)).unwrap();
            }
            let (heap, rss) = measure(&engine);
            assert_eq!(Engine::active_holds(&engine), HOLDS);
            let label = if limit == 0 {
                "stampede, no customer limits"
            } else {
                "stampede, customer_limit 2 on every SKU"
            };
            (label, heap, rss)
        }
    };
    println!("{label:<44} {heap:>12.1} {rss:>12.1}");
}
