//! The one registry of log record kinds: every number a record's kind
//! byte may take, and which owner it belongs to. The log itself never
//! looks at them ([`super::Entry`] payloads are opaque); each owner encodes
//! its own records with the numbers here, and [`crate::records`] decodes
//! any record for replay, `stampede wal inspect` and fuzzing. A new kind
//! takes the next free number, here and nowhere else.

/// The engine's changes (`engine::Change`).
pub const SKU_SET: u8 = 1;
pub const HOLD_CREATED: u8 = 2;
pub const HOLD_CONFIRMED: u8 = 3;
pub const HOLD_RELEASED: u8 = 4;
pub const HOLD_EXPIRED: u8 = 5;
pub const HOLD_EXTENDED: u8 = 6;
/// A hold's pending payment, and a gateway event settled (contract v1.2).
pub const HOLD_PAYMENT: u8 = 15;
pub const PAYMENT_SETTLED: u8 = 16;

/// The key store: a stored answer (`idempotency::KeyRecord`) and a key
/// taken or given back (`idempotency::ClaimRecord`).
pub const KEY_ANSWER: u8 = 7;
pub const KEY_CLAIM: u8 = 14;

/// Drops (`drops::record::DropRecord`).
pub const DROP_PUT: u8 = 8;
pub const DROP_JOIN: u8 = 9;
pub const DROP_OPENED: u8 = 10;
pub const DROP_ADMITTED: u8 = 13;

/// The webhook outbox (`events::webhooks::OutboxRecord`).
pub const OUTBOX_QUEUED: u8 = 11;
pub const OUTBOX_DONE: u8 = 12;

/// The event ring (`events::record::RingRecord`), in checkpoints only.
pub const RING_EVICTED: u8 = 17;
pub const RING_EVENT: u8 = 18;

/// Who owns a record of `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Engine,
    Keys,
    Drops,
    Outbox,
    Ring,
}

/// The owner of records of `kind`, if any.
pub fn owner(kind: u8) -> Option<Owner> {
    Some(match kind {
        SKU_SET..=HOLD_EXTENDED | HOLD_PAYMENT | PAYMENT_SETTLED => Owner::Engine,
        KEY_ANSWER | KEY_CLAIM => Owner::Keys,
        DROP_PUT | DROP_JOIN | DROP_OPENED | DROP_ADMITTED => Owner::Drops,
        OUTBOX_QUEUED | OUTBOX_DONE => Owner::Outbox,
        RING_EVICTED | RING_EVENT => Owner::Ring,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_has_one_owner_and_the_free_ones_none() {
        let owned: Vec<u8> = (0..=u8::MAX).filter(|&k| owner(k).is_some()).collect();
        assert_eq!(owned, (1..=18).collect::<Vec<u8>>());
        assert_eq!(owner(0), None);
        assert_eq!(owner(19), None);
    }
}
