//! Writes with an `Idempotency-Key`: run once, kept with the change,
//! answered the same again; and the bound on an answer's size that
//! decides, before a keyed request runs, whether its answer could be kept.

use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Response, StatusCode};

use super::problem::{Body, Problem};
use super::request::RawBody;
use super::{batch, dispatch, reservations, Ctx, Route};
use crate::idempotency::{self, Begin, Stored};
use crate::store::{Pending, Store};

/// A write with an `Idempotency-Key`: run once, answer the same again.
pub(super) async fn idempotent(
    ctx: &Ctx<'_>,
    key: &str,
    route: &Route<'_>,
    method: &Method,
    path: &str,
    raw: &RawBody,
) -> Result<Response<Body>, Problem> {
    let store = ctx.store;
    let fingerprint = idempotency::fingerprint(method.as_str(), path, &raw.bytes);
    let now_ms = store.now_ms();
    let begin = store
        .key_begin(key, fingerprint, now_ms)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND))?;
    let seed = match begin {
        Begin::Replay(stored, _) => {
            let mut resp = stored_response(&stored);
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(resp);
        }
        Begin::InUse => {
            return Err(Problem::key_in_use(format!("the first request with key {key} is still running"),
            ))
        }
        Begin::Lost => {
            return Err(Problem::key_in_use(format!(
                    "the first request with key {key} was cut off by a restart after it may have made its change, \
                     and its answer was lost: this key is not run again (409) until idempotency.ttl_ms after its \
                     first use; read the outcome (GET) and send any new request under a new key"
                ),
            ))
        }
        Begin::Reused => {
            return Err(Problem::key_reused(format!("key {key} was used for another request (method, path or body)"),
            ))
        }
        Begin::Full => {
            return Err(Problem::key_store_full("idempotency.keys_max keys are live; retry later or without a key",
            ))
        }
        Begin::Fresh => None,
        Begin::Seeded(seed) => Some((seed, false)),
        Begin::Resumed(seed) => Some((seed, true)),
    };
    // Frees the key if this future is dropped (the client went away) or
    // ends without an answer worth keeping.
    let mut guard = KeyGuard {
        store,
        key,
        done: false,
    };
    // Refused before it runs if its answer could not be stored: it could
    // never be replayed, and a refusal must change nothing.
    let bound = answer_bound(ctx, route, raw).await;
    let limit = store.answer_bytes_max();
    if bound > limit {
        return Err(Problem::answer_too_large(StatusCode::PAYLOAD_TOO_LARGE, format!(
                "the answer to this request could be {bound} bytes, over the {limit} bytes a key's answer may keep \
                 (idempotency.answer_bytes_max); nothing was changed: send fewer ops per keyed batch, or key each op"
            ),
        )
        .with("limit", limit));
    }
    // The change and its stored answer are made durable in one wait: the
    // answer is kept after the change, so waiting for it covers both.
    // Every id the request draws comes from the key's seed (redis store):
    // run again under the key, it makes the same change, found made.
    let pending = match seed {
        Some((seed, false)) => Pending::seeded(seed),
        Some((seed, true)) => Pending::resumed(seed),
        None => Pending::new(),
    };
    let deferred = ctx.deferring(&pending);
    let resp = dispatch(&deferred, route, method, raw)
        .await
        .unwrap_or_else(Problem::response);
    if resp.status().is_server_error() {
        return Ok(resp);
    }
    let (head, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let stored = Stored {
        status: head.status.as_u16(),
        location: head
            .headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: bytes.clone(),
        stored_at_ms: now_ms,
    };
    store
        .key_complete(deferred.scope, key, fingerprint, stored)
        .await
        .map_err(|e| Problem::from_store(e, StatusCode::NOT_FOUND))?;
    guard.done = true;
    ctx.flush(&pending).await?;
    Ok(Response::from_parts(head, Full::new(bytes)))
}

/// The most bytes the answer to `raw` on `route` can take, found before it
/// runs. An answer echoes at most its request's text (identifiers, error
/// messages naming a field) plus fixed text; one about a hold shows that
/// hold, whose items never change after it is made.
async fn answer_bound(ctx: &Ctx<'_>, route: &Route<'_>, raw: &RawBody) -> usize {
    /// Fixed text of an answer (a problem document's title, type and
    /// detail, a reservation's field names, timestamps; a batch's wrapper).
    const FIXED: usize = 512;
    let whole = || vec![(raw.bytes.len(), None)];
    let (parts, wrapper) = match route {
        Route::Batch => batch::answer_parts(raw).map_or_else(|| (whole(), 0), |ops| (ops, FIXED)),
        Route::Reservation(id) | Route::ReservationAction(id, _) => {
            (vec![(raw.bytes.len(), Some(id.to_string()))], 0)
        }
        _ => (whole(), 0),
    };
    let mut shown: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut bound = wrapper;
    for (text, id) in parts {
        bound += FIXED + 2 * text;
        let Some(id) = id else { continue };
        if !shown.contains_key(&id) {
            let mut len = 0;
            if let Ok(parsed) = id.parse() {
                if let Ok(r) = ctx.store.get(parsed).await {
                    // Its answer may later show an order_ref and a longer status.
                    len = serde_json::to_vec(&reservations::View::of(&r)).map_or(0, |b| b.len())
                        + 160;
                }
            }
            shown.insert(id.clone(), len);
        }
        bound += shown[&id];
    }
    bound
}

struct KeyGuard<'a> {
    store: &'a dyn Store,
    key: &'a str,
    done: bool,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.store.key_abandon(self.key);
        }
    }
}

fn stored_response(stored: &Stored) -> Response<Body> {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut resp = Response::new(Full::new(stored.body.clone()));
    *resp.status_mut() = status;
    let content_type = if status.is_client_error() {
        "application/problem+json"
    } else {
        "application/json"
    };
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(location) = stored
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        resp.headers_mut().insert(LOCATION, location);
    }
    resp
}
