//! The checkout flow against a real stampede (the library's server on a
//! loopback socket, a real log on disk): reserve, `/payment`, then the
//! gateway's signed webhook. A webhook sent past the pending payment's
//! life makes late payments: taken again while units are free, orphaned
//! once they are not. The report shows each share, and the audit holds.

mod common;

use std::sync::Arc;

use loadgen::run::{self, Live};
use loadgen::scenario::Scenario;
use loadgen::target::Target;

const SECRET: &str = "whsec_loadgen_secret";

/// A stampede with a `stripe` gateway and payments pending `pending_ttl_ms`.
async fn stampede(dir: &std::path::Path, pending_ttl_ms: u64) -> std::net::SocketAddr {
    let config = stampede::config::Config::from_toml(&format!(
        "[holds]\nsweep_interval_ms = 20\n\
         [payments]\npending_ttl_ms = {pending_ttl_ms}\n\
         [[payments.gateways]]\nname = \"stripe\"\nscheme = \"stripe\"\nsecrets = [\"{SECRET}\"]\n"
    ))
    .unwrap();
    common::stampede(dir, &config).await
}

async fn checkout(
    tag: &str,
    pending_ttl_ms: u64,
    webhook_ms: u64,
    stock: u64,
) -> serde_json::Value {
    let dir = std::env::temp_dir().join(format!("loadgen-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = stampede(&dir, pending_ttl_ms).await;
    let scenario = Scenario::parse(&format!(
        r#"
name = "checkout"
[[phases]]
name = "rush"
duration_s = 1
rate = 200
[catalog]
skus = 1
stock = {stock}
popularity = "hot"
[customers]
count = 1000
[flow]
confirm = 0.6
release = 0.0
ttl_ms = 100
[flow.payment]
gateway = "stripe"
scheme = "stripe"
secret = "{SECRET}"
webhook_ms = {webhook_ms}
[client]
connections = 16
"#
    ))
    .unwrap();
    let target = Target::connect(&format!("http://{addr}"), None, false)
        .await
        .unwrap();
    run::set_up(&scenario, &target).await.unwrap();
    let (outcome, target) = run::run(scenario.clone(), target, Arc::new(Live::default())).await;
    let audit = run::audit(&scenario, &target, &outcome.stats).await;
    assert!(audit.passed(), "{audit:?}");
    assert_eq!(audit.sold, audit.confirmed_seen, "every sale seen");
    let results = loadgen::report::results(&scenario, "t", &outcome, &audit);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_settled_in_time_are_confirmed() {
    let results = checkout("checkout-ok", 60_000, 0, 1_000).await;
    let p = &results["payments"];
    assert!(p["webhooks"].as_u64().unwrap() > 50, "{results}");
    assert_eq!(p["share_confirmed"], 1.0, "{p}");
    assert_eq!(
        results["statuses"]["payment"]["200"], p["webhooks"],
        "{results}"
    );
    let text = loadgen::report::text(&results);
    assert!(
        text.contains("confirmed 100.0%, late 0.0%, orphaned 0.0%"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_after_the_pending_life_are_late_or_orphaned() {
    // Holds of 100 ms, pending 150 ms, webhooks 400 ms after /payment: all
    // late. 40 units for about 200 reservations a second: early late
    // payments find units free, later ones find them taken.
    let results = checkout("checkout-late", 150, 400, 40).await;
    let p = &results["payments"];
    let outcomes = &p["outcomes"];
    assert_eq!(outcomes.get("confirmed"), None, "{p}");
    assert!(outcomes["confirmed_late"].as_u64() > Some(0), "{p}");
    assert!(outcomes["orphaned"].as_u64() > Some(0), "{p}");
    let sold = results["audit"]["sold"].as_u64().unwrap();
    assert_eq!(
        sold,
        outcomes["confirmed_late"].as_u64().unwrap(),
        "{results}"
    );
    assert!(sold <= 40);
}
