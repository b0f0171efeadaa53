//! The HTTP client of the `http://` target: hyper's connection-level
//! client (`hyper::client::conn`) with a pool of our own.
//!
//! HTTP/1.1: keep-alive connections, one request at a time each. A request
//! takes an idle connection (or opens one), and gives it back once its
//! response body is read. The pool never holds more connections than were
//! ever in use at once, which the runner bounds with `client.connections`.
//! h2c: one connection, every request a stream on it; reopened if it
//! closes.
//!
//! Written rather than hyper-util's legacy `Client` because that pool's
//! checkout (per-host keys, a lock, an mpsc hop, a boxed future per
//! request) cost about as much as the HTTP work itself in profiles of a
//! single-threaded run.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderValue, HOST};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;

type Body = Full<Bytes>;

pub struct HttpClient {
    authority: String,
    host: HeaderValue,
    http2: bool,
    idle: Mutex<Vec<http1::SendRequest<Body>>>,
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
        let mut sender = self.h1_sender().await?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        // The whole answer is read: the connection can carry another.
        self.idle.lock().push(sender);
        Ok((status, body.to_bytes()))
    }

    /// An idle HTTP/1.1 connection ready for a request, or a new one.
    async fn h1_sender(&self) -> Result<http1::SendRequest<Body>, String> {
        loop {
            let Some(mut sender) = self.idle.lock().pop() else {
                break;
            };
            // A connection the server closed while idle is dropped here,
            // before anything is sent on it.
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let stream = self.connect().await?;
        // One buffer per request rather than writev of head and body: a
        // single copy is cheaper than an iovec for bodies this small.
        let (mut sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(stream)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        sender.ready().await.map_err(|e| e.to_string())?;
        Ok(sender)
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
