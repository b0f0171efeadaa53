
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
