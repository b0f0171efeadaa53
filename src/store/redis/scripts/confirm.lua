
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 'i', 'c', 'm')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'e' or (v[1] == 'h' and now >= tonumber(v[2])) then return {6, v[2]} end
if v[1] == 'c' then return view(h, now) end
if v[1] == 'r' then return {5, 'released'} end
if v[5] ~= '1' then declare_items(v[3], false) end
if #NEEDED > 0 then return needed() end
if ARGV[3] ~= '' then redis.call('HSET', h, 'o', ARGV[3]) end
local across = finish(h, KEYS[2], KEYS[3], ARGV[2], v[3], v[4], 'c', ARGV[4])
local out = view(h, now)
out[8] = across
return out
