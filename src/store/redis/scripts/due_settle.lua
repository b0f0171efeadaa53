
local seen = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not seen or tonumber(seen) ~= tonumber(ARGV[3]) then return {0} end
if tonumber(ARGV[4]) < 0 then
  redis.call('ZREM', KEYS[1], ARGV[2])
else
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[2])
end
return {1}
