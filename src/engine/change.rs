//! The engine's change vocabulary: one [`Change`] per change of state,
//! appended to the log (as an opaque payload with its kind) before the
//! change is made, and applied again by replay. Values are results (the
//! stock after an adjust, the expiry after an extend), so replay is exact
//! and needs no clock.
//!
//! Payloads (the [`crate::codec`] encoding; kinds 1 to 6, 15 and 16, the
//! log's record type byte), every one ending where its last field does:
//!
//! ```text
//! 1 sku-set        sku str | stock u64 | customer_limit u64 | at_ms u64
//! 2 hold-created   id | customer str | created_at_ms u64 | expires_at_ms u64 | n u16 | n x (sku str | qty u32)
//! 3 hold-confirmed id | at_ms u64 | order_ref opt str
//! 4 hold-released  id | at_ms u64
//! 5 hold-expired   id | at_ms u64
//! 6 hold-extended  id | expires_at_ms u64 | at_ms u64
//! 15 hold-payment   id | gateway str | payment_ref str | expires_at_ms u64 | at_ms u64
//! 16 payment-settled gateway str | event_id str | type str | outcome u8 | hold opt id
//!                  | payment_ref opt str | order_ref opt str | forget_at_ms u64 | at_ms u64
//! ```
//!
//! A settled payment carries its effect (by its outcome: confirmed and
//! confirmed_late confirm the hold, released releases it) and the event id
//! remembered until `forget_at_ms`, in one record: a crash keeps both or
//! neither.
//!
//! An id is epoch u32, shard u16, slot u32, generation u32.

use smallvec::SmallVec;

use super::HoldId;
use crate::codec::{self, put_opt_str, Put, Reader};
use crate::payments::Outcome;

/// One change to the engine's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// A SKU's stock and limit were set (by set or adjust).
    SkuSet {
        sku: &'a str,
        stock: u64,
        customer_limit: u64,
        at_ms: u64,
    },
    HoldCreated {
        id: HoldId,
        customer: &'a str,
        items: SmallVec<[(&'a str, u32); 4]>,
        created_at_ms: u64,
        expires_at_ms: u64,
    },
    HoldConfirmed {
        id: HoldId,
        order_ref: Option<&'a str>,
        at_ms: u64,
    },
    HoldReleased {
        id: HoldId,
        at_ms: u64,
    },
    HoldExpired {
        id: HoldId,
        at_ms: u64,
    },
    HoldExtended {
        id: HoldId,
        expires_at_ms: u64,
        at_ms: u64,
    },
    /// A payment is pending for an active hold (`/payment`).
    HoldPayment {
        id: HoldId,
        gateway: &'a str,
        payment_ref: &'a str,
        expires_at_ms: u64,
        at_ms: u64,
    },
    /// A gateway event settled, with its effect on `hold`.
    PaymentSettled {
        gateway: &'a str,
        event_id: &'a str,
        /// The event's type, as sent (what `payment.unmatched` tells).
        kind: &'a str,
        outcome: Outcome,
        hold: Option<HoldId>,
        payment_ref: Option<&'a str>,
        order_ref: Option<&'a str>,
        forget_at_ms: u64,
        at_ms: u64,
    },
}

use crate::wal::kinds::{
    HOLD_CONFIRMED, HOLD_CREATED, HOLD_EXPIRED, HOLD_EXTENDED, HOLD_PAYMENT, HOLD_RELEASED,
    PAYMENT_SETTLED, SKU_SET,
};

impl<'a> Change<'a> {
    /// Whether a log record of this kind is the engine's.
    pub fn is_kind(kind: u8) -> bool {
        (SKU_SET..=HOLD_EXTENDED).contains(&kind) || kind == HOLD_PAYMENT || kind == PAYMENT_SETTLED
    }

    /// The hold this change is about, if any (for `wal inspect --hold`).
    pub fn hold_id(&self) -> Option<HoldId> {
        match self {
            Change::SkuSet { .. } => None,
            Change::HoldCreated { id, .. }
            | Change::HoldConfirmed { id, .. }
            | Change::HoldReleased { id, .. }
            | Change::HoldExpired { id, .. }
            | Change::HoldExtended { id, .. }
            | Change::HoldPayment { id, .. } => Some(*id),
            Change::PaymentSettled { hold, .. } => *hold,
        }
    }

    /// When the change was made.
    pub fn at_ms(&self) -> u64 {
        match self {
            Change::SkuSet { at_ms, .. }
            | Change::HoldConfirmed { at_ms, .. }
            | Change::HoldReleased { at_ms, .. }
            | Change::HoldExpired { at_ms, .. }
            | Change::HoldExtended { at_ms, .. }
            | Change::HoldPayment { at_ms, .. }
            | Change::PaymentSettled { at_ms, .. } => *at_ms,
            Change::HoldCreated { created_at_ms, .. } => *created_at_ms,
        }
    }

    /// Whether the change names `sku` (for `wal inspect --sku`). Changes
    /// of a hold after its creation name only the hold.
    pub fn names_sku(&self, sku: &str) -> bool {
        match self {
            Change::SkuSet { sku: s, .. } => *s == sku,
            Change::HoldCreated { items, .. } => items.iter().any(|(s, _)| *s == sku),
            _ => false,
        }
    }

    /// Reads a payload of `kind` back.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<Change<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let change = match kind {
            SKU_SET => Change::SkuSet {
                sku: r.str()?,
                stock: r.u64()?,
                customer_limit: r.u64()?,
                at_ms: r.u64()?,
            },
            HOLD_CREATED => {
                let id = read_id(&mut r)?;
                let customer = r.str()?;
                let created_at_ms = r.u64()?;
                let expires_at_ms = r.u64()?;
                let n = r.u16()?;
                let mut items = SmallVec::new();
                for _ in 0..n {
                    items.push((r.str()?, r.u32()?));
                }
                Change::HoldCreated {
                    id,
                    customer,
                    items,
                    created_at_ms,
                    expires_at_ms,
                }
            }
            HOLD_CONFIRMED => Change::HoldConfirmed {
                id: read_id(&mut r)?,
                at_ms: r.u64()?,
                order_ref: r.opt_str()?,
            },
            HOLD_RELEASED => Change::HoldReleased {
                id: read_id(&mut r)?,
                at_ms: r.u64()?,
            },
            HOLD_EXPIRED => Change::HoldExpired {
                id: read_id(&mut r)?,
                at_ms: r.u64()?,
            },
            HOLD_EXTENDED => Change::HoldExtended {
                id: read_id(&mut r)?,
                expires_at_ms: r.u64()?,
                at_ms: r.u64()?,
            },
            HOLD_PAYMENT => Change::HoldPayment {
                id: read_id(&mut r)?,
                gateway: r.str()?,
                payment_ref: r.str()?,
                expires_at_ms: r.u64()?,
                at_ms: r.u64()?,
            },
            PAYMENT_SETTLED => Change::PaymentSettled {
                gateway: r.str()?,
                event_id: r.str()?,
                kind: r.str()?,
                outcome: Outcome::from_code(r.u8()?)
                    .ok_or(codec::Error::Malformed("an unknown payment outcome"))?,
                hold: match r.u8()? {
                    0 => None,
                    1 => Some(read_id(&mut r)?),
                    _ => return Err(codec::Error::Malformed("an option flag is not 0 or 1")),
                },
                payment_ref: r.opt_str()?,
                order_ref: r.opt_str()?,
                forget_at_ms: r.u64()?,
                at_ms: r.u64()?,
            },
            _ => return Err(codec::Error::Malformed("not an engine change")),
        };
        r.finish()?;
        Ok(change)
    }

    /// One line for the audit trail (`stampede wal inspect`).
    pub fn describe(&self) -> String {
        match self {
            Change::SkuSet {
                sku,
                stock,
                customer_limit,
                at_ms,
            } => format!(
                "sku-set sku={sku} stock={stock} customer_limit={customer_limit} at_ms={at_ms}"
            ),
            Change::HoldCreated {
                id,
                customer,
                items,
                created_at_ms,
                expires_at_ms,
            } => {
                let items: Vec<String> = items
                    .iter()
                    .map(|(sku, qty)| format!("{sku}x{qty}"))
                    .collect();
                format!(
                    "hold-created id={id} customer={customer} items={} created_at_ms={created_at_ms} expires_at_ms={expires_at_ms}",
                    items.join(",")
                )
            }
            Change::HoldConfirmed {
                id,
                order_ref,
                at_ms,
            } => format!(
                "hold-confirmed id={id} order_ref={} at_ms={at_ms}",
                order_ref.unwrap_or("-")
            ),
            Change::HoldReleased { id, at_ms } => format!("hold-released id={id} at_ms={at_ms}"),
            Change::HoldExpired { id, at_ms } => format!("hold-expired id={id} at_ms={at_ms}"),
            Change::HoldExtended {
                id,
                expires_at_ms,
                at_ms,
            } => format!("hold-extended id={id} expires_at_ms={expires_at_ms} at_ms={at_ms}"),
            Change::HoldPayment {
                id,
                gateway,
                payment_ref,
                expires_at_ms,
                at_ms,
            } => format!(
                "hold-payment id={id} gateway={gateway} payment_ref={payment_ref} expires_at_ms={expires_at_ms} at_ms={at_ms}"
            ),
            Change::PaymentSettled {
                gateway,
                event_id,
                kind,
                outcome,
                hold,
                payment_ref,
                order_ref,
                forget_at_ms,
                at_ms,
            } => format!(
                "payment-settled gateway={gateway} event_id={event_id} type={kind} outcome={} hold={} payment_ref={} order_ref={} forget_at_ms={forget_at_ms} at_ms={at_ms}",
                outcome.as_str(),
                hold.map_or("-".to_owned(), |h| h.to_string()),
                payment_ref.unwrap_or("-"),
                order_ref.unwrap_or("-"),
            ),
        }
    }
}

impl crate::wal::Entry for Change<'_> {
    fn kind(&self) -> u8 {
        match self {
            Change::SkuSet { .. } => SKU_SET,
            Change::HoldCreated { .. } => HOLD_CREATED,
            Change::HoldConfirmed { .. } => HOLD_CONFIRMED,
            Change::HoldReleased { .. } => HOLD_RELEASED,
            Change::HoldExpired { .. } => HOLD_EXPIRED,
            Change::HoldExtended { .. } => HOLD_EXTENDED,
            Change::HoldPayment { .. } => HOLD_PAYMENT,
            Change::PaymentSettled { .. } => PAYMENT_SETTLED,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        match self {
            Change::SkuSet {
                sku,
                stock,
                customer_limit,
                at_ms,
            } => {
                out.put_str(sku)?;
                out.put_u64(*stock);
                out.put_u64(*customer_limit);
                out.put_u64(*at_ms);
            }
            Change::HoldCreated {
                id,
                customer,
                items,
                created_at_ms,
                expires_at_ms,
            } => {
                put_id(out, *id);
                out.put_str(customer)?;
                out.put_u64(*created_at_ms);
                out.put_u64(*expires_at_ms);
                let n = u16::try_from(items.len())
                    .map_err(|_| codec::Error::Malformed("over 65535 items"))?;
                out.put_u16(n);
                for (sku, qty) in items {
                    out.put_str(sku)?;
                    out.put_u32(*qty);
                }
            }
            Change::HoldConfirmed {
                id,
                order_ref,
                at_ms,
            } => {
                put_id(out, *id);
                out.put_u64(*at_ms);
                put_opt_str(out, *order_ref)?;
            }
            Change::HoldReleased { id, at_ms } | Change::HoldExpired { id, at_ms } => {
                put_id(out, *id);
                out.put_u64(*at_ms);
            }
            Change::HoldExtended {
                id,
                expires_at_ms,
                at_ms,
            } => {
                put_id(out, *id);
                out.put_u64(*expires_at_ms);
                out.put_u64(*at_ms);
            }
            Change::HoldPayment {
                id,
                gateway,
                payment_ref,
                expires_at_ms,
                at_ms,
            } => {
                put_id(out, *id);
                out.put_str(gateway)?;
                out.put_str(payment_ref)?;
                out.put_u64(*expires_at_ms);
                out.put_u64(*at_ms);
            }
            Change::PaymentSettled {
                gateway,
                event_id,
                kind,
                outcome,
                hold,
                payment_ref,
                order_ref,
                forget_at_ms,
                at_ms,
            } => {
                out.put_str(gateway)?;
                out.put_str(event_id)?;
                out.put_str(kind)?;
                out.put_u8(outcome.code());
                match hold {
                    None => out.put_u8(0),
                    Some(id) => {
                        out.put_u8(1);
                        put_id(out, *id);
                    }
                }
                put_opt_str(out, *payment_ref)?;
                put_opt_str(out, *order_ref)?;
                out.put_u64(*forget_at_ms);
                out.put_u64(*at_ms);
            }
        }
        Ok(())
    }
}

/// A hold id as changes and checkpoint images carry it.
pub(crate) fn put_id(out: &mut Vec<u8>, id: HoldId) {
    out.put_u32(id.epoch);
    out.put_u16(id.shard);
    out.put_u32(id.slot);
    out.put_u32(id.generation);
}

pub(crate) fn read_id(r: &mut Reader<'_>) -> Result<HoldId, codec::Error> {
    Ok(HoldId {
        epoch: r.u32()?,
        shard: r.u16()?,
        slot: r.u32()?,
        generation: r.u32()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Entry;

    pub(crate) fn samples() -> Vec<Change<'static>> {
        let id = HoldId {
            epoch: 3,
            shard: 7,
            slot: 99,
            generation: 2,
        };
        vec![
            Change::SkuSet {
                sku: "hot-1",
                stock: (1 << 53) - 1,
                customer_limit: 2,
                at_ms: 5,
            },
            Change::HoldCreated {
                id,
                customer: "c-42",
                items: smallvec::smallvec![("hot-1", 1), ("b", 1000)],
                created_at_ms: 10,
                expires_at_ms: 600_010,
            },
            Change::HoldConfirmed {
                id,
                order_ref: Some("order-7"),
                at_ms: 11,
            },
            Change::HoldConfirmed {
                id,
                order_ref: None,
                at_ms: 11,
            },
            Change::HoldReleased { id, at_ms: 12 },
            Change::HoldExpired { id, at_ms: 13 },
            Change::HoldExtended {
                id,
                expires_at_ms: 99,
                at_ms: 14,
            },
            Change::HoldPayment {
                id,
                gateway: "stripe",
                payment_ref: "pi_1",
                expires_at_ms: 3_600_015,
                at_ms: 15,
            },
            Change::PaymentSettled {
                gateway: "stripe",
                event_id: "evt_1",
                kind: "payment_intent.succeeded",
                outcome: Outcome::ConfirmedLate,
                hold: Some(id),
                payment_ref: Some("pi_1"),
                order_ref: None,
                forget_at_ms: 259_200_016,
                at_ms: 16,
            },
            Change::PaymentSettled {
                gateway: "psp",
                event_id: "msg_2",
                kind: "payment.failed",
                outcome: Outcome::Unmatched,
                hold: None,
                payment_ref: None,
                order_ref: Some("o-1"),
                forget_at_ms: 17,
                at_ms: 17,
            },
        ]
    }

    #[test]
    fn every_change_round_trips_and_a_cut_payload_is_an_error() {
        for change in samples() {
            let mut payload = Vec::new();
            change.encode(&mut payload).unwrap();
            let back = Change::decode(change.kind(), &payload).unwrap();
            assert_eq!(format!("{back:?}"), format!("{change:?}"));
            for cut in 0..payload.len() {
                assert!(Change::decode(change.kind(), &payload[..cut]).is_err());
            }
            let mut longer = payload.clone();
            longer.push(0);
            assert!(Change::decode(change.kind(), &longer).is_err());
        }
        assert!(Change::decode(7, &[]).is_err());
        assert!(Change::decode(17, &[]).is_err());
    }
}
