
local after = ARGV[2]
if after ~= '0-0' and #redis.call('XRANGE', KEYS[1], after, after) == 0 then
  local first = redis.call('XRANGE', KEYS[1], '-', after, 'COUNT', 1)
  if #first > 0 then
    local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    return {1, last[1][1]}
  end
end
return {0, redis.call('XRANGE', KEYS[1], '(' .. after, '+', 'COUNT', ARGV[3])}
