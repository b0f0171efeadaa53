//! Bounds under churn on the redis store (issue 28): a busy SKU's
//! per-customer tally keeps only the customers who hold or own its units
//! (a hold released or expired takes its customer's field away), so it
//! stays flat however many customers come and go; it never grows past the
//! units committed. (The drops' log is cut as it grows:
//! `tests/redis_store.rs`, `the_drops_log_is_compacted_...`.)

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::server::{temp_dir, Server};

fn hlen(redis: &RedisServer, key: &str) -> u64 {
    let reply = redis.command(&["HLEN", key]).unwrap();
    reply.trim().trim_start_matches(':').parse().unwrap()
}

#[test]
fn a_busy_skus_tally_holds_only_customers_with_units() {
    let redis = RedisServer::start("bounds");
    let dir = temp_dir("bounds-node");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!("[holds]\nsweep_interval_ms = 20\n{}", redis.store_config()),
    )
    .unwrap();
    let mut s = Server::start_with(
        &dir.join("data"),
        &["--config", path.to_str().unwrap(), "--admin-listen", ""],
        &[],
    );
    s.wait_ready();
    let r = s.json(
        "PUT",
        "/v1/skus/busy",
        r#"{"stock":100000,"customer_limit":2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let key = "sp:{busy}:c";
    let mut owners = 0;
    for round in 0..10 {
        // 60 customers a round: most release, some let the hold expire,
        // a few buy.
        let mut expiring = Vec::new();
        for c in 0..60 {
            let customer = format!("c-{round}-{c}");
            let ttl = if c % 6 == 1 { 100 } else { 600_000 };
            let r = s.json(
                "POST",
                "/v1/reservations",
                &format!(r#"{{"customer_id":"{customer}","items":[{{"sku":"busy","qty":1}}],"ttl_ms":{ttl}}}"#),
            );
            assert_eq!(r.status, 201, "{}", r.body);
            let id = r.json()["id"].as_str().unwrap().to_owned();
            match c % 6 {
                0 => {
                    let r = s.json("POST", &format!("/v1/reservations/{id}/confirm"), "{}");
                    assert_eq!(r.status, 200, "{}", r.body);
                    owners += 1;
                }
                1 => expiring.push(id),
                _ => {
                    let r = s.json("POST", &format!("/v1/reservations/{id}/release"), "{}");
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            }
        }
        // The expiring ones end (the sweep), and take their fields away.
        for _ in 0..500 {
            let v = s.request("GET", "/v1/skus/busy").json();
            if v["held"] == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.request("GET", "/v1/skus/busy").json()["held"], 0);
        // After each round: one field per owner, whatever came and went.
        assert_eq!(hlen(&redis, key), owners, "round {round}");
    }
    // 600 customers came; the tally holds the 100 who bought.
    assert_eq!(owners, 100);
    let v = s.request("GET", "/v1/skus/busy").json();
    assert_eq!(v["sold"], 100, "{v}");
}
