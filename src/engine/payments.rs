//! Payments in the engine (contract v1.2, "Payments"): `/payment` records
//! a hold's pending payment and lets it live as long as the payment needs;
//! a gateway event is settled against its hold exactly once.
//!
//! # The book
//!
//! [`Book`] (one mutex, `Engine::payments`) remembers each settled event
//! by gateway and event id until its forget time, with its first outcome,
//! and which hold each (gateway, `payment_ref`) was recorded for, so an
//! event that names no hold finds it. A settlement's record carries both
//! its effect on the hold and the event id ([`Change::PaymentSettled`]):
//! a crash keeps both or neither.
//!
//! Lock order: the book before any shard. The sweeper and purge never
//! take it; an index entry whose hold was purged finds nothing (a hold id
//! carries its slot's generation). A checkpoint takes it before the shards
//! ([`Engine::image`]).
//!
//! # Bounds
//!
//! At most [`REMEMBERED_MAX`] events and as many references are kept;
//! past that the oldest is forgotten early. That costs nothing but the
//! answer: every effect is idempotent by the hold's state (a confirmed
//! hold is confirmed once, a released one released once), so an event
//! forgotten and delivered again changes nothing, though it may answer
//! another outcome (`duplicate`) and tell `payment.failed` again.

use std::collections::{HashMap, VecDeque};

#[allow(unused_imports)]
use super::*;
use crate::payments::{Meaning, Outcome};

/// Most gateway events (and, apart, most payment references) remembered.
pub const REMEMBERED_MAX: usize = 1_000_000;

/// A gateway event as the engine settles it (already verified and read).
#[derive(Debug, Clone, Copy)]
pub struct Settle<'a> {
    pub gateway: &'a str,
    pub event_id: &'a str,
    /// The event's type, as sent (for `payment.unmatched`).
    pub kind: &'a str,
    pub meaning: Meaning,
    /// The hold the event names (its id as text), if it names one.
    pub hold: Option<&'a str>,
    /// The payment's reference at the gateway, if the event has one.
    pub payment_ref: Option<&'a str>,
    /// The confirmation's order reference, if any (an identifier).
    pub order_ref: Option<&'a str>,
    /// How long the event id is remembered (`payments.dedupe_ms`).
    pub dedupe_ms: u64,
}

impl<'a> Settle<'a> {
    /// Its log record, settled as `outcome` on `hold` at `at_ms`.
    fn change(
        &self,
        outcome: Outcome,
        hold: Option<HoldId>,
        forget_at_ms: u64,
        at_ms: u64,
    ) -> Change<'a> {
        Change::PaymentSettled {
            gateway: self.gateway,
            event_id: self.event_id,
            kind: self.kind,
            outcome,
            hold,
            payment_ref: self.payment_ref,
            order_ref: self.order_ref,
            forget_at_ms,
            at_ms,
        }
    }
}

/// What settling an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub outcome: Outcome,
    pub hold: Option<HoldId>,
    /// The event was settled before: this is its first outcome, and
    /// nothing changed now.
    pub repeat: bool,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    outcome: Outcome,
    hold: Option<HoldId>,
    forget_at_ms: u64,
}

type Key = (CompactString, CompactString);

/// A settled event as a checkpoint keeps it: gateway, event id, outcome,
/// hold, forget time.
pub(super) type EventEntry<'a> = (&'a str, &'a str, Outcome, Option<HoldId>, u64);

/// A payment reference as a checkpoint keeps it: gateway, reference,
/// hold, forget time.
pub(super) type RefEntry<'a> = (&'a str, &'a str, HoldId, u64);

/// Settled events and recorded payment references (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Book {
    events: HashMap<Key, Seen>,
    /// `events`' keys in the order they were settled.
    events_order: VecDeque<Key>,
    refs: HashMap<Key, (HoldId, u64)>,
    refs_order: VecDeque<Key>,
}

fn key(a: &str, b: &str) -> Key {
    (CompactString::from(a), CompactString::from(b))
}

impl Book {
    fn seen(&self, gateway: &str, event_id: &str, now_ms: u64) -> Option<Seen> {
        self.events
            .get(&key(gateway, event_id))
            .filter(|s| s.forget_at_ms > now_ms)
            .copied()
    }

    fn remember(&mut self, gateway: &str, event_id: &str, seen: Seen, now_ms: u64) {
        let k = key(gateway, event_id);
        if self.events.insert(k.clone(), seen).is_none() {
            self.events_order.push_back(k);
        }
        prune(&mut self.events, &mut self.events_order, now_ms, |s| {
            s.forget_at_ms
        });
    }

    fn hold_of(&self, gateway: &str, payment_ref: &str, now_ms: u64) -> Option<HoldId> {
        self.refs
            .get(&key(gateway, payment_ref))
            .filter(|(_, forget)| *forget > now_ms)
            .map(|(id, _)| *id)
    }

    fn note_ref(&mut self, gateway: &str, payment_ref: &str, id: HoldId, forget_at_ms: u64) {
        let k = key(gateway, payment_ref);
        if self.refs.insert(k.clone(), (id, forget_at_ms)).is_none() {
            self.refs_order.push_back(k);
        }
        prune(&mut self.refs, &mut self.refs_order, 0, |r| r.1);
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        (self.events.len(), self.refs.len())
    }

    /// The book as checkpoint entries: `event(gateway, id, outcome, hold,
    /// forget)` and `reference(gateway, ref, hold, forget)`.
    pub(super) fn entries(
        &self,
    ) -> (
        impl Iterator<Item = EventEntry<'_>>,
        impl Iterator<Item = RefEntry<'_>>,
    ) {
        (
            self.events_order.iter().filter_map(|k| {
                let s = self.events.get(k)?;
                Some((
                    k.0.as_str(),
                    k.1.as_str(),
                    s.outcome,
                    s.hold,
                    s.forget_at_ms,
                ))
            }),
            self.refs_order.iter().filter_map(|k| {
                let (id, forget) = self.refs.get(k)?;
                Some((k.0.as_str(), k.1.as_str(), *id, *forget))
            }),
        )
    }

    pub(super) fn restore_event(
        &mut self,
        gateway: &str,
        event_id: &str,
        outcome: Outcome,
        hold: Option<HoldId>,
        forget_at_ms: u64,
    ) {
        let seen = Seen {
            outcome,
            hold,
            forget_at_ms,
        };
        self.remember(gateway, event_id, seen, 0);
    }

    pub(super) fn restore_ref(&mut self, gateway: &str, r: &str, id: HoldId, forget_at_ms: u64) {
        self.note_ref(gateway, r, id, forget_at_ms);
    }
}

/// Drops the oldest entries whose forget time has come (at most a few per
/// call, so no call does much), and any past [`REMEMBERED_MAX`].
fn prune<V>(
    map: &mut HashMap<Key, V>,
    order: &mut VecDeque<Key>,
    now_ms: u64,
    forget_at: impl Fn(&V) -> u64,
) {
    for _ in 0..4 {
        let Some(front) = order.front() else { break };
        let stale = map.get(front).is_none_or(|v| forget_at(v) <= now_ms);
        if !stale && order.len() <= REMEMBERED_MAX {
            break;
        }
        if let Some(k) = order.pop_front() {
            map.remove(&k);
        }
    }
}

impl Engine {
    /// Takes and lets go the payments book's lock and every shard's, in
    /// turn: a change telling events now (it tells them under its locks,
    /// right after appending its record) has told them after this (the
    /// event feed's barrier).
    pub fn quiesce(&self) {
        drop(self.payments.lock());
        for i in 0..self.shards.len() as u16 {
            drop(self.lock_one(i));
        }
    }

    /// Settled events and payment references kept: (events, references).
    pub fn payments_remembered(&self) -> (usize, usize) {
        self.payments.lock().len()
    }

    /// Active holds with a payment recorded, counted as they change (a
    /// pending hold past its expiry counts until the sweeper ends it).
    pub fn pending_payments(&self) -> usize {
        self.pending_payments
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `/payment`: records that `payment_ref` at `gateway` pays for hold
    /// `id`, now `pending_payment`; its expiry becomes
    /// `max(expires_at_ms, min(now + pending_ttl_ms, created_at_ms +
    /// pending_max_ms))` (never shortened). The same payment again changes
    /// nothing; another is refused.
    pub fn payment_logged(
        &self,
        id: HoldId,
        gateway: &str,
        payment_ref: &str,
        pending_ttl_ms: u64,
        pending_max_ms: u64,
    ) -> Result<Logged<Reservation>, Error> {
        check_ident("gateway", gateway)?;
        check_ident("payment_ref", payment_ref)?;
        let now_ms = self.clock.now_ms();
        let mut book = self.payments.lock();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        match hold.status {
            Status::Held | Status::PendingPayment if now_ms < hold.expires_at_ms => {}
            Status::Held | Status::PendingPayment | Status::Expired => {
                return Err(Error::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                })
            }
            status @ (Status::Confirmed | Status::Released) => {
                return Err(Error::HoldNotActive { status })
            }
        }
        if let Some(p) = &hold.payment {
            if p.gateway == gateway && p.payment_ref == payment_ref {
                locked.lock_items_of(self, slot);
                return Ok(self.unchanged(&locked, slot, now_ms));
            }
            return Err(Error::PaymentRefMismatch {
                payment_ref: p.payment_ref.to_string(),
            });
        }
        let longest = hold.created_at_ms.saturating_add(pending_max_ms);
        let expires_at_ms = hold
            .expires_at_ms
            .max(now_ms.saturating_add(pending_ttl_ms).min(longest));
        let lsn = self.log(|| Change::HoldPayment {
            id,
            gateway,
            payment_ref,
            expires_at_ms,
            at_ms: now_ms,
        })?;
        self.apply_payment(
            &mut book,
            &mut locked,
            slot,
            gateway,
            payment_ref,
            expires_at_ms,
            now_ms,
        );
        locked.lock_items_of(self, slot);
        Ok(Logged {
            value: holds::view(&locked, slot, now_ms),
            lsn,
        })
    }

    /// `/payment`'s change, live and in replay.
    #[allow(clippy::too_many_arguments)]
    fn apply_payment(
        &self,
        book: &mut Book,
        locked: &mut Locked<'_>,
        slot: u32,
        gateway: &str,
        payment_ref: &str,
        expires_at_ms: u64,
        at_ms: u64,
    ) {
        let home = locked.home();
        let id = home.hold_id(slot);
        self.pending_payments
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        home.set_payment(
            slot,
            Box::new(Payment {
                gateway: gateway.into(),
                payment_ref: payment_ref.into(),
                since_ms: at_ms,
            }),
        );
        if home.hold(slot).expires_at_ms != expires_at_ms {
            home.set_expiry(slot, expires_at_ms);
        }
        // Kept while the hold may still be read: past its longest life
        // and its retention.
        let forget_at_ms = expires_at_ms.saturating_add(self.options.retention_ms);
        book.note_ref(gateway, payment_ref, id, forget_at_ms);
    }

    /// Settles a verified gateway event against its hold (contract v1.2,
    /// the outcome table), once: a repeat within its forget time answers
    /// the first outcome and changes nothing. An `ignored` type changes
    /// and records nothing.
    pub fn settle_logged(&self, ev: &Settle<'_>) -> Result<Logged<Settled>, Error> {
        if ev.meaning == Meaning::Ignored {
            return Ok(Logged {
                value: Settled {
                    outcome: Outcome::Ignored,
                    hold: None,
                    repeat: false,
                },
                lsn: 0,
            });
        }
        let now_ms = self.clock.now_ms();
        let forget_at_ms = now_ms.saturating_add(ev.dedupe_ms);
        let mut book = self.payments.lock();
        if let Some(seen) = book.seen(ev.gateway, ev.event_id, now_ms) {
            // The first outcome may still be on its way to the disk: the
            // repeat's answer waits for everything appended so far.
            return Ok(Logged {
                value: Settled {
                    outcome: seen.outcome,
                    hold: seen.hold,
                    repeat: true,
                },
                lsn: self.seen_lsn(),
            });
        }
        let id = match ev.hold {
            Some(text) => text.parse::<HoldId>().ok(),
            None => ev
                .payment_ref
                .and_then(|r| book.hold_of(ev.gateway, r, now_ms)),
        };
        let found = id.and_then(|id| self.lock_hold(id).ok().map(|(l, s)| (id, l, s)));
        let Some((id, mut locked, slot)) = found else {
            return self.settle_unmatched(&mut book, ev, forget_at_ms, now_ms);
        };
        locked.lock_items_of(self, slot);
        let hold = locked.home_ref().hold(slot);
        let active = now_ms < hold.expires_at_ms;
        let outcome = match (ev.meaning, hold.status) {
            (Meaning::Succeeded, Status::Held | Status::PendingPayment) if active => {
                Outcome::Confirmed
            }
            // Past its expiry, not swept yet: its units are still its own.
            (Meaning::Succeeded, Status::Held | Status::PendingPayment) => Outcome::ConfirmedLate,
            (Meaning::Succeeded, Status::Confirmed) => Outcome::Duplicate,
            (Meaning::Succeeded, Status::Released | Status::Expired) => {
                match holds::units_free(&locked, slot) {
                    true => Outcome::ConfirmedLate,
                    false => Outcome::Orphaned,
                }
            }
            (Meaning::Canceled, Status::Confirmed) | (Meaning::Failed, _) => Outcome::Noted,
            (Meaning::Canceled, _) => Outcome::Released,
            // Answered above, without a record.
            (Meaning::Ignored, _) => Outcome::Ignored,
        };
        let change = ev.change(outcome, Some(id), forget_at_ms, now_ms);
        let lsn = self.log(|| change.clone())?;
        let lsn = lsn.max(self.apply_settled(&mut book, &mut locked, slot, &change, lsn));
        Ok(Logged {
            value: Settled {
                outcome,
                hold: Some(id),
                repeat: false,
            },
            lsn,
        })
    }

    /// An event that finds no hold: remembered, and told.
    fn settle_unmatched(
        &self,
        book: &mut Book,
        ev: &Settle<'_>,
        forget_at_ms: u64,
        now_ms: u64,
    ) -> Result<Logged<Settled>, Error> {
        let change = ev.change(Outcome::Unmatched, None, forget_at_ms, now_ms);
        let lsn = self.log(|| change.clone())?;
        let lsn = lsn.max(self.apply_unmatched(book, &change, lsn));
        Ok(Logged {
            value: Settled {
                outcome: Outcome::Unmatched,
                hold: None,
                repeat: false,
            },
            lsn,
        })
    }

    /// An unmatched event's place in the book and its `payment.unmatched`,
    /// live and in replay. Returns the LSN of the last record the event
    /// sink appended (0: none).
    fn apply_unmatched(&self, book: &mut Book, change: &Change<'_>, lsn: u64) -> u64 {
        let Change::PaymentSettled {
            gateway,
            event_id,
            kind,
            payment_ref,
            forget_at_ms,
            at_ms,
            ..
        } = *change
        else {
            return 0;
        };
        let seen = Seen {
            outcome: Outcome::Unmatched,
            hold: None,
            forget_at_ms,
        };
        book.remember(gateway, event_id, seen, at_ms);
        let event = Event::PaymentUnmatched {
            gateway,
            payment_ref,
            kind,
        };
        self.events().map_or(0, |sink| sink.emit(lsn, at_ms, event))
    }

    /// A settlement's effect on its hold (every shard of it locked), its
    /// place in the book, and its events, live and in replay. Returns the
    /// LSN of the last record the event sink appended (0: none).
    fn apply_settled(
        &self,
        book: &mut Book,
        locked: &mut Locked<'_>,
        slot: u32,
        change: &Change<'_>,
        lsn: u64,
    ) -> u64 {
        let Change::PaymentSettled {
            gateway,
            event_id,
            outcome,
            hold,
            payment_ref,
            order_ref,
            forget_at_ms,
            at_ms,
            ..
        } = *change
        else {
            return 0;
        };
        let seen = Seen {
            outcome,
            hold,
            forget_at_ms,
        };
        book.remember(gateway, event_id, seen, at_ms);
        let status = locked.home_ref().hold(slot).status;
        let expires_at_ms = locked.home_ref().hold(slot).expires_at_ms;
        // A failed or orphaned payment is told (the hold as it stands).
        let told = match (self.events(), outcome) {
            (Some(sink), Outcome::Noted | Outcome::Orphaned) => {
                let id = locked.home_ref().hold_id(slot);
                let recorded = locked.home_ref().hold(slot).payment.as_ref();
                let payment_ref = payment_ref.or(recorded.map(|p| p.payment_ref.as_str()));
                let items = holds::item_names(locked, slot);
                let event = match outcome {
                    Outcome::Noted => Event::PaymentFailed {
                        hold: id,
                        gateway,
                        payment_ref,
                    },
                    _ => Event::PaymentOrphaned {
                        hold: id,
                        gateway,
                        payment_ref,
                        items: &items,
                    },
                };
                sink.emit(lsn, at_ms, event)
            }
            _ => 0,
        };
        let effect = match (outcome, status) {
            (Outcome::Confirmed | Outcome::ConfirmedLate, Status::Held) => {
                // The webhook overtook `/payment`: the hold records the
                // payment it was confirmed by.
                if let (None, Some(r)) = (&locked.home_ref().hold(slot).payment, payment_ref) {
                    // Counted as pending for the moment `end` takes it off.
                    self.pending_payments
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    locked.home().set_payment(
                        slot,
                        Box::new(Payment {
                            gateway: gateway.into(),
                            payment_ref: r.into(),
                            since_ms: at_ms,
                        }),
                    );
                }
                let order_ref = order_ref.map(CompactString::from);
                self.end(locked, slot, Status::Confirmed, order_ref, at_ms, lsn)
            }
            (Outcome::ConfirmedLate, Status::Released | Status::Expired) => {
                self.take_again(locked, slot, order_ref, at_ms, lsn)
            }
            (Outcome::Released, Status::Held) => {
                let to = match at_ms < expires_at_ms {
                    true => Status::Released,
                    false => Status::Expired,
                };
                self.end(locked, slot, to, None, at_ms, lsn)
            }
            _ => 0,
        };
        told.max(effect)
    }

    /// `confirmed_late` on an ended hold: its units (all free: checked by
    /// the caller, or by replay) are taken again and sold, in one change.
    fn take_again(
        &self,
        locked: &mut Locked<'_>,
        slot: u32,
        order_ref: Option<&str>,
        now_ms: u64,
        lsn: u64,
    ) -> u64 {
        let mut told = 0;
        let hold = locked.home_ref().hold(slot);
        let items: SmallVec<[HeldItem; 4]> = SmallVec::from_slice(&hold.items);
        let customer = hold.customer.clone();
        // Checked before anything changes: every caller saw them free
        // under these locks, so a failure is a bug, and it leaves the
        // state whole.
        assert!(
            holds::units_free(locked, slot),
            "bug: a late payment would take units that are not free"
        );
        for item in &items {
            let shard = locked.shard_mut(item.sku.shard);
            let qty = u64::from(item.qty);
            let state = shard.sku_mut(item.sku.index);
            state.sold += qty;
            if let (Some(sink), 0) = (self.events(), state.available()) {
                told = told.max(sink.emit(lsn, now_ms, Event::StockOut { sku: &state.name }));
            }
            if state.customer_limit > 0 {
                shard.add_tally(customer_hash(&customer), item.sku.index, &customer, qty);
            }
            if shard.sku(item.sku.index).sold >= shard.sku(item.sku.index).stock {
                let state = shard.sku(item.sku.index);
                self.note_sold_out(item.sku.shard, &state.name, state);
                self.close_waitlist(shard, item.sku.index);
            }
        }
        locked
            .home()
            .reconfirm(slot, order_ref.map(CompactString::from));
        if let Some(sink) = self.events() {
            told = told.max(self.emit_hold_event(
                sink,
                locked,
                slot,
                Status::Confirmed,
                order_ref,
                now_ms,
                lsn,
            ));
        }
        told
    }

    /// Replays `/payment`'s record.
    pub(super) fn replay_payment(&self, change: &Change<'_>) -> Result<(), String> {
        let Change::HoldPayment {
            id,
            gateway,
            payment_ref,
            expires_at_ms,
            at_ms,
        } = *change
        else {
            return Ok(());
        };
        let mut book = self.payments.lock();
        let (mut locked, slot) = self.lock_hold(id).map_err(|_| format!("no hold {id}"))?;
        let hold = locked.home().hold(slot);
        if hold.status != Status::Held || hold.payment.is_some() {
            return Err(format!("hold {id} gets a payment but is not held"));
        }
        self.apply_payment(
            &mut book,
            &mut locked,
            slot,
            gateway,
            payment_ref,
            expires_at_ms,
            at_ms,
        );
        Ok(())
    }

    /// Replays a settlement's record: the same effect, checked against the
    /// state it must find.
    pub(super) fn replay_settled(&self, change: &Change<'_>) -> Result<(), String> {
        let Change::PaymentSettled { outcome, hold, .. } = *change else {
            return Ok(());
        };
        let mut book = self.payments.lock();
        let lsn = self.replay_lsn();
        let Some(id) = hold else {
            if outcome != Outcome::Unmatched {
                return Err(format!(
                    "a payment settled {} names no hold",
                    outcome.as_str()
                ));
            }
            let _ = self.apply_unmatched(&mut book, change, lsn);
            return Ok(());
        };
        let (mut locked, slot) = self.lock_hold(id).map_err(|_| format!("no hold {id}"))?;
        locked.lock_items_of(self, slot);
        let status = locked.home_ref().hold(slot).status;
        if outcome == Outcome::Confirmed && status != Status::Held {
            return Err(format!(
                "hold {id} is confirmed by a payment but is {status}"
            ));
        }
        if outcome == Outcome::ConfirmedLate {
            let free = holds::units_free(&locked, slot);
            let hold = locked.home_ref().hold(slot);
            if hold.status == Status::Confirmed || (hold.status != Status::Held && !free) {
                return Err(format!(
                    "hold {id} is confirmed late but is {} (or its units are not free)",
                    hold.status
                ));
            }
        }
        let _ = self.apply_settled(&mut book, &mut locked, slot, change, lsn);
        Ok(())
    }
}
