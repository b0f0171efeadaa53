//! Idempotency keys: the first completed answer to a request carrying an
//! `Idempotency-Key`, kept for `idempotency.ttl_ms` and through restarts.
//!
//! A key is *in flight* while its first request runs (a second request
//! with it gets 409 `idempotency_key_in_use`), then *done* once that
//! answer is in the log and durable: the same request again gets the same
//! answer, another request under the key gets 422 `idempotency_key_reused`.
//! Requests are compared by a 128-bit fingerprint of method, path and body.
//!
//! The answer's record is appended while the store's mutex is held, so a
//! checkpoint that holds the mutex (and every shard lock) while it reads
//! the log position sees exactly the keys logged before it. At most
//! `idempotency.keys_max` keys are kept; expired ones go first.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

pub mod config;
mod record;

use crate::wal::{self, Journal};

/// The log record kind of a stored answer (see [`crate::wal::kinds`]).
pub const RECORD_KIND: u8 = crate::wal::kinds::KEY_ANSWER;

/// The log record kind of a key taken or given back ([`ClaimRecord`]).
pub const CLAIM_KIND: u8 = crate::wal::kinds::KEY_CLAIM;

/// Bytes a stored answer's record needs besides its answer's body: key
/// (1 + 128), fingerprint, status, time, location (2 + 255), body length.
/// `idempotency.answer_bytes_max` leaves at least this much of the log's
/// largest payload free, so an answer within the limit always fits.
pub const RECORD_OVERHEAD_MAX: usize = 129 + 16 + 2 + 8 + 256 + 4;

pub use record::{ClaimRecord, KeyRecord, KeyStoreRecord};

/// An answer as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub status: u16,
    pub location: Option<String>,
    /// Shared with the answer sent and every replay (no copies).
    pub body: Bytes,
    pub stored_at_ms: u64,
}

#[derive(Debug)]
enum Entry {
    InFlight {
        fingerprint: u128,
        started_at_ms: u64,
    },
    /// A request under the key was cut off by a restart after it may
    /// have made its change (its claim replayed, no answer): the outcome
    /// is unknown, so the key is never run again within its ttl.
    Lost {
        fingerprint: u128,
        claimed_at_ms: u64,
    },
    Done {
        fingerprint: u128,
        stored: Arc<Stored>,
        /// The LSN of the answer's record (0 once replayed from the log):
        /// a replay waits until it is durable.
        lsn: u64,
    },
}

/// What a request with a key should do.
#[derive(Debug)]
pub enum Begin {
    /// First time: run it, then [`IdempotencyStore::complete`] or
    /// [`IdempotencyStore::abandon`].
    Fresh,
    /// Run it, drawing every new id (a hold's, an adjust's) from this
    /// seed ([`crate::store::Pending::seeded`]): the first request with
    /// the key, or a later one taking over from a first that ended
    /// without an answer (a 503 after its change was made, a dead node).
    /// The same seed makes the same ids, so a change the first made is
    /// found made, and answered as it was, never made twice. The redis
    /// store answers this; the embedded store `Fresh`.
    Seeded(Arc<str>),
    /// As `Seeded`, for a request that takes over from a first one under
    /// the key that ended without an answer: that first request may have
    /// made its changes, so a change whose id alone does not find it (a
    /// bucketed SKU's hold may be in any bucket) is looked for first
    /// ([`crate::store::Pending::resumed`]).
    Resumed(Arc<str>),
    /// Answer this again, once the log is durable up to the LSN.
    Replay(Arc<Stored>, u64),
    InUse,
    /// The first request under the key was cut off by a restart after it
    /// may have made its change, and its answer was lost (embedded store):
    /// the key is not run again within its ttl.
    Lost,
    Reused,
    /// `idempotency.keys_max` keys are live.
    Full,
}

pub struct IdempotencyStore {
    entries: Mutex<HashMap<String, Entry>>,
    ttl_ms: u64,
    keys_max: usize,
    /// Largest answer body kept (`idempotency.answer_bytes_max`): with
    /// the rest of its record it always fits one log record.
    answer_bytes_max: usize,
}

/// Why an answer was not stored. Either way nothing of it was logged and
/// the key is still in flight (the caller abandons it).
#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error("the answer is {bytes} bytes, over idempotency.answer_bytes_max = {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error(transparent)]
    Log(#[from] wal::Error),
}

/// Most `idempotency.answer_bytes_max` may be: what a log record has room
/// for besides the key, location and the rest.
pub const ANSWER_BYTES_MAX_LIMIT: usize = wal::record::PAYLOAD_MAX - RECORD_OVERHEAD_MAX;

/// The fingerprint of a request: two independent fixed-seed hashes.
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> u128 {
    let hash = |seed: u64| {
        let mut h = foldhash::quality::FixedState::with_seed(seed).build_hasher();
        h.write(method.as_bytes());
        h.write_u8(0);
        h.write(path.as_bytes());
        h.write_u8(0);
        h.write(body);
        h.finish()
    };
    (u128::from(hash(0x1de7_0000_0000_0001)) << 64) | u128::from(hash(0x5eed_0000_0000_000b))
}

impl IdempotencyStore {
    /// `answer_bytes_max` is capped at [`ANSWER_BYTES_MAX_LIMIT`].
    pub fn new(ttl_ms: u64, keys_max: usize, answer_bytes_max: usize) -> IdempotencyStore {
        IdempotencyStore {
            entries: Mutex::new(HashMap::new()),
            ttl_ms,
            keys_max,
            answer_bytes_max: answer_bytes_max.min(ANSWER_BYTES_MAX_LIMIT),
        }
    }

    pub fn answer_bytes_max(&self) -> usize {
        self.answer_bytes_max
    }

    /// Whether an answer stored at `stored_at_ms` is still kept at `now_ms`.
    pub fn live_at(&self, stored_at_ms: u64, now_ms: u64) -> bool {
        stored_at_ms.saturating_add(self.ttl_ms) > now_ms
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expired(&self, entry: &Entry, now_ms: u64) -> bool {
        match entry {
            Entry::Done { stored, .. } => stored.stored_at_ms.saturating_add(self.ttl_ms) <= now_ms,
            // A request that never finished (the process went away mid-way)
            // frees its key after the ttl too.
            Entry::InFlight {
                started_at_ms: at, ..
            }
            | Entry::Lost {
                claimed_at_ms: at, ..
            } => at.saturating_add(self.ttl_ms) <= now_ms,
        }
    }

    pub fn begin(&self, key: &str, fingerprint: u128, now_ms: u64) -> Begin {
        self.begin_with(key, fingerprint, now_ms, None)
            .expect("no log, no log error")
    }

    /// [`IdempotencyStore::begin`], and a `Fresh` key's claim logged to
    /// `journal` (under the store's lock, as answers are) before the
    /// request runs. A claim the log refuses takes the key back.
    pub fn begin_logged(
        &self,
        key: &str,
        fingerprint: u128,
        now_ms: u64,
        journal: &dyn Journal,
    ) -> Result<Begin, wal::Error> {
        self.begin_with(key, fingerprint, now_ms, Some(journal))
    }

    fn begin_with(
        &self,
        key: &str,
        fingerprint: u128,
        now_ms: u64,
        journal: Option<&dyn Journal>,
    ) -> Result<Begin, wal::Error> {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get(key) {
            if !self.expired(entry, now_ms) {
                return Ok(match entry {
                    Entry::InFlight { .. } => Begin::InUse,
                    Entry::Lost { fingerprint: f, .. } if *f == fingerprint => Begin::Lost,
                    Entry::Lost { .. } => Begin::Reused,
                    Entry::Done {
                        fingerprint: f,
                        stored,
                        lsn,
                    } if *f == fingerprint => Begin::Replay(stored.clone(), *lsn),
                    Entry::Done { .. } => Begin::Reused,
                });
            }
        }
        if entries.len() >= self.keys_max {
            entries.retain(|_, e| !self.expired(e, now_ms));
            if entries.len() >= self.keys_max {
                return Ok(Begin::Full);
            }
        }
        if let Some(journal) = journal {
            journal.append(&ClaimRecord {
                key,
                fingerprint,
                at_ms: now_ms,
                given_back: false,
            })?;
        }
        entries.insert(
            key.to_owned(),
            Entry::InFlight {
                fingerprint,
                started_at_ms: now_ms,
            },
        );
        Ok(Begin::Fresh)
    }

    /// Logs the answer and marks the key done; returns the record's LSN,
    /// which the caller waits on before answering. An answer over
    /// `answer_bytes_max` is refused before anything is logged.
    pub fn complete(
        &self,
        key: &str,
        fingerprint: u128,
        stored: Stored,
        journal: &dyn Journal,
    ) -> Result<u64, CompleteError> {
        if stored.body.len() > self.answer_bytes_max {
            return Err(CompleteError::TooLarge {
                bytes: stored.body.len(),
                limit: self.answer_bytes_max,
            });
        }
        let mut entries = self.entries.lock();
        let lsn = journal.append(&KeyRecord {
            key,
            fingerprint,
            status: stored.status,
            location: stored.location.as_deref(),
            body: &stored.body,
            at_ms: stored.stored_at_ms,
        })?;
        entries.insert(
            key.to_owned(),
            Entry::Done {
                fingerprint,
                stored: Arc::new(stored),
                lsn,
            },
        );
        Ok(lsn)
    }

    /// The first request ended without an answer worth keeping (a 5xx, or
    /// the client went away): the key is free again.
    pub fn abandon(&self, key: &str) {
        self.abandon_with(key, None);
    }

    /// [`IdempotencyStore::abandon`], its claim given back in `journal`.
    /// Not waited for: if the log fails first, the claim stands and a
    /// restart finds the key lost, which is the safe side.
    pub fn abandon_logged(&self, key: &str, at_ms: u64, journal: &dyn Journal) {
        self.abandon_with(key, Some((at_ms, journal)));
    }

    fn abandon_with(&self, key: &str, journal: Option<(u64, &dyn Journal)>) {
        let mut entries = self.entries.lock();
        let Some(&Entry::InFlight { fingerprint, .. }) = entries.get(key) else {
            return;
        };
        if let Some((at_ms, journal)) = journal {
            let given_back = journal.append(&ClaimRecord {
                key,
                fingerprint,
                at_ms,
                given_back: true,
            });
            if given_back.is_err() {
                // The log is failing: whatever the request changed may
                // be in it, so the key must not run again in this
                // process either.
                entries.insert(
                    key.to_owned(),
                    Entry::Lost {
                        fingerprint,
                        claimed_at_ms: at_ms,
                    },
                );
                return;
            }
        }
        entries.remove(key);
    }

    /// Replay of a logged answer.
    pub fn restore(&self, key: &str, fingerprint: u128, stored: Stored) {
        self.entries.lock().insert(
            key.to_owned(),
            Entry::Done {
                fingerprint,
                stored: Arc::new(stored),
                lsn: 0,
            },
        );
    }

    /// Every key as log records' bytes, for a checkpoint: a done key's
    /// answer, and a claim for a key in flight or lost (a request in
    /// flight now may make its change before the checkpoint's LSN). Called
    /// with the store locked by [`IdempotencyStore::with_locked`].
    fn encode(entries: &HashMap<String, Entry>, out: &mut Vec<u8>) {
        for (key, entry) in entries {
            let (fingerprint, at_ms) = match entry {
                Entry::InFlight {
                    fingerprint,
                    started_at_ms: at_ms,
                }
                | Entry::Lost {
                    fingerprint,
                    claimed_at_ms: at_ms,
                } => (*fingerprint, *at_ms),
                Entry::Done { .. } => (0, 0),
            };
            if !matches!(entry, Entry::Done { .. }) {
                let claim = ClaimRecord {
                    key,
                    fingerprint,
                    at_ms,
                    given_back: false,
                };
                wal::record::frame(&claim, 0, out).expect("bug: a claim always encodes");
            }
            if let Entry::Done {
                fingerprint,
                stored,
                ..
            } = entry
            {
                let record = KeyRecord {
                    key,
                    fingerprint: *fingerprint,
                    status: stored.status,
                    location: stored.location.as_deref(),
                    body: &stored.body,
                    at_ms: stored.stored_at_ms,
                };
                wal::record::frame(&record, 0, out)
                    .expect("bug: a stored answer within answer_bytes_max always encodes");
            }
        }
    }

    /// Runs `f` with the store locked (no key can be logged meanwhile) and
    /// returns its result with the store's image.
    pub fn with_locked<R>(&self, f: impl FnOnce() -> R) -> (R, Vec<u8>) {
        let entries = self.entries.lock();
        let r = f();
        let mut image = Vec::new();
        Self::encode(&entries, &mut image);
        (r, image)
    }

    /// Replay: takes a key store record (decoded by [`crate::records`]) if it is still
    /// live at `now_ms`; returns when it was made. A claim is read as a
    /// lost key until an answer or a give-back for it follows.
    pub fn replay(&self, record: KeyStoreRecord<'_>, now_ms: u64) -> Result<u64, String> {
        let ClaimRecord {
            key,
            fingerprint,
            at_ms,
            given_back,
        } = match record {
            KeyStoreRecord::Answer(answer) => return Ok(self.replay_answer(answer, now_ms)),
            KeyStoreRecord::Claim(claim) => claim,
        };
        let mut entries = self.entries.lock();
        if given_back {
            if matches!(entries.get(key), Some(Entry::Lost { .. })) {
                entries.remove(key);
            }
        } else if self.live_at(at_ms, now_ms) {
            entries.insert(
                key.to_owned(),
                Entry::Lost {
                    fingerprint,
                    claimed_at_ms: at_ms,
                },
            );
        }
        Ok(at_ms)
    }

    fn replay_answer(&self, answer: KeyRecord<'_>, now_ms: u64) -> u64 {
        let KeyRecord {
            key,
            fingerprint,
            status,
            location,
            body,
            at_ms,
        } = answer;
        if self.live_at(at_ms, now_ms) {
            let stored = Stored {
                status,
                location: location.map(str::to_owned),
                body: Bytes::copy_from_slice(body),
                stored_at_ms: at_ms,
            };
            self.restore(key, fingerprint, stored);
        }
        at_ms
    }

    /// Loads an image made by [`IdempotencyStore::with_locked`] (keys
    /// expired by `now_ms` are left out: they would count as absent).
    pub fn restore_image(&self, mut bytes: &[u8], now_ms: u64) -> Result<(), String> {
        while !bytes.is_empty() {
            let d = wal::record::decode(bytes).map_err(|e| format!("idempotency image: {e}"))?;
            if crate::wal::kinds::owner(d.kind) != Some(crate::wal::kinds::Owner::Keys) {
                return Err(format!("idempotency image: a record of kind {}", d.kind));
            }
            let record = KeyStoreRecord::decode(d.kind, d.payload)
                .map_err(|e| format!("idempotency image: {e}"))?;
            self.replay(record, now_ms)?;
            bytes = &bytes[d.len..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_go_through_their_states() {
        let store = IdempotencyStore::new(1000, 2, 1 << 16);
        let f = fingerprint("POST", "/v1/reservations", b"{}");
        assert_ne!(f, fingerprint("POST", "/v1/reservations", b"{ }"));
        assert!(matches!(store.begin("k", f, 0), Begin::Fresh));
        assert!(matches!(store.begin("k", f, 1), Begin::InUse));
        store.abandon("k");
        assert!(matches!(store.begin("k", f, 2), Begin::Fresh));
        store.restore(
            "k",
            f,
            Stored {
                status: 201,
                location: None,
                body: Bytes::from_static(b"x"),
                stored_at_ms: 2,
            },
        );
        assert!(matches!(store.begin("k", f, 3), Begin::Replay(s, _) if s.body[..] == b"x"[..]));
        assert!(matches!(store.begin("k", f ^ 1, 3), Begin::Reused));
        assert!(matches!(store.begin("other", f, 3), Begin::Fresh));
        assert!(
            matches!(store.begin("third", f, 3), Begin::Full),
            "keys_max holds"
        );
        // After the ttl the key is forgotten and room comes back.
        assert!(matches!(store.begin("third", f, 1002), Begin::Fresh));
        assert!(matches!(store.begin("k", f ^ 1, 1003), Begin::Fresh));
    }

    /// Frames `record` as replay sees it.
    fn replay_of(store: &IdempotencyStore, record: &dyn wal::Entry, now_ms: u64) {
        let mut payload = Vec::new();
        wal::Entry::encode(record, &mut payload).unwrap();
        let decoded = KeyStoreRecord::decode(record.kind(), &payload).unwrap();
        store.replay(decoded, now_ms).unwrap();
    }

    fn claim(key: &str, fingerprint: u128, at_ms: u64, given_back: bool) -> ClaimRecord<'_> {
        ClaimRecord {
            key,
            fingerprint,
            at_ms,
            given_back,
        }
    }

    #[test]
    fn a_claim_replayed_without_an_answer_is_a_lost_key_until_its_ttl() {
        let store = IdempotencyStore::new(1000, 10, 1 << 16);
        replay_of(&store, &claim("lost", 7, 10, false), 20);
        replay_of(&store, &claim("back", 7, 10, false), 20);
        replay_of(&store, &claim("back", 7, 11, true), 20);
        replay_of(&store, &claim("done", 7, 10, false), 20);
        let answer = KeyRecord {
            key: "done",
            fingerprint: 7,
            status: 201,
            location: None,
            body: b"{}",
            at_ms: 12,
        };
        replay_of(&store, &answer, 20);
        assert!(matches!(store.begin("lost", 7, 30), Begin::Lost));
        assert!(matches!(store.begin("lost", 8, 30), Begin::Reused));
        assert!(matches!(store.begin("back", 7, 30), Begin::Fresh));
        assert!(matches!(store.begin("done", 7, 30), Begin::Replay(..)));
        // A lost key, and a request in flight, go into a checkpoint's
        // image as claims, and come back lost.
        assert!(matches!(store.begin("running", 9, 30), Begin::Fresh));
        let ((), image) = store.with_locked(|| ());
        let again = IdempotencyStore::new(1000, 10, 1 << 16);
        again.restore_image(&image, 40).unwrap();
        assert!(matches!(again.begin("lost", 7, 40), Begin::Lost));
        assert!(matches!(again.begin("running", 9, 40), Begin::Lost));
        assert!(matches!(again.begin("done", 7, 40), Begin::Replay(..)));
        // After the ttl from its claim, the key is free.
        assert!(matches!(again.begin("lost", 7, 1010), Begin::Fresh));
    }

    #[test]
    fn a_give_back_the_log_refuses_leaves_the_key_lost() {
        struct Refusing;
        impl Journal for Refusing {
            fn append(&self, _: &dyn wal::Entry) -> Result<u64, wal::Error> {
                Err(wal::Error::Unavailable("disk gone".into()))
            }
            fn appended_lsn(&self) -> u64 {
                0
            }
        }
        let store = IdempotencyStore::new(1000, 10, 1 << 16);
        assert!(matches!(store.begin("k", 7, 0), Begin::Fresh));
        store.abandon_logged("k", 1, &Refusing);
        assert!(matches!(store.begin("k", 7, 2), Begin::Lost));
        // And a claim the log refuses takes the key back.
        assert!(store.begin_logged("j", 7, 2, &Refusing).is_err());
        assert!(matches!(store.begin("j", 7, 3), Begin::Fresh));
    }

    #[test]
    fn an_image_round_trips() {
        let store = IdempotencyStore::new(1000, 10, 1 << 16);
        let stored = Stored {
            status: 200,
            location: Some("/v1/reservations/r_x".into()),
            body: Bytes::from_static(b"{}"),
            stored_at_ms: 5,
        };
        store.restore("a", 7, stored.clone());
        let ((), image) = store.with_locked(|| ());
        let again = IdempotencyStore::new(1000, 10, 1 << 16);
        again.restore_image(&image, 6).unwrap();
        assert!(matches!(again.begin("a", 7, 6), Begin::Replay(s, _) if *s == stored));
    }
}
