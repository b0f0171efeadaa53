//! The engine's config sections, `[engine]` and `[holds]` (read by
//! `crate::config`, which checks their ranges).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
/// `[engine]`: lock shards and the SKU bound.
pub struct Engine {
    /// Lock shards, a power of two up to 4096; default from the core count.
    pub shards: usize,
    /// Most SKUs the engine keeps.
    pub skus_max: usize,
}

impl Default for Engine {
    fn default() -> Self {
        let defaults = super::Options::default();
        Engine {
            shards: defaults.shards,
            skus_max: defaults.skus_max,
        }
    }
}

/// `[holds]`: hold TTLs, the sweep, retention.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Holds {
    pub default_ttl_ms: u64,
    pub max_ttl_ms: u64,
    pub sweep_interval_ms: u64,
    /// How long an ended hold stays readable before it is purged.
    pub retention_ms: u64,
    /// Most holds, active and retained, the engine keeps.
    pub retained_max: usize,
}

impl Default for Holds {
    fn default() -> Self {
        let defaults = super::Options::default();
        Holds {
            default_ttl_ms: defaults.default_ttl_ms,
            max_ttl_ms: defaults.max_ttl_ms,
            sweep_interval_ms: 100,
            retention_ms: defaults.retention_ms,
            retained_max: defaults.retained_max,
        }
    }
}
