//! A drop in front of the catalog (`[drop]` in a scenario): the run
//! creates it over the API, fills its pre-queue with every customer, waits
//! for the opening, and afterwards reads back how many were admitted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hyper::Method;
use serde_json::{json, Value};

use crate::run::{histogram, Picker};
use crate::scenario::Scenario;
use crate::target::Target;

/// What filling the pre-queue did.
pub struct Prequeue {
    pub opens_at_ms: u64,
    pub joined: u64,
    /// Joins answered with anything but 201.
    pub refused: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates the drop (opening `prequeue_s` from now) and has every customer
/// join it, `join_connections` at a time; returns once all joins are
/// answered (the opening may still be ahead: see [`wait_for_opening`]).
pub async fn fill_prequeue(scenario: &Scenario, target: &Target) -> anyhow::Result<Prequeue> {
    let d = scenario.drop.as_ref().expect("a drop scenario");
    let picker = Picker::new(scenario);
    let now = now_ms();
    let opens_at_ms = now + (d.prequeue_s * 1000.0) as u64;
    let mut spec = json!({
        "skus": picker.names(),
        "prequeue_opens_at_ms": now,
        "opens_at_ms": opens_at_ms,
    });
    if let Some(rate) = d.admit_per_s {
        spec["admit_per_s"] = rate.into();
    }
    let (status, body) = target
        .json(
            Method::PUT,
            &format!("/v1/drops/{}", d.name),
            Some(spec.to_string()),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating drop {}: {e}", d.name))?;
    anyhow::ensure!(
        status == 201 || status == 200,
        "creating drop {}: {status} {body}",
        d.name
    );
    let next = AtomicU64::new(0);
    let joined = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let latency = parking_lot::Mutex::new(histogram());
    let path = format!("/v1/drops/{}/entries", d.name);
    let started = Instant::now();
    let count = scenario.customers.count;
    let worker = || async {
        loop {
            let n = next.fetch_add(1, Relaxed);
            if n >= count {
                return;
            }
            let body = format!(r#"{{"customer_id":"c-{n}"}}"#);
            let sent = Instant::now();
            let answer = target.json(Method::POST, &path, Some(body)).await;
            let _ = latency
                .lock()
                .record(sent.elapsed().as_micros().max(1) as u64);
            match answer {
                Ok((201, _)) => joined.fetch_add(1, Relaxed),
                _ => refused.fetch_add(1, Relaxed),
            };
        }
    };
    let workers: Vec<_> = (0..d.join_connections).map(|_| worker()).collect();
    crate::run::join_all(workers).await;
    Ok(Prequeue {
        opens_at_ms,
        joined: joined.into_inner(),
        refused: refused.into_inner(),
        elapsed: started.elapsed(),
        latency: latency.into_inner(),
    })
}

/// Sleeps until the drop's opening.
pub async fn wait_for_opening(prequeue: &Prequeue) {
    let now = now_ms();
    if prequeue.opens_at_ms > now {
        tokio::time::sleep(Duration::from_millis(prequeue.opens_at_ms - now)).await;
    }
}

/// The drop's figures after the run, for the report.
pub async fn summary(scenario: &Scenario, target: &Target, prequeue: &Prequeue) -> Value {
    let d = scenario.drop.as_ref().expect("a drop scenario");
    let view = match target
        .json(Method::GET, &format!("/v1/drops/{}", d.name), None)
        .await
    {
        Ok((200, v)) => v,
        Ok((status, v)) => json!({"error": format!("{status} {v}")}),
        Err(e) => json!({"error": e}),
    };
    let secs = prequeue.elapsed.as_secs_f64();
    json!({
        "drop": d.name,
        "entrants": view["entrants"],
        "admitted": view["admitted"],
        "state": view["state"],
        "seed_revealed": view["seed"].is_string(),
        "prequeue": {
            "joined": prequeue.joined,
            "refused": prequeue.refused,
            "seconds": secs,
            "joins_per_s": if secs > 0.0 { prequeue.joined as f64 / secs } else { 0.0 },
            "latency": crate::report::summary(&prequeue.latency),
        },
    })
}
