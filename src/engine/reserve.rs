//! Reserve and place: validating a reservation's items, deciding every
//! item under all the locks it needs before changing anything (all or
//! nothing, or partial fill), then logging and making the hold. Serving a
//! waitlist places its head's hold through the same [`Engine::place`].

#[allow(unused_imports)]
use super::*;

/// One item of a reservation, from validation to commit.
pub(super) struct Line<'r> {
    pub(super) sku: &'r str,
    pub(super) hash: u64,
    pub(super) shard: u16,
    pub(super) qty: u32,
    /// The SKU's index in its shard, once found under the lock.
    pub(super) index: u32,
    /// Units to hold (0 for an item a partial fill skips).
    pub(super) grant: u32,
}

impl Engine {
    /// Places a soft hold on the request's items: all or nothing (or as
    /// much as possible with [`Fill::Partial`]), atomically across shards,
    /// with customer limits enforced under the same locks.
    #[inline]
    pub fn reserve(&self, req: &ReserveRequest<'_>) -> Result<Reservation, Error> {
        self.reserve_logged(req).map(|l| l.value)
    }

    /// [`Engine::reserve`] with the LSN to wait on.
    #[inline]
    pub fn reserve_logged(&self, req: &ReserveRequest<'_>) -> Result<Logged<Reservation>, Error> {
        let placed = self.reserve_inner(req, None)?;
        match placed.value {
            Placed::Held(r) => Ok(Logged {
                value: r,
                lsn: placed.lsn,
            }),
            Placed::Waiting(_) => unreachable!("no waiter, no waiting"),
        }
    }

    /// [`Engine::reserve`], or, for a single-SKU request refused only
    /// because other holds have the stock, a place at the end of that SKU's
    /// first-come-first-served waitlist. Stock given back (release, expiry,
    /// restock) goes to the head of the line, under the SKU's lock, before
    /// any later request can take it; `on_done` is then called (under that
    /// lock: it must not block) with the reservation made for the waiter,
    /// or with the refusal that ended its wait. A waiter that gives up calls
    /// [`Engine::leave_waitlist`].
    #[inline]
    pub fn reserve_or_wait(
        &self,
        req: &ReserveRequest<'_>,
        on_done: OnDone,
    ) -> Result<Placed, Error> {
        self.reserve_or_wait_logged(req, on_done).map(|l| l.value)
    }

    /// [`Engine::reserve_or_wait`] with the LSN to wait on when held at
    /// once (a waiter served later gets its own through `on_done`).
    pub fn reserve_or_wait_logged(
        &self,
        req: &ReserveRequest<'_>,
        on_done: OnDone,
    ) -> Result<Logged<Placed>, Error> {
        self.reserve_inner(req, Some(on_done))
    }

    pub(super) fn reserve_inner(
        &self,
        req: &ReserveRequest<'_>,
        waiter: Option<OnDone>,
    ) -> Result<Logged<Placed>, Error> {
        // What a reload may change, read once for the whole call.
        let tunables = self.tunables();
        let ttl_ms = check_customer_and_ttl(req, &tunables)?;
        let mut lines = self.plan(req.items, &tunables)?;
        // The sold-out fast path is the caller's ([`Engine::is_sold_out`],
        // checked by the API before admission): checking here too would put
        // a shared read lock per item on every reservation's path.
        let mut shard_ids: SmallVec<[u16; 4]> = SmallVec::new();
        for line in &lines {
            shard_ids.push(line.shard);
        }
        if shard_ids.len() > 1 {
            shard_ids.sort_unstable();
            shard_ids.dedup();
        }
        let home = shard_ids[0];
        let now_ms = self.clock.now_ms();
        let mut locked = self.lock_sorted(shard_ids);
        // Find every SKU, then decide every item, before changing anything.
        for line in lines.iter_mut() {
            let shard = locked.shard_mut(line.shard);
            line.index = shard
                .find_sku(line.hash, line.sku)
                .ok_or_else(|| Error::UnknownSku {
                    sku: line.sku.to_owned(),
                })?;
            shard.hot.touch(line.index);
        }
        let placed = self.place(
            &mut locked,
            home,
            req.customer_id,
            req.fill,
            &mut lines,
            ttl_ms,
            now_ms,
            true,
        );
        let (id, expires_at_ms, lsn) = match placed {
            Ok(placed) => placed,
            Err(err) => {
                return self
                    .refuse_or_wait(&mut locked, &lines, req, ttl_ms, err, waiter)
                    .map(|value| Logged { value, lsn: 0 })
            }
        };
        drop(locked);
        // The answer is made from the request, after the locks are gone.
        let held = Placed::Held(Reservation {
            id,
            status: Status::Held,
            customer_id: CompactString::from(req.customer_id),
            items: {
                let mut items = SmallVec::new();
                for l in lines.iter().filter(|l| l.grant > 0) {
                    items.push(ItemView {
                        sku: CompactString::from(l.sku),
                        qty: l.grant,
                    });
                }
                items
            },
            created_at_ms: now_ms,
            expires_at_ms,
            order_ref: None,
            payment: None,
        });
        Ok(Logged { value: held, lsn })
    }

    /// Decides every item of a reservation whose SKUs are found and locked,
    /// then logs and makes the hold; returns its id, expiry and LSN. Changes
    /// nothing when it refuses. `respect_waitlists`: a SKU with a waitlist
    /// has nothing available for this request (the line is served first);
    /// false only when serving the head of that line.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place(
        &self,
        locked: &mut Locked<'_>,
        home: u16,
        customer_id: &str,
        fill: Fill,
        lines: &mut [Line<'_>],
        ttl_ms: u64,
        now_ms: u64,
        respect_waitlists: bool,
    ) -> Result<(HoldId, u64, u64), Error> {
        // Hashed only if some item has a customer limit: unlimited SKUs keep
        // no per-customer state at all.
        let mut customer_hash_memo: Option<u64> = None;
        let mut customer_hash_once =
            || *customer_hash_memo.get_or_insert_with(|| customer_hash(customer_id));
        let mut first_refusal: Option<Error> = None;
        for line in lines.iter_mut() {
            let shard = locked.shard(line.shard);
            let state = shard.sku(line.index);
            let available = if respect_waitlists && shard.waitlists.has(line.index) {
                0
            } else {
                state.available()
            };
            let (current, limit_room) = match state.customer_limit {
                0 => (0, u64::MAX),
                limit => {
                    let current = shard.tally(customer_hash_once(), line.index, customer_id);
                    (current, limit.saturating_sub(current))
                }
            };
            let qty = u64::from(line.qty);
            let refusal = if qty > available {
                Some(Error::InsufficientStock {
                    sku: line.sku.to_owned(),
                    requested: qty,
                    available,
                })
            } else if qty > limit_room {
                Some(Error::CustomerLimitExceeded {
                    sku: line.sku.to_owned(),
                    limit: state.customer_limit,
                    current,
                })
            } else {
                None
            };
            line.grant = match (fill, refusal) {
                (_, None) => line.qty,
                (Fill::All, Some(err)) => return Err(err),
                (Fill::Partial, Some(err)) => {
                    first_refusal.get_or_insert(err);
                    // Fits in u32: at most qty.
                    qty.min(available).min(limit_room) as u32
                }
            };
        }
        if let Some(err) = first_refusal {
            if lines.iter().all(|l| l.grant == 0) {
                return Err(err);
            }
        }
        if locked.shard(home).holds_len() >= self.holds_per_shard_max {
            return Err(Error::HoldCapacity {
                limit: self.holds_per_shard_max,
            });
        }

        // Log, then commit.
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let id = locked.shard(home).next_id(self.options.epoch);
        let mut lsn = self.log(|| Change::HoldCreated {
            id,
            customer: customer_id,
            items: lines
                .iter()
                .filter(|l| l.grant > 0)
                .map(|l| (l.sku, l.grant))
                .collect(),
            created_at_ms: now_ms,
            expires_at_ms,
        })?;
        let customer = CompactString::from(customer_id);
        let mut items: SmallVec<[HeldItem; 1]> = SmallVec::new();
        for line in lines.iter().filter(|l| l.grant > 0) {
            let sku = SkuRef {
                shard: line.shard,
                index: line.index,
            };
            let shard = locked.shard_mut(sku.shard);
            let state = shard.sku_mut(sku.index);
            state.held += u64::from(line.grant);
            if let (Some(sink), 0) = (self.events(), state.available()) {
                let told = sink.emit(lsn, now_ms, Event::StockOut { sku: &state.name });
                lsn = lsn.max(told);
            }
            if state.customer_limit > 0 {
                shard.add_tally(
                    customer_hash_once(),
                    sku.index,
                    &customer,
                    u64::from(line.grant),
                );
            }
            items.push(HeldItem {
                sku,
                qty: line.grant,
            });
        }
        let hold = Hold {
            epoch: self.options.epoch,
            status: Status::Held,
            customer,
            items,
            created_at_ms: now_ms,
            expires_at_ms,
            order_ref: None,
            payment: None,
        };
        let inserted = locked.shard_mut(home).insert_hold(hold);
        assert_eq!(inserted, id, "bug: the logged id is the id inserted");
        Ok((id, expires_at_ms, lsn))
    }

    /// A refused reservation: the refusal, or a place in the SKU's waitlist
    /// when it asked to wait, names one SKU, and is short only because
    /// other holds have the stock (they may give it back).
    pub(super) fn refuse_or_wait(
        &self,
        locked: &mut Locked<'_>,
        lines: &[Line<'_>],
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        err: Error,
        waiter: Option<OnDone>,
    ) -> Result<Placed, Error> {
        let (Some(on_done), [line]) = (waiter, lines) else {
            return Err(err);
        };
        let Error::InsufficientStock { .. } = err else {
            return Err(err);
        };
        let shard = locked.shard_mut(line.shard);
        let state = shard.sku(line.index);
        if u64::from(line.qty) > state.stock - state.sold {
            return Err(err);
        }
        let waitlist_max = self.tunables().waitlist_max;
        if shard.waitlists.len(line.index) >= waitlist_max {
            return Err(Error::WaitlistFull {
                sku: line.sku.to_owned(),
                limit: waitlist_max,
            });
        }
        let id = self
            .next_waiter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        shard.waitlists.join(
            line.index,
            Waiting {
                id,
                customer: CompactString::from(req.customer_id),
                qty: line.qty,
                ttl_ms,
                fill: req.fill,
                on_done,
            },
        );
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Placed::Waiting(WaitTicket {
            sku: CompactString::from(line.sku),
            id,
        }))
    }

    /// Validates a reservation's items and works out their shards.
    pub(super) fn plan<'r>(
        &self,
        items: &[ItemRequest<'r>],
        tunables: &Tunables,
    ) -> Result<SmallVec<[Line<'r>; 4]>, Error> {
        check_item_count(items, tunables)?;
        let mut plan: SmallVec<[Line<'r>; 4]> = SmallVec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            check_item(i, item, tunables)?;
            let hash = sku_hash(item.sku);
            if plan.iter().any(|p| p.hash == hash && p.sku == item.sku) {
                return Err(duplicate(i, item.sku));
            }
            plan.push(Line {
                sku: item.sku,
                hash,
                shard: self.shard_of(hash),
                qty: item.qty,
                index: 0,
                grant: 0,
            });
        }
        Ok(plan)
    }
}

/// The customer id and the TTL a reservation gets (`holds.default_ttl_ms`,
/// or its own capped at `holds.max_ttl_ms`).
#[inline]
fn check_customer_and_ttl(req: &ReserveRequest<'_>, tunables: &Tunables) -> Result<u64, Error> {
    check_ident("customer_id", req.customer_id)?;
    match req.ttl_ms {
        None => Ok(tunables.default_ttl_ms),
        Some(0) => Err(Error::invalid("ttl_ms", "must be at least 1")),
        Some(ttl) => Ok(ttl.min(tunables.max_ttl_ms)),
    }
}

#[inline]
fn check_item_count(items: &[ItemRequest<'_>], tunables: &Tunables) -> Result<(), Error> {
    if items.is_empty() || items.len() > tunables.max_items {
        return Err(Error::invalid(
            "items",
            format!(
                "must hold 1 to {} items, got {}",
                tunables.max_items,
                items.len()
            ),
        ));
    }
    Ok(())
}

/// Item `i`'s SKU name and quantity.
#[inline]
fn check_item(i: usize, item: &ItemRequest<'_>, tunables: &Tunables) -> Result<(), Error> {
    if !is_valid_ident(item.sku) {
        return Err(Error::invalid(format!("items[{i}].sku"), IDENT_RULE));
    }
    if item.qty == 0 || item.qty > tunables.max_qty_per_item {
        return Err(Error::invalid(
            format!("items[{i}].qty"),
            format!(
                "must be 1 to {}, got {}",
                tunables.max_qty_per_item, item.qty
            ),
        ));
    }
    Ok(())
}

#[cold]
fn duplicate(i: usize, sku: &str) -> Error {
    Error::invalid(
        format!("items[{i}].sku"),
        format!("duplicate sku {sku}; list each sku once"),
    )
}

/// The checks a reservation passes before any store looks at its state
/// (the embedded engine makes the same ones, in `reserve_inner` and
/// `plan`): the customer id, 1 to `max_items` distinct well-formed SKUs,
/// quantities 1 to `max_qty_per_item`. Returns the TTL it gets.
pub fn check_reservation(req: &ReserveRequest<'_>, tunables: &Tunables) -> Result<u64, Error> {
    let ttl_ms = check_customer_and_ttl(req, tunables)?;
    check_item_count(req.items, tunables)?;
    let mut seen: hashbrown::HashSet<&str> = hashbrown::HashSet::with_capacity(req.items.len());
    for (i, item) in req.items.iter().enumerate() {
        check_item(i, item, tunables)?;
        if !seen.insert(item.sku) {
            return Err(duplicate(i, item.sku));
        }
    }
    Ok(ttl_ms)
}
/// A SKU name, as every store checks it.
pub fn check_sku(sku: &str) -> Result<(), Error> {
    check_ident("sku", sku)
}

/// An `order_ref`, as every store checks it.
pub fn check_order_ref(order_ref: &str) -> Result<(), Error> {
    check_ident("order_ref", order_ref)
}

/// A stock or limit value (0 to [`STOCK_MAX`]).
pub fn check_stock(field: &str, value: u64) -> Result<(), Error> {
    super::stock::check_stock_value(field, value)
}
