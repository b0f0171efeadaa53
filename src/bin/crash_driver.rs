//! `stampede-crash-driver`: a test tool, not for production. It runs the
//! engine and the log on a real data directory and hammers it from four
//! threads with reservations, confirms and releases, printing a line for
//! each change only after the log says it is durable:
//!
//! ```text
//! R <hold id>      a reservation was acknowledged
//! C <hold id>      its confirm was acknowledged
//! X <hold id>      its release was acknowledged
//! ```
//!
//! `tests/crash.rs` kills it with SIGKILL at random moments, restarts it,
//! and checks that every acknowledged line is true of the recovered state.
//! It stands in for the HTTP API until that lands.
//!
//! Usage: stampede-crash-driver DATA_DIR SEED

use std::io::Write;
use std::sync::Arc;

use stampede::clock::SystemClock;
use stampede::config::Config;
use stampede::datadir::DataDir;
use stampede::engine::{Error, Fill, ItemRequest, ReserveRequest};
use stampede::store::embedded::start_core;
use stampede::wal::RecoveryMode;

const SKUS: [&str; 6] = ["hot-1", "hot-2", "cold-1", "cold-2", "cold-3", "cold-4"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: stampede-crash-driver DATA_DIR SEED (a test tool; see tests/crash.rs)");
        std::process::exit(2);
    }
    let seed: u64 = args[2].parse().expect("SEED is a number");
    let data_dir = DataDir::open(args[1].as_ref()).expect("open the data dir");
    let mut config = Config::default();
    config.engine.shards = 4;
    let core = start_core(
        &config,
        &data_dir,
        RecoveryMode::Strict,
        Arc::new(SystemClock),
    )
    .expect("recover");
    for sku in SKUS {
        if core.engine.sku(sku).is_err() {
            core.engine
                .set_stock(sku, 300, Some(if sku.starts_with("hot") { 3 } else { 0 }))
                .expect("set stock");
        }
    }
    core.wal.sync().expect("sync");
    println!("ready");
    // Never outlive the test that started it: it holds our stdin, and when
    // it goes away, stdin ends.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(3);
    });
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (core, out) = (&core, out.clone());
            s.spawn(move || {
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t + 1);
                let mut next = move |n: u64| {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
                };
                let mut mine = Vec::new();
                let ack = |line: String| {
                    let mut o = out.lock().expect("stdout lock");
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                };
                loop {
                    match next(4) {
                        0 | 1 => {
                            let a = SKUS[next(6) as usize];
                            let b = SKUS[next(6) as usize];
                            let items = if a == b {
                                vec![ItemRequest { sku: a, qty: 1 }]
                            } else {
                                vec![
                                    ItemRequest { sku: a, qty: 1 },
                                    ItemRequest { sku: b, qty: 1 },
                                ]
                            };
                            let customer = format!("c-{}", next(1_000_000));
                            match core.engine.reserve(&ReserveRequest {
                                customer_id: &customer,
                                items: &items,
                                ttl_ms: Some(3_600_000),
                                fill: Fill::All,
                            }) {
                                Ok(r) => {
                                    core.wal.sync().expect("sync");
                                    ack(format!("R {}", r.id));
                                    mine.push(r.id);
                                }
                                Err(Error::InsufficientStock { sku, .. }) => {
                                    // Restock, so the run never stalls.
                                    core.engine.adjust_stock(&sku, 100).expect("restock");
                                }
                                Err(e) => panic!("unexpected {e}"),
                            }
                        }
                        2 if !mine.is_empty() => {
                            let id = mine.swap_remove(next(mine.len() as u64) as usize);
                            if core.engine.confirm(id, Some("order")).is_ok() {
                                core.wal.sync().expect("sync");
                                ack(format!("C {id}"));
                            }
                        }
                        3 if !mine.is_empty() => {
                            let id = mine.swap_remove(next(mine.len() as u64) as usize);
                            if core.engine.release(id).is_ok() {
                                core.wal.sync().expect("sync");
                                ack(format!("X {id}"));
                            }
                        }
                        _ => {}
                    }
                }
            });
        }
    });
}
