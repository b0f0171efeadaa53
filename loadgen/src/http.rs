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
/// connection `conn`: its output, and whether the connection is still open.
/// Err if the connection ended (closed or failed) before `exchange`
/// finished.
async fn drive<T>(
    conn: &mut H1Conn,
    exchange: impl Future<Output = T>,
) -> Result<(T, bool), String> {
    let mut exchange = std::pin::pin!(exchange);
    let mut ended: Option<String> = None;
    std::future::poll_fn(|cx| {
        // The connection first: one the server closed while it sat idle
        // in the pool ends here, before a request is put on it. Then the
        // exchange (which queues its request, or takes its answer), then
        // the connection again (to write what was just queued), then the
        // exchange again: each step that readies the next is followed at
        // once, without a round through the scheduler.
        for _ in 0..2 {
            if ended.is_none() {
                if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                    ended = Some(match r {
                        Ok(()) => "connection closed".to_owned(),
                        Err(e) => e.to_string(),
                    });
                }
            }
            if let Poll::Ready(v) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Ok((v, ended.is_none())));
            }
        }
        match &ended {
            // Nothing will move the exchange on any more.
            Some(e) => Poll::Ready(Err(e.clone())),
            None => Poll::Pending,
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
    pub async fn send(&self, req: Request<Body>) -> Result<(u16, Bytes), String> {
        if self.http2 {
            // Boxed, as is opening a connection: each request's future is
            // moved and kept while it runs, and these rarely used paths
            // would otherwise set its size.
            return Box::pin(self.send_h2(req)).await;
        }
        self.send_h1(req).await
    }

    async fn send_h2(&self, mut req: Request<Body>) -> Result<(u16, Bytes), String> {
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
        Ok((status, body.to_bytes()))
    }

    async fn send_h1(&self, mut req: Request<Body>) -> Result<(u16, Bytes), String> {
        req.headers_mut().insert(HOST, self.host.clone());
        loop {
            let (mut h1, fresh) = self.h1_ready().await?;
            // Not tied to the connection: after the connection is dropped
            // it still says what became of the request.
            let mut sending = Box::pin(h1.sender.try_send_request(req));
            // A pooled connection the server closed just as it was taken:
            // the request never left, so it goes again on a new connection
            // (on a new one, that is an error).
            let (mut refused, why) = match drive(&mut h1.conn, sending.as_mut()).await {
                Ok((Ok(resp), _)) => {
                    let status = resp.status().as_u16();
                    return match drive(&mut h1.conn, resp.into_body().collect()).await {
                        Ok((Ok(body), alive)) => {
                            // The whole answer is read: the connection can
                            // carry another, unless it closed after it.
                            if alive {
                                self.idle.lock().push(h1);
                            }
                            Ok((status, body.to_bytes()))
                        }
                        Ok((Err(e), _)) => Err(e.to_string()),
                        Err(e) => Err(e),
                    };
                }
                Ok((Err(e), _)) => {
                    let why = e.error().to_string();
                    (e, why)
                }
                Err(ended) => {
                    // The connection ended with the request queued or on
                    // the wire: dropping it settles which.
                    drop(h1);
                    match sending.await {
                        Err(e) => (e, ended),
                        Ok(_) => return Err(ended),
                    }
                }
            };
            req = match (refused.take_message(), fresh) {
                (Some(unsent), false) => unsent,
                _ => return Err(why),
            };
        }
    }

    /// An idle HTTP/1.1 connection ready for a request (false), or a new
    /// one (true).
    async fn h1_ready(&self) -> Result<(H1, bool), String> {
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
            if let Ok((Ok(()), true)) = drive(conn, sender.ready()).await {
                return Ok((h1, false));
            }
        }
        Ok((Box::pin(self.open_h1()).await?, true))
    }

    /// A new HTTP/1.1 connection, ready for a request.
    async fn open_h1(&self) -> Result<H1, String> {
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
            .0
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
