//! Webhooks on a real server, to a receiver on loopback: every delivery is
//! signed per Standard Webhooks (checked here with the receiver's own
//! HMAC), a failed delivery is retried with the same `webhook-id`, `types`
//! filters, a 410 disables the endpoint, and deliveries queued before a
//! kill -9 go out after the restart.

mod common;

use std::time::Duration;

use common::hooks::{config, verify, Receiver};
use common::server::Server;

/// `/v1/stats`'s webhooks once `done` holds of them (the server counts a
/// delivery when it has read the receiver's answer, just after the
/// receiver saw it): polled, up to 10 s.
fn webhooks_when(s: &Server, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    for _ in 0..500 {
        let hooks = s.request("GET", "/v1/stats").json()["webhooks"].clone();
        if done(&hooks) {
            return hooks;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{}", s.request("GET", "/v1/stats").json()["webhooks"]);
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

#[test]
fn deliveries_are_signed_retried_with_the_same_id_filtered_and_a_410_disables() {
    let good = Receiver::start(200);
    good.script(&[500], 200);
    let gone = Receiver::start(410);
    let (s, _dir) = Server::with_config(
        "webhooks-signed",
        &config(&[
            (&good.url, "\"stock.out\", \"hold.confirmed\""),
            (&gone.url, ""),
        ]),
    );
    assert_eq!(s.json("PUT", "/v1/skus/w-1", r#"{"stock":1}"#).status, 201);
    let id = reserve(&s, "w-1");
    let r = s.json(
        "POST",
        &format!("/v1/reservations/{id}/confirm"),
        r#"{"order_ref":"o-1"}"#,
    );
    assert_eq!(r.status, 200);

    let seen = good.wait_for("stock.out failed once, then both delivered", |d| {
        d.iter().filter(|d| d.answered == 200).count() >= 2
    });
    for d in &seen {
        verify(d);
    }
    // The first attempt failed; the retry carries the same webhook-id.
    assert_eq!(seen[0].answered, 500);
    assert_eq!(seen[0].json()["type"], "stock.out");
    let retried = seen
        .iter()
        .skip(1)
        .find(|d| d.id == seen[0].id)
        .expect("a retry");
    assert_eq!((retried.answered, &retried.body), (200, &seen[0].body));
    let confirmed = seen
        .iter()
        .find(|d| d.json()["type"] == "hold.confirmed")
        .unwrap();
    let data = &confirmed.json()["data"];
    assert_eq!(
        (data["id"].as_str(), data["order_ref"].as_str()),
        (Some(id.as_str()), Some("o-1"))
    );
    assert!(confirmed.json()["timestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // Filtered: nothing but the two types.
    assert!(seen.iter().all(|d| {
        let t = d.json()["type"].as_str().unwrap().to_owned();
        t == "stock.out" || t == "hold.confirmed"
    }));

    // The 410 endpoint got one delivery, then was disabled.
    let first = gone.wait_for("one delivery", |d| !d.is_empty());
    verify(&first[0]);
    let hooks = webhooks_when(&s, |h| h[0]["delivered"] == 2 && h[1]["disabled"] == true);
    assert_eq!(hooks[0]["failed"], 1, "{hooks}");
    assert_eq!(hooks[0]["pending"], 0, "{hooks}");
    let metrics = s.request("GET", "/metrics").body;
    assert!(metrics
        .contains("stampede_webhook_deliveries_total{endpoint=\"0\",outcome=\"delivered\"} 2"));
    assert!(metrics.contains("stampede_webhook_disabled{endpoint=\"1\"} 1"));
    assert_eq!(
        gone.log.0.lock().unwrap().deliveries.len(),
        1,
        "no more after the 410"
    );
}

#[test]
fn deliveries_queued_before_a_kill_go_out_after_the_restart() {
    let receiver = Receiver::start(503);
    let (s, _dir) = Server::with_config(
        "webhooks-restart",
        &config(&[(&receiver.url, "\"stock.out\"")]),
    );
    for sku in ["k-1", "k-2", "k-3"] {
        assert_eq!(
            s.json("PUT", &format!("/v1/skus/{sku}"), r#"{"stock":1}"#)
                .status,
            201
        );
        reserve(&s, sku);
    }
    // Each tried at least once, and refused.
    let tried = receiver.wait_for("three events tried", |d| {
        let mut ids: Vec<&str> = d.iter().map(|d| d.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        ids.len() == 3
    });
    let mut ids: Vec<String> = tried.iter().map(|d| d.id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut s = s.restart("-KILL");
    receiver.script(&[], 200);
    s.wait_ready();
    let after = receiver.wait_for("all three delivered after the restart", |d| {
        ids.iter()
            .all(|id| d.iter().any(|d| &d.id == id && d.answered == 200))
    });
    for d in after.iter().filter(|d| d.answered == 200) {
        verify(d);
        assert_eq!(d.json()["type"], "stock.out");
    }
    webhooks_when(&s, |h| h[0]["pending"] == 0);

    // Again through a checkpoint: refused, stopped (a checkpoint holds the
    // outbox), started, delivered.
    receiver.script(&[], 503);
    assert_eq!(s.json("PUT", "/v1/skus/k-4", r#"{"stock":1}"#).status, 201);
    reserve(&s, "k-4");
    let before = receiver.log.0.lock().unwrap().deliveries.len();
    let tried = receiver.wait_for("k-4 tried", |d| d.len() > before);
    let id = tried.last().unwrap().id.clone();
    let mut s = s.restart("-TERM");
    receiver.script(&[], 200);
    s.wait_ready();
    receiver.wait_for("k-4 delivered after the checkpoint", |d| {
        d.iter().any(|d| d.id == id && d.answered == 200)
    });
}

#[test]
fn a_delivery_refused_past_the_retry_window_is_given_up() {
    let receiver = Receiver::start(500);
    let mut config = config(&[(&receiver.url, "\"stock.out\"")]);
    config = config.replace("[events]\n", "[events]\nwebhook_retry_max_ms = 300\n");
    let (s, _dir) = Server::with_config("webhooks-give-up", &config);
    assert_eq!(s.json("PUT", "/v1/skus/g-1", r#"{"stock":1}"#).status, 201);
    reserve(&s, "g-1");
    // Retried (all refused) until 300 ms after the event, then given up.
    let hooks = webhooks_when(&s, |h| h[0]["gave_up"] == 1);
    assert_eq!(hooks[0]["pending"], 0, "{hooks}");
    assert_eq!(hooks[0]["delivered"], 0, "{hooks}");
    let tries = receiver.log.0.lock().unwrap().deliveries.clone();
    assert!(
        tries.len() >= 2,
        "retried before giving up: {}",
        tries.len()
    );
    assert!(
        tries.iter().all(|d| d.id == tries[0].id),
        "the same webhook-id each time"
    );
    let metrics = s.request("GET", "/metrics").body;
    assert!(
        metrics.contains("stampede_webhook_deliveries_total{endpoint=\"0\",outcome=\"gave_up\"} 1")
    );
}
