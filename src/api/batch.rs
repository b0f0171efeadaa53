//! `POST /v1/batch`: many reservation operations in one request and one log
//! commit. Ops are independent (not a transaction) and applied in order;
//! `results[i]` is `{"status", "body"}`, what that endpoint would have
//! answered. Nothing is answered until the log is durable up to the last op.
//!
//! Each op is read once, straight from its own text in the body into a
//! typed op ([`TypedOp`]), and run by the same typed handler its endpoint
//! uses; its answer is encoded into the batch's buffer. Only an op of
//! another shape (a key, a field its endpoint refuses, an escaped string,
//! a duplicate field) takes the general way: rebuilt as its endpoint's
//! request and dispatched, so every refusal reads as it always did.

use crate::store::Pending;
use futures_util::stream::{FuturesOrdered, StreamExt};
use std::io::Write;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::reservations::{self, Action, FillArg, View};
use super::{dispatch, keyed::idempotent, Ctx, Route};
use crate::engine::ItemRequest;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    ops: Vec<Map<String, Value>>,
}

/// The batch with each op left as its own text, borrowed from the body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch<'a> {
    #[serde(borrow)]
    ops: Vec<&'a RawValue>,
}

/// An op read into its typed form. Every field but `op` is
/// `Some(..)` when present (`Some(None)` when null), so that a field an op
/// does not take, even as null, sends it the general way (whose endpoint
/// refuses it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedOp<'a> {
    op: &'a str,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<Option<&'a str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    idempotency_key: Option<Option<&'a str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    customer_id: Option<Option<&'a str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    items: Option<Option<Vec<TypedItem<'a>>>>,
    #[serde(default, deserialize_with = "present_int")]
    ttl_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    fill: Option<Option<FillArg>>,
    #[serde(default, deserialize_with = "present_int")]
    wait_ms: Option<Option<u64>>,
    #[serde(default, borrow, deserialize_with = "present")]
    order_ref: Option<Option<&'a str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedItem<'a> {
    sku: &'a str,
    #[serde(deserialize_with = "super::int::exact")]
    qty: u32,
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn present_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    super::int::option(d).map(Some)
}

/// What a typed op does, when it has exactly the shape its endpoint takes.
enum Fast<'o, 'a> {
    Reserve {
        customer_id: &'a str,
        items: &'o [TypedItem<'a>],
        ttl_ms: Option<u64>,
        fill: Option<FillArg>,
        wait_ms: Option<u64>,
    },
    Act(&'a str, Action<&'a str>),
}

impl<'a> TypedOp<'a> {
    fn fast(&self) -> Option<Fast<'_, 'a>> {
        if self.idempotency_key.is_some() {
            return None;
        }
        let reserve_fields = self.customer_id.is_some()
            || self.items.is_some()
            || self.ttl_ms.is_some()
            || self.fill.is_some()
            || self.wait_ms.is_some();
        // An id as the general way would route it: non-empty, nothing a
        // path would decode or split.
        let id = || match self.id {
            Some(Some(id))
                if !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Some(id)
            }
            _ => None,
        };
        match self.op {
            "reserve" if self.id.is_none() && self.order_ref.is_none() => {
                let (Some(Some(customer_id)), Some(Some(items))) = (self.customer_id, &self.items)
                else {
                    return None;
                };
                Some(Fast::Reserve {
                    customer_id,
                    items,
                    ttl_ms: self.ttl_ms.flatten(),
                    fill: self.fill.flatten(),
                    wait_ms: self.wait_ms.flatten(),
                })
            }
            "confirm" if !reserve_fields => {
                Some(Fast::Act(id()?, Action::Confirm(self.order_ref.flatten())))
            }
            "release" if !reserve_fields && self.order_ref.is_none() => {
                Some(Fast::Act(id()?, Action::Release))
            }
            "extend"
                if self.customer_id.is_none()
                    && self.items.is_none()
                    && self.fill.is_none()
                    && self.wait_ms.is_none()
                    && self.order_ref.is_none() =>
            {
                let Some(Some(ttl_ms)) = self.ttl_ms else {
                    return None;
                };
                Some(Fast::Act(id()?, Action::Extend(ttl_ms)))
            }
            _ => None,
        }
    }
}

/// Runs a typed op and writes `{"status":..,"body":..}` for it into `out`.
async fn run_fast(ctx: &Ctx<'_>, fast: Fast<'_, '_>, out: &mut Vec<u8>) {
    let (status, result) = match fast {
        Fast::Reserve {
            customer_id,
            items,
            ttl_ms,
            fill,
            wait_ms,
        } => {
            let items: smallvec::SmallVec<[ItemRequest; 4]> = items
                .iter()
                .map(|i| ItemRequest {
                    sku: i.sku,
                    qty: i.qty,
                })
                .collect();
            let r = reservations::reserve(ctx, customer_id, &items, ttl_ms, fill, wait_ms).await;
            (201, r)
        }
        Fast::Act(id, action) => (200, reservations::act_on(ctx, id, action).await),
    };
    if let (201, Some(metrics)) = (status, ctx.metrics) {
        metrics.record_reservation(match &result {
            Ok(_) => 0,
            Err(problem) => super::metrics::outcome_of(problem.code),
        });
    }
    match result {
        Ok(r) => {
            let _ = write!(out, "{{\"status\":{status},\"body\":");
            serde_json::to_writer(&mut *out, &View::of(&r))
                .expect("answers serialize (no maps with non-string keys)");
            out.push(b'}');
        }
        Err(problem) => splice(out, problem.response()).await,
    }
}

/// Whether the store lets this op join a pipelined run.
fn fast_pipelines(store: &dyn crate::store::Store, fast: &Fast<'_, '_>) -> bool {
    match fast {
        Fast::Reserve { items, .. } => {
            let skus: smallvec::SmallVec<[&str; 4]> = items.iter().map(|i| i.sku).collect();
            store.pipelines_reserve(&skus)
        }
        Fast::Act(id, _) => store.pipelines_act(id),
    }
}

/// Writes `{"status":..,"body":..}` for an answer already made.
async fn splice(out: &mut Vec<u8>, resp: Response<Body>) {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    // Answers are JSON text; a stored one read back from a damaged log
    // might not be, and is shown as it can be rather than panicking.
    let body = String::from_utf8_lossy(&body);
    let _ = write!(out, "{{\"status\":{status},\"body\":{body}}}");
}

fn check_count(ctx: &Ctx<'_>, n: usize) -> Result<(), Problem> {
    let max = ctx.limits.max_batch_ops;
    if n == 0 || n > max {
        return Err(Problem::invalid(
            Some("ops"),
            format!("must hold 1 to {max} ops (limits.max_batch_ops), got {n}"),
        ));
    }
    Ok(())
}

pub async fn run(ctx: &Ctx<'_>, raw: &RawBody) -> Result<Response<Body>, Problem> {
    // Each op's own text, if the body is a batch of objects; anything else
    // is read the general way, which explains what is wrong with it.
    match raw.json::<RawBatch>() {
        Ok(Some(batch)) if batch.ops.iter().all(|op| op.get().starts_with('{')) => {
            run_ops(ctx, batch.ops.iter().map(|op| op.get())).await
        }
        _ => {
            let batch: Batch = raw
                .json()?
                .ok_or_else(|| Problem::invalid(Some("ops"), "the body needs {\"ops\": [...]}"))?;
            let ops: Vec<String> = batch
                .ops
                .iter()
                .map(|op| Value::from(op.clone()).to_string())
                .collect();
            run_ops(ctx, ops.iter().map(String::as_str)).await
        }
    }
}

/// Runs each op (its JSON text) in order, each answering without waiting;
/// the batch waits once at the end, for everything its ops deferred.
async fn run_ops<'o>(
    ctx: &Ctx<'_>,
    ops: impl ExactSizeIterator<Item = &'o str>,
) -> Result<Response<Body>, Problem> {
    check_count(ctx, ops.len())?;
    let pending = Pending::new();
    let deferred = Ctx {
        in_batch: true,
        create: None,
        ..ctx.deferring(&pending)
    };
    let mut out: Vec<u8> = Vec::with_capacity(ops.len() * 320);
    out.extend_from_slice(b"{\"results\":[");
    let ops: Vec<&str> = ops.collect();
    let pipelined = ctx.store.pipelines();
    let mut i = 0;
    while i < ops.len() {
        if i > 0 {
            out.push(b',');
        }
        let typed = serde_json::from_str::<TypedOp>(ops[i]).ok();
        let joins = |t: &TypedOp<'_>| t.fast().is_some_and(|f| fast_pipelines(ctx.store, &f));
        if pipelined && typed.as_ref().is_some_and(joins) {
            // A run of ops each answering on its own (no key): all sent at
            // once, in order, on the batch's one connection; answers
            // taken in order.
            let mut run: Vec<TypedOp> = typed.into_iter().collect();
            while let Some(next) = ops
                .get(i + run.len())
                .and_then(|op| serde_json::from_str::<TypedOp>(op).ok())
                .filter(joins)
            {
                run.push(next);
            }
            // What the store must write before any of the run's changes.
            let reservations: Vec<(Vec<&str>, Option<u64>)> = run
                .iter()
                .filter_map(TypedOp::fast)
                .filter_map(|f| match f {
                    Fast::Reserve { items, ttl_ms, .. } => {
                        Some((items.iter().map(|i| i.sku).collect(), ttl_ms))
                    }
                    Fast::Act(..) => None,
                })
                .collect();
            // If that fails, the run is sent one op at a time instead (each
            // then does its own writing first, and answers for itself).
            let ready = reservations.is_empty()
                || ctx.store.before_run(&pending, reservations).await.is_ok();
            if !ready {
                for (k, op) in run.iter().enumerate() {
                    if k > 0 {
                        out.push(b',');
                    }
                    if let Some(fast) = op.fast() {
                        run_fast(&deferred, fast, &mut out).await;
                    }
                }
                i += run.len();
                continue;
            }
            let mut answers: FuturesOrdered<_> = run
                .iter()
                .filter_map(TypedOp::fast)
                .map(|fast| {
                    let deferred = &deferred;
                    async move {
                        let mut one = Vec::with_capacity(320);
                        run_fast(deferred, fast, &mut one).await;
                        one
                    }
                })
                .collect();
            let mut first = true;
            while let Some(one) = answers.next().await {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(&one);
            }
            i += run.len();
            continue;
        }
        match typed.as_ref().and_then(TypedOp::fast) {
            Some(fast) => run_fast(&deferred, fast, &mut out).await,
            None => {
                let resp = match serde_json::from_str::<Map<String, Value>>(ops[i]) {
                    Ok(op) => {
                        let reserve = op.get("op").and_then(Value::as_str) == Some("reserve");
                        let resp = one(&deferred, op).await.unwrap_or_else(|p| p.response());
                        if let (true, Some(metrics)) = (reserve, ctx.metrics) {
                            metrics.record_reservation(super::metrics::outcome_of_response(&resp));
                        }
                        resp
                    }
                    Err(e) => Problem::invalid(Some("ops"), e.to_string()).response(),
                };
                splice(&mut out, resp).await;
            }
        }
        i += 1;
    }
    out.extend_from_slice(b"]}");
    ctx.flush(&pending).await?;
    let mut resp = Response::new(Full::new(Bytes::from(out)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// One op: which endpoint it stands for, and that endpoint's body.
async fn one(ctx: &Ctx<'_>, op: Map<String, Value>) -> Result<Response<Body>, Problem> {
    let (path, raw, key) = op_request(op)?;
    let route =
        Route::parse(&path).ok_or_else(|| Problem::invalid(Some("id"), "not a reservation id"))?;
    match key {
        Some(key) => idempotent(ctx, &key, &route, &Method::POST, &path, &raw).await,
        None => dispatch(ctx, &route, &Method::POST, &raw).await,
    }
}

/// What an op stands for: the endpoint's path, its body and the op's key.
fn op_request(mut op: Map<String, Value>) -> Result<(String, RawBody, Option<String>), Problem> {
    let kind = match op.remove("op") {
        Some(Value::String(k)) => k,
        _ => {
            return Err(Problem::invalid(
                Some("op"),
                "each op needs \"op\": reserve, confirm, release, extend or payment",
            ))
        }
    };
    let key = match op.remove("idempotency_key") {
        None => None,
        Some(Value::String(k)) if crate::engine::is_valid_ident(&k) => Some(k),
        Some(_) => {
            return Err(Problem::invalid(
                Some("idempotency_key"),
                "must be 1 to 128 bytes of [A-Za-z0-9._:-]",
            ))
        }
    };
    let id = match op.remove("id") {
        None => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(Problem::invalid(Some("id"), "must be a reservation id")),
    };
    let path = match (kind.as_str(), &id) {
        ("reserve", None) => "/v1/reservations".to_owned(),
        ("confirm" | "release" | "extend" | "payment", Some(id)) => {
            format!("/v1/reservations/{id}/{kind}")
        }
        ("reserve", Some(_)) => return Err(Problem::invalid(Some("id"), "reserve takes no id")),
        ("confirm" | "release" | "extend" | "payment", None) => {
            return Err(Problem::invalid(
                Some("id"),
                format!("{kind} needs the reservation id"),
            ))
        }
        _ => return Err(Problem::invalid(Some("op"), format!("unknown op {kind:?}"))),
    };
    let body = if op.is_empty() {
        Vec::new()
    } else {
        serde_json::to_vec(&op).expect("a JSON map serializes")
    };
    Ok((path, RawBody::json_bytes(body), key))
}

/// Fuzzing: the batch parsed as the server would, each op down to its
/// endpoint's route and typed body, without running anything.
pub(super) fn parse_only(raw: &RawBody) {
    if let Ok(Some(batch)) = raw.json::<RawBatch>() {
        for op in batch.ops {
            if let Ok(typed) = serde_json::from_str::<TypedOp>(op.get()) {
                let _ = typed.fast();
            }
        }
    }
    let Ok(Some(batch)) = raw.json::<Batch>() else {
        return;
    };
    for op in batch.ops {
        if let Ok((path, raw, _)) = op_request(op) {
            super::parse_only(&path, &raw);
        }
    }
}

/// What bounds a batch's answer, found before any op runs, from one
/// parse: per op, the length of its own text (its answer echoes at most
/// twice that: identifiers, a field an error names) and the reservation id
/// it names, if any (its answer shows that hold, whose items never
/// change). `None` for a body that is not a batch (one short problem
/// document answers it).
pub fn answer_parts(raw: &RawBody) -> Option<Vec<(usize, Option<String>)>> {
    let batch = raw.json::<Batch>().ok()??;
    let part = |op: &Map<String, Value>| {
        let text = serde_json::to_string(op).map_or(raw.bytes.len(), |t| t.len());
        let id = match op.get("id") {
            Some(Value::String(id)) => Some(id.clone()),
            _ => None,
        };
        (text, id)
    };
    Some(batch.ops.iter().map(part).collect())
}
