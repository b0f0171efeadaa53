//! The embedded store: the in-process engine and the local log. A change
//! is made under the engine's locks (its record appended first), then
//! waited on by its own LSN (`engine::Logged`); deferred changes note
//! their LSN and [`Store::flush`] waits once for the highest.
//!
//! The folder: the store's operations (this file), what operators see of
//! it and its drops (`health.rs`), the core it runs on and how it is
//! recovered (`core.rs`), and its background threads (`background.rs`).

pub mod background;
pub mod core;
mod health;
mod start;

pub use self::core::{open_core, replay, start_core, Checkpoint, Core, Owners, WAL_DIR};
pub use start::{start, EmbeddedNode};

use std::sync::Arc;
use std::time::Duration;

use super::{Error, PaymentRequest, Payments, Pending, Scope, Store, StoreFuture};
use crate::engine::payments::{Settle, Settled};
use crate::engine::{
    self, HoldId, Logged, OnDone, Placed, Reservation, ReserveRequest, SkuView, WaitTicket,
};
use crate::idempotency::{Begin, CompleteError, Stored};

pub struct EmbeddedStore {
    core: Arc<Core>,
}

impl EmbeddedStore {
    pub fn new(core: Arc<Core>) -> EmbeddedStore {
        EmbeddedStore { core }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Waits for `lsn` now, or notes it for the flush.
    async fn durable(&self, scope: Scope<'_>, lsn: u64) -> Result<(), Error> {
        match scope {
            Scope::Deferred(pending) => {
                pending.note_lsn(lsn);
                Ok(())
            }
            Scope::Now => self
                .core
                .wal
                .wait_durable_async(lsn)
                .await
                .map_err(|e| Error::NotDurable(e.to_string())),
        }
    }

    /// A change's answer once durable.
    async fn done<T>(
        &self,
        scope: Scope<'_>,
        made: Result<Logged<T>, engine::Error>,
    ) -> Result<T, Error> {
        let Logged { value, lsn } = made?;
        self.durable(scope, lsn).await?;
        Ok(value)
    }

    /// A reservation that may wait in its SKU's line; `None`: the line was
    /// dropped without an answer.
    async fn wait_in_line(
        &self,
        req: &ReserveRequest<'_>,
        wait_ms: u64,
        waiting: &(dyn Fn() + Sync),
    ) -> Option<Result<Logged<Reservation>, engine::Error>> {
        let engine = &self.core.engine;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let on_done: OnDone = Box::new(move |result| {
            let _ = tx.send(result);
        });
        let placed = match engine.reserve_or_wait_logged(req, on_done) {
            Ok(placed) => placed,
            Err(e) => return Some(Err(e)),
        };
        let ticket = match placed.value {
            Placed::Held(r) => {
                return Some(Ok(Logged {
                    value: r,
                    lsn: placed.lsn,
                }))
            }
            Placed::Waiting(ticket) => ticket,
        };
        waiting();
        let mut line = InLine {
            engine,
            ticket: Some(ticket),
        };
        match tokio::time::timeout(Duration::from_millis(wait_ms), &mut rx).await {
            Ok(answer) => {
                line.ticket = None;
                answer.ok()
            }
            Err(_elapsed) => {
                let ticket = line.ticket.take().expect("still in line");
                if engine.leave_waitlist(&ticket) {
                    let available = engine.sku(&ticket.sku).map_or(0, |v| v.available);
                    Some(Err(engine::Error::InsufficientStock {
                        sku: ticket.sku.to_string(),
                        requested: u64::from(req.items[0].qty),
                        available,
                    }))
                } else {
                    // Served (or refused) just as the wait ran out: that stands.
                    rx.await.ok()
                }
            }
        }
    }
}

impl Payments for EmbeddedStore {
    fn payment<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        req: PaymentRequest<'a>,
    ) -> StoreFuture<'a, Reservation> {
        let made = self.core.engine.payment_logged(
            id,
            req.gateway,
            req.payment_ref,
            req.pending_ttl_ms,
            req.pending_max_ms,
        );
        Box::pin(self.done(scope, made))
    }

    fn settle<'a>(&'a self, event: Settle<'a>) -> StoreFuture<'a, Settled> {
        let made = self.core.engine.settle_logged(&event);
        Box::pin(self.done(Scope::Now, made))
    }

    fn pending_payments(&self) -> Option<usize> {
        Some(self.core.engine.pending_payments())
    }
}

/// Leaves the waitlist if the request is dropped while waiting (its
/// client went away).
struct InLine<'a> {
    engine: &'a engine::Engine,
    ticket: Option<WaitTicket>,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.engine.leave_waitlist(&ticket);
        }
    }
}

impl Store for EmbeddedStore {
    fn set_stock<'a>(
        &'a self,
        scope: Scope<'a>,
        sku: &'a str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> StoreFuture<'a, (bool, SkuView)> {
        let made = self
            .core
            .engine
            .set_stock_logged(sku, stock, customer_limit);
        Box::pin(self.done(scope, made))
    }

    fn adjust_stock<'a>(
        &'a self,
        scope: Scope<'a>,
        sku: &'a str,
        delta: i64,
    ) -> StoreFuture<'a, SkuView> {
        let made = self.core.engine.adjust_stock_logged(sku, delta);
        Box::pin(self.done(scope, made))
    }

    fn sku<'a>(&'a self, sku: &'a str) -> StoreFuture<'a, SkuView> {
        let found = self.core.engine.sku(sku).map_err(Error::from);
        Box::pin(std::future::ready(found))
    }

    fn reserve<'a>(
        &'a self,
        scope: Scope<'a>,
        req: &'a ReserveRequest<'a>,
        wait_ms: u64,
        waiting: &'a (dyn Fn() + Sync),
    ) -> StoreFuture<'a, Reservation> {
        // A drop's SKUs are for its admitted entrants only. A request the
        // engine would refuse as malformed is left to it, so that a bad
        // body is a 400 whatever it names.
        let drops = &self.core.drops;
        if !drops.is_empty() && engine::check_reservation(req, &self.core.engine.tunables()).is_ok()
        {
            if let Err(e) = drops.gate(req.customer_id, req.items.iter().map(|i| i.sku)) {
                return Box::pin(std::future::ready(Err(e.into())));
            }
        }
        if wait_ms == 0 {
            let made = self.core.engine.reserve_logged(req);
            return Box::pin(self.done(scope, made));
        }
        Box::pin(async move {
            match self.wait_in_line(req, wait_ms, waiting).await {
                Some(made) => self.done(scope, made).await,
                None => Err(Error::WaitlistEnded),
            }
        })
    }

    fn get(&self, id: HoldId) -> StoreFuture<'_, Reservation> {
        let found = self.core.engine.get(id).map_err(Error::from);
        Box::pin(std::future::ready(found))
    }

    fn confirm<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        order_ref: Option<&'a str>,
    ) -> StoreFuture<'a, Reservation> {
        // Also for an idempotent repeat: the first answer may not be durable
        // yet (its LSN is the one read under the hold's locks).
        let made = self.core.engine.confirm_logged(id, order_ref);
        Box::pin(self.done(scope, made))
    }

    fn release<'a>(&'a self, scope: Scope<'a>, id: HoldId) -> StoreFuture<'a, Reservation> {
        let made = self.core.engine.release_logged(id);
        Box::pin(self.done(scope, made))
    }

    fn extend<'a>(
        &'a self,
        scope: Scope<'a>,
        id: HoldId,
        ttl_ms: u64,
    ) -> StoreFuture<'a, Reservation> {
        let made = self.core.engine.extend_logged(id, ttl_ms);
        Box::pin(self.done(scope, made))
    }

    fn flush<'a>(&'a self, pending: &'a Pending) -> StoreFuture<'a, ()> {
        Box::pin(self.durable(Scope::Now, pending.lsn()))
    }

    fn is_sold_out(&self, sku: &str) -> bool {
        self.core.engine.is_sold_out(sku)
    }

    fn now_ms(&self) -> u64 {
        self.core.engine.now_ms()
    }

    fn key_begin<'a>(
        &'a self,
        key: &'a str,
        fingerprint: u128,
        now_ms: u64,
    ) -> StoreFuture<'a, Begin> {
        // The claim is logged before the request's changes: a change that
        // survives a crash has it, and its key is never run again.
        let begin =
            self.core
                .idempotency
                .begin_logged(key, fingerprint, now_ms, self.core.wal.as_ref());
        Box::pin(async move {
            let begin = begin.map_err(|e| Error::NotDurable(e.to_string()))?;
            if let Begin::Replay(_, lsn) = &begin {
                // The first answer's record may still be on its way to disk.
                self.durable(Scope::Now, *lsn).await?;
            }
            Ok(begin)
        })
    }

    fn key_complete<'a>(
        &'a self,
        scope: Scope<'a>,
        key: &'a str,
        fingerprint: u128,
        stored: Stored,
    ) -> StoreFuture<'a, ()> {
        let kept = self
            .core
            .idempotency
            .complete(key, fingerprint, stored, self.core.wal.as_ref());
        Box::pin(async move {
            match kept {
                Ok(lsn) => self.durable(scope, lsn).await,
                Err(CompleteError::Log(e)) => Err(Error::NotDurable(e.to_string())),
                Err(e @ CompleteError::TooLarge { .. }) => Err(Error::AnswerNotKept(e.to_string())),
            }
        })
    }

    fn key_abandon(&self, key: &str) {
        self.core.idempotency.abandon_logged(
            key,
            self.core.engine.now_ms(),
            self.core.wal.as_ref(),
        );
    }

    fn answer_bytes_max(&self) -> usize {
        self.core.idempotency.answer_bytes_max()
    }

    fn retune(&self, tunables: engine::Tunables) {
        self.core.engine.retune(tunables);
    }
}
