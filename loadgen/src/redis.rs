//! The `redis://` target: the same shopper flow as Lua scripts run
//! directly on a Redis server, the design most teams build today (and the
//! baseline `examples/redis_lua.rs` puts behind HTTP). One script per step,
//! each atomic on the server: reserve checks `stock - held - sold` and adds
//! to `held`; confirm moves a live hold's units to `sold` (an expired one
//! gives them back and answers 410); release gives them back.
//! Idempotency-Keys are not honoured (a retry may hold twice), and holds
//! that are walked away from stay held (no sweeper): both as simple as the
//! usual design, and both visible in the audit's figures, never hidden.

use fred::prelude::*;
use fred::types::scripts::Script;

use crate::target::{Answer, Figures, Op};

const RESERVE: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold')
if not v[1] then return {-1, 0} end
local available = tonumber(v[1]) - tonumber(v[2] or 0) - tonumber(v[3] or 0)
local qty = tonumber(ARGV[3])
if available < qty then return {0, available} end
local id = redis.call('INCR', 'holds:next')
redis.call('HINCRBY', KEYS[1], 'held', qty)
redis.call('HSET', 'hold:' .. id, 'sku', KEYS[1], 'qty', qty, 'status', 'held',
  'expires', tonumber(ARGV[1]) + tonumber(ARGV[2]), 'customer', ARGV[4])
return {1, id}
"#;

/// ARGV: now_ms, then 'confirm' or 'release'. Returns {http status}.
const END: &str = r#"
local h = redis.call('HMGET', KEYS[1], 'sku', 'qty', 'status', 'expires')
if not h[1] then return {404} end
local qty = tonumber(h[2])
if h[3] ~= 'held' then
  if ARGV[2] == 'release' and h[3] ~= 'confirmed' then return {200} end
  if ARGV[2] == 'confirm' and h[3] == 'confirmed' then return {200} end
  return {409}
end
if tonumber(ARGV[1]) >= tonumber(h[4]) then
  redis.call('HINCRBY', h[1], 'held', -qty)
  redis.call('HSET', KEYS[1], 'status', 'expired')
  if ARGV[2] == 'confirm' then return {410} end
  return {200}
end
redis.call('HINCRBY', h[1], 'held', -qty)
if ARGV[2] == 'confirm' then
  redis.call('HINCRBY', h[1], 'sold', qty)
  redis.call('HSET', KEYS[1], 'status', 'confirmed')
else
  redis.call('HSET', KEYS[1], 'status', 'released')
end
return {200}
"#;

pub struct RedisTarget {
    pool: Pool,
    reserve: Script,
    end: Script,
}

impl RedisTarget {
    pub async fn connect(url: &str) -> anyhow::Result<RedisTarget> {
        let config = Config::from_url(url)?;
        let pool = Builder::from_config(config).build_pool(8)?;
        pool.init().await?;
        let (reserve, end) = (Script::from_lua(RESERVE), Script::from_lua(END));
        reserve.load(pool.next()).await?;
        end.load(pool.next()).await?;
        Ok(RedisTarget { pool, reserve, end })
    }

    pub async fn call(&self, op: &Op) -> Result<Answer, String> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let e = |e: Error| e.to_string();
        match op {
            Op::Browse { sku } => {
                let exists: bool = self
                    .pool
                    .next()
                    .exists(format!("sku:{sku}"))
                    .await
                    .map_err(e)?;
                Ok(status(if exists { 200 } else { 404 }, None))
            }
            Op::Reserve {
                customer,
                sku,
                qty,
                ttl_ms,
                ..
            } => {
                let ttl = if *ttl_ms > 0 { *ttl_ms } else { 600_000 };
                let r: Vec<i64> = self
                    .reserve
                    .evalsha_with_reload(
                        self.pool.next(),
                        vec![format!("sku:{sku}")],
                        vec![
                            now_ms.to_string(),
                            ttl.to_string(),
                            qty.to_string(),
                            customer.clone(),
                        ],
                    )
                    .await
                    .map_err(e)?;
                Ok(match r.as_slice() {
                    [1, id] => Answer {
                        status: 201,
                        id: Some(id.to_string()),
                        ..Answer::default()
                    },
                    [0, _] => status(409, Some("insufficient_stock")),
                    _ => status(422, Some("unknown_sku")),
                })
            }
            Op::Confirm { id, .. } | Op::Release { id, .. } => {
                let what = if matches!(op, Op::Confirm { .. }) {
                    "confirm"
                } else {
                    "release"
                };
                let r: Vec<i64> = self
                    .end
                    .evalsha_with_reload(
                        self.pool.next(),
                        vec![format!("hold:{id}")],
                        vec![now_ms.to_string(), what.to_owned()],
                    )
                    .await
                    .map_err(e)?;
                let code = match r.first() {
                    Some(409) => Some("hold_not_active"),
                    Some(410) => Some("hold_expired"),
                    Some(404) => Some("not_found"),
                    _ => None,
                };
                Ok(status(r.first().map_or(500, |&s| s as u16), code))
            }
            Op::Payment { .. } | Op::Webhook { .. } => {
                Err("payments need an http:// target (stampede)".into())
            }
        }
    }

    pub async fn set_stock(&self, sku: &str, stock: u64) -> Result<(), String> {
        let _: () = self
            .pool
            .next()
            .hset(
                format!("sku:{sku}"),
                [("stock", stock as i64), ("held", 0), ("sold", 0)],
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    pub async fn figures(&self, sku: &str) -> Result<Figures, String> {
        let v: Vec<Option<u64>> = self
            .pool
            .next()
            .hmget(format!("sku:{sku}"), vec!["stock", "held", "sold"])
            .await
            .map_err(|e| e.to_string())?;
        match v.as_slice() {
            [Some(stock), held, sold] => Ok(Figures {
                stock: *stock,
                held: held.unwrap_or(0),
                sold: sold.unwrap_or(0),
            }),
            _ => Err(format!("no sku:{sku} in Redis")),
        }
    }
}

fn status(status: u16, code: Option<&str>) -> Answer {
    Answer {
        status,
        code: code.map(str::to_owned),
        ..Answer::default()
    }
}
