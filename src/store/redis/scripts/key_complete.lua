
local k = KEYS[1]
local v = redis.call('HMGET', k, 'f', 'st')
if v[1] and (v[1] ~= ARGV[2] or v[2] ~= '0') then return {2} end
redis.call('HSET', k, 'f', ARGV[2], 'st', ARGV[3], 'l', ARGV[4], 'b', ARGV[5], 'at', ARGV[6])
redis.call('HDEL', k, 'tok', 'sd', 'dl')
redis.call('PEXPIRE', k, ARGV[7])
return {0}
