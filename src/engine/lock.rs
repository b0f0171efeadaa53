//! Locking, and the one rule that rules out deadlock: shard locks are
//! only ever taken in ascending shard index. Reserve sorts the shards of
//! its items and locks them in order ([`Engine::lock_sorted`]); an
//! operation on a hold locks its home shard first ([`Engine::lock_hold`])
//! and then [`Locked::lock_items_of`] adds the others, which all have a
//! higher index (home is the lowest). The order is checked with real
//! assertions, in every build: a violation is a bug that could deadlock.

#[allow(unused_imports)]
use super::*;

/// The locks one change holds: shard indices ascending, each with its guard.
pub(super) struct Locked<'a> {
    pub(super) indices: SmallVec<[u16; 4]>,
    pub(super) guards: SmallVec<[MutexGuard<'a, Shard>; 4]>,
}

impl<'a> Locked<'a> {
    pub(super) fn shard(&self, index: u16) -> &Shard {
        let pos = self.position(index);
        &self.guards[pos]
    }

    pub(super) fn shard_mut(&mut self, index: u16) -> &mut Shard {
        let pos = self.position(index);
        &mut self.guards[pos]
    }

    pub(super) fn position(&self, index: u16) -> usize {
        self.indices
            .iter()
            .position(|&i| i == index)
            .expect("bug: shard used without its lock")
    }

    pub(super) fn home(&mut self) -> &mut Shard {
        &mut self.guards[0]
    }

    pub(super) fn home_ref(&self) -> &Shard {
        &self.guards[0]
    }

    /// Locks the shards of `slot`'s items that are not locked yet. They are
    /// all above the home shard, so ascending order is kept.
    pub(super) fn lock_items_of(&mut self, engine: &'a Engine, slot: u32) {
        let items = &self.guards[0].hold(slot).items;
        if items.iter().all(|i| self.indices.contains(&i.sku.shard)) {
            return;
        }
        let mut more: SmallVec<[u16; 4]> = self.guards[0]
            .hold(slot)
            .items
            .iter()
            .map(|i| i.sku.shard)
            .filter(|s| !self.indices.contains(s))
            .collect();
        more.sort_unstable();
        more.dedup();
        assert!(
            more.first()
                .is_none_or(|&s| s > *self.indices.last().expect("home locked")),
            "bug: a hold's other shards are above its home, so locking them keeps the order"
        );
        for s in more {
            self.guards.push(engine.lock_shard(s));
            self.indices.push(s);
        }
    }

    /// Drops every lock but the home shard's.
    pub(super) fn keep_home_only(&mut self) {
        self.guards.truncate(1);
        self.indices.truncate(1);
    }
}

impl Engine {
    /// Locks one shard, counting the operation and any time spent waiting
    /// (timed only when the lock was held: uncontended, it costs one
    /// relaxed add on a line the lock writes anyway).
    fn lock_shard(&self, index: u16) -> MutexGuard<'_, Shard> {
        let padded = &self.shards[usize::from(index)];
        padded
            .1
            .operations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::sync::lock_timed(&padded.0, &padded.1.lock_wait_ns)
    }

    pub(super) fn lock_one(&self, index: u16) -> Locked<'_> {
        Locked {
            indices: one(index),
            guards: one(self.lock_shard(index)),
        }
    }

    /// Locks `indices` (sorted, distinct) in ascending order.
    pub(super) fn lock_sorted(&self, indices: SmallVec<[u16; 4]>) -> Locked<'_> {
        assert!(
            indices.windows(2).all(|w| w[0] < w[1]),
            "bug: shard locks are taken in ascending order only"
        );
        let mut guards = SmallVec::new();
        for &i in &indices {
            guards.push(self.lock_shard(i));
        }
        Locked { indices, guards }
    }

    /// Locks a hold's home shard and finds the hold.
    pub(super) fn lock_hold(&self, id: HoldId) -> Result<(Locked<'_>, u32), Error> {
        if id.shard() >= self.shards.len() {
            return Err(Error::HoldNotFound);
        }
        let locked = self.lock_one(id.shard);
        let slot = locked
            .shard(id.shard)
            .hold_slot(id)
            .ok_or(Error::HoldNotFound)?;
        Ok((locked, slot))
    }
}
