//! The trivial hyper handler the HTTP benchmark compares stampede with:
//! same runtime, same hyper server builder (HTTP/1.1 and h2c), no work.
//! Prints `listening on ADDR` like stampede.
//!
//!   cargo run --release --example hello -- 127.0.0.1:0

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on {}", listener.local_addr().expect("address"));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let mut resp = Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                *resp.status_mut() = StatusCode::CREATED;
                Ok::<_, Infallible>(resp)
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
