//! Serving, one way whichever the store: bind the listeners (and say
//! `listening on ADDR`), answer health checks while the store starts,
//! hand the started store to the API (and say `ready`), re-read the
//! config on SIGHUP, and on SIGINT or SIGTERM stop taking connections,
//! finish requests in flight, then stop the store.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::api::AppState;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::wal::RecoveryMode;

/// What `stampede serve` runs with.
pub struct Serve {
    pub config: Config,
    /// The data directory (the log, and the start epoch); locked while
    /// serving.
    pub data_dir: PathBuf,
    /// What start-up does about a damaged log (the embedded store).
    pub recovery: RecoveryMode,
    /// The config file, re-read on SIGHUP (`None`: started without one).
    pub config_file: Option<PathBuf>,
    /// Reads the config again as it was read at start (the file, the
    /// command line's overrides and the environment).
    pub reread: Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>,
}

/// Serves until the shutdown signal; an error is a failed start or a
/// failed stop.
pub fn run(serve: Serve) -> anyhow::Result<()> {
    let data_dir = DataDir::open(&serve.data_dir).context("cannot open the data directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stampede-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve_in(Arc::new(serve), data_dir))
}

async fn serve_in(serve: Arc<Serve>, data_dir: DataDir) -> anyhow::Result<()> {
    let config = &serve.config;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = bind_admin(config).await?;
    let bound = listener.local_addr()?;
    // Outside programs wait for this exact line (contract, "Running it").
    crate::out_line!("listening on {bound}");
    // Serve health checks (readyz: 503) while the store starts.
    let state = Arc::new(AppState::new(config));
    // One shutdown for both listeners: the signal, or a failed start.
    let (closing, _) = tokio::sync::watch::channel(false);
    let closed = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|&c| c).await;
    };
    let close = {
        let state = state.clone();
        let closing = closing.clone();
        move || {
            // Event streams never end on their own: end them first.
            if let Some(hub) = state.events() {
                hub.close();
            }
            let _ = closing.send(true);
        }
    };
    let signal = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
        let close = close.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            crate::log_line!(
                "stampede: shutting down: no new connections, finishing requests in flight"
            );
            close();
        })
    };
    let server = tokio::spawn(crate::api::serve(
        listener,
        state.clone(),
        closed(closing.subscribe()),
    ));
    let admin = match admin {
        Some(admin) => {
            let addr = admin.local_addr()?;
            let key_required = !addr.ip().is_loopback();
            crate::log_line!(
                "stampede: admin page on http://{addr}/ (/metrics, /v1/stats){}",
                if key_required {
                    "; an admin key is required"
                } else {
                    ""
                }
            );
            Some(tokio::spawn(crate::api::serve_admin(
                admin,
                state.clone(),
                key_required,
                closed(closing.subscribe()),
            )))
        }
        None => None,
    };
    let reloader = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup =
            signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let (state, serve) = (state.clone(), serve.clone());
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                let (state, serve) = (state.clone(), serve.clone());
                // Reading the file is blocking work.
                let _ = tokio::task::spawn_blocking(move || reload(&state, &serve)).await;
            }
        })
    };
    let node = match crate::store::start(config, data_dir, serve.recovery).await {
        Ok(node) => node,
        Err(e) => {
            close();
            let _ = server.await;
            if let Some(admin) = admin {
                let _ = admin.await;
            }
            signal.abort();
            reloader.abort();
            return Err(e);
        }
    };
    state.set_store(node.store());
    // A second line for programs that start the server: it is ready
    // (/readyz answers 200 from now on).
    crate::out_line!("ready");
    server.await.context("the server task failed")?;
    if let Some(admin) = admin {
        admin.await.context("the admin listener failed")?;
    }
    reloader.abort();
    signal.abort();
    node.stop().await?;
    crate::log_line!("stampede: stopped");
    Ok(())
}

/// Binds the admin listener. The default address being taken (another
/// server on this machine) is a warning; an address the operator chose
/// must be free.
async fn bind_admin(config: &Config) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = config.admin.addr()? else {
        return Ok(None);
    };
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if config.admin.listen == crate::config::ADMIN_LISTEN_DEFAULT => {
            crate::log_line!(
                "stampede: warning: the admin listener's default address {addr} is not free \
                 ({e}); running without it (set admin.listen or --admin-listen)"
            );
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("admin.listen: cannot listen on {addr}")),
    }
}

/// Re-reads the config on SIGHUP and applies what may change while
/// running; one line on stderr says what happened.
fn reload(state: &AppState, serve: &Serve) {
    let Some(file) = &serve.config_file else {
        crate::log_line!("stampede: SIGHUP: started without --config, nothing to re-read");
        return;
    };
    let file = file.display();
    let config = match (serve.reread)() {
        Ok(config) => config,
        Err(e) => {
            crate::log_line!("stampede: reload refused: {e:#}; the running settings stay");
            return;
        }
    };
    match state.reload(&config) {
        Ok(changed) if changed.is_empty() => {
            crate::log_line!("stampede: reloaded {file}: nothing changed")
        }
        Ok(changed) => crate::log_line!("stampede: reloaded {file}: {}", changed.join(", ")),
        Err(e) => crate::log_line!("stampede: reload refused: {e}"),
    }
}
