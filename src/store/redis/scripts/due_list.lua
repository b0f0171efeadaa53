
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int(now_ms()), 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
return due
