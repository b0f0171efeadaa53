//! stampede: a flash-sale inventory and checkout throughput core.
//!
//! Module map (dependencies point down the list, never up; a module's
//! `config` submodule, the struct of its config section, is a leaf that
//! [`config`] reads, so [`config`] may name it; `tests/module_map.rs`
//! checks both):
//!
//! - `fuzzing` (hidden): the fuzz targets' entry points, over everything.
//! - [`serve`]: `stampede serve`, one way whichever the store: the
//!   listeners, the signals, the store started and stopped.
//! - [`api`]: the hyper HTTP server: routes, request reading, problem
//!   documents, `Idempotency-Key` flow, batch, metrics and stats.
//! - [`store`]: the boundary every operation, the event feed and the
//!   store's figures go through ([`store::Store`]), and the two stores
//!   behind it, each in its folder: [`store::embedded`] (the engine plus
//!   the local log: its core, recovery, checkpoints and background
//!   threads) and [`store::redis`] (Redis or Redis Cluster, by script).
//! - [`inspect`]: `stampede wal inspect` / `verify`: the audit trail.
//! - [`tune`]: `stampede tune`: a scenario's SKU mix through the engine at
//!   several shard counts, and the count to use.
//! - [`config`]: the TOML config file: loading, validation, what a reload
//!   may change; the HTTP layer's sections, and every other module's
//!   section re-exported.
//! - [`admission`]: the concurrency limit, FIFO queue and deadline in
//!   front of the store, and the rate limits per key and per customer.
//! - [`records`]: the one decode point for the log's records (replay,
//!   `wal inspect`, fuzzing); their kinds are numbered in `wal::kinds`.
//! - [`idempotency`]: `Idempotency-Key` answers and their log records.
//! - [`drops`]: drops: lines that open at a set time, ordered by a
//!   committed seed, admitted at a pace; their log records.
//! - [`events`]: the event feed (ids, the ring, subscribers) and webhook
//!   deliveries.
//! - [`engine`]: the lock-sharded in-memory reservation engine: SKUs, soft
//!   holds, customer limits, waitlists, expiry, and its change vocabulary
//!   (`engine::Change`). Synchronous; no I/O; never awaits.
//! - [`payments`]: payment gateways: their webhook signatures (stripe,
//!   Standard Webhooks), what their events mean, the outcomes of settling
//!   one (the engine's and each store's payments speak them).
//! - [`wal`]: the write-ahead log: framing of opaque payloads, group
//!   commit, recovery, checkpoint files, and the file layer (disk, or
//!   simulated with faults) under it. Knows nothing of SKUs or holds.
//! - [`codec`]: the one byte codec every encoder uses.
//! - [`clock`]: the injected time source the engine reads.
//! - `sync`: the lock types, swapped for loom's under `--cfg stampede_loom`.
//! - [`datadir`]: the data directory and the start epoch that keeps hold
//!   ids unique across restarts.
//! - [`fault`]: faults tests inject into the background work
//!   (`fault-injection` builds only).
//! - [`prometheus`]: the Prometheus text helpers the API and the stores share.
//! - [`output`]: the lines on stdout and stderr, queued to a thread of
//!   their own: a closed or stuck destination never panics or blocks the
//!   server; what cannot be written is dropped and counted.
//!
//! See ARCHITECTURE.md for the codemap and the invariants.

// Every line goes through `output` (never panics, never blocks).
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod admission;
pub mod api;
pub mod clock;
pub mod codec;
pub mod config;
pub mod datadir;
pub mod drops;
pub mod engine;
pub mod events;
pub mod fault;
#[doc(hidden)]
pub mod fuzzing;
pub mod idempotency;
pub mod inspect;
pub mod output;
pub mod payments;
pub mod prometheus;
pub mod records;
pub mod serve;
pub mod store;
mod sync;
pub mod tune;
pub mod wal;
