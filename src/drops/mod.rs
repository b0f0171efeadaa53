//! Drops (contract, "Drops: a fair opening"): SKUs gated behind a line
//! that opens at a set time. Customers who arrive before the opening join
//! a pre-queue, ordered at the opening by `HMAC-SHA256(seed, customer_id)`
//! ([`order`]); later arrivals queue behind them in arrival order; entrants
//! are admitted in position order at `admit_per_s` ([`line`]). Only
//! admitted customers may reserve a drop's SKUs ([`DropBook::gate`]).
//!
//! Every drop, entry and opening is a log record ([`record`]), appended
//! under the drop's lock, in the same log as the engine's changes; an
//! answer waits until its record is durable, and an answer that shows the
//! seed or a position waits for the opening's record. A checkpoint writes
//! each drop as the records that rebuild it. Admission times follow from
//! logged facts alone (see [`line`]), so a restart keeps every position
//! and every admission, and shows the seed no earlier than before.
//!
//! Bounds: `drops.drops_max` drops (they are kept for the life of the data
//! directory), `drops.entrants_max` entrants per drop, `limits.max_items`
//! SKUs per drop; a SKU is in at most one drop.
//!
//! Lock order: the book's map, then one drop's mutex; nothing else is
//! locked under them but the log's leaf-level append.

pub mod config;
mod gate;
pub mod line;
pub mod order;
mod persist;
pub mod record;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::clock::Clock;
use crate::wal::{self, Wal};
use line::{EntryView, Line};
use record::DropRecord;

/// What a drop is: its SKUs and its times (the body of `PUT /v1/drops/{drop}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub skus: Vec<String>,
    pub prequeue_opens_at_ms: u64,
    pub opens_at_ms: u64,
    pub closes_at_ms: Option<u64>,
    /// Admissions a second; `None`: everyone at once.
    pub admit_per_s: Option<u64>,
}

impl Default for Options {
    /// The config's defaults (`[drops]`, and `limits.max_items` SKUs).
    fn default() -> Self {
        let section = config::Drops::default();
        Options {
            drops_max: section.drops_max,
            entrants_max: section.entrants_max,
            skus_max: crate::engine::Options::default().max_items,
        }
    }
}

/// Admission records come at most this often per drop (each says how many
/// the schedule has admitted by then).
pub const ADMISSIONS_LOGGED_EVERY_MS: u64 = 200;

/// An opening this close to `opens_at_ms` counts as on time.
const ON_TIME_MS: u64 = 1_000;

/// Largest `admit_per_s`.
pub const ADMIT_PER_S_MAX: u64 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Scheduled,
    Prequeue,
    Open,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Prequeue => "prequeue",
            State::Open => "open",
            State::Closed => "closed",
        }
    }
}

/// Bounds (`[drops]`, and `limits.max_items` for SKUs per drop).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub drops_max: usize,
    pub entrants_max: usize,
    pub skus_max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{detail}")]
    Invalid { field: &'static str, detail: String },
    #[error("no drop {0}")]
    NotFound(String),
    #[error("{customer} has not joined drop {drop}")]
    NoEntry { drop: String, customer: String },
    #[error(
        "drop {drop}: its pre-queue opened at {at_ms}; a drop can be changed only while scheduled"
    )]
    Started { drop: String, at_ms: u64 },
    #[error("drop {drop} is {}: entries are taken from prequeue_opens_at_ms until it closes", state.as_str())]
    NotOpen { drop: String, state: State },
    #[error("drop {drop} has its {limit} entrants (drops.entrants_max)")]
    Full { drop: String, limit: usize },
    #[error("there are {limit} drops already (drops.drops_max)")]
    TooMany { limit: usize },
    #[error("{detail}")]
    NotAdmitted {
        drop: String,
        position: Option<u64>,
        retry_after_s: Option<u64>,
        detail: String,
    },
    #[error("no random seed could be drawn: {0}")]
    Seed(String),
    #[error(transparent)]
    Log(#[from] wal::Error),
    /// The redis store could not reach Redis (or had a bad reply).
    #[error("{0}")]
    Store(String),
}

/// Drops listed on `/v1/stats`.
pub const STATS_SHOWN: usize = 50;

/// A drop as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DropView {
    pub drop: String,
    pub skus: Vec<String>,
    pub state: &'static str,
    pub prequeue_opens_at_ms: u64,
    pub opens_at_ms: u64,
    pub closes_at_ms: Option<u64>,
    pub admit_per_s: Option<u64>,
    pub entrants: usize,
    pub admitted: usize,
    pub seed_sha256: String,
    pub seed: Option<String>,
}

/// An answer and the LSN it must wait for before it is sent (0: none).
pub struct Logged<T> {
    pub value: T,
    pub lsn: u64,
}

type Shared = Arc<Mutex<Line>>;

#[derive(Default)]
struct Book {
    drops: HashMap<Arc<str>, Shared>,
    by_sku: HashMap<String, Shared>,
}

pub struct DropBook {
    options: Options,
    clock: Arc<dyn Clock>,
    book: RwLock<Book>,
    /// Whether any drop exists: a reservation naming no drop's SKU pays
    /// one load.
    any: AtomicBool,
    wal: OnceLock<Arc<Wal>>,
    /// The event feed (`drop.opened`), once attached.
    events: OnceLock<Arc<crate::events::Hub>>,
    /// Wakes the opener when a drop is created or changed.
    pub changed: tokio::sync::Notify,
    /// Whether a read (a view, an entry, the gate) that finds a drop due
    /// opens it. The redis store's books open only from their shared log
    /// (see [`DropBook::replicated`]).
    opens_on_read: bool,
}

/// What one record did, applied as a command (the redis store's log).
#[derive(Debug)]
pub enum Applied {
    Put(bool, DropView),
    Join(bool, EntryView),
    Opened,
    Admitted,
}

impl DropBook {
    pub fn new(options: Options, clock: Arc<dyn Clock>) -> DropBook {
        DropBook {
            options,
            clock,
            book: RwLock::new(Book::default()),
            any: AtomicBool::new(false),
            wal: OnceLock::new(),
            events: OnceLock::new(),
            changed: tokio::sync::Notify::new(),
            opens_on_read: true,
        }
    }

    /// A book kept in step with other nodes' through a shared log of
    /// commands (the redis store): every change is a record applied in
    /// the log's order at the time the log gave it
    /// ([`DropBook::apply_command`]), so every node's book is the same;
    /// reads never open a drop (an opening is a record too).
    pub fn replicated(options: Options, clock: Arc<dyn Clock>) -> DropBook {
        DropBook {
            opens_on_read: false,
            ..DropBook::new(options, clock)
        }
    }

    /// From now on every change is logged (before that: replay).
    pub fn attach_wal(&self, wal: Arc<Wal>) {
        let _ = self.wal.set(wal);
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// From now on each opening is told to `hub` (`drop.opened`).
    pub fn attach_events(&self, hub: Arc<crate::events::Hub>) {
        let _ = self.events.set(hub);
    }

    /// Waits until `lsn` is durable (0: at once).
    pub async fn durable(&self, lsn: u64) -> Result<(), wal::Error> {
        match (lsn, self.wal.get()) {
            (0, _) | (_, None) => Ok(()),
            (lsn, Some(wal)) => wal.wait_durable_async(lsn).await,
        }
    }

    /// A drop's name is an identifier.
    pub fn check_name(&self, name: &str) -> Result<(), Error> {
        if crate::engine::is_valid_ident(name) {
            return Ok(());
        }
        Err(Error::Invalid {
            field: "drop",
            detail: "a drop's name must be 1 to 128 bytes of [A-Za-z0-9._:-]".to_owned(),
        })
    }

    pub fn check_spec(&self, spec: &Spec) -> Result<(), Error> {
        let invalid = |field, detail: String| Err(Error::Invalid { field, detail });
        let n = spec.skus.len();
        if n == 0 || n > self.options.skus_max {
            return invalid(
                "skus",
                format!(
                    "a drop gates 1 to {} SKUs (limits.max_items), got {n}",
                    self.options.skus_max
                ),
            );
        }
        for (i, sku) in spec.skus.iter().enumerate() {
            if !crate::engine::is_valid_ident(sku) {
                return invalid(
                    "skus",
                    format!("skus[{i}] must be 1 to 128 bytes of [A-Za-z0-9._:-]"),
                );
            }
            if spec.skus[..i].contains(sku) {
                return invalid("skus", format!("sku {sku} is named twice"));
            }
        }
        let max = crate::engine::STOCK_MAX;
        for (field, at) in [
            ("prequeue_opens_at_ms", Some(spec.prequeue_opens_at_ms)),
            ("opens_at_ms", Some(spec.opens_at_ms)),
            ("closes_at_ms", spec.closes_at_ms),
        ] {
            if at.is_some_and(|at| at > max) {
                return invalid(field, format!("{field} must be at most {max}"));
            }
        }
        if spec.prequeue_opens_at_ms > spec.opens_at_ms {
            return invalid(
                "prequeue_opens_at_ms",
                "prequeue_opens_at_ms must not be after opens_at_ms".to_owned(),
            );
        }
        if spec.closes_at_ms.is_some_and(|c| c <= spec.opens_at_ms) {
            return invalid(
                "closes_at_ms",
                "closes_at_ms must be after opens_at_ms".to_owned(),
            );
        }
        if let Some(rate) = spec.admit_per_s {
            if !(1..=ADMIT_PER_S_MAX).contains(&rate) {
                return invalid(
                    "admit_per_s",
                    format!("admit_per_s must be 1 to {ADMIT_PER_S_MAX}, got {rate}"),
                );
            }
        }
        Ok(())
    }

    /// `PUT /v1/drops/{drop}`: creates a drop (`true`) or changes one that
    /// is still scheduled.
    pub fn put(&self, name: &str, spec: Spec) -> Result<Logged<(bool, DropView)>, Error> {
        let seed = draw_seed()?;
        self.put_at(name, spec, seed, self.now_ms())
    }

    /// [`DropBook::put`] at `now`, with `seed` for a new drop (an existing
    /// drop keeps its own).
    fn put_at(
        &self,
        name: &str,
        spec: Spec,
        new_seed: [u8; order::SEED_BYTES],
        now: u64,
    ) -> Result<Logged<(bool, DropView)>, Error> {
        self.check_name(name)?;
        self.check_spec(&spec)?;
        let mut book = self.book.write();
        for sku in &spec.skus {
            if let Some(other) = book.by_sku.get(sku.as_str()) {
                let other = other.lock();
                if &*other.name != name {
                    return Err(Error::Invalid {
                        field: "skus",
                        detail: format!("sku {sku} is already in drop {}", other.name),
                    });
                }
            }
        }
        let existing = book.drops.get(name).cloned();
        let (created, shared, lsn) = match existing {
            Some(shared) => {
                let mut line = shared.lock();
                if line.state(now) != State::Scheduled {
                    return Err(Error::Started {
                        drop: name.to_owned(),
                        at_ms: line.spec.prequeue_opens_at_ms,
                    });
                }
                let lsn = self.append(&DropRecord::Put {
                    drop: name,
                    spec: Cow::Borrowed(&spec),
                    seed: line.seed,
                    at_ms: now,
                })?;
                for sku in &line.spec.skus {
                    book.by_sku.remove(sku);
                }
                line.replace_spec(spec);
                drop(line);
                (false, shared, lsn)
            }
            None => {
                if book.drops.len() >= self.options.drops_max {
                    return Err(Error::TooMany {
                        limit: self.options.drops_max,
                    });
                }
                let seed = new_seed;
                let lsn = self.append(&DropRecord::Put {
                    drop: name,
                    spec: Cow::Borrowed(&spec),
                    seed,
                    at_ms: now,
                })?;
                let shared = Arc::new(Mutex::new(Line::new(name, spec, seed, now)));
                book.drops.insert(name.into(), shared.clone());
                (true, shared, lsn)
            }
        };
        let line = shared.lock();
        for sku in &line.spec.skus {
            book.by_sku.insert(sku.clone(), shared.clone());
        }
        self.any.store(true, Ordering::Release);
        let view = view_of(&line, now);
        drop(line);
        drop(book);
        self.changed.notify_one();
        Ok(Logged {
            value: (created, view),
            lsn,
        })
    }

    fn line(&self, name: &str) -> Result<Shared, Error> {
        self.book
            .read()
            .drops
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Opens `line` if its time has come (logging the opening).
    fn open_if_due(&self, line: &mut Line, now: u64) -> Result<(), Error> {
        if line.is_opened() || now < line.spec.opens_at_ms {
            return Ok(());
        }
        // On time (the opener's timer wakes a millisecond or so late, and
        // nobody can have been refused in between: a request that comes
        // first opens the drop itself) the schedule starts at opens_at_ms;
        // after a server that was down at the opening, when it is back.
        let late_ms = now - line.spec.opens_at_ms;
        let at_ms = if late_ms <= ON_TIME_MS {
            line.spec.opens_at_ms
        } else {
            now
        };
        let lsn = self.append(&DropRecord::Opened {
            drop: &line.name,
            at_ms,
        })?;
        // drop.opened (and its webhook outbox record, whose LSN answers
        // showing the seed wait for too).
        let told = match self.events.get() {
            Some(hub) => {
                let seed = order::hex(&line.seed);
                hub.drop_opened(lsn, &line.name, &seed, line.entrants(), at_ms)
            }
            None => 0,
        };
        let started = std::time::Instant::now();
        line.open(at_ms, lsn.max(told));
        if self.wal.get().is_some() || !self.opens_on_read {
            crate::log_line!(
                "stampede: drop {} opened: {} entrants ordered in {:.1} ms (seed sha256 {})",
                line.name,
                line.entrants(),
                started.elapsed().as_secs_f64() * 1000.0,
                order::hex(&order::commitment(&line.seed)),
            );
        }
        Ok(())
    }

    /// A read's opening: on a book of its own, a read that finds the drop
    /// due opens it; a replicated book opens only from its log.
    fn open_on_read(&self, line: &mut Line, now: u64) -> Result<(), Error> {
        match self.opens_on_read {
            true => self.open_if_due(line, now),
            false => Ok(()),
        }
    }

    /// Whether drop `name` has opened.
    pub fn is_opened(&self, name: &str) -> bool {
        self.line(name)
            .is_ok_and(|shared| shared.lock().is_opened())
    }

    /// Whether drop `name` is due to open at `now` and not opened yet.
    pub fn is_due_unopened(&self, name: &str, now: u64) -> bool {
        self.line(name).is_ok_and(|shared| {
            let line = shared.lock();
            !line.is_opened() && now >= line.spec.opens_at_ms
        })
    }

    /// `GET /v1/drops/{drop}`.
    pub fn view(&self, name: &str) -> Result<Logged<DropView>, Error> {
        let shared = self.line(name)?;
        let mut line = shared.lock();
        let now = self.now_ms();
        self.open_on_read(&mut line, now)?;
        Ok(Logged {
            value: view_of(&line, now),
            lsn: line.opened_lsn(),
        })
    }

    /// `POST /v1/drops/{drop}/entries`: joins `customer` (`true`), or
    /// finds it already in.
    pub fn join(&self, name: &str, customer: &str) -> Result<Logged<(bool, EntryView)>, Error> {
        self.join_at(name, customer, self.now_ms())
    }

    fn join_at(
        &self,
        name: &str,
        customer: &str,
        now: u64,
    ) -> Result<Logged<(bool, EntryView)>, Error> {
        let shared = self.line(name)?;
        let mut line = shared.lock();
        self.open_if_due(&mut line, now)?;
        if let Some(entry) = line.entry(customer, now) {
            return Ok(Logged {
                value: (false, entry),
                lsn: line.opened_lsn(),
            });
        }
        self.may_join(&line, now)?;
        let lsn = self.append(&DropRecord::Join {
            drop: name,
            customer_id: customer,
            at_ms: now,
        })?;
        let entry = line.join(customer, now);
        if line.is_opened() {
            // A later arrival: its admission is for the opener to record.
            self.changed.notify_one();
        }
        Ok(Logged {
            value: (true, entry),
            lsn: lsn.max(line.opened_lsn()),
        })
    }

    /// `GET /v1/drops/{drop}/entries/{customer_id}`.
    pub fn entry(&self, name: &str, customer: &str) -> Result<Logged<EntryView>, Error> {
        let shared = self.line(name)?;
        let mut line = shared.lock();
        let now = self.now_ms();
        self.open_on_read(&mut line, now)?;
        let entry = line.entry(customer, now).ok_or_else(|| Error::NoEntry {
            drop: name.to_owned(),
            customer: customer.to_owned(),
        })?;
        Ok(Logged {
            value: entry,
            lsn: line.opened_lsn(),
        })
    }

    /// Whether no drop exists (one load: a reservation then skips the
    /// gate and everything before it).
    pub fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// Drops on `/v1/stats` and the status page: how many, their memory,
    /// and the first [`STATS_SHOWN`] by name (no seeds: a status page is no
    /// way to learn one early).
    pub fn stats(&self) -> serde_json::Value {
        let views = self.views();
        serde_json::json!({
            "total": views.len(),
            "heap_bytes": self.heap_bytes(),
            "shown": views.iter().take(STATS_SHOWN).map(|v| serde_json::json!({
                "drop": v.drop,
                "state": v.state,
                "opens_at_ms": v.opens_at_ms,
                "closes_at_ms": v.closes_at_ms,
                "admit_per_s": v.admit_per_s,
                "entrants": v.entrants,
                "admitted": v.admitted,
            })).collect::<Vec<_>>(),
        })
    }

    /// Opens every drop whose time has come and records the admissions
    /// the schedule has made since the last record; returns when to come
    /// back (the next opening, or the next admission to record, at most
    /// every [`ADMISSIONS_LOGGED_EVERY_MS`]).
    pub fn open_due(&self) -> Result<Option<u64>, Error> {
        let lines: Vec<Shared> = self.book.read().drops.values().cloned().collect();
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        for shared in lines {
            let mut line = shared.lock();
            let now = self.now_ms();
            self.open_if_due(&mut line, now)?;
            if !line.is_opened() {
                at(line.spec.opens_at_ms);
                continue;
            }
            self.record_admissions(&mut line, now)?;
            if let Some(t) = line.next_unrecorded_admission() {
                let (_, logged_at) = line.logged_admissions();
                at(t.max(logged_at + ADMISSIONS_LOGGED_EVERY_MS));
            }
        }
        Ok(next)
    }

    /// Records the admissions the schedule has made by `now` since the
    /// last record, if that was [`ADMISSIONS_LOGGED_EVERY_MS`] ago.
    fn record_admissions(&self, line: &mut Line, now: u64) -> Result<(), Error> {
        if !self.admissions_due(line, now) {
            return Ok(());
        }
        let admitted = line.admitted(now) as u64;
        self.append(&DropRecord::Admitted {
            drop: &line.name,
            through: admitted,
            at_ms: now,
        })?;
        line.record_admitted(admitted, now);
        Ok(())
    }

    fn admissions_due(&self, line: &Line, now: u64) -> bool {
        let (logged, logged_at) = line.logged_admissions();
        line.is_opened()
            && line.admitted(now) as u64 > logged
            && now >= logged_at + ADMISSIONS_LOGGED_EVERY_MS
    }

    /// Drop `name`'s opening, once opened: its seed (hex), how many were
    /// in the pre-queue, and when (what `drop.opened` tells).
    pub fn opening(&self, name: &str) -> Option<(String, usize, u64)> {
        let shared = self.line(name).ok()?;
        let line = shared.lock();
        let at_ms = line.opened_at_ms()?;
        Some((order::hex(&line.seed), line.prequeue_len(), at_ms))
    }

    /// The SKUs drop `name` gates now (empty if there is no such drop).
    pub fn skus_of(&self, name: &str) -> Vec<String> {
        self.line(name)
            .map(|shared| shared.lock().spec.skus.clone())
            .unwrap_or_default()
    }

    /// Every drop's view, by name (for `/v1/stats` and the status page).
    pub fn views(&self) -> Vec<DropView> {
        let lines: Vec<Shared> = self.book.read().drops.values().cloned().collect();
        let now = self.now_ms();
        let mut views: Vec<DropView> = lines
            .iter()
            .map(|shared| {
                let line = shared.lock();
                let mut view = view_of(&line, now);
                // The opening may not be durable yet: no seed here.
                view.seed = None;
                view
            })
            .collect();
        views.sort_by(|a, b| a.drop.cmp(&b.drop));
        views
    }

    /// Heap bytes held by the lines (approximate).
    pub fn heap_bytes(&self) -> usize {
        let lines: Vec<Shared> = self.book.read().drops.values().cloned().collect();
        lines.iter().map(|l| l.lock().heap_bytes()).sum()
    }
}

/// A new drop's seed: 32 bytes from the operating system's generator.
pub fn draw_seed() -> Result<[u8; order::SEED_BYTES], Error> {
    let mut seed = [0u8; order::SEED_BYTES];
    getrandom::getrandom(&mut seed).map_err(|e| Error::Seed(e.to_string()))?;
    Ok(seed)
}

fn seconds_until(at_ms: u64, now_ms: u64) -> u64 {
    at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

fn view_of(line: &Line, now: u64) -> DropView {
    let state = line.state(now);
    let revealed = line.is_opened() && matches!(state, State::Open | State::Closed);
    DropView {
        drop: line.name.to_string(),
        skus: line.spec.skus.clone(),
        state: state.as_str(),
        prequeue_opens_at_ms: line.spec.prequeue_opens_at_ms,
        opens_at_ms: line.spec.opens_at_ms,
        closes_at_ms: line.spec.closes_at_ms,
        admit_per_s: line.spec.admit_per_s,
        entrants: line.entrants(),
        admitted: line.admitted(now),
        seed_sha256: order::hex(&order::commitment(&line.seed)),
        seed: revealed.then(|| order::hex(&line.seed)),
    }
}

#[cfg(test)]
mod tests;
