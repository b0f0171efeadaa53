//! The log's config section, `[wal]` (read by `crate::config`, which
//! checks its ranges).

use super::Durability;
use serde::{Deserialize, Serialize};

/// `[wal]`: durability, segment size, when to checkpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wal {
    pub durability: Durability,
    pub segment_bytes_max: u64,
    /// A checkpoint is taken once the log has grown this much since the
    /// last one, so restarts stay short and old segments are deleted.
    pub checkpoint_after_bytes: u64,
}

impl Default for Wal {
    fn default() -> Self {
        Wal {
            durability: Durability::Fsync,
            segment_bytes_max: 64 << 20,
            checkpoint_after_bytes: 256 << 20,
        }
    }
}
