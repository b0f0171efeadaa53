
local s = redis.call('HGET', KEYS[1], 's')
if not s or s == 'p' or s == 'u' or s == 'x' then return {4} end
return view(KEYS[1], now_ms())
