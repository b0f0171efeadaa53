
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
