
if ARGV[3] == '' then
  redis.call('SET', KEYS[2], '1')
else
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[3])
end
return {0}
