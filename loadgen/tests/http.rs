//! The http:// target's client over real sockets: keep-alive connections
//! reused (never more than the requests in flight at once), a connection
//! the server closed is replaced without failing a request, h2c carries
//! every request as a stream on one connection.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use loadgen::http::HttpClient;

/// A server answering 201 with the request's path and body; counts the
/// connections it accepted. `keep_alive: false` closes each connection
/// after one answer.
async fn server(keep_alive: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Relaxed);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let mut answer = path.into_bytes();
                        answer.extend_from_slice(&body);
                        let mut resp = Response::new(Full::new(Bytes::from(answer)));
                        *resp.status_mut() = hyper::StatusCode::CREATED;
                        Ok::<_, Infallible>(resp)
                    });
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().keep_alive(keep_alive);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn post(path: &'static str, body: String) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from(body)));
    *req.method_mut() = hyper::Method::POST;
    *req.uri_mut() = Uri::from_static(path);
    req
}

async fn many(client: &Arc<HttpClient>, requests: usize, at_once: usize) {
    let gate = Arc::new(tokio::sync::Semaphore::new(at_once));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..requests {
        let client = client.clone();
        let permit = gate.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            let (status, body) = client.send(post("/v1/x", format!("n{i}"))).await.unwrap();
            drop(permit);
            assert_eq!(status, 201);
            assert_eq!(body, format!("/v1/xn{i}").as_bytes());
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

#[tokio::test]
async fn http1_connections_are_kept_alive_and_reused() {
    let (addr, accepted) = server(true).await;
    let client = Arc::new(HttpClient::new(&addr, false).unwrap());
    many(&client, 500, 8).await;
    let opened = accepted.load(Relaxed);
    assert!(
        (1..=8).contains(&opened),
        "{opened} connections for 8 at once"
    );
    assert_eq!(client.idle(), opened, "every connection back in the pool");
    // One at a time: no new connection.
    many(&client, 50, 1).await;
    assert_eq!(accepted.load(Relaxed), opened);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced() {
    let (addr, accepted) = server(false).await;
    let client = Arc::new(HttpClient::new(&addr, false).unwrap());
    for _ in 0..20 {
        many(&client, 1, 1).await;
        // Let the server's close reach the pooled connection.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }
    assert_eq!(accepted.load(Relaxed), 20, "a new connection per answer");
}

/// A server that answers one request per connection as if it would keep
/// the connection (no `Connection: close`), then, when told to, closes it
/// as a server's idle or header-read timeout does; reports each close.
async fn silent_closer() -> (
    String,
    tokio::sync::mpsc::UnboundedSender<()>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (close_tx, mut close_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body its Content-Length announces.
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed first");
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_lowercase();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    if seen.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            stream
                .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            close_rx.recv().await.unwrap();
            drop(stream);
            closed_tx.send(()).unwrap();
        }
    });
    (addr, close_tx, closed_rx)
}

#[tokio::test]
async fn a_pooled_connection_closed_without_notice_is_not_used() {
    let (addr, close, mut closed) = silent_closer().await;
    let client = HttpClient::new(&addr, false).unwrap();
    for i in 0..10 {
        let (status, body) = client
            .send(post("/v1/x", format!("n{i}")))
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!((status, &body[..]), (201, &b"ok"[..]));
        assert_eq!(client.idle(), 1, "kept for the next request");
        // The server closes it while it sits idle in the pool.
        close.send(()).unwrap();
        closed.recv().await.unwrap();
    }
}

#[tokio::test]
async fn h2c_carries_every_request_on_one_connection() {
    let (addr, accepted) = server(true).await;
    let client = Arc::new(HttpClient::new(&addr, true).unwrap());
    many(&client, 300, 32).await;
    assert_eq!(accepted.load(Relaxed), 1);
}

#[tokio::test]
async fn no_server_is_an_error_naming_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let client = HttpClient::new(&addr, false).unwrap();
    let err = client.send(post("/v1/x", String::new())).await.unwrap_err();
    assert!(err.contains(&addr), "{err}");
}
