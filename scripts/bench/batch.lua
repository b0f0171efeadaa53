-- wrk script: POST /v1/batch with 1000 reserve ops each (one unit of a SKU
-- drawn uniformly from the 10k that scripts/http-bench.sh sets up, a new
-- customer per op). Reservations per second = requests per second x 1000.
local counter = 0
request = function()
  counter = counter + 1
  local ops = {}
  for i = 1, 1000 do
    ops[i] = string.format('{"op":"reserve","customer_id":"b-%d-%d-%d","items":[{"sku":"sku-%06d","qty":1}]}',
      math.random(0, 1000000000), counter, i, math.random(0, 9999))
  end
  local body = '{"ops":[' .. table.concat(ops, ",") .. ']}'
  return wrk.format("POST", "/v1/batch", {["Content-Type"] = "application/json"}, body)
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us, reservations/s %.0f\n",
    latency:percentile(50), latency:percentile(99), summary.requests / (summary.duration / 1e6) * 1000))
end
