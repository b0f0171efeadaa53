//! `POST /v1/batch`: many reservation operations in one request and one log
//! commit. Ops are independent (not a transaction) and applied in order;
//! `results[i]` is `{"status", "body"}`, what that endpoint would have
//! answered. Nothing is answered until the log is durable up to the last op.

use crate::store::Pending;
use std::fmt::Write;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{dispatch, keyed::idempotent, Ctx, Route};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    ops: Vec<Map<String, Value>>,
}

pub async fn run(ctx: &Ctx<'_>, raw: &RawBody) -> Result<Response<Body>, Problem> {
    let batch: Batch = raw
        .json()?
        .ok_or_else(|| Problem::invalid(Some("ops"), "the body needs {\"ops\": [...]}"))?;
    let max = ctx.limits.max_batch_ops;
    if batch.ops.is_empty() || batch.ops.len() > max {
        return Err(Problem::invalid(
            Some("ops"),
            format!(
                "must hold 1 to {max} ops (limits.max_batch_ops), got {}",
                batch.ops.len()
            ),
        ));
    }
    // Each op answers without waiting; the batch waits once at the end,
    // for everything its ops deferred.
    let pending = Pending::new();
    let deferred = Ctx {
        in_batch: true,
        create: None,
        ..ctx.deferring(&pending)
    };
    // Each answer is already JSON: it is spliced in, not parsed again.
    let mut out = String::with_capacity(batch.ops.len() * 256);
    out.push_str("{\"results\":[");
    for (i, op) in batch.ops.into_iter().enumerate() {
        let resp = match one(&deferred, op).await {
            Ok(resp) => resp,
            Err(problem) => problem.response(),
        };
        if i > 0 {
            out.push(',');
        }
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
    out.push_str("]}");
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
                "each op needs \"op\": reserve, confirm, release or extend",
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
        ("confirm" | "release" | "extend", Some(id)) => format!("/v1/reservations/{id}/{kind}"),
        ("reserve", Some(_)) => return Err(Problem::invalid(Some("id"), "reserve takes no id")),
        ("confirm" | "release" | "extend", None) => {
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
