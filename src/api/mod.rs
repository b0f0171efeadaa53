//! The HTTP side: a hyper 1 server (HTTP/1.1 keep-alive and h2c) on tokio.
//!
//! Admission and dispatch (this file), what a path is (`route.rs`), what
//! the handlers share and what SIGHUP changes (`state.rs`), the listener and its
//! connections (`listener.rs`), one file per resource (`skus.rs`,
//! `reservations.rs`), request reading and auth (`request.rs`), and the one
//! mapping from typed errors to problem documents (`problem.rs`). Every
//! operation goes through the [`crate::store::Store`], which answers once
//! the change is durable. Writes with an `Idempotency-Key` run once and
//! are answered the same again (`keyed.rs`); `/v1/batch` (`batch.rs`) runs
//! many ops with one log commit; `/metrics` (Prometheus text, `metrics.rs`) and
//! `/v1/stats` (admin JSON) report what the server does.
//!
//! Shutdown: on the signal the listener is dropped (no new connections),
//! in-flight requests finish, then [`serve`] returns.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use crate::config::Limits;

mod admin;
mod batch;
mod cors;
mod drops;
mod events;
mod keyed;
mod listener;
mod payments;

use keyed::idempotent;
pub use listener::{serve, serve_admin};
mod int;
mod metrics;
mod problem;
mod request;
mod reservations;
mod route;
mod skus;
mod state;

use route::{decode, Route};
pub use state::{AppState, Settings};

pub use events::ApiBody;
use problem::{Body, Problem};
pub use request::{Keys, RawBody};

use crate::store::{Pending, Scope, Store};

/// What one request's handler needs: the store and the limits.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub store: &'a dyn Store,
    pub limits: &'a Limits,
    pub max_wait_ms: u64,
    pub admission: &'a crate::admission::Admission,
    /// This request's place on the engine-and-log path; a request that
    /// waits in a SKU's waitlist gives it back while it waits.
    pub admission_ticket: Option<&'a parking_lot::Mutex<Option<crate::admission::Ticket>>>,
    /// When a change counts as done: at once, or deferred into a
    /// [`Pending`] that a batch or a keyed request flushes once.
    pub scope: Scope<'a>,
    /// An op of a `/v1/batch`: it never waits in a waitlist (the batch
    /// answers once, for all of its ops).
    pub in_batch: bool,
    /// A `POST /v1/reservations` body already parsed (for the sold-out
    /// fast path and the customer's rate limit), so it is parsed once.
    pub create: Option<&'a reservations::Create>,
    /// Where a batch counts its reserve ops' outcomes (`None`:
    /// `server.metrics = false`).
    pub metrics: Option<&'a metrics::Metrics>,
    /// `[payments]`, for `/payment`'s gateway and bounds.
    pub payments: &'a crate::payments::Payments,
}

impl<'a> Ctx<'a> {
    /// This context with changes deferred into `pending`, or into the
    /// pending of an outer scope that already defers (a keyed batch).
    pub fn deferring<'b>(&self, pending: &'b Pending) -> Ctx<'b>
    where
        'a: 'b,
    {
        Ctx {
            scope: match self.scope {
                Scope::Deferred(outer) => Scope::Deferred(outer),
                Scope::Now => Scope::Deferred(pending),
            },
            ..*self
        }
    }

    /// Makes what was deferred into `pending` durable, unless an outer
    /// scope will (see [`Ctx::deferring`]).
    pub async fn flush(&self, pending: &Pending) -> Result<(), Problem> {
        match self.scope {
            Scope::Deferred(_) => Ok(()),
            Scope::Now => self
                .store
                .flush(pending)
                .await
                .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND)),
        }
    }
}

/// A JSON answer, encoded straight from `value`.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    // Most answers (a reservation) fit in 512 bytes: one allocation, where
    // growing from empty reallocated three times (callgrind: ~1,000
    // instructions a request).
    let mut body = Vec::with_capacity(512);
    serde_json::to_writer(&mut body, value)
        .expect("answers serialize (no maps with non-string keys)");
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

async fn route(state: &AppState, req: Request<Incoming>) -> Response<ApiBody> {
    let started = state.server.metrics.then(crate::clock::Stopwatch::start);
    let (parts, body) = req.into_parts();
    let cors = state.cors.is_on() && cors::applies(parts.uri.path());
    if cors && parts.method == Method::OPTIONS {
        return state
            .cors
            .preflight(&parts.headers)
            .map(http_body_util::Either::Left);
    }
    let decorate = cors && parts.method == Method::GET;
    if parts.uri.path() == "/v1/events" {
        // A stream: answered here, outside the request timeout (it only
        // covers producing the head) and outside admission.
        let mut resp = match events::serve(state, &parts).await {
            Ok(resp) => resp,
            Err(problem) => problem.response().map(http_body_util::Either::Left),
        };
        if decorate {
            state.cors.decorate(&parts.headers, &mut resp);
        }
        if let Some(started) = started {
            let index = metrics::ROUTES.len() - 2;
            state
                .metrics
                .record(index, resp.status().as_u16(), started.elapsed());
        }
        return resp;
    }
    // The route is parsed once, here, for the handler and the metrics.
    let route = Route::parse(parts.uri.path());
    let route_index = route
        .as_ref()
        .map_or(metrics::ROUTES.len() - 1, Route::index);
    let reservation = matches!(route, Some(Route::Reservations)) && parts.method == Method::POST;
    let limit = Duration::from_millis(state.server.request_timeout_ms);
    let mut resp = match tokio::time::timeout(limit, handle(state, &parts, body, route)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(problem)) => problem.response(),
        // Additive code. The request may or may not have changed something.
        Err(_) => Problem::request_timeout(format!(
            "no answer within server.request_timeout_ms = {}",
            state.server.request_timeout_ms
        ))
        .response(),
    };
    if let Some(started) = started {
        state
            .metrics
            .record(route_index, resp.status().as_u16(), started.elapsed());
        if reservation {
            state
                .metrics
                .record_reservation(metrics::outcome_of_response(&resp));
        }
    }
    if decorate {
        state.cors.decorate(&parts.headers, &mut resp);
    }
    resp.map(http_body_util::Either::Left)
}

async fn handle(
    state: &AppState,
    parts: &hyper::http::request::Parts,
    body: Incoming,
    route: Option<Route<'_>>,
) -> Result<Response<Body>, Problem> {
    let path = parts.uri.path();
    let method = &parts.method;
    let route = route.ok_or_else(|| Problem::not_found(format!("no route for {path}")))?;
    let allowed = route.methods();
    if !allowed.contains(method) {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resp =
            Problem::method_not_allowed(format!("{path} does not take {method}")).response();
        resp.headers_mut().insert(
            ALLOW,
            HeaderValue::from_str(&allow).expect("method names are valid header text"),
        );
        return Ok(resp);
    }
    match route {
        Route::Healthz => return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())),
        Route::Metrics => return Ok(metrics_response(state)),
        Route::Readyz => {
            return match state.store().map(|s| s.ready()) {
                None => Err(Problem::not_ready("recovering: replaying the log")),
                Some(Err(why)) => Err(Problem::not_ready(why)),
                Some(Ok(())) => Ok(json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned())),
            }
        }
        _ => {}
    }
    // One snapshot of what SIGHUP may change, for the whole request.
    let settings = state.settings.load_full();
    if let Route::PaymentWebhook(gateway) = &route {
        // The signature is the credential: no API key.
        return payments::webhook(state, &settings, parts, body, gateway).await;
    }
    settings
        .keys
        .authorize(&parts.headers, route.admin_only(method))?;
    let Some(store) = state.store() else {
        return Err(Problem::not_ready("recovering: replaying the log"));
    };
    if let Route::Stats = route {
        return Ok(json_response(StatusCode::OK, &stats(state)));
    }
    let store = &**store;
    let ctx = Ctx {
        store,
        limits: &settings.limits,
        max_wait_ms: settings.max_wait_ms,
        admission: &state.admission,
        admission_ticket: None,
        scope: Scope::Now,
        in_batch: false,
        create: None,
        metrics: state.server.metrics.then_some(&state.metrics),
        payments: &settings.payments,
    };
    let writes = method == Method::POST || method == Method::PUT;
    let raw = if writes {
        let limit = match route {
            Route::Batch => settings.limits.max_batch_body_bytes,
            _ => settings.limits.max_body_bytes,
        };
        request::read_body(&parts.headers, body, limit).await?
    } else {
        RawBody::empty()
    };
    let key = match parts.headers.get(IDEMPOTENCY_KEY) {
        Some(v) if writes => Some(
            v.to_str()
                .ok()
                .filter(|k| crate::engine::is_valid_ident(k))
                .ok_or_else(|| {
                    Problem::invalid(
                        Some("Idempotency-Key"),
                        "must be 1 to 128 bytes of [A-Za-z0-9._:-]",
                    )
                })?
                .to_owned(),
        ),
        _ => None,
    };
    if route.uses_engine() {
        // Sold-out fast path: a flash sale's losers are answered before
        // admission, never queued behind its winners. Keyed requests take
        // the normal path, so that their answer is stored with the key.
        let create = match route {
            Route::Reservations => reservations::peek(&raw),
            _ => None,
        };
        let counters = &state.admission.counters;
        // A drop's SKUs go to its gate first (not_admitted before sold out).
        let gated = |c: &reservations::Create| store.gates_any(&mut c.skus());
        if let (None, Some(create)) = (&key, &create) {
            if let Some(problem) = (!gated(create))
                .then(|| reservations::sold_out(store, &settings.limits, create))
                .flatten()
            {
                counters.sold_out_fast.fetch_add(1, Relaxed);
                return Err(problem);
            }
        }
        // Rate limits: per API key, then per customer on reservations.
        let now_ms = store.now_ms();
        let bearer = parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let limited = [
            (settings.key_limit.as_deref(), bearer, "API key"),
            (
                settings.customer_limit.as_deref(),
                create.as_ref().map(|c| c.customer_id.as_str()),
                "customer_id",
            ),
        ];
        for (limiter, who, what) in limited {
            if let (Some(limiter), Some(who)) = (limiter, who) {
                if let Err(retry_after_s) = limiter.check(who, now_ms) {
                    counters.rate_limited.fetch_add(1, Relaxed);
                    return Err(Problem::rate_limited(format!(
                        "too many requests for this {what}; retry in {retry_after_s} s"
                    ))
                    .retry_after(retry_after_s));
                }
            }
        }
        let ticket = parking_lot::Mutex::new(Some(state.admission.admit().await.map_err(shed)?));
        let ctx = Ctx {
            admission_ticket: Some(&ticket),
            create: create.as_ref(),
            ..ctx
        };
        return match key {
            None => dispatch(&ctx, &route, method, &raw).await,
            Some(key) => idempotent(&ctx, &key, &route, method, path, &raw).await,
        };
    }
    let Some(key) = key else {
        return dispatch(&ctx, &route, method, &raw).await;
    };
    idempotent(&ctx, &key, &route, method, path, &raw).await
}

/// Fuzzing: `path` through the router (with percent-decoding) and `raw`
/// through the body parser of its route, as the server would, without
/// running anything. Never panics, whatever the bytes.
#[doc(hidden)]
pub fn parse_only(path: &str, raw: &RawBody) {
    let hold_id = |id: &str| {
        let _ = id.parse::<crate::engine::HoldId>();
    };
    match Route::parse(path) {
        Some(Route::Batch) => batch::parse_only(raw),
        Some(Route::Sku(sku) | Route::SkuAdjust(sku)) => {
            let _ = crate::engine::is_valid_ident(&sku);
            skus::parse_only(raw);
        }
        Some(Route::Reservation(id) | Route::ReservationAction(id, _)) => {
            hold_id(&id);
            reservations::parse_only(raw);
        }
        Some(Route::Reservations) => reservations::parse_only(raw),
        Some(Route::Drop(_) | Route::DropEntries(_) | Route::DropEntry(..)) => {
            drops::parse_only(raw)
        }
        Some(_) | None => {}
    }
}

/// [`parse_only`] for a fuzzer's bytes: the first line is the path.
#[doc(hidden)]
pub fn fuzz_request(bytes: &[u8]) {
    let (path, body) = match bytes.iter().position(|&b| b == b'\n') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    parse_only(
        &String::from_utf8_lossy(path),
        &RawBody::json_bytes(body.to_vec()),
    );
}

/// The answer to a request admission turned away.
fn shed(shed: crate::admission::Shed) -> Problem {
    use crate::admission::Shed;
    match shed {
        Shed::QueueFull { retry_after_s } => {
            Problem::queue_full("the admission queue is full (admission.queue_max)")
                .retry_after(retry_after_s)
        }
        Shed::QueueTimeout { retry_after_s } => Problem::queue_timeout(
            "waited longer than admission.max_wait_ms for admission; nothing was changed",
        )
        .retry_after(retry_after_s),
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

async fn dispatch(
    ctx: &Ctx<'_>,
    route: &Route<'_>,
    method: &Method,
    raw: &RawBody,
) -> Result<Response<Body>, Problem> {
    match route {
        Route::Sku(sku) if method == Method::GET => skus::get(ctx, sku).await,
        Route::Sku(sku) => skus::put(ctx, sku, raw).await,
        Route::SkuAdjust(sku) => skus::adjust(ctx, sku, raw).await,
        Route::Reservations => reservations::create(ctx, raw).await,
        Route::Reservation(id) => reservations::get(ctx, id).await,
        Route::ReservationAction(id, action) => reservations::act(ctx, id, action, raw).await,
        Route::Batch => Box::pin(batch::run(ctx, raw)).await,
        Route::Drop(drop) if method == Method::GET => drops::get(ctx, drop).await,
        Route::Drop(drop) => drops::put(ctx, drop, raw).await,
        Route::DropEntries(drop) => drops::join(ctx, drop, raw).await,
        Route::DropEntry(drop, customer) => drops::entry(ctx, drop, customer).await,
        Route::PaymentWebhook(_) => Err(Problem::not_found(
            "a gateway's webhook is its own request, never a batch op",
        )),
        Route::Stats | Route::Metrics => unreachable!("answered before dispatch"),
        Route::Healthz | Route::Readyz => unreachable!("answered before dispatch"),
    }
}

/// `/metrics`: Prometheus text (on the API and the admin listener).
fn metrics_response(state: &AppState) -> Response<Body> {
    let mut text = state.metrics.render();
    state.admission.render(&mut text);
    state.payment_tally.render(&mut text);
    if let Some(store) = state.store() {
        store.render_metrics(&mut text);
    }
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

/// `/v1/stats`: the server, the store's part (per shard, the log, the
/// key store, hot SKUs, drops, webhooks), admission, the event feed and
/// warnings (on the API and the admin listener).
fn stats(state: &AppState) -> serde_json::Value {
    let mut admission = state.admission.stats();
    let mut server = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
    });
    let store = state.store().map(|s| s.stats()).unwrap_or_default();
    if let Some(shards) = store.shards {
        server["shards"] = shards.into();
    }
    if let Some(waitlisted) = store.waitlisted {
        admission["waitlisted"] = waitlisted.into();
    }
    let mut warnings = store.warnings;
    let (queued, queue_max) = (state.admission.queued(), state.admission.queue_max());
    if queue_max > 0 && queued * 10 >= queue_max * 8 {
        warnings.push(format!(
            "the admission queue is {queued} of {queue_max}: requests will be shed (429 queue_full); raise admission.concurrency_max if the log keeps up"
        ));
    }
    let mut doc = serde_json::json!({
        "server": server,
        "reservations": state.metrics.reservations(),
        "requests": state.metrics.requests(),
        "admission": admission,
        "warnings": warnings,
        "events": events_stats(state),
        "payments": payments_stats(state),
    });
    if let (serde_json::Value::Object(doc), serde_json::Value::Object(fields)) =
        (&mut doc, store.fields)
    {
        doc.extend(fields);
    }
    doc
}

/// Pending payments (null where the store cannot count them cheaply),
/// and the webhooks' late and orphaned payments in the last minute.
fn payments_stats(state: &AppState) -> serde_json::Value {
    let store = state.store();
    let now_ms = store.map_or(0, |s| s.now_ms());
    let (late, orphaned) = state.payment_tally.last_minute(now_ms);
    serde_json::json!({
        "pending": store.and_then(|s| s.pending_payments()),
        "late_last_minute": late,
        "orphaned_last_minute": orphaned,
    })
}

/// The event feed's streams and ring, for `/v1/stats` (null before it
/// starts).
fn events_stats(state: &AppState) -> Option<serde_json::Value> {
    state.events().map(|hub| {
        let (retained, last_id) = hub.retained();
        serde_json::json!({
            "subscribers": hub.subscribers(),
            "retained": retained,
            "last_id": last_id,
            "visible_id": hub.visible_id(),
        })
    })
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
