//! What operators see of the embedded store (`/readyz`, `/v1/stats`,
//! `/metrics`), and its drops: the book in the local log.

use std::fmt::Write as _;
use std::sync::Arc;

use super::{Core, EmbeddedStore};
use crate::drops::line::EntryView;
use crate::drops::{DropView, Spec};
use crate::prometheus::histogram_series;
use crate::store::{Drops, Health, Scope, Stats, StoreFuture};
use crate::wal;

/// A hot SKU's share of recent operations from which more shards cannot
/// help (one SKU is one shard's lock).
const HOT_SKU_SHARE: f64 = 0.8;
/// Fewer recent operations than this say nothing about shares.
const HOT_SKU_MIN_OPERATIONS: u64 = 1000;

impl Health for EmbeddedStore {
    fn ready(&self) -> Result<(), String> {
        match self.core.wal.is_failed() {
            true => Err("the log cannot be written; the server is read-only".to_owned()),
            false => Ok(()),
        }
    }

    fn stats(&self) -> Stats {
        let core = &self.core;
        let shards: Vec<_> = core
            .engine
            .shard_stats()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "skus": s.skus,
                    "active_holds": s.active_holds,
                    "retained_holds": s.retained_holds,
                    "operations": s.operations,
                    "lock_wait_seconds": s.lock_wait.as_secs_f64(),
                })
            })
            .collect();
        let log = core.wal.stats();
        let hot = core.engine.hot_skus(10);
        let recent = core.engine.recent_operations();
        let mut warnings = Vec::new();
        if core.wal.is_failed() {
            warnings.push(
                "the log cannot be written: the server refuses every change (read-only)".to_owned(),
            );
        }
        if let Some((sku, n)) = hot.first() {
            let share = *n as f64 / recent.max(1) as f64;
            if recent >= HOT_SKU_MIN_OPERATIONS && share >= HOT_SKU_SHARE {
                warnings.push(format!(
                    "one SKU ({sku}) takes {:.0}% of operations: more shards will not help; see stock buckets",
                    (share * 100.0).min(100.0)
                ));
            }
        }
        let fields = serde_json::json!({
            "store": {"kind": "embedded"},
            "shards": shards,
            "log": {
                "appended_lsn": core.wal.appended_lsn(),
                "groups": log.groups,
                "records": log.records,
                "bytes": log.bytes,
                "average_group": if log.groups == 0 { 0.0 } else { log.records as f64 / log.groups as f64 },
                "sync_seconds": log.sync_time.as_secs_f64(),
                "sync_buckets": wal::SYNC_BUCKETS
                    .iter()
                    .zip(log.sync_buckets)
                    .map(|(le, count)| serde_json::json!({"le": le, "count": count}))
                    .collect::<Vec<_>>(),
                "failed": core.wal.is_failed(),
                "recovered_records": core.report.records,
                "restored_checkpoint_lsn": core.restored_lsn,
            },
            "idempotency_keys": core.idempotency.len(),
            "hot_skus": hot
                .iter()
                .map(|(sku, operations)| serde_json::json!({"sku": sku.as_str(), "operations": operations}))
                .collect::<Vec<_>>(),
            "recent_operations": recent,
            "drops": core.drops.stats(),
            "webhooks": core.outbox.stats(),
        });
        Stats {
            fields,
            warnings,
            waitlisted: Some(core.engine.waiting()),
            shards: Some(core.engine.shard_count()),
        }
    }

    fn render_metrics(&self, out: &mut String) {
        let core: &Core = &self.core;
        let shards = core.engine.shard_stats();
        let _ = writeln!(
            out,
            "# HELP stampede_shard_operations_total Operations (lock acquisitions) per engine shard.\n\
             # TYPE stampede_shard_operations_total counter"
        );
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "stampede_shard_operations_total{{shard=\"{i}\"}} {}",
                s.operations
            );
        }
        let _ = writeln!(
            out,
            "# HELP stampede_shard_lock_wait_seconds_total Time spent waiting for each shard's lock while another held it.\n\
             # TYPE stampede_shard_lock_wait_seconds_total counter"
        );
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(
                out,
                "stampede_shard_lock_wait_seconds_total{{shard=\"{i}\"}} {}",
                s.lock_wait.as_secs_f64()
            );
        }
        let stats = core.wal.stats();
        let _ = writeln!(
            out,
            "# HELP stampede_wal_sync_seconds Time each log group took to write and sync.\n\
             # TYPE stampede_wal_sync_seconds histogram"
        );
        histogram_series(
            out,
            "stampede_wal_sync_seconds",
            "",
            &wal::SYNC_BUCKETS,
            &stats.sync_buckets,
            stats.groups,
            stats.sync_time.as_secs_f64(),
        );
        let gauges = [
            (
                "stampede_active_holds",
                "gauge",
                "Holds held now (not ended).",
                core.engine.active_holds() as f64,
            ),
            (
                "stampede_idempotency_keys",
                "gauge",
                "Idempotency keys kept.",
                core.idempotency.len() as f64,
            ),
            (
                "stampede_wal_groups_total",
                "counter",
                "Log groups written (one write and one sync each).",
                stats.groups as f64,
            ),
            (
                "stampede_wal_records_total",
                "counter",
                "Log records written.",
                stats.records as f64,
            ),
            (
                "stampede_wal_bytes_total",
                "counter",
                "Log bytes written.",
                stats.bytes as f64,
            ),
            (
                "stampede_wal_sync_seconds_total",
                "counter",
                "Time spent writing and syncing log groups.",
                stats.sync_time.as_secs_f64(),
            ),
            (
                "stampede_wal_failed",
                "gauge",
                "1 once the log cannot be written.",
                f64::from(u8::from(core.wal.is_failed())),
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }

        core.outbox.render(out);
        let _ = write!(
            out,
            "# HELP stampede_waitlist_waiting Requests waiting in SKU waitlists (wait_ms).\n\
             # TYPE stampede_waitlist_waiting gauge\nstampede_waitlist_waiting {}\n",
            core.engine.waiting()
        );
    }

    fn events(&self) -> Option<&Arc<crate::events::Hub>> {
        Some(&self.core.events)
    }
}

impl Drops for EmbeddedStore {
    fn drop_put<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
        spec: Spec,
    ) -> StoreFuture<'a, (bool, DropView)> {
        let put = self.core.drops.put(name, spec);
        Box::pin(async move {
            let put = put?;
            self.durable(scope, put.lsn).await?;
            Ok(put.value)
        })
    }

    fn drop_view<'a>(&'a self, scope: Scope<'a>, name: &'a str) -> StoreFuture<'a, DropView> {
        let view = self.core.drops.view(name);
        Box::pin(async move {
            let view = view?;
            self.durable(scope, view.lsn).await?;
            Ok(view.value)
        })
    }

    fn drop_join<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
        customer: &'a str,
    ) -> StoreFuture<'a, (bool, EntryView)> {
        let joined = self.core.drops.join(name, customer);
        Box::pin(async move {
            let joined = joined?;
            self.durable(scope, joined.lsn).await?;
            Ok(joined.value)
        })
    }

    fn drop_entry<'a>(
        &'a self,
        scope: Scope<'a>,
        name: &'a str,
        customer: &'a str,
    ) -> StoreFuture<'a, EntryView> {
        let entry = self.core.drops.entry(name, customer);
        Box::pin(async move {
            let entry = entry?;
            self.durable(scope, entry.lsn).await?;
            Ok(entry.value)
        })
    }

    fn gates_any(&self, skus: &mut dyn Iterator<Item = &str>) -> bool {
        self.core.drops.gates_any(skus)
    }
}
