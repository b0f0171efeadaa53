//! The HTTP side: a hyper 1 server (HTTP/1.1 keep-alive and h2c) on tokio.
//!
//! Today it serves the health endpoints of the contract (`/healthz`,
//! `/readyz`) and answers every other path with the contract's problem
//! documents (404 `not_found`, 405 `method_not_allowed` with `Allow`). The
//! reservation routes come with the API issue; they will sit in this
//! module, one file per resource, over the engine.
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

use crate::server::Core;

/// How long in-flight requests get to finish after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share. The core (engine and log) arrives once the log
/// has been replayed; until then the server answers health checks and
/// `/readyz` says 503.
#[derive(Default)]
pub struct AppState {
    core: std::sync::OnceLock<Arc<Core>>,
}

impl AppState {
    pub fn new() -> AppState {
        AppState::default()
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
                    async move { Ok::<_, Infallible>(route(&state, req)) }
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

type Body = Full<Bytes>;

fn route(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let allowed: &[Method] = match path {
        "/healthz" | "/readyz" => &[Method::GET],
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                &format!("no route for {path}"),
            )
        }
    };
    if !allowed.contains(req.method()) {
        let mut resp = problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            &format!("{} does not take {}", path, req.method()),
        );
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        resp.headers_mut().insert(
            ALLOW,
            HeaderValue::from_str(&allow).expect("method names are valid header text"),
        );
        return resp;
    }
    match path {
        "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.to_owned()),
        _ => match state.core() {
            None => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "Not ready",
                "recovering: replaying the log",
            ),
            Some(core) if core.wal.is_failed() => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "Not ready",
                "the log cannot be written; the server is read-only",
            ),
            Some(_) => json(StatusCode::OK, r#"{"status":"ready"}"#.to_owned()),
        },
    }
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An RFC 9457 problem document with the contract's `type` and `code`.
fn problem(status: StatusCode, code: &str, title: &str, detail: &str) -> Response<Body> {
    let body = serde_json::json!({
        "type": format!("urn:stampede:problem:{code}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    let mut resp = json(status, body.to_string());
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}
