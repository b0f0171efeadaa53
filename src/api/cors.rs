//! Browsers (contract v1.2, "Security"): CORS headers on `GET
//! /v1/skus/{sku}` and `GET /v1/events` for the origins in
//! `server.cors_origins` (or any, with `*`), and their `OPTIONS`
//! preflights answered. Nothing changes while the list is empty.

use hyper::header::{HeaderMap, HeaderValue, ORIGIN, VARY};
use hyper::{Response, StatusCode};

use super::problem::Body;

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE_S: u32 = 600;

/// The origins that get CORS headers.
pub struct Cors {
    origins: Vec<String>,
    any: bool,
}

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.to_vec(),
        }
    }

    /// Whether any origin is listed.
    pub fn is_on(&self) -> bool {
        !self.origins.is_empty()
    }

    /// The `Access-Control-Allow-Origin` for a request: `*` with `*`
    /// listed, else its `Origin` if listed.
    fn allow(&self, request: &HeaderMap) -> Option<HeaderValue> {
        if self.any {
            return Some(HeaderValue::from_static("*"));
        }
        let origin = request.get(ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(text))
            .then(|| origin.clone())
    }

    /// Adds the CORS headers to `resp`, the answer to a `GET` of a route
    /// that has them, when its origin is allowed.
    pub fn decorate<B>(&self, request: &HeaderMap, resp: &mut Response<B>) {
        let Some(allow) = self.allow(request) else {
            return;
        };
        let headers = resp.headers_mut();
        headers.insert("access-control-allow-origin", allow);
        headers.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("retry-after"),
        );
        if !self.any {
            headers.append(VARY, HeaderValue::from_static("origin"));
        }
    }

    /// The answer to an `OPTIONS` preflight of a route that has CORS: 204,
    /// with the allowed method and headers when its origin is allowed
    /// (without them, the browser refuses the request).
    pub fn preflight(&self, request: &HeaderMap) -> Response<Body> {
        let mut resp = Response::new(Body::default());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let headers = resp.headers_mut();
        headers.insert(
            hyper::header::ALLOW,
            HeaderValue::from_static("GET, OPTIONS"),
        );
        if let Some(allow) = self.allow(request) {
            headers.insert("access-control-allow-origin", allow);
            headers.insert(
                "access-control-allow-methods",
                HeaderValue::from_static("GET"),
            );
            headers.insert(
                "access-control-allow-headers",
                HeaderValue::from_static("authorization, last-event-id"),
            );
            headers.insert(
                "access-control-max-age",
                HeaderValue::from(PREFLIGHT_MAX_AGE_S),
            );
        }
        if !self.any {
            headers.append(VARY, HeaderValue::from_static("origin"));
        }
        resp
    }
}

/// Whether `path` is a route with CORS: `/v1/events`, `/v1/skus/{sku}`.
pub fn applies(path: &str) -> bool {
    path == "/v1/events"
        || path
            .strip_prefix("/v1/skus/")
            .is_some_and(|sku| !sku.is_empty() && !sku.contains('/'))
}
