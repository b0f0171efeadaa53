//! The key store's config section, `[idempotency]` (read by
//! `crate::config`, which checks its ranges).

use serde::{Deserialize, Serialize};

/// `[idempotency]`: how long keys last, how many, how large an answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Idempotency {
    pub ttl_ms: u64,
    /// Most keys kept; expired ones are dropped first when it is reached.
    pub keys_max: usize,
    /// Largest answer kept for a key. A keyed request whose answer could
    /// be larger (a long `/v1/batch`) is refused before it runs (413
    /// `answer_too_large`), since its answer could not be replayed.
    pub answer_bytes_max: usize,
}

impl Default for Idempotency {
    fn default() -> Self {
        Idempotency {
            ttl_ms: 86_400_000,
            keys_max: 1_000_000,
            answer_bytes_max: 1_000_000,
        }
    }
}
