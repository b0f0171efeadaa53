//! Browsers (contract v1.2, "Security"): `events.public_types` lets a
//! page's `EventSource` (which cannot send a key) read stock events, and
//! only those; `server.cors_origins` sends CORS headers on `GET
//! /v1/skus/{sku}` and `GET /v1/events` and answers their preflights.
//! Without either key nothing changes. A real server on a real socket.

mod common;

use common::server::{send_to, Server};
use common::sse::Sse;

const ADMIN: &str = "browser-admin-key-0123456789";
const SHOP: &str = "https://shop.example";

fn server(tag: &str, extra: &str) -> Server {
    let config = format!("[admin]\nlisten = \"\"\n[auth]\nadmin_keys = [\"{ADMIN}\"]\n{extra}");
    Server::with_config(tag, &config).0
}

fn browser_server(tag: &str) -> Server {
    server(tag, &format!(
        "[server]\ncors_origins = [\"{SHOP}\", \"http://localhost:3000\"]\n[events]\npublic_types = [\"stock.out\", \"stock.back\"]\n"
    ))
}

fn admin(s: &Server, method: &str, path: &str, body: &str) -> u16 {
    let auth = format!("Authorization: Bearer {ADMIN}");
    send_to(
        s.addr,
        method,
        path,
        &[&auth, "Content-Type: application/json"],
        body.as_bytes(),
    )
    .status
}

#[test]
fn a_stream_of_public_types_needs_no_key_and_gets_its_events() {
    let s = browser_server("browsers-public");
    let mut open = Sse::open(&s, "/v1/events?types=stock.out,stock.back", &[]);
    assert_eq!(open.status, 200, "{}", open.head);
    assert_eq!(admin(&s, "PUT", "/v1/skus/tee", r#"{"stock":1}"#), 201);
    let r = admin(
        &s,
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c1","items":[{"sku":"tee","qty":1}]}"#,
    );
    assert_eq!(r, 201);
    let (_, kind, data) = open.event();
    assert_eq!(
        (kind.as_str(), &data["sku"]),
        ("stock.out", &serde_json::json!("tee"))
    );
    // Anything else still needs a key: a hold type, every type, a bad key.
    for (path, headers) in [
        ("/v1/events?types=stock.out,hold.confirmed", vec![]),
        ("/v1/events", vec![]),
        ("/v1/events?types=", vec![]),
        (
            "/v1/events?types=stock.out",
            vec!["Authorization: Bearer wrong-key-0123456789"],
        ),
    ] {
        let refused = Sse::open(&s, path, &headers);
        assert_eq!(refused.status, 401, "{path} {headers:?}: {}", refused.head);
    }
    let keyed = format!("Authorization: Bearer {ADMIN}");
    assert_eq!(Sse::open(&s, "/v1/events", &[&keyed]).status, 200);
}

#[test]
fn without_public_types_every_stream_needs_a_key() {
    let s = server("browsers-keyed", "");
    let refused = Sse::open(&s, "/v1/events?types=stock.out", &[]);
    assert_eq!(refused.status, 401, "{}", refused.head);
}

#[test]
fn listed_origins_get_cors_headers_and_preflights_on_the_two_routes() {
    let s = browser_server("browsers-cors");
    let origin = format!("Origin: {SHOP}");
    // The preflight a page's fetch with a key sends.
    let pre = send_to(
        s.addr,
        "OPTIONS",
        "/v1/skus/tee",
        &[
            &origin,
            "Access-Control-Request-Method: GET",
            "Access-Control-Request-Headers: authorization",
        ],
        b"",
    );
    assert_eq!(pre.status, 204, "{}", pre.head);
    assert!(
        pre.head
            .contains(&format!("access-control-allow-origin: {SHOP}")),
        "{}",
        pre.head
    );
    assert!(
        pre.head.contains("access-control-allow-methods: get"),
        "{}",
        pre.head
    );
    assert!(
        pre.head
            .contains("access-control-allow-headers: authorization, last-event-id"),
        "{}",
        pre.head
    );
    assert!(pre.head.contains("vary: origin"), "{}", pre.head);
    // An origin not listed: answered, without the headers (the browser refuses).
    let evil = send_to(
        s.addr,
        "OPTIONS",
        "/v1/events",
        &["Origin: https://evil.example"],
        b"",
    );
    assert_eq!(evil.status, 204);
    assert!(
        !evil.head.contains("access-control-allow-origin"),
        "{}",
        evil.head
    );
    // GET answers carry them, errors included (so a page can read them).
    assert_eq!(admin(&s, "PUT", "/v1/skus/tee", r#"{"stock":3}"#), 201);
    let auth = format!("Authorization: Bearer {ADMIN}");
    for path in ["/v1/skus/tee", "/v1/skus/nope"] {
        let got = send_to(s.addr, "GET", path, &[&origin, &auth], b"");
        assert!([200, 404].contains(&got.status), "{path}: {}", got.status);
        assert!(
            got.head
                .contains(&format!("access-control-allow-origin: {SHOP}")),
            "{path}: {}",
            got.head
        );
    }
    let stream = Sse::open(&s, "/v1/events?types=stock.out", &[&origin]);
    assert_eq!(stream.status, 200);
    assert!(
        stream
            .head
            .contains(&format!("access-control-allow-origin: {SHOP}")),
        "{}",
        stream.head
    );
    // Not on other routes or methods.
    let put = send_to(
        s.addr,
        "PUT",
        "/v1/skus/tee",
        &[&origin, &auth, "Content-Type: application/json"],
        br#"{"stock":4}"#,
    );
    assert_eq!(put.status, 200);
    assert!(
        !put.head.contains("access-control-allow-origin"),
        "{}",
        put.head
    );
    let other = send_to(s.addr, "OPTIONS", "/v1/reservations", &[&origin], b"");
    assert_eq!(other.status, 405, "{}", other.head);
}

#[test]
fn without_cors_origins_nothing_changes() {
    let s = server("browsers-plain", "");
    let pre = send_to(
        s.addr,
        "OPTIONS",
        "/v1/skus/tee",
        &[&format!("Origin: {SHOP}")],
        b"",
    );
    assert_eq!(pre.status, 405, "{}", pre.head);
    let auth = format!("Authorization: Bearer {ADMIN}");
    let got = send_to(
        s.addr,
        "GET",
        "/v1/skus/tee",
        &[&format!("Origin: {SHOP}"), &auth],
        b"",
    );
    assert!(
        !got.head.contains("access-control-allow-origin"),
        "{}",
        got.head
    );
}
