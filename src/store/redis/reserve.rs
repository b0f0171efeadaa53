//! Reservations and the hold scripts' answers.

use super::*;

impl RedisStore {
    /// A hold script's answer: the reservation, or the refusal its code
    /// names.
    pub(super) fn reservation(&self, id: HoldId, reply: &[Value]) -> Result<Reservation, Error> {
        match int(reply, 0)? {
            0 => Ok(view(id, reply)?),
            4 => Err(engine::Error::HoldNotFound.into()),
            5 => Err(engine::Error::HoldNotActive {
                status: status(&text(reply, 1))?,
            }
            .into()),
            6 => Err(engine::Error::HoldExpired {
                expired_at_ms: int(reply, 1)?,
            }
            .into()),
            7 => Err(engine::Error::PaymentRefMismatch {
                payment_ref: text(reply, 1),
            }
            .into()),
            code => Err(bad_reply(format!("hold script code {code}"))),
        }
    }

    pub(super) async fn hold_op(
        &self,
        scope: Scope<'_>,
        script: &fred::types::scripts::Script,
        id: HoldId,
        args: Vec<String>,
    ) -> Result<Reservation, Error> {
        let (keys, args) = self.hold_op_start(id, Vec::new(), args).await;
        let reply = self.run(scope, script, keys, args).await?;
        self.hold_op_end(id, &reply).await
    }

    /// A hold script's keys and arguments: KEYS the hold, its slot's
    /// expiry index and todo, then `more`, then on a cluster the keys of
    /// the hold's SKUs this node knows; ARGV the prefix, the id, `args`.
    /// A hold across slots lowers its slot's due time first.
    pub(super) async fn hold_op_start(
        &self,
        id: HoldId,
        more: Vec<String>,
        args: Vec<String>,
    ) -> (Vec<String>, Vec<String>) {
        let saga = id.slot & SAGA_BIT != 0;
        if saga {
            // Should this node die between the end and the settling, the
            // slot is swept (and its todo finished) within the grace.
            self.lower_due(id.shard, self.now_ms().saturating_add(self.saga_grace_ms()))
                .await;
        }
        let mut all = vec![self.argv_prefix.clone(), id.text().as_str().to_owned()];
        all.extend(args);
        let mut keys = vec![
            self.hold_key(id),
            self.expiry_key(id.shard),
            self.todo_key(id.shard),
        ];
        keys.extend(more);
        if self.clustered && !saga {
            if let Some(skus) = self.hold_skus.lock().get(&id) {
                for sku in skus.iter() {
                    keys.push(self.sku_key(sku));
                    keys.push(self.tally_key(sku));
                }
            }
        }
        (keys, all)
    }

    /// A hold script's answer: the reservation, and a hold across slots
    /// settled in each slot if the script ended it.
    pub(super) async fn hold_op_end(
        &self,
        id: HoldId,
        reply: &[Value],
    ) -> Result<Reservation, Error> {
        let reservation = self.reservation(id, reply)?;
        if self.clustered && !matches!(reservation.status, Status::Held | Status::PendingPayment) {
            self.hold_skus.lock().remove(&id);
        }
        if reply.get(7).and_then(Value::as_i64) == Some(1) {
            // The keys' names (a bucket's, not its SKU's) from the record.
            let items = parse_items(&text(reply, 6))?;
            self.settle_saga(id, &reservation, &items).await?;
        }
        Ok(reservation)
    }

    /// One try at a reservation, under a fresh id in its home slot. On
    /// one Redis server the script lowers the slot's due time itself. On a
    /// cluster `P:due` is in another slot, so the node lowers it before
    /// the script (so a node dying right after the script leaves no hold
    /// that nobody sweeps; the estimate is a second early, for clocks
    /// apart) and after it, to the hold's expiry (so a sweep that ran in
    /// between cannot have lost it).
    pub(super) async fn reserve_once(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        passed: &str,
        draw: Option<Draw>,
    ) -> Result<Reservation, Error> {
        let most = req
            .items
            .iter()
            .filter_map(|i| self.buckets_of(i.sku))
            .max()
            .unwrap_or(0);
        if most == 0 {
            return self.reserve_plain(scope, req, ttl_ms, passed, draw).await;
        }
        // Each try names one bucket of every bucketed SKU; a try refused
        // for stock moves every such SKU to its next bucket, until each
        // bucket has been tried once. A keyed request starts where its
        // seed says, so run again it tries the buckets in the same order.
        let first = match draw {
            Some(d) => d.n,
            None => self.next_bucket.fetch_add(1, Relaxed),
        };
        let names_of = |attempt: u64| -> Vec<String> {
            req.items
                .iter()
                .map(|i| match self.buckets_of(i.sku) {
                    Some(n) => bucket_name(i.sku, first.wrapping_add(attempt) % u64::from(n)),
                    None => i.sku.to_owned(),
                })
                .collect()
        };
        // Taking over from a first request under the key, which may have
        // held in a later bucket than one that has stock now: its hold is
        // looked for under each try's id first.
        if let Some(draw) = draw {
            if draw.resumed {
                for attempt in 0..u64::from(most) {
                    let names = names_of(attempt);
                    let items = named_items(req, &names);
                    let (slot, across) = self.home_slot(&ReserveRequest {
                        items: &items,
                        ..*req
                    });
                    let id = self.next_id(slot, across, Some(draw));
                    match Store::get(self, id).await {
                        Err(Error::Refused(engine::Error::HoldNotFound)) => {}
                        found => return found,
                    }
                }
            }
        }
        let mut last = None;
        for attempt in 0..u64::from(most) {
            let names = names_of(attempt);
            let items = named_items(req, &names);
            let one = ReserveRequest {
                items: &items,
                ..*req
            };
            match self.reserve_plain(scope, &one, ttl_ms, passed, draw).await {
                Err(Error::Refused(engine::Error::InsufficientStock {
                    sku,
                    requested,
                    available,
                })) if self.buckets_of(&sku).is_some() => {
                    last = Some(engine::Error::InsufficientStock {
                        sku,
                        requested,
                        available,
                    });
                }
                other => return other,
            }
        }
        // The refusal names the SKU; `available` is what its last bucket
        // had (the buckets are not read at one instant).
        match last {
            Some(engine::Error::InsufficientStock {
                sku,
                requested,
                available,
            }) => Err(engine::Error::InsufficientStock {
                sku: unbucketed(&sku).to_owned(),
                requested,
                available,
            }
            .into()),
            _ => Err(bad_reply("no bucket tried".into())),
        }
    }

    pub(super) async fn reserve_plain(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        passed: &str,
        draw: Option<Draw>,
    ) -> Result<Reservation, Error> {
        let (slot, across) = self.home_slot(req);
        let id = self.next_id(slot, across, draw);
        if across {
            // A request taking over under its key whose first try was
            // undone walks the chain of ids its seed gives (`generation`).
            let Some(draw) = draw.filter(|d| d.resumed) else {
                return self.reserve_saga(req, id, ttl_ms, passed, false).await;
            };
            for generation in 0..SAGA_GENERATIONS {
                let id = self.next_id(slot, true, Some(draw.generation(generation)));
                match self.reserve_saga(req, id, ttl_ms, passed, true).await {
                    Err(Error::NotDurable(why)) if why == SAGA_UNDONE => continue,
                    other => return other,
                }
            }
            return Err(Error::NotDurable(format!(
                "{SAGA_GENERATIONS} tries under this key were undone; retry with a new key"
            )));
        }
        if !self.clustered {
            return self.reserve_script(scope, req, id, ttl_ms, passed).await;
        }
        let estimate = self.due_estimate(ttl_ms);
        let lowered = matches!(scope, Scope::Deferred(p) if p.due_at_or_before(slot, estimate));
        if !lowered {
            self.lower_due(slot, estimate).await;
        }
        let reservation = self.reserve_script(scope, req, id, ttl_ms, passed).await?;
        crate::fault::die("after-reserve-script");
        if reservation.status == Status::Held {
            self.lower_due(slot, reservation.expires_at_ms).await;
        }
        Ok(reservation)
    }

    pub(super) async fn reserve_script(
        &self,
        scope: Scope<'_>,
        req: &ReserveRequest<'_>,
        id: HoldId,
        ttl_ms: u64,
        passed: &str,
    ) -> Result<Reservation, Error> {
        let n = req.items.len();
        let mut keys = Vec::with_capacity(3 * n + 4);
        keys.extend(req.items.iter().map(|i| self.sku_key(i.sku)));
        keys.extend(req.items.iter().map(|i| self.tally_key(i.sku)));
        keys.push(self.hold_key(id));
        keys.push(self.expiry_key(id.shard));
        if !self.clustered {
            keys.push(self.key("due"));
        }
        keys.extend(req.items.iter().map(|i| self.gate_key(i.sku)));
        let mut args = Vec::with_capacity(6 + 2 * n);
        args.push(self.argv_prefix.clone());
        args.push(id.text().as_str().to_owned());
        args.push(req.customer_id.to_owned());
        args.push(ttl_ms.to_string());
        args.push(match req.fill {
            Fill::All => "a".to_owned(),
            Fill::Partial => "p".to_owned(),
        });
        args.push(n.to_string());
        args.extend(req.items.iter().map(|i| i.qty.to_string()));
        args.extend(req.items.iter().map(|i| i.sku.to_owned()));
        args.push(self.tally_ms().to_string());
        args.push(if self.clustered {
            String::new()
        } else {
            id.shard.to_string()
        });
        args.push(passed.to_owned());
        let reply = self.run(scope, &self.scripts.reserve, keys, args).await?;
        let reservation = Self::reserve_answer(req, id, &reply)?;
        if self.clustered {
            let mut skus = self.hold_skus.lock();
            if skus.len() >= HOLD_SKUS_MAX {
                skus.clear();
            }
            skus.insert(id, req.items.iter().map(|i| i.sku.to_owned()).collect());
        }
        Ok(reservation)
    }

    /// The reserve script's answer: the hold, or the refusal its code
    /// names (`{code, item index, ...}`).
    pub(super) fn reserve_answer(
        req: &ReserveRequest<'_>,
        id: HoldId,
        reply: &[Value],
    ) -> Result<Reservation, Error> {
        let reply = reply.to_vec();
        let item = |i: u64| {
            req.items
                .get((i as usize).wrapping_sub(1))
                .ok_or_else(|| bad_reply(format!("item index {i}")))
        };
        match int(&reply, 0)? {
            0 => Ok(view(id, &reply)?),
            1 => Err(engine::Error::UnknownSku {
                sku: unbucketed(item(int(&reply, 1)?)?.sku).to_owned(),
            }
            .into()),
            2 => {
                let it = item(int(&reply, 1)?)?;
                Err(engine::Error::InsufficientStock {
                    sku: it.sku.to_owned(),
                    requested: u64::from(it.qty),
                    available: int(&reply, 2)?,
                }
                .into())
            }
            3 => Err(engine::Error::CustomerLimitExceeded {
                sku: unbucketed(item(int(&reply, 1)?)?.sku).to_owned(),
                limit: int(&reply, 2)?,
                current: int(&reply, 3)?,
            }
            .into()),
            9 => Err(Error::GatedBy(text(&reply, 2))),
            code => Err(bad_reply(format!("reserve code {code}"))),
        }
    }

    /// `wait_ms`: asks again every [`WAIT_POLL`] while the refusal is
    /// stock that holds have (they may give it back), until the deadline.
    pub(super) async fn reserve_waiting(
        &self,
        req: &ReserveRequest<'_>,
        ttl_ms: u64,
        wait_ms: u64,
        waiting: &(dyn Fn() + Sync),
        passed: &str,
        draw: Option<Draw>,
    ) -> Result<Reservation, Error> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut told = false;
        loop {
            // A new id each try: a refused try left nothing under the old.
            // A keyed request keeps its drawn id (one SKU: one slot, never
            // a saga; a refused try left nothing under it).
            let result = self
                .reserve_once(Scope::Now, req, ttl_ms, passed, draw)
                .await;
            let short = matches!(
                &result,
                Err(Error::Refused(engine::Error::InsufficientStock { .. }))
            ) && req.items.len() == 1;
            if !short || tokio::time::Instant::now() + WAIT_POLL > deadline {
                return result;
            }
            // Only worth waiting if holds have the stock (not sold out).
            let view = self.sku_view(req.items[0].sku).await?;
            if view.stock.saturating_sub(view.sold) < u64::from(req.items[0].qty) {
                return result;
            }
            if !told {
                waiting();
                told = true;
            }
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}
