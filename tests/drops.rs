//! `stampede drop verify` on a real process: the positions it prints are
//! the contract's formula, recomputed here on its own (HMAC-SHA256 of each
//! customer_id under the seed, ascending), and bad input is named.

mod common;

use common::server::{stampede, temp_dir};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `stampede drop verify --seed SEED --entrants FILE [--seed-sha256 C]`.
fn verify(seed: &str, file: &std::path::Path, commitment: Option<&str>) -> std::process::Output {
    let mut args = vec![
        "drop",
        "verify",
        "--seed",
        seed,
        "--entrants",
        file.to_str().unwrap(),
    ];
    if let Some(c) = commitment {
        args.extend(["--seed-sha256", c]);
    }
    stampede(&args).output().unwrap()
}

#[test]
fn verify_prints_every_position_from_the_seed_and_checks_the_commitment() {
    let dir = temp_dir("drop-verify");
    std::fs::create_dir_all(&dir).unwrap();
    let seed: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let entrants: Vec<String> = (0..500).map(|i| format!("c-{i}")).collect();
    let file = dir.join("entrants.txt");
    // In join order, with a blank line and spaces the tool must ignore.
    std::fs::write(&file, format!("{}\n\n  c-extra  \n", entrants.join("\n"))).unwrap();
    let out = verify(&hex(&seed), &file, Some(&hex(&Sha256::digest(&seed))));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<(usize, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (p, c) = l.split_once('\t').unwrap();
            (p.parse().unwrap(), c.to_owned())
        })
        .collect();
    // The formula, computed here.
    let mut all: Vec<String> = entrants.clone();
    all.push("c-extra".into());
    let mut ranked: Vec<([u8; 32], String)> = all
        .into_iter()
        .map(|c| {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&seed).unwrap();
            mac.update(c.as_bytes());
            (mac.finalize().into_bytes().into(), c)
        })
        .collect();
    ranked.sort();
    let want: Vec<(usize, String)> = ranked
        .into_iter()
        .enumerate()
        .map(|(i, (_, c))| (i + 1, c))
        .collect();
    assert_eq!(printed, want);
    assert!(String::from_utf8_lossy(&out.stderr).contains("the seed matches its commitment"));

    // A seed that is not the committed one is refused.
    let mut other = seed.clone();
    other[0] ^= 1;
    let out = verify(&hex(&other), &file, Some(&hex(&Sha256::digest(&seed))));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the seed that was committed to"));

    // A customer listed twice, and a bad name, are named with their lines.
    std::fs::write(&file, "a\nb\na\n").unwrap();
    let out = verify(&hex(&seed), &file, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 3: a is already on line 1"),
        "{err}"
    );
    std::fs::write(&file, "ok\nnot ok\n").unwrap();
    let out = verify(&hex(&seed), &file, None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 2: \"not ok\" is not a customer_id"),
        "{err}"
    );
    let out = verify("abc", &file, None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed: a seed is 64 hex digits"));
}

// ---- Drops over a real socket -------------------------------------------

use common::drops::{now_ms, positions, unhex, wait_until};
use common::server::Server;

fn put_drop(s: &Server, drop: &str, body: &serde_json::Value) -> common::server::Reply {
    s.json("PUT", &format!("/v1/drops/{drop}"), &body.to_string())
}

fn join(s: &Server, drop: &str, customer: &str) -> common::server::Reply {
    s.json(
        "POST",
        &format!("/v1/drops/{drop}/entries"),
        &format!(r#"{{"customer_id":"{customer}"}}"#),
    )
}

fn reserve(s: &Server, customer: &str, sku: &str) -> common::server::Reply {
    s.json(
        "POST",
        "/v1/reservations",
        &format!(r#"{{"customer_id":"{customer}","items":[{{"sku":"{sku}","qty":1}}]}}"#),
    )
}

fn entry(s: &Server, drop: &str, customer: &str) -> serde_json::Value {
    let r = s.request("GET", &format!("/v1/drops/{drop}/entries/{customer}"));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[test]
fn a_drop_opens_in_the_order_its_revealed_seed_gives() {
    let dir = temp_dir("drop-open");
    let s = {
        let mut s = Server::start(&dir);
        s.wait_ready();
        s
    };
    assert_eq!(
        s.json("PUT", "/v1/skus/snk-1", r#"{"stock":1000}"#).status,
        201
    );
    let t0 = now_ms();
    let opens = t0 + 2_500;
    let created = put_drop(
        &s,
        "sneaker-x",
        &serde_json::json!({"skus": ["snk-1"], "prequeue_opens_at_ms": t0, "opens_at_ms": opens}),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let view = created.json();
    assert_eq!(view["state"], "prequeue");
    assert_eq!(
        view["seed"],
        serde_json::Value::Null,
        "no seed before the opening"
    );
    let commitment = view["seed_sha256"].as_str().unwrap().to_owned();
    assert_eq!(commitment.len(), 64);

    // The pre-queue: one entry per customer, no position yet.
    let entrants: Vec<String> = (0..150).map(|i| format!("c-{i}")).collect();
    for c in &entrants {
        let r = join(&s, "sneaker-x", c);
        assert_eq!(r.status, 201, "{}", r.body);
        assert_eq!(r.json()["position"], serde_json::Value::Null);
    }
    let again = join(&s, "sneaker-x", "c-7");
    assert_eq!(again.status, 200, "joining again changes nothing");
    let before = reserve(&s, "c-7", "snk-1");
    assert_eq!(before.status, 409, "{}", before.body);
    assert_eq!(before.json()["code"], "not_admitted");
    assert_eq!(before.json()["drop"], "sneaker-x");
    assert!(
        before.header("retry-after").is_some(),
        "an entrant waits for the opening"
    );
    let view = s.request("GET", "/v1/drops/sneaker-x").json();
    assert_eq!(
        (view["entrants"].as_u64(), view["seed"].is_null()),
        (Some(150), true)
    );

    // A drop changes only while scheduled.
    let late = put_drop(
        &s,
        "sneaker-x",
        &serde_json::json!({"skus": ["snk-1"], "prequeue_opens_at_ms": t0, "opens_at_ms": opens + 1}),
    );
    assert_eq!(
        (late.status, late.json()["code"].as_str()),
        (409, Some("drop_started"))
    );

    wait_until(opens + 20);
    let view = s.request("GET", "/v1/drops/sneaker-x").json();
    assert_eq!(view["state"], "open");
    let seed = unhex(
        view["seed"]
            .as_str()
            .expect("the seed is revealed at the opening"),
    );
    assert_eq!(
        hex(&Sha256::digest(&seed)),
        commitment,
        "the seed is the committed one"
    );
    assert_eq!(view["admitted"], 150, "no admit_per_s: everyone at once");

    // Every position, recomputed here from the revealed seed.
    let order = positions(&seed, &entrants);
    for (i, c) in order.iter().enumerate() {
        let e = entry(&s, "sneaker-x", c);
        assert_eq!(e["position"], i + 1, "{c}");
        assert_eq!(e["admitted"], true);
        assert_eq!(
            e["admitted_at_ms"], opens,
            "admitted at the opening instant"
        );
    }
    // A later arrival queues behind the pre-queue, first come first served.
    let r = join(&s, "sneaker-x", "late-1");
    assert_eq!((r.status, r.json()["position"].as_u64()), (201, Some(151)));
    assert_eq!(join(&s, "sneaker-x", "late-2").json()["position"], 152);

    // Admitted customers reserve; others are refused with their position.
    assert_eq!(reserve(&s, &order[0], "snk-1").status, 201);
    assert_eq!(reserve(&s, "late-2", "snk-1").status, 201);
    let stranger = reserve(&s, "stranger", "snk-1");
    assert_eq!(stranger.status, 409);
    let body = stranger.json();
    assert_eq!(
        (body["code"].as_str(), &body["position"]),
        (Some("not_admitted"), &serde_json::Value::Null)
    );
    assert!(
        stranger.header("retry-after").is_none(),
        "no estimate for a stranger"
    );
    assert_eq!(
        s.request("GET", "/v1/drops/sneaker-x/entries/stranger")
            .status,
        404
    );
    // SKUs outside any drop are not gated.
    assert_eq!(s.json("PUT", "/v1/skus/free", r#"{"stock":5}"#).status, 201);
    assert_eq!(reserve(&s, "stranger", "free").status, 201);
}

#[test]
fn admissions_are_paced_in_position_order_and_bad_drops_are_named() {
    let dir = temp_dir("drop-pace");
    let (s, _dir) = Server::with_config("drop-pace", "[drops]\nentrants_max = 4\n");
    let _ = dir;
    assert_eq!(s.json("PUT", "/v1/skus/p-1", r#"{"stock":10}"#).status, 201);
    let t0 = now_ms();
    let opens = t0 + 1_500;
    let spec = serde_json::json!({"skus": ["p-1"], "prequeue_opens_at_ms": t0,
        "opens_at_ms": opens, "admit_per_s": 1});
    assert_eq!(put_drop(&s, "paced", &spec).status, 201);
    for c in ["a", "b", "c", "d"] {
        assert_eq!(join(&s, "paced", c).status, 201);
    }
    let full = join(&s, "paced", "e");
    assert_eq!(
        (full.status, full.json()["code"].as_str()),
        (429, Some("queue_full"))
    );

    wait_until(opens + 20);
    let mut by_position: Vec<(u64, String)> = ["a", "b", "c", "d"]
        .iter()
        .map(|c| {
            (
                entry(&s, "paced", c)["position"].as_u64().unwrap(),
                c.to_string(),
            )
        })
        .collect();
    by_position.sort();
    for (p, c) in &by_position {
        let e = entry(&s, "paced", c);
        // One a second: position p at opens + (p - 1) s.
        assert_eq!(e["estimated_admit_at_ms"], opens + (p - 1) * 1000, "{c}");
    }
    let first = &by_position[0].1;
    assert_eq!(entry(&s, "paced", first)["admitted_at_ms"], opens);
    assert_eq!(reserve(&s, first, "p-1").status, 201);
    let last = &by_position[3].1;
    let r = reserve(&s, last, "p-1");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["position"], 4);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((2..=3).contains(&retry), "about 3 s to position 4: {retry}");
    assert_eq!(s.request("GET", "/v1/drops/paced").json()["admitted"], 1);

    // Bad drops are 400 naming the field; a scheduled drop may change.
    let later = now_ms() + 60_000;
    for (body, field) in [
        (
            serde_json::json!({"skus": [], "prequeue_opens_at_ms": later, "opens_at_ms": later}),
            "skus",
        ),
        (
            serde_json::json!({"skus": ["p-1"], "prequeue_opens_at_ms": later, "opens_at_ms": later}),
            "skus",
        ),
        (
            serde_json::json!({"skus": ["x"], "prequeue_opens_at_ms": later + 1, "opens_at_ms": later}),
            "prequeue_opens_at_ms",
        ),
        (
            serde_json::json!({"skus": ["x"], "prequeue_opens_at_ms": later, "opens_at_ms": later, "closes_at_ms": later}),
            "closes_at_ms",
        ),
        (
            serde_json::json!({"skus": ["x"], "prequeue_opens_at_ms": later, "opens_at_ms": later, "admit_per_s": 0}),
            "admit_per_s",
        ),
        (
            serde_json::json!({"skus": ["x"], "prequeue_opens_at_ms": later, "opens_at_ms": later, "colour": 1}),
            "colour",
        ),
    ] {
        let r = put_drop(&s, "next", &body);
        assert_eq!(
            (r.status, r.json()["field"].as_str()),
            (400, Some(field)),
            "{}",
            r.body
        );
    }
    let spec =
        serde_json::json!({"skus": ["x"], "prequeue_opens_at_ms": later, "opens_at_ms": later + 1});
    let created = put_drop(&s, "next", &spec);
    assert_eq!(created.status, 201);
    let changed = put_drop(
        &s,
        "next",
        &serde_json::json!({"skus": ["x", "y"],
        "prequeue_opens_at_ms": later, "opens_at_ms": later + 5}),
    );
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert_eq!(
        changed.json()["seed_sha256"],
        created.json()["seed_sha256"],
        "the seed stays"
    );
    let early = join(&s, "next", "a");
    assert_eq!(
        (early.status, early.json()["code"].as_str()),
        (409, Some("drop_not_open"))
    );
    assert_eq!(s.request("GET", "/v1/drops/none").status, 404);
}

#[test]
fn a_restart_keeps_positions_and_admissions_and_never_reveals_the_seed_early() {
    let dir = temp_dir("drop-restart");
    let mut s = Server::start(&dir);
    s.wait_ready();
    let t0 = now_ms();
    let opens = t0 + 3_000;
    let closes = opens + 3_600_000;
    let spec = serde_json::json!({"skus": ["r-1"], "prequeue_opens_at_ms": t0,
        "opens_at_ms": opens, "closes_at_ms": closes, "admit_per_s": 20});
    assert_eq!(put_drop(&s, "kept", &spec).status, 201);
    let entrants: Vec<String> = (0..60).map(|i| format!("k-{i}")).collect();
    for c in &entrants {
        assert_eq!(join(&s, "kept", c).status, 201);
    }
    let commitment = s.request("GET", "/v1/drops/kept").json()["seed_sha256"].clone();

    // Killed before the opening: the line is back, the seed still hidden.
    let mut s = s.restart("-KILL");
    s.wait_ready();
    let view = s.request("GET", "/v1/drops/kept").json();
    assert_eq!(view["entrants"], 60);
    assert_eq!(view["seed_sha256"], commitment);
    assert!(view["seed"].is_null(), "a restart does not reveal the seed");
    assert_eq!(join(&s, "kept", "k-3").status, 200, "still in");

    wait_until(opens + 20);
    let view = s.request("GET", "/v1/drops/kept").json();
    let seed = unhex(view["seed"].as_str().unwrap());
    let order = positions(&seed, &entrants);
    assert_eq!(join(&s, "kept", "after").json()["position"], 61);
    let entries = |s: &Server| -> Vec<serde_json::Value> {
        order
            .iter()
            .chain(std::iter::once(&"after".to_owned()))
            .map(|c| entry(s, "kept", c))
            .collect()
    };
    let seen = entries(&s);
    for (i, e) in seen.iter().take(60).enumerate() {
        assert_eq!(e["position"], i + 1);
        assert_eq!(e["estimated_admit_at_ms"], opens + (i as u64) * 50);
    }

    // Killed after the opening, then stopped (a checkpoint) and started:
    // the same positions and admission times, the same seed.
    for signal in ["-KILL", "-TERM"] {
        let mut again = s.restart(signal);
        again.wait_ready();
        let view = again.request("GET", "/v1/drops/kept").json();
        assert_eq!(view["seed"].as_str(), Some(hex(&seed).as_str()), "{signal}");
        let now_seen = entries(&again);
        for (a, b) in seen.iter().zip(&now_seen) {
            assert_eq!(a["position"], b["position"], "{signal}");
            assert_eq!(
                a["estimated_admit_at_ms"], b["estimated_admit_at_ms"],
                "{signal}"
            );
        }
        let admitted_first = &now_seen[0];
        assert_eq!(admitted_first["admitted"], true);
        assert_eq!(admitted_first["admitted_at_ms"], opens);
        s = again;
    }
    assert!(
        reserve(&s, &order[0], "r-1").status == 422,
        "admitted: on to the store (SKU r-1 was never set)"
    );
}

#[test]
fn a_keyed_join_is_answered_the_same_again_and_a_stranger_is_refused_in_a_batch_too() {
    let dir = temp_dir("drop-keyed");
    let mut s = Server::start(&dir);
    s.wait_ready();
    assert_eq!(s.json("PUT", "/v1/skus/kb-1", r#"{"stock":5}"#).status, 201);
    let t0 = now_ms();
    let spec = serde_json::json!({"skus": ["kb-1"], "prequeue_opens_at_ms": t0,
        "opens_at_ms": t0 + 3_600_000});
    assert_eq!(put_drop(&s, "keyed", &spec).status, 201);
    let join = |key: &str| {
        s.send(
            "POST",
            "/v1/drops/keyed/entries",
            &[
                "Content-Type: application/json",
                &format!("Idempotency-Key: {key}"),
            ],
            br#"{"customer_id":"c-1"}"#,
        )
    };
    let first = join("j-1");
    assert_eq!(first.status, 201, "{}", first.body);
    let again = join("j-1");
    assert_eq!(again.status, 201, "the first answer, replayed");
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
    // Without the key, joining again is 200: already in.
    assert_eq!(join("j-2").status, 200);
    // A reservation in a batch meets the same gate.
    let batch = s.json(
        "POST",
        "/v1/batch",
        r#"{"ops":[{"op":"reserve","customer_id":"c-1","items":[{"sku":"kb-1","qty":1}]}]}"#,
    );
    assert_eq!(batch.status, 200);
    let result = &batch.json()["results"][0];
    assert_eq!(result["status"], 409);
    assert_eq!(result["body"]["code"], "not_admitted");
}
