//! The `stampede serve` process as outside programs see it: flags, the
//! `listening on ADDR` line, the health endpoints and problem documents on
//! a real socket, config errors, the data-dir lock, and a clean exit 0 on
//! SIGTERM and SIGINT.

mod common;

use common::server::{stampede, temp_dir, Server};

#[test]
fn serve_prints_its_address_and_answers_health_checks() {
    let dir = temp_dir("health");
    let mut server = Server::start(&dir);
    let r = server.request("GET", "/healthz");
    assert_eq!(r.status, 200);
    assert!(
        r.head.contains("content-type: application/json"),
        "{}",
        r.head
    );
    assert_eq!(r.body, r#"{"status":"ok"}"#);
    server.wait_ready();
    assert_eq!(server.request("GET", "/readyz").status, 200);
    assert!(server.signal("-TERM").success(), "SIGTERM exits 0");
    assert!(dir.join("EPOCH").exists());
    assert!(dir.join("wal").is_dir(), "the log lives in the data dir");
    let files: Vec<String> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with(".snap")),
        "a clean shutdown leaves a checkpoint: {files:?}"
    );
    // And the next start begins from it.
    let mut again = Server::start(&dir);
    again.wait_ready();
    assert!(again.signal("-TERM").success());
    // verify checks the checkpoint too: damage it and verify fails.
    let verify = |dir: &std::path::Path| {
        stampede(&["wal", "verify", dir.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let out = verify(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .unwrap();
    let mut bytes = std::fs::read(&snap).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    let out = verify(&dir);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("fails its checksum"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_routes_and_methods_get_problem_documents() {
    let dir = temp_dir("problems");
    let mut server = Server::start(&dir);
    let r = server.request("GET", "/no/such/route");
    assert_eq!(r.status, 404);
    assert!(
        r.head.contains("content-type: application/problem+json"),
        "{}",
        r.head
    );
    let doc = r.json();
    assert_eq!(doc["code"], "not_found");
    assert_eq!(doc["type"], "urn:stampede:problem:not_found");
    assert_eq!(doc["status"], 404);
    let r = server.request("POST", "/healthz");
    assert_eq!(r.status, 405);
    assert!(r.head.contains("allow: get"), "{}", r.head);
    let doc = r.json();
    assert_eq!(doc["code"], "method_not_allowed");
    assert!(server.signal("-INT").success(), "SIGINT exits 0");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = temp_dir("lock");
    let _first = Server::start(&dir);
    let out = stampede(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another stampede process holds its lock"),
        "{err}"
    );
}

#[test]
fn a_bad_config_stops_start_up_with_one_line_naming_the_key() {
    let dir = temp_dir("config");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[engine]\nshards = 6\n").unwrap();
    let out = stampede(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("engine.shards"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_open_server_refuses_a_non_loopback_address() {
    let dir = temp_dir("open");
    let out = stampede(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no auth keys are configured"), "{err}");
    assert!(!dir.exists(), "refused before touching the data dir");
}

#[test]
fn help_explains_each_subcommand_and_flag() {
    let out = stampede(&["--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("serve") && text.contains("check-config"),
        "{text}"
    );
    let out = stampede(&["serve", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--data-dir"] {
        assert!(text.contains(flag), "{flag} missing from\n{text}");
    }
}

#[test]
fn a_client_that_never_finishes_its_headers_is_closed() {
    use std::io::{Read, Write};
    let (server, _dir) =
        Server::with_config("header-timeout", "[server]\nheader_read_timeout_ms = 200\n");
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf); // ends when the server closes it
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(5),
        "the stalled connection stayed open {waited:?}"
    );
    // Others are still served.
    assert_eq!(server.request("GET", "/healthz").status, 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    use std::io::{Read, Write};
    let (server, _dir) = Server::with_config("idle-timeout", "[server]\nidle_timeout_ms = 300\n");
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // Requests spaced under the timeout keep the connection open past it.
    let opened = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    for _ in 0..4 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let n = stream.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    // The four answers came over one connection that was open for longer
    // than the idle timeout: a busy connection is not closed.
    assert!(
        opened.elapsed() > std::time::Duration::from_millis(300),
        "the requests did not outlast idle_timeout_ms"
    );
    // Then silence: the server closes it (read returns end of stream).
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let waited = started.elapsed();
    assert!(rest.is_empty());
    assert!(
        waited >= std::time::Duration::from_millis(100)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
}
