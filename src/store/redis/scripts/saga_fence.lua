
local s = redis.call('HGET', KEYS[1], 's')
if s == 'p' then
  redis.call('HSET', KEYS[1], 's', 'u')
  return {0}
end
if not s or s == 'u' or s == 'x' then return {0} end
return {1, s}
