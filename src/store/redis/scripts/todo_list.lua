
local now = now_ms()
local out = {}
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for k = 1, #ids, 2 do declared(hold_key(ARGV[4], ids[k])) end
if #NEEDED > 0 then return needed() end
for k = 1, #ids, 2 do
  local id, at = ids[k], tonumber(ids[k + 1])
  local v = redis.call('HMGET', hold_key(ARGV[4], id), 's', 'c', 'i', 'q')
  if not v[1] or v[1] == 'x' then
    redis.call('ZREM', KEYS[1], id)
  elseif v[1] == 'p' or v[1] == 'u' then
    if at + tonumber(ARGV[3]) <= now then
      out[#out + 1] = id; out[#out + 1] = 'p'; out[#out + 1] = v[2]; out[#out + 1] = v[4]
    end
  elseif v[1] ~= 'h' then
    out[#out + 1] = id; out[#out + 1] = v[1]; out[#out + 1] = v[2]; out[#out + 1] = v[3]
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
