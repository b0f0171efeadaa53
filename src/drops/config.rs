//! Drops' config section, `[drops]` (read by `crate::config`, which
//! checks its ranges).

use serde::{Deserialize, Serialize};

/// `[drops]`: bounds on drops (contract, "Drops").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Drops {
    /// Entrants one drop takes; a join beyond is 429 `queue_full`.
    pub entrants_max: usize,
    /// Drops kept (for the life of the data directory).
    pub drops_max: usize,
}

impl Default for Drops {
    fn default() -> Self {
        Drops {
            entrants_max: 1_000_000,
            drops_max: 1_000,
        }
    }
}
