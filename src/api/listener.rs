//! The listener: accepting connections (at most `server.connections_max`
//! at once), serving each over HTTP/1.1 or h2c, closing idle ones, and
//! draining on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::{route, AppState};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The storefronts' API (the contract's routes).
    Api,
    /// The operators' listener: the status page, `/metrics`, `/v1/stats`;
    /// with `key_required` (any address but loopback) an admin key on
    /// every request.
    Admin { key_required: bool },
}

/// How long in-flight requests get to finish after the shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Serves the API on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    serve_as(Role::Api, listener, state, shutdown).await
}

/// Serves the operators' listener (`admin.listen`) until `shutdown`
/// resolves. `key_required`: every request needs an admin key (the
/// address is not loopback).
pub async fn serve_admin(
    listener: TcpListener,
    state: Arc<AppState>,
    key_required: bool,
    shutdown: impl Future<Output = ()>,
) {
    serve_as(Role::Admin { key_required }, listener, state, shutdown).await
}

async fn serve_as(
    role: Role,
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(state.server.header_read_timeout_ms));
    let builder = Arc::new(builder);
    let mut shutdown = std::pin::pin!(shutdown);
    // Tells every connection to finish its in-flight requests and close.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    // Each connection task holds a sender; all of them gone = drained.
    let (alive_tx, mut alive_rx) = tokio::sync::mpsc::channel::<()>(1);
    // At most connections_max open at once: a permit is taken before
    // accepting, and given back when the connection ends.
    let permits = Arc::new(tokio::sync::Semaphore::new(state.server.connections_max));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning on the error.
                        crate::log_line!("stampede: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = connection(
                    role,
                    state.clone(),
                    builder.clone(),
                    stream,
                    closing_rx.clone(),
                );
                let alive = alive_tx.clone();
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                    drop(alive);
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = closing_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(DRAIN_TIMEOUT, alive_rx.recv())
        .await
        .is_err()
    {
        crate::log_line!("stampede: connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// What a connection's requests share: how many are in flight and when
/// the last one ended, for the idle timeout.
#[derive(Default)]
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    /// Milliseconds since the connection opened, at the last request's end.
    last_end_ms: std::sync::atomic::AtomicU64,
}

/// Serves one connection until the client closes it, it has been idle for
/// `server.idle_timeout_ms` (no request in flight), or the server closes.
/// Closing is graceful: requests in flight finish first.
async fn connection(
    role: Role,
    state: Arc<AppState>,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    stream: tokio::net::TcpStream,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let opened = tokio::time::Instant::now();
    let activity = Arc::new(Activity::default());
    let idle = Duration::from_millis(state.server.idle_timeout_ms);
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req| {
            let state = state.clone();
            let activity = activity.clone();
            async move {
                activity.in_flight.fetch_add(1, Relaxed);
                let resp = match role {
                    Role::Api => route(&state, req).await,
                    Role::Admin { key_required } => super::admin::route(&state, &req, key_required)
                        .map(http_body_util::Either::Left),
                };
                activity
                    .last_end_ms
                    .store(opened.elapsed().as_millis() as u64, Relaxed);
                activity.in_flight.fetch_sub(1, Relaxed);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut deadline = opened + idle;
    let mut closed = false;
    loop {
        tokio::select! {
            // A client that goes away mid-request is not our error.
            _ = conn.as_mut() => return,
            () = tokio::time::sleep_until(deadline), if !closed => {
                let last_end = opened + Duration::from_millis(activity.last_end_ms.load(Relaxed));
                if activity.in_flight.load(Relaxed) > 0 {
                    deadline = tokio::time::Instant::now() + idle;
                } else if last_end + idle > tokio::time::Instant::now() {
                    deadline = last_end + idle;
                } else {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                }
            }
            changed = closing.changed(), if !closed => {
                if changed.is_err() || *closing.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                }
            }
        }
    }
}
