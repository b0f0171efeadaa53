
lower_due(KEYS[1], ARGV[2], tonumber(ARGV[3]))
return {0}
