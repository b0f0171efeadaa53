
return {0, redis.call('XADD', KEYS[1], '*', 'k', ARGV[2], 'p', ARGV[3], 'n', ARGV[4])}
