//! A real stampede for the load generator's tests: the library's server
//! on a free loopback port, its data (a real log) in a directory.

use std::sync::Arc;

/// A stampede with `config`, its data in `dir`. The node, its background
/// work and its data directory's lock last as long as the test.
pub async fn stampede(
    dir: &std::path::Path,
    config: &stampede::config::Config,
) -> std::net::SocketAddr {
    let data_dir = stampede::datadir::DataDir::open(dir).unwrap();
    let node = stampede::store::start(config, data_dir, stampede::wal::RecoveryMode::Strict)
        .await
        .unwrap();
    let state = Arc::new(stampede::api::AppState::new(config));
    state.set_store(node.store());
    std::mem::forget(node);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(stampede::api::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}
