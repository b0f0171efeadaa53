//! Key names and ids, built in one place.

use super::*;

impl RedisStore {
    pub(super) fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    pub(super) fn sku_key(&self, sku: &str) -> String {
        format!("{}:{{{sku}}}", self.prefix)
    }

    pub(super) fn tally_key(&self, sku: &str) -> String {
        format!("{}:{{{sku}}}:c", self.prefix)
    }

    /// A hold's record, in its slot (the id carries the slot).
    pub(super) fn hold_key(&self, id: HoldId) -> String {
        format!(
            "{}:{{{}}}:h:{}",
            self.prefix,
            slots::tag(id.shard),
            id.text().as_str()
        )
    }

    /// A slot's expiry index.
    pub(super) fn expiry_key(&self, slot: u16) -> String {
        format!("{}:{{{}}}:x", self.prefix, slots::tag(slot))
    }

    pub(super) fn idem_key(&self, key: &str) -> String {
        format!("{}:k:{key}", self.prefix)
    }

    /// The set of live idempotency keys `idem_key` counts among, and how
    /// many it may hold. One server: one set, `idempotency.keys_max`. A
    /// cluster: the set of the key's own slot (a script reaches one
    /// slot), `keys_max / 16384 × 2 + 8` each, room for the slots' uneven
    /// shares, so the whole is at most about twice `keys_max`.
    pub(super) fn idem_live(&self, idem_key: &str) -> (String, usize) {
        let max = self.options.idempotency_keys_max;
        if self.clustered {
            let tag = slots::tag(slots::slot(idem_key));
            let per_slot = max.div_ceil(slots::SLOTS) * 2 + 8;
            (format!("{}:{{{tag}}}:kl", self.prefix), per_slot)
        } else {
            (format!("{}:kl", self.prefix), max)
        }
    }

    pub(super) fn retention(&self) -> String {
        // PEXPIRE 0 would delete at once; an ended hold stays readable at
        // least a moment, as the embedded store's until the next purge.
        self.options.retention_ms.max(1).to_string()
    }

    /// A name for one change no other node or start uses: what a command
    /// sent again after a reconnect is recognised by.
    pub(super) fn op_id(&self) -> String {
        format!("{}-{}", self.epoch, self.next_op.fetch_add(1, Relaxed))
    }

    /// A new hold id whose record lives in `slot`; `saga` marks a hold
    /// across slots (its ending must be settled SKU by SKU).
    pub(super) fn next_id(&self, slot: u16, saga: bool, draw: Option<Draw>) -> HoldId {
        let (epoch, n) = match draw {
            Some(d) => (d.epoch, d.n),
            None => (self.epoch, self.next_hold.fetch_add(1, Relaxed)),
        };
        let high = (n >> 32) as u32 & !SAGA_BIT | if saga { SAGA_BIT } else { 0 };
        HoldId::from_parts(epoch, slot, high, n as u32)
    }

    /// For a keyed request (a seeded `Pending`): the number its op whose
    /// content is `content` draws, with the start number of the node that
    /// first took the key (the seed is that node's token, `EPOCH-N`), so
    /// that any node running it again makes the same id.
    pub(super) fn draw(&self, scope: Scope<'_>, content: impl FnOnce() -> String) -> Option<Draw> {
        let Scope::Deferred(pending) = scope else {
            return None;
        };
        let epoch = pending.seed()?.split('-').next()?.parse().ok()?;
        Some(Draw {
            epoch,
            n: pending.draw(&content())?,
            resumed: pending.is_resumed(),
        })
    }

    /// An adjust's operation id: drawn from a keyed request's seed, or
    /// this node's next.
    pub(super) fn adjust_op(&self, scope: Scope<'_>, sku: &str, delta: i64) -> String {
        match self.draw(scope, || format!("adjust {sku} {delta}")) {
            Some(d) => format!("{}-k{:x}", d.epoch, d.n),
            None => self.op_id(),
        }
    }

    /// The slot a reservation's hold lives in (its first SKU's), and
    /// whether its SKUs span slots on a cluster (then it is a saga).
    pub(super) fn home_slot(&self, req: &ReserveRequest<'_>) -> (u16, bool) {
        // Validated: a reservation has at least one item.
        let home = req.items.first().map_or(0, |i| slots::slot(i.sku));
        let across = self.clustered && req.items.iter().any(|i| slots::slot(i.sku) != home);
        (home, across)
    }

    /// A slot's list of sagas to finish.
    /// The marker of adjust `op` on `sku` (a SKU or one of its buckets).
    pub(super) fn adjust_mark_key(&self, sku: &str, op: &str) -> String {
        format!("{}:{{{sku}}}:a:{op}", self.prefix)
    }

    /// The journal of changes across stock buckets under way.
    pub(super) fn bucket_journal_key(&self) -> String {
        format!("{}:{{bj}}", self.prefix)
    }

    pub(super) fn todo_key(&self, slot: u16) -> String {
        format!("{}:{{{}}}:todo", self.prefix, slots::tag(slot))
    }

    /// The keys a saga's step on one SKU touches: the SKU's hash, its
    /// tally, the saga's marker on it.
    pub(super) fn saga_keys(&self, sku: &str, id: HoldId) -> Vec<String> {
        vec![
            self.sku_key(sku),
            self.tally_key(sku),
            self.marker_key(sku, id),
        ]
    }

    /// A saga's marker on one SKU.
    pub(super) fn marker_key(&self, sku: &str, id: HoldId) -> String {
        format!("{}:{{{sku}}}:r:{}", self.prefix, id.text().as_str())
    }

    /// How long a saga may run before any node undoes it as abandoned:
    /// far past what a live node takes (a few commands, each bounded by
    /// the command timeout).
    /// A hold of `ttl_ms` made now expires about then, as this node's
    /// clock puts it, made [`DUE_ESTIMATE_EARLY_MS`] early for clocks apart:
    /// what `P:due` is lowered to before the script that sets the expiry.
    pub(super) fn due_estimate(&self, ttl_ms: u64) -> u64 {
        self.now_ms()
            .saturating_add(ttl_ms)
            .saturating_sub(DUE_ESTIMATE_EARLY_MS)
    }

    pub(super) fn saga_grace_ms(&self) -> u64 {
        self.options
            .redis
            .command_timeout_ms
            .saturating_mul(4)
            .max(5_000)
    }

    /// How long a saga's marker is kept: as long as its hold can live,
    /// plus its retention and the grace.
    pub(super) fn marker_ms(&self) -> u64 {
        self.tally_ms().saturating_add(self.saga_grace_ms())
    }

    pub(super) fn tally_ms(&self) -> u64 {
        self.tunables
            .load()
            .max_ttl_ms
            .saturating_add(self.options.retention_ms)
            .max(1)
    }
}
