
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
