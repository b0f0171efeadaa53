-- wrk script: POST /v1/drops/ab/entries, each request a new customer
-- (scripts/drop-bench.sh creates drop "ab", its pre-queue open).
local counter = 0
local tag = math.random(0, 1000000000)
request = function()
  counter = counter + 1
  local body = string.format('{"customer_id":"j-%d-%d"}', tag, counter)
  return wrk.format("POST", "/v1/drops/ab/entries", {["Content-Type"] = "application/json"}, body)
end

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us\n", latency:percentile(50), latency:percentile(99)))
end
