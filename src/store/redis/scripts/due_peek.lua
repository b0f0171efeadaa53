
local x = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local t = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
return {tonumber(x[2] or '-1'), tonumber(t[2] or '-1')}
