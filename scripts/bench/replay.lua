-- wrk: sends, in turn, the requests of a file written by
-- scripts/payments-bench.sh, one a line: METHOD<TAB>PATH<TAB>HEADER or
-- -<TAB>BODY or -. Counts the answers by status and, for a webhook, by
-- outcome; a request file shorter than the run starts over (what a repeat
-- answers is then counted as such: "repeat" lines in the summary).
-- Globals: wrk runs init, request and response in each thread's own Lua
-- state, and done in another; done reads them through thread:get.
requests, n, i, rounds = {}, 0, 0, 1
statuses, outcomes = {}, {}
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  for line in io.lines(args[1]) do
    local method, path, header, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = { ["Content-Type"] = "application/json" }
    if header ~= "-" then
      local name, value = header:match("^([^:]*): (.*)$")
      headers[name] = value
    end
    if body == "-" then body = nil end
    n = n + 1
    requests[n] = wrk.format(method, path, headers, body)
  end
end

request = function()
  i = i + 1
  if i > n then i, rounds = 1, rounds + 1 end
  return requests[i]
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local o = body:match('"outcome":"([a-z_]*)"')
  if o then outcomes[o] = (outcomes[o] or 0) + 1 end
end

done = function(summary, latency, requests_)
  for _, t in ipairs(threads) do
    local sent, prepared, round = t:get("i"), t:get("n"), t:get("rounds")
    io.write(string.format("prepared %d, sent %d%s\n", prepared, (round - 1) * prepared + sent,
      round > 1 and " (the file was sent through more than once: later answers are repeats)" or ""))
    for s, c in pairs(t:get("statuses")) do io.write(string.format("status %d: %d\n", s, c)) end
    for o, c in pairs(t:get("outcomes")) do io.write(string.format("outcome %s: %d\n", o, c)) end
  end
end
