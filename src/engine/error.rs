//! Every outcome of an engine call that is not success.
//!
//! These are values, not bugs: sold out, expired, unknown SKU. A broken
//! invariant is a panic, never one of these. The API maps each variant to
//! exactly one HTTP status and problem `code`, in one place.

use super::Status;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Input outside the contract: a bad identifier, a quantity out of
    /// range, a duplicate SKU. `field` names the culprit (`items[2].qty`).
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    /// A reservation, adjust or read named a SKU that was never set.
    #[error("unknown sku {sku}; set its stock first (PUT /v1/skus/{sku})")]
    UnknownSku { sku: String },

    /// Not enough available for one item; nothing was held.
    #[error("sku {sku}: requested {requested}, available {available}")]
    InsufficientStock {
        sku: String,
        requested: u64,
        available: u64,
    },

    /// The customer would hold + own more of `sku` than its limit.
    #[error("sku {sku}: customer limit is {limit}, the customer already holds or owns {current}")]
    CustomerLimitExceeded {
        sku: String,
        limit: u64,
        current: u64,
    },

    /// No hold with that id (never issued, malformed, or purged after its
    /// retention).
    #[error("no reservation with that id")]
    HoldNotFound,

    /// Confirm or extend of a released or confirmed hold, release of a
    /// confirmed one.
    #[error("reservation is {status}, not held")]
    HoldNotActive { status: Status },

    /// `/payment` with another payment than the one the hold records.
    #[error("the reservation's payment is {payment_ref}, recorded before")]
    PaymentRefMismatch { payment_ref: String },

    /// Confirm or extend at or after `expires_at_ms`.
    #[error("reservation expired at {expired_at_ms} ms")]
    HoldExpired { expired_at_ms: u64 },

    /// Set or adjust would put stock below `held + sold`.
    #[error("sku {sku}: stock cannot go below the {committed} units held or sold")]
    StockBelowCommitted { sku: String, committed: u64 },

    /// The log cannot be written (disk full, fsync error): the change was
    /// not made, and none will be until the server is restarted.
    #[error("the log cannot be written, nothing was changed: {reason}")]
    StorageUnavailable { reason: String },

    /// The shard that would store the hold already retains its share of
    /// `holds.retained_max` holds (active, and ended ones kept for
    /// `holds.retention_ms`). Load must be shed until holds end or purge.
    #[error("hold table full: a shard retains its limit of {limit} holds")]
    HoldCapacity { limit: usize },

    /// The SKU's waitlist already holds `admission.waitlist_max` requests.
    #[error("the waitlist of sku {sku} is full ({limit} waiting)")]
    WaitlistFull { sku: String, limit: usize },
}

impl Error {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
