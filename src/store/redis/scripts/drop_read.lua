
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
