//! Payments across nodes of the redis store: one gateway event delivered
//! to two nodes at the same moment is applied once (one answer settles
//! it, the other is a repeat of that outcome), on one Redis and on a Redis
//! Cluster; a late payment races a reservation for the last units and
//! never oversells.

mod common;

use std::sync::{Arc, Barrier};

use common::payments::{stripe_event, stripe_header};
use common::redis::{RedisCluster, RedisServer};
use common::server::{temp_dir, Server};
use serde_json::Value;

const SECRET: &str = "whsec_race_0123456789abcdef";

fn gateways() -> String {
    format!(
        "[[payments.gateways]]\nname = \"stripe\"\nscheme = \"stripe\"\nsecrets = [\"{SECRET}\"]\n"
    )
}

fn node(tag: &str, store: &str) -> Server {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, format!("{}{store}", gateways())).unwrap();
    let mut server = Server::start_with(
        &dir.join("data"),
        &["--config", path.to_str().unwrap(), "--admin-listen", ""],
        &[],
    );
    server.wait_ready();
    server
}

fn webhook(s: &Server, body: &str) -> Value {
    let r = s.send(
        "POST",
        "/v1/payments/stripe/webhook",
        &[
            stripe_header(SECRET, body).as_str(),
            "Content-Type: application/json",
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn reserve(s: &Server, sku: &str) -> String {
    let r = s.json(
        "POST",
        "/v1/reservations",
        &format!(r#"{{"customer_id":"c-1","items":[{{"sku":"{sku}","qty":1}}]}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

/// Each of `rounds` events is sent to both nodes at once: exactly one
/// outcome is reported (the same by both), the hold is confirmed once,
/// and the SKU sold exactly once per hold; the metrics of the two nodes
/// add up to one `confirmed` per event. Events of a canceled payment race
/// too: the stock comes back once.
fn one_event_on_two_nodes_is_applied_once(a: Server, b: Server) {
    let rounds = 25;
    let r = a.json("PUT", "/v1/skus/race", &format!(r#"{{"stock":{rounds}}}"#));
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    let (a, b) = (Arc::new(a), Arc::new(b));
    for round in 0..rounds {
        let hold = reserve(&a, "race");
        let kind = match round % 5 {
            4 => "payment_intent.canceled",
            _ => "payment_intent.succeeded",
        };
        let body = stripe_event(
            &format!("evt_{round}"),
            kind,
            Some(&hold),
            &format!("pi_{round}"),
        );
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<Value> = [a.clone(), b.clone()]
            .into_iter()
            .map(|node| {
                let (body, barrier) = (body.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    webhook(&node, &body)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let want = match kind {
            "payment_intent.canceled" => "released",
            _ => "confirmed",
        };
        for answer in &answers {
            assert_eq!(answer["outcome"], want, "round {round}: {answers:?}");
            assert_eq!(answer["hold"], Value::String(hold.clone()));
        }
    }
    let sku = a.request("GET", "/v1/skus/race").json();
    let confirmed = rounds - rounds / 5;
    assert_eq!(sku["sold"], confirmed, "{sku}");
    assert_eq!(sku["held"], 0, "{sku}");
    assert_eq!(sku["available"], rounds / 5, "{sku}");
    // Each node counts what it answered: together, each outcome once per
    // event and its repeat.
    let count = |s: &Server, outcome: &str| -> u64 {
        let text = s.request("GET", "/metrics").body;
        let line =
            format!("stampede_payment_webhooks_total{{gateway=\"stripe\",outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .map_or(0, |n| n.parse().unwrap())
    };
    assert_eq!(
        count(&a, "confirmed") + count(&b, "confirmed"),
        2 * confirmed
    );
    assert_eq!(
        count(&a, "released") + count(&b, "released"),
        2 * (rounds / 5)
    );
}

#[test]
fn one_event_on_two_nodes_of_one_redis_is_applied_once() {
    let redis = RedisServer::start("pay-race");
    let a = node("pay-race-a", &redis.store_config());
    let b = node("pay-race-b", &redis.store_config());
    one_event_on_two_nodes_is_applied_once(a, b);
}

#[test]
fn one_event_on_two_nodes_of_a_redis_cluster_is_applied_once() {
    let cluster = RedisCluster::start("pay-race-c", 3, 0);
    let a = node("pay-race-ca", &cluster.store_config());
    let b = node("pay-race-cb", &cluster.store_config());
    one_event_on_two_nodes_is_applied_once(a, b);
}

/// A late payment (its hold released) races fresh reservations for the
/// last unit on two nodes: whoever wins, the unit is sold or held once.
#[test]
fn a_late_payment_racing_a_reservation_never_oversells() {
    let redis = RedisServer::start("pay-late");
    let a = Arc::new(node("pay-late-a", &redis.store_config()));
    let b = Arc::new(node("pay-late-b", &redis.store_config()));
    for round in 0..20 {
        let sku = format!("last-{round}");
        let r = a.json("PUT", &format!("/v1/skus/{sku}"), r#"{"stock":1}"#);
        assert_eq!(r.status, 201, "{}", r.body);
        let hold = reserve(&a, &sku);
        let r = a.json("POST", &format!("/v1/reservations/{hold}/release"), "{}");
        assert_eq!(r.json()["status"], "released");
        let body = stripe_event(
            &format!("evt_late_{round}"),
            "payment_intent.succeeded",
            Some(&hold),
            "pi_l",
        );
        let barrier = Arc::new(Barrier::new(2));
        let late = {
            let (a, barrier) = (a.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                webhook(&a, &body)
            })
        };
        let fresh = {
            let (b, sku) = (b.clone(), sku.clone());
            std::thread::spawn(move || {
                barrier.wait();
                b.json(
                    "POST",
                    "/v1/reservations",
                    &format!(r#"{{"customer_id":"c-2","items":[{{"sku":"{sku}","qty":1}}]}}"#),
                )
                .status
            })
        };
        let (late, fresh) = (late.join().unwrap(), fresh.join().unwrap());
        let v = a.request("GET", &format!("/v1/skus/{sku}")).json();
        match (late["outcome"].as_str().unwrap(), fresh) {
            ("confirmed_late", 409) => {
                assert_eq!((v["sold"].as_u64(), v["held"].as_u64()), (Some(1), Some(0)))
            }
            ("orphaned", 201) => {
                assert_eq!((v["sold"].as_u64(), v["held"].as_u64()), (Some(0), Some(1)))
            }
            other => panic!("round {round}: {other:?}, sku {v}"),
        }
    }
}
