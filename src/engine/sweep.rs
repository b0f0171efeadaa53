//! Expiry and purge: the sweeper ends holds whose `expires_at_ms` has
//! come and frees ended holds past their retention, in bounded batches
//! per lock acquisition.

#[allow(unused_imports)]
use super::*;

impl Engine {
    /// Expires every active hold whose `expires_at_ms` has come, and purges
    /// ended holds past their retention. The server calls it every
    /// `holds.sweep_interval_ms`; tests call it after jumping the clock.
    pub fn sweep(&self) -> SweepStats {
        let now_ms = self.clock.now_ms();
        let mut stats = SweepStats::default();
        for index in 0..self.shards.len() as u16 {
            // Batches, dropping the lock between them so requests get a turn.
            self.lock_one(index).home().hot.rotate(now_ms);
            loop {
                let mut locked = self.lock_one(index);
                let due = locked.home().expired_slots(now_ms, SWEEP_BATCH);
                for &slot in &due {
                    locked.lock_items_of(self, slot);
                    let id = locked.home().hold_id(slot);
                    let Ok(lsn) = self.log(|| Change::HoldExpired { id, at_ms: now_ms }) else {
                        // The log is read-only: nothing more can change.
                        return stats;
                    };
                    // Nobody waits on an expiry: what the sink appended is
                    // made durable with the next group.
                    let _ = self.end(&mut locked, slot, Status::Expired, None, now_ms, lsn);
                    locked.keep_home_only();
                    stats.expired += 1;
                }
                if due.len() < SWEEP_BATCH {
                    break;
                }
            }
            stats.purged += self.purge_shard(index, now_ms);
        }
        stats
    }

    /// Frees every ended hold whose retention is over at `now_ms`, without
    /// expiring anything (purging changes no stock and is not logged).
    /// Replay calls it with the records' time, so a long log does not keep
    /// every ended hold in memory until the first sweep.
    pub fn purge(&self, now_ms: u64) -> usize {
        (0..self.shards.len() as u16)
            .map(|i| self.purge_shard(i, now_ms))
            .sum()
    }

    pub(super) fn purge_shard(&self, index: u16, now_ms: u64) -> usize {
        let mut total = 0;
        loop {
            let purged = self.lock_one(index).home().purge(now_ms, SWEEP_BATCH);
            total += purged;
            if purged < SWEEP_BATCH {
                return total;
            }
        }
    }
}
