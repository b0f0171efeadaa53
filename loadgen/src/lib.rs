//! `stampede-loadgen`: flash-sale load with honest latency.
//!
//! - [`scenario`]: the TOML scenarios (phases, catalog, customers, flow).
//! - [`schedule`]: when each shopper arrives (open model, fixed in advance);
//!   [`clock`]: waiting for the next arrival to the microsecond.
//! - [`run`]: sending on schedule, measuring from the intended time, the
//!   per-second series, and the audit.
//! - [`target`]: stampede over HTTP ([`http`]: hyper's connection-level
//!   client with a pool of our own), the engine in-process, a fake for tests;
//!   [`redis`]: the same flow as Lua scripts on a Redis server.
//! - [`gateway`]: a payment gateway's signed webhooks (`[flow.payment]`).
//! - [`drop`]: a drop in front of the catalog (create, fill the pre-queue,
//!   wait for the opening, read the admissions back).
//! - [`report`]: the terminal report and `results.json`; [`chart`]: the
//!   chart of the per-second series (SVG and PNG).

pub mod chart;
pub mod clock;
pub mod drop;
pub mod gateway;
pub mod http;
pub mod redis;
pub mod report;
pub mod run;
pub use stampede_scenario as scenario;
pub mod schedule;
pub mod target;
