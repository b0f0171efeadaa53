//! Threaded stress: 8 threads hammer one hot SKU and many cold ones with
//! single and multi-SKU holds, confirms, releases and expiries, while a
//! sweeper moves the clock. At the end every SKU's `held + sold` must equal
//! the units of the reservations that are still held or confirmed, and no
//! SKU may ever have been oversold. Seeded: a failure prints its seed
//! (`STRESS_SEED` replays it; `STRESS_OPS` sets operations per thread).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stampede::engine::{Error, Fill, HoldId, ItemRequest, Options, ReserveRequest, Status};

const THREADS: usize = 8;
const COLD: usize = 200;
const HOT_STOCK: u64 = 500;
const COLD_STOCK: u64 = 20;

/// xorshift64*: small, seedable, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn eight_threads_never_oversell_and_account_for_every_unit() {
    let seed = env_u64("STRESS_SEED", 0x5eed_0001 ^ std::process::id() as u64);
    let ops = env_u64("STRESS_OPS", 20_000);
    eprintln!("stress seed {seed} (STRESS_SEED={seed} replays), {ops} ops per thread");
    let (engine, clock) = common::engine_with(Options {
        shards: 16,
        retention_ms: u64::MAX / 4,
        ..Options::default()
    });
    let engine = Arc::new(engine);
    let cold: Vec<String> = (0..COLD).map(|i| format!("cold-{i}")).collect();
    engine.set_stock("hot", HOT_STOCK, Some(50)).unwrap();
    for name in &cold {
        engine.set_stock(name, COLD_STOCK, None).unwrap();
    }
    let cold = Arc::new(cold);
    let done = Arc::new(AtomicBool::new(false));

    // Moves time and sweeps, so expiry races everything else.
    let sweeper = {
        let (engine, clock, done) = (engine.clone(), clock.clone(), done.clone());
        std::thread::spawn(move || {
            let mut sweeps = 0u64;
            while !done.load(Ordering::Relaxed) {
                clock.advance(7);
                engine.sweep();
                let hot = engine.sku("hot").unwrap();
                assert!(hot.held + hot.sold <= hot.stock, "oversold: {hot:?}");
                sweeps += 1;
                std::thread::yield_now();
            }
            sweeps
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (engine, cold) = (engine.clone(), cold.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_add(t as u64 * 0x9E37_79B9) | 1);
                let mut mine: Vec<HoldId> = Vec::new();
                for _ in 0..ops {
                    let customer = format!("c-{}", rng.below(64));
                    match rng.below(10) {
                        0..=4 => {
                            let mut names: Vec<&str> = Vec::new();
                            if rng.below(2) == 0 {
                                names.push("hot");
                            }
                            for _ in 0..rng.below(4) {
                                let n = cold[rng.below(COLD as u64) as usize].as_str();
                                if !names.contains(&n) {
                                    names.push(n);
                                }
                            }
                            if names.is_empty() {
                                names.push("hot");
                            }
                            let items: Vec<ItemRequest> = names
                                .iter()
                                .map(|&sku| ItemRequest {
                                    sku,
                                    qty: 1 + rng.below(3) as u32,
                                })
                                .collect();
                            let fill = if rng.below(4) == 0 {
                                Fill::Partial
                            } else {
                                Fill::All
                            };
                            let ttl_ms = Some(1 + rng.below(200));
                            match engine.reserve(&ReserveRequest {
                                customer_id: &customer,
                                items: &items,
                                ttl_ms,
                                fill,
                            }) {
                                Ok(r) => mine.push(r.id),
                                Err(
                                    Error::InsufficientStock { .. }
                                    | Error::CustomerLimitExceeded { .. },
                                ) => {}
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        }
                        5..=6 if !mine.is_empty() => {
                            let id = mine[rng.below(mine.len() as u64) as usize];
                            match engine.confirm(id, Some("order")) {
                                Ok(_)
                                | Err(Error::HoldExpired { .. } | Error::HoldNotActive { .. }) => {}
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        }
                        7 if !mine.is_empty() => {
                            let id = mine[rng.below(mine.len() as u64) as usize];
                            match engine.release(id) {
                                Ok(_) | Err(Error::HoldNotActive { .. }) => {}
                                Err(e) => panic!("unexpected {e:?}"),
                            }
                        }
                        8 if !mine.is_empty() => {
                            let id = mine[rng.below(mine.len() as u64) as usize];
                            let _ = engine.extend(id, 1 + rng.below(100));
                        }
                        9 => {
                            // Restock, so the run keeps contending instead
                            // of selling out early.
                            let name = if rng.below(2) == 0 {
                                "hot"
                            } else {
                                cold[rng.below(COLD as u64) as usize].as_str()
                            };
                            engine.adjust_stock(name, 1 + rng.below(3) as i64).unwrap();
                        }
                        _ => {
                            let v = engine.sku("hot").unwrap();
                            assert!(v.held + v.sold <= v.stock, "oversold: {v:?}");
                        }
                    }
                }
                mine
            })
        })
        .collect();

    let ids: Vec<HoldId> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    done.store(true, Ordering::Relaxed);
    let sweeps = sweeper.join().unwrap();
    // End whatever is past its expiry, so that a hold reading `held` is
    // exactly an active one.
    engine.sweep();
    engine.check_invariants();

    // Recount every SKU from the reservations the clients were granted.
    let mut held: HashMap<String, u64> = HashMap::new();
    let mut sold: HashMap<String, u64> = HashMap::new();
    for id in &ids {
        let r = engine
            .get(*id)
            .expect("retention keeps every hold readable");
        let bucket = match r.status {
            Status::Confirmed => &mut sold,
            Status::Held => &mut held,
            _ => continue,
        };
        for item in &r.items {
            *bucket.entry(item.sku.to_string()).or_default() += u64::from(item.qty);
        }
    }
    let mut granted_units = 0;
    for name in std::iter::once("hot").chain(cold.iter().map(String::as_str)) {
        let v = engine.sku(name).unwrap();
        assert!(v.held + v.sold <= v.stock, "oversold {name}: {v:?}");
        assert!(v.stock >= if name == "hot" { HOT_STOCK } else { COLD_STOCK });
        assert_eq!(v.sold, sold.get(name).copied().unwrap_or(0), "sold {name}");
        assert_eq!(v.held, held.get(name).copied().unwrap_or(0), "held {name}");
        granted_units += v.held + v.sold;
    }
    eprintln!(
        "{} reservations granted, {granted_units} units held or sold, {sweeps} sweeps",
        ids.len()
    );
    assert!(ids.len() > 1000, "the stress must actually contend");
}
