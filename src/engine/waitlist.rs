//! Per-SKU first-come-first-served waitlists (`wait_ms`): the requests
//! refused only because other holds have the stock, in arrival order. They
//! live in the SKU's shard, under its lock, so stock given back is handed
//! to the head of the line in the same critical section that gives it
//! back: no later request can take it first. Not logged: a waiter is a
//! request in flight, and a restart ends every request in flight.

use std::collections::VecDeque;

use compact_str::CompactString;

#[allow(unused_imports)]
use super::*;
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

impl Engine {
    /// Serves the SKU's waitlist from its head while the head's request
    /// fits what is available; called, with the SKU's shard locked, after
    /// stock comes back or grows. Each waiter served gets its reservation
    /// (or the refusal that ends its wait: its customer limit, a full hold
    /// table, the log) through its `on_done`.
    pub(super) fn serve_waitlist(
        &self,
        locked: &mut Locked<'_>,
        shard_index: u16,
        sku: u32,
        now_ms: u64,
    ) {
        loop {
            let shard = locked.shard_mut(shard_index);
            let state = shard.sku(sku);
            let available = state.available();
            let Some(head) = shard.waitlists.head(sku) else {
                return;
            };
            let fits = match head.fill {
                Fill::All => u64::from(head.qty) <= available,
                Fill::Partial => available > 0,
            };
            if !fits {
                return;
            }
            let name = state.name.clone();
            let waiter = shard.waitlists.pop_head(sku).expect("the head was there");
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let mut lines = [Line {
                sku: &name,
                hash: sku_hash(&name),
                shard: shard_index,
                qty: waiter.qty,
                index: sku,
                grant: 0,
            }];
            let result = self
                .place(
                    locked,
                    shard_index,
                    &waiter.customer,
                    waiter.fill,
                    &mut lines,
                    waiter.ttl_ms,
                    now_ms,
                    false,
                )
                .map(|(id, expires_at_ms, lsn)| Logged {
                    value: Reservation {
                        id,
                        status: Status::Held,
                        customer_id: waiter.customer.clone(),
                        items: one(ItemView {
                            sku: name.clone(),
                            qty: lines[0].grant,
                        }),
                        created_at_ms: now_ms,
                        expires_at_ms,
                        order_ref: None,
                        payment: None,
                    },
                    lsn,
                });
            (waiter.on_done)(result);
        }
    }

    /// After a SKU's stock was set or adjusted: its waitlist is served from
    /// what is available now, or closed if it sold out.
    pub(super) fn stock_changed(&self, locked: &mut Locked<'_>, shard: u16, sku: u32, now_ms: u64) {
        let state = locked.shard(shard).sku(sku);
        if state.sold >= state.stock {
            self.close_waitlist(locked.shard_mut(shard), sku);
        } else {
            self.serve_waitlist(locked, shard, sku, now_ms);
        }
    }

    /// Ends the wait of every waiter of a SKU that can no longer be served
    /// (it sold out): each is told `insufficient_stock`.
    pub(super) fn close_waitlist(&self, shard: &mut Shard, sku: u32) {
        while let Some(waiter) = shard.waitlists.pop_head(sku) {
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            (waiter.on_done)(Err(Error::InsufficientStock {
                sku: shard.sku(sku).name.to_string(),
                requested: u64::from(waiter.qty),
                available: 0,
            }));
        }
    }

    /// Takes a waiter out of its SKU's line (it gave up). `true` if it was
    /// still waiting; `false` if it had already been served, whose
    /// `on_done` has then been called.
    pub fn leave_waitlist(&self, ticket: &WaitTicket) -> bool {
        let hash = sku_hash(&ticket.sku);
        let index = self.shard_of(hash);
        let mut locked = self.lock_one(index);
        let Some(sku) = locked.home().find_sku(hash, &ticket.sku) else {
            return false;
        };
        let Some(was_head) = locked.home().waitlists.leave(sku, ticket.id) else {
            return false;
        };
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if was_head {
            // The next in line may fit what the head could not use.
            let now_ms = self.clock.now_ms();
            self.serve_waitlist(&mut locked, index, sku, now_ms);
        }
        true
    }

    /// Requests waiting in all waitlists.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }
}
