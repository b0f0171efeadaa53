
if now_ms() > tonumber(ARGV[4]) + tonumber(ARGV[5]) - 60000 then return {0} end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[5]) then return {0} end
emit(ARGV[2], ARGV[3])
return {1}
