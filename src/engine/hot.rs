//! Which SKUs take the most operations lately, in bounded memory: per
//! shard a space-saving sketch (Metwally et al.) of [`SLOTS`] counters over
//! the SKUs reserved in the current window, and the previous window's
//! counts. A SKU that takes more than 1/`SLOTS` of a shard's operations in
//! a window is always in its sketch, its count overstated by at most the
//! smallest counter's; a shard never keeps more than `SLOTS` entries,
//! whatever the catalogue. For operators (`/v1/stats` `hot_skus`), never a
//! metric label.

/// Counters per shard and window.
pub const SLOTS: usize = 8;
/// One operation in this many is counted (each count stands for this
/// many): keeping the sketch on every reservation cost ~170 instructions
/// a pair on 100k uniform SKUs (callgrind, `engine_probe`), 7%.
pub const SAMPLE: u64 = 4;
/// How long a window lasts; the report covers the current and the last.
pub const WINDOW_MS: u64 = 10_000;

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    sku: u32,
    count: u64,
}

/// One shard's sketch. Kept in the shard, changed under its lock.
#[derive(Debug, Default)]
pub(crate) struct HotSkus {
    /// Operations seen, for the sampling.
    seen: u64,
    current: Vec<Counter>,
    previous: Vec<Counter>,
    window_start_ms: u64,
    /// `seen` when the current window started, and the operations of the
    /// previous window: the shares the warnings speak of.
    seen_at_start: u64,
    previous_seen: u64,
}

impl HotSkus {
    /// Counts one operation on the SKU at `sku` (its index in the shard).
    /// The counters are kept sorted, highest first: a hot SKU is found at
    /// the first compare, and the smallest counter is always the last.
    #[inline]
    pub fn touch(&mut self, sku: u32) {
        self.seen = self.seen.wrapping_add(1);
        if !self.seen.is_multiple_of(SAMPLE) {
            return;
        }
        self.count(sku);
    }

    fn count(&mut self, sku: u32) {
        let pos = match self.current.iter().position(|c| c.sku == sku) {
            Some(pos) => {
                self.current[pos].count += 1;
                pos
            }
            None if self.current.len() < SLOTS => {
                self.current.push(Counter { sku, count: 1 });
                self.current.len() - 1
            }
            None => {
                // Space-saving: the new SKU takes the smallest counter's
                // place and count plus one, so no SKU is undercounted.
                // (The last, the order being kept: a scan for the minimum
                // cost ~250 instructions a reservation on 100k uniform
                // SKUs, callgrind.)
                let last = self.current.last_mut().expect("SLOTS > 0");
                *last = Counter {
                    sku,
                    count: last.count + 1,
                };
                SLOTS - 1
            }
        };
        let mut pos = pos;
        while pos > 0 && self.current[pos].count > self.current[pos - 1].count {
            self.current.swap(pos, pos - 1);
            pos -= 1;
        }
    }

    /// Starts a new window once the current one is `WINDOW_MS` old.
    pub fn rotate(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.window_start_ms) >= WINDOW_MS {
            self.previous = std::mem::take(&mut self.current);
            self.previous_seen = self.seen.wrapping_sub(self.seen_at_start);
            // Two windows back is forgotten.
            if now_ms.saturating_sub(self.window_start_ms) >= 2 * WINDOW_MS {
                self.previous.clear();
                self.previous_seen = 0;
            }
            self.seen_at_start = self.seen;
            self.window_start_ms = now_ms;
        }
    }

    /// Each SKU's operations over the current and the last window (an
    /// estimate: sampled counts times [`SAMPLE`]).
    pub fn counts(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let mut merged: Vec<(u32, u64)> = Vec::with_capacity(2 * SLOTS);
        for c in self.current.iter().chain(&self.previous) {
            match merged.iter_mut().find(|(s, _)| *s == c.sku) {
                Some((_, n)) => *n += c.count * SAMPLE,
                None => merged.push((c.sku, c.count * SAMPLE)),
            }
        }
        merged.into_iter()
    }

    /// Entries kept (for tests: the bound).
    /// Operations in the windows [`HotSkus::counts`] covers (every one,
    /// not only the sampled).
    pub fn operations(&self) -> u64 {
        self.seen.wrapping_sub(self.seen_at_start) + self.previous_seen
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    #[cfg(test)]
    fn get(&self, sku: u32) -> u64 {
        self.counts().find(|(s, _)| *s == sku).map_or(0, |(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_sku_is_found_among_many_and_memory_stays_bounded() {
        let mut h = HotSkus::default();
        // 100k distinct SKUs once each, and SKU 7 on every fourth
        // operation: 7 has a quarter of the traffic.
        for i in 0..100_000u32 {
            h.count(1_000 + i);
            if i % 4 == 0 {
                h.count(7);
            }
        }
        assert!(h.len() <= SLOTS, "{} entries", h.len());
        let top = h.counts().max_by_key(|&(_, n)| n).unwrap();
        assert_eq!(top.0, 7);
        // Space-saving never undercounts, and overcounts by at most the
        // operations divided by the counters.
        let n = h.get(7) / SAMPLE;
        assert!(
            (25_000..=25_000 + 125_000 / SLOTS as u64).contains(&n),
            "{n}"
        );
    }

    #[test]
    fn touches_are_sampled_and_scaled_back() {
        let mut h = HotSkus::default();
        for _ in 0..1000 {
            h.touch(3);
        }
        assert_eq!(h.get(3), 1000);
    }

    #[test]
    fn windows_roll_and_old_counts_go() {
        let mut h = HotSkus::default();
        h.rotate(0);
        h.count(1);
        h.count(1);
        h.rotate(WINDOW_MS);
        h.count(2);
        // The last window still counts.
        assert_eq!((h.get(1), h.get(2)), (2 * SAMPLE, SAMPLE));
        h.rotate(2 * WINDOW_MS);
        assert_eq!((h.get(1), h.get(2)), (0, SAMPLE));
        h.rotate(5 * WINDOW_MS);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn operations_count_the_current_and_last_window() {
        let mut h = HotSkus::default();
        h.rotate(0);
        (0..100).for_each(|_| h.touch(1));
        h.rotate(WINDOW_MS);
        (0..40).for_each(|_| h.touch(2));
        assert_eq!(h.operations(), 140);
        h.rotate(2 * WINDOW_MS);
        assert_eq!(h.operations(), 40);
        h.rotate(4 * WINDOW_MS);
        assert_eq!(h.operations(), 0);
    }
}
