
local k = KEYS[1]
local mark = redis.call('GET', KEYS[2])
if mark == 'u' then return {0} end
redis.call('SET', KEYS[2], 'u', 'PX', ARGV[2])
local delta = mark and tonumber(mark)
if not delta or delta == 0 then return {0} end
local v = redis.call('HMGET', k, 'stock', 'held', 'sold')
if not v[1] then return {0} end
local committed = tonumber(v[2]) + tonumber(v[3])
local new = tonumber(v[1]) - delta
if new < committed then new = committed end
redis.call('HSET', k, 'stock', int(new))
if EV then
  tell_stock(sku_of(k), tonumber(v[1]) - committed, new - committed, now_ms())
end
return {1, int(new)}
