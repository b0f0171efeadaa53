//! A server whose stdout and stderr go somewhere that stops working: a
//! pipe whose reader is gone (writes fail with EPIPE), or a full pipe
//! nobody reads (writes block). Neither may stop it from serving, from
//! sweeping, or from stopping on SIGTERM within its drain bound; what
//! it acknowledged survives the restart.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::server::{send_to, stampede, temp_dir, Reply, Server};

/// The drain bound (`DRAIN_TIMEOUT`, 10 s) plus the last lines' flush
/// (0.5 s) and some room for a loaded machine.
const STOP_WITHIN: Duration = Duration::from_secs(14);

/// Lines a child printed on a pipe, read by a thread of the test.
fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line that starts with `prefix` among `lines`, for at most
/// 30 s; the others are skipped.
fn line_starting(lines: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting with {prefix:?} within 30 s: {e}"),
        }
    }
}

fn address(line: &str) -> SocketAddr {
    line.strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("not the address line: {line:?}"))
        .parse()
        .unwrap()
}

fn json(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    send_to(
        addr,
        method,
        path,
        &["Content-Type: application/json"],
        body.as_bytes(),
    )
}

fn serve(data_dir: &Path) -> std::process::Command {
    let mut cmd = stampede(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    cmd.stdin(Stdio::null());
    cmd
}

/// Sends `signal` and waits for the exit, for at most `STOP_WITHIN`; the
/// child is killed (and the test fails) past that.
fn stop(child: &mut Child, signal: &str) -> std::process::ExitStatus {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + STOP_WITHIN;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{signal} did not stop the server within {STOP_WITHIN:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A hold of 1 unit of `sku` for `ttl_ms`; its `expires_at_ms`.
fn hold(addr: SocketAddr, sku: &str, ttl_ms: u64) -> u64 {
    let r = json(
        addr,
        "POST",
        "/v1/reservations",
        &format!(r#"{{"customer_id":"c","items":[{{"sku":"{sku}","qty":1}}],"ttl_ms":{ttl_ms}}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["expires_at_ms"].as_u64().unwrap()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The sweeper gives the units of an expired hold back: `held` reaches 0
/// within two seconds of `expires_at_ms` (the sweep runs every 100 ms).
fn swept_on_time(addr: SocketAddr, sku: &str, expires_at_ms: u64) {
    loop {
        let v = send_to(addr, "GET", &format!("/v1/skus/{sku}"), &[], b"").json();
        if v["held"] == 0 {
            return;
        }
        assert!(
            now_ms() < expires_at_ms + 2_000,
            "the hold on {sku} was not swept within 2 s of its expiry: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The server's `stampede_log_lines_dropped_total`.
fn dropped_lines(addr: SocketAddr) -> u64 {
    let r = send_to(addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200);
    r.body
        .lines()
        .find_map(|l| l.strip_prefix("stampede_log_lines_dropped_total "))
        .expect("the dropped-lines metric")
        .trim()
        .parse()
        .unwrap()
}

/// While the server serves with a dead or stuck stderr: a SIGHUP (a
/// line on stderr) and a checkpoint (another) change nothing for the
/// requests; a short hold is swept on time; a sale is acknowledged.
fn serves_and_sweeps(addr: SocketAddr, child: &Child) {
    assert_eq!(
        json(addr, "PUT", "/v1/skus/s", r#"{"stock":10}"#).status,
        201
    );
    for _ in 0..3 {
        let sent = std::process::Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }
    let expires = hold(addr, "s", 300);
    // Requests go on being answered while the hold waits for the sweep.
    for i in 0..50 {
        let r = json(addr, "PUT", &format!("/v1/skus/k{i}"), r#"{"stock":1}"#);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    swept_on_time(addr, "s", expires);
    let r = json(
        addr,
        "POST",
        "/v1/reservations",
        r#"{"customer_id":"buyer","items":[{"sku":"s","qty":2}],"ttl_ms":600000}"#,
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = send_to(
        addr,
        "POST",
        &format!("/v1/reservations/{id}/confirm"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// What `serves_and_sweeps` acknowledged is there after a restart.
fn recovered(data_dir: &Path) {
    let mut again = Server::start(data_dir);
    again.wait_ready();
    let v = again.request("GET", "/v1/skus/s").json();
    assert_eq!(
        (v["stock"].as_u64(), v["sold"].as_u64(), v["held"].as_u64()),
        (Some(10), Some(2), Some(0)),
        "{v}"
    );
    assert_eq!(again.request("GET", "/v1/skus/k49").status, 200);
    assert!(again.signal("-TERM").success());
}

#[test]
fn stdout_and_stderr_on_one_pipe_closed_before_sigterm() {
    let dir = temp_dir("out-closed-both");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = serve(&dir)
        .stdout(Stdio::from(writer.try_clone().unwrap()))
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    // Read here, in this thread, so that the reading end is closed
    // exactly when the test drops it.
    let mut reader = BufReader::new(reader);
    let mut next = || {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the pipe closed");
        line.trim_end().to_owned()
    };
    let addr = address(&next());
    while next() != "ready" {}
    serves_and_sweeps(addr, &child);
    // Whoever read the server's output is gone.
    drop(reader);
    let status = stop(&mut child, "-TERM");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    recovered(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stderr_closed_while_serving() {
    let dir = temp_dir("out-closed-err");
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = serve(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    // Nobody will ever read stderr: every line the server writes there
    // fails (EPIPE), from its first.
    drop(reader);
    let lines = lines_of(child.stdout.take().unwrap());
    let addr = address(&line_starting(&lines, "listening on "));
    line_starting(&lines, "ready");
    serves_and_sweeps(addr, &child);
    assert!(
        dropped_lines(addr) > 0,
        "the failed stderr lines are counted"
    );
    let status = stop(&mut child, "-TERM");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    recovered(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stderr_a_full_pipe_nobody_reads() {
    let dir = temp_dir("out-full-err");
    let (reader, mut writer) = std::io::pipe().unwrap();
    fill(&mut writer);
    let mut child = serve(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    // The test holds the reading end open and never reads: every write
    // to stderr blocks.
    let lines = lines_of(child.stdout.take().unwrap());
    let addr = address(&line_starting(&lines, "listening on "));
    line_starting(&lines, "ready");
    serves_and_sweeps(addr, &child);
    let status = stop(&mut child, "-TERM");
    assert!(status.success(), "SIGTERM exits 0: {status:?}");
    drop(reader);
    recovered(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Fills the pipe until a write would block, then makes it blocking
/// again (the flag is the pipe's, so the server's writes block).
fn fill(writer: &mut std::io::PipeWriter) {
    let fd = writer.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function borrows, with flags
    // read from it.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    assert!(flags >= 0);
    assert_eq!(
        unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) },
        0
    );
    let chunk = [b'x'; 4096];
    let mut written = 0usize;
    loop {
        match writer.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the pipe: {e}"),
        }
    }
    // A 1-byte write fits nowhere now either.
    assert!(matches!(writer.write(b"x"), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock));
    assert!(written >= 4096);
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }, 0);
}
