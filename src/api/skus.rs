//! `/v1/skus/{sku}`: set, adjust and read stock.

use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

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

/// A SKU as the contract shows it, encoded straight from the engine's
/// view. Fields in alphabetical order, as the `json!` trees gave them.
#[derive(Serialize)]
struct View<'a> {
    available: u64,
    customer_limit: u64,
    held: u64,
    sku: &'a str,
    sold: u64,
    stock: u64,
}

fn shown(v: &SkuView) -> View<'_> {
    View {
        available: v.available,
        customer_limit: v.customer_limit,
        held: v.held,
        sku: &v.sku,
        sold: v.sold,
        stock: v.stock,
    }
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
    Ok(json_response(status, &shown(&view)))
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
    Ok(json_response(StatusCode::OK, &shown(&view)))
}

/// `GET /v1/skus/{sku}`.
pub async fn get(ctx: &Ctx<'_>, sku: &str) -> Result<Response<Body>, Problem> {
    let view = ctx
        .store
        .sku(sku)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND))?;
    Ok(json_response(StatusCode::OK, &shown(&view)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed encoding gives the bytes the `json!` tree it replaced did.
    #[test]
    fn a_sku_is_encoded_as_the_value_tree_was() {
        let v = SkuView {
            sku: "hot-1".into(),
            stock: 100,
            available: 37,
            held: 3,
            sold: 60,
            customer_limit: 2,
        };
        let tree = serde_json::json!({
            "sku": "hot-1", "stock": 100, "available": 37, "held": 3, "sold": 60,
            "customer_limit": 2,
        });
        assert_eq!(serde_json::to_string(&shown(&v)).unwrap(), tree.to_string());
    }
}
