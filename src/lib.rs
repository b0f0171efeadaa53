//! stampede: a flash-sale inventory and checkout throughput core.
//!
//! Module map (dependencies point down the list, never up):
//!
//! - [`api`]: the hyper HTTP server (health endpoints and problem
//!   documents so far; the reservation routes come with the API issue).
//! - [`idempotency`]: `Idempotency-Key` answers, logged and replayed.
//! - [`server`]: start-up: recover the engine from the log, attach the log.
//! - [`config`]: the TOML config file and its validation.
//! - [`engine`]: the lock-sharded in-memory reservation engine: SKUs, soft
//!   holds, customer limits, expiry. Synchronous; no I/O; never awaits.
//! - [`clock`]: the injected time source the engine reads.
//! - `sync`: the lock types, swapped for loom's under `--cfg stampede_loom`.
//! - [`wal`]: the write-ahead log: record format, group commit, recovery,
//!   and the file layer (disk, or simulated with faults) under it.
//! - [`datadir`]: the data directory and the start epoch that keeps hold
//!   ids unique across restarts.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

pub mod admission;
pub mod api;
pub mod clock;
pub mod config;
pub mod datadir;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod idempotency;
pub mod server;
mod sync;
pub mod wal;
