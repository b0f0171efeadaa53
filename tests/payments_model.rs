//! Model-based test of payments in the engine: random interleavings of
//! reserve, `/payment`, gateway events (succeeded, failed, canceled; by
//! the hold they name or by their payment reference; new and repeated),
//! confirm, release, clock jumps, sweeps and restocks, checked step by
//! step against a plain model of the contract's outcome table.
//!
//! After every step: the engine's answer equals the model's, every SKU's
//! figures match (so no unit is ever sold twice and `held + sold <=
//! stock`), sold equals the units of the confirmed holds, and the engine's
//! own invariant check passes. At the end the engine's checkpoint image is
//! restored into a fresh engine, which must answer every event settled so
//! far as a repeat with its first outcome. `PROPTEST_CASES` sets the cases.

mod common;

use std::collections::BTreeMap;

use proptest::prelude::*;
use stampede::engine::payments::{Settle, Settled};
use stampede::engine::{Engine, Error, Fill, HoldId, ItemRequest, Options, ReserveRequest};
use stampede::payments::{Meaning, Outcome};

const SKUS: [&str; 2] = ["a", "b"];
const GATEWAY: &str = "g";
const MAX_TTL_MS: u64 = 5_000;
const PENDING_TTL_MS: u64 = 3_000;
const PENDING_MAX_MS: u64 = 8_000;
/// Longer than any run: no hold is purged, so every id stays readable.
const RETENTION_MS: u64 = 10_000_000;

#[derive(Debug, Clone)]
enum Op {
    Reserve {
        items: Vec<(usize, u32)>,
        ttl_ms: u64,
    },
    Payment {
        hold: usize,
        payment_ref: u8,
    },
    Webhook {
        event: u8,
        meaning: u8,
        by: By,
    },
    Confirm {
        hold: usize,
    },
    Release {
        hold: usize,
    },
    Advance {
        ms: u64,
    },
    Sweep,
    Restock {
        sku: usize,
        stock: u64,
    },
}

#[derive(Debug, Clone)]
enum By {
    Hold(usize),
    Ref(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (prop::collection::vec((0..SKUS.len(), 1u32..3), 1..3), 1u64..4000)
            .prop_map(|(items, ttl_ms)| Op::Reserve { items, ttl_ms }),
        3 => (any::<usize>(), 0u8..4).prop_map(|(hold, payment_ref)| Op::Payment { hold, payment_ref }),
        6 => (0u8..12, 0u8..3, prop_oneof![
                any::<usize>().prop_map(By::Hold),
                (0u8..5).prop_map(By::Ref),
            ])
            .prop_map(|(event, meaning, by)| Op::Webhook { event, meaning, by }),
        1 => any::<usize>().prop_map(|hold| Op::Confirm { hold }),
        1 => any::<usize>().prop_map(|hold| Op::Release { hold }),
        3 => (0u64..3000).prop_map(|ms| Op::Advance { ms }),
        2 => Just(Op::Sweep),
        2 => (0..SKUS.len(), 0u64..8).prop_map(|(sku, stock)| Op::Restock { sku, stock }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Held,
    Confirmed,
    Released,
    Expired,
}

#[derive(Debug, Clone)]
struct MHold {
    id: HoldId,
    items: Vec<(usize, u32)>,
    created_at_ms: u64,
    expires_at_ms: u64,
    status: St,
    payment: Option<String>,
}

#[derive(Debug, Default)]
struct Model {
    now_ms: u64,
    stock: [u64; 2],
    sold: [u64; 2],
    holds: Vec<MHold>,
    /// Event id -> its first outcome and hold.
    events: BTreeMap<String, (Outcome, Option<usize>)>,
    /// Payment reference -> the hold that recorded it last.
    refs: BTreeMap<String, usize>,
}

impl Model {
    fn held(&self, sku: usize) -> u64 {
        self.holds
            .iter()
            .filter(|h| h.status == St::Held)
            .flat_map(|h| h.items.iter())
            .filter(|(s, _)| *s == sku)
            .map(|&(_, q)| u64::from(q))
            .sum()
    }

    fn available(&self, sku: usize) -> u64 {
        self.stock[sku] - self.held(sku) - self.sold[sku]
    }

    fn end(&mut self, i: usize, to: St) {
        if to == St::Confirmed {
            for &(s, q) in &self.holds[i].items.clone() {
                self.sold[s] += u64::from(q);
            }
        }
        self.holds[i].status = to;
    }

    /// The sweep's work, whenever it happens: an active hold past its
    /// expiry ends expired (the engine's answers already treat it so).
    fn expire_due(&mut self) {
        for h in &mut self.holds {
            if h.status == St::Held && self.now_ms >= h.expires_at_ms {
                h.status = St::Expired;
            }
        }
    }

    fn payment(&mut self, i: usize, r: &str) -> Result<(), Error> {
        let now = self.now_ms;
        let h = &mut self.holds[i];
        match h.status {
            St::Held if now < h.expires_at_ms => {}
            St::Held | St::Expired => {
                return Err(Error::HoldExpired {
                    expired_at_ms: h.expires_at_ms,
                })
            }
            St::Confirmed => {
                return Err(Error::HoldNotActive {
                    status: stampede::engine::Status::Confirmed,
                })
            }
            St::Released => {
                return Err(Error::HoldNotActive {
                    status: stampede::engine::Status::Released,
                })
            }
        }
        match &h.payment {
            Some(p) if p == r => Ok(()),
            Some(p) => Err(Error::PaymentRefMismatch {
                payment_ref: p.clone(),
            }),
            None => {
                h.payment = Some(r.to_owned());
                self.refs.insert(r.to_owned(), i);
                h.expires_at_ms = h
                    .expires_at_ms
                    .max((now + PENDING_TTL_MS).min(h.created_at_ms + PENDING_MAX_MS));
                Ok(())
            }
        }
    }

    fn settle(
        &mut self,
        event: &str,
        meaning: Meaning,
        hold: Option<usize>,
    ) -> (Outcome, Option<usize>, bool) {
        if let Some(&(outcome, hold)) = self.events.get(event) {
            return (outcome, hold, true);
        }
        let now = self.now_ms;
        let Some(i) = hold else {
            self.events
                .insert(event.to_owned(), (Outcome::Unmatched, None));
            return (Outcome::Unmatched, None, false);
        };
        let h = &self.holds[i];
        let active = h.status == St::Held && now < h.expires_at_ms;
        let outcome = match (meaning, h.status) {
            (Meaning::Succeeded, St::Held) if active => Outcome::Confirmed,
            (Meaning::Succeeded, St::Held) => Outcome::ConfirmedLate,
            (Meaning::Succeeded, St::Confirmed) => Outcome::Duplicate,
            (Meaning::Succeeded, _) => {
                let free = h
                    .items
                    .iter()
                    .all(|&(s, q)| self.available(s) >= u64::from(q));
                if free {
                    Outcome::ConfirmedLate
                } else {
                    Outcome::Orphaned
                }
            }
            (Meaning::Canceled, St::Confirmed) | (Meaning::Failed, _) => Outcome::Noted,
            (Meaning::Canceled, _) => Outcome::Released,
            (Meaning::Ignored, _) => unreachable!(),
        };
        match (outcome, h.status) {
            (Outcome::Confirmed | Outcome::ConfirmedLate, St::Held) => self.end(i, St::Confirmed),
            (Outcome::ConfirmedLate, _) => self.end(i, St::Confirmed),
            (Outcome::Released, St::Held) => {
                let to = if active { St::Released } else { St::Expired };
                self.end(i, to)
            }
            _ => {}
        }
        self.events.insert(event.to_owned(), (outcome, Some(i)));
        (outcome, Some(i), false)
    }
}

fn pick(model: &Model, hold: usize) -> Option<usize> {
    (!model.holds.is_empty()).then(|| hold % model.holds.len())
}

fn meaning(m: u8) -> Meaning {
    match m {
        0 => Meaning::Succeeded,
        1 => Meaning::Failed,
        _ => Meaning::Canceled,
    }
}

fn apply(
    engine: &Engine,
    clock: &common::ManualClockHandle,
    model: &mut Model,
    op: &Op,
) -> Result<(), String> {
    let check = |ok: bool, what: String| if ok { Ok(()) } else { Err(what) };
    match op {
        Op::Reserve { items, ttl_ms } => {
            let mut merged: Vec<(usize, u32)> = Vec::new();
            for &(s, q) in items {
                if !merged.iter().any(|m| m.0 == s) {
                    merged.push((s, q));
                }
            }
            let reqs: Vec<ItemRequest> = merged
                .iter()
                .map(|&(s, qty)| ItemRequest { sku: SKUS[s], qty })
                .collect();
            let got = engine.reserve(&ReserveRequest {
                customer_id: "c-1",
                items: &reqs,
                ttl_ms: Some(*ttl_ms),
                fill: Fill::All,
            });
            let fits = merged
                .iter()
                .all(|&(s, q)| model.available(s) >= u64::from(q));
            match got {
                Ok(r) => {
                    check(fits, format!("engine held {r:?}, the model has no room"))?;
                    model.holds.push(MHold {
                        id: r.id,
                        items: merged,
                        created_at_ms: model.now_ms,
                        expires_at_ms: model.now_ms + ttl_ms.min(&MAX_TTL_MS),
                        status: St::Held,
                        payment: None,
                    });
                    check(
                        r.expires_at_ms == model.holds.last().unwrap().expires_at_ms,
                        format!("expiry {r:?}"),
                    )
                }
                Err(e) => check(!fits, format!("engine refused ({e}), the model has room")),
            }
        }
        Op::Payment { hold, payment_ref } => {
            let Some(i) = pick(model, *hold) else {
                return Ok(());
            };
            let r = format!("pi_{payment_ref}");
            let got = engine.payment_logged(
                model.holds[i].id,
                GATEWAY,
                &r,
                PENDING_TTL_MS,
                PENDING_MAX_MS,
            );
            let want = model.payment(i, &r);
            match (&got, &want) {
                (Ok(l), Ok(())) => check(
                    l.value.expires_at_ms == model.holds[i].expires_at_ms
                        && l.value.payment.as_ref().map(|p| p.payment_ref.as_str())
                            == model.holds[i].payment.as_deref(),
                    format!("engine {:?}, model {:?}", l.value, model.holds[i]),
                ),
                (Err(a), Err(b)) => check(a == b, format!("engine {a:?}, model {b:?}")),
                _ => Err(format!("engine {got:?}, model {want:?}")),
            }
        }
        Op::Webhook {
            event,
            meaning: m,
            by,
        } => {
            let event_id = format!("evt_{event}");
            let (hold_text, payment_ref, model_hold) = match by {
                By::Hold(h) => match pick(model, *h) {
                    Some(i) => (Some(model.holds[i].id.to_string()), None, Some(i)),
                    None => (None, None, None),
                },
                By::Ref(r) => {
                    let r = format!("pi_{r}");
                    let i = model.refs.get(&r).copied();
                    (None, Some(r), i)
                }
            };
            let got = engine
                .settle_logged(&Settle {
                    gateway: GATEWAY,
                    event_id: &event_id,
                    kind: "payment.x",
                    meaning: meaning(*m),
                    hold: hold_text.as_deref(),
                    payment_ref: payment_ref.as_deref(),
                    order_ref: None,
                    dedupe_ms: 1_000_000_000,
                })
                .map_err(|e| format!("settle failed: {e}"))?
                .value;
            let (outcome, hold, repeat) = model.settle(&event_id, meaning(*m), model_hold);
            let want = Settled {
                outcome,
                hold: hold.map(|i| model.holds[i].id),
                repeat,
            };
            check(
                got == want,
                format!(
                    "engine {got:?}, model {want:?}; refs {:?}; holds {:?}",
                    model.refs,
                    model
                        .holds
                        .iter()
                        .map(|h| (h.id.to_string(), h.status, h.payment.clone()))
                        .collect::<Vec<_>>()
                ),
            )
        }
        Op::Confirm { hold } => {
            let Some(i) = pick(model, *hold) else {
                return Ok(());
            };
            let got = engine.confirm(model.holds[i].id, None);
            let h = &model.holds[i];
            match h.status {
                St::Held if model.now_ms < h.expires_at_ms => {
                    model.end(i, St::Confirmed);
                    check(got.is_ok(), format!("confirm {got:?}"))
                }
                St::Confirmed => check(got.is_ok(), format!("confirm {got:?}")),
                _ => check(got.is_err(), format!("confirm {got:?}")),
            }
        }
        Op::Release { hold } => {
            let Some(i) = pick(model, *hold) else {
                return Ok(());
            };
            let got = engine.release(model.holds[i].id);
            let h = &model.holds[i];
            match h.status {
                St::Held => {
                    let to = if model.now_ms < h.expires_at_ms {
                        St::Released
                    } else {
                        St::Expired
                    };
                    model.end(i, to);
                    check(got.is_ok(), format!("release {got:?}"))
                }
                St::Confirmed => check(got.is_err(), format!("release {got:?}")),
                _ => check(got.is_ok(), format!("release {got:?}")),
            }
        }
        Op::Advance { ms } => {
            clock.advance(*ms);
            model.now_ms += ms;
            Ok(())
        }
        Op::Sweep => {
            engine.sweep();
            model.expire_due();
            Ok(())
        }
        Op::Restock { sku, stock } => {
            let committed = model.held(*sku) + model.sold[*sku];
            let got = engine.set_stock(SKUS[*sku], *stock, None);
            if *stock >= committed {
                model.stock[*sku] = *stock;
                check(got.is_ok(), format!("restock {got:?}"))
            } else {
                check(got.is_err(), format!("restock {got:?}"))
            }
        }
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let options = Options {
        shards: 2,
        default_ttl_ms: 1_000,
        max_ttl_ms: MAX_TTL_MS,
        retention_ms: RETENTION_MS,
        ..Options::default()
    };
    let (engine, clock) = common::engine_with(options.clone());
    let mut model = Model {
        now_ms: common::T0,
        stock: [3, 2],
        ..Model::default()
    };
    for (s, stock) in model.stock.iter().enumerate() {
        engine.set_stock(SKUS[s], *stock, None).unwrap();
    }
    for (step, op) in ops.iter().enumerate() {
        apply(&engine, &clock, &mut model, op)
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
        engine.check_invariants();
        for (s, name) in SKUS.iter().enumerate() {
            let v = engine.sku(name).unwrap();
            prop_assert_eq!(
                (v.stock, v.held, v.sold, v.available),
                (
                    model.stock[s],
                    model.held(s),
                    model.sold[s],
                    model.available(s)
                ),
                "sku {} after step {} {:?}",
                name,
                step,
                op
            );
            prop_assert!(v.held + v.sold <= v.stock);
            let confirmed: u64 = model
                .holds
                .iter()
                .filter(|h| h.status == St::Confirmed)
                .flat_map(|h| h.items.iter())
                .filter(|(i, _)| *i == s)
                .map(|&(_, q)| u64::from(q))
                .sum();
            prop_assert_eq!(
                v.sold,
                confirmed,
                "each unit sold once, to a confirmed hold"
            );
        }
    }
    // The checkpoint image keeps the book: a fresh engine restored from it
    // answers every settled event as a repeat, with its first outcome.
    let (_, image) = engine.image(|| 0);
    let (restored, _) = common::engine_with(options);
    restored.restore(&image).map_err(TestCaseError::fail)?;
    restored.check_invariants();
    prop_assert_eq!(restored.pending_payments(), engine.pending_payments());
    for (event_id, &(outcome, hold)) in &model.events {
        let again = restored
            .settle_logged(&Settle {
                gateway: GATEWAY,
                event_id,
                kind: "payment.x",
                meaning: Meaning::Succeeded,
                hold: None,
                payment_ref: Some("pi_none"),
                order_ref: None,
                dedupe_ms: 1_000_000_000,
            })
            .unwrap()
            .value;
        let want = Settled {
            outcome,
            hold: hold.map(|i| model.holds[i].id),
            repeat: true,
        };
        prop_assert_eq!(again, want, "event {} after a restore", event_id);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn payments_match_the_outcome_table_and_never_sell_a_unit_twice(ops in prop::collection::vec(op(), 80)) {
        run(ops)?;
    }
}
