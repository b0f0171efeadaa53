//! The HTTP side: a hyper 1 server (HTTP/1.1 keep-alive and h2c) on tokio.
//!
//! Routes (this file), one file per resource (`skus.rs`,
//! `reservations.rs`), request reading and auth (`request.rs`), and the one
//! mapping from typed errors to problem documents (`problem.rs`). Every
//! mutating answer waits until the log is durable up to the change.
//! Not yet: `/v1/batch`, `/metrics`, `/v1/stats`, `Idempotency-Key`.
//!
//! Shutdown: on the signal the listener is dropped (no new connections),
//! in-flight requests finish, then [`serve`] returns.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Limits;
use crate::server::Core;

mod problem;
mod request;
mod reservations;
mod skus;

use problem::{Body, Problem};
pub use request::Keys;

/// How long in-flight requests get to finish after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share. The core (engine and log) arrives once the log
/// has been replayed; until then the server answers health checks and
/// `/readyz` says 503.
pub struct AppState {
    core: std::sync::OnceLock<Arc<Core>>,
    keys: Keys,
    limits: Limits,
    max_wait_ms: u64,
}

impl AppState {
    pub fn new(keys: Keys, limits: Limits, max_wait_ms: u64) -> AppState {
        AppState {
            core: std::sync::OnceLock::new(),
            keys,
            limits,
            max_wait_ms,
        }
    }

    /// Hands over the recovered core; the server is ready from now on.
    pub fn set_core(&self, core: Arc<Core>) {
        if self.core.set(core).is_err() {
            panic!("bug: the core is set once");
        }
    }

    pub fn core(&self) -> Option<&Arc<Core>> {
        self.core.get()
    }
}

/// Serves `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning on the error.
                        eprintln!("stampede: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    // A client that goes away mid-request is not our error.
                    let _ = conn.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("stampede: connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// What one request's handler needs: the recovered core and the limits.
pub struct Ctx<'a> {
    pub core: &'a Core,
    pub limits: &'a Limits,
    pub max_wait_ms: u64,
}

impl Ctx<'_> {
    /// Waits until everything the log holds so far (this request's change,
    /// and anything it read) is durable: only then may a 2xx go out.
    pub async fn durable(&self) -> Result<(), Problem> {
        let lsn = self.core.wal.appended_lsn();
        self.core
            .wal
            .wait_durable_async(lsn)
            .await
            .map_err(|e| Problem::storage(format!("the change may not be durable: {e}")))
    }
}

/// A JSON answer.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json(status, value.to_string())
}

/// What a path is, and the methods it takes.
enum Route<'p> {
    Healthz,
    Readyz,
    Sku(&'p str),
    SkuAdjust(&'p str),
    Reservations,
    Reservation(&'p str),
    ReservationAction(&'p str, &'p str),
}

impl<'p> Route<'p> {
    fn parse(path: &'p str) -> Option<Route<'p>> {
        match path {
            "/healthz" => return Some(Route::Healthz),
            "/readyz" => return Some(Route::Readyz),
            "/v1/reservations" => return Some(Route::Reservations),
            _ => {}
        }
        let rest = path.strip_prefix("/v1/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["skus", sku] if !sku.is_empty() => Some(Route::Sku(sku)),
            ["skus", sku, "adjust"] if !sku.is_empty() => Some(Route::SkuAdjust(sku)),
            ["reservations", id] if !id.is_empty() => Some(Route::Reservation(id)),
            ["reservations", id, action @ ("confirm" | "release" | "extend")] => {
                Some(Route::ReservationAction(id, action))
            }
            _ => None,
        }
    }

    fn methods(&self) -> &'static [Method] {
        match self {
            Route::Healthz | Route::Readyz | Route::Reservation(_) => &[Method::GET],
            Route::Sku(_) => &[Method::GET, Method::PUT],
            Route::SkuAdjust(_) | Route::Reservations | Route::ReservationAction(..) => {
                &[Method::POST]
            }
        }
    }

    /// Routes only an admin key may call.
    fn admin_only(&self, method: &Method) -> bool {
        matches!(self, Route::SkuAdjust(_))
            || (matches!(self, Route::Sku(_)) && method == Method::PUT)
    }
}

async fn route(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    match handle(state, req).await {
        Ok(resp) => resp,
        Err(problem) => problem.response(),
    }
}

async fn handle(state: &AppState, req: Request<Incoming>) -> Result<Response<Body>, Problem> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let route =
        Route::parse(&path).ok_or_else(|| Problem::not_found(format!("no route for {path}")))?;
    let allowed = route.methods();
    if !allowed.contains(&method) {
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        let mut resp = Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} does not take {method}"),
        )
        .response();
        resp.headers_mut().insert(
            ALLOW,
            HeaderValue::from_str(&allow).expect("method names are valid header text"),
        );
        return Ok(resp);
    }
    match route {
        Route::Healthz => return Ok(json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())),
        Route::Readyz => {
            return match state.core() {
                None => Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "recovering: replaying the log",
                )),
                Some(core) if core.wal.is_failed() => Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    "the log cannot be written; the server is read-only",
                )),
                Some(_) => Ok(json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned())),
            }
        }
        _ => {}
    }
    state
        .keys
        .authorize(req.headers(), route.admin_only(&method))?;
    let core = state.core().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "recovering: replaying the log",
        )
    })?;
    let ctx = Ctx {
        core,
        limits: &state.limits,
        max_wait_ms: state.max_wait_ms,
    };
    match route {
        Route::Sku(sku) if method == Method::GET => skus::get(&ctx, sku),
        Route::Sku(sku) => skus::put(&ctx, sku, req).await,
        Route::SkuAdjust(sku) => skus::adjust(&ctx, sku, req).await,
        Route::Reservations => reservations::create(&ctx, req).await,
        Route::Reservation(id) => reservations::get(&ctx, id),
        Route::ReservationAction(id, action) => reservations::act(&ctx, id, action, req).await,
        Route::Healthz | Route::Readyz => unreachable!("answered above"),
    }
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
