//! `POST /v1/payments/{gateway}/webhook` (contract v1.2, "Payments"): a
//! gateway's signed event, verified on the raw bytes before anything
//! parses them, then settled once by the store. The signature is the
//! credential: no API key. Also what operators see of it: the
//! `stampede_payment_webhooks_total` counter and the status page's
//! late and orphaned payments in the last minute.

use std::collections::{HashMap, VecDeque};

use hyper::{Response, StatusCode};
use serde::Serialize;

use super::problem::{Body, Problem};
use super::state::{AppState, Settings};
use super::{json_response, request};
use crate::engine::payments::Settle;
use crate::engine::{is_valid_ident, HoldId};
use crate::payments::{event, signature, Outcome};

/// Longest event id kept (the log's strings are at most 255 bytes).
const EVENT_ID_MAX: usize = 200;

/// What the webhooks answered: per gateway and outcome, since start, and
/// the late and orphaned payments of the last minute.
#[derive(Debug, Default)]
pub struct Tally {
    inner: parking_lot::Mutex<TallyInner>,
}

#[derive(Debug, Default)]
struct TallyInner {
    /// Gateway -> a count per outcome (`Outcome::ALL` order). Gateways are
    /// the configured ones: bounded.
    totals: HashMap<String, [u64; Outcome::ALL.len()]>,
    /// When each late or orphaned payment was answered, the last minute's.
    recent: VecDeque<(u64, Outcome)>,
}

/// Most late and orphaned payments remembered for the last minute's
/// figures.
const RECENT_MAX: usize = 10_000;

impl Tally {
    fn count(&self, gateway: &str, outcome: Outcome, now_ms: u64) {
        let mut inner = self.inner.lock();
        match inner.totals.get_mut(gateway) {
            Some(counts) => counts[outcome.index()] += 1,
            None => {
                let mut counts = [0; Outcome::ALL.len()];
                counts[outcome.index()] = 1;
                inner.totals.insert(gateway.to_owned(), counts);
            }
        }
        if matches!(outcome, Outcome::ConfirmedLate | Outcome::Orphaned) {
            if inner.recent.len() == RECENT_MAX {
                inner.recent.pop_front();
            }
            inner.recent.push_back((now_ms, outcome));
        }
    }

    /// Late and orphaned payments in the minute before `now_ms`.
    pub fn last_minute(&self, now_ms: u64) -> (usize, usize) {
        let mut inner = self.inner.lock();
        while inner
            .recent
            .front()
            .is_some_and(|(at, _)| at.saturating_add(60_000) <= now_ms)
        {
            inner.recent.pop_front();
        }
        let late = inner
            .recent
            .iter()
            .filter(|(_, o)| *o == Outcome::ConfirmedLate)
            .count();
        (late, inner.recent.len() - late)
    }

    /// `stampede_payment_webhooks_total{gateway,outcome}`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let inner = self.inner.lock();
        out.push_str(
            "# HELP stampede_payment_webhooks_total Gateway webhooks answered, by gateway and outcome.\n\
             # TYPE stampede_payment_webhooks_total counter\n",
        );
        let mut gateways: Vec<_> = inner.totals.iter().collect();
        gateways.sort_by(|a, b| a.0.cmp(b.0));
        for (gateway, counts) in gateways {
            for outcome in Outcome::ALL {
                let _ = writeln!(
                    out,
                    "stampede_payment_webhooks_total{{gateway=\"{gateway}\",outcome=\"{}\"}} {}",
                    outcome.as_str(),
                    counts[outcome.index()]
                );
            }
        }
    }
}

#[derive(Serialize)]
struct Answer<'a> {
    outcome: &'static str,
    hold: Option<&'a str>,
}

/// The webhook: gateway, body limit, signature, event, settlement.
pub(super) async fn webhook(
    state: &AppState,
    settings: &Settings,
    parts: &hyper::http::request::Parts,
    body: hyper::body::Incoming,
    gateway: &str,
) -> Result<Response<Body>, Problem> {
    let Some(g) = settings
        .payments
        .gateways
        .iter()
        .find(|g| g.name == gateway)
    else {
        return Err(Problem::not_found(format!(
            "no gateway {gateway:?} is configured ([[payments.gateways]])"
        )));
    };
    let raw = request::read_body(&parts.headers, body, settings.limits.max_body_bytes).await?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let verified = signature::verify(g, header, &raw.bytes, now_s)
        .map_err(|why| Problem::invalid_signature(format!("gateway {gateway}: {why}")))?;
    let ev = event::read(g.scheme, &raw.bytes, verified.webhook_id.as_deref())
        .map_err(|e| Problem::bad_request(e.to_string()))?;
    if ev.id.len() > EVENT_ID_MAX {
        return Err(Problem::bad_request(format!(
            "the event id is {} bytes, over {EVENT_ID_MAX}",
            ev.id.len()
        )));
    }
    // What a recorded payment can match: an identifier, as `/payment`
    // takes. An order reference that is not one falls back to the
    // payment's, as when none is sent.
    let payment_ref = ev.payment_ref.as_deref().filter(|r| is_valid_ident(r));
    let order_ref = ev
        .order_ref
        .as_deref()
        .filter(|r| is_valid_ident(r))
        .or(payment_ref);
    let Some(store) = state.store() else {
        return Err(Problem::not_ready("recovering: replaying the log"));
    };
    let _place = state.admission.admit().await.map_err(super::shed)?;
    let kind: String = ev.kind.chars().take(200).collect();
    let settled = store
        .settle(Settle {
            gateway,
            event_id: &ev.id,
            kind: &kind,
            meaning: ev.meaning,
            hold: ev.hold.as_deref(),
            payment_ref,
            order_ref,
            dedupe_ms: settings.payments.dedupe_ms,
        })
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::UNPROCESSABLE_ENTITY))?;
    state
        .payment_tally
        .count(gateway, settled.outcome, store.now_ms());
    let hold = settled.hold.map(|h: HoldId| h.text());
    Ok(json_response(
        StatusCode::OK,
        &Answer {
            outcome: settled.outcome.as_str(),
            hold: hold.as_ref().map(|h| h.as_str()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_by_gateway_and_keeps_a_minute_of_late_payments() {
        let t = Tally::default();
        t.count("stripe", Outcome::Confirmed, 1_000);
        t.count("stripe", Outcome::ConfirmedLate, 2_000);
        t.count("psp", Outcome::Orphaned, 30_000);
        assert_eq!(t.last_minute(40_000), (1, 1));
        assert_eq!(
            t.last_minute(62_000),
            (0, 1),
            "the late one is a minute old"
        );
        let mut out = String::new();
        t.render(&mut out);
        assert!(out.contains(
            "stampede_payment_webhooks_total{gateway=\"stripe\",outcome=\"confirmed\"} 1"
        ));
        assert!(
            out.contains("stampede_payment_webhooks_total{gateway=\"psp\",outcome=\"orphaned\"} 1")
        );
    }
}
