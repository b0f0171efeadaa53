//! The gate before a reservation (only admitted entrants reserve a
//! drop's SKUs), and the rules for joining a line.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::line::{EntryView, Line};
use super::{seconds_until, DropBook, Error, Shared, State};

impl DropBook {
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
    pub(super) fn may_join(&self, line: &Line, now: u64) -> Result<(), Error> {
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
}
