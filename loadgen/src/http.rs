//! The HTTP client of the `http://` target: hyper's connection-level
//! client (`hyper::client::conn`) with a pool of our own.
//!
//! HTTP/1.1: keep-alive connections, one request at a time each. A request
//! takes an idle connection (or opens one), drives it itself (the
//! connection's future is polled by the task waiting for the answer, so no
//! task of its own and no hop between tasks), and gives it back once its
//! response body is read. An idle connection is not polled: one the server
//! closed meanwhile is found out and replaced before anything is sent on
//! it. The pool never holds more connections than were ever in use at
//! once, which the runner bounds with `client.connections`.
//! h2c: one connection, every request a stream on it; reopened if it
//! closes.
//!
//! Written rather than hyper-util's legacy `Client` because that pool's
//! checkout (per-host keys, a lock, an mpsc hop, a boxed future per
//! request) cost about as much as the HTTP work itself in profiles of a
//! single-threaded run.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

type Body = Full<Bytes>;

/// An HTTP/1.1 connection: the handle requests go through, and the
/// connection's own future, which does the reading and writing when polled.
struct H1 {
    sender: http1::SendRequest<Body>,
    conn: H1Conn,
}

type H1Conn = Pin<Box<http1::Connection<TokioIo<tokio::net::TcpStream>, Body>>>;

/// Runs `exchange` (a use of the connection's sender) while polling the
/// connection `conn`. Err if the connection ended (closed or failed)
/// before `exchange` finished.
async fn drive<T>(conn: &mut H1Conn, exchange: impl Future<Output = T>) -> Result<T, String> {
    let mut exchange = std::pin::pin!(exchange);
    let mut ended: Option<String> = None;
    std::future::poll_fn(|cx| {
        // The exchange queues its request, the connection writes it and
        // reads the answer, the exchange takes it: in that order, so a
        // step that makes the next one ready is followed at once.
        if let Poll::Ready(v) = exchange.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if ended.is_none() {
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                ended = Some(match r {
                    Ok(()) => "connection closed".to_owned(),
                    Err(e) => e.to_string(),
                });
            }
        }
        match exchange.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Ok(v)),
            Poll::Pending => match &ended {
                // Nothing will move the exchange on any more.
                Some(e) => Poll::Ready(Err(e.clone())),
                None => Poll::Pending,
            },
        }
    })
    .await
}

pub struct HttpClient {
    authority: String,
    host: HeaderValue,
    http2: bool,
    idle: Mutex<Vec<H1>>,
    /// The h2c connection; an async lock so one task opens it.
    h2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
}

impl HttpClient {
    /// A client for `authority` (`host:port`); connects on first use.
    pub fn new(authority: &str, http2: bool) -> Result<HttpClient, String> {
        let host = HeaderValue::from_str(authority)
            .map_err(|_| format!("{authority:?} is not a valid host"))?;
        Ok(HttpClient {
            authority: authority.to_owned(),
            host,
            http2,
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
        })
    }

    /// Connections open and idle now (HTTP/1.1).
    pub fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// Sends `req` (its URI a path: `/v1/...`) and reads the whole answer.
    pub async fn send(&self, mut req: Request<Body>) -> Result<(u16, Bytes), String> {
        if self.http2 {
            let mut pq = req.uri().path_and_query().cloned();
            *req.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(self.authority.as_str())
                .path_and_query(pq.take().ok_or("request without a path")?)
                .build()
                .map_err(|e| e.to_string())?;
            let mut sender = self.h2_sender().await?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            return Ok((status, body.to_bytes()));
        }
        req.headers_mut().insert(HOST, self.host.clone());
        let mut h1 = self.h1_ready().await?;
        let H1 { sender, conn } = &mut h1;
        let answer = drive(conn, async {
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body.to_bytes()))
        })
        .await??;
        // The whole answer is read: the connection can carry another.
        self.idle.lock().push(h1);
        Ok(answer)
    }

    /// An idle HTTP/1.1 connection ready for a request, or a new one.
    async fn h1_ready(&self) -> Result<H1, String> {
        loop {
            let Some(mut h1) = self.idle.lock().pop() else {
                break;
            };
            // A connection the server closed while idle is dropped here,
            // before anything is sent on it.
            if h1.sender.is_closed() {
                continue;
            }
            let H1 { sender, conn } = &mut h1;
            if drive(conn, sender.ready()).await.is_ok_and(|r| r.is_ok()) {
                return Ok(h1);
            }
        }
        let stream = self.connect().await?;
        // One buffer per request rather than writev of head and body: a
        // single copy is cheaper than an iovec for bodies this small.
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut h1 = H1 {
            sender,
            conn: Box::pin(conn),
        };
        let H1 { sender, conn } = &mut h1;
        drive(conn, sender.ready())
            .await?
            .map_err(|e| e.to_string())?;
        Ok(h1)
    }

    async fn h2_sender(&self) -> Result<http2::SendRequest<Body>, String> {
        let mut h2 = self.h2.lock().await;
        if let Some(sender) = h2.as_ref().filter(|s| !s.is_closed()) {
            return Ok(sender.clone());
        }
        let stream = self.connect().await?;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), stream)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *h2 = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<TokioIo<tokio::net::TcpStream>, String> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connecting to {}: {e}", self.authority))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(TokioIo::new(stream))
    }
}
