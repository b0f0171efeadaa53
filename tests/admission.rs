//! Admission over a real socket: offered load far above what the path
//! takes, and the sold-out fast path. Bounded in count and time, loopback.

mod common;

use std::time::{Duration, Instant};

use common::server::Server;

const CLIENTS: usize = 48;

#[test]
fn overload_is_shed_quickly_and_honestly_and_stock_stays_exact() {
    let max_wait_ms = 300;
    let (s, _dir) = Server::with_config(
        "admission-overload",
        &format!("[admission]\nconcurrency_max = 1\nqueue_max = 4\nmax_wait_ms = {max_wait_ms}\n"),
    );
    s.json("PUT", "/v1/skus/hot", r#"{"stock":1000}"#);
    // Every client fires at once, each on its own connection.
    let barrier = std::sync::Barrier::new(CLIENTS);
    let replies: Vec<(u16, Option<String>, String, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (s, barrier) = (&s, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let started = Instant::now();
                    let r = s.json(
                        "POST",
                        "/v1/reservations",
                        &format!(r#"{{"customer_id":"c-{n}","items":[{{"sku":"hot","qty":1}}]}}"#),
                    );
                    let code = if r.status == 201 {
                        String::new()
                    } else {
                        r.json()["code"].as_str().unwrap_or("?").to_owned()
                    };
                    (r.status, r.header("retry-after"), code, started.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // No request lost: every one got exactly one answer, each a known one.
    let mut created = 0;
    let mut shed = 0;
    for (status, retry_after, code, took) in &replies {
        match (status, code.as_str()) {
            (201, _) => created += 1,
            (429, "queue_full") | (503, "queue_timeout") => {
                shed += 1;
                let seconds: u64 = retry_after
                    .as_deref()
                    .expect("Retry-After on a shed answer")
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&seconds), "Retry-After {seconds}");
            }
            other => panic!("unexpected answer {other:?}"),
        }
        // Within the admission deadline plus a margin for this shared
        // machine (the log's fsync and the scheduler).
        assert!(
            *took < Duration::from_millis(max_wait_ms + 2_000),
            "answered after {took:?}"
        );
    }
    assert!(
        shed > 0,
        "48 at once through 1 place and 4 queue slots shed none"
    );
    assert!(created > 0);
    // Stock is exact: what was acknowledged is what is held.
    let v = s.request("GET", "/v1/skus/hot").json();
    assert_eq!(v["held"].as_u64(), Some(created));
    assert_eq!(v["available"].as_u64(), Some(1000 - created));
    // The server's own account agrees, and /metrics shows it.
    let stats = s.request("GET", "/v1/stats").json();
    let a = &stats["admission"];
    let shed_counted =
        a["shed"]["queue_full"].as_u64().unwrap() + a["shed"]["queue_timeout"].as_u64().unwrap();
    assert_eq!(shed_counted, shed);
    // Admitted: the reservations plus the PUT and the GET above.
    assert_eq!(a["admitted"].as_u64(), Some(created + 2));
    assert_eq!(a["queued"].as_u64(), Some(0));
    let metrics = s.request("GET", "/metrics").body;
    assert!(
        metrics.contains("stampede_admission_queue_depth 0"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "stampede_admission_shed_total{{reason=\"queue_full\"}} {}",
        a["shed"]["queue_full"]
    )));
    assert!(metrics.contains("stampede_admission_queue_wait_seconds_bucket{le=\"+Inf\"}"));
    // No request lost or answered twice: the server answered exactly
    // CLIENTS reservation requests, as many 201s as clients saw, and as
    // many refusals as clients saw shed.
    let answered = |status: &str| -> u64 {
        let prefix =
            format!("stampede_http_requests_total{{route=\"reservations\",status=\"{status}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.parse().unwrap())
    };
    let (ok, busy, late) = (answered("201"), answered("429"), answered("503"));
    assert_eq!((ok, busy + late), (created, shed), "{metrics}");
    assert_eq!(ok + busy + late, CLIENTS as u64);
}

#[test]
fn sold_out_answers_skip_admission_entirely() {
    // No queue at all: anything that finds the path busy is shed.
    let (s, _dir) = Server::with_config(
        "admission-sold-out",
        "[admission]\nconcurrency_max = 1\nqueue_max = 0\n",
    );
    s.json("PUT", "/v1/skus/gone", r#"{"stock":1}"#);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"w","items":[{"sku":"gone","qty":1}]}"#,
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.json("POST", &format!("/v1/reservations/{id}/confirm"), "")
            .status,
        200
    );
    let before = s.request("GET", "/v1/stats").json()["admission"]["admitted"]
        .as_u64()
        .unwrap();
    let replies: Vec<(u16, serde_json::Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let s = &s;
                scope.spawn(move || {
                    let r = s.json(
                        "POST",
                        "/v1/reservations",
                        &format!(r#"{{"customer_id":"c-{n}","items":[{{"sku":"gone","qty":1}}]}}"#),
                    );
                    (r.status, r.json())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &replies {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(body["code"], "insufficient_stock");
        assert_eq!(body["available"], 0);
    }
    let a = s.request("GET", "/v1/stats").json()["admission"].clone();
    assert_eq!(a["shed"]["sold_out"].as_u64(), Some(CLIENTS as u64));
    // None of them took a place on the path (the stats read is not one).
    assert_eq!(a["admitted"].as_u64(), Some(before));
    assert_eq!(a["shed"]["queue_full"].as_u64(), Some(0));
    // A restock is seen at once: the next request holds.
    s.json("POST", "/v1/skus/gone/adjust", r#"{"delta":1}"#);
    let r = s.json(
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"late","items":[{"sku":"gone","qty":1}]}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn rate_limits_per_customer_and_per_key_answer_429_with_retry_after() {
    let admin = "admin-key-0123456789";
    let store = "storefront-key-0123456789";
    let (s, _dir) = Server::with_config_env(
        "admission-rate",
        "[admission]\ncustomer_rate_per_s = 0.5\ncustomer_burst = 2\n\
         key_rate_per_s = 0.5\nkey_burst = 4\n",
        &[
            ("STAMPEDE_ADMIN_KEYS", admin),
            ("STAMPEDE_STOREFRONT_KEYS", store),
        ],
    );
    let send = |key: &str, method: &str, path: &str, body: &str| {
        let auth = format!("Authorization: Bearer {key}");
        s.send(
            method,
            path,
            &[&auth, "Content-Type: application/json"],
            body.as_bytes(),
        )
    };
    assert_eq!(
        send(admin, "PUT", "/v1/skus/a", r#"{"stock":100}"#).status,
        201
    );
    let reserve = |customer: &str| {
        send(
            store,
            "POST",
            "/v1/reservations",
            &format!(r#"{{"customer_id":"{customer}","items":[{{"sku":"a","qty":1}}]}}"#),
        )
    };
    // The customer's burst is 2: the third is refused, nothing held for it.
    assert_eq!(reserve("c-1").status, 201);
    assert_eq!(reserve("c-1").status, 201);
    let r = reserve("c-1");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(r.json()["detail"].as_str().unwrap().contains("customer_id"));
    // 0.5 a second: a token is 2 s away (1 if this machine took a second
    // to get here).
    assert!(matches!(
        r.header("retry-after").as_deref(),
        Some("2" | "1")
    ));
    // Another customer has a bucket of its own.
    assert_eq!(reserve("c-2").status, 201);
    // The storefront key's burst of 4 is spent (4 requests, the refused
    // one included): the key itself is limited now, whatever the customer.
    let r = reserve("c-3");
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (429, Some("rate_limited"))
    );
    assert!(r.json()["detail"].as_str().unwrap().contains("API key"));
    assert!(matches!(
        r.header("retry-after").as_deref(),
        Some("2" | "1")
    ));
    // The admin key has its own bucket.
    let v = send(admin, "GET", "/v1/skus/a", "").json();
    assert_eq!(v["held"].as_u64(), Some(3));
    let stats = send(admin, "GET", "/v1/stats", "").json();
    assert_eq!(stats["admission"]["shed"]["rate_limited"].as_u64(), Some(2));
}

/// Polls `/v1/stats` until `n` requests wait in waitlists (no sleeping:
/// the server answers each poll; bounded).
fn until_waitlisted(s: &Server, n: u64) {
    for _ in 0..20_000 {
        let v = s.request("GET", "/v1/stats").json();
        if v["admission"]["waitlisted"].as_u64() == Some(n) {
            return;
        }
        std::thread::yield_now();
    }
    panic!("never saw {n} waiting");
}

#[test]
fn wait_ms_queues_for_stock_others_give_back_in_arrival_order() {
    // One place on the path and no queue: a waiter that kept its place
    // would have the others shed (429) while it waits.
    let (s, _dir) = Server::with_config(
        "admission-waitlist",
        "[admission]\nconcurrency_max = 1\nqueue_max = 0\n",
    );
    s.json("PUT", "/v1/skus/hot", r#"{"stock":2}"#);
    let hold = |customer: &str, wait_ms: u64| {
        s.json(
            "POST",
            "/v1/reservations",
            &format!(
                r#"{{"customer_id":"{customer}","items":[{{"sku":"hot","qty":1}}],"wait_ms":{wait_ms}}}"#
            ),
        )
    };
    let a = hold("a", 0).json()["id"].as_str().unwrap().to_owned();
    let b = hold("b", 0).json()["id"].as_str().unwrap().to_owned();
    std::thread::scope(|scope| {
        let first = scope.spawn(|| hold("w1", 5_000));
        until_waitlisted(&s, 1);
        let second = scope.spawn(|| hold("w2", 5_000));
        until_waitlisted(&s, 2);
        // A newcomer that will not wait is refused, and cannot take what
        // the line is owed.
        let r = hold("late", 0);
        assert_eq!((r.status, r.json()["available"].as_u64()), (409, Some(0)));
        assert_eq!(
            s.json("POST", &format!("/v1/reservations/{a}/release"), "")
                .status,
            200
        );
        let r = first.join().unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["customer_id"], "w1");
        assert_eq!(
            s.json("POST", &format!("/v1/reservations/{b}/release"), "")
                .status,
            200
        );
        let r = second.join().unwrap();
        assert_eq!(
            (r.status, r.json()["customer_id"].as_str()),
            (201, Some("w2"))
        );
    });
    // A wait that runs out is 409, about when it said.
    let started = Instant::now();
    let r = hold("patient", 300);
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("insufficient_stock"))
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(2_300),
        "{took:?}"
    );
    // Stock exact, nobody left in line.
    let v = s.request("GET", "/v1/skus/hot").json();
    assert_eq!(
        (v["held"].as_u64(), v["available"].as_u64()),
        (Some(2), Some(0))
    );
    let stats = s.request("GET", "/v1/stats").json();
    assert_eq!(stats["admission"]["waitlisted"].as_u64(), Some(0));
    assert!(s
        .request("GET", "/metrics")
        .body
        .contains("stampede_waitlist_waiting 0"));
}
