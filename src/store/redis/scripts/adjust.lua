
local k = KEYS[1]
local v = redis.call('HMGET', k, 'stock', 'held', 'sold', 'limit')
if not v[1] then return {-2} end
local mark = redis.call('GET', KEYS[2])
if mark == 'u' then return {-4} end
if mark then return {0, v[1], v[2], v[3], v[4], mark} end
local committed = tonumber(v[2]) + tonumber(v[3])
local new = tonumber(v[1]) + tonumber(ARGV[2])
if new < committed then return {-1, int(committed)} end
if new > tonumber(ARGV[3]) then return {-3, int(new)} end
redis.call('HSET', k, 'stock', int(new))
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
if EV then
  tell_stock(sku_of(k), tonumber(v[1]) - committed, new - committed, now_ms())
end
return {0, int(new), v[2], v[3], v[4], ARGV[2]}
