//! The operators' side on a real process: the admin listener (status page,
//! `/metrics`, `/v1/stats`, its keys), the page itself in headless
//! Chromium under load, and live reload on SIGHUP.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::server::{send_to, stampede, temp_dir, Reply, Server};

const ADMIN_KEY: &str = "admin-key-0123456789";
const SHOP_KEY: &str = "shop-key-0123456789";
const WAIT: Duration = Duration::from_secs(20);

/// The admin listener's address, from the server's stderr line.
fn admin_addr(server: &Server) -> SocketAddr {
    let line = server.stderr_line("admin page on http://", WAIT);
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}

/// A request to `addr` (not the server's API address).
fn get(addr: SocketAddr, method: &str, path: &str, headers: &[&str]) -> Reply {
    send_to(addr, method, path, headers, b"")
}

fn keyed_config() -> String {
    format!("[auth]\nadmin_keys = [\"{ADMIN_KEY}\"]\nstorefront_keys = [\"{SHOP_KEY}\"]\n")
}

fn start(tag: &str, config: &str, flags: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = temp_dir(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    let mut server = Server::start_with(&dir.join("data"), &args, &[]);
    server.wait_ready();
    (server, dir)
}

#[test]
fn the_admin_listener_serves_the_page_metrics_and_stats_without_a_key_on_loopback() {
    let (server, _dir) = start("admin", &keyed_config(), &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    assert_ne!(admin, server.addr);
    let page = get(admin, "GET", "/", &[]);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(page.body.contains("<title>stampede status</title>"));
    let metrics = get(admin, "GET", "/metrics", &[]);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.contains("stampede_build_info{version=\""));
    assert!(metrics
        .body
        .contains("stampede_shard_operations_total{shard=\"0\"}"));
    let stats = get(admin, "GET", "/v1/stats", &[]);
    assert_eq!(stats.status, 200, "{}", stats.body);
    let v = stats.json();
    assert_eq!(v["server"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["hot_skus"].is_array() && v["warnings"].is_array());
    assert!(v["admission"]["queue_max"].as_u64().is_some());
    // Only reads, only these routes.
    assert_eq!(get(admin, "POST", "/", &[]).status, 405);
    assert_eq!(get(admin, "GET", "/v1/reservations", &[]).status, 404);
    // The API listener still wants the admin key for its /v1/stats.
    assert_eq!(server.request("GET", "/v1/stats").status, 401);
    let auth = format!("Authorization: Bearer {ADMIN_KEY}");
    let api_stats = server.send("GET", "/v1/stats", &[&auth], b"");
    assert_eq!(api_stats.status, 200);
    assert_eq!(
        api_stats.json()["server"]["version"],
        env!("CARGO_PKG_VERSION")
    );
}

#[test]
fn off_taken_and_non_loopback_admin_addresses() {
    // "" turns it off: no admin line, the API serves.
    let (server, _dir) = start("admin-off", "", &["--admin-listen", ""]);
    assert_eq!(server.request("GET", "/healthz").status, 200);
    // The admin line would come before the recovery line.
    let _ = server.stderr_line("recovered", WAIT);
    assert!(
        !server
            .stderr_lines()
            .iter()
            .any(|l| l.contains("admin page on")),
        "no admin listener was asked for: {:?}",
        server.stderr_lines()
    );
    drop(server);
    let serve_with_admin = |admin: &str, dir: &std::path::Path| {
        let dir = dir.to_str().unwrap();
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            admin,
            "--data-dir",
            dir,
        ];
        stampede(&args).output().unwrap()
    };
    // An address chosen by the operator that is taken stops the start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("admin-taken");
    let out = serve_with_admin(&addr, &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin.listen: cannot listen on"), "{err}");
    // Not loopback: refused without an admin key (nothing is bound).
    let out = serve_with_admin("0.0.0.0:0", &dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin.listen: 0.0.0.0:0 is not a loopback address"),
        "{err}"
    );
    // A bad address is named.
    let out = serve_with_admin("nowhere", &dir);
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin.listen: must be an address"));
}

#[test]
fn the_default_admin_address_being_taken_is_a_warning() {
    // Hold the default port (every other test here turns the admin
    // listener off or uses port 0, so nothing in this binary races for
    // it). If something outside holds it, the server cannot bind it
    // either: the same case.
    let _held = std::net::TcpListener::bind("127.0.0.1:9090");
    let (server, _dir) = start("admin-default", "", &[]);
    let warning = server.stderr_line("warning: the admin listener's default address", WAIT);
    assert!(warning.contains("127.0.0.1:9090"), "{warning}");
    assert_eq!(server.request("GET", "/healthz").status, 200);
}

#[test]
fn off_loopback_every_admin_request_needs_an_admin_key() {
    use base64::Engine as _;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = stampede::config::Config::from_toml(&keyed_config()).unwrap();
    let state = Arc::new(stampede::api::AppState::new(&config));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    // As the binary does for an address that is not loopback.
    runtime.spawn(stampede::api::serve_admin(
        listener,
        state,
        true,
        std::future::pending(),
    ));
    let none = get(addr, "GET", "/", &[]);
    assert_eq!(none.status, 401);
    assert!(none
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("basic realm=")));
    let shop = format!("Authorization: Bearer {SHOP_KEY}");
    assert_eq!(get(addr, "GET", "/metrics", &[&shop]).status, 401);
    let bearer = format!("Authorization: Bearer {ADMIN_KEY}");
    assert_eq!(get(addr, "GET", "/", &[&bearer]).status, 200);
    assert_eq!(get(addr, "GET", "/metrics", &[&bearer]).status, 200);
    // A browser's Basic answer with the key as the password.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("ops:{ADMIN_KEY}"));
    let basic = format!("Authorization: Basic {basic}");
    assert_eq!(get(addr, "GET", "/", &[&basic]).status, 200);
    let wrong = base64::engine::general_purpose::STANDARD.encode("ops:not-the-key-at-all");
    assert_eq!(
        get(
            addr,
            "GET",
            "/",
            &[&format!("Authorization: Basic {wrong}")]
        )
        .status,
        401
    );
    // Before the log is replayed, stats say so (no core in this state).
    assert_eq!(get(addr, "GET", "/v1/stats", &[&bearer]).status, 503);
}

/// Reserves on `sku` from a thread until stopped; counts the holds.
struct Load {
    stop: Arc<AtomicBool>,
    held: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(api: SocketAddr, sku: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, held) = (stop.clone(), held.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let body =
                        format!(r#"{{"customer_id":"c{i}","items":[{{"sku":"{sku}","qty":1}}]}}"#);
                    let r = post(api, "/v1/reservations", &body);
                    if r.status == 201 {
                        held.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Load {
            stop,
            held,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn post(addr: SocketAddr, path: &str, body: &str) -> Reply {
    send_to(
        addr,
        "POST",
        path,
        &["Content-Type: application/json"],
        body.as_bytes(),
    )
}

/// Debian's chromium (scripts/test.sh installs it).
fn chromium() -> std::path::PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = std::process::Command::new("which").arg(name).output() {
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).trim().into();
            }
        }
    }
    panic!("headless Chromium is needed for this test: apt-get install chromium (scripts/test.sh does)");
}

/// Chromium, headless, on `url` for 3.5 s of page time (timers run, and
/// virtual time waits for the page's fetches to come back).
fn headless(extra: &[&str], url: &str) -> std::process::Output {
    let out = std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=3500",
            "--window-size=1280,1000",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The text of the element with `id` in `dom`.
fn element(dom: &str, id: &str) -> String {
    let open = format!("id=\"{id}\">");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &dom[at + open.len()..];
    rest[..rest.find('<').unwrap()].to_owned()
}

fn number(text: &str) -> u64 {
    text.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

#[test]
fn the_status_page_in_headless_chromium_shows_numbers_that_change_under_load() {
    let gateway = "[[payments.gateways]]\nname = \"stripe\"\nscheme = \"stripe\"\nsecrets = [\"whsec_page_0123456789\"]\n";
    let (server, dir) = start("admin-page", gateway, &["--admin-listen", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    let r = server.json("PUT", "/v1/skus/tee", r#"{"stock":100000000}"#);
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    // Two holds waiting for the gateway, for the page's payments.
    for n in 0..2 {
        let r = server.json(
            "POST",
            "/v1/reservations",
            r#"{"customer_id":"payer","items":[{"sku":"tee","qty":1}]}"#,
        );
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let body = format!(r#"{{"gateway":"stripe","payment_ref":"pi_page_{n}"}}"#);
        let r = server.json("POST", &format!("/v1/reservations/{id}/payment"), &body);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // A drop in its pre-queue, for the page's drops table.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let launch = format!(
        r#"{{"skus":["launch-1"],"prequeue_opens_at_ms":{now},"opens_at_ms":{}}}"#,
        now + 3_600_000
    );
    assert_eq!(server.json("PUT", "/v1/drops/launch", &launch).status, 201);
    for c in ["a", "b", "c"] {
        let body = format!(r#"{{"customer_id":"{c}"}}"#);
        assert_eq!(
            server
                .json("POST", "/v1/drops/launch/entries", &body)
                .status,
            201
        );
    }
    let load = Load::start(server.addr, "tee");
    let url = format!("http://{admin}/");
    // Wait (on events, not time) until some holds were made.
    while load.held.load(Ordering::Relaxed) < 50 {
        std::thread::yield_now();
    }
    let first = String::from_utf8(headless(&["--dump-dom"], &url).stdout).unwrap();
    let updates = number(&element(&first, "updates"));
    assert!(updates >= 2, "the page updated itself {updates} times");
    let held_first = number(&element(&first, "held-total"));
    assert!(held_first > 0, "held in all: {held_first}");
    assert_eq!(element(&first, "version"), env!("CARGO_PKG_VERSION"));
    assert!(
        first.contains("one SKU (tee) takes") || held_first < 1000,
        "the hot-SKU warning"
    );
    let seen = load.held.load(Ordering::Relaxed);
    while load.held.load(Ordering::Relaxed) < seen + 50 {
        std::thread::yield_now();
    }
    let second = String::from_utf8(headless(&["--dump-dom"], &url).stdout).unwrap();
    let held_second = number(&element(&second, "held-total"));
    assert!(
        held_second > held_first,
        "held in all went from {held_first} to {held_second}"
    );
    assert!(second.contains("<td>tee</td>"), "tee is a hot SKU");
    assert!(
        second.contains("<td>launch</td><td>prequeue</td>"),
        "the drop is listed with its state"
    );
    // The event feed's figures are there (no stream attached: 0).
    assert_eq!(number(&element(&second, "event-streams")), 0);
    // Payments: the two pending, nothing late or orphaned.
    assert_eq!(number(&element(&second, "payments-pending")), 2);
    assert_eq!(number(&element(&second, "payments-orphaned")), 0);
    // And a picture of it, for the record.
    let shot = dir.join("admin-page.png");
    headless(&[&format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    drop(load);
}

#[test]
fn sighup_reloads_what_may_change_and_refuses_what_needs_a_restart() {
    let base = keyed_config();
    let (mut server, dir) = start("reload", &base, &["--admin-listen", ""]);
    let config = dir.join("c.toml");
    let admin = format!("Authorization: Bearer {ADMIN_KEY}");
    let shop = format!("Authorization: Bearer {SHOP_KEY}");
    let send = |s: &Server, auth: &str, method: &str, path: &str, body: &str| {
        s.send(
            method,
            path,
            &[auth, "Content-Type: application/json"],
            body.as_bytes(),
        )
    };
    for sku in ["a", "b"] {
        let r = send(
            &server,
            &admin,
            "PUT",
            &format!("/v1/skus/{sku}"),
            r#"{"stock":100}"#,
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let two_items = r#"{"customer_id":"c1","items":[{"sku":"a","qty":1},{"sku":"b","qty":1}]}"#;
    let long_hold = r#"{"customer_id":"c2","items":[{"sku":"a","qty":1}],"ttl_ms":3000000}"#;
    assert_eq!(
        send(&server, &shop, "POST", "/v1/reservations", two_items).status,
        201
    );
    let r = send(&server, &shop, "POST", "/v1/reservations", long_hold);
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(
        v["expires_at_ms"].as_u64().unwrap() - v["created_at_ms"].as_u64().unwrap(),
        3_000_000
    );

    // New limits, TTL bounds, admission and keys.
    const NEW_SHOP_KEY: &str = "new-shop-key-0123456789";
    let reloaded = format!(
        "[auth]\nadmin_keys = [\"{ADMIN_KEY}\"]\nstorefront_keys = [\"{NEW_SHOP_KEY}\"]\n\
         [limits]\nmax_items = 1\n[holds]\ndefault_ttl_ms = 1000\nmax_ttl_ms = 60000\n\
         [admission]\nconcurrency_max = 7\nqueue_max = 9\n"
    );
    std::fs::write(&config, &reloaded).unwrap();
    let before = server.stderr_len();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    let line = server.stderr_line_after(before, "stampede: reload", WAIT);
    assert!(line.contains("stampede: reloaded"), "{line}");
    for key in [
        "limits.max_items",
        "holds.max_ttl_ms",
        "auth.storefront_keys",
        "admission.queue_max",
    ] {
        assert!(line.contains(key), "{line} names {key}");
    }
    let new_shop = format!("Authorization: Bearer {NEW_SHOP_KEY}");
    // The old key is gone, the new one works.
    assert_eq!(
        send(&server, &shop, "POST", "/v1/reservations", long_hold).status,
        401
    );
    // Two items are one too many now.
    let r = send(&server, &new_shop, "POST", "/v1/reservations", two_items);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("items"), "{}", r.body);
    // A long hold is capped at the new max_ttl_ms.
    let r = send(&server, &new_shop, "POST", "/v1/reservations", long_hold);
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["expires_at_ms"].as_u64().unwrap() - v["created_at_ms"].as_u64().unwrap(),
        60_000
    );
    let stats = send(&server, &admin, "GET", "/v1/stats", "").json();
    assert_eq!(stats["admission"]["concurrency_max"], 7);
    assert_eq!(stats["admission"]["queue_max"], 9);

    // A change that needs a restart is refused, naming the key; nothing of
    // the file is taken (not even its reloadable part).
    std::fs::write(
        &config,
        format!("{reloaded}[engine]\nshards = 1\n").replace("max_items = 1", "max_items = 5"),
    )
    .unwrap();
    let before = server.stderr_len();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    let line = server.stderr_line_after(before, "stampede: reload", WAIT);
    assert!(
        line.contains("reload refused: engine.shards changed"),
        "{line}"
    );
    assert!(!line.contains('\n'));
    assert_eq!(
        send(&server, &new_shop, "POST", "/v1/reservations", two_items).status,
        400,
        "max_items stays 1"
    );
    // A file that does not parse is refused the same way.
    std::fs::write(&config, "[limits]\nmax_items = 0\n").unwrap();
    let before = server.stderr_len();
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status();
    let line = server.stderr_line_after(before, "stampede: reload", WAIT);
    assert!(
        line.contains("reload refused") && line.contains("limits.max_items"),
        "{line}"
    );
    assert_eq!(
        send(&server, &new_shop, "GET", "/v1/skus/a", "").status,
        200
    );
    assert!(server.signal("-TERM").success());
}

#[test]
fn stats_warn_when_one_sku_takes_most_operations() {
    let (server, _dir) = start("admin-warn", "", &["--admin-listen", ""]);
    for sku in ["hot", "cold"] {
        let r = server.json("PUT", &format!("/v1/skus/{sku}"), r#"{"stock":100000}"#);
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let quiet = server.request("GET", "/v1/stats").json();
    assert_eq!(quiet["warnings"], serde_json::json!([]), "{quiet}");
    // 1,000 reservations on one SKU and 50 on another, in two batches.
    let batch = |sku: &str, n: usize| {
        let ops: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"op":"reserve","customer_id":"c{i}","items":[{{"sku":"{sku}","qty":1}}]}}"#
                )
            })
            .collect();
        let r = server.json(
            "POST",
            "/v1/batch",
            &format!(r#"{{"ops":[{}]}}"#, ops.join(",")),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    batch("hot", 1000);
    batch("cold", 50);
    let st = server.request("GET", "/v1/stats").json();
    assert_eq!(st["recent_operations"], 1050, "{st}");
    assert_eq!(st["hot_skus"][0]["sku"], "hot", "{st}");
    let warnings = st["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().starts_with("one SKU (hot) takes 9")),
        "{warnings:?}"
    );
    assert!(warnings
        .iter()
        .any(|w| w.as_str().unwrap().contains("more shards will not help")));
}
