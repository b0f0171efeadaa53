//! The final report: in the terminal, and as `results.json` under `--out`.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::run::{Audit, Outcome};
use crate::scenario::Scenario;
use crate::target::OpKind;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// p50, p90, p99, p99.9 and max in milliseconds, and the count.
pub fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

pub fn results(scenario: &Scenario, target: &str, outcome: &Outcome, audit: &Audit) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &outcome.stats;
    let live = &outcome.live;
    let by_op: BTreeMap<&str, Value> = s
        .by_op
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(k, h)| (k.name(), summary(h)))
        .collect();
    let by_phase: Vec<Value> = scenario
        .phases
        .iter()
        .zip(&s.by_phase)
        .map(|(p, h)| json!({"phase": p.name, "latency": summary(h)}))
        .collect();
    let mut statuses: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((kind, status), n) in &s.statuses {
        statuses
            .entry(kind.name().to_owned())
            .or_default()
            .insert(status_name(*status), *n);
    }
    let mut by_status: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for ((kind, status), h) in &s.by_status {
        by_status
            .entry(kind.name().to_owned())
            .or_default()
            .insert(status_name(*status), summary(h));
    }
    let seconds: Vec<Value> = s
        .seconds
        .iter()
        .enumerate()
        .map(|(t, sec)| {
            let completed: u64 = sec.statuses.values().sum();
            json!({
                "t": t,
                "offered": sec.offered,
                "sent": sec.sent,
                "completed": completed,
                "statuses": sec.statuses.iter().map(|(k, v)| (status_name(*k), *v)).collect::<BTreeMap<_, _>>(),
                "codes": sec.codes,
                "p50_ms": ms(sec.latency.value_at_quantile(0.50)),
                "p99_ms": ms(sec.latency.value_at_quantile(0.99)),
                "p999_ms": ms(sec.latency.value_at_quantile(0.999)),
            })
        })
        .collect();
    json!({
        "scenario": scenario.name,
        "target": target,
        "elapsed_s": outcome.elapsed.as_secs_f64(),
        "planned_s": scenario.duration_s(),
        "requests": {
            "arrivals": live.arrivals.load(Relaxed),
            "sent": live.sent.load(Relaxed),
            "late": live.late.load(Relaxed),
            "dropped": live.dropped.load(Relaxed),
            "completed": live.completed.load(Relaxed),
            "errors": live.errors.load(Relaxed),
        },
        "statuses": statuses,
        "codes": s.codes,
        "payments": payments(&s.payments),
        "latency_by_op": by_op,
        "latency_by_phase": by_phase,
        "latency_by_status": by_status,
        "seconds": seconds,
        "audit": audit,
    })
}

fn status_name(status: u16) -> String {
    match status {
        0 => "no_answer".into(),
        s => s.to_string(),
    }
}

/// `[flow.payment]`'s webhooks: each outcome's count and share (null
/// without payments).
fn payments(counts: &BTreeMap<String, u64>) -> Value {
    let total: u64 = counts.values().sum();
    if total == 0 {
        return Value::Null;
    }
    let share = |o: &str| counts.get(o).copied().unwrap_or(0) as f64 / total as f64;
    json!({
        "webhooks": total,
        "outcomes": counts,
        "share_confirmed": share("confirmed"),
        "share_confirmed_late": share("confirmed_late"),
        "share_orphaned": share("orphaned"),
    })
}

/// The terminal report.
pub fn text(r: &Value) -> String {
    let mut out = String::new();
    let q = &r["requests"];
    out += &format!(
        "stampede-loadgen: {} against {} ({:.1} s, planned {:.1} s)\n",
        r["scenario"].as_str().unwrap_or(""),
        r["target"].as_str().unwrap_or(""),
        r["elapsed_s"].as_f64().unwrap_or(0.0),
        r["planned_s"].as_f64().unwrap_or(0.0),
    );
    out += &format!(
        "shoppers arrived {}; requests sent {}, completed {}, late {}, dropped {}, errors {}\n",
        q["arrivals"], q["sent"], q["completed"], q["late"], q["dropped"], q["errors"]
    );
    out += "latency from the intended send time (ms):\n";
    out += &format!(
        "  {:<14} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    let row = |name: &str, v: &Value| {
        format!(
            "  {:<14} {:>9} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            name,
            v["count"],
            v["p50_ms"].as_f64().unwrap_or(0.0),
            v["p90_ms"].as_f64().unwrap_or(0.0),
            v["p99_ms"].as_f64().unwrap_or(0.0),
            v["p999_ms"].as_f64().unwrap_or(0.0),
            v["max_ms"].as_f64().unwrap_or(0.0),
        )
    };
    for kind in OpKind::ALL {
        if let Some(v) = r["latency_by_op"].get(kind.name()) {
            out += &row(kind.name(), v);
        }
    }
    for p in r["latency_by_phase"].as_array().into_iter().flatten() {
        out += &row(
            &format!("[{}]", p["phase"].as_str().unwrap_or("")),
            &p["latency"],
        );
    }
    out += "outcomes:\n";
    if let Some(ops) = r["statuses"].as_object() {
        for (op, statuses) in ops {
            out += &format!("  {op:<14} {statuses}\n");
        }
    }
    if let Some(codes) = r["codes"].as_object().filter(|c| !c.is_empty()) {
        out += &format!("  {:<14} {}\n", "codes", Value::Object(codes.clone()));
    }
    let p = &r["payments"];
    if p.is_object() {
        let pct = |k: &str| 100.0 * p[k].as_f64().unwrap_or(0.0);
        out += &format!(
            "payments: {} webhooks answered: confirmed {:.1}%, late {:.1}%, orphaned {:.1}% ({})\n",
            p["webhooks"],
            pct("share_confirmed"),
            pct("share_confirmed_late"),
            pct("share_orphaned"),
            p["outcomes"],
        );
    }
    let d = &r["drop"];
    if d.is_object() {
        let p = &d["prequeue"];
        let reserved = r["statuses"]["reserve"]["201"].as_u64().unwrap_or(0);
        let sold = match r["audit"]["skipped"].as_bool() {
            Some(true) => "?".to_owned(),
            _ => r["audit"]["sold"].to_string(),
        };
        out += &format!(
            "drop {}: {} entrants ({} joined at {:.0}/s, join p50 {:.2} ms p99 {:.2} ms), {} admitted, {} reserved, {sold} sold, state {}, seed revealed: {}\n",
            d["drop"].as_str().unwrap_or(""),
            d["entrants"],
            p["joined"],
            p["joins_per_s"].as_f64().unwrap_or(0.0),
            p["latency"]["p50_ms"].as_f64().unwrap_or(0.0),
            p["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            d["admitted"],
            reserved,
            d["state"].as_str().unwrap_or("?"),
            d["seed_revealed"],
        );
    }
    let a = &r["audit"];
    if a["skipped"].as_bool() == Some(true) {
        out += "audit: skipped (--no-audit)\n";
        return out;
    }
    out += &format!(
        "audit: {} SKUs, sold {}, confirmations seen {}, sold unseen {}; oversold: {}, lost sales: {}{}\n",
        a["skus"],
        a["sold"],
        a["confirmed_seen"],
        a["sold_unseen"],
        a["oversold"].as_array().map_or(0, Vec::len),
        a["lost_sales"].as_array().map_or(0, Vec::len),
        match a["errors"].as_array().map_or(0, Vec::len) {
            0 => String::new(),
            n => format!(", {n} SKUs unreadable"),
        }
    );
    out
}
