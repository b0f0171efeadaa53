
if ARGV[2] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2]) end
if ARGV[3] == '0' then return {} end
return redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[3])
