
local r = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[2], '$', 'MKSTREAM')
if type(r) == 'table' and r.err and not string.find(r.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(r.err)
end
if not r.err then
  -- Made now (a status reply, not BUSYGROUP).
  redis.call('HSET', KEYS[3], ARGV[2], redis.call('GET', KEYS[4]) or '0')
end
redis.call('DEL', KEYS[2])
return {0}
