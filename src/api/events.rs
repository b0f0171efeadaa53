//! `GET /v1/events`: the event feed as Server-Sent Events (contract,
//! "Events"). The rules (ids, what is kept, when an event is visible) live
//! in [`crate::events`]; this file parses the request, holds a subscriber
//! place, and runs one task per stream that copies visible events into
//! the response body, with keep-alive comments and `?types=`.
//!
//! A stream never slows anything else: the task reads the shared ring
//! under a short lock and writes into a bounded channel the connection
//! drains. A subscriber more than `events.subscriber_lag_max` events
//! behind, or one that takes no frame for `events.keepalive_ms`, is sent
//! `reset` and its stream ends; it may resume with `Last-Event-ID`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Frame};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response};

use tokio::sync::mpsc::error::TrySendError;

use super::problem::Problem;
use super::AppState;
use crate::events::{gzip, Chunk, Hub, Kinds, Subscription};

/// A response body: a whole one, or an event stream.
pub type ApiBody = http_body_util::Either<Full<Bytes>, Stream>;

/// Frames the connection has not taken yet, per stream.
const CHANNEL_FRAMES: usize = 64;
/// Events read from the ring per lock.
const BATCH: usize = 1024;

/// The body of an event stream: frames from the stream's task.
pub struct Stream {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|f| f.map(|b| Ok(Frame::data(b))))
    }
}

/// What a stream was asked for.
struct Ask {
    kinds: Kinds,
    /// `Last-Event-ID`, if sent.
    after: Option<u64>,
    /// The client takes a gzip stream (`Accept-Encoding: gzip`).
    gzip: bool,
}

/// Whether `Accept-Encoding` lists gzip (or `*`) with a weight above 0.
fn accepts_gzip(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .is_some_and(|q| q.parse::<f32>().map_or(true, |q| q <= 0.0))
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn parse(parts: &hyper::http::request::Parts) -> Result<Ask, Problem> {
    let mut kinds = Kinds::ALL;
    for pair in parts.uri.query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "types" {
            let value = super::decode(value);
            kinds = Kinds::parse(&value).map_err(|unknown| {
                Problem::invalid(
                    Some("types"),
                    format!(
                        "unknown event type {unknown:?}; types are {}",
                        crate::events::Kind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                )
            })?;
        }
    }
    let after = match parts.headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::invalid(
                        Some("Last-Event-ID"),
                        "Last-Event-ID must be an event id (a number)",
                    )
                })?,
        ),
    };
    Ok(Ask {
        kinds,
        after,
        gzip: accepts_gzip(&parts.headers),
    })
}

/// `GET /v1/events` (any role).
pub async fn serve(
    state: &AppState,
    parts: &hyper::http::request::Parts,
) -> Result<Response<ApiBody>, Problem> {
    if parts.method != Method::GET {
        let mut resp =
            Problem::method_not_allowed(format!("/v1/events does not take {}", parts.method))
                .response();
        resp.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET"));
        return Ok(resp.map(http_body_util::Either::Left));
    }
    let settings = state.settings.load_full();
    let ask = match settings.keys.authorize(&parts.headers, false) {
        Ok(_) => parse(parts)?,
        // A stream that asks only for public types needs no key (a page's
        // EventSource cannot send one); a key sent must still be valid.
        Err(denied) => match parse(parts) {
            Ok(ask)
                if parts.headers.get(hyper::header::AUTHORIZATION).is_none()
                    && ask.kinds.0 != 0
                    && ask.kinds.0 & !state.public_kinds.0 == 0 =>
            {
                ask
            }
            _ => return Err(denied),
        },
    };
    let Some(hub) = state.events() else {
        let why = match state.store() {
            None => "recovering: replaying the log",
            Some(_) => "starting: reading the event stream from Redis",
        };
        return Err(Problem::not_ready(why));
    };
    let Some(subscription) = hub.subscribe() else {
        return Err(Problem::not_ready(format!(
            "{} event streams are open (events.subscribers_max)",
            hub.subscribers()
        ))
        .retry_after(5));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_FRAMES);
    let cursor = ask.after.unwrap_or_else(|| hub.visible_id());
    let events = &state.events_config;
    tokio::spawn(feed(
        subscription,
        tx,
        cursor,
        ask.kinds,
        Duration::from_millis(events.keepalive_ms),
        events.subscriber_lag_max,
        ask.gzip,
    ));
    let mut resp = Response::new(http_body_util::Either::Right(Stream { rx }));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer (nginx) would hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(
        hyper::header::VARY,
        HeaderValue::from_static("accept-encoding"),
    );
    if ask.gzip {
        headers.insert(
            hyper::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    Ok(resp)
}

fn reset_frame(oldest_id: u64) -> Bytes {
    Bytes::from(format!(
        "id: {}\nevent: reset\ndata: {{\"oldest_id\":{oldest_id}}}\n\n",
        oldest_id.saturating_sub(1)
    ))
}

/// A write of one stream alone (not a shared chunk): as is, or as a gzip
/// segment.
fn own(bytes: Bytes, gzip: bool) -> Bytes {
    match gzip {
        true => gzip::segment(&bytes),
        false => bytes,
    }
}

/// One stream: visible events after `cursor`, until the client goes, it
/// falls behind, or the server stops. `gzip`: every write a gzip segment,
/// after gzip's header.
async fn feed(
    subscription: Subscription,
    tx: tokio::sync::mpsc::Sender<Bytes>,
    mut cursor: u64,
    kinds: Kinds,
    keepalive: Duration,
    lag_max: usize,
    gzip: bool,
) {
    let hub: &Hub = &subscription.hub;
    let mut visible = hub.watch_visible();
    let mut closed = hub.watch_closed();
    // The head and a first line go out at once: the client knows it is on.
    let hello = Bytes::from_static(b": stampede events\n\n");
    let hello = match gzip {
        true => Bytes::from([gzip::HEADER, &gzip::segment(&hello)].concat()),
        false => hello,
    };
    if tx.send(hello).await.is_err() {
        return;
    }
    static KEEP_ALIVE_GZ: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    let keep_alive = match gzip {
        true => KEEP_ALIVE_GZ
            .get_or_init(|| gzip::segment(b": keep-alive\n\n"))
            .clone(),
        false => Bytes::from_static(b": keep-alive\n\n"),
    };
    // A keep-alive is due this long after the last frame sent (events of
    // other types do not count: they are not sent).
    let mut quiet_until = tokio::time::Instant::now() + keepalive;
    loop {
        let upto = *visible.borrow_and_update();
        loop {
            let (read, next, left) = hub.read_chunk(cursor, kinds, upto, BATCH, gzip);
            let (chunk, count) = match read {
                Chunk::Reset { oldest_id } => {
                    if tx.send(own(reset_frame(oldest_id), gzip)).await.is_err() {
                        return;
                    }
                    cursor = next;
                    continue;
                }
                Chunk::Frames(chunk, count) => (chunk, count),
            };
            if count > 0 {
                match tx.try_send(chunk) {
                    Ok(()) => {}
                    Err(TrySendError::Closed(_)) => return,
                    Err(TrySendError::Full(chunk)) => {
                        // The connection has not taken what it was given:
                        // a slow reader. Too far behind: told, and let go.
                        if left + count > lag_max {
                            let reset = own(reset_frame(hub.oldest_id()), gzip);
                            let _ = tokio::time::timeout(keepalive, tx.send(reset)).await;
                            return;
                        }
                        match tokio::time::timeout(keepalive, tx.send(chunk)).await {
                            Ok(Ok(())) => {}
                            // Gone, or took nothing for a keep-alive period.
                            Ok(Err(_)) | Err(_) => return,
                        }
                    }
                }
                quiet_until = tokio::time::Instant::now() + keepalive;
            }
            cursor = next;
            if left == 0 {
                break;
            }
        }
        let quiet = tokio::select! {
            changed = visible.changed() => match changed {
                Ok(()) => false,
                Err(_) => return,
            },
            () = tokio::time::sleep_until(quiet_until) => true,
            _ = closed.wait_for(|c| *c) => return,
        };
        if quiet {
            if tx.send(keep_alive.clone()).await.is_err() {
                return;
            }
            quiet_until = tokio::time::Instant::now() + keepalive;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EventSink;
    use crate::events::Options;
    use std::sync::Arc;

    /// A plain stream of every event from the start, lag bound 100.
    fn stream_from_start(
        hub: &Arc<Hub>,
    ) -> (
        tokio::task::JoinHandle<()>,
        tokio::sync::mpsc::Receiver<Bytes>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_FRAMES);
        let sub = hub.subscribe().unwrap();
        let task = tokio::spawn(feed(
            sub,
            tx,
            0,
            Kinds::ALL,
            Duration::from_secs(60),
            100,
            false,
        ));
        (task, rx)
    }

    #[tokio::test]
    async fn a_reader_too_far_behind_is_told_reset_and_let_go() {
        let hub = Arc::new(Hub::new(Options {
            retained_max: 1_000_000,
            subscribers_max: 4,
            flush_interval: Duration::from_millis(1),
        }));
        // More than the channel holds (64 chunks of up to BATCH events).
        let n = ((CHANNEL_FRAMES + 8) * BATCH) as u64;
        for lsn in 1..=n {
            hub.emit(lsn, 1, crate::engine::Event::StockOut { sku: "a" });
        }
        // All durable at once: visible.
        let pump = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.pump(|_| async { true }).await })
        };
        let mut visible = hub.watch_visible();
        while *visible.borrow_and_update() < n << 16 {
            visible.changed().await.unwrap();
        }
        let (task, mut rx) = stream_from_start(&hub);
        // The reader takes nothing until the channel is full...
        while rx.len() < CHANNEL_FRAMES {
            tokio::task::yield_now().await;
        }
        // ...then everything: the feed, thousands of events behind, sends a
        // reset and ends instead of going on.
        let mut frames = Vec::new();
        while let Some(f) = rx.recv().await {
            frames.push(f);
        }
        task.await.unwrap();
        assert_eq!(hub.subscribers(), 0, "its place is given back");
        assert_eq!(frames.len(), CHANNEL_FRAMES + 1);
        assert!(frames[1].starts_with(b"id: 65536\nevent: stock.out"));
        let last = std::str::from_utf8(frames.last().unwrap()).unwrap();
        assert_eq!(
            last,
            "id: 65535\nevent: reset\ndata: {\"oldest_id\":65536}\n\n"
        );
        hub.close();
        pump.await.unwrap();
    }

    #[tokio::test]
    async fn a_reader_that_keeps_up_gets_everything() {
        let hub = Arc::new(Hub::new(Options {
            retained_max: 10_000,
            subscribers_max: 4,
            flush_interval: Duration::from_millis(1),
        }));
        let pump = {
            let hub = hub.clone();
            tokio::spawn(async move { hub.pump(|_| async { true }).await })
        };
        let (task, mut rx) = stream_from_start(&hub);
        assert_eq!(&rx.recv().await.unwrap()[..], b": stampede events\n\n");
        let mut seen = 0;
        for lsn in 1..=1000u64 {
            hub.emit(lsn, 1, crate::engine::Event::StockOut { sku: "a" });
            if lsn % 50 == 0 {
                while seen < lsn {
                    let chunk = rx.recv().await.unwrap();
                    let text = std::str::from_utf8(&chunk).unwrap();
                    for frame in text.split_terminator("\n\n") {
                        let want = format!("id: {}\n", (seen + 1) << 16);
                        assert!(frame.starts_with(&want), "{frame} is not {want}");
                        seen += 1;
                    }
                }
            }
        }
        hub.close();
        task.await.unwrap();
        pump.await.unwrap();
    }
}
