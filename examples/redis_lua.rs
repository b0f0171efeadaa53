//! The Redis baseline the HTTP benchmark compares stampede with: the design
//! most teams build today. A hyper server (same runtime and builder as
//! stampede) answers `POST /v1/reservations` by running one Lua script on a
//! Redis server: check every item's `stock - held - sold`, then add to
//! `held`, store the hold with its expiry and index it by expiry time, all
//! or nothing. Same request body and answer shape as stampede (201 with the
//! reservation, 409 `insufficient_stock`, 400 for a bad body).
//!
//!   cargo run --release --example redis_lua -- LISTEN REDIS_URL SKUS
//!   e.g. 127.0.0.1:0 redis://127.0.0.1:6390 10000
//!
//! On start it sets SKUs `sku-000000 ..` with a stock of 10^9 each, then
//! prints `listening on ADDR`. Durability is Redis's own: the benchmark
//! starts redis-server with `appendfsync always` to match stampede's fsync.

use std::convert::Infallible;
use std::sync::Arc;

use fred::prelude::*;
use fred::types::scripts::Script;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;

/// KEYS: one `sku:{sku}` hash per item, then `holds:expiry` (a sorted set).
/// ARGV: now_ms, ttl_ms, customer_id, then one qty per item.
/// Returns {1, id} when held, {0, item index (1-based), available} when short.
const RESERVE: &str = r#"
local n = #KEYS - 1
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'stock', 'held', 'sold')
  if not v[1] then return {-1, i, 0} end
  local available = tonumber(v[1]) - tonumber(v[2] or 0) - tonumber(v[3] or 0)
  if available < tonumber(ARGV[3 + i]) then return {0, i, available} end
end
local id = redis.call('INCR', 'holds:next')
local expires = tonumber(ARGV[1]) + tonumber(ARGV[2])
local items = {}
for i = 1, n do
  redis.call('HINCRBY', KEYS[i], 'held', ARGV[3 + i])
  items[#items + 1] = KEYS[i]
  items[#items + 1] = ARGV[3 + i]
end
redis.call('HSET', 'hold:' .. id, 'customer', ARGV[3], 'status', 'held',
  'created', ARGV[1], 'expires', expires, 'items', table.concat(items, ','))
redis.call('ZADD', KEYS[n + 1], expires, id)
return {1, id}
"#;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reserve {
    customer_id: String,
    items: Vec<Item>,
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item {
    sku: String,
    qty: u64,
}

struct App {
    pool: Pool,
    script: Script,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let skus: usize = args.next().map_or(Ok(10_000), |s| s.parse())?;
    let config = Config::from_url(&url)?;
    // One connection per core, as an application server would keep.
    let pool = Builder::from_config(config).build_pool(4)?;
    pool.init().await?;
    let script = Script::from_lua(RESERVE);
    script.load(pool.next()).await?;
    for chunk in (0..skus).collect::<Vec<_>>().chunks(1000) {
        let pipeline = pool.next().pipeline();
        for n in chunk {
            let _: () = pipeline
                .hset(
                    format!("sku:sku-{n:06}"),
                    [("stock", 1_000_000_000i64), ("held", 0), ("sold", 0)],
                )
                .await?;
        }
        let _: Vec<Value> = pipeline.all().await?;
    }
    let app = Arc::new(App { pool, script });
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST || req.uri().path() != "/v1/reservations" {
        return answer(StatusCode::NOT_FOUND, r#"{"code":"not_found"}"#.into());
    }
    let Ok(body) = req.into_body().collect().await else {
        return answer(
            StatusCode::BAD_REQUEST,
            r#"{"code":"invalid_request"}"#.into(),
        );
    };
    let Ok(r) = serde_json::from_slice::<Reserve>(&body.to_bytes()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            r#"{"code":"invalid_request"}"#.into(),
        );
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let ttl_ms = r.ttl_ms.unwrap_or(600_000);
    let mut keys: Vec<String> = r.items.iter().map(|i| format!("sku:{}", i.sku)).collect();
    keys.push("holds:expiry".into());
    let mut argv = vec![
        now_ms.to_string(),
        ttl_ms.to_string(),
        r.customer_id.clone(),
    ];
    argv.extend(r.items.iter().map(|i| i.qty.to_string()));
    let result: Result<Vec<i64>, _> = app
        .script
        .evalsha_with_reload(app.pool.next(), keys, argv)
        .await;
    match result.as_deref() {
        Ok([1, id]) => {
            let items: Vec<_> = r
                .items
                .iter()
                .map(|i| serde_json::json!({"sku": i.sku, "qty": i.qty}))
                .collect();
            let body = serde_json::json!({
                "id": format!("r_{id}"), "status": "held", "customer_id": r.customer_id,
                "items": items, "created_at_ms": now_ms, "expires_at_ms": now_ms + ttl_ms,
                "order_ref": null,
            });
            answer(StatusCode::CREATED, body.to_string())
        }
        Ok([0, i, available]) => {
            let item = &r.items[(*i as usize).saturating_sub(1)];
            let body = serde_json::json!({"code": "insufficient_stock", "sku": item.sku,
                "requested": item.qty, "available": available});
            answer(StatusCode::CONFLICT, body.to_string())
        }
        Ok(_) => answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"code":"unknown_sku"}"#.into(),
        ),
        Err(e) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"code": "storage_unavailable", "detail": e.to_string()}).to_string(),
        ),
    }
}

fn answer(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
