//! Helpers shared by the engine tests.
#![allow(dead_code)]

use std::sync::Arc;

use stampede::clock::ManualClock;
use stampede::engine::{Engine, Fill, ItemRequest, Options, ReserveRequest};

pub const T0: u64 = 1_764_000_000_000;

pub fn engine_with(options: Options) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    (Engine::new(options, clock.clone()), clock)
}

pub fn engine(shards: usize) -> (Engine, Arc<ManualClock>) {
    engine_with(Options {
        shards,
        ..Options::default()
    })
}

pub fn items<'a>(pairs: &'a [(&'a str, u32)]) -> Vec<ItemRequest<'a>> {
    pairs
        .iter()
        .map(|&(sku, qty)| ItemRequest { sku, qty })
        .collect()
}

pub fn req<'a>(customer_id: &'a str, items: &'a [ItemRequest<'a>]) -> ReserveRequest<'a> {
    ReserveRequest {
        customer_id,
        items,
        ttl_ms: None,
        fill: Fill::All,
    }
}

pub type ManualClockHandle = Arc<ManualClock>;
#[allow(dead_code)] // not every test binary uses it
pub mod drops;
pub mod hooks;
pub mod payments;
pub mod redis;
pub mod server;
pub mod sse;
