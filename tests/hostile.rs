//! Hostile input over a real socket: whatever one client sends, every
//! other write goes on, and nothing half-done is left in shared state.

mod common;

use common::server::{temp_dir, Server};

fn ready(tag: &str) -> (Server, std::path::PathBuf) {
    let dir = temp_dir(tag);
    let mut server = Server::start(&dir);
    server.wait_ready();
    (server, dir)
}

/// The issue's reproduction: a keyed `/v1/batch` whose answer (1,000
/// confirms of one 64-item hold with 123-byte SKU names: about 9 MB) is
/// larger than a log record. It used to panic half-way into the log's
/// shared buffer and wedge every later write; now it is refused before it
/// runs, and the server keeps taking writes.
#[test]
fn a_keyed_batch_whose_answer_cannot_be_kept_is_refused_and_writes_go_on() {
    let (s, _dir) = ready("hostile-batch");
    let skus: Vec<String> = (0..64)
        .map(|i| format!("{i:03}{}", "x".repeat(120)))
        .collect();
    for sku in &skus {
        assert_eq!(
            s.json("PUT", &format!("/v1/skus/{sku}"), r#"{"stock":5}"#)
                .status,
            201
        );
    }
    let items: Vec<String> = skus
        .iter()
        .map(|sku| format!(r#"{{"sku":"{sku}","qty":1}}"#))
        .collect();
    let r = s.json(
        "POST",
        "/v1/reservations",
        &format!(r#"{{"customer_id":"c-1","items":[{}]}}"#, items.join(",")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let op = format!(r#"{{"op":"confirm","id":"{id}"}}"#);
    let batch = format!(r#"{{"ops":[{}]}}"#, vec![op.as_str(); 1000].join(","));
    let r = s.send(
        "POST",
        "/v1/batch",
        &["Content-Type: application/json", "Idempotency-Key: big-1"],
        batch.as_bytes(),
    );
    let p = r.json();
    assert_eq!(
        (
            r.status,
            p["code"].as_str(),
            p["status"].as_u64(),
            p["limit"].as_u64()
        ),
        (413, Some("answer_too_large"), Some(413), Some(1_000_000)),
        "{}",
        r.body
    );
    assert!(p["detail"]
        .as_str()
        .unwrap()
        .contains("idempotency.answer_bytes_max"));
    // Nothing changed: the hold is still held, and the key is free.
    let hold = s.request("GET", &format!("/v1/reservations/{id}")).json();
    assert_eq!(hold["status"], "held");
    // Every later write is served at once, not left waiting for the log.
    let started = std::time::Instant::now();
    for i in 0..20 {
        let r = s.json("PUT", &format!("/v1/skus/after-{i}"), r#"{"stock":1}"#);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The same key with a batch whose answer fits is run, kept and replayed.
    let small = format!(r#"{{"ops":[{op}]}}"#);
    let keyed = ["Content-Type: application/json", "Idempotency-Key: big-1"];
    let first = s.send("POST", "/v1/batch", &keyed, small.as_bytes());
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["results"][0]["body"]["status"], "confirmed");
    let again = s.send("POST", "/v1/batch", &keyed, small.as_bytes());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
}

/// A lower `idempotency.answer_bytes_max` refuses a keyed batch of
/// reservations that could answer more, before any op runs.
#[test]
fn the_answer_limit_is_a_config_key_and_a_refusal_changes_nothing() {
    let (s, _dir) =
        Server::with_config("hostile-limit", "[idempotency]\nanswer_bytes_max = 65536\n");
    assert_eq!(s.json("PUT", "/v1/skus/a", r#"{"stock":1000}"#).status, 201);
    let op = r#"{"op":"reserve","customer_id":"c-1","items":[{"sku":"a","qty":1}]}"#;
    let batch = format!(r#"{{"ops":[{}]}}"#, vec![op; 200].join(","));
    let keyed = ["Content-Type: application/json", "Idempotency-Key: k-1"];
    let r = s.send("POST", "/v1/batch", &keyed, batch.as_bytes());
    assert_eq!(
        (r.status, r.json()["limit"].as_u64()),
        (413, Some(65536)),
        "{}",
        r.body
    );
    assert_eq!(s.request("GET", "/v1/skus/a").json()["held"], 0);
    // Without a key nothing is stored, so the same batch runs.
    let r = s.json("POST", "/v1/batch", &batch);
    assert_eq!(r.status, 200);
    assert_eq!(s.request("GET", "/v1/skus/a").json()["held"], 200);
}

/// Sends `head`, then (unless `None`) the whole `body`, then reads the
/// answer to the end: what a plain client does.
fn exchange(s: &Server, head: &str, body: Option<&[u8]>) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(s.addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    stream.write_all(head.as_bytes())?;
    if let Some(body) = body {
        stream.write_all(body)?;
    }
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// A client that sends its whole too-large body before reading gets the
/// 413 (not a reset connection: the server reads what it sent first).
#[test]
fn a_whole_too_large_body_gets_a_413_the_client_can_read() {
    let (s, _dir) = ready("hostile-413");
    for size in [70_000, 1 << 20, 4 << 20] {
        let body = vec![b' '; size];
        let head = format!(
            "PUT /v1/skus/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        );
        let answer = exchange(&s, &head, Some(&body)).expect("the client reads an answer");
        assert!(answer.starts_with("HTTP/1.1 413"), "{size}: {answer}");
        assert!(answer.contains("\"payload_too_large\""), "{answer}");
        // Chunked, with no length declared: the same.
        // The client reads to the end, so it asks for the close (a fully
        // drained body would otherwise leave the connection kept alive).
        let head = "PUT /v1/skus/a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut chunked = format!("{size:x}\r\n").into_bytes();
        chunked.extend_from_slice(&body);
        chunked.extend_from_slice(b"\r\n0\r\n\r\n");
        let answer = exchange(&s, head, Some(&chunked)).expect("the client reads an answer");
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "chunked {size}: {answer}"
        );
    }
    assert_eq!(s.request("GET", "/readyz").status, 200);
}

/// `Expect: 100-continue` with a length over the limit: the 413 comes
/// before the body is sent, with no `100 Continue` first.
#[test]
fn expect_100_continue_over_the_limit_is_answered_413_before_the_body() {
    let (s, _dir) = ready("hostile-expect");
    let head = "PUT /v1/skus/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 10000000\r\nExpect: 100-continue\r\n\r\n";
    let answer = exchange(&s, head, None).expect("an answer without sending the body");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"limit\":65536"), "{answer}");
    // Within the limit, the server asks for the body and takes it.
    let body = br#"{"stock":3}"#;
    let head = format!(
        "PUT /v1/skus/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    use std::io::{BufRead, BufReader, Read, Write};
    let mut stream = std::net::TcpStream::connect(s.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 100"), "{line}");
    stream.write_all(body).unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("HTTP/1.1 201"), "{rest}");
}
