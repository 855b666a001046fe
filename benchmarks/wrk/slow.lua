-- wrk script: plain GET, and at the end the number of requests slower than
-- WRK_SLOW_US microseconds (default 500000: half a second), from wrk's own
-- latency record (every request, not a sample), and the slowest one.
local threshold = tonumber(os.getenv("WRK_SLOW_US") or "500000")

function done(summary, latency, requests)
  local slow = 0
  for i = 1, #latency do
    local value, count = latency(i)
    if value > threshold then slow = slow + count end
  end
  io.write(string.format("Slow requests: %d over %d us, max %d us\n",
                         slow, threshold, latency.max))
end
