//! Model-based test: random sequences of every engine operation, checked
//! step by step against a plain sequential model of the contract.
//!
//! The model keeps holds in a `Vec` and computes everything (available,
//! customer tallies, expiry) by scanning, so it is obviously right and
//! shares no code with the engine. After every step the engine's answer
//! must equal the model's, every SKU view must match, and the engine's own
//! invariant check must pass. `PROPTEST_CASES` sets the number of cases
//! (default 1000, each of 100 steps); a failure prints the minimal sequence.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use stampede::engine::{
    Engine, Error, Fill, HoldId, ItemRequest, Options, Reservation, ReserveRequest, Status,
    SweepStats,
};

const SKUS: [&str; 6] = ["hot-1", "a", "b", "c", "d", "never-set"];
const CUSTOMERS: [&str; 3] = ["c-1", "c-2", "c-3"];
const DEFAULT_TTL_MS: u64 = 1000;
const MAX_TTL_MS: u64 = 5000;
const RETENTION_MS: u64 = 3000;

#[derive(Debug, Clone)]
enum Op {
    Set {
        sku: usize,
        stock: u64,
        limit: Option<u64>,
    },
    Adjust {
        sku: usize,
        delta: i64,
    },
    Reserve {
        customer: usize,
        items: Vec<(usize, u32)>,
        ttl_ms: Option<u64>,
        partial: bool,
    },
    Confirm {
        hold: usize,
        order_ref: Option<u8>,
    },
    Release {
        hold: usize,
    },
    Extend {
        hold: usize,
        ttl_ms: u64,
    },
    Get {
        hold: usize,
    },
    Advance {
        ms: u64,
    },
    Sweep,
}

/// Mostly multiples of 250 ms, like the clock jumps, so a confirm lands
/// exactly on an expiry often enough to test the boundary.
fn ttl() -> impl Strategy<Value = u64> {
    prop_oneof![4 => (0u64..28).prop_map(|k| k * 250), 1 => 0u64..7000]
}

fn op() -> impl Strategy<Value = Op> {
    let sku = 0..SKUS.len();
    prop_oneof![
        2 => (sku.clone(), 0u64..12, prop::option::of(0u64..4))
            .prop_map(|(sku, stock, limit)| Op::Set { sku, stock, limit }),
        1 => (sku.clone(), -6i64..6).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
        6 => (
            0..CUSTOMERS.len(),
            prop::collection::vec((sku, 0u32..4), 1..4),
            prop::option::of(ttl()),
            any::<bool>()
        )
            .prop_map(|(customer, items, ttl_ms, partial)| Op::Reserve { customer, items, ttl_ms, partial }),
        3 => (any::<usize>(), prop::option::of(0u8..3))
            .prop_map(|(hold, order_ref)| Op::Confirm { hold, order_ref }),
        2 => any::<usize>().prop_map(|hold| Op::Release { hold }),
        2 => (any::<usize>(), ttl()).prop_map(|(hold, ttl_ms)| Op::Extend { hold, ttl_ms }),
        1 => any::<usize>().prop_map(|hold| Op::Get { hold }),
        3 => prop_oneof![(0u64..8).prop_map(|k| k * 250), 0u64..1500].prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Sweep),
    ]
}

#[derive(Debug, Clone, Default)]
struct MSku {
    stock: u64,
    sold: u64,
    limit: u64,
}

#[derive(Debug, Clone)]
struct MHold {
    id: HoldId,
    customer: usize,
    items: Vec<(usize, u32)>,
    created_at_ms: u64,
    expires_at_ms: u64,
    status: Status,
    order_ref: Option<String>,
    ended_at_ms: u64,
    purged: bool,
}

#[derive(Debug, Default)]
struct Model {
    now_ms: u64,
    skus: BTreeMap<usize, MSku>,
    holds: Vec<MHold>,
    /// Units owned per (customer, sku): survives purge of the hold.
    owned: BTreeMap<(usize, usize), u64>,
}

impl Model {
    fn held(&self, sku: usize) -> u64 {
        self.holds
            .iter()
            .filter(|h| h.status == Status::Held)
            .flat_map(|h| h.items.iter())
            .filter(|(s, _)| *s == sku)
            .map(|&(_, q)| u64::from(q))
            .sum()
    }

    fn available(&self, sku: usize) -> u64 {
        let s = &self.skus[&sku];
        s.stock - self.held(sku) - s.sold
    }

    fn tally(&self, customer: usize, sku: usize) -> u64 {
        let held: u64 = self
            .holds
            .iter()
            .filter(|h| h.status == Status::Held && h.customer == customer)
            .flat_map(|h| h.items.iter())
            .filter(|(s, _)| *s == sku)
            .map(|&(_, q)| u64::from(q))
            .sum();
        held + self.owned.get(&(customer, sku)).copied().unwrap_or(0)
    }

    fn view(&self, h: &MHold) -> Reservation {
        let status = match h.status {
            Status::Held if self.now_ms >= h.expires_at_ms => Status::Expired,
            s => s,
        };
        Reservation {
            id: h.id,
            status,
            customer_id: CUSTOMERS[h.customer].into(),
            items: h
                .items
                .iter()
                .map(|&(s, qty)| stampede::engine::ItemView {
                    sku: SKUS[s].into(),
                    qty,
                })
                .collect(),
            created_at_ms: h.created_at_ms,
            expires_at_ms: h.expires_at_ms,
            order_ref: h.order_ref.as_deref().map(Into::into),
            // Payments have a model of their own: tests/payments_model.rs.
            payment: None,
        }
    }

    fn end(&mut self, i: usize, to: Status) {
        let now = self.now_ms;
        let h = &mut self.holds[i];
        h.status = to;
        h.ended_at_ms = now;
        if to == Status::Confirmed {
            for &(s, q) in &h.items.clone() {
                let sku = self.skus.get_mut(&s).unwrap();
                sku.sold += u64::from(q);
                // Only SKUs with a limit count what each customer owns.
                if sku.limit > 0 {
                    *self.owned.entry((h.customer, s)).or_default() += u64::from(q);
                }
            }
        }
    }

    fn set(&mut self, sku: usize, stock: u64, limit: Option<u64>) -> Result<(bool, u64), Error> {
        if let Some(s) = self.skus.get(&sku) {
            let committed = self.held(sku) + s.sold;
            if stock < committed {
                return Err(Error::StockBelowCommitted {
                    sku: SKUS[sku].into(),
                    committed,
                });
            }
            let old_limit = s.limit;
            let new_limit = limit.unwrap_or(old_limit);
            if old_limit == 0 && new_limit > 0 {
                // A limit set late counts the purchases still retained:
                // those whose retention has not run out (swept or not).
                let now = self.now_ms;
                for h in self
                    .holds
                    .iter()
                    .filter(|h| h.status == Status::Confirmed && h.ended_at_ms + RETENTION_MS > now)
                {
                    for &(s, q) in h.items.iter().filter(|(s, _)| *s == sku) {
                        *self.owned.entry((h.customer, s)).or_default() += u64::from(q);
                    }
                }
            }
            if new_limit == 0 {
                self.owned.retain(|&(_, s), _| s != sku);
            }
            let s = self.skus.get_mut(&sku).unwrap();
            s.stock = stock;
            s.limit = new_limit;
            Ok((false, stock))
        } else {
            self.skus.insert(
                sku,
                MSku {
                    stock,
                    sold: 0,
                    limit: limit.unwrap_or(0),
                },
            );
            Ok((true, stock))
        }
    }

    fn adjust(&mut self, sku: usize, delta: i64) -> Result<u64, Error> {
        let Some(s) = self.skus.get(&sku) else {
            return Err(Error::UnknownSku {
                sku: SKUS[sku].into(),
            });
        };
        let committed = self.held(sku) + s.sold;
        let new = s.stock as i64 + delta;
        if new < committed as i64 {
            return Err(Error::StockBelowCommitted {
                sku: SKUS[sku].into(),
                committed,
            });
        }
        self.skus.get_mut(&sku).unwrap().stock = new as u64;
        Ok(new as u64)
    }

    /// The model's answer to a reserve; on success the caller records the
    /// hold under the engine's id.
    fn reserve(
        &self,
        customer: usize,
        items: &[(usize, u32)],
        ttl_ms: Option<u64>,
        partial: bool,
    ) -> Result<(Vec<(usize, u32)>, u64), Error> {
        let ttl = match ttl_ms {
            None => DEFAULT_TTL_MS,
            Some(0) => return Err(Error::invalid_for_model("ttl_ms")),
            Some(t) => t.min(MAX_TTL_MS),
        };
        for (i, &(s, q)) in items.iter().enumerate() {
            if q == 0 {
                return Err(Error::invalid_for_model(&format!("items[{i}].qty")));
            }
            if items[..i].iter().any(|&(p, _)| p == s) {
                return Err(Error::invalid_for_model(&format!("items[{i}].sku")));
            }
        }
        if let Some(&(s, _)) = items.iter().find(|(s, _)| !self.skus.contains_key(s)) {
            return Err(Error::UnknownSku {
                sku: SKUS[s].into(),
            });
        }
        let mut grants = Vec::new();
        let mut first_refusal = None;
        for &(s, q) in items {
            let sku = &self.skus[&s];
            let available = self.available(s);
            let current = self.tally(customer, s);
            let room = if sku.limit == 0 {
                u64::MAX
            } else {
                sku.limit.saturating_sub(current)
            };
            let q64 = u64::from(q);
            let refusal = if q64 > available {
                Some(Error::InsufficientStock {
                    sku: SKUS[s].into(),
                    requested: q64,
                    available,
                })
            } else if q64 > room {
                Some(Error::CustomerLimitExceeded {
                    sku: SKUS[s].into(),
                    limit: sku.limit,
                    current,
                })
            } else {
                None
            };
            let grant = match refusal {
                None => q,
                Some(e) if !partial => return Err(e),
                Some(e) => {
                    first_refusal.get_or_insert(e);
                    q64.min(available).min(room) as u32
                }
            };
            if grant > 0 {
                grants.push((s, grant));
            }
        }
        if grants.is_empty() {
            return Err(first_refusal.unwrap());
        }
        Ok((grants, self.now_ms + ttl))
    }

    fn sweep(&mut self) -> SweepStats {
        let now = self.now_ms;
        let mut stats = SweepStats::default();
        for i in 0..self.holds.len() {
            if self.holds[i].status == Status::Held && self.holds[i].expires_at_ms <= now {
                self.end(i, Status::Expired);
                stats.expired += 1;
            }
        }
        for h in &mut self.holds {
            if h.status != Status::Held && !h.purged && h.ended_at_ms + RETENTION_MS <= now {
                h.purged = true;
                stats.purged += 1;
            }
        }
        stats
    }
}

trait InvalidForModel {
    fn invalid_for_model(field: &str) -> Self;
}

impl InvalidForModel for Error {
    /// The model only predicts the field of an `Invalid`, not the wording.
    fn invalid_for_model(field: &str) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: String::new(),
        }
    }
}

/// Compares results, ignoring the human wording of `Invalid`.
fn same<T: PartialEq + std::fmt::Debug>(
    engine: &Result<T, Error>,
    model: &Result<T, Error>,
) -> bool {
    match (engine, model) {
        (Err(Error::Invalid { field: a, .. }), Err(Error::Invalid { field: b, .. })) => a == b,
        (a, b) => a == b,
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (engine, clock) = common::engine_with(Options {
        shards: 4,
        default_ttl_ms: DEFAULT_TTL_MS,
        max_ttl_ms: MAX_TTL_MS,
        retention_ms: RETENTION_MS,
        ..Options::default()
    });
    let mut model = Model {
        now_ms: common::T0,
        ..Model::default()
    };
    for (step, op) in ops.into_iter().enumerate() {
        apply(&engine, &clock, &mut model, &op)
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
        engine.check_invariants();
        for &s in model.skus.keys() {
            let v = engine.sku(SKUS[s]).expect("a set sku is known");
            let m = &model.skus[&s];
            let expected = (m.stock, model.held(s), m.sold, model.available(s), m.limit);
            prop_assert_eq!(
                (v.stock, v.held, v.sold, v.available, v.customer_limit),
                expected,
                "sku {} after step {} {:?}",
                SKUS[s],
                step,
                op
            );
        }
    }
    Ok(())
}

fn pick(model: &Model, hold: usize) -> Option<usize> {
    (!model.holds.is_empty()).then(|| hold % model.holds.len())
}

fn apply(
    engine: &Engine,
    clock: &common::ManualClockHandle,
    model: &mut Model,
    op: &Op,
) -> Result<(), String> {
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    match *op {
        Op::Set { sku, stock, limit } => {
            let got = engine
                .set_stock(SKUS[sku], stock, limit)
                .map(|(c, v)| (c, v.stock));
            let want = model.set(sku, stock, limit);
            check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
        }
        Op::Adjust { sku, delta } => {
            let got = engine.adjust_stock(SKUS[sku], delta).map(|v| v.stock);
            let want = model.adjust(sku, delta);
            check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
        }
        Op::Reserve {
            customer,
            ref items,
            ttl_ms,
            partial,
        } => {
            let reqs: Vec<ItemRequest> = items
                .iter()
                .map(|&(s, qty)| ItemRequest { sku: SKUS[s], qty })
                .collect();
            let got = engine.reserve(&ReserveRequest {
                customer_id: CUSTOMERS[customer],
                items: &reqs,
                ttl_ms,
                fill: if partial { Fill::Partial } else { Fill::All },
            });
            let want = model.reserve(customer, items, ttl_ms, partial);
            match (&got, want) {
                (Ok(r), Ok((grants, expires_at_ms))) => {
                    model.holds.push(MHold {
                        id: r.id,
                        customer,
                        items: grants,
                        created_at_ms: model.now_ms,
                        expires_at_ms,
                        status: Status::Held,
                        order_ref: None,
                        ended_at_ms: 0,
                        purged: false,
                    });
                    let expected = model.view(model.holds.last().unwrap());
                    check(*r == expected, format!("engine {r:?}, model {expected:?}"))
                }
                (got, want) => {
                    let want = want.map(|_| ());
                    let got = got.as_ref().map(|_| ()).map_err(Clone::clone);
                    check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
                }
            }
        }
        Op::Confirm { hold, order_ref } => {
            let Some(i) = pick(model, hold) else {
                return Ok(());
            };
            let order_ref = order_ref.map(|n| format!("order-{n}"));
            let got = engine.confirm(model.holds[i].id, order_ref.as_deref());
            let h = &model.holds[i];
            let want = if h.purged {
                Err(Error::HoldNotFound)
            } else {
                match h.status {
                    Status::Held if model.now_ms < h.expires_at_ms => {
                        model.end(i, Status::Confirmed);
                        model.holds[i].order_ref = order_ref;
                        Ok(model.view(&model.holds[i]))
                    }
                    Status::Held | Status::Expired => Err(Error::HoldExpired {
                        expired_at_ms: h.expires_at_ms,
                    }),
                    Status::Confirmed => Ok(model.view(h)),
                    Status::Released | Status::PendingPayment => {
                        Err(Error::HoldNotActive { status: h.status })
                    }
                }
            };
            check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
        }
        Op::Release { hold } => {
            let Some(i) = pick(model, hold) else {
                return Ok(());
            };
            let got = engine.release(model.holds[i].id);
            let h = &model.holds[i];
            let want = if h.purged {
                Err(Error::HoldNotFound)
            } else {
                match h.status {
                    Status::Held => {
                        let to = if model.now_ms < h.expires_at_ms {
                            Status::Released
                        } else {
                            Status::Expired
                        };
                        model.end(i, to);
                        Ok(model.view(&model.holds[i]))
                    }
                    Status::Released | Status::Expired => Ok(model.view(h)),
                    Status::Confirmed | Status::PendingPayment => {
                        Err(Error::HoldNotActive { status: h.status })
                    }
                }
            };
            check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
        }
        Op::Extend { hold, ttl_ms } => {
            let Some(i) = pick(model, hold) else {
                return Ok(());
            };
            let got = engine.extend(model.holds[i].id, ttl_ms);
            let now = model.now_ms;
            let h = &mut model.holds[i];
            let want = if ttl_ms == 0 {
                Err(Error::invalid_for_model("ttl_ms"))
            } else if h.purged {
                Err(Error::HoldNotFound)
            } else {
                match h.status {
                    Status::Held if now < h.expires_at_ms => {
                        h.expires_at_ms = (now + ttl_ms).min(h.created_at_ms + MAX_TTL_MS);
                        Ok(model.view(&model.holds[i]))
                    }
                    Status::Held | Status::Expired => Err(Error::HoldExpired {
                        expired_at_ms: h.expires_at_ms,
                    }),
                    status => Err(Error::HoldNotActive { status }),
                }
            };
            check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
        }
        Op::Get { hold } => {
            let Some(i) = pick(model, hold) else {
                return Ok(());
            };
            let got = engine.get(model.holds[i].id);
            let h = &model.holds[i];
            let want = if h.purged {
                Err(Error::HoldNotFound)
            } else {
                Ok(model.view(h))
            };
            check(same(&got, &want), format!("engine {got:?}, model {want:?}"))
        }
        Op::Advance { ms } => {
            clock.advance(ms);
            model.now_ms += ms;
            Ok(())
        }
        Op::Sweep => {
            let got = engine.sweep();
            let want = model.sweep();
            check(got == want, format!("engine {got:?}, model {want:?}"))
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_sequential_model(ops in prop::collection::vec(op(), 100)) {
        run(ops)?;
    }
}
