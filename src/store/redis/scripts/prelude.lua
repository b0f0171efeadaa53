
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
    local pr = redis.call('HGET', h, 'pr')
    if pr then data = data .. ',"payment_ref":' .. cjson.encode(pr) else data = data .. ',"payment_ref":null' end
  end
  emit(kind, data .. ',"at_ms":' .. int(now) .. '}')
end
-- {0, status, customer, created, expires, order_ref or '', items, 0,
-- gateway, payment_ref, since ('' when no payment)}: a script may set
-- the 8th member. A held hold with a payment (`/payment`) is
-- pending_payment.
local function view(h, now)
  local v = redis.call('HMGET', h, 's', 'c', 't0', 't1', 'o', 'i', 'pg', 'pr', 'ps')
  local status = STATUS[v[1]]
  if v[1] == 'h' and now >= tonumber(v[4]) then status = 'expired'
  elseif v[1] == 'h' and v[7] then status = 'pending_payment' end
  return {0, status, v[2], v[3], v[4], v[5] or '', v[6], 0, v[7] or '', v[8] or '', v[9] or ''}
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
