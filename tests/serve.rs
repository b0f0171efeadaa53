//! The `stampede serve` process as outside programs see it: flags, the
//! `listening on ADDR` line, the health endpoints and problem documents on
//! a real socket, config errors, the data-dir lock, and a clean exit 0 on
//! SIGTERM and SIGINT.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stampede-serve-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn stampede(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stampede"));
    cmd.args(args)
        .env_remove("STAMPEDE_ADMIN_KEYS")
        .env_remove("STAMPEDE_STOREFRONT_KEYS");
    cmd
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Server {
        let mut child = stampede(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stampede");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the first line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line was {line:?}"))
            .parse()
            .expect("an address");
        Server { child, addr }
    }

    /// One HTTP/1.1 request; returns (status, headers lower-cased, body).
    fn request(&self, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    /// Polls `/readyz` until it says 200: the log is replayed after the
    /// server starts listening, and `/readyz` is 503 until then.
    fn wait_ready(&self) {
        for _ in 0..500 {
            let (status, _, body) = self.request("GET", "/readyz");
            if status == 200 {
                return;
            }
            assert_eq!(status, 503, "{body}");
            assert!(body.contains("not_ready"), "{body}");
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("not ready after 5 s");
    }

    fn signal(&mut self, sig: &str) -> ExitStatus {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_prints_its_address_and_answers_health_checks() {
    let dir = temp_dir("health");
    let mut server = Server::start(&dir);
    let (status, head, body) = server.request("GET", "/healthz");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(body, r#"{"status":"ok"}"#);
    server.wait_ready();
    assert_eq!(server.request("GET", "/readyz").0, 200);
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
    let (status, head, body) = server.request("GET", "/no/such/route");
    assert_eq!(status, 404);
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["code"], "not_found");
    assert_eq!(doc["type"], "urn:stampede:problem:not_found");
    assert_eq!(doc["status"], 404);
    let (status, head, body) = server.request("POST", "/healthz");
    assert_eq!(status, 405);
    assert!(head.contains("allow: get"), "{head}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
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
