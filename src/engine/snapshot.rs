//! The engine's whole state as bytes, for checkpoints of the log.
//!
//! [`Engine::image`] takes every shard lock (in order), so no change is
//! half made and none is half logged: every change appends its record while
//! holding a shard lock, so the log position read under all the locks is
//! exactly the last change the image contains. [`Engine::restore`] puts an
//! image back into an empty engine; the log's records after that position
//! are then replayed as usual. Framing, checksums and files are the log's
//! business (`crate::wal::snapshot`).
//!
//! Entries, in this order: SKUs (name, stock, sold, customer_limit,
//! untallied_sold; `held` is recomputed from the holds), holds (id, status,
//! customer, items, times, order_ref, purge time when ended; ended ones in
//! purge order), tallies (sku, customer, units); then the payments' book:
//! settled events (gateway, event id, outcome, hold, forget time) and
//! payment references (gateway, ref, hold, forget time). A hold with a
//! payment is preceded by its payment entry (gateway, ref, since). An
//! image written before payments existed has none of these and reads as
//! before. The book's lock is taken before the shards' (its lock order).

use compact_str::CompactString;
use smallvec::SmallVec;

use super::change::{put_id, read_id};
use super::shard::{HeldItem, Hold, SkuRef};
use super::{sku_hash, Engine, HoldId, Payment, Status};
use crate::codec::{Put, Reader};
use crate::payments::Outcome;

const E_SKU: u8 = 1;
const E_HOLD: u8 = 2;
const E_TALLY: u8 = 3;
/// The payment of the hold entry that follows.
const E_PAYMENT: u8 = 4;
const E_SETTLED: u8 = 5;
const E_PAYMENT_REF: u8 = 6;

impl Engine {
    /// Encodes the whole state. `position` is called with every shard
    /// locked and returns the log position the image is consistent with.
    pub fn image(&self, position: impl FnOnce() -> u64) -> (u64, Vec<u8>) {
        let book = self.payments.lock();
        let all: SmallVec<[u16; 4]> = (0..self.shards.len() as u16).collect();
        let locked = self.lock_sorted(all);
        let lsn = position();
        let mut out = Vec::new();
        for shard in &locked.guards {
            for (_, sku) in shard.skus_iter() {
                out.push(E_SKU);
                put_str(&mut out, &sku.name);
                for v in [sku.stock, sku.sold, sku.customer_limit, sku.untallied_sold] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        let mut ended: Vec<(u64, HoldId, &Hold)> = Vec::new();
        for shard in &locked.guards {
            let purge_times = shard.purge_times();
            for (slot, hold) in shard.holds_iter() {
                let id = shard.hold_id(slot);
                match hold.status {
                    Status::Held => put_hold(&mut out, &locked, id, hold, 0),
                    _ => ended.push((purge_times[&slot], id, hold)),
                }
            }
        }
        ended.sort_by_key(|e| e.0);
        for (purge_at_ms, id, hold) in ended {
            put_hold(&mut out, &locked, id, hold, purge_at_ms);
        }
        for shard in &locked.guards {
            for (sku, customer, units) in shard.tallies_iter() {
                out.push(E_TALLY);
                put_str(&mut out, &shard.sku(sku).name);
                put_str(&mut out, customer);
                out.extend_from_slice(&units.to_le_bytes());
            }
        }
        let (events, refs) = book.entries();
        for (gateway, event_id, outcome, hold, forget_at_ms) in events {
            out.push(E_SETTLED);
            put_str(&mut out, gateway);
            put_str(&mut out, event_id);
            out.push(outcome.code());
            match hold {
                None => out.push(0),
                Some(id) => {
                    out.push(1);
                    put_id(&mut out, id);
                }
            }
            out.extend_from_slice(&forget_at_ms.to_le_bytes());
        }
        for (gateway, payment_ref, id, forget_at_ms) in refs {
            out.push(E_PAYMENT_REF);
            put_str(&mut out, gateway);
            put_str(&mut out, payment_ref);
            put_id(&mut out, id);
            out.extend_from_slice(&forget_at_ms.to_le_bytes());
        }
        (lsn, out)
    }

    /// Loads an image into this engine, which must be empty and have no
    /// journal. An error means the image contradicts itself.
    pub fn restore(&self, bytes: &[u8]) -> Result<(), String> {
        assert!(
            self.journal.is_none(),
            "bug: restore with a journal attached"
        );
        let mut r = Reader::new(bytes);
        let mut confirmed = hashbrown::HashMap::new();
        let mut payment: Option<Box<Payment>> = None;
        while !r.is_empty() {
            let entry = r.u8()?;
            if payment.is_some() && entry != E_HOLD {
                return Err("a payment entry not followed by its hold".to_owned());
            }
            match entry {
                E_SKU => {
                    let name = r.str()?;
                    let (stock, sold, limit, untallied) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?);
                    if self.sku(name).is_ok() {
                        return Err(format!("sku {name} twice"));
                    }
                    self.set_stock_at(name, stock, Some(limit), 0)
                        .map_err(|e| format!("sku {name}: {e}"))?;
                    let hash = sku_hash(name);
                    let mut locked = self.lock_one(self.shard_of(hash));
                    let shard = locked.home();
                    let index = shard.find_sku(hash, name).expect("just set");
                    let state = shard.sku_mut(index);
                    state.sold = sold;
                    state.untallied_sold = untallied;
                    if state.committed() > state.stock {
                        return Err(format!("sku {name}: sold {sold} above stock {stock}"));
                    }
                    let state = shard.sku(index);
                    self.note_sold_out(self.shard_of(hash), name, state);
                }
                E_HOLD => self.restore_hold(&mut r, &mut confirmed, payment.take())?,
                E_PAYMENT => {
                    payment = Some(Box::new(Payment {
                        gateway: r.str()?.into(),
                        payment_ref: r.str()?.into(),
                        since_ms: r.u64()?,
                    }))
                }
                E_SETTLED => {
                    let (gateway, event_id) = (r.str()?, r.str()?);
                    let outcome = Outcome::from_code(r.u8()?)
                        .ok_or(format!("event {event_id}: an unknown outcome"))?;
                    let hold = match r.u8()? {
                        0 => None,
                        _ => Some(read_id(&mut r)?),
                    };
                    let forget_at_ms = r.u64()?;
                    self.payments.lock().restore_event(
                        gateway,
                        event_id,
                        outcome,
                        hold,
                        forget_at_ms,
                    );
                }
                E_PAYMENT_REF => {
                    let (gateway, payment_ref, id, forget_at_ms) =
                        (r.str()?, r.str()?, read_id(&mut r)?, r.u64()?);
                    self.payments
                        .lock()
                        .restore_ref(gateway, payment_ref, id, forget_at_ms);
                }
                E_TALLY => {
                    let (sku, customer, units) = (r.str()?, r.str()?, r.u64()?);
                    let hash = sku_hash(sku);
                    let mut locked = self.lock_one(self.shard_of(hash));
                    let shard = locked.home();
                    let index = shard
                        .find_sku(hash, sku)
                        .ok_or(format!("tally of unknown sku {sku}"))?;
                    shard.restore_tally(index, customer, units);
                }
                other => return Err(format!("unknown entry type {other}")),
            }
        }
        if payment.is_some() {
            return Err("a payment entry at the end".to_owned());
        }
        Ok(())
    }

    /// `confirmed`: units of the confirmed holds restored so far, per SKU,
    /// which its `sold` (restored before any hold) must cover.
    fn restore_hold(
        &self,
        r: &mut Reader<'_>,
        confirmed: &mut hashbrown::HashMap<(u16, u32), u64>,
        payment: Option<Box<Payment>>,
    ) -> Result<(), String> {
        let id = read_id(r)?;
        let status = match r.u8()? {
            0 => Status::Held,
            1 => Status::Confirmed,
            2 => Status::Released,
            3 => Status::Expired,
            s => return Err(format!("hold {id}: unknown status {s}")),
        };
        let customer = CompactString::from(r.str()?);
        let (created_at_ms, expires_at_ms, purge_at_ms) = (r.u64()?, r.u64()?, r.u64()?);
        let order_ref = match r.u8()? {
            0 => None,
            _ => Some(CompactString::from(r.str()?)),
        };
        let n = r.u16()?;
        let mut items: SmallVec<[HeldItem; 1]> = SmallVec::new();
        let mut shards: SmallVec<[u16; 4]> = SmallVec::new();
        let mut names: SmallVec<[(&str, u64, u32); 4]> = SmallVec::new();
        for _ in 0..n {
            let (sku, qty) = (r.str()?, r.u32()?);
            let hash = sku_hash(sku);
            shards.push(self.shard_of(hash));
            names.push((sku, hash, qty));
        }
        super::check_replayed_items(id, &customer, names.iter().map(|n| (n.0, n.2)))?;
        shards.sort_unstable();
        shards.dedup();
        if shards.first() != Some(&id.shard) {
            return Err(format!(
                "hold {id} was stored in shard {}, but with engine.shards = {} its items map elsewhere: \
                 start with the engine.shards the data directory was written with",
                id.shard,
                self.shards.len()
            ));
        }
        self.check_slot(id)?;
        let mut locked = self.lock_sorted(shards);
        if locked.home().slot_in_use(id.slot) {
            return Err(format!("hold {id}: a second hold in its slot"));
        }
        for (sku, hash, qty) in names {
            let shard = self.shard_of(hash);
            let index = locked
                .shard(shard)
                .find_sku(hash, sku)
                .ok_or(format!("hold {id} names unknown sku {sku}"))?;
            if status == Status::Held {
                let state = locked.shard_mut(shard).sku_mut(index);
                state.held += u64::from(qty);
                if state.committed() > state.stock {
                    return Err(format!("hold {id}: sku {sku} over its stock"));
                }
            }
            if status == Status::Confirmed {
                let units = confirmed.entry((shard, index)).or_insert(0);
                *units += u64::from(qty);
                if *units > locked.shard(shard).sku(index).sold {
                    return Err(format!(
                        "hold {id}: sku {sku} sold less than its confirmed holds"
                    ));
                }
            }
            items.push(HeldItem {
                sku: SkuRef { shard, index },
                qty,
            });
        }
        let hold = Hold {
            epoch: id.epoch,
            status,
            customer,
            items,
            created_at_ms,
            expires_at_ms,
            order_ref,
            payment,
        };
        if status == Status::Held && hold.payment.is_some() {
            self.pending_payments
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let purge = (status != Status::Held).then_some(purge_at_ms);
        locked.home().place_hold(id, hold, purge);
        Ok(())
    }
}

fn put_hold(
    out: &mut Vec<u8>,
    locked: &super::Locked<'_>,
    id: HoldId,
    hold: &Hold,
    purge_at_ms: u64,
) {
    if let Some(p) = &hold.payment {
        out.push(E_PAYMENT);
        put_str(out, &p.gateway);
        put_str(out, &p.payment_ref);
        out.extend_from_slice(&p.since_ms.to_le_bytes());
    }
    out.push(E_HOLD);
    put_id(out, id);
    out.push(match hold.status {
        // Never stored: a pending payment is a held hold with a payment.
        Status::Held | Status::PendingPayment => 0,
        Status::Confirmed => 1,
        Status::Released => 2,
        Status::Expired => 3,
    });
    put_str(out, &hold.customer);
    for v in [hold.created_at_ms, hold.expires_at_ms, purge_at_ms] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    match &hold.order_ref {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            put_str(out, r);
        }
    }
    out.extend_from_slice(&(hold.items.len() as u16).to_le_bytes());
    for item in &hold.items {
        put_str(out, &locked.shard(item.sku.shard).sku(item.sku.index).name);
        out.extend_from_slice(&item.qty.to_le_bytes());
    }
}

/// Identifiers are at most 128 bytes (checked when they came in).
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.put_str(s)
        .expect("bug: identifiers are at most 128 bytes");
}
