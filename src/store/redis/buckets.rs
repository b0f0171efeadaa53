//! SKUs spread over stock buckets; adjust by op id.
//!
//! A PUT or a cut of such a SKU changes several buckets, one script each
//! (on a cluster they live on different primaries). Each is written in
//! the journal `P:{bj}` before its first bucket and freed after its last,
//! so a node that stops half-way (killed, partitioned, too slow) leaves a
//! journal entry, and the sweep of any node completes it once it is older
//! than the grace: a PUT is finished (or, if the stock is now below what
//! is committed, every bucket is put back as it was), a cut is undone
//! bucket by bucket, each step fenced so that the stopped node's late
//! steps are refused. The node that began a change starts no step after
//! half the grace, and each step is bounded by the command timeout, so
//! the sweep never works beside it.

use std::time::Instant;

use super::journal::Begun;
use super::*;

/// The journal's fields: a PUT of a SKU, or a cut of a SKU by an op.
const SET_FIELD: &str = "s|";
const CUT_FIELD: &str = "c|";

/// How an attempt at a cut across buckets ended, when it did not finish.
enum CutEnd {
    /// The buckets together have not enough available: the steps taken
    /// (bucket, round).
    Short(Vec<(u64, usize)>),
    /// This op was undone by a sweep while this node was still at it.
    Fenced,
    /// A fault (Redis unreachable, a deadline, a test's halt): the journal
    /// stays for the sweep.
    Failed(Error),
}

/// One step of a cut: what it applied (negative), or that it was undone.
enum Step {
    Applied(i64),
    Undone,
}

impl RedisStore {
    /// The buckets of `sku` (the SKU itself or one of its buckets' names),
    /// if it is spread over stock buckets.
    pub(super) fn buckets_of(&self, sku: &str) -> Option<u32> {
        self.options.redis.buckets.get(unbucketed(sku)).copied()
    }

    /// [`Store::adjust_stock`] as operation `op`: run twice (a command
    /// sent again), the delta lands once.
    #[doc(hidden)]
    pub async fn adjust_once(
        &self,
        scope: Scope<'_>,
        sku: &str,
        delta: i64,
        op: &str,
    ) -> Result<SkuView, Error> {
        let reply = self.run_adjust(scope, sku, delta, op).await?;
        match reply.first().and_then(Value::as_i64) {
            Some(0) => sku_view(
                sku,
                int(&reply, 1)?,
                int(&reply, 2)?,
                int(&reply, 3)?,
                int(&reply, 4)?,
            ),
            Some(-1) => Err(engine::Error::StockBelowCommitted {
                sku: sku.to_owned(),
                committed: int(&reply, 1)?,
            }
            .into()),
            Some(-2) => Err(engine::Error::UnknownSku {
                sku: sku.to_owned(),
            }
            .into()),
            Some(-3) => Err(engine::Error::invalid(
                "delta",
                format!(
                    "stock would be {}, above the largest stock {STOCK_MAX}",
                    int(&reply, 1)?
                ),
            )
            .into()),
            Some(-4) => Err(Error::NotDurable(format!(
                "adjust {op} of {sku} was undone: it stopped half-way across stock buckets; nothing of it stands"
            ))),
            other => Err(bad_reply(format!("adjust code {other:?}"))),
        }
    }

    /// The adjust script on `sku` (a SKU or a bucket) as operation `op`.
    async fn run_adjust(
        &self,
        scope: Scope<'_>,
        sku: &str,
        delta: i64,
        op: &str,
    ) -> Result<Vec<Value>, Error> {
        self.run(
            scope,
            &self.scripts.adjust,
            vec![self.sku_key(sku), self.adjust_mark_key(sku, op)],
            vec![
                self.argv_prefix.clone(),
                delta.to_string(),
                STOCK_MAX.to_string(),
                ADJUST_MARK_MS.to_string(),
            ],
        )
        .await
    }

    /// Each bucket's (stock, held, sold), `None` for one not made yet,
    /// read one after another (not at one instant).
    pub(super) async fn read_buckets(
        &self,
        sku: &str,
        n: u32,
    ) -> Result<Vec<Option<(u64, u64, u64)>>, Error> {
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..u64::from(n) {
            out.push(self.read_buckets_one(sku, i).await?);
        }
        Ok(out)
    }

    /// Bucket `i` of `sku`'s (stock, held, sold), `None` if not made yet.
    async fn read_buckets_one(&self, sku: &str, i: u64) -> Result<Option<(u64, u64, u64)>, Error> {
        let v: Vec<Option<String>> = self
            .pool
            .next()
            .hmget(
                self.sku_key(&bucket_name(sku, i)),
                vec!["stock", "held", "sold"],
            )
            .await
            .map_err(unavailable)?;
        let num = |j: usize| {
            v.get(j)
                .and_then(|x| x.as_deref())
                .and_then(|x| x.parse().ok())
        };
        Ok(match (num(0), num(1), num(2)) {
            (Some(a), Some(b), Some(c)) => Some((a, b, c)),
            _ => None,
        })
    }

    /// `PUT /v1/skus/{sku}` for a SKU spread over `n` buckets: what is not
    /// held or sold is shared out evenly (see [`Self::share_out`]), in the
    /// journal while under way. Refused half-way, every bucket is put
    /// back as it was.
    pub(super) async fn set_stock_buckets(
        &self,
        sku: &str,
        n: u32,
        stock: u64,
        customer_limit: Option<u64>,
    ) -> Result<(bool, SkuView), Error> {
        if customer_limit.is_some_and(|l| l > 0) {
            return Err(engine::Error::invalid(
                "customer_limit",
                format!(
                    "sku {sku} is spread over {n} stock buckets (store.redis.buckets): a per-customer limit needs its tallies in one place, which buckets give up"
                ),
            )
            .into());
        }
        let before: Vec<Option<u64>> = self
            .read_buckets(sku, n)
            .await?
            .iter()
            .map(|b| b.map(|(stock, _, _)| stock))
            .collect();
        let field = format!("{SET_FIELD}{sku}");
        let value = format!(
            "{stock}|{}",
            before
                .iter()
                .map(|b| b.map_or(String::new(), |s| s.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        );
        let stored = self.journal_put(&field, &value).await?;
        let deadline = self.bucket_deadline();
        match self.share_out(sku, n, stock, Some(deadline)).await {
            Ok(()) => {}
            Err(e @ Error::Refused(_)) => {
                self.restore_buckets(sku, n, &before).await?;
                self.journal_free(&field, &stored, "").await?;
                return Err(e);
            }
            // The journal stays: the sweep finishes it.
            Err(e) => return Err(e),
        }
        self.journal_free(&field, &stored, "").await?;
        let created = before.iter().all(Option::is_none);
        Ok((created, self.sku_view(sku).await?))
    }

    /// Sets each of `sku`'s buckets to what it has committed plus an even
    /// share of `stock` less everything committed. Each bucket is set by
    /// the set-stock script, which refuses a stock below what that bucket
    /// has committed, in which case (a reservation came in between) it is
    /// all read and shared again. No step starts after `deadline`.
    async fn share_out(
        &self,
        sku: &str,
        n: u32,
        stock: u64,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        for _ in 0..BUCKET_TRIES {
            let buckets = self.read_buckets(sku, n).await?;
            let committed: Vec<u64> = buckets
                .iter()
                .map(|b| b.map_or(0, |(_, held, sold)| held + sold))
                .collect();
            let total: u64 = committed.iter().sum();
            if stock < total {
                return Err(engine::Error::StockBelowCommitted {
                    sku: sku.to_owned(),
                    committed: total,
                }
                .into());
            }
            let free = stock - total;
            let mut raced = false;
            for (i, c) in committed.iter().enumerate() {
                self.bucket_step(deadline)?;
                let i = i as u64;
                let share = free / u64::from(n) + u64::from(i < free % u64::from(n));
                if !self.set_bucket(sku, i, c + share).await? {
                    raced = true;
                    break;
                }
            }
            if !raced {
                return Ok(());
            }
        }
        Err(Error::NotDurable(format!(
            "sku {sku}: reservations kept changing its buckets while the stock was shared out ({BUCKET_TRIES} tries); send it again"
        )))
    }

    /// Sets bucket `i` of `sku` to `stock`; `false`: refused, below what
    /// it has committed.
    async fn set_bucket(&self, sku: &str, i: u64, stock: u64) -> Result<bool, Error> {
        let reply = self
            .run(
                Scope::Now,
                &self.scripts.set_stock,
                vec![self.sku_key(&bucket_name(sku, i))],
                vec![self.argv_prefix.clone(), stock.to_string(), String::new()],
            )
            .await?;
        Ok(reply.first().and_then(Value::as_i64) != Some(-1))
    }

    /// Puts each bucket back to its stock in `before` (a bucket that did
    /// not exist, to nothing), never below what it has committed now.
    async fn restore_buckets(
        &self,
        sku: &str,
        n: u32,
        before: &[Option<u64>],
    ) -> Result<(), Error> {
        for i in 0..u64::from(n) {
            let was = before.get(i as usize).copied().flatten().unwrap_or(0);
            for _ in 0..BUCKET_TRIES {
                let now = self.read_buckets_one(sku, i).await?;
                let committed = now.map_or(0, |(_, held, sold)| held + sold);
                if now.is_none() && was == 0 {
                    break;
                }
                if self.set_bucket(sku, i, was.max(committed)).await? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// `POST /v1/skus/{sku}/adjust` for a SKU spread over `n` buckets. A
    /// rise goes to one bucket; a cut takes what each bucket has available
    /// (each step the adjust script, once per step id `OP.BUCKET.ROUND`),
    /// in the journal while under way; if the buckets together have not
    /// enough, the steps taken are undone and the cut refused. An op
    /// undone by a sweep (its node stopped half-way) runs again, fresh, as
    /// `OP~`; one done before answers as it is now.
    pub(super) async fn adjust_buckets(
        &self,
        sku: &str,
        n: u32,
        delta: i64,
        op: &str,
    ) -> Result<SkuView, Error> {
        if delta >= 0 {
            let i = self.next_bucket.fetch_add(1, Relaxed) % u64::from(n);
            self.adjust_once(Scope::Now, &bucket_name(sku, i), delta, op)
                .await
                .map_err(|e| match e {
                    Error::Refused(engine::Error::UnknownSku { .. }) => engine::Error::UnknownSku {
                        sku: sku.to_owned(),
                    }
                    .into(),
                    other => other,
                })?;
            return self.sku_view(sku).await;
        }
        if self.read_buckets(sku, n).await?.iter().all(Option::is_none) {
            return Err(engine::Error::UnknownSku {
                sku: sku.to_owned(),
            }
            .into());
        }
        let mut op = op.to_owned();
        for _ in 0..BUCKET_TRIES {
            let field = format!("{CUT_FIELD}{sku}|{op}");
            let stored = match self.journal_begin(&field, &op, &n.to_string()).await? {
                Begun::Now(stored) => stored,
                Begun::DoneBefore => return self.sku_view(sku).await,
                Begun::Undone => {
                    op.push('~');
                    continue;
                }
                Begun::UnderWay => {
                    return Err(Error::NotDurable(format!(
                        "adjust {op} of {sku} is under way, or stopped half-way across its stock buckets and is undone by the sweep within {} ms: send it again then",
                        self.saga_grace_ms() * 2
                    )))
                }
            };
            let deadline = self.bucket_deadline();
            return match self.cut(sku, n, delta.unsigned_abs(), &op, deadline).await {
                Ok(()) => {
                    self.journal_free(&field, &stored, "done").await?;
                    self.sku_view(sku).await
                }
                Err(CutEnd::Short(taken)) => {
                    self.undo_steps(sku, &op, taken).await?;
                    self.journal_free(&field, &stored, "undone").await?;
                    let view = self.sku_view(sku).await?;
                    Err(engine::Error::StockBelowCommitted {
                        sku: sku.to_owned(),
                        committed: view.held + view.sold,
                    }
                    .into())
                }
                Err(CutEnd::Fenced) => Err(Error::NotDurable(format!(
                    "adjust {op} of {sku} took too long across its stock buckets and was undone by the sweep; nothing of it stands: send it again"
                ))),
                Err(CutEnd::Failed(e)) => Err(e),
            };
        }
        Err(Error::NotDurable(format!(
            "adjust of {sku}: undone {BUCKET_TRIES} times; send it again"
        )))
    }

    /// The steps of a cut of `need` units: each round reads the buckets
    /// and takes what each has available.
    async fn cut(
        &self,
        sku: &str,
        n: u32,
        mut need: u64,
        op: &str,
        deadline: Instant,
    ) -> Result<(), CutEnd> {
        let mut taken = Vec::new();
        for round in 0..BUCKET_TRIES {
            let buckets = self.read_buckets(sku, n).await.map_err(CutEnd::Failed)?;
            for (i, b) in buckets.iter().enumerate() {
                let Some((stock, held, sold)) = *b else {
                    continue;
                };
                let take = stock.saturating_sub(held + sold).min(need);
                if take == 0 {
                    continue;
                }
                self.bucket_step(Some(deadline)).map_err(CutEnd::Failed)?;
                let step = format!("{op}.{i}.{round}");
                match self.cut_step(sku, i as u64, -(take as i64), &step).await {
                    Ok(Step::Applied(d)) => {
                        need = need.saturating_sub(d.unsigned_abs());
                        taken.push((i as u64, round));
                    }
                    Ok(Step::Undone) => return Err(CutEnd::Fenced),
                    // Reserved in between: read again next round.
                    Err(Error::Refused(engine::Error::StockBelowCommitted { .. })) => {}
                    Err(e) => return Err(CutEnd::Failed(e)),
                }
                if need == 0 {
                    return Ok(());
                }
            }
        }
        Err(CutEnd::Short(taken))
    }

    /// One step of a cut on bucket `i`: what it applied (a step sent again
    /// answers what it applied the first time).
    async fn cut_step(&self, sku: &str, i: u64, delta: i64, step: &str) -> Result<Step, Error> {
        let bucket = bucket_name(sku, i);
        let reply = self.run_adjust(Scope::Now, &bucket, delta, step).await?;
        match reply.first().and_then(Value::as_i64) {
            Some(0) => {
                let applied = reply
                    .get(5)
                    .and_then(|v| v.as_string())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(delta);
                Ok(Step::Applied(applied))
            }
            Some(-1) => Err(engine::Error::StockBelowCommitted {
                sku: bucket,
                committed: int(&reply, 1)?,
            }
            .into()),
            Some(-4) => Ok(Step::Undone),
            other => Err(bad_reply(format!("adjust code {other:?}"))),
        }
    }

    /// Undoes every step cut `op` may have taken, and fences the ones not
    /// taken yet (a node that stopped: its late steps are refused).
    async fn undo_cut(&self, sku: &str, n: u32, op: &str) -> Result<(), Error> {
        let every = (0..u64::from(n)).flat_map(|i| (0..BUCKET_TRIES).map(move |r| (i, r)));
        self.undo_steps(sku, op, every.collect()).await
    }

    /// Undoes cut `op`'s `steps` (bucket, round), each once.
    async fn undo_steps(&self, sku: &str, op: &str, steps: Vec<(u64, usize)>) -> Result<(), Error> {
        for (i, round) in steps {
            let bucket = bucket_name(sku, i);
            let step = format!("{op}.{i}.{round}");
            self.run(
                Scope::Now,
                &self.scripts.adjust_undo,
                vec![self.sku_key(&bucket), self.adjust_mark_key(&bucket, &step)],
                vec![self.argv_prefix.clone(), ADJUST_MARK_MS.to_string()],
            )
            .await?;
        }
        Ok(())
    }

    /// When a node stops starting steps of a change across buckets: half
    /// the grace after it began, so that the sweep, which waits the whole
    /// grace, never works beside it.
    fn bucket_deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.saga_grace_ms() / 2)
    }

    /// Before each step across buckets: past the deadline, or halted by a
    /// test, the change stops here and the journal is left to the sweep.
    fn bucket_step(&self, deadline: Option<Instant>) -> Result<(), Error> {
        if deadline.is_some_and(|d| Instant::now() > d) {
            return Err(Error::NotDurable(
                "a change across stock buckets took longer than half the grace; the sweep completes it".to_owned(),
            ));
        }
        let halt = self.bucket_halt.load(Relaxed);
        if halt == 0 {
            return Err(Error::NotDurable(
                "halted between stock buckets (a test's fault)".to_owned(),
            ));
        }
        if halt != usize::MAX {
            self.bucket_halt.store(halt - 1, Relaxed);
        }
        Ok(())
    }

    /// Tests: stop every change across stock buckets after `steps` more
    /// bucket steps, as a node killed between buckets would.
    #[doc(hidden)]
    pub fn halt_bucket_steps_after(&self, steps: usize) {
        self.bucket_halt.store(steps, Relaxed);
    }

    /// The sweep's part: completes the journal's changes older than the
    /// grace (their node stopped half-way). At most once a second, and
    /// only with bucketed SKUs configured.
    pub(super) async fn buckets_recover(&self) -> Result<(), Error> {
        if self.options.redis.buckets.is_empty() {
            return Ok(());
        }
        let now = self.now_ms();
        let last = self.buckets_checked_at.load(Relaxed);
        if now.saturating_sub(last) < 1_000 {
            return Ok(());
        }
        self.buckets_checked_at.store(now, Relaxed);
        let (redis_now, entries) = self.journal_list().await?;
        for (field, value) in entries {
            let Some((what, at)) = value.rsplit_once('|') else {
                continue;
            };
            let at: u64 = at.parse().unwrap_or(0);
            if redis_now.saturating_sub(at) < self.saga_grace_ms() {
                continue;
            }
            let Some(lease) = self.journal_lease(&field).await? else {
                continue;
            };
            let done = self.recover_one(&field, what, &value).await;
            self.lease_free(&lease).await?;
            if let Err(e) = done {
                crate::log_line!("stampede: recovering {field} across stock buckets failed: {e}; the next sweep tries again");
            }
        }
        Ok(())
    }

    async fn recover_one(&self, field: &str, what: &str, stored: &str) -> Result<(), Error> {
        if let Some(sku) = field.strip_prefix(SET_FIELD) {
            let Some(n) = self.buckets_of(sku) else {
                // No longer spread over buckets in this node's config: it
                // cannot be shared out here; another node may.
                crate::log_line!("stampede: a PUT of {sku} stopped half-way across stock buckets, but this node's store.redis.buckets no longer lists {sku}: left for a node that does");
                return Ok(());
            };
            let (stock, before) = what.split_once('|').unwrap_or((what, ""));
            let stock: u64 = stock
                .parse()
                .map_err(|_| bad_reply(format!("{field}: {what}")))?;
            let before: Vec<Option<u64>> = before.split(',').map(|b| b.parse().ok()).collect();
            match self.share_out(sku, n, stock, None).await {
                Ok(()) => {}
                Err(Error::Refused(_)) => self.restore_buckets(sku, n, &before).await?,
                Err(e) => return Err(e),
            }
            self.journal_free(field, stored, "").await?;
            crate::log_line!(
                "stampede: a PUT of {sku} stopped half-way across its stock buckets; completed"
            );
        } else if let Some(rest) = field.strip_prefix(CUT_FIELD) {
            let Some((sku, op)) = rest.split_once('|') else {
                return Err(bad_reply(format!("journal field {field}")));
            };
            let n: u32 = what
                .parse()
                .map_err(|_| bad_reply(format!("{field}: {what}")))?;
            self.undo_cut(sku, n, op).await?;
            self.journal_free(field, stored, "undone").await?;
            crate::log_line!("stampede: a cut of {sku} (op {op}) stopped half-way across its stock buckets; undone");
        }
        Ok(())
    }

    pub(super) async fn sku_view(&self, sku: &str) -> Result<SkuView, Error> {
        if let Some(n) = self.buckets_of(sku) {
            let buckets = self.read_buckets(sku, n).await?;
            if buckets.iter().all(Option::is_none) {
                return Err(engine::Error::UnknownSku {
                    sku: sku.to_owned(),
                }
                .into());
            }
            let (mut stock, mut held, mut sold) = (0, 0, 0);
            for b in buckets.iter().flatten() {
                stock += b.0;
                held += b.1;
                sold += b.2;
            }
            return sku_view(sku, stock, held, sold, 0);
        }
        let v: Vec<Option<String>> = self
            .pool
            .next()
            .hmget(self.sku_key(sku), vec!["stock", "held", "sold", "limit"])
            .await
            .map_err(unavailable)?;
        let num = |i: usize| -> Result<u64, Error> {
            v.get(i)
                .and_then(|x| x.as_deref())
                .ok_or_else(|| {
                    engine::Error::UnknownSku {
                        sku: sku.to_owned(),
                    }
                    .into()
                })
                .and_then(|s| s.parse().map_err(|_| bad_reply(format!("{sku}: {s:?}"))))
        };
        sku_view(sku, num(0)?, num(1)?, num(2)?, num(3)?)
    }
}

/// `req`'s items under other names (each SKU's bucket), in order.
pub(super) fn named_items<'a>(
    req: &ReserveRequest<'_>,
    names: &'a [String],
) -> Vec<ItemRequest<'a>> {
    req.items
        .iter()
        .zip(names)
        .map(|(i, name)| ItemRequest {
            sku: name,
            qty: i.qty,
        })
        .collect()
}

/// The key name of bucket `i` of `sku` (`#` is never in a SKU's name).
pub(super) fn bucket_name(sku: &str, i: u64) -> String {
    format!("{sku}#{i}")
}

/// The SKU a bucket's name belongs to (a name without `#` is its own).
pub(super) fn unbucketed(name: &str) -> &str {
    name.split_once('#').map_or(name, |(sku, _)| sku)
}
