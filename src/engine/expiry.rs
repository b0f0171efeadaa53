//! A shard's expiry index: its active holds, bucketed by expiry time.
//!
//! Buckets are 64 ms wide and kept in a hash map by bucket number, each a
//! `Vec` of hold slots. A hold records its position in its bucket (in its
//! slot), so insert and remove are O(1): a push, and a swap-remove that
//! moves at most one other hold, whose new position is handed back to the
//! caller. The sweeper walks bucket numbers from `cursor` (the lowest that
//! may be non-empty) up to now's; the entries of the current bucket that
//! are not due yet stay and are looked at again next sweep. Empty buckets
//! are dropped, so memory follows the active holds.
//!
//! Compared with an ordered set of `(expires_at_ms, slot)` this is 8 bytes
//! an active hold instead of about 32, and no tree rebalancing on the
//! reserve and confirm paths.

use hashbrown::HashMap;

/// log2 of the bucket width in milliseconds.
const BUCKET_SHIFT: u32 = 6;

fn bucket_of(expires_at_ms: u64) -> u64 {
    expires_at_ms >> BUCKET_SHIFT
}

/// Empty buckets kept in the map per shard, so a bucket that empties and
/// refills (a hold confirmed right after it was made, the next one made in
/// the same 64 ms) neither allocates nor rehashes. Beyond this many, an
/// emptied bucket is dropped; the sweeper drops the ones it passes.
const EMPTY_BUCKETS_MAX: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct ExpiryIndex {
    buckets: HashMap<u64, Vec<u32>, foldhash::fast::FixedState>,
    /// How many of `buckets` are empty.
    empty: usize,
    /// No bucket below this one has entries.
    cursor: u64,
    len: usize,
}

impl ExpiryIndex {
    pub fn new() -> Self {
        ExpiryIndex {
            buckets: HashMap::default(),
            empty: 0,
            cursor: u64::MAX,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds `slot`, expiring at `expires_at_ms`; returns its position,
    /// which the caller keeps for [`ExpiryIndex::remove`].
    pub fn insert(&mut self, slot: u32, expires_at_ms: u64) -> u32 {
        let bucket = bucket_of(expires_at_ms);
        self.cursor = self.cursor.min(bucket);
        let entries = self.buckets.entry(bucket).or_default();
        if entries.is_empty() && entries.capacity() > 0 {
            self.empty -= 1;
        }
        entries.push(slot);
        self.len += 1;
        u32::try_from(entries.len() - 1).expect("a bucket holds fewer than 2^32 holds")
    }

    /// Removes the entry of `slot` at `pos`. If another hold moved into
    /// `pos`, returns that hold's slot: its position is now `pos`.
    pub fn remove(&mut self, slot: u32, expires_at_ms: u64, pos: u32) -> Option<u32> {
        let bucket = bucket_of(expires_at_ms);
        let entries = self
            .buckets
            .get_mut(&bucket)
            .expect("invariant: an active hold's bucket exists");
        assert_eq!(
            entries.get(pos as usize),
            Some(&slot),
            "invariant: an active hold is at its recorded expiry position"
        );
        entries.swap_remove(pos as usize);
        self.len -= 1;
        let moved = entries.get(pos as usize).copied();
        if entries.is_empty() {
            if self.empty < EMPTY_BUCKETS_MAX {
                self.empty += 1;
            } else {
                self.buckets.remove(&bucket);
            }
        }
        moved
    }

    /// Up to `max` slots from buckets at or before `now_ms`'s whose hold,
    /// by `expires_of`, is due. Moves the cursor over empty buckets.
    pub fn due(&mut self, now_ms: u64, max: usize, expires_of: impl Fn(u32) -> u64) -> Vec<u32> {
        let mut due = Vec::new();
        if self.len == 0 {
            self.buckets.clear();
            self.empty = 0;
            self.cursor = u64::MAX;
            return due;
        }
        let now_bucket = bucket_of(now_ms);
        let mut bucket = self.cursor;
        let mut all_before_empty = true;
        while bucket <= now_bucket && due.len() < max {
            match self.buckets.get(&bucket) {
                None => {
                    if all_before_empty {
                        self.cursor = bucket + 1;
                    }
                }
                Some(entries) if entries.is_empty() && bucket < now_bucket => {
                    // Passed for good: no hold can expire in the past.
                    self.buckets.remove(&bucket);
                    self.empty -= 1;
                    if all_before_empty {
                        self.cursor = bucket + 1;
                    }
                }
                Some(entries) => {
                    all_before_empty = false;
                    due.extend(
                        entries
                            .iter()
                            .copied()
                            .filter(|&s| expires_of(s) <= now_ms)
                            .take(max - due.len()),
                    );
                }
            }
            bucket += 1;
        }
        due
    }

    /// Every `(slot, position)` in the index, for invariant checks.
    pub fn entries(&self) -> impl Iterator<Item = (u64, u32, u32)> + '_ {
        self.buckets.iter().flat_map(|(&bucket, entries)| {
            entries
                .iter()
                .enumerate()
                .map(move |(pos, &slot)| (bucket, slot, pos as u32))
        })
    }

    /// True if `expires_at_ms` falls in `bucket`.
    pub fn in_bucket(bucket: u64, expires_at_ms: u64) -> bool {
        bucket_of(expires_at_ms) == bucket
    }

    /// The cursor is at or below every bucket, and `empty` counts the
    /// empty buckets.
    pub fn consistent(&self) -> bool {
        self.buckets.keys().all(|&b| b >= self.cursor)
            && self.buckets.values().filter(|v| v.is_empty()).count() == self.empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_and_due() {
        let mut index = ExpiryIndex::new();
        let expires = |slot: u32| 1000 + u64::from(slot) * 10;
        let mut pos = [0u32; 20];
        for slot in 0..20 {
            pos[slot as usize] = index.insert(slot, expires(slot));
        }
        assert_eq!(index.len(), 20);
        // Remove slot 3; whoever moved into its place learns its position.
        if let Some(moved) = index.remove(3, expires(3), pos[3]) {
            pos[moved as usize] = pos[3];
        }
        assert_eq!(index.len(), 19);
        let mut due = index.due(1055, 100, expires);
        due.sort_unstable();
        assert_eq!(due, vec![0, 1, 2, 4, 5]);
        assert_eq!(index.due(1055, 2, expires).len(), 2, "max is respected");
        assert!(index.consistent());
        for (bucket, slot, p) in index.entries() {
            assert!(ExpiryIndex::in_bucket(bucket, expires(slot)));
            assert_eq!(pos[slot as usize], p);
        }
    }

    #[test]
    fn an_empty_index_has_nothing_due_and_a_far_cursor_costs_nothing() {
        let mut index = ExpiryIndex::new();
        assert!(index.due(u64::MAX / 2, 10, |_| 0).is_empty());
        index.insert(7, 1_764_000_000_000);
        assert!(index
            .due(1_764_000_000_000 - 1, 10, |_| 1_764_000_000_000)
            .is_empty());
        assert_eq!(
            index.due(1_764_000_000_000, 10, |_| 1_764_000_000_000),
            vec![7]
        );
    }
}
