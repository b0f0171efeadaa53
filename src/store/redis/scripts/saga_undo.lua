
local m = redis.call('GET', KEYS[3])
if m == 'x' or m == 's' then return {0} end
local g = tonumber(m or '0') or 0
if g > 0 then
  redis.call('HINCRBY', KEYS[1], 'held', -g)
  untally(KEYS[2], ARGV[2], g)
end
redis.call('SET', KEYS[3], 'x', 'PX', ARGV[3])
return {0}
