//! The per-SKU waitlist (`wait_ms`) in the engine: first come first
//! served, stock given back goes to the head before anyone else, and every
//! wait ends with an answer. Times come from the injected clock.

mod common;

use std::sync::{Arc, Mutex};

use common::{engine, engine_with, items, req};
use stampede::engine::{Error, Options, Placed, Reservation, WaitTicket};

type Outcome = Arc<Mutex<Option<Result<Reservation, Error>>>>;

/// Joins the line (or holds at once); the outcome lands in the returned cell.
fn wait(e: &stampede::engine::Engine, customer: &str, sku: &str, qty: u32) -> (Placed, Outcome) {
    let outcome: Outcome = Arc::default();
    let cell = outcome.clone();
    let pairs = [(sku, qty)];
    let i = items(&pairs);
    let placed = e
        .reserve_or_wait(
            &req(customer, &i),
            Box::new(move |r| *cell.lock().unwrap() = Some(r.map(|l| l.value))),
        )
        .unwrap();
    (placed, outcome)
}

fn ticket(p: Placed) -> WaitTicket {
    match p {
        Placed::Waiting(t) => t,
        Placed::Held(r) => panic!("held at once: {r:?}"),
    }
}

fn taken(o: &Outcome) -> Option<Result<Reservation, Error>> {
    o.lock().unwrap().take()
}

#[test]
fn released_stock_goes_to_the_waiters_in_arrival_order() {
    let (e, _) = engine(4);
    e.set_stock("hot", 2, None).unwrap();
    let one = items(&[("hot", 1)]);
    let a = e.reserve(&req("a", &one)).unwrap();
    let b = e.reserve(&req("b", &one)).unwrap();
    let (p1, w1) = wait(&e, "w1", "hot", 1);
    let (p2, w2) = wait(&e, "w2", "hot", 1);
    let (_t1, _t2) = (ticket(p1), ticket(p2));
    assert_eq!(e.waiting(), 2);
    e.check_invariants();
    // A newcomer that will not wait cannot jump the line, even for stock
    // that comes back.
    e.release(a.id).unwrap();
    let r1 = taken(&w1).expect("w1 served").unwrap();
    assert_eq!((r1.customer_id.as_str(), r1.items[0].qty), ("w1", 1));
    assert!(taken(&w2).is_none(), "w2 waits behind w1");
    assert!(matches!(
        e.reserve(&req("late", &one)),
        Err(Error::InsufficientStock { available: 0, .. })
    ));
    e.release(b.id).unwrap();
    assert_eq!(taken(&w2).expect("w2 served").unwrap().customer_id, "w2");
    assert_eq!(e.waiting(), 0);
    let v = e.sku("hot").unwrap();
    assert_eq!((v.held, v.available), (2, 0));
    e.check_invariants();
}

#[test]
fn expiry_and_restock_serve_the_line_too() {
    let (e, clock) = engine(4);
    e.set_stock("hot", 1, None).unwrap();
    let one = items(&[("hot", 1)]);
    let mut short = req("a", &one);
    short.ttl_ms = Some(1_000);
    e.reserve(&short).unwrap();
    let (p1, w1) = wait(&e, "w1", "hot", 1);
    let (p2, w2) = wait(&e, "w2", "hot", 1);
    let (_t1, _t2) = (ticket(p1), ticket(p2));
    clock.advance(1_000);
    assert_eq!(e.sweep().expired, 1);
    assert_eq!(taken(&w1).unwrap().unwrap().customer_id, "w1");
    e.adjust_stock("hot", 1).unwrap();
    assert_eq!(taken(&w2).unwrap().unwrap().customer_id, "w2");
    e.check_invariants();
}

#[test]
fn the_head_blocks_the_line_and_leaving_lets_the_next_in() {
    let (e, _) = engine(4);
    e.set_stock("hot", 3, None).unwrap();
    let held = e.reserve(&req("a", &items(&[("hot", 3)]))).unwrap();
    let (p1, w1) = wait(&e, "big", "hot", 3);
    let (p2, w2) = wait(&e, "small", "hot", 1);
    let (t1, _t2) = (ticket(p1), ticket(p2));
    // Release gives back 3: the head takes all of it.
    e.release(held.id).unwrap();
    let big = taken(&w1).unwrap().unwrap();
    assert!(taken(&w2).is_none());
    // The head gone, `small` would be served by the next unit back...
    assert!(!e.leave_waitlist(&t1), "big was already served");
    e.release(big.id).unwrap();
    assert_eq!(taken(&w2).unwrap().unwrap().customer_id, "small");
    e.check_invariants();
}

#[test]
fn a_waiter_that_leaves_is_gone_and_the_next_may_fit() {
    let (e, _) = engine(4);
    e.set_stock("hot", 2, None).unwrap();
    let two = e.reserve(&req("a", &items(&[("hot", 2)]))).unwrap();
    let (p1, w1) = wait(&e, "big", "hot", 2);
    let (p2, w2) = wait(&e, "small", "hot", 1);
    let (t1, t2) = (ticket(p1), ticket(p2));
    e.confirm(two.id, None)
        .unwrap_or_else(|err| panic!("{err}"));
    // Sold out now: nobody can be served; every waiter is told so.
    assert!(matches!(
        taken(&w1),
        Some(Err(Error::InsufficientStock { available: 0, .. }))
    ));
    assert!(matches!(
        taken(&w2),
        Some(Err(Error::InsufficientStock { .. }))
    ));
    assert!(!e.leave_waitlist(&t1) && !e.leave_waitlist(&t2));
    // A restock of 1 with a 2-unit head and a 1-unit waiter behind it.
    e.adjust_stock("hot", 1).unwrap();
    let held = e.reserve(&req("h", &items(&[("hot", 1)]))).unwrap();
    let (p1, w1) = wait(&e, "big", "hot", 1);
    let (p2, w2) = wait(&e, "small", "hot", 1);
    let (t1, _t2) = (ticket(p1), ticket(p2));
    assert!(e.leave_waitlist(&t1), "big was still waiting");
    assert!(taken(&w1).is_none(), "leaving is not an answer");
    e.release(held.id).unwrap();
    assert_eq!(taken(&w2).unwrap().unwrap().customer_id, "small");
    assert_eq!(e.waiting(), 0);
    e.check_invariants();
}

#[test]
fn only_requests_short_because_of_holds_wait_and_lines_are_bounded() {
    let (e, _) = engine_with(Options {
        shards: 4,
        waitlist_max: 2,
        ..Options::default()
    });
    e.set_stock("hot", 2, None).unwrap();
    e.reserve(&req("a", &items(&[("hot", 2)]))).unwrap();
    // More than stock - sold could ever give: refused at once.
    let i = items(&[("hot", 3)]);
    let never = e.reserve_or_wait(&req("x", &i), Box::new(|_| panic!("no wait")));
    assert!(matches!(never, Err(Error::InsufficientStock { .. })));
    // Several SKUs: no waiting either.
    e.set_stock("other", 5, None).unwrap();
    let i = items(&[("hot", 1), ("other", 1)]);
    let multi = e.reserve_or_wait(&req("x", &i), Box::new(|_| panic!("no wait")));
    assert!(matches!(multi, Err(Error::InsufficientStock { .. })));
    // Stock available: held at once, no line.
    let (p, _) = wait(&e, "y", "other", 1);
    assert!(matches!(p, Placed::Held(_)));
    let (_p1, _) = wait(&e, "w1", "hot", 1);
    let (_p2, _) = wait(&e, "w2", "hot", 1);
    let i = items(&[("hot", 1)]);
    let full = e.reserve_or_wait(&req("w3", &i), Box::new(|_| panic!("no wait")));
    assert!(matches!(full, Err(Error::WaitlistFull { limit: 2, .. })));
    e.check_invariants();
}

#[test]
fn a_waiter_served_past_its_customer_limit_is_told_so() {
    let (e, _) = engine(4);
    e.set_stock("hot", 2, Some(1)).unwrap();
    let one = items(&[("hot", 1)]);
    let a = e.reserve(&req("a", &one)).unwrap();
    e.reserve(&req("w", &one)).unwrap();
    // `w` already holds its one: its wait ends in a refusal, and the
    // stock goes on to the next in line.
    let (p1, w1) = wait(&e, "w", "hot", 1);
    let (p2, w2) = wait(&e, "z", "hot", 1);
    let (_t1, _t2) = (ticket(p1), ticket(p2));
    e.release(a.id).unwrap();
    assert!(matches!(
        taken(&w1),
        Some(Err(Error::CustomerLimitExceeded { .. }))
    ));
    assert_eq!(taken(&w2).unwrap().unwrap().customer_id, "z");
    e.check_invariants();
}
