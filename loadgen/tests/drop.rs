//! The drop scenario against a real stampede (the library's server on a
//! loopback socket, a real log on disk): the pre-queue fills, the drop
//! opens, only admitted entrants reserve, and the report shows admitted,
//! reserved and sold next to the audit.

mod common;

use std::sync::Arc;

use loadgen::run::{self, Live};
use loadgen::scenario::Scenario;
use loadgen::target::Target;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_run_reports_admitted_reserved_and_sold_with_its_audit() {
    let dir = std::env::temp_dir().join(format!("loadgen-drop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = common::stampede(&dir, &stampede::config::Config::default()).await;
    let scenario = Scenario::parse(
        r#"
name = "small-drop"
[drop]
name = "t"
prequeue_s = 2
admit_per_s = 1000
join_connections = 16
retries = 2
retry_ms = 200
[[phases]]
name = "rush"
duration_s = 2
rate = 300
[catalog]
prefix = "d-"
skus = 2
stock = 100
customer_limit = 1
popularity = "uniform"
[customers]
count = 2000
[flow]
confirm = 1.0
release = 0.0
[client]
connections = 16
"#,
    )
    .unwrap();
    let target = Target::connect(&format!("http://{addr}"), None, false)
        .await
        .unwrap();
    run::set_up(&scenario, &target).await.unwrap();
    let prequeue = loadgen::drop::fill_prequeue(&scenario, &target)
        .await
        .unwrap();
    assert_eq!((prequeue.joined, prequeue.refused), (2000, 0));
    loadgen::drop::wait_for_opening(&prequeue).await;
    let (outcome, target) = run::run(scenario.clone(), target, Arc::new(Live::default())).await;
    let audit = run::audit(&scenario, &target, &outcome.stats).await;
    let mut results = loadgen::report::results(&scenario, "t", &outcome, &audit);
    results["drop"] = loadgen::drop::summary(&scenario, &target, &prequeue).await;
    let d = &results["drop"];
    assert_eq!(d["entrants"], 2000);
    assert_eq!(d["state"], "open");
    assert_eq!(d["seed_revealed"], true);
    // Admitted at 1000 a second from the opening: all within the run.
    assert_eq!(d["admitted"], 2000);
    let reserved = results["statuses"]["reserve"]["201"].as_u64().unwrap_or(0);
    assert!(reserved > 0, "{results}");
    // Paced: shoppers who came before their turn were refused, then let in.
    assert!(
        results["codes"]["not_admitted"].as_u64() > Some(0),
        "{results}"
    );
    assert!(audit.passed(), "{audit:?}");
    assert_eq!(audit.sold, audit.confirmed_seen, "every sale seen");
    assert!(audit.sold <= 200, "never more than the stock");
    let text = loadgen::report::text(&results);
    assert!(
        text.contains("drop t: 2000 entrants")
            && text.contains("2000 admitted")
            && text.contains(&format!("{reserved} reserved, {} sold", audit.sold)),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
