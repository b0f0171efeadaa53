//! Where the load goes: stampede over HTTP (`http://host:port`), or the
//! engine in this process (`inproc`, its ceiling). A fake target with
//! chosen faults serves the tests.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Body as _, Bytes};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Uri};
use serde::Deserialize;

/// One request a shopper makes.
#[derive(Debug, Clone)]
pub enum Op {
    Browse {
        sku: String,
    },
    Reserve {
        customer: String,
        sku: String,
        qty: u32,
        ttl_ms: u64,
        wait_ms: u64,
        key: String,
    },
    Confirm {
        id: String,
        key: String,
    },
    Release {
        id: String,
        key: String,
    },
    /// `POST /v1/reservations/{id}/payment` (`[flow.payment]`).
    Payment {
        id: String,
        gateway: String,
        payment_ref: String,
        key: String,
    },
    /// A gateway's signed webhook.
    Webhook {
        gateway: String,
        body: String,
        headers: Vec<(&'static str, String)>,
    },
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Browse { .. } => OpKind::Browse,
            Op::Reserve { .. } => OpKind::Reserve,
            Op::Confirm { .. } => OpKind::Confirm,
            Op::Release { .. } => OpKind::Release,
            Op::Payment { .. } => OpKind::Payment,
            Op::Webhook { .. } => OpKind::Webhook,
        }
    }
}

/// What a target that is not stampede over HTTP answers to a payment op
/// (the run refuses `[flow.payment]` for them before it starts).
const PAYMENTS_NEED_HTTP: &str = "payments need an http:// target (stampede)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    Browse,
    Reserve,
    Confirm,
    Release,
    Payment,
    Webhook,
}

impl OpKind {
    pub const ALL: [OpKind; 6] = [
        OpKind::Browse,
        OpKind::Reserve,
        OpKind::Confirm,
        OpKind::Release,
        OpKind::Payment,
        OpKind::Webhook,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Browse => "browse",
            OpKind::Reserve => "reserve",
            OpKind::Confirm => "confirm",
            OpKind::Release => "release",
            OpKind::Payment => "payment",
            OpKind::Webhook => "webhook",
        }
    }
}

/// What came back: the HTTP status (0 when no answer came), the problem
/// `code` if any, and the reservation id of a hold.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub status: u16,
    pub code: Option<String>,
    pub id: Option<String>,
    /// A payment webhook's `outcome`.
    pub outcome: Option<String>,
}

/// A SKU's figures, for the audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    pub stock: u64,
    pub held: u64,
    pub sold: u64,
}

pub enum Target {
    Http(HttpTarget),
    Redis(crate::redis::RedisTarget),
    /// Boxed: the engine is large beside the other targets.
    Inproc(Box<InprocTarget>),
    Fake(FakeTarget),
}

impl Target {
    /// `http://HOST:PORT[,HOST:PORT...]` (several: stampede nodes sharing
    /// one store, taken in turn), `redis://HOST:PORT`, or `inproc`.
    pub async fn connect(spec: &str, key: Option<String>, http2: bool) -> anyhow::Result<Target> {
        if spec.starts_with("redis://") {
            return Ok(Target::Redis(
                crate::redis::RedisTarget::connect(spec).await?,
            ));
        }
        Target::open(spec, key, http2)
    }

    /// `http://HOST:PORT`, or `inproc` (no connection made yet).
    pub fn open(spec: &str, key: Option<String>, http2: bool) -> anyhow::Result<Target> {
        if let Some(rest) = spec.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            anyhow::ensure!(!authority.is_empty(), "--target {spec}: no host");
            let target = HttpTarget::new(authority, key, http2)
                .map_err(|e| anyhow::anyhow!("--target {spec}: {e}"))?;
            return Ok(Target::Http(target));
        }
        if spec == "inproc" {
            return Ok(Target::Inproc(Box::default()));
        }
        anyhow::bail!(
            "--target {spec}: expected http://HOST:PORT (stampede), redis://HOST:PORT (Lua scripts on Redis) or inproc (the engine in this process)"
        )
    }

    pub async fn call(&self, op: &Op) -> Result<Answer, String> {
        // A fred call's future is kilobytes: boxed, so every shopper's
        // task is not sized for it (its memmove and allocation showed in
        // profiles of the http:// target).
        match self {
            Target::Http(t) => t.call(op).await,
            Target::Redis(t) => Box::pin(t.call(op)).await,
            Target::Inproc(t) => Ok(t.call(op)),
            Target::Fake(t) => Box::pin(t.call(op)).await,
        }
    }

    pub async fn set_stock(&self, sku: &str, stock: u64, limit: u64) -> Result<(), String> {
        match self {
            Target::Http(t) => t.set_stock(sku, stock, limit).await,
            Target::Redis(t) => t.set_stock(sku, stock).await,
            Target::Inproc(t) => t.set_stock(sku, stock, limit),
            Target::Fake(t) => {
                t.skus.lock().insert(
                    sku.to_owned(),
                    Figures {
                        stock,
                        ..Default::default()
                    },
                );
                Ok(())
            }
        }
    }

    pub async fn figures(&self, sku: &str) -> Result<Figures, String> {
        match self {
            Target::Http(t) => t.figures(sku).await,
            Target::Redis(t) => t.figures(sku).await,
            Target::Inproc(t) => t.figures(sku),
            Target::Fake(t) => t
                .skus
                .lock()
                .get(sku)
                .copied()
                .ok_or_else(|| format!("no sku {sku}")),
        }
    }
}

/// stampede over HTTP/1.1 keep-alive (or h2c) through hyper
/// ([`crate::http::HttpClient`]).
pub struct HttpTarget {
    /// One per stampede node (`http://A,B`): requests go round them in
    /// turn, as a load balancer would send them.
    clients: Vec<crate::http::HttpClient>,
    next: std::sync::atomic::AtomicUsize,
    auth: Option<HeaderValue>,
}

#[derive(Deserialize)]
struct Reply {
    id: Option<String>,
    code: Option<String>,
    outcome: Option<String>,
    stock: Option<u64>,
    held: Option<u64>,
    sold: Option<u64>,
}

impl HttpTarget {
    pub fn new(authority: &str, key: Option<String>, http2: bool) -> Result<HttpTarget, String> {
        let auth = match key {
            Some(k) => Some(
                HeaderValue::from_str(&format!("Bearer {k}"))
                    .map_err(|_| "the key is not a valid header value".to_owned())?,
            ),
            None => None,
        };
        let clients = authority
            .split(',')
            .map(|a| crate::http::HttpClient::new(a.trim(), http2))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err("no host".to_owned());
        }
        Ok(HttpTarget {
            clients,
            next: std::sync::atomic::AtomicUsize::new(0),
            auth,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: Uri,
        body: Option<String>,
        key: Option<&str>,
        extra: &[(&'static str, String)],
    ) -> Result<(u16, Reply), String> {
        let mut req = Request::new(match body {
            Some(b) => Full::new(Bytes::from(b)),
            None => Full::new(Bytes::new()),
        });
        *req.method_mut() = method;
        *req.uri_mut() = path;
        let headers = req.headers_mut();
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        if let Some(key) = key {
            headers.insert(
                "idempotency-key",
                HeaderValue::from_str(key).map_err(|e| e.to_string())?,
            );
        }
        for (name, value) in extra {
            req.headers_mut().insert(
                *name,
                HeaderValue::from_str(value).map_err(|e| e.to_string())?,
            );
        }
        if req.body().size_hint().exact() != Some(0) {
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let turn = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let client = &self.clients[turn % self.clients.len()];
        let (status, bytes) = client.send(req).await?;
        let reply = serde_json::from_slice(&bytes).unwrap_or(Reply {
            id: None,
            code: None,
            outcome: None,
            stock: None,
            held: None,
            sold: None,
        });
        Ok((status, reply))
    }

    async fn call(&self, op: &Op) -> Result<Answer, String> {
        let (status, reply) = match op {
            Op::Browse { sku } => {
                self.send(
                    Method::GET,
                    path(format!("/v1/skus/{sku}"))?,
                    None,
                    None,
                    &[],
                )
                .await?
            }
            Op::Reserve {
                customer,
                sku,
                qty,
                ttl_ms,
                wait_ms,
                key,
            } => {
                let mut body = format!(
                    r#"{{"customer_id":"{customer}","items":[{{"sku":"{sku}","qty":{qty}}}]"#
                );
                if *ttl_ms > 0 {
                    body += &format!(r#","ttl_ms":{ttl_ms}"#);
                }
                if *wait_ms > 0 {
                    body += &format!(r#","wait_ms":{wait_ms}"#);
                }
                body.push('}');
                self.send(
                    Method::POST,
                    Uri::from_static("/v1/reservations"),
                    Some(body),
                    Some(key),
                    &[],
                )
                .await?
            }
            Op::Confirm { id, key } | Op::Release { id, key } => {
                let action = match op {
                    Op::Confirm { .. } => "confirm",
                    _ => "release",
                };
                self.send(
                    Method::POST,
                    path(format!("/v1/reservations/{id}/{action}"))?,
                    None,
                    Some(key),
                    &[],
                )
                .await?
            }
            Op::Payment {
                id,
                gateway,
                payment_ref,
                key,
            } => {
                let body = format!(r#"{{"gateway":"{gateway}","payment_ref":"{payment_ref}"}}"#);
                self.send(
                    Method::POST,
                    path(format!("/v1/reservations/{id}/payment"))?,
                    Some(body),
                    Some(key),
                    &[],
                )
                .await?
            }
            Op::Webhook {
                gateway,
                body,
                headers,
            } => {
                self.send(
                    Method::POST,
                    path(format!("/v1/payments/{gateway}/webhook"))?,
                    Some(body.clone()),
                    None,
                    headers,
                )
                .await?
            }
        };
        Ok(Answer {
            status,
            code: reply.code,
            id: reply.id,
            outcome: reply.outcome,
        })
    }

    async fn set_stock(&self, sku: &str, stock: u64, limit: u64) -> Result<(), String> {
        let body = format!(r#"{{"stock":{stock},"customer_limit":{limit}}}"#);
        let (status, reply) = self
            .send(
                Method::PUT,
                path(format!("/v1/skus/{sku}"))?,
                Some(body),
                None,
                &[],
            )
            .await?;
        match status {
            200 | 201 => Ok(()),
            _ => Err(format!(
                "PUT /v1/skus/{sku}: {status} {}",
                reply.code.unwrap_or_default()
            )),
        }
    }

    async fn figures(&self, sku: &str) -> Result<Figures, String> {
        let (status, reply) = self
            .send(
                Method::GET,
                path(format!("/v1/skus/{sku}"))?,
                None,
                None,
                &[],
            )
            .await?;
        match (status, reply.stock, reply.held, reply.sold) {
            (200, Some(stock), Some(held), Some(sold)) => Ok(Figures { stock, held, sold }),
            _ => Err(format!("GET /v1/skus/{sku}: {status}")),
        }
    }
}

impl Target {
    /// A JSON request to stampede (HTTP targets only): status and body.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, serde_json::Value), String> {
        let Target::Http(t) = self else {
            return Err("drops need an http:// target (stampede)".into());
        };
        let mut req = Request::new(Full::new(Bytes::from(body.unwrap_or_default())));
        *req.method_mut() = method;
        *req.uri_mut() = Uri::try_from(path).map_err(|e| e.to_string())?;
        if let Some(auth) = &t.auth {
            req.headers_mut().insert(AUTHORIZATION, auth.clone());
        }
        if req.body().size_hint().exact() != Some(0) {
            req.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let turn = t.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (status, bytes) = t.clients[turn % t.clients.len()].send(req).await?;
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }
}

/// A request path as a URI (a SKU or id with characters a path cannot
/// carry is an error, not a panic).
fn path(p: String) -> Result<Uri, String> {
    Uri::try_from(p).map_err(|e| e.to_string())
}

/// The engine in this process, answering as the API would.
pub struct InprocTarget {
    engine: stampede::engine::Engine,
}

impl InprocTarget {
    pub fn new() -> InprocTarget {
        InprocTarget {
            engine: stampede::engine::Engine::new(
                stampede::engine::Options::default(),
                Arc::new(stampede::clock::SystemClock),
            ),
        }
    }

    fn call(&self, op: &Op) -> Answer {
        use stampede::engine::{Error, Fill, ItemRequest, ReserveRequest};
        let refused = |e: Error| {
            let (status, code) = match &e {
                Error::InsufficientStock { .. } => (409, "insufficient_stock"),
                Error::HoldNotActive { .. } => (409, "hold_not_active"),
                Error::HoldExpired { .. } => (410, "hold_expired"),
                Error::CustomerLimitExceeded { .. } => (422, "customer_limit_exceeded"),
                Error::UnknownSku { .. } => (422, "unknown_sku"),
                Error::HoldNotFound => (404, "not_found"),
                _ => (400, "invalid_request"),
            };
            Answer {
                status,
                code: Some(code.into()),
                ..Answer::default()
            }
        };
        let ok = |status, id: Option<String>| Answer {
            status,
            id,
            ..Answer::default()
        };
        let id_of = |id: &str| id.parse().map_err(|_| Error::HoldNotFound);
        match op {
            Op::Browse { sku } => self
                .engine
                .sku(sku)
                .map(|_| ok(200, None))
                .unwrap_or_else(refused),
            Op::Reserve {
                customer,
                sku,
                qty,
                ttl_ms,
                ..
            } => self
                .engine
                .reserve(&ReserveRequest {
                    customer_id: customer,
                    items: &[ItemRequest { sku, qty: *qty }],
                    ttl_ms: (*ttl_ms > 0).then_some(*ttl_ms),
                    fill: Fill::All,
                })
                .map(|r| ok(201, Some(r.id.to_string())))
                .unwrap_or_else(refused),
            Op::Confirm { id, .. } => id_of(id)
                .and_then(|id| self.engine.confirm(id, None))
                .map(|_| ok(200, None))
                .unwrap_or_else(refused),
            Op::Release { id, .. } => id_of(id)
                .and_then(|id| self.engine.release(id))
                .map(|_| ok(200, None))
                .unwrap_or_else(refused),
            Op::Payment { .. } | Op::Webhook { .. } => Answer {
                code: Some(PAYMENTS_NEED_HTTP.into()),
                ..Answer::default()
            },
        }
    }

    fn set_stock(&self, sku: &str, stock: u64, limit: u64) -> Result<(), String> {
        self.engine
            .set_stock(sku, stock, Some(limit))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn figures(&self, sku: &str) -> Result<Figures, String> {
        let v = self.engine.sku(sku).map_err(|e| e.to_string())?;
        Ok(Figures {
            stock: v.stock,
            held: v.held,
            sold: v.sold,
        })
    }
}

impl Default for InprocTarget {
    fn default() -> Self {
        InprocTarget::new()
    }
}

/// For tests: holds every reservation whatever the stock (so it oversells)
/// and counts what it did.
#[derive(Default)]
pub struct FakeTarget {
    pub skus: parking_lot::Mutex<std::collections::HashMap<String, Figures>>,
    next: std::sync::atomic::AtomicU64,
    holds: parking_lot::Mutex<std::collections::HashMap<String, (String, u64)>>,
}

impl FakeTarget {
    async fn call(&self, op: &Op) -> Result<Answer, String> {
        let mut skus = self.skus.lock();
        Ok(match op {
            Op::Browse { .. } => Answer {
                status: 200,
                ..Default::default()
            },
            Op::Reserve { sku, qty, .. } => {
                let f = skus.get_mut(sku).ok_or("no sku")?;
                f.held += u64::from(*qty); // no stock check: the fault
                let id = format!(
                    "f{}",
                    self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                self.holds
                    .lock()
                    .insert(id.clone(), (sku.clone(), u64::from(*qty)));
                Answer {
                    status: 201,
                    id: Some(id),
                    ..Answer::default()
                }
            }
            Op::Confirm { id, .. } | Op::Release { id, .. } => {
                let (sku, qty) = self.holds.lock().remove(id).ok_or("no hold")?;
                let f = skus.get_mut(&sku).ok_or("no sku")?;
                f.held -= qty;
                if matches!(op, Op::Confirm { .. }) {
                    f.sold += qty;
                }
                Answer {
                    status: 200,
                    ..Default::default()
                }
            }
            Op::Payment { .. } | Op::Webhook { .. } => return Err(PAYMENTS_NEED_HTTP.into()),
        })
    }
}
