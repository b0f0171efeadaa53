//! The hub: ids, the ring, visibility, resume and reset.

use super::*;
use crate::engine::{self, EventSink};

fn hub(retained_max: usize, last_lsn: u64) -> Hub {
    let hub = Hub::new(Options {
        retained_max,
        subscribers_max: 2,
        flush_interval: std::time::Duration::from_millis(1),
    });
    if last_lsn > 0 {
        // A restart from a checkpoint at `last_lsn` that did not keep
        // the ring.
        hub.set_floor((last_lsn + 1) << 16);
    }
    hub
}

#[test]
fn streams_wake_less_often_once_many_are_open() {
    let flush = std::time::Duration::from_millis(50);
    let hub = Arc::new(Hub::new(Options {
        retained_max: 10,
        subscribers_max: 2_000,
        flush_interval: flush,
    }));
    let mut subs = Vec::new();
    for _ in 0..250 {
        subs.push(hub.subscribe().unwrap());
    }
    // 250 streams every 50 ms: 5,000 writes a second, the budget.
    assert_eq!(hub.wake_gap(), flush);
    for _ in 250..1_000 {
        subs.push(hub.subscribe().unwrap());
    }
    assert_eq!(hub.wake_gap(), std::time::Duration::from_millis(200));
    subs.truncate(10);
    assert_eq!(hub.wake_gap(), flush, "closed streams count no more");
}

/// Tells a stock.out under `lsn`, and moves it into the ring as the pump
/// would once it is durable.
fn stock_out(hub: &Hub, lsn: u64, sku: &str) {
    hub.emit(lsn, 7, engine::Event::StockOut { sku });
    hub.move_staged(lsn);
}

fn ids(read: Read) -> Vec<u64> {
    match read {
        Read::Events(events) => events.iter().map(|e| e.id).collect(),
        Read::Reset { oldest_id } => panic!("reset to {oldest_id}"),
    }
}

#[test]
fn ids_are_made_from_the_lsn_and_only_visible_events_are_read() {
    let hub = hub(100, 0);
    // Told out of LSN order (two changes on two shards), staged, then
    // moved by the pump: the ring is in id order.
    for (lsn, sku) in [(3, "a"), (3, "b"), (2, "c"), (9, "d")] {
        hub.emit(lsn, 7, engine::Event::StockOut { sku });
    }
    assert_eq!(hub.retained().0, 0, "staged, not yet in the ring");
    hub.move_staged(9);
    let (all, _) = hub.retained();
    assert_eq!(all, 4);
    let want = [2 << 16, 3 << 16, (3 << 16) + 1, 9 << 16];
    assert_eq!(ids(hub.read(0, Kinds::ALL, u64::MAX, 100).0), want);
    // Only up to `visible`; the cursor moves past what was read.
    let (read, next, left) = hub.read(0, Kinds::ALL, (3 << 16) + 1, 100);
    assert_eq!((ids(read), next, left), (want[..3].to_vec(), want[2], 0));
    let (read, next, left) = hub.read(0, Kinds::ALL, u64::MAX, 1);
    assert_eq!((ids(read), next, left), (vec![want[0]], want[0], 3));
}

#[test]
fn a_filter_skips_other_kinds_and_the_cursor_still_moves() {
    let hub = hub(100, 0);
    stock_out(&hub, 1, "a");
    hub.drop_opened(2, "d", "00", 3, 9);
    hub.move_staged(2);
    let only = Kinds::parse("drop.opened").unwrap();
    let (read, next, _) = hub.read(0, only, u64::MAX, 100);
    assert_eq!((ids(read), next), (vec![2 << 16], 2 << 16));
    assert_eq!(Kinds::parse("stock.out,nope"), Err("nope".to_owned()));
    let frame = &hub.read(0, Kinds::ALL, u64::MAX, 9).0;
    let Read::Events(events) = frame else {
        panic!()
    };
    assert_eq!(
        std::str::from_utf8(&events[1].frame).unwrap(),
        "id: 131072\nevent: drop.opened\ndata: {\"drop\":\"d\",\"seed\":\"00\",\"entrants\":3,\"at_ms\":9}\n\n"
    );
}

#[test]
fn a_cursor_before_what_is_kept_or_before_a_restart_is_reset() {
    let hub = hub(2, 0);
    for lsn in 1..=4 {
        stock_out(&hub, lsn, "a");
    }
    // 1 and 2 were dropped: a cursor at 1 missed 2.
    let (read, next, _) = hub.read(1 << 16, Kinds::ALL, u64::MAX, 9);
    assert!(matches!(read, Read::Reset { oldest_id } if oldest_id == 3 << 16));
    assert_eq!(
        ids(hub.read(next, Kinds::ALL, u64::MAX, 9).0),
        [3 << 16, 4 << 16]
    );
    // A cursor at the newest dropped one missed nothing.
    assert_eq!(
        ids(hub.read(2 << 16, Kinds::ALL, u64::MAX, 9).0),
        [3 << 16, 4 << 16]
    );
    // After a restart (the log had reached LSN 10), an old cursor is
    // reset; new ids start above every old one.
    let again = hub_after_restart();
    assert!(matches!(
        again.read(4 << 16, Kinds::ALL, u64::MAX, 9).0,
        Read::Reset { .. }
    ));
    stock_out(&again, 11, "a");
    assert_eq!(
        ids(again.read(again.visible_id(), Kinds::ALL, u64::MAX, 9).0),
        [11 << 16]
    );
}

fn hub_after_restart() -> Hub {
    hub(10, 10)
}

#[test]
fn subscribers_are_bounded_and_counted_out() {
    let hub = Arc::new(hub(10, 0));
    let a = hub.subscribe().unwrap();
    let _b = hub.subscribe().unwrap();
    assert!(hub.subscribe().is_none());
    drop(a);
    assert!(hub.subscribe().is_some());
}

#[tokio::test]
async fn the_pump_shows_events_once_their_lsn_is_durable() {
    let hub = Arc::new(hub(10, 0));
    let durable = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let asked = Arc::new(tokio::sync::Notify::new());
    let pump = {
        let (hub, durable, asked) = (hub.clone(), durable.clone(), asked.clone());
        tokio::spawn(async move {
            hub.pump(|lsn| {
                let (durable, asked) = (durable.clone(), asked.clone());
                async move {
                    // Durable once the test says so.
                    while durable.load(Ordering::Acquire) < lsn {
                        asked.notify_one();
                        tokio::task::yield_now().await;
                    }
                    true
                }
            })
            .await
        })
    };
    let mut visible = hub.watch_visible();
    let start = *visible.borrow();
    hub.emit(5, 7, engine::Event::StockOut { sku: "a" });
    asked.notified().await;
    assert_eq!(hub.visible_id(), start, "not durable: not visible");
    durable.store(5, Ordering::Release);
    visible.changed().await.unwrap();
    assert_eq!(*visible.borrow(), 5 << 16);
    hub.close();
    pump.await.unwrap();
}
