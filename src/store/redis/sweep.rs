//! The sweep: due slots, expiries, a slot's todo under its recovery lease.

use super::*;

/// A slot's recovery lease, as taken ([`RedisStore::lease_take`]).
pub struct Lease {
    key: String,
    token: String,
}

/// A `ZRANGEBYSCORE ... WITHSCORES` answer of slots: flat (RESP2) or in
/// pairs (RESP3).
pub(super) fn scored(reply: Value) -> Result<Vec<(u16, u64)>, Error> {
    let mut flat = Vec::new();
    for v in reply.into_array() {
        match v {
            Value::Array(pair) => flat.extend(pair),
            v => flat.push(v),
        }
    }
    flat.chunks(2)
        .map(|pair| {
            let slot = pair
                .first()
                .and_then(|v| v.as_string())
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|&s| usize::from(s) < slots::SLOTS);
            let score = pair.get(1).and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_string().and_then(|s| s.parse().ok()))
            });
            match (slot, score) {
                (Some(slot), Some(score)) if score >= 0.0 => Ok((slot, score as u64)),
                _ => Err(bad_reply(format!("P:due entry {pair:?}"))),
            }
        })
        .collect()
}

impl RedisStore {
    /// Expires the holds whose time is up, in batches, until none is due;
    /// returns how many. Every node runs this every
    /// `holds.sweep_interval_ms`: it takes the slots whose due time has
    /// come (Redis's clock) from `P:due`, sweeps `SWEEP_SLOTS` of them at
    /// a time, and sets each slot's due time to its earliest expiry left.
    pub async fn sweep(&self) -> Result<u64, Error> {
        crate::fault::inject("sweeper");
        self.look_at_clock(false).await;
        self.pay_due_owed().await;
        self.look_at_primaries(false).await;
        // Changes across stock buckets a node left half-way.
        let recovered = self.buckets_recover().await;
        let scanned = match self.clustered {
            true => self.due_scan().await,
            false => Ok(()),
        };
        let mut total = 0;
        loop {
            let due: Vec<Value> = self
                .run(
                    Scope::Now,
                    &self.scripts.due_list,
                    vec![self.key("due")],
                    vec![self.argv_prefix.clone(), DUE_BATCH.to_string()],
                )
                .await?;
            let due = scored(Value::Array(due))?;
            let full = due.len() == DUE_BATCH as usize;
            for chunk in due.chunks(SWEEP_SLOTS) {
                let swept = futures_util::future::join_all(
                    chunk
                        .iter()
                        .map(|&(slot, seen)| async move { self.sweep_slot(slot, seen).await }),
                )
                .await;
                for n in swept {
                    total += n?;
                }
            }
            if !full {
                self.sweeps_done.fetch_add(1, Relaxed);
                return scanned.and(recovered).map(|()| total);
            }
        }
    }

    /// On a cluster, `P:due` is in another slot than the holds it points
    /// at, and a failover of its primary can lose its last writes: a
    /// slot whose entry was lost would be swept only once a reservation
    /// there lowered it again. Each sweep looks at the next
    /// [`DUE_SCAN_SLOTS`] slots' expiry indexes and todos, and gives a
    /// slot with something overdue its due time again.
    pub(super) async fn due_scan(&self) -> Result<(), Error> {
        let share = slots::share(&self.due_scan_next, DUE_SCAN_SLOTS);
        let peeks = futures_util::future::join_all(share.iter().map(|&slot| {
            self.run(
                Scope::Now,
                &self.scripts.due_peek,
                vec![self.expiry_key(slot), self.todo_key(slot)],
                vec![self.argv_prefix.clone()],
            )
        }))
        .await;
        let late = self.now_ms().saturating_sub(DUE_SCAN_LATE_MS);
        let grace = self.saga_grace_ms();
        let mut lowers = Vec::new();
        for (&slot, peek) in share.iter().zip(peeks) {
            let peek = peek?;
            let at = |i: usize| {
                peek.get(i)
                    .and_then(Value::as_i64)
                    .and_then(|t| u64::try_from(t).ok())
            };
            let due = [at(0), at(1).map(|t| t.saturating_add(grace))]
                .into_iter()
                .flatten()
                .min();
            if let Some(due) = due.filter(|&due| due <= late) {
                lowers.push(self.due_at_most(slot, due));
            }
        }
        for lowered in futures_util::future::join_all(lowers).await {
            lowered?;
        }
        Ok(())
    }

    /// Sweeps one slot until nothing there is due, then sets its due time
    /// (unless a reservation lowered it meanwhile).
    pub(super) async fn sweep_slot(&self, slot: u16, seen: u64) -> Result<u64, Error> {
        let mut total = 0;
        loop {
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.sweep,
                    vec![self.expiry_key(slot), self.todo_key(slot)],
                    vec![
                        self.argv_prefix.clone(),
                        SWEEP_BATCH.to_string(),
                        self.retention(),
                        slots::tag(slot).to_owned(),
                    ],
                )
                .await?;
            total += int(&reply, 0)?;
            if int(&reply, 1)? == 0 {
                let mut earliest = reply.get(2).and_then(Value::as_i64).unwrap_or(-1);
                // Sagas to finish: holds across slots that just expired, or
                // a saga whose node died. Until the todo is empty the slot
                // stays due within the grace.
                let todo_first = reply.get(4).and_then(Value::as_i64).unwrap_or(-1);
                if todo_first >= 0 {
                    // Another node finishing it: look again soon; else what
                    // is left are sagas still within their grace.
                    let again = if self.finish_todo(slot).await? {
                        todo_first.saturating_add(self.saga_grace_ms() as i64)
                    } else {
                        self.now_ms().saturating_add(LEASE_RETRY_MS) as i64
                    };
                    earliest = if earliest < 0 {
                        again
                    } else {
                        earliest.min(again)
                    };
                }
                self.run(
                    Scope::Now,
                    &self.scripts.due_settle,
                    vec![self.key("due")],
                    vec![
                        self.argv_prefix.clone(),
                        slot.to_string(),
                        seen.to_string(),
                        earliest.to_string(),
                    ],
                )
                .await?;
                return Ok(total);
            }
        }
    }

    /// Lowers `slot`'s due time to `at_ms` for a change on the request
    /// path, which must not depend on `P:due`'s primary: a lowering that
    /// fails, or takes over [`DUE_LOWER_WAIT`], is owed instead and paid
    /// by the next sweeps (and should this node die first, the look
    /// through every slot, `due_scan`, finds the overdue slot: its holds
    /// are then swept up to a round late). For a second after a failure
    /// lowerings are owed at once, not tried.
    pub(super) async fn lower_due(&self, slot: u16, at_ms: u64) {
        let now = self.now_ms();
        if now >= self.due_down_until.load(Relaxed) {
            match tokio::time::timeout(DUE_LOWER_WAIT, self.due_at_most(slot, at_ms)).await {
                Ok(Ok(())) => return,
                _ => self
                    .due_down_until
                    .store(now.saturating_add(DUE_DOWN_MS), Relaxed),
            }
        }
        self.owe_due(slot, at_ms);
    }

    pub(super) fn owe_due(&self, slot: u16, at_ms: u64) {
        let mut owed = self.due_owed.lock();
        let at = owed.entry(slot).or_insert(at_ms);
        *at = (*at).min(at_ms);
    }

    /// Pays the owed lowerings (at the start of each sweep); what still
    /// fails stays owed.
    pub(super) async fn pay_due_owed(&self) {
        let owed: Vec<(u16, u64)> = self.due_owed.lock().drain().collect();
        if owed.is_empty() {
            return;
        }
        let paid = futures_util::future::join_all(
            owed.iter().map(|&(slot, at)| self.due_at_most(slot, at)),
        )
        .await;
        let mut failed = false;
        for (result, (slot, at)) in paid.into_iter().zip(owed) {
            if result.is_err() {
                failed = true;
                self.owe_due(slot, at);
            }
        }
        if !failed {
            self.due_down_until.store(0, Relaxed);
        }
    }

    /// Lowers `slot`'s due time to `at_ms` (never raises it; a slot
    /// already due is moved 1 ms earlier, so that a sweep under way fails
    /// its compare-and-set: `DUE_LOWER`). Not waited for on replicas: a
    /// lost lowering is found again by the cluster's look through every
    /// slot (`due_scan`).
    pub(super) async fn due_at_most(&self, slot: u16, at_ms: u64) -> Result<(), Error> {
        let _: Value = self
            .eval(
                self.pool.next(),
                &self.scripts.due_lower,
                vec![self.key("due")],
                vec![
                    self.argv_prefix.clone(),
                    slot.to_string(),
                    at_ms.to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Finishes what a slot's todo lists, under a lease (so nodes do not
    /// all do it at once; it lapses by itself if this node dies): sagas
    /// past their grace are undone, ended holds across slots settled.
    /// False if another node holds the lease.
    pub(super) async fn finish_todo(&self, slot: u16) -> Result<bool, Error> {
        let Some(lease) = self.lease_take(slot).await? else {
            return Ok(false);
        };
        let finished = self.finish_todo_leased(slot).await;
        let _ = self.lease_free(&lease).await;
        finished.map(|()| true)
    }

    /// Takes slot `slot`'s recovery lease (one node at a time finishes a
    /// slot's todo) for the saga grace; `None`: another node holds it.
    pub async fn lease_take(&self, slot: u16) -> Result<Option<Lease>, Error> {
        self.lease_on(format!("{}:{{{}}}:lease", self.prefix, slots::tag(slot)))
            .await
    }

    /// Takes the lease `key` for the grace with a token of this node's;
    /// `None`: another node has it. Freed by [`RedisStore::lease_free`].
    pub(super) async fn lease_on(&self, key: String) -> Result<Option<Lease>, Error> {
        let token = format!(
            "{}-{}",
            self.epoch,
            self.lease_tokens
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let taken: Option<String> = self
            .pool
            .next()
            .set(
                key.clone(),
                token.clone(),
                Some(Expiration::PX(self.saga_grace_ms() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        Ok(taken.map(|_| Lease { key, token }))
    }

    /// Frees `lease` if it is still ours: once it expired another node may
    /// have taken it, and deleting that one would let a third in beside
    /// it. Returns whether it was freed.
    pub async fn lease_free(&self, lease: &Lease) -> Result<bool, Error> {
        let reply = self
            .eval(
                self.pool.next(),
                &self.scripts.lease_free,
                vec![lease.key.clone()],
                vec![self.argv_prefix.clone(), lease.token.clone()],
            )
            .await
            .map_err(unavailable)?;
        Ok(int(&reply.into_array(), 0)? == 1)
    }

    pub(super) async fn finish_todo_leased(&self, slot: u16) -> Result<(), Error> {
        let listed = self
            .run(
                Scope::Now,
                &self.scripts.todo_list,
                vec![self.todo_key(slot)],
                vec![
                    self.argv_prefix.clone(),
                    SWEEP_BATCH.to_string(),
                    self.saga_grace_ms().to_string(),
                    slots::tag(slot).to_owned(),
                ],
            )
            .await?;
        for entry in listed.chunks(4) {
            let [id, status, customer, items] = entry else {
                return Err(bad_reply(format!("todo entry {entry:?}")));
            };
            let text = |v: &Value| v.as_string().unwrap_or_default();
            let id: HoldId = text(id)
                .parse()
                .map_err(|_| bad_reply(format!("todo id {id:?}")))?;
            let items = parse_items(&text(items))?;
            match text(status).as_str() {
                "p" => self.undo_saga(id, &text(customer), &items).await,
                to @ ("c" | "r" | "e") => {
                    self.settle_items(id, &text(customer), &items, to).await?
                }
                other => return Err(bad_reply(format!("todo status {other:?}"))),
            }
        }
        Ok(())
    }
}
