//! Replay: applying records read back from the log, at the time each
//! records (no clock). A record that contradicts the state (or names a
//! hold no live engine could have made) is an error, never a panic.

#[allow(unused_imports)]
use super::*;

/// The items of a hold read back from the log or a checkpoint must be
/// what a live reservation could have made: at least one, each SKU once
/// with a quantity of at least 1, the customer a valid identifier.
/// Anything else is damage, refused before it reaches a shard (whose
/// invariants assume it).
pub(super) fn check_replayed_items<'a>(
    id: HoldId,
    customer: &str,
    items: impl Iterator<Item = (&'a str, u32)> + Clone,
) -> Result<(), String> {
    if !is_valid_ident(customer) {
        return Err(format!(
            "hold {id}: customer {customer:?} is not an identifier"
        ));
    }
    let mut n = 0;
    for (i, (sku, qty)) in items.clone().enumerate() {
        n += 1;
        if qty == 0 || !is_valid_ident(sku) {
            return Err(format!("hold {id}: item {sku:?} x {qty} cannot be held"));
        }
        if items.clone().take(i).any(|(other, _)| other == sku) {
            return Err(format!("hold {id}: sku {sku} twice"));
        }
    }
    if n == 0 {
        return Err(format!("hold {id} holds nothing"));
    }
    Ok(())
}

impl Engine {
    /// Replays one record read back from the log: an engine change is
    /// decoded and applied; a record of another owner's kind (a stored
    /// answer) is skipped. For replays of the engine alone (the server
    /// hands each record to its owner: `crate::store::embedded::replay`).
    pub fn replay_frame(&self, frame: &crate::wal::Frame<'_>) -> Result<(), String> {
        if !Change::is_kind(frame.kind) {
            return Ok(());
        }
        let change = Change::decode(frame.kind, frame.payload)
            .map_err(|e| format!("a record of kind {}: {e}", frame.kind))?;
        self.apply(&change)
    }

    /// Applies one record read back from the log, at the time it records.
    /// The journal must not be attached yet. An error means the log
    /// contradicts itself (or was written with another `engine.shards`).
    pub fn apply(&self, record: &Change<'_>) -> Result<(), String> {
        assert!(
            self.journal.is_none(),
            "bug: replay with a journal attached"
        );
        match record {
            Change::SkuSet {
                sku,
                stock,
                customer_limit,
                at_ms,
            } => self
                .set_stock_at(sku, *stock, Some(*customer_limit), *at_ms)
                .map(drop)
                .map_err(|e| e.to_string()),
            Change::HoldCreated {
                id,
                customer,
                items,
                created_at_ms,
                expires_at_ms,
            } => self.replay_created(*id, customer, items, *created_at_ms, *expires_at_ms),
            Change::HoldConfirmed {
                id,
                order_ref,
                at_ms,
            } => self.replay_end(*id, Status::Confirmed, *order_ref, *at_ms),
            Change::HoldReleased { id, at_ms } => {
                self.replay_end(*id, Status::Released, None, *at_ms)
            }
            Change::HoldExpired { id, at_ms } => {
                self.replay_end(*id, Status::Expired, None, *at_ms)
            }
            Change::HoldExtended {
                id, expires_at_ms, ..
            } => {
                let (mut locked, slot) =
                    self.lock_hold(*id).map_err(|_| format!("no hold {id}"))?;
                if locked.home().hold(slot).status != Status::Held {
                    return Err(format!("hold {id} is extended but not active"));
                }
                locked.home().set_expiry(slot, *expires_at_ms);
                Ok(())
            }
            Change::HoldPayment { .. } => self.replay_payment(record),
            Change::PaymentSettled { .. } => self.replay_settled(record),
        }
    }

    pub(super) fn replay_created(
        &self,
        id: HoldId,
        customer: &str,
        items: &[(&str, u32)],
        created_at_ms: u64,
        expires_at_ms: u64,
    ) -> Result<(), String> {
        check_replayed_items(id, customer, items.iter().copied())?;
        let mut lines: SmallVec<[(u16, u64, &str, u32); 4]> = SmallVec::new();
        for &(sku, qty) in items {
            let hash = sku_hash(sku);
            lines.push((self.shard_of(hash), hash, sku, qty));
        }
        let mut shard_ids: SmallVec<[u16; 4]> = lines.iter().map(|l| l.0).collect();
        shard_ids.sort_unstable();
        shard_ids.dedup();
        if shard_ids.first() != Some(&id.shard) {
            return Err(format!(
                "hold {id} was stored in shard {}, but with engine.shards = {} its items map to shard {:?}: \
                 start with the engine.shards the data directory was written with",
                id.shard,
                self.shards.len(),
                shard_ids.first()
            ));
        }
        self.check_slot(id)?;
        let mut locked = self.lock_sorted(shard_ids);
        if !locked.home().can_place(id) {
            return Err(format!("hold {id}: its slot holds an active hold"));
        }
        let mut held: SmallVec<[HeldItem; 1]> = SmallVec::new();
        for &(shard, hash, sku, qty) in &lines {
            let index = locked
                .shard(shard)
                .find_sku(hash, sku)
                .ok_or_else(|| format!("hold {id} names sku {sku}, never set"))?;
            if locked.shard(shard).sku(index).available() < u64::from(qty) {
                return Err(format!("hold {id} holds more of {sku} than is available"));
            }
            held.push(HeldItem {
                sku: SkuRef { shard, index },
                qty,
            });
        }
        let customer = CompactString::from(customer);
        for item in &held {
            let shard = locked.shard_mut(item.sku.shard);
            let state = shard.sku_mut(item.sku.index);
            state.held += u64::from(item.qty);
            // What the live reservation told, told again (the event feed
            // rebuilt after a restart).
            if let (Some(sink), 0) = (self.events(), state.available()) {
                sink.emit(
                    self.replay_lsn(),
                    created_at_ms,
                    Event::StockOut { sku: &state.name },
                );
            }
            if state.customer_limit > 0 {
                shard.add_tally(
                    customer_hash(&customer),
                    item.sku.index,
                    &customer,
                    u64::from(item.qty),
                );
            }
        }
        let hold = Hold {
            epoch: id.epoch,
            status: Status::Held,
            customer,
            items: held,
            created_at_ms,
            expires_at_ms,
            order_ref: None,
            payment: None,
        };
        locked.home().place_hold(id, hold, None);
        Ok(())
    }

    pub(super) fn replay_end(
        &self,
        id: HoldId,
        to: Status,
        order_ref: Option<&str>,
        at_ms: u64,
    ) -> Result<(), String> {
        let (mut locked, slot) = self.lock_hold(id).map_err(|_| format!("no hold {id}"))?;
        if locked.home().hold(slot).status != Status::Held {
            return Err(format!("hold {id} ends as {to} but is not active"));
        }
        locked.lock_items_of(self, slot);
        let lsn = self.replay_lsn();
        let _ = self.end(
            &mut locked,
            slot,
            to,
            order_ref.map(CompactString::from),
            at_ms,
            lsn,
        );
        Ok(())
    }

    /// A slot a logged or checkpointed hold names must be one this engine
    /// could have given out: past the shard's share of `holds.retained_max`
    /// it is damage (and would ask for a slab of that size).
    pub(super) fn check_slot(&self, id: HoldId) -> Result<(), String> {
        if id.slot as usize >= self.holds_per_shard_max {
            return Err(format!(
                "hold {id}: slot {} is past the {} holds a shard may have (holds.retained_max)",
                id.slot, self.holds_per_shard_max
            ));
        }
        Ok(())
    }

    /// Ends a replay: slots left empty become free for new holds.
    pub fn finish_replay(&self) {
        self.set_replay_lsn(0);
        for shard in self.shards.iter() {
            shard.0.lock().rebuild_free_slots();
        }
    }
}
