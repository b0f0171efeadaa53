
local function parse(id)
  local ms, seq = string.match(id or '', '^(%d+)-(%d+)$')
  if not ms then return -1, -1 end
  return tonumber(ms), tonumber(seq)
end
local last, order = {}, {}
for i = 2, #ARGV - 3, 4 do
  local slot = ARGV[i]
  if not last[slot] then
    local id = redis.call('HGET', KEYS[2], slot)
    local ms, seq = parse(id)
    last[slot] = {ms, seq, id, false}
    order[#order + 1] = slot
  end
  local l = last[slot]
  local ms, seq = parse(ARGV[i + 1])
  if ms > l[1] or (ms == l[1] and seq > l[2]) then
    emit(ARGV[i + 2], ARGV[i + 3])
    last[slot] = {ms, seq, ARGV[i + 1], true}
  end
end
local out = {0}
for _, slot in ipairs(order) do
  local l = last[slot]
  if l[4] then redis.call('HSET', KEYS[2], slot, l[3]) end
  if l[3] then
    out[#out + 1] = tonumber(slot)
    out[#out + 1] = l[3]
  end
end
return out
