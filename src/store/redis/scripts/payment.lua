
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 't0', 'm', 'i', 'pg', 'pr')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'e' or (v[1] == 'h' and now >= tonumber(v[2])) then return {6, v[2]} end
if v[1] ~= 'h' then return {5, STATUS[v[1]]} end
if v[6] then
  if v[6] == ARGV[3] and v[7] == ARGV[4] then return view(h, now) end
  return {7, v[7]}
end
local across = v[4] == '1'
if not across then
  for sku in string.gmatch(v[5] or '', '(%S+) %S+') do declared(cust_key(sku)) end
end
if #NEEDED > 0 then return needed() end
-- Never shortened: max(expires, min(now + pending_ttl, created + pending_max)).
local expires = math.max(tonumber(v[2]),
  math.min(now + tonumber(ARGV[5]), tonumber(v[3]) + tonumber(ARGV[6])))
redis.call('HSET', h, 'pg', ARGV[3], 'pr', ARGV[4], 'ps', int(now), 't1', int(expires))
redis.call('ZADD', KEYS[2], int(expires), ARGV[2])
-- Its tallies live at least as long as it can (GT: never shortened).
if not across then
  for sku in string.gmatch(v[5] or '', '(%S+) %S+') do
    redis.call('PEXPIRE', cust_key(sku), int(expires - now + tonumber(ARGV[7])), 'GT')
  end
end
return view(h, now)
