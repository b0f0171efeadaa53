//! The redis store's server-side scripts (Lua, run with EVALSHA and loaded
//! again on NOSCRIPT). Each one reads everything it needs and makes every
//! check before its first write, takes the time from Redis `TIME` (the one
//! clock every node shares), and answers a fixed shape: `{0, ...}` on
//! success, `{code, ...}` on a refusal (see [`Refusal`] codes in
//! `redis.rs`). Every change is idempotent by hold id: fred sends a
//! command again after a reconnect, and a second run finds the first's
//! work done and answers as it did.
//!
//! Keys (`P` is `store.redis.key_prefix`; a SKU's keys share the hash tag
//! `{sku}`; a hold's keys share the tag `{T}` of its *slot*, the Redis
//! Cluster hash slot of its first SKU, with `T = store::slots::tag(slot)`,
//! so a hold whose SKUs share a slot is one script on one Redis shard):
//! - `P:{sku}`: hash `stock`, `held`, `sold`, `limit`;
//! - `P:{sku}:c`: hash customer -> units held + owned (the per-customer
//!   tally, kept for every SKU, so a limit set later needs no recount;
//!   dropped by Redis once the SKU has had no reservation for the longest
//!   a hold can live plus its retention: memory follows a SKU's recent
//!   customers, not all of them ever);
//! - `P:{T}:h:ID`: hash of a hold: `c` customer, `s` status (`h` held, `c`
//!   confirmed, `r` released, `e` expired), `t0` created, `t1` expires,
//!   `o` order_ref, `i` items (`sku qty sku qty ...`: SKU names hold no
//!   spaces); an ended hold is kept `holds.retention_ms`, then Redis drops
//!   it;
//! - `P:{T}:x`: the slot's held holds by expiry;
//! - `P:due`: slot -> a time at or before the earliest expiry in the
//!   slot's `x` (lowered with each reservation and extension, set by the
//!   sweeper after it swept the slot, compare-and-set; a slot already due
//!   is moved 1 ms earlier by a lowering, so that a sweep under way fails
//!   its compare-and-set and the slot is swept again): what every node
//!   sweeps from;
//! - `P:k:KEY`: an idempotency key's state and answer (`f` fingerprint,
//!   `st` '0' in flight or the answer's status, `l` location, `b` body,
//!   `at` when; in flight: `tok` the running request's token, `sd` the
//!   seed its ids are drawn from, `dl` when another may take over);
//! - `P:{sku}:a:OP`: an adjust already applied (kept a while, so that a
//!   command sent again does not apply its delta twice);
//! - `P:epoch`: the counter that numbers node starts (hold ids);
//! - `P:{drops}:log`: the drops' log, a stream of commands (see
//!   `store::redis_drops`), and `P:{drops}:image`, the book through one
//!   of its entries, below which the log was cut (`DROP_COMPACT`);
//! - `P:{sku}:g`: the drop that gates the SKU, if any (its name);
//! - `P:{events}`: the event stream (see `store::redis_events`), with
//!   `P:{events}:opened:DROP` (drop.opened told; kept a week), `P:{events}:gone:URL`
//!   (an endpoint answered 410) and, on a Redis Cluster, `P:{events}:moved`
//!   (slot -> the last id moved from the slot's `P:{T}:ev`, the events
//!   its scripts told).

/// Shared by every script: the clock, key names, the view of a hold.
const PRELUDE: &str = r#"
-- ARGV[1]: the key prefix, '|', how many events an event stream keeps,
-- and on a Redis Cluster '|' and the tag T of the script's slot: its
-- events go to that slot's stream P:{T}:ev (a script cannot write another
-- slot), which a node moves into P:{events} (EVENTS_MOVE). Without T they
-- go to P:{events} itself.
-- On a Redis Cluster the node ends ARGV[1] with '!': then a script
-- touches no key it was not given in KEYS (see `declared`).
local P, EV, EVK, NUMBERED, STRICT = ARGV[1], nil, nil, false, false
if string.sub(P, -1) == '!' then
  STRICT = true
  P = string.sub(P, 1, -2)
end
do
  local bar = string.find(P, '|', 1, true)
  if bar then
    EV = string.sub(P, bar + 1)
    P = string.sub(P, 1, bar - 1)
    local bar2 = string.find(EV, '|', 1, true)
    if bar2 then
      EVK = P .. ':{' .. string.sub(EV, bar2 + 1) .. '}:ev'
      EV = string.sub(EV, 1, bar2 - 1)
    else
      EVK = P .. ':{events}'
      NUMBERED = true
    end
  end
end
-- While a slot migrates (`redis-cli --cluster reshard`), Redis checks a
-- script's KEYS before it runs, and answers ASK or TRYAGAIN unless every
-- one of them is on this node; a key not declared is checked only when a
-- command touches it, and one moved already fails that command, which
-- stops the script half-way with its earlier writes kept (a hold's first
-- SKU settled, its second not: settled again by the next try). So on a
-- cluster every key is declared. A script whose keys depend on what it
-- reads (a hold's SKUs, a slot's due holds) checks each with `declared`
-- before its first write and, if one is missing, answers
-- `{'need', key, ...}` having written nothing; the node runs it again
-- with them (`RedisStore::run`).
local NEEDED, DECLARED = {}, nil
local function declared(k)
  if not STRICT then return true end
  if not DECLARED then
    DECLARED = {}
    for _, d in ipairs(KEYS) do DECLARED[d] = true end
  end
  if DECLARED[k] then return true end
  DECLARED[k] = true
  NEEDED[#NEEDED + 1] = k
  return false
end
local function needed()
  local out = {'need'}
  for _, k in ipairs(NEEDED) do out[#out + 1] = k end
  return out
end
-- 1 once this script told an event (the reserve script answers it).
local EMITTED = 0
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(x) return string.format('%d', x) end
local function sku_key(s) return P .. ':{' .. s .. '}' end
local function cust_key(s) return P .. ':{' .. s .. '}:c' end
local function hold_key(tag, id) return P .. ':{' .. tag .. '}:h:' .. id end
local function gate_key(s) return P .. ':{' .. s .. '}:g' end
-- Declares (see `declared`) the keys settling a hold's items touches: each
-- SKU's hash and, when its units go back, its tally.
local function declare_items(items, tallies)
  for sku in string.gmatch(items or '', '(%S+) %S+') do
    declared(sku_key(sku))
    if tallies then declared(cust_key(sku)) end
  end
end
-- The drop gating SKU s, unless it is one of the drops the node says the
-- customer passed (`passed`: ' name name ... ').
local function gated(s, passed)
  local d = redis.call('GET', gate_key(s))
  if d and not string.find(passed, ' ' .. d .. ' ', 1, true) then return d end
  return nil
end
-- Lowers slot's due time in P:due (key `due`) to `at`, never raising it.
-- A slot already due may be in a sweep, between its read of P:due and its
-- compare-and-set (DUE_SETTLE), which would overwrite a time lowered to
-- `at` with the earliest it saw before this hold: so a due slot is moved
-- 1 ms earlier instead (still due), the sweep's compare-and-set fails and
-- the next sweep takes the slot again.
local function lower_due(due, slot, at)
  local s = redis.call('ZSCORE', due, slot)
  if not s or at < tonumber(s) then
    redis.call('ZADD', due, int(at), slot)
  elseif tonumber(s) <= now_ms() then
    redis.call('ZADD', due, int(tonumber(s) - 1), slot)
  end
end
local STATUS = {h = 'held', c = 'confirmed', r = 'released', e = 'expired'}
-- The event feed: each change appends its events to the event stream
-- (EVK, above) in the same script, so an event is in Redis exactly when
-- its change is. SKU and customer names are identifiers
-- ([A-Za-z0-9._:-]): JSON as they are.
-- In P:{events} itself each event carries its number (`n`, from the
-- counter P:{events}:n): a webhook group that reads past a gap knows how
-- many were trimmed before it read them (WH_READ).
local function emit(kind, data)
  if NUMBERED then
    local n = redis.call('INCR', EVK .. ':n')
    redis.call('XADD', EVK, 'MAXLEN', '~', EV, '*', 'k', kind, 'd', data, 'n', n)
  else
    redis.call('XADD', EVK, 'MAXLEN', '~', EV, '*', 'k', kind, 'd', data)
  end
  EMITTED = 1
end
local function avail_of(k)
  local v = redis.call('HMGET', k, 'stock', 'held', 'sold')
  if not v[1] then return nil end
  return tonumber(v[1]) - tonumber(v[2]) - tonumber(v[3])
end
local function sku_of(k) return string.match(k, '{([^}]*)}$') end
-- stock.out / stock.back for SKU s, whose available went from a to b (a
-- bucket of a SKU tells nothing: its SKU is not out when it is).
local function tell_stock(s, a, b, now)
  if not EV or not a or not b or string.find(s, '#', 1, true) then return end
  if a > 0 and b == 0 then
    emit('stock.out', '{"sku":"' .. s .. '","at_ms":' .. int(now) .. '}')
  elseif a == 0 and b > 0 then
    emit('stock.back', '{"sku":"' .. s .. '","available":' .. int(b) .. ',"at_ms":' .. int(now) .. '}')
  end
end
-- hold.confirmed / hold.expired for hold h (items 'sku qty ...').
local function tell_hold(kind, h, id, items, customer, now)
  if not EV then return end
  local out = {}
  for sku, q in string.gmatch(items, '(%S+) (%S+)') do
    out[#out + 1] = '{"sku":"' .. string.match(sku, '^[^#]+') .. '","qty":' .. q .. '}'
  end
  local data = '{"id":"' .. id .. '","customer_id":"' .. customer .. '","items":[' .. table.concat(out, ',') .. ']'
  if kind == 'hold.confirmed' then
    local o = redis.call('HGET', h, 'o')
    if o then data = data .. ',"order_ref":' .. cjson.encode(o) else data = data .. ',"order_ref":null' end
  end
  emit(kind, data .. ',"at_ms":' .. int(now) .. '}')
end
-- {0, status, customer, created, expires, order_ref or '', items}
local function view(h, now)
  local v = redis.call('HMGET', h, 's', 'c', 't0', 't1', 'o', 'i')
  local status = v[1]
  if status == 'h' and now >= tonumber(v[4]) then status = 'e' end
  return {0, STATUS[status], v[2], v[3], v[4], v[5] or '', v[6]}
end
-- Takes q units off a customer's tally (KEY, a SKU's tally hash): a field
-- that reaches 0 is deleted, and one that would go below (its tally
-- expired while a hold lived) too, never left negative.
local function untally(key, customer, q)
  if redis.call('HINCRBY', key, customer, -q) <= 0 then
    redis.call('HDEL', key, customer)
  end
end
-- Moves a hold's units out of held: into sold (confirm), or back
-- (release, expiry: the customer's tally gives them back too).
local function settle(items, customer, to)
  local now = EV and now_ms()
  for sku, q in string.gmatch(items, '(%S+) (%S+)') do
    local before = EV and to ~= 'c' and avail_of(sku_key(sku))
    redis.call('HINCRBY', sku_key(sku), 'held', -tonumber(q))
    if to == 'c' then
      redis.call('HINCRBY', sku_key(sku), 'sold', q)
    else
      untally(cust_key(sku), customer, tonumber(q))
      if before then tell_stock(sku, before, before + tonumber(q), now) end
    end
  end
end
local function retire(h, x, id, to, retention_ms)
  redis.call('HSET', h, 's', to)
  redis.call('ZREM', x, id)
  redis.call('PEXPIRE', h, retention_ms)
end
-- Ends a hold: settles its SKUs here, or, for a hold across slots ('m'),
-- lists it in its slot's todo for the node to settle each SKU in its
-- own slot. Returns 1 if the node must settle.
local function finish(h, x, todo, id, items, customer, to, retention_ms)
  local across = redis.call('HGET', h, 'm') == '1'
  if to == 'c' then tell_hold('hold.confirmed', h, id, items, customer, now_ms())
  elseif to == 'e' then tell_hold('hold.expired', h, id, items, customer, now_ms()) end
  if across then
    redis.call('ZADD', todo, int(now_ms()), id)
  else
    settle(items, customer, to)
  end
  retire(h, x, id, to, retention_ms)
  if across then return 1 end
  return 0
end
"#;

/// Sets a SKU's stock (creating it). KEYS: the SKU's hash. ARGV: prefix,
/// stock, limit ('' keeps it). `{created, stock, held, sold, limit}`, or
/// `{-1, committed}`.
const SET_STOCK: &str = r#"
local k = KEYS[1]
local stock = tonumber(ARGV[2])
local v = redis.call('HMGET', k, 'stock', 'held', 'sold', 'limit')
if not v[1] then
  local limit = ARGV[3] ~= '' and ARGV[3] or '0'
  redis.call('HSET', k, 'stock', ARGV[2], 'held', '0', 'sold', '0', 'limit', limit)
  return {1, ARGV[2], '0', '0', limit}
end
local committed = tonumber(v[2]) + tonumber(v[3])
if stock < committed then return {-1, int(committed)} end
local limit = ARGV[3] ~= '' and ARGV[3] or v[4]
redis.call('HSET', k, 'stock', ARGV[2], 'limit', limit)
if EV then
  tell_stock(sku_of(k), tonumber(v[1]) - committed, stock - committed, now_ms())
end
return {0, ARGV[2], v[2], v[3], limit}
"#;

/// Adds a signed delta to a SKU's stock, once per operation id (fred
/// sends a command again after a reconnect; a delta must not land twice).
/// KEYS: the SKU's hash, the operation's marker. ARGV: prefix, delta, the
/// largest stock, how long the marker is kept (ms). `{0, stock, held,
/// sold, limit}` (a repeat: the SKU as it is now), `{-1, committed}`,
/// `{-2}` unknown, `{-3, new stock}` too large.
const ADJUST: &str = r#"
local k = KEYS[1]
local v = redis.call('HMGET', k, 'stock', 'held', 'sold', 'limit')
if not v[1] then return {-2} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, v[1], v[2], v[3], v[4]} end
local committed = tonumber(v[2]) + tonumber(v[3])
local new = tonumber(v[1]) + tonumber(ARGV[2])
if new < committed then return {-1, int(committed)} end
if new > tonumber(ARGV[3]) then return {-3, int(new)} end
redis.call('HSET', k, 'stock', int(new))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
if EV then
  tell_stock(sku_of(k), tonumber(v[1]) - committed, new - committed, now_ms())
end
return {0, int(new), v[2], v[3], v[4]}
"#;

/// Places a hold, all or nothing (or partial). KEYS: the n SKU hashes,
/// the n tallies, the hold, its slot's expiry index, on one Redis
/// server `P:due`, then the n SKUs' gate marks. ARGV: prefix, id, customer, ttl_ms, fill ('a' or 'p'),
/// n, then n quantities, then n SKU names, then how long a tally outlives
/// the SKU's last reservation (ms: the longest a hold can live plus its
/// retention, so no hold outlives its tally), then the hold's slot ('' on
/// a cluster, where the node lowers `P:due` itself: another slot).
/// The view, or `{1, i}` unknown SKU, `{2, i, available}` short,
/// `{3, i, limit, current}` over the customer's limit, `{9, i, drop}` a
/// SKU gated by a drop the node did not pass (then the drops the node
/// passed, ` name name `: last ARGV).
const RESERVE: &str = r#"
local n = tonumber(ARGV[6])
local h = KEYS[2 * n + 1]
local now = now_ms()
if redis.call('EXISTS', h) == 1 then return view(h, now) end
local customer = ARGV[3]
local passed = ARGV[6 + 2 * n + 3]
for i = 1, n do
  local d = gated(ARGV[6 + n + i], passed)
  if d then return {9, i, d} end
end
local grants, refusal, any, before = {}, nil, false, {}
for i = 1, n do
  local v = redis.call('HMGET', KEYS[i], 'stock', 'held', 'sold', 'limit')
  if not v[1] then return {1, i} end
  local qty = tonumber(ARGV[6 + i])
  local available = tonumber(v[1]) - tonumber(v[2]) - tonumber(v[3])
  before[i] = available
  local limit = tonumber(v[4])
  local current, room = 0, qty
  if limit > 0 then
    current = tonumber(redis.call('HGET', KEYS[n + i], customer) or '0')
    room = math.max(0, limit - current)
  end
  local r = nil
  if qty > available then r = {2, i, int(available)}
  elseif qty > room then r = {3, i, int(limit), int(current)} end
  if r then
    if ARGV[5] == 'a' then return r end
    refusal = refusal or r
    grants[i] = math.max(0, math.min(qty, available, room))
  else
    grants[i] = qty
  end
  if grants[i] > 0 then any = true end
end
if not any then return refusal end
local expires = now + tonumber(ARGV[4])
local items = {}
for i = 1, n do
  if grants[i] > 0 then
    redis.call('HINCRBY', KEYS[i], 'held', grants[i])
    tell_stock(ARGV[6 + n + i], before[i], before[i] - grants[i], now)
    redis.call('HINCRBY', KEYS[n + i], customer, grants[i])
    redis.call('PEXPIRE', KEYS[n + i], ARGV[6 + 2 * n + 1])
    items[#items + 1] = ARGV[6 + n + i] .. ' ' .. int(grants[i])
  end
end
local held = table.concat(items, ' ')
redis.call('HSET', h, 'c', customer, 's', 'h', 't0', int(now), 't1', int(expires), 'i', held)
redis.call('ZADD', KEYS[2 * n + 2], int(expires), ARGV[2])
if ARGV[6 + 2 * n + 2] ~= '' then
  lower_due(KEYS[2 * n + 3], ARGV[6 + 2 * n + 2], expires)
end
-- The view, from what was just written (not read back), then whether
-- an event was told.
return {0, 'held', customer, int(now), int(expires), '', held, EMITTED}
"#;

/// Reads a hold. KEYS: the hold. ARGV: prefix. The view or `{4}`.
const GET: &str = r#"
local s = redis.call('HGET', KEYS[1], 's')
if not s or s == 'p' or s == 'u' or s == 'x' then return {4} end
return view(KEYS[1], now_ms())
"#;

/// Confirms a hold. KEYS: the hold, its slot's expiry index, its slot's
/// todo, and on a cluster its SKUs' hashes (else `{'need', ...}`, see
/// `declared`). ARGV: prefix, id, order_ref ('' for none), retention_ms.
/// The view (an 8th member 1: a hold across slots to settle), `{4}` not
/// found, `{5, status}` not active, `{6, expired_at}`.
const CONFIRM: &str = r#"
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 'i', 'c', 'm')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'e' or (v[1] == 'h' and now >= tonumber(v[2])) then return {6, v[2]} end
if v[1] == 'c' then return view(h, now) end
if v[1] == 'r' then return {5, 'released'} end
if v[5] ~= '1' then declare_items(v[3], false) end
if #NEEDED > 0 then return needed() end
if ARGV[3] ~= '' then redis.call('HSET', h, 'o', ARGV[3]) end
local across = finish(h, KEYS[2], KEYS[3], ARGV[2], v[3], v[4], 'c', ARGV[4])
local out = view(h, now)
out[8] = across
return out
"#;

/// Releases a hold (or expires it, if its time is up). KEYS: the hold,
/// its slot's expiry index, its slot's todo, and on a cluster its SKUs'
/// hashes and tallies (else `{'need', ...}`). ARGV: prefix, id,
/// retention_ms. The view (8th member as confirm's), `{4}`, `{5,
/// 'confirmed'}`.
const RELEASE: &str = r#"
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 'i', 'c', 'm')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'r' or v[1] == 'e' then return view(h, now) end
if v[1] == 'c' then return {5, 'confirmed'} end
if v[5] ~= '1' then declare_items(v[3], true) end
if #NEEDED > 0 then return needed() end
local to = 'r'
if now >= tonumber(v[2]) then to = 'e' end
local across = finish(h, KEYS[2], KEYS[3], ARGV[2], v[3], v[4], to, ARGV[3])
local out = view(h, now)
out[8] = across
return out
"#;

/// Extends a hold. KEYS: the hold, its slot's expiry index, and on a
/// cluster its SKUs' tallies (else `{'need', ...}`). ARGV: prefix, id,
/// ttl_ms, max_ttl_ms, how long a tally outlives a reservation (ms). The
/// view, `{4}`, `{5, status}`, `{6, expired_at}`.
const EXTEND: &str = r#"
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 't0', 'm', 'i')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'e' or (v[1] == 'h' and now >= tonumber(v[2])) then return {6, v[2]} end
if v[1] ~= 'h' then return {5, STATUS[v[1]]} end
local across = v[4] == '1'
if not across then
  for sku in string.gmatch(v[5] or '', '(%S+) %S+') do declared(cust_key(sku)) end
end
if #NEEDED > 0 then return needed() end
local expires = math.min(now + tonumber(ARGV[3]), tonumber(v[3]) + tonumber(ARGV[4]))
redis.call('HSET', h, 't1', int(expires))
redis.call('ZADD', KEYS[2], int(expires), ARGV[2])
-- Its tallies live at least as long as it can (a reload may have raised
-- holds.max_ttl_ms since they were set; GT: never shortened). A hold
-- across slots ('m') has its tallies in other slots: not here.
if not across then
  for sku in string.gmatch(v[5] or '', '(%S+) %S+') do
    redis.call('PEXPIRE', cust_key(sku), ARGV[5], 'GT')
  end
end
return view(h, now)
"#;

/// Expires up to a batch of a slot's holds whose time is up. KEYS: the
/// slot's expiry index, the slot's todo, and on a cluster the due holds
/// and their SKUs' hashes and tallies (else `{'need', ...}`: the holds
/// first, then, read, their SKUs). ARGV: prefix, batch,
/// retention_ms, the slot's tag. `{expired, more_due, earliest, across,
/// todo_first}`: `earliest` is the first expiry left in the slot, -1 for
/// none; `across` how many expired holds across slots it listed in the
/// todo; `todo_first` when the oldest todo entry was listed, -1 for none.
const SWEEP: &str = r#"
local now = now_ms()
local x = KEYS[1]
local across = 0
local due = redis.call('ZRANGEBYSCORE', x, '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[2]))
-- Every due hold read (and its keys declared) before the first write.
local holds = {}
for _, id in ipairs(due) do
  local h = hold_key(ARGV[4], id)
  if declared(h) then
    local v = redis.call('HMGET', h, 's', 'i', 'c', 'm')
    if v[1] == 'h' and v[4] ~= '1' then declare_items(v[2], true) end
    holds[#holds + 1] = {id, h, v}
  end
end
if #NEEDED > 0 then return needed() end
for _, e in ipairs(holds) do
  local id, h, v = e[1], e[2], e[3]
  if v[1] == 'h' then
    across = across + finish(h, x, KEYS[2], id, v[2], v[3], 'e', ARGV[3])
  else
    redis.call('ZREM', x, id)
  end
end
local more = 0
if #due == tonumber(ARGV[2]) then more = 1 end
local first = redis.call('ZRANGE', x, 0, 0, 'WITHSCORES')
local earliest = -1
if first[2] then earliest = tonumber(first[2]) end
local todo = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local todo_first = -1
if todo[2] then todo_first = tonumber(todo[2]) end
return {#due, more, earliest, across, todo_first}
"#;

/// A slot's earliest expiry and its todo's first entry (Redis Cluster: the
/// look through all slots for a `P:due` entry a failover lost). KEYS: the
/// slot's expiry index, its todo. ARGV: prefix. `{earliest, todo_first}`,
/// -1 for none.
const DUE_PEEK: &str = r#"
local x = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local t = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {tonumber(x[2] or '-1'), tonumber(t[2] or '-1')}
"#;

/// The slots whose due time has come (Redis's clock), up to a batch.
/// KEYS: `P:due`. ARGV: prefix, batch. `{slot, due, slot, due, ...}`.
const DUE_LIST: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now_ms()), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
return due
"#;

/// After a sweep of a slot: sets the slot's due time to its earliest
/// expiry left (or drops it, -1), but only if nobody lowered it since the
/// sweeper read it (a reservation made meanwhile keeps its lower time).
/// KEYS: `P:due`. ARGV: prefix, slot, the due time read, earliest.
/// `{1}` set, `{0}` left as it was.
const DUE_SETTLE: &str = r#"
local seen = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not seen or tonumber(seen) ~= tonumber(ARGV[3]) then return {0} end
if tonumber(ARGV[4]) < 0 then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
end
return {1}
"#;

/// Lowers a slot's due time (never raises it; a slot already due is moved
/// 1 ms earlier, see `lower_due`): on a Redis Cluster, where `P:due` is in
/// another slot than the hold, the node runs this before and after each
/// reservation and extension. KEYS: `P:due`. ARGV: prefix, slot, at_ms.
/// `{0}`.
const DUE_LOWER: &str = r#"
lower_due(KEYS[1], ARGV[2], tonumber(ARGV[3]))
return {0}
"#;

// ---- Holds across hash slots (Redis Cluster): a saga ------------------
//
// The hold's record is written first in its home slot (`s` = 'p',
// pending, with the request in `q`), and listed in the slot's `P:{T}:todo`
// (id -> when). Then each SKU is taken in SKU order by its own script in
// its own slot, which leaves a marker `P:{sku}:r:ID`: the units granted,
// '0', 'x' (a tombstone: undone, or never to be taken) or 's' (settled).
// Every step is idempotent by that marker. A refusal undoes the taken
// SKUs in reverse and tombstones the rest; then the record is committed
// (`s` = 'h', `m` = '1') or aborted (`s` = 'x', unreadable). Nothing of a
// saga is undone before its record is fenced (`s` = 'u', undoing:
// SAGA_FENCE), which the commit refuses: a saga is committed or undone,
// never both. Ending such a
// hold (confirm, release, expiry) changes its record, lists it in todo,
// and settles each SKU by its marker. Whatever a dead node left in todo,
// any node finishes: a pending reserve is undone (after a grace), an
// ended hold is settled.

/// Begins a saga. KEYS: the record, the slot's todo. ARGV: prefix, id,
/// customer, ttl_ms, fill, requested items ('sku qty ...'), retention.
/// `{0}` begun, `{1, status}` the record exists (a resend).
const SAGA_BEGIN: &str = r#"
local s = redis.call('HGET', KEYS[1], 's')
if s then return {1, s} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'c', ARGV[3], 's', 'p', 'q', ARGV[6], 'f', ARGV[5], 'ttl', ARGV[4], 't0', int(now))
redis.call('ZADD', KEYS[2], int(now), ARGV[2])
return {0}
"#;

/// Takes one SKU of a saga. KEYS: the SKU's hash, its tally, the marker,
/// its gate mark.
/// ARGV: prefix, customer, qty, fill ('a' or 'p'), marker_ms, the drops
/// passed (` name name `), the SKU. `{0, granted}` (a resend: the same),
/// `{1}` unknown SKU, `{2, available}` short, `{3, limit, current}` over
/// the limit, `{9, drop}` gated by a drop not passed, `{7}` tombstoned
/// (undone already) or already settled (a resend that arrives after its
/// hold ended takes nothing).
const SAGA_TAKE: &str = r#"
local m = redis.call('GET', KEYS[3])
if m == 'x' or m == 's' then return {7} end
if m then return {0, tonumber(m)} end
local d = gated(ARGV[7], ARGV[6])
if d then return {9, d} end
local v = redis.call('HMGET', KEYS[1], 'stock', 'held', 'sold', 'limit')
if not v[1] then return {1} end
local qty = tonumber(ARGV[3])
local available = tonumber(v[1]) - tonumber(v[2]) - tonumber(v[3])
local limit = tonumber(v[4])
local current, room = 0, qty
if limit > 0 then
  current = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0')
  room = math.max(0, limit - current)
end
local grant = qty
local r = nil
if qty > available then r = {2, int(available)}
elseif qty > room then r = {3, int(limit), int(current)} end
if r then
  if ARGV[4] == 'a' then return r end
  grant = math.max(0, math.min(qty, available, room))
  if grant == 0 then return r end
end
redis.call('HINCRBY', KEYS[1], 'held', grant)
redis.call('HINCRBY', KEYS[2], ARGV[2], grant)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('SET', KEYS[3], int(grant), 'PX', ARGV[5])
return {0, grant}
"#;

/// Undoes one SKU of a saga (or makes sure it is never taken). KEYS: the
/// SKU's hash, its tally, the marker. ARGV: prefix, customer, marker_ms.
/// `{0}`.
const SAGA_UNDO: &str = r#"
local m = redis.call('GET', KEYS[3])
if m == 'x' or m == 's' then return {0} end
local g = tonumber(m or '0') or 0
if g > 0 then
  redis.call('HINCRBY', KEYS[1], 'held', -g)
  untally(KEYS[2], ARGV[2], g)
end
redis.call('SET', KEYS[3], 'x', 'PX', ARGV[3])
return {0}
"#;

/// Settles one SKU of an ended saga hold by its marker. KEYS: the SKU's
/// hash, its tally, the marker. ARGV: prefix, customer, to ('c', or 'r'/'e'
/// giving the units back), marker_ms. `{0}`, or `{10}` if the SKU was
/// undone (a tombstone: recovery fenced the saga, so it never held; a
/// settle that meets one is a bug, never a silent 0).
const SAGA_SETTLE: &str = r#"
local m = redis.call('GET', KEYS[3])
if m == 'x' then return {10} end
local g = tonumber(m or '') or 0
if g <= 0 then return {0} end
redis.call('HINCRBY', KEYS[1], 'held', -g)
if ARGV[3] == 'c' then
  redis.call('HINCRBY', KEYS[1], 'sold', g)
else
  untally(KEYS[2], ARGV[2], g)
end
redis.call('SET', KEYS[3], 's', 'PX', ARGV[4])
return {0}
"#;

/// Commits a saga: the hold is held from now. KEYS: the record, the slot's
/// todo, the slot's expiry index. ARGV: prefix, id, granted items. The
/// view, or `{8, status}` if it is no longer pending (undone by recovery).
const SAGA_COMMIT: &str = r#"
local v = redis.call('HMGET', KEYS[1], 's', 'ttl')
if v[1] == 'h' then return view(KEYS[1], now_ms()) end
if v[1] ~= 'p' then return {8, v[1] or ''} end
local now = now_ms()
local expires = now + tonumber(v[2])
redis.call('HSET', KEYS[1], 's', 'h', 'm', '1', 'i', ARGV[3], 't0', int(now), 't1', int(expires))
redis.call('HDEL', KEYS[1], 'q', 'f', 'ttl')
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], int(expires), ARGV[2])
return {0, 'held', redis.call('HGET', KEYS[1], 'c'), int(now), int(expires), '', ARGV[3]}
"#;

/// Fences a saga before anything of it is undone: a pending record
/// (`p`) becomes `u` (undoing), which `SAGA_COMMIT` refuses, so a saga
/// is either committed before the fence (then it is not undone) or never.
/// KEYS: the record. ARGV: prefix. `{0}` undo it (pending, undoing,
/// aborted, or no record), `{1, status}` it is committed: leave it.
const SAGA_FENCE: &str = r#"
local s = redis.call('HGET', KEYS[1], 's')
if s == 'p' then
  redis.call('HSET', KEYS[1], 's', 'u')
  return {0}
end
if not s or s == 'u' or s == 'x' then return {0} end
return {1, s}
"#;

/// Ends a saga that did not hold anything (or whose node died before it
/// committed). KEYS: the record, the slot's todo. ARGV: prefix, id,
/// retention. `{0}`.
const SAGA_ABORT: &str = r#"
local s = redis.call('HGET', KEYS[1], 's')
if s == 'p' or s == 'u' then
  redis.call('HSET', KEYS[1], 's', 'x')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return {0}
"#;

/// What is left to do in a slot's todo. KEYS: the slot's todo, and on a
/// cluster the records it lists (else `{'need', ...}`). ARGV:
/// prefix, batch, grace_ms, the slot's tag. `{id, status, customer,
/// items, ...}` for ended holds still to settle (items granted) and
/// pending reserves older than the grace (items requested).
const TODO_LIST: &str = r#"
local now = now_ms()
local out = {}
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for k = 1, #ids, 2 do declared(hold_key(ARGV[4], ids[k])) end
if #NEEDED > 0 then return needed() end
for k = 1, #ids, 2 do
  local id, at = ids[k], tonumber(ids[k + 1])
  local v = redis.call('HMGET', hold_key(ARGV[4], id), 's', 'c', 'i', 'q')
  if not v[1] or v[1] == 'x' then
    redis.call('ZREM', KEYS[1], id)
  elseif v[1] == 'p' or v[1] == 'u' then
    if at + tonumber(ARGV[3]) <= now then
      out[#out + 1] = id; out[#out + 1] = 'p'; out[#out + 1] = v[2]; out[#out + 1] = v[4]
    end
  elseif v[1] ~= 'h' then
    out[#out + 1] = id; out[#out + 1] = v[1]; out[#out + 1] = v[2]; out[#out + 1] = v[3]
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"#;

/// Takes an ended hold off its slot's todo once it is settled. KEYS: the
/// slot's todo. ARGV: prefix, id. `{0}`.
const TODO_DONE: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[2])
return {0}
"#;

/// Starts a request with an idempotency key. KEYS: the key's hash, the
/// live keys it counts among (a sorted set, by expiry: all keys on one
/// server, the slot's on a cluster). ARGV: prefix, fingerprint (hex), how
/// long a first request may run before another may take over from it
/// (ms), this request's token (a command sent again after a reconnect
/// finds its own token and starts afresh, not "in use"), how long the key
/// is kept (ms), how many live keys the set may count. The key keeps its first
/// request's token as its seed (`sd`): every id a request under the key
/// draws comes from it, so a request that takes over from a first that
/// ended without an answer (abandoned: `dl` 0) or ran past its time
/// makes the same changes again, found made, never twice. `{0, seed}`
/// run it, `{1, status, location, body, at_ms}` replay, `{2}` in use,
/// `{3}` reused, `{4}` full (a new key, and the set counts its most).
const KEY_BEGIN: &str = r#"
local k = KEYS[1]
local now = now_ms()
local v = redis.call('HMGET', k, 'f', 'st', 'l', 'b', 'at', 'tok', 'sd', 'dl')
if not v[1] then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return {4} end
  redis.call('HSET', k, 'f', ARGV[2], 'st', '0', 'tok', ARGV[4], 'sd', ARGV[4], 'dl', int(now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', k, ARGV[5])
  redis.call('ZADD', KEYS[2], int(now + tonumber(ARGV[5])), k)
  return {0, ARGV[4]}
end
if v[2] == '0' then
  if v[6] == ARGV[4] then return {0, v[7] or v[6]} end
  -- Still running (or a key of a version without seeds: it expires).
  if not v[7] or not v[8] or now < tonumber(v[8]) then return {2} end
  if v[1] ~= ARGV[2] then return {3} end
  redis.call('HSET', k, 'tok', ARGV[4], 'dl', int(now + tonumber(ARGV[3])))
  return {0, v[7]}
end
if v[1] ~= ARGV[2] then return {3} end
return {1, v[2], v[3] or '', v[4], v[5]}
"#;

/// Keeps a key's answer. KEYS: the key's hash, its live keys' set (see
/// `KEY_BEGIN`). ARGV: prefix, fingerprint,
/// status, location ('' none), body, at_ms, ttl_ms. `{0}`, or `{2}` if the
/// key is no longer this request's (it expired and was taken again).
const KEY_COMPLETE: &str = r#"
local k = KEYS[1]
local v = redis.call('HMGET', k, 'f', 'st')
if v[1] and (v[1] ~= ARGV[2] or v[2] ~= '0') then return {2} end
redis.call('HSET', k, 'f', ARGV[2], 'st', ARGV[3], 'l', ARGV[4], 'b', ARGV[5], 'at', ARGV[6])
redis.call('HDEL', k, 'tok', 'sd', 'dl')
redis.call('PEXPIRE', k, ARGV[7])
redis.call('ZADD', KEYS[2], int(now_ms() + tonumber(ARGV[7])), k)
return {0}
"#;

/// A first request that ended without an answer worth keeping (a 503,
/// the client gone): its change may have been made, so the key is not
/// given back; the next request under it may take over at once (`dl` 0)
/// and, drawing the same ids, finds made what was. KEYS: the key's hash.
/// ARGV: prefix.
const KEY_ABANDON: &str = r#"
if redis.call('HGET', KEYS[1], 'st') == '0' then redis.call('HSET', KEYS[1], 'dl', '0') end
return {0}
"#;

/// Appends a command to the drops' log. KEYS: the log. ARGV: prefix,
/// kind, the record (hex), the sender's nonce. `{0, id}`: Redis's id,
/// whose milliseconds are the command's time.
const DROP_APPEND: &str = r#"
return {0, redis.call('XADD', KEYS[1], '*', 'k', ARGV[2], 'p', ARGV[3], 'n', ARGV[4])}
"#;

/// Reads the drops' log after an id, unless a compaction cut entries
/// after it: then the book's image instead. KEYS: the log, its image (a
/// hash: `id` the last entry it covers, `b` the image in hex, `t` the id
/// the log was cut below). ARGV: prefix, the last id read, how many at
/// most. `{0, entries}` (XRANGE's answer), or `{1, image id, image}`.
const DROP_READ: &str = r#"
local function below(a, b)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end
local cut = redis.call('HGET', KEYS[2], 't')
if cut and below(ARGV[2], cut) then
  local image = redis.call('HMGET', KEYS[2], 'id', 'b')
  return {1, image[1], image[2]}
end
return {0, redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])}
"#;

/// Compacts the drops' log: keeps the image of the book through an entry,
/// unless the image kept is as new, and cuts the log below that entry or
/// below `ARGV[4]` ms ago, whichever is older (a node behind by less than
/// that reads on; one behind by more takes the image). KEYS: the log, its
/// image. ARGV: prefix, the image's last entry id, the image (hex), the
/// horizon in ms. `{0, entries cut}`, or `{1, 0}`: a newer image is kept.
const DROP_COMPACT: &str = r#"
local function parse(a)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  return tonumber(a1), tonumber(a2)
end
local at = redis.call('HGET', KEYS[2], 'id')
if at then
  local o1, o2 = parse(at)
  local n1, n2 = parse(ARGV[2])
  if n1 < o1 or (n1 == o1 and n2 <= o2) then return {1, 0} end
end
local t = redis.call('TIME')
local cut = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
local covered = parse(ARGV[2])
if covered < cut then cut = covered end
local old = redis.call('HGET', KEYS[2], 't')
if old then
  local o1 = parse(old)
  if o1 > cut then cut = o1 end
end
local cut_id = string.format('%d-0', cut)
local removed = redis.call('XTRIM', KEYS[1], 'MINID', cut_id)
redis.call('HSET', KEYS[2], 'id', ARGV[2], 'b', ARGV[3], 't', cut_id)
return {0, removed}
"#;

/// Reads the event stream after an id, as `DROP_READ`, unless the entry
/// at that id (the last the node read) is gone while older ones are kept:
/// not trimmed (a trim takes the oldest first), so lost, with whatever
/// came after it, by a failover to a replica that had not received them
/// (new entries may then reuse ids at or below it, which a read after it
/// would skip). KEYS: the stream. ARGV: prefix, the last id read ('0-0':
/// none), how many at most. `{0, entries}`, or `{1, last id}` lost.
const EVENTS_AFTER: &str = r#"
local after = ARGV[2]
if after ~= '0-0' and #redis.call('XRANGE', KEYS[1], after, after) == 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', after, 'COUNT', 1)
  if #first > 0 then
    local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    return {1, last[1][1]}
  end
end
return {0, redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', ARGV[3])}
"#;

/// Frees a slot's recovery lease if it is still the one taken with this
/// token (after it expired, another node may hold it). KEYS: the lease.
/// ARGV: prefix, the token. `{1}` freed, `{0}` not this token's.
const LEASE_FREE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return {1}
end
return {0}
"#;

/// Marks a SKU gated by a drop (`ARGV[2]`), or unmarks it (`ARGV[2]`
/// empty) if it is still marked by `ARGV[3]`. KEYS: the SKU's mark.
/// `{0}`.
const GATE_MARK: &str = r#"
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
elseif redis.call('GET', KEYS[1]) == ARGV[3] then
  redis.call('DEL', KEYS[1])
end
return {0}
"#;

/// The newest entries of a stream, newest first. KEYS: the stream. ARGV:
/// prefix, how many at most. XREVRANGE's answer.
const STREAM_LAST: &str = r#"
return redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])
"#;

/// Tells an event once (every node that applies a drop's opening asks;
/// one appends it). KEYS: the event stream, the event's once-mark, the
/// stream's event counter (`P:{events}:n`). ARGV:
/// prefix (with the stream's bound), kind, data, when it happened (ms),
/// how long the mark is kept (ms). `{1}` told, `{0}` told before, or
/// too old to tell: the mark is dropped after its time (so marks do not
/// pile up, one per drop for ever), and an event older than that, less a
/// minute for two primaries' clocks, was told when it happened (its mark
/// may be gone: told again now, by a node that starts and reads the
/// drops' log from its beginning, it would be told twice).
const TELL_ONCE: &str = r#"
if now_ms() > tonumber(ARGV[4]) + tonumber(ARGV[5]) - 60000 then return {0} end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return {0} end
emit(ARGV[2], ARGV[3])
return {1}
"#;

/// Moves slots' events (Redis Cluster) into the event stream, each once:
/// per slot the last id moved (`KEYS[2]`, slot -> id) says where the last
/// move ended, and entries at or before it are skipped (a node that died
/// between a move and its trim, or two nodes moving a slot at once, add
/// nothing twice). KEYS: the event stream, the moved ids, the stream's
/// event counter. ARGV: prefix
/// (with the stream's bound, no slot tag), then per entry, each slot's in
/// id order: its slot, id (`ms-seq`), kind, data. `{0, slot, last id
/// moved, slot, ...}` for each slot named.
const EVENTS_MOVE: &str = r#"
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  if not ms then return -1, -1 end
  return tonumber(ms), tonumber(seq)
end
local last, order = {}, {}
for i = 2, #ARGV - 3, 4 do
  local slot = ARGV[i]
  if not last[slot] then
    local id = redis.call('HGET', KEYS[2], slot)
    local ms, seq = parse(id)
    last[slot] = {ms, seq, id, false}
    order[#order + 1] = slot
  end
  local l = last[slot]
  local ms, seq = parse(ARGV[i + 1])
  if ms > l[1] or (ms == l[1] and seq > l[2]) then
    emit(ARGV[i + 2], ARGV[i + 3])
    last[slot] = {ms, seq, ARGV[i + 1], true}
  end
end
local out = {0}
for _, slot in ipairs(order) do
  local l = last[slot]
  if l[4] then redis.call('HSET', KEYS[2], slot, l[3]) end
  if l[3] then
    out[#out + 1] = tonumber(slot)
    out[#out + 1] = l[3]
  end
end
return out
"#;

/// A slot's events to move (Redis Cluster): first drops those moved
/// already, then reads the next. KEYS: the slot's stream. ARGV: prefix,
/// the least id kept ('' to drop nothing), how many at most (0: drop
/// only). XRANGE's answer.
const EVENTS_READ: &str = r#"
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2]) end
if ARGV[3] == '0' then return {} end
return redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[3])
"#;

// ---- Webhooks on the redis store: a consumer group per endpoint --------

/// Makes endpoint's group on the event stream (from the stream's end, if
/// new: an endpoint gets the events from its first start on, and the
/// group's last event number is the stream's now) and clears its 410
/// mark (a start enables it again). KEYS: the stream, the endpoint's gone
/// mark, the groups' last event numbers, the stream's event counter.
/// ARGV: prefix, group. `{0}`.
const WH_GROUP: &str = r#"
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '$', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(r.err)
end
if not r.err then
  -- Made now (a status reply, not BUSYGROUP).
  redis.call('HSET', KEYS[3], ARGV[2], redis.call('GET', KEYS[4]) or '0')
end
redis.call('DEL', KEYS[2])
return {0}
"#;

/// An endpoint's next events for this node: those another consumer (a
/// node gone) held longer than min_idle, then new ones. KEYS: the stream,
/// the gone mark, the groups' last event numbers. ARGV: prefix, group,
/// consumer, count, min_idle. `{1}` the endpoint answered 410 to some
/// node, or `{0, claimed, new, lost}` (claimed and new XRANGE-shaped; an
/// entry trimmed meanwhile has no fields; lost: events trimmed from the
/// stream before the group read them, from the gaps in their numbers,
/// and claimed ones trimmed before their delivery ended).
const WH_READ: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end
local auto = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[5], '0-0', 'COUNT', ARGV[4])
local claimed = auto[2]
local lost = 0
if auto[3] then lost = #auto[3] end
local new = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[1], '>')
local entries = {}
if new then entries = new[1][2] end
if #entries > 0 then
  local last = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '')
  for _, e in ipairs(entries) do
    local f, n = e[2], nil
    for j = 1, #f - 1, 2 do
      if f[j] == 'n' then n = tonumber(f[j + 1]) end
    end
    if n then
      if last and n > last + 1 then lost = lost + (n - last - 1) end
      last = n
    end
  end
  if last then redis.call('HSET', KEYS[3], ARGV[2], int(last)) end
end
return {0, claimed, entries, lost}
"#;

/// Keeps this node's deliveries its own (their idle time back to 0, so no
/// other node claims them). KEYS: the stream. ARGV: prefix, group,
/// consumer, ids... `{0}`.
const WH_KEEP: &str = r#"
if #ARGV > 3 then
  local args = {'XCLAIM', KEYS[1], ARGV[2], ARGV[3], '0'}
  for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return {0}
"#;

/// A delivery's end (delivered or given up), or a 410. KEYS: the stream,
/// the gone mark. ARGV: prefix, group, id ('' for a 410). `{0}`.
const WH_SETTLE: &str = r#"
if ARGV[3] == '' then
  redis.call('SET', KEYS[2], '1')
else
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
end
return {0}
"#;

/// Whether a script may tell events ([`Scripts::tells`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tells {
    Never,
    Maybe,
    /// The answer's 8th member is 1 when it did.
    AsAnswered,
}

/// Every script with the prelude in front.
pub struct Scripts {
    pub set_stock: fred::types::scripts::Script,
    pub adjust: fred::types::scripts::Script,
    pub reserve: fred::types::scripts::Script,
    pub get: fred::types::scripts::Script,
    pub confirm: fred::types::scripts::Script,
    pub release: fred::types::scripts::Script,
    pub extend: fred::types::scripts::Script,
    pub sweep: fred::types::scripts::Script,
    pub due_list: fred::types::scripts::Script,
    pub due_settle: fred::types::scripts::Script,
    pub due_peek: fred::types::scripts::Script,
    pub due_lower: fred::types::scripts::Script,
    pub saga_begin: fred::types::scripts::Script,
    pub saga_take: fred::types::scripts::Script,
    pub saga_undo: fred::types::scripts::Script,
    pub saga_settle: fred::types::scripts::Script,
    pub saga_commit: fred::types::scripts::Script,
    pub saga_fence: fred::types::scripts::Script,
    pub saga_abort: fred::types::scripts::Script,
    pub todo_list: fred::types::scripts::Script,
    pub todo_done: fred::types::scripts::Script,
    pub key_begin: fred::types::scripts::Script,
    pub key_complete: fred::types::scripts::Script,
    pub key_abandon: fred::types::scripts::Script,
    pub drop_append: fred::types::scripts::Script,
    pub drop_read: fred::types::scripts::Script,
    pub drop_compact: fred::types::scripts::Script,
    pub lease_free: fred::types::scripts::Script,
    pub events_after: fred::types::scripts::Script,
    pub gate_mark: fred::types::scripts::Script,
    pub stream_last: fred::types::scripts::Script,
    pub tell_once: fred::types::scripts::Script,
    pub events_move: fred::types::scripts::Script,
    pub events_read: fred::types::scripts::Script,
    pub wh_group: fred::types::scripts::Script,
    pub wh_read: fred::types::scripts::Script,
    pub wh_keep: fred::types::scripts::Script,
    pub wh_settle: fred::types::scripts::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

impl Scripts {
    pub fn new() -> Scripts {
        let s = |body: &str| fred::types::scripts::Script::from_lua(format!("{PRELUDE}{body}"));
        Scripts {
            set_stock: s(SET_STOCK),
            adjust: s(ADJUST),
            reserve: s(RESERVE),
            get: s(GET),
            confirm: s(CONFIRM),
            release: s(RELEASE),
            extend: s(EXTEND),
            sweep: s(SWEEP),
            due_list: s(DUE_LIST),
            due_settle: s(DUE_SETTLE),
            due_peek: s(DUE_PEEK),
            due_lower: s(DUE_LOWER),
            saga_begin: s(SAGA_BEGIN),
            saga_take: s(SAGA_TAKE),
            saga_undo: s(SAGA_UNDO),
            saga_settle: s(SAGA_SETTLE),
            saga_commit: s(SAGA_COMMIT),
            saga_fence: s(SAGA_FENCE),
            saga_abort: s(SAGA_ABORT),
            todo_list: s(TODO_LIST),
            todo_done: s(TODO_DONE),
            key_begin: s(KEY_BEGIN),
            key_complete: s(KEY_COMPLETE),
            key_abandon: s(KEY_ABANDON),
            drop_append: s(DROP_APPEND),
            drop_read: s(DROP_READ),
            drop_compact: s(DROP_COMPACT),
            lease_free: s(LEASE_FREE),
            events_after: s(EVENTS_AFTER),
            gate_mark: s(GATE_MARK),
            stream_last: s(STREAM_LAST),
            tell_once: s(TELL_ONCE),
            events_move: s(EVENTS_MOVE),
            events_read: s(EVENTS_READ),
            wh_group: s(WH_GROUP),
            wh_read: s(WH_READ),
            wh_keep: s(WH_KEEP),
            wh_settle: s(WH_SETTLE),
        }
    }

    /// Whether `script` may tell events (then on a Redis Cluster it is
    /// given its slot's tag and its slot is moved after): always, or, for
    /// the reserve script, as its answer says.
    pub fn tells(&self, script: &fred::types::scripts::Script) -> Tells {
        if std::ptr::eq(script, &self.reserve) {
            return Tells::AsAnswered;
        }
        let always = [
            &self.set_stock,
            &self.adjust,
            &self.confirm,
            &self.release,
            &self.sweep,
        ];
        match one_of(script, &always) {
            true => Tells::Maybe,
            false => Tells::Never,
        }
    }

    /// Whether `script` is a step of a hold across slots (a saga): its
    /// record and its SKUs' markers live on different primaries.
    pub fn is_saga_step(&self, script: &fred::types::scripts::Script) -> bool {
        one_of(
            script,
            &[
                &self.saga_begin,
                &self.saga_take,
                &self.saga_undo,
                &self.saga_settle,
                &self.saga_commit,
                &self.saga_fence,
                &self.saga_abort,
            ],
        )
    }

    pub fn all(&self) -> [&fred::types::scripts::Script; 38] {
        [
            &self.set_stock,
            &self.adjust,
            &self.reserve,
            &self.get,
            &self.confirm,
            &self.release,
            &self.extend,
            &self.sweep,
            &self.due_list,
            &self.due_settle,
            &self.due_peek,
            &self.due_lower,
            &self.saga_begin,
            &self.saga_take,
            &self.saga_undo,
            &self.saga_settle,
            &self.saga_commit,
            &self.saga_fence,
            &self.saga_abort,
            &self.todo_list,
            &self.todo_done,
            &self.key_begin,
            &self.key_complete,
            &self.key_abandon,
            &self.drop_append,
            &self.drop_read,
            &self.drop_compact,
            &self.lease_free,
            &self.events_after,
            &self.gate_mark,
            &self.stream_last,
            &self.tell_once,
            &self.events_move,
            &self.events_read,
            &self.wh_group,
            &self.wh_read,
            &self.wh_keep,
            &self.wh_settle,
        ]
    }
}

/// Whether `script` is one of `these` (the same script, not an equal one).
fn one_of(script: &fred::types::scripts::Script, these: &[&fred::types::scripts::Script]) -> bool {
    these.iter().any(|s| std::ptr::eq(script, *s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A script that tells events but is not said to would, on a Redis
    /// Cluster, write `P:{events}` from another slot (refused by Redis).
    #[test]
    fn every_script_that_tells_events_says_so() {
        let scripts = Scripts::new();
        let bodies = [
            (SET_STOCK, &scripts.set_stock),
            (ADJUST, &scripts.adjust),
            (RESERVE, &scripts.reserve),
            (GET, &scripts.get),
            (CONFIRM, &scripts.confirm),
            (RELEASE, &scripts.release),
            (EXTEND, &scripts.extend),
            (SWEEP, &scripts.sweep),
            (DUE_LIST, &scripts.due_list),
            (DUE_SETTLE, &scripts.due_settle),
            (DUE_PEEK, &scripts.due_peek),
            (DUE_LOWER, &scripts.due_lower),
            (SAGA_BEGIN, &scripts.saga_begin),
            (SAGA_TAKE, &scripts.saga_take),
            (SAGA_UNDO, &scripts.saga_undo),
            (SAGA_SETTLE, &scripts.saga_settle),
            (SAGA_COMMIT, &scripts.saga_commit),
            (SAGA_FENCE, &scripts.saga_fence),
            (SAGA_ABORT, &scripts.saga_abort),
            (TODO_LIST, &scripts.todo_list),
            (TODO_DONE, &scripts.todo_done),
            (KEY_BEGIN, &scripts.key_begin),
            (KEY_COMPLETE, &scripts.key_complete),
            (KEY_ABANDON, &scripts.key_abandon),
            (DROP_APPEND, &scripts.drop_append),
            (DROP_READ, &scripts.drop_read),
            (DROP_COMPACT, &scripts.drop_compact),
            (LEASE_FREE, &scripts.lease_free),
            (EVENTS_AFTER, &scripts.events_after),
            (GATE_MARK, &scripts.gate_mark),
            (STREAM_LAST, &scripts.stream_last),
            (EVENTS_READ, &scripts.events_read),
            (WH_GROUP, &scripts.wh_group),
            (WH_READ, &scripts.wh_read),
            (WH_KEEP, &scripts.wh_keep),
            (WH_SETTLE, &scripts.wh_settle),
        ];
        assert_eq!(
            bodies.len() + 2,
            scripts.all().len(),
            "a script is missing here"
        );
        for (body, script) in bodies {
            let tells = ["tell_", "finish(", "settle(", "emit("]
                .iter()
                .any(|f| body.contains(f));
            assert_eq!(tells, scripts.tells(script) != Tells::Never, "{body}");
        }
        // These two write P:{events} itself, in its own slot.
        assert_eq!(scripts.tells(&scripts.tell_once), Tells::Never);
        assert_eq!(scripts.tells(&scripts.events_move), Tells::Never);
    }
}
