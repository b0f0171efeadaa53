
local h, D = KEYS[1], KEYS[4]
local seen = redis.call('GET', D)
if seen then return {8, seen} end
local v = redis.call('HMGET', h, 's', 't1', 'i', 'c', 'm', 'pg', 'pr')
if v[1] == 'p' then return {10} end
if not v[1] or v[1] == 'u' or v[1] == 'x' then return {9} end
-- Found by its payment_ref, but it records another payment: not this one's.
if ARGV[7] == '1' and v[7] ~= ARGV[5] then return {9} end
local now = now_ms()
local s, items, customer = v[1], v[3], v[4]
local across = v[5] == '1'
local active = s == 'h' and now < tonumber(v[2])
local m = ARGV[3]
local outcome
if m == 's' then
  if s == 'h' then
    -- Past its expiry, not swept yet: its units are still its own.
    if active then outcome = 'confirmed' else outcome = 'confirmed_late' end
  elseif s == 'c' then
    outcome = 'duplicate'
  elseif across then
    -- Its units live in other slots: they cannot be taken again here,
    -- in one script. The storefront refunds.
    outcome = 'orphaned'
  else
    declare_items(items, true)
    if #NEEDED > 0 then return needed() end
    outcome = 'confirmed_late'
    for sku, q in string.gmatch(items, '(%S+) (%S+)') do
      local a = avail_of(sku_key(sku))
      if not a or a < tonumber(q) then outcome = 'orphaned' end
    end
  end
elseif m == 'f' or s == 'c' then
  outcome = 'noted'
else
  outcome = 'released'
end
if s == 'h' and not across and outcome ~= 'noted' then declare_items(items, true) end
if #NEEDED > 0 then return needed() end
local pr = ARGV[5]
if pr == '' then pr = v[7] end
local function record_payment()
  if not v[6] and ARGV[5] ~= '' then
    redis.call('HSET', h, 'pg', ARGV[4], 'pr', ARGV[5], 'ps', int(now))
  end
  if ARGV[6] ~= '' then redis.call('HSET', h, 'o', ARGV[6]) end
end
local settle_across = 0
if s == 'h' and (outcome == 'confirmed' or outcome == 'confirmed_late') then
  record_payment()
  settle_across = finish(h, KEYS[2], KEYS[3], ARGV[2], items, customer, 'c', ARGV[9])
elseif outcome == 'confirmed_late' then
  -- An ended hold whose units are all free: sold again, in this script.
  for sku, q in string.gmatch(items, '(%S+) (%S+)') do
    local a = avail_of(sku_key(sku))
    redis.call('HINCRBY', sku_key(sku), 'sold', q)
    redis.call('HINCRBY', cust_key(sku), customer, q)
    redis.call('PEXPIRE', cust_key(sku), ARGV[10], 'GT')
    tell_stock(sku, a, a - tonumber(q), now)
  end
  record_payment()
  redis.call('HSET', h, 's', 'c')
  tell_hold('hold.confirmed', h, ARGV[2], items, customer, now)
elseif outcome == 'released' and s == 'h' then
  local to = 'e'
  if active then to = 'r' end
  settle_across = finish(h, KEYS[2], KEYS[3], ARGV[2], items, customer, to, ARGV[9])
elseif EV and (outcome == 'orphaned' or (outcome == 'noted' and m == 'f')) then
  local ref = 'null'
  if pr then ref = cjson.encode(pr) end
  local data = '{"hold":"' .. ARGV[2] .. '","gateway":"' .. ARGV[4] .. '","payment_ref":' .. ref
  if outcome == 'orphaned' then
    local out = {}
    for sku, q in string.gmatch(items, '(%S+) (%S+)') do
      out[#out + 1] = '{"sku":"' .. string.match(sku, '^[^#]+') .. '","qty":' .. q .. '}'
    end
    emit('payment.orphaned', data .. ',"items":[' .. table.concat(out, ',') .. '],"at_ms":' .. int(now) .. '}')
  else
    emit('payment.failed', data .. ',"at_ms":' .. int(now) .. '}')
  end
end
redis.call('SET', D, outcome, 'PX', ARGV[8])
local out = view(h, now)
out[8] = settle_across
out[12] = outcome
return out
