
if #ARGV > 3 then
  local args = {'XCLAIM', KEYS[1], ARGV[2], ARGV[3], '0'}
  for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
  args[#args + 1] = 'JUSTID'
  redis.call(unpack(args))
end
return {0}
