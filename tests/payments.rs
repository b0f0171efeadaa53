//! Payments on a real server (contract v1.2, "Payments"): `/payment` and
//! the `pending_payment` status, and signed gateway webhooks settling
//! holds once, every outcome of the table, each refusal changing nothing.
//! Stripe's signatures are computed here as Stripe documents them; the
//! standard scheme's are made by the official Standard Webhooks library
//! (`scripts/sign-standard.py`). Runs on either store
//! (`STAMPEDE_TEST_STORE`).

mod common;

use std::time::Duration;

use common::payments::{now_s, stripe_event, stripe_v1};
use common::server::{Reply, Server};
use common::sse::Sse;
use serde_json::{json, Value};

const STRIPE_NEW: &str = "whsec_new_0123456789abcdef";
const STRIPE_OLD: &str = "whsec_old_0123456789abcdef";
const PSP: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn config(extra: &str) -> String {
    format!(
        "[holds]\nsweep_interval_ms = 20\n{extra}\n\
         [[payments.gateways]]\nname = \"stripe\"\nscheme = \"stripe\"\nsecrets = [\"{STRIPE_NEW}\", \"{STRIPE_OLD}\"]\n\
         [[payments.gateways]]\nname = \"psp\"\nscheme = \"standard\"\nsecrets = [\"{PSP}\"]\ntolerance_s = 60\n"
    )
}

fn post_webhook(s: &Server, gateway: &str, headers: &[String], body: &str) -> Reply {
    let mut all: Vec<&str> = headers.iter().map(String::as_str).collect();
    all.push("Content-Type: application/json");
    s.send(
        "POST",
        &format!("/v1/payments/{gateway}/webhook"),
        &all,
        body.as_bytes(),
    )
}

/// A Stripe event, signed now with the current secret.
fn stripe(s: &Server, body: &str) -> Reply {
    let t = now_s();
    let sig = stripe_v1(STRIPE_NEW, t, body);
    post_webhook(
        s,
        "stripe",
        &[format!("Stripe-Signature: t={t},v1={sig}")],
        body,
    )
}

fn put_sku(s: &Server, sku: &str, stock: u64) {
    let r = s.json(
        "PUT",
        &format!("/v1/skus/{sku}"),
        &format!(r#"{{"stock":{stock}}}"#),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
}

fn reserve(s: &Server, sku: &str, qty: u32, ttl_ms: u64) -> String {
    let r = s.json(
        "POST",
        "/v1/reservations",
        &format!(
            r#"{{"customer_id":"c-1","items":[{{"sku":"{sku}","qty":{qty}}}],"ttl_ms":{ttl_ms}}}"#
        ),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

fn sku(s: &Server, sku: &str) -> (u64, u64, u64) {
    let v = s.request("GET", &format!("/v1/skus/{sku}")).json();
    (
        v["available"].as_u64().unwrap(),
        v["held"].as_u64().unwrap(),
        v["sold"].as_u64().unwrap(),
    )
}

fn hold(s: &Server, id: &str) -> Value {
    s.request("GET", &format!("/v1/reservations/{id}")).json()
}

fn pay(s: &Server, id: &str, gateway: &str, payment_ref: &str) -> Reply {
    s.json(
        "POST",
        &format!("/v1/reservations/{id}/payment"),
        &format!(r#"{{"gateway":"{gateway}","payment_ref":"{payment_ref}"}}"#),
    )
}

/// Waits until hold `id` reads as `status` (a sweep's doing), up to 10 s.
fn wait_status(s: &Server, id: &str, status: &str) -> Value {
    for _ in 0..500 {
        let h = hold(s, id);
        if h["status"] == status {
            return h;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("hold {id} never {status}: {}", hold(s, id));
}

/// Waits until `sku` reads (available, held, sold) = `want` (a sweep's
/// doing), up to 10 s.
fn wait_sku(s: &Server, name: &str, want: (u64, u64, u64)) {
    for _ in 0..500 {
        if sku(s, name) == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{name} never {want:?}: {:?}", sku(s, name));
}

#[test]
fn payment_makes_a_hold_pending_for_as_long_as_the_payment_needs() {
    let (s, _dir) = Server::with_config(
        "pay-pending",
        &config("[payments]\npending_ttl_ms = 600000\npending_max_ms = 900000\n"),
    );
    put_sku(&s, "tee", 5);
    let id = reserve(&s, "tee", 2, 60_000);
    let before = hold(&s, &id);
    assert_eq!(before["payment"], Value::Null);
    let r = pay(&s, &id, "stripe", "pi_1");
    assert_eq!(r.status, 200, "{}", r.body);
    let h = r.json();
    assert_eq!(h["status"], "pending_payment");
    assert_eq!(h["payment"]["gateway"], "stripe");
    assert_eq!(h["payment"]["payment_ref"], "pi_1");
    let since = h["payment"]["since_ms"].as_u64().unwrap();
    let created = h["created_at_ms"].as_u64().unwrap();
    let expires = h["expires_at_ms"].as_u64().unwrap();
    // Past holds.max_ttl_ms (60 s asked), up to now + pending_ttl_ms.
    assert_eq!(expires, since + 600_000, "{h}");
    assert!(expires <= created + 900_000);
    assert_eq!(hold(&s, &id)["status"], "pending_payment");
    // The same payment again: no change.
    let again = pay(&s, &id, "stripe", "pi_1");
    assert_eq!(again.status, 200);
    assert_eq!(again.json(), h);
    // Another payment: refused, naming the one recorded.
    let other = pay(&s, &id, "stripe", "pi_2");
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.json()["code"], "payment_ref_mismatch");
    assert_eq!(other.json()["payment_ref"], "pi_1");
    // Unknown gateway, bad reference: 400 naming the field.
    let r = pay(&s, &id, "paypal", "pi_1");
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, json!("gateway"))
    );
    let r = pay(&s, &id, "stripe", "pi 1");
    assert_eq!(
        (r.status, r.json()["field"].clone()),
        (400, json!("payment_ref"))
    );
    // Extend refuses a pending payment's hold.
    let r = s.json(
        "POST",
        &format!("/v1/reservations/{id}/extend"),
        r#"{"ttl_ms":1000}"#,
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["code"], "hold_not_active");
    assert_eq!(r.json()["hold_status"], "pending_payment");
    assert_eq!(sku(&s, "tee"), (3, 2, 0), "nothing changed by the refusals");
    // It confirms as a held hold does, keeping its payment.
    let r = s.json("POST", &format!("/v1/reservations/{id}/confirm"), "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "confirmed");
    assert_eq!(r.json()["payment"]["payment_ref"], "pi_1");
    assert_eq!(sku(&s, "tee"), (3, 0, 2));
    let r = pay(&s, &id, "stripe", "pi_1");
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (409, json!("hold_not_active"))
    );
    // A batch op, then a release of a pending hold.
    let id2 = reserve(&s, "tee", 1, 60_000);
    let body =
        json!({"ops": [{"op": "payment", "id": id2, "gateway": "psp", "payment_ref": "p-9"}]});
    let r = s.json("POST", "/v1/batch", &body.to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    let op = &r.json()["results"][0];
    assert_eq!(op["status"], 200, "{op}");
    assert_eq!(op["body"]["status"], "pending_payment");
    let r = s.json("POST", &format!("/v1/reservations/{id2}/release"), "{}");
    assert_eq!(r.json()["status"], "released");
    assert_eq!(sku(&s, "tee"), (3, 0, 2));
    // An expired hold: 410.
    let id3 = reserve(&s, "tee", 1, 50);
    wait_status(&s, &id3, "expired");
    let r = pay(&s, &id3, "stripe", "pi_3");
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (410, json!("hold_expired"))
    );
}

#[test]
fn a_pending_hold_expires_at_its_new_expiry_and_gives_its_stock_back() {
    let (s, _dir) =
        Server::with_config("pay-expiry", &config("[payments]\npending_ttl_ms = 1500\n"));
    put_sku(&s, "cap", 1);
    let id = reserve(&s, "cap", 1, 200);
    let h = pay(&s, &id, "stripe", "pi_e").json();
    let expires = h["expires_at_ms"].as_u64().unwrap();
    assert!(
        expires >= h["created_at_ms"].as_u64().unwrap() + 1_000,
        "{h}"
    );
    // Past its first expiry it still holds.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(hold(&s, &id)["status"], "pending_payment");
    assert_eq!(sku(&s, "cap"), (0, 1, 0));
    let h = wait_status(&s, &id, "expired");
    assert_eq!(h["expires_at_ms"].as_u64().unwrap(), expires);
    wait_sku(&s, "cap", (1, 0, 0));
}

#[test]
fn every_outcome_of_the_table_and_each_event_once() {
    let (s, _dir) = Server::with_config("pay-outcomes", &config(""));
    let mut feed = Sse::open(
        &s,
        "/v1/events?types=payment.failed,payment.orphaned,payment.unmatched,hold.confirmed",
        &[],
    );
    put_sku(&s, "mug", 3);
    // confirmed: a pending hold, its payment succeeded.
    let a = reserve(&s, "mug", 1, 60_000);
    pay(&s, &a, "stripe", "pi_a");
    let ev = stripe_event("evt_a", "payment_intent.succeeded", Some(&a), "pi_a");
    let r = stripe(&s, &ev);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"outcome": "confirmed", "hold": a}));
    assert_eq!(hold(&s, &a)["status"], "confirmed");
    assert_eq!(
        hold(&s, &a)["order_ref"],
        "pi_a",
        "no order_ref: the payment_ref"
    );
    let (_, kind, data) = feed.event();
    assert_eq!((kind.as_str(), &data["id"]), ("hold.confirmed", &json!(a)));
    assert_eq!(data["payment_ref"], "pi_a");
    // The same event again: the first outcome, nothing changed.
    let again = stripe(&s, &ev);
    assert_eq!(again.json(), json!({"outcome": "confirmed", "hold": a}));
    assert_eq!(sku(&s, "mug"), (2, 0, 1));
    // duplicate: another event for a confirmed hold.
    let r = stripe(
        &s,
        &stripe_event("evt_a2", "payment_intent.succeeded", Some(&a), "pi_a"),
    );
    assert_eq!(r.json()["outcome"], "duplicate");
    // The webhook overtook /payment: found by the hold it names, confirmed,
    // and the hold records the payment.
    let b = reserve(&s, "mug", 1, 60_000);
    let r = stripe(
        &s,
        &stripe_event("evt_b", "payment_intent.succeeded", Some(&b), "pi_b"),
    );
    assert_eq!(r.json()["outcome"], "confirmed");
    assert_eq!(hold(&s, &b)["payment"]["payment_ref"], "pi_b");
    let (_, kind, data) = feed.event();
    assert_eq!(
        (kind.as_str(), &data["payment_ref"]),
        ("hold.confirmed", &json!("pi_b"))
    );
    assert_eq!(sku(&s, "mug"), (1, 0, 2));
    // noted: failed, found by its payment_ref; the hold stays.
    let c = reserve(&s, "mug", 1, 60_000);
    pay(&s, &c, "stripe", "pi_c");
    let r = stripe(
        &s,
        &stripe_event("evt_c1", "payment_intent.payment_failed", None, "pi_c"),
    );
    assert_eq!(r.json(), json!({"outcome": "noted", "hold": c}));
    assert_eq!(hold(&s, &c)["status"], "pending_payment");
    let (_, kind, data) = feed.event();
    assert_eq!(kind, "payment.failed");
    assert_eq!(
        (&data["hold"], &data["gateway"], &data["payment_ref"]),
        (&json!(c), &json!("stripe"), &json!("pi_c"))
    );
    // released: canceled, stock back.
    let r = stripe(
        &s,
        &stripe_event("evt_c2", "payment_intent.canceled", None, "pi_c"),
    );
    assert_eq!(r.json(), json!({"outcome": "released", "hold": c}));
    assert_eq!(hold(&s, &c)["status"], "released");
    assert_eq!(sku(&s, "mug"), (1, 0, 2));
    // confirmed_late: the released hold's unit is free: taken again.
    let r = stripe(
        &s,
        &stripe_event("evt_c3", "payment_intent.succeeded", Some(&c), "pi_c"),
    );
    assert_eq!(r.json(), json!({"outcome": "confirmed_late", "hold": c}));
    assert_eq!(hold(&s, &c)["status"], "confirmed");
    assert_eq!(sku(&s, "mug"), (0, 0, 3));
    let (_, kind, data) = feed.event();
    assert_eq!((kind.as_str(), &data["id"]), ("hold.confirmed", &json!(c)));
    // orphaned: an expired hold whose unit another customer took.
    put_sku(&s, "pen", 1);
    let d = reserve(&s, "pen", 1, 50);
    wait_status(&s, &d, "expired");
    // Expired reads so at once; its unit is free once the sweeper ended it.
    wait_sku(&s, "pen", (1, 0, 0));
    let taker = reserve(&s, "pen", 1, 60_000);
    let r = stripe(
        &s,
        &stripe_event("evt_d", "payment_intent.succeeded", Some(&d), "pi_d"),
    );
    assert_eq!(r.json(), json!({"outcome": "orphaned", "hold": d}));
    assert_eq!(hold(&s, &d)["status"], "expired");
    assert_eq!(hold(&s, &taker)["status"], "held");
    assert_eq!(sku(&s, "pen"), (0, 1, 0), "nothing taken");
    let (_, kind, data) = feed.event();
    assert_eq!(kind, "payment.orphaned");
    assert_eq!(data["hold"], json!(d));
    assert_eq!(data["items"], json!([{"sku": "pen", "qty": 1}]));
    assert!(data["at_ms"].as_u64().is_some());
    // unmatched: no hold has this reference.
    let r = stripe(
        &s,
        &stripe_event("evt_x", "payment_intent.succeeded", None, "pi_nobody"),
    );
    assert_eq!(r.json(), json!({"outcome": "unmatched", "hold": null}));
    let (_, kind, data) = feed.event();
    assert_eq!(kind, "payment.unmatched");
    assert_eq!(
        (&data["gateway"], &data["payment_ref"], &data["type"]),
        (
            &json!("stripe"),
            &json!("pi_nobody"),
            &json!("payment_intent.succeeded")
        )
    );
    let r = stripe(
        &s,
        &stripe_event("evt_x", "payment_intent.succeeded", None, "pi_nobody"),
    );
    assert_eq!(
        r.json()["outcome"],
        "unmatched",
        "a repeat: the first outcome"
    );
    // ignored: a type that says nothing of a payment's end.
    let r = stripe(
        &s,
        &stripe_event("evt_i", "charge.refunded", Some(&taker), "pi_t"),
    );
    assert_eq!(r.json(), json!({"outcome": "ignored", "hold": null}));
    assert_eq!(hold(&s, &taker)["status"], "held");
    // The counter, by gateway and outcome.
    let metrics = s.request("GET", "/metrics").body;
    for (outcome, n) in [
        ("confirmed", 3),
        ("duplicate", 1),
        ("confirmed_late", 1),
        ("orphaned", 1),
        ("noted", 1),
        ("released", 1),
        ("unmatched", 2),
        ("ignored", 1),
    ] {
        let line = format!(
            "stampede_payment_webhooks_total{{gateway=\"stripe\",outcome=\"{outcome}\"}} {n}\n"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let stats = s.request("GET", "/v1/stats").json();
    assert_eq!(stats["payments"]["late_last_minute"], 1);
    assert_eq!(stats["payments"]["orphaned_last_minute"], 1);
}

#[test]
fn a_refused_webhook_changes_nothing() {
    let (s, _dir) =
        Server::with_config("pay-refused", &config("[limits]\nmax_body_bytes = 4096\n"));
    put_sku(&s, "cup", 2);
    let id = reserve(&s, "cup", 1, 60_000);
    pay(&s, &id, "stripe", "pi_r");
    let body = stripe_event("evt_r", "payment_intent.succeeded", Some(&id), "pi_r");
    let t = now_s();
    let refused = |r: Reply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.json()["code"], code, "{}", r.body);
        assert_eq!(hold(&s, &id)["status"], "pending_payment");
        assert_eq!(sku(&s, "cup"), (1, 1, 0));
    };
    let header = |secret: &str, t: u64, body: &str| {
        vec![format!(
            "Stripe-Signature: t={t},v1={}",
            stripe_v1(secret, t, body)
        )]
    };
    // Wrong secret, stale and future times, a changed body, no header.
    refused(
        post_webhook(&s, "stripe", &header("whsec_wrong_000000", t, &body), &body),
        400,
        "invalid_signature",
    );
    refused(
        post_webhook(&s, "stripe", &header(STRIPE_NEW, t - 400, &body), &body),
        400,
        "invalid_signature",
    );
    refused(
        post_webhook(&s, "stripe", &header(STRIPE_NEW, t + 400, &body), &body),
        400,
        "invalid_signature",
    );
    let tampered = body.replace("pi_r", "pi_R");
    refused(
        post_webhook(&s, "stripe", &header(STRIPE_NEW, t, &body), &tampered),
        400,
        "invalid_signature",
    );
    refused(
        post_webhook(&s, "stripe", &[], &body),
        400,
        "invalid_signature",
    );
    // Signed, but not JSON; over the body limit; an unknown gateway.
    refused(
        post_webhook(&s, "stripe", &header(STRIPE_NEW, t, "not json"), "not json"),
        400,
        "invalid_request",
    );
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(5000));
    refused(
        post_webhook(&s, "stripe", &header(STRIPE_NEW, t, &big), &big),
        413,
        "payload_too_large",
    );
    refused(
        post_webhook(&s, "paypal", &header(STRIPE_NEW, t, &body), &body),
        404,
        "not_found",
    );
    // The old secret still signs (rotation), and several v1 are fine.
    let both = format!(
        "Stripe-Signature: t={t},v1={},v1={}",
        stripe_v1("whsec_wrong_000000", t, &body),
        stripe_v1(STRIPE_OLD, t, &body)
    );
    let r = post_webhook(&s, "stripe", &[both], &body);
    assert_eq!(r.json()["outcome"], "confirmed", "{}", r.body);
}

/// The standard scheme, signed by the official library.
fn standard(s: &Server, msg_id: &str, t: u64, body: &str) -> Reply {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sign-standard.py");
    let mut child = std::process::Command::new("python3")
        .args([script, PSP, msg_id, &t.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs scripts/sign-standard.py");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the official Standard Webhooks library signs (pip install standardwebhooks)"
    );
    let signature = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    post_webhook(
        s,
        "psp",
        &[
            format!("webhook-id: {msg_id}"),
            format!("webhook-timestamp: {t}"),
            format!("webhook-signature: {signature}"),
        ],
        body,
    )
}

#[test]
fn standard_webhooks_signed_by_the_official_library_settle_and_stale_ones_do_not() {
    let (s, _dir) = Server::with_config("pay-standard", &config(""));
    put_sku(&s, "hat", 2);
    let id = reserve(&s, "hat", 1, 60_000);
    pay(&s, &id, "psp", "p-1");
    let body =
        json!({"type": "payment.succeeded", "data": {"payment_ref": "p-1", "order_ref": "o-77"}})
            .to_string();
    // Outside tolerance_s = 60: refused, nothing changed.
    let r = standard(&s, "msg_1", now_s() - 120, &body);
    assert_eq!(
        (r.status, r.json()["code"].clone()),
        (400, json!("invalid_signature")),
        "{}",
        r.body
    );
    assert_eq!(hold(&s, &id)["status"], "pending_payment");
    let r = standard(&s, "msg_1", now_s(), &body);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"outcome": "confirmed", "hold": id}));
    assert_eq!(hold(&s, &id)["order_ref"], "o-77");
    // The event id is webhook-id: the same id again is a repeat.
    let r = standard(&s, "msg_1", now_s(), &body);
    assert_eq!(r.json()["outcome"], "confirmed");
    assert_eq!(sku(&s, "hat"), (1, 0, 1));
}

#[test]
fn an_event_settled_before_a_kill_is_a_repeat_after_it() {
    let (s, _dir) = Server::with_config("pay-kill", &config(""));
    put_sku(&s, "bag", 2);
    let a = reserve(&s, "bag", 1, 60_000);
    let b = reserve(&s, "bag", 1, 60_000);
    pay(&s, &b, "stripe", "pi_b");
    let confirm_a = stripe_event("evt_k1", "payment_intent.succeeded", Some(&a), "pi_a");
    let fail_b = stripe_event("evt_k2", "payment_intent.payment_failed", None, "pi_b");
    assert_eq!(stripe(&s, &confirm_a).json()["outcome"], "confirmed");
    assert_eq!(stripe(&s, &fail_b).json()["outcome"], "noted");
    let mut s = s.restart("-KILL");
    s.wait_ready();
    assert_eq!(
        stripe(&s, &confirm_a).json(),
        json!({"outcome": "confirmed", "hold": a})
    );
    assert_eq!(
        stripe(&s, &fail_b).json(),
        json!({"outcome": "noted", "hold": b})
    );
    assert_eq!(sku(&s, "bag"), (0, 1, 1));
    // The reference index came back too: b's cancel finds it.
    let cancel_b = stripe_event("evt_k3", "payment_intent.canceled", None, "pi_b");
    assert_eq!(
        stripe(&s, &cancel_b).json(),
        json!({"outcome": "released", "hold": b})
    );
    assert_eq!(hold(&s, &b)["payment"]["payment_ref"], "pi_b");
    assert_eq!(sku(&s, "bag"), (1, 0, 1));
}
