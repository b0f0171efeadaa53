//! What the engine tells whoever listens (the event feed, `crate::events`):
//! a SKU's `available` reaching 0 or rising from it, a hold confirmed or
//! expired. Told under the locks of the change, right after its record is
//! appended, with that record's LSN (the listener shows an event only once
//! the LSN is durable, and orders events by it). Nothing is told while
//! the log is replayed: the listener is attached afterwards.

use super::HoldId;

/// One thing that happened.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    StockOut {
        sku: &'a str,
    },
    StockBack {
        sku: &'a str,
        available: u64,
    },
    HoldExpired {
        id: HoldId,
        customer: &'a str,
        items: &'a [(&'a str, u32)],
    },
    HoldConfirmed {
        id: HoldId,
        customer: &'a str,
        items: &'a [(&'a str, u32)],
        order_ref: Option<&'a str>,
        /// The payment recorded by `/payment` (or the webhook), if any.
        payment_ref: Option<&'a str>,
    },
    /// A gateway said the payment for `hold` failed (the hold stays).
    PaymentFailed {
        hold: HoldId,
        gateway: &'a str,
        payment_ref: Option<&'a str>,
    },
    /// A payment succeeded for a hold that had ended, and its units were
    /// no longer all free: the storefront refunds.
    PaymentOrphaned {
        hold: HoldId,
        gateway: &'a str,
        payment_ref: Option<&'a str>,
        items: &'a [(&'a str, u32)],
    },
    /// A gateway event named no hold stampede has.
    PaymentUnmatched {
        gateway: &'a str,
        payment_ref: Option<&'a str>,
        kind: &'a str,
    },
}

/// Whoever listens: must not block (it is called under shard locks).
pub trait EventSink: Send + Sync {
    /// Takes `event`; returns the LSN of a record it appended for it (a
    /// webhook's outbox entry), which the change's answer then waits for
    /// too, or 0.
    fn emit(&self, lsn: u64, at_ms: u64, event: Event<'_>) -> u64;
}
