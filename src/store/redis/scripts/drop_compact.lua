
local function parse(a)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  return tonumber(a1), tonumber(a2)
end
local at = redis.call('HGET', KEYS[2], 'id')
if at then
  local o1, o2 = parse(at)
  local n1, n2 = parse(ARGV[2])
  if n1 < o1 or (n1 == o1 and n2 <= o2) then return {1, 0} end
end
local t = redis.call('TIME')
local cut = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
local covered = parse(ARGV[2])
if covered < cut then cut = covered end
local old = redis.call('HGET', KEYS[2], 't')
if old then
  local o1 = parse(old)
  if o1 > cut then cut = o1 end
end
local cut_id = string.format('%d-0', cut)
local removed = redis.call('XTRIM', KEYS[1], 'MINID', cut_id)
redis.call('HSET', KEYS[2], 'id', ARGV[2], 'b', ARGV[3], 't', cut_id)
return {0, removed}
