
local k = KEYS[1]
local now = now_ms()
local v = redis.call('HMGET', k, 'f', 'st', 'l', 'b', 'at', 'tok', 'sd', 'dl')
if not v[1] then
  local max = tonumber(ARGV[6])
  if redis.call('ZCARD', KEYS[2]) >= max then
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', int(now))
    if redis.call('ZCARD', KEYS[2]) >= max then return {4} end
  end
  redis.call('HSET', k, 'f', ARGV[2], 'st', '0', 'tok', ARGV[4], 'sd', ARGV[4], 'dl', int(now + tonumber(ARGV[3])))
  redis.call('PEXPIRE', k, ARGV[5])
  redis.call('ZADD', KEYS[2], int(now + tonumber(ARGV[7])), k)
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
