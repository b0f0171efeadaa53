//! A fixed loop of reserve+confirm pairs on the engine, one thread, for
//! counting instructions per pair with callgrind (the count is the same
//! run after run, whatever else the machine does):
//!
//!   cargo build --release --example engine_probe
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \
//!       target/release/examples/engine_probe hot 200000
//!   callgrind_annotate /tmp/cg.out | head -40
//!
//! `hot`: one SKU; `uniform`: 100k SKUs drawn at random. Prints the pairs
//! made; the setup (100k SKUs) is counted too, so compare runs of the
//! same workload and size, or subtract a run of 0 pairs.

use std::sync::Arc;

use stampede::clock::SystemClock;
use stampede::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (workload, pairs) = match args.as_slice() {
        [_, w, n] if (w == "hot" || w == "uniform") => (w.clone(), n.parse::<u64>().unwrap_or(0)),
        _ => {
            eprintln!("usage: engine_probe hot|uniform PAIRS");
            std::process::exit(2);
        }
    };
    let engine = Engine::new(
        Options {
            shards: 8,
            ..Options::default()
        },
        Arc::new(SystemClock),
    );
    let skus: Vec<String> = (0..100_000).map(|i| format!("sku-{i:06}")).collect();
    for sku in &skus {
        engine.set_stock(sku, 1 << 40, None).unwrap();
    }
    let customers: Vec<String> = (0..16).map(|i| format!("c-{i}")).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..pairs {
        let sku = match workload.as_str() {
            "hot" => &skus[0],
            _ => {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                &skus[(x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 100_000) as usize]
            }
        };
        let items = [ItemRequest { sku, qty: 1 }];
        let hold = engine
            .reserve(&ReserveRequest {
                customer_id: &customers[i as usize % 16],
                items: &items,
                ttl_ms: None,
                fill: Fill::All,
            })
            .unwrap();
        engine.confirm(hold.id, None).unwrap();
        if i % 16_384 == 16_383 {
            engine.sweep();
        }
    }
    println!("{pairs} pairs");
}
