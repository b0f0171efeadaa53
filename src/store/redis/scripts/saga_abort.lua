
local s = redis.call('HGET', KEYS[1], 's')
if s == 'p' or s == 'u' then
  redis.call('HSET', KEYS[1], 's', 'x')
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
redis.call('ZREM', KEYS[2], ARGV[2])
return {0}
