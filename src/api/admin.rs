//! The operators' listener (`admin.listen`): a live status page at `/`
//! (one HTML file, `admin.html`, compiled into the binary: no build step),
//! and `/metrics` and `/v1/stats` as on the API listener. On an address
//! other than loopback every request needs an admin key: `Authorization:
//! Bearer KEY`, or HTTP Basic with the key as the password (what a browser
//! sends after asking for it).

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};

use super::problem::{Body, Problem};
use super::{json_response, metrics_response, stats, AppState};

/// The status page.
const PAGE: &str = include_str!("admin.html");

/// Answers one request on the admin listener.
pub fn route<B>(state: &AppState, req: &Request<B>, key_required: bool) -> Response<Body> {
    answer(state, req, key_required).unwrap_or_else(Problem::response)
}

fn answer<B>(
    state: &AppState,
    req: &Request<B>,
    key_required: bool,
) -> Result<Response<Body>, Problem> {
    let path = req.uri().path();
    if key_required && !presented_key(req).is_some_and(|k| state.settings.load().keys.is_admin(&k))
    {
        let mut resp = Problem::unauthorized(
            "the admin listener is not on loopback: an admin key is required \
             (Authorization: Bearer KEY, or Basic with the key as the password)",
        )
        .response();
        resp.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"stampede admin\", charset=\"UTF-8\""),
        );
        return Ok(resp);
    }
    let known = matches!(path, "/" | "/metrics" | "/v1/stats" | "/healthz");
    if !known {
        return Err(Problem::not_found(format!(
            "no route for {path} on the admin listener (/, /metrics, /v1/stats)"
        )));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp =
            Problem::method_not_allowed(format!("{path} does not take {}", req.method()))
                .response();
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(resp);
    }
    Ok(match path {
        "/" => {
            let mut resp = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
            let h = resp.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        "/metrics" => metrics_response(state),
        "/healthz" => json_response(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        _ => {
            if state.store().is_none() {
                return Err(Problem::not_ready("recovering: replaying the log"));
            }
            let mut resp = json_response(StatusCode::OK, &stats(state));
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
    })
}

/// The key a request presents: a Bearer token, or a Basic password.
fn presented_key<B>(req: &Request<B>) -> Option<String> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    if let Some(key) = value.strip_prefix("Bearer ") {
        return Some(key.to_owned());
    }
    let encoded = value.strip_prefix("Basic ")?;
    // A header longer than any key's encoding is not a key.
    if encoded.len() > 1024 {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> Request<()> {
        Request::builder()
            .uri("/")
            .header(AUTHORIZATION, value)
            .body(())
            .unwrap()
    }

    #[test]
    fn a_key_comes_as_bearer_or_as_a_basic_password() {
        assert_eq!(
            presented_key(&with_auth("Bearer k1")).as_deref(),
            Some("k1")
        );
        // "ops:admin-key-0123456789"
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:admin-key-0123456789");
        assert_eq!(
            presented_key(&with_auth(&format!("Basic {basic}"))).as_deref(),
            Some("admin-key-0123456789")
        );
        assert_eq!(presented_key(&with_auth("Basic !!!")), None);
        assert_eq!(presented_key(&with_auth("Digest x")), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("justakey");
        assert_eq!(
            presented_key(&with_auth(&format!("Basic {no_colon}"))),
            None
        );
    }

    #[test]
    fn the_page_polls_the_stats_at_least_once_a_second() {
        assert!(
            PAGE.contains("fetch(\"/v1/stats\""),
            "the page reads /v1/stats"
        );
        assert!(
            PAGE.contains("const PERIOD_MS = 1000;"),
            "and does so every second"
        );
    }
}
