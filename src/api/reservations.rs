//! `/v1/reservations`: place, read, confirm, release and extend holds.

use hyper::header::{HeaderValue, LOCATION};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{json_response, Ctx};
use crate::config::Limits;
use crate::engine::{Fill, HoldId, ItemRequest, ItemView, Reservation, ReserveRequest};
use crate::store::Store;
use smallvec::SmallVec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    sku: String,
    #[serde(deserialize_with = "super::int::exact")]
    qty: u32,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum FillArg {
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
    /// How long to wait in the SKU's waitlist for stock other holds give
    /// back (one-SKU requests; capped at `admission.max_wait_ms`; 0 inside
    /// a batch).
    #[serde(default, deserialize_with = "super::int::option")]
    wait_ms: Option<u64>,
}

impl Create {
    /// The SKUs named.
    pub fn skus(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|i| i.sku.as_str())
    }

    /// The items as the store takes them.
    fn item_requests(&self) -> SmallVec<[ItemRequest<'_>; 4]> {
        self.items
            .iter()
            .map(|i| ItemRequest {
                sku: &i.sku,
                qty: i.qty,
            })
            .collect()
    }
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
struct Payment {
    gateway: String,
    payment_ref: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Extend {
    #[serde(deserialize_with = "super::int::exact")]
    ttl_ms: u64,
}

/// A reservation as the contract shows it, encoded straight from the
/// engine's view (no `serde_json::Value` tree). Fields in alphabetical
/// order: the bytes are what the `json!` trees used to give.
#[derive(Serialize)]
pub struct View<'a> {
    created_at_ms: u64,
    customer_id: &'a str,
    expires_at_ms: u64,
    #[serde(serialize_with = "as_text")]
    id: HoldId,
    #[serde(serialize_with = "items")]
    items: &'a [ItemView],
    order_ref: Option<&'a str>,
    payment: Option<PaymentView<'a>>,
    status: &'static str,
}

/// A reservation's `payment` member (contract v1.2).
#[derive(Serialize)]
struct PaymentView<'a> {
    gateway: &'a str,
    payment_ref: &'a str,
    since_ms: u64,
}

impl<'a> View<'a> {
    pub fn of(r: &'a Reservation) -> View<'a> {
        View {
            created_at_ms: r.created_at_ms,
            customer_id: &r.customer_id,
            expires_at_ms: r.expires_at_ms,
            id: r.id,
            items: &r.items,
            order_ref: r.order_ref.as_deref(),
            payment: r.payment.as_deref().map(|p| PaymentView {
                gateway: &p.gateway,
                payment_ref: &p.payment_ref,
                since_ms: p.since_ms,
            }),
            status: r.status.as_str(),
        }
    }
}

fn as_text<S: serde::Serializer>(id: &HoldId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(id.text().as_str())
}

fn items<S: serde::Serializer>(items: &&[ItemView], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Item<'a> {
        qty: u32,
        sku: &'a str,
    }
    s.collect_seq(items.iter().map(|i| Item {
        qty: i.qty,
        sku: &i.sku,
    }))
}

/// Fuzzing: every body this file reads, parsed as its handler would.
pub(super) fn parse_only(raw: &RawBody) {
    let _ = raw.json::<Create>();
    let _ = raw.json::<Confirm>();
    let _ = raw.json::<Empty>();
    let _ = raw.json::<Extend>();
    let _ = raw.json::<Payment>();
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
pub fn sold_out(store: &dyn Store, limits: &Limits, body: &Create) -> Option<Problem> {
    let first = body.items.first()?;
    // Only a request the normal path would take up to the stock check:
    // anything it would refuse for another reason goes that way.
    let items = body.item_requests();
    let well_formed = plausible(limits, &body.customer_id, &items, body.ttl_ms);
    if !well_formed || !body.items.iter().all(|i| store.is_sold_out(&i.sku)) {
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

/// Whether a reservation passes the checks that come before any stock is
/// looked at (customer, item count, quantities, distinct SKUs, a TTL);
/// the store makes them again and explains a failure.
fn plausible(
    limits: &Limits,
    customer_id: &str,
    items: &[ItemRequest<'_>],
    ttl_ms: Option<u64>,
) -> bool {
    crate::engine::is_valid_ident(customer_id)
        && !items.is_empty()
        && items.len() <= limits.max_items
        && items.iter().enumerate().all(|(n, i)| {
            (1..=limits.max_qty_per_item).contains(&i.qty)
                && crate::engine::is_valid_ident(i.sku)
                && items[..n].iter().all(|j| j.sku != i.sku)
        })
        && ttl_ms != Some(0)
}

/// `POST /v1/reservations`: 201 with `Location`.
pub async fn create(ctx: &Ctx<'_>, raw: &RawBody) -> Result<Response<Body>, Problem> {
    let parsed;
    let body: &Create = match ctx.create {
        Some(body) => body,
        None => {
            parsed = raw.json::<Create>()?.ok_or_else(|| {
                Problem::invalid(Some("customer_id"), "the body needs customer_id and items")
            })?;
            &parsed
        }
    };
    let items = body.item_requests();
    let r = reserve(
        ctx,
        &body.customer_id,
        &items,
        body.ttl_ms,
        body.fill,
        body.wait_ms,
    )
    .await?;
    let mut resp = json_response(StatusCode::CREATED, &View::of(&r));
    let location = format!("/v1/reservations/{}", r.id.text().as_str());
    resp.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(&location).expect("ids are header-safe"),
    );
    Ok(resp)
}

/// A reservation's typed body, wherever it came from (a request of its
/// own, or an op of a batch): the store's answer.
pub(super) async fn reserve(
    ctx: &Ctx<'_>,
    customer_id: &str,
    items: &[ItemRequest<'_>],
    ttl_ms: Option<u64>,
    fill: Option<FillArg>,
    wait_ms: Option<u64>,
) -> Result<Reservation, Problem> {
    // Capped at admission.max_wait_ms, as ttl_ms is at holds.max_ttl_ms.
    // Ops of a batch never wait: the batch answers once, for all of them.
    let wait_ms = match ctx.in_batch {
        true => 0,
        false => wait_ms.unwrap_or(0).min(ctx.max_wait_ms),
    };
    let req = ReserveRequest {
        customer_id,
        items,
        ttl_ms,
        fill: match fill {
            None | Some(FillArg::All) => Fill::All,
            Some(FillArg::Partial) => Fill::Partial,
        },
    };
    // While it waits in a SKU's line it gives its admission place back.
    let give_back_place = || {
        if let Some(place) = ctx.admission_ticket {
            place.lock().take();
        }
    };
    ctx.store
        .reserve(ctx.scope, &req, wait_ms, &give_back_place)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::UNPROCESSABLE_ENTITY))
}

/// `GET /v1/reservations/{id}`.
pub async fn get(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, Problem> {
    let r = ctx
        .store
        .get(parse_id(id)?)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::UNPROCESSABLE_ENTITY))?;
    Ok(json_response(StatusCode::OK, &View::of(&r)))
}

/// `POST /v1/reservations/{id}/{confirm|release|extend|payment}`.
pub async fn act(
    ctx: &Ctx<'_>,
    id: &str,
    action: &str,
    body: &RawBody,
) -> Result<Response<Body>, Problem> {
    let action = match action {
        "confirm" => {
            let body: Confirm = body.json()?.unwrap_or_default();
            Action::Confirm(body.order_ref)
        }
        "release" => {
            let _: Option<Empty> = body.json()?;
            Action::Release
        }
        "payment" => {
            let body: Payment = body.json()?.ok_or_else(|| {
                Problem::invalid(
                    Some("gateway"),
                    "the body needs {\"gateway\": name, \"payment_ref\": id}",
                )
            })?;
            Action::Payment {
                gateway: body.gateway,
                payment_ref: body.payment_ref,
            }
        }
        _ => {
            let body: Extend = body.json()?.ok_or_else(|| {
                Problem::invalid(Some("ttl_ms"), "the body needs {\"ttl_ms\": n}")
            })?;
            Action::Extend(body.ttl_ms)
        }
    };
    let r = act_on(ctx, id, action).await?;
    Ok(json_response(StatusCode::OK, &View::of(&r)))
}

/// What is done to a hold, its body parsed.
pub(super) enum Action<S> {
    Confirm(Option<S>),
    Release,
    Extend(u64),
    Payment { gateway: S, payment_ref: S },
}

/// A hold action's typed form, wherever it came from: the store's answer.
pub(super) async fn act_on<S: AsRef<str>>(
    ctx: &Ctx<'_>,
    id: &str,
    action: Action<S>,
) -> Result<Reservation, Problem> {
    let id = parse_id(id)?;
    let store = ctx.store;
    let result = match &action {
        Action::Confirm(order_ref) => {
            store
                .confirm(ctx.scope, id, order_ref.as_ref().map(AsRef::as_ref))
                .await
        }
        Action::Release => store.release(ctx.scope, id).await,
        Action::Extend(ttl_ms) => store.extend(ctx.scope, id, *ttl_ms).await,
        Action::Payment {
            gateway,
            payment_ref,
        } => {
            let gateway = gateway.as_ref();
            if !ctx.payments.gateways.iter().any(|g| g.name == gateway) {
                return Err(Problem::invalid(
                    Some("gateway"),
                    format!("no gateway {gateway:?} is configured ([[payments.gateways]])"),
                ));
            }
            let req = crate::store::PaymentRequest {
                gateway,
                payment_ref: payment_ref.as_ref(),
                pending_ttl_ms: ctx.payments.pending_ttl_ms,
                pending_max_ms: ctx.payments.pending_max_ms,
            };
            store.payment(ctx.scope, id, req).await
        }
    };
    result.map_err(|e| Problem::from_store(e, StatusCode::UNPROCESSABLE_ENTITY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Status;

    /// The typed encoding gives the bytes the `json!` tree it replaced did.
    #[test]
    fn a_reservation_is_encoded_as_the_value_tree_was() {
        let r = Reservation {
            id: "r_0000000000020000000000000000".parse().unwrap(),
            status: Status::Confirmed,
            customer_id: "c-1".into(),
            items: smallvec::smallvec![
                ItemView {
                    sku: "hot-1".into(),
                    qty: 2
                },
                ItemView {
                    sku: "b".into(),
                    qty: 1
                },
            ],
            created_at_ms: 1,
            expires_at_ms: 600_001,
            order_ref: Some("o-9".into()),
            payment: None,
        };
        let tree = serde_json::json!({
            "id": r.id.to_string(), "status": r.status.as_str(), "customer_id": "c-1",
            "items": [{"sku": "hot-1", "qty": 2}, {"sku": "b", "qty": 1}],
            "created_at_ms": 1, "expires_at_ms": 600_001, "order_ref": "o-9", "payment": null,
        });
        assert_eq!(
            serde_json::to_string(&View::of(&r)).unwrap(),
            tree.to_string()
        );
        let open = Reservation {
            order_ref: None,
            ..r
        };
        let text = serde_json::to_string(&View::of(&open)).unwrap();
        assert!(text.contains(r#""order_ref":null"#), "{text}");
    }
}
