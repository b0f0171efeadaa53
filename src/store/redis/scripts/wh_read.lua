
if redis.call('EXISTS', KEYS[2]) == 1 then return {1} end
local auto = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[5], '0-0', 'COUNT', ARGV[4])
local claimed = auto[2]
local lost = 0
if auto[3] then lost = #auto[3] end
local new = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[1], '>')
local entries = {}
if new then entries = new[1][2] end
if #entries > 0 then
  local last = tonumber(redis.call('HGET', KEYS[3], ARGV[2]) or '')
  for _, e in ipairs(entries) do
    local f, n = e[2], nil
    for j = 1, #f - 1, 2 do
      if f[j] == 'n' then n = tonumber(f[j + 1]) end
    end
    if n then
      if last and n > last + 1 then lost = lost + (n - last - 1) end
      last = n
    end
  end
  if last then redis.call('HSET', KEYS[3], ARGV[2], int(last)) end
end
return {0, claimed, entries, lost}
