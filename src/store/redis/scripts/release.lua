
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 'i', 'c', 'm')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'r' or v[1] == 'e' then return view(h, now) end
if v[1] == 'c' then return {5, 'confirmed'} end
if v[5] ~= '1' then declare_items(v[3], true) end
if #NEEDED > 0 then return needed() end
local to = 'r'
if now >= tonumber(v[2]) then to = 'e' end
local across = finish(h, KEYS[2], KEYS[3], ARGV[2], v[3], v[4], to, ARGV[3])
local out = view(h, now)
out[8] = across
return out
