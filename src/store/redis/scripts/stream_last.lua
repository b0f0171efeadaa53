
return redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])
