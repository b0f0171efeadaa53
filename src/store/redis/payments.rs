//! Payments on the redis store (contract v1.2, "Payments"): `/payment`
//! and a gateway event's settlement are each one script in the hold's
//! slot, so a hold, its payment and the event's mark change together; the
//! rules are the embedded engine's (`engine::payments`).
//!
//! An event's mark (its first outcome, kept `payments.dedupe_ms`) lives in
//! its hold's slot, written by the script that applies it: two nodes
//! delivering one event at once run the same script on the same primary,
//! and the second finds the mark. An event that finds no hold is marked in
//! the slot of `GATEWAY:EVENT` (`UNMATCHED`), which every delivery reads
//! first. A payment reference's hold (`P:{T}:pr:GATEWAY:REF`) is written
//! after `/payment` succeeds, and again by a repeat of it; a settlement
//! that finds a hold by its reference checks that the hold records that
//! very reference.
//!
//! A late payment for an ended hold across slots (a saga) is `orphaned`:
//! its units live on other primaries and cannot be taken again in one
//! script; the storefront refunds.

use super::*;
use crate::engine::payments::{Settle, Settled};
use crate::payments::{Meaning, Outcome};
use crate::store::{PaymentRequest, Payments};

impl RedisStore {
    /// An event's mark in `slot`.
    fn event_mark(&self, slot: u16, gateway: &str, event_id: &str) -> String {
        format!(
            "{}:{{{}}}:pe:{gateway}:{event_id}",
            self.prefix,
            slots::tag(slot)
        )
    }

    /// The slot of an event that names no hold, and of a payment
    /// reference's index entry.
    fn own_slot(gateway: &str, name: &str) -> u16 {
        slots::slot(&format!("{gateway}:{name}"))
    }

    fn ref_key(&self, gateway: &str, payment_ref: &str) -> String {
        let slot = RedisStore::own_slot(gateway, payment_ref);
        format!(
            "{}:{{{}}}:pr:{gateway}:{payment_ref}",
            self.prefix,
            slots::tag(slot)
        )
    }

    /// Notes which hold `payment_ref` pays for, until the hold may no
    /// longer be read.
    async fn note_ref(
        &self,
        gateway: &str,
        payment_ref: &str,
        r: &Reservation,
    ) -> Result<(), Error> {
        let key = self.ref_key(gateway, payment_ref);
        let slot = slots::slot(&key);
        let keep_ms = r
            .expires_at_ms
            .saturating_sub(self.now_ms())
            .saturating_add(self.options.retention_ms)
            .max(1);
        let client = self.pool.next();
        let _: Value = client
            .set(
                key,
                r.id.text().as_str(),
                Some(Expiration::PX(keep_ms.min(i64::MAX as u64) as i64)),
                None,
                false,
            )
            .await
            .map_err(unavailable)?;
        self.replicated_on(client, Some(slot), self.options.redis.wait_replicas)
            .await
    }

    /// The hold `payment_ref` was recorded for, if any.
    async fn hold_of_ref(&self, gateway: &str, payment_ref: &str) -> Result<Option<HoldId>, Error> {
        let id: Option<String> = self
            .pool
            .next()
            .get(self.ref_key(gateway, payment_ref))
            .await
            .map_err(unavailable)?;
        Ok(id.and_then(|t| t.parse().ok()))
    }

    /// An event no hold was found for: marked and told once.
    async fn settle_unmatched(&self, ev: &Settle<'_>) -> Result<Settled, Error> {
        let slot = RedisStore::own_slot(ev.gateway, ev.event_id);
        let reply = self
            .run(
                Scope::Now,
                &self.scripts.unmatched,
                vec![self.event_mark(slot, ev.gateway, ev.event_id)],
                vec![
                    self.argv_prefix.clone(),
                    ev.gateway.to_owned(),
                    ev.payment_ref.unwrap_or("").to_owned(),
                    ev.kind.to_owned(),
                    ev.dedupe_ms.max(1).to_string(),
                ],
            )
            .await?;
        let repeat = int(&reply, 0)? == 8;
        Ok(Settled {
            outcome: outcome(&text(&reply, 1))?,
            hold: None,
            repeat,
        })
    }
}

fn outcome(text: &str) -> Result<Outcome, Error> {
    Outcome::parse(text).ok_or_else(|| bad_reply(format!("payment outcome {text:?}")))
}

impl Payments for RedisStore {
    fn payment<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        req: PaymentRequest<'a>,
    ) -> StoreFuture<'a, Reservation> {
        Box::pin(async move {
            for (field, value) in [("gateway", req.gateway), ("payment_ref", req.payment_ref)] {
                if !engine::is_valid_ident(value) {
                    return Err(engine::Error::invalid(
                        field,
                        "must be 1 to 128 characters of A-Z a-z 0-9 . _ : -",
                    )
                    .into());
                }
            }
            let tally_ms = self.options.retention_ms.max(1);
            let r = self
                .hold_op(
                    scope,
                    &self.scripts.payment,
                    id,
                    vec![
                        req.gateway.to_owned(),
                        req.payment_ref.to_owned(),
                        req.pending_ttl_ms.to_string(),
                        req.pending_max_ms.to_string(),
                        tally_ms.to_string(),
                    ],
                )
                .await?;
            self.note_ref(req.gateway, req.payment_ref, &r).await?;
            Ok(r)
        })
    }

    fn settle<'a>(&'a self, ev: Settle<'a>) -> StoreFuture<'a, Settled> {
        Box::pin(async move {
            let meaning = match ev.meaning {
                Meaning::Ignored => {
                    return Ok(Settled {
                        outcome: Outcome::Ignored,
                        hold: None,
                        repeat: false,
                    })
                }
                Meaning::Succeeded => "s",
                Meaning::Failed => "f",
                Meaning::Canceled => "c",
            };
            // First outcome unmatched: the event's own slot says so.
            let own = RedisStore::own_slot(ev.gateway, ev.event_id);
            let first: Option<String> = self
                .pool
                .next()
                .get(self.event_mark(own, ev.gateway, ev.event_id))
                .await
                .map_err(unavailable)?;
            if let Some(first) = first {
                return Ok(Settled {
                    outcome: outcome(&first)?,
                    hold: None,
                    repeat: true,
                });
            }
            let (id, by_ref) = match (ev.hold, ev.payment_ref) {
                (Some(text), _) => (text.parse::<HoldId>().ok(), false),
                (None, Some(r)) => (self.hold_of_ref(ev.gateway, r).await?, true),
                (None, None) => (None, false),
            };
            let Some(id) = id else {
                return self.settle_unmatched(&ev).await;
            };
            let mark = self.event_mark(id.shard, ev.gateway, ev.event_id);
            let (keys, args) = self
                .hold_op_start(
                    id,
                    vec![mark],
                    vec![
                        meaning.to_owned(),
                        ev.gateway.to_owned(),
                        ev.payment_ref.unwrap_or("").to_owned(),
                        ev.order_ref.unwrap_or("").to_owned(),
                        if by_ref { "1" } else { "0" }.to_owned(),
                        ev.dedupe_ms.max(1).to_string(),
                        self.retention(),
                        self.tally_ms().to_string(),
                    ],
                )
                .await;
            let reply = self
                .run(Scope::Now, &self.scripts.settle, keys, args)
                .await?;
            match int(&reply, 0)? {
                8 => Ok(Settled {
                    outcome: outcome(&text(&reply, 1))?,
                    hold: Some(id),
                    repeat: true,
                }),
                9 => self.settle_unmatched(&ev).await,
                10 => Err(Error::NotDurable(format!(
                    "hold {id} is still being placed across slots; nothing was settled: try again"
                ))),
                _ => {
                    let settled = outcome(&text(&reply, 11))?;
                    self.hold_op_end(id, &reply).await?;
                    Ok(Settled {
                        outcome: settled,
                        hold: Some(id),
                        repeat: false,
                    })
                }
            }
        })
    }

    fn pending_payments(&self) -> Option<usize> {
        // Counting would scan every hold in Redis.
        None
    }
}
