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
pub mod line;
pub mod order;
pub mod record;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use crate::clock::Clock;
use crate::wal::{self, Journal, Wal};
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

    fn append(&self, record: &DropRecord<'_>) -> Result<u64, wal::Error> {
        match self.wal.get() {
            Some(wal) => wal.append(record),
            None => Ok(0),
        }
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

    /// Whether any of `skus` is in a drop (the sold-out fast path leaves
    /// those to the gate).
    pub fn gates_any<'s>(&self, mut skus: impl Iterator<Item = &'s str>) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let book = self.book.read();
        skus.any(|sku| book.by_sku.contains_key(sku))
    }

    /// A reservation by `customer` naming `skus`: refused (409
    /// `not_admitted`) if any of them is in a drop that is not open, or
    /// that has not admitted `customer`.
    /// On success, the drops passed (the redis store's scripts check
    /// them against each SKU's drop in Redis).
    pub fn gate<'s>(
        &self,
        customer: &str,
        skus: impl Iterator<Item = &'s str>,
    ) -> Result<Vec<Arc<str>>, Error> {
        if !self.any.load(Ordering::Acquire) {
            return Ok(Vec::new());
        }
        let lines: Vec<Shared> = {
            let book = self.book.read();
            skus.filter_map(|sku| book.by_sku.get(sku).cloned())
                .collect()
        };
        let mut passed: Vec<Arc<str>> = Vec::new();
        for shared in lines {
            let mut line = shared.lock();
            let now = self.now_ms();
            self.open_on_read(&mut line, now)?;
            let entry = line.entry(customer, now);
            let position = entry.as_ref().and_then(|e| e.position);
            let state = line.state(now);
            let refused = |detail: String, retry_after_s| Error::NotAdmitted {
                drop: line.name.to_string(),
                position,
                retry_after_s,
                detail,
            };
            if state != State::Open {
                let retry = (state == State::Prequeue || state == State::Scheduled)
                    .then(|| seconds_until(line.spec.opens_at_ms, now));
                return Err(refused(
                    format!(
                        "drop {} is {}: only its admitted entrants may reserve its SKUs, while it is open",
                        line.name,
                        state.as_str()
                    ),
                    retry.filter(|_| entry.is_some()),
                ));
            }
            match entry {
                Some(e) if e.admitted => {
                    if !passed.contains(&line.name) {
                        passed.push(line.name.clone());
                    }
                }
                Some(e) => {
                    let retry = e.estimated_admit_at_ms.map(|at| seconds_until(at, now));
                    return Err(refused(
                        format!(
                            "{customer} is at position {} of drop {} and not admitted yet",
                            e.position.unwrap_or(0),
                            line.name
                        ),
                        retry,
                    ));
                }
                None => {
                    return Err(refused(
                        format!(
                            "{customer} has not joined drop {}: POST /v1/drops/{}/entries first",
                            line.name, line.name
                        ),
                        None,
                    ))
                }
            }
        }
        Ok(passed)
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

    /// The replicated book's opener: the drops due to open by `now` and
    /// not opened, and those with admissions to record (each to be sent
    /// to the shared log as an `opened` or `admitted` command).
    pub fn due_commands(&self, now: u64) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let lines: Vec<Shared> = self.book.read().drops.values().cloned().collect();
        let (mut open, mut admit) = (Vec::new(), Vec::new());
        for shared in lines {
            let line = shared.lock();
            if !line.is_opened() && now >= line.spec.opens_at_ms {
                open.push(line.name.clone());
            } else if self.admissions_due(&line, now) {
                admit.push(line.name.clone());
            }
        }
        (open, admit)
    }

    /// Applies one record of a replicated book's log as a command, at the
    /// time the log gave it (`at_ms`, never decreasing along the log):
    /// the same rules as a request to a book of its own, so every node
    /// that applies the log in order has the same drops and gives the same
    /// answers. A record refused (a join once the drop is full, say)
    /// changes nothing.
    pub fn apply_command(&self, record: DropRecord<'_>, at_ms: u64) -> Result<Applied, Error> {
        match record {
            DropRecord::Put {
                drop, spec, seed, ..
            } => {
                let put = self.put_at(drop, spec.into_owned(), seed, at_ms)?;
                Ok(Applied::Put(put.value.0, put.value.1))
            }
            DropRecord::Join {
                drop, customer_id, ..
            } => {
                let joined = self.join_at(drop, customer_id, at_ms)?;
                Ok(Applied::Join(joined.value.0, joined.value.1))
            }
            DropRecord::Opened { drop, .. } => {
                let shared = self.line(drop)?;
                self.open_if_due(&mut shared.lock(), at_ms)?;
                Ok(Applied::Opened)
            }
            DropRecord::Admitted { drop, .. } => {
                let shared = self.line(drop)?;
                self.record_admissions(&mut shared.lock(), at_ms)?;
                Ok(Applied::Admitted)
            }
        }
    }

    /// The drops that gate any of `skus`.
    pub fn drops_of<'s>(&self, skus: impl Iterator<Item = &'s str>) -> Vec<Arc<str>> {
        let book = self.book.read();
        let mut names: Vec<Arc<str>> = Vec::new();
        for sku in skus {
            if let Some(shared) = book.by_sku.get(sku) {
                let name = shared.lock().name.clone();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Whether a new entrant may join `line` at `now`: not while
    /// scheduled or closed, nor once it is full.
    fn may_join(&self, line: &Line, now: u64) -> Result<(), Error> {
        let state = line.state(now);
        if matches!(state, State::Scheduled | State::Closed) {
            return Err(Error::NotOpen {
                drop: line.name.to_string(),
                state,
            });
        }
        if line.entrants() >= self.options.entrants_max {
            return Err(Error::Full {
                drop: line.name.to_string(),
                limit: self.options.entrants_max,
            });
        }
        Ok(())
    }

    /// What a join of `customer` would find at `now` without changing
    /// anything: its entry if it is in (`Some`), a refusal (no such drop,
    /// not open, full), or `None`: it would join.
    pub fn check_join(
        &self,
        name: &str,
        customer: &str,
        now: u64,
    ) -> Result<Option<EntryView>, Error> {
        let shared = self.line(name)?;
        let line = shared.lock();
        if let Some(entry) = line.entry(customer, now) {
            return Ok(Some(entry));
        }
        self.may_join(&line, now)?;
        Ok(None)
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

    /// Replay: applies one logged drop record (decoded by
    /// [`crate::records`]); returns its time.
    pub fn replay(&self, record: DropRecord<'_>) -> Result<u64, String> {
        let mut book = self.book.write();
        let name = record.drop_name();
        let missing = || format!("a record of drop {name}, never created");
        match &record {
            DropRecord::Put {
                spec, seed, at_ms, ..
            } => {
                let shared = match book.drops.get(name).cloned() {
                    Some(shared) => {
                        let mut line = shared.lock();
                        for sku in &line.spec.skus {
                            book.by_sku.remove(sku);
                        }
                        line.replace_spec(spec.clone().into_owned());
                        drop(line);
                        shared
                    }
                    None => {
                        let line = Line::new(name, spec.clone().into_owned(), *seed, *at_ms);
                        let shared = Arc::new(Mutex::new(line));
                        book.drops.insert(name.into(), shared.clone());
                        shared
                    }
                };
                for sku in &spec.skus {
                    book.by_sku.insert(sku.clone(), shared.clone());
                }
                self.any.store(true, Ordering::Release);
            }
            DropRecord::Join {
                customer_id, at_ms, ..
            } => {
                let mut line = book.drops.get(name).ok_or_else(missing)?.lock();
                if !line.is_entrant(customer_id) {
                    line.join(customer_id, *at_ms);
                }
            }
            DropRecord::Opened { at_ms, .. } => {
                book.drops
                    .get(name)
                    .ok_or_else(missing)?
                    .lock()
                    .open(*at_ms, 0);
            }
            DropRecord::Admitted { through, at_ms, .. } => {
                let mut line = book.drops.get(name).ok_or_else(missing)?.lock();
                line.note_admitted(*through, *at_ms)?;
            }
        }
        Ok(record.at_ms())
    }

    /// Replaces the whole book with `image` (made by
    /// [`DropBook::with_locked`]): on the redis store, a node whose read
    /// position the compaction of the shared log passed takes the book
    /// the log's image holds. An image that does not decode leaves the
    /// book as it was.
    pub fn reset_to_image(&self, image: &[u8]) -> Result<(), String> {
        let fresh = DropBook {
            opens_on_read: self.opens_on_read,
            ..DropBook::new(self.options, self.clock.clone())
        };
        let mut bytes = image;
        while !bytes.is_empty() {
            let d = wal::record::decode(bytes).map_err(|e| format!("a drops image: {e}"))?;
            let record =
                DropRecord::decode(d.kind, d.payload).map_err(|e| format!("a drops image: {e}"))?;
            fresh.replay(record)?;
            bytes = &bytes[d.len..];
        }
        let whole = std::mem::take(&mut *fresh.book.write());
        let any = !whole.drops.is_empty();
        *self.book.write() = whole;
        self.any.store(any, Ordering::Release);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Runs `f` with every drop locked (no drop record can be appended
    /// meanwhile) and returns its result with the drops' image: each drop
    /// as the records that rebuild it, framed as the log frames them.
    pub fn with_locked<R>(&self, f: impl FnOnce() -> R) -> (R, Vec<u8>) {
        let book = self.book.read();
        let mut names: Vec<&Arc<str>> = book.drops.keys().collect();
        names.sort();
        let lines: Vec<_> = names.iter().map(|n| book.drops[*n].lock()).collect();
        let r = f();
        let mut out = Vec::new();
        let mut frame = |record: &DropRecord<'_>| {
            wal::record::frame(record, 0, &mut out)
                .expect("bug: a drop record that was logged encodes again");
        };
        for line in &lines {
            frame(&DropRecord::Put {
                drop: &line.name,
                spec: Cow::Borrowed(&line.spec),
                seed: line.seed,
                at_ms: line.created_at_ms,
            });
            let pre = line.prequeue_len();
            for (i, (customer_id, at_ms)) in line.joins().enumerate() {
                if i == pre {
                    if let Some(at_ms) = line.opened_at_ms() {
                        frame(&DropRecord::Opened {
                            drop: &line.name,
                            at_ms,
                        });
                    }
                }
                frame(&DropRecord::Join {
                    drop: &line.name,
                    customer_id,
                    at_ms,
                });
            }
            if let (true, Some(at_ms)) = (pre == line.entrants(), line.opened_at_ms()) {
                frame(&DropRecord::Opened {
                    drop: &line.name,
                    at_ms,
                });
            }
            if let (through @ 1.., at_ms) = line.logged_admissions() {
                frame(&DropRecord::Admitted {
                    drop: &line.name,
                    through,
                    at_ms,
                });
            }
        }
        (r, out)
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
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn book(clock: &Arc<ManualClock>) -> DropBook {
        DropBook::new(Options::default(), clock.clone())
    }

    fn spec(opens: u64, closes: Option<u64>, rate: Option<u64>) -> Spec {
        Spec {
            skus: vec!["s".into()],
            prequeue_opens_at_ms: 0,
            opens_at_ms: opens,
            closes_at_ms: closes,
            admit_per_s: rate,
        }
    }

    fn position_and_eta(book: &DropBook, c: &str) -> (Option<u64>, Option<u64>) {
        let e = book.entry("d", c).unwrap().value;
        (e.position, e.estimated_admit_at_ms)
    }

    #[test]
    fn late_arrivals_follow_the_pace_and_a_quiet_spell_banks_no_burst() {
        let clock = Arc::new(ManualClock::new(10));
        let book = book(&clock);
        book.put("d", spec(1000, None, Some(10))).unwrap();
        for c in ["a", "b", "c"] {
            book.join("d", c).unwrap();
        }
        clock.set(1050);
        let (new, e) = book.join("d", "late").unwrap().value;
        assert!(new);
        // 100 ms apart from the opening; the late one fourth.
        assert_eq!((e.position, e.estimated_admit_at_ms), (Some(4), Some(1300)));
        let mut etas: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|c| position_and_eta(&book, c).1.unwrap())
            .collect();
        etas.sort();
        assert_eq!(etas, [1000, 1100, 1200]);
        assert_eq!(book.view("d").unwrap().value.admitted, 1);
        // Long after the pace passed: admitted on joining, then paced again.
        clock.set(5000);
        assert_eq!(
            book.join("d", "p5").unwrap().value.1.admitted_at_ms,
            Some(5000)
        );
        clock.set(5010);
        assert_eq!(position_and_eta(&book, "p5"), (Some(5), Some(5000)));
        book.join("d", "p6").unwrap();
        assert_eq!(position_and_eta(&book, "p6"), (Some(6), Some(5100)));
        assert_eq!(book.view("d").unwrap().value.admitted, 5);
    }

    #[test]
    fn admissions_are_recorded_as_the_schedule_makes_them_and_replay_checks_them() {
        let clock = Arc::new(ManualClock::new(10));
        let book = book(&clock);
        book.put("d", spec(1000, None, Some(10))).unwrap();
        for c in ["a", "b", "c"] {
            book.join("d", c).unwrap();
        }
        let logged = |book: &DropBook| book.line("d").unwrap().lock().logged_admissions();
        // Before the opening: come back at it.
        assert_eq!(book.open_due().unwrap(), Some(1000));
        clock.set(1000);
        // Opened; position 1 admitted at 1000: recorded, then come back
        // for position 2 (1100) no sooner than 200 ms after the record.
        assert_eq!(book.open_due().unwrap(), Some(1200));
        assert_eq!(logged(&book), (1, 1000));
        clock.set(1250);
        assert_eq!(book.open_due().unwrap(), None, "all three recorded");
        assert_eq!(logged(&book), (3, 1250));
        // The image carries the record; a log claiming more than the
        // schedule allows is refused.
        let ((), image) = book.with_locked(|| ());
        let again = DropBook::new(Options::default(), clock.clone());
        let mut bytes = &image[..];
        while !bytes.is_empty() {
            let d = wal::record::decode(bytes).unwrap();
            again
                .replay(DropRecord::decode(d.kind, d.payload).unwrap())
                .unwrap();
            bytes = &bytes[d.len..];
        }
        assert_eq!(logged(&again), (3, 1250));
        let mut bogus = Vec::new();
        wal::Entry::encode(
            &DropRecord::Admitted {
                drop: "d",
                through: 3,
                at_ms: 1150,
            },
            &mut bogus,
        )
        .unwrap();
        let err = again
            .replay(DropRecord::decode(record::ADMITTED_KIND, &bogus).unwrap())
            .unwrap_err();
        assert!(err.contains("the schedule 2"), "{err}");
    }

    #[test]
    fn nobody_is_admitted_from_the_closing_on() {
        let clock = Arc::new(ManualClock::new(10));
        let book = book(&clock);
        book.put("d", spec(1000, Some(1250), Some(10))).unwrap();
        for c in ["a", "b", "c", "e"] {
            book.join("d", c).unwrap();
        }
        clock.set(2000);
        let view = book.view("d").unwrap().value;
        assert_eq!((view.state, view.admitted), ("closed", 3));
        let never: Vec<&str> = ["a", "b", "c", "e"]
            .into_iter()
            .filter(|c| position_and_eta(&book, c).1.is_none())
            .collect();
        assert_eq!(never.len(), 1, "position 4 falls after the closing");
        assert!(matches!(
            book.join("d", "z"),
            Err(Error::NotOpen {
                state: State::Closed,
                ..
            })
        ));
        assert!(matches!(
            book.gate("a", ["s"].into_iter()),
            Err(Error::NotAdmitted { .. })
        ));
    }

    #[test]
    fn a_checkpoint_image_rebuilds_the_same_lines() {
        let clock = Arc::new(ManualClock::new(10));
        let live = book(&clock);
        live.put("d", spec(1000, None, Some(3))).unwrap();
        live.put(
            "e",
            Spec {
                skus: vec!["t".into()],
                ..spec(50_000, None, None)
            },
        )
        .unwrap();
        let customers: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        for c in &customers[..30] {
            live.join("d", c).unwrap();
            live.join("e", c).unwrap();
        }
        clock.set(2000);
        for c in &customers[30..] {
            live.join("d", c).unwrap();
        }
        let ((), image) = live.with_locked(|| ());
        let restored = book(&clock);
        let mut bytes = &image[..];
        while !bytes.is_empty() {
            let d = wal::record::decode(bytes).unwrap();
            restored
                .replay(DropRecord::decode(d.kind, d.payload).unwrap())
                .unwrap();
            bytes = &bytes[d.len..];
        }
        clock.set(4000);
        for name in ["d", "e"] {
            let (a, b) = (
                live.view(name).unwrap().value,
                restored.view(name).unwrap().value,
            );
            assert_eq!(
                (a.entrants, a.admitted, &a.seed, &a.seed_sha256, a.state),
                (b.entrants, b.admitted, &b.seed, &b.seed_sha256, b.state)
            );
            for c in &customers {
                let a = live.entry(name, c).ok().map(|e| e.value);
                let b = restored.entry(name, c).ok().map(|e| e.value);
                assert_eq!(a, b, "{name} {c}");
            }
        }
        assert!(restored.view("e").unwrap().value.seed.is_none());
    }
}
