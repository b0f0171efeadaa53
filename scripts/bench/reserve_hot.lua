-- wrk script: POST /v1/reservations of one unit of sku-hot, each request
-- by a new customer, no Idempotency-Key.
local counter = 0
local tag = tostring(math.random(0, 1000000000))
request = function()
  counter = counter + 1
  local body = string.format('{"customer_id":"c-%s-%d","items":[{"sku":"sku-hot","qty":1}]}', tag, counter)
  return wrk.format("POST", "/v1/reservations", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us\n", latency:percentile(50), latency:percentile(99)))
end
