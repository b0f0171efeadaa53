//! `/v1/skus/{sku}`: set, adjust and read stock.

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{json_response, Ctx};
use crate::engine::SkuView;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStock {
    #[serde(deserialize_with = "super::int::exact")]
    stock: u64,
    #[serde(default, deserialize_with = "super::int::option")]
    customer_limit: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Adjust {
    #[serde(deserialize_with = "super::int::exact")]
    delta: i64,
}

pub fn view_json(v: &SkuView) -> serde_json::Value {
    json!({
        "sku": v.sku.as_str(), "stock": v.stock, "available": v.available,
        "held": v.held, "sold": v.sold, "customer_limit": v.customer_limit,
    })
}

/// Fuzzing: every body this file reads, parsed as its handler would.
pub(super) fn parse_only(raw: &RawBody) {
    let _ = raw.json::<SetStock>();
    let _ = raw.json::<Adjust>();
}

/// `PUT /v1/skus/{sku}`: 201 created, 200 updated.
pub async fn put(ctx: &Ctx<'_>, sku: &str, body: &RawBody) -> Result<Response<Body>, Problem> {
    let body: SetStock = body
        .json()?
        .ok_or_else(|| Problem::invalid(Some("stock"), "the body needs {\"stock\": n}"))?;
    let (created, view) = ctx
        .store
        .set_stock(ctx.scope, sku, body.stock, body.customer_limit)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &view_json(&view)))
}

/// `POST /v1/skus/{sku}/adjust`.
pub async fn adjust(ctx: &Ctx<'_>, sku: &str, body: &RawBody) -> Result<Response<Body>, Problem> {
    let body: Adjust = body
        .json()?
        .ok_or_else(|| Problem::invalid(Some("delta"), "the body needs {\"delta\": n}"))?;
    let view = ctx
        .store
        .adjust_stock(ctx.scope, sku, body.delta)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND))?;
    Ok(json_response(StatusCode::OK, &view_json(&view)))
}

/// `GET /v1/skus/{sku}`.
pub async fn get(ctx: &Ctx<'_>, sku: &str) -> Result<Response<Body>, Problem> {
    let view = ctx
        .store
        .sku(sku)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND))?;
    Ok(json_response(StatusCode::OK, &view_json(&view)))
}
