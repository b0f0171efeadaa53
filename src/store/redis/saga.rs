//! Holds across slots (sagas): settle, take, undo.

use super::*;

impl RedisStore {
    /// Settles each SKU of an ended hold across slots, then takes it off
    /// its slot's todo.
    pub(super) async fn settle_saga(
        &self,
        id: HoldId,
        r: &Reservation,
        items: &[(String, u32)],
    ) -> Result<(), Error> {
        let to = match r.status {
            Status::Confirmed => "c",
            Status::Released => "r",
            _ => "e",
        };
        self.settle_items(id, &r.customer_id, items, to).await
    }

    pub(super) async fn settle_items(
        &self,
        id: HoldId,
        customer: &str,
        items: &[(String, u32)],
        to: &str,
    ) -> Result<(), Error> {
        for (sku, _) in items {
            let settled = self
                .run(
                    Scope::Now,
                    &self.scripts.saga_settle,
                    self.saga_keys(sku, id),
                    vec![
                        self.argv_prefix.clone(),
                        customer.to_owned(),
                        to.to_owned(),
                        self.marker_ms().to_string(),
                    ],
                )
                .await?;
            if int(&settled, 0)? == 10 {
                // Fenced sagas are never committed (SAGA_FENCE): a bug.
                return Err(bad_reply(format!(
                    "hold {} ended, but its units of {sku} were undone",
                    id.text().as_str()
                )));
            }
        }
        self.run(
            Scope::Now,
            &self.scripts.todo_done,
            vec![self.todo_key(id.shard)],
            vec![self.argv_prefix.clone(), id.text().as_str().to_owned()],
        )
        .await?;
        Ok(())
    }

    /// A hold across slots (Redis Cluster): the saga. Its record first
    /// (pending), then each SKU in SKU order, each idempotent by its
    /// marker; on a refusal the taken SKUs are undone in reverse and every
    /// SKU tombstoned, then the record aborted; else committed.
    ///
    /// Run again under the same id (a command sent again, a request taking
    /// over under its key): a record that is a hold already answers its
    /// view; one undone answers [`SAGA_UNDONE`] when `resumed` (the caller
    /// tries the next id of its chain), else 503.
    pub(super) async fn reserve_saga(
        &self,
        req: &ReserveRequest<'_>,
        id: HoldId,
        ttl_ms: u64,
        passed: &str,
        resumed: bool,
    ) -> Result<Reservation, Error> {
        let slot = id.shard;
        let fill = match req.fill {
            Fill::All => "a",
            Fill::Partial => "p",
        };
        let requested: Vec<String> = req
            .items
            .iter()
            .map(|i| format!("{} {}", i.sku, i.qty))
            .collect();
        // Should this node die mid-saga, the slot is swept within the grace
        // and the saga undone.
        self.lower_due(slot, self.now_ms().saturating_add(self.saga_grace_ms()))
            .await;
        let begun = self
            .run(
                Scope::Now,
                &self.scripts.saga_begin,
                vec![self.hold_key(id), self.todo_key(slot)],
                vec![
                    self.argv_prefix.clone(),
                    id.text().as_str().to_owned(),
                    req.customer_id.to_owned(),
                    ttl_ms.to_string(),
                    fill.to_owned(),
                    requested.join(" "),
                    self.retention(),
                ],
            )
            .await?;
        if int(&begun, 0)? == 1 {
            match text(&begun, 1).as_str() {
                // Still pending: its steps are each idempotent, run on.
                "p" => {}
                "u" | "x" if resumed => return Err(Error::NotDurable(SAGA_UNDONE.into())),
                "u" | "x" => return Err(Error::NotDurable(
                    "the reservation ran past its grace and was undone; nothing is held: try again"
                        .into(),
                )),
                _ => return Store::get(self, id).await,
            }
        }
        let mut order: Vec<usize> = (0..req.items.len()).collect();
        order.sort_by_key(|&i| req.items[i].sku);
        let mut grants = vec![0u32; req.items.len()];
        let mut refusal: Option<Error> = None;
        for &i in &order {
            let item = req.items[i];
            let reply = self
                .run(
                    Scope::Now,
                    &self.scripts.saga_take,
                    {
                        let mut keys = self.saga_keys(item.sku, id);
                        keys.push(self.gate_key(item.sku));
                        keys
                    },
                    vec![
                        self.argv_prefix.clone(),
                        req.customer_id.to_owned(),
                        item.qty.to_string(),
                        fill.to_owned(),
                        self.marker_ms().to_string(),
                        passed.to_owned(),
                        item.sku.to_owned(),
                    ],
                )
                .await;
            let reply = match reply {
                Ok(reply) => reply,
                Err(e) => {
                    self.undo_saga(id, req.customer_id, &requested_items(req))
                        .await;
                    return Err(e);
                }
            };
            let code = int(&reply, 0)?;
            if code == 0 {
                grants[i] = int(&reply, 1)? as u32;
                continue;
            }
            let err = match code {
                7 => Error::NotDurable(
                    "the reservation ran past its grace and was undone; nothing is held: try again"
                        .into(),
                ),
                _ => {
                    // The same refusal shape as the one-slot script's,
                    // naming item i.
                    let mut shaped =
                        vec![Value::Integer(code as i64), Value::Integer(i as i64 + 1)];
                    shaped.extend(reply.into_iter().skip(1));
                    match Self::reserve_answer(req, id, &shaped) {
                        Err(e) => e,
                        Ok(_) => bad_reply("a refusal read as a hold".into()),
                    }
                }
            };
            if req.fill == Fill::All || code == 7 {
                self.undo_saga(id, req.customer_id, &requested_items(req))
                    .await;
                return Err(err);
            }
            refusal.get_or_insert(err);
        }
        if grants.iter().all(|&g| g == 0) {
            self.undo_saga(id, req.customer_id, &requested_items(req))
                .await;
            return Err(refusal.unwrap_or_else(|| bad_reply("nothing granted, no refusal".into())));
        }
        let granted: Vec<String> = req
            .items
            .iter()
            .zip(&grants)
            .filter(|(_, &g)| g > 0)
            .map(|(i, g)| format!("{} {g}", i.sku))
            .collect();
        let reply = self
            .run(
                Scope::Now,
                &self.scripts.saga_commit,
                vec![
                    self.hold_key(id),
                    self.todo_key(slot),
                    self.expiry_key(slot),
                ],
                vec![
                    self.argv_prefix.clone(),
                    id.text().as_str().to_owned(),
                    granted.join(" "),
                ],
            )
            .await?;
        if int(&reply, 0)? == 8 {
            self.undo_saga(id, req.customer_id, &requested_items(req))
                .await;
            return Err(Error::NotDurable(
                "the reservation ran past its grace and was undone; nothing is held: try again"
                    .into(),
            ));
        }
        view(id, &reply)
    }

    /// Undoes a saga: fences its record (`SAGA_FENCE`: from then on it
    /// cannot commit; a saga already committed is left alone), then
    /// every SKU in reverse SKU order (tombstoning those
    /// never taken), then aborts its record. Best effort: what fails here
    /// is finished by the sweep of the hold's slot after the grace.
    pub(super) async fn undo_saga(&self, id: HoldId, customer: &str, items: &[(String, u32)]) {
        // The fence first: from here the saga cannot commit; if it already
        // did, it is a hold and nothing is undone.
        let fenced = self
            .run(
                Scope::Now,
                &self.scripts.saga_fence,
                vec![self.hold_key(id)],
                vec![self.argv_prefix.clone()],
            )
            .await;
        match fenced {
            // A garbled answer undoes nothing (the safe side).
            Ok(reply) if int(&reply, 0).ok() == Some(0) => {}
            _ => return,
        }
        let mut skus: Vec<&str> = items.iter().map(|(s, _)| s.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        for sku in skus.into_iter().rev() {
            let undone = self
                .run(
                    Scope::Now,
                    &self.scripts.saga_undo,
                    self.saga_keys(sku, id),
                    vec![
                        self.argv_prefix.clone(),
                        customer.to_owned(),
                        self.marker_ms().to_string(),
                    ],
                )
                .await;
            if undone.is_err() {
                return;
            }
        }
        let _ = self
            .run(
                Scope::Now,
                &self.scripts.saga_abort,
                vec![self.hold_key(id), self.todo_key(id.shard)],
                vec![
                    self.argv_prefix.clone(),
                    id.text().as_str().to_owned(),
                    self.retention(),
                ],
            )
            .await;
    }
}
