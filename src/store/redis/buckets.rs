//! SKUs spread over stock buckets; adjust by op id.

use super::*;

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
        let reply = self
            .run(
                scope,
                &self.scripts.adjust,
                vec![
                    self.sku_key(sku),
                    format!("{}:{{{sku}}}:a:{op}", self.prefix),
                ],
                vec![
                    self.argv_prefix.clone(),
                    delta.to_string(),
                    STOCK_MAX.to_string(),
                    ADJUST_MARK_MS.to_string(),
                ],
            )
            .await?;
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
            other => Err(bad_reply(format!("adjust code {other:?}"))),
        }
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
            out.push(match (num(0), num(1), num(2)) {
                (Some(a), Some(b), Some(c)) => Some((a, b, c)),
                _ => None,
            });
        }
        Ok(out)
    }

    /// `PUT /v1/skus/{sku}` for a SKU spread over `n` buckets: what is not
    /// held or sold is shared out evenly; each bucket is set by the
    /// set-stock script, which refuses a stock below what that bucket has
    /// committed, in which case (a reservation came in between) it is all
    /// read and shared again.
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
                let i = i as u64;
                let share = free / u64::from(n) + u64::from(i < free % u64::from(n));
                let reply = self
                    .run(
                        Scope::Now,
                        &self.scripts.set_stock,
                        vec![self.sku_key(&bucket_name(sku, i))],
                        vec![
                            self.argv_prefix.clone(),
                            (c + share).to_string(),
                            String::new(),
                        ],
                    )
                    .await?;
                if reply.first().and_then(Value::as_i64) == Some(-1) {
                    raced = true;
                    break;
                }
            }
            if !raced {
                let created = buckets.iter().all(Option::is_none);
                return Ok((created, self.sku_view(sku).await?));
            }
        }
        Err(Error::NotDurable(format!(
            "sku {sku}: reservations kept changing its buckets while the stock was shared out ({BUCKET_TRIES} tries); some buckets may have the new stock: send it again"
        )))
    }

    /// `POST /v1/skus/{sku}/adjust` for a SKU spread over `n` buckets. A
    /// rise goes to one bucket; a cut takes what each bucket has available
    /// (each step the adjust script, idempotent by `op` and bucket), and
    /// if the buckets together have not enough, the steps taken are given
    /// back and the cut refused.
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
        let mut need = delta.unsigned_abs();
        let mut taken: Vec<(u64, u64)> = Vec::new();
        for _ in 0..BUCKET_TRIES {
            let buckets = self.read_buckets(sku, n).await?;
            if buckets.iter().all(Option::is_none) {
                return Err(engine::Error::UnknownSku {
                    sku: sku.to_owned(),
                }
                .into());
            }
            for (i, b) in buckets.iter().enumerate() {
                let Some((stock, held, sold)) = *b else {
                    continue;
                };
                let take = stock.saturating_sub(held + sold).min(need);
                if take == 0 {
                    continue;
                }
                let step = format!("{op}.{i}.{}", taken.len());
                let done = self
                    .adjust_once(
                        Scope::Now,
                        &bucket_name(sku, i as u64),
                        -(take as i64),
                        &step,
                    )
                    .await;
                match done {
                    Ok(_) => {
                        taken.push((i as u64, take));
                        need -= take;
                    }
                    // Reserved in between: read again next round.
                    Err(Error::Refused(engine::Error::StockBelowCommitted { .. })) => {}
                    Err(e) => return Err(e),
                }
                if need == 0 {
                    return self.sku_view(sku).await;
                }
            }
        }
        for (k, &(i, take)) in taken.iter().enumerate() {
            self.adjust_once(
                Scope::Now,
                &bucket_name(sku, i),
                take as i64,
                &format!("{op}.undo.{k}"),
            )
            .await?;
        }
        let view = self.sku_view(sku).await?;
        Err(engine::Error::StockBelowCommitted {
            sku: sku.to_owned(),
            committed: view.held + view.sold,
        }
        .into())
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
