//! One test per rule of the contract that the engine owns. Every test ends
//! with `check_invariants`, and most check it after every step.

mod common;

use common::{engine, engine_with, items, req, T0};
use stampede::engine::{Error, Fill, Options, ReserveRequest, Status, SweepStats, STOCK_MAX};

#[test]
fn set_stock_creates_then_updates_and_keeps_the_limit() {
    let (e, _) = engine(4);
    let (created, v) = e.set_stock("hot-1", 100, Some(2)).unwrap();
    assert!(created);
    assert_eq!(
        (v.stock, v.available, v.held, v.sold, v.customer_limit),
        (100, 100, 0, 0, 2)
    );
    let (created, v) = e.set_stock("hot-1", 50, None).unwrap();
    assert!(!created);
    assert_eq!((v.stock, v.customer_limit), (50, 2));
    let (_, v) = e.set_stock("hot-1", 50, Some(0)).unwrap();
    assert_eq!(v.customer_limit, 0);
    e.check_invariants();
}

#[test]
fn stock_cannot_go_below_held_plus_sold() {
    let (e, _) = engine(4);
    e.set_stock("s", 10, None).unwrap();
    let i = items(&[("s", 3)]);
    let sold = e.reserve(&req("c1", &i)).unwrap();
    e.confirm(sold.id, None).unwrap();
    e.reserve(&req("c2", &i)).unwrap();
    assert_eq!(
        e.set_stock("s", 5, None),
        Err(Error::StockBelowCommitted {
            sku: "s".into(),
            committed: 6
        })
    );
    assert_eq!(
        e.adjust_stock("s", -5),
        Err(Error::StockBelowCommitted {
            sku: "s".into(),
            committed: 6
        })
    );
    let v = e.adjust_stock("s", -4).unwrap();
    assert_eq!((v.stock, v.available), (6, 0));
    let v = e.set_stock("s", 6, None).unwrap().1;
    assert_eq!(v.available, 0);
    e.check_invariants();
}

#[test]
fn stock_values_stay_within_2_pow_53() {
    let (e, _) = engine(1);
    assert!(matches!(
        e.set_stock("s", STOCK_MAX + 1, None),
        Err(Error::Invalid { .. })
    ));
    e.set_stock("s", STOCK_MAX, None).unwrap();
    assert!(matches!(e.adjust_stock("s", 1), Err(Error::Invalid { .. })));
    assert!(matches!(
        e.adjust_stock("s", i64::MIN),
        Err(Error::StockBelowCommitted { .. })
    ));
    assert_eq!(e.sku("s").unwrap().stock, STOCK_MAX);
}

#[test]
fn unknown_skus_are_reported() {
    let (e, _) = engine(4);
    assert_eq!(e.sku("nope"), Err(Error::UnknownSku { sku: "nope".into() }));
    assert_eq!(
        e.adjust_stock("nope", 1),
        Err(Error::UnknownSku { sku: "nope".into() })
    );
    e.set_stock("a", 5, None).unwrap();
    let i = items(&[("a", 1), ("nope", 1)]);
    assert_eq!(
        e.reserve(&req("c", &i)),
        Err(Error::UnknownSku { sku: "nope".into() })
    );
    assert_eq!(
        e.sku("a").unwrap().held,
        0,
        "nothing is held when one sku is unknown"
    );
    e.check_invariants();
}

#[test]
fn bad_identifiers_and_quantities_are_invalid() {
    let (e, _) = engine(4);
    e.set_stock("a", 5, None).unwrap();
    let long = "x".repeat(129);
    for (customer, sku, qty, field) in [
        ("", "a", 1, "customer_id"),
        ("c d", "a", 1, "customer_id"),
        ("c", "a b", 1, "items[0].sku"),
        ("c", long.as_str(), 1, "items[0].sku"),
        ("c", "a", 0, "items[0].qty"),
        ("c", "a", 1001, "items[0].qty"),
    ] {
        let pairs = [(sku, qty)];
        let i = items(&pairs);
        match e.reserve(&req(customer, &i)) {
            Err(Error::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{customer:?} {sku:?} {qty}: {other:?}"),
        }
    }
    assert!(matches!(
        e.set_stock("a/b", 1, None),
        Err(Error::Invalid { .. })
    ));
    e.check_invariants();
}

#[test]
fn items_must_be_1_to_max_items_distinct_skus() {
    let (e, _) = engine(4);
    e.set_stock("a", 5, None).unwrap();
    e.set_stock("b", 5, None).unwrap();
    let none = items(&[]);
    assert!(
        matches!(e.reserve(&req("c", &none)), Err(Error::Invalid { field, .. }) if field == "items")
    );
    let dup = items(&[("a", 1), ("b", 1), ("a", 1)]);
    assert!(
        matches!(e.reserve(&req("c", &dup)), Err(Error::Invalid { field, .. }) if field == "items[2].sku")
    );
    let names: Vec<String> = (0..65).map(|i| format!("s{i}")).collect();
    let many: Vec<_> = names
        .iter()
        .map(|n| stampede::engine::ItemRequest { sku: n, qty: 1 })
        .collect();
    assert!(
        matches!(e.reserve(&req("c", &many)), Err(Error::Invalid { field, .. }) if field == "items")
    );
    assert_eq!(e.sku("a").unwrap().held, 0);
    e.check_invariants();
}

#[test]
fn reserve_holds_stock_and_shows_the_reservation() {
    let (e, _) = engine(4);
    e.set_stock("hot-1", 10, None).unwrap();
    let i = items(&[("hot-1", 3)]);
    let r = e.reserve(&req("c-42", &i)).unwrap();
    assert_eq!(r.status, Status::Held);
    assert_eq!(&*r.customer_id, "c-42");
    assert_eq!(r.items.len(), 1);
    assert_eq!((&*r.items[0].sku, r.items[0].qty), ("hot-1", 3));
    assert_eq!(r.created_at_ms, T0);
    assert_eq!(r.expires_at_ms, T0 + 600_000, "default ttl is 10 minutes");
    assert_eq!(r.order_ref, None);
    let v = e.sku("hot-1").unwrap();
    assert_eq!((v.available, v.held, v.sold), (7, 3, 0));
    assert_eq!(e.get(r.id).unwrap(), r);
    assert_eq!(r.id.to_string().parse(), Ok(r.id));
    e.check_invariants();
}

#[test]
fn insufficient_stock_holds_nothing() {
    let (e, _) = engine(8);
    e.set_stock("a", 5, None).unwrap();
    e.set_stock("b", 1, None).unwrap();
    let i = items(&[("a", 2), ("b", 2)]);
    assert_eq!(
        e.reserve(&req("c", &i)),
        Err(Error::InsufficientStock {
            sku: "b".into(),
            requested: 2,
            available: 1
        })
    );
    assert_eq!(e.sku("a").unwrap().held, 0);
    assert_eq!(e.sku("b").unwrap().held, 0);
    assert_eq!(e.active_holds(), 0);
    e.check_invariants();
}

#[test]
fn partial_fill_holds_what_is_available() {
    let (e, _) = engine(8);
    e.set_stock("a", 5, None).unwrap();
    e.set_stock("b", 1, None).unwrap();
    e.set_stock("c", 0, None).unwrap();
    let i = items(&[("a", 2), ("b", 3), ("c", 1)]);
    let r = e
        .reserve(&ReserveRequest {
            fill: Fill::Partial,
            ..req("cust", &i)
        })
        .unwrap();
    let held: Vec<(&str, u32)> = r.items.iter().map(|i| (&*i.sku, i.qty)).collect();
    assert_eq!(
        held,
        vec![("a", 2), ("b", 1)],
        "c had nothing and is left out"
    );
    assert_eq!(e.sku("b").unwrap().available, 0);
    e.check_invariants();
    // Nothing at all available: 409 as usual, nothing held.
    let i = items(&[("b", 1), ("c", 1)]);
    assert_eq!(
        e.reserve(&ReserveRequest {
            fill: Fill::Partial,
            ..req("cust", &i)
        }),
        Err(Error::InsufficientStock {
            sku: "b".into(),
            requested: 1,
            available: 0
        })
    );
    assert_eq!(e.active_holds(), 1);
    e.check_invariants();
}

#[test]
fn multi_sku_hold_spans_shards_all_or_nothing() {
    let (e, _) = engine(16);
    let names: Vec<String> = (0..32).map(|i| format!("sku-{i}")).collect();
    for n in &names {
        e.set_stock(n, 1, None).unwrap();
    }
    let all: Vec<_> = names
        .iter()
        .map(|n| stampede::engine::ItemRequest { sku: n, qty: 1 })
        .collect();
    let r = e.reserve(&req("c", &all)).unwrap();
    assert_eq!(r.items.len(), 32);
    for n in &names {
        assert_eq!(e.sku(n).unwrap().available, 0);
    }
    e.check_invariants();
    e.release(r.id).unwrap();
    for n in &names {
        assert_eq!(e.sku(n).unwrap().available, 1);
    }
    let r = e.reserve(&req("c", &all)).unwrap();
    e.confirm(r.id, Some("order-1")).unwrap();
    for n in &names {
        let v = e.sku(n).unwrap();
        assert_eq!((v.held, v.sold), (0, 1));
    }
    e.check_invariants();
}

#[test]
fn customer_limit_counts_holds_and_purchases() {
    let (e, _) = engine(4);
    e.set_stock("hot-1", 100, Some(2)).unwrap();
    let one = items(&[("hot-1", 1)]);
    let first = e.reserve(&req("c-1", &one)).unwrap();
    e.confirm(first.id, None).unwrap();
    let second = e.reserve(&req("c-1", &one)).unwrap();
    assert_eq!(
        e.reserve(&req("c-1", &one)),
        Err(Error::CustomerLimitExceeded {
            sku: "hot-1".into(),
            limit: 2,
            current: 2
        })
    );
    // Another customer is unaffected.
    e.reserve(&req("c-2", &items(&[("hot-1", 2)]))).unwrap();
    // Releasing gives the customer room again; owning does not.
    e.release(second.id).unwrap();
    e.reserve(&req("c-1", &one)).unwrap();
    assert!(matches!(
        e.reserve(&req("c-1", &one)),
        Err(Error::CustomerLimitExceeded { .. })
    ));
    // Partial fill stops at the limit.
    e.set_stock("lim-3", 100, Some(3)).unwrap();
    let r = e
        .reserve(&ReserveRequest {
            fill: Fill::Partial,
            ..req("c-9", &items(&[("lim-3", 5)]))
        })
        .unwrap();
    assert_eq!(r.items[0].qty, 3);
    e.check_invariants();
}

#[test]
fn a_limit_set_late_counts_retained_holds_and_purchases() {
    let (e, clock) = engine_with(Options {
        shards: 8,
        retention_ms: 1000,
        ..Options::default()
    });
    e.set_stock("s", 100, None).unwrap();
    let one = items(&[("s", 1)]);
    // Bought, then purged: cannot be attributed any more.
    let old = e.reserve(&req("c-1", &one)).unwrap();
    e.confirm(old.id, None).unwrap();
    clock.advance(1000);
    e.sweep();
    // Bought and retained, and held: both count once the limit is set.
    let bought = e.reserve(&req("c-1", &one)).unwrap();
    e.confirm(bought.id, None).unwrap();
    e.reserve(&req("c-1", &one)).unwrap();
    e.check_invariants();
    let (_, v) = e.set_stock("s", 100, Some(3)).unwrap();
    assert_eq!((v.customer_limit, v.sold, v.held), (3, 2, 1));
    e.check_invariants();
    e.reserve(&req("c-1", &one)).unwrap();
    assert_eq!(
        e.reserve(&req("c-1", &one)),
        Err(Error::CustomerLimitExceeded {
            sku: "s".into(),
            limit: 3,
            current: 3
        })
    );
    // Removing the limit forgets the tallies; setting it again recounts.
    e.set_stock("s", 100, Some(0)).unwrap();
    e.check_invariants();
    e.reserve(&req("c-1", &one)).unwrap();
    e.set_stock("s", 100, Some(4)).unwrap();
    e.check_invariants();
    assert_eq!(
        e.reserve(&req("c-1", &one)),
        Err(Error::CustomerLimitExceeded {
            sku: "s".into(),
            limit: 4,
            current: 4
        })
    );
}

#[test]
fn confirm_turns_held_into_sold_and_is_idempotent() {
    let (e, _) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 2)]))).unwrap();
    let c = e.confirm(r.id, Some("order-7")).unwrap();
    assert_eq!(c.status, Status::Confirmed);
    assert_eq!(c.order_ref.as_deref(), Some("order-7"));
    let v = e.sku("s").unwrap();
    assert_eq!((v.held, v.sold, v.available), (0, 2, 3));
    // Again: 200 with the first order_ref, nothing moves.
    let again = e.confirm(r.id, Some("order-8")).unwrap();
    assert_eq!(again, c);
    assert_eq!(e.sku("s").unwrap().sold, 2);
    e.check_invariants();
}

#[test]
fn confirm_at_or_after_expiry_fails_even_before_the_sweep() {
    let (e, clock) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e
        .reserve(&ReserveRequest {
            ttl_ms: Some(1000),
            ..req("c", &items(&[("s", 1)]))
        })
        .unwrap();
    clock.advance(1000);
    assert_eq!(
        e.confirm(r.id, None),
        Err(Error::HoldExpired {
            expired_at_ms: T0 + 1000
        })
    );
    assert_eq!(
        e.extend(r.id, 1000),
        Err(Error::HoldExpired {
            expired_at_ms: T0 + 1000
        })
    );
    assert_eq!(e.get(r.id).unwrap().status, Status::Expired);
    assert_eq!(e.sku("s").unwrap().sold, 0);
    e.sweep();
    assert_eq!(
        e.confirm(r.id, None),
        Err(Error::HoldExpired {
            expired_at_ms: T0 + 1000
        })
    );
    e.check_invariants();
}

#[test]
fn confirm_of_a_released_hold_is_not_active() {
    let (e, _) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    e.release(r.id).unwrap();
    assert_eq!(
        e.confirm(r.id, None),
        Err(Error::HoldNotActive {
            status: Status::Released
        })
    );
    assert_eq!(
        e.extend(r.id, 10),
        Err(Error::HoldNotActive {
            status: Status::Released
        })
    );
    e.check_invariants();
}

#[test]
fn release_gives_stock_back_and_is_idempotent() {
    let (e, _) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 2)]))).unwrap();
    let rel = e.release(r.id).unwrap();
    assert_eq!(rel.status, Status::Released);
    assert_eq!(e.sku("s").unwrap().available, 5);
    assert_eq!(e.release(r.id).unwrap(), rel);
    assert_eq!(e.sku("s").unwrap().available, 5);
    e.check_invariants();
}

#[test]
fn release_of_a_confirmed_hold_is_not_active() {
    let (e, _) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 2)]))).unwrap();
    e.confirm(r.id, None).unwrap();
    assert_eq!(
        e.release(r.id),
        Err(Error::HoldNotActive {
            status: Status::Confirmed
        })
    );
    assert_eq!(
        e.extend(r.id, 10),
        Err(Error::HoldNotActive {
            status: Status::Confirmed
        })
    );
    assert_eq!(e.sku("s").unwrap().sold, 2);
    e.check_invariants();
}

#[test]
fn release_after_expiry_answers_expired() {
    let (e, clock) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e
        .reserve(&ReserveRequest {
            ttl_ms: Some(50),
            ..req("c", &items(&[("s", 2)]))
        })
        .unwrap();
    clock.advance(60);
    let rel = e.release(r.id).unwrap();
    assert_eq!(rel.status, Status::Expired);
    assert_eq!(e.sku("s").unwrap().available, 5);
    assert_eq!(e.sweep().expired, 0, "the release already ended it");
    assert_eq!(e.release(r.id).unwrap().status, Status::Expired);
    e.check_invariants();
}

#[test]
fn sweep_gives_expired_stock_back() {
    let (e, clock) = engine(8);
    e.set_stock("a", 5, None).unwrap();
    e.set_stock("b", 5, Some(5)).unwrap();
    let short = e
        .reserve(&ReserveRequest {
            ttl_ms: Some(100),
            ..req("c", &items(&[("a", 2), ("b", 5)]))
        })
        .unwrap();
    let long = e
        .reserve(&ReserveRequest {
            ttl_ms: Some(10_000),
            ..req("d", &items(&[("a", 1)]))
        })
        .unwrap();
    clock.advance(99);
    assert_eq!(e.sweep().expired, 0);
    assert_eq!(e.sku("a").unwrap().available, 2);
    clock.advance(1);
    assert_eq!(e.sweep().expired, 1);
    assert_eq!(e.sku("a").unwrap().available, 4);
    assert_eq!(e.sku("b").unwrap().available, 5);
    assert_eq!(e.get(short.id).unwrap().status, Status::Expired);
    assert_eq!(e.get(long.id).unwrap().status, Status::Held);
    // The customer limit room comes back with the stock.
    e.reserve(&req("c", &items(&[("b", 5)]))).unwrap();
    e.check_invariants();
}

#[test]
fn sweep_handles_more_expiries_than_one_batch() {
    let (e, clock) = engine(2);
    e.set_stock("s", 10_000, None).unwrap();
    for i in 0..1000 {
        let c = format!("c{i}");
        e.reserve(&ReserveRequest {
            ttl_ms: Some(10),
            ..req(&c, &items(&[("s", 1)]))
        })
        .unwrap();
    }
    clock.advance(10);
    assert_eq!(e.sweep().expired, 1000);
    assert_eq!(e.sku("s").unwrap().available, 10_000);
    e.check_invariants();
}

#[test]
fn sweep_purges_more_than_one_batch() {
    let (e, clock) = engine_with(Options {
        shards: 2,
        retention_ms: 5,
        ..Options::default()
    });
    e.set_stock("s", 10_000, None).unwrap();
    for i in 0..1000 {
        let c = format!("c{i}");
        let r = e.reserve(&req(&c, &items(&[("s", 1)]))).unwrap();
        e.release(r.id).unwrap();
    }
    clock.advance(5);
    assert_eq!(
        e.sweep(),
        SweepStats {
            expired: 0,
            purged: 1000
        }
    );
    assert_eq!(e.sweep(), SweepStats::default());
    e.check_invariants();
}

#[test]
fn extend_moves_expiry_capped_at_max_ttl_from_creation() {
    let (e, clock) = engine_with(Options {
        shards: 4,
        default_ttl_ms: 1000,
        max_ttl_ms: 5000,
        ..Options::default()
    });
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    assert_eq!(r.expires_at_ms, T0 + 1000);
    clock.advance(500);
    assert_eq!(e.extend(r.id, 2000).unwrap().expires_at_ms, T0 + 2500);
    // The old expiry no longer applies.
    clock.advance(600);
    assert_eq!(e.sweep().expired, 0);
    assert_eq!(e.extend(r.id, 60_000).unwrap().expires_at_ms, T0 + 5000);
    clock.set(T0 + 5000);
    assert_eq!(e.sweep().expired, 1);
    e.check_invariants();
}

#[test]
fn ttl_is_capped_not_refused() {
    let (e, _) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e
        .reserve(&ReserveRequest {
            ttl_ms: Some(u64::MAX),
            ..req("c", &items(&[("s", 1)]))
        })
        .unwrap();
    assert_eq!(r.expires_at_ms, T0 + 3_600_000);
    assert!(matches!(
        e.reserve(&ReserveRequest {
            ttl_ms: Some(0),
            ..req("c", &items(&[("s", 1)]))
        }),
        Err(Error::Invalid { .. })
    ));
}

#[test]
fn unknown_and_forged_ids_are_not_found() {
    let (e, _) = engine(4);
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    let text = r.id.to_string();
    // Same slot, other generation / epoch / shard.
    for forged in [
        format!("{}{}", &text[..22], "00000001"),
        format!("r_00000001{}", &text[10..]),
        format!("{}ffff{}", &text[..10], &text[14..]),
        format!("{}0000ffff{}", &text[..14], &text[22..]),
    ] {
        let id = forged.parse().unwrap();
        assert_eq!(e.get(id), Err(Error::HoldNotFound), "{forged}");
        assert_eq!(e.confirm(id, None), Err(Error::HoldNotFound));
        assert_eq!(e.release(id), Err(Error::HoldNotFound));
        assert_eq!(e.extend(id, 5), Err(Error::HoldNotFound));
    }
    e.check_invariants();
}

#[test]
fn ended_holds_are_purged_after_retention_and_ids_never_repeat() {
    let (e, clock) = engine_with(Options {
        shards: 1,
        retention_ms: 1000,
        ..Options::default()
    });
    e.set_stock("s", 5, None).unwrap();
    let r = e.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    e.confirm(r.id, None).unwrap();
    clock.advance(999);
    assert_eq!(e.sweep().purged, 0);
    assert_eq!(e.confirm(r.id, None).unwrap().status, Status::Confirmed);
    clock.advance(1);
    assert_eq!(e.sweep().purged, 1);
    assert_eq!(e.get(r.id), Err(Error::HoldNotFound));
    // The slot is reused under a new id; the old id stays dead.
    let r2 = e.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    assert_ne!(r2.id, r.id);
    assert_eq!(e.get(r.id), Err(Error::HoldNotFound));
    // Owned units still count after the hold is purged.
    assert_eq!(e.sku("s").unwrap().sold, 1);
    e.check_invariants();
}

#[test]
fn holds_are_bounded_by_retained_max() {
    let (e, _) = engine_with(Options {
        shards: 1,
        retained_max: 3,
        ..Options::default()
    });
    e.set_stock("s", 100, None).unwrap();
    for _ in 0..3 {
        e.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    }
    assert_eq!(
        e.reserve(&req("c", &items(&[("s", 1)]))),
        Err(Error::HoldCapacity { limit: 3 })
    );
    assert_eq!(e.sku("s").unwrap().held, 3);
    e.check_invariants();
}

#[test]
fn ids_differ_across_epochs() {
    let a = engine_with(Options {
        shards: 2,
        epoch: 1,
        ..Options::default()
    })
    .0;
    let b = engine_with(Options {
        shards: 2,
        epoch: 2,
        ..Options::default()
    })
    .0;
    for e in [&a, &b] {
        e.set_stock("s", 5, None).unwrap();
    }
    let ra = a.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    let rb = b.reserve(&req("c", &items(&[("s", 1)]))).unwrap();
    assert_ne!(ra.id.to_string(), rb.id.to_string());
    assert_eq!(
        b.get(ra.id),
        Err(Error::HoldNotFound),
        "an id from another epoch is unknown"
    );
}

#[test]
fn sold_out_is_known_without_the_lock_exactly_when_sold_equals_stock() {
    let (e, _) = engine(4);
    e.set_stock("hot", 2, None).unwrap();
    assert!(!e.is_sold_out("hot") && !e.is_sold_out("never-set"));
    let i = items(&[("hot", 1)]);
    let a = e.reserve(&req("c1", &i)).unwrap();
    let b = e.reserve(&req("c2", &i)).unwrap();
    // Nothing available, but held: not sold out (holds may come back).
    assert!(!e.is_sold_out("hot"));
    e.confirm(a.id, None).unwrap();
    assert!(!e.is_sold_out("hot"));
    e.confirm(b.id, None).unwrap();
    assert!(e.is_sold_out("hot"));
    assert_eq!(
        e.reserve(&req("c3", &i)).map(|r| r.id),
        Err(Error::InsufficientStock {
            sku: "hot".into(),
            requested: 1,
            available: 0
        })
    );
    // Restock clears it in the same critical section.
    e.adjust_stock("hot", 1).unwrap();
    assert!(!e.is_sold_out("hot"));
    let c = e.reserve(&req("c3", &i)).unwrap();
    e.confirm(c.id, None).unwrap();
    assert!(e.is_sold_out("hot"));
    e.set_stock("hot", 5, None).unwrap();
    assert!(!e.is_sold_out("hot"));
    e.set_stock("hot", 3, None).unwrap();
    assert!(e.is_sold_out("hot"));
    // Stock set to 0 from the start is sold out too.
    e.set_stock("zero", 0, None).unwrap();
    assert!(e.is_sold_out("zero"));
    // An unknown SKU among sold-out ones is still reported as unknown.
    let two = items(&[("hot", 1), ("nope", 1)]);
    assert!(matches!(
        e.reserve(&req("c4", &two)),
        Err(Error::UnknownSku { .. })
    ));
    e.check_invariants();
}
