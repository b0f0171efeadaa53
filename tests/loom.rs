//! loom models of the engine's locking: every interleaving of 2-3 threads
//! at every lock operation, with the engine's real code (its mutexes are
//! loom's under `--cfg stampede_loom`, see src/sync.rs).
//!
//! Run: `RUSTFLAGS="--cfg stampede_loom" LOOM_MAX_PREEMPTIONS=2 \
//!       cargo test --release --test loom` (scripts/test.sh does this).
#![cfg(stampede_loom)]

use std::sync::Arc;

use loom::thread;
use stampede::clock::ManualClock;
use stampede::engine::{Engine, Error, Fill, ItemRequest, Options, ReserveRequest, Status};

const T0: u64 = 1_000_000;

fn engine(shards: usize) -> (Arc<Engine>, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let engine = Engine::new(
        Options {
            shards,
            retained_max: 64,
            skus_max: 64,
            ..Options::default()
        },
        clock.clone(),
    );
    (Arc::new(engine), clock)
}

/// Two SKU names that live in different shards of `engine`.
fn two_shards(engine: &Engine) -> (String, String) {
    let names: Vec<String> = (0..64).map(|i| format!("sku-{i}")).collect();
    let a = names[0].clone();
    let b = names
        .iter()
        .find(|n| engine.shard_of_sku(n) != engine.shard_of_sku(&a))
        .expect("64 names cover two shards")
        .clone();
    (a, b)
}

/// Reserves one unit of each SKU for 10 ms.
fn reserve(
    engine: &Engine,
    customer: &str,
    skus: &[&str],
) -> Result<stampede::engine::Reservation, Error> {
    reserve_for(engine, customer, skus, 10)
}

fn reserve_for(
    engine: &Engine,
    customer: &str,
    skus: &[&str],
    ttl_ms: u64,
) -> Result<stampede::engine::Reservation, Error> {
    let items: Vec<ItemRequest> = skus
        .iter()
        .map(|&sku| ItemRequest { sku, qty: 1 })
        .collect();
    engine.reserve(&ReserveRequest {
        customer_id: customer,
        items: &items,
        ttl_ms: Some(ttl_ms),
        fill: Fill::All,
    })
}

#[test]
fn two_reservations_race_for_the_last_unit() {
    loom::model(|| {
        let (engine, _) = engine(1);
        engine.set_stock("last", 1, None).unwrap();
        let handles: Vec<_> = ["c-1", "c-2"]
            .into_iter()
            .map(|c| {
                let engine = engine.clone();
                thread::spawn(move || reserve(&engine, c, &["last"]).is_ok())
            })
            .collect();
        let wins = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&w| w)
            .count();
        assert_eq!(wins, 1, "exactly one of two racers gets the last unit");
        let v = engine.sku("last").unwrap();
        assert_eq!((v.held, v.available), (1, 0));
        engine.check_invariants();
    });
}

#[test]
fn multi_sku_holds_in_opposite_orders_neither_deadlock_nor_split() {
    loom::model(|| {
        let (engine, _) = engine(2);
        let (a, b) = two_shards(&engine);
        engine.set_stock(&a, 1, None).unwrap();
        engine.set_stock(&b, 1, None).unwrap();
        let t1 = {
            let (engine, a, b) = (engine.clone(), a.clone(), b.clone());
            thread::spawn(move || reserve(&engine, "c-1", &[&a, &b]).is_ok())
        };
        let t2 = {
            let (engine, a, b) = (engine.clone(), a.clone(), b.clone());
            thread::spawn(move || reserve(&engine, "c-2", &[&b, &a]).is_ok())
        };
        // A reader that must never see one SKU of a hold without the other.
        let reader = {
            let (engine, a, b) = (engine.clone(), a.clone(), b.clone());
            thread::spawn(move || {
                let (va, vb) = (engine.sku(&a).unwrap(), engine.sku(&b).unwrap());
                // Reads are two lock acquisitions; each SKU alone is exact.
                assert!(va.held <= 1 && vb.held <= 1);
            })
        };
        let wins = [t1.join().unwrap(), t2.join().unwrap()]
            .iter()
            .filter(|&&w| w)
            .count();
        reader.join().unwrap();
        assert_eq!(wins, 1, "all or nothing: one hold gets both units");
        assert_eq!(engine.sku(&a).unwrap().held, 1);
        assert_eq!(engine.sku(&b).unwrap().held, 1);
        engine.check_invariants();
    });
}

#[test]
fn expiry_races_confirm_of_a_multi_shard_hold_and_a_new_reservation() {
    loom::model(|| {
        let (engine, clock) = engine(2);
        let (a, b) = two_shards(&engine);
        engine.set_stock(&a, 2, None).unwrap();
        engine.set_stock(&b, 2, None).unwrap();
        let hold = reserve(&engine, "c-1", &[&a, &b]).unwrap();
        let sweeper = {
            let (engine, clock) = (engine.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(10);
                engine.sweep();
            })
        };
        let confirmer = {
            let engine = engine.clone();
            thread::spawn(move || engine.confirm(hold.id, None))
        };
        // A reservation taking the same two shards (home first, as always)
        // while the sweeper and the confirm hold them.
        let newcomer = {
            let (engine, a, b) = (engine.clone(), a.clone(), b.clone());
            thread::spawn(move || reserve_for(&engine, "c-2", &[&b, &a], 1000).map(|r| r.id))
        };
        sweeper.join().unwrap();
        let confirmed = confirmer.join().unwrap();
        newcomer
            .join()
            .unwrap()
            .expect("one unit of each was always free");
        let (va, vb) = (engine.sku(&a).unwrap(), engine.sku(&b).unwrap());
        match confirmed {
            Ok(r) => {
                assert_eq!(r.status, Status::Confirmed);
                assert_eq!((va.sold, vb.sold), (1, 1));
                assert_eq!((va.available, vb.available), (0, 0));
            }
            Err(Error::HoldExpired { .. }) => {
                assert_eq!((va.sold, vb.sold), (0, 0));
                assert_eq!(
                    (va.available, vb.available),
                    (1, 1),
                    "the expired unit is back"
                );
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        engine.check_invariants();
    });
}

#[test]
fn expiry_races_release_and_stock_comes_back_once() {
    loom::model(|| {
        let (engine, clock) = engine(2);
        let (a, b) = two_shards(&engine);
        engine.set_stock(&a, 1, None).unwrap();
        engine.set_stock(&b, 1, Some(1)).unwrap();
        let hold = reserve(&engine, "c-1", &[&a, &b]).unwrap();
        let sweeper = {
            let (engine, clock) = (engine.clone(), clock.clone());
            thread::spawn(move || {
                clock.advance(10);
                engine.sweep()
            })
        };
        let releaser = {
            let engine = engine.clone();
            thread::spawn(move || engine.release(hold.id).unwrap().status)
        };
        let swept = sweeper.join().unwrap();
        let status = releaser.join().unwrap();
        assert!(matches!(status, Status::Released | Status::Expired));
        assert!(swept.expired <= 1);
        for sku in [&a, &b] {
            let v = engine.sku(sku).unwrap();
            assert_eq!((v.available, v.held), (1, 0), "given back exactly once");
        }
        // The customer's limit room came back with it.
        reserve(&engine, "c-1", &[&b]).unwrap();
        engine.check_invariants();
    });
}

/// The sold-out fast path (read without the shard lock) racing a restock:
/// a reservation that starts after the restock has returned must never be
/// told "sold out", and the flag is exact once both are done.
#[test]
fn the_sold_out_flag_racing_a_restock_is_never_a_false_sold_out() {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    loom::model(|| {
        let (engine, _) = engine(2);
        engine.set_stock("hot", 1, None).unwrap();
        let hold = reserve(&engine, "c-0", &["hot"]).unwrap();
        engine.confirm(hold.id, None).unwrap();
        assert!(engine.is_sold_out("hot"));
        let restocked = Arc::new(AtomicBool::new(false));
        let restock = {
            let (engine, restocked) = (engine.clone(), restocked.clone());
            thread::spawn(move || {
                engine.adjust_stock("hot", 1).unwrap();
                restocked.store(true, SeqCst);
            })
        };
        let shopper = {
            let (engine, restocked) = (engine.clone(), restocked.clone());
            thread::spawn(move || {
                let after_restock = restocked.load(SeqCst);
                // The API's fast path: the lock-free flag, then the engine.
                let outcome = if engine.is_sold_out("hot") {
                    Err(Error::InsufficientStock {
                        sku: "hot".into(),
                        requested: 1,
                        available: 0,
                    })
                } else {
                    reserve(&engine, "c-1", &["hot"])
                };
                if after_restock {
                    assert!(outcome.is_ok(), "false sold out: {outcome:?}");
                }
                outcome.is_ok()
            })
        };
        restock.join().unwrap();
        let got = shopper.join().unwrap();
        // Stock 2, sold 1: not sold out, whether or not the shopper holds
        // the restocked unit.
        assert!(!engine.is_sold_out("hot"));
        let v = engine.sku("hot").unwrap();
        assert_eq!((v.held, v.sold, v.stock), (u64::from(got), 1, 2));
        engine.check_invariants();
    });
}

/// The waitlist hand-off: a release racing a newcomer who does not wait.
/// The unit given back always goes to the request already in line, never
/// to the newcomer, whatever the interleaving.
#[test]
fn a_release_racing_a_newcomer_hands_the_unit_to_the_waiter() {
    use stampede::engine::Placed;
    loom::model(|| {
        let (engine, _) = engine(2);
        engine.set_stock("hot", 1, None).unwrap();
        let held = reserve(&engine, "c-0", &["hot"]).unwrap();
        let served = Arc::new(loom::sync::Mutex::new(None));
        let cell = served.clone();
        let items = [ItemRequest { sku: "hot", qty: 1 }];
        let placed = engine
            .reserve_or_wait(
                &ReserveRequest {
                    customer_id: "waiter",
                    items: &items,
                    ttl_ms: Some(10),
                    fill: Fill::All,
                },
                Box::new(move |r| *cell.lock().unwrap() = Some(r.is_ok())),
            )
            .unwrap();
        assert!(matches!(placed, Placed::Waiting(_)));
        let release = {
            let engine = engine.clone();
            thread::spawn(move || engine.release(held.id).unwrap())
        };
        let newcomer = {
            let engine = engine.clone();
            thread::spawn(move || reserve(&engine, "late", &["hot"]).is_ok())
        };
        release.join().unwrap();
        assert!(
            !newcomer.join().unwrap(),
            "the newcomer took the waiter's unit"
        );
        assert_eq!(*served.lock().unwrap(), Some(true), "the waiter was served");
        assert_eq!(engine.waiting(), 0);
        engine.check_invariants();
    });
}

/// Two admin calls introducing a customer limit on a SKU that has sales,
/// one also restocking it: whichever finishes last, the sold-out set
/// matches the stock (the late branch of the limit's slow path once set
/// the stock without updating the set or serving the waitlist, leaving a
/// restocked SKU answering "sold out").
#[test]
fn two_limits_introduced_at_once_never_leave_a_false_sold_out() {
    loom::model(|| {
        let (engine, _) = engine(2);
        engine.set_stock("hot", 1, None).unwrap();
        let hold = reserve(&engine, "c-0", &["hot"]).unwrap();
        engine.confirm(hold.id, None).unwrap();
        assert!(engine.is_sold_out("hot"));
        let restock = {
            let engine = engine.clone();
            thread::spawn(move || engine.set_stock("hot", 3, Some(5)).unwrap())
        };
        let limit = {
            let engine = engine.clone();
            thread::spawn(move || engine.set_stock("hot", 1, Some(2)).unwrap())
        };
        restock.join().unwrap();
        limit.join().unwrap();
        let v = engine.sku("hot").unwrap();
        assert_eq!(engine.is_sold_out("hot"), v.sold >= v.stock, "{v:?}");
        engine.check_invariants();
    });
}
