//! `GET /v1/events` on a real server: what each change tells, in order,
//! with ids that only grow (across restarts too); `?types=`; resuming with
//! `Last-Event-ID` inside the kept window and `reset` beyond it; keep-alive
//! comments; `events.subscribers_max`; bad requests.

mod common;

use std::io::Read;
use std::time::Duration;

use common::server::{temp_dir, Server};
use common::sse::{Frame, Sse};

fn started(tag: &str, config: &str) -> (Server, std::path::PathBuf) {
    let _ = temp_dir(tag);
    Server::with_config(tag, config)
}

fn reserve(s: &Server, customer: &str, sku: &str, qty: u32, ttl_ms: u64) -> String {
    let r = s.json(
        "POST",
        "/v1/reservations",
        &format!(
            r#"{{"customer_id":"{customer}","items":[{{"sku":"{sku}","qty":{qty}}}],"ttl_ms":{ttl_ms}}}"#
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

#[test]
fn each_change_tells_its_events_in_order_with_growing_ids() {
    let (s, _dir) = started("events-order", "");
    let mut all = Sse::open(&s, "/v1/events", &[]);
    assert_eq!(all.status, 200);
    assert!(
        all.head.contains("content-type: text/event-stream"),
        "{}",
        all.head
    );
    assert_eq!(all.next(), Frame::Comment("stampede events".into()));
    let mut stock = Sse::open(&s, "/v1/events?types=stock.out%2Cstock.back", &[]);
    assert_eq!(stock.next(), Frame::Comment("stampede events".into()));

    assert_eq!(s.json("PUT", "/v1/skus/ev-1", r#"{"stock":2}"#).status, 201);
    let a = reserve(&s, "c-1", "ev-1", 1, 600_000);
    let b = reserve(&s, "c-2", "ev-1", 1, 600_000);
    let r = s.json(
        "POST",
        &format!("/v1/reservations/{a}/confirm"),
        r#"{"order_ref":"o-9"}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        s.request("POST", &format!("/v1/reservations/{b}/release"))
            .status,
        200
    );
    // Stock raised from nothing to something: back.
    assert_eq!(s.json("PUT", "/v1/skus/ev-2", r#"{"stock":0}"#).status, 201);
    assert_eq!(
        s.json("POST", "/v1/skus/ev-2/adjust", r#"{"delta":3}"#)
            .status,
        200
    );
    // A hold that expires (the sweeper ends it within 100 ms).
    let c = reserve(&s, "c-3", "ev-2", 3, 50);

    let mut last = 0;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (id, event, data) = all.event();
        assert!(id > last, "ids grow: {id} after {last}");
        last = id;
        seen.push((event, data));
    }
    if common::server::on_redis_cluster() {
        // On a Redis Cluster each slot's events keep their order, and
        // ev-1's and ev-2's are in two slots: taken apart, as in one.
        assert_ne!(
            stampede::store::slots::slot("ev-1"),
            stampede::store::slots::slot("ev-2")
        );
        let sku = |d: &serde_json::Value| {
            d["sku"]
                .as_str()
                .or(d["items"][0]["sku"].as_str())
                .map(str::to_owned)
        };
        seen.sort_by_key(|(_, d)| sku(d).as_deref() != Some("ev-1"));
    }
    let kinds: Vec<&str> = seen.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "stock.out",
            "hold.confirmed",
            "stock.back",
            "stock.back",
            "stock.out",
            "hold.expired"
        ],
        "{seen:?}"
    );
    assert_eq!(seen[0].1["sku"], "ev-1");
    let confirmed = &seen[1].1;
    assert_eq!(confirmed["id"], a.as_str());
    assert_eq!(confirmed["customer_id"], "c-1");
    assert_eq!(confirmed["order_ref"], "o-9");
    assert_eq!(
        confirmed["items"],
        serde_json::json!([{"sku": "ev-1", "qty": 1}])
    );
    assert_eq!(
        (seen[2].1["sku"].as_str(), seen[2].1["available"].as_u64()),
        (Some("ev-1"), Some(1))
    );
    assert_eq!(
        (seen[3].1["sku"].as_str(), seen[3].1["available"].as_u64()),
        (Some("ev-2"), Some(3))
    );
    let expired = &seen[5].1;
    assert_eq!(
        (expired["id"].as_str(), expired["customer_id"].as_str()),
        (Some(c.as_str()), Some("c-3"))
    );
    assert!(expired["at_ms"].as_u64().unwrap() > 0);
    // The expiry gave ev-2 back.
    assert_eq!(all.event().1, "stock.back");

    // The filtered stream saw the stock events only, with the same ids.
    let kinds: Vec<String> = (0..5).map(|_| stock.event().1).collect();
    assert_eq!(
        kinds,
        [
            "stock.out",
            "stock.back",
            "stock.back",
            "stock.out",
            "stock.back"
        ]
    );
}

#[test]
fn a_drop_opening_is_told_with_its_seed() {
    let (s, _dir) = started("events-drop", "");
    let mut feed = Sse::open(&s, "/v1/events?types=drop.opened", &[]);
    feed.next();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let spec = format!(
        r#"{{"skus":["d-1"],"prequeue_opens_at_ms":{now},"opens_at_ms":{}}}"#,
        now + 300
    );
    assert_eq!(s.json("PUT", "/v1/drops/ev-drop", &spec).status, 201);
    for c in ["a", "b"] {
        let body = format!(r#"{{"customer_id":"{c}"}}"#);
        assert_eq!(
            s.json("POST", "/v1/drops/ev-drop/entries", &body).status,
            201
        );
    }
    let (_, event, data) = feed.event();
    assert_eq!(event, "drop.opened");
    let view = s.request("GET", "/v1/drops/ev-drop").json();
    assert_eq!(data["drop"], "ev-drop");
    assert_eq!(data["entrants"], 2);
    assert_eq!(data["seed"], view["seed"], "the seed the drop reveals");
}

#[test]
fn resuming_gets_what_is_kept_and_a_reset_beyond_it_and_across_restarts() {
    if common::server::on_redis() {
        // As above: on the redis store a restart keeps the events.
        return;
    }
    let (s, _dir) = started("events-resume", "[events]\nretained_max = 3\n");
    let mut live = Sse::open(&s, "/v1/events", &[]);
    live.next();
    for i in 0..5 {
        let sku = format!("r-{i}");
        assert_eq!(
            s.json("PUT", &format!("/v1/skus/{sku}"), r#"{"stock":1}"#)
                .status,
            201
        );
        reserve(&s, "c", &sku, 1, 600_000);
    }
    let ids: Vec<u64> = (0..5).map(|_| live.event().0).collect();
    // Within the window (the last 3 are kept): the rest, at once.
    let mut again = Sse::open(&s, "/v1/events", &[&format!("Last-Event-ID: {}", ids[2])]);
    again.next();
    assert_eq!(again.event().0, ids[3]);
    assert_eq!(again.event().0, ids[4]);
    // Beyond it: reset first, naming the oldest kept, then what is kept.
    let mut old = Sse::open(&s, "/v1/events", &[&format!("Last-Event-ID: {}", ids[0])]);
    old.next();
    let (reset_id, event, data) = old.event();
    assert_eq!(event, "reset");
    assert_eq!(data["oldest_id"], ids[2]);
    assert_eq!(
        reset_id,
        ids[2] - 1,
        "a reconnect from here resumes at the oldest kept"
    );
    assert_eq!(old.event().0, ids[2]);
    drop((live, again, old));

    // After kill -9 the feed is rebuilt from the log (contract v1.2,
    // errata): a resume inside the window gets what is kept, no reset,
    // and new ids are higher; one beyond it is still reset.
    let mut s = s.restart("-KILL");
    s.wait_ready();
    let mut after = Sse::open(&s, "/v1/events", &[&format!("Last-Event-ID: {}", ids[2])]);
    after.next();
    assert_eq!(after.event().0, ids[3]);
    assert_eq!(after.event().0, ids[4]);
    assert_eq!(s.json("PUT", "/v1/skus/r-9", r#"{"stock":1}"#).status, 201);
    reserve(&s, "c", "r-9", 1, 600_000);
    let (id, event, _) = after.event();
    assert_eq!(event, "stock.out");
    assert!(id > ids[4], "{id} > {}", ids[4]);
    let mut old = Sse::open(&s, "/v1/events", &[&format!("Last-Event-ID: {}", ids[0])]);
    old.next();
    assert_eq!(old.event().1, "reset");
}

/// The errata's test: a storefront disconnected by a crash resumes from an
/// id told before it and gets every later event once, in order, whether
/// the events are rebuilt by replay (kill -9) or kept by a checkpoint (the
/// shutdown's, then more changes, then kill -9).
#[test]
fn a_resume_after_a_crash_gets_every_later_event_once_in_order() {
    if common::server::on_redis() {
        // The redis store's events live in Redis: tests/redis_store.rs.
        return;
    }
    let (s, _dir) = started("events-crash", "[events]\nretained_max = 1000\n");
    let mut live = Sse::open(&s, "/v1/events", &[]);
    live.next();
    let mut told: Vec<(u64, String, serde_json::Value)> = Vec::new();
    let make = |s: &Server, live: &mut Sse, told: &mut Vec<_>, round: usize| {
        for i in 0..4 {
            let sku = format!("k-{round}-{i}");
            assert_eq!(
                s.json("PUT", &format!("/v1/skus/{sku}"), r#"{"stock":1}"#)
                    .status,
                201
            );
            let id = reserve(s, "c", &sku, 1, 600_000);
            let r = s.json("POST", &format!("/v1/reservations/{id}/confirm"), "{}");
            assert_eq!(r.status, 200, "{}", r.body);
        }
        // stock.out and hold.confirmed for each.
        for _ in 0..8 {
            told.push(live.event());
        }
    };
    make(&s, &mut live, &mut told, 0);
    drop(live);
    // A checkpoint (the shutdown's) keeps the ring...
    let mut s = s.restart("-TERM");
    s.wait_ready();
    let mut live = Sse::open(
        &s,
        "/v1/events",
        &[&format!("Last-Event-ID: {}", told[7].0)],
    );
    live.next();
    make(&s, &mut live, &mut told, 1);
    drop(live);
    // ...and after it, replay rebuilds the rest.
    let mut s = s.restart("-KILL");
    s.wait_ready();
    let mut resumed = Sse::open(
        &s,
        "/v1/events",
        &[&format!("Last-Event-ID: {}", told[1].0)],
    );
    resumed.next();
    for want in &told[2..] {
        let got = resumed.event();
        assert_eq!(&got, want, "the same event, id and data, once, in order");
    }
    // And the feed goes on above them.
    assert_eq!(
        s.json("PUT", "/v1/skus/k-next", r#"{"stock":1}"#).status,
        201
    );
    reserve(&s, "c", "k-next", 1, 600_000);
    let (id, event, _) = resumed.event();
    assert_eq!(event, "stock.out");
    assert!(id > told.last().unwrap().0);
}

#[test]
fn keep_alives_the_subscriber_limit_and_bad_requests() {
    let (s, _dir) = started(
        "events-limits",
        "[events]\nsubscribers_max = 1\nkeepalive_ms = 200\n",
    );
    let mut one = Sse::open(&s, "/v1/events?types=hold.expired", &[]);
    one.next();
    // Nothing to tell: a comment keeps the connection alive.
    assert_eq!(one.next(), Frame::Comment("keep-alive".into()));
    let two = Sse::open(&s, "/v1/events", &[]);
    assert_eq!(two.status, 503);
    assert!(two.head.contains("retry-after: "), "{}", two.head);
    drop(one);
    // The place is given back once the first stream's client is gone (its
    // task notices at its next write: the next keep-alive).
    let mut tries = 0;
    let mut three = loop {
        let sse = Sse::open(&s, "/v1/events", &[]);
        if sse.status == 200 {
            break sse;
        }
        tries += 1;
        assert!(tries < 100, "the place never came back");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(three.next(), Frame::Comment("stampede events".into()));
    drop(three);
    let r = s.request("GET", "/v1/events?types=stock.gone");
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("types")));
    let r = s.send("GET", "/v1/events", &["Last-Event-ID: abc"], b"");
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("Last-Event-ID"))
    );
    let r = s.request("POST", "/v1/events");
    assert_eq!((r.status, r.header("allow").as_deref()), (405, Some("get")));
}

#[test]
fn a_hold_that_expired_while_the_server_was_down_is_told_after_the_restart() {
    if common::server::on_redis() {
        // The redis store keeps its events in Redis across restarts:
        // tests/redis_store.rs has its restart test.
        return;
    }
    let (mut s, dir) = started("events-down", "");
    let mut feed = Sse::open(&s, "/v1/events", &[]);
    feed.next();
    assert_eq!(s.json("PUT", "/v1/skus/dn-1", r#"{"stock":1}"#).status, 201);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c-9","items":[{"sku":"dn-1","qty":1}],"ttl_ms":300}"#,
    );
    assert_eq!(r.status, 201);
    let (id, expires_at) = (
        r.json()["id"].as_str().unwrap().to_owned(),
        r.json()["expires_at_ms"].as_u64().unwrap(),
    );
    let (last, event, _) = feed.event();
    assert_eq!(event, "stock.out");
    drop(feed);
    s.signal("-KILL");
    drop(s);
    // Down until the hold's expiry has passed (the wall clock is the event).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(expires_at.saturating_sub(now) + 50));
    let config = dir.join("c.toml");
    let mut s = Server::start_with(
        &dir.join("data"),
        &["--config", config.to_str().unwrap()],
        &[],
    );
    s.wait_ready();
    let mut after = Sse::open(&s, "/v1/events", &[&format!("Last-Event-ID: {last}")]);
    after.next();
    // No reset: the events of the last run are rebuilt from the log.
    let (expired_id, event, data) = after.event();
    assert_eq!(event, "hold.expired");
    assert_eq!(data["id"], id.as_str());
    assert!(expired_id > last);
    assert_eq!(after.event().1, "stock.back");
}

#[test]
fn streams_end_when_the_server_stops_and_do_not_hold_up_its_exit() {
    let (mut s, _dir) = started("events-stop", "");
    let mut streams: Vec<Sse> = (0..3).map(|_| Sse::open(&s, "/v1/events", &[])).collect();
    for sse in &mut streams {
        assert_eq!(sse.next(), Frame::Comment("stampede events".into()));
    }
    let status = s.signal("-TERM");
    assert!(status.success(), "exit 0");
    // Each stream was ended by the server (not cut by the drain's timeout).
    for mut sse in streams {
        let mut rest = String::new();
        let _ = sse.reader.read_to_string(&mut rest);
    }
    assert!(
        !s.stderr_lines().iter().any(|l| l.contains("still open")),
        "{:?}",
        s.stderr_lines()
    );
}

/// A client that takes gzip (`Accept-Encoding: gzip`) gets the same frames
/// as one that does not, compressed: the keep-alives, the events, in the
/// same order with the same ids (each chunk is compressed once and shared
/// by the streams at the same place).
#[test]
fn a_gzip_stream_carries_the_same_frames() {
    let (s, _dir) = started("events-gzip", "[events]\nkeepalive_ms = 300\n");
    let mut plain = Sse::open(&s, "/v1/events", &["Accept-Encoding: identity"]);
    assert!(!plain.head.contains("content-encoding"), "{}", plain.head);
    let mut zipped: Vec<Sse> = (0..2)
        .map(|_| Sse::open(&s, "/v1/events", &["Accept-Encoding: br;q=1.0, gzip;q=0.8"]))
        .collect();
    for sse in &zipped {
        assert!(sse.head.contains("content-encoding: gzip"), "{}", sse.head);
        assert!(sse.head.contains("vary: accept-encoding"), "{}", sse.head);
    }
    let refused = Sse::open(&s, "/v1/events", &["Accept-Encoding: gzip;q=0"]);
    assert!(
        !refused.head.contains("content-encoding"),
        "{}",
        refused.head
    );
    for sse in zipped.iter_mut().chain([&mut plain]) {
        assert_eq!(sse.next(), Frame::Comment("stampede events".into()));
    }
    // Quiet: a keep-alive comes through gzip too.
    for sse in &mut zipped {
        assert_eq!(sse.next(), Frame::Comment("keep-alive".into()));
    }
    assert_eq!(s.json("PUT", "/v1/skus/gz-1", r#"{"stock":1}"#).status, 201);
    for i in 0..20 {
        let id = reserve(&s, &format!("c-{i}"), "gz-1", 1, 600_000);
        let r = s.request("POST", &format!("/v1/reservations/{id}/release"));
        assert_eq!(r.status, 200);
    }
    let want: Vec<_> = (0..40).map(|_| plain.event()).collect();
    assert_eq!(want[0].1, "stock.out");
    assert_eq!(want[1].1, "stock.back");
    for sse in &mut zipped {
        let got: Vec<_> = (0..40).map(|_| sse.event()).collect();
        assert_eq!(got, want);
    }
}
