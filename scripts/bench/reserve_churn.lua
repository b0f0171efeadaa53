-- wrk script: POST /v1/reservations of one unit of a SKU drawn uniformly
-- from 2,000 (churn-000000 .. churn-001999, stock 1 each, set up by
-- scripts/events-bench.sh) with a 1 s TTL: every hold sells its SKU out
-- (stock.out), and expires a second later (hold.expired, stock.back), so
-- the event feed carries a steady stream.
local counter = 0
request = function()
  counter = counter + 1
  local sku = string.format("churn-%06d", math.random(0, 1999))
  local body = string.format('{"customer_id":"c-%d","items":[{"sku":"%s","qty":1}],"ttl_ms":1000}',
    counter, sku)
  return wrk.format("POST", "/v1/reservations", {["Content-Type"] = "application/json"}, body)
end

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local s = ""
  for k, v in pairs(statuses) do s = s .. k .. ":" .. v .. " " end
  io.write(string.format("p50 %.0f us, p99 %.0f us, statuses %s\n", latency:percentile(50), latency:percentile(99), s))
end
