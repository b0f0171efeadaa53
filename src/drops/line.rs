//! One drop's line: its entrants in the order they joined, and from the
//! opening their positions and admission times.
//!
//! Admission is a schedule, not a timer: at the opening, position `p` of
//! the pre-queue is admitted at `opened_at + (p - 1) × 1000 / admit_per_s`
//! ms; a later arrival gets the next position and the next slot of that
//! pace, or its join time if the pace has already passed it (the pace then
//! counts on from there, so a quiet spell never banks a burst). Every
//! input of the schedule (the positions, the join times, the opening, the
//! rate) is in the log, so a restart recomputes exactly the admissions
//! already made, and a reservation at `admit_at` is let in at that very
//! millisecond, with no sweeper tick between.

use std::collections::HashMap;
use std::sync::Arc;

use super::order::{self, SEED_BYTES};
use super::{Spec, State};

/// A customer in the line.
struct Entrant {
    customer: Arc<str>,
    joined_at_ms: u64,
    /// 1-based; 0 while the pre-queue is unordered.
    position: u32,
}

/// The order and the admission schedule, from the opening on.
struct Opened {
    at_ms: u64,
    /// The LSN of the opening's record: the seed is shown only once it is
    /// durable.
    lsn: u64,
    /// How many were in the pre-queue (positions 1..=prequeue).
    prequeue: usize,
    /// Index into `entrants` by position - 1.
    by_position: Vec<u32>,
    /// Admission time by position - 1, never decreasing.
    admit_at: Vec<u64>,
    /// The pace: position `origin_position` is admitted at `origin_ms`,
    /// each next one `1000 / admit_per_s` ms later.
    origin_ms: u64,
    origin_position: u64,
}

pub struct Line {
    pub name: Arc<str>,
    pub spec: Spec,
    pub seed: [u8; SEED_BYTES],
    pub created_at_ms: u64,
    entrants: Vec<Entrant>,
    by_customer: HashMap<Arc<str>, u32>,
    opened: Option<Opened>,
    /// The last admission record: positions 1..=through by at_ms.
    logged_through: u64,
    logged_at_ms: u64,
}

/// An entrant as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryView {
    pub position: Option<u64>,
    pub admitted: bool,
    pub admitted_at_ms: Option<u64>,
    pub estimated_admit_at_ms: Option<u64>,
}

impl Line {
    pub fn new(name: &str, spec: Spec, seed: [u8; SEED_BYTES], at_ms: u64) -> Line {
        Line {
            name: name.into(),
            spec,
            seed,
            created_at_ms: at_ms,
            entrants: Vec::new(),
            by_customer: HashMap::new(),
            opened: None,
            logged_through: 0,
            logged_at_ms: 0,
        }
    }

    pub fn state(&self, now_ms: u64) -> State {
        let s = &self.spec;
        if s.closes_at_ms.is_some_and(|c| now_ms >= c) {
            State::Closed
        } else if now_ms >= s.opens_at_ms {
            State::Open
        } else if now_ms >= s.prequeue_opens_at_ms {
            State::Prequeue
        } else {
            State::Scheduled
        }
    }

    pub fn entrants(&self) -> usize {
        self.entrants.len()
    }

    pub fn is_opened(&self) -> bool {
        self.opened.is_some()
    }

    /// The LSN of the opening's record (0 before it): what an answer that
    /// shows the seed or a position waits on.
    pub fn opened_lsn(&self) -> u64 {
        self.opened.as_ref().map_or(0, |o| o.lsn)
    }

    pub fn opened_at_ms(&self) -> Option<u64> {
        self.opened.as_ref().map(|o| o.at_ms)
    }

    pub fn is_entrant(&self, customer: &str) -> bool {
        self.by_customer.contains_key(customer)
    }

    /// A new spec from a `PUT` (the caller checks the drop is still
    /// scheduled: nobody has joined yet).
    pub fn replace_spec(&mut self, spec: Spec) {
        self.spec = spec;
    }

    /// Orders the pre-queue and starts the schedule, at `at_ms`.
    pub fn open(&mut self, at_ms: u64, lsn: u64) {
        if self.opened.is_some() {
            return;
        }
        let names: Vec<&str> = self.entrants.iter().map(|e| &*e.customer).collect();
        let ordered = order::order(&self.seed, &names);
        let mut by_position = Vec::with_capacity(ordered.len());
        for (customer, _) in &ordered {
            by_position.push(self.by_customer[*customer]);
        }
        let mut opened = Opened {
            at_ms,
            lsn,
            prequeue: ordered.len(),
            admit_at: Vec::with_capacity(by_position.len()),
            by_position,
            origin_ms: at_ms,
            origin_position: 1,
        };
        for (i, &index) in opened.by_position.iter().enumerate() {
            self.entrants[index as usize].position = i as u32 + 1;
        }
        for p in 1..=opened.by_position.len() as u64 {
            let at = slot(&opened, p, self.spec.admit_per_s);
            opened.admit_at.push(at);
        }
        self.opened = Some(opened);
    }

    /// Adds `customer` (not yet in the line) at `at_ms`; from the opening
    /// on it takes the next position. Returns its entry at `at_ms`.
    pub fn join(&mut self, customer: &str, at_ms: u64) -> EntryView {
        let index = self.entrants.len() as u32;
        let customer: Arc<str> = customer.into();
        self.by_customer.insert(customer.clone(), index);
        let mut position = 0;
        if let Some(opened) = self.opened.as_mut() {
            let p = opened.by_position.len() as u64 + 1;
            let mut at = slot(opened, p, self.spec.admit_per_s);
            if at < at_ms {
                // The pace had passed this place: it counts on from now.
                opened.origin_ms = at_ms;
                opened.origin_position = p;
                at = at_ms;
            }
            opened.by_position.push(index);
            opened.admit_at.push(at);
            position = p as u32;
        }
        self.entrants.push(Entrant {
            customer,
            joined_at_ms: at_ms,
            position,
        });
        self.entry_of(index, at_ms)
    }

    /// The admission time of `position` if it falls before the closing.
    fn admit_at(&self, position: u32) -> Option<u64> {
        let at = self.opened.as_ref()?.admit_at[position as usize - 1];
        match self.spec.closes_at_ms {
            Some(c) if at >= c => None,
            _ => Some(at),
        }
    }

    /// How many entrants are admitted by `now_ms`.
    pub fn admitted(&self, now_ms: u64) -> usize {
        let Some(opened) = &self.opened else { return 0 };
        let until = match self.spec.closes_at_ms {
            Some(c) => now_ms.min(c.saturating_sub(1)),
            None => now_ms,
        };
        opened.admit_at.partition_point(|&at| at <= until)
    }

    pub fn entry(&self, customer: &str, now_ms: u64) -> Option<EntryView> {
        let &index = self.by_customer.get(customer)?;
        Some(self.entry_of(index, now_ms))
    }

    fn entry_of(&self, index: u32, now_ms: u64) -> EntryView {
        let position = self.entrants[index as usize].position;
        if position == 0 {
            return EntryView {
                position: None,
                admitted: false,
                admitted_at_ms: None,
                estimated_admit_at_ms: None,
            };
        }
        let at = self.admit_at(position);
        let admitted = at.is_some_and(|at| at <= now_ms);
        EntryView {
            position: Some(u64::from(position)),
            admitted,
            admitted_at_ms: at.filter(|_| admitted),
            estimated_admit_at_ms: at,
        }
    }

    /// Entrants in join order, with their join times: what a checkpoint
    /// writes (the first `prequeue` of them joined before the opening).
    pub fn joins(&self) -> impl Iterator<Item = (&str, u64)> {
        self.entrants.iter().map(|e| (&*e.customer, e.joined_at_ms))
    }

    /// How many joined before the opening (all of them while unopened).
    pub fn prequeue_len(&self) -> usize {
        self.opened
            .as_ref()
            .map_or(self.entrants.len(), |o| o.prequeue)
    }

    /// The last admission record's (through, at_ms).
    pub fn logged_admissions(&self) -> (u64, u64) {
        (self.logged_through, self.logged_at_ms)
    }

    /// Notes a replayed admission record: it must agree with the
    /// schedule, else the log contradicts itself.
    pub fn note_admitted(&mut self, through: u64, at_ms: u64) -> Result<(), String> {
        let scheduled = self.admitted(at_ms) as u64;
        if through > scheduled {
            return Err(format!(
                "drop {}: the log admits {through} by {at_ms}, the schedule {scheduled}",
                self.name
            ));
        }
        self.record_admitted(through, at_ms);
        Ok(())
    }

    /// Notes an admission record written live (from the schedule itself).
    pub fn record_admitted(&mut self, through: u64, at_ms: u64) {
        self.logged_through = self.logged_through.max(through);
        self.logged_at_ms = self.logged_at_ms.max(at_ms);
    }

    /// When the next admission not yet recorded happens (`None`: none
    /// will, before the closing).
    pub fn next_unrecorded_admission(&self) -> Option<u64> {
        let opened = self.opened.as_ref()?;
        let at = *opened.admit_at.get(self.logged_through as usize)?;
        match self.spec.closes_at_ms {
            Some(c) if at >= c => None,
            _ => Some(at),
        }
    }

    /// Approximate heap bytes held (for the memory figure per entrant).
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self
            .entrants
            .iter()
            .map(|e| 16 + e.customer.len().next_multiple_of(8))
            .sum();
        let entrants = self.entrants.capacity() * std::mem::size_of::<Entrant>();
        let map = self.by_customer.capacity() * (std::mem::size_of::<(Arc<str>, u32)>() + 1);
        let opened = self.opened.as_ref().map_or(0, |o| {
            o.by_position.capacity() * 4 + o.admit_at.capacity() * 8
        });
        strings + entrants + map + opened
    }
}

/// Where the pace puts `position`.
fn slot(opened: &Opened, position: u64, admit_per_s: Option<u64>) -> u64 {
    match admit_per_s {
        None => opened.origin_ms,
        Some(rate) => {
            let steps = u128::from(position - opened.origin_position);
            opened.origin_ms + (steps * 1000 / u128::from(rate)) as u64
        }
    }
}
