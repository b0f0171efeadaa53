//! The HTTP contract over a real socket: one test per rule of
//! `../shared/api-contract.md` that the server implements so far.

mod common;

use common::server::{on_redis, temp_dir, Server};

fn ready(tag: &str) -> (Server, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let mut server = Server::start(&dir);
    server.wait_ready();
    (server, dir)
}

fn reserve(s: &Server, customer: &str, items: &str) -> common::server::Reply {
    s.json(
        "POST",
        "/v1/reservations",
        &format!(r#"{{"customer_id":"{customer}","items":{items}}}"#),
    )
}

#[test]
fn put_sku_creates_then_updates_and_get_shows_the_view() {
    let (s, _dir) = ready("api-sku");
    let r = s.json(
        "PUT",
        "/v1/skus/hot-1",
        r#"{"stock":100,"customer_limit":2}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json(),
        serde_json::json!({"sku":"hot-1","stock":100,"available":100,"held":0,"sold":0,"customer_limit":2})
    );
    assert_eq!(
        s.json("PUT", "/v1/skus/hot-1", r#"{"stock":50}"#).status,
        200
    );
    let v = s.request("GET", "/v1/skus/hot-1").json();
    assert_eq!(
        (v["stock"].as_u64(), v["customer_limit"].as_u64()),
        (Some(50), Some(2))
    );
    let r = s.json("POST", "/v1/skus/hot-1/adjust", r#"{"delta":-10}"#);
    assert_eq!((r.status, r.json()["stock"].as_u64()), (200, Some(40)));
}

#[test]
fn unknown_sku_is_404_on_reads_and_422_on_reservations() {
    let (s, _dir) = ready("api-unknown");
    let r = s.request("GET", "/v1/skus/nope");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("unknown_sku"))
    );
    assert_eq!(r.json()["sku"], "nope");
    let r = reserve(&s, "c-1", r#"[{"sku":"nope","qty":1}]"#);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (422, Some("unknown_sku"))
    );
}

#[test]
fn reserve_is_201_with_location_and_get_returns_it() {
    let (s, _dir) = ready("api-reserve");
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    let r = reserve(&s, "c-42", r#"[{"sku":"a","qty":2}]"#);
    assert_eq!(r.status, 201, "{}", r.body);
    let hold = r.json();
    let id = hold["id"].as_str().unwrap().to_owned();
    assert_eq!(r.header("location"), Some(format!("/v1/reservations/{id}")));
    assert_eq!(hold["status"], "held");
    assert_eq!(hold["customer_id"], "c-42");
    assert_eq!(hold["items"], serde_json::json!([{"sku":"a","qty":2}]));
    assert_eq!(hold["order_ref"], serde_json::Value::Null);
    assert_eq!(
        hold["expires_at_ms"].as_u64().unwrap() - hold["created_at_ms"].as_u64().unwrap(),
        600_000
    );
    assert_eq!(
        s.request("GET", &format!("/v1/reservations/{id}")).json(),
        hold
    );
    assert_eq!(s.request("GET", "/v1/skus/a").json()["available"], 3);
}

#[test]
fn insufficient_stock_is_409_and_holds_nothing() {
    let (s, _dir) = ready("api-short");
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    s.json("PUT", "/v1/skus/b", r#"{"stock":1}"#);
    let r = reserve(&s, "c", r#"[{"sku":"a","qty":1},{"sku":"b","qty":2}]"#);
    assert_eq!(r.status, 409);
    let p = r.json();
    assert_eq!(
        (
            p["code"].as_str(),
            p["sku"].as_str(),
            p["requested"].as_u64(),
            p["available"].as_u64()
        ),
        (Some("insufficient_stock"), Some("b"), Some(2), Some(1))
    );
    assert_eq!(p["type"], "urn:stampede:problem:insufficient_stock");
    assert!(r.head.contains("content-type: application/problem+json"));
    assert_eq!(s.request("GET", "/v1/skus/a").json()["held"], 0);
}

#[test]
fn partial_fill_holds_what_is_available() {
    let (s, _dir) = ready("api-partial");
    s.json("PUT", "/v1/skus/a", r#"{"stock":1}"#);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":3}],"fill":"partial"}"#,
    );
    assert_eq!(
        (r.status, r.json()["items"][0]["qty"].as_u64()),
        (201, Some(1))
    );
}

#[test]
fn customer_limit_is_422() {
    let (s, _dir) = ready("api-limit");
    s.json("PUT", "/v1/skus/hot", r#"{"stock":10,"customer_limit":1}"#);
    assert_eq!(reserve(&s, "c", r#"[{"sku":"hot","qty":1}]"#).status, 201);
    let r = reserve(&s, "c", r#"[{"sku":"hot","qty":1}]"#);
    let p = r.json();
    assert_eq!(
        (r.status, p["code"].as_str()),
        (422, Some("customer_limit_exceeded"))
    );
    assert_eq!(
        (p["limit"].as_u64(), p["current"].as_u64()),
        (Some(1), Some(1))
    );
}

#[test]
fn confirm_release_extend_follow_the_states() {
    let (s, _dir) = ready("api-states");
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    let id = |r: common::server::Reply| r.json()["id"].as_str().unwrap().to_owned();
    let a = id(reserve(&s, "c", r#"[{"sku":"a","qty":1}]"#));
    let r = s.json(
        "POST",
        &format!("/v1/reservations/{a}/confirm"),
        r#"{"order_ref":"o-1"}"#,
    );
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("confirmed"))
    );
    // Idempotent, the first order_ref stands; an empty body is fine.
    let r = s.request("POST", &format!("/v1/reservations/{a}/confirm"));
    assert_eq!(
        (r.status, r.json()["order_ref"].as_str()),
        (200, Some("o-1"))
    );
    let r = s.request("POST", &format!("/v1/reservations/{a}/release"));
    let p = r.json();
    assert_eq!(
        (
            r.status,
            p["code"].as_str(),
            p["status"].as_u64(),
            p["hold_status"].as_str()
        ),
        (409, Some("hold_not_active"), Some(409), Some("confirmed"))
    );
    let b = id(reserve(&s, "c", r#"[{"sku":"a","qty":1}]"#));
    let r = s.json(
        "POST",
        &format!("/v1/reservations/{b}/extend"),
        r#"{"ttl_ms":1000}"#,
    );
    assert_eq!(r.status, 200);
    let (created, expires) = (
        r.json()["created_at_ms"].as_u64().unwrap(),
        r.json()["expires_at_ms"].as_u64().unwrap(),
    );
    assert!(
        expires > created && expires <= created + 1000 + 5_000,
        "{created} {expires}"
    );
    assert_eq!(
        s.request("POST", &format!("/v1/reservations/{b}/release"))
            .json()["status"],
        "released"
    );
    assert_eq!(
        s.request("POST", &format!("/v1/reservations/{b}/release"))
            .status,
        200,
        "idempotent"
    );
    let r = s.request("POST", &format!("/v1/reservations/{b}/confirm"));
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("hold_not_active"))
    );
    let v = s.request("GET", "/v1/skus/a").json();
    assert_eq!((v["sold"].as_u64(), v["held"].as_u64()), (Some(1), Some(0)));
}

#[test]
fn confirm_after_expiry_is_410() {
    let (s, _dir) = ready("api-expiry");
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":1}],"ttl_ms":1}"#,
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let expires = r.json()["expires_at_ms"].as_u64().unwrap();
    // A 1 ms hold: wait (reading only, changing nothing) until it reads
    // as expired, then confirm.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.request("GET", &format!("/v1/reservations/{id}")).json()["status"] != "expired" {
        assert!(
            std::time::Instant::now() < deadline,
            "a 1 ms hold never expired"
        );
    }
    let r = s.request("POST", &format!("/v1/reservations/{id}/confirm"));
    assert_eq!(r.status, 410, "{}", r.body);
    let p = r.json();
    assert_eq!(
        (p["code"].as_str(), p["expired_at_ms"].as_u64()),
        (Some("hold_expired"), Some(expires))
    );
}

#[test]
fn unknown_reservation_is_404() {
    let (s, _dir) = ready("api-404");
    for path in [
        "/v1/reservations/r_000000000000000000000000000a",
        "/v1/reservations/bogus",
    ] {
        let r = s.request("GET", path);
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
}

#[test]
fn bad_bodies_are_400_415_413_and_change_nothing() {
    let (s, _dir) = ready("api-bodies");
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":1}],"colour":"red"}"#,
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("colour"))
    );
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":"one"}]}"#,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_request"))
    );
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":0}]}"#,
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("items[0].qty"))
    );
    let r = s.json("POST", "/v1/reservations", "{not json");
    assert_eq!(r.status, 400);
    let r = s.send(
        "POST",
        "/v1/reservations",
        &["Content-Type: text/plain"],
        br#"{"customer_id":"c"}"#,
    );
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let big = format!(r#"{{"customer_id":"{}"}}"#, "x".repeat(70_000));
    let r = s.json("POST", "/v1/reservations", &big);
    let p = r.json();
    assert_eq!(
        (r.status, p["code"].as_str(), p["limit"].as_u64()),
        (413, Some("payload_too_large"), Some(65_536))
    );
    // An array of the fields in order is not an object (serde would take it).
    let r = s.json("POST", "/v1/reservations", r#"["c",[{"sku":"a","qty":1}]]"#);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.json("PUT", "/v1/skus/a", "[9]");
    assert_eq!(r.status, 400, "{}", r.body);
    // A number with a fractional part is not an integer.
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":1.5}]}"#,
    );
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("items[0].qty"))
    );
    let v = s.request("GET", "/v1/skus/a").json();
    assert_eq!(
        (v["held"].as_u64(), v["available"].as_u64()),
        (Some(0), Some(5))
    );
    // And the server keeps serving.
    assert_eq!(s.request("GET", "/healthz").status, 200);
}

#[test]
fn wrong_method_is_405_with_allow() {
    let (s, _dir) = ready("api-405");
    let r = s.request("DELETE", "/v1/skus/a");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert_eq!(r.header("allow").as_deref(), Some("get, put"));
    assert_eq!(s.request("GET", "/v1/nothing/here").status, 404);
}

#[test]
fn auth_roles_with_keys() {
    let dir = temp_dir("api-auth");
    let admin = "admin-key-0123456789abcdef";
    let shop = "shop-key-0123456789abcdef";
    let mut s = Server::start_with(
        &dir,
        &[],
        &[
            ("STAMPEDE_ADMIN_KEYS", admin),
            ("STAMPEDE_STOREFRONT_KEYS", shop),
        ],
    );
    s.wait_ready();
    let as_key = |key: &str, method: &str, path: &str, body: &str| {
        let auth = format!("Authorization: Bearer {key}");
        s.send(
            method,
            path,
            &["Content-Type: application/json", &auth],
            body.as_bytes(),
        )
    };
    assert_eq!(s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#).status, 401);
    assert_eq!(
        as_key("wrong-key-0123456789abcdef", "GET", "/v1/skus/a", "").status,
        401
    );
    let r = as_key(shop, "PUT", "/v1/skus/a", r#"{"stock":5}"#);
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (403, Some("forbidden"))
    );
    assert_eq!(
        as_key(admin, "PUT", "/v1/skus/a", r#"{"stock":5}"#).status,
        201
    );
    assert_eq!(as_key(shop, "GET", "/v1/skus/a", "").status, 200);
    let r = as_key(
        shop,
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":1}]}"#,
    );
    assert_eq!(r.status, 201);
    // Stats are for admins; health and metrics need no key.
    assert_eq!(as_key(shop, "GET", "/v1/stats", "").status, 403);
    assert_eq!(as_key(admin, "GET", "/v1/stats", "").status, 200);
    assert_eq!(s.request("GET", "/healthz").status, 200);
    assert_eq!(s.request("GET", "/metrics").status, 200);
}

#[test]
fn acknowledged_reservations_survive_kill_9() {
    let dir = temp_dir("api-kill");
    let mut s = Server::start(&dir);
    s.wait_ready();
    s.json("PUT", "/v1/skus/a", r#"{"stock":50}"#);
    let mut ids = Vec::new();
    for i in 0..20 {
        let r = reserve(&s, &format!("c{i}"), r#"[{"sku":"a","qty":1}]"#);
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let confirmed = &ids[0];
    assert_eq!(
        s.request("POST", &format!("/v1/reservations/{confirmed}/confirm"))
            .status,
        200
    );
    let mut s = s.restart("-KILL");
    s.wait_ready();
    for id in &ids {
        assert_eq!(
            s.request("GET", &format!("/v1/reservations/{id}")).status,
            200,
            "{id} lost"
        );
    }
    assert_eq!(
        s.request("GET", &format!("/v1/reservations/{confirmed}"))
            .json()["status"],
        "confirmed"
    );
    let v = s.request("GET", "/v1/skus/a").json();
    assert_eq!(
        (v["held"].as_u64(), v["sold"].as_u64()),
        (Some(19), Some(1))
    );
}

#[test]
fn an_idempotency_key_replays_the_first_answer_and_changes_nothing() {
    let dir = temp_dir("api-idem");
    let mut s = Server::start(&dir);
    s.wait_ready();
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    let body = br#"{"customer_id":"c","items":[{"sku":"a","qty":2}]}"#;
    let with_key = |s: &Server, key: &str, path: &str, body: &[u8]| {
        let k = format!("Idempotency-Key: {key}");
        s.send("POST", path, &["Content-Type: application/json", &k], body)
    };
    let first = with_key(&s, "k-1", "/v1/reservations", body);
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = with_key(&s, "k-1", "/v1/reservations", body);
    assert_eq!(
        (again.status, again.body.as_str()),
        (201, first.body.as_str())
    );
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(
        s.request("GET", "/v1/skus/a").json()["held"],
        2,
        "the retry held nothing more"
    );
    // Same key, other body or other path: 422.
    let other = with_key(
        &s,
        "k-1",
        "/v1/reservations",
        br#"{"customer_id":"c","items":[{"sku":"a","qty":1}]}"#,
    );
    assert_eq!(
        (other.status, other.json()["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    let id = first.json()["id"].as_str().unwrap().to_owned();
    let other = with_key(&s, "k-1", &format!("/v1/reservations/{id}/release"), b"");
    assert_eq!(other.status, 422);
    // Error answers are kept too: a retry does not get another chance.
    let short = with_key(
        &s,
        "k-2",
        "/v1/reservations",
        br#"{"customer_id":"d","items":[{"sku":"a","qty":9}]}"#,
    );
    assert_eq!(short.status, 409);
    s.json("PUT", "/v1/skus/a", r#"{"stock":50}"#);
    let retry = with_key(
        &s,
        "k-2",
        "/v1/reservations",
        br#"{"customer_id":"d","items":[{"sku":"a","qty":9}]}"#,
    );
    assert_eq!(
        (retry.status, retry.header("idempotent-replayed").as_deref()),
        (409, Some("true"))
    );
    // A bad key is refused.
    let bad = with_key(&s, "not a key", "/v1/reservations", body);
    assert_eq!(
        (bad.status, bad.json()["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );
    // The answers survive kill -9 ...
    let mut s = s.restart("-KILL");
    s.wait_ready();
    let after = with_key(&s, "k-1", "/v1/reservations", body);
    assert_eq!(
        (after.status, after.body.as_str()),
        (201, first.body.as_str())
    );
    assert_eq!(s.request("GET", "/v1/skus/a").json()["held"], 2);
    // ... and a checkpoint at a clean shutdown.
    let mut s = s.restart("-TERM");
    s.wait_ready();
    let after = with_key(&s, "k-1", "/v1/reservations", body);
    assert_eq!(
        (after.status, after.header("idempotent-replayed").as_deref()),
        (201, Some("true"))
    );
    assert_eq!(s.request("GET", "/v1/skus/a").json()["held"], 2);
}

#[test]
fn batch_applies_ops_in_order_and_answers_each() {
    let (s, _dir) = ready("api-batch");
    s.json("PUT", "/v1/skus/a", r#"{"stock":2}"#);
    let r = s.json(
        "POST",
        "/v1/batch",
        r#"{"ops":[
            {"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}],"idempotency_key":"b-1"},
            {"op":"reserve","customer_id":"c2","items":[{"sku":"a","qty":5}]},
            {"op":"reserve","customer_id":"c3","items":[{"sku":"a","qty":1}]},
            {"op":"frobnicate"}
        ]}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![201, 409, 201, 400]);
    assert_eq!(results[1]["body"]["code"], "insufficient_stock");
    let first = results[0]["body"]["id"].as_str().unwrap().to_owned();
    let third = results[2]["body"]["id"].as_str().unwrap().to_owned();
    // Confirm and release by id, and replay the first op by its key.
    let r = s.json(
        "POST",
        "/v1/batch",
        &format!(
            r#"{{"ops":[
                {{"op":"confirm","id":"{first}","order_ref":"o-1"}},
                {{"op":"release","id":"{third}"}},
                {{"op":"reserve","customer_id":"c1","items":[{{"sku":"a","qty":1}}],"idempotency_key":"b-1"}},
                {{"op":"confirm"}}
            ]}}"#
        ),
    );
    let results = r.json()["results"].as_array().unwrap().clone();
    let statuses: Vec<u64> = results
        .iter()
        .map(|x| x["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 200, 201, 400]);
    assert_eq!(results[0]["body"]["status"], "confirmed");
    assert_eq!(results[1]["body"]["status"], "released");
    assert_eq!(
        results[2]["body"]["id"],
        first.as_str(),
        "replayed, not held again"
    );
    let v = s.request("GET", "/v1/skus/a").json();
    assert_eq!((v["sold"].as_u64(), v["held"].as_u64()), (Some(1), Some(0)));
    // Bounds.
    let r = s.json("POST", "/v1/batch", r#"{"ops":[]}"#);
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("ops")));
    let many = format!(
        r#"{{"ops":[{}]}}"#,
        vec![r#"{"op":"release","id":"x"}"#; 1001].join(",")
    );
    assert_eq!(s.json("POST", "/v1/batch", &many).status, 400);
}

/// A batch op answers exactly what its endpoint would: ops of every shape
/// (the common ones the batch reads straight into typed ops, and the odd
/// ones it rebuilds as requests: null fields an endpoint refuses, escaped
/// strings, ids a path would decode), each sent once in a batch and once
/// to its endpoint, in the same state. Ids and times differ between the
/// two holds and are masked; everything else must be equal.
#[test]
fn a_batch_op_answers_what_its_endpoint_answers() {
    let (s, _dir) = ready("api-batch-same");
    s.json("PUT", "/v1/skus/a", r#"{"stock":1000}"#);
    s.json("PUT", "/v1/skus/b", r#"{"stock":1000}"#);
    let hold = |c: &str| {
        let r = reserve(&s, c, r#"[{"sku":"a","qty":1},{"sku":"b","qty":2}]"#);
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let mask = |mut v: serde_json::Value| {
        for f in ["id", "created_at_ms", "expires_at_ms"] {
            if v.get(f).is_some() {
                v[f] = "masked".into();
            }
        }
        v
    };
    // (op with $ID for a fresh hold, or a literal id)
    let ops = [
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":2},{"sku":"b","qty":1}],"ttl_ms":null,"fill":"partial","wait_ms":null}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}],"ttl_ms":5000,"fill":"all","wait_ms":10}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}],"order_ref":null}"#,
        r#"{"op":"reserve","customer_id":"c\u0031","items":[{"sku":"\u0061","qty":1}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1.5}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":0}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"nope","qty":1}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":5000}]}"#,
        r#"{"op":"reserve","customer_id":"c 1","items":[{"sku":"a","qty":1}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1,"x":1}]}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}],"ttl_ms":0}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}],"fill":"most"}"#,
        r#"{"op":"reserve","customer_id":"c1","items":[{"sku":"a","qty":1}],"customer_id":"c2"}"#,
        r#"{"op":"reserve","customer_id":null,"items":[{"sku":"a","qty":1}]}"#,
        r#"{"op":"confirm","id":"$ID"}"#,
        r#"{"op":"confirm","id":"$ID","order_ref":"o-1"}"#,
        r#"{"op":"confirm","id":"$ID","order_ref":null}"#,
        r#"{"op":"confirm","id":"$ID","ttl_ms":null}"#,
        r#"{"op":"confirm","id":"$ID","items":[]}"#,
        r#"{"op":"confirm","id":"r_0000000000000000000000000000"}"#,
        r#"{"op":"confirm","id":"not-an-id"}"#,
        r#"{"op":"release","id":"$ID"}"#,
        r#"{"op":"release","id":"$ID","order_ref":null}"#,
        r#"{"op":"release","id":"$ID","ttl_ms":5}"#,
        r#"{"op":"extend","id":"$ID","ttl_ms":1000}"#,
        r#"{"op":"extend","id":"$ID","ttl_ms":99999999999}"#,
        r#"{"op":"extend","id":"$ID","ttl_ms":null}"#,
        r#"{"op":"extend","id":"$ID","ttl_ms":-1}"#,
        r#"{"op":"extend","id":"$ID"}"#,
    ];
    for (n, op) in ops.iter().enumerate() {
        let (batch_op, single_op) = if op.contains("$ID") {
            (
                op.replace("$ID", &hold(&format!("h-{n}"))),
                op.replace("$ID", &hold(&format!("h-{n}"))),
            )
        } else {
            (op.to_string(), op.to_string())
        };
        let batch = s.json("POST", "/v1/batch", &format!(r#"{{"ops":[{batch_op}]}}"#));
        assert_eq!(batch.status, 200, "{op}: {}", batch.body);
        let result = batch.json()["results"][0].clone();
        // The endpoint's own request: the op's other fields are its body.
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&single_op).unwrap();
        let kind = fields.remove("op").unwrap();
        let kind = kind.as_str().unwrap();
        let path = match fields.remove("id") {
            None => "/v1/reservations".to_owned(),
            Some(id) => format!("/v1/reservations/{}/{kind}", id.as_str().unwrap()),
        };
        let body = if fields.is_empty() {
            String::new()
        } else {
            serde_json::Value::Object(fields).to_string()
        };
        let single = s.json("POST", &path, &body);
        assert_eq!(
            result["status"].as_u64(),
            Some(u64::from(single.status)),
            "{op}: batch {result}, endpoint {}",
            single.body
        );
        assert_eq!(
            mask(result["body"].clone()),
            mask(single.json()),
            "{op}: batch against endpoint"
        );
    }
}

#[test]
fn metrics_and_stats_report_what_happened() {
    let (s, _dir) = ready("api-metrics");
    s.json("PUT", "/v1/skus/a", r#"{"stock":5}"#);
    reserve(&s, "c", r#"[{"sku":"a","qty":1}]"#);
    reserve(&s, "c", r#"[{"sku":"a","qty":9}]"#);
    let m = s.request("GET", "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.head.contains("content-type: text/plain"), "{}", m.head);
    for line in [
        "stampede_http_requests_total{route=\"reservations\",status=\"201\"} 1",
        "stampede_http_requests_total{route=\"reservations\",status=\"409\"} 1",
        "stampede_http_requests_total{route=\"sku\",status=\"201\"} 1",
        "# TYPE stampede_http_request_duration_seconds histogram",
        "stampede_http_request_duration_seconds_count{route=\"reservations\"} 2",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            m.body
        );
    }
    // (An outcome is named customer_limit_exceeded: a label key naming a
    // customer is what must never appear.)
    assert!(
        !m.body.contains("sku=")
            && !m.body.contains("customer=")
            && !m.body.contains("customer_id="),
        "no unbounded labels"
    );
    let st = s.request("GET", "/v1/stats");
    assert_eq!(st.status, 200);
    let st = st.json();
    if on_redis() {
        // The state and its figures live in Redis; the node says which.
        assert_eq!(st["store"]["kind"], "redis", "{st}");
        assert_eq!(st["store"]["durability"], "fsync", "{st}");
        return;
    }
    assert_eq!(st["store"]["kind"], "embedded", "{st}");
    assert!(m.body.lines().any(|l| l == "stampede_active_holds 1"));
    let held: u64 = st["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["active_holds"].as_u64().unwrap())
        .sum();
    assert_eq!(held, 1);
    assert!(st["log"]["records"].as_u64().unwrap() >= 2, "{st}");
}

/// The operators' metrics (contract, "Operations"): build info,
/// reservations by outcome (single requests and batch ops, keyed replays
/// apart), per-shard operations and lock wait, the log's sync latency as
/// a histogram, and the process's own figures, all from a real scrape.
#[test]
fn metrics_for_operators_come_from_a_real_scrape() {
    let (s, _dir) = ready("api-metrics-ops");
    s.json("PUT", "/v1/skus/a", r#"{"stock":3}"#);
    assert_eq!(reserve(&s, "c1", r#"[{"sku":"a","qty":1}]"#).status, 201);
    assert_eq!(reserve(&s, "c2", r#"[{"sku":"a","qty":9}]"#).status, 409);
    assert_eq!(reserve(&s, "c3", r#"[{"sku":"zz","qty":1}]"#).status, 422);
    let keyed = |key: &str| {
        s.send(
            "POST",
            "/v1/reservations",
            &[
                "Content-Type: application/json",
                &format!("Idempotency-Key: {key}"),
            ],
            br#"{"customer_id":"c4","items":[{"sku":"a","qty":1}]}"#,
        )
    };
    assert_eq!(keyed("k-1").status, 201);
    assert_eq!(
        keyed("k-1").header("idempotent-replayed").as_deref(),
        Some("true")
    );
    let batch = s.json(
        "POST",
        "/v1/batch",
        r#"{"ops":[{"op":"reserve","customer_id":"c5","items":[{"sku":"a","qty":1}]},
                   {"op":"reserve","customer_id":"c6","items":[{"sku":"a","qty":1}]}]}"#,
    );
    assert_eq!(batch.status, 200, "{}", batch.body);
    let m = s.request("GET", "/metrics").body;
    let value = |name: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{m}"))
    };
    assert_eq!(
        value(&format!(
            "stampede_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // held: c1, c4, c5; the batch's second op finds the stock gone.
    for (outcome, n) in [
        ("held", 3.0),
        ("replayed", 1.0),
        ("insufficient_stock", 2.0),
        ("unknown_sku", 1.0),
    ] {
        assert_eq!(
            value(&format!(
                "stampede_reservations_total{{outcome=\"{outcome}\"}}"
            )),
            n,
            "{outcome}"
        );
    }
    assert!(
        !m.contains("sku=") && !m.contains("customer=") && !m.contains("customer_id="),
        "no label names a SKU or a customer"
    );
    if on_redis() {
        // Shards, the log and the hot-SKU sketch are the embedded store's.
        return;
    }
    let shard_ops: f64 = m
        .lines()
        .filter(|l| l.starts_with("stampede_shard_operations_total{shard="))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        shard_ops >= 6.0,
        "every engine operation counted: {shard_ops}"
    );
    assert!(m.contains("stampede_shard_lock_wait_seconds_total{shard=\"0\"}"));
    assert!(m.contains("# TYPE stampede_wal_sync_seconds histogram"));
    let groups = value("stampede_wal_sync_seconds_count");
    assert!(groups >= 1.0);
    assert_eq!(
        value("stampede_wal_sync_seconds_bucket{le=\"+Inf\"}"),
        groups
    );
    // Served (value() fails if not); a fresh server may not have used a
    // whole 10 ms tick yet.
    assert!(value("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(
        !m.contains("sku=") && !m.contains("customer=") && !m.contains("customer_id="),
        "no label names a SKU or a customer"
    );
    let st = s.request("GET", "/v1/stats").json();
    // Reservations tried per SKU lately (sampled one in four, so a's five
    // show as one sample, 4); zz is unknown, never counted.
    assert_eq!(st["hot_skus"][0]["sku"], "a", "{st}");
    assert_eq!(st["hot_skus"][0]["operations"], 4, "{st}");
    assert_eq!(st["hot_skus"].as_array().unwrap().len(), 1, "{st}");
    let ops: u64 = st["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["operations"].as_u64().unwrap())
        .sum();
    assert!(ops >= 6, "{st}");
}

/// `configs/grafana/dashboards/stampede.json` queries only metrics a real
/// scrape serves: every `stampede_*` and `process_*` name in every panel's
/// expression is a series of `/metrics` on a server that has done some
/// work.
#[test]
fn grafana_dashboard_uses_only_metrics_the_server_serves() {
    if on_redis() {
        // Its shard and log panels are the embedded store's.
        return;
    }
    let (s, _dir) = ready("api-grafana");
    s.json("PUT", "/v1/skus/a", r#"{"stock":2}"#);
    reserve(&s, "c1", r#"[{"sku":"a","qty":1}]"#);
    reserve(&s, "c2", r#"[{"sku":"a","qty":5}]"#);
    let scrape = s.request("GET", "/metrics").body;
    let served: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/configs/grafana/dashboards/stampede.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            {
                if token.starts_with("stampede_") || token.starts_with("process_") {
                    used.insert(token.to_owned());
                }
            }
        }
    }
    assert!(used.len() >= 15, "the dashboard uses {used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|m| !served.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "not served: {missing:?}\nscrape:\n{scrape}"
    );
}

#[test]
fn customer_limits_hold_under_concurrent_requests() {
    let (s, _dir) = ready("api-limit-race");
    s.json(
        "PUT",
        "/v1/skus/hot",
        r#"{"stock":1000,"customer_limit":3}"#,
    );
    s.json("PUT", "/v1/skus/last", r#"{"stock":5}"#);
    let outcomes: Vec<(u16, u16)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let s = &s;
                scope.spawn(move || {
                    let mut won = (0u16, 0u16);
                    for i in 0..10 {
                        if reserve(s, "greedy", r#"[{"sku":"hot","qty":1}]"#).status == 201 {
                            won.0 += 1;
                        }
                        if reserve(s, &format!("c-{t}-{i}"), r#"[{"sku":"last","qty":1}]"#).status
                            == 201
                        {
                            won.1 += 1;
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let hot: u16 = outcomes.iter().map(|o| o.0).sum();
    let last: u16 = outcomes.iter().map(|o| o.1).sum();
    assert_eq!(hot, 3, "one customer, limit 3, 80 concurrent tries");
    assert_eq!(last, 5, "5 units, 80 concurrent buyers: never oversold");
    assert_eq!(s.request("GET", "/v1/skus/hot").json()["held"], 3);
    assert_eq!(s.request("GET", "/v1/skus/last").json()["available"], 0);
}

#[test]
fn stock_comes_back_after_expiry_within_the_sweep_interval() {
    let (s, _dir) = ready("api-sweep");
    s.json("PUT", "/v1/skus/a", r#"{"stock":1}"#);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a","qty":1}],"ttl_ms":50}"#,
    );
    let expires = r.json()["expires_at_ms"].as_u64().unwrap();
    assert_eq!(s.request("GET", "/v1/skus/a").json()["available"], 0);
    // holds.sweep_interval_ms is 100 by default: well within 2 s the
    // sweeper has run and the unit is available again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        if s.request("GET", "/v1/skus/a").json()["available"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stock not back 2 s after expiry at {expires}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.request("GET", &format!("/v1/reservations/{id}")).json()["status"],
        "expired"
    );
}

#[test]
fn integers_written_as_whole_floats_and_percent_encoded_paths_are_accepted() {
    let (s, _dir) = ready("api-lenient");
    // JSON Schema's integer: 7.0 is 7 (some JSON libraries write doubles).
    let r = s.json(
        "PUT",
        "/v1/skus/a:b",
        r#"{"stock":7.0,"customer_limit":null}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // `:` arrives percent-encoded from clients that escape it.
    let v = s.request("GET", "/v1/skus/a%3Ab").json();
    assert_eq!(
        (v["sku"].as_str(), v["stock"].as_u64()),
        (Some("a:b"), Some(7))
    );
    let r = s.json("POST", "/v1/skus/a%3ab/adjust", r#"{"delta":-2.0}"#);
    assert_eq!((r.status, r.json()["stock"].as_u64()), (200, Some(5)));
    // wait_ms past admission.max_wait_ms is capped, as ttl_ms is.
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"c","items":[{"sku":"a:b","qty":2.0}],"wait_ms":99999999,"ttl_ms":null}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["items"],
        serde_json::json!([{"sku":"a:b","qty":2}])
    );
    // A decoded `/` stays in its segment and is not an identifier.
    let r = s.request("GET", "/v1/skus/a%2Fb");
    assert_eq!((r.status, r.json()["field"].as_str()), (400, Some("sku")));
}
