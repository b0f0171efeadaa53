
local h = KEYS[1]
local v = redis.call('HMGET', h, 's', 't1', 't0', 'm', 'i', 'pg')
if not v[1] or v[1] == 'p' or v[1] == 'u' or v[1] == 'x' then return {4} end
local now = now_ms()
if v[1] == 'e' or (v[1] == 'h' and now >= tonumber(v[2])) then return {6, v[2]} end
if v[1] ~= 'h' then return {5, STATUS[v[1]]} end
-- A pending payment's hold lasts as the payment needs, not as extend asks.
if v[6] then return {5, 'pending_payment'} end
local across = v[4] == '1'
if not across then
  for sku in string.gmatch(v[5] or '', '(%S+) %S+') do declared(cust_key(sku)) end
end
if #NEEDED > 0 then return needed() end
local expires = math.min(now + tonumber(ARGV[3]), tonumber(v[3]) + tonumber(ARGV[4]))
redis.call('HSET', h, 't1', int(expires))
redis.call('ZADD', KEYS[2], int(expires), ARGV[2])
-- Its tallies live at least as long as it can (a reload may have raised
-- holds.max_ttl_ms since they were set; GT: never shortened). A hold
-- across slots ('m') has its tallies in other slots: not here.
if not across then
  for sku in string.gmatch(v[5] or '', '(%S+) %S+') do
    redis.call('PEXPIRE', cust_key(sku), ARGV[5], 'GT')
  end
end
return view(h, now)
