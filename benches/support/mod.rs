//! What the engine benchmarks share: the naive baseline, the workloads and
//! a seeded generator. Benchmarks only; never part of the library.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use stampede::clock::SystemClock;
use stampede::engine::{Engine, Fill, HoldId, ItemRequest, Options, ReserveRequest, STOCK_MAX};

pub const SKUS: usize = 100_000;
/// Customers per thread: enough to make limits and tallies real work,
/// few enough that owned tallies do not grow for the whole run.
pub const CUSTOMERS_PER_THREAD: usize = 16;

/// xorshift64*: seeded, cheap enough not to show in the figures.
pub struct Rng(pub u64);

impl Rng {
    #[inline]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Workload {
    /// One item, a SKU drawn uniformly from 100k.
    Uniform,
    /// One item, always the same SKU.
    Hot,
    /// Four distinct SKUs drawn uniformly from 100k.
    Multi4,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform_100k",
            Workload::Hot => "hot_sku",
            Workload::Multi4 => "multi_4",
        }
    }

    /// Fills `out` with the next request's SKU indices.
    #[inline]
    pub fn pick(self, rng: &mut Rng, out: &mut Vec<usize>) {
        out.clear();
        match self {
            Workload::Uniform => out.push(rng.below(SKUS)),
            Workload::Hot => out.push(0),
            Workload::Multi4 => {
                while out.len() < 4 {
                    let s = rng.below(SKUS);
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
    }
}

pub fn sku_names() -> Vec<String> {
    (0..SKUS).map(|i| format!("sku-{i:06}")).collect()
}

/// Length of every SKU name: `sku-` and six digits.
pub const SKU_NAME_LEN: usize = 10;

/// Writes SKU `i`'s name into `buf`, as a request parser would hand it over:
/// in a buffer just written, not in a table the benchmark keeps (whose
/// cache misses would be charged to the engine).
#[inline]
pub fn sku_name(mut i: usize, buf: &mut [u8; SKU_NAME_LEN]) -> &str {
    buf[..4].copy_from_slice(b"sku-");
    for d in buf[4..].iter_mut().rev() {
        *d = b'0' + (i % 10) as u8;
        i /= 10;
    }
    std::str::from_utf8(buf).expect("ASCII")
}

pub fn customer_names(thread: usize) -> Vec<String> {
    (0..CUSTOMERS_PER_THREAD)
        .map(|i| format!("cust-{thread}-{i}"))
        .collect()
}

/// What a benchmark drives: the engine or the naive baseline.
pub trait Target: Sync {
    type Id: Copy;
    fn reserve(&self, customer: &str, items: &[ItemRequest<'_>]) -> Self::Id;
    fn confirm(&self, id: Self::Id);
    fn release(&self, id: Self::Id);
    /// Periodic upkeep a real server also pays (the engine's sweep).
    fn upkeep(&self);
}

/// The engine as the server runs it: real clock, default shard count, every
/// SKU at the largest stock so a long run never sells out, ended holds
/// purged at the next sweep (retention 0) so the run does not fill memory.
pub fn engine(names: &[String]) -> Engine {
    let engine = Engine::new(
        Options {
            retention_ms: 0,
            retained_max: 1 << 26,
            shards: bench_shards(),
            ..Options::default()
        },
        Arc::new(SystemClock),
    );
    for n in names {
        engine.set_stock(n, STOCK_MAX, Some(0)).unwrap();
    }
    engine
}

/// `STAMPEDE_BENCH_SHARDS` overrides the default shard count, to measure
/// its effect; the recorded figures use the default.
pub fn bench_shards() -> usize {
    std::env::var("STAMPEDE_BENCH_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(stampede::engine::default_shards)
}

impl Target for Engine {
    type Id = HoldId;

    #[inline]
    fn reserve(&self, customer: &str, items: &[ItemRequest<'_>]) -> HoldId {
        let r = Engine::reserve(
            self,
            &ReserveRequest {
                customer_id: customer,
                items,
                ttl_ms: None,
                fill: Fill::All,
            },
        );
        r.expect("stock never runs out in the benchmark").id
    }

    #[inline]
    fn confirm(&self, id: HoldId) {
        Engine::confirm(self, id, None).expect("fresh hold confirms");
    }

    #[inline]
    fn release(&self, id: HoldId) {
        Engine::release(self, id).expect("fresh hold releases");
    }

    fn upkeep(&self) {
        self.sweep();
    }
}

/// The baseline: what one writes first. One global lock over one map of
/// SKUs and one map of holds, owned `String`s, the same checks (validation,
/// stock, customer limit tally), no expiry index and holds removed as soon
/// as they end (both favour the baseline).
pub struct Naive {
    state: Mutex<NaiveState>,
    clock: SystemClock,
}

#[derive(Default)]
struct NaiveState {
    skus: HashMap<String, NaiveSku, foldhash::fast::RandomState>,
    holds: HashMap<u64, NaiveHold, foldhash::fast::RandomState>,
    tallies: HashMap<(String, String), u64, foldhash::fast::RandomState>,
    next_id: u64,
}

struct NaiveSku {
    stock: u64,
    held: u64,
    sold: u64,
    limit: u64,
}

struct NaiveHold {
    customer: String,
    items: Vec<(String, u32)>,
    expires_at_ms: u64,
}

impl Naive {
    pub fn new(names: &[String]) -> Naive {
        let mut state = NaiveState::default();
        for n in names {
            state.skus.insert(
                n.clone(),
                NaiveSku {
                    stock: STOCK_MAX,
                    held: 0,
                    sold: 0,
                    limit: 0,
                },
            );
        }
        Naive {
            state: Mutex::new(state),
            clock: SystemClock,
        }
    }
}

impl Target for Naive {
    type Id = u64;

    fn reserve(&self, customer: &str, items: &[ItemRequest<'_>]) -> u64 {
        use stampede::clock::Clock;
        assert!(stampede::engine::is_valid_ident(customer));
        let now = self.clock.now_ms();
        let mut st = self.state.lock();
        for item in items {
            assert!(stampede::engine::is_valid_ident(item.sku) && item.qty > 0);
            let sku = &st.skus[item.sku];
            let tally = st
                .tallies
                .get(&(customer.to_owned(), item.sku.to_owned()))
                .copied()
                .unwrap_or(0);
            assert!(sku.stock - sku.held - sku.sold >= u64::from(item.qty));
            assert!(sku.limit == 0 || tally + u64::from(item.qty) <= sku.limit);
        }
        for item in items {
            st.skus.get_mut(item.sku).unwrap().held += u64::from(item.qty);
            *st.tallies
                .entry((customer.to_owned(), item.sku.to_owned()))
                .or_default() += u64::from(item.qty);
        }
        st.next_id += 1;
        let id = st.next_id;
        let hold = NaiveHold {
            customer: customer.to_owned(),
            items: items.iter().map(|i| (i.sku.to_owned(), i.qty)).collect(),
            expires_at_ms: now + 600_000,
        };
        st.holds.insert(id, hold);
        id
    }

    fn confirm(&self, id: u64) {
        use stampede::clock::Clock;
        let now = self.clock.now_ms();
        let mut st = self.state.lock();
        let hold = st.holds.remove(&id).expect("fresh hold");
        assert!(now < hold.expires_at_ms);
        for (sku, qty) in &hold.items {
            let s = st.skus.get_mut(sku.as_str()).unwrap();
            s.held -= u64::from(*qty);
            s.sold += u64::from(*qty);
        }
    }

    fn release(&self, id: u64) {
        let mut st = self.state.lock();
        let hold = st.holds.remove(&id).expect("fresh hold");
        for (sku, qty) in &hold.items {
            st.skus.get_mut(sku.as_str()).unwrap().held -= u64::from(*qty);
            let key = (hold.customer.clone(), sku.clone());
            *st.tallies.get_mut(&key).unwrap() -= u64::from(*qty);
        }
    }

    fn upkeep(&self) {}
}
