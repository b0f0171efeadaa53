//! `/v1/drops`: create and read drops, join their lines, read an entry
//! (contract, "Drops: a fair opening"). The rules live in
//! [`crate::drops`] and each store's book ([`crate::store::Drops`]);
//! this file reads bodies and maps errors to problem documents. The
//! store answers once what it shows is durable.

use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{json_response, Ctx};
use crate::drops::line::EntryView;
use crate::drops::{self, Spec};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Put {
    skus: Vec<String>,
    #[serde(deserialize_with = "super::int::exact")]
    prequeue_opens_at_ms: u64,
    #[serde(deserialize_with = "super::int::exact")]
    opens_at_ms: u64,
    #[serde(default, deserialize_with = "super::int::option")]
    closes_at_ms: Option<u64>,
    #[serde(default, deserialize_with = "super::int::option")]
    admit_per_s: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Join {
    customer_id: String,
}

/// An entry as the contract shows it.
#[derive(Serialize)]
struct Entry<'a> {
    drop: &'a str,
    customer_id: &'a str,
    position: Option<u64>,
    admitted: bool,
    admitted_at_ms: Option<u64>,
    estimated_admit_at_ms: Option<u64>,
}

impl<'a> Entry<'a> {
    fn of(drop: &'a str, customer_id: &'a str, e: &EntryView) -> Entry<'a> {
        Entry {
            drop,
            customer_id,
            position: e.position,
            admitted: e.admitted,
            admitted_at_ms: e.admitted_at_ms,
            estimated_admit_at_ms: e.estimated_admit_at_ms,
        }
    }
}

/// Fuzzing: every body this file reads, parsed as its handler would.
pub(super) fn parse_only(raw: &RawBody) {
    let _ = raw.json::<Put>();
    let _ = raw.json::<Join>();
}

pub fn problem(e: drops::Error) -> Problem {
    use drops::Error as E;
    let detail = e.to_string();
    match e {
        E::Invalid { field, .. } => Problem::invalid(Some(field), detail),
        E::NotFound(_) | E::NoEntry { .. } => Problem::not_found(detail),
        E::Started { drop, .. } => Problem::drop_started(detail).with("drop", drop),
        E::NotOpen { drop, state } => Problem::drop_not_open(detail)
            .with("drop", drop)
            .with("state", state.as_str()),
        E::Full { drop, limit } => Problem::queue_full(detail)
            .with("drop", drop)
            .with("limit", limit)
            .retry_after(60),
        E::TooMany { limit } => Problem::queue_full(detail)
            .with("limit", limit)
            .retry_after(60),
        E::NotAdmitted {
            drop,
            position,
            retry_after_s,
            ..
        } => {
            let p = Problem::not_admitted(detail)
                .with("drop", drop)
                .with("position", position);
            match retry_after_s {
                Some(s) => p.retry_after(s),
                None => p,
            }
        }
        E::Seed(_) => Problem::not_ready(detail),
        E::Log(_) | E::Store(_) => Problem::storage(detail),
    }
}

fn from_store(e: crate::store::Error) -> Problem {
    Problem::from_store(e, hyper::StatusCode::NOT_FOUND)
}

/// `PUT /v1/drops/{drop}` (admin): 201 created, 200 changed.
pub async fn put(ctx: &Ctx<'_>, name: &str, raw: &RawBody) -> Result<Response<Body>, Problem> {
    let body: Put = raw.json()?.ok_or_else(|| {
        Problem::invalid(
            Some("skus"),
            "the body needs skus, prequeue_opens_at_ms and opens_at_ms",
        )
    })?;
    let spec = Spec {
        skus: body.skus,
        prequeue_opens_at_ms: body.prequeue_opens_at_ms,
        opens_at_ms: body.opens_at_ms,
        closes_at_ms: body.closes_at_ms,
        admit_per_s: body.admit_per_s,
    };
    let (created, view) = ctx
        .store
        .drop_put(ctx.scope, name, spec)
        .await
        .map_err(from_store)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &view))
}

/// `GET /v1/drops/{drop}`.
pub async fn get(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, Problem> {
    let view = ctx
        .store
        .drop_view(ctx.scope, name)
        .await
        .map_err(from_store)?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /v1/drops/{drop}/entries`: 201 joined, 200 already in.
pub async fn join(ctx: &Ctx<'_>, name: &str, raw: &RawBody) -> Result<Response<Body>, Problem> {
    let body: Join = raw
        .json()?
        .ok_or_else(|| Problem::invalid(Some("customer_id"), "the body needs customer_id"))?;
    if !crate::engine::is_valid_ident(&body.customer_id) {
        return Err(Problem::invalid(
            Some("customer_id"),
            "customer_id must be 1 to 128 bytes of [A-Za-z0-9._:-]",
        ));
    }
    let (new, entry) = ctx
        .store
        .drop_join(ctx.scope, name, &body.customer_id)
        .await
        .map_err(from_store)?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &Entry::of(name, &body.customer_id, &entry),
    ))
}

/// `GET /v1/drops/{drop}/entries/{customer_id}`.
pub async fn entry(ctx: &Ctx<'_>, name: &str, customer: &str) -> Result<Response<Body>, Problem> {
    let entry = ctx
        .store
        .drop_entry(ctx.scope, name, customer)
        .await
        .map_err(from_store)?;
    Ok(json_response(
        StatusCode::OK,
        &Entry::of(name, customer, &entry),
    ))
}
