
local seen = redis.call('GET', KEYS[1])
if seen then return {8, seen} end
if EV then
  local ref = 'null'
  if ARGV[3] ~= '' then ref = cjson.encode(ARGV[3]) end
  emit('payment.unmatched', '{"gateway":"' .. ARGV[2] .. '","payment_ref":' .. ref ..
    ',"type":' .. cjson.encode(ARGV[4]) .. ',"at_ms":' .. int(now_ms()) .. '}')
end
redis.call('SET', KEYS[1], 'unmatched', 'PX', ARGV[5])
return {0, 'unmatched'}
