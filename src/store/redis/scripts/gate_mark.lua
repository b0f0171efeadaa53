
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[2])
elseif redis.call('GET', KEYS[1]) == ARGV[3] then
  redis.call('DEL', KEYS[1])
end
return {0}
