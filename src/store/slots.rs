//! Redis Cluster hash slots, for keys the redis store must put in the same
//! slot as a SKU's without naming the SKU: a hold's record lives in the
//! slot of its first SKU, and its id carries that slot, so the id alone
//! finds the record. [`tag`] gives, for each of the 16384 slots, a short
//! hash tag that maps to it.

use std::sync::OnceLock;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// The slot of a key's hash tag (the whole key when it has none), as
/// Redis computes it (CRC16-XMODEM modulo 16384).
pub fn slot(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

/// A hash tag (without braces) whose keys land in `slot`: the smallest
/// decimal number that does. Computed once (about 150,000 CRCs).
pub fn tag(slot: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; SLOTS];
        let mut left = SLOTS;
        let mut n: u64 = 0;
        while left > 0 {
            let text = n.to_string();
            let s = usize::from(fred::util::redis_keyslot(text.as_bytes()));
            if tags[s].is_none() {
                tags[s] = Some(text);
                left -= 1;
            }
            n += 1;
        }
        tags.into_iter()
            .map(|t| t.expect("every slot filled"))
            .collect()
    });
    &tags[usize::from(slot) % SLOTS]
}

/// The next `share` slots of a look through all slots in turn, from
/// `next` (which it moves on), wrapping around.
pub fn share(next: &std::sync::atomic::AtomicU64, share: u64) -> Vec<u16> {
    let share = share.clamp(1, SLOTS as u64);
    let from = next.fetch_add(share, std::sync::atomic::Ordering::Relaxed);
    (from..from + share)
        .map(|s| (s % SLOTS as u64) as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_maps_to_it() {
        for s in 0..SLOTS as u16 {
            assert_eq!(slot(&format!("sp:{{{}}}:h:r_1", tag(s))), s);
        }
    }

    #[test]
    fn shares_go_round_every_slot_in_turn() {
        let next = std::sync::atomic::AtomicU64::new(SLOTS as u64 - 2);
        assert_eq!(share(&next, 4), [16_382, 16_383, 0, 1]);
        assert_eq!(share(&next, 2), [2, 3]);
        assert_eq!(share(&next, 0), [4], "at least one");
    }

    #[test]
    fn slots_follow_redis_hash_tags() {
        // Values from Redis's CLUSTER KEYSLOT (its documentation's examples).
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("foo{hash_tag}"), slot("hash_tag"));
        assert_eq!(slot("sp:{tee}"), slot("sp:{tee}:c"));
    }
}
