
local op = ARGV[2]
if op == 'list' then
  local out = {0, int(now_ms())}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do out[#out + 1] = all[i] end
  return out
end
if op == 'begin' then
  local st = redis.call('GET', KEYS[2])
  if st == 'done' then return {2} end
  if st == 'run' then return {3} end
  if st == 'undone' then return {4} end
  redis.call('SET', KEYS[2], 'run', 'PX', ARGV[5])
end
if op == 'put' or op == 'begin' then
  local value = ARGV[4] .. '|' .. int(now_ms())
  redis.call('HSET', KEYS[1], ARGV[3], value)
  return {0, value}
end
if redis.call('HGET', KEYS[1], ARGV[3]) == ARGV[4] then
  redis.call('HDEL', KEYS[1], ARGV[3])
  if ARGV[5] ~= '' then redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[6]) end
  return {1}
end
return {0}
