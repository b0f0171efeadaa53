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

use crate::codec::{self, put_opt_str, Put, Reader};
use crate::wal::{self, Journal};

/// The log record kind of a stored answer (the engine's are 1 to 6).
pub const RECORD_KIND: u8 = 7;

/// Bytes a stored answer's record needs besides its answer's body: key
/// (1 + 128), fingerprint, status, time, location (2 + 255), body length.
/// `idempotency.answer_bytes_max` leaves at least this much of the log's
/// largest payload free, so an answer within the limit always fits.
pub const RECORD_OVERHEAD_MAX: usize = 129 + 16 + 2 + 8 + 256 + 4;

/// The first completed answer to a request with an `Idempotency-Key`, as
/// the log (and a checkpoint's key image) holds it:
///
/// ```text
/// key str | fingerprint u128 | status u16 | at_ms u64 | location opt str | body bytes
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord<'a> {
    pub key: &'a str,
    /// 128-bit fingerprint of method, path and body.
    pub fingerprint: u128,
    pub status: u16,
    pub location: Option<&'a str>,
    pub body: &'a [u8],
    pub at_ms: u64,
}

impl<'a> KeyRecord<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<KeyRecord<'a>, codec::Error> {
        let mut r = Reader::new(payload);
        let record = KeyRecord {
            key: r.str()?,
            fingerprint: r.u128()?,
            status: r.u16()?,
            at_ms: r.u64()?,
            location: r.opt_str()?,
            body: r.bytes()?,
        };
        r.finish()?;
        Ok(record)
    }

    /// One line for the audit trail (`stampede wal inspect`).
    pub fn describe(&self) -> String {
        format!(
            "idempotency-stored key={} status={} body_bytes={} at_ms={}",
            self.key,
            self.status,
            self.body.len(),
            self.at_ms
        )
    }
}

impl wal::Entry for KeyRecord<'_> {
    fn kind(&self) -> u8 {
        RECORD_KIND
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), codec::Error> {
        out.put_str(self.key)?;
        out.put_u128(self.fingerprint);
        out.put_u16(self.status);
        out.put_u64(self.at_ms);
        put_opt_str(out, self.location)?;
        out.put_bytes(self.body)
    }
}

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
        started_at_ms: u64,
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
            Entry::InFlight { started_at_ms, .. } => {
                started_at_ms.saturating_add(self.ttl_ms) <= now_ms
            }
        }
    }

    pub fn begin(&self, key: &str, fingerprint: u128, now_ms: u64) -> Begin {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get(key) {
            if !self.expired(entry, now_ms) {
                return match entry {
                    Entry::InFlight { .. } => Begin::InUse,
                    Entry::Done {
                        fingerprint: f,
                        stored,
                        lsn,
                    } if *f == fingerprint => Begin::Replay(stored.clone(), *lsn),
                    Entry::Done { .. } => Begin::Reused,
                };
            }
        }
        if entries.len() >= self.keys_max {
            entries.retain(|_, e| !self.expired(e, now_ms));
            if entries.len() >= self.keys_max {
                return Begin::Full;
            }
        }
        entries.insert(
            key.to_owned(),
            Entry::InFlight {
                started_at_ms: now_ms,
            },
        );
        Begin::Fresh
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
        let mut entries = self.entries.lock();
        if matches!(entries.get(key), Some(Entry::InFlight { .. })) {
            entries.remove(key);
        }
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

    /// Every done key as log records' bytes, for a checkpoint. Called with
    /// the store locked by [`IdempotencyStore::with_locked`].
    fn encode(entries: &HashMap<String, Entry>, out: &mut Vec<u8>) {
        for (key, entry) in entries {
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

    /// Replay: takes a logged answer (the payload of a [`RECORD_KIND`]
    /// record) if it is still live at `now_ms`; returns when it was stored.
    pub fn replay(&self, payload: &[u8], now_ms: u64) -> Result<u64, String> {
        let KeyRecord {
            key,
            fingerprint,
            status,
            location,
            body,
            at_ms,
        } = KeyRecord::decode(payload).map_err(|e| format!("a stored answer: {e}"))?;
        if self.live_at(at_ms, now_ms) {
            let stored = Stored {
                status,
                location: location.map(str::to_owned),
                body: Bytes::copy_from_slice(body),
                stored_at_ms: at_ms,
            };
            self.restore(key, fingerprint, stored);
        }
        Ok(at_ms)
    }

    /// Loads an image made by [`IdempotencyStore::with_locked`] (keys
    /// expired by `now_ms` are left out: they would count as absent).
    pub fn restore_image(&self, mut bytes: &[u8], now_ms: u64) -> Result<(), String> {
        while !bytes.is_empty() {
            let d = wal::record::decode(bytes).map_err(|e| format!("idempotency image: {e}"))?;
            if d.kind != RECORD_KIND {
                return Err(format!("idempotency image: a record of kind {}", d.kind));
            }
            self.replay(d.payload, now_ms)?;
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
