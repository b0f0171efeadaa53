
local v = redis.call('HMGET', KEYS[1], 's', 'ttl')
if v[1] == 'h' then return view(KEYS[1], now_ms()) end
if v[1] ~= 'p' then return {8, v[1] or ''} end
local now = now_ms()
local expires = now + tonumber(v[2])
redis.call('HSET', KEYS[1], 's', 'h', 'm', '1', 'i', ARGV[3], 't0', int(now), 't1', int(expires))
redis.call('HDEL', KEYS[1], 'q', 'f', 'ttl')
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], int(expires), ARGV[2])
return {0, 'held', redis.call('HGET', KEYS[1], 'c'), int(now), int(expires), '', ARGV[3]}
