//! A keyed change and its stored answer on the embedded store, where the
//! two are separate log records: a process gone after the change was on
//! disk and before its answer was must never let a retry under the same
//! key make the change again. The server runs in this process on a real
//! loopback socket, over the simulated file layer, whose crash keeps
//! exactly what was synced.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::server::{send_to, Reply};
use stampede::api::AppState;
use stampede::clock::SystemClock;
use stampede::config::Config;
use stampede::store::embedded::{open_core, Owners};
use stampede::wal::{self, Durability, RecoveryMode, SimStorage};

const BODY: &str = r#"{"customer_id":"c-1","items":[{"sku":"tee","qty":1}]}"#;

struct Node {
    runtime: tokio::runtime::Runtime,
    addr: SocketAddr,
    core: Arc<stampede::store::embedded::Core>,
}

/// A server over `storage` (recovered from what it holds), listening on a
/// free loopback port.
fn serve(storage: &SimStorage, config: &str) -> Node {
    let config = Config::from_toml(config).unwrap();
    let clock: Arc<dyn stampede::clock::Clock> = Arc::new(SystemClock);
    let owners = Owners {
        idempotency: stampede::idempotency::IdempotencyStore::new(
            config.idempotency.ttl_ms,
            config.idempotency.keys_max,
            config.idempotency.answer_bytes_max,
        ),
        drops: stampede::drops::DropBook::new(config.drops_options(), clock.clone()),
        outbox: stampede::events::webhooks::Outbox::new(
            config.webhook_options(),
            Vec::new(),
            clock.clone(),
        ),
        events: config.events_options(),
    };
    let core = Arc::new(
        open_core(
            Arc::new(storage.clone()),
            stampede::engine::Engine::new(config.engine_options(1), clock),
            owners,
            RecoveryMode::Strict,
            wal::Options {
                durability: Durability::Fsync,
                segment_bytes_max: 64 << 20,
            },
        )
        .expect("recovery"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(AppState::new(&config));
    state.set_store(Arc::new(stampede::store::EmbeddedStore::new(core.clone())));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(stampede::api::serve(
        listener,
        state,
        std::future::pending(),
    ));
    Node {
        runtime,
        addr,
        core,
    }
}

fn reserve(addr: SocketAddr, key: &str) -> Reply {
    send_to(
        addr,
        "POST",
        "/v1/reservations",
        &[
            "Content-Type: application/json",
            &format!("Idempotency-Key: {key}"),
        ],
        BODY.as_bytes(),
    )
}

/// Creates the SKU `tee` with 10 units.
fn put_tee(addr: SocketAddr) {
    let put = send_to(
        addr,
        "PUT",
        "/v1/skus/tee",
        &["Content-Type: application/json"],
        br#"{"stock":10}"#,
    );
    assert_eq!(put.status, 201, "{}", put.body);
}

fn held(addr: SocketAddr) -> u64 {
    send_to(addr, "GET", "/v1/skus/tee", &[], b"").json()["held"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_change_on_disk_whose_answer_was_not_is_never_made_again_after_a_restart() {
    let storage = SimStorage::new();
    let node = serve(&storage, "");
    put_tee(node.addr);
    // The losing order, driven by hand through the store the API uses:
    // the key is taken, the hold is made and synced, and the process dies
    // before the answer's record is written.
    let store = stampede::store::EmbeddedStore::new(node.core.clone());
    let fingerprint =
        stampede::idempotency::fingerprint("POST", "/v1/reservations", BODY.as_bytes());
    node.runtime.block_on(async {
        use stampede::store::{Scope, Store};
        let begin = store
            .key_begin("k-crash", fingerprint, store.now_ms())
            .await
            .unwrap();
        assert!(matches!(begin, stampede::idempotency::Begin::Fresh));
        let items = [stampede::engine::ItemRequest { sku: "tee", qty: 1 }];
        let request = stampede::engine::ReserveRequest {
            customer_id: "c-1",
            items: &items,
            ttl_ms: None,
            fill: stampede::engine::Fill::All,
        };
        store
            .reserve(Scope::Now, &request, 0, &|| {})
            .await
            .expect("the hold, durable");
    });
    assert_eq!(held(node.addr), 1);
    drop(store);
    drop(node);
    storage.crash(|_| 0);
    storage.restart();
    let node = serve(&storage, "");
    assert_eq!(held(node.addr), 1, "the hold was on disk");
    // Before, the key came back free and this made a second hold.
    let retry = reserve(node.addr, "k-crash");
    assert_eq!(retry.status, 409, "{}", retry.body);
    assert!(
        retry.body.contains("idempotency_key_in_use") && retry.body.contains("restart"),
        "{}",
        retry.body
    );
    assert_eq!(held(node.addr), 1, "never made twice");
    // Another request under that key is still a reuse (422), and a key
    // given back (a request that ended with nothing to keep) is free.
    let other = send_to(
        node.addr,
        "POST",
        "/v1/reservations",
        &["Content-Type: application/json", "Idempotency-Key: k-crash"],
        br#"{"customer_id":"c-2","items":[{"sku":"tee","qty":1}]}"#,
    );
    assert_eq!(other.status, 422, "{}", other.body);
    // And through a checkpoint: the lost key is in its image.
    node.core.checkpoint().unwrap();
    drop(node);
    storage.crash(|_| 0);
    storage.restart();
    let node = serve(&storage, "");
    assert_eq!(reserve(node.addr, "k-crash").status, 409);
    assert_eq!(held(node.addr), 1);
}

#[test]
fn a_key_given_back_after_a_refusal_with_nothing_made_is_free_after_a_restart() {
    let storage = SimStorage::new();
    let node = serve(&storage, "");
    // No SKU yet: the reserve is refused (404 is an answer and is kept);
    // a waitlist that ends unanswered is a 5xx whose key is given back.
    // Here, the give-back is driven by hand: take, give back, crash.
    let store = stampede::store::EmbeddedStore::new(node.core.clone());
    let fingerprint =
        stampede::idempotency::fingerprint("POST", "/v1/reservations", BODY.as_bytes());
    node.runtime.block_on(async {
        use stampede::store::Store;
        store
            .key_begin("k-back", fingerprint, store.now_ms())
            .await
            .unwrap();
        store.key_abandon("k-back");
    });
    node.core.wal.sync().unwrap();
    drop(store);
    drop(node);
    storage.crash(|_| 0);
    storage.restart();
    let node = serve(&storage, "");
    put_tee(node.addr);
    let r = reserve(node.addr, "k-back");
    assert_eq!(r.status, 201, "a given-back key runs: {}", r.body);
    assert_eq!(held(node.addr), 1);
}
