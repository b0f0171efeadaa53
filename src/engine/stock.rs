//! SKUs: set, adjust and read stock; the sold-out set read without the
//! shard lock. Every change of a SKU's stock or limit goes through
//! [`Engine::commit_stock_change`]: log, change, sold-out set, waitlist.

#[allow(unused_imports)]
use super::*;

pub(super) fn check_stock_value(field: &str, value: u64) -> Result<(), Error> {
    if value <= STOCK_MAX {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            format!("must be 0 to {STOCK_MAX}, got {value}"),
        ))
    }
}

pub(super) fn sku_view(state: &SkuState) -> SkuView {
    SkuView {
        sku: state.name.clone(),
        stock: state.stock,
        available: state.available(),
        held: state.held,
        sold: state.sold,
        customer_limit: state.customer_limit,
    }
}

impl Engine {
    /// The one sequence for every change of a SKU's stock or limit: log
    /// the record, make the change (`change` returns the SKU's index, for
    /// a SKU it creates), update the sold-out set, then serve the SKU's
    /// waitlist from what is available now, or close it if it sold out.
    /// Returns the SKU's view as the change left it (before any waiter was
    /// served) and the record's LSN. Changes nothing if the log refuses.
    pub(super) fn commit_stock_change(
        &self,
        locked: &mut Locked<'_>,
        shard: u16,
        record: Change<'_>,
        now_ms: u64,
        before: Option<u64>,
        change: impl FnOnce(&mut Shard) -> u32,
    ) -> Result<(SkuView, u64), Error> {
        let mut lsn = self.log(|| record)?;
        let index = change(locked.shard_mut(shard));
        let state = locked.shard(shard).sku(index);
        self.note_sold_out(shard, &state.name, state);
        let view = sku_view(state);
        if let (Some(sink), Some(before)) = (self.events(), before) {
            let sku = state.name.as_str();
            let told = match (before, view.available) {
                (1.., 0) => sink.emit(lsn, now_ms, Event::StockOut { sku }),
                (0, available @ 1..) => sink.emit(lsn, now_ms, Event::StockBack { sku, available }),
                _ => 0,
            };
            lsn = lsn.max(told);
        }
        self.stock_changed(locked, shard, index, now_ms);
        Ok((view, lsn))
    }

    /// Records whether `state` is sold out. Call with the SKU's shard
    /// locked, after changing its `stock` or `sold`.
    pub(super) fn note_sold_out(&self, shard: u16, sku: &str, state: &SkuState) {
        let sold_out = state.sold >= state.stock;
        let set = &self.sold_out[usize::from(shard)];
        if set.read().contains(sku) != sold_out {
            let mut set = set.write();
            if sold_out {
                set.insert(CompactString::from(sku));
            } else {
                set.remove(sku);
            }
        }
    }

    /// Whether `sku` is sold out (nothing available and nothing held),
    /// without taking its shard's lock: the fast path that answers a
    /// flash sale's losers without queueing them behind the winners.
    pub fn is_sold_out(&self, sku: &str) -> bool {
        let shard = self.shard_of(sku_hash(sku));
        self.sold_out[usize::from(shard)].read().contains(sku)
    }

    /// Sets a SKU's stock, creating the SKU if new (`customer_limit` then
    /// defaults to 0, no limit; an existing SKU keeps its limit unless one
    /// is given). Returns whether it was created.
    #[inline]
    pub fn set_stock(
        &self,
        sku: &str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> Result<(bool, SkuView), Error> {
        self.set_stock_logged(sku, stock, customer_limit)
            .map(|l| l.value)
    }

    /// [`Engine::set_stock`] with the LSN to wait on.
    pub fn set_stock_logged(
        &self,
        sku: &str,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> Result<Logged<(bool, SkuView)>, Error> {
        self.set_stock_at(sku, stock, customer_limit, self.clock.now_ms())
    }

    /// [`Engine::set_stock`] at a given time (the clock, or a replayed
    /// record's).
    pub(super) fn set_stock_at(
        &self,
        sku: &str,
        stock: u64,
        customer_limit: Option<u64>,
        now_ms: u64,
    ) -> Result<Logged<(bool, SkuView)>, Error> {
        check_ident("sku", sku)?;
        check_stock_value("stock", stock)?;
        if let Some(limit) = customer_limit {
            check_stock_value("customer_limit", limit)?;
        }
        let hash = sku_hash(sku);
        let home = self.shard_of(hash);
        let mut locked = self.lock_one(home);
        let shard = locked.home();
        match shard.find_sku(hash, sku) {
            Some(index) => {
                let state = shard.sku_mut(index);
                if stock < state.committed() {
                    return Err(Error::StockBelowCommitted {
                        sku: sku.to_owned(),
                        committed: state.committed(),
                    });
                }
                let limit = customer_limit.unwrap_or(state.customer_limit);
                if state.customer_limit == 0 && limit > 0 && state.committed() > 0 {
                    // Units are already held or sold with nobody counting
                    // them per customer: count them from the holds.
                    drop(locked);
                    return self
                        .set_stock_and_introduce_limit(sku, hash, home, stock, limit, now_ms);
                }
                let record = Change::SkuSet {
                    sku,
                    stock,
                    customer_limit: limit,
                    at_ms: now_ms,
                };
                let before = Some(state.available());
                let (view, lsn) =
                    self.commit_stock_change(&mut locked, home, record, now_ms, before, |shard| {
                        let state = shard.sku_mut(index);
                        let removing_limit = limit == 0 && state.customer_limit > 0;
                        state.stock = stock;
                        state.customer_limit = limit;
                        if removing_limit {
                            state.untallied_sold = 0;
                            shard.remove_tallies(index);
                        }
                        index
                    })?;
                Ok(Logged {
                    value: (false, view),
                    lsn,
                })
            }
            None => {
                if shard.sku_count() >= self.skus_per_shard_max {
                    return Err(Error::invalid(
                        "sku",
                        format!(
                            "the SKU table is full ({} SKUs per shard; raise engine.skus_max)",
                            self.skus_per_shard_max
                        ),
                    ));
                }
                let customer_limit = customer_limit.unwrap_or(0);
                let record = Change::SkuSet {
                    sku,
                    stock,
                    customer_limit,
                    at_ms: now_ms,
                };
                let (view, lsn) =
                    self.commit_stock_change(&mut locked, home, record, now_ms, None, |shard| {
                        let state = SkuState {
                            name: CompactString::from(sku),
                            stock,
                            held: 0,
                            sold: 0,
                            customer_limit,
                            untallied_sold: 0,
                        };
                        shard.insert_sku(hash, state, sku_hash)
                    })?;
                Ok(Logged {
                    value: (true, view),
                    lsn,
                })
            }
        }
    }

    /// The slow path of [`Engine::set_stock`]: a limit set on a SKU that has
    /// units held or sold. Every hold of the SKU lives in a shard at or below
    /// the SKU's own (a hold's home is its lowest shard), so locking shards
    /// `0..=home` in order sees them all; the retained ones (active, and
    /// confirmed ones not yet purged) are tallied per customer. Units sold
    /// through holds already purged (or due for purge at `now_ms`, so that a
    /// replay of the log, which purges nothing, counts the same) cannot be
    /// attributed and are counted as `untallied_sold`: a limit set late
    /// applies to the sales still retained.
    pub(super) fn set_stock_and_introduce_limit(
        &self,
        sku: &str,
        hash: u64,
        home: u16,
        stock: u64,
        limit: u64,
        now_ms: u64,
    ) -> Result<Logged<(bool, SkuView)>, Error> {
        let mut locked = self.lock_sorted((0..=home).collect());
        let index = locked
            .shard(home)
            .find_sku(hash, sku)
            .expect("SKUs are never removed");
        let state = locked.shard(home).sku(index);
        if stock < state.committed() {
            return Err(Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: state.committed(),
            });
        }
        // Counted before the record is logged (reading changes nothing);
        // empty if another admin call introduced a limit in between, so
        // that tallies exist already.
        let mut counted: Vec<(CompactString, u64, bool)> = Vec::new();
        let tallied_already = state.customer_limit > 0;
        if !tallied_already {
            let target = SkuRef { shard: home, index };
            for shard in &locked.guards {
                let due: Vec<u32> = shard.due_for_purge(now_ms).collect();
                for (slot, hold) in shard.holds_iter() {
                    let retained = hold.status == Status::Held
                        || (hold.status == Status::Confirmed && !due.contains(&slot));
                    if retained {
                        let confirmed = hold.status == Status::Confirmed;
                        for item in hold.items.iter().filter(|i| i.sku == target) {
                            counted.push((hold.customer.clone(), u64::from(item.qty), confirmed));
                        }
                    }
                }
            }
        }
        // Worked out before anything is logged or changed, so that a broken
        // invariant panics with the state whole.
        let retained_sold: u64 = counted.iter().filter(|c| c.2).map(|c| c.1).sum();
        let untallied_sold = match tallied_already {
            true => state.untallied_sold,
            false => state
                .sold
                .checked_sub(retained_sold)
                .expect("invariant: sold covers the confirmed holds retained"),
        };
        let record = Change::SkuSet {
            sku,
            stock,
            customer_limit: limit,
            at_ms: now_ms,
        };
        let before = Some(locked.shard(home).sku(index).available());
        let (view, lsn) =
            self.commit_stock_change(&mut locked, home, record, now_ms, before, |shard| {
                for (customer, units, _) in &counted {
                    shard.add_tally(customer_hash(customer), index, customer, *units);
                }
                shard.sku_mut(index).untallied_sold = untallied_sold;
                let state = shard.sku_mut(index);
                state.stock = stock;
                state.customer_limit = limit;
                index
            })?;
        Ok(Logged {
            value: (false, view),
            lsn,
        })
    }

    /// Adds `delta` (signed) to a SKU's stock.
    #[inline]
    pub fn adjust_stock(&self, sku: &str, delta: i64) -> Result<SkuView, Error> {
        self.adjust_stock_logged(sku, delta).map(|l| l.value)
    }

    /// [`Engine::adjust_stock`] with the LSN to wait on.
    pub fn adjust_stock_logged(&self, sku: &str, delta: i64) -> Result<Logged<SkuView>, Error> {
        check_ident("sku", sku)?;
        let now_ms = self.clock.now_ms();
        let hash = sku_hash(sku);
        let mut locked = self.lock_one(self.shard_of(hash));
        let shard = locked.home();
        let index = shard.find_sku(hash, sku).ok_or_else(|| Error::UnknownSku {
            sku: sku.to_owned(),
        })?;
        let state = shard.sku_mut(index);
        let new_stock = i128::from(state.stock) + i128::from(delta);
        if new_stock < i128::from(state.committed()) {
            return Err(Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: state.committed(),
            });
        }
        if new_stock > i128::from(STOCK_MAX) {
            return Err(Error::invalid(
                "delta",
                format!("stock would be {new_stock}, above the largest stock {STOCK_MAX}"),
            ));
        }
        let record = Change::SkuSet {
            sku,
            stock: new_stock as u64,
            customer_limit: state.customer_limit,
            at_ms: now_ms,
        };
        let before = Some(state.available());
        let (value, lsn) = self.commit_stock_change(
            &mut locked,
            self.shard_of(hash),
            record,
            now_ms,
            before,
            |shard| {
                shard.sku_mut(index).stock = new_stock as u64;
                index
            },
        )?;
        Ok(Logged { value, lsn })
    }

    pub fn sku(&self, sku: &str) -> Result<SkuView, Error> {
        check_ident("sku", sku)?;
        let hash = sku_hash(sku);
        let locked = self.lock_one(self.shard_of(hash));
        let shard = locked.shard(self.shard_of(hash));
        let index = shard.find_sku(hash, sku).ok_or_else(|| Error::UnknownSku {
            sku: sku.to_owned(),
        })?;
        Ok(sku_view(shard.sku(index)))
    }
}
