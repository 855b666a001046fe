-- wrk script: plain GET, and at the end the number of requests slower than
-- WRK_SLOW_US microseconds (default 500000: half a second), from wrk's own
-- latency record (every request, not a sample), and the slowest one.
-- WRK_SLOW_US: thresholds in microseconds, comma-separated (default 500000)
local thresholds = {}
for t in string.gmatch(os.getenv("WRK_SLOW_US") or "500000", "%d+") do
  thresholds[#thresholds + 1] = tonumber(t)
end

function done(summary, latency, requests)
  for _, threshold in ipairs(thresholds) do
    local slow = 0
    for i = 1, #latency do
      local value, count = latency(i)
      if value > threshold then slow = slow + count end
    end
    io.write(string.format("Slow requests: %d over %d us, max %d us\n",
                           slow, threshold, latency.max))
  end
end
