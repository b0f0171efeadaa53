//! `/v1/drops`: create and read drops, join their lines, read an entry
//! (contract, "Drops: a fair opening"). The rules live in
//! [`crate::drops`]; this file reads bodies, maps errors to problem
//! documents, and answers once what it shows is durable.

use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{json_response, Ctx};
use crate::drops::line::EntryView;
use crate::drops::{self, DropBook, Spec};
use crate::store::redis::RedisStore;
use crate::store::{Pending, Scope};

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

/// Where the drops are: the embedded store's book (changes in the local
/// log), or the redis store's (changes in the drops' log in Redis, see
/// `store::redis::drops`).
#[derive(Clone, Copy)]
pub enum Drops<'a> {
    Local(&'a DropBook),
    Redis(&'a RedisStore),
}

fn book<'a>(ctx: &Ctx<'a>) -> Result<Drops<'a>, Problem> {
    ctx.drops
        .ok_or_else(|| Problem::not_ready("the store is not ready yet"))
}

/// Waits until what an answer shows (up to `lsn`) is durable, or defers
/// it into the request's scope (a keyed request: with its stored answer).
async fn durable(ctx: &Ctx<'_>, lsn: u64) -> Result<(), Problem> {
    match (lsn, ctx.scope) {
        (0, _) => Ok(()),
        (lsn, Scope::Deferred(pending)) => {
            pending.note_lsn(lsn);
            Ok(())
        }
        (lsn, Scope::Now) => {
            let pending = Pending::new();
            pending.note_lsn(lsn);
            ctx.flush(&pending).await
        }
    }
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

/// `PUT /v1/drops/{drop}` (admin): 201 created, 200 changed.
pub async fn put(ctx: &Ctx<'_>, name: &str, raw: &RawBody) -> Result<Response<Body>, Problem> {
    let book = book(ctx)?;
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
    let (created, view) = match book {
        Drops::Local(book) => {
            let put = book.put(name, spec).map_err(problem)?;
            durable(ctx, put.lsn).await?;
            put.value
        }
        Drops::Redis(store) => store.drop_put(name, spec).await.map_err(problem)?,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(status, &view))
}

/// `GET /v1/drops/{drop}`.
pub async fn get(ctx: &Ctx<'_>, name: &str) -> Result<Response<Body>, Problem> {
    let view = match book(ctx)? {
        Drops::Local(book) => {
            let view = book.view(name).map_err(problem)?;
            durable(ctx, view.lsn).await?;
            view.value
        }
        Drops::Redis(store) => store.drop_view(name).await.map_err(problem)?,
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// `POST /v1/drops/{drop}/entries`: 201 joined, 200 already in.
pub async fn join(ctx: &Ctx<'_>, name: &str, raw: &RawBody) -> Result<Response<Body>, Problem> {
    let book = book(ctx)?;
    let body: Join = raw
        .json()?
        .ok_or_else(|| Problem::invalid(Some("customer_id"), "the body needs customer_id"))?;
    if !crate::engine::is_valid_ident(&body.customer_id) {
        return Err(Problem::invalid(
            Some("customer_id"),
            "customer_id must be 1 to 128 bytes of [A-Za-z0-9._:-]",
        ));
    }
    let (new, entry) = match book {
        Drops::Local(book) => {
            let joined = book.join(name, &body.customer_id).map_err(problem)?;
            durable(ctx, joined.lsn).await?;
            joined.value
        }
        Drops::Redis(store) => store
            .drop_join(name, &body.customer_id)
            .await
            .map_err(problem)?,
    };
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
    let entry = match book(ctx)? {
        Drops::Local(book) => {
            let entry = book.entry(name, customer).map_err(problem)?;
            durable(ctx, entry.lsn).await?;
            entry.value
        }
        Drops::Redis(store) => store.drop_entry(name, customer).await.map_err(problem)?,
    };
    Ok(json_response(
        StatusCode::OK,
        &Entry::of(name, customer, &entry),
    ))
}
