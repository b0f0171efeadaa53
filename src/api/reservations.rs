//! `/v1/reservations`: place, read, confirm, release and extend holds.

use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{json_response, Ctx};
use std::time::Duration;

use crate::engine::{
    Error as EngineError, Fill, HoldId, ItemRequest, Logged, OnDone, Placed, Reservation,
    ReserveRequest, WaitTicket,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    sku: String,
    #[serde(deserialize_with = "super::int::exact")]
    qty: u32,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum FillArg {
    All,
    Partial,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Create {
    pub customer_id: String,
    items: Vec<Item>,
    #[serde(default, deserialize_with = "super::int::option")]
    ttl_ms: Option<u64>,
    fill: Option<FillArg>,
    /// Accepted and bounded by `admission.max_wait_ms`; the waitlist that
    /// honours it comes with the admission issue (today it acts as 0).
    #[serde(default, deserialize_with = "super::int::option")]
    wait_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Confirm {
    order_ref: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Extend {
    #[serde(deserialize_with = "super::int::exact")]
    ttl_ms: u64,
}

pub fn view_json(r: &Reservation) -> serde_json::Value {
    let items: Vec<_> = r
        .items
        .iter()
        .map(|i| json!({"sku": i.sku.as_str(), "qty": i.qty}))
        .collect();
    json!({
        "id": r.id.to_string(), "status": r.status.as_str(), "customer_id": r.customer_id.as_str(),
        "items": items, "created_at_ms": r.created_at_ms, "expires_at_ms": r.expires_at_ms,
        "order_ref": r.order_ref.as_deref(),
    })
}

/// Fuzzing: every body this file reads, parsed as its handler would.
pub(super) fn parse_only(raw: &RawBody) {
    let _ = raw.json::<Create>();
    let _ = raw.json::<Confirm>();
    let _ = raw.json::<Empty>();
    let _ = raw.json::<Extend>();
}

fn parse_id(id: &str) -> Result<HoldId, Problem> {
    id.parse()
        .map_err(|_| Problem::not_found(format!("no reservation {id}")))
}

/// The body of a `POST /v1/reservations` read ahead of admission (for the
/// sold-out fast path and the customer's rate limit); `None` if it does not
/// parse (the normal path then explains why).
pub fn peek(body: &RawBody) -> Option<Create> {
    body.json().ok().flatten()
}

/// The sold-out fast path: the 409 for a reservation whose every SKU is
/// sold out, read without shard locks; `None` to go the normal way (also
/// for a body that does not parse: the normal path explains it).
pub fn sold_out(core: &crate::server::Core, body: &Create) -> Option<Problem> {
    let first = body.items.first()?;
    let options = core.engine.options();
    // Only a request the normal path would take up to the stock check:
    // anything it would refuse for another reason goes that way.
    let well_formed = crate::engine::is_valid_ident(&body.customer_id)
        && body.items.len() <= options.max_items
        && body.items.iter().enumerate().all(|(n, i)| {
            (1..=options.max_qty_per_item).contains(&i.qty)
                && body.items[..n].iter().all(|j| j.sku != i.sku)
        })
        && body.ttl_ms != Some(0);
    if !well_formed || !body.items.iter().all(|i| core.engine.is_sold_out(&i.sku)) {
        return None;
    }
    Some(Problem::from_engine(
        crate::engine::Error::InsufficientStock {
            sku: first.sku.clone(),
            requested: u64::from(first.qty),
            available: 0,
        },
        StatusCode::UNPROCESSABLE_ENTITY,
    ))
}

/// `POST /v1/reservations`: 201 with `Location`.
pub async fn create(ctx: &Ctx<'_>, body: &RawBody) -> Result<Response<Body>, Problem> {
    let body: Create = body.json()?.ok_or_else(|| {
        Problem::invalid(Some("customer_id"), "the body needs customer_id and items")
    })?;
    // Capped at admission.max_wait_ms, as ttl_ms is at holds.max_ttl_ms.
    // Ops of a batch never wait: the batch answers once, for all of them.
    let wait_ms = match ctx.in_batch {
        true => 0,
        false => body.wait_ms.unwrap_or(0).min(ctx.max_wait_ms),
    };
    let items: Vec<ItemRequest> = body
        .items
        .iter()
        .map(|i| ItemRequest {
            sku: &i.sku,
            qty: i.qty,
        })
        .collect();
    let req = ReserveRequest {
        customer_id: &body.customer_id,
        items: &items,
        ttl_ms: body.ttl_ms,
        fill: match body.fill {
            None | Some(FillArg::All) => Fill::All,
            Some(FillArg::Partial) => Fill::Partial,
        },
    };
    let Logged { value: r, lsn } = match wait_ms {
        0 => ctx.core.engine.reserve_logged(&req),
        _ => match wait_in_line(ctx, &req, wait_ms).await {
            Some(result) => result,
            None => return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "waitlist_ended",
                "the waitlist ended without an answer (the server is stopping); nothing was held",
            )
            .retry_after(1)),
        },
    }
    .map_err(|e| Problem::from_engine(e, StatusCode::UNPROCESSABLE_ENTITY))?;
    ctx.durable(lsn).await?;
    let mut resp = json_response(StatusCode::CREATED, &view_json(&r));
    let location = format!("/v1/reservations/{}", r.id);
    resp.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&location).expect("ids are header-safe"),
    );
    Ok(resp)
}

/// A reservation that may wait up to `wait_ms` in its SKU's waitlist for
/// stock other holds give back. While it waits it gives its admission place
/// back. A wait that runs out is `insufficient_stock` (409); a client that
/// goes away leaves the line (its future is dropped). `None`: the line
/// was dropped without an answer (the engine is going away).
async fn wait_in_line(
    ctx: &Ctx<'_>,
    req: &ReserveRequest<'_>,
    wait_ms: u64,
) -> Option<Result<Logged<Reservation>, EngineError>> {
    let engine = &ctx.core.engine;
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let on_done: OnDone = Box::new(move |result| {
        let _ = tx.send(result);
    });
    let placed = match engine.reserve_or_wait_logged(req, on_done) {
        Ok(placed) => placed,
        Err(e) => return Some(Err(e)),
    };
    let ticket = match placed.value {
        Placed::Held(r) => {
            return Some(Ok(Logged {
                value: r,
                lsn: placed.lsn,
            }))
        }
        Placed::Waiting(ticket) => ticket,
    };
    if let Some(place) = ctx.admission_ticket {
        place.lock().take();
    }
    let mut line = InLine {
        engine,
        ticket: Some(ticket),
    };
    match tokio::time::timeout(Duration::from_millis(wait_ms), &mut rx).await {
        Ok(answer) => {
            line.ticket = None;
            answer.ok()
        }
        Err(_elapsed) => {
            let ticket = line.ticket.take().expect("still in line");
            if engine.leave_waitlist(&ticket) {
                let available = engine.sku(&ticket.sku).map_or(0, |v| v.available);
                Some(Err(EngineError::InsufficientStock {
                    sku: ticket.sku.to_string(),
                    requested: u64::from(req.items[0].qty),
                    available,
                }))
            } else {
                // Served (or refused) just as the wait ran out: that stands.
                rx.await.ok()
            }
        }
    }
}

/// Leaves the waitlist if the request is dropped while waiting.
struct InLine<'a> {
    engine: &'a crate::engine::Engine,
    ticket: Option<WaitTicket>,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.engine.leave_waitlist(&ticket);
        }
    }
}

/// `GET /v1/reservations/{id}`.
pub fn get(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, Problem> {
    let r = ctx
        .core
        .engine
        .get(parse_id(id)?)
        .map_err(|e| Problem::from_engine(e, StatusCode::UNPROCESSABLE_ENTITY))?;
    Ok(json_response(StatusCode::OK, &view_json(&r)))
}

/// `POST /v1/reservations/{id}/{confirm|release|extend}`.
pub async fn act(
    ctx: &Ctx<'_>,
    id: &str,
    action: &str,
    body: &RawBody,
) -> Result<Response<Body>, Problem> {
    let id = parse_id(id)?;
    let engine = &ctx.core.engine;
    let result = match action {
        "confirm" => {
            let body: Confirm = body.json()?.unwrap_or_default();
            engine.confirm_logged(id, body.order_ref.as_deref())
        }
        "release" => {
            let _: Option<Empty> = body.json()?;
            engine.release_logged(id)
        }
        _ => {
            let body: Extend = body.json()?.ok_or_else(|| {
                Problem::invalid(Some("ttl_ms"), "the body needs {\"ttl_ms\": n}")
            })?;
            engine.extend_logged(id, body.ttl_ms)
        }
    };
    let Logged { value: r, lsn } =
        result.map_err(|e| Problem::from_engine(e, StatusCode::UNPROCESSABLE_ENTITY))?;
    // Also for an idempotent repeat: the first answer may not be durable
    // yet (its LSN is the one read under the hold's locks).
    ctx.durable(lsn).await?;
    Ok(json_response(StatusCode::OK, &view_json(&r)))
}
