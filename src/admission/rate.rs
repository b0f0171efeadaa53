//! Token-bucket rate limits keyed by a string (an API key, a customer id),
//! in bounded memory however many distinct keys arrive.
//!
//! Each key has a bucket of `burst` tokens refilled at `per_second`; a
//! request takes one token or is refused with the seconds until one is
//! back. Buckets live in 64 locked shards keyed by a 64-bit hash of the key
//! (two keys sharing a hash would share a bucket: about one pair in 10^7 at
//! ten million keys). A shard holds at most `keys_max / 64` buckets. When a
//! new key finds its shard full, the buckets that have refilled to `burst`
//! (idle keys: a fresh bucket is the same thing) are dropped; if it is still
//! full, every tracked key is active and the new key is let through
//! untracked and counted (`untracked`); a full shard is scanned at most
//! once a second. So a flood of distinct keys costs
//! no memory and refuses no newcomer wrongly.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hashbrown::HashMap;
use parking_lot::Mutex;

const SHARDS: usize = 64;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

#[derive(Default)]
struct Shard {
    buckets: HashMap<u64, Bucket>,
    /// A full shard is pruned (an O(n) scan) at most once a second.
    next_prune_ms: u64,
}

pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    per_ms: f64,
    burst: f64,
    per_shard_max: usize,
    /// Keys let through untracked because their shard was full of active
    /// buckets.
    pub untracked: AtomicU64,
}

impl RateLimiter {
    /// `per_second` tokens a second up to `burst`, for at most `keys_max`
    /// keys at once (at least one per shard).
    pub fn new(per_second: f64, burst: u32, keys_max: usize) -> RateLimiter {
        assert!(per_second > 0.0 && burst >= 1);
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_ms: per_second / 1000.0,
            burst: f64::from(burst),
            per_shard_max: (keys_max / SHARDS).max(1),
            untracked: AtomicU64::new(0),
        }
    }

    /// Takes a token for `key` at `now_ms`, or says how many seconds until
    /// one is back (at least 1).
    pub fn check(&self, key: &str, now_ms: u64) -> Result<(), u64> {
        let hash = foldhash::fast::FixedState::with_seed(0x5eed_ba5e).hash_one(key);
        let mut guard = self.shards[(hash >> 58) as usize % SHARDS].lock();
        let shard = &mut *guard;
        let bucket = match shard.buckets.get_mut(&hash) {
            Some(bucket) => bucket,
            None => {
                if shard.buckets.len() >= self.per_shard_max && now_ms >= shard.next_prune_ms {
                    shard
                        .buckets
                        .retain(|_, b| self.refilled(b, now_ms) < self.burst);
                    shard.next_prune_ms = now_ms.saturating_add(1_000);
                }
                if shard.buckets.len() >= self.per_shard_max {
                    self.untracked.fetch_add(1, Relaxed);
                    return Ok(());
                }
                shard.buckets.entry(hash).or_insert(Bucket {
                    tokens: self.burst,
                    at_ms: now_ms,
                })
            }
        };
        bucket.tokens = self.refilled(bucket, now_ms);
        bucket.at_ms = bucket.at_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - bucket.tokens) / self.per_ms;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }

    fn refilled(&self, b: &Bucket, now_ms: u64) -> f64 {
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64;
        (b.tokens + elapsed * self.per_ms).min(self.burst)
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().buckets.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_its_rate() {
        let r = RateLimiter::new(2.0, 3, 1000);
        for _ in 0..3 {
            assert_eq!(r.check("c-1", 1_000), Ok(()));
        }
        assert_eq!(r.check("c-1", 1_000), Err(1));
        // Other keys have their own buckets.
        assert_eq!(r.check("c-2", 1_000), Ok(()));
        // 2 a second: one token back after 500 ms, not before.
        assert_eq!(r.check("c-1", 1_400), Err(1));
        assert_eq!(r.check("c-1", 1_500), Ok(()));
        assert!(r.check("c-1", 1_500).is_err());
        // Never more than the burst, however long idle.
        let later = 1_000_000;
        for _ in 0..3 {
            assert_eq!(r.check("c-1", later), Ok(()));
        }
        assert!(r.check("c-1", later).is_err());
    }

    #[test]
    fn retry_after_is_the_time_until_a_token_in_whole_seconds() {
        let r = RateLimiter::new(0.1, 1, 100); // one every 10 s
        assert_eq!(r.check("k", 0), Ok(()));
        assert_eq!(r.check("k", 0), Err(10));
        assert_eq!(r.check("k", 7_500), Err(3));
    }

    #[test]
    fn memory_stays_bounded_with_a_million_distinct_keys() {
        let keys_max = 6_400;
        let r = RateLimiter::new(1.0, 5, keys_max);
        for n in 0..1_000_000u64 {
            // All within one second: every bucket stays active.
            assert_eq!(
                r.check(&format!("customer-{n}"), 1_000 + n / 1_000_000),
                Ok(())
            );
        }
        assert!(r.len() <= keys_max, "{} buckets", r.len());
        assert!(r.untracked.load(Relaxed) >= 1_000_000 - keys_max as u64);
        // Once they have gone idle (refilled), newcomers are tracked again
        // and the old buckets make room.
        assert_eq!(r.check("late", 60_000), Ok(()));
        assert!(r.len() <= keys_max);
        let untracked = r.untracked.load(Relaxed);
        for _ in 0..4 {
            r.check("late", 60_000).unwrap();
        }
        assert_eq!(r.check("late", 60_000), Err(1), "late is limited again");
        assert_eq!(r.untracked.load(Relaxed), untracked);
    }
}
