
if redis.call('HGET', KEYS[1], 'st') == '0' then redis.call('HSET', KEYS[1], 'dl', '0') end
return {0}
