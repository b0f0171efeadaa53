
local s = redis.call('HGET', KEYS[1], 's')
if s then return {1, s} end
local now = now_ms()
redis.call('HSET', KEYS[1], 'c', ARGV[3], 's', 'p', 'q', ARGV[6], 'f', ARGV[5], 'ttl', ARGV[4], 't0', int(now))
redis.call('ZADD', KEYS[2], int(now), ARGV[2])
return {0}
