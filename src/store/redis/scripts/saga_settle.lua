
local m = redis.call('GET', KEYS[3])
if m == 'x' then return {10} end
local g = tonumber(m or '') or 0
if g <= 0 then return {0} end
redis.call('HINCRBY', KEYS[1], 'held', -g)
if ARGV[3] == 'c' then
  redis.call('HINCRBY', KEYS[1], 'sold', g)
else
  untally(KEYS[2], ARGV[2], g)
end
redis.call('SET', KEYS[3], 's', 'PX', ARGV[4])
return {0}
