//! Figures and the invariant check across all shards (for tests and
//! debugging: it takes every shard lock).

#[allow(unused_imports)]
use super::*;

impl Engine {
    /// Active holds (held, not yet ended) in the whole engine.
    pub fn active_holds(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().active_holds()).sum()
    }

    /// Per-shard figures for `/v1/stats`, one shard lock at a time.
    /// Up to `n` SKUs with the most reservations over the last 10 to 20 s
    /// (see `hot.rs`), most first. Takes each shard's lock in turn.
    pub fn hot_skus(&self, n: usize) -> Vec<(CompactString, u64)> {
        let mut all: Vec<(CompactString, u64)> = Vec::new();
        for s in self.shards.iter() {
            let shard = s.0.lock();
            all.extend(
                shard
                    .hot
                    .counts()
                    .map(|(sku, count)| (shard.sku(sku).name.clone(), count)),
            );
        }
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Operations over the windows [`Engine::hot_skus`] reports, all SKUs
    /// together: what a hot SKU's share is a share of.
    pub fn recent_operations(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.lock().hot.operations())
            .sum()
    }

    pub fn shard_stats(&self) -> Vec<ShardStats> {
        self.shards
            .iter()
            .map(|s| {
                let shard = s.0.lock();
                ShardStats {
                    skus: shard.sku_count(),
                    active_holds: shard.active_holds(),
                    retained_holds: shard.holds_len(),
                    operations: s.1.operations.load(std::sync::atomic::Ordering::Relaxed),
                    lock_wait: std::time::Duration::from_nanos(
                        s.1.lock_wait_ns.load(std::sync::atomic::Ordering::Relaxed),
                    ),
                }
            })
            .collect()
    }

    /// Checks every invariant across all shards; panics on a violation.
    /// Takes every shard lock (in order): for tests and debugging, not for
    /// the request path.
    pub fn check_invariants(&self) {
        let all: SmallVec<[u16; 4]> = (0..self.shards.len() as u16).collect();
        let locked = self.lock_sorted(all);
        let mut held_by_holds: Vec<Vec<u64>> = Vec::with_capacity(locked.guards.len());
        for shard in &locked.guards {
            shard.check_local();
            held_by_holds.push(vec![0; shard.sku_count()]);
        }
        let mut pending = 0;
        for shard in &locked.guards {
            for (_, hold) in shard.holds_iter() {
                if hold.status == Status::Held {
                    pending += usize::from(hold.payment.is_some());
                    for item in &hold.items {
                        held_by_holds[usize::from(item.sku.shard)][item.sku.index as usize] +=
                            u64::from(item.qty);
                    }
                }
            }
        }
        let mut waiting = 0;
        for (s, shard) in locked.guards.iter().enumerate() {
            let tallies = shard.tally_sums();
            for (index, sku) in shard.skus_iter() {
                assert_eq!(
                    sku.held, held_by_holds[s][index as usize],
                    "invariant: sku {} held = units of its active holds",
                    sku.name
                );
                let expected = if sku.customer_limit == 0 {
                    0
                } else {
                    sku.committed() - sku.untallied_sold
                };
                assert_eq!(
                    tallies[index as usize], expected,
                    "invariant: sku {} customer tallies = held + sold - untallied sold (limited SKUs only)",
                    sku.name
                );
                if let Some(head) = shard.waitlists.head(index) {
                    let fits = match head.fill {
                        Fill::All => u64::from(head.qty) <= sku.available(),
                        Fill::Partial => sku.available() > 0,
                    };
                    assert!(
                        !fits,
                        "invariant: sku {}: the head of its waitlist is not left waiting for stock that is available",
                        sku.name
                    );
                    waiting += shard.waitlists.len(index);
                }
                assert_eq!(
                    self.sold_out[s].read().contains(sku.name.as_str()),
                    sku.sold >= sku.stock,
                    "invariant: sku {} is in the sold-out set exactly when sold = stock",
                    sku.name
                );
            }
            assert!(
                self.sold_out[s].read().len() <= shard.sku_count(),
                "invariant: the sold-out set names only known SKUs"
            );
        }
        assert_eq!(
            waiting,
            self.waiting(),
            "invariant: the waiting count is the waitlists' length"
        );
        assert_eq!(
            pending,
            self.pending_payments(),
            "invariant: the pending payments count is the active holds with a payment"
        );
    }
}
