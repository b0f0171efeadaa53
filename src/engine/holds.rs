//! Operations on one hold: get, confirm, release, extend, and ending a
//! hold (units to `sold` on confirm, back to available otherwise).

#[allow(unused_imports)]
use super::*;

/// The contract's view of the hold in `slot` of the home shard; every shard
/// of its items is locked.
pub(super) fn view(locked: &Locked<'_>, slot: u32, now_ms: u64) -> Reservation {
    let home = locked.shard(locked.indices[0]);
    let hold = home.hold(slot);
    let status = match hold.status {
        Status::Held if now_ms >= hold.expires_at_ms => Status::Expired,
        Status::Held if hold.payment.is_some() => Status::PendingPayment,
        status => status,
    };
    Reservation {
        id: home.hold_id(slot),
        status,
        customer_id: hold.customer.clone(),
        items: {
            let mut items = SmallVec::new();
            for i in &hold.items {
                items.push(ItemView {
                    sku: locked.shard(i.sku.shard).sku(i.sku.index).name.clone(),
                    qty: i.qty,
                });
            }
            items
        },
        created_at_ms: hold.created_at_ms,
        expires_at_ms: hold.expires_at_ms,
        order_ref: hold.order_ref.clone(),
        payment: hold.payment.clone(),
    }
}

/// The items of the hold in `slot` of the home shard as (SKU name, qty),
/// for an event; every shard of the hold is locked.
pub(super) fn item_names<'l>(locked: &'l Locked<'_>, slot: u32) -> SmallVec<[(&'l str, u32); 4]> {
    locked
        .home_ref()
        .hold(slot)
        .items
        .iter()
        .map(|i| {
            (
                locked.shard(i.sku.shard).sku(i.sku.index).name.as_str(),
                i.qty,
            )
        })
        .collect()
}

/// Whether every unit of the (ended) hold in `slot` is free to be taken
/// again; every shard of the hold is locked.
pub(super) fn units_free(locked: &Locked<'_>, slot: u32) -> bool {
    locked
        .home_ref()
        .hold(slot)
        .items
        .iter()
        .all(|i| locked.shard(i.sku.shard).sku(i.sku.index).available() >= u64::from(i.qty))
}

impl Engine {
    /// The reservation as it stands. A hold past its expiry that the sweeper
    /// has not reached yet already shows as `expired`.
    pub fn get(&self, id: HoldId) -> Result<Reservation, Error> {
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        locked.lock_items_of(self, slot);
        Ok(view(&locked, slot, now_ms))
    }

    /// The answer to an operation on a hold that changed nothing, with the
    /// LSN that covers what it shows. Every shard of the hold is locked.
    pub(super) fn unchanged(
        &self,
        locked: &Locked<'_>,
        slot: u32,
        now_ms: u64,
    ) -> Logged<Reservation> {
        Logged {
            value: view(locked, slot, now_ms),
            lsn: self.seen_lsn(),
        }
    }

    /// Turns a hold into a sale. Confirming a confirmed hold answers it
    /// again (the first `order_ref` stands); at or after its expiry a
    /// confirm fails, swept or not.
    #[inline]
    pub fn confirm(&self, id: HoldId, order_ref: Option<&str>) -> Result<Reservation, Error> {
        self.confirm_logged(id, order_ref).map(|l| l.value)
    }

    /// [`Engine::confirm`] with the LSN to wait on.
    pub fn confirm_logged(
        &self,
        id: HoldId,
        order_ref: Option<&str>,
    ) -> Result<Logged<Reservation>, Error> {
        if let Some(r) = order_ref {
            check_ident("order_ref", r)?;
        }
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        match hold.status {
            Status::Held | Status::PendingPayment if now_ms < hold.expires_at_ms => {}
            Status::Held | Status::PendingPayment | Status::Expired => {
                return Err(Error::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                })
            }
            Status::Confirmed => {
                locked.lock_items_of(self, slot);
                return Ok(self.unchanged(&locked, slot, now_ms));
            }
            Status::Released => {
                return Err(Error::HoldNotActive {
                    status: Status::Released,
                })
            }
        }
        let change = Change::HoldConfirmed {
            id,
            order_ref,
            at_ms: now_ms,
        };
        self.end_logged(
            &mut locked,
            slot,
            change,
            Status::Confirmed,
            order_ref,
            now_ms,
        )
    }

    /// Gives a hold's stock back. Releasing an ended hold that was not
    /// confirmed changes nothing; a hold past its expiry ends as `expired`.
    #[inline]
    pub fn release(&self, id: HoldId) -> Result<Reservation, Error> {
        self.release_logged(id).map(|l| l.value)
    }

    /// [`Engine::release`] with the LSN to wait on.
    pub fn release_logged(&self, id: HoldId) -> Result<Logged<Reservation>, Error> {
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        let to = match hold.status {
            Status::Held | Status::PendingPayment if now_ms < hold.expires_at_ms => {
                Status::Released
            }
            Status::Held | Status::PendingPayment => Status::Expired,
            Status::Released | Status::Expired => {
                locked.lock_items_of(self, slot);
                return Ok(self.unchanged(&locked, slot, now_ms));
            }
            Status::Confirmed => {
                return Err(Error::HoldNotActive {
                    status: Status::Confirmed,
                })
            }
        };
        let change = match to {
            Status::Released => Change::HoldReleased { id, at_ms: now_ms },
            _ => Change::HoldExpired { id, at_ms: now_ms },
        };
        self.end_logged(&mut locked, slot, change, to, None, now_ms)
    }

    /// Confirm's and release's last steps: every shard of the hold locked,
    /// the change logged, the hold ended as `to`, and its view.
    fn end_logged<'e>(
        &'e self,
        locked: &mut Locked<'e>,
        slot: u32,
        change: Change<'_>,
        to: Status,
        order_ref: Option<&str>,
        now_ms: u64,
    ) -> Result<Logged<Reservation>, Error> {
        locked.lock_items_of(self, slot);
        let lsn = self.log(|| change)?;
        let lsn = lsn.max(self.end(
            locked,
            slot,
            to,
            order_ref.map(CompactString::from),
            now_ms,
            lsn,
        ));
        Ok(Logged {
            value: view(locked, slot, now_ms),
            lsn,
        })
    }

    /// Sets `expires_at_ms = now + ttl_ms`, capped at `holds.max_ttl_ms`
    /// after creation.
    #[inline]
    pub fn extend(&self, id: HoldId, ttl_ms: u64) -> Result<Reservation, Error> {
        self.extend_logged(id, ttl_ms).map(|l| l.value)
    }

    /// [`Engine::extend`] with the LSN to wait on.
    pub fn extend_logged(&self, id: HoldId, ttl_ms: u64) -> Result<Logged<Reservation>, Error> {
        if ttl_ms == 0 {
            return Err(Error::invalid("ttl_ms", "must be at least 1"));
        }
        let now_ms = self.clock.now_ms();
        let (mut locked, slot) = self.lock_hold(id)?;
        let hold = locked.home().hold(slot);
        match hold.status {
            Status::Held | Status::PendingPayment if now_ms >= hold.expires_at_ms => {
                return Err(Error::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                })
            }
            // A pending payment's hold lasts as the payment needs, not as
            // extend asks.
            Status::Held if hold.payment.is_some() => {
                return Err(Error::HoldNotActive {
                    status: Status::PendingPayment,
                })
            }
            Status::Held => {}
            Status::Expired => {
                return Err(Error::HoldExpired {
                    expired_at_ms: hold.expires_at_ms,
                })
            }
            status @ (Status::Confirmed | Status::Released | Status::PendingPayment) => {
                return Err(Error::HoldNotActive { status })
            }
        }
        let cap = hold
            .created_at_ms
            .saturating_add(self.tunables().max_ttl_ms);
        let expires_at_ms = now_ms.saturating_add(ttl_ms).min(cap);
        let lsn = self.log(|| Change::HoldExtended {
            id,
            expires_at_ms,
            at_ms: now_ms,
        })?;
        locked.home().set_expiry(slot, expires_at_ms);
        locked.lock_items_of(self, slot);
        Ok(Logged {
            value: view(&locked, slot, now_ms),
            lsn,
        })
    }

    /// Ends an active hold: moves its units out of `held` (into `sold` on
    /// confirm, back to available otherwise). All its shards are locked.
    /// `lsn`: the record of the change (for the event sink). Returns the
    /// LSN of the last record the event sink appended (0: none).
    pub(super) fn end(
        &self,
        locked: &mut Locked<'_>,
        slot: u32,
        to: Status,
        order_ref: Option<CompactString>,
        now_ms: u64,
        lsn: u64,
    ) -> u64 {
        let mut told = 0;
        let home = locked.indices[0];
        let hold = locked.shard(home).hold(slot);
        let items: SmallVec<[HeldItem; 4]> = SmallVec::from_slice(&hold.items);
        let customer = hold.customer.clone();
        if hold.payment.is_some() {
            // No longer pending (`Engine::pending_payments`).
            self.pending_payments
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let sink = self.events();
        if let Some(sink) = sink {
            told = self.emit_hold_event(sink, locked, slot, to, order_ref.as_deref(), now_ms, lsn);
        }
        for item in &items {
            let shard = locked.shard_mut(item.sku.shard);
            let qty = u64::from(item.qty);
            let state = shard.sku_mut(item.sku.index);
            let before = state.available();
            state.held = state
                .held
                .checked_sub(qty)
                .expect("invariant: held covers active holds");
            if let (Some(sink), 0, Status::Released | Status::Expired) = (sink, before, to) {
                let available = state.available();
                let back = sink.emit(
                    lsn,
                    now_ms,
                    Event::StockBack {
                        sku: &state.name,
                        available,
                    },
                );
                told = told.max(back);
            }
            if to == Status::Confirmed {
                // Held units become owned: the customer's tally is unchanged.
                state.sold += qty;
                if state.sold >= state.stock {
                    let state = shard.sku(item.sku.index);
                    self.note_sold_out(item.sku.shard, &state.name, state);
                    // Nothing can come back: nobody in line can be served.
                    self.close_waitlist(shard, item.sku.index);
                }
            } else if state.customer_limit > 0 {
                shard.sub_tally(customer_hash(&customer), item.sku.index, &customer, qty);
            }
        }
        let purge_at_ms = now_ms.saturating_add(self.options.retention_ms);
        locked
            .shard_mut(home)
            .end_hold(slot, to, order_ref, purge_at_ms);
        if to != Status::Confirmed {
            // Stock came back: the head of each SKU's line gets it first.
            for item in &items {
                self.serve_waitlist(locked, item.sku.shard, item.sku.index, now_ms);
            }
        }
        told
    }

    /// `hold.confirmed` / `hold.expired` for the hold in `slot` (before it
    /// ends: its items still name their SKUs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn emit_hold_event(
        &self,
        sink: &dyn EventSink,
        locked: &Locked<'_>,
        slot: u32,
        to: Status,
        order_ref: Option<&str>,
        now_ms: u64,
        lsn: u64,
    ) -> u64 {
        if !matches!(to, Status::Confirmed | Status::Expired) {
            return 0;
        }
        let home = locked.indices[0];
        let hold = locked.shard(home).hold(slot);
        let items = item_names(locked, slot);
        let id = locked.shard(home).hold_id(slot);
        let event = match to {
            Status::Confirmed => Event::HoldConfirmed {
                id,
                customer: &hold.customer,
                items: &items,
                order_ref,
                payment_ref: hold.payment.as_ref().map(|p| p.payment_ref.as_str()),
            },
            _ => Event::HoldExpired {
                id,
                customer: &hold.customer,
                items: &items,
            },
        };
        sink.emit(lsn, now_ms, event)
    }
}
