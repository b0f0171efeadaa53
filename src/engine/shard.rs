//! One lock shard: the SKUs that hash to it, the holds it is home to, their
//! expiry order and the per-customer tallies of its SKUs.
//!
//! A shard is plain data behind the engine's per-shard mutex; nothing here
//! locks, blocks or allocates beyond its own tables. Invariants it keeps
//! (checked by [`Shard::check_local`] and, across shards, by
//! `Engine::check_invariants`):
//!
//! - every SKU has `held + sold <= stock <= STOCK_MAX`;
//! - `expiry` holds exactly one entry per active hold of this shard, at the
//!   position the hold's slot records, and nothing else;
//! - `retired` names every ended hold still in the table, in end order;
//! - a tally's `units` is the customer's held + owned units of that SKU and
//!   is never 0 (the entry is removed instead); only SKUs with a customer
//!   limit have tallies.

use compact_str::CompactString;
use std::collections::VecDeque;

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::expiry::ExpiryIndex;
use super::{HoldId, Status};

/// Largest stock value: 2^53 - 1, so JSON clients never lose precision.
pub const STOCK_MAX: u64 = (1 << 53) - 1;

/// Where a SKU lives: its shard and its index in that shard's SKU table.
/// SKUs are never removed, so a `SkuRef` stays valid for the engine's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SkuRef {
    pub shard: u16,
    pub index: u32,
}

/// Units of one SKU in one hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeldItem {
    pub sku: SkuRef,
    pub qty: u32,
}

#[derive(Debug)]
pub(crate) struct SkuState {
    /// Inline up to 24 bytes: a lookup compares names without a second
    /// cache miss, and a view copies it without touching a shared refcount.
    pub name: CompactString,
    pub stock: u64,
    pub held: u64,
    pub sold: u64,
    /// 0 for no limit. Only SKUs with a limit keep per-customer tallies.
    pub customer_limit: u64,
    /// Units sold before the limit was introduced whose holds had already
    /// been purged, so no customer's tally carries them. 0 without a limit.
    pub untallied_sold: u64,
}

impl SkuState {
    pub fn committed(&self) -> u64 {
        self.held + self.sold
    }

    pub fn available(&self) -> u64 {
        // held + sold <= stock is an invariant; a violation must not turn
        // into a huge "available" through wrap-around.
        self.stock
            .checked_sub(self.committed())
            .expect("invariant: held + sold <= stock")
    }
}

/// A hold, stored in its home shard: the lowest-numbered shard among its
/// items' shards, so whoever holds the home lock may lock the others in
/// ascending order without breaking the global lock order.
#[derive(Debug)]
pub(crate) struct Hold {
    pub epoch: u32,
    pub status: Status,
    pub customer: CompactString,
    pub items: SmallVec<[HeldItem; 1]>,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
    pub order_ref: Option<CompactString>,
    /// `/payment`'s record: an active hold with one is `pending_payment`.
    pub payment: Option<Box<super::Payment>>,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    /// Position in the expiry index while the hold is active.
    expiry_pos: u32,
    hold: Option<Hold>,
}

#[derive(Debug)]
struct Tally {
    sku: u32,
    customer: CompactString,
    units: u64,
}

#[derive(Debug)]
struct Retired {
    purge_at_ms: u64,
    slot: u32,
    generation: u32,
}

#[derive(Debug)]
pub(crate) struct Shard {
    index: u16,
    skus: Vec<SkuState>,
    /// Indices into `skus`, hashed by the engine's fixed SKU hash.
    sku_table: HashTable<u32>,
    holds: Vec<Slot>,
    free_slots: Vec<u32>,
    /// Holds present in `holds` (active and ended-but-retained).
    holds_len: usize,
    expiry: ExpiryIndex,
    retired: VecDeque<Retired>,
    /// Per (SKU of this shard, customer) held + owned units, hashed by
    /// [`tally_hash`].
    tallies: HashTable<Tally>,
    /// The waitlists of this shard's SKUs.
    pub(crate) waitlists: super::waitlist::Waitlists,
    /// Which of this shard's SKUs take the most reservations lately.
    pub(crate) hot: super::hot::HotSkus,
}

/// Mixes a customer's hash with a SKU index, so one customer's tallies for
/// many SKUs of a shard spread over the table.
pub(crate) fn tally_hash(customer_hash: u64, sku: u32) -> u64 {
    customer_hash ^ u64::from(sku).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Shard {
    pub fn new(index: u16) -> Self {
        Shard {
            index,
            skus: Vec::new(),
            sku_table: HashTable::new(),
            holds: Vec::new(),
            free_slots: Vec::new(),
            holds_len: 0,
            expiry: ExpiryIndex::new(),
            retired: VecDeque::new(),
            tallies: HashTable::new(),
            waitlists: Default::default(),
            hot: Default::default(),
        }
    }

    // ---- SKUs ----------------------------------------------------------

    pub fn find_sku(&self, hash: u64, name: &str) -> Option<u32> {
        self.sku_table
            .find(hash, |&i| self.skus[i as usize].name == name)
            .copied()
    }

    pub fn sku_count(&self) -> usize {
        self.skus.len()
    }

    pub fn insert_sku(
        &mut self,
        hash: u64,
        state: SkuState,
        sku_hash: impl Fn(&str) -> u64,
    ) -> u32 {
        let index =
            u32::try_from(self.skus.len()).expect("skus_max keeps the SKU table within u32");
        self.skus.push(state);
        let skus = &self.skus;
        self.sku_table
            .insert_unique(hash, index, |&i| sku_hash(&skus[i as usize].name));
        index
    }

    pub fn sku(&self, index: u32) -> &SkuState {
        &self.skus[index as usize]
    }

    pub fn sku_mut(&mut self, index: u32) -> &mut SkuState {
        &mut self.skus[index as usize]
    }

    // ---- customer tallies ---------------------------------------------

    fn find_tally(&self, customer_hash: u64, sku: u32, customer: &str) -> Option<&Tally> {
        self.tallies.find(tally_hash(customer_hash, sku), |t| {
            t.sku == sku && t.customer == customer
        })
    }

    /// The customer's held + owned units of `sku`.
    pub fn tally(&self, customer_hash: u64, sku: u32, customer: &str) -> u64 {
        self.find_tally(customer_hash, sku, customer)
            .map_or(0, |t| t.units)
    }

    pub fn add_tally(
        &mut self,
        customer_hash: u64,
        sku: u32,
        customer: &CompactString,
        units: u64,
    ) {
        let hash = tally_hash(customer_hash, sku);
        let entry = self.tallies.entry(
            hash,
            |t| t.sku == sku && t.customer == *customer,
            |t| tally_hash(customer_hash_of(t), t.sku),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().units += units,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(Tally {
                    sku,
                    customer: customer.clone(),
                    units,
                });
            }
        }
    }

    /// Forgets every tally of `sku` (its limit was removed).
    pub fn remove_tallies(&mut self, sku: u32) {
        self.tallies.retain(|t| t.sku != sku);
    }

    pub fn sub_tally(&mut self, customer_hash: u64, sku: u32, customer: &str, units: u64) {
        let hash = tally_hash(customer_hash, sku);
        let Ok(mut entry) = self
            .tallies
            .find_entry(hash, |t| t.sku == sku && t.customer == customer)
        else {
            panic!("invariant: a held unit is tallied to its customer");
        };
        let tally = entry.get_mut();
        tally.units = tally
            .units
            .checked_sub(units)
            .expect("invariant: a tally covers the units it gives back");
        if tally.units == 0 {
            entry.remove();
        }
    }

    // ---- holds ---------------------------------------------------------

    pub fn holds_len(&self) -> usize {
        self.holds_len
    }

    pub fn active_holds(&self) -> usize {
        self.expiry.len()
    }

    /// Stores a new active hold in the next free slot; returns its id
    /// (the one [`Shard::next_id`] named).
    pub fn insert_hold(&mut self, hold: Hold) -> HoldId {
        let id = self.next_id(hold.epoch);
        self.place_hold(id, hold, None);
        id
    }

    /// The one way a hold enters a slot, live, in replay and in restore:
    /// into the slot `id` names (taking it off the free list when live),
    /// growing the slab if needed. A slot that still holds an ended hold
    /// (replay: the live server had purged it to reuse the slot) is purged
    /// first. An active hold goes into the expiry index; an ended one
    /// (restore) into the retired queue, to be purged at `purge_at_ms`.
    pub fn place_hold(&mut self, id: HoldId, hold: Hold, purge_at_ms: Option<u64>) {
        if self.free_slots.last() == Some(&id.slot) {
            self.free_slots.pop();
        }
        let slot = id.slot as usize;
        if slot > self.holds.len() {
            // Replay or restore: slots below it were purged or are free.
            self.holds.resize_with(slot, || Slot {
                generation: 0,
                expiry_pos: 0,
                hold: None,
            });
        }
        if slot == self.holds.len() {
            // The next new slot (the live path whenever none is free).
            self.holds.push(Slot {
                generation: id.generation,
                expiry_pos: 0,
                hold: None,
            });
        }
        if let Some(old) = &self.holds[slot].hold {
            assert_ne!(
                old.status,
                Status::Held,
                "bug: a hold placed over an active one"
            );
            let generation = self.holds[slot].generation;
            let pos = self
                .retired
                .iter()
                .position(|r| r.slot == id.slot && r.generation == generation)
                .expect("invariant: an ended hold is in the retired queue");
            self.retired.remove(pos);
            self.holds[slot].hold = None;
            self.holds_len -= 1;
        }
        let (status, expires_at_ms) = (hold.status, hold.expires_at_ms);
        let s = &mut self.holds[slot];
        s.generation = id.generation;
        s.hold = Some(hold);
        self.holds_len += 1;
        match (status, purge_at_ms) {
            (Status::Held, _) => {
                self.holds[slot].expiry_pos = self.expiry.insert(id.slot, expires_at_ms)
            }
            (_, Some(purge_at_ms)) => self.retired.push_back(Retired {
                purge_at_ms,
                slot: id.slot,
                generation: id.generation,
            }),
            (_, None) => panic!("bug: an ended hold is placed with its purge time"),
        }
    }

    /// The id [`Shard::insert_hold`] will give the next hold, so the hold
    /// can be logged before it is made.
    pub fn next_id(&self, epoch: u32) -> HoldId {
        let slot = match self.free_slots.last() {
            Some(&slot) => slot,
            None => u32::try_from(self.holds.len()).expect("retained_max keeps slots within u32"),
        };
        HoldId {
            epoch,
            shard: self.index,
            slot,
            generation: self.holds.get(slot as usize).map_or(0, |s| s.generation),
        }
    }

    /// Whether `slot` holds a hold (active or ended).
    pub fn slot_in_use(&self, slot: u32) -> bool {
        self.holds
            .get(slot as usize)
            .is_some_and(|s| s.hold.is_some())
    }

    /// Whether `id`'s slot is free for it: empty, or (replay) holding an
    /// ended hold that the live server must have purged to reuse the slot.
    pub fn can_place(&self, id: HoldId) -> bool {
        self.holds
            .get(id.slot as usize)
            .and_then(|s| s.hold.as_ref())
            .is_none_or(|h| h.status != Status::Held)
    }

    /// Replay: every empty slot (whose generation can still go up) is free.
    pub fn rebuild_free_slots(&mut self) {
        self.free_slots = (0..self.holds.len() as u32)
            .rev()
            .filter(|&i| {
                let s = &self.holds[i as usize];
                s.hold.is_none() && s.generation < u32::MAX
            })
            .collect();
        for &slot in &self.free_slots {
            // The slot's last holder may have been purged live after the
            // log recorded it: step past its generation.
            let s = &mut self.holds[slot as usize];
            s.generation = s.generation.saturating_add(1);
        }
    }

    /// Ended holds whose retention is over at `now_ms` (purged or not).
    pub fn due_for_purge(&self, now_ms: u64) -> impl Iterator<Item = u32> + '_ {
        self.retired
            .iter()
            .take_while(move |r| r.purge_at_ms <= now_ms)
            .map(|r| r.slot)
    }

    /// The hold `id` names, if this shard still has it.
    pub fn hold_slot(&self, id: HoldId) -> Option<u32> {
        let slot = self.holds.get(id.slot as usize)?;
        match &slot.hold {
            Some(h) if slot.generation == id.generation && h.epoch == id.epoch => Some(id.slot),
            _ => None,
        }
    }

    pub fn hold(&self, slot: u32) -> &Hold {
        self.holds[slot as usize]
            .hold
            .as_ref()
            .expect("slot holds a hold")
    }

    pub fn hold_id(&self, slot: u32) -> HoldId {
        let s = &self.holds[slot as usize];
        HoldId {
            epoch: s.hold.as_ref().expect("slot holds a hold").epoch,
            shard: self.index,
            slot,
            generation: s.generation,
        }
    }

    /// Takes an active hold out of the expiry index, fixing the position of
    /// the hold that moved into its place.
    fn unindex(&mut self, slot: u32) {
        let s = &self.holds[slot as usize];
        let hold = s.hold.as_ref().expect("slot holds a hold");
        assert_eq!(
            hold.status,
            Status::Held,
            "invariant: only an active hold is indexed"
        );
        let pos = s.expiry_pos;
        if let Some(moved) = self.expiry.remove(slot, hold.expires_at_ms, pos) {
            self.holds[moved as usize].expiry_pos = pos;
        }
    }

    /// Moves an active hold's expiry.
    pub fn set_expiry(&mut self, slot: u32, expires_at_ms: u64) {
        self.unindex(slot);
        let s = &mut self.holds[slot as usize];
        s.hold.as_mut().expect("slot holds a hold").expires_at_ms = expires_at_ms;
        s.expiry_pos = self.expiry.insert(slot, expires_at_ms);
    }

    /// Records an active hold's payment (`/payment`, or the webhook that
    /// confirms it).
    pub fn set_payment(&mut self, slot: u32, payment: Box<super::Payment>) {
        let hold = self.holds[slot as usize]
            .hold
            .as_mut()
            .expect("slot holds a hold");
        hold.payment = Some(payment);
    }

    /// A late payment's hold: an ended hold becomes confirmed (the caller
    /// sold its units again). It stays in the retired queue, to be purged
    /// when it would have been.
    pub fn reconfirm(&mut self, slot: u32, order_ref: Option<CompactString>) {
        let hold = self.holds[slot as usize]
            .hold
            .as_mut()
            .expect("slot holds a hold");
        debug_assert!(matches!(hold.status, Status::Released | Status::Expired));
        hold.status = Status::Confirmed;
        hold.order_ref = order_ref;
    }

    /// Marks an active hold ended (`to` is confirmed, released or expired):
    /// out of the expiry index, into the retired queue to be purged at
    /// `purge_at_ms`. The caller has already moved the stock.
    pub fn end_hold(
        &mut self,
        slot: u32,
        to: Status,
        order_ref: Option<CompactString>,
        purge_at_ms: u64,
    ) {
        debug_assert_ne!(to, Status::Held);
        self.unindex(slot);
        let s = &mut self.holds[slot as usize];
        let hold = s.hold.as_mut().expect("slot holds a hold");
        hold.status = to;
        hold.order_ref = order_ref;
        self.retired.push_back(Retired {
            purge_at_ms,
            slot,
            generation: s.generation,
        });
    }

    /// Active holds whose expiry is at or before `now_ms`, at most `max`.
    pub fn expired_slots(&mut self, now_ms: u64, max: usize) -> Vec<u32> {
        let holds = &self.holds;
        self.expiry.due(now_ms, max, |slot| {
            holds[slot as usize]
                .hold
                .as_ref()
                .expect("indexed slot holds a hold")
                .expires_at_ms
        })
    }

    /// Frees up to `max` ended holds whose retention has passed; returns
    /// how many.
    pub fn purge(&mut self, now_ms: u64, max: usize) -> usize {
        let mut purged = 0;
        while let Some(r) = self.retired.front() {
            if r.purge_at_ms > now_ms || purged == max {
                break;
            }
            let r = self.retired.pop_front().expect("front exists");
            let s = &mut self.holds[r.slot as usize];
            assert_eq!(
                s.generation, r.generation,
                "invariant: a retired slot is not reused before purge"
            );
            let hold = s
                .hold
                .take()
                .expect("invariant: a retired slot holds its hold until purge");
            debug_assert_ne!(hold.status, Status::Held);
            self.holds_len -= 1;
            // A slot whose generation would wrap is never reused, so an id
            // is never issued twice in one epoch.
            if let Some(next) = s.generation.checked_add(1) {
                s.generation = next;
                self.free_slots.push(r.slot);
            }
            purged += 1;
        }
        purged
    }

    pub fn holds_iter(&self) -> impl Iterator<Item = (u32, &Hold)> + '_ {
        self.holds
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.hold.as_ref().map(|h| (i as u32, h)))
    }

    pub fn skus_iter(&self) -> impl Iterator<Item = (u32, &SkuState)> + '_ {
        self.skus.iter().enumerate().map(|(i, s)| (i as u32, s))
    }

    /// Every tally: SKU index, customer, units.
    pub fn tallies_iter(&self) -> impl Iterator<Item = (u32, &str, u64)> + '_ {
        self.tallies
            .iter()
            .map(|t| (t.sku, t.customer.as_str(), t.units))
    }

    /// When each ended hold is to be purged, by slot.
    pub fn purge_times(&self) -> hashbrown::HashMap<u32, u64> {
        self.retired
            .iter()
            .map(|r| (r.slot, r.purge_at_ms))
            .collect()
    }

    /// Restore: a tally as it was.
    pub fn restore_tally(&mut self, sku: u32, customer: &str, units: u64) {
        let customer = CompactString::from(customer);
        self.add_tally(super::customer_hash(&customer), sku, &customer, units);
    }

    /// Sum of tallied units per SKU index of this shard.
    pub fn tally_sums(&self) -> Vec<u64> {
        let mut sums = vec![0u64; self.skus.len()];
        for t in self.tallies.iter() {
            assert!(t.units > 0, "invariant: no empty tally");
            sums[t.sku as usize] += t.units;
        }
        sums
    }

    /// Checks what this shard can check alone; panics on a violation.
    pub fn check_local(&self) {
        for (_, sku) in self.skus_iter() {
            assert!(
                sku.committed() <= sku.stock && sku.stock <= STOCK_MAX,
                "invariant broken on sku {}: held {} + sold {} > stock {}",
                sku.name,
                sku.held,
                sku.sold,
                sku.stock
            );
        }
        let mut active = 0;
        let mut ended = 0;
        for (_, hold) in self.holds_iter() {
            assert!(!hold.items.is_empty(), "invariant: a hold holds something");
            assert!(
                hold.items
                    .iter()
                    .all(|i| i.qty > 0 && i.sku.shard >= self.index),
                "invariant: a hold's home is the lowest shard of its items"
            );
            if hold.status == Status::Held {
                active += 1;
            } else {
                ended += 1;
            }
        }
        assert_eq!(
            active,
            self.expiry.len(),
            "invariant: expiry index = active holds"
        );
        assert!(
            self.expiry.consistent(),
            "invariant: expiry cursor and empty count"
        );
        for (bucket, slot, pos) in self.expiry.entries() {
            let s = &self.holds[slot as usize];
            let hold = s
                .hold
                .as_ref()
                .expect("invariant: indexed slot holds a hold");
            assert!(
                hold.status == Status::Held
                    && s.expiry_pos == pos
                    && ExpiryIndex::in_bucket(bucket, hold.expires_at_ms),
                "invariant: expiry entry of slot {slot} matches its active hold"
            );
        }
        assert_eq!(
            ended,
            self.retired.len(),
            "invariant: retired queue = ended holds"
        );
        assert_eq!(
            active + ended,
            self.holds_len,
            "invariant: holds_len counts the table"
        );
        for &slot in &self.free_slots {
            assert!(
                self.holds[slot as usize].hold.is_none(),
                "invariant: free slots are empty"
            );
        }
        for t in self.tallies.iter() {
            assert!(
                (t.sku as usize) < self.skus.len(),
                "invariant: tally names a SKU of its shard"
            );
        }
    }
}

/// Tallies are rehashed on table growth from their own contents; the
/// customer part of the hash must be recomputable, so it comes from the
/// engine-wide customer hasher, which is fixed per process.
fn customer_hash_of(t: &Tally) -> u64 {
    super::customer_hash(&t.customer)
}
