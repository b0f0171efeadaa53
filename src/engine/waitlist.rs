//! Per-SKU first-come-first-served waitlists (`wait_ms`): the requests
//! refused only because other holds have the stock, in arrival order. They
//! live in the SKU's shard, under its lock, so stock given back is handed
//! to the head of the line in the same critical section that gives it
//! back: no later request can take it first. Not logged: a waiter is a
//! request in flight, and a restart ends every request in flight.

use std::collections::VecDeque;

use compact_str::CompactString;

use super::{Error, Fill, Logged, Reservation};

/// Told how a wait ended: the reservation made for the waiter (with the
/// LSN of its record, to wait on), or the refusal that ended it. Called
/// under the SKU's shard lock: it must not block (sending on a channel is
/// the intended use).
pub type OnDone = Box<dyn FnOnce(Result<Logged<Reservation>, Error>) + Send>;

/// What [`crate::engine::Engine::reserve_or_wait`] did.
pub enum Placed {
    /// Held at once.
    Held(Reservation),
    /// In the SKU's waitlist; `on_done` will be called.
    Waiting(WaitTicket),
}

/// A waiter's place, to leave the line with.
#[derive(Debug, Clone)]
pub struct WaitTicket {
    pub sku: CompactString,
    pub id: u64,
}

/// One waiting request.
pub(crate) struct Waiting {
    pub id: u64,
    pub customer: CompactString,
    pub qty: u32,
    pub ttl_ms: u64,
    pub fill: Fill,
    pub on_done: OnDone,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("id", &self.id)
            .field("customer", &self.customer)
            .field("qty", &self.qty)
            .finish_non_exhaustive()
    }
}

/// The waitlists of one shard's SKUs, by SKU index. Empty lines are
/// removed, so a shard without waiters costs one `is_empty` check.
#[derive(Debug, Default)]
pub(crate) struct Waitlists {
    lines: hashbrown::HashMap<u32, VecDeque<Waiting>>,
}

impl Waitlists {
    pub fn has(&self, sku: u32) -> bool {
        !self.lines.is_empty() && self.lines.contains_key(&sku)
    }

    pub fn len(&self, sku: u32) -> usize {
        self.lines.get(&sku).map_or(0, VecDeque::len)
    }

    pub fn join(&mut self, sku: u32, waiter: Waiting) {
        self.lines.entry(sku).or_default().push_back(waiter);
    }

    pub fn head(&self, sku: u32) -> Option<&Waiting> {
        self.lines.get(&sku).and_then(VecDeque::front)
    }

    pub fn pop_head(&mut self, sku: u32) -> Option<Waiting> {
        let line = self.lines.get_mut(&sku)?;
        let head = line.pop_front();
        if line.is_empty() {
            self.lines.remove(&sku);
        }
        head
    }

    /// Takes waiter `id` out of the line: `Some(was_head)`, or `None` if it
    /// is not there (already served).
    pub fn leave(&mut self, sku: u32, id: u64) -> Option<bool> {
        let line = self.lines.get_mut(&sku)?;
        let at = line.iter().position(|w| w.id == id)?;
        line.remove(at);
        if line.is_empty() {
            self.lines.remove(&sku);
        }
        Some(at == 0)
    }
}
