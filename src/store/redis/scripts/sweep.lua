
local now = now_ms()
local x = KEYS[1]
local across = 0
local due = redis.call('ZRANGEBYSCORE', x, '-inf', int(now), 'LIMIT', 0, tonumber(ARGV[2]))
-- Every due hold read (and its keys declared) before the first write.
local holds = {}
for _, id in ipairs(due) do
  local h = hold_key(ARGV[4], id)
  if declared(h) then
    local v = redis.call('HMGET', h, 's', 'i', 'c', 'm')
    if v[1] == 'h' and v[4] ~= '1' then declare_items(v[2], true) end
    holds[#holds + 1] = {id, h, v}
  end
end
if #NEEDED > 0 then return needed() end
for _, e in ipairs(holds) do
  local id, h, v = e[1], e[2], e[3]
  if v[1] == 'h' then
    across = across + finish(h, x, KEYS[2], id, v[2], v[3], 'e', ARGV[3])
  else
    redis.call('ZREM', x, id)
  end
end
local more = 0
if #due == tonumber(ARGV[2]) then more = 1 end
local first = redis.call('ZRANGE', x, 0, 0, 'WITHSCORES')
local earliest = -1
if first[2] then earliest = tonumber(first[2]) end
local todo = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local todo_first = -1
if todo[2] then todo_first = tonumber(todo[2]) end
return {#due, more, earliest, across, todo_first}
