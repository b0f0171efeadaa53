-- wrk script: POST /v1/reservations, one unit of a SKU drawn uniformly from
-- 10k (sku-000000 .. sku-009999, set up by scripts/http-bench.sh), each
-- request by a new customer. HOT_SKU=1 in the environment: always
-- sku-000000 (one hot SKU), as scripts/http-bench.sh runs it.
local counter = 0
local hot = os.getenv("HOT_SKU") == "1"
request = function()
  counter = counter + 1
  local sku = hot and "sku-000000" or string.format("sku-%06d", math.random(0, 9999))
  local body = string.format('{"customer_id":"c-%d-%d","items":[{"sku":"%s","qty":1}]}',
    math.random(0, 1000000000), counter, sku)
  return wrk.format("POST", "/v1/reservations", {["Content-Type"] = "application/json"}, body)
end

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.0f us, p99 %.0f us\n", latency:percentile(50), latency:percentile(99)))
end
