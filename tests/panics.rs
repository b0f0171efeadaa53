//! Issue 28: background work that must never end (the sweeper, the
//! checkpointer, the log writer, the event mover, the webhook sender)
//! stops the process, naming it, when it panics: a server that went on
//! would never expire a hold, write the log, or move an event again, and
//! `/readyz` would still say 200. Each test starts the real binary built
//! with `fault-injection` and arms one fault by its environment
//! (`STAMPEDE_FAULT_PANIC`, see `src/fault.rs`); the process must end on
//! its own, not with status 0, with a line on stderr naming the work.
//! A release build aborts on the panic itself (`panic = "abort"`); a build
//! that unwinds stops through `output::fatal` (status 70). Either way the
//! line names the work.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::redis::RedisServer;
use common::server::{send_to, temp_dir};

/// Starts the server with `config` and fault `fault` armed, calls `poke`
/// with its address once it says `ready` (if it gets that far), and returns its exit
/// status and stderr once it has stopped on its own (at most 30 s).
fn stops_by_itself(
    tag: &str,
    config: &str,
    fault: &str,
    poke: impl FnOnce(std::net::SocketAddr),
) -> (std::process::ExitStatus, String) {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("c.toml"), config).unwrap();
    let stderr = std::fs::File::create(dir.join("err")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.join("c.toml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env("STAMPEDE_FAULT_PANIC", fault)
        .env_remove("STAMPEDE_ADMIN_KEYS")
        .env_remove("STAMPEDE_STOREFRONT_KEYS")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("no address: {line:?}"))
        .parse()
        .unwrap();
    // Until `ready` (or the end of stdout, if the fault stopped it first).
    loop {
        line.clear();
        match std::io::BufRead::read_line(&mut out, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim() == "ready" => {
                poke(addr);
                break;
            }
            Ok(_) => {}
        }
    }
    // Waited for on a thread of its own: its exit is the signal, 30 s the
    // deadline after which it is killed and the test fails.
    let pid = child.id();
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let status = match exit.recv_timeout(Duration::from_secs(30)) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let err = std::fs::read_to_string(dir.join("err")).unwrap_or_default();
            panic!("{fault}: the server is still running 30 s after the fault; stderr:\n{err}");
        }
    };
    let err = std::fs::read_to_string(dir.join("err")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    (status, err)
}

fn assert_stopped_naming(fault: &str, status: std::process::ExitStatus, err: &str) {
    assert!(!status.success(), "{fault}: exited 0; stderr:\n{err}");
    let name = fault.replace('-', " ");
    assert!(
        err.contains(&format!("fault injected into the {name}")),
        "{fault}: stderr does not name it:\n{err}"
    );
}

const ADMIN_OFF: &str = "[admin]\nlisten = \"\"\n";

#[test]
fn a_panicking_sweeper_stops_the_server() {
    let (status, err) = stops_by_itself("panic-sweeper", ADMIN_OFF, "sweeper", |_| {});
    assert_stopped_naming("sweeper", status, &err);
}

#[test]
fn a_panicking_checkpointer_stops_the_server() {
    let (status, err) = stops_by_itself("panic-checkpointer", ADMIN_OFF, "checkpointer", |_| {});
    assert_stopped_naming("checkpointer", status, &err);
}

#[test]
fn a_panicking_log_writer_stops_the_server() {
    let (status, err) = stops_by_itself("panic-wal", ADMIN_OFF, "log-writer", |addr| {
        // A change gives the writer a group to write (its answer never
        // comes: the connection ends with the process).
        let _ = std::panic::catch_unwind(|| {
            send_to(
                addr,
                "PUT",
                "/v1/skus/p",
                &["Content-Type: application/json"],
                br#"{"stock":1}"#,
            )
        });
    });
    assert_stopped_naming("log-writer", status, &err);
}

#[test]
fn a_panicking_webhook_sender_stops_the_server() {
    let config = format!(
        "{ADMIN_OFF}[[webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    );
    let (status, err) = stops_by_itself("panic-webhook", &config, "webhook-sender", |_| {});
    assert_stopped_naming("webhook-sender", status, &err);
}

#[test]
fn a_panicking_event_mover_stops_a_redis_node() {
    let redis = RedisServer::start("panic-mover");
    let config = format!("{ADMIN_OFF}{}", redis.store_config());
    let (status, err) = stops_by_itself("panic-mover", &config, "event-mover", |_| {});
    assert_stopped_naming("event-mover", status, &err);
}

#[test]
fn a_panicking_sweeper_stops_a_redis_node() {
    let redis = RedisServer::start("panic-rsweep");
    let config = format!("{ADMIN_OFF}{}", redis.store_config());
    let (status, err) = stops_by_itself("panic-rsweep", &config, "sweeper", |_| {});
    assert_stopped_naming("sweeper", status, &err);
}
