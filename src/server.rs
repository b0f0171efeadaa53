//! Putting the pieces together at start-up: recover the engine from the
//! log in the data directory, attach the log, expire what came due while
//! the server was down. The binary calls [`start_core`]; tests can too.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::engine::Engine;
use crate::wal::{self, recover, DiskStorage, RecoveryMode, RecoveryReport, Wal};

/// The engine and the log it writes to.
pub struct Core {
    pub engine: Arc<Engine>,
    pub wal: Arc<Wal>,
    pub report: RecoveryReport,
}

/// Name of the log's directory inside the data directory.
pub const WAL_DIR: &str = "wal";

/// Replays the log in `data_dir` into a new engine and attaches the log to
/// it. Holds that expired while the server was down are expired (and that
/// is logged) before this returns.
pub fn start_core(
    config: &Config,
    data_dir: &DataDir,
    mode: RecoveryMode,
    clock: Arc<dyn Clock>,
) -> Result<Core, wal::Error> {
    let storage = Arc::new(
        DiskStorage::new(data_dir.path().join(WAL_DIR)).map_err(|e| wal::Error::io(WAL_DIR, e))?,
    );
    let mut engine = Engine::new(config.engine_options(data_dir.epoch()), clock);
    let report = recover(storage.as_ref(), mode, |_, record| engine.apply(record))?;
    engine.finish_replay();
    let wal = Arc::new(Wal::open(
        storage,
        wal::Options {
            durability: config.wal.durability,
            segment_bytes_max: config.wal.segment_bytes_max,
        },
        &report,
    )?);
    engine.attach_journal(wal.clone());
    let engine = Arc::new(engine);
    engine.sweep();
    wal.sync()?;
    Ok(Core {
        engine,
        wal,
        report,
    })
}
